//! The network judge: a destination looked up in the agent's CIDR tries
//! (longest prefix), then its port rules (first match).

use aya_ebpf::maps::lpm_trie::Key;
use warden_common::{limits, rule, Decision, Net4Key, Net6Key, NetRules, SLOT_PREFIX_BITS};

use crate::maps::{NET4_RULES, NET6_RULES};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// The destination of the action, as the kernel was given it.
pub struct Dest {
    pub family: u16,
    pub port: u16,
    pub proto: u8,
    pub addr: [u8; 16],
}

impl Dest {
    /// `::ffff:a.b.c.d` is an IPv4 destination and follows the IPv4 rules.
    pub fn v4_mapped(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
        (self.family == AF_INET6 && mapped).then(|| [a[12], a[13], a[14], a[15]])
    }

    /// Replaces an unspecified destination with the address the kernel will
    /// actually use. The sock_addr hooks run before the protocol's connect:
    /// for `0.0.0.0` (and `::ffff:0.0.0.0`) IPv4 routing picks 127.0.0.1
    /// (`ip_route_output_key_hash_rcu`: no daddr means loopback), and for
    /// `::` the IPv6 connect substitutes `::1` (`tcp_v6_connect`,
    /// `ip6_datagram_connect`). Deciding (and recording) the wildcard would
    /// let `allow 0.0.0.0/0` reach a loopback port a `deny 127.0.0.0/8`
    /// rule names.
    #[inline(always)]
    pub fn unwildcard(&mut self) {
        let a = &mut self.addr;
        if self.family == AF_INET {
            if a[..4].iter().all(|b| *b == 0) {
                a[..4].copy_from_slice(&[127, 0, 0, 1]);
            }
        } else if a[..10].iter().all(|b| *b == 0) {
            let mapped = a[10] == 0xff && a[11] == 0xff;
            let rest_zero = a[12..].iter().all(|b| *b == 0);
            if mapped && rest_zero {
                a[12..].copy_from_slice(&[127, 0, 0, 1]);
            } else if a[10] == 0 && a[11] == 0 && rest_zero {
                a[15] = 1;
            }
        }
    }
}

/// Looks the destination up in the agent's rules: longest CIDR match, then
/// the first port rule that matches. No match is the default: deny.
pub fn match_rules(dest: &Dest, slot: u32) -> (Decision, u32) {
    let rules: Option<&NetRules> = match dest.v4_mapped() {
        Some(v4) => NET4_RULES.get(Key::new(SLOT_PREFIX_BITS + 32, Net4Key { slot, addr: v4 })),
        None if dest.family == AF_INET => {
            let addr = [dest.addr[0], dest.addr[1], dest.addr[2], dest.addr[3]];
            NET4_RULES.get(Key::new(SLOT_PREFIX_BITS + 32, Net4Key { slot, addr }))
        }
        None => NET6_RULES.get(Key::new(
            SLOT_PREFIX_BITS + 128,
            Net6Key {
                slot,
                addr: dest.addr,
            },
        )),
    };
    let Some(rules) = rules else {
        return (Decision::Deny, rule::DEFAULT);
    };
    for i in 0..limits::MAX_PORT_RULES {
        if i as u32 >= rules.count {
            break;
        }
        let r = &rules.rules[i];
        let proto_ok = r.proto == 0 || r.proto == dest.proto;
        if proto_ok && dest.port >= r.port_lo && dest.port <= r.port_hi {
            let decision = match r.decision {
                1 => Decision::Allow,
                3 => Decision::Hold,
                _ => Decision::Deny,
            };
            return (decision, r.rule_idx);
        }
    }
    (Decision::Deny, rule::DEFAULT)
}
