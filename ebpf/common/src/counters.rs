//! What the kernel counts beside the ring buffer: the per-CPU `COUNTERS`
//! array (machine-wide) and the per-CPU `AGENT_COUNTERS` hash (per agent),
//! so the daemon can tell decisions that went unrecorded.

use core::mem::size_of;

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events written to the ring buffer.
    pub const EVENTS: u32 = 0;
    /// Events that could not be reserved (ring buffer full).
    pub const DROPPED: u32 = 1;
    pub const ALLOWED: u32 = 2;
    pub const DENIED: u32 = 3;
    /// Syscalls paused for approval (each restart that finds no decision
    /// yet counts again).
    pub const HELD: u32 = 4;
    /// The stop signal could not be sent; the hold became a denial.
    pub const HOLD_FAILED: u32 = 5;
    /// A denial's SIGKILL could not be sent (the event says which).
    pub const KILL_FAILED: u32 = 6;
    /// A thread a fallback hold stopped ran again without a grant (a
    /// SIGCONT before the daemon made the stop immune) and was killed.
    pub const HOLD_BREACH: u32 = 7;
    /// Records the full ring buffer could not take, parked in `OVERFLOW`
    /// (the acting thread stopped until the daemon drained them).
    pub const PARKED: u32 = 8;
    /// Opens allowed from the decision cache (`DECISION_CACHE`), no walk.
    pub const CACHE_HITS: u32 = 9;
    pub const COUNT: u32 = 10;
}

/// Value of the per-CPU `AGENT_COUNTERS` hash, keyed by agent id: what
/// the kernel decided for one agent (agent id 0: processes in cgroups not
/// registered yet). The daemon compares it with what reached the log.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounters {
    /// Decisions made (recorded or not).
    pub decisions: u64,
    /// Actions refused because their event could not be reserved.
    pub dropped: u64,
    /// Actions allowed although their event could not be reserved
    /// (`agent_flags::FAIL_OPEN`).
    pub allowed_unrecorded: u64,
}
const _: () = assert!(size_of::<AgentCounters>() == 24);

/// Which field of `AgentCounters` to count.
pub mod agent_counter {
    pub const DECISIONS: u32 = 0;
    pub const DROPPED: u32 = 1;
    pub const ALLOWED_UNRECORDED: u32 = 2;
}
