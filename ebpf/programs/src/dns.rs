//! DNS redirection for agents with `host` rules: their queries (port 53,
//! UDP and TCP, any address) are sent to their proxy in the daemon, which
//! decides the name; the resolver asked is kept per socket and shown as
//! the source of the replies (`recvmsg4/6`) and as the socket's peer
//! (`getpeername4/6`, for TCP and connected UDP), so the agent sees an
//! ordinary answer from the resolver it asked.

use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use warden_common::{AgentInfo, DnsOrig, EventKind};

use crate::{
    judge::net::{Dest, AF_INET},
    maps::{DNS_ORIG, DNS_PROXY},
};

/// The port whose traffic is redirected.
const DNS_PORT: u16 = 53;
const LOOPBACK4: [u8; 4] = [127, 0, 0, 1];

/// Writes one context field with a single store at its fixed offset (the
/// verifier only accepts constant-offset context stores).
macro_rules! set_field {
    ($sa:expr, $v:expr, $($field:tt)+) => {
        // SAFETY: the kernel's bpf_sock_addr is valid for the program's
        // run, and these fields are writable in sock_addr programs.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*$sa).$($field)+), $v) }
    };
}

/// For a DNS-redirected agent's query, rewrites the destination to its
/// proxy and keeps the original one under the socket's cookie. Returns
/// whether it did (the caller then lets the action through: the proxy
/// decides and records the name). No proxy entry (no daemon serving the
/// agent): not redirected, the CIDR rules decide.
#[inline(always)]
pub fn redirect(ctx: &SockAddrContext, kind: EventKind, agent: &AgentInfo, dest: &Dest) -> bool {
    if dest.port != DNS_PORT {
        return false;
    }
    // SAFETY: plain data; a concurrent update yields the old or new value.
    let Some(proxy) = (unsafe { DNS_PROXY.get(&agent.agent_id) }).copied() else {
        return false;
    };
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: a plain helper call on the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    let orig = DnsOrig {
        family: dest.family,
        port: dest.port,
        addr: dest.addr,
    };
    if DNS_ORIG.insert(&cookie, &orig, 0).is_err() {
        return false;
    }
    match kind {
        EventKind::Connect4 | EventKind::Sendmsg4 => {
            set_field!(sa, u32::from_ne_bytes(LOOPBACK4), user_ip4);
            set_field!(sa, u32::from(proxy.port4.to_be()), user_port);
        }
        _ => {
            // An IPv4-mapped destination stays IPv4 (the socket may be
            // dual-stack only): ::ffff:127.0.0.1.
            let (w2, w3, port) = if dest.v4_mapped().is_some() {
                (
                    u32::from_ne_bytes([0, 0, 0xff, 0xff]),
                    u32::from_ne_bytes(LOOPBACK4),
                    proxy.port4,
                )
            } else {
                (0, u32::from_ne_bytes([0, 0, 0, 1]), proxy.port6)
            };
            set_field!(sa, 0, user_ip6[0]);
            set_field!(sa, 0, user_ip6[1]);
            set_field!(sa, w2, user_ip6[2]);
            set_field!(sa, w3, user_ip6[3]);
            set_field!(sa, u32::from(port.to_be()), user_port);
        }
    }
    true
}

#[cgroup_sock_addr(recvmsg4)]
pub fn warden_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore(&ctx, true);
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn warden_recvmsg6(ctx: SockAddrContext) -> i32 {
    restore(&ctx, false);
    1
}

#[cgroup_sock_addr(getpeername4)]
pub fn warden_getpeername4(ctx: SockAddrContext) -> i32 {
    restore(&ctx, true);
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn warden_getpeername6(ctx: SockAddrContext) -> i32 {
    restore(&ctx, false);
    1
}

/// A datagram received by a redirected DNS socket, or its peer asked
/// for: the address becomes the resolver the socket asked. Sockets never redirected have no entry and
/// cost one lookup.
#[inline(always)]
fn restore(ctx: &SockAddrContext, v4: bool) {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: a plain helper call on the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    // SAFETY: plain data; a concurrent update yields the old or new value.
    let Some(orig) = (unsafe { DNS_ORIG.get(&cookie) }).copied() else {
        return;
    };
    let a = orig.addr;
    if v4 {
        if orig.family != AF_INET {
            return;
        }
        set_field!(sa, u32::from_ne_bytes([a[0], a[1], a[2], a[3]]), user_ip4);
    } else {
        if orig.family == AF_INET {
            return;
        }
        set_field!(
            sa,
            u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
            user_ip6[0]
        );
        set_field!(
            sa,
            u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
            user_ip6[1]
        );
        set_field!(
            sa,
            u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
            user_ip6[2]
        );
        set_field!(
            sa,
            u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
            user_ip6[3]
        );
    }
    set_field!(sa, u32::from(orig.port.to_be()), user_port);
}
