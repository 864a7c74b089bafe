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
/// `Array<u32>`, one entry: bit L set when some agent cgroup is at level L
/// of the cgroup2 hierarchy (root = 0); see `limits::MAX_AGENT_LEVEL`.
pub const AGENT_LEVELS: &str = "AGENT_LEVELS";
/// Hash of repeated allowed actions, `SummaryKey` -> `SummaryCount`.
pub const SUMMARIES: &str = "SUMMARIES";

/// Maps pinned under `<pin dir>/maps/` and reused by the next daemon,
/// so agents stay enforced (and their actions counted and queued) while
/// no daemon runs. Scratch maps are not state and are not pinned.
pub const PINNED_MAPS: [&str; 26] = [
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
    AGENT_LEVELS,
    OVERFLOW,
    HEARTBEAT,
    AGENT_BUDGET,
    AGENT_LOSS,
    SOCK_RULES,
    SUMMARIES,
    MEMBERS,
    SYS_EXIT_TAIL,
    SHADOW_TAIL,
    BUDGETS,
    BUDGET_USE,
    EGRESS_DROPS,
    DOOMED,
    DOOMED_ANY,
];
pub const HELD: &str = "HELD";
pub const GRANTS: &str = "GRANTS";

pub const PROG_CONNECT4: &str = "warden_connect4";
pub const PROG_CONNECT6: &str = "warden_connect6";
pub const PROG_SENDMSG4: &str = "warden_sendmsg4";
pub const PROG_SENDMSG6: &str = "warden_sendmsg6";

/// `cgroup/sock_create`: decides raw and packet sockets at creation.
pub const PROG_SOCK_CREATE: &str = "warden_sock_create";
/// Hash of `SockRules`, keyed by agent slot (`u32`).
pub const SOCK_RULES: &str = "SOCK_RULES";

/// `tp_btf/sys_exit`: stops a thread whose syscall a cgroup hook held.
pub const PROG_SYS_EXIT: &str = "warden_sys_exit";
pub const SYS_EXIT_TRACEPOINT: &str = "sys_exit";

/// `cgroup/recvmsg4`/`recvmsg6`: a redirected DNS socket's replies show
/// the resolver it asked as their source.
pub const PROG_RECVMSG4: &str = "warden_recvmsg4";
pub const PROG_RECVMSG6: &str = "warden_recvmsg6";
/// `cgroup/getpeername4`/`getpeername6`: a redirected DNS socket's peer
/// (TCP, connected UDP) shows as the resolver it asked.
pub const PROG_GETPEERNAME4: &str = "warden_getpeername4";
pub const PROG_GETPEERNAME6: &str = "warden_getpeername6";
/// Hash of `DnsProxy`, keyed by agent id (`u32`).
pub const DNS_PROXY: &str = "DNS_PROXY";
/// LRU hash of `DnsOrig`, keyed by socket cookie (`u64`).
pub const DNS_ORIG: &str = "DNS_ORIG";

