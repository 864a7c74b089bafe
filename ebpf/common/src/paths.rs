//! Sizes and flags of the paths the exec and open programs resolve: how
//! much of a path a rule key and an event hold, how deep the walk goes,
//! and how the resolution went (`path_flags`).

/// Bytes of path in a `PathKey` (the kernel's LPM_DATA_SIZE_MAX is 256, and
/// the slot takes 4). An exact rule holds its path and a NUL, so exact rules
/// name paths of at most 251 bytes; prefix rules at most 252.
pub const PATH_KEY_BYTES: usize = 252;
/// Bytes of path an event carries (NUL-terminated unless truncated).
pub const EVENT_PATH_BYTES: usize = 256;
/// Steps of the kernel's path walk (components and mount crossings). A path
/// deeper than this cannot be resolved, and its action is refused.
pub const MAX_PATH_DEPTH: usize = 128;

/// `flags` of exec and open events: how the path was resolved.
pub mod path_flags {
    /// The path did not fit in the event (its tail is cut); only prefix
    /// rules can match it.
    pub const TRUNCATED: u32 = 1 << 0;
    /// The walk hit `MAX_PATH_DEPTH` before the root: refused.
    pub const INCOMPLETE: u32 = 1 << 1;
    /// A kernel read failed (no file behind the fd, ...): refused.
    pub const READ_ERROR: u32 = 1 << 2;
    /// The path crosses at least one mount point.
    pub const CROSSED_MOUNT: u32 = 1 << 3;
    /// The SIGKILL of a denial could not be sent.
    pub const KILL_FAILED: u32 = 1 << 4;
    /// Another program run reused this CPU's scratch space mid-walk (a
    /// preempted program): the path cannot be trusted, refused.
    pub const SCRATCH_RACE: u32 = 1 << 5;
    /// The path-walk offsets are missing (the daemon could not read the
    /// kernel's BTF): refused.
    pub const NO_OFFSETS: u32 = 1 << 6;
    /// The walk ended at the root of a mount that is not the root of the
    /// acting process's mount namespace: a detached mount (an
    /// `open_tree(OPEN_TREE_CLONE)` copy, a kernel-internal mount). The
    /// path it built is relative to that mount, not real: refused.
    pub const DETACHED: u32 = 1 << 7;
    /// The file's dentry is in no mount tree (its own parent and not a
    /// mount's root): a memfd, an nsfs or pipefs file reached through
    /// `/proc/PID/fd`. The path holds its name only (`/memfd:NAME
    /// (deleted)`). Opens are refused as unresolved; an exec is its own
    /// decision (`rule::ANONYMOUS_EXEC`).
    pub const ANONYMOUS: u32 = 1 << 8;
    /// A name taken from user memory (rename, link) has a `.` or `..`
    /// component or an empty one (`//`): not normalised, refused.
    pub const NOT_NORMALISED: u32 = 1 << 9;
    /// Not a path property: the name came from an ia32 syscall (`int
    /// 0x80`; `NameEvent::syscall` is then an ia32 number, see
    /// `syscalls::ia32_native`).
    pub const IA32: u32 = 1 << 10;
    /// An inode hook (setxattr, removexattr, utime: no mount) found more
    /// mounts of the file's super block in the acting process's mount
    /// namespace than it walks (`MAX_SB_MOUNTS`), or more entries in the
    /// super block's mount list than it scans (`MAX_SB_MOUNT_SCAN`):
    /// refused.
    pub const TOO_MANY_MOUNTS: u32 = 1 << 11;
}
/// The mounts of one super block an inode hook decides the path under.
pub const MAX_SB_MOUNTS: u32 = 4;
/// The entries of a super block's mount list (every mount namespace's) an
/// inode hook scans in one call; mounts of other namespaces are skipped by
/// one pointer comparison each (`bpf_loop`), with no path walk.
pub const MAX_SB_MOUNT_SCAN: u32 = 4096;
