//! `cgroup_skb/egress`: an agent's `bytes: egress` budgets. Every packet a
//! socket of the agent sends (loopback included) counts its `skb->len`
//! against each such budget in the current window (`BUDGET_USE`, the word
//! the other budgets use, moved by compare-and-swap: exact across CPUs);
//! a packet that would take a budget past its limit is dropped and counted
//! in `EGRESS_DROPS` (per CPU), which the daemon sweeps into evidence.
//!
//! Attached only to the cgroups of agents whose policy has such a budget,
//! so the agent lookup below is the first thing and the only one a packet
//! of another agent pays. Internal errors fail closed for an agent's
//! packet (dropped: the budget's limit is never exceeded), open for a
//! packet of no agent (a socket created before its process joined the
//! agent is not the agent's).

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_ktime_get_boot_ns, bpf_ktime_get_ns,
        generated::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use warden_common::{
    agent_flags, budget_class, limits, AgentInfo, BudgetUseKey, EgressDrops, MAX_BUDGETS,
};

use crate::{
    judge::budget::take_n,
    maps::{AGENTS, AGENT_LEVELS, BUDGETS, EGRESS_DROPS},
};

/// Return values of cgroup skb programs.
const PASS: i32 = 1;
const DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn warden_egress(ctx: SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    let Some(agent) = skb_agent(skb) else {
        return PASS;
    };
    over_budget(&agent, ctx.len())
}

/// The agent of the packet's socket: its cgroup's entry, else the nearest
/// ancestor's at a level that holds agents (as `agent::current_agent`, but
/// from the socket: a packet may leave from softirq, e.g. a retransmit).
#[inline(always)]
fn skb_agent(skb: *mut __sk_buff) -> Option<AgentInfo> {
    // SAFETY: a helper on the program's own context.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    // SAFETY: AGENTS values are plain data replaced whole by the daemon.
    if let Some(agent) = unsafe { AGENTS.get(&cgroup_id) } {
        return Some(*agent);
    }
    let mut levels = AGENT_LEVELS.get(0).copied().unwrap_or(0);
    let mut level = limits::MAX_AGENT_LEVEL;
    while levels != 0 && level > 0 {
        if levels & (1 << level) != 0 {
            levels &= !(1 << level);
            // SAFETY: as above; 0 when the cgroup is shallower.
            let ancestor = unsafe { bpf_skb_ancestor_cgroup_id(skb, level as i32) };
            if ancestor != 0 && ancestor != cgroup_id {
                // SAFETY: as above.
                if let Some(agent) = unsafe { AGENTS.get(&ancestor) } {
                    return Some(*agent);
                }
            }
        }
        level -= 1;
    }
    None
}

/// Counts `len` bytes against each egress budget of the agent; the verdict.
#[inline(always)]
fn over_budget(agent: &AgentInfo, len: u32) -> i32 {
    // SAFETY: plain data replaced whole by the daemon.
    let Some(set) = (unsafe { BUDGETS.get(&agent.slot) }) else {
        return PASS;
    };
    if set.classes & budget_class::EGRESS_BYTES == 0 {
        return PASS;
    }
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    for i in 0..MAX_BUDGETS {
        if i as u32 >= set.count {
            break;
        }
        let b = &set.budgets[i];
        if b.classes & budget_class::EGRESS_BYTES == 0 {
            continue;
        }
        if !take_n(agent.agent_id, i as u32, b, now, u64::from(len)) {
            count_drop(agent.agent_id, i as u32, len, now / b.per_ns.max(1));
            // `mode: record`: what would have been dropped is counted
            // (the daemon records it as `would-deny`) and sent.
            if agent.flags & agent_flags::RECORD != 0 {
                return PASS;
            }
            return DROP;
        }
    }
    PASS
}

#[inline(always)]
fn count_drop(agent_id: u32, index: u32, len: u32, window: u64) {
    let key = BudgetUseKey { agent_id, index };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    match EGRESS_DROPS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value; per-CPU, so plain adds.
        Some(d) => unsafe {
            (*d).packets += 1;
            (*d).bytes += u64::from(len);
            if (*d).first_ns == 0 {
                (*d).first_ns = now;
            }
            (*d).last_ns = now;
            (*d).window = window;
        },
        None => {
            // Full map: the drop still happens, unrecorded until the
            // daemon sweeps room (sized for every agent's budgets).
            let _ = EGRESS_DROPS.insert(
                &key,
                &EgressDrops {
                    packets: 1,
                    bytes: u64::from(len),
                    first_ns: now,
                    last_ns: now,
                    window,
                },
                0,
            );
        }
    }
}
