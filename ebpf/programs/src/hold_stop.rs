//! The stop of held network actions without `sys_exit`, where BPF
//! trampolines work (the BPF LSM and fmod_ret hosts).
//!
//! The cgroup hook decides (and consumes grants) as everywhere. It cannot
//! send signals, so on a hold it marks the thread (`HELD`, `STOP_AT_EXIT`)
//! and fails the syscall with ERESTARTNOINTR. `fexit` on the kernel
//! function that ran it (`__cgroup_bpf_run_filter_sock_addr`, for connect
//! and sendmsg, IPv4 and IPv6) runs right after, still inside the syscall:
//! it consumes the mark and sends the thread SIGSTOP. The signal is pending
//! when the syscall returns, so the thread stops before user space and the
//! syscall restarts (the cgroup hook decides again) when it is continued;
//! that is what `sys_exit` does on the fallback, for every syscall of the
//! machine. Here only runs of cgroup sock_addr programs pay, and
//! processes outside agents return after one lookup.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_send_signal, bpf_send_signal_thread},
    },
    macros::fexit,
    programs::FExitContext,
};
use warden_common::{counter, held_state, SIGKILL, SIGSTOP};

use crate::{agent::current_agent, counters::count, maps::HELD};

// int __cgroup_bpf_run_filter_sock_addr(struct sock *sk, struct sockaddr
//     *uaddr, int *uaddrlen, enum cgroup_bpf_attach_type atype,
//     void *t_ctx, u32 *flags)
#[fexit(function = "__cgroup_bpf_run_filter_sock_addr")]
pub fn warden_hold_stop(_ctx: FExitContext) -> i32 {
    // An agent's process, in its cgroup or one below it (where the cgroup
    // hook held it too: `agent::current_agent`).
    if current_agent().1.is_none() {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain data; a concurrent update yields the old or new value.
    let Some(mark) = (unsafe { HELD.get(&tid) }).copied() else {
        return 0;
    };
    if mark.state == held_state::KILL_AT_EXIT {
        // A `then: kill` budget refused the action (`cgroup_sock`).
        let _ = HELD.remove(&tid);
        // SAFETY: a plain helper call; kills the current process.
        if unsafe { bpf_send_signal(SIGKILL) } != 0 {
            count(counter::KILL_FAILED);
        }
        return 0;
    }
    if mark.state != held_state::STOP_AT_EXIT {
        return 0;
    }
    let _ = HELD.remove(&tid);
    // SAFETY: a plain helper call.
    if unsafe { bpf_ktime_get_ns() }.wrapping_sub(mark.start_time) > held_state::MARK_TTL_NS {
        // Not this syscall's mark: its thread died before it was stopped.
        return 0;
    }
    // SAFETY: a plain helper call on the current thread. If it fails the
    // syscall returns ERESTARTNOINTR without a signal pending, which user
    // space sees as an error (errno 513) rather than a pass: counted.
    if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
        count(counter::HOLD_FAILED);
    }
    0
}
