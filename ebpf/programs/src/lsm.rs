//! Exec and file-open decisions through BPF LSM, on kernels that run it
//! (`bpf` in `/sys/kernel/security/lsm`). The daemon attaches these instead
//! of the tracepoint fallback (`fallback/exec.rs`, the open part of
//! `sys_exit`).
//!
//! An LSM hook runs before the action takes effect and can fail it, so a
//! denial is an error return, not a kill: `execve` fails with EPERM before
//! its point of no return (the old program goes on), `open` fails with
//! EPERM before a file descriptor exists (no O_TRUNC, no fd to race for).
//! The judges are the fallback's (`judge::exec`, `judge::file`): the same
//! maps, the same path walk on the kernel's own objects (`bprm->file`, the
//! `struct file` being opened), never user memory.
//!
//! Return values: the verifier accepts only [-4095, 0] from these programs.
//! A non-zero `ret` (the previous LSM program's verdict on this hook) is
//! passed through untouched: another LSM already refused the action.
//!
//! These are global hooks: every exec and every open on the machine runs
//! them. The agent cgroup lookup comes first (`governing_agent`), and
//! everything else returns 0 after it. For an agent, internal errors fail
//! closed: EPERM.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal_thread},
    macros::lsm,
    maps::ring_buf::RingBufEntry,
    programs::LsmContext,
};
use warden_common::{
    access, agent_counter, agent_flags, counter, syscalls, AgentInfo, Decision, EventKind,
    ExecEvent, HoldKey, Method, OpenEvent, SummaryKey, EPERM, ERESTARTNOINTR, FLAG_FMODE_EXEC,
    FMODE_NOACCOUNT, SIGSTOP,
};

use crate::{
    agent::governing_agent,
    counters::{count, count_agent},
    events::{
        counted_repeat, file_denial_key, fill_exec, fill_open, first_recorded, submit_flags,
        summary_key, unrecorded,
    },
    fallback::cache,
    judge::{exec, file},
    maps::{EVENTS, GRANTS},
    path::{self, cache_state, off},
};

const ALLOW: i32 = 0;
const DENY: i32 = -EPERM;

// LSM_HOOK(int, 0, bprm_check_security, struct linux_binprm *bprm)
#[lsm(hook = "bprm_check_security")]
pub fn warden_lsm_exec(ctx: LsmContext) -> i32 {
    decide_exec(ctx.arg(0), ctx.arg(1), Method::LsmDeny)
}

/// The exec decision at `bprm` (a `struct linux_binprm *`), shared with
/// `fmod_ret/security_bprm_check` (`fmod_ret.rs`): `previous` is the verdict
/// of the hook's earlier programs, `deny` how a refusal is recorded.
#[inline(always)]
pub(crate) fn decide_exec(bprm: u64, previous: i32, deny: Method) -> i32 {
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::EXEC) else {
        return ALLOW;
    };
    // Called once per binary handler round: for a `#!` script with the
    // script, then with its interpreter. Both must be allowed.
    let Some(s) = path::scratch() else {
        count(counter::DENIED);
        return DENY;
    };
    let j = exec::judge(s, cgroup_id, &agent, bprm);
    let record = crate::judge::recorded(agent.flags, j.decision, j.rule_idx);
    let c = &j.carry;
    let repeat = match j.decision {
        Decision::Deny => file_denial_key(
            &agent,
            j.decision,
            EventKind::Exec,
            j.rule_idx,
            0,
            c.dev,
            c.ino,
        ),
        _ => summary_key(
            &agent,
            j.decision,
            EventKind::Exec,
            j.rule_idx,
            0,
            c.dev,
            c.ino,
            [0; 16],
        ),
    };
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    let mut entry = match reserve::<ExecEvent>(&agent, EventKind::Exec, j.decision, record, &repeat)
    {
        Ok(entry) => entry,
        Err(ret) => return ret,
    };
    let (decision, method, ret) = carry_out(j.decision, deny, record, || {
        let c = &j.carry;
        HoldKey::exec(c.cgroup_id, current_tid(), c.dev, c.ino)
    });
    fill_exec(entry.as_mut_ptr(), &j, decision, method, j.flags, s);
    submit(entry, method);
    ret
}

