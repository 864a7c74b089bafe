//! Holds: a thread stopped at an action until a human decides. `HoldKey`
//! names the held action in `GRANTS`, where the daemon writes the decision;
//! `Held` is the thread's entry in `HELD`, what the `sys_exit` and
//! page-fault programs do when they see it run.

use core::mem::size_of;

/// A held action, exactly: the thread and the destination tuple. Key of the
/// `GRANTS` map, where the daemon writes a human's decision (a `Decision` as
/// `u32`) before resuming the thread. The hook consumes the entry when the
/// restarted syscall comes back, so a grant opens this one action only; if
/// the thread retries with another destination, the key does not match and
/// the action is held again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HoldKey {
    pub cgroup_id: u64,
    pub tid: u32,
    pub family: u16,
    pub port: u16,
    pub proto: u8,
    pub _pad: [u8; 7],
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<HoldKey>() == 40);

/// `HoldKey::family` of a held exec (not an address family).
pub const HOLD_FAMILY_EXEC: u16 = 0xe8ec;
/// `HoldKey::family` of a held open (not an address family).
pub const HOLD_FAMILY_FILE: u16 = 0xf11e;
/// `HoldKey::family` of a held operation on names (BPF LSM / fmod_ret
/// `path_*` hooks; not an address family).
pub const HOLD_FAMILY_NAME: u16 = 0x4a3e;

/// FNV-1a (64-bit) of the first `len` bytes of an event's path: a held
/// operation on names is bound to its paths by these (`HoldKey::name`).
/// The hook hashes the path it recorded, the daemon the bytes it received.
#[inline(always)]
pub fn name_hash(path: &[u8; crate::EVENT_PATH_BYTES], len: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < crate::EVENT_PATH_BYTES {
        if i as u32 >= len {
            break;
        }
        h ^= path[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

impl HoldKey {
    /// The key of a held exec: the thread and the identity of the file it
    /// executes (`sb->s_dev` as the kernel encodes it, and the inode), so
    /// an approval opens that binary only. The LSM exec hook and the daemon
    /// both build it here.
    pub const fn exec(cgroup_id: u64, tid: u32, dev: u32, ino: u64) -> Self {
        let d = dev.to_le_bytes();
        let i = ino.to_le_bytes();
        Self {
            cgroup_id,
            tid,
            family: HOLD_FAMILY_EXEC,
            port: 0,
            proto: 0,
            _pad: [0; 7],
            addr: [
                d[0], d[1], d[2], d[3], i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7], 0, 0, 0, 0,
            ],
        }
    }

    /// The key of a held open: the thread, the file's identity and the
    /// access asked for (`access` bits, in `port`), so an approval opens
    /// that file, that way, only.
    pub const fn file(cgroup_id: u64, tid: u32, dev: u32, ino: u64, access: u32) -> Self {
        let mut key = Self::exec(cgroup_id, tid, dev, ino);
        key.family = HOLD_FAMILY_FILE;
        key.port = access as u16;
        key
    }

    /// The key of a held operation on names: the thread, the operation
    /// (its plain syscall's number, in `port`) and the `name_hash` of each
    /// path (the new one 0 for an operation on one name), so an approval
    /// opens that rename of that name to that name only.
    pub const fn name(cgroup_id: u64, tid: u32, op: u32, old_hash: u64, new_hash: u64) -> Self {
        let o = old_hash.to_le_bytes();
        let n = new_hash.to_le_bytes();
        Self {
            cgroup_id,
            tid,
            family: HOLD_FAMILY_NAME,
            port: op as u16,
            proto: 0,
            _pad: [0; 7],
            addr: [
                o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], n[0], n[1], n[2], n[3], n[4], n[5],
                n[6], n[7],
            ],
        }
    }
}

/// Value of `HELD`, keyed by thread id: a thread a hold stopped or is about
/// to stop, and what the `sys_exit` and page-fault programs do when they
/// see it run (`held_state`).
///
/// Where a hook can fail its syscall (cgroup hooks, BPF LSM), a held thread
/// is harmless when continued: the syscall restarts and the hook decides
/// again. The fallback's exec and open hooks run after the action took
/// effect, so there the stop itself is the barrier: the daemon makes it
/// immune to SIGCONT (ptrace), and these programs kill a thread that runs
/// again without approval before its next instruction or syscall returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub state: u32,
    pub _pad: u32,
    /// `task_struct.start_time` of the thread: a recycled thread id is
    /// never mistaken for the held thread. For `STOP_AT_EXIT`: when the
    /// mark was made (`bpf_ktime_get_ns`), so the `fexit` that stops the
    /// thread (`ebpf/programs/src/hold_stop.rs`) ignores a mark whose
    /// thread died before it was stopped.
    pub start_time: u64,
}
const _: () = assert!(size_of::<Held>() == 16);

/// `Held::state`.
pub mod held_state {
    /// A cgroup hook failed the syscall with ERESTARTNOINTR: send SIGSTOP
    /// at this syscall's exit (or right after the cgroup hook, where the
    /// `fexit` of `hold_stop.rs` runs), then forget the thread.
    pub const STOP_AT_EXIT: u32 = 1;
    /// How long a `STOP_AT_EXIT` mark stays good for `hold_stop.rs`: it
    /// runs right after the mark, so an older mark is a thread that died
    /// in between (its id may be reused).
    pub const MARK_TTL_NS: u64 = 1_000_000_000;
    /// The fallback exec hook held a committed exec and sent SIGSTOP; the
    /// execve's own exit is still to come (then `PAUSED`).
    pub const EXEC_STOPPING: u32 = 2;
    /// Stopped after its action took effect: running again while still in
    /// `HELD` is a breach, and the thread is killed. Approval removes the
    /// entry before it continues the thread.
    pub const PAUSED: u32 = 3;
    /// A cgroup hook refused an action over a `then: kill` budget: kill
    /// the process at this syscall's exit (a cgroup hook cannot signal).
    pub const KILL_AT_EXIT: u32 = 4;
}
