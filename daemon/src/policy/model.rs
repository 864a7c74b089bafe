//! The validated, normalised policy model.
//!
//! Everything here has already passed validation: a `Policy` can only be
//! built by the parser, so the compiler never sees an invalid CIDR, a
//! relative path or an empty port list. Values are stored in one canonical
//! form (ports sorted and merged, approvers sorted, durations in seconds) so
//! that equivalent files produce equal models and equal snapshots.
//!
//! (Over 600 lines because of its unit tests, about 80 of them.)

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Domain separator hashed before the canonical JSON, so a policy snapshot
/// can never collide with a hash of some other Warden object, and so a
/// future change of the canonical form can move to `v2`.
pub const SNAPSHOT_DOMAIN: &[u8] = b"warden/policy/v1\0";

/// A parsed and validated policy file.
#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    /// Format version; always 1 today.
    pub version: u32,
    pub description: Option<String>,
    pub approvers: Approvers,
    /// How long a `hold` waits for a human before it is rejected.
    #[serde(rename = "hold_timeout_secs", serialize_with = "serialize_secs")]
    pub hold_timeout: Duration,
    pub on_evidence_loss: EvidenceLoss,
    /// `enforce` (default) or `record`. Left out of the canonical JSON when
    /// `enforce`, so the snapshots of policies written before it stay.
    #[serde(skip_serializing_if = "Mode::is_enforce")]
    pub mode: Mode,
    /// `evidence: { allowed: .. }`. Left out of the canonical JSON while
    /// it is the default, so policies written before it keep their snapshot.
    #[serde(skip_serializing_if = "Evidence::is_default")]
    pub evidence: Evidence,
    /// `monitor:`: the sentinel's parameters. Left out of the canonical
    /// JSON while they are the defaults.
    #[serde(skip_serializing_if = "super::monitor::Monitor::is_default")]
    pub monitor: super::monitor::Monitor,
    /// `change_review:`: a change of this policy is installed only after
    /// approvers other than its author approved it. Left out of the
    /// canonical JSON when absent, so older policies keep their snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_review: Option<ChangeReview>,
    /// `review_every:` in seconds: an access review older than this is
    /// due (`warden review status`; 90 days when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_every_secs: Option<u64>,
    /// `freeze:` windows. Left out of the canonical JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<super::freeze::Window>,
    /// `delegate: [CHILD, ..]`: registered child agents a process of this
    /// agent may start (`warden run --agent CHILD` from inside it). Sorted,
    /// deduplicated; left out of the canonical JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delegate: Vec<String>,
    /// `shadow:`: a candidate policy the kernel evaluates beside this one
    /// (its differences are recorded, never enforced). In the canonical
    /// JSON as the candidate's snapshot, so a changed candidate is a
    /// changed policy; left out when absent.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_shadow"
    )]
    pub shadow: Option<Box<Policy>>,
    /// In file order: the index into this vector is the `rule_idx` the kernel
    /// reports.
    pub rules: Vec<Rule>,
    /// `budgets:`, in file order (the index is the kernel's budget index).
    /// Left out of the canonical JSON when empty, so the snapshots of
    /// policies without budgets stay.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<crate::policy::budget::Budget>,
    /// Where the policy came from, to point error messages found after
    /// parsing (for example by the network compiler) at a line. Not part of
    /// the policy's meaning, so not serialised.
    #[serde(skip)]
    pub(super) source: Source,
}

/// The name and text a policy was parsed from.
#[derive(Clone)]
pub(super) struct Source {
    pub(super) name: String,
    pub(super) text: Arc<str>,
}

impl fmt::Debug for Source {
    // The text can be long and is already in the file; the name is enough.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Who may approve `hold` decisions. Sorted and deduplicated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Approvers {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// Who must approve a change of the policy, and how many of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeReview {
    pub approvers: Approvers,
    pub min: u32,
}

/// What the kernel does with an action it cannot record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`deny` or `allow`")]
pub enum EvidenceLoss {
    /// Refuse the action (fail closed).
    #[default]
    Deny,
    /// Let the action go ahead unrecorded.
    Allow,
}