/// The cgroup sock_addr programs, attached to every agent cgroup.
pub const CGROUP_NET_PROGRAMS: [&str; 8] = [
    PROG_CONNECT4,
    PROG_CONNECT6,
    PROG_SENDMSG4,
    PROG_SENDMSG6,
    PROG_RECVMSG4,
    PROG_RECVMSG6,
    PROG_GETPEERNAME4,
    PROG_GETPEERNAME6,
];

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
/// `fmod_ret` on the kernel's `security_*` functions (used where BPF LSM is
/// built but not active and BPF trampolines work). In the object they sit
/// in `fexit/...` sections, which aya parses; the daemon loads them itself
/// as `BPF_MODIFY_RETURN` (aya cannot), see `daemon/src/kernel/fmod_ret.rs`.
pub const PROG_FMODRET_EXEC: &str = "warden_fmodret_exec";
pub const FMODRET_EXEC_FN: &str = "security_bprm_check";
pub const PROG_FMODRET_OPEN: &str = "warden_fmodret_open";
pub const FMODRET_OPEN_FN: &str = "security_file_open";
/// Packet sockets decided at creation (`lsm_sock`): BPF LSM
/// `socket_create`, or `fmod_ret` on `security_socket_create`.
pub const PROG_LSM_SOCKET: &str = "warden_lsm_socket";
pub const LSM_SOCKET_HOOK: &str = "socket_create";
pub const PROG_FMODRET_SOCKET: &str = "warden_fmodret_socket";
pub const FMODRET_SOCKET_FN: &str = "security_socket_create";
/// Operations on names decided before they happen (`lsm_names`): one BPF
/// LSM program per `path_*` hook and its `fmod_ret` twin on the
/// `security_path_*` function, attached where opens are decided by BPF LSM
/// or `fmod_ret` respectively.
pub struct NameHook {
    /// The operation.
    pub op: &'static str,
    pub lsm_prog: &'static str,
    pub lsm_hook: &'static str,
    pub fmodret_prog: &'static str,
    pub fmodret_fn: &'static str,
    /// Pin names of their links.
    pub lsm_pin: &'static str,
    pub fmodret_pin: &'static str,
}
macro_rules! name_hook {
    ($op:literal) => {
        NameHook {
            op: $op,
            lsm_prog: concat!("warden_lsm_", $op),
            lsm_hook: concat!("path_", $op),
            fmodret_prog: concat!("warden_fmodret_", $op),
            fmodret_fn: concat!("security_path_", $op),
            lsm_pin: concat!("lsm-", $op),
            fmodret_pin: concat!("fmodret-", $op),
        }
    };
}
pub const NAME_HOOKS: [NameHook; 10] = [
    name_hook!("rename"),
    name_hook!("link"),
    name_hook!("unlink"),
    name_hook!("mkdir"),
    name_hook!("rmdir"),
    name_hook!("symlink"),
    name_hook!("mknod"),
    name_hook!("chmod"),
    name_hook!("chown"),
    name_hook!("truncate"),
];
/// The inode hooks that decide setxattr, removexattr, POSIX ACLs and
/// utime (`lsm_names::decide_inode`), attached with `NAME_HOOKS`: BPF LSM
/// `inode_*` and `fmod_ret` on `security_inode_*`.
macro_rules! inode_hook {
    ($op:literal) => {
        NameHook {
            op: $op,
            lsm_prog: concat!("warden_lsm_", $op),
            lsm_hook: concat!("inode_", $op),
            fmodret_prog: concat!("warden_fmodret_", $op),
            fmodret_fn: concat!("security_inode_", $op),
            lsm_pin: concat!("lsm-", $op),
            fmodret_pin: concat!("fmodret-", $op),
        }
    };
}
pub const INODE_HOOKS: [NameHook; 5] = [
    inode_hook!("setxattr"),
    inode_hook!("removexattr"),
    inode_hook!("set_acl"),
    inode_hook!("remove_acl"),
    inode_hook!("setattr"),
];
/// The stop of held network actions without `sys_exit` (where BPF
/// trampolines work): `fexit` after the cgroup sock_addr programs run.
pub const PROG_HOLD_STOP: &str = "warden_hold_stop";
pub const HOLD_STOP_FN: &str = "__cgroup_bpf_run_filter_sock_addr";
/// The decision cache's epoch where BPF LSM or fmod_ret decides opens:
/// (program, kernel function it runs after, pin name). See
/// `ebpf/programs/src/cache_epoch.rs`.
pub const CACHE_EPOCH_PROGRAMS: [(&str, &str, &str); 6] = [
    ("warden_epoch_rename", "vfs_rename", "epoch-rename"),
    ("warden_epoch_mount", "path_mount", "epoch-mount"),
    ("warden_epoch_umount", "path_umount", "epoch-umount"),
    (
        "warden_epoch_move_mount",
        "do_move_mount",
        "epoch-move-mount",
    ),
    (
        "warden_epoch_pivot_root",
        "__x64_sys_pivot_root",
        "epoch-pivot-root",
    ),
    (
        "warden_epoch_pivot_root_ia32",
        "__ia32_sys_pivot_root",
        "epoch-pivot-root-ia32",
    ),
];

