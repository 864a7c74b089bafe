//! The hold lifecycle, owned by the enforcer (which owns the kernel maps):
//! held -> approved | rejected | expired | conflict -> applied -> outcome.
//!
//! Ordering is what makes the record trustworthy: a decision is written
//! durably (approvals table and evidence) before it is applied to the kernel
//! and the thread resumed, so a daemon that dies in between replays it on
//! restart; and the action's outcome is recorded when the kernel reports it.
//!
//! Two kinds of hold. Where the hook can fail its syscall (cgroup network
//! hooks, BPF LSM), the held thread is stopped inside the syscall, which
//! restarts when it is continued, and the hook applies the decision
//! written to `GRANTS`. The fallback's exec and open hooks run after the
//! action took effect, so they *pause* the thread instead (`HELD` says
//! `PAUSED`): the enforcer ptrace-seizes it at once, which makes the stop
//! immune to SIGCONT (only the tracer can continue a traced thread), and
//! carries out the decision itself: approval continues the thread,
//! anything else kills it. The kernel kills a paused thread that runs
//! again without a grant (a SIGCONT before the seize; see
//! `ebpf/programs/src/hold.rs`).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use nix::{
    sys::{
        ptrace,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};
use serde_json::json;
use warden_common::{held_state, Decision, HoldKey, HOLD_FAMILY_FILE};

use crate::{
    actor::{Actor, Recorded},
    approvals::{self, Approval, ApprovalError, Approvals, Decided, Job, Status},
    attribution::{AgentView, PolicyView, ProcessFacts},
    clock,
    decode::KernelEvent,
    evidence::NewEntry,
    kernel::Kernel,
};

/// `HoldKey` as stored in the approvals table (hex of its bytes).
pub fn key_to_hex(key: &HoldKey) -> String {
    // SAFETY: HoldKey is repr(C) plain data without padding.
    let bytes = unsafe {
        std::slice::from_raw_parts((key as *const HoldKey).cast::<u8>(), size_of::<HoldKey>())
    };
    hex::encode(bytes)
}

pub fn key_from_hex(text: &str) -> Option<HoldKey> {
    let bytes = hex::decode(text).ok()?;
    (bytes.len() == size_of::<HoldKey>()).then(|| {
        // SAFETY: length checked; any bit pattern is a valid HoldKey.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<HoldKey>()) }
    })
}

/// Resumes a held thread. The stop is a group stop, so this continues the
/// whole process; the held syscall then restarts and the hook decides again.
fn resume(pid: u32, tid: u32) {
    // SAFETY: tgkill with a signal that only continues a stopped thread; the
    // pid/tid pair guards against a recycled tid in another process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            pid as libc::c_int,
            tid as libc::c_int,
            libc::SIGCONT,
        )
    };
    if rc != 0 {
        tracing::warn!(pid, tid, error = %std::io::Error::last_os_error(), "resume held thread");
    }
}

/// Who asked for a decision, from the control socket's peer credentials.
pub struct Caller {
    pub uid: u32,
    pub pid: u32,
}

pub enum Verdict {
    Approve,
    Reject,
}

pub struct Holds {
    store: Approvals,
    /// Paused threads this enforcer thread ptrace-seized: tid -> pid. Only
    /// this thread may continue, detach or reap them.
    seized: HashMap<u32, u32>,
    /// `WARDEN_DISABLE_MECHANISMS=ptrace`: paused threads are not seized
    /// (the kernel's guard alone keeps them from going on).
    no_ptrace: bool,
}

/// A thread the fallback paused after its action took effect.
fn is_paused(kernel: &Kernel, tid: u32) -> bool {
    kernel
        .held(tid)
        .is_some_and(|h| matches!(h.state, held_state::PAUSED | held_state::EXEC_STOPPING))
}