/// Whether the kernel carries the policy's decisions out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`enforce` or `record`")]
pub enum Mode {
    /// Deny, hold and allow as the rules say.
    #[default]
    Enforce,
    /// Allow everything; record each decision as the rules would have made
    /// it (`would-deny`, `would-hold`). For writing a policy from what an
    /// agent does (`warden policy suggest`).
    Record,
}

impl Mode {
    pub fn is_enforce(&self) -> bool {
        *self == Mode::Enforce
    }
}

/// `evidence:` settings: how much of what the agent does is written down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "evidence: a mapping with `allowed`, `per` or `denied`"
)]
pub struct Evidence {
    #[serde(default)]
    pub allowed: AllowedEvidence,
    /// How repeated denials are recorded. Left out of the canonical JSON
    /// while it is the default, so older policies keep their snapshot.
    #[serde(default, skip_serializing_if = "DeniedEvidence::is_default")]
    pub denied: DeniedEvidence,
    /// What repeats are counted per (first-then-count only). Left out of
    /// the canonical JSON while it is the default.
    #[serde(default, skip_serializing_if = "CountPer::is_default")]
    pub per: CountPer,
}

/// Whose repeats one summary counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`process` or `agent`")]
pub enum CountPer {
    /// Each process's repeats apart: a summary names one process.
    #[default]
    Process,
    /// All the agent's processes together: a summary names the first
    /// process and counts the repeats of any of them.
    Agent,
}

impl CountPer {
    pub fn is_default(&self) -> bool {
        *self == Self::Process
    }
}

impl Evidence {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How allowed actions are recorded. Denials, holds, approvals, kills and
/// gaps are always recorded one entry each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", expecting = "`first-then-count` or `each`")]
pub enum AllowedEvidence {
    /// The first allowed action of a key (agent, process, file or
    /// destination, access, rule, policy) is recorded individually; its
    /// repeats are counted in the kernel and written as `summary` entries.
    #[default]
    FirstThenCount,
    /// Every allowed action gets its own entry.
    Each,
}

/// How repeated denials are recorded (`evidence: { denied: ... }`). Only
/// denials the kernel refuses without a kill are counted (connect and
/// sendmsg); a kill, a hold, an approval and a GAP are one entry each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", expecting = "`first-then-count` or `each`")]
pub enum DeniedEvidence {
    /// The first denial of a key (agent, process, destination, rule,
    /// policy) is recorded individually; its repeats are counted in the
    /// kernel and written as `summary` entries with decision `deny`. The
    /// default: every refusal is still accounted for, by an exact kernel
    /// count, while an agent hammering a refused destination can no longer
    /// fill the disk and bury the other agents' evidence.
    #[default]
    FirstThenCount,
    /// Every denial gets its own entry.
    Each,
}

impl DeniedEvidence {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One rule of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub decision: Decision,
    /// Serialised flattened, as `"connect": {...}`, `"exec": {...}` or
    /// `"file": {...}` next to `id` and `decision`.
    #[serde(flatten)]
    pub selector: Selector,
    /// `allow_write_exec: true`: the author accepts that this rule lets the
    /// agent write a path it may also execute (refused otherwise, see
    /// `compile::check_write_exec`). Left out of the snapshot when false,
    /// so policies without it keep their hash.
    #[serde(skip_serializing_if = "is_false")]
    pub allow_write_exec: bool,
    /// `destructive: true`: denied while a freeze window is open. Left out
    /// of the snapshot when false.
    #[serde(skip_serializing_if = "is_false")]
    pub destructive: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What happens to an action a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`allow`, `deny` or `hold`")]
pub enum Decision {
    Allow,
    Deny,
    /// Pause the action until a human approves or rejects it.
    Hold,
}

impl Decision {
    /// The decision as the kernel ABI encodes it.
    pub fn to_kernel(self) -> warden_common::Decision {
        match self {
            Decision::Allow => warden_common::Decision::Allow,
            Decision::Deny => warden_common::Decision::Deny,
            Decision::Hold => warden_common::Decision::Hold,
        }
    }
}

/// Which actions a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Selector {
    /// Outgoing connections (connect, and sendmsg with a destination).
    Connect {
        cidr: Cidr,
        /// Inclusive port ranges, sorted, overlapping and adjacent ranges
        /// merged. Empty means every port (0..=65535).
        ports: Vec<(u16, u16)>,
        protocol: Protocol,
    },
    /// Outgoing connections to the addresses a name resolved to through
    /// the agent's DNS proxy (`connect: { host: ... }`): the name is
    /// decided when the agent asks for it, its addresses enter the
    /// kernel's tables for the answer's TTL (daemon/src/dns/).
    #[serde(rename = "connect")]
    ConnectHost {
        host: super::host::HostPattern,
        ports: Vec<(u16, u16)>,
        protocol: Protocol,
    },
    /// Executing a binary.
    Exec {
        #[serde(flatten)]
        target: PathMatch,
    },
    /// Opening a file.
    File {
        #[serde(flatten)]
        target: PathMatch,
        read: bool,
        write: bool,
    },
    /// Creating a socket of a kind the connect rules cannot see (raw IP,
    /// packet).
    /// Decided at creation; `allow` or `deny` only.
    Socket { kind: SocketKind },
}

/// The socket kinds a `socket` rule names (`warden_common::sock_class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`raw` or `packet`")]
pub enum SocketKind {
    /// `SOCK_RAW` in `AF_INET`/`AF_INET6` (`IPPROTO_RAW` included),
    /// decided by the cgroup `sock_create` hook.
    Raw,
    /// `AF_PACKET` (and `SOCK_PACKET`): decided at BPF LSM `socket_create`
    /// (or `fmod_ret/security_socket_create`), else detected at `sys_exit`
    /// and killed when no rule allows it. `warden run`'s seccomp refuses
    /// them whatever the policy.
    Packet,
}

/// Transport protocol of a connect rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`tcp`, `udp` or `any`")]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
}

