//! Operations on one name on kernels without BPF LSM: unlink, mkdir,
//! rmdir, symlink (the new name), mknod, chmod, chown, truncate(2),
//! setxattr/removexattr, utime/utimes/utimensat and binding a unix socket
//! to a path, each decided as a `write` of that path by the agent's file
//! rules at `sys_exit`, after it succeeded (64-bit syscall numbers).
//!
//! As `names.rs` (rename, link): after the fact, so a refusal kills the
//! process before the syscall returns and the change stays made; the name
//! is read from the caller's memory (racy against a sibling thread) and
//! resolved on the kernel's path of its directory fd or working directory.
//!
//! A separate program reached by tail call from the `sys_exit` program
//! (`SYS_EXIT_TAIL`), so its path walk does not add to that program's
//! verifier cost; the `sys_exit` program pays one bitmap load per
//! successful syscall to find these.

use core::ptr::{addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    helpers::{bpf_get_current_task_btf, generated},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use warden_common::{
    agent_counter, agent_flags, counter, held_state, path_flags, rule, syscalls, Decision,
    EventKind, Method, NameEvent,
};

use crate::{
    agent::governing_agent,
    counters::{count, count_agent},
    events::{event_header, submit_flags},
    fallback::{
        hold,
        names::{resolve, write_rule, AT_FDCWD, TS_COMPAT},
    },
    maps::{EVENTS, SYS_EXIT_TAIL},
    path::{self, off},
};

/// The `sys_exit` program's filter: a successful syscall whose number is
/// one of these tail-calls `warden_path_ops` (which never returns here).
#[inline(always)]
pub fn dispatch(ctx: &BtfTracePointContext, regs: *const u8, ret: i64) {
    if ret != 0 || !path::offsets_valid() {
        return;
    }
    let orig_ax = off!(pt_regs_orig_ax) as usize;
    // SAFETY: a direct, BTF-checked load at a frozen offset (as file.rs).
    let nr = unsafe { read_volatile(regs.add(orig_ax).cast::<u64>()) };
    if nr >= 512 {
        return;
    }
    let (word, bit) = ((nr / 64) as usize & 7, 1 << (nr % 64));
    if syscalls::PATH_OPS[word] & bit == 0 {
        // Not a 64-bit number of one: an ia32 one? Only then is the task's
        // status read (a helper call), so the 64-bit calls that share those
        // numbers (14 is rt_sigprocmask) pay one more bitmap load.
        if syscalls::IA32_PATH_OPS[word] & bit == 0 {
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

#[btf_tracepoint(function = "sys_exit")]
pub fn warden_path_ops(ctx: BtfTracePointContext) -> i32 {
    // A marked escaped process is killed first (`doomed.rs`). Packet
    // sockets share this program (`packet.rs`): the socket numbers are
    // told apart next, the operations on names decided otherwise.
    if super::doomed::at_sys_exit() {
        return 0;
    }
    if !super::packet::decide(ctx.arg(0), ctx.arg(1)) {
        decide(ctx.arg(0));
    }
    0
}

/// AF_UNIX.
const AF_UNIX: u16 = 1;

#[inline(always)]
fn decide(regs: *const u8) {
    if !path::offsets_valid() {
        return;
    }
    let arg = |field: u64| -> u64 {
        // SAFETY: a direct, BTF-checked load at a frozen offset.
        unsafe { read_volatile(regs.add(field as usize).cast::<u64>()) }
    };
    let nr = arg(off!(pt_regs_orig_ax)) as u32;
    // SAFETY: the typed current task.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let ti_status = off!(task_ti_status) as usize;
    // SAFETY: a direct, BTF-checked load at a frozen offset.
    let status = unsafe { read_volatile(task.add(ti_status).cast::<u32>()) };
    // An ia32 syscall (`int 0x80`, from 32- or 64-bit code): its numbers
    // are other calls in the 64-bit table (10 is mprotect there), its
    // arguments are in `bx, cx, dx` and 32 bits wide (the kernel ignores
    // the high bits, so must this, or they would point the read
    // elsewhere).
    let compat = status & TS_COMPAT != 0;
    let native = if compat {
        syscalls::ia32_native(nr)
    } else {
        nr
    };
    if native == u32::MAX {
        return;
    }
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::FILE) else {
        return;
    };
    let (mut di, mut si, dx) = if compat {
        (
            arg(off!(pt_regs_bx)) as u32 as u64,
            arg(off!(pt_regs_cx)) as u32 as u64,
            arg(off!(pt_regs_dx)) as u32 as u64,
        )
    } else {
        (
            arg(off!(pt_regs_di)),
            arg(off!(pt_regs_si)),
            arg(off!(pt_regs_dx)),
        )
    };
    if compat && nr == syscalls::IA32_SOCKETCALL {
        // socketcall(call, args): only `bind` names a file; its address is
        // the second 32-bit word of the user array `args`.
        if di != u64::from(syscalls::IA32_SOCKETCALL_BIND) {
            return;
        }
        let mut addr = 0u32;
        // SAFETY: four bytes into a local; the helper tolerates any
        // address.
        let got = unsafe {
            generated::bpf_probe_read_user((&mut addr as *mut u32).cast(), 4, (si + 4) as *const _)
        };
        if got != 0 {
            return;
        }
        (di, si) = (0, u64::from(addr));
    }
    // (directory fd, user address of the name)
    let (dfd, upath) = match native {
        syscalls::UNLINK
        | syscalls::MKDIR
        | syscalls::RMDIR
        | syscalls::MKNOD
        | syscalls::CHMOD
        | syscalls::CHOWN
        | syscalls::LCHOWN
        | syscalls::TRUNCATE
        | syscalls::SETXATTR
        | syscalls::LSETXATTR
        | syscalls::REMOVEXATTR
        | syscalls::LREMOVEXATTR
        | syscalls::UTIME
        | syscalls::UTIMES => (AT_FDCWD, di),
        syscalls::SYMLINK => (AT_FDCWD, si),
        syscalls::SYMLINKAT => (si as i32, dx),
        syscalls::BIND => {
            // Only a unix socket bound to a path names a file.
            let mut family = 0u16;
            // SAFETY: two bytes into a local; the helper tolerates any
            // address.
            let got = unsafe {
                generated::bpf_probe_read_user((&mut family as *mut u16).cast(), 2, si as *const _)
            };
            if got != 0 || family != AF_UNIX {
                return;
            }
            let mut first = 0u8;
            // SAFETY: as above.
            unsafe {
                generated::bpf_probe_read_user(
                    (&mut first as *mut u8).cast(),
                    1,
                    (si + 2) as *const _,
                )
            };
            if first == 0 {
                // The abstract namespace: no file.
                return;
            }
            (AT_FDCWD, si + 2)
        }
        _ => {
            // The *at forms: (dirfd, name, ...). A NULL name
            // (utimensat(fd, NULL), futimens) acts on an open descriptor,
            // whose open was decided: not decided again here.
            if si == 0 {
                return;
            }
            (di as i32, si)
        }
    };

    count_agent(agent.agent_id, agent_counter::DECISIONS);
    let Some(s) = path::scratch() else {
        hold::kill_unrecorded();
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<NameEvent>(0) else {
        crate::events::unrecorded(&agent, EventKind::PathOp, false);
        hold::kill_unrecorded();
        return;
    };
    let ev = entry.as_mut_ptr();
    // Parked in the record across the walk: a known constant kept live
    // would make the verifier walk the path once per table.
    // SAFETY: a field of the reserved record, written again below.
    unsafe {
        write_volatile(
            addr_of_mut!((*ev).flags),
            if compat { path_flags::IA32 } else { 0 },
        )
    };
    let b = resolve(s, task as u64, dfd, upath);
    let (deciding, allowed) = write_rule(s, agent.slot, &b, agent.flags);
    let decision = if allowed != 0 {
        Decision::Allow
    } else {
        Decision::Deny
    };
    let (decision, method, kill_failed) = if crate::judge::recorded(agent.flags, decision, deciding)
    {
        // Record mode: written down as judged, not carried out.
        count(counter::ALLOWED);
        (decision, Method::Recorded, 0)
    } else {
        hold::carry_out(decision, held_state::PAUSED)
    };
    // SAFETY: `ev` is a reserved NameEvent; every field is written.
    unsafe {
        let ia32 = read_volatile(addr_of_mut!((*ev).flags));
        (*ev).header = event_header(
            EventKind::PathOp,
            decision,
            method,
            deciding,
            agent.agent_id,
            agent.policy_gen,
            cgroup_id,
        );
        (*ev).syscall = nr;
        (*ev).flags = b.flags | kill_failed | ia32;
        (*ev).old_rule = deciding;
        (*ev).new_rule = rule::DEFAULT;
        (*ev).old_len = b.len;
        (*ev).new_len = 0;
        path::copy_to(core::ptr::addr_of_mut!((*ev).old_path), s);
        (*ev).new_path[0] = 0;
    }
    entry.submit(submit_flags(
        decision == Decision::Allow || method == Method::Recorded,
        core::mem::size_of::<NameEvent>() as u64,
    ));
    count(counter::EVENTS);
}
