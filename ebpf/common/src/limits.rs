//! Capacity of the maps. The daemon validates policies against these, so a
//! policy that does not fit is rejected at load time, never truncated.

/// Agents (cgroups) the kernel can track at once.
pub const MAX_AGENTS: u32 = 4096;
/// Distinct (slot, CIDR) entries across all agents and both slots.
pub const MAX_NET_ENTRIES: u32 = 65536;
/// Port rules that can apply to one CIDR entry after flattening.
pub const MAX_PORT_RULES: usize = 16;
/// Threads that can be held (stopped awaiting approval) at once, and
/// approval decisions waiting to be picked up by a resumed thread.
pub const MAX_HOLDS: u32 = 4096;
/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 22;
/// Distinct (slot, path) entries across all agents and both slots, per
/// rule kind (exec, file).
pub const MAX_PATH_ENTRIES: u32 = 16384;
/// Exec and open programs submit allowed decisions without waking the
/// daemon until this much is waiting in the ring buffer; the daemon
/// also drains it every `EVENTS_POLL_MS`.
pub const EVENTS_WAKEUP_BYTES: u64 = EVENTS_BYTES as u64 / 8;
pub const EVENTS_POLL_MS: u64 = 20;
/// Distinct repeated-action keys counted at once (`SUMMARIES`); beyond
/// it, actions of new keys are recorded individually.
pub const MAX_SUMMARY_KEYS: u32 = 65536;
