//! Packet sockets on kernels without BPF LSM (or fmod_ret): a successful
//! `socket()` of `AF_PACKET` or `SOCK_PACKET` (which the kernel turns into
//! `AF_PACKET`) by an agent's process, detected at `sys_exit` and decided
//! by the agent's `socket: { kind: packet }` rule; no rule: killed before
//! the syscall returns, recorded like `lsm_sock.rs`'s decision (action
//! `socket`, class `packet`). The cgroup `sock_create` program never sees
//! these (the kernel runs it for inet sockets only); raw inet sockets stay
//! decided there, so each socket has one decision.
//!
//! After the fact, like the other fallback name operations: the socket
//! exists when this runs, and the process is killed before its file
//! descriptor reaches user space (a sibling thread that guesses the
//! descriptor number could use it in between). The 64-bit and ia32
//! `socket` take their arguments from the saved registers (the kernel's
//! own copy); the ia32 `socketcall(SYS_SOCKET, args)` from user memory,
//! read again here (racy against a sibling thread rewriting them).
//!
//! Runs in `warden_path_ops`, the program `sys_exit` tail-calls, so its
//! cost stays out of that program's verifier budget; `sys_exit` tail-calls
//! only for the socket numbers (`dispatch`), while `SYS_EXIT_MODE` has
//! `PACKETS`.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::{bpf_get_current_task_btf, generated},
    programs::BtfTracePointContext,
};
use warden_common::{
    agent_counter, agent_flags, counter, held_state, rule, sock_class, sys_exit_mode, syscalls,
    Decision, EventKind, Method, SocketEvent,
};

use crate::{
    agent::current_agent,
    counters::{count, count_agent},
    events::{event_header, submit_flags, unrecorded},
    fallback::{hold, names::TS_COMPAT},
    judge::sock,
    maps::{EVENTS, SYS_EXIT_MODE, SYS_EXIT_TAIL},
    path::{self, off},
};

/// `AF_PACKET` (include/linux/socket.h).
const AF_PACKET: u32 = 17;
/// `SOCK_PACKET` (include/linux/net.h): `socket(AF_INET, SOCK_PACKET, ..)`
/// is made an `AF_PACKET` socket by the kernel.
const SOCK_PACKET: u32 = 10;
/// The kernel strips `SOCK_NONBLOCK`/`SOCK_CLOEXEC` with this mask.
const SOCK_TYPE_MASK: u32 = 0xf;

/// The `sys_exit` program's filter: a successful `socket` (64-bit number),
/// or an ia32 `socket`/`socketcall`, tail-calls `warden_path_ops` (which
/// never returns here). The task's status is read (a helper call) only
/// for the two ia32 numbers (102 is `getuid` in the 64-bit table).
#[inline(always)]
pub fn dispatch(ctx: &BtfTracePointContext, regs: *const u8, ret: i64) {
    if ret < 0 || !path::offsets_valid() {
        return;
    }
    let orig_ax = off!(pt_regs_orig_ax) as usize;
    // SAFETY: a direct, BTF-checked load at a frozen offset (as file.rs).
    let nr = unsafe { read_volatile(regs.add(orig_ax).cast::<u64>()) };
    if nr != u64::from(syscalls::SOCKET) {
        if nr != u64::from(syscalls::IA32_SOCKETCALL) && nr != u64::from(syscalls::IA32_SOCKET) {
            return;
        }
        let ti_status = off!(task_ti_status) as usize;
        // SAFETY: the typed current task; a direct, BTF-checked load at a
        // frozen offset.
        let status = unsafe {
            let task = bpf_get_current_task_btf() as *const u8;
            read_volatile(task.add(ti_status).cast::<u32>())
        };
        if status & TS_COMPAT == 0 {
            return;
        }
    }
    // SAFETY: the array holds only `warden_path_ops`, a tp_btf/sys_exit
    // program like this one; on failure (slot empty) control returns.
    unsafe { SYS_EXIT_TAIL.tail_call(ctx, 0) };
}

