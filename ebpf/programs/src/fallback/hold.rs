//! Stopping held threads, and keeping the fallback's holds shut.
//!
//! cgroup hooks cannot send signals, so a hook that holds an action marks
//! the thread in `HELD` (`STOP_AT_EXIT`) and fails the syscall with
//! ERESTARTNOINTR; at the same syscall's exit, `at_sys_exit` sends the
//! thread SIGSTOP. The signal is pending before the return to user space,
//! so the thread stops there and the kernel restarts the syscall when it is
//! continued.
//!
//! The fallback exec and open hooks (`exec.rs`, `file.rs`) cannot fail
//! their syscall: the exec is committed, the fd installed. They `pause` the
//! thread instead: SIGSTOP before it returns to user space, and a `PAUSED`
//! entry. A SIGCONT would let such a thread go on with its action, so the
//! daemon makes the stop immune to SIGCONT (it ptrace-seizes the thread),
//! and until it has, any sign of the thread running again without a grant
//! gets it killed: its next syscall exit (`at_sys_exit`) or, for an exec,
//! the page fault of the new image's first instruction (`at_user_fault`),
//! before that instruction runs.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf,
        generated::{bpf_send_signal, bpf_send_signal_thread},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use warden_common::{counter, held_state, path_flags, Decision, Held, Method, SIGKILL, SIGSTOP};

use crate::{
    counters::count,
    maps::{HELD, SYS_EXIT_MODE},
    path::{self, off},
};

/// `task_struct.start_time` of the current thread (0 without offsets).
#[inline(always)]
fn start_time() -> u64 {
    if !path::offsets_valid() {
        return 0;
    }
    // SAFETY: the BTF-typed current task; `read` tolerates any address.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    path::read::<u64>(task, off!(task_start_time))
}

/// Stops the current thread for a fallback hold (`state` is `PAUSED`, or
/// `EXEC_STOPPING` from the exec hook). False if the stop cannot be
/// arranged: the caller refuses the action instead.
#[inline(always)]
pub fn pause(state: u32) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    let entry = Held {
        state,
        _pad: 0,
        start_time: start_time(),
    };
    if HELD.insert(&tid, &entry, 0).is_err() {
        return false;
    }
    // `sys_exit` looks paused threads up only while this is set.
    if let Some(flag) = SYS_EXIT_MODE.get_ptr_mut(1) {
        // SAFETY: a pointer to a map value, valid for this program run; a
        // plain store of a flag (the daemon clears it, see `kernel.rs`).
        unsafe { *flag = 1 };
    }
    // SAFETY: a plain helper call on the current thread. It fails for
    // PID 1, kernel threads and exiting tasks.
    if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
        let _ = HELD.remove(&tid);
        count(counter::HOLD_FAILED);
        return false;
    }
    true
}

/// Carries out a fallback hook's decision on an action that already took
/// effect (`exec.rs`, `file.rs`): allow; hold, by pausing the thread in
/// `pause_state`; or anything else, by killing the process before it
/// returns to user space. Returns what to record, and
/// `path_flags::KILL_FAILED` if the SIGKILL could not be sent.
#[inline(always)]
pub fn carry_out(decision: Decision, pause_state: u32) -> (Decision, Method, u32) {
    match decision {
        Decision::Allow => {
            count(counter::ALLOWED);
            (Decision::Allow, Method::Allow, 0)
        }
        Decision::Hold if pause(pause_state) => {
            count(counter::HELD);
            (Decision::Hold, Method::Held, 0)
        }
        _ => {
            count(counter::DENIED);
            // SAFETY: a plain helper call; signals the current process (all
            // its threads) before the syscall returns to user space.
            let failed = unsafe { bpf_send_signal(SIGKILL) } != 0;
            if failed {
                count(counter::KILL_FAILED);
            }
            let flags = if failed { path_flags::KILL_FAILED } else { 0 };
            (Decision::Deny, Method::Kill, flags)
        }
    }
}

/// A fallback hook fails closed without a record (the ring buffer is
/// full): kill.
#[inline(always)]
pub fn kill_unrecorded() {
    count(counter::DENIED);
    // SAFETY: a plain helper call; signals the current process.
    if unsafe { bpf_send_signal(SIGKILL) } != 0 {
        count(counter::KILL_FAILED);
    }
}

/// What a guard does with the current thread's `HELD` entry.
#[inline(always)]
fn guard(at_exit: bool) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(entry) = HELD.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: a pointer into a map value, valid for this program run; the
    // daemon only changes `state`, and either value is handled.
    let (state, started) = unsafe { ((*entry).state, (*entry).start_time) };
    match state {
        held_state::STOP_AT_EXIT if at_exit => {
            let _ = HELD.remove(&tid);
            // SAFETY: a plain helper call. It fails for kernel threads,
            // PID 1 and exiting tasks, none of which can be agents' held
            // threads in practice; count it so it shows in `warden status`.
            if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
                count(counter::HOLD_FAILED);
            }
        }
        held_state::KILL_AT_EXIT if at_exit => {
            let _ = HELD.remove(&tid);
            // SAFETY: a plain helper call; kills the current process.
            if unsafe { bpf_send_signal(SIGKILL) } != 0 {
                count(counter::KILL_FAILED);
            }
        }
        held_state::EXEC_STOPPING if at_exit => {
            // The held execve's own exit: the stop comes right after it.
            // SAFETY: as above.
            unsafe { (*entry).state = held_state::PAUSED };
        }
        held_state::EXEC_STOPPING | held_state::PAUSED => {
            if started != start_time() {
                // Another thread with a recycled id: not ours to stop.
                let _ = HELD.remove(&tid);
                return;
            }
            // Running without a grant: end it before it goes on.
            count(counter::HOLD_BREACH);
            // SAFETY: a plain helper call; kills the current process.
            if unsafe { bpf_send_signal(SIGKILL) } != 0 {
                count(counter::KILL_FAILED);
            }
        }
        _ => {}
    }
}

/// The `sys_exit` side (called from `sys_exit.rs`). The common path is one
/// hash lookup that misses.
#[inline(always)]
pub fn at_sys_exit() {
    guard(true);
}

/// A user page fault: the first instruction of a freshly executed image
/// always faults (its text is not mapped yet), so a held exec that was
/// continued is killed here before it runs one instruction.
#[btf_tracepoint(function = "page_fault_user")]
pub fn warden_fault_guard(_ctx: BtfTracePointContext) -> i32 {
    // Every user page fault on the machine comes here while attached: a
    // direct load says whether any thread is paused at all.
    if SYS_EXIT_MODE.get(1).copied().unwrap_or(1) != 0 {
        guard(false);
    }
    0
}
