//! Live shadow evaluation of execs and opens on the fallback (`shadow:` in
//! a policy whose candidate has exec or file rules): after the enforced
//! decision is carried out and recorded, the path the walk built (still in
//! the scratch space) is looked up a second time, under the candidate's
//! slot, and a difference is recorded as `crate::shadow` records one for
//! connects (`Method::Shadow`, first-then-count per agent).
//!
//! Execs are evaluated in the exec program itself (`fallback::exec`).
//! Opens are evaluated in `warden_shadow_open`, a program the open
//! fallback tail-calls (`SHADOW_TAIL`): the `sys_exit` program is near the
//! verifier's limit and only pays the handoff (`path::park_shadow`).
//!
//! Nothing here changes the enforced decision or its record: both are done
//! before. Both decisions are compared on the rules, before budgets (as
//! connect's are); a revoked agent or a path that did not resolve is not
//! compared (the kill switch and `unresolved-path` decide for any policy).

use aya_ebpf::{helpers::generated, macros::btf_tracepoint, programs::BtfTracePointContext};
use warden_common::{
    agent_flags, counter, limits, rule, shadow_summary_decision, Decision, EventKind, FileRule,
    Method, PathRule, ShadowExecEvent, ShadowOpenEvent, SummaryKey, EVENT_PATH_BYTES,
    SHADOW_GENERATION, SHADOW_SLOT, SUMMARY_COUNT_ALL,
};

use crate::{
    counters::count,
    events::{counted_repeat, event_header, first_recorded, submit_flags, waiting},
    judge::file::{by_access, kernel_decision},
    maps::{EVENTS, EXEC_RULES, FILE_RULES, SHADOW_TAIL},
    path::{self, Built, Scratch, UNRESOLVED_FLAGS},
};

/// The open fallback's handoff, after the enforced decision: tail-calls
/// `warden_shadow_open` if it parked a pending lookup. A tail call does
/// not come back; on failure (slot empty) control returns here.
#[inline(always)]
pub fn dispatch_open(ctx: &BtfTracePointContext, s: &Scratch) {
    if path::shadow_pending(s) {
        // SAFETY: the array holds only `warden_shadow_open`, a
        // tp_btf/sys_exit program like the caller.
        unsafe { SHADOW_TAIL.tail_call(ctx, 0) };
    }
}

