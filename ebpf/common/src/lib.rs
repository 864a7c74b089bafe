//! The kernel/user ABI of Warden: every type that crosses between the eBPF
//! programs and the daemon, and the names of every map and program.
//!
//! Rules for this file (see STYLE.md):
//! - `#[repr(C)]`, `Copy`, no implicit padding (explicit `_pad` fields, `u32`
//!   flags instead of `bool`), and a size assertion for every type.
//! - Numeric ids of event kinds, decisions and methods are never reused: add
//!   new values, never renumber.
//! - `aya::Pod` is implemented only with the `user` feature, so the kernel
//!   crate never links aya.
#![no_std]

use core::mem::size_of;

/// Names of the maps and programs in the eBPF object. The kernel crate uses
/// the same identifiers as its symbol names; a test in the daemon loads the
/// object and checks that each of these exists.
pub mod names {
    pub const AGENTS: &str = "AGENTS";
    pub const NET4_RULES: &str = "NET4_RULES";
    pub const NET6_RULES: &str = "NET6_RULES";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU hash of `AgentCounters`, keyed by agent id (`u32`).
    pub const AGENT_COUNTERS: &str = "AGENT_COUNTERS";

    /// Maps pinned under `<pin dir>/maps/` and reused by the next daemon,
    /// so agents stay enforced (and their actions counted and queued) while
    /// no daemon runs. Scratch maps are not state and are not pinned.
    pub const PINNED_MAPS: [&str; 11] = [
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
}

/// Capacity of the maps. The daemon validates policies against these, so a
/// policy that does not fit is rejected at load time, never truncated.
pub mod limits {
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
}

/// What the kernel decided. Stored as `u8` in rules, `u32` in events.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow = 1,
    Deny = 2,
    /// Pause for human approval: the thread stops at the syscall until a
    /// human decides (see `HoldKey`).
    Hold = 3,
}

impl Decision {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Allow),
            2 => Some(Self::Deny),
            3 => Some(Self::Hold),
            _ => None,
        }
    }
}

/// How the decision was carried out in the kernel.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The action went ahead.
    Allow = 1,
    /// A cgroup hook refused the syscall with EPERM.
    CgroupDeny = 2,
    /// The thread was stopped at the syscall, which restarts when it resumes.
    Held = 3,
    /// A held action went ahead because a human approved it.
    Approved = 4,
    /// A held action was refused (EPERM) because it was rejected or expired.
    Rejected = 5,
    /// The process was killed (SIGKILL) at the hook: the fallback's way to
    /// deny an action whose syscall cannot be failed (exec after the point
    /// of no return, open after it succeeded).
    Kill = 6,
    /// A BPF LSM hook refused the action: the syscall failed with EPERM
    /// before it took effect (the exec never reached its point of no
    /// return, the file was never opened). The process lives on.
    LsmDeny = 7,
}

impl Method {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Allow),
            2 => Some(Self::CgroupDeny),
            3 => Some(Self::Held),
            4 => Some(Self::Approved),
            5 => Some(Self::Rejected),
            6 => Some(Self::Kill),
            7 => Some(Self::LsmDeny),
            _ => None,
        }
    }
}

/// Kinds of events on the ring buffer. Ids are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Connect4 = 1,
    Connect6 = 2,
    Sendmsg4 = 3,
    Sendmsg6 = 4,
    /// An exec (`ExecEvent`).
    Exec = 10,
    /// A file open (`OpenEvent`).
    Open = 11,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Connect4),
            2 => Some(Self::Connect6),
            3 => Some(Self::Sendmsg4),
            4 => Some(Self::Sendmsg6),
            10 => Some(Self::Exec),
            11 => Some(Self::Open),
            _ => None,
        }
    }
}

/// `rule_idx` values that are not an index into the agent's rules.
pub mod rule {
    /// No rule matched: the agent's default (deny).
    pub const DEFAULT: u32 = u32::MAX;
    /// The agent is revoked (kill switch).
    pub const REVOKED: u32 = u32::MAX - 1;
    /// The ring buffer was full: the action was refused because it could
    /// not be recorded (fail-closed).
    pub const NO_EVIDENCE: u32 = u32::MAX - 2;
    /// The process is in a cgroup below an agent's that the daemon has not
    /// registered yet: refused (fail-closed).
    pub const UNKNOWN_CGROUP: u32 = u32::MAX - 3;
    /// The kernel could not resolve the path of the file being executed or
    /// opened (too deep, a failed read): refused (fail-closed).
    pub const UNRESOLVED: u32 = u32::MAX - 4;
}

