//! Every map of the object. The daemon finds them by these symbol names
//! (`warden_common::names`), so a name here never changes.

use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf,
    },
};
use warden_common::{
    limits, AgentCounters, AgentInfo, Budget, BudgetSet, BudgetUseKey, DnsOrig, DnsProxy, Doomed,
    EgressDrops, FileRule, Held, HoldKey, LossCounts, LossKey, Member, Net4Key, Net6Key, NetRules,
    Parked, PathKey, PathRule, SockRules, SummaryCount, SummaryKey,
};
use warden_common::{CacheEntry, CacheKey};

#[map]
pub static AGENTS: HashMap<u64, AgentInfo> = HashMap::with_max_entries(limits::MAX_AGENTS, 0);

/// `[0]`: bit L set when some agent cgroup is at cgroup level L (set by
/// the daemon): where `agent::governing_agent` looks for the agent of a
/// process in a cgroup below an agent's.
#[map]
pub static AGENT_LEVELS: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static NET4_RULES: LpmTrie<Net4Key, NetRules> =
    LpmTrie::with_max_entries(limits::MAX_NET_ENTRIES, 0);

#[map]
pub static NET6_RULES: LpmTrie<Net6Key, NetRules> =
    LpmTrie::with_max_entries(limits::MAX_NET_ENTRIES, 0);

/// Where each DNS-redirected agent's proxy listens (`DnsProxy`).
#[map]
pub static DNS_PROXY: HashMap<u32, DnsProxy> = HashMap::with_max_entries(limits::MAX_AGENTS, 0);

