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
    /// `socket(family, type, protocol)`: packet sockets are decided at its
    /// exit on the fallback (`fallback::packet`).
    pub const SOCKET: u32 = 41;
    /// The ia32 table (int 0x80 works from 64-bit code too, and the numbers
    /// mean other syscalls in the 64-bit table: 5 is fstat there).
    pub const IA32_OPEN: u32 = 5;
    pub const IA32_CREAT: u32 = 8;
    pub const IA32_OPENAT: u32 = 295;
    pub const IA32_OPEN_BY_HANDLE_AT: u32 = 342;
    pub const IA32_OPENAT2: u32 = 437;
    /// Set in x32 syscall numbers.
    pub const X32_BIT: u32 = 0x4000_0000;
    /// The ia32 numbers of the operations on names (`names.rs`,
    /// `path_ops.rs`): the same calls, with their arguments in `bx, cx, dx,
    /// si` (32 bits each). The 16-bit-uid `chown`/`lchown` and
    /// `truncate64` take the same name argument as their 64-bit namesakes.
    pub const IA32_LINK: u32 = 9;
    pub const IA32_UNLINK: u32 = 10;
    pub const IA32_MKNOD: u32 = 14;
    pub const IA32_CHMOD: u32 = 15;
    pub const IA32_LCHOWN16: u32 = 16;
    pub const IA32_UTIME: u32 = 30;
    pub const IA32_RENAME: u32 = 38;
    pub const IA32_MKDIR: u32 = 39;
    pub const IA32_RMDIR: u32 = 40;
    pub const IA32_SYMLINK: u32 = 83;
    pub const IA32_TRUNCATE: u32 = 92;
    /// `socketcall(call, args)`: `call` 2 is `bind`, `args` a user array of
    /// three 32-bit words (fd, address, length).
    pub const IA32_SOCKETCALL: u32 = 102;
    pub const IA32_SOCKETCALL_BIND: u32 = 2;
    /// `socketcall` `call` 1 is `socket`: `args` holds family, type and
    /// protocol (32-bit words).
    pub const IA32_SOCKETCALL_SOCKET: u32 = 1;
    /// ia32 `socket(family, type, protocol)` (in `bx, cx, dx`).
    pub const IA32_SOCKET: u32 = 359;
    pub const IA32_CHOWN16: u32 = 182;
    pub const IA32_TRUNCATE64: u32 = 193;
    pub const IA32_LCHOWN32: u32 = 198;
    pub const IA32_CHOWN32: u32 = 212;
    pub const IA32_SETXATTR: u32 = 226;
    pub const IA32_LSETXATTR: u32 = 227;
    pub const IA32_REMOVEXATTR: u32 = 235;
    pub const IA32_LREMOVEXATTR: u32 = 236;
    pub const IA32_UTIMES: u32 = 271;
    pub const IA32_MKDIRAT: u32 = 296;
    pub const IA32_MKNODAT: u32 = 297;
    pub const IA32_FCHOWNAT: u32 = 298;
    pub const IA32_FUTIMESAT: u32 = 299;
    pub const IA32_UNLINKAT: u32 = 301;
    pub const IA32_RENAMEAT: u32 = 302;
    pub const IA32_LINKAT: u32 = 303;
    pub const IA32_SYMLINKAT: u32 = 304;
    pub const IA32_FCHMODAT: u32 = 306;
    pub const IA32_UTIMENSAT: u32 = 320;
    pub const IA32_RENAMEAT2: u32 = 353;
    pub const IA32_BIND: u32 = 361;
    pub const IA32_UTIMENSAT_TIME64: u32 = 412;
    pub const IA32_FCHMODAT2: u32 = 452;
    /// The 64-bit number of the call an ia32 number of an operation on
    /// names makes (`IA32_SOCKETCALL`: `BIND`, the only one decided), or
    /// `u32::MAX` for any other number.
    pub const fn ia32_native(nr: u32) -> u32 {
        match nr {
            IA32_LINK => LINK,
            IA32_UNLINK => UNLINK,
            IA32_MKNOD => MKNOD,
            IA32_CHMOD => CHMOD,
            IA32_LCHOWN16 | IA32_LCHOWN32 => LCHOWN,
            IA32_UTIME => UTIME,
            IA32_RENAME => RENAME,
            IA32_MKDIR => MKDIR,
            IA32_RMDIR => RMDIR,
            IA32_SYMLINK => SYMLINK,
            IA32_TRUNCATE | IA32_TRUNCATE64 => TRUNCATE,
            IA32_SOCKETCALL | IA32_BIND => BIND,
            IA32_CHOWN16 | IA32_CHOWN32 => CHOWN,
            IA32_SETXATTR => SETXATTR,
            IA32_LSETXATTR => LSETXATTR,
            IA32_REMOVEXATTR => REMOVEXATTR,
            IA32_LREMOVEXATTR => LREMOVEXATTR,
            IA32_UTIMES => UTIMES,
            IA32_MKDIRAT => MKDIRAT,
            IA32_MKNODAT => MKNODAT,
            IA32_FCHOWNAT => FCHOWNAT,
            IA32_FUTIMESAT => FUTIMESAT,
            IA32_UNLINKAT => UNLINKAT,
            IA32_RENAMEAT => RENAMEAT,
            IA32_LINKAT => LINKAT,
            IA32_SYMLINKAT => SYMLINKAT,
            IA32_FCHMODAT => FCHMODAT,
            IA32_UTIMENSAT | IA32_UTIMENSAT_TIME64 => UTIMENSAT,
            IA32_RENAMEAT2 => RENAMEAT2,
            IA32_FCHMODAT2 => FCHMODAT2,
            _ => u32::MAX,
        }
    }
    /// The ia32 numbers `warden_path_ops` decides (every one above but the
    /// renames and links, which `names.rs` decides), as a bitmap like
    /// `PATH_OPS`.
    pub const IA32_PATH_OPS: [u64; 8] = {
        let mut bits = [0u64; 8];
        let mut nr = 0u32;
        while nr < 512 {
            let native = ia32_native(nr);
            let name = matches!(native, RENAME | RENAMEAT | RENAMEAT2 | LINK | LINKAT);
            if native != u32::MAX && !name {
                bits[(nr / 64) as usize] |= 1 << (nr % 64);
            }
            nr += 1;
        }
        bits
    };
    const _: () = assert!(
        IA32_PATH_OPS[0] & (1 << IA32_UNLINK) != 0
            && IA32_PATH_OPS[0] & (1 << IA32_RENAME) == 0
            && IA32_PATH_OPS[0] & (1 << IA32_LINK) == 0
            && IA32_PATH_OPS[(IA32_FCHMODAT2 / 64) as usize] & (1 << (IA32_FCHMODAT2 % 64)) != 0
    );
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
