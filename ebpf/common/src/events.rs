//! The ring buffer's records: what the kernel decided (`Decision`), how it
//! carried it out (`Method`), about which action (`EventKind`, `rule`),
//! and the records themselves, one `EventHeader` and a body per kind.
//!
//! Numeric ids are never reused: add new values, never renumber.

use core::mem::size_of;

use crate::EVENT_PATH_BYTES;

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
    /// An `fmod_ret` program on the kernel's `security_*` function refused
    /// the action (hosts with BPF trampolines but without BPF LSM active):
    /// as `LsmDeny`, the syscall failed with EPERM before it took effect.
    FmodRetDeny = 8,
    /// Record mode (`agent_flags::RECORD`): the policy's decision (deny or
    /// hold, in the event's `decision`) was recorded, not carried out; the
    /// action went ahead.
    Recorded = 9,
    /// A shadow candidate (`agent_flags::SHADOW`) would have decided
    /// otherwise: the event's `decision` and `rule_idx` are the
    /// candidate's, the enforced ones follow in `ShadowNetEvent`. The
    /// action was decided by the enforced policy (its own record).
    Shadow = 10,
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
            8 => Some(Self::FmodRetDeny),
            9 => Some(Self::Recorded),
            10 => Some(Self::Shadow),
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
    /// Creation of a raw IP socket (`SocketEvent`).
    Socket = 12,
    /// A rename/renameat/renameat2 that succeeded (`NameEvent`).
    Rename = 13,
    /// A link/linkat that succeeded (`NameEvent`).
    Link = 14,
    /// A process of an agent appeared in a cgroup outside the agent's
    /// subtree (`EscapeEvent`).
    Escape = 15,
    /// An operation on one name that succeeded (unlink, mkdir, rmdir,
    /// symlink, mknod, chmod, chown, truncate, setxattr, utime, bind of a
    /// unix socket): `NameEvent` with the path in `old_path`, `new_len` 0.
    PathOp = 16,
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
            12 => Some(Self::Socket),
            13 => Some(Self::Rename),
            14 => Some(Self::Link),
            15 => Some(Self::Escape),
            16 => Some(Self::PathOp),
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
    /// The executed file is anonymous (a memfd: `path_flags::ANONYMOUS`):
    /// refused, whatever the exec rules say. (Far from the values above so
    /// that other reserved values can be added next to them.)
    pub const ANONYMOUS_EXEC: u32 = u32::MAX - 15;
    /// A process of the agent appeared in a cgroup outside the agent's
    /// subtree (`EscapeEvent`): killed whatever the policy says.
    pub const LEFT_AGENT: u32 = u32::MAX - 16;
    /// Budget `i` of the policy (`budgets[i]`) was over its limit:
    /// `BUDGET_BASE + i`, for `i < MAX_BUDGETS`.
    pub const BUDGET_BASE: u32 = u32::MAX - 63;
    /// The `rule_idx` of an action refused by budget `index`.
    pub const fn budget(index: u32) -> u32 {
        BUDGET_BASE + index
    }
    /// The budget index of a `rule_idx`, if it names a budget.
    pub const fn budget_index(rule_idx: u32) -> Option<u32> {
        if rule_idx >= BUDGET_BASE && rule_idx < BUDGET_BASE + crate::MAX_BUDGETS as u32 {
            Some(rule_idx - BUDGET_BASE)
        } else {
            None
        }
    }
}

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

/// A network action on which the shadow candidate differs from the
/// enforced policy (`Method::Shadow`): the header names the candidate's
/// decision, rule and generation (`SHADOW_GENERATION`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowNetEvent {
    pub net: NetEvent,
    /// The enforced policy's `Decision` and rule for the same action.
    pub enforced_decision: u32,
    pub enforced_rule: u32,
}
const _: () = assert!(size_of::<ShadowNetEvent>() == 96 + 8);

