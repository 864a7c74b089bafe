//! Capacity of the maps. The daemon validates policies against these, so a
//! policy that does not fit is rejected at load time, never truncated.

/// Redirected DNS sockets whose original resolver is kept (`DNS_ORIG`, an
/// LRU map: the oldest is forgotten first).
pub const MAX_DNS_SOCKETS: u32 = 65536;
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

/// Deepest cgroup level (root = 0) an agent cgroup may sit at: processes in
/// cgroups below an agent's are governed by it, and the programs look
/// their ancestors up at the levels `AGENT_LEVELS` marks, up to this one.
pub const MAX_AGENT_LEVEL: u32 = 31;
/// Records parked while the ring buffer is full (`OVERFLOW`): one per
/// stopped thread at most, so this bounds the threads paused at once.
pub const MAX_PARKED: u32 = 4096;
/// Default `heartbeat::STALE_NS`: a daemon silent for longer is taken as
/// not draining, and `on_evidence_loss` decides.
// 30 s, not 5: the daemon beats between drains, and one drain of a full
// ring buffer by a debug build on a loaded machine took longer than 5 s,
// so a busy agent's allowed action found the heartbeat stale and was
// killed (fail-closed) while the daemon was in fact draining.
pub const HEARTBEAT_STALE_NS: u64 = 30_000_000_000;
/// Each agent's share of a shared rule map (`NET4_RULES`, `NET6_RULES`,
/// `EXEC_RULES`, `FILE_RULES`): one policy may fill `max_entries / (2 *
/// RULE_MAP_SHARES)` of it (the 2: a reload writes the new rules beside the
/// old). So this many agents with policies that fill their whole share
/// always fit together, mid-reload included, and one agent's big policy
/// cannot make another's fail.
pub const RULE_MAP_SHARES: u32 = 8;
/// Distinct repeated-action keys counted at once (`SUMMARIES`); beyond
/// it, actions of new keys are recorded individually.
pub const MAX_SUMMARY_KEYS: u32 = 65536;
/// Allowed opens remembered at once (`DECISION_CACHE`, LRU: the least
/// recently used entry makes room, which only costs a walk).
pub const MAX_DECISION_CACHE: u32 = 65536;
/// Processes of agents tracked at once (`MEMBERS`, not preallocated).
/// Beyond it a new process of an agent is not tracked (its escape would
/// not be seen): see README, Known gaps.
pub const MAX_MEMBERS: u32 = 1 << 18;
/// Escaped processes awaiting their kill at their next syscall exit at
/// once (`DOOMED`); beyond it the daemon's kill from the record is all.
pub const MAX_DOOMED: u32 = 4096;
