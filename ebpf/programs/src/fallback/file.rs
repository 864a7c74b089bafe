//! File-open decisions on kernels without BPF LSM, at `sys_exit` of the
//! open syscalls (called from `sys_exit.rs`).
//!
//! At the exit of open/openat/openat2/creat/open_by_handle_at (and their
//! ia32 numbers: `int 0x80` works from 64-bit code) the new fd is
//! installed and user space has not run yet. The program resolves the fd to
//! the kernel's `struct file`, takes the access from `f_mode` and the path
//! from the walk, and kills the process with SIGKILL on a denial, before
//! the syscall returns. This is detect-and-kill, not a barrier: the open's
//! own side effects (O_CREAT, O_TRUNC) have happened, and a sibling thread
//! of a multi-threaded process can use the fd in the moment between
//! `fd_install` and this hook. A hold stops the thread here (SIGSTOP,
//! `hold::pause`) with the fd installed but unseen by user space; approval
//! continues it, rejection kills it.
//!
//! Cost order matters: this runs at every syscall exit of every process
//! while attached. The syscall number and table are checked first with
//! direct loads (no helper call), then the agent cgroup; everything else
//! returns.
//!
//! The judge (`judge::file`) and the record (`events::fill_open`) are
//! shared with the BPF LSM open hook (`lsm.rs`), which decides from the
//! same rules and fails the open instead.

use core::ptr::read_volatile;

use aya_ebpf::{helpers::bpf_get_current_task_btf, programs::BtfTracePointContext};
use warden_common::{
    access, agent_flags, held_state, syscalls, AgentInfo, Decision, EventKind, OpenEvent,
};

use crate::{
    agent::governing_agent,
    events::fill_open,
    fallback::{
        cache,
        carry::{self, Verdict},
        hold, shadow,
    },
    judge::file::{judge, Judged},
    path::{self, cache_state, off, Scratch},
};

/// `thread_info.status` bit set during an ia32 syscall (x86).
const TS_COMPAT: u32 = 0x0002;

/// Any number that is an open in either table (the table is checked after).
#[inline(always)]
fn maybe_open(nr: u32) -> bool {
    let native = nr & !syscalls::X32_BIT;
    matches!(
        native,
        syscalls::OPENAT
            | syscalls::OPEN
            | syscalls::OPENAT2
            | syscalls::CREAT
            | syscalls::OPEN_BY_HANDLE_AT
    ) || matches!(
        nr,
        syscalls::IA32_OPEN
            | syscalls::IA32_CREAT
            | syscalls::IA32_OPENAT
            | syscalls::IA32_OPEN_BY_HANDLE_AT
    )
}

