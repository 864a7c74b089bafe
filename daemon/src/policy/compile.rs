//! Policy to kernel rule tables: network (below) and exec/file (after it).
//!
//! The kernel does a longest-prefix match of the destination address in the
//! agent's LPM trie, then walks that one entry's `PortRule`s and takes the
//! first whose port range holds the destination port and whose protocol is
//! the socket's (or `proto::ANY`). No entry, or no matching port rule, means
//! deny with `rule::DEFAULT`.
//!
//! Because the kernel only ever looks at one entry, each entry must carry
//! every rule that applies to its destinations: for each distinct CIDR in
//! the policy, the entry holds every connect rule of the same family whose
//! CIDR contains it, most specific CIDR first, then in policy order. The
//! effect is that, for any destination, the rule with the longest matching
//! CIDR decides, and among rules with the same CIDR the first in the file
//! that matches port and protocol decides.
//!
//! (Over 600 lines because of its unit tests, about 600 lines that check
//! the compiled tables against a model of the kernel's lookup.)

use std::cmp::Reverse;
use std::collections::HashSet;
use std::net::IpAddr;

use warden_common::limits::{MAX_NET_ENTRIES, MAX_PATH_ENTRIES, MAX_PORT_RULES};
use warden_common::{
    FileRule, NetRules, PathKey, PathRule, PortRule, PATH_KEY_BYTES, SLOT_PREFIX_BITS,
};

use super::model::{Cidr, Decision, PathMatch, Policy, Protocol, Selector, SocketKind};
use super::parse::{rule_error, PolicyError, PolicyErrorKind, WriteExec};

/// One LPM entry: (prefix length of the CIDR itself, without the slot bits;
/// network address in network byte order; rules).
pub type Net4Entry = (u32, [u8; 4], NetRules);
/// As [`Net4Entry`], for IPv6 (prefix length 0..=128).
pub type Net6Entry = (u32, [u8; 16], NetRules);

/// The network rule tables of one policy, ready to be written under a slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledNet {
    /// IPv4 entries, in order of each CIDR's first appearance in the policy.
    pub v4: Vec<Net4Entry>,
    /// IPv6 entries, likewise. IPv4-mapped destinations are looked up in
    /// `v4` by the kernel, so nothing here covers them.
    pub v6: Vec<Net6Entry>,
    /// Raw socket creation: the first `socket` rule of each kind.
    pub sockets: warden_common::SockRules,
    /// The policy's budgets (`policy::budget`). Carried with the network
    /// tables because, like `sockets`, they are one entry written under the
    /// agent's rule slot, swapped with the rest on a reload.
    pub budgets: warden_common::BudgetSet,
    /// The policy has `host` rules: the agent's DNS goes through its
    /// proxy (`agent_flags::DNS`), which adds learned addresses.
    pub dns: bool,
}

/// A connect rule, flattened for compilation.
struct ConnectRule<'a> {
    index: usize,
    cidr: Cidr,
    ports: &'a [(u16, u16)],
    protocol: Protocol,
    decision: Decision,
}

/// Every port: the kernel matches `port_lo <= port <= port_hi`.
const ALL_PORTS: [(u16, u16); 1] = [(0, u16::MAX)];

/// How many entries of a rule map (`max_entries` in `warden_common::limits`)
/// one policy may fill: its agent's share (`limits::RULE_MAP_SHARES` agents
/// share the map with full policies), halved because a reload writes the
/// new rules under the agent's idle slot while the old ones are still in
/// force (kernel/rules.rs `install`).
pub const fn policy_share(map_entries: u32) -> usize {
    (map_entries / (2 * warden_common::limits::RULE_MAP_SHARES)) as usize
}

/// The first `socket` rule of each kind decides it; a kind no rule names
/// stays `decision: 0`, which the kernel denies.
fn compile_sockets(policy: &Policy) -> warden_common::SockRules {
    let mut out = warden_common::SockRules::default();
    for (index, rule) in policy.rules.iter().enumerate() {
        let Selector::Socket { kind } = rule.selector else {
            continue;
        };
        let slot = match kind {
            SocketKind::Raw => &mut out.raw,
            SocketKind::Packet => &mut out.packet,
        };
        if slot.decision == 0 {
            *slot = warden_common::SockRule {
                decision: rule.decision.to_kernel() as u32,
                rule_idx: index as u32,
            };
        }
    }
    out
}

/// Builds the LPM entries for a policy's connect rules (see the module doc
/// for the semantics). Fails if any entry needs more than
/// `limits::MAX_PORT_RULES` port rules, or a family more CIDRs than
/// [`policy_share`] of its map, naming the rule that did not fit.
pub fn compile_network(policy: &Policy) -> Result<CompiledNet, PolicyError> {
    let connects: Vec<ConnectRule<'_>> = policy
        .rules
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| match &rule.selector {
            Selector::Connect {
                cidr,
                ports,
                protocol,
            } => Some(ConnectRule {
                index,
                cidr: *cidr,
                ports: if ports.is_empty() { &ALL_PORTS } else { ports },
                protocol: *protocol,
                decision: rule.decision,
            }),
            _ => None,
        })
        .collect();

    let mut seen = HashSet::new();
    let distinct: Vec<Cidr> = connects
        .iter()
        .map(|c| c.cidr)
        .filter(|c| seen.insert(*c))
        .collect();
    // Before the entries' rules: those cost a pass over every connect rule
    // per CIDR, and a policy too big for the map should fail fast.
    let max = policy_share(MAX_NET_ENTRIES);
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        let of_family: Vec<&Cidr> = distinct
            .iter()
            .filter(|c| c.addr().is_ipv4() == v4)
            .collect();
        if let Some(first_over) = of_family.get(max) {
            let index = connects
                .iter()
                .find(|c| c.cidr == **first_over)
                .map_or(0, |c| c.index);
            return Err(rule_error(
                policy,
                index,
                PolicyErrorKind::TooManyCidrs {
                    family,
                    needed: of_family.len(),
                    max,
                },
            ));
        }
    }

    let mut out = CompiledNet {
        sockets: compile_sockets(policy),
        dns: policy.has_host_rules(),
        ..CompiledNet::default()
    };
    for cidr in distinct {
        let rules = entry_rules(policy, &connects, cidr)?;
        let prefix = u32::from(cidr.prefix());
        match cidr.addr() {
            IpAddr::V4(a) => out.v4.push((prefix, a.octets(), rules)),
            IpAddr::V6(a) => out.v6.push((prefix, a.octets(), rules)),
        }
    }
    Ok(out)
}