/// Whether an exec or open judged with `flags` (`path_flags` of the walk)
/// is compared with the candidate: an agent with `kind_flag` set, not
/// revoked, and a path that resolved.
#[inline(always)]
pub fn wanted(agent_flags_now: u32, kind_flag: u32, flags: u32) -> bool {
    agent_flags_now & kind_flag != 0
        && agent_flags_now & agent_flags::REVOKED == 0
        && flags & UNRESOLVED_FLAGS == 0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn warden_shadow_open(_ctx: BtfTracePointContext) -> i32 {
    let Some(s) = path::scratch() else {
        return 0;
    };
    if let Some(built) = path::take_shadow(s) {
        evaluate(s, EventKind::Open, &built);
    }
    0
}

/// An exec rule's decision under `slot` for the built path.
#[inline(always)]
fn exec_rule(s: &mut Scratch, slot: u32, built: &Built) -> (Decision, u32) {
    match EXEC_RULES.get(path::key(s, slot, built)) {
        Some(r) => (kernel_decision(r.decision), r.rule_idx),
        None => (Decision::Deny, rule::DEFAULT),
    }
}

/// The file rules under `slot` for the built path.
#[inline(always)]
fn file_rules(s: &mut Scratch, slot: u32, built: &Built) -> FileRule {
    match FILE_RULES.get(path::key(s, slot, built)) {
        Some(r) => *r,
        None => FileRule {
            read: PathRule::DEFAULT,
            write: PathRule::DEFAULT,
        },
    }
}

/// Decides the exec or open whose path is in `s` (with its `Carry`) by the
/// enforced rules and the candidate's, and records a difference.
#[inline(always)]
pub fn evaluate(s: &mut Scratch, kind: EventKind, built: &Built) {
    let c = path::unpark(s);
    let shadow_slot = c.slot | SHADOW_SLOT;
    // The judge's decision is the rules' unless a budget decided: then
    // the rules are looked up again (compared before budgets).
    let (judged, judged_rule) = path::shadow_judged(s);
    let budget = rule::budget_index(judged_rule).is_some();
    let judged = match Decision::from_u32(judged) {
        Some(d) if !budget => Some((d, judged_rule)),
        _ => None,
    };
    let (enforced, enforced_rule, candidate, candidate_rule, read_rule, write_rule) =
        if kind == EventKind::Exec {
            let (d, r) = match judged {
                Some(j) => j,
                None => exec_rule(s, c.slot, built),
            };
            let (cd, cr) = exec_rule(s, shadow_slot, built);
            (d, r, cd, cr, 0, 0)
        } else {
            let (d, r) = match judged {
                Some(j) => j,
                None => by_access(&file_rules(s, c.slot, built), c.access),
            };
            let cand = file_rules(s, shadow_slot, built);
            let (cd, cr) = by_access(&cand, c.access);
            let read = if c.access & warden_common::access::READ != 0 {
                cand.read.rule_idx
            } else {
                rule::DEFAULT
            };
            let write = if c.access & warden_common::access::WRITE != 0 {
                cand.write.rule_idx
            } else {
                rule::DEFAULT
            };
            (d, r, cd, cr, read, write)
        };
    if candidate == enforced {
        return;
    }
    let policy_gen = c.policy_gen | SHADOW_GENERATION;
    let mut key_decision = shadow_summary_decision(candidate as u32, enforced as u32);
    if c.agent_flags & agent_flags::COUNT_ALL != 0 {
        // Under the evidence cap the first is counted too.
        key_decision |= SUMMARY_COUNT_ALL;
    }
    // The file's identity and access, as the enforced repeats are keyed;
    // the enforced rule in the (unused) address, as connect keeps it.
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&enforced_rule.to_ne_bytes());
    let key = Some(SummaryKey {
        agent_id: c.agent_id,
        policy_gen,
        tgid: 0,
        kind: kind as u32,
        rule_idx: candidate_rule,
        access: if kind == EventKind::Exec { 0 } else { c.access },
        dev: c.dev,
        decision: key_decision,
        ino: c.ino,
        addr,
    });
    if counted_repeat(&key) {
        return;
    }
    // Advisory: while the ring buffer is congested the agent's own records
    // and everyone else's come first, and the difference is not recorded.
    if waiting() >= limits::EVENTS_WAKEUP_BYTES {
        return;
    }
    let header = event_header(
        kind,
        candidate,
        Method::Shadow,
        candidate_rule,
        c.agent_id,
        policy_gen,
        c.cgroup_id,
    );
    let flags = c.flags | built.flags;
    if kind == EventKind::Exec {
        let Some(mut entry) = EVENTS.reserve::<ShadowExecEvent>(0) else {
            return;
        };
        first_recorded(&key);
        let ev = entry.as_mut_ptr();
        // SAFETY: a reserved ShadowExecEvent; every field is written
        // before submit.
        unsafe {
            (*ev).exec.header = header;
            (*ev).exec.dev = c.dev;
            (*ev).exec.flags = flags;
            (*ev).exec.ino = c.ino;
            (*ev).exec.path_len = built.len;
            (*ev).exec._pad = 0;
            path::copy_to(core::ptr::addr_of_mut!((*ev).exec.path), s);
            let filename = core::ptr::addr_of_mut!((*ev).exec.filename);
            if generated::bpf_probe_read_kernel_str(
                filename.cast(),
                EVENT_PATH_BYTES as u32,
                c.filename as *const _,
            ) < 0
            {
                (*filename)[0] = 0;
            }
            (*ev).enforced_decision = enforced as u32;
            (*ev).enforced_rule = enforced_rule;
        }
        // Not urgent: the daemon reads it with the next batch.
        entry.submit(submit_flags(
            true,
            core::mem::size_of::<ShadowExecEvent>() as u64,
        ));
    } else {
        let Some(mut entry) = EVENTS.reserve::<ShadowOpenEvent>(0) else {
            return;
        };
        first_recorded(&key);
        let ev = entry.as_mut_ptr();
        // SAFETY: a reserved ShadowOpenEvent; every field is written.
        unsafe {
            (*ev).open.header = header;
            (*ev).open.dev = c.dev;
            (*ev).open.flags = flags;
            (*ev).open.ino = c.ino;
            (*ev).open.path_len = built.len;
            (*ev).open.access = c.access;
            (*ev).open.syscall = c.syscall;
            (*ev).open.syscall_compat = c.compat;
            (*ev).open.read_rule = read_rule;
            (*ev).open.write_rule = write_rule;
            path::copy_to(core::ptr::addr_of_mut!((*ev).open.path), s);
            (*ev).enforced_decision = enforced as u32;
            (*ev).enforced_rule = enforced_rule;
        }
        entry.submit(submit_flags(
            true,
            core::mem::size_of::<ShadowOpenEvent>() as u64,
        ));
    }
    count(counter::EVENTS);
}
