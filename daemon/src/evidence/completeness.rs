//! The completeness check an auditor runs on approval-gated entries: every
//! hold, every decision on it, and every outcome must carry the fields that
//! tie action, policy and approver together. The approvals table's schema
//! already refuses incomplete decisions; this checks the chain itself, which
//! is what travels to auditors and SIEMs.

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

/// Result of checking a whole log.
#[derive(Debug, Default)]
pub struct Completeness {
    pub gated: u64,
    /// (seq, missing fields) of each incomplete entry.
    pub incomplete: Vec<(u64, Vec<&'static str>)>,
}

impl Completeness {
    pub fn push(&mut self, e: &Entry) {
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
}
