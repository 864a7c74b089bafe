//! Delegation in the daemon: a child agent's effective policy (the
//! intersection with its parent's policy in force, `policy/delegate.rs`)
//! and `warden run --agent CHILD` from inside the parent, which the daemon
//! carries out (the caller, confined, cannot move itself between cgroups).

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::{enforcer::Enforcer, reconcile::ReconcileError};
use crate::{
    actor::{Actor, Recorded},
    policy::{self, Capabilities, CompiledPolicy},
    registry::{Agent, AgentStatus},
};

/// What the daemon answers a `warden run` that may be a delegation.
pub enum DelegatedRun {
    /// The caller runs in no agent: the usual rules of `warden run` apply.
    NotInAgent,
    /// The caller now runs in the child's cgroup; the `run` entry is
    /// written. The message names the child and its policy snapshot.
    Started(String),
}

impl Enforcer {
    /// For a delegated child: its own (reviewed) policy intersected with
    /// its parent's in force, and the `policy_load` details saying so. The
    /// child's lineage is set for the evidence writer. A child whose parent
    /// has no valid policy in force is refused (it keeps what it had, or
    /// deny-all).
    pub(super) fn delegated(
        &self,
        agent: &Agent,
        own: CompiledPolicy,
        caps: &Capabilities,
    ) -> Result<(CompiledPolicy, Map<String, Value>), ReconcileError> {
        let Some(parent) = &agent.parent else {
            crate::lineage::set(&agent.name, None);
            return Ok((own, Map::new()));
        };
        let parent_policy = self
            .enforced
            .get(parent)
            .and_then(|e| e.effective.clone())
            .ok_or_else(|| {
                ReconcileError::Delegation(format!(
                    "parent agent '{parent}' has no policy in force"
                ))
            })?;
        let effective = policy::compile_delegated(&parent_policy, &own, caps)?;
        let chain = self.registry.lineage(&agent.name)?;
        crate::lineage::set(&agent.name, Some(crate::lineage::chain_value(&chain)));
        let mut details = Map::new();
        details.insert("delegated_by".into(), json!(parent));
        details.insert("own_snapshot".into(), json!(own.snapshot));
        details.insert("parent_snapshot".into(), json!(parent_policy.snapshot));
        details.insert("lineage".into(), crate::lineage::chain_value(&chain));
        Ok((effective, details))
    }

