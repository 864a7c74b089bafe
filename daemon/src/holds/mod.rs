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
//!
//! (Over 600 lines because of its unit tests, about 70 of them, and the
//! hold lifecycle read top to bottom.)

mod dns;
mod entries;
mod paused;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use serde_json::json;
use warden_common::Decision;

pub use self::entries::{key_from_hex, key_to_hex};
use self::{
    entries::{approval_entry, hold_entry},
    paused::is_paused,
};
use crate::{
    actor::Actor,
    approvals::{self, Approval, ApprovalError, Approvals, Decided, Job, Status},
    attribution::{AgentView, PolicyView, ProcessFacts},
    clock,
    daemon::{EvidenceWriter, WriteError},
    decode::KernelEvent,
    evidence::NewEntry,
    kernel::Kernel,
};

/// Whether the held thread has ended (gone, or a zombie): a decision on
/// its hold has nothing left to apply.
fn process_ended(pid: u32, tid: u32) -> bool {
    let stat = format!("/proc/{pid}/task/{tid}/stat");
    match std::fs::read_to_string(stat) {
        // The state is the first field after the parenthesised comm.
        Ok(s) => s
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_none_or(|state| matches!(state, 'Z' | 'X')),
        Err(_) => true,
    }
}

/// `final_status` of a hold whose process ended before its decision was
/// applied.
pub const PROCESS_ENDED: &str = "process-ended";

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