/// In `warden_path_ops`: decides the syscall if it created a socket
/// (whatever its family), and says whether it did, so the caller goes on
/// to the operations on names only for the others.
#[inline(always)]
pub fn decide(regs: *const u8, ret: i64) -> bool {
    if !path::offsets_valid() {
        return false;
    }
    let arg = |field: u64| -> u64 {
        // SAFETY: a direct, BTF-checked load at a frozen offset.
        unsafe { read_volatile(regs.add(field as usize).cast::<u64>()) }
    };
    let nr = arg(off!(pt_regs_orig_ax)) as u32;
    if nr != syscalls::SOCKET && nr != syscalls::IA32_SOCKETCALL && nr != syscalls::IA32_SOCKET {
        return false;
    }
    let ti_status = off!(task_ti_status) as usize;
    // SAFETY: the typed current task; a direct, BTF-checked load.
    let status = unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        read_volatile(task.add(ti_status).cast::<u32>())
    };
    let compat = status & TS_COMPAT != 0;
    let (family, sock_type, protocol) = if !compat && nr == syscalls::SOCKET {
        (
            arg(off!(pt_regs_di)) as u32,
            arg(off!(pt_regs_si)) as u32,
            arg(off!(pt_regs_dx)) as u32,
        )
    } else if compat && nr == syscalls::IA32_SOCKET {
        (
            arg(off!(pt_regs_bx)) as u32,
            arg(off!(pt_regs_cx)) as u32,
            arg(off!(pt_regs_dx)) as u32,
        )
    } else if compat
        && nr == syscalls::IA32_SOCKETCALL
        && arg(off!(pt_regs_bx)) as u32 == syscalls::IA32_SOCKETCALL_SOCKET
    {
        if ret < 0 {
            return true;
        }
        let mut words = [0u32; 3];
        let args = arg(off!(pt_regs_cx)) as u32 as u64;
        // SAFETY: twelve bytes into a local; the helper tolerates any
        // address.
        let got = unsafe {
            generated::bpf_probe_read_user(words.as_mut_ptr().cast(), 12, args as *const _)
        };
        if got != 0 {
            // The arguments the kernel read a moment ago are gone (a
            // sibling thread unmapped them): the family is unknown, so
            // the agent check below fails closed.
            words = [AF_PACKET, 0, 0];
        }
        (words[0], words[1], words[2])
    } else {
        // Not a socket creation (ia32 `socketcall(SYS_BIND)` is a name
        // operation; 41 is `dup` in the ia32 table).
        return false;
    };
    if ret < 0 {
        return true;
    }
    let sock_type = sock_type & SOCK_TYPE_MASK;
    if family != AF_PACKET && sock_type != SOCK_PACKET {
        return true;
    }
    // Where BPF LSM or fmod_ret decides packet sockets at creation, this
    // is not attached for them (the mode bit is cleared): one decision.
    if SYS_EXIT_MODE.get(0).copied().unwrap_or(0) & sys_exit_mode::PACKETS == 0 {
        return true;
    }
    let (cgroup_id, Some(agent)) = current_agent() else {
        return true;
    };
    let class = sock_class::PACKET;
    let (judged, rule_idx) = if agent.flags & agent_flags::REVOKED != 0 {
        (Decision::Deny, rule::REVOKED)
    } else {
        sock::decide(agent.slot, class)
    };
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    let Some(mut entry) = EVENTS.reserve::<SocketEvent>(0) else {
        if !unrecorded(&agent, EventKind::Socket, judged == Decision::Allow) {
            hold::kill_unrecorded();
        }
        return true;
    };
    let (decision, method) = if crate::judge::recorded(agent.flags, judged, rule_idx) {
        // Record mode: written down as judged, not carried out.
        count(counter::ALLOWED);
        (judged, Method::Recorded)
    } else {
        // A socket rule is `allow` or `deny`: no hold to carry out.
        let (decision, method, _) = hold::carry_out(judged, held_state::PAUSED);
        (decision, method)
    };
    entry.write(SocketEvent {
        header: event_header(
            EventKind::Socket,
            decision,
            method,
            rule_idx,
            agent.agent_id,
            agent.policy_gen,
            cgroup_id,
        ),
        // As the kernel made it (and as `lsm_sock.rs` sees it).
        family: AF_PACKET,
        sock_type,
        protocol,
        class,
    });
    entry.submit(submit_flags(
        decision == Decision::Allow || method == Method::Recorded,
        core::mem::size_of::<SocketEvent>() as u64,
    ));
    count(counter::EVENTS);
    true
}