    /// `warden run --agent CHILD` from the process `actor.pid`. Outside every
    /// agent: `NotInAgent`. Inside an agent P: allowed only if CHILD is a
    /// registered child of P, P's policy in force says `delegate: [CHILD]`,
    /// and CHILD is enforced and not revoked; then the caller is moved into
    /// CHILD's cgroup and a `run` entry records it. A refusal is recorded
    /// (`run`, decision `refused`) and returned.
    pub(super) fn delegated_run(
        &mut self,
        child: &str,
        argv: &[String],
        options: bool,
        actor: &Actor,
    ) -> Result<DelegatedRun, String> {
        let caller_cgroup = match crate::cgroup::cgroup_of(&self.cgroup2, actor.pid) {
            Ok(c) => c,
            Err(e) => {
                let why = format!(
                    "cannot tell whether pid {} runs inside an agent ({e})",
                    actor.pid
                );
                return Err(self.refuse_run(child, None, argv, actor, why));
            }
        };
        // The deepest agent whose subtree holds the caller.
        let Some(parent) = self
            .enforced
            .iter()
            .filter(|(_, e)| caller_cgroup.starts_with(&e.cgroup))
            .max_by_key(|(_, e)| e.cgroup.components().count())
            .map(|(name, _)| name.clone())
        else {
            return Ok(DelegatedRun::NotInAgent);
        };
        let registered = self.registry.get(child).ok();
        let why = match &registered {
            _ if options => Some(
                "--user and --keep-fd are not available to a delegated run (it keeps the \
                 caller's user and descriptors)"
                    .to_string(),
            ),
            None => Some(format!("'{child}' is not a registered agent")),
            Some(a) if a.parent.as_deref() != Some(parent.as_str()) => Some(format!(
                "'{child}' is not a delegated child of '{parent}' (registered parent: {})",
                a.parent.as_deref().unwrap_or("none")
            )),
            Some(_)
                if !self
                    .enforced
                    .get(&parent)
                    .and_then(|e| e.effective.as_ref())
                    .is_some_and(|p| p.parsed.delegate.iter().any(|d| d == child)) =>
            {
                Some(format!(
                    "the policy in force of '{parent}' does not say `delegate: [{child}]`"
                ))
            }
            Some(a)
                if a.status == AgentStatus::Revoked
                    || self.enforced.get(child).is_some_and(|e| e.revoked) =>
            {
                Some(format!("agent '{child}' is revoked (kill switch)"))
            }
            Some(_) if !self.enforced.contains_key(child) => {
                Some(format!("agent '{child}' is not enforced by this daemon"))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            return Err(self.refuse_run(child, Some(&parent), argv, actor, why));
        }
        let Some(agent) = registered else {
            return Err("unreachable: checked above".into());
        };
        let (snapshot, cgroup): (String, PathBuf) = match self.enforced.get(child) {
            Some(e) => (e.snapshot.clone(), e.cgroup.clone()),
            None => return Err(format!("agent '{child}' is not enforced by this daemon")),
        };
        let chain = self.registry.lineage(child).unwrap_or_default();
        let mut details = Map::new();
        details.insert("argv".into(), json!(argv));
        details.insert("run_as".into(), json!("(caller)"));
        details.insert("cgroup".into(), json!(cgroup.display().to_string()));
        details.insert("delegated_by".into(), json!(parent));
        details.insert("delegating_pid".into(), json!(actor.pid));
        details.insert(
            "from_cgroup".into(),
            json!(caller_cgroup.display().to_string()),
        );
        details.insert("lineage".into(), crate::lineage::chain_value(&chain));
        let entry = actor.entry(Recorded {
            kind: "run",
            agent: child,
            owner: &agent.owner,
            action: "run",
            target: &argv.join(" "),
            decision: "started",
            policy_snapshot: &snapshot,
            details,
        });
        // Recorded before the move: no action of the child without the
        // entry that says who started it.
        self.writer
            .write_durable(vec![entry])
            .map_err(|e| format!("record the delegated run: {e}"))?;
        // The peer's pid again, right before the move: a caller that exited
        // meanwhile (its pid reused by a process elsewhere) is not moved.
        match crate::cgroup::cgroup_of(&self.cgroup2, actor.pid) {
            Ok(now) if now == caller_cgroup => {}
            _ => {
                return Err(format!(
                    "pid {} left {} before it could be moved",
                    actor.pid,
                    caller_cgroup.display()
                ))
            }
        }
        crate::cgroup::move_process(&cgroup, actor.pid).map_err(|e| {
            format!(
                "move pid {} into {}: {}",
                actor.pid,
                cgroup.display(),
                crate::error_chain(&e)
            )
        })?;
        tracing::info!(child, parent = %parent, pid = actor.pid, "delegated run");
        Ok(DelegatedRun::Started(format!(
            "pid {} runs as '{child}' (delegated by '{parent}', policy snapshot {snapshot})",
            actor.pid
        )))
    }

    fn refuse_run(
        &self,
        child: &str,
        parent: Option<&str>,
        argv: &[String],
        actor: &Actor,
        why: String,
    ) -> String {
        let owner = self
            .registry
            .get(child)
            .map(|a| a.owner)
            .unwrap_or_else(|_| "unknown".into());
        let agent = if self.registry.get(child).is_ok() {
            child
        } else {
            "warden"
        };
        let mut details = Map::new();
        details.insert("argv".into(), json!(argv));
        details.insert("reason".into(), json!(why));
        details.insert("requested_agent".into(), json!(child));
        if let Some(p) = parent {
            details.insert("delegated_by".into(), json!(p));
        }
        details.insert("delegating_pid".into(), json!(actor.pid));
        self.record(actor.entry(Recorded {
            kind: "run",
            agent,
            owner: &owner,
            action: "run",
            target: &argv.join(" "),
            decision: "refused",
            policy_snapshot: "none",
            details,
        }));
        tracing::warn!(child, pid = actor.pid, reason = %why, "delegated run refused");
        format!("refused: warden run --agent {child}: {why}")
    }
}
