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
//! `judge` and `fill_event` are shared with the BPF LSM open hook
//! (`lsm.rs`), which decides from the same rules and fails the open instead.

use core::ptr::read_volatile;

use aya_ebpf::helpers::bpf_get_current_task_btf;
use warden_common::{
    access, agent_counter, agent_flags, counter, held_state, rule, syscalls, AgentInfo, Decision,
    EventKind, FileRule, Method, OpenEvent, PathRule,
};

use crate::{
    count, count_agent, governing_agent, hold, unrecorded,
    path::{self, off, Carry, Scratch, UNRESOLVED_FLAGS},
    submit_flags, EVENTS, FILE_RULES,
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
pub fn decide(regs: *const u8, ret: i64) {
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

    let Some(s) = path::scratch() else {
        hold::kill_unrecorded();
        return;
    };
    let j = judge(s, cgroup_id, &agent, file, requested, nr, compat as u32);
    let decision = j.decision;

    // No open without a record: reserve the event before allowing.
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        if unrecorded(&agent, decision == Decision::Allow) {
            count(counter::ALLOWED);
        } else {
            hold::kill_unrecorded();
        }
        return;
    };
    // A hold stops the thread with the fd in hand, before user space sees
    // it: a human decides whether it gets it (continue) or not (kill).
    let (decision, method, kill_failed) = hold::carry_out(decision, held_state::PAUSED);
    fill_event(entry.as_mut_ptr(), &j, decision, method, j.flags | kill_failed, s);
    entry.submit(submit_flags(
        decision == Decision::Allow,
        core::mem::size_of::<OpenEvent>() as u64,
    ));
    count(counter::EVENTS);
}

/// What the policy says about an open, before anyone carries it out.
pub struct Judged {
    pub decision: Decision,
    pub rule_idx: u32,
    /// The rule that decided each requested access (`rule::DEFAULT` for
    /// one not requested).
    pub read_rule: u32,
    pub write_rule: u32,
    /// `path_flags` of the resolution.
    pub flags: u32,
    /// Bytes of the resolved path (it is in the scratch space).
    pub len: u32,
    pub carry: Carry,
}

/// Resolves an opened `struct file` into the scratch space and decides
/// each requested access (`access` bits) from the agent's file rules: the
/// open is denied if any access is. Shared by the `sys_exit` fallback and
/// the LSM hook, so both decide the same way. `syscall`/`compat` only go
/// into the event.
#[inline(always)]
pub fn judge(
    s: &mut Scratch,
    cgroup_id: u64,
    agent: &AgentInfo,
    file: u64,
    requested: u32,
    syscall: u32,
    compat: u32,
) -> Judged {
    let facts = path::file_facts(file);
    path::park(
        s,
        Carry {
            cgroup_id,
            ino: facts.ino,
            filename: 0,
            agent_id: agent.agent_id,
            policy_gen: agent.policy_gen,
            slot: agent.slot,
            agent_flags: agent.flags,
            dev: facts.dev,
            flags: facts.flags,
            access: requested,
            syscall,
            compat,
            _pad: 0,
        },
    );
    let built = path::build(s, facts.dentry, facts.vfsmount);
    let c = path::unpark(s);
    let flags = c.flags | built.flags;
    let requested = c.access;

    let mut read_rule = rule::DEFAULT;
    let mut write_rule = rule::DEFAULT;
    let (decision, rule_idx) = if c.agent_flags & agent_flags::REVOKED != 0 {
        (Decision::Deny, rule::REVOKED)
    } else if flags & UNRESOLVED_FLAGS != 0 {
        // A path we could not build (too deep, or the fd no longer holds a
        // file: a sibling thread closed it) is not allowed.
        (Decision::Deny, rule::UNRESOLVED)
    } else {
        let rules: FileRule = match FILE_RULES.get(path::key(s, c.slot, &built)) {
            Some(r) => *r,
            None => FileRule {
                read: PathRule::DEFAULT,
                write: PathRule::DEFAULT,
            },
        };
        // Each requested access is decided on its own; the strictest
        // decides the open (deny, then hold, then allow), and on a tie the
        // write, the riskier.
        let mut out = (Decision::Allow, rule::DEFAULT);
        if requested & access::READ != 0 {
            read_rule = rules.read.rule_idx;
            out = (kernel_decision(rules.read.decision), read_rule);
        }
        if requested & access::WRITE != 0 {
            write_rule = rules.write.rule_idx;
            let write = (kernel_decision(rules.write.decision), write_rule);
            if strictness(write.0) >= strictness(out.0) {
                out = write;
            }
        }
        out
    };
    Judged {
        decision,
        rule_idx,
        read_rule,
        write_rule,
        flags,
        len: built.len,
        carry: c,
    }
}

/// A rule's stored decision; anything but allow or hold is a denial.
#[inline(always)]
fn kernel_decision(stored: u8) -> Decision {
    match stored {
        1 => Decision::Allow,
        3 => Decision::Hold,
        _ => Decision::Deny,
    }
}

#[inline(always)]
fn strictness(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Hold => 1,
        _ => 2,
    }
}

/// Fills a reserved open event.
#[inline(always)]
pub fn fill_event(
    ev: *mut OpenEvent,
    j: &Judged,
    decision: Decision,
    method: Method,
    flags: u32,
    s: &Scratch,
) {
    let c = &j.carry;
    // SAFETY: `ev` points at a reserved OpenEvent; every field is written.
    unsafe {
        (*ev).header = crate::event_header(
            EventKind::Open,
            decision,
            method,
            j.rule_idx,
            c.agent_id,
            c.policy_gen,
            c.cgroup_id,
        );
        (*ev).dev = c.dev;
        (*ev).flags = flags;
        (*ev).ino = c.ino;
        (*ev).path_len = j.len;
        (*ev).access = c.access;
        (*ev).syscall = c.syscall;
        (*ev).syscall_compat = c.compat;
        (*ev).read_rule = j.read_rule;
        (*ev).write_rule = j.write_rule;
        path::copy_to(core::ptr::addr_of_mut!((*ev).path), s);
    }
}
