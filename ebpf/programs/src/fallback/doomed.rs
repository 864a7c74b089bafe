//! Escaped processes killed at their next syscall exit: a process of an
//! agent that another process moved out of the agent's subtree (a write
//! to another cgroup's `cgroup.procs`) cannot be signalled by the program
//! that sees the move (`bpf_send_signal` signals the caller only; aya 0.14
//! cannot call the 6.13+ `bpf_send_signal_task` kfunc), so `escape.rs`
//! marks it in `DOOMED` and the `sys_exit` program kills it when its
//! current or next syscall returns, before user space runs again, and
//! records the kill (a second `leave-agent` record, `AT_SYSCALL_EXIT`).
//!
//! Every syscall exit on the machine reads `DOOMED_ANY[0]` (an inlined
//! array read); only while some process is marked does it look its own
//! thread group up. The kill and the record run in `warden_path_ops`, the
//! program `sys_exit` tail-calls, to keep `sys_exit`'s verifier cost.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_send_signal},
    programs::BtfTracePointContext,
};
use warden_common::{
    counter, escape_killed, rule, Decision, EscapeEvent, EventKind, Method, SIGKILL,
};

use crate::{
    counters::count,
    events::event_header,
    maps::{DOOMED, DOOMED_ANY, EVENTS, SYS_EXIT_TAIL},
};

/// In `sys_exit`, first: a marked process tail-calls `warden_path_ops`
/// (which never returns here; the rest of `sys_exit` does not matter for
/// a process about to die).
#[inline(always)]
pub fn dispatch(ctx: &BtfTracePointContext) {
    if DOOMED_ANY.get(0).copied().unwrap_or(0) == 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a map value, only tested for presence.
    if unsafe { DOOMED.get(&tgid) }.is_none() {
        return;
    }
    // SAFETY: the array holds only `warden_path_ops`, a tp_btf/sys_exit
    // program like this one; on failure (slot empty) control returns and
    // the daemon's kill from the record is all.
    unsafe { SYS_EXIT_TAIL.tail_call(ctx, 0) };
}

/// In `warden_path_ops`, first: kills and records the caller if it is
/// marked; says whether it was.
#[inline(always)]
pub fn at_sys_exit() -> bool {
    if DOOMED_ANY.get(0).copied().unwrap_or(0) == 0 {
        return false;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a map value, plain data copied out.
    let Some(d) = (unsafe { DOOMED.get(&tgid) }).copied() else {
        return false;
    };
    forget(tgid);
    count(counter::DENIED);
    // SAFETY: a plain helper call; signals the current process (all its
    // threads) before the syscall returns to user space.
    let killed = if unsafe { bpf_send_signal(SIGKILL) } == 0 {
        escape_killed::AT_SYSCALL_EXIT
    } else {
        count(counter::KILL_FAILED);
        escape_killed::FAILED
    };
    let Some(mut entry) = EVENTS.reserve::<EscapeEvent>(0) else {
        // The move itself was recorded; this second record is lost.
        count(counter::DROPPED);
        return true;
    };
    // SAFETY: a plain helper call.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    entry.write(EscapeEvent {
        header: event_header(
            EventKind::Escape,
            Decision::Deny,
            Method::Kill,
            rule::LEFT_AGENT,
            d.agent_id,
            d.policy_gen,
            cgroup_id,
        ),
        pid: tgid,
        tid: pid_tgid as u32,
        from_cgroup: d.from_cgroup,
        to_cgroup: d.to_cgroup,
        how: d.how,
        killed,
    });
    entry.submit(0);
    count(counter::EVENTS);
    true
}

/// Removes `tgid`'s mark, if any, and counts it out of `DOOMED_ANY`.
#[inline(always)]
pub fn forget(tgid: u32) {
    if DOOMED.remove(&tgid).is_ok() {
        add_any(u64::MAX); // -1
    }
}

/// Adds `delta` (wrapping: `u64::MAX` is -1) to `DOOMED_ANY[0]` with one
/// atomic add, as `cache::bump_epoch` moves the epoch. Exact: callers add 1
/// only for a mark they inserted (`BPF_NOEXIST`) and -1 only for one they
/// removed, so the count is the number of marks.
#[inline(always)]
pub fn add_any(delta: u64) {
    let Some(ptr) = DOOMED_ANY.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: an aligned u64 in an array map value, valid for the run. The
    // result is unused, so this is BPF_ATOMIC_ADD without fetch.
    unsafe {
        let _ = core::intrinsics::atomic_xadd::<
            u64,
            u64,
            { core::intrinsics::AtomicOrdering::SeqCst },
        >(ptr, delta);
    }
}