/// No action without a record: reserves the event before anything is
/// allowed. Without room, the action is refused, or allowed and counted
/// where the agent's policy says so (`Err`: what the hook returns). A
/// repeat of an action already recorded is counted instead (`repeat`, see
/// `events::counted_repeat`): allowed, or refused if it is a denial's
/// (`file_denial_key`). The caller has counted the decision.
#[inline(always)]
fn reserve<T>(
    agent: &AgentInfo,
    kind: EventKind,
    judged: Decision,
    record: bool,
    repeat: &Option<SummaryKey>,
) -> Result<RingBufEntry<T>, i32> {
    if counted_repeat(repeat) {
        if judged == Decision::Deny && !record {
            count(counter::DENIED);
            return Err(DENY);
        }
        count(counter::ALLOWED);
        return Err(ALLOW);
    }
    match EVENTS.reserve::<T>(0) {
        Some(entry) => {
            first_recorded(repeat);
            Ok(entry)
        }
        None if unrecorded(agent, kind, judged == Decision::Allow || record) => {
            count(counter::ALLOWED);
            Err(ALLOW)
        }
        None => {
            count(counter::DENIED);
            Err(DENY)
        }
    }
}

/// Carries out a judged decision: (decision, method, the hook's return).
/// A hold is on the action `key` names; `deny` is how a refusal by this
/// hook is recorded (`LsmDeny`, `FmodRetDeny`).
#[inline(always)]
fn carry_out(
    judged: Decision,
    deny: Method,
    record: bool,
    key: impl FnOnce() -> HoldKey,
) -> (Decision, Method, i32) {
    if record {
        // Record mode: written down as judged, not carried out.
        return (judged, Method::Recorded, ALLOW);
    }
    match judged {
        Decision::Allow => (Decision::Allow, Method::Allow, ALLOW),
        Decision::Hold => hold(&key(), deny),
        Decision::Deny => (Decision::Deny, deny, DENY),
    }
}

