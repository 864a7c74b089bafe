//! Packet sockets (`AF_PACKET`; `SOCK_PACKET`, which the kernel turns into
//! `AF_PACKET` before this hook) decided at creation for every agent,
//! adopted ones included: BPF LSM `socket_create`, or `fmod_ret` on
//! `security_socket_create` where BPF LSM is built but not active. The
//! cgroup `sock_create` program (`cgroup_sock.rs`) never sees them (the
//! kernel runs it for inet sockets only); raw inet sockets stay decided
//! there, so each socket has one decision.
//!
//! The socket judge decides them by the agent's `socket: { kind: packet }`
//! rule (none: `default-deny`); a revoked agent is refused with `revoked`;
//! an agent in record mode is recorded `would-deny` and goes ahead. A refusal
//! fails `socket()` with EPERM before the socket exists, recorded like the
//! cgroup hook's (`EventKind::Socket`, class `packet`).
//!
//! Global: the agent lookup comes after the family test, so every other
//! socket on the machine costs one comparison; sockets the kernel makes
//! for itself (`kern`) are left alone.

use core::ffi::c_void;

use aya_ebpf::{
    macros::lsm,
    programs::{FExitContext, LsmContext},
};
use warden_common::{
    agent_counter, agent_flags, counter, rule, sock_class, Decision, EventKind, Method,
    SocketEvent, EPERM,
};

use crate::{
    agent::current_agent,
    counters::{count, count_agent},
    events::{event_header, submit_flags, unrecorded},
    judge::sock,
    maps::EVENTS,
};

const ALLOW: i32 = 0;
const DENY: i32 = -EPERM;
/// `AF_PACKET` (include/linux/socket.h).
const AF_PACKET: u32 = 17;

/// The decision on `socket(family, sock_type, protocol)`; `kern` is set for
/// the kernel's own sockets, `previous` and `deny` as in `lsm.rs`.
#[inline(always)]
fn decide(
    family: u32,
    sock_type: u32,
    protocol: u32,
    kern: u32,
    previous: i32,
    deny: Method,
) -> i32 {
    if previous != 0 {
        return previous;
    }
    if family != AF_PACKET || kern != 0 {
        return ALLOW;
    }
    let (cgroup_id, Some(agent)) = current_agent() else {
        return ALLOW;
    };
    let class = sock_class::PACKET;
    let (judged, rule_idx) = if agent.flags & agent_flags::REVOKED != 0 {
        (Decision::Deny, rule::REVOKED)
    } else {
        sock::decide(agent.slot, class)
    };
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    let (decision, method, ret) = if crate::judge::recorded(agent.flags, judged, rule_idx) {
        (judged, Method::Recorded, ALLOW)
    } else if judged == Decision::Allow {
        (Decision::Allow, Method::Allow, ALLOW)
    } else {
        (Decision::Deny, deny, DENY)
    };
    let Some(mut entry) = EVENTS.reserve::<SocketEvent>(0) else {
        if unrecorded(&agent, EventKind::Socket, ret == ALLOW) {
            count(counter::ALLOWED);
            return ALLOW;
        }
        count(counter::DENIED);
        return DENY;
    };
    entry.write(SocketEvent {
        header: event_header(
            EventKind::Socket,
            decision,
            method,
            rule_idx,
            agent.agent_id,
            agent.policy_gen,
            cgroup_id,
        ),
        family,
        sock_type,
        protocol,
        class,
    });
    entry.submit(submit_flags(
        ret == ALLOW,
        core::mem::size_of::<SocketEvent>() as u64,
    ));
    count(counter::EVENTS);
    count(if ret == ALLOW {
        counter::ALLOWED
    } else {
        counter::DENIED
    });
    ret
}

// LSM_HOOK(int, 0, socket_create, int family, int type, int protocol, int kern)
#[lsm(hook = "socket_create")]
pub fn warden_lsm_socket(ctx: LsmContext) -> i32 {
    decide(
        ctx.arg::<u64>(0) as u32,
        ctx.arg::<u64>(1) as u32,
        ctx.arg::<u64>(2) as u32,
        ctx.arg::<u64>(3) as u32,
        ctx.arg::<u64>(4) as i32,
        Method::LsmDeny,
    )
}

/// `int security_socket_create(int family, int type, int protocol, int
/// kern)`; `ret` follows.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_socket_create")]
pub fn warden_fmodret_socket(ctx: *mut c_void) -> i32 {
    let ctx = FExitContext::new(ctx);
    decide(
        ctx.arg::<u64>(0) as u32,
        ctx.arg::<u64>(1) as u32,
        ctx.arg::<u64>(2) as u32,
        ctx.arg::<u64>(3) as u32,
        ctx.arg::<u64>(4) as i32,
        Method::FmodRetDeny,
    )
}
