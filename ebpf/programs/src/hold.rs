//! Stopping held threads (called from `sys_exit.rs`).
//!
//! cgroup hooks cannot send signals, so a hook that holds an action marks
//! the thread in `HELD` and fails the syscall with ERESTARTNOINTR; at the
//! same syscall's exit, this sends the thread SIGSTOP. The signal is pending
//! before the return to user space, so the thread stops there and the
//! kernel restarts the syscall when it is continued.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal_thread};
use warden_common::{counter, SIGSTOP};

use crate::{count, HELD};

/// Stops the current thread if a hook held its syscall. The common path is
/// one hash lookup that misses.
#[inline(always)]
pub fn stop_if_held() {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain data, only tested for presence.
    if unsafe { HELD.get(&tid) }.is_none() {
        return;
    }
    let _ = HELD.remove(&tid);
    // SAFETY: a plain helper call. It fails for kernel threads, PID 1 and
    // exiting tasks, none of which can be agents' held threads in practice;
    // count it so it shows in `warden status`.
    if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
        count(counter::HOLD_FAILED);
    }
}