/// Why a decision was refused or could not be recorded. The messages are
/// the answers the CLI prints.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(transparent)]
    Approvals(#[from] ApprovalError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("refused: cannot tell whether the caller (pid {pid}) runs inside an agent cgroup")]
    CallerUnknown {
        pid: u32,
        #[source]
        source: crate::cgroup::CgroupError,
    },
    #[error("refused: the caller (pid {pid}) has its {relation} (pid {via}) inside agent cgroup {}; agents cannot approve", cgroup.display())]
    CallerIsAgent {
        pid: u32,
        relation: &'static str,
        via: u32,
        cgroup: PathBuf,
    },
    #[error("refused: {user} is not an approver for agent '{agent}' (its policy names users {users:?}, groups {groups:?})")]
    NotApprover {
        user: String,
        agent: String,
        users: Vec<String>,
        groups: Vec<String>,
    },
    #[error("hold {id} is already {status}; nothing changed")]
    AlreadyDecided { id: u64, status: &'static str },
    #[error("hold {id} was decided by someone else just now")]
    DecidedElsewhere { id: u64 },
}

pub struct Holds {
    store: Approvals,
    /// Where every entry about a hold goes, durably, before the decision
    /// it records is applied.
    writer: EvidenceWriter,
    /// Paused threads this enforcer thread ptrace-seized: tid -> pid. Only
    /// this thread may continue, detach or reap them.
    seized: HashMap<u32, u32>,
    /// `WARDEN_DISABLE_MECHANISMS=ptrace`: paused threads are not seized
    /// (the kernel's guard alone keeps them from going on).
    no_ptrace: bool,
}

/// Agents never approve, whatever user they run as, and wherever their
/// cgroup is now: the caller is refused if it, any of its ancestors (the
/// parent chain up to pid 1), its session leader or its process group
/// leader runs in an agent cgroup or below one. A caller whose cgroup
/// cannot be read (it exited after asking) is refused too.
///
/// Known limit: an ancestor that exited (its descendants reparented to a
/// subreaper or init) or that moved out of the agent is no longer seen here;
/// an agent process that moves out of its agent's subtree is killed (the
/// escape programs, `kernel/escape.rs`; README, Known gaps), so this is the
/// second line of defence.
fn refuse_agent_caller(caller: &Caller, agent_cgroups: &[PathBuf]) -> Result<(), HoldError> {
    let mount = crate::cgroup::cgroup2_mount().map_err(|source| HoldError::CallerUnknown {
        pid: caller.pid,
        source,
    })?;
    // The caller itself must be readable.
    crate::cgroup::cgroup_of(&mount, caller.pid).map_err(|source| HoldError::CallerUnknown {
        pid: caller.pid,
        source,
    })?;
    match agent_lineage(caller.pid, agent_cgroups, &ProcLineage { mount }) {
        Some((relation, pid, cgroup)) => Err(HoldError::CallerIsAgent {
            pid: caller.pid,
            relation,
            via: pid,
            cgroup,
        }),
        None => Ok(()),
    }
}

/// What `agent_lineage` reads about processes (a seam for tests).
trait Lineage {
    fn cgroup(&self, pid: u32) -> Option<PathBuf>;
    /// (ppid, pgid, sid)
    fn ids(&self, pid: u32) -> Option<(u32, u32, u32)>;
}

struct ProcLineage {
    mount: PathBuf,
}

impl Lineage for ProcLineage {
    fn cgroup(&self, pid: u32) -> Option<PathBuf> {
        crate::cgroup::cgroup_of(&self.mount, pid).ok()
    }
    fn ids(&self, pid: u32) -> Option<(u32, u32, u32)> {
        let stat = procfs::process::Process::new(pid as i32)
            .ok()?
            .stat()
            .ok()?;
        Some((stat.ppid as u32, stat.pgrp as u32, stat.session as u32))
    }
}

/// Parent chains longer than this are cut (pid namespaces nest 32 deep;
/// real chains are a few dozen at most).
const MAX_LINEAGE: usize = 256;

/// The first of the caller, its ancestors, its session leader and its
/// process group leader that runs in (or below) an agent cgroup: how it is
/// related to the caller ("caller", "ancestor", "session leader",
/// "process group leader"), its pid and the agent cgroup.
fn agent_lineage(
    pid: u32,
    agent_cgroups: &[PathBuf],
    procs: &dyn Lineage,
) -> Option<(&'static str, u32, PathBuf)> {
    let in_agent = |p: u32| {
        let cg = procs.cgroup(p)?;
        agent_cgroups.iter().find(|a| cg.starts_with(a)).cloned()
    };
    let ids = procs.ids(pid);
    let mut candidates: Vec<(&'static str, u32)> = vec![("caller", pid)];
    let mut p = pid;
    for _ in 0..MAX_LINEAGE {
        match procs.ids(p) {
            Some((ppid, _, _)) if ppid > 1 && ppid != p => {
                candidates.push(("ancestor", ppid));
                p = ppid;
            }
            _ => break,
        }
    }
    if let Some((_, pgid, sid)) = ids {
        candidates.push(("session leader", sid));
        candidates.push(("process group leader", pgid));
    }
    candidates
        .into_iter()
        .filter(|&(_, p)| p > 1)
        .find_map(|(relation, p)| in_agent(p).map(|cg| (relation, p, cg)))
}

impl Holds {
    pub fn new(store: Approvals, writer: EvidenceWriter) -> Self {
        let no_ptrace = crate::kernel::disabled("ptrace").is_some();
        Self {
            store,
            writer,
            seized: HashMap::new(),
            no_ptrace,
        }
    }

    /// Writes an entry about hold `id` durably, logging (not failing) if
    /// it cannot: the decision it records stands either way.
    fn record(&self, entry: NewEntry, id: u64, what: &str) {
        if let Err(e) = self.writer.write_durable(vec![entry]) {
            tracing::error!(id, error = %crate::error_chain(&e), "{what}");
        }
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
    ) -> Result<String, HoldError> {
        let a = self.store.get(id)?;
        if let Err(e) = refuse_agent_caller(caller, agent_cgroups) {
            // A refused attempt is evidence too: an agent tried to approve.
            let mut details = serde_json::Map::new();
            details.insert("refused".into(), json!(e.to_string()));
            if let HoldError::CallerIsAgent {
                relation,
                via,
                cgroup,
                ..
            } = &e
            {
                details.insert("relation".into(), json!(relation));
                details.insert("via_pid".into(), json!(via));
                details.insert("agent_cgroup".into(), json!(cgroup.display().to_string()));
            }
            let actor = Actor::of(caller.uid, caller.pid);
            let entry = hold_entry(&actor, &a, "approval", "refused", details);
            self.record(entry, id, "record refused approval");
            return Err(e);
        }
        let user = nix::unistd::User::from_uid(caller.uid.into())
            .ok()
            .flatten();
        let user_name = user
            .as_ref()
            .map_or_else(|| format!("uid:{}", caller.uid), |u| u.name.clone());
        let groups = user.as_ref().map(approvals::groups_of).unwrap_or_default();
        let approvers = policy.map(|p| p.approvers.clone()).unwrap_or_default();
        let Some(role) = approvals::approver_role(&approvers, &user_name, &groups) else {
            return Err(HoldError::NotApprover {
                user: user_name,
                agent: a.job.agent.clone(),
                users: approvers.users.clone(),
                groups: approvers.groups.clone(),
            });
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
            self.store.decide(id, &d)?;
            return match (a.status, verdict) {
                (Status::Approved, Verdict::Approve) => Ok(format!("hold {id}: already approved")),
                (Status::Rejected, Verdict::Reject) => Ok(format!("hold {id}: already rejected")),
                (s, _) => Err(HoldError::AlreadyDecided {
                    id,
                    status: s.as_str(),
                }),
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
        if !self.store.decide(id, &d)? {
            return Err(HoldError::DecidedElsewhere { id });
        }
        self.writer
            .write_durable(vec![approval_entry(&actor, &a, &d)])?;
        if !self.apply(kernel, &a, status) {
            return Ok(format!(
                "hold {id}: {} recorded, but its process (pid {}) has ended: nothing proceeds; the hold's final status is {PROCESS_ENDED}",
                status.as_str(),
                a.job.pid
            ));
        }
        Ok(match status {
            Status::Approved => format!("hold {id}: approved; the action proceeds"),
            Status::Rejected => format!("hold {id}: rejected; the action is refused"),
            _ => format!(
                "hold {id}: conflict: {}; the action is decided again under the current policy",
                reason.unwrap_or_default()
            ),
        })
    }

    /// Writes the decision to the kernel and resumes the thread. False if
    /// the held process has ended: then nothing is applied and the hold's
    /// final status says so (`PROCESS_ENDED`).
    fn apply(&mut self, kernel: &mut Kernel, a: &Approval, status: Status) -> bool {
        // A held DNS name stops no thread: its proxy answers.
        if dns::is_dns(a) {
            self.apply_dns(a, status);
            return true;
        }
        if process_ended(a.job.pid, a.job.tid) {
            for result in [
                self.store.mark_applied(a.id),
                self.store.set_final_status(a.id, PROCESS_ENDED),
            ] {
                if let Err(e) = result {
                    tracing::error!(id = a.id, error = %crate::error_chain(&e), "record that the held process ended");
                }
            }
            tracing::info!(
                id = a.id,
                pid = a.job.pid,
                "held process ended before its decision"
            );
            return false;
        }
        if is_paused(kernel, a.job.tid) {
            self.apply_paused(kernel, a, status);
            return true;
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
                return true;
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
        true
    }

    /// Rejects holds whose time is up.
    pub fn expire(&mut self, kernel: &mut Kernel) -> Result<(), ApprovalError> {
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
                self.record(
                    approval_entry(&Actor::current(), &a, &d),
                    a.id,
                    "record expiry",
                );
                let _ = self.apply(kernel, &a, Status::Expired);
            }
        }
        Ok(())
    }

    /// Applies decisions that were recorded but not applied when a previous
    /// daemon stopped.
    pub fn replay(&mut self, kernel: &mut Kernel) -> Result<usize, ApprovalError> {
        let pending = self.store.unapplied()?;
        for a in &pending {
            let mut details = serde_json::Map::new();
            details.insert("status".into(), json!(a.status.as_str()));
            details.insert(
                "replay_reason".into(),
                json!("decision recorded but not applied before the daemon stopped"),
            );
            let entry = hold_entry(&Actor::current(), a, "approval", "replayed", details);
            self.record(entry, a.id, "record replay");
            let _ = self.apply(kernel, a, a.status);
        }
        Ok(pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_thread_has_not_ended_a_missing_one_has() {
        let pid = std::process::id();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(!process_ended(pid, tid));
        assert!(process_ended(pid, u32::MAX - 1));
        assert!(process_ended(u32::MAX - 1, u32::MAX - 1));
    }

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
        assert!(err.to_string().contains("agents cannot approve"), "{err}");
        // A process that has exited: its pid, reaped, names no cgroup.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let gone = child.id();
        child.wait().expect("reap");
        let caller = Caller { uid: 0, pid: gone };
        let err = refuse_agent_caller(&caller, &[]).expect_err("unknown cgroup");
        assert!(err.to_string().contains("cannot tell"), "{err}");
    }

    /// pid -> (cgroup, ppid, pgid, sid)
    struct Fake(HashMap<u32, (&'static str, u32, u32, u32)>);

    impl Lineage for Fake {
        fn cgroup(&self, pid: u32) -> Option<PathBuf> {
            self.0.get(&pid).map(|e| PathBuf::from(e.0))
        }
        fn ids(&self, pid: u32) -> Option<(u32, u32, u32)> {
            self.0.get(&pid).map(|e| (e.1, e.2, e.3))
        }
    }

    #[test]
    fn callers_descending_from_or_in_a_session_of_an_agent_are_refused() {
        let agents = [PathBuf::from("/cg/agent")];
        // 30 (in the agent) started 40, which moved out and started 50.
        let procs = Fake(HashMap::from([
            (1, ("/cg", 0, 1, 1)),
            (20, ("/cg/user", 1, 20, 20)),
            (30, ("/cg/agent/child", 20, 30, 30)),
            (40, ("/cg/elsewhere", 30, 30, 30)),
            (50, ("/cg/elsewhere", 40, 50, 50)),
            // Session and group led by 30, parent chain broken (reparented).
            (60, ("/cg/elsewhere", 1, 30, 30)),
            (70, ("/cg/user", 20, 20, 20)),
        ]));
        let who = |pid| agent_lineage(pid, &agents, &procs).map(|(r, p, _)| (r, p));
        assert_eq!(who(30), Some(("caller", 30)));
        assert_eq!(who(40), Some(("ancestor", 30)));
        assert_eq!(who(50), Some(("ancestor", 30)));
        assert_eq!(who(60), Some(("session leader", 30)));
        assert_eq!(who(70), None);
        assert_eq!(who(20), None);
    }
}