fn entry_rules(
    policy: &Policy,
    connects: &[ConnectRule<'_>],
    cidr: Cidr,
) -> Result<NetRules, PolicyError> {
    let mut covering: Vec<&ConnectRule<'_>> =
        connects.iter().filter(|c| c.cidr.contains(&cidr)).collect();
    // Stable sort: rules with equal prefix keep policy order.
    covering.sort_by_key(|c| Reverse(c.cidr.prefix()));

    let needed: usize = covering.iter().map(|c| c.ports.len()).sum();
    let mut out = NetRules::default();
    let mut count = 0;
    for c in covering {
        for &(lo, hi) in c.ports {
            let Some(slot) = out.rules.get_mut(count) else {
                return Err(rule_error(
                    policy,
                    c.index,
                    PolicyErrorKind::TooManyPortRules {
                        cidr,
                        needed,
                        max: MAX_PORT_RULES,
                    },
                ));
            };
            *slot = PortRule {
                port_lo: lo,
                port_hi: hi,
                proto: c.protocol.to_kernel(),
                decision: c.decision.to_kernel() as u8,
                _pad: [0; 2],
                // Rule counts are bounded by the file size; a policy with
                // more than u32::MAX - 4 rules cannot be parsed in memory.
                rule_idx: c.index as u32,
            };
            count += 1;
        }
    }
    out.count = count as u32;
    Ok(out)
}

/// The kernel entry (a `/32` or `/128`) of an address the agent's DNS
/// proxy learned through `host` rules (policies/README.md, "Rules by
/// name"): first the `to` rules whose CIDR contains the address, ordered
/// as for any CIDR entry, then the ports of each rule of `host_rules` in
/// that order. Port rules past the entry's capacity are left out (those
/// ports then fall to the default, deny); the flag says whether any were.
pub fn learned_entry(policy: &Policy, addr: IpAddr, host_rules: &[usize]) -> (NetRules, bool) {
    let host = Cidr::new(addr, if addr.is_ipv4() { 32 } else { 128 });
    // (CIDR prefix, rule index, ports, protocol, decision).
    type Covering<'a> = (u8, usize, &'a [(u16, u16)], Protocol, Decision);
    let mut covering: Vec<Covering<'_>> = Vec::new();
    for (index, rule) in policy.rules.iter().enumerate() {
        if let Selector::Connect {
            cidr,
            ports,
            protocol,
        } = &rule.selector
        {
            if host.as_ref().is_ok_and(|h| cidr.contains(h)) {
                let ports: &[(u16, u16)] = if ports.is_empty() { &ALL_PORTS } else { ports };
                covering.push((cidr.prefix(), index, ports, *protocol, rule.decision));
            }
        }
    }
    covering.sort_by_key(|c| Reverse(c.0));
    for &index in host_rules {
        if let Some(Selector::ConnectHost {
            ports, protocol, ..
        }) = policy.rules.get(index).map(|r| &r.selector)
        {
            let ports: &[(u16, u16)] = if ports.is_empty() { &ALL_PORTS } else { ports };
            // A `hold` host rule is decided at the name: its addresses
            // are learned only after a human approved the name.
            let decision = match policy.rules[index].decision {
                Decision::Hold => Decision::Allow,
                d => d,
            };
            covering.push((0, index, ports, *protocol, decision));
        }
    }
    let mut out = NetRules::default();
    let mut count = 0;
    let mut cut = false;
    for (_, index, ports, protocol, decision) in covering {
        for &(lo, hi) in ports {
            let Some(slot) = out.rules.get_mut(count) else {
                cut = true;
                continue;
            };
            *slot = PortRule {
                port_lo: lo,
                port_hi: hi,
                proto: protocol.to_kernel(),
                decision: decision.to_kernel() as u8,
                _pad: [0; 2],
                rule_idx: index as u32,
            };
            count += 1;
        }
    }
    out.count = count as u32;
    (out, cut)
}

// ---------------------------------------------------------------------------
// Exec and file rules

/// One entry of an exec or file LPM trie: the key's path bytes (an exact
/// rule's path followed by a NUL, or a prefix ending in '/'; the kernel key
/// puts the slot in front and counts `8 * bytes.len()` more prefix bits)
/// and the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathEntry<V> {
    pub bytes: Vec<u8>,
    pub value: V,
}

impl<V> PathEntry<V> {
    /// The `PathKey` of this entry under `slot`, and its prefix length in
    /// bits (slot included), as the kernel's trie takes them.
    pub fn key(&self, slot: u32) -> (u32, PathKey) {
        let mut path = [0u8; PATH_KEY_BYTES];
        // The parser refuses longer paths, so this never cuts.
        let n = self.bytes.len().min(PATH_KEY_BYTES);
        path[..n].copy_from_slice(&self.bytes[..n]);
        (SLOT_PREFIX_BITS + 8 * n as u32, PathKey { slot, path })
    }
}

