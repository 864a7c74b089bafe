//! Exec decisions on kernels without BPF LSM: `tp_btf/sched_process_exec`.
//!
//! The tracepoint fires after the exec's point of no return and before the
//! new image's first instruction (the loader has not mapped libc yet). The
//! exec cannot be failed any more, so a denial kills the process with
//! SIGKILL: the new program never runs one instruction. The decision is on
//! the file the kernel is executing (`bprm->file`, resolved to a path by
//! the walk in `path.rs`), never on the path the caller passed.
//!
//! A hold stops the process there instead (SIGSTOP, `hold::pause`): the new
//! program has not run when a human decides; approval continues it,
//! rejection kills it.
//!
//! This is a global tracepoint: every exec on the machine runs it. The first
//! thing it does is the agent cgroup lookup, and everything else returns.
//! For an agent, internal errors fail closed: the exec is killed.
//!
//! The judge (`judge::exec`) and the record (`events::fill_exec`) are
//! shared with the BPF LSM exec hook (`lsm.rs`), which decides from the
//! same rules and fails the exec instead.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use warden_common::{
    agent_counter, agent_flags, counter, held_state, AgentInfo, Decision, EventKind, ExecEvent,
    Method,
};

use crate::{
    agent::governing_agent,
    counters::{count, count_agent},
    events::{
        counted_repeat, fill_exec, first_recorded, park, submit_flags, summary_key, unrecorded,
    },
    fallback::{hold, shadow},
    judge::exec::{judge, Judged},
    maps::EVENTS,
    path,
};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn warden_exec(ctx: BtfTracePointContext) -> i32 {
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::EXEC) else {
        return 0;
    };
    // sched_process_exec(struct task_struct *p, pid_t old_pid,
    //                    struct linux_binprm *bprm)
    let bprm: u64 = ctx.arg(2);
    decide(cgroup_id, &agent, bprm);
    0
}

#[inline(always)]
fn decide(cgroup_id: u64, agent: &AgentInfo, bprm: u64) {
    let Some(s) = path::scratch() else {
        // Cannot happen (a one-entry per-CPU array); fail closed all the same.
        hold::kill_unrecorded();
        return;
    };
    let j = judge(s, cgroup_id, agent, bprm);
    // A `shadow:` candidate's lookup, after the exec is carried out (in
    // this program: it has the verifier budget the `sys_exit` one lacks).
    // Verifier: parked and taken back, so the lookup is explored once and
    // not once per way of carrying out (205k instructions inline, 87k
    // parked; 58k without the candidate, measured 5 Dec).
    let pending = shadow::wanted(j.carry.agent_flags, agent_flags::SHADOW_EXEC, j.flags);
    path::park_shadow(
        s,
        pending as u32,
        j.len,
        j.flags,
        (j.decision as u32, j.rule_idx),
    );
    carry_out(agent, &j, s);
    if let Some(built) = path::take_shadow(s) {
        shadow::evaluate(s, EventKind::Exec, &built);
    }
}

/// Records and carries out a judged exec (its first, or a count).
#[inline(always)]
fn carry_out(agent: &AgentInfo, j: &Judged, s: &mut path::Scratch) {
    let decision = j.decision;

    // No exec without a record: reserve the event before allowing.
    let record = crate::judge::recorded(agent.flags, decision, j.rule_idx);
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    // A repeat of an allowed exec already recorded is counted, not copied.
    let c = &j.carry;
    let repeat = summary_key(
        agent,
        decision,
        EventKind::Exec,
        j.rule_idx,
        0,
        c.dev,
        c.ino,
        [0; 16],
    );
    if counted_repeat(&repeat) {
        count(counter::ALLOWED);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        // An allowed exec waits, stopped before its first instruction, for
        // its record to be drained (`park`) instead of being killed.
        if decision == Decision::Allow
            && park(core::mem::size_of::<ExecEvent>() as u32, true, |ev| {
                fill_exec(ev.cast(), j, decision, Method::Allow, j.flags, s)
            })
        {
            count(counter::ALLOWED);
            return;
        }
        if unrecorded(
            agent,
            EventKind::Exec,
            decision == Decision::Allow || record,
        ) {
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
        hold::carry_out(decision, held_state::EXEC_STOPPING)
    };
    fill_exec(
        entry.as_mut_ptr(),
        j,
        decision,
        method,
        j.flags | kill_failed,
        s,
    );
    entry.submit(submit_flags(
        decision == Decision::Allow || record,
        core::mem::size_of::<ExecEvent>() as u64,
    ));
    count(counter::EVENTS);
}