/// The resolver each redirected DNS socket asked (`DnsOrig`).
#[map]
pub static DNS_ORIG: LruHashMap<u64, DnsOrig> =
    LruHashMap::with_max_entries(limits::MAX_DNS_SOCKETS, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(limits::EVENTS_BYTES, 0);

/// Threads a hold stopped or is about to stop, by thread id (see `Held`).
#[map]
pub static HELD: HashMap<u32, Held> = HashMap::with_max_entries(limits::MAX_HOLDS, 0);

/// Human decisions on held actions, written by the daemon before it resumes
/// the thread, consumed by the hook when the syscall restarts.
#[map]
pub static GRANTS: HashMap<HoldKey, u32> = HashMap::with_max_entries(limits::MAX_HOLDS, 0);

/// Exec rules, by (slot, resolved path of the executed file).
#[map]
pub static EXEC_RULES: LpmTrie<PathKey, PathRule> =
    LpmTrie::with_max_entries(limits::MAX_PATH_ENTRIES, 0);

/// File rules, by (slot, resolved path of the opened file), per access.
#[map]
pub static FILE_RULES: LpmTrie<PathKey, FileRule> =
    LpmTrie::with_max_entries(limits::MAX_PATH_ENTRIES, 0);

/// `[0]`: what the `sys_exit` program does (`sys_exit_mode` bits), set by
/// the daemon. `[1]`: non-zero while a fallback hold may have paused a
/// thread (set by `hold::pause`, cleared by the daemon when `HELD` has no
/// paused thread).
#[map]
pub static SYS_EXIT_MODE: Array<u32> = Array::with_max_entries(2, 0);

/// Scratch space of the path walk, one per CPU (too big for the stack).
#[map]
pub static PATH_SCRATCH: PerCpuArray<crate::path::Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(warden_common::counter::COUNT, 0);

/// What the kernel decided per agent (agent id -> counts), so the daemon
/// can name the agent whose actions went unrecorded.
#[map]
pub static AGENT_COUNTERS: PerCpuHashMap<u32, AgentCounters> =
    PerCpuHashMap::with_max_entries(limits::MAX_AGENTS + 1, 0);

/// Records the full ring buffer could not take, by thread id (see
/// `events::park`); the daemon drains them and continues the threads.
#[map]
pub static OVERFLOW: HashMap<u32, Parked> = HashMap::with_max_entries(limits::MAX_PARKED, 0);

/// `heartbeat` slots, written by the daemon: whether one is draining.
#[map]
pub static HEARTBEAT: Array<u64> = Array::with_max_entries(warden_common::heartbeat::COUNT, 0);

/// Where a parked record is built (too big for the stack), one per CPU.
#[map]
pub static PARK_SCRATCH: PerCpuArray<Parked> = PerCpuArray::with_max_entries(1, 0);

/// Each agent's share of a congested ring buffer (see `Budget`).
#[map]
pub static AGENT_BUDGET: HashMap<u32, Budget> = HashMap::with_max_entries(limits::MAX_AGENTS, 0);

/// Unrecorded and throttled actions per (agent, action class), with the
/// last process that lost one.
#[map]
pub static AGENT_LOSS: PerCpuHashMap<LossKey, LossCounts> =
    PerCpuHashMap::with_max_entries(limits::MAX_AGENTS * 4, 0);
/// Raw and packet socket rules, keyed by agent slot (`u32`); two slots per
/// agent, as for the other rule maps.
#[map]
pub static SOCK_RULES: HashMap<u32, SockRules> =
    HashMap::with_max_entries(limits::MAX_AGENTS * 2, 0);

/// Repeated allowed actions, counted instead of recorded (see
/// `warden_common::SummaryKey`). Per-CPU, so a repeat is a plain add (the
/// BPF target has no atomic add in stable Rust); the daemon sums the CPUs.
/// Not LRU: nothing is evicted, a full map means new keys are recorded
/// individually.
#[map]
pub static SUMMARIES: PerCpuHashMap<SummaryKey, SummaryCount> =
    PerCpuHashMap::with_max_entries(limits::MAX_SUMMARY_KEYS, 0);

/// Which agent each process belongs to, by thread group id (see
/// `warden_common::Member`, `escape.rs`). Not preallocated: it holds the
/// live processes of agents only.
#[map]
pub static MEMBERS: HashMap<u32, Member> =
    HashMap::with_max_entries(limits::MAX_MEMBERS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Escaped processes to kill at their next syscall exit, by thread group
/// id (`escape.rs` marks, `fallback/doomed.rs` kills).
#[map]
pub static DOOMED: HashMap<u32, Doomed> =
    HashMap::with_max_entries(limits::MAX_DOOMED, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// `[0]`: the number of `DOOMED` entries, so every other syscall exit
/// pays one array read (inlined) and no lookup.
#[map]
pub static DOOMED_ANY: Array<u64> = Array::with_max_entries(1, 0);

/// `[0]`: `fallback::path_ops::warden_path_ops`, tail-called by the
/// `sys_exit` program (see `warden_common::names::SYS_EXIT_TAIL`).
#[map]
pub static SYS_EXIT_TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// `[0]`: `fallback::shadow::warden_shadow_open`, tail-called by the open
/// fallback for a `shadow:` candidate (`warden_common::names::SHADOW_TAIL`).
#[map]
pub static SHADOW_TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// Each policy's budgets, by agent rule slot (two per agent).
#[map]
pub static BUDGETS: HashMap<u32, BudgetSet> = HashMap::with_max_entries(limits::MAX_AGENTS * 2, 0);

/// Each (agent, budget)'s window and count (`warden_common::budget_use`).
/// Shared, not per-CPU: one compare-and-swap per counted action keeps the
/// limit exact across CPUs (see `judge::budget`).
#[map]
pub static BUDGET_USE: HashMap<BudgetUseKey, u64> =
    HashMap::with_max_entries(limits::MAX_AGENTS * warden_common::MAX_BUDGETS as u32, 0);

/// Allowed opens by file identity (`warden_common::CacheKey`), so that a
/// counted repeat skips the path walk (`fallback::cache`). LRU: bounded,
/// an evicted entry only costs the next open a walk.
#[map]
pub static DECISION_CACHE: LruHashMap<CacheKey, CacheEntry> =
    LruHashMap::with_max_entries(limits::MAX_DECISION_CACHE, 0);

/// `decision_cache` slots: the epoch (bumped by `sys_exit` and the daemon)
/// and the entries' TTL (the daemon's; 0 turns the cache off).
#[map]
pub static DECISION_CACHE_CONF: Array<u64> =
    Array::with_max_entries(warden_common::decision_cache::COUNT, 0);

/// Packets dropped over `bytes: egress` budgets, per (agent, budget), per
/// CPU (plain adds), read and deleted by the daemon's sweep.
#[map]
pub static EGRESS_DROPS: PerCpuHashMap<BudgetUseKey, EgressDrops> =
    PerCpuHashMap::with_max_entries(limits::MAX_AGENTS * warden_common::MAX_BUDGETS as u32, 0);
