//! Exec decisions on kernels without BPF LSM: `tp_btf/sched_process_exec`.
//!
//! The tracepoint fires after the exec's point of no return and before the
//! new image's first instruction (the loader has not mapped libc yet). The
//! exec cannot be failed any more, so a denial kills the process with
//! SIGKILL: the new program never runs one instruction. The decision is on
//! the file the kernel is executing (`bprm->file`, resolved to a path by
//! the walk in `path.rs`), never on the path the caller passed.
//!
//! This is a global tracepoint: every exec on the machine runs it. The first
//! thing it does is the agent cgroup lookup, and everything else returns.
//! For an agent, internal errors fail closed: the exec is killed.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, generated,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use warden_common::{
    agent_flags, counter, path_flags, rule, AgentInfo, Decision, EventHeader, EventKind, ExecEvent,
    Method, EVENT_PATH_BYTES, SIGKILL,
};

use crate::{
    count,
    path::{self, off, Carry, UNRESOLVED_FLAGS},
    submit_flags, AGENTS, EVENTS, EXEC_RULES,
};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn warden_exec(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: a plain helper call with no arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: AGENTS values are plain data replaced whole by the daemon.
    let Some(agent) = (unsafe { AGENTS.get(&cgroup_id) }).copied() else {
        return 0;
    };
    if agent.flags & (agent_flags::EXEC | agent_flags::REVOKED) == 0 {
        // The agent's policy does not govern exec.
        return 0;
    }
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
        kill_unrecorded();
        return;
    };
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
    let mut flags = c.flags | built.flags;

    let (decision, rule_idx) = if c.agent_flags & agent_flags::REVOKED != 0 {
        (Decision::Deny, rule::REVOKED)
    } else if flags & UNRESOLVED_FLAGS != 0 {
        (Decision::Deny, rule::UNRESOLVED)
    } else {
        match EXEC_RULES.get(path::key(s, c.slot, &built)) {
            // Only `allow` lets the exec go on: `hold` is not implemented
            // for exec yet and the daemon compiles it to deny, but any other
            // value is a denial here too.
            Some(r) if r.decision == Decision::Allow as u8 => (Decision::Allow, r.rule_idx),
            Some(r) => (Decision::Deny, r.rule_idx),
            None => (Decision::Deny, rule::DEFAULT),
        }
    };

    // No exec without a record: reserve the event before allowing.
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(counter::DROPPED);
        kill_unrecorded();
        return;
    };
    let method = if decision == Decision::Allow {
        count(counter::ALLOWED);
        Method::Allow
    } else {
        count(counter::DENIED);
        // SAFETY: a plain helper call; signals the current process.
        if unsafe { generated::bpf_send_signal(SIGKILL) } != 0 {
            count(counter::KILL_FAILED);
            flags |= path_flags::KILL_FAILED;
        }
        Method::Kill
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ExecEvent in the ring buffer; every
    // field is written before submit.
    unsafe {
        (*ev).header = EventHeader {
            kind: EventKind::Exec as u32,
            decision: decision as u32,
            method: method as u32,
            rule_idx,
            agent_id: c.agent_id,
            policy_gen: c.policy_gen,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            cgroup_id: c.cgroup_id,
            boot_ns: bpf_ktime_get_boot_ns(),
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        };
        (*ev).dev = c.dev;
        (*ev).flags = flags;
        (*ev).ino = c.ino;
        (*ev).path_len = built.len;
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
    entry.submit(submit_flags(
        decision == Decision::Allow,
        core::mem::size_of::<ExecEvent>() as u64,
    ));
    count(counter::EVENTS);
}

/// Fail closed without a record (the ring buffer is full): kill.
#[inline(always)]
fn kill_unrecorded() {
    count(counter::DENIED);
    // SAFETY: a plain helper call; signals the current process.
    if unsafe { generated::bpf_send_signal(SIGKILL) } != 0 {
        count(counter::KILL_FAILED);
    }
}