impl Protocol {
    /// The `PortRule::proto` value for this protocol.
    pub fn to_kernel(self) -> u8 {
        match self {
            Protocol::Any => warden_common::proto::ANY,
            Protocol::Tcp => warden_common::proto::TCP,
            Protocol::Udp => warden_common::proto::UDP,
        }
    }
}

/// An absolute, normalised path, matched byte-wise.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    /// Exactly this path. Never ends with '/'.
    #[serde(rename = "path")]
    Exact(String),
    /// Every path starting with this one. Always ends with '/', so
    /// `/usr/bin/` does not match `/usr/binx`.
    Prefix(String),
}

impl PathMatch {
    /// Whether a path the kernel resolved is matched by this rule.
    pub fn matches(&self, resolved: &[u8]) -> bool {
        match self {
            PathMatch::Exact(p) => resolved == p.as_bytes(),
            PathMatch::Prefix(p) => resolved.starts_with(p.as_bytes()),
        }
    }
}

/// An IP network: an address with every bit past the prefix zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a usable CIDR.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("'{0}' is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("'{0}' is not a prefix length")]
    PrefixSyntax(String),
    #[error("prefix length {prefix} is longer than the {max} bits of an IPv{family} address")]
    PrefixTooLong { prefix: u32, max: u8, family: u8 },
    #[error("host bits are set; did you mean {0}?")]
    HostBits(Cidr),
    // The kernel looks IPv4-mapped destinations up in the IPv4 table, so a
    // rule written in the mapped form would silently never match.
    #[error("IPv4-mapped IPv6 addresses are matched by IPv4 rules; write {0} instead")]
    V4Mapped(String),
}

impl Cidr {
    /// A network from its address and prefix length. Refuses host bits past
    /// the prefix rather than masking them, because `10.0.0.1/8` is more
    /// likely a typo than a request for `10.0.0.0/8`.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = Self::max_prefix(addr);
        if prefix > max {
            let family = if addr.is_ipv4() { 4 } else { 6 };
            return Err(CidrError::PrefixTooLong {
                prefix: prefix.into(),
                max,
                family,
            });
        }
        let network = Cidr {
            addr: mask(addr, prefix),
            prefix,
        };
        if network.addr != addr {
            return Err(CidrError::HostBits(network));
        }
        if let IpAddr::V6(v6) = addr {
            if prefix >= 96 {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Err(CidrError::V4Mapped(format!("{v4}/{}", prefix - 96)));
                }
            }
        }
        Ok(network)
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `other` is the same network or a subnet of this one. Networks
    /// of different families never contain each other.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix
            && self.addr.is_ipv4() == other.addr.is_ipv4()
            && mask(other.addr, self.prefix) == self.addr
    }

    /// Whether `addr` lies in this network (same family only).
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        self.addr.is_ipv4() == addr.is_ipv4() && mask(addr, self.prefix) == self.addr
    }

    /// The network of `prefix` bits containing this one (`None` if
    /// `prefix` is longer than this network's).
    pub fn supernet(&self, prefix: u8) -> Option<Cidr> {
        (prefix <= self.prefix).then(|| Cidr {
            addr: mask(self.addr, prefix),
            prefix,
        })
    }

    fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }
}