/// `AgentInfo::flags` bits.
pub mod agent_flags {
    /// Kill switch: every hook denies.
    pub const REVOKED: u32 = 1 << 0;
    /// The agent's policy has exec rules: every exec is decided (default
    /// deny). Without it the exec hook lets the agent's execs pass.
    pub const EXEC: u32 = 1 << 1;
    /// The agent's policy has file rules: every open is decided (default
    /// deny). Without it the open hook lets the agent's opens pass.
    pub const FILE: u32 = 1 << 2;
    /// The policy says `on_evidence_loss: allow`: when the ring buffer is
    /// full, an action the policy allows goes ahead unrecorded (counted in
    /// `AgentCounters::allowed_unrecorded`) instead of being refused.
    pub const FAIL_OPEN: u32 = 1 << 3;
}

/// Value of the `AGENTS` map, keyed by cgroup id (`u64`, the inode number of
/// the cgroup directory).
///
/// Policy reloads are atomic: rules live under one of two slots per agent
/// (`agent_id * 2 + half`); the daemon fills the idle half, then replaces this
/// value in one map update, then clears the old half. `policy_gen` is the id
/// of the policy version in the daemon's database, copied into every event so
/// each decision names the exact policy that made it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentInfo {
    pub agent_id: u32,
    pub policy_gen: u32,
    pub slot: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<AgentInfo>() == 16);

impl AgentInfo {
    pub const fn slot_for(agent_id: u32, half: u32) -> u32 {
        agent_id.wrapping_mul(2).wrapping_add(half & 1)
    }
}

/// LPM trie key data for IPv4 rules. The prefix length given to the trie
/// counts the 32 bits of `slot` plus the CIDR's own prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net4Key {
    pub slot: u32,
    /// Network byte order.
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<Net4Key>() == 8);

/// LPM trie key data for IPv6 rules (IPv4-mapped addresses are looked up in
/// the IPv4 trie instead).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net6Key {
    pub slot: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<Net6Key>() == 20);

/// Bits of the slot in every LPM key.
pub const SLOT_PREFIX_BITS: u32 = 32;

/// `PortRule::proto` values (IP protocol numbers; 0 matches any).
pub mod proto {
    pub const ANY: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// One port rule of a CIDR entry. Matches when `port_lo <= port <= port_hi`
/// and the protocol matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortRule {
    pub port_lo: u16,
    pub port_hi: u16,
    pub proto: u8,
    pub decision: u8,
    pub _pad: [u8; 2],
    pub rule_idx: u32,
}
const _: () = assert!(size_of::<PortRule>() == 12);

/// Value of the network LPM tries: the rules that apply to destinations in
/// this CIDR, most specific CIDR first, then in policy order (the daemon
/// flattens covering CIDRs into each entry). First match wins; no match
/// means the agent's default (deny).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRules {
    pub count: u32,
    pub rules: [PortRule; limits::MAX_PORT_RULES],
}
const _: () = assert!(size_of::<NetRules>() == 4 + 12 * limits::MAX_PORT_RULES);

impl Default for NetRules {
    fn default() -> Self {
        Self {
            count: 0,
            rules: [PortRule::default(); limits::MAX_PORT_RULES],
        }
    }
}

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
    /// `task_struct.start_time` of the thread (0 for `STOP_AT_EXIT`): a
    /// recycled thread id is never mistaken for the held thread.
    pub start_time: u64,
}
const _: () = assert!(size_of::<Held>() == 16);

/// `Held::state`.
pub mod held_state {
    /// A cgroup hook failed the syscall with ERESTARTNOINTR: send SIGSTOP
    /// at this syscall's exit, then forget the thread.
    pub const STOP_AT_EXIT: u32 = 1;
    /// The fallback exec hook held a committed exec and sent SIGSTOP; the
    /// execve's own exit is still to come (then `PAUSED`).
    pub const EXEC_STOPPING: u32 = 2;
    /// Stopped after its action took effect: running again while still in
    /// `HELD` is a breach, and the thread is killed. Approval removes the
    /// entry before it continues the thread.
    pub const PAUSED: u32 = 3;
}

/// The syscall return value that makes the kernel restart the syscall after
/// the thread is stopped and continued (ERESTARTNOINTR), never seen by user
/// space as long as a signal is pending when the syscall returns.
pub const ERESTARTNOINTR: i32 = -513;
pub const SIGSTOP: u32 = 19;

