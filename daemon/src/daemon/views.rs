//! What the event reader needs to attribute a decision without asking the
//! enforcer: agent names and owners, policy versions by id, and the
//! daemon's counters. The enforcer writes them; the reader only reads,
//! but for the shadow difference counts it adds to (`count_shadow`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::AtomicU64, Arc, RwLock},
};

use crate::{
    attribution::{AgentView, PolicyView},
    policy,
    registry::Registry,
};

#[derive(Default)]
pub struct Views {
    pub(super) agents: HashMap<u32, AgentView>,
    pub(super) policies: HashMap<u32, Arc<PolicyView>>,
    /// Generations installed as a freeze window's variant: the window id
    /// their decisions carry (daemon/governance.rs).
    pub(super) freezes: HashMap<u32, String>,
    /// Freeze overrides in force: agent -> the window it lifts.
    pub(super) freeze_overrides: HashMap<String, String>,
    /// Shadow differences recorded since the daemon started, per (agent,
    /// candidate snapshot): (would-decision, candidate rule) -> actions.
    pub(super) shadow_counts: HashMap<(String, String), BTreeMap<(String, String), u64>>,
}

impl Views {
    /// Counts a written `shadow` entry (one action, or a summary's
    /// `count`) for `warden status`.
    pub(super) fn count_shadow(&mut self, e: &crate::evidence::NewEntry) {
        if e.kind != "shadow" {
            return;
        }
        let n = if e.method == "counted" {
            e.details.get("count").and_then(|v| v.as_u64()).unwrap_or(0)
        } else {
            1
        };
        *self
            .shadow_counts
            .entry((e.agent.clone(), e.policy_snapshot.clone()))
            .or_default()
            .entry((e.decision.clone(), e.rule_id.clone()))
            .or_default() += n;
    }
}

#[derive(Default)]
pub struct Stats {
    pub(super) recorded: AtomicU64,
    pub(super) decode_errors: AtomicU64,
    /// Records drained from `OVERFLOW` (parked while the ring buffer was
    /// full).
    pub(super) parked: AtomicU64,
}

/// Loads every policy version the registry knows into the views.
pub(super) fn prefill_views(registry: &Registry, views: &RwLock<Views>) {
    let mut v = views.write().expect("views lock");
    for agent in registry.list().unwrap_or_default() {
        v.agents.insert(
            agent.id,
            AgentView {
                name: agent.name.clone(),
                owner: agent.owner.clone(),
            },
        );
    }
    for version in registry.policy_versions(None).unwrap_or_default() {
        if let Ok(p) = policy::parse_policy(&version.file, &version.content) {
            v.policies.insert(
                version.id,
                Arc::new(PolicyView {
                    snapshot: version.sha256.clone(),
                    rule_ids: p.rule_ids(),
                    budget_ids: p.budgets.iter().map(|b| b.id.clone()).collect(),
                    approvers: p.approvers.clone(),
                    hold_timeout: p.hold_timeout,
                }),
            );
        }
    }
}
