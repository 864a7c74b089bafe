//! The socket judge: which sockets are decided at creation (those whose
//! traffic the connect rules never see), and what the agent's policy says
//! about them.

use warden_common::{rule, sock_class, Decision, SockRule};

use crate::maps::SOCK_RULES;

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;
pub const SOCK_RAW: u32 = 3;

/// The `sock_class` of a new socket, or `None` for a socket whose sends
/// the connect rules decide (TCP, UDP, ICMP "ping" sockets). The hook runs
/// for `AF_INET` and `AF_INET6` only.
#[inline(always)]
pub fn classify(family: u32, sock_type: u32) -> Option<u32> {
    match family {
        AF_INET | AF_INET6 if sock_type == SOCK_RAW => Some(sock_class::RAW),
        _ => None,
    }
}

/// The agent's rule for `class`; no rule is the default: deny.
#[inline(always)]
pub fn decide(slot: u32, class: u32) -> (Decision, u32) {
    // SAFETY: plain data replaced whole by the daemon.
    let Some(rules) = (unsafe { SOCK_RULES.get(&slot) }) else {
        return (Decision::Deny, rule::DEFAULT);
    };
    let r: &SockRule = if class == sock_class::PACKET {
        &rules.packet
    } else {
        &rules.raw
    };
    if r.decision == Decision::Allow as u32 {
        (Decision::Allow, r.rule_idx)
    } else if r.decision == Decision::Deny as u32 {
        (Decision::Deny, r.rule_idx)
    } else {
        (Decision::Deny, rule::DEFAULT)
    }
}