/// Header of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    pub decision: u32,
    pub method: u32,
    pub rule_idx: u32,
    pub agent_id: u32,
    pub policy_gen: u32,
    /// Thread group id (what user space calls the pid).
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()`: nanoseconds since boot, including suspend.
    pub boot_ns: u64,
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<EventHeader>() == 72);

/// A network action: connect or sendmsg.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEvent {
    pub header: EventHeader,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    pub _pad: [u8; 3],
    /// IPv4 in the first four bytes, network byte order.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<NetEvent>() == 72 + 24);

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
    pub const COUNT: u32 = 8;
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

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `repr(C)`, `Copy`, contain only integers and
    // byte arrays, and have no padding (checked by the size assertions).
    unsafe impl aya::Pod for AgentInfo {}
    unsafe impl aya::Pod for Net4Key {}
    unsafe impl aya::Pod for Net6Key {}
    unsafe impl aya::Pod for NetRules {}
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for NetEvent {}
    unsafe impl aya::Pod for HoldKey {}
    unsafe impl aya::Pod for Held {}
    unsafe impl aya::Pod for PathKey {}
    unsafe impl aya::Pod for PathRule {}
    unsafe impl aya::Pod for FileRule {}
    unsafe impl aya::Pod for ExecEvent {}
    unsafe impl aya::Pod for OpenEvent {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for AgentCounters {}
}

// ---------------------------------------------------------------------------
// Exec and file open (the fallback path: tp_btf programs, deny = SIGKILL)

/// Bytes of path in a `PathKey` (the kernel's LPM_DATA_SIZE_MAX is 256, and
/// the slot takes 4). An exact rule holds its path and a NUL, so exact rules
/// name paths of at most 251 bytes; prefix rules at most 252.
pub const PATH_KEY_BYTES: usize = 252;
/// Bytes of path an event carries (NUL-terminated unless truncated).
pub const EVENT_PATH_BYTES: usize = 256;
/// Steps of the kernel's path walk (components and mount crossings). A path
/// deeper than this cannot be resolved, and its action is refused.
pub const MAX_PATH_DEPTH: usize = 128;

/// LPM trie key data for exec and file rules. The prefix length given to
/// the trie counts the 32 bits of `slot` plus 8 per path byte: an exact
/// rule is `path` + NUL, a prefix rule is the directory ending in '/'. The
/// kernel looks up the resolved path with its NUL, so the longest match is
/// the most specific rule: an exact rule before any prefix, a longer prefix
/// before a shorter one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub slot: u32,
    pub path: [u8; PATH_KEY_BYTES],
}
const _: () = assert!(size_of::<PathKey>() == 256);

/// The decision of one exec rule, or of one access of a file entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// A `Decision` as `u8`.
    pub decision: u8,
    pub _pad: [u8; 3],
    pub rule_idx: u32,
}
const _: () = assert!(size_of::<PathRule>() == 8);

impl PathRule {
    /// No rule covers this: the default, deny.
    pub const DEFAULT: Self = Self {
        decision: Decision::Deny as u8,
        _pad: [0; 3],
        rule_idx: rule::DEFAULT,
    };
}

/// Value of `FILE_RULES`: for each access, the most specific rule covering
/// the entry that lists the access (the daemon flattens covering rules into
/// each entry, so the kernel's one lookup sees them all), else `DEFAULT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRule {
    pub read: PathRule,
    pub write: PathRule,
}
const _: () = assert!(size_of::<FileRule>() == 16);

/// Access bits of an open (the kernel's FMODE_READ and FMODE_WRITE).
pub mod access {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
}

/// Bits of `SYS_EXIT_MODE[0]`, set by the daemon. The program is attached
/// only while one of them is set.
pub mod sys_exit_mode {
    /// Stop threads a hook held (look the thread up in `HELD`).
    pub const HOLDS: u32 = 1 << 0;
    /// Decide opens of agents with file rules.
    pub const FILES: u32 = 1 << 1;
}

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
}

/// An exec, seen at `sched_process_exec`: after the point of no return,
/// before the new image's first instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// `sb->s_dev` of the executed file: the kernel's encoding
    /// (`major << 20 | minor`), not `stat()`'s.
    pub dev: u32,
    pub flags: u32,
    pub ino: u64,
    /// Bytes of `path`, without the NUL.
    pub path_len: u32,
    pub _pad: u32,
    /// The executed file's path, resolved by the kernel from `bprm->file`
    /// (for a `#!` script: the interpreter's).
    pub path: [u8; EVENT_PATH_BYTES],
    /// `bprm->filename`: the path as the caller passed it (the kernel's
    /// copy; may be relative or a symlink).
    pub filename: [u8; EVENT_PATH_BYTES],
}
const _: () = assert!(size_of::<ExecEvent>() == 72 + 24 + 2 * EVENT_PATH_BYTES);

