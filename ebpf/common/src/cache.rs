//! The decision cache of opens (`DECISION_CACHE`; the fallback's
//! `sys_exit` and the BPF LSM / `fmod_ret` open hooks): an allowed open of a
//! file identity, remembered so that a repeat whose record would only be
//! counted (`SUMMARIES`) skips the path walk and the rule lookup.
//!
//! Only allows are cached, and only for files with one name (`nlink == 1`).
//! A hit must still match everything below, else the open is decided
//! afresh (and the entry replaced):
//! - the key: agent, policy version, `dev`, `ino`, access;
//! - the same `struct inode` and `struct vfsmount` (another mount of the
//!   same file, a reused inode number), the inode's generation and ctime
//!   (its own rename, a link, a chmod change it), still one link;
//! - the global epoch (`DECISION_CACHE_CONF[EPOCH]`): bumped by `sys_exit`
//!   after every successful rename, mount change or `pivot_root` of any
//!   process, and by the daemon at every policy install and `sys_exit`
//!   attach; where BPF LSM or `fmod_ret` decides opens, by `fexit` programs
//!   at the return of `vfs_rename`, `path_mount`, `path_umount`,
//!   `do_move_mount` and `pivot_root` (`names::CACHE_EPOCH_PROGRAMS`); so a
//!   directory renamed above the file invalidates every entry;
//! - its age: at most `DECISION_CACHE_CONF[TTL_NS]` (0: cache off), for
//!   what `sys_exit` cannot see (`io_uring` renames, remote file systems).

use core::mem::size_of;

/// Key of `DECISION_CACHE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub agent_id: u32,
    pub policy_gen: u32,
    pub dev: u32,
    /// The `access` bits requested.
    pub access: u32,
    pub ino: u64,
}
const _: () = assert!(size_of::<CacheKey>() == 24);

/// Value of `DECISION_CACHE`: the allow and what must still hold for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheEntry {
    /// `struct inode *` and `struct vfsmount *` of the decided open.
    pub inode: u64,
    pub mnt: u64,
    pub ctime_sec: i64,
    /// `i_ctime_nsec` without the multigrain "queried" bits.
    pub ctime_nsec: u32,
    pub generation: u32,
    /// `DECISION_CACHE_CONF[EPOCH]` read before the walk.
    pub epoch: u64,
    /// `bpf_ktime_get_boot_ns()` when decided.
    pub at_ns: u64,
    /// The rule that allowed it (the summary key's).
    pub rule_idx: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<CacheEntry>() == 56);

/// Slots of `DECISION_CACHE_CONF` (`Array<u64>`).
pub mod decision_cache {
    /// Bumped on every change that can move a file to another path.
    pub const EPOCH: u32 = 0;
    /// Longest an entry is used, ns; 0 turns the cache off.
    pub const TTL_NS: u32 = 1;
    pub const COUNT: u32 = 2;
    /// `i_ctime_nsec` bits that are not nanoseconds (multigrain
    /// timestamps, 6.13+: `I_CTIME_QUERIED` is bit 31).
    pub const CTIME_NSEC_MASK: u32 = 0x3FFF_FFFF;
    /// The daemon's default `TTL_NS` (`WARDEN_DECISION_CACHE_MS`).
    pub const DEFAULT_TTL_MS: u64 = 1000;

    /// Syscalls whose success can give a file another path, 64-bit table
    /// (`rename`, `renameat`, `renameat2`, `mount`, `umount2`,
    /// `pivot_root`, `move_mount`; a mount that `open_tree` or `fsmount`
    /// made is reachable by a path only after `move_mount`).
    pub const PATH_CHANGES: [u32; 7] = [82, 264, 316, 165, 166, 155, 429];
    /// The same, ia32 table (`rename`, `renameat`, `renameat2`, `mount`,
    /// `umount2`, `umount`, `pivot_root`; `move_mount` has the 64-bit
    /// number there too).
    pub const IA32_PATH_CHANGES: [u32; 7] = [38, 302, 353, 21, 52, 22, 217];
}
