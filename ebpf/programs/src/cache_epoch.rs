//! The decision cache's epoch where BPF LSM or `fmod_ret` decides opens.
//!
//! There the open hooks (`lsm::decide_open`) decide repeats from the same
//! cache as the fallback (`fallback/cache.rs`), but there is no `sys_exit`
//! to see a rename or a mount change. These `fexit` programs run when the
//! kernel function that made the change returns, so the change is complete
//! (visible to every path walk) before the epoch moves on: an entry made
//! during the change carries the old epoch and is stale afterwards. They
//! run for every process on the machine, the agent's and outsiders', and
//! do one atomic add; a failed call moves the epoch too (a miss, never a
//! wrong hit).
//!
//! The functions (Debian 6.12's BTF; `names::CACHE_EPOCH_PROGRAMS`):
//! `vfs_rename` (every rename: the syscalls, `io_uring`, overlayfs and
//! nfsd), `path_mount` (`mount(2)`: new, bind, move, remount, propagation),
//! `path_umount` (`umount2`, `umount`), `do_move_mount` (`move_mount(2)`,
//! which attaches `open_tree`/`fsmount` mounts) and `pivot_root(2)`
//! (`__x64_sys_pivot_root`, `__ia32_sys_pivot_root`).

use aya_ebpf::{macros::fexit, programs::FExitContext};

use crate::fallback::cache::bump_epoch;

// int vfs_rename(struct renamedata *rd)
#[fexit(function = "vfs_rename")]
pub fn warden_epoch_rename(_ctx: FExitContext) -> i32 {
    bump_epoch();
    0
}

// int path_mount(const char *dev_name, struct path *path,
//     const char *type_page, unsigned long flags, void *data_page)
#[fexit(function = "path_mount")]
pub fn warden_epoch_mount(_ctx: FExitContext) -> i32 {
    bump_epoch();
    0
}

// int path_umount(struct path *path, int flags)
#[fexit(function = "path_umount")]
pub fn warden_epoch_umount(_ctx: FExitContext) -> i32 {
    bump_epoch();
    0
}

// static int do_move_mount(struct path *old_path, struct path *new_path,
//     bool beneath)
#[fexit(function = "do_move_mount")]
pub fn warden_epoch_move_mount(_ctx: FExitContext) -> i32 {
    bump_epoch();
    0
}

// long __x64_sys_pivot_root(const struct pt_regs *regs), and the ia32
// entry: `__do_sys_pivot_root` itself has no fentry site (attaching to it
// fails with EBUSY on Debian 6.12).
#[fexit(function = "__x64_sys_pivot_root")]
pub fn warden_epoch_pivot_root(_ctx: FExitContext) -> i32 {
    bump_epoch();
    0
}

#[fexit(function = "__ia32_sys_pivot_root")]
pub fn warden_epoch_pivot_root_ia32(_ctx: FExitContext) -> i32 {
    bump_epoch();
    0
}
