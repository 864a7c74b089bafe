//! Holds on the fallback, where the action already took effect: the
//! thread is *paused* (ptrace-seized so a SIGCONT cannot continue it), and
//! the daemon carries out the decision itself by continuing or killing it.

use std::time::Duration;

use nix::{
    sys::{
        ptrace,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};
use warden_common::{held_state, Decision, HOLD_FAMILY_FILE};

use super::{
    entries::{approval_entry, key_from_hex, paused_outcome, unused_grant_outcome},
    resume, Holds,
};
use crate::{
    actor::Actor,
    approvals::{Approval, ApprovalError, Decided, Status},
    clock,
    kernel::Kernel,
};

/// A thread the fallback paused after its action took effect.
pub(super) fn is_paused(kernel: &Kernel, tid: u32) -> bool {
    kernel
        .held(tid)
        .is_some_and(|h| matches!(h.state, held_state::PAUSED | held_state::EXEC_STOPPING))
}

/// Collects a seized thread's trace notifications (stops are ignored),
/// waiting up to `patience_ms` for its exit; true once it has exited (or
/// is no longer this thread's to wait for).
pub(super) fn collect_exit(tid: u32, patience_ms: u32) -> bool {
    let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
    let mut waited = 0;
    loop {
        match waitpid(Pid::from_raw(tid as i32), Some(flags)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => return true,
            Ok(WaitStatus::StillAlive) if waited < patience_ms => {
                std::thread::sleep(Duration::from_millis(1));
                waited += 1;
            }
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) => {}
        }
    }
}

/// The thread exists and has not exited.
pub(super) fn thread_alive(pid: u32, tid: u32) -> bool {
    use procfs::process::{ProcState, Process};
    let (Ok(pid), Ok(tid)) = (i32::try_from(pid), i32::try_from(tid)) else {
        return false;
    };
    let state = Process::new(pid)
        .and_then(|p| p.task_from_tid(tid))
        .and_then(|t| t.stat())
        .and_then(|s| s.state());
    !matches!(state, Ok(ProcState::Zombie | ProcState::Dead) | Err(_))
}

impl Holds {
    /// Called first for every hold event, before anything is written: if
    /// the fallback paused the thread, seize it so that a SIGCONT can no
    /// longer continue it. Seizing a thread that is stopped, or about to
    /// stop, turns its stop into a ptrace stop.
    pub fn seize_if_paused(&mut self, kernel: &Kernel, pid: u32, tid: u32) {
        if self.no_ptrace || self.seized.contains_key(&tid) || !is_paused(kernel, tid) {
            return;
        }
        match ptrace::seize(Pid::from_raw(tid as i32), ptrace::Options::empty()) {
            Ok(()) => {
                self.seized.insert(tid, pid);
            }
            Err(e) => tracing::warn!(
                tid,
                error = %e,
                "cannot ptrace the paused thread: a SIGCONT before the decision gets it killed"
            ),
        }
    }

    /// Detaches a seized thread, leaving it stopped (or continued, if a
    /// SIGCONT arrived meanwhile: the kernel's guard decides then).
    fn release(&mut self, tid: u32) {
        if self.seized.remove(&tid).is_some() {
            if let Err(e) = ptrace::detach(Pid::from_raw(tid as i32), None) {
                tracing::warn!(tid, error = %e, "ptrace detach");
            }
        }
    }

