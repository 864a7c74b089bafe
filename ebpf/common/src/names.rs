//! Names of the maps and programs in the eBPF object. The kernel crate uses
//! the same identifiers as its symbol names; a test in the daemon loads the
//! object and checks that each of these exists.

pub const AGENTS: &str = "AGENTS";
pub const NET4_RULES: &str = "NET4_RULES";
pub const NET6_RULES: &str = "NET6_RULES";
pub const EVENTS: &str = "EVENTS";
pub const COUNTERS: &str = "COUNTERS";
/// Per-CPU hash of `AgentCounters`, keyed by agent id (`u32`).
pub const AGENT_COUNTERS: &str = "AGENT_COUNTERS";
/// Hash of repeated allowed actions, `SummaryKey` -> `SummaryCount`.
pub const SUMMARIES: &str = "SUMMARIES";

/// Maps pinned under `<pin dir>/maps/` and reused by the next daemon,
/// so agents stay enforced (and their actions counted and queued) while
/// no daemon runs. Scratch maps are not state and are not pinned.
pub const PINNED_MAPS: [&str; 12] = [
    AGENTS,
    NET4_RULES,
    NET6_RULES,
    EVENTS,
    COUNTERS,
    HELD,
    GRANTS,
    EXEC_RULES,
    FILE_RULES,
    SYS_EXIT_MODE,
    AGENT_COUNTERS,
    SUMMARIES,
];
pub const HELD: &str = "HELD";
pub const GRANTS: &str = "GRANTS";

pub const PROG_CONNECT4: &str = "warden_connect4";
pub const PROG_CONNECT6: &str = "warden_connect6";
pub const PROG_SENDMSG4: &str = "warden_sendmsg4";
pub const PROG_SENDMSG6: &str = "warden_sendmsg6";

/// `tp_btf/sys_exit`: stops a thread whose syscall a cgroup hook held.
pub const PROG_SYS_EXIT: &str = "warden_sys_exit";
pub const SYS_EXIT_TRACEPOINT: &str = "sys_exit";

/// The cgroup sock_addr programs, attached to every agent cgroup.
pub const CGROUP_NET_PROGRAMS: [&str; 4] =
    [PROG_CONNECT4, PROG_CONNECT6, PROG_SENDMSG4, PROG_SENDMSG6];

/// Exec rules: LPM trie keyed by `PathKey`, values `PathRule`.
pub const EXEC_RULES: &str = "EXEC_RULES";
/// File rules: LPM trie keyed by `PathKey`, values `FileRule`.
pub const FILE_RULES: &str = "FILE_RULES";
/// Per-CPU scratch space of the path walk (kernel only).
pub const PATH_SCRATCH: &str = "PATH_SCRATCH";
/// One `u32` of `sys_exit_mode` bits: what the `sys_exit` program does.
pub const SYS_EXIT_MODE: &str = "SYS_EXIT_MODE";
/// Read-only global (`.rodata`) holding `KernelOffsets`, set at load.
pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";

/// `tp_btf/sched_process_exec`: decides every exec of an agent.
pub const PROG_EXEC: &str = "warden_exec";
pub const EXEC_TRACEPOINT: &str = "sched_process_exec";

/// `tp_btf/page_fault_user`: kills a thread that a fallback hold
/// stopped if it runs again without a grant (see `Held`). Attached
/// only while some agent's policy holds execs on the fallback.
pub const PROG_FAULT_GUARD: &str = "warden_fault_guard";
pub const FAULT_TRACEPOINT: &str = "page_fault_user";

/// BPF LSM (used instead of the two tracepoint fallbacks where the
/// kernel runs them): `lsm/bprm_check_security` decides execs,
/// `lsm/file_open` decides opens; both fail the syscall with EPERM.
pub const PROG_LSM_EXEC: &str = "warden_lsm_exec";
pub const LSM_EXEC_HOOK: &str = "bprm_check_security";
pub const PROG_LSM_OPEN: &str = "warden_lsm_open";
pub const LSM_OPEN_HOOK: &str = "file_open";
