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
//! `judge` and `fill_event` are shared with the BPF LSM exec hook
//! (`lsm.rs`), which decides from the same rules and fails the exec instead.

use aya_ebpf::{
    helpers::generated,
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use warden_common::{
    agent_counter, agent_flags, counter, held_state, path_flags, rule, AgentInfo, Decision, EventKind, ExecEvent,
    Method, EVENT_PATH_BYTES,
};

use crate::{
    count, count_agent, governing_agent, hold, unrecorded,
    path::{self, off, Carry, Scratch, UNRESOLVED_FLAGS},
    submit_flags, EVENTS, EXEC_RULES,
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

/// What the policy says about an exec, before anyone carries it out.
pub struct Judged {
    /// The rule's decision as written (`Hold` included: each hook decides
    /// what it can do with it).
    pub decision: Decision,
    pub rule_idx: u32,
    /// `path_flags` of the resolution.
    pub flags: u32,
    /// Bytes of the resolved path (it is in the scratch space).
    pub len: u32,
    pub carry: Carry,
}

/// Resolves the file the kernel executes (`bprm->file`) into the scratch
/// space and looks it up in the agent's exec rules. Shared by the
/// tracepoint fallback and the LSM hook, so both decide the same way.
#[inline(always)]
pub fn judge(s: &mut Scratch, cgroup_id: u64, agent: &AgentInfo, bprm: u64) -> Judged {
    let mut flags = 0;
    let (file, filename) = if path::offsets_valid() {
        (
            path::read::<u64>(bprm, off!(bprm_file)),
            path::read::<u64>(bprm, off!(bprm_filename)),
        )
    } else {
        flags |= path_flags::NO_OFFSETS;
        (0, 0)
    };
    let facts = path::file_facts(file);
    path::park(
        s,
        Carry {
            cgroup_id,
            ino: facts.ino,
            filename,
            agent_id: agent.agent_id,
            policy_gen: agent.policy_gen,
            slot: agent.slot,
            agent_flags: agent.flags,
            dev: facts.dev,
            flags: flags | facts.flags,
            access: 0,
            syscall: 0,
            compat: 0,
            _pad: 0,
        },
    );
    let built = path::build(s, facts.dentry, facts.vfsmount);
    let c = path::unpark(s);
    let flags = c.flags | built.flags;

    let (decision, rule_idx) = if c.agent_flags & agent_flags::REVOKED != 0 {
        (Decision::Deny, rule::REVOKED)
    } else if flags & UNRESOLVED_FLAGS != 0 {
        (Decision::Deny, rule::UNRESOLVED)
    } else {
        match EXEC_RULES.get(path::key(s, c.slot, &built)) {
            Some(r) if r.decision == Decision::Allow as u8 => (Decision::Allow, r.rule_idx),
            Some(r) if r.decision == Decision::Hold as u8 => (Decision::Hold, r.rule_idx),
            // Any other value is a denial.
            Some(r) => (Decision::Deny, r.rule_idx),
            None => (Decision::Deny, rule::DEFAULT),
        }
    };
    Judged {
        decision,
        rule_idx,
        flags,
        len: built.len,
        carry: c,
    }
}

/// Fills a reserved exec event: the header, the resolved path (from the
/// scratch space) and the caller's name for the file (`bprm->filename`).
#[inline(always)]
pub fn fill_event(
    ev: *mut ExecEvent,
    j: &Judged,
    decision: Decision,
    method: Method,
    flags: u32,
    s: &Scratch,
) {
    let c = &j.carry;
    // SAFETY: `ev` points at a reserved ExecEvent in the ring buffer; every
    // field is written before submit.
    unsafe {
        (*ev).header = crate::event_header(
            EventKind::Exec,
            decision,
            method,
            j.rule_idx,
            c.agent_id,
            c.policy_gen,
            c.cgroup_id,
        );
        (*ev).dev = c.dev;
        (*ev).flags = flags;
        (*ev).ino = c.ino;
        (*ev).path_len = j.len;
        (*ev)._pad = 0;
        path::copy_to(core::ptr::addr_of_mut!((*ev).path), s);
        let filename_dst = core::ptr::addr_of_mut!((*ev).filename);
        if generated::bpf_probe_read_kernel_str(
            filename_dst.cast(),
            EVENT_PATH_BYTES as u32,
            c.filename as *const _,
        ) < 0
        {
            (*filename_dst)[0] = 0;
        }
    }
}

#[inline(always)]
fn decide(cgroup_id: u64, agent: &AgentInfo, bprm: u64) {
    let Some(s) = path::scratch() else {
        // Cannot happen (a one-entry per-CPU array); fail closed all the same.
        hold::kill_unrecorded();
        return;
    };
    let j = judge(s, cgroup_id, agent, bprm);
    let decision = j.decision;

    // No exec without a record: reserve the event before allowing.
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        if unrecorded(agent, decision == Decision::Allow) {
            count(counter::ALLOWED);
        } else {
            hold::kill_unrecorded();
        }
        return;
    };
    let (decision, method, kill_failed) = hold::carry_out(decision, held_state::EXEC_STOPPING);
    fill_event(entry.as_mut_ptr(), &j, decision, method, j.flags | kill_failed, s);
    entry.submit(submit_flags(
        decision == Decision::Allow,
        core::mem::size_of::<ExecEvent>() as u64,
    ));
    count(counter::EVENTS);
}