/// Collects a seized thread's trace notifications (stops are ignored),
/// waiting up to `patience_ms` for its exit; true once it has exited (or
/// is no longer this thread's to wait for).
fn collect_exit(tid: u32, patience_ms: u32) -> bool {
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

/// Agents never approve, whatever user they run as. A caller whose cgroup
/// cannot be read (it exited after asking) is refused too.
fn refuse_agent_caller(caller: &Caller, agent_cgroups: &[PathBuf]) -> Result<(), String> {
    let cg = crate::cgroup::cgroup2_mount()
        .and_then(|mount| crate::cgroup::cgroup_of(&mount, caller.pid))
        .map_err(|e| {
            format!(
                "refused: cannot tell whether the caller (pid {}) runs inside an agent cgroup: {}",
                caller.pid,
                crate::error_chain(&e)
            )
        })?;
    match agent_cgroups.iter().find(|c| cg.starts_with(c)) {
        Some(agent_cg) => Err(format!(
            "refused: the caller (pid {}) runs inside agent cgroup {}; agents cannot approve",
            caller.pid,
            agent_cg.display()
        )),
        None => Ok(()),
    }
}

/// The thread exists and has not exited.
fn thread_alive(pid: u32, tid: u32) -> bool {
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
    pub fn new(store: Approvals) -> Self {
        let no_ptrace = crate::kernel::disabled("ptrace").is_some();
        Self {
            store,
            seized: HashMap::new(),
            no_ptrace,
        }
    }

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
    pub fn reap(
        &mut self,
        kernel: &mut Kernel,
        record: &mut dyn FnMut(NewEntry) -> Result<(), String>,
    ) -> Result<(), ApprovalError> {
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
                    if let Err(e) = record(entry) {
                        tracing::error!(id = a.id, error = %e, "record the end of a hold");
                    }
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
            if let Err(e) = record(unused_grant_outcome(&a)) {
                tracing::error!(id = a.id, error = %e, "record an unused grant");
            }
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

    pub fn list(&self, all: bool) -> Result<Vec<Approval>, ApprovalError> {
        self.store.list(all)
    }

    pub fn get(&self, id: u64) -> Result<Approval, ApprovalError> {
        self.store.get(id)
    }

    /// The kernel held an action. Returns the evidence entry for a new hold;
    /// `None` when this is the same held action coming back (a spurious
    /// SIGCONT restarted the syscall and the hook held it again).
    pub fn on_held(
        &mut self,
        ev: &KernelEvent,
        mut entry: NewEntry,
        agent: &AgentView,
        policy: &PolicyView,
        facts: &ProcessFacts,
    ) -> Result<Option<NewEntry>, ApprovalError> {
        let key = key_to_hex(&ev.hold_key());
        if self.store.pending_for_key(&key)?.is_some() {
            return Ok(None);
        }
        let job = Job {
            agent: agent.name.clone(),
            action: ev.action_name().into(),
            target: ev.target(),
            exe: facts.exe.clone(),
            binary: facts.binary.clone(),
            pid: ev.pid,
            tid: ev.tid,
            uid: ev.uid,
            cgroup_id: ev.cgroup_id,
        };
        let created = entry.ts_ns;
        let timeout = i64::try_from(policy.hold_timeout.as_nanos()).unwrap_or(i64::MAX);
        let expires = created.saturating_add(timeout.max(1));
        let id = self.store.create(
            &agent.owner,
            &job,
            &entry.rule_id,
            &policy.snapshot,
            &key,
            created,
            expires,
        )?;
        entry.kind = "hold".into();
        entry.details.insert("approval_id".into(), json!(id));
        entry.details.insert("job_hash".into(), json!(job.hash()));
        entry
            .details
            .insert("approval_required".into(), json!(true));
        entry.details.insert("expires_at_ns".into(), json!(expires));
        entry.details.insert("binary".into(), json!(job.binary));
        tracing::info!(agent = %agent.name, id, target = %job.target, "action held for approval");
        Ok(Some(entry))
    }

    /// The kernel applied a decision on a held action: record the outcome.
    pub fn on_outcome(
        &mut self,
        ev: &KernelEvent,
        mut entry: NewEntry,
    ) -> Result<NewEntry, ApprovalError> {
        let key = key_to_hex(&ev.hold_key());
        if let Some(a) = self.store.awaiting_outcome(&key)? {
            let outcome = if ev.decision == Decision::Allow {
                "executed"
            } else {
                "refused"
            };
            self.store.set_final_status(a.id, outcome)?;
            entry.details.insert("approval_id".into(), json!(a.id));
            entry.details.insert("job_hash".into(), json!(a.job_hash));
            entry.details.insert("final_status".into(), json!(outcome));
        }
        Ok(entry)
    }

    /// A human decides. `current_snapshot` is the agent's policy snapshot
    /// now; `policy` the policy the action was held under; `agent_cgroups`
    /// every registered agent's cgroup (an approver inside one is refused).
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        kernel: &mut Kernel,
        id: u64,
        verdict: Verdict,
        reason: Option<&str>,
        caller: &Caller,
        current_snapshot: Option<&str>,
        policy: Option<&PolicyView>,
        agent_cgroups: &[PathBuf],
        record: &mut dyn FnMut(NewEntry) -> Result<(), String>,
    ) -> Result<String, String> {
        let a = self.store.get(id).map_err(|e| crate::error_chain(&e))?;
        refuse_agent_caller(caller, agent_cgroups)?;
        let user = nix::unistd::User::from_uid(caller.uid.into())
            .ok()
            .flatten();
        let user_name = user
            .as_ref()
            .map_or_else(|| format!("uid:{}", caller.uid), |u| u.name.clone());
        let groups = user.as_ref().map(approvals::groups_of).unwrap_or_default();
        let approvers = policy.map(|p| p.approvers.clone()).unwrap_or_default();
        let Some(role) = approvals::approver_role(&approvers, &user_name, &groups) else {
            return Err(format!(
                "refused: {user_name} is not an approver for agent '{}' (its policy names users {:?}, groups {:?})",
                a.job.agent, approvers.users, approvers.groups
            ));
        };

        let actor = Actor::of(caller.uid, caller.pid);
        let now = clock::now_ns();
        if a.status != Status::Pending {
            let d = Decided {
                status: a.status,
                by: &user_name,
                role: &role,
                at_ns: now,
                reason,
            };
            self.store
                .decide(id, &d)
                .map_err(|e| crate::error_chain(&e))?;
            return match (a.status, verdict) {
                (Status::Approved, Verdict::Approve) => Ok(format!("hold {id}: already approved")),
                (Status::Rejected, Verdict::Reject) => Ok(format!("hold {id}: already rejected")),
                (s, _) => Err(format!(
                    "hold {id} is already {}; nothing changed",
                    s.as_str()
                )),
            };
        }

        let drifted = current_snapshot != Some(a.policy_snapshot.as_str());
        let status = match (drifted, verdict) {
            (true, _) => Status::Conflict,
            (false, Verdict::Approve) => Status::Approved,
            (false, Verdict::Reject) => Status::Rejected,
        };
        let conflict_reason;
        let reason = if drifted {
            conflict_reason = format!(
                "policy changed since the hold (held under {}, now {})",
                a.policy_snapshot,
                current_snapshot.unwrap_or("none")
            );
            Some(conflict_reason.as_str())
        } else {
            reason
        };
        let d = Decided {
            status,
            by: &user_name,
            role: &role,
            at_ns: now,
            reason,
        };
        if !self
            .store
            .decide(id, &d)
            .map_err(|e| crate::error_chain(&e))?
        {
            return Err(format!("hold {id} was decided by someone else just now"));
        }
        record(approval_entry(&actor, &a, &d))?;
        self.apply(kernel, &a, status, record);
        Ok(match status {
            Status::Approved => format!("hold {id}: approved; the action proceeds"),
            Status::Rejected => format!("hold {id}: rejected; the action is refused"),
            _ => format!(
                "hold {id}: conflict: {}; the action is decided again under the current policy",
                reason.unwrap_or_default()
            ),
        })
    }

    /// Writes the decision to the kernel and resumes the thread.
    fn apply(
        &mut self,
        kernel: &mut Kernel,
        a: &Approval,
        status: Status,
        record: &mut dyn FnMut(NewEntry) -> Result<(), String>,
    ) {
        if is_paused(kernel, a.job.tid) {
            self.apply_paused(kernel, a, status, record);
            return;
        }
        let decision = match status {
            Status::Approved => Some(Decision::Allow),
            Status::Rejected | Status::Expired => Some(Decision::Deny),
            // The hook decides again under the policy now in force.
            Status::Conflict | Status::Pending => None,
        };
        if let (Some(decision), Some(key)) = (decision, key_from_hex(&a.hold_key)) {
            if let Err(e) = kernel.grant(&key, decision) {
                // The thread stays stopped (still held); it can be decided
                // again or expire. Never resume it without its decision.
                tracing::error!(id = a.id, error = %crate::error_chain(&e), "write decision to kernel");
                return;
            }
        }
        resume(a.job.pid, a.job.tid);
        if let Err(e) = self.store.mark_applied(a.id) {
            tracing::error!(id = a.id, error = %crate::error_chain(&e), "mark approval applied");
        }
        // No grant: the hook decides the restarted action afresh, recorded
        // as an ordinary decision (or a new hold). This hold is finished.
        if status == Status::Conflict {
            if let Err(e) = self.store.set_final_status(a.id, "redecided") {
                tracing::error!(id = a.id, error = %crate::error_chain(&e), "record final status");
            }
        }
    }

    /// Rejects holds whose time is up.
    pub fn expire(
        &mut self,
        kernel: &mut Kernel,
        record: &mut dyn FnMut(NewEntry) -> Result<(), String>,
    ) -> Result<(), ApprovalError> {
        let now = clock::now_ns();
        for a in self.store.expired(now)? {
            let waited = Duration::from_nanos((a.expires_at_ns - a.created_at_ns).max(0) as u64);
            let reason = format!("no decision within {} s", waited.as_secs());
            let d = Decided {
                status: Status::Expired,
                by: "warden",
                role: "expiry",
                at_ns: now,
                reason: Some(&reason),
            };
            if self.store.decide(a.id, &d)? {
                if let Err(e) = record(approval_entry(&Actor::current(), &a, &d)) {
                    tracing::error!(id = a.id, error = %e, "record expiry");
                }
                self.apply(kernel, &a, Status::Expired, record);
            }
        }
        Ok(())
    }

    /// Applies decisions that were recorded but not applied when a previous
    /// daemon stopped.
    pub fn replay(
        &mut self,
        kernel: &mut Kernel,
        record: &mut dyn FnMut(NewEntry) -> Result<(), String>,
    ) -> Result<usize, ApprovalError> {
        let pending = self.store.unapplied()?;
        for a in &pending {
            let mut details = serde_json::Map::new();
            details.insert("status".into(), json!(a.status.as_str()));
            details.insert(
                "replay_reason".into(),
                json!("decision recorded but not applied before the daemon stopped"),
            );
            let entry = hold_entry(&Actor::current(), a, "approval", "replayed", details);
            if let Err(e) = record(entry) {
                tracing::error!(id = a.id, error = %e, "record replay");
            }
            self.apply(kernel, a, a.status, record);
        }
        Ok(pending.len())
    }
}

impl Holds {
    /// Carries out a decision on a paused thread (its action already took
    /// effect): continue it, or kill it. A conflict is decided again here,
    /// from the agent's rules in force now, by the kernel's own lookup; a
    /// rule that holds again refuses it (the agent's retry is then held
    /// under the new policy).
    fn apply_paused(
        &mut self,
        kernel: &mut Kernel,
        a: &Approval,
        status: Status,
        record: &mut dyn FnMut(NewEntry) -> Result<(), String>,
    ) {
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
        if let Err(e) = record(outcome) {
            tracing::error!(id = a.id, error = %e, "record hold outcome");
        }
    }
}

/// The outcome entry of a paused hold, attributed to the held process as
/// the kernel's outcome entries are.
fn paused_outcome(a: &Approval, allowed: bool, final_status: &str, how: &str) -> NewEntry {
    let mut details = serde_json::Map::new();
    details.insert("final_status".into(), json!(final_status));
    details.insert("outcome".into(), json!(how));
    details.insert(
        "hold_mechanism".into(),
        json!(
            "paused after the action took effect (no BPF LSM); continued or killed by the daemon"
        ),
    );
    let decision = if allowed { "allow" } else { "deny" };
    let actor = Actor::of(a.job.uid, a.job.pid);
    let mut entry = hold_entry(&actor, a, "decision", decision, details);
    entry.method = if allowed { "approved" } else { "rejected" }.into();
    entry
}

/// A decision on a hold that never took effect: the thread ended before its
/// syscall came back to the hook, and the grant was withdrawn.
fn unused_grant_outcome(a: &Approval) -> NewEntry {
    let mut details = serde_json::Map::new();
    details.insert("status".into(), json!(a.status.as_str()));
    details.insert("final_status".into(), json!("ended"));
    details.insert(
        "outcome".into(),
        json!("the action did not run: the thread ended before its syscall came back to the hook, and the decision was withdrawn"),
    );
    let actor = Actor::of(a.job.uid, a.job.pid);
    let mut entry = hold_entry(&actor, a, "decision", "not_executed", details);
    entry.method = "grant-withdrawn".into();
    entry
}

/// The evidence entry for a decision on a hold: the fields an auditor
/// samples for every approval-gated action.
fn approval_entry(actor: &Actor, a: &Approval, d: &Decided<'_>) -> NewEntry {
    let mut details = serde_json::Map::new();
    details.insert("approval_required".into(), json!(true));
    details.insert("approved_by".into(), json!(d.by));
    details.insert("approved_role".into(), json!(d.role));
    details.insert("approved_at_ns".into(), json!(d.at_ns));
    details.insert("status".into(), json!(d.status.as_str()));
    if let Some(r) = d.reason {
        details.insert("reason".into(), json!(r));
    }
    hold_entry(actor, a, "approval", d.status.as_str(), details)
}

/// An evidence entry about hold `a`, by `actor`: its agent, owner, action,
/// policy and rule, and `approval_id` and `job_hash` beside `details`.
fn hold_entry(
    actor: &Actor,
    a: &Approval,
    kind: &str,
    decision: &str,
    mut details: serde_json::Map<String, serde_json::Value>,
) -> NewEntry {
    details.insert("approval_id".into(), json!(a.id));
    details.insert("job_hash".into(), json!(a.job_hash));
    let mut entry = actor.entry(Recorded {
        kind,
        agent: &a.job.agent,
        owner: &a.owner,
        action: &a.job.action,
        target: &a.job.target,
        decision,
        policy_snapshot: &a.policy_snapshot,
        details,
    });
    entry.rule_id = a.rule_id.clone();
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_in_agent_cgroups_or_of_unknown_cgroup_are_refused() {
        let me = Caller {
            uid: 0,
            pid: std::process::id(),
        };
        let mount = crate::cgroup::cgroup2_mount().expect("cgroup2 mounted");
        let mine = crate::cgroup::cgroup_of(&mount, me.pid).expect("own cgroup");
        refuse_agent_caller(&me, &[mount.join("warden-no-such-agent")]).expect("not an agent");
        let err = refuse_agent_caller(&me, &[mine]).expect_err("inside an agent cgroup");
        assert!(err.contains("agents cannot approve"), "{err}");
        // A process that has exited: its pid, reaped, names no cgroup.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let gone = child.id();
        child.wait().expect("reap");
        let caller = Caller { uid: 0, pid: gone };
        let err = refuse_agent_caller(&caller, &[]).expect_err("unknown cgroup");
        assert!(err.contains("cannot tell"), "{err}");
    }

    #[test]
    fn hold_key_hex_round_trips() {
        let key = HoldKey {
            cgroup_id: 42,
            tid: 7,
            family: 2,
            port: 18082,
            proto: 6,
            _pad: [0; 7],
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let text = key_to_hex(&key);
        assert_eq!(text.len(), 80);
        assert_eq!(key_from_hex(&text), Some(key));
        assert_eq!(key_from_hex("abcd"), None);
    }
}