    /// Kills a paused thread's process and, if this thread traces it,
    /// reaps the trace so the parent sees the exit.
    fn kill_paused(&mut self, kernel: &mut Kernel, pid: u32, tid: u32) {
        // SAFETY: tgkill; the pid/tid pair guards against a recycled tid.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                pid as libc::c_int,
                tid as libc::c_int,
                libc::SIGKILL,
            )
        };
        if self.seized.remove(&tid).is_some() {
            collect_exit(tid, 1000);
        }
        if let Err(e) = kernel.forget_held(tid) {
            tracing::warn!(tid, error = %crate::error_chain(&e), "forget the killed thread");
        }
    }

    /// Paused threads that ended without a decision (killed by their
    /// agent, by `warden kill`, or by the kernel's guard): their holds are
    /// finished and recorded. Run on the enforcer's tick.
    pub fn reap(&mut self, kernel: &mut Kernel) -> Result<(), ApprovalError> {
        // Collect the trace notifications of seized threads (stops are
        // ignored; exits leave the thread for the check below).
        self.seized.retain(|&tid, _| !collect_exit(tid, 0));
        for a in self.store.list(false)? {
            if !is_paused(kernel, a.job.tid) || thread_alive(a.job.pid, a.job.tid) {
                continue;
            }
            let d = Decided {
                status: Status::Rejected,
                by: "warden",
                role: "process-exit",
                at_ns: clock::now_ns(),
                reason: Some("the held process ended before a decision"),
            };
            if self.store.decide(a.id, &d)? {
                self.seized.remove(&a.job.tid);
                let _ = kernel.forget_held(a.job.tid);
                self.store.mark_applied(a.id)?;
                self.store.set_final_status(a.id, "ended")?;
                let ended = paused_outcome(&a, false, "ended", "the process ended while held");
                for entry in [approval_entry(&Actor::current(), &a, &d), ended] {
                    self.record(entry, a.id, "record the end of a hold");
                }
            }
        }
        // Decisions the hook never applied because the thread did not come
        // back to it: it exited, or (with BPF LSM) the restarted syscall
        // failed before the hook, as an exclusive create does on the file
        // it created before it was held. The grant is withdrawn, so that a
        // later thread given the same id cannot use it, and the hold ends.
        for a in self.store.granted_without_outcome()? {
            if thread_alive(a.job.pid, a.job.tid) {
                continue;
            }
            let Some(key) = key_from_hex(&a.hold_key) else {
                continue;
            };
            match kernel.withdraw_grant(&key) {
                Ok(true) => {}
                // Consumed: the hook's outcome event records it.
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(id = a.id, error = %crate::error_chain(&e), "withdraw an unused grant");
                    continue;
                }
            }
            self.store.set_final_status(a.id, "ended")?;
            self.record(unused_grant_outcome(&a), a.id, "record an unused grant");
        }
        Ok(())
    }

    /// Pauses are re-seized after a restart (the previous daemon's trace
    /// ended with it).
    pub fn reseize(&mut self, kernel: &Kernel) -> Result<(), ApprovalError> {
        for a in self.store.list(false)? {
            self.seize_if_paused(kernel, a.job.pid, a.job.tid);
        }
        Ok(())
    }

    /// Carries out a decision on a paused thread (its action already took
    /// effect): continue it, or kill it. A conflict is decided again here,
    /// from the agent's rules in force now, by the kernel's own lookup; a
    /// rule that holds again refuses it (the agent's retry is then held
    /// under the new policy).
    pub(super) fn apply_paused(&mut self, kernel: &mut Kernel, a: &Approval, status: Status) {
        let (pid, tid) = (a.job.pid, a.job.tid);
        let (go, how) = match status {
            Status::Pending => return,
            Status::Approved => (true, "approved: the thread was continued".to_string()),
            Status::Rejected | Status::Expired => (
                false,
                format!("{}: the process was killed", status.as_str()),
            ),
            Status::Conflict => {
                let key = key_from_hex(&a.hold_key);
                let access = key
                    .filter(|k| k.family == HOLD_FAMILY_FILE)
                    .map(|k| u32::from(k.port));
                let now =
                    key.and_then(|k| kernel.decide_path_now(k.cgroup_id, access, &a.job.target));
                let go = now == Some(Decision::Allow);
                let said = match now {
                    Some(Decision::Allow) => "allow: the thread was continued",
                    Some(Decision::Hold) => "hold again: refused, the process was killed (a retry is held under the new policy)",
                    _ => "deny: the process was killed",
                };
                (
                    go,
                    format!("decided again under the policy in force: {said}"),
                )
            }
        };
        let final_status = if go { "executed" } else { "refused" };
        // Before the kill: the entry reads the process's facts.
        let outcome = paused_outcome(a, go, final_status, &how);
        // A refusal from the kill on, until it is written: the command may
        // end with the kill, and its explainer's barrier waits for this.
        let pending = (!go)
            .then(|| self.writer.pending().hold(&a.job.agent, 1))
            .flatten();
        if go {
            // Out of `HELD` first, so the guards let it be.
            if let Err(e) = kernel.forget_held(tid) {
                // Still paused; it can be decided again or expire.
                tracing::error!(id = a.id, error = %crate::error_chain(&e), "release the paused thread in the kernel");
                return;
            }
            self.release(tid);
            resume(pid, tid);
        } else {
            self.kill_paused(kernel, pid, tid);
        }
        if let Err(e) = self
            .store
            .mark_applied(a.id)
            .and_then(|()| self.store.set_final_status(a.id, final_status))
        {
            tracing::error!(id = a.id, error = %crate::error_chain(&e), "mark approval applied");
        }
        self.record(outcome, a.id, "record hold outcome");
        drop(pending);
    }
}
