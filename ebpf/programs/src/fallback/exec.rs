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
use warden_common::{agent_flags, held_state, AgentInfo, EventKind, ExecEvent};

use crate::{
    agent::governing_agent,
    events::fill_exec,
    fallback::{
        carry::{self, Verdict},
        hold, shadow,
    },
    judge::exec::{judge, Judged},
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

/// Records and carries out a judged exec (its first, or a count); a hold
/// stops it before its first instruction.
#[inline(always)]
fn carry_out(agent: &AgentInfo, j: &Judged, s: &path::Scratch) {
    let v = Verdict {
        decision: j.decision,
        rule_idx: j.rule_idx,
        flags: j.flags,
        kind: EventKind::Exec,
        access: 0,
        dev: j.carry.dev,
        ino: j.carry.ino,
        pause_state: held_state::EXEC_STOPPING,
        count_decision: true,
    };
    carry::carry_out::<ExecEvent>(agent, &v, |ev, decision, method, flags| {
        fill_exec(ev, j, decision, method, flags, s)
    });
}