/// The exec and file rule tables of one policy, ready to be written under a
/// slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledPaths {
    /// The policy has exec rules: the kernel decides every exec of the
    /// agent (default deny). Without, the agent's execs are not governed.
    pub exec_governed: bool,
    /// The policy has file rules: the kernel decides every open.
    pub file_governed: bool,
    pub exec: Vec<PathEntry<PathRule>>,
    pub file: Vec<PathEntry<FileRule>>,
}

/// What the kernel's lookup does with a path: the longest entry that is a
/// prefix of `path + NUL` wins. So a rule's key is `path + NUL` for an exact
/// rule and the directory for a prefix rule, and the longest match is the
/// most specific rule (exact, then the longest prefix).
fn key_bytes(target: &PathMatch) -> Vec<u8> {
    match target {
        PathMatch::Exact(p) => {
            let mut b = p.as_bytes().to_vec();
            b.push(0);
            b
        }
        PathMatch::Prefix(p) => p.as_bytes().to_vec(),
    }
}

/// Whether `rule` matches every path `entry` matches.
fn covers(rule: &PathMatch, entry: &PathMatch) -> bool {
    match (rule, entry) {
        (PathMatch::Exact(r), PathMatch::Exact(e)) => r == e,
        (PathMatch::Exact(_), PathMatch::Prefix(_)) => false,
        // A file prefix also matches its directory itself (`/tmp/work/`
        // covers `/tmp/work`, see `prefix_dir`).
        (PathMatch::Prefix(r), PathMatch::Exact(e)) => {
            e.starts_with(r.as_str()) || prefix_dir(r) == Some(e.as_str())
        }
        (PathMatch::Prefix(r), PathMatch::Prefix(e)) => e.starts_with(r.as_str()),
    }
}

/// The directory a file `prefix:` rule names, as an exact path: opening
/// `/tmp/work` itself (to list it) is matched by `prefix: /tmp/work/`. None
/// for `/`, whose entry already matches the root (`/` + NUL starts with `/`).
fn prefix_dir(prefix: &str) -> Option<&str> {
    prefix.strip_suffix('/').filter(|d| !d.is_empty())
}

/// How specific a match is: an exact path beats any prefix, a longer prefix
/// a shorter one.
fn specificity(target: &PathMatch) -> (bool, usize) {
    match target {
        PathMatch::Exact(p) => (true, p.len()),
        PathMatch::Prefix(p) => (false, p.len()),
    }
}

/// The kernel value of one rule's decision.
fn path_rule(index: usize, decision: Decision) -> PathRule {
    PathRule {
        decision: decision.to_kernel() as u8,
        _pad: [0; 3],
        // Rule counts are bounded by the file size (see PortRule).
        rule_idx: index as u32,
    }
}

/// Builds the exec and file LPM entries of a policy.
///
/// Exec: one entry per distinct path or prefix, holding the first rule in
/// the file that names it. File: one entry per distinct path or prefix,
/// holding for each access (read, write) the most specific rule covering
/// the entry that lists the access (ties: the first in the file), or the
/// default (deny) when none does. The kernel's longest-prefix lookup then
/// finds, for any path, the most specific rule per access, as
/// policies/README.md specifies.
pub fn compile_paths(policy: &Policy) -> Result<CompiledPaths, PolicyError> {
    let max = policy_share(MAX_PATH_ENTRIES);
    let mut out = CompiledPaths::default();

    let execs: Vec<(usize, &PathMatch, Decision)> = policy
        .rules
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| match &rule.selector {
            Selector::Exec { target } => Some((index, target, rule.decision)),
            _ => None,
        })
        .collect();
    out.exec_governed = !execs.is_empty();
    let mut seen = HashSet::new();
    // An earlier rule naming the same path decides.
    let distinct: Vec<_> = execs.iter().filter(|e| seen.insert(e.1)).collect();
    check_share(policy, "exec", &distinct, |e| e.0, max)?;
    out.exec = distinct
        .into_iter()
        .map(|&(index, target, decision)| PathEntry {
            bytes: key_bytes(target),
            value: path_rule(index, decision),
        })
        .collect();

    struct FileSel<'a> {
        index: usize,
        target: &'a PathMatch,
        read: bool,
        write: bool,
        decision: Decision,
    }
    let files: Vec<FileSel<'_>> = policy
        .rules
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| match &rule.selector {
            Selector::File {
                target,
                read,
                write,
            } => Some(FileSel {
                index,
                target,
                read: *read,
                write: *write,
                decision: rule.decision,
            }),
            _ => None,
        })
        .collect();
    out.file_governed = !files.is_empty();
    let mut seen: HashSet<PathMatch> = HashSet::new();
    // Each distinct path or prefix, then the directory of each prefix as an
    // exact entry of its own (unless a rule names it), so that the
    // directory is decided by the rules covering it.
    let mut distinct: Vec<(usize, PathMatch)> = files
        .iter()
        .filter(|f| seen.insert(f.target.clone()))
        .map(|f| (f.index, f.target.clone()))
        .collect();
    for f in &files {
        if let PathMatch::Prefix(p) = f.target {
            if let Some(dir) = prefix_dir(p) {
                let dir = PathMatch::Exact(dir.to_owned());
                if seen.insert(dir.clone()) {
                    distinct.push((f.index, dir));
                }
            }
        }
    }
    // Before the values: each costs a pass over every file rule.
    check_share(policy, "file", &distinct, |f| f.0, max)?;
    for (_, target) in &distinct {
        // The most specific covering rule listing the access; `max_by_key`
        // keeps the last maximum, so iterate in reverse for the first.
        let best = |wants: fn(&FileSel<'_>) -> bool| -> PathRule {
            files
                .iter()
                .rev()
                .filter(|r| wants(r) && covers(r.target, target))
                .max_by_key(|r| specificity(r.target))
                .map_or(PathRule::DEFAULT, |r| path_rule(r.index, r.decision))
        };
        out.file.push(PathEntry {
            bytes: key_bytes(target),
            value: FileRule {
                read: best(|r| r.read),
                write: best(|r| r.write),
            },
        });
    }
    Ok(out)
}