/// `addr` with every bit past `prefix` cleared. `prefix` must not exceed the
/// family's width.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `addr` (a host: /32 or /128) or `addr/prefix`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_string()))?;
        let prefix = match prefix_text {
            None => Self::max_prefix(addr),
            Some(p) => {
                // Only plain decimal digits: u8::from_str would also take "+8".
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::PrefixSyntax(p.to_string()));
                }
                let n: u32 = p
                    .parse()
                    .map_err(|_| CidrError::PrefixSyntax(p.to_string()))?;
                let max = Self::max_prefix(addr);
                if n > u32::from(max) {
                    let family = if addr.is_ipv4() { 4 } else { 6 };
                    return Err(CidrError::PrefixTooLong {
                        prefix: n,
                        max,
                        family,
                    });
                }
                n as u8
            }
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    /// Always `addr/prefix`, with IPv6 in the RFC 5952 form std prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn serialize_shadow<S: Serializer>(p: &Option<Box<Policy>>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&p.snapshot()),
        None => s.serialize_none(),
    }
}

fn serialize_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Sorts inclusive ranges and merges the ones that overlap or touch, so that
/// `[81, 80]`, `["80-81"]` and `[80, "80-81"]` are one model value. Order
/// within a rule carries no meaning: every range of a rule has the same
/// decision and rule index.
pub(super) fn normalise_ports(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Which kernel mechanisms a policy's rules use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Has at least one `connect` rule.
    pub network: bool,
    /// Has at least one `exec` rule.
    pub exec: bool,
    /// Has at least one `file` rule.
    pub file: bool,
    /// Has at least one rule whose decision is `hold`.
    pub hold: bool,
}

/// Which kinds of rules a policy has. Note that default deny applies to
/// every kind of action whether or not the policy has rules for it; this
/// says which rule tables and which approval path the policy fills.
pub fn policy_needs(policy: &Policy) -> Needs {
    let mut needs = Needs::default();
    for rule in &policy.rules {
        match rule.selector {
            Selector::Connect { .. } | Selector::ConnectHost { .. } => needs.network = true,
            Selector::Exec { .. } => needs.exec = true,
            Selector::File { .. } => needs.file = true,
            Selector::Socket { .. } => needs.network = true,
        }
        needs.hold |= rule.decision == Decision::Hold;
    }
    needs
}

impl Policy {
    /// The name the policy was loaded under (the file path given to the
    /// parser), as used in error messages.
    pub fn source_name(&self) -> &str {
        &self.source.name
    }

