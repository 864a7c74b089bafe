//! Leaving the agent: a process of an agent that appears in a cgroup
//! outside the agent's subtree is killed and recorded with both cgroups.
//!
//! A migrated task is already in its new cgroup when `cgroup_attach_task`
//! fires, so where it came from is kept per process: `MEMBERS` (thread
//! group id -> agent cgroup), filled at `sched_process_fork` when the
//! parent is in an agent, at `cgroup_attach_task` when a process moves into
//! an agent's subtree, and by the daemon for the processes an adopted
//! cgroup already holds; removed at `sched_process_exit` of the thread
//! group leader.
//!
//! - `sched_process_fork` (the parent's context): a child of an agent
//!   process whose cgroup is outside the agent's subtree was forked there
//!   (`clone3(CLONE_INTO_CGROUP)`). The parent is killed in place; the
//!   child cannot be signalled from here (`bpf_send_signal` signals the
//!   caller only, and aya 0.14 cannot emit a call to the 6.13+ kfunc
//!   `bpf_send_signal_task`), so the daemon kills it from the record.
//! - `cgroup_attach_task` (the mover's context): a member moved outside
//!   its agent's subtree. If it moved itself it is killed in place; if a
//!   process of an agent moved it, that process is killed in place; unless
//!   it moved itself, the moved process is killed by the daemon from the
//!   record, and marked in `DOOMED` for the `sys_exit` program to kill at
//!   its next syscall exit (`fallback/doomed.rs`), whichever comes first.
//!   (A child forked out is not marked: its parent dies at the fork, and
//!   the daemon kills it from the record.)
//!
//! Cost outside agents: a fork pays `current_agent` (one helper call, one
//! hash lookup, one array read, and a helper call and lookup per level
//! that holds agents); an exit one helper call and, for a thread group
//! leader, two hash deletes (`MEMBERS`, `DOOMED`); a migration one probe read and one hash lookup
//! plus, for a process that is no member, the destination's agent lookup
//! (three probe reads and a hash lookup for each of the two deepest levels
//! that hold agents).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_send_signal},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
    EbpfContext,
};
use warden_common::{
    counter, escape_how, escape_killed, limits, rule, AgentInfo, Decision, Doomed, EscapeEvent,
    EventKind, Member, Method, SIGKILL,
};

use crate::{
    agent::{current_agent, current_agent_cgroup},
    counters::count,
    events::event_header,
    fallback::doomed,
    maps::{AGENTS, AGENT_LEVELS, DOOMED, EVENTS, MEMBERS},
    path::{self, off},
};

