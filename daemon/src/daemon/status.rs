//! What `warden status` reports: the mechanisms in use, the agents
//! enforced and the machine-wide hooks attached on demand.

use std::sync::atomic::Ordering;

use super::enforcer::Enforcer;
use crate::{
    control::{AgentState, BudgetState, GlobalHook, ShadowCount, ShadowState, StatusReport},
    registry::{AgentStatus, RegistryError},
};

impl Enforcer {
    pub(super) fn agent_state(&self, name: &str) -> Result<AgentState, RegistryError> {
        let agent = self.registry.get(name)?;
        let enforced = self.enforced.get(name);
        Ok(AgentState {
            agent: name.to_string(),
            enforced: enforced.is_some_and(|e| self.kernel.is_attached(e.cgroup_id)),
            cgroup: agent.cgroup.display().to_string(),
            policy_snapshot: enforced.map_or_else(|| "none".into(), |e| e.snapshot.clone()),
            // Or revoked through a revoked parent (delegation).
            revoked: agent.status == AgentStatus::Revoked || enforced.is_some_and(|e| e.revoked),
            record: enforced.is_some_and(|e| e.record),
            rule_maps: enforced.map_or_else(String::new, |e| e.rule_maps.clone()),
            budgets: enforced.map_or_else(Vec::new, |e| self.budget_states(e)),
            shadow: enforced.and_then(|e| self.shadow_state(name, e)),
        })
    }

    /// The agent's shadow candidate and the differences counted for it.
    pub(super) fn shadow_state(
        &self,
        name: &str,
        e: &super::reconcile::Enforced,
    ) -> Option<ShadowState> {
        let snapshot = e.shadow.clone()?;
        let views = self.views.read().expect("views lock");
        let mut differences: Vec<ShadowCount> = views
            .shadow_counts
            .get(&(name.to_string(), snapshot.clone()))
            .into_iter()
            .flatten()
            .map(|((decision, rule), count)| ShadowCount {
                decision: decision.clone(),
                rule: rule.clone(),
                count: *count,
            })
            .collect();
        differences.sort_by_key(|d| std::cmp::Reverse(d.count));
        Some(ShadowState {
            snapshot,
            differences,
        })
    }

    /// Each budget of `e`'s policy with its use, read from the kernel (a
    /// budget whose count cannot be read shows no use rather than failing
    /// the whole status).
    pub(super) fn budget_states(&self, e: &super::reconcile::Enforced) -> Vec<BudgetState> {
        e.budgets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let now = self.kernel.budget_use(e.agent_id, i as u32, b.per).ok();
                BudgetState {
                    id: b.id.clone(),
                    count: b.count.name().into(),
                    used: now.map_or(0, |n| n.used),
                    limit: b.limit,
                    per_secs: b.per.as_secs(),
                    then: b.then.name().into(),
                    resets_in_secs: now.map_or(0, |n| n.resets_in.as_secs()),
                }
            })
            .collect()
    }

    pub(super) fn status(&self) -> StatusReport {
        let mut agents: Vec<AgentState> = self
            .enforced
            .iter()
            .map(|(name, e)| AgentState {
                agent: name.clone(),
                enforced: self.kernel.is_attached(e.cgroup_id),
                cgroup: e.cgroup.display().to_string(),
                policy_snapshot: e.snapshot.clone(),
                revoked: e.revoked,
                record: e.record,
                rule_maps: e.rule_maps.clone(),
                budgets: self.budget_states(e),
                shadow: self.shadow_state(name, e),
            })
            .collect();
        agents.sort_by(|a, b| a.agent.cmp(&b.agent));
        StatusReport {
            pid: std::process::id(),
            started_at_ns: self.started_at_ns,
            cgroup2: self.cgroup2.display().to_string(),
            mechanisms: self.kernel.mechanisms(),
            agents,
            kernel: self.kernel.counters().unwrap_or_default(),
            decode_errors: self.stats.decode_errors.load(Ordering::Relaxed),
            recorded: self.stats.recorded.load(Ordering::Relaxed),
            policy_errors: self.policy_errors.clone(),
            public_key: self.public_key.clone(),
            key_id: self.key_id.clone(),
            global_hooks: self.global_hooks(),
            evidence_cap: Some(self.cap.clone()),
        }
    }

    /// The machine-wide programs attached only on demand, with what needs
    /// them now.
    pub(super) fn global_hooks(&self) -> Vec<GlobalHook> {
        let needs = self.global_needs();
        let agents = |names: &[&str], what: &str| {
            (!names.is_empty()).then(|| format!("{what} of {}", names.join(", ")))
        };
        let marked = (needs.marked > 0)
            .then(|| format!("{} thread(s) held or marked for a stop", needs.marked));
        let pending = match needs.pending {
            Some(0) => None,
            Some(n) => Some(format!("{n} pending hold(s)")),
            None => Some("pending holds (they could not be listed)".to_string()),
        };
        // With BPF LSM the kernel leaves opens to lsm/file_open.
        let files = if self.kernel.lsm().file {
            None
        } else {
            agents(&needs.files, "file rules")
        };
        // Where socket_create decides packet sockets, they need no sys_exit.
        let packets = if self.kernel.lsm().packet {
            None
        } else {
            (!needs.packets.is_empty()).then(|| {
                format!(
                    "packet sockets of the adopted agent(s) {}",
                    needs.packets.join(", ")
                )
            })
        };
        let hook = |hook: &str, attached: bool, cost: &str, reasons: Vec<Option<String>>| {
            let reasons: Vec<String> = reasons.into_iter().flatten().collect();
            let why = match (attached, reasons.is_empty()) {
                (true, false) => format!("{cost}; needed by {}", reasons.join("; ")),
                (true, true) => format!("{cost}; attached, no agent needs it any more"),
                (false, _) => format!("{cost} while attached; no agent needs it now"),
            };
            GlobalHook {
                hook: hook.into(),
                attached,
                why,
            }
        };
        vec![
            hook(
                "tp_btf/sys_exit",
                self.kernel.sys_exit_mode() != 0,
                "runs at every syscall exit on the machine",
                vec![
                    files,
                    agents(&needs.holds, "holds"),
                    pending,
                    marked.clone(),
                    packets,
                ],
            ),
            hook(
                "tp_btf/page_fault_user",
                self.kernel.fault_guard_attached(),
                "runs at every user page fault on the machine",
                vec![agents(&needs.fault_guard, "exec holds"), marked],
            ),
        ]
    }
}
