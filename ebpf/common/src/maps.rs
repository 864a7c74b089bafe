//! Keys and values of the policy maps the daemon fills and the programs
//! look up: agents (`AGENTS`), network rules (`NET4_RULES`, `NET6_RULES`),
//! exec and file rules (`EXEC_RULES`, `FILE_RULES`), and the mode of the
//! `sys_exit` program (`SYS_EXIT_MODE`). Holds (`HELD`, `GRANTS`) are in
//! `holds`, counters in `counters`.

use core::mem::size_of;

use crate::{limits, rule, Decision, PATH_KEY_BYTES};

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
    /// The policy says `mode: record`: every action goes ahead; a decision
    /// the policy would have denied or held is recorded as such (method
    /// `Recorded`) and not carried out. A revoked agent is still refused.
    pub const RECORD: u32 = 1 << 4;
    /// The policy says `evidence: { allowed: each }`: every allowed action
    /// gets its own record. Without it, repeats of an allowed action are
    /// counted in `SUMMARIES` (first-then-count, the default).
    pub const EACH_ALLOWED: u32 = 1 << 8;
    /// The policy says `evidence: { allowed: first-then-count, per: agent }`:
    /// repeats are counted per agent, whichever of its processes made them
    /// (`SummaryKey::tgid` is 0), instead of per process.
    pub const COUNT_PER_AGENT: u32 = 1 << 9;
    /// The policy says `evidence: { denied: each }`: every denial gets its
    /// own record. Without it, repeats of a denial the kernel refuses
    /// without a kill (network hooks) are counted in `SUMMARIES`.
    pub const EACH_DENIED: u32 = 1 << 10;
    /// The evidence disk cap is reached (the daemon sets it on every
    /// agent): every action that can be counted (allowed, and denials
    /// refused without a kill) is counted in `SUMMARIES`, its first too
    /// (`SUMMARY_COUNT_ALL`), with no individual record, whatever the
    /// policy's `evidence:` says. Kills, holds and their outcomes stay
    /// individual.
    pub const COUNT_ALL: u32 = 1 << 11;
    /// The policy has `connect: { host: ... }` rules: the agent's DNS
    /// (port 53, UDP and TCP) goes to its proxy in the daemon
    /// (`DNS_PROXY`), the original destination kept in `DNS_ORIG`.
    pub const DNS: u32 = 1 << 14;
    /// The policy carries a `shadow:` candidate: the network hooks also
    /// look the destination up under the candidate's slot
    /// (`shadow_slot(slot)`) and record a difference (`Method::Shadow`).
    /// The enforced decision is never changed by it.
    pub const SHADOW: u32 = 1 << 22;
    /// With `SHADOW`: the candidate has exec rules, installed under its
    /// slot; the exec fallback also decides each exec by them and records
    /// a difference. (A candidate without exec rules leaves execs alone.)
    pub const SHADOW_EXEC: u32 = 1 << 28;
    /// With `SHADOW`: the candidate has file rules; the open fallback also
    /// decides each open by them (`fallback::shadow`, a tail call).
    pub const SHADOW_FILE: u32 = 1 << 29;
}

/// The rule slot of an agent's shadow candidate: its enforced slot with the
/// top bit set (agent slots are `agent_id * 2 + half`, far below it), so
/// the candidate's rules swap halves with the enforced ones.
pub const SHADOW_SLOT: u32 = 1 << 31;

/// The `policy_gen` a shadow record carries: the enforced generation with
/// this bit set (the daemon registers the candidate's rule names there).
pub const SHADOW_GENERATION: u32 = 1 << 30;

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
    /// Kill agents' processes that created a packet socket (`AF_PACKET`,
    /// `SOCK_PACKET`) no rule allows (`fallback::packet`), where BPF LSM or
    /// fmod_ret does not decide them at creation.
    pub const PACKETS: u32 = 1 << 2;
}

/// Socket classes decided at creation (`sock_create`): sockets that send
/// what the connect rules never see. Ids are never reused.
pub mod sock_class {
    /// `SOCK_RAW` in `AF_INET` or `AF_INET6` (including `IPPROTO_RAW`, a
    /// hand-built IP header).
    pub const RAW: u32 = 1;
    /// `AF_PACKET` (and `SOCK_PACKET`, which the kernel turns into
    /// `AF_PACKET`): the cgroup `sock_create` hook runs for inet sockets
    /// only, so these are decided at BPF LSM `socket_create` or
    /// `fmod_ret/security_socket_create` where those run (`lsm_sock`), and
    /// refused by `warden run`'s seccomp, and detected at `sys_exit` and
    /// killed (`fallback::packet`) elsewhere. Allowed only by a rule
    /// `socket: { kind: packet }`.
    pub const PACKET: u32 = 2;
}

/// One `sock_class`'s rule: the decision (`Decision` as `u32`, 0 when no
/// rule names the class: deny) and the rule that made it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRule {
    pub decision: u32,
    pub rule_idx: u32,
}
const _: () = assert!(size_of::<SockRule>() == 8);

/// Value of `SOCK_RULES`, keyed by the agent's slot (`u32`): what the
/// policy says about creating raw IP sockets. No entry: deny.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRules {
    pub raw: SockRule,
    /// `AF_PACKET` (and `SOCK_PACKET`) sockets: `socket: { kind: packet }`.
    pub packet: SockRule,
}
const _: () = assert!(size_of::<SockRules>() == 16);

/// `MEMBERS` value: the agent a process (by thread group id) belongs to,
/// filled at fork, at migration into an agent's subtree, and by the daemon
/// for the processes an adopted cgroup already holds; removed at exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The agent's cgroup id (its subtree is where the process may be).
    pub agent_cgroup: u64,
    pub agent_id: u32,
    /// The agent cgroup's level in the cgroup2 hierarchy (root = 0): a
    /// cgroup is in the subtree when its ancestor at this level is it.
    pub level: u32,
}
const _: () = assert!(size_of::<Member>() == 16);

/// `DOOMED` value, keyed by thread group id: a process of an agent that
/// someone else moved out of the agent's subtree, to be killed
/// at its next syscall exit (`fallback::doomed`), with what its record
/// says. Removed at that kill or at the process's exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Doomed {
    /// The agent's cgroup (where it came from) and where it went.
    pub from_cgroup: u64,
    pub to_cgroup: u64,
    pub agent_id: u32,
    pub policy_gen: u32,
    /// `escape_how`.
    pub how: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Doomed>() == 32);
/// Value of `DNS_PROXY`, keyed by agent id (`u32`): where the agent's DNS
/// proxy listens, on 127.0.0.1 and ::1 (host byte order). No entry (no
/// daemon serving it): the agent's DNS is decided by its CIDR rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsProxy {
    pub port4: u16,
    pub port6: u16,
}
const _: () = assert!(size_of::<DnsProxy>() == 4);

/// Value of `DNS_ORIG`, keyed by socket cookie (`u64`): the resolver a
/// redirected DNS socket asked (family, port in host byte order, address
/// as `NetEvent::addr`), restored as the source of its replies and read
/// by the proxy to forward the question there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsOrig {
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<DnsOrig>() == 20);
