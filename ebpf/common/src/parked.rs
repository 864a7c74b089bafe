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