/// Decides the open (if this syscall is one) whose exit this is.
/// `regs` is the tracepoint's `struct pt_regs *`, `ret` the syscall's
/// return value (the new fd).
#[inline(always)]
pub fn decide(ctx: &BtfTracePointContext, regs: *const u8, ret: i64) {
    if ret < 0 || !path::offsets_valid() {
        // Without offsets the daemon never sets FILE on an agent.
        return;
    }
    // SAFETY: `regs` is the tracepoint's typed `struct pt_regs *` and the
    // offset is a frozen constant, so this is a direct load the verifier
    // checks against the kernel's BTF (no helper call on the hot path).
    let orig_ax = off!(pt_regs_orig_ax) as usize;
    let nr = unsafe { read_volatile(regs.add(orig_ax).cast::<u64>()) } as u32;
    if !maybe_open(nr) {
        return;
    }
    // Which table the number is from: a 64-bit process can make ia32
    // syscalls, where 5 is open (fstat in the 64-bit table). Checked
    // before the cgroup lookup (a direct load, no helper), so a 64-bit
    // fstat or lseek outside agents stops here.
    // SAFETY: as above, a direct load from the typed current task.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: a direct, BTF-checked load at a frozen offset.
    let ti_status = off!(task_ti_status) as usize;
    let status = unsafe { read_volatile(task.add(ti_status).cast::<u32>()) };
    let compat = status & TS_COMPAT != 0;
    let is_open = if compat {
        matches!(
            nr,
            syscalls::IA32_OPEN
                | syscalls::IA32_CREAT
                | syscalls::IA32_OPENAT
                | syscalls::IA32_OPEN_BY_HANDLE_AT
                | syscalls::IA32_OPENAT2
        )
    } else {
        matches!(
            nr & !syscalls::X32_BIT,
            syscalls::OPENAT
                | syscalls::OPEN
                | syscalls::OPENAT2
                | syscalls::CREAT
                | syscalls::OPEN_BY_HANDLE_AT
        )
    };
    if !is_open {
        return;
    }
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::FILE) else {
        return;
    };

    // fd -> struct file, through current->files->fdt.
    let task = task as u64;
    let files: u64 = path::read(task, off!(task_files));
    let fdt: u64 = path::read(files, off!(files_fdt));
    let max_fds: u32 = path::read(fdt, off!(fdtable_max_fds));
    let fd_array: u64 = path::read(fdt, off!(fdtable_fd));
    let fd = ret as u64;
    let file: u64 = if fd < u64::from(max_fds) {
        path::read(fd_array, fd * 8)
    } else {
        0
    };
    let f_mode: u32 = path::read(file, off!(file_f_mode));
    let requested = f_mode & (access::READ | access::WRITE);
    let revoked = agent.flags & agent_flags::REVOKED != 0;
    if requested == 0 && file != 0 && !revoked {
        // O_PATH and the like: neither reads nor writes (as stat()).
        return;
    }
    if !revoked && path::not_a_file(file) {
        // A pipe or socket reopened through /dev/fd/N: not a file.
        return;
    }

    // A repeat of an allow the cache still vouches for, whose record would
    // only be counted: counted without the walk.
    let Some((epoch, state)) = cache::serve(&agent, file, requested) else {
        return;
    };

    let Some(s) = path::scratch() else {
        hold::kill_unrecorded();
        return;
    };
    // Verifier: kept out of registers across the walk (see `path::Carry`).
    path::park_cache(s, epoch, state);
    let j = judge(s, cgroup_id, &agent, file, requested, nr, compat as u32);
    let decision = j.decision;
    let (epoch, state) = path::unpark_cache(s);
    if decision == Decision::Allow && state & cache_state::ON != 0 {
        cache::remember(epoch, &agent, file, j.carry.access, j.rule_idx);
    }
    // A `shadow:` candidate's lookup, after this open is carried out: the
    // handoff to its tail call (`fallback::shadow`), written for every
    // open so a stale one is never taken.
    let pending = shadow::wanted(j.carry.agent_flags, agent_flags::SHADOW_FILE, j.flags);
    path::park_shadow(
        s,
        pending as u32,
        j.len,
        j.flags,
        (j.decision as u32, j.rule_idx),
    );
    carry_out(&agent, &j, state, s);
    shadow::dispatch_open(ctx, s);
}

/// Records and carries out a judged open (its first, or a count). A hold
/// stops the thread with the fd in hand, before user space sees it: a
/// human decides whether it gets it (continue) or not (kill).
#[inline(always)]
fn carry_out(agent: &AgentInfo, j: &Judged, state: u32, s: &Scratch) {
    let v = Verdict {
        decision: j.decision,
        rule_idx: j.rule_idx,
        flags: j.flags,
        kind: EventKind::Open,
        access: j.carry.access,
        dev: j.carry.dev,
        ino: j.carry.ino,
        pause_state: held_state::PAUSED,
        count_decision: state & cache_state::COUNTED == 0,
    };
    carry::carry_out::<OpenEvent>(agent, &v, |ev, decision, method, flags| {
        fill_open(ev, j, decision, method, flags, s)
    });
}
