//! Values of the kernel's own ABI the programs and the daemon both use:
//! errno and signal numbers, `struct file` flag bits, syscall numbers.

/// The syscall return value that makes the kernel restart the syscall after
/// the thread is stopped and continued (ERESTARTNOINTR), never seen by user
/// space as long as a signal is pending when the syscall returns.
pub const ERESTARTNOINTR: i32 = -513;
pub const SIGSTOP: u32 = 19;

/// `__FMODE_EXEC` in `file.f_flags`: set for the opens exec makes itself
/// (the binary, an ELF interpreter); open(2) flags can never carry it.
pub const FLAG_FMODE_EXEC: u32 = 0x20;

/// `FMODE_NOACCOUNT` in `file.f_mode` (0x20000000 on every kernel with BPF
/// LSM, 5.7 to 6.18): files the kernel opens for itself, with no file
/// descriptor. In an agent's context these are overlayfs' opens of the
/// real file below the overlay file the agent opened (backing files, 6.6+;
/// fake-path files before), and copy-up. The LSM open hook lets them
/// through: the agent's own open of the overlay file was decided, by the
/// path the agent used, a moment before. (`FMODE_BACKING` would say it
/// more precisely but moved from bit 25 to bit 24 during 6.12.)
pub const FMODE_NOACCOUNT: u32 = 1 << 29;

/// Syscall numbers that open a file descriptor on a path (x86-64).
pub mod syscalls {
    pub const OPEN: u32 = 2;
    pub const CREAT: u32 = 85;
    pub const OPENAT: u32 = 257;
    pub const OPEN_BY_HANDLE_AT: u32 = 304;
    pub const OPENAT2: u32 = 437;
    pub const RENAME: u32 = 82;
    pub const LINK: u32 = 86;
    pub const RENAMEAT: u32 = 264;
    pub const LINKAT: u32 = 265;
    pub const RENAMEAT2: u32 = 316;
    /// Operations on one name, decided as a `write` of that path at
    /// `sys_exit` on the fallback (`fallback::path_ops`).
    pub const UNLINK: u32 = 87;
    pub const UNLINKAT: u32 = 263;
    pub const MKDIR: u32 = 83;
    pub const MKDIRAT: u32 = 258;
    pub const RMDIR: u32 = 84;
    pub const SYMLINK: u32 = 88;
    pub const SYMLINKAT: u32 = 266;
    pub const MKNOD: u32 = 133;
    pub const MKNODAT: u32 = 259;
    pub const CHMOD: u32 = 90;
    pub const FCHMODAT: u32 = 268;
    pub const FCHMODAT2: u32 = 452;
    pub const CHOWN: u32 = 92;
    pub const LCHOWN: u32 = 94;
    pub const FCHOWNAT: u32 = 260;
    pub const TRUNCATE: u32 = 76;
    pub const SETXATTR: u32 = 188;
    pub const LSETXATTR: u32 = 189;
    pub const REMOVEXATTR: u32 = 197;
    pub const LREMOVEXATTR: u32 = 198;
    pub const UTIME: u32 = 132;
    pub const UTIMES: u32 = 235;
    pub const FUTIMESAT: u32 = 261;
    pub const UTIMENSAT: u32 = 280;
    pub const BIND: u32 = 49;
    /// Every syscall above, as a bitmap by number (`PATH_OPS[nr / 64]`
    /// bit `nr % 64`): the `sys_exit` program's one-load filter.
    pub const PATH_OPS: [u64; 8] = {
        let nrs = [
            UNLINK,
            UNLINKAT,
            MKDIR,
            MKDIRAT,
            RMDIR,
            SYMLINK,
            SYMLINKAT,
            MKNOD,
            MKNODAT,
            CHMOD,
            FCHMODAT,
            FCHMODAT2,
            CHOWN,
            LCHOWN,
            FCHOWNAT,
            TRUNCATE,
            SETXATTR,
            LSETXATTR,
            REMOVEXATTR,
            LREMOVEXATTR,
            UTIME,
            UTIMES,
            FUTIMESAT,
            UTIMENSAT,
            BIND,
        ];
        let mut bits = [0u64; 8];
        let mut i = 0;
        while i < nrs.len() {
            bits[(nrs[i] / 64) as usize] |= 1 << (nrs[i] % 64);
            i += 1;
        }
        bits
    };
    /// The ia32 table (int 0x80 works from 64-bit code too, and the numbers
    /// mean other syscalls in the 64-bit table: 5 is fstat there).
    pub const IA32_OPEN: u32 = 5;
    pub const IA32_CREAT: u32 = 8;
    pub const IA32_OPENAT: u32 = 295;
    pub const IA32_OPEN_BY_HANDLE_AT: u32 = 342;
    pub const IA32_OPENAT2: u32 = 437;
    /// Set in x32 syscall numbers.
    pub const X32_BIT: u32 = 0x4000_0000;
    /// `OpenEvent::syscall` of an open decided at `lsm/file_open`, which
    /// sees every open (any syscall, io_uring, the kernel's on the
    /// process's behalf) and not which syscall made it.
    pub const LSM_HOOK: u32 = u32::MAX;
    /// `OpenEvent::syscall` of an open decided at `fmod_ret/security_file_open`
    /// (as `LSM_HOOK`, where BPF LSM is built but not active).
    pub const FMODRET_HOOK: u32 = u32::MAX - 1;
    /// `NameEvent::syscall` of an operation on names decided at a BPF LSM
    /// `path_*` hook (`lsm_names`): this bit, or-ed with the 64-bit number
    /// of the operation's plain syscall (`RENAME`, `LINK`, `UNLINK`,
    /// `MKDIR`, `RMDIR`, `SYMLINK`, `MKNOD`, `BIND`, `CHMOD`, `CHOWN`,
    /// `TRUNCATE`), whichever syscall made it.
    pub const NAME_HOOK_LSM: u32 = 1 << 31;
    /// As `NAME_HOOK_LSM`, decided at `fmod_ret/security_path_*`.
    pub const NAME_HOOK_FMODRET: u32 = 1 << 30;
}

pub const SIGKILL: u32 = 9;
/// The errno LSM hooks deny with (returned negated).
pub const EPERM: i32 = 1;
