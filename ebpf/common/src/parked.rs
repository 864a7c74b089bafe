//! Backpressure: records the ring buffer had no room for, parked in the
//! `OVERFLOW` hash (keyed by thread id) while the acting thread is
//! stopped, until the daemon drains them into evidence and continues the
//! thread. `HEARTBEAT` says whether a daemon is draining at all.

use core::mem::size_of;

use crate::ExecEvent;

/// Bytes of a parked record: the largest event (`ExecEvent`).
pub const PARKED_BYTES: usize = size_of::<ExecEvent>();

/// Value of `OVERFLOW`, keyed by thread id (`u32`): one event that found
/// the ring buffer full, byte for byte as it would have been submitted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parked {
    /// `parked_flags` bits.
    pub flags: u32,
    /// Bytes of `event` used (the event's size).
    pub len: u32,
    /// The record; `u64`s so that it is aligned for every event type.
    pub event: [u64; PARKED_BYTES / 8],
}
const _: () = assert!(PARKED_BYTES.is_multiple_of(8));
const _: () = assert!(size_of::<Parked>() == 8 + PARKED_BYTES);

/// `Parked::flags`.
pub mod parked_flags {
    /// The hook sent the thread SIGSTOP: the daemon continues it (SIGCONT)
    /// once the record is drained.
    pub const STOPPED: u32 = 1 << 0;
}

/// Slots of the `HEARTBEAT` array (`u64` each), written by the daemon.
pub mod heartbeat {
    /// `CLOCK_BOOTTIME` in ns of the daemon's last drain.
    pub const LAST_NS: u32 = 0;
    /// How old `LAST_NS` may be for the daemon to count as draining
    /// (0: no daemon ever ran, nothing is parked).
    pub const STALE_NS: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Value of `AGENT_BUDGET`, keyed by agent id (`u32`): a token bucket of
/// ring buffer records. The kernel consults it only while the ring buffer
/// is congested (at least `limits::EVENTS_WAKEUP_BYTES` waiting), so one
/// agent's flood cannot take the ring buffer from the others: its
/// allowed network actions over the rate are refused (EPERM) and counted
/// (`LossCounts::throttled`). The daemon writes `rate` and `burst`; the
/// kernel keeps `tokens` and `last_ns` (updated without atomics: two CPUs
/// racing may let a token or two more through, never fewer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Records per second.
    pub rate: u64,
    pub burst: u64,
    pub tokens: u64,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<Budget>() == 32);

/// Key of `AGENT_LOSS`: which agent, which action class (`EventKind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LossKey {
    pub agent_id: u32,
    pub kind: u32,
}
const _: () = assert!(size_of::<LossKey>() == 8);

/// Value of the per-CPU `AGENT_LOSS`: actions of one agent and class
/// whose record found no room, and the last process that lost one (so a
/// GAP entry names the agent, the process and the action class).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossCounts {
    /// Refused for want of room (fail-closed).
    pub dropped: u64,
    /// Allowed unrecorded (`on_evidence_loss: allow`).
    pub allowed_unrecorded: u64,
    /// Refused because the agent was over its share (`Budget`).
    pub throttled: u64,
    pub last_pid: u32,
    pub last_tid: u32,
    pub last_comm: [u8; 16],
    /// `bpf_ktime_get_boot_ns` of the last loss on this CPU.
    pub last_ns: u64,
}
const _: () = assert!(size_of::<LossCounts>() == 56);

/// Which field of `LossCounts` to count.
pub mod loss {
    pub const DROPPED: u32 = 0;
    pub const ALLOWED_UNRECORDED: u32 = 1;
    pub const THROTTLED: u32 = 2;
}