/// Refuses a policy under which some path is both writable (the most
/// specific `file` rule listing `write` allows or holds it) and executable
/// (the most specific `exec` rule allows or holds it): the agent could
/// replace a binary it may run. Accepted when either deciding rule says
/// `allow_write_exec: true`. The error names both rules, located at the
/// later one.
///
/// Exact, not approximate: the decisions of both tables only change at rule
/// keys, so it is enough to test one path per region: each exact rule's
/// path, and for each prefix rule a name directly below it that no other
/// rule names (`prefix + "\u{1}"`). A `deny` carve-out (say write
/// `/work/`, deny write `/work/bin/`, exec `/work/bin/`) is therefore
/// accepted.
pub fn check_write_exec(policy: &Policy) -> Result<(), PolicyError> {
    let mut execs = Vec::new();
    let mut writes = Vec::new();
    for (index, rule) in policy.rules.iter().enumerate() {
        match &rule.selector {
            Selector::Exec { target } => execs.push((index, target)),
            Selector::File {
                target,
                write: true,
                ..
            } => writes.push((index, target)),
            _ => {}
        }
    }
    if execs.is_empty() || writes.is_empty() {
        return Ok(());
    }
    // The most specific rule of `rules` matching `path`; ties: the first.
    let decider = |rules: &[(usize, &PathMatch)], path: &str| -> Option<usize> {
        rules
            .iter()
            .rev()
            .filter(|(_, t)| t.matches(path.as_bytes()))
            .max_by_key(|(_, t)| specificity(t))
            .map(|&(i, _)| i)
    };
    let permits = |index: usize| policy.rules[index].decision != Decision::Deny;
    let mut points: Vec<(String, String)> = Vec::new();
    for (_, target) in execs.iter().chain(writes.iter()) {
        match target {
            PathMatch::Exact(p) => points.push((p.clone(), p.clone())),
            PathMatch::Prefix(p) => points.push((format!("{p}\u{1}"), format!("{p}*"))),
        }
    }
    for (probe, shown) in points {
        let (Some(e), Some(w)) = (decider(&execs, &probe), decider(&writes, &probe)) else {
            continue;
        };
        if !permits(e) || !permits(w) {
            continue;
        }
        if policy.rules[e].allow_write_exec || policy.rules[w].allow_write_exec {
            continue;
        }
        return Err(rule_error(
            policy,
            e.max(w),
            PolicyErrorKind::WriteExec(Box::new(WriteExec {
                write_rule: policy.rules[w].id.clone(),
                exec_rule: policy.rules[e].id.clone(),
                path: shown,
            })),
        ));
    }
    Ok(())
}

