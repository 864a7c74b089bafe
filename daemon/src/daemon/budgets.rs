//! `warden budget reset`: an approver of the agent's policy, from outside
//! every agent, starts one budget's count afresh in the kernel; the reset
//! and the use it cleared go into the evidence chain.

use serde_json::json;

use super::enforcer::Enforcer;
use crate::actor::{Actor, Recorded};

impl Enforcer {
    /// After a policy load: the kernel keys counts by budget index, so a
    /// budget whose meaning changed (another id, class, rule set or
    /// window at that index; a new limit keeps the count) starts afresh,
    /// as do indexes the new policy no longer has.
    pub(super) fn reset_changed_budgets(
        &mut self,
        agent: &crate::registry::Agent,
        new: &[crate::policy::budget::Budget],
    ) {
        let old = self
            .enforced
            .get(&agent.name)
            .map(|e| e.budgets.clone())
            .unwrap_or_default();
        for (i, o) in old.iter().enumerate() {
            let same = new.get(i).is_some_and(|n| {
                n.id == o.id && n.count == o.count && n.rules == o.rules && n.per == o.per
            });
            if !same {
                if let Err(e) = self.kernel.budget_reset(agent.id, i as u32, o.per) {
                    tracing::warn!(agent = %agent.name, budget = %o.id, error = %crate::error_chain(&e), "reset a changed budget");
                }
            }
        }
    }

    /// Resets budget `budget` of `agent`; the reply's message, or why not.
    pub(super) fn budget_reset(
        &mut self,
        agent: &str,
        budget: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<String, String> {
        if let Some(refused) = self.refuse_agent_caller(actor, "budget reset") {
            return Err(refused);
        }
        let Some(e) = self.enforced.get(agent) else {
            return Err(format!("agent '{agent}' is not enforced"));
        };
        let Some(index) = e.budgets.iter().position(|b| b.id == budget) else {
            let ids: Vec<&str> = e.budgets.iter().map(|b| b.id.as_str()).collect();
            return Err(format!(
                "agent '{agent}' has no budget '{budget}' (its policy has {ids:?})"
            ));
        };
        let (agent_id, snapshot, b) = (e.agent_id, e.snapshot.clone(), e.budgets[index].clone());
        let approvers = self
            .policy_by_snapshot(&snapshot)
            .map(|p| p.approvers.clone())
            .unwrap_or_default();
        let user = nix::unistd::User::from_uid(actor.uid.into()).ok().flatten();
        let groups = user
            .as_ref()
            .map(crate::approvals::groups_of)
            .unwrap_or_default();
        let Some(role) = crate::approvals::approver_role(&approvers, &actor.user, &groups) else {
            return Err(format!(
                "refused: {} is not an approver for agent '{agent}' (its policy names users {:?}, \
                 groups {:?})",
                actor.user, approvers.users, approvers.groups
            ));
        };
        let owner = self
            .registry
            .get(agent)
            .map(|a| a.owner)
            .unwrap_or_else(|_| "unknown".into());
        let used = self
            .kernel
            .budget_reset(agent_id, index as u32, b.per)
            .map_err(|e| {
                format!(
                    "reset budget '{budget}' of '{agent}': {}",
                    crate::error_chain(&e)
                )
            })?;
        // The next egress drop in this window is a first again.
        self.egress_windows.remove(&(agent_id, index as u32));
        let mut details = serde_json::Map::new();
        details.insert("budget".into(), json!(b.id));
        details.insert("used".into(), json!(used));
        details.insert("limit".into(), json!(b.limit));
        details.insert("per_secs".into(), json!(b.per.as_secs()));
        details.insert("reason".into(), json!(reason));
        details.insert("approver_role".into(), json!(role));
        let target = format!("budget:{}", b.id);
        self.record(actor.entry(Recorded {
            kind: "budget_reset",
            agent,
            owner: &owner,
            action: "budget.reset",
            target: &target,
            decision: "reset",
            policy_snapshot: &snapshot,
            details,
        }));
        Ok(format!(
            "budget '{budget}' of agent '{agent}' reset ({used}/{} used in this window)",
            b.limit
        ))
    }
}
