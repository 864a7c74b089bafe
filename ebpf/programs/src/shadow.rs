//! Live shadow evaluation (`shadow:` in a policy): the network hooks look
//! an agent's destination up a second time, under its candidate's slot,
//! and record where the candidate would have decided otherwise. Nothing
//! here changes the enforced decision: the caller has made it and carries
//! it out whatever happens below (a congested or full ring buffer loses
//! the shadow record only).
//!
//! Differences are first-then-count, per agent, like allowed repeats: the
//! first of a (candidate rule, decisions, destination) key is an
//! individual record, its repeats a count in `SUMMARIES` the daemon sweeps.

use warden_common::{
    agent_flags, counter, limits, shadow_summary_decision, AgentInfo, Decision, EventKind, Method,
    NetEvent, ShadowNetEvent, SummaryKey, SHADOW_GENERATION, SHADOW_SLOT, SUMMARY_COUNT_ALL,
};

use crate::{
    counters::count,
    events::{counted_repeat, event_header, first_recorded, submit_flags, waiting},
    judge::net::{match_rules, Dest},
    maps::EVENTS,
};

/// Decides `dest` by the agent's candidate and records a difference from
/// the enforced `(decision, rule_idx)`. Called only for agents with
/// `agent_flags::SHADOW`.
#[inline(always)]
pub fn evaluate(
    agent: &AgentInfo,
    kind: EventKind,
    dest: &Dest,
    decision: Decision,
    rule_idx: u32,
    cgroup_id: u64,
) {
    let (candidate, candidate_rule) = match_rules(dest, agent.slot | SHADOW_SLOT);
    if candidate == decision {
        return;
    }
    let policy_gen = agent.policy_gen | SHADOW_GENERATION;
    let mut key_decision = shadow_summary_decision(candidate as u32, decision as u32);
    if agent.flags & agent_flags::COUNT_ALL != 0 {
        // Under the evidence cap the first is counted too.
        key_decision |= SUMMARY_COUNT_ALL;
    }
    let key = Some(SummaryKey {
        agent_id: agent.agent_id,
        policy_gen,
        tgid: 0,
        kind: kind as u32,
        rule_idx: candidate_rule,
        access: u32::from(dest.port) | u32::from(dest.proto) << 16,
        dev: rule_idx,
        decision: key_decision,
        ino: 0,
        addr: dest.addr,
    });
    if counted_repeat(&key) {
        return;
    }
    // Advisory: while the ring buffer is congested the agent's own records
    // and everyone else's come first, and the difference is not recorded.
    if waiting() >= limits::EVENTS_WAKEUP_BYTES {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ShadowNetEvent>(0) else {
        return;
    };
    first_recorded(&key);
    entry.write(ShadowNetEvent {
        net: NetEvent {
            header: event_header(
                kind,
                candidate,
                Method::Shadow,
                candidate_rule,
                agent.agent_id,
                policy_gen,
                cgroup_id,
            ),
            family: dest.family,
            port: dest.port,
            proto: dest.proto,
            _pad: [0; 3],
            addr: dest.addr,
        },
        enforced_decision: decision as u32,
        enforced_rule: rule_idx,
    });
    // Not urgent: the daemon reads it with the next batch.
    entry.submit(submit_flags(
        true,
        core::mem::size_of::<ShadowNetEvent>() as u64,
    ));
    count(counter::EVENTS);
}