/// Refuses `distinct` entries (in policy order) beyond `max`, naming the
/// rule of the first that does not fit.
fn check_share<T>(
    policy: &Policy,
    kind: &'static str,
    distinct: &[T],
    index: fn(&T) -> usize,
    max: usize,
) -> Result<(), PolicyError> {
    match distinct.get(max) {
        None => Ok(()),
        Some(first_over) => Err(rule_error(
            policy,
            index(first_over),
            PolicyErrorKind::TooManyPaths {
                kind,
                needed: distinct.len(),
                max,
            },
        )),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::parse::parse_policy;
    use super::*;
    use warden_common::{proto, rule};

    /// What the kernel would decide for a destination: longest prefix match
    /// over the entries, then the first matching port rule; IPv4-mapped IPv6
    /// destinations use the IPv4 table. Returns (decision, rule_idx).
    pub(in super::super) fn kernel_lookup(
        net: &CompiledNet,
        dst: IpAddr,
        port: u16,
        proto: u8,
    ) -> (u8, u32) {
        let dst = match dst {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(dst, IpAddr::V4),
            v4 => v4,
        };
        let entries: Vec<(u32, IpAddr, &NetRules)> = match dst {
            IpAddr::V4(_) => net
                .v4
                .iter()
                .map(|(p, a, r)| (*p, IpAddr::from(*a), r))
                .collect(),
            IpAddr::V6(_) => net
                .v6
                .iter()
                .map(|(p, a, r)| (*p, IpAddr::from(*a), r))
                .collect(),
        };
        let best = entries
            .into_iter()
            .filter(|(p, a, _)| Cidr::new(*a, *p as u8).unwrap().contains_addr(dst))
            .max_by_key(|(p, _, _)| *p);
        let deny = (warden_common::Decision::Deny as u8, rule::DEFAULT);
        let Some((_, _, rules)) = best else {
            return deny;
        };
        rules.rules[..rules.count as usize]
            .iter()
            .find(|r| {
                r.port_lo <= port
                    && port <= r.port_hi
                    && (r.proto == proto::ANY || r.proto == proto)
            })
            .map_or(deny, |r| (r.decision, r.rule_idx))
    }

    const ALLOW: u8 = warden_common::Decision::Allow as u8;
    const DENY: u8 = warden_common::Decision::Deny as u8;
    const HOLD: u8 = warden_common::Decision::Hold as u8;

    fn compile(yaml: &str) -> CompiledNet {
        compile_network(&parse_policy("test.yaml", yaml).unwrap()).unwrap()
    }

    #[test]
    fn learned_addresses_take_cidr_rules_first_then_their_host_rules() {
        let p = parse_policy(
            "test.yaml",
            "version: 1\nrules:\n  - id: meta\n    connect: { to: 10.0.0.0/8, ports: [80] }\n    decision: deny\n  - id: api\n    connect: { host: api.example, ports: [80, 443], protocol: tcp }\n    decision: allow\n",
        )
        .unwrap();
        let (e, cut) = learned_entry(&p, "10.1.2.3".parse().unwrap(), &[1]);
        assert!(!cut);
        let got: Vec<(u16, u16, u8, u8, u32)> = e.rules[..e.count as usize]
            .iter()
            .map(|r| (r.port_lo, r.port_hi, r.proto, r.decision, r.rule_idx))
            .collect();
        assert_eq!(
            got,
            [
                (80, 80, 0, DENY, 0),
                (80, 80, 6, ALLOW, 1),
                (443, 443, 6, ALLOW, 1)
            ]
        );
        // Outside every CIDR: the host rule alone.
        let (e, _) = learned_entry(&p, "::1".parse().unwrap(), &[1]);
        assert_eq!(e.count, 2);
        assert_eq!(e.rules[0].rule_idx, 1);
    }

    #[test]
    fn an_address_learned_through_a_held_name_is_allowed_a_cidr_hold_still_holds() {
        let p = parse_policy(
            "test.yaml",
            "version: 1\nrules:\n  - id: lab\n    connect: { to: 10.0.0.0/8, ports: [22] }\n    decision: hold\n  - id: new\n    connect: { host: \"*\", ports: [443] }\n    decision: hold\n",
        )
        .unwrap();
        let (e, _) = learned_entry(&p, "10.1.2.3".parse().unwrap(), &[1]);
        let got: Vec<(u16, u8, u32)> = e.rules[..e.count as usize]
            .iter()
            .map(|r| (r.port_lo, r.decision, r.rule_idx))
            .collect();
        assert_eq!(got, [(22, HOLD, 0), (443, ALLOW, 1)]);
    }

    #[test]
    fn the_first_socket_rule_decides_raw_sockets() {
        let none = compile("version: 1\nrules: []\n");
        assert_eq!(none.sockets.raw.decision, 0, "no rule: the kernel denies");
        let c = compile(
            "version: 1\nrules:\n  - id: a\n    connect: { to: 10.0.0.1 }\n    decision: allow\n  \
             - id: ping\n    socket: { kind: raw }\n    decision: deny\n  \
             - id: later\n    socket: { kind: raw }\n    decision: allow\n",
        );
        assert_eq!(
            c.sockets.raw,
            warden_common::SockRule {
                decision: warden_common::Decision::Deny as u32,
                rule_idx: 1
            }
        );
    }

    #[test]
    fn the_first_packet_rule_decides_packet_sockets_apart_from_raw() {
        let none = compile("version: 1\nrules: []\n");
        assert_eq!(none.sockets.packet.decision, 0, "no rule: the kernel kills");
        let c = compile(
            "version: 1\nrules:\n  - id: ping\n    socket: { kind: raw }\n    decision: deny\n  \
             - id: sniff\n    socket: { kind: packet }\n    decision: allow\n  \
             - id: later\n    socket: { kind: packet }\n    decision: deny\n",
        );
        assert_eq!(
            c.sockets.packet,
            warden_common::SockRule {
                decision: warden_common::Decision::Allow as u32,
                rule_idx: 1
            }
        );
        assert_eq!(c.sockets.raw.rule_idx, 0);
        assert_eq!(c.sockets.raw.decision, warden_common::Decision::Deny as u32);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nested_cidrs_flatten_covering_rules() {
        let net = compile(
            "version: 1
rules:
  - id: loopback-web
    connect: { to: 127.0.0.0/8, ports: [80] }
    decision: allow
  - id: no-81
    connect: { to: 127.0.0.1/32, ports: [81] }
    decision: deny
",
        );
        assert_eq!(net.v6, vec![]);
        assert_eq!(net.v4.len(), 2);
        let (prefix, addr, rules) = &net.v4[1];
        assert_eq!((*prefix, *addr), (32, [127, 0, 0, 1]));
        // The /32 entry: its own rule first, then the covering /8 rule.
        assert_eq!(rules.count, 2);
        assert_eq!(
            rules.rules[0],
            PortRule {
                port_lo: 81,
                port_hi: 81,
                proto: proto::ANY,
                decision: DENY,
                _pad: [0; 2],
                rule_idx: 1
            }
        );
        assert_eq!(
            rules.rules[1],
            PortRule {
                port_lo: 80,
                port_hi: 80,
                proto: proto::ANY,
                decision: ALLOW,
                _pad: [0; 2],
                rule_idx: 0
            }
        );
        assert_eq!(net.v4[0].2.count, 1);

        assert_eq!(
            kernel_lookup(&net, ip("127.0.0.1"), 80, proto::TCP),
            (ALLOW, 0)
        );
        assert_eq!(
            kernel_lookup(&net, ip("127.0.0.1"), 81, proto::TCP),
            (DENY, 1)
        );
        assert_eq!(
            kernel_lookup(&net, ip("127.0.0.2"), 80, proto::UDP),
            (ALLOW, 0)
        );
        assert_eq!(
            kernel_lookup(&net, ip("127.0.0.2"), 81, proto::TCP),
            (DENY, rule::DEFAULT)
        );
        assert_eq!(
            kernel_lookup(&net, ip("10.0.0.1"), 80, proto::TCP),
            (DENY, rule::DEFAULT)
        );
        // IPv4-mapped IPv6 destinations use the IPv4 table.
        assert_eq!(
            kernel_lookup(&net, ip("::ffff:127.0.0.1"), 80, proto::TCP),
            (ALLOW, 0)
        );
    }

    #[test]
    fn more_specific_cidr_wins_over_policy_order() {
        let net = compile(
            "version: 1
rules:
  - id: all-private
    connect: { to: 10.0.0.0/8 }
    decision: allow
  - id: not-db
    connect: { to: 10.1.2.3 }
    decision: deny
  - id: db-tls-tcp
    connect: { to: 10.1.2.3, ports: [5432], protocol: tcp }
    decision: hold
  - id: anywhere-dns
    connect: { to: 0.0.0.0/0, ports: [53], protocol: udp }
    decision: allow
",
        );
        assert_eq!(
            kernel_lookup(&net, ip("10.9.9.9"), 443, proto::TCP),
            (ALLOW, 0)
        );
        // Same CIDR: policy order, so the earlier all-port deny shadows the hold.
        assert_eq!(
            kernel_lookup(&net, ip("10.1.2.3"), 5432, proto::TCP),
            (DENY, 1)
        );
        assert_eq!(
            kernel_lookup(&net, ip("10.1.2.3"), 53, proto::UDP),
            (DENY, 1)
        );
        assert_eq!(
            kernel_lookup(&net, ip("8.8.8.8"), 53, proto::UDP),
            (ALLOW, 3)
        );
        assert_eq!(
            kernel_lookup(&net, ip("8.8.8.8"), 53, proto::TCP),
            (DENY, rule::DEFAULT)
        );
        assert_eq!(
            kernel_lookup(&net, ip("10.0.0.1"), 53, proto::UDP),
            (ALLOW, 0)
        );
        assert_eq!(net.v4.len(), 3, "10.1.2.3 appears twice but is one entry");
        let (prefix, addr, rules) = &net.v4[2];
        assert_eq!((*prefix, *addr, rules.count), (0, [0; 4], 1));
        // The /32 entry holds its two rules, the /8 one, then the /0 one.
        let host = &net.v4[1].2;
        let order: Vec<u32> = host.rules[..host.count as usize]
            .iter()
            .map(|r| r.rule_idx)
            .collect();
        assert_eq!(order, vec![1, 2, 0, 3]);
        assert_eq!(host.rules[0].port_lo, 0);
        assert_eq!(host.rules[0].port_hi, 65535);
        assert_eq!(host.rules[1].proto, proto::TCP);
        assert_eq!(host.rules[1].decision, HOLD);
    }

    #[test]
    fn port_ranges_and_protocols() {
        let net = compile(
            "version: 1
rules:
  - id: api
    connect: { to: 127.0.0.1, ports: [8443, \"9000-9100\"], protocol: tcp }
    decision: allow
",
        );
        assert_eq!(net.v4[0].2.count, 2);
        assert_eq!(
            kernel_lookup(&net, ip("127.0.0.1"), 8443, proto::TCP),
            (ALLOW, 0)
        );
        assert_eq!(
            kernel_lookup(&net, ip("127.0.0.1"), 9050, proto::TCP),
            (ALLOW, 0)
        );
        assert_eq!(
            kernel_lookup(&net, ip("127.0.0.1"), 9101, proto::TCP),
            (DENY, rule::DEFAULT)
        );
        assert_eq!(
            kernel_lookup(&net, ip("127.0.0.1"), 8443, proto::UDP),
            (DENY, rule::DEFAULT)
        );
    }

    #[test]
    fn ipv6_rules_go_to_the_v6_table_only() {
        let net = compile(
            "version: 1
rules:
  - id: v6-net
    connect: { to: \"2001:db8::/32\", ports: [443] }
    decision: allow
  - id: v6-host
    connect: { to: \"2001:db8::1\" }
    decision: deny
  - id: v4-all
    connect: { to: 0.0.0.0/0 }
    decision: allow
",
        );
        assert_eq!(net.v6.len(), 2);
        assert_eq!(net.v4.len(), 1);
        assert_eq!(net.v4[0].2.count, 1, "IPv6 rules never cover IPv4 entries");
        let (prefix, addr, rules) = &net.v6[1];
        assert_eq!(*prefix, 128);
        assert_eq!(IpAddr::from(*addr), ip("2001:db8::1"));
        assert_eq!(rules.count, 2);
        assert_eq!(
            kernel_lookup(&net, ip("2001:db8::2"), 443, proto::TCP),
            (ALLOW, 0)
        );
        assert_eq!(
            kernel_lookup(&net, ip("2001:db8::1"), 443, proto::TCP),
            (DENY, 1)
        );
        assert_eq!(
            kernel_lookup(&net, ip("2001:db9::1"), 443, proto::TCP),
            (DENY, rule::DEFAULT)
        );
        assert_eq!(
            kernel_lookup(&net, ip("::ffff:1.2.3.4"), 443, proto::TCP),
            (ALLOW, 2)
        );
    }

    #[test]
    fn no_connect_rules_no_entries() {
        let net = compile(
            "version: 1\nrules:\n  - id: x\n    exec: { path: /bin/sh }\n    decision: allow\n",
        );
        assert_eq!(net, CompiledNet::default());
    }

    #[test]
    fn too_many_port_rules_names_the_overflowing_rule() {
        // 10 ranges on the /8 plus 7 on the /32: the /32 entry needs 17.
        let ports8: Vec<String> = (1..=10).map(|p| (p * 100).to_string()).collect();
        let ports32: Vec<String> = (1..=7).map(|p| (p * 1000).to_string()).collect();
        let yaml = format!(
            "version: 1
rules:
  - id: host
    connect: {{ to: 10.0.0.1, ports: [{}] }}
    decision: deny
  - id: net
    connect: {{ to: 10.0.0.0/8, ports: [{}] }}
    decision: allow
",
            ports32.join(", "),
            ports8.join(", ")
        );
        let policy = parse_policy("policies/big.yaml", &yaml).unwrap();
        let err = compile_network(&policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            "policies/big.yaml:6:5: rule 'net': destinations in 10.0.0.1/32 are covered by 17 port \
             rules (the port ranges of every connect rule whose CIDR contains 10.0.0.1/32); the \
             kernel holds at most 16 per CIDR"
        );

        // Exactly 16 fits.
        let yaml = yaml.replace(", 7000]", "]");
        let net = compile(&yaml);
        assert_eq!(net.v4[0].2.count, 16);
    }
}

#[cfg(test)]
pub(super) mod path_tests {
    use super::super::parse::parse_policy;
    use super::*;
    use warden_common::rule;

    /// What the kernel's LPM lookup returns for a resolved path: the key is
    /// the path and its NUL, cut to `PATH_KEY_BYTES` (then without the NUL,
    /// so only prefix entries can match); the longest entry whose bytes
    /// start the key wins.
    pub(in super::super) fn lookup<'a, V>(
        entries: &'a [PathEntry<V>],
        path: &str,
    ) -> Option<&'a V> {
        let mut key = path.as_bytes().to_vec();
        key.push(0);
        key.truncate(PATH_KEY_BYTES);
        entries
            .iter()
            .filter(|e| key.starts_with(&e.bytes))
            .max_by_key(|e| e.bytes.len())
            .map(|e| &e.value)
    }

    const ALLOW: u8 = warden_common::Decision::Allow as u8;
    const DENY: u8 = warden_common::Decision::Deny as u8;
    const HOLD: u8 = warden_common::Decision::Hold as u8;

    /// (decision, rule index) for an exec, as the kernel decides it.
    pub(in super::super) fn exec(paths: &CompiledPaths, path: &str) -> (u8, u32) {
        let r = lookup(&paths.exec, path)
            .copied()
            .unwrap_or(PathRule::DEFAULT);
        (r.decision, r.rule_idx)
    }

    /// (read, write) as (decision, rule index) each, for an open.
    pub(in super::super) fn open(paths: &CompiledPaths, path: &str) -> ((u8, u32), (u8, u32)) {
        let r = lookup(&paths.file, path).copied().unwrap_or(FileRule {
            read: PathRule::DEFAULT,
            write: PathRule::DEFAULT,
        });
        (
            (r.read.decision, r.read.rule_idx),
            (r.write.decision, r.write.rule_idx),
        )
    }

    fn compile(yaml: &str) -> CompiledPaths {
        compile_paths(&parse_policy("test.yaml", yaml).unwrap()).unwrap()
    }

    const DEF: (u8, u32) = (DENY, rule::DEFAULT);

    #[test]
    fn exec_most_specific_rule_wins() {
        let p = compile(
            "version: 1
rules:
  - id: usr-bin
    exec: { prefix: /usr/bin/ }
    decision: allow
  - id: no-touch
    exec: { path: /usr/bin/touch }
    decision: deny
  - id: no-sbin-ish
    exec: { prefix: /usr/bin/sbin/ }
    decision: deny
  - id: local
    exec: { prefix: /usr/bin/sbin/local/ }
    decision: allow
  - id: touch-again
    exec: { path: /usr/bin/touch }
    decision: allow
  - id: held
    exec: { path: /opt/held }
    decision: hold
",
        );
        assert!(p.exec_governed);
        assert!(!p.file_governed);
        assert_eq!(p.exec.len(), 5, "the repeated path is one entry");
        assert_eq!(exec(&p, "/usr/bin/ls"), (ALLOW, 0));
        // Exact beats prefix, whatever the order in the file.
        assert_eq!(exec(&p, "/usr/bin/touch"), (DENY, 1));
        // An exact rule is the whole name, NUL included.
        assert_eq!(exec(&p, "/usr/bin/touch2"), (ALLOW, 0));
        assert_eq!(exec(&p, "/usr/bin/touc"), (ALLOW, 0));
        // Longer prefix beats shorter.
        assert_eq!(exec(&p, "/usr/bin/sbin/x"), (DENY, 2));
        assert_eq!(exec(&p, "/usr/bin/sbin/local/x"), (ALLOW, 3));
        // A prefix ends with '/': /usr/bin/ does not match /usr/binx.
        assert_eq!(exec(&p, "/usr/binx"), DEF);
        assert_eq!(exec(&p, "/usr/bin"), DEF);
        assert_eq!(exec(&p, "/bin/sh"), DEF);
        // hold stays hold.
        assert_eq!(exec(&p, "/opt/held"), (HOLD, 5));
        // The kernel key: slot, then the bytes; prefix bits count both.
        let (bits, key) = p.exec[1].key(7);
        assert_eq!(key.slot, 7);
        assert_eq!(bits, 32 + 8 * ("/usr/bin/touch".len() as u32 + 1));
        assert_eq!(&key.path[..15], b"/usr/bin/touch\0");
    }

    #[test]
    fn file_access_is_decided_per_access() {
        let p = compile(
            "version: 1
rules:
  - id: srv-rw
    file: { prefix: /srv/, access: [read, write] }
    decision: allow
  - id: secret-no-read
    file: { path: /srv/secret, access: [read] }
    decision: deny
  - id: logs-write-only
    file: { prefix: /srv/logs/, access: [write] }
    decision: deny
  - id: etc-read
    file: { prefix: /etc/, access: [read] }
    decision: allow
  - id: passwd-read-again
    file: { path: /etc/passwd, access: [read] }
    decision: deny
  - id: passwd-read-first-wins
    file: { path: /etc/passwd, access: [read, write] }
    decision: allow
",
        );
        assert!(p.file_governed && !p.exec_governed);
        assert_eq!(open(&p, "/srv/a"), ((ALLOW, 0), (ALLOW, 0)));
        // Read of the secret is denied by the exact rule; its write falls
        // back to the prefix rule, which the exact rule does not mention.
        assert_eq!(open(&p, "/srv/secret"), ((DENY, 1), (ALLOW, 0)));
        // A deeper prefix that lists only write leaves read to /srv/.
        assert_eq!(open(&p, "/srv/logs/today"), ((ALLOW, 0), (DENY, 2)));
        assert_eq!(open(&p, "/etc/hosts"), ((ALLOW, 3), DEF));
        // Same path twice, same access: the first in the file decides; the
        // second rule still gives the write.
        assert_eq!(open(&p, "/etc/passwd"), ((DENY, 4), (ALLOW, 5)));
        assert_eq!(open(&p, "/srvx"), (DEF, DEF));
        assert_eq!(open(&p, "/tmp/x"), (DEF, DEF));
    }

    #[test]
    fn a_file_prefix_matches_its_directory_itself() {
        let p = compile(
            "version: 1
rules:
  - id: work
    file: { prefix: /tmp/work/, access: [read] }
    decision: allow
  - id: tmp-write
    file: { prefix: /tmp/, access: [write] }
    decision: allow
  - id: secret-dir
    file: { path: /tmp/work/secret, access: [read] }
    decision: deny
  - id: secret-inside
    file: { prefix: /tmp/work/secret/, access: [read] }
    decision: allow
  - id: root
    file: { prefix: /, access: [read] }
    decision: deny
",
        );
        // The directory of a prefix, opened to list it, is the prefix's.
        assert_eq!(open(&p, "/tmp/work"), ((ALLOW, 0), (ALLOW, 1)));
        assert_eq!(open(&p, "/tmp"), ((DENY, 4), (ALLOW, 1)));
        // An exact rule for the directory beats the prefix's implied one.
        assert_eq!(open(&p, "/tmp/work/secret"), ((DENY, 2), (ALLOW, 1)));
        assert_eq!(open(&p, "/tmp/work/secret/a"), ((ALLOW, 3), (ALLOW, 1)));
        // Still byte-wise: /tmp/workx is not /tmp/work.
        assert_eq!(open(&p, "/tmp/workx"), ((DENY, 4), (ALLOW, 1)));
        assert_eq!(open(&p, "/"), ((DENY, 4), DEF));
        // Exec rules name files: a directory is never executed.
        let e = compile(
            "version: 1
rules:
  - id: bin
    exec: { prefix: /usr/bin/ }
    decision: allow
",
        );
        assert_eq!(exec(&e, "/usr/bin"), DEF);
    }

    #[test]
    fn long_paths_match_prefix_rules_only() {
        let dir = format!("/data/{}/", "d".repeat(200));
        let p = compile(&format!(
            "version: 1
rules:
  - id: data
    file: {{ prefix: {dir}, access: [read] }}
    decision: allow
"
        ));
        let long = format!("{dir}{}", "f".repeat(100));
        assert!(long.len() > PATH_KEY_BYTES);
        assert_eq!(open(&p, &long).0, (ALLOW, 0));
    }

    #[test]
    fn example_policies_decide_as_documented() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let load = |name: &str| {
            let policy = super::super::parse::load_policy_file(&dir.join(name)).unwrap();
            (compile_paths(&policy).unwrap(), policy.rule_ids())
        };
        let name = |ids: &[String], (d, i): (u8, u32)| {
            let id = ids.get(i as usize).map_or("default", String::as_str);
            format!("{} {id}", if d == ALLOW { "allow" } else { "deny" })
        };
        let (p, ids) = load("payments-bot.yaml");
        assert_eq!(
            name(&ids, open(&p, "/etc/payments/signing.key").0),
            "deny no-signing-key"
        );
        assert_eq!(
            name(&ids, open(&p, "/etc/payments/app.conf").0),
            "allow read-config"
        );
        assert_eq!(
            name(&ids, open(&p, "/etc/payments/app.conf").1),
            "deny default"
        );
        assert_eq!(
            name(&ids, open(&p, "/var/lib/payments-bot/db").1),
            "allow state"
        );
        assert_eq!(name(&ids, exec(&p, "/usr/bin/python3")), "allow run-python");
        assert_eq!(name(&ids, exec(&p, "/usr/bin/python3.11")), "deny default");
        let (p, ids) = load("research-agent.yaml");
        assert_eq!(
            name(&ids, exec(&p, "/opt/research-agent/bin/fetch")),
            "allow run-agent-tools"
        );
        assert_eq!(
            name(&ids, open(&p, "/srv/research/reports/r.md").1),
            "allow write-reports"
        );
        assert_eq!(
            name(&ids, open(&p, "/srv/research/corpus/a.txt").1),
            "deny default"
        );
    }

    #[test]
    fn too_many_paths_names_the_first_rule_that_does_not_fit() {
        let max = policy_share(MAX_PATH_ENTRIES);
        let mut yaml = String::from("version: 1\nrules:\n");
        for i in 0..=max {
            yaml.push_str(&format!(
                "  - id: r{i}\n    exec: {{ path: /opt/bin/tool{i} }}\n    decision: allow\n"
            ));
        }
        let policy = parse_policy("policies/huge.yaml", &yaml).unwrap();
        let err = compile_paths(&policy).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "policies/huge.yaml:{}:5: rule 'r{max}': the policy's exec rules need {} distinct \
                 paths in the kernel; one policy may use at most {max} (its agent's share of the \
                 map: 1/16, so 8 agents with full policies fit, mid-reload included)",
                3 + 3 * max,
                max + 1
            )
        );
    }

    #[test]
    fn no_path_rules_no_entries() {
        let p = compile(
            "version: 1\nrules:\n  - id: x\n    connect: { to: 127.0.0.1 }\n    decision: allow\n",
        );
        assert_eq!(p, CompiledPaths::default());
    }
}
