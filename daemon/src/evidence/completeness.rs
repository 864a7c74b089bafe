//! The completeness check an auditor runs on approval-gated entries: every
//! hold, every decision on it, and every outcome must carry the fields that
//! tie action, policy and approver together. The approvals table's schema
//! already refuses incomplete decisions; this checks the chain itself, which
//! is what travels to auditors and SIEMs.
//!
//! It also accounts for `summary` entries (repeats of an allowed action or
//! of a denial, counted in the kernel): each must say how many repeats it stands for
//! (`count` >= 1), when the first and last happened (`first_ns` <=
//! `last_ns`) and under which policy; per agent, the entries recorded
//! individually plus the summarised repeats are set beside the kernel's own
//! decision counter as of the latest summary (`agent_kernel_decisions`).
//! Summaries claiming more repeats than the kernel made decisions are an
//! error.
//!
//! The figure at the latest summary lags the log's position there: records
//! of firsts still in the ring buffer (or the daemon's queue) at that sweep
//! are written after the summary, and when an agent's last actions were all
//! firsts no later summary follows. So the whole log (entries, counted
//! repeats, and the actions GAP entries name as unrecorded) is also set
//! beside that figure (fewer than the kernel decided: repeats missed by a
//! sweep, or evidence lost), unless `warden evidence archive` pruned the
//! log's beginning.

use std::collections::BTreeMap;

use serde_json::Value;

use super::record::Entry;

/// Fields each approval-gated entry must carry in `details`.
fn required(e: &Entry) -> Option<&'static [&'static str]> {
    match (e.kind.as_str(), e.method.as_str()) {
        ("hold", _) => Some(&[
            "approval_id",
            "approval_required",
            "job_hash",
            "expires_at_ns",
        ]),
        ("approval", _) if e.decision == "replayed" => {
            Some(&["approval_id", "job_hash", "status", "replay_reason"])
        }
        ("approval", _) => Some(&[
            "approval_id",
            "approval_required",
            "job_hash",
            "approved_by",
            "approved_role",
            "approved_at_ns",
            "status",
        ]),
        ("decision", "approved" | "rejected" | "grant-withdrawn") => {
            Some(&["approval_id", "job_hash", "final_status"])
        }
        _ => None,
    }
}

fn present(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// The required fields `e` lacks; `None` if it is not approval-gated.
pub fn missing_fields(e: &Entry) -> Option<Vec<&'static str>> {
    let fields = required(e)?;
    let mut missing: Vec<&'static str> = fields
        .iter()
        .copied()
        .filter(|f| !present(e.details.get(*f)))
        .collect();
    if e.policy_snapshot == "none" || e.policy_snapshot.is_empty() {
        missing.push("policy_snapshot");
    }
    if e.kind == "hold"
        && e.details.get("approval_required") != Some(&Value::Bool(true))
        && !missing.contains(&"approval_required")
    {
        missing.push("approval_required");
    }
    Some(missing)
}

/// The fields of a `summary` entry that are missing or wrong; `None` if
/// `e` is not a summary.
pub fn summary_faults(e: &Entry) -> Option<Vec<&'static str>> {
    if e.kind != "summary" {
        return None;
    }
    let num = |k: &str| e.details.get(k).and_then(Value::as_u64);
    let mut faults = Vec::new();
    if num("count").is_none_or(|c| c == 0) {
        faults.push("count");
    }
    match (
        e.details.get("first_ns").and_then(Value::as_i64),
        e.details.get("last_ns").and_then(Value::as_i64),
    ) {
        (Some(f), Some(l)) if f <= l => {}
        (None, _) => faults.push("first_ns"),
        _ => faults.push("last_ns"),
    }
    if e.policy_snapshot == "none" || e.policy_snapshot.is_empty() {
        faults.push("policy_snapshot");
    }
    Some(faults)
}

