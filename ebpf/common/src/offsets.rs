//! The kernel struct offsets handed to the programs at load
//! (`KERNEL_OFFSETS` in `.rodata`): aya-ebpf has no CO-RE relocations, so
//! the daemon reads them from the running kernel's BTF.

use core::mem::size_of;

/// The path walk reads `dentry.d_parent` and `dentry.d_name` (its `len`
/// and `name`) with one read of this many bytes from `d_parent`; the daemon
/// refuses a kernel whose `struct dentry` does not fit that.
pub const DENTRY_SPAN_BYTES: u32 = 32;

/// Byte offsets of the kernel struct fields the exec and open programs
/// read, taken from the running kernel's BTF by the daemon and passed in
/// `.rodata` (aya-ebpf has no CO-RE relocations). `valid` is 0 until the
/// daemon fills the struct; the programs refuse every decision they would
/// need a path for while it is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub bprm_file: u32,
    pub bprm_filename: u32,
    pub file_f_inode: u32,
    pub file_f_mode: u32,
    pub file_f_path_dentry: u32,
    pub file_f_path_mnt: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name_name: u32,
    pub dentry_d_name_len: u32,
    pub vfsmount_mnt_root: u32,
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub pt_regs_orig_ax: u32,
    /// `task_struct.thread_info.status` (x86: TS_COMPAT during an ia32
    /// syscall).
    pub task_ti_status: u32,
    pub valid: u32,
    /// `file.f_flags` (the LSM open hook tells exec's own opens by
    /// `FLAG_FMODE_EXEC` there).
    pub file_f_flags: u32,
    /// `task_struct.start_time` (the fallback holds' guard, `Held`).
    pub task_start_time: u32,
    /// `super_block.s_magic` (8 bytes): opens of pipes, sockets and
    /// anonymous inodes are not decided as files.
    pub sb_s_magic: u32,
    /// `task_struct.nsproxy`, `nsproxy.mnt_ns`, `mnt_namespace.root`: the
    /// walk's end must be the root mount of the acting process's mount
    /// namespace (`path_flags::DETACHED`).
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_namespace_root: u32,
    /// `pt_regs.di`, `si`, `dx`, `r10`: the first four syscall arguments
    /// (x86-64), for the rename/link check at `sys_exit`.
    pub pt_regs_di: u32,
    pub pt_regs_si: u32,
    pub pt_regs_dx: u32,
    pub pt_regs_r10: u32,
    /// `task_struct.fs`, `fs_struct.pwd.mnt`, `fs_struct.pwd.dentry`: the
    /// working directory a relative name is resolved from.
    pub task_fs: u32,
    pub fs_pwd_mnt: u32,
    pub fs_pwd_dentry: u32,
    /// `task_struct.tgid`, `task_struct.cgroups`, `css_set.dfl_cgrp`,
    /// `cgroup.kn`, `kernfs_node.id`, `cgroup.level`, `cgroup.ancestors`:
    /// the cgroup2 cgroup of a task that is not the caller, and its
    /// ancestors (escape detection, `escape.rs`).
    pub task_tgid: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestors: u32,
    pub _pad_escape: u32,
    /// `pt_regs.bx`, `cx`: the first two arguments of an ia32 syscall
    /// (`bx, cx, dx, si, di`), for the name checks at `sys_exit`.
    pub pt_regs_bx: u32,
    pub pt_regs_cx: u32,
    /// `inode.i_nlink`, `inode.i_generation`, the inode's ctime seconds
    /// (8 bytes) and nanoseconds (4): what a decision cache hit checks
    /// (`decision_cache`). `cache_valid` is 0 when the kernel's BTF lacks
    /// one of them: the cache is then off, nothing else changes.
    pub inode_i_nlink: u32,
    pub inode_i_generation: u32,
    pub inode_i_ctime_sec: u32,
    pub inode_i_ctime_nsec: u32,
    pub cache_valid: u32,
    pub _pad_cache: u32,
    /// `dentry.d_sb`, `super_block.s_mounts`, and the link from one mount
    /// of a super block to the next (`mount.mnt_instance`, a `list_head`,
    /// before 6.16: `sb_mounts_kind` 1; `mount.mnt_next_for_sb`, a pointer
    /// ending in NULL, since: 2): the inode hooks (`lsm_names`: setxattr,
    /// removexattr, utime), which carry a dentry but no mount, decide the
    /// path under every mount of the file's super block. `task_struct.cred`
    /// and `real_cred`: an inner call made under overridden credentials
    /// (overlayfs on its upper layer) is not decided again.
    /// `sb_mounts_kind` is 0 when this kernel has neither shape: the inode
    /// hooks then refuse agents (fail closed).
    pub dentry_d_sb: u32,
    pub sb_s_mounts: u32,
    pub mount_sb_link: u32,
    pub sb_mounts_kind: u32,
    pub task_cred: u32,
    pub task_real_cred: u32,
    /// `mount.mnt_ns`: the inode hooks skip the mounts of other mount
    /// namespaces (`bpf_loop`) before any path walk.
    pub mount_mnt_ns: u32,
    pub _pad_mnt_ns: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 60 * 4);