#[btf_tracepoint(function = "sched_process_exit")]
pub fn warden_task_exit(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == pid_tgid as u32 {
        let _ = MEMBERS.remove(&tgid);
        // A marked process that died before its next syscall exit (the
        // daemon's kill): its mark goes, so a reused id is never killed.
        // Not guarded by `DOOMED_ANY`: a count left low by a lost race
        // must not leave a stale mark behind (one hash delete per exit).
        doomed::forget(tgid);
    }
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn warden_fork(ctx: BtfTracePointContext) -> i32 {
    let (cgroup_id, agent_cgroup, agent_level, agent) = current_agent_cgroup();
    let Some(agent) = agent else {
        return 0;
    };
    if !path::offsets_valid() {
        return 0;
    }
    // sched_process_fork(struct task_struct *parent, struct task_struct *child)
    let child = scalar_arg(&ctx, 1);
    let child_tgid: u32 = path::read(child, off!(task_tgid));
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if child_tgid == tgid || child_tgid == 0 {
        // A thread of the caller: it shares the caller's cgroup.
        return 0;
    }
    let level = if agent_cgroup == cgroup_id {
        // SAFETY: a plain helper call.
        let me = unsafe { bpf_get_current_task() };
        cgroup_level(task_cgroup(me as u64))
    } else {
        agent_level
    };
    let member = Member {
        agent_cgroup,
        agent_id: agent.agent_id,
        level,
    };
    // The parent may have come in unseen (forked into the agent by an
    // outsider): it is a member from now on.
    if MEMBERS.get_ptr(&tgid).is_none() {
        let _ = MEMBERS.insert(&tgid, &member, 0);
    }
    let _ = MEMBERS.insert(&child_tgid, &member, 0);
    let cgrp = task_cgroup(child);
    let child_cgroup = cgroup_id_of(cgrp);
    if child_cgroup == cgroup_id || in_subtree(cgrp, agent_cgroup, level) {
        return 0;
    }
    let killed = kill_current(escape_killed::ACTOR);
    record(
        &agent,
        cgroup_id,
        child_tgid,
        child_tgid,
        agent_cgroup,
        child_cgroup,
        escape_how::FORK,
        killed,
    );
    0
}

#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn warden_cgroup_attach(ctx: BtfTracePointContext) -> i32 {
    if !path::offsets_valid() {
        return 0;
    }
    // cgroup_attach_task(struct cgroup *dst_cgrp, const char *path,
    //                    struct task_struct *task, bool threadgroup)
    let (dst, task) = (scalar_arg(&ctx, 0), scalar_arg(&ctx, 2));
    let tgid: u32 = path::read(task, off!(task_tgid));
    let Some(m) = MEMBERS.get_ptr(&tgid) else {
        join_if_agent(tgid, dst);
        return 0;
    };
    // SAFETY: a map value, plain data.
    let m = unsafe { *m };
    // SAFETY: AGENTS values are plain data replaced whole by the daemon.
    let Some(agent) = (unsafe { AGENTS.get(&m.agent_cgroup) }).copied() else {
        // Its agent is gone: it belongs to none, or to the one it joins.
        let _ = MEMBERS.remove(&tgid);
        join_if_agent(tgid, dst);
        return 0;
    };
    if in_subtree(dst, m.agent_cgroup, m.level) {
        return 0;
    }
    let caller_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let (caller_cgroup, caller_agent) = current_agent();
    let killed = if caller_tgid == tgid {
        kill_current(escape_killed::ESCAPED)
    } else if caller_agent.is_some() {
        kill_current(escape_killed::ACTOR)
    } else {
        0
    };
    let to_cgroup = cgroup_id_of(dst);
    if caller_tgid != tgid {
        // Moved by another process: killed at its next syscall exit.
        doom(tgid, &agent, m.agent_cgroup, to_cgroup, escape_how::ATTACH);
    }
    record(
        &agent,
        caller_cgroup,
        tgid,
        tgid,
        m.agent_cgroup,
        to_cgroup,
        escape_how::ATTACH,
        killed,
    );
    0
}

/// Argument `n` of the tracepoint as a plain number. Verifier: `ctx.arg`
/// gives a trusted BTF pointer, and the walk's arithmetic on it (an
/// ancestor slot per level) made every loop pass a distinct state: the
/// attach program ran into the 1M-instruction limit. These programs only
/// read through `bpf_probe_read_kernel`, which takes any number.
#[inline(always)]
fn scalar_arg(ctx: &BtfTracePointContext, n: u64) -> u64 {
    path::read(ctx.as_ptr() as u64, n * 8)
}

/// A process moved into an agent's subtree becomes its member.
#[inline(always)]
fn join_if_agent(tgid: u32, dst: u64) {
    if let Some((agent_cgroup, level, agent)) = agent_of(dst) {
        let member = Member {
            agent_cgroup,
            agent_id: agent.agent_id,
            level,
        };
        let _ = MEMBERS.insert(&tgid, &member, 0);
    }
}

/// Marks `tgid` (another process than the caller) to be killed at its
/// next syscall exit (`fallback::doomed`).
#[inline(always)]
fn doom(tgid: u32, agent: &AgentInfo, from_cgroup: u64, to_cgroup: u64, how: u32) {
    let d = Doomed {
        from_cgroup,
        to_cgroup,
        agent_id: agent.agent_id,
        policy_gen: agent.policy_gen,
        how,
        _pad: 0,
    };
    // BPF_NOEXIST: counted once however often it is moved.
    if DOOMED.insert(&tgid, &d, 1).is_ok() {
        doomed::add_any(1);
    }
}

/// SIGKILL to the caller; `bit` if sent, `escape_killed::FAILED` if not.
#[inline(always)]
fn kill_current(bit: u32) -> u32 {
    count(counter::DENIED);
    // SAFETY: a plain helper call; signals the current process.
    if unsafe { bpf_send_signal(SIGKILL) } == 0 {
        bit
    } else {
        count(counter::KILL_FAILED);
        escape_killed::FAILED
    }
}

