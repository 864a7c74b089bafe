//! Governed change on the enforcer thread: proposals and reviews of a
//! policy whose version in force says `change_review:`, and the check the
//! reconcile makes before it installs a changed policy. The workflow's
//! record is the evidence chain (`policy::review`); who proposes and who
//! reviews is the control socket's peer (SO_PEERCRED), never a flag.

use serde_json::json;

use super::{enforcer::Enforcer, reconcile::ReconcileError};
use crate::{
    actor::{Actor, Recorded},
    approvals,
    evidence::{EvidenceStore, Filter},
    holds::Caller,
    policy::{self, review, CompiledPolicy},
    registry::{Agent, PolicyVersion},
};

/// Evidence kind of a break-glass freeze override.
pub const FREEZE_OVERRIDE_KIND: &str = "freeze_override";

/// The bit that marks a generation as a freeze window's variant of the
/// registry's policy version (versions are small row ids).
const FROZEN_GENERATION: u32 = 1 << 31;

/// The kernel generation of `version`, frozen or not.
pub(super) fn generation(version: u32, window: Option<&str>) -> u32 {
    match window {
        Some(_) => version | FROZEN_GENERATION,
        None => version,
    }
}

/// The host-wide windows' file in the state directory.
pub const HOST_FREEZE_FILE: &str = "freeze.yaml";

/// What the reconcile installs during a freeze (or not).
pub(super) struct Frozen {
    pub compiled: CompiledPolicy,
    pub windows: Vec<policy::freeze::Window>,
    /// The open window whose variant `compiled` is.
    pub window: Option<String>,
}

