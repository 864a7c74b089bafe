//! Carrying out a judged exec or open on the fallback: what `exec.rs` and
//! `file.rs` share once the judge has spoken. The record is reserved
//! before anything is allowed (no action without a record); a repeat of an
//! allowed action already recorded is counted, not copied; a full ring
//! buffer parks an allowed action until the daemon has drained, and
//! otherwise follows the agent's `on_evidence_loss`.

use warden_common::{agent_counter, counter, AgentInfo, Decision, EventKind, Method};

use crate::{
    counters::{count, count_agent},
    events::{counted_repeat, first_recorded, park, submit_flags, summary_key, unrecorded},
    fallback::hold,
    maps::EVENTS,
};

/// The parts of a judged exec or open that carrying it out needs.
pub struct Verdict {
    pub decision: Decision,
    pub rule_idx: u32,
    /// The judge's flags for the record.
    pub flags: u32,
    pub kind: EventKind,
    /// The open's access; 0 for an exec.
    pub access: u32,
    /// The file's identity, which keys the count of repeats.
    pub dev: u32,
    pub ino: u64,
    /// The state a hold stops the thread in (`held_state`): an exec before
    /// its first instruction, an open with its fd installed but unseen.
    pub pause_state: u32,
    /// Whether this action is counted in the agent's decisions here (an
    /// open the decision cache vouched for was counted there).
    pub count_decision: bool,
}

/// Records and carries out `v`. `fill` writes the record `E` for a
/// decision, a method and flags, into the ring buffer or the park scratch.
#[inline(always)]
pub fn carry_out<E: 'static>(
    agent: &AgentInfo,
    v: &Verdict,
    mut fill: impl FnMut(*mut E, Decision, Method, u32),
) {
    let decision = v.decision;
    let record = crate::judge::recorded(agent.flags, decision, v.rule_idx);
    if v.count_decision {
        count_agent(agent.agent_id, agent_counter::DECISIONS);
    }
    let repeat = summary_key(
        agent, decision, v.kind, v.rule_idx, v.access, v.dev, v.ino, [0; 16],
    );
    if counted_repeat(&repeat) {
        count(counter::ALLOWED);
        return;
    }
    let size = core::mem::size_of::<E>() as u32;
    let Some(mut entry) = EVENTS.reserve::<E>(0) else {
        // An allowed action waits, stopped, for its record to be drained
        // (`park`) instead of being killed for being busy.
        if decision == Decision::Allow
            && park(size, true, |ev| {
                fill(ev.cast(), decision, Method::Allow, v.flags)
            })
        {
            count(counter::ALLOWED);
            return;
        }
        if unrecorded(agent, v.kind, decision == Decision::Allow || record) {
            count(counter::ALLOWED);
        } else {
            hold::kill_unrecorded();
        }
        return;
    };
    first_recorded(&repeat);
    let (decision, method, kill_failed) = if record {
        // Record mode: written down as judged, not carried out.
        count(counter::ALLOWED);
        (decision, Method::Recorded, 0)
    } else {
        hold::carry_out(decision, v.pause_state)
    };
    fill(entry.as_mut_ptr(), decision, method, v.flags | kill_failed);
    entry.submit(submit_flags(
        decision == Decision::Allow || record,
        size as u64,
    ));
    count(counter::EVENTS);
}
