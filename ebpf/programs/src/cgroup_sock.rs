//! The cgroup sock_addr hooks: connect and sendmsg, IPv4 and IPv6, decided
//! by the network judge (`judge::net`), denied by failing the syscall,
//! held by failing it with ERESTARTNOINTR until `sys_exit` stops the thread.
//!
//! These programs are attached to agent cgroups only (the daemon attaches them
//! when it registers an agent), so every invocation is an agent's action.
//! Internal errors therefore fail closed: the action is denied.

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_set_retval},
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use warden_common::{
    agent_counter, agent_flags, budget_class, counter, held_state, rule, AgentInfo, Decision,
    EventKind, Held, HoldKey, Method, NetEvent, SocketEvent, ERESTARTNOINTR,
};

use crate::{
    agent::current_agent,
    counters::{count, count_agent, count_loss},
    events::{
        counted_repeat, denial_key, event_header, first_recorded, park, submit_flags, summary_key,
        unrecorded, waiting, wake_flags, within_share,
    },
    judge::{
        budget,
        net::{match_rules, Dest, AF_INET, AF_INET6},
        sock,
    },
    maps::{EVENTS, GRANTS, HELD},
};

/// Return values of cgroup sock_addr programs.
const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn warden_connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, EventKind::Connect4)
}

#[cgroup_sock_addr(connect6)]
pub fn warden_connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, EventKind::Connect6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn warden_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, EventKind::Sendmsg4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn warden_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, EventKind::Sendmsg6)
}

/// Reads one context field with a single load at its fixed offset. The
/// verifier only accepts context loads at constant offsets from the context
/// pointer itself; a volatile read stops LLVM from merging the IPv4 and IPv6
/// field loads behind pointer arithmetic ("dereference of modified ctx ptr").
macro_rules! ctx_field {
    ($sa:expr, $($field:tt)+) => {
        // SAFETY: the kernel's bpf_sock_addr is valid for the program's run.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*$sa).$($field)+)) }
    };
}

/// Socket creation: raw IP sockets send what the connect and sendmsg hooks
/// never see, so they are decided here (deny unless a rule allows the
/// class) and recorded. Every other inet socket passes unrecorded: its
/// connects and sends are decided by the hooks above. (The kernel runs
/// this hook from `inet_create`/`inet6_create` only: packet sockets never
/// reach it; `warden run` refuses them by seccomp.)
#[cgroup_sock(sock_create)]
pub fn warden_sock_create(ctx: SockContext) -> i32 {
    let sk: *const bpf_sock = ctx.sock;
    let family: u32 = ctx_field!(sk, family);
    let sock_type: u32 = ctx_field!(sk, type_);
    let Some(class) = sock::classify(family, sock_type) else {
        return ALLOW;
    };
    let protocol: u32 = ctx_field!(sk, protocol);
    // Below an agent's cgroup too, as in `decide`.
    let (cgroup_id, agent) = current_agent();
    let (decision, rule_idx, agent) = match agent {
        None => (
            Decision::Deny,
            rule::UNKNOWN_CGROUP,
            AgentInfo {
                agent_id: 0,
                policy_gen: 0,
                slot: 0,
                flags: 0,
            },
        ),
        Some(a) if a.flags & agent_flags::REVOKED != 0 => (Decision::Deny, rule::REVOKED, a),
        Some(a) => {
            let (d, r) = sock::decide(a.slot, class);
            (d, r, a)
        }
    };
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    let Some(mut entry) = EVENTS.reserve::<SocketEvent>(0) else {
        if unrecorded(&agent, EventKind::Socket, decision == Decision::Allow) {
            count(counter::ALLOWED);
            return ALLOW;
        }
        count(counter::DENIED);
        return DENY;
    };
    let method = if decision == Decision::Allow {
        Method::Allow
    } else {
        Method::CgroupDeny
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
        decision == Decision::Allow,
        core::mem::size_of::<SocketEvent>() as u64,
    ));
    count(counter::EVENTS);
    if decision == Decision::Allow {
        count(counter::ALLOWED);
        ALLOW
    } else {
        count(counter::DENIED);
        DENY
    }
}