/// Hash of `Parked` records by thread id: events the full ring buffer
/// could not take, whose threads wait stopped until the daemon drains them.
pub const OVERFLOW: &str = "OVERFLOW";
/// Array of `u64` (`heartbeat`): when the daemon last drained.
pub const HEARTBEAT: &str = "HEARTBEAT";
/// Per-CPU scratch of one `Parked` (kernel only).
pub const PARK_SCRATCH: &str = "PARK_SCRATCH";
/// Hash of `Budget` by agent id: each agent's share of a congested ring
/// buffer.
pub const AGENT_BUDGET: &str = "AGENT_BUDGET";
/// Per-CPU hash of `LossCounts` by `LossKey` (agent, action class).
pub const AGENT_LOSS: &str = "AGENT_LOSS";

/// Hash of `Member` by thread group id (`u32`): which agent a process
/// belongs to, wherever its cgroup is now.
pub const MEMBERS: &str = "MEMBERS";
/// Hash of `Doomed` by thread group id: escaped processes the `sys_exit`
/// program kills at their next syscall exit (`fallback/doomed.rs`).
pub const DOOMED: &str = "DOOMED";
/// Array of one `u64`: how many `DOOMED` entries there are (the one word
/// every syscall exit reads before looking a process up).
pub const DOOMED_ANY: &str = "DOOMED_ANY";
/// Escape detection (`escape.rs`): global tracepoints, always attached.
pub const PROG_FORK: &str = "warden_fork";
pub const FORK_TRACEPOINT: &str = "sched_process_fork";
pub const PROG_TASK_EXIT: &str = "warden_task_exit";
pub const TASK_EXIT_TRACEPOINT: &str = "sched_process_exit";
pub const PROG_CGROUP_ATTACH: &str = "warden_cgroup_attach";
pub const CGROUP_ATTACH_TRACEPOINT: &str = "cgroup_attach_task";
/// The escape programs with their tracepoints, attached in this order.
pub const ESCAPE_PROGRAMS: [(&str, &str); 3] = [
    (PROG_TASK_EXIT, TASK_EXIT_TRACEPOINT),
    (PROG_CGROUP_ATTACH, CGROUP_ATTACH_TRACEPOINT),
    (PROG_FORK, FORK_TRACEPOINT),
];
/// Program array the `sys_exit` program tail-calls for operations on one
/// name (index 0: `PROG_PATH_OPS`), so their checks do not add to its
/// verifier cost. Pinned: a program array is emptied when its last user
/// reference goes, and the pinned `sys_exit` link outlives the daemon.
pub const SYS_EXIT_TAIL: &str = "SYS_EXIT_TAIL";
/// `tp_btf/sys_exit`, reached only by tail call from `PROG_SYS_EXIT`.
pub const PROG_PATH_OPS: &str = "warden_path_ops";
/// Program array the open fallback tail-calls when a `shadow:` candidate
/// has file rules (index 0: `PROG_SHADOW_OPEN`): the candidate's lookup
/// and record stay out of the `sys_exit` program's verifier cost. Pinned
/// for the reason `SYS_EXIT_TAIL` is.
pub const SHADOW_TAIL: &str = "SHADOW_TAIL";
/// `tp_btf/sys_exit`, reached only by tail call from `PROG_SYS_EXIT`.
pub const PROG_SHADOW_OPEN: &str = "warden_shadow_open";
/// Hash of `BudgetSet` by agent rule slot: each policy's budgets.
pub const BUDGETS: &str = "BUDGETS";
/// Hash of packed window and count (`budget_use`) by `BudgetUseKey`.
pub const BUDGET_USE: &str = "BUDGET_USE";

/// LRU hash of allowed opens, `CacheKey` -> `CacheEntry` (not pinned: a
/// cache, not state).
pub const DECISION_CACHE: &str = "DECISION_CACHE";
/// `Array<u64>` of `decision_cache` slots: the epoch and the entries' TTL.
pub const DECISION_CACHE_CONF: &str = "DECISION_CACHE_CONF";

/// `cgroup_skb/egress`: counts an agent's sent bytes against its `bytes:
/// egress` budgets and drops packets past the limit. Attached only to the
/// cgroups of agents whose policy has such a budget.
pub const PROG_EGRESS: &str = "warden_egress";
/// Per-CPU hash of `EgressDrops` by `BudgetUseKey`: packets dropped over
/// an egress byte budget, swept by the daemon.
pub const EGRESS_DROPS: &str = "EGRESS_DROPS";
