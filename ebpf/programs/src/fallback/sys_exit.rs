//! The one `tp_btf/sys_exit` program: it stops threads a network hook held,
//! guards threads a fallback hold stopped (`hold.rs`), and decides agents'
//! file opens (`file.rs`).
//!
//! One attachment rather than two: every program attached to `sys_exit`
//! costs every syscall on the machine its dispatch (measured here: about
//! 105 ns per syscall with an empty program, `getppid` 1.5x, most of it
//! the kernel's traced syscall path that any attachment turns on), so two
//! programs would pay it twice. The daemon attaches it only while some agent needs it (a policy
//! with file rules or holds, or a hold still pending) and says which parts
//! to run in `SYS_EXIT_MODE`, so a machine with file rules and no holds
//! never pays for the `HELD` lookup, and one with holds only never looks at
//! opens. With holds, the lookup is made only where a hold can be: a
//! syscall failed with ERESTARTNOINTR (or EPERM: a budget kill), or while
//! a thread is paused.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use warden_common::{sys_exit_mode, EPERM, ERESTARTNOINTR};

use crate::{
    fallback::{cache, doomed, file, hold, names, packet, path_ops},
    maps::SYS_EXIT_MODE,
};

#[btf_tracepoint(function = "sys_exit")]
pub fn warden_sys_exit(ctx: BtfTracePointContext) -> i32 {
    // A process an outsider moved out of its agent dies here (a tail
    // call, only while some process is marked: one inlined array read).
    doomed::dispatch(&ctx);
    // An array lookup the verifier inlines: no helper call.
    let mode = SYS_EXIT_MODE.get(0).copied().unwrap_or(0);
    // sys_exit(struct pt_regs *regs, long ret)
    let ret: i64 = ctx.arg(1);
    if mode & sys_exit_mode::HOLDS != 0 {
        // A network hook's mark is only ever for a syscall it failed with
        // ERESTARTNOINTR (a hold) or EPERM (a `then: kill` budget's
        // refusal), and paused threads are flagged: every other syscall
        // exit skips the `HELD` lookup (a register compare and a direct
        // load).
        let paused = SYS_EXIT_MODE.get(1).copied().unwrap_or(1) != 0;
        if ret == i64::from(ERESTARTNOINTR) || ret == -i64::from(EPERM) || paused {
            hold::at_sys_exit();
        }
    }
    if mode & sys_exit_mode::FILES != 0 {
        cache::note_path_change(ctx.arg(0), ret);
        file::decide(&ctx, ctx.arg(0), ret);
        names::decide(ctx.arg(0), ret);
        // Last: a tail call does not come back.
        path_ops::dispatch(&ctx, ctx.arg(0), ret);
    }
    if mode & sys_exit_mode::PACKETS != 0 {
        // Packet sockets (a tail call to the same program; never with the
        // one above: their numbers differ, and ia32 `socketcall` goes
        // there only when it returned 0, where `packet.rs` is asked first).
        packet::dispatch(&ctx, ctx.arg(0), ret);
    }
    0
}