/// Counts the filled record's outcome and submits it.
#[inline(always)]
fn submit<T>(entry: RingBufEntry<T>, method: Method) {
    let allowed = count_outcome(method);
    entry.submit(submit_flags(allowed, core::mem::size_of::<T>() as u64));
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Counts a recorded LSM decision by how it was carried out, and says
/// whether it let the action go ahead (allowed events do not wake the
/// daemon, see `submit_flags`).
#[inline(always)]
fn count_outcome(method: Method) -> bool {
    count(counter::EVENTS);
    let allowed = matches!(method, Method::Allow | Method::Approved | Method::Recorded);
    count(match method {
        _ if allowed => counter::ALLOWED,
        Method::Held => counter::HELD,
        _ => counter::DENIED,
    });
    allowed
}

/// A hold rule matched. If a human has decided on exactly this action
/// (`key`: this thread, this binary or file and access), apply the
/// decision once; otherwise stop the thread inside the syscall: SIGSTOP is
/// pending when it returns ERESTARTNOINTR, so the thread stops before user
/// space and the syscall restarts (and the hook decides again) when it is
/// continued. Nothing of the exec or open has happened yet, so a SIGCONT
/// only brings the thread back here.
#[inline(always)]
pub(crate) fn hold(key: &HoldKey, deny: Method) -> (Decision, Method, i32) {
    // SAFETY: plain data; a concurrent update yields the old or new value.
    match unsafe { GRANTS.get(key) }.copied() {
        Some(granted) => {
            // Consume it: a grant opens one action, once.
            let _ = GRANTS.remove(key);
            if granted == Decision::Allow as u32 {
                (Decision::Allow, Method::Approved, ALLOW)
            } else {
                (Decision::Deny, Method::Rejected, DENY)
            }
        }
        None => {
            // SAFETY: a plain helper call on the current thread. It fails
            // for PID 1, kernel threads and exiting tasks: then errno 513
            // would leak to user space, so refuse instead.
            if unsafe { bpf_send_signal_thread(SIGSTOP) } == 0 {
                (Decision::Hold, Method::Held, ERESTARTNOINTR)
            } else {
                count(counter::HOLD_FAILED);
                (Decision::Deny, deny, DENY)
            }
        }
    }
}

// LSM_HOOK(int, 0, file_open, struct file *file)
#[lsm(hook = "file_open")]
pub fn warden_lsm_open(ctx: LsmContext) -> i32 {
    decide_open(ctx.arg(0), ctx.arg(1), Method::LsmDeny)
}

/// The open decision on `file` (the `struct file *` being opened), shared
/// with `fmod_ret/security_file_open` (`fmod_ret.rs`); `previous` and
/// `deny` as in `decide_exec`.
#[inline(always)]
pub(crate) fn decide_open(file: u64, previous: i32, deny: Method) -> i32 {
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::FILE) else {
        return ALLOW;
    };
    if !path::offsets_valid() {
        // The daemon attaches this only with offsets; fail closed anyway.
        count(counter::DENIED);
        return DENY;
    }
    let f_flags: u32 = path::read(file, off!(file_f_flags));
    if f_flags & FLAG_FMODE_EXEC != 0 {
        // execve's own open of the binary (or of its ELF interpreter):
        // the exec rules decide it at bprm_check_security, as the
        // fallback does; open(2) cannot set this flag.
        return ALLOW;
    }
    let f_mode: u32 = path::read(file, off!(file_f_mode));
    if f_mode & FMODE_NOACCOUNT != 0 {
        // The kernel's own open of the real file below an overlay file
        // the agent opened: that one was decided a moment ago, by the
        // path the agent used; this one's path is overlayfs' internal one.
        return ALLOW;
    }
    let requested = f_mode & (access::READ | access::WRITE);
    if requested == 0 && agent.flags & agent_flags::REVOKED == 0 {
        // Neither reads nor writes (as stat()).
        return ALLOW;
    }
    if agent.flags & agent_flags::REVOKED == 0 && path::not_a_file(file) {
        // A pipe or socket reopened through /dev/fd/N: not a file.
        return ALLOW;
    }
    // A repeat of an allow the decision cache still vouches for, whose
    // record would only be counted: counted without the walk
    // (`cache::serve`, shared with the fallback's open). The epoch moves on
    // after renames and mount changes (`cache_epoch.rs`).
    let Some((epoch, state)) = cache::serve(&agent, file, requested) else {
        return ALLOW;
    };
    let Some(s) = path::scratch() else {
        count(counter::DENIED);
        return DENY;
    };
    let hook = if matches!(deny, Method::FmodRetDeny) {
        syscalls::FMODRET_HOOK
    } else {
        syscalls::LSM_HOOK
    };
    // Verifier: kept out of registers across the walk (see `path::Carry`).
    path::park_cache(s, epoch, state);
    let j = file::judge(s, cgroup_id, &agent, file, requested, hook, 0);
    let (epoch, state) = path::unpark_cache(s);
    if j.decision == Decision::Allow && state & cache_state::ON != 0 {
        cache::remember(epoch, &agent, file, j.carry.access, j.rule_idx);
    }
    let record = crate::judge::recorded(agent.flags, j.decision, j.rule_idx);
    let c = &j.carry;
    let repeat = match j.decision {
        Decision::Deny => file_denial_key(
            &agent,
            j.decision,
            EventKind::Open,
            j.rule_idx,
            c.access,
            c.dev,
            c.ino,
        ),
        _ => summary_key(
            &agent,
            j.decision,
            EventKind::Open,
            j.rule_idx,
            c.access,
            c.dev,
            c.ino,
            [0; 16],
        ),
    };
    if state & cache_state::COUNTED == 0 {
        count_agent(agent.agent_id, agent_counter::DECISIONS);
    }
    let mut entry = match reserve::<OpenEvent>(&agent, EventKind::Open, j.decision, record, &repeat)
    {
        Ok(entry) => entry,
        Err(ret) => return ret,
    };
    let (decision, method, ret) = carry_out(j.decision, deny, record, || {
        let c = &j.carry;
        HoldKey::file(c.cgroup_id, current_tid(), c.dev, c.ino, c.access)
    });
    fill_open(entry.as_mut_ptr(), &j, decision, method, j.flags, s);
    submit(entry, method);
    ret
}