/// A file open, seen at the syscall's exit: the file is open, its fd
/// installed, and user space has not run yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenEvent {
    pub header: EventHeader,
    /// As in `ExecEvent`.
    pub dev: u32,
    pub flags: u32,
    pub ino: u64,
    pub path_len: u32,
    /// `access` bits the open requested (from the file's `f_mode`).
    pub access: u32,
    /// The syscall number (`syscall_compat` says which table).
    pub syscall: u32,
    /// 1 for an ia32 syscall (int 0x80 / sysenter), else 0.
    pub syscall_compat: u32,
    /// The rule that decided each access (`rule::DEFAULT` if none), or
    /// `rule::DEFAULT` for an access not requested.
    pub read_rule: u32,
    pub write_rule: u32,
    pub path: [u8; EVENT_PATH_BYTES],
}
const _: () = assert!(size_of::<OpenEvent>() == 72 + 40 + EVENT_PATH_BYTES);

/// The path walk reads `dentry.d_parent` and `dentry.d_name` (its `len`
/// and `name`) with one read of this many bytes from `d_parent`; the daemon
/// refuses a kernel whose `struct dentry` does not fit that.
pub const DENTRY_SPAN_BYTES: u32 = 32;

/// Byte offsets of the kernel struct fields the exec and open programs
/// read, taken from the running kernel's BTF by the daemon and passed in
/// `.rodata` (aya-ebpf has no CO-RE relocations). `valid` is 0 until the
/// daemon fills the struct; the programs refuse every decision they would
/// need a path for while it is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub bprm_file: u32,
    pub bprm_filename: u32,
    pub file_f_inode: u32,
    pub file_f_mode: u32,
    pub file_f_path_dentry: u32,
    pub file_f_path_mnt: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name_name: u32,
    pub dentry_d_name_len: u32,
    pub vfsmount_mnt_root: u32,
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub pt_regs_orig_ax: u32,
    /// `task_struct.thread_info.status` (x86: TS_COMPAT during an ia32
    /// syscall).
    pub task_ti_status: u32,
    pub valid: u32,
    /// `file.f_flags` (the LSM open hook tells exec's own opens by
    /// `FLAG_FMODE_EXEC` there).
    pub file_f_flags: u32,
    /// `task_struct.start_time` (the fallback holds' guard, `Held`).
    pub task_start_time: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 25 * 4);

/// `__FMODE_EXEC` in `file.f_flags`: set for the opens exec makes itself
/// (the binary, an ELF interpreter); open(2) flags can never carry it.
pub const FLAG_FMODE_EXEC: u32 = 0x20;

/// `FMODE_NOACCOUNT` in `file.f_mode` (0x20000000 on every kernel with BPF
/// LSM, 5.7 to 6.18): files the kernel opens for itself, with no file
/// descriptor. In an agent's context these are overlayfs' opens of the
/// real file below the overlay file the agent opened (backing files, 6.6+;
/// fake-path files before), and copy-up. The LSM open hook lets them
/// through: the agent's own open of the overlay file was decided, by the
/// path the agent used, a moment before. (`FMODE_BACKING` would say it
/// more precisely but moved from bit 25 to bit 24 during 6.12.)
pub const FMODE_NOACCOUNT: u32 = 1 << 29;

/// Syscall numbers that open a file descriptor on a path (x86-64).
pub mod syscalls {
    pub const OPEN: u32 = 2;
    pub const CREAT: u32 = 85;
    pub const OPENAT: u32 = 257;
    pub const OPEN_BY_HANDLE_AT: u32 = 304;
    pub const OPENAT2: u32 = 437;
    /// The ia32 table (int 0x80 works from 64-bit code too, and the numbers
    /// mean other syscalls in the 64-bit table: 5 is fstat there).
    pub const IA32_OPEN: u32 = 5;
    pub const IA32_CREAT: u32 = 8;
    pub const IA32_OPENAT: u32 = 295;
    pub const IA32_OPEN_BY_HANDLE_AT: u32 = 342;
    pub const IA32_OPENAT2: u32 = 437;
    /// Set in x32 syscall numbers.
    pub const X32_BIT: u32 = 0x4000_0000;
    /// `OpenEvent::syscall` of an open decided at `lsm/file_open`, which
    /// sees every open (any syscall, io_uring, the kernel's on the
    /// process's behalf) and not which syscall made it.
    pub const LSM_HOOK: u32 = u32::MAX;
}

pub const SIGKILL: u32 = 9;
/// The errno LSM hooks deny with (returned negated).
pub const EPERM: i32 = 1;
