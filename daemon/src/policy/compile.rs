//! Policy to kernel network rule tables.
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

use std::cmp::Reverse;
use std::collections::HashSet;
use std::net::IpAddr;

use warden_common::limits::MAX_PORT_RULES;
use warden_common::{NetRules, PortRule};

use super::model::{Cidr, Decision, Policy, Protocol, Selector};
use super::parse::{rule_error, PolicyError, PolicyErrorKind};

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

/// Builds the LPM entries for a policy's connect rules (see the module doc
/// for the semantics). Fails if any entry needs more than
/// `limits::MAX_PORT_RULES` port rules, naming the rule that did not fit.
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

    let mut out = CompiledNet::default();
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