    /// Whether the policy has `connect: { host: ... }` rules (its agent's
    /// DNS then goes through the daemon's proxy).
    pub fn has_host_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.selector, Selector::ConnectHost { .. }))
    }

    /// The host rule that decides a queried name: the most specific
    /// pattern that matches (an exact name, then the longest `*.` domain,
    /// then `*`), equal ones in policy order. Its index in `rules`.
    pub fn host_rule_for(&self, name: &str) -> Option<usize> {
        let mut best: Option<(usize, (u8, usize))> = None;
        for (i, r) in self.rules.iter().enumerate() {
            if let Selector::ConnectHost { host, .. } = &r.selector {
                let spec = host.specificity();
                if host.matches(name) && best.is_none_or(|(_, b)| spec > b) {
                    best = Some((i, spec));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Rule ids in policy order: `rule_ids()[rule_idx]` names the rule the
    /// kernel reported.
    pub fn rule_ids(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.id.clone()).collect()
    }

    /// The canonical JSON of the policy: the model serialised with serde,
    /// object keys sorted by byte value at every level, no whitespace.
    ///
    /// Shape (keys shown sorted): `{"approvers":{"groups":[..],"users":[..]},
    /// "description":null|"..","hold_timeout_secs":900,
    /// "on_evidence_loss":"deny"|"allow","rules":[..],"version":1}`; a rule is
    /// `{"connect":{"cidr":"10.0.0.0/8","ports":[[80,80],[9000,9100]],
    /// "protocol":"any"|"tcp"|"udp"},"decision":"allow"|"deny"|"hold","id":".."}`,
    /// with `"exec":{"path":".."}` / `"exec":{"prefix":".."}` or
    /// `"file":{"path"|"prefix":"..","read":bool,"write":bool}` in place of
    /// `connect`. `ports: []` means all ports.
    pub fn canonical_json(&self) -> String {
        // Sorting is done here rather than relied on from serde_json's map
        // type, which keeps insertion order when another crate in the build
        // enables its `preserve_order` feature.
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        serde_json::to_string(&Sorted(&value)).unwrap_or_default()
    }

    /// Identity of the policy's meaning: lowercase hex SHA-256 of
    /// `b"warden/policy/v1\0"` followed by [`Policy::canonical_json`].
    ///
    /// Comments, whitespace, key order and equivalent spellings (`1.2.3.4`
    /// and `1.2.3.4/32`, `80` and `"80-80"`, `15m` and `900s`, approvers in
    /// any order) do not change it; any change to what the policy permits,
    /// to its settings, to rule ids or to the description does.
    pub fn snapshot(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(SNAPSHOT_DOMAIN);
        hash.update(self.canonical_json().as_bytes());
        hex::encode(hash.finalize())
    }
}

/// Serialises a JSON value with object keys in sorted order.
struct Sorted<'a>(&'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = s.serialize_map(Some(keys.len()))?;
                for key in keys {
                    out.serialize_entry(key, &Sorted(&map[key.as_str()]))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                let mut out = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(c.to_string(), "127.0.0.1/32");
        let c: Cidr = "fe80::/10".parse().unwrap();
        assert_eq!(c.to_string(), "fe80::/10");
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(c.prefix(), 0);
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>().unwrap_err().to_string(),
            "host bits are set; did you mean 10.0.0.0/8?"
        );
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(CidrError::PrefixSyntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/".parse::<Cidr>(),
            Err(CidrError::PrefixSyntax(_))
        ));
        assert_eq!(
            "::ffff:10.0.0.1".parse::<Cidr>().unwrap_err().to_string(),
            "IPv4-mapped IPv6 addresses are matched by IPv4 rules; write 10.0.0.1/32 instead"
        );
        // A network that merely covers the mapped range is fine.
        assert!("::/0".parse::<Cidr>().is_ok());
    }

    #[test]
    fn cidr_containment() {
        let net8: Cidr = "127.0.0.0/8".parse().unwrap();
        let host: Cidr = "127.0.0.1".parse().unwrap();
        let other: Cidr = "10.0.0.0/8".parse().unwrap();
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(net8.contains(&host));
        assert!(net8.contains(&net8));
        assert!(!host.contains(&net8));
        assert!(!net8.contains(&other));
        assert!(!all6.contains(&host));
        assert!(net8.contains_addr("127.9.9.9".parse().unwrap()));
        assert!(!net8.contains_addr("::1".parse().unwrap()));
    }

    #[test]
    fn port_normalisation() {
        assert_eq!(normalise_ports(vec![(81, 81), (80, 80)]), vec![(80, 81)]);
        assert_eq!(
            normalise_ports(vec![(90, 100), (80, 95), (200, 200)]),
            vec![(80, 100), (200, 200)]
        );
        assert_eq!(
            normalise_ports(vec![(65535, 65535), (1, 65534)]),
            vec![(1, 65535)]
        );
        assert_eq!(
            normalise_ports(vec![(80, 80), (82, 82)]),
            vec![(80, 80), (82, 82)]
        );
    }

    #[test]
    fn sorted_json_sorts_nested_keys() {
        let v = serde_json::json!({"b": [{"z": 1, "a": 2}], "a": null});
        assert_eq!(
            serde_json::to_string(&Sorted(&v)).unwrap(),
            r#"{"a":null,"b":[{"a":2,"z":1}]}"#
        );
    }
}