impl Dest {
    /// Inlined into each program, so `kind` is a constant there and only the
    /// fields valid for that attach type are read (the verifier rejects
    /// user_ip6 in a connect4 program and user_ip4 in a connect6 one).
    #[inline(always)]
    fn read(sa: *const bpf_sock_addr, kind: EventKind) -> Self {
        // user_port holds the port in network byte order in its low 16 bits.
        let port = u16::from_be(ctx_field!(sa, user_port) as u16);
        let proto = ctx_field!(sa, protocol) as u8;
        let mut addr = [0u8; 16];
        match kind {
            EventKind::Connect4 | EventKind::Sendmsg4 => {
                let ip4: u32 = ctx_field!(sa, user_ip4);
                addr[..4].copy_from_slice(&ip4.to_ne_bytes());
                Dest {
                    family: AF_INET,
                    port,
                    proto,
                    addr,
                }
            }
            // Connect6 and Sendmsg6: the network programs are never given
            // another kind.
            _ => {
                // One 4-byte load per word: the verifier rejects wider
                // context reads of user_ip6.
                let w: [u32; 4] = [
                    ctx_field!(sa, user_ip6[0]),
                    ctx_field!(sa, user_ip6[1]),
                    ctx_field!(sa, user_ip6[2]),
                    ctx_field!(sa, user_ip6[3]),
                ];
                addr[0..4].copy_from_slice(&w[0].to_ne_bytes());
                addr[4..8].copy_from_slice(&w[1].to_ne_bytes());
                addr[8..12].copy_from_slice(&w[2].to_ne_bytes());
                addr[12..16].copy_from_slice(&w[3].to_ne_bytes());
                Dest {
                    family: AF_INET6,
                    port,
                    proto,
                    addr,
                }
            }
        }
    }
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, kind: EventKind) -> i32 {
    let mut dest = Dest::read(ctx.sock_addr, kind);
    dest.unwildcard();
    // The caller's cgroup, or one below an agent's (the attachment is
    // inherited there): decided by that agent (`agent::current_agent`).
    let (cgroup_id, agent) = current_agent();
    let (decision, rule_idx, agent) = match agent {
        // Attached to an agent cgroup but no agent found above the caller
        // (an agent at a level `AGENT_LEVELS` does not mark yet). Fail
        // closed.
        None => (
            Decision::Deny,
            rule::UNKNOWN_CGROUP,
            AgentInfo {
                agent_id: 0,
                policy_gen: 0,
                slot: 0,
                flags: 0,
            },
        ),
        Some(a) if a.flags & agent_flags::REVOKED != 0 => (Decision::Deny, rule::REVOKED, a),
        // DNS of an agent with `host` rules: to its proxy, which decides
        // and records the name (`dns.rs`).
        Some(a)
            if a.flags & agent_flags::DNS != 0 && crate::dns::redirect(ctx, kind, &a, &dest) =>
        {
            count(counter::ALLOWED);
            return ALLOW;
        }
        Some(a) => {
            let (d, r) = match_rules(&dest, a.slot);
            if a.flags & agent_flags::SHADOW != 0 {
                // The candidate beside it, recorded apart; `d` stands.
                crate::shadow::evaluate(&a, kind, &dest, d, r, cgroup_id);
            }
            (d, r, a)
        }
    };
    // An allowed connect counts against the agent's budgets; over one, the
    // budget decides (sendmsg is not a connect: not counted).
    let (decision, rule_idx, kill) = match kind {
        EventKind::Connect4 | EventKind::Connect6 => {
            budget::judge(&agent, budget_class::CONNECT, decision, rule_idx)
        }
        _ => (decision, rule_idx, false),
    };

    // No action without a record: reserve the event before allowing. If the
    // ring buffer is full the action is refused and the drop is counted.
    let record = crate::judge::recorded(agent.flags, decision, rule_idx);
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    // A repeat of an allowed connect already recorded is counted, not copied;
    // so is a repeat of a denial (refused here, nothing killed), a budget's
    // included. A `kill` budget's refusal is always recorded.
    let access = u32::from(dest.port) | u32::from(dest.proto) << 16;
    let repeat = match decision {
        _ if kill => None,
        Decision::Deny => denial_key(&agent, decision, kind, rule_idx, access, dest.addr),
        _ => summary_key(&agent, decision, kind, rule_idx, access, 0, 0, dest.addr),
    };
    if counted_repeat(&repeat) {
        if decision == Decision::Deny {
            count(counter::DENIED);
            return DENY;
        }
        count(counter::ALLOWED);
        return ALLOW;
    }
    let Some(mut entry) = EVENTS.reserve::<NetEvent>(0) else {
        // An allowed action goes ahead with its record parked for the
        // daemon (`park`). Not stopped: a cgroup hook cannot signal, and
        // the `sys_exit` program that could is not attached for network-
        // only agents; a second action of the same thread before the drain
        // finds its slot taken and `on_evidence_loss` decides.
        if decision == Decision::Allow
            && park(core::mem::size_of::<NetEvent>() as u32, false, |ev| {
                // SAFETY: `ev` is the scratch record, aligned and big enough.
                unsafe {
                    ev.cast::<NetEvent>().write(NetEvent {
                        header: event_header(
                            kind,
                            Decision::Allow,
                            Method::Allow,
                            rule_idx,
                            agent.agent_id,
                            agent.policy_gen,
                            cgroup_id,
                        ),
                        family: dest.family,
                        port: dest.port,
                        proto: dest.proto,
                        _pad: [0; 3],
                        addr: dest.addr,
                    })
                }
            })
        {
            count(counter::ALLOWED);
            return ALLOW;
        }
        if unrecorded(&agent, kind, decision == Decision::Allow || record) {
            count(counter::ALLOWED);
            return ALLOW;
        }
        count(counter::DENIED);
        return DENY;
    };
    first_recorded(&repeat);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let (decision, method) = match decision {
        _ if record => (decision, Method::Recorded),
        Decision::Allow => (Decision::Allow, Method::Allow),
        Decision::Deny if kill => kill_at_exit(tid),
        Decision::Deny => (Decision::Deny, Method::CgroupDeny),
        Decision::Hold => hold(cgroup_id, tid, &dest),
    };
    entry.write(NetEvent {
        header: event_header(
            kind,
            decision,
            method,
            rule_idx,
            agent.agent_id,
            agent.policy_gen,
            cgroup_id,
        ),
        family: dest.family,
        port: dest.port,
        proto: dest.proto,
        _pad: [0; 3],
        addr: dest.addr,
    });
    // Allowed decisions do not wake the daemon (see `submit_flags`); holds,
    // their outcomes and denials do, so that approval records and the held
    // action's final status appear at once.
    let size = core::mem::size_of::<NetEvent>() as u64;
    let flags = if matches!(method, Method::Allow | Method::Recorded) {
        let waiting = waiting();
        // Congested (the same compare `submit_flags` makes): an agent over
        // its share of records is refused here, its record discarded, and
        // counted, so that it cannot fill the ring buffer for the others.
        if waiting >= warden_common::limits::EVENTS_WAKEUP_BYTES && !within_share(agent.agent_id) {
            entry.discard(0);
            count_loss(agent.agent_id, kind as u32, warden_common::loss::THROTTLED);
            count(counter::DENIED);
            return DENY;
        }
        wake_flags(waiting, size)
    } else {
        0
    };
    entry.submit(flags);
    count(counter::EVENTS);

    match method {
        Method::Allow | Method::Approved | Method::Recorded => {
            count(counter::ALLOWED);
            ALLOW
        }
        Method::Held => {
            // Fail the syscall with "restart me"; sys_exit stops the thread
            // before it returns to user space, and the syscall restarts (and
            // this hook decides again) when the thread is continued.
            // SAFETY: a plain helper call.
            unsafe { bpf_set_retval(ERESTARTNOINTR) };
            count(counter::HELD);
            DENY
        }
        Method::CgroupDeny
        | Method::Rejected
        | Method::Kill
        | Method::LsmDeny
        | Method::FmodRetDeny
        | Method::Shadow => {
            count(counter::DENIED);
            DENY
        }
    }
}