/// What the reconcile installs, and the proposal that allows it (if the
/// policy in force asked for review).
pub(super) struct Gated {
    pub compiled: CompiledPolicy,
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Enforcer {
    fn store(&self) -> Result<EvidenceStore, String> {
        EvidenceStore::open_with(&self.paths.database(), crate::db::Integrity::Trust)
            .map_err(|e| format!("open the evidence log: {e}"))
    }

    /// The version in force: the agent's latest activated policy.
    fn in_force(&self, agent: &str) -> Option<PolicyVersion> {
        self.registry
            .policy_versions(Some(agent))
            .ok()
            .and_then(|mut v| v.pop())
    }

    /// The snapshot a change of `agent`'s policy file is compared with: its
    /// OWN policy in force. A version records the snapshot the kernel
    /// enforces with the agent's own text; for a delegated child that
    /// snapshot is the effective one (the intersection with its parent),
    /// so its own snapshot is the recorded text's, parsed as the reconcile
    /// parses the file. A text that no longer parses (a `shadow:` file
    /// gone) gives the effective snapshot, which no file matches: the
    /// change then needs review (fails closed).
    fn own_snapshot(&self, agent: &Agent, v: &PolicyVersion) -> String {
        if agent.parent.is_none() {
            return v.sha256.clone();
        }
        let file = self.paths.policy_dir.join(&v.file);
        policy::parse_policy(&file.display().to_string(), &v.content)
            .map_or_else(|_| v.sha256.clone(), |p| p.snapshot())
    }

    /// Proposals (with reviews and activations) of one agent.
    fn proposals_of(&self, agent: &str) -> Result<Vec<review::Proposal>, String> {
        let store = self.store()?;
        let mut entries = Vec::new();
        for kind in [review::PROPOSAL_KIND, review::REVIEW_KIND, "policy_load"] {
            let filter = Filter {
                agent: Some(agent.into()),
                kind: Some(kind.into()),
                ..Default::default()
            };
            entries.extend(store.query(&filter).map_err(|e| e.to_string())?);
        }
        entries.sort_by_key(|e| e.seq);
        Ok(review::proposals(&entries))
    }

    /// `warden policy propose AGENT FILE`: checks the text with the
    /// daemon's pipeline and records the proposal with its diff.
    pub(super) fn propose(
        &mut self,
        agent: &str,
        file: &str,
        text: &str,
        caller: &Caller,
    ) -> Result<String, String> {
        let actor = Actor::of(caller.uid, caller.pid);
        if let Some(why) = self.refuse_agent_caller(&actor, "policy propose") {
            return Err(why);
        }
        let registered = self.registry.get(agent).map_err(|e| e.to_string())?;
        let caps = self.kernel.capabilities();
        let compiled =
            policy::compile_policy(file, text, &caps).map_err(|e| crate::error_chain(&e))?;
        // A delegated child's proposal is of its own file, diffed against
        // and bound to its own policy in force (the effective one is
        // recorded beside it).
        let mut effective = None;
        let (from_snapshot, diff) = match self.in_force(agent) {
            Some(v) => {
                let diff = policy::parse_policy(&v.file, &v.content)
                    .map(|cur| policy::suggest::diff(&cur, &compiled.parsed))
                    .unwrap_or_else(|e| format!("(the policy in force does not parse: {e})"));
                let own = self.own_snapshot(&registered, &v);
                effective = Some(v.sha256);
                (own, diff)
            }
            None => ("none".to_string(), "(no policy in force)".to_string()),
        };
        if from_snapshot == compiled.snapshot {
            return Err(format!(
                "agent '{agent}' already runs this policy ({from_snapshot}); nothing to propose"
            ));
        }
        let mut details = serde_json::Map::new();
        details.insert("from_snapshot".into(), json!(from_snapshot));
        details.insert("diff".into(), json!(diff));
        details.insert("file".into(), json!(file));
        details.insert("content".into(), json!(text));
        if let Some(parent) = &registered.parent {
            details.insert("snapshot_of".into(), json!("own"));
            details.insert("delegated_by".into(), json!(parent));
            details.insert("effective_snapshot".into(), json!(effective));
        }
        let entry = actor.entry(Recorded {
            kind: review::PROPOSAL_KIND,
            agent,
            owner: &registered.owner,
            action: "policy.propose",
            target: &registered.policy,
            decision: "proposed",
            policy_snapshot: &compiled.snapshot,
            details,
        });
        self.writer
            .write_durable(vec![entry])
            .map_err(|e| format!("record the proposal: {}", crate::error_chain(&e)))?;
        // The enforcer thread handles one command at a time: the newest
        // proposal of this agent is the one just written.
        let id = self
            .proposals_of(agent)?
            .into_iter()
            .rev()
            .find(|p| p.snapshot == compiled.snapshot && p.author_uid == actor.uid)
            .map_or(0, |p| p.id);
        Ok(format!(
            "proposal {id} for agent '{agent}' ({} -> {}) recorded by {}; another approver \
             reviews it with `warden policy review {id} --approve`\n{diff}",
            from_snapshot,
            compiled.snapshot,
            actor.describe()
        ))
    }

    /// `warden policy review ID --approve|--reject`: by an approver the
    /// policy in force names, who is not the author.
    pub(super) fn review(
        &mut self,
        id: u64,
        approve: bool,
        comment: Option<&str>,
        caller: &Caller,
    ) -> Result<String, String> {
        let actor = Actor::of(caller.uid, caller.pid);
        if let Some(why) = self.refuse_agent_caller(&actor, "policy review") {
            return Err(why);
        }
        let store = self.store()?;
        let proposal_entry = store
            .read_range(id, id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|e| e.kind == review::PROPOSAL_KIND)
            .ok_or_else(|| {
                format!("no proposal {id} (an id is the seq `policy propose` printed)")
            })?;
        let agent = proposal_entry.agent.clone();
        let in_force = self.in_force(&agent);
        let rule = in_force
            .as_ref()
            .and_then(|v| policy::parse_policy(&v.file, &v.content).ok())
            .and_then(|p| p.change_review)
            .ok_or_else(|| {
                format!("agent '{agent}''s policy in force has no change_review: nothing to review")
            })?;
        if review::same_person(
            proposal_entry.uid,
            proposal_entry.loginuid,
            actor.uid,
            actor.loginuid,
        ) {
            return Err(format!(
                "refused: {} proposed {id} and cannot review it; another approver must",
                actor.describe()
            ));
        }
        let user = nix::unistd::User::from_uid(caller.uid.into())
            .ok()
            .flatten();
        let groups = user.as_ref().map(approvals::groups_of).unwrap_or_default();
        let Some(role) = approvals::approver_role(&rule.approvers, &actor.user, &groups) else {
            return Err(format!(
                "refused: {} is not a change approver for agent '{agent}' (change_review names \
                 users {:?}, groups {:?})",
                actor.user, rule.approvers.users, rule.approvers.groups
            ));
        };
        let decision = if approve { "approved" } else { "rejected" };
        let mut details = serde_json::Map::new();
        details.insert("proposal".into(), json!(id));
        details.insert("role".into(), json!(role));
        details.insert("comment".into(), json!(comment.unwrap_or("")));
        details.insert("author".into(), json!(proposal_entry.user));
        if let Some(of) = proposal_entry.details.get("snapshot_of") {
            // The proposal's snapshot is the child's own policy's.
            details.insert("snapshot_of".into(), of.clone());
        }
        let target = format!("proposal {id}");
        let entry = actor.entry(Recorded {
            kind: review::REVIEW_KIND,
            agent: &agent,
            owner: &proposal_entry.owner,
            action: "policy.review",
            target: &target,
            decision,
            policy_snapshot: &proposal_entry.policy_snapshot,
            details,
        });
        self.writer
            .write_durable(vec![entry])
            .map_err(|e| format!("record the review: {}", crate::error_chain(&e)))?;
        Ok(format!(
            "proposal {id} {decision} by {} ({role}); a reload installs it once approved and the \
             policy file holds it",
            actor.describe()
        ))
    }

    /// The agent's windows: its policy's, then the host's (a host file
    /// that does not parse is logged and ignored: it cannot name a rule).
    fn windows_of(&self, parsed: &policy::Policy) -> Vec<policy::freeze::Window> {
        let mut windows = parsed.freeze.clone();
        let file = self.paths.state_dir.join(HOST_FREEZE_FILE);
        if let Ok(text) = std::fs::read_to_string(&file) {
            match policy::freeze::host_windows(&text) {
                Ok(host) => windows.extend(host),
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "host freeze windows")
                }
            }
        }
        windows
    }

    /// The open window for `agent` that no override lifts.
    fn open_window(&self, agent: &str, windows: &[policy::freeze::Window]) -> Option<String> {
        let now = crate::clock::now_ns();
        let views = self.views.read().expect("views lock");
        let lifted = views.freeze_overrides.get(agent);
        windows
            .iter()
            .filter(|w| w.active(now))
            .find(|w| lifted != Some(&w.id))
            .map(|w| w.id.clone())
    }

    /// During an open window: the policy with its destructive rules
    /// denying, compiled by the pipeline's compilers.
    pub(super) fn freeze_variant(
        &mut self,
        agent: &Agent,
        compiled: CompiledPolicy,
    ) -> Result<Frozen, ReconcileError> {
        let windows = self.windows_of(&compiled.parsed);
        let window = self.open_window(&agent.name, &windows);
        let Some(frozen) = window
            .as_ref()
            .and_then(|_| policy::freeze::frozen(&compiled.parsed))
        else {
            return Ok(Frozen {
                compiled,
                windows,
                window,
            });
        };
        let compiled = CompiledPolicy {
            net: policy::compile_network(&frozen)?,
            paths: policy::compile_paths(&frozen)?,
            parsed: frozen,
            ..compiled
        };
        Ok(Frozen {
            compiled,
            windows,
            window,
        })
    }

    /// Each second: an agent whose window opened or closed gets the other
    /// variant installed (an override of a closed window ends).
    pub(super) fn freeze_tick(&mut self) {
        let now = crate::clock::now_ns();
        let due: Vec<String> = self
            .enforced
            .iter()
            .filter(|(name, e)| e.freeze != self.open_window(name, &e.windows))
            .map(|(name, _)| name.clone())
            .collect();
        {
            let mut views = self.views.write().expect("views lock");
            let enforced = &self.enforced;
            views.freeze_overrides.retain(|agent, window| {
                enforced
                    .get(agent)
                    .is_some_and(|e| e.windows.iter().any(|w| &w.id == window && w.active(now)))
            });
        }
        for name in due {
            let actor = Actor::current();
            match self.registry.get(&name) {
                Ok(agent) => {
                    if let Err(e) = self.reconcile_agent(&agent, &actor) {
                        tracing::error!(agent = %name, error = %crate::error_chain(&e), "freeze window edge");
                    }
                }
                Err(e) => tracing::error!(agent = %name, error = %e, "freeze window edge"),
            }
        }
    }

    /// `warden freeze override AGENT --reason R`: an approver (change
    /// review's, or the policy's hold approvers) lifts the open window for
    /// the agent until it closes; recorded.
    pub(super) fn freeze_override(
        &mut self,
        agent: &str,
        reason: &str,
        caller: &Caller,
    ) -> Result<String, String> {
        let actor = Actor::of(caller.uid, caller.pid);
        if let Some(why) = self.refuse_agent_caller(&actor, "freeze override") {
            return Err(why);
        }
        if reason.trim().is_empty() {
            return Err("a freeze override needs a --reason".into());
        }
        let registered = self.registry.get(agent).map_err(|e| e.to_string())?;
        let in_force = self
            .in_force(agent)
            .and_then(|v| policy::parse_policy(&v.file, &v.content).ok())
            .ok_or_else(|| format!("agent '{agent}' has no policy in force"))?;
        let mut windows = self.windows_of(&in_force);
        // A delegated child's parents' windows apply to it too.
        if let Some(e) = self.enforced.get(agent) {
            windows.extend(
                e.windows
                    .iter()
                    .filter(|w| w.id.starts_with("parent:"))
                    .cloned(),
            );
        }
        let window = self
            .open_window(agent, &windows)
            .ok_or_else(|| format!("no freeze window is open for agent '{agent}'"))?;
        let mut list = in_force.approvers.clone();
        if let Some(cr) = &in_force.change_review {
            list.users.extend(cr.approvers.users.iter().cloned());
            list.groups.extend(cr.approvers.groups.iter().cloned());
        }
        let user = nix::unistd::User::from_uid(caller.uid.into())
            .ok()
            .flatten();
        let groups = user.as_ref().map(approvals::groups_of).unwrap_or_default();
        let Some(role) = approvals::approver_role(&list, &actor.user, &groups) else {
            return Err(format!(
                "refused: {} is not an approver for agent '{agent}' (users {:?}, groups {:?})",
                actor.user, list.users, list.groups
            ));
        };
        let mut details = serde_json::Map::new();
        details.insert("freeze_window".into(), json!(window));
        details.insert("reason".into(), json!(reason));
        details.insert("role".into(), json!(role));
        if registered.parent.is_some() {
            // The entry's snapshot is the child's own policy's.
            details.insert("snapshot_of".into(), json!("own"));
            if let Some(e) = self.enforced.get(agent) {
                details.insert("effective_snapshot".into(), json!(e.snapshot));
            }
        }
        let entry = actor.entry(Recorded {
            kind: FREEZE_OVERRIDE_KIND,
            agent,
            owner: &registered.owner,
            action: "freeze.override",
            target: &window,
            decision: "overridden",
            policy_snapshot: &in_force.snapshot(),
            details,
        });
        self.writer
            .write_durable(vec![entry])
            .map_err(|e| format!("record the override: {}", crate::error_chain(&e)))?;
        self.views
            .write()
            .expect("views lock")
            .freeze_overrides
            .insert(agent.into(), window.clone());
        // Install the unfrozen policy now rather than at the next tick.
        self.freeze_tick();
        Ok(format!(
            "freeze window '{window}' lifted for agent '{agent}' by {} ({role}) until it closes",
            actor.describe()
        ))
    }

    /// Before the reconcile installs `compiled` for `agent`: if the version
    /// in force says `change_review`, a changed policy needs an approved
    /// proposal of exactly this snapshot. Refused: recorded; an agent
    /// already enforced keeps its policy (error), one not yet enforced (a
    /// daemon start) gets the version in force back from the registry.
    pub(super) fn gate(
        &mut self,
        agent: &Agent,
        actor: &Actor,
        compiled: CompiledPolicy,
    ) -> Result<Gated, ReconcileError> {
        let pass = |compiled| {
            Ok(Gated {
                compiled,
                details: None,
            })
        };
        let Some(in_force) = self.in_force(&agent.name) else {
            return pass(compiled);
        };
        // `compiled` is the agent's own file; a delegated child's version
        // in force records its effective snapshot, so compare own with own
        // (a parent's reload changes the child's effective policy, never
        // its file: that is not a change of the child to review).
        let own_in_force = self.own_snapshot(agent, &in_force);
        if own_in_force == compiled.snapshot {
            return pass(compiled);
        }
        // No change while a window is open (unless overridden): the
        // windows of the policy in force and the host's; for a delegated
        // child also its parents' (those of its effective policy in
        // force), as its actions are frozen by them too.
        if let Ok(current) = policy::parse_policy(&in_force.file, &in_force.content) {
            let mut windows = self.windows_of(&current);
            if let Some(e) = self.enforced.get(&agent.name) {
                windows.extend(
                    e.windows
                        .iter()
                        .filter(|w| w.id.starts_with("parent:"))
                        .cloned(),
                );
            }
            if let Some(window) = self.open_window(&agent.name, &windows) {
                let why = format!(
                    "freeze window '{window}' is open: policy changes wait until it closes \
                     (or `warden freeze override {} --reason ...`)",
                    agent.name
                );
                return self.refuse_change(agent, actor, &in_force, why);
            }
        }
        let Some(rule) = policy::parse_policy(&in_force.file, &in_force.content)
            .ok()
            .and_then(|p| p.change_review)
        else {
            return pass(compiled);
        };
        let verdict = self.proposals_of(&agent.name).and_then(|all| {
            let p = all
                .iter()
                .rev()
                .find(|p| p.snapshot == compiled.snapshot)
                .ok_or_else(|| {
                    format!(
                        "the policy in force ({}) requires review and no proposal of {} exists; \
                         run `warden policy propose {} FILE`",
                        own_in_force, compiled.snapshot, agent.name
                    )
                })?;
            review::verdict(p, &own_in_force, &rule).map(|by| (p.id, by))
        });
        match verdict {
            Ok((id, by)) => {
                let mut details = serde_json::Map::new();
                details.insert("proposal".into(), json!(id));
                details.insert("approved_by".into(), json!(by));
                Ok(Gated {
                    compiled,
                    details: Some(details),
                })
            }
            Err(why) => self.refuse_change(agent, actor, &in_force, why),
        }
    }

    /// A refused change: recorded; an agent already enforced keeps its
    /// policy (error), one not yet enforced (a daemon start) gets the
    /// version in force back from the registry.
    fn refuse_change(
        &mut self,
        agent: &Agent,
        actor: &Actor,
        in_force: &PolicyVersion,
        why: String,
    ) -> Result<Gated, ReconcileError> {
        let message = format!("policy change refused: {why}");
        self.record_policy_rejected(agent, actor, &message);
        if self.enforced.contains_key(&agent.name) {
            return Err(ReconcileError::ChangeRefused(why));
        }
        tracing::warn!(agent = %agent.name, %why, "installing the policy in force instead of the file");
        let caps = self.kernel.capabilities();
        let back = policy::compile_policy(&in_force.file, &in_force.content, &caps)?;
        Ok(Gated {
            compiled: back,
            details: None,
        })
    }
}
