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
}

impl Method {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Allow),
            2 => Some(Self::CgroupDeny),
            3 => Some(Self::Held),
            4 => Some(Self::Approved),
            5 => Some(Self::Rejected),
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
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Connect4),
            2 => Some(Self::Connect6),
            3 => Some(Self::Sendmsg4),
            4 => Some(Self::Sendmsg6),
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
}

/// `AgentInfo::flags` bits.
pub mod agent_flags {
    /// Kill switch: every hook denies.
    pub const REVOKED: u32 = 1 << 0;
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
    pub const COUNT: u32 = 6;
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
}