/// A `then: kill` budget refused the connect: the syscall fails here and
/// the process is killed at its exit (`fallback::hold`, `hold_stop`), as a
/// cgroup hook cannot signal. If the mark cannot be made, the connect is
/// still refused.
#[inline(always)]
fn kill_at_exit(tid: u32) -> (Decision, Method) {
    let mark = Held {
        state: held_state::KILL_AT_EXIT,
        _pad: 0,
        // SAFETY: a plain helper call.
        start_time: unsafe { bpf_ktime_get_ns() },
    };
    match HELD.insert(&tid, &mark, 0) {
        Ok(()) => (Decision::Deny, Method::Kill),
        Err(_) => (Decision::Deny, Method::CgroupDeny),
    }
}

/// A hold rule matched. If a human has decided on exactly this action
/// (thread and destination), apply the decision once; otherwise hold.
#[inline(always)]
fn hold(cgroup_id: u64, tid: u32, dest: &Dest) -> (Decision, Method) {
    let key = HoldKey {
        cgroup_id,
        tid,
        family: dest.family,
        port: dest.port,
        proto: dest.proto,
        _pad: [0; 7],
        addr: dest.addr,
    };
    // SAFETY: plain data; a concurrent update yields the old or new value.
    match unsafe { GRANTS.get(&key) }.copied() {
        Some(granted) => {
            // Consume it: a grant opens one action, once.
            let _ = GRANTS.remove(&key);
            if granted == Decision::Allow as u32 {
                (Decision::Allow, Method::Approved)
            } else {
                (Decision::Deny, Method::Rejected)
            }
        }
        None => match HELD.insert(
            &tid,
            &Held {
                state: held_state::STOP_AT_EXIT,
                _pad: 0,
                // SAFETY: a plain helper call.
                start_time: unsafe { bpf_ktime_get_ns() },
            },
            0,
        ) {
            Ok(()) => (Decision::Hold, Method::Held),
            // Cannot arrange the stop: refuse rather than let it through.
            Err(_) => (Decision::Deny, Method::CgroupDeny),
        },
    }
}