/// An exec on which the shadow candidate differs (`Method::Shadow`, the
/// header the candidate's, as `ShadowNetEvent`), the enforced decision
/// and rule after the exec's record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowExecEvent {
    pub exec: ExecEvent,
    pub enforced_decision: u32,
    pub enforced_rule: u32,
}
const _: () = assert!(size_of::<ShadowExecEvent>() == size_of::<ExecEvent>() + 8);

/// An open on which the shadow candidate differs (as `ShadowExecEvent`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowOpenEvent {
    pub open: OpenEvent,
    pub enforced_decision: u32,
    pub enforced_rule: u32,
}
const _: () = assert!(size_of::<ShadowOpenEvent>() == size_of::<OpenEvent>() + 8);

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

/// Creation of a socket that bypasses the connect rules (a raw IP socket),
/// seen at the cgroup `sock_create` hook. Other sockets
/// are not recorded at creation: their connects and sends are decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEvent {
    pub header: EventHeader,
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// `SOCK_RAW`, `SOCK_DGRAM`, ...
    pub sock_type: u32,
    /// The protocol argument (`IPPROTO_RAW`, `IPPROTO_ICMP`, ...).
    pub protocol: u32,
    /// A `sock_class` value.
    pub class: u32,
}
const _: () = assert!(size_of::<SocketEvent>() == 72 + 16);

/// A rename or link, seen at the syscall's exit after it succeeded: both
/// names, each decided as a `write` of that path. The paths are rebuilt
/// from the syscall's arguments in user memory (a relative one on the
/// kernel's path of its directory fd or the working directory), so they
/// can race a sibling thread and do not resolve symbolic links in the
/// directories named (see README, Known gaps).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameEvent {
    pub header: EventHeader,
    /// The syscall number (64-bit table, or ia32 with `path_flags::IA32`).
    pub syscall: u32,
    /// `path_flags` of both resolutions, or-ed.
    pub flags: u32,
    /// The write rule that decided each path (`rule::DEFAULT` if none).
    pub old_rule: u32,
    pub new_rule: u32,
    pub old_len: u32,
    pub new_len: u32,
    pub old_path: [u8; EVENT_PATH_BYTES],
    pub new_path: [u8; EVENT_PATH_BYTES],
}
const _: () = assert!(size_of::<NameEvent>() == 72 + 24 + 2 * EVENT_PATH_BYTES);

/// How a process of an agent left the agent's cgroup subtree
/// (`EscapeEvent::how`).
pub mod escape_how {
    /// Forked straight into another cgroup (`clone3(CLONE_INTO_CGROUP)`),
    /// seen at `sched_process_fork`.
    pub const FORK: u32 = 1;
    /// Migrated (a write to another cgroup's `cgroup.procs`, by itself or
    /// anyone), seen at `cgroup_attach_task`.
    pub const ATTACH: u32 = 2;
}

/// `EscapeEvent::killed` bits: what the kernel killed in place.
pub mod escape_killed {
    /// The escaped process itself (it moved itself: the caller).
    pub const ESCAPED: u32 = 1;
    /// The process that moved it or forked it out (a process of the agent).
    pub const ACTOR: u32 = 2;
    /// `bpf_send_signal` failed.
    pub const FAILED: u32 = 4;
    /// The escaped process, moved out by another process, killed
    /// by the kernel at its next syscall exit (`DOOMED`; a second record
    /// after the one of the move).
    pub const AT_SYSCALL_EXIT: u32 = 8;
}

/// A process of an agent that appeared in a cgroup outside the agent's
/// subtree. The header is the caller's (the process that forked or moved
/// it, or the escaped process itself); the agent is the one it belonged to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscapeEvent {
    pub header: EventHeader,
    /// The escaped process (thread group id) and the task seen (its
    /// thread-group leader, or the new child).
    pub pid: u32,
    pub tid: u32,
    /// The agent's cgroup (for a fork: the parent's own cgroup).
    pub from_cgroup: u64,
    /// The cgroup it is in now.
    pub to_cgroup: u64,
    /// `escape_how`.
    pub how: u32,
    /// `escape_killed` bits.
    pub killed: u32,
}
const _: () = assert!(size_of::<EscapeEvent>() == 72 + 32);
