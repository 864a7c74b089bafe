//! Evidence of `bytes: egress` budgets: the packets the kernel dropped
//! over a budget (`EGRESS_DROPS`), swept with the summaries. The first
//! sweep that sees drops in a budget window writes one `decision` entry
//! (`deny`, `rule_id: budget:<id>`, the dropped packets and bytes so far);
//! later sweeps in the same window write `summary` entries with the
//! further counts, so an over-budget agent costs one entry per sweep, not
//! one per packet.

use serde_json::json;

use super::enforcer::Enforcer;
use crate::{
    evidence::{record::UNSET_ID, NewEntry},
    kernel::EgressSwept,
};

/// What the sweep knows of one swept key: the agent and its budget.
pub(super) struct EgressContext<'a> {
    pub agent: &'a str,
    pub owner: &'a str,
    pub snapshot: &'a str,
    pub budget: &'a crate::policy::budget::Budget,
    /// `mode: record`: the packets were sent, not dropped.
    pub record: bool,
}

/// The entry for one swept key: `first` is true for the first sweep that
/// saw drops in this budget window.
pub(super) fn egress_entry(
    s: &EgressSwept,
    ctx: &EgressContext<'_>,
    first: bool,
    now_ns: i64,
    to_unix: impl Fn(u64) -> i64,
) -> NewEntry {
    let per = ctx.budget.per.as_secs().max(1);
    let mut details = serde_json::Map::new();
    details.insert("budget".into(), json!(ctx.budget.id));
    details.insert("dropped_packets".into(), json!(s.packets));
    details.insert("dropped_bytes".into(), json!(s.bytes));
    details.insert("limit_bytes".into(), json!(ctx.budget.limit));
    details.insert("per_secs".into(), json!(per));
    // The window on the kernel's monotonic clock: its number and start
    // in seconds of uptime (windows are aligned to multiples of `per`).
    details.insert("window".into(), json!(s.window));
    details.insert(
        "window_start_uptime_secs".into(),
        json!(s.window.saturating_mul(per)),
    );
    details.insert("first_ns".into(), json!(to_unix(s.first_boot_ns)));
    details.insert("last_ns".into(), json!(to_unix(s.last_boot_ns)));
    if !first {
        details.insert("count".into(), json!(s.packets));
    }
    let (decision, method) = match (ctx.record, first) {
        (true, _) => ("would-deny", "record"),
        (false, true) => ("deny", "cgroup-skb-drop"),
        (false, false) => ("deny", "counted"),
    };
    NewEntry {
        ts_ns: now_ns,
        kind: if first { "decision" } else { "summary" }.into(),
        agent: ctx.agent.into(),
        owner: ctx.owner.into(),
        // Packets leave from sockets, not from one process (a retransmit
        // leaves from softirq): no process is named.
        uid: UNSET_ID,
        loginuid: UNSET_ID,
        user: "n/a".into(),
        login_user: "unset".into(),
        pid: 0,
        exe: "n/a".into(),
        action: "egress".into(),
        target: "egress".into(),
        decision: decision.into(),
        rule_id: format!("budget:{}", ctx.budget.id),
        policy_snapshot: ctx.snapshot.into(),
        method: method.into(),
        details,
    }
}

impl Enforcer {
    /// Writes the evidence of the packets dropped over egress budgets
    /// since the last sweep.
    pub(super) fn sweep_egress(&mut self) {
        let swept = match self.kernel.sweep_egress_drops() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "sweep egress drops");
                return;
            }
        };
        if swept.is_empty() {
            return;
        }
        let boot = crate::clock::BootClock::now();
        let now = crate::clock::now_ns();
        let mut entries = Vec::new();
        for s in &swept {
            let Some((name, e)) = self.enforced.iter().find(|(_, e)| e.agent_id == s.agent_id)
            else {
                tracing::warn!(
                    agent_id = s.agent_id,
                    packets = s.packets,
                    "egress drops of an agent no longer enforced"
                );
                continue;
            };
            let Some(budget) = e.budgets.get(s.index as usize) else {
                continue;
            };
            let owner = self
                .registry
                .get(name)
                .map(|a| a.owner)
                .unwrap_or_else(|_| "unknown".into());
            let key = (s.agent_id, s.index);
            let first = self.egress_windows.get(&key) != Some(&s.window);
            self.egress_windows.insert(key, s.window);
            entries.push(egress_entry(
                s,
                &EgressContext {
                    agent: name,
                    owner: &owner,
                    snapshot: &e.snapshot,
                    budget,
                    record: e.record,
                },
                first,
                now,
                |b| boot.to_unix_ns(b),
            ));
        }
        if !entries.is_empty() {
            self.writer.queue(entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::budget::{Budget, BudgetCount, BudgetThen};

    #[test]
    fn the_first_sweep_of_a_window_is_a_decision_and_later_ones_count() {
        let budget = Budget {
            id: "egress".into(),
            count: BudgetCount::EgressBytes,
            rules: Vec::new(),
            limit: 1000,
            per: Duration::from_secs(60),
            then: BudgetThen::Deny,
        };
        let ctx = EgressContext {
            agent: "bot",
            owner: "o",
            snapshot: "s",
            budget: &budget,
            record: false,
        };
        let s = EgressSwept {
            agent_id: 1,
            index: 0,
            packets: 3,
            bytes: 4500,
            first_boot_ns: 10,
            last_boot_ns: 20,
            window: 5,
        };
        let e = egress_entry(&s, &ctx, true, 99, |b| b as i64 + 1000);
        assert_eq!(
            (e.kind.as_str(), e.decision.as_str(), e.rule_id.as_str()),
            ("decision", "deny", "budget:egress")
        );
        assert_eq!(e.method, "cgroup-skb-drop");
        assert_eq!(e.details["dropped_packets"], 3);
        assert_eq!(e.details["dropped_bytes"], 4500);
        assert_eq!(e.details["window_start_uptime_secs"], 300);
        assert_eq!(e.details["first_ns"], 1010);
        assert!(e.details.get("count").is_none());
        let e = egress_entry(&s, &ctx, false, 99, |b| b as i64);
        assert_eq!((e.kind.as_str(), e.method.as_str()), ("summary", "counted"));
        assert_eq!(e.details["count"], 3);
        let ctx = EgressContext {
            record: true,
            ..ctx
        };
        let e = egress_entry(&s, &ctx, true, 99, |b| b as i64);
        assert_eq!(
            (e.decision.as_str(), e.method.as_str()),
            ("would-deny", "record")
        );
    }
}