/// `task->cgroups->dfl_cgrp`: the task's cgroup2 cgroup.
#[inline(always)]
fn task_cgroup(task: u64) -> u64 {
    let cset: u64 = path::read(task, off!(task_cgroups));
    path::read(cset, off!(css_set_dfl_cgrp))
}

/// `cgrp->kn->id`: the cgroup id (the inode number of its directory).
#[inline(always)]
fn cgroup_id_of(cgrp: u64) -> u64 {
    let kn: u64 = path::read(cgrp, off!(cgroup_kn));
    path::read(kn, off!(kernfs_node_id))
}

/// `cgrp->level`.
#[inline(always)]
fn cgroup_level(cgrp: u64) -> u32 {
    path::read(cgrp, off!(cgroup_level))
}

/// `cgrp->ancestors[level]`, 0 if `level` is below `cgrp`.
#[inline(always)]
fn ancestor(cgrp: u64, level: u32, own_level: u32) -> u64 {
    if level > own_level || level > limits::MAX_AGENT_LEVEL {
        return 0;
    }
    path::read(cgrp, off!(cgroup_ancestors) + u64::from(level) * 8)
}

/// Whether `cgrp` is `agent_cgroup` (at `level`) or below it: one
/// ancestor read, no loop.
#[inline(always)]
fn in_subtree(cgrp: u64, agent_cgroup: u64, level: u32) -> bool {
    if cgrp == 0 {
        return false;
    }
    let a = ancestor(cgrp, level, cgroup_level(cgrp));
    a != 0 && cgroup_id_of(a) == agent_cgroup
}

/// The agent whose subtree `cgrp` is in, with its cgroup id and level:
/// the ancestors at the two deepest levels `AGENT_LEVELS` marks at or
/// above `cgrp` are looked up, deepest first.
///
/// Verifier: a loop over the 31 levels (as `current_agent` has) did not
/// verify here (the 1M-instruction limit: every pass forked on the
/// unknown level bits and on the found/not-found lookup), so the levels
/// are picked with bit arithmetic and looked up twice, without a loop.
#[inline(always)]
fn agent_of(cgrp: u64) -> Option<(u64, u32, AgentInfo)> {
    let own_level = cgroup_level(cgrp) & 31;
    let levels = AGENT_LEVELS.get(0).copied().unwrap_or(0);
    // Level bits at or above (shallower than) `cgrp`; level 0, the root,
    // is never an agent.
    let mut cand = levels & (((2u64 << own_level) - 1) as u32) & !1;
    let mut tries = 0;
    while tries < 2 && cand != 0 {
        let level = 31 - cand.leading_zeros();
        cand &= !(1 << level);
        let a: u64 = path::read(cgrp, off!(cgroup_ancestors) + u64::from(level) * 8);
        let id = cgroup_id_of(a);
        if id != 0 {
            // SAFETY: as above.
            if let Some(agent) = unsafe { AGENTS.get(&id) } {
                return Some((id, level, *agent));
            }
        }
        tries += 1;
    }
    None
}

#[expect(
    clippy::too_many_arguments,
    reason = "one record's fields, filled in one place"
)]
#[inline(always)]
fn record(
    agent: &AgentInfo,
    caller_cgroup: u64,
    pid: u32,
    tid: u32,
    from_cgroup: u64,
    to_cgroup: u64,
    how: u32,
    killed: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<EscapeEvent>(0) else {
        count(counter::DROPPED);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved EscapeEvent; every field is written.
    unsafe {
        (*ev).header = event_header(
            EventKind::Escape,
            Decision::Deny,
            Method::Kill,
            rule::LEFT_AGENT,
            agent.agent_id,
            agent.policy_gen,
            caller_cgroup,
        );
        (*ev).pid = pid;
        (*ev).tid = tid;
        (*ev).from_cgroup = from_cgroup;
        (*ev).to_cgroup = to_cgroup;
        (*ev).how = how;
        (*ev).killed = killed;
    }
    entry.submit(0);
    count(counter::EVENTS);
}