/// One agent's decisions as the log accounts for them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// `decision` and `hold` entries: actions recorded one by one.
    pub individual: u64,
    /// Repeats of allowed actions and of denials, summed over `summary`
    /// entries.
    pub counted: u64,
    /// `summary` entries.
    pub summaries: u64,
    /// The kernel's decision counter for the agent at its latest summary.
    pub kernel_decisions: Option<u64>,
    /// Repeats summarised, and entries recorded individually, up to that
    /// summary: what the log accounts for of the kernel's figure.
    pub counted_at_kernel: u64,
    pub individual_at_kernel: u64,
    /// Actions GAP entries name as unrecorded (`lost` and
    /// `allowed_unrecorded`).
    pub unrecorded: u64,
}

impl Accounting {
    /// What the whole log accounts for: entries, counted repeats and the
    /// actions GAP entries count.
    pub fn whole_log(&self) -> u64 {
        self.individual + self.counted + self.unrecorded
    }
}

/// Result of checking a whole log.
#[derive(Debug, Default)]
pub struct Completeness {
    pub gated: u64,
    /// (seq, missing fields) of each incomplete entry.
    pub incomplete: Vec<(u64, Vec<&'static str>)>,
    /// Per agent, once the log has summaries.
    pub agents: BTreeMap<String, Accounting>,
    /// `warden evidence archive` pruned the log's beginning: its whole
    /// totals are no longer the agent's.
    pub archived: bool,
}

impl Completeness {
    /// Agents whose summaries claim more repeats than the kernel decided.
    pub fn overcounted(&self) -> Vec<(&str, &Accounting)> {
        self.agents
            .iter()
            .filter(|(_, a)| a.kernel_decisions.is_some_and(|k| a.counted_at_kernel > k))
            .map(|(n, a)| (n.as_str(), a))
            .collect()
    }

    /// Agents whose whole log accounts for fewer actions than the kernel
    /// had decided at their latest summary. Never on a log
    /// whose beginning was archived.
    pub fn underaccounted(&self) -> Vec<(&str, &Accounting)> {
        if self.archived {
            return Vec::new();
        }
        self.agents
            .iter()
            .filter(|(_, a)| a.kernel_decisions.is_some_and(|k| a.whole_log() < k))
            .map(|(n, a)| (n.as_str(), a))
            .collect()
    }

    pub fn push(&mut self, e: &Entry) {
        match e.kind.as_str() {
            "decision" | "hold" => self.agents.entry(e.agent.clone()).or_default().individual += 1,
            "summary" => {
                let a = self.agents.entry(e.agent.clone()).or_default();
                a.summaries += 1;
                a.counted += e.details.get("count").and_then(Value::as_u64).unwrap_or(0);
                if let Some(k) = e
                    .details
                    .get("agent_kernel_decisions")
                    .and_then(Value::as_u64)
                {
                    a.kernel_decisions = Some(k);
                    a.counted_at_kernel = a.counted;
                    a.individual_at_kernel = a.individual;
                }
            }
            "gap" => {
                let a = self.agents.entry(e.agent.clone()).or_default();
                let num = |k: &str| e.details.get(k).and_then(Value::as_u64).unwrap_or(0);
                a.unrecorded += num("lost") + num("allowed_unrecorded");
            }
            crate::evidence::store::ARCHIVE_KIND => self.archived = true,
            _ => {}
        }
        if let Some(faults) = summary_faults(e) {
            if !faults.is_empty() {
                self.incomplete.push((e.seq, faults));
            }
        }
        if let Some(missing) = missing_fields(e) {
            self.gated += 1;
            if !missing.is_empty() {
                self.incomplete.push((e.seq, missing));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(kind: &str, method: &str, details: Value) -> Entry {
        serde_json::from_value(json!({
            "seq": 3, "ts_ns": 1, "kind": kind, "agent": "a", "owner": "o", "uid": 0,
            "loginuid": 0, "user": "root", "login_user": "root", "pid": 1, "exe": "/x",
            "action": "connect4", "target": "t", "decision": "approved", "rule_id": "r",
            "policy_snapshot": "a".repeat(64), "method": method, "details": details,
            "prev_hash": "0".repeat(64), "hash": "b".repeat(64)
        }))
        .unwrap()
    }

    #[test]
    fn complete_approval_passes_and_gaps_are_named() {
        let full = json!({"approval_id": 1, "approval_required": true, "job_hash": "h",
            "approved_by": "alice", "approved_role": "user:alice", "approved_at_ns": 5, "status": "approved"});
        assert_eq!(
            missing_fields(&entry("approval", "n/a", full)),
            Some(vec![])
        );
        let partial = json!({"approval_id": 1, "approval_required": true, "job_hash": "h", "status": "approved"});
        assert_eq!(
            missing_fields(&entry("approval", "n/a", partial)),
            Some(vec!["approved_by", "approved_role", "approved_at_ns"])
        );
    }

    #[test]
    fn only_approval_gated_entries_count() {
        assert_eq!(missing_fields(&entry("decision", "allow", json!({}))), None);
        assert_eq!(
            missing_fields(&entry("decision", "approved", json!({"approval_id": 1}))),
            Some(vec!["job_hash", "final_status"])
        );
        assert_eq!(
            missing_fields(&entry(
                "decision",
                "grant-withdrawn",
                json!({"approval_id": 1})
            )),
            Some(vec!["job_hash", "final_status"])
        );
        let mut c = Completeness::default();
        c.push(&entry("hold", "held", json!({"approval_id": 1, "approval_required": false, "job_hash": "h", "expires_at_ns": 9})));
        assert_eq!(c.gated, 1);
        assert_eq!(c.incomplete, vec![(3, vec!["approval_required"])]);
    }

    #[test]
    fn summaries_are_checked_and_counted_against_the_kernel() {
        let mut c = Completeness::default();
        c.push(&entry("decision", "allow", json!({})));
        c.push(&entry(
            "summary",
            "counted",
            json!({"count": 999, "first_ns": 5, "last_ns": 9, "agent_kernel_decisions": 1000}),
        ));
        assert!(c.incomplete.is_empty(), "{:?}", c.incomplete);
        let a = &c.agents["a"];
        assert_eq!(
            (a.individual, a.counted, a.kernel_decisions),
            (1, 999, Some(1000))
        );
        assert!(c.overcounted().is_empty());

        c.push(&entry(
            "summary",
            "counted",
            json!({"count": 0, "first_ns": 9, "last_ns": 5, "agent_kernel_decisions": 1000}),
        ));
        assert_eq!(c.incomplete, vec![(3, vec!["count", "last_ns"])]);
        c.push(&entry(
            "summary",
            "counted",
            json!({"count": 5, "first_ns": 1, "last_ns": 2, "agent_kernel_decisions": 1000}),
        ));
        assert_eq!(c.overcounted().len(), 1, "1004 repeats of 1000 decisions");
    }

    #[test]
    fn the_whole_log_is_set_beside_the_latest_figure() {
        // Issue #14: the agent's last actions were firsts, still in flight
        // at its latest sweep; they are written after the summary.
        let mut c = Completeness::default();
        c.push(&entry("decision", "allow", json!({})));
        c.push(&entry(
            "summary",
            "counted",
            json!({"count": 10, "first_ns": 1, "last_ns": 2, "agent_kernel_decisions": 14}),
        ));
        assert_eq!(c.underaccounted().len(), 1, "11 of 14 so far");
        c.push(&entry("decision", "allow", json!({})));
        c.push(&entry("decision", "allow", json!({})));
        assert_eq!(c.underaccounted().len(), 1, "13 of 14");
        c.push(&entry(
            "gap",
            "n/a",
            json!({"lost": 1, "allowed_unrecorded": 0}),
        ));
        assert!(c.underaccounted().is_empty(), "14 of 14, one as a GAP");
        let a = &c.agents["a"];
        assert_eq!((a.individual_at_kernel, a.whole_log()), (1, 14));
        c.push(&entry(
            "summary",
            "counted",
            json!({"count": 1, "first_ns": 3, "last_ns": 4, "agent_kernel_decisions": 20}),
        ));
        assert_eq!(c.underaccounted().len(), 1, "15 of 20");
        c.push(&entry("archive", "n/a", json!({})));
        assert!(
            c.underaccounted().is_empty(),
            "an archived log is not compared"
        );
    }
}
