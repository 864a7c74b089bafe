//! The evidence entries a hold produces (held, decided, carried out), and
//! the hold key as the approvals table stores it.

use serde_json::json;
use warden_common::HoldKey;

use crate::{
    actor::{Actor, Recorded},
    approvals::{Approval, Decided},
    evidence::NewEntry,
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

/// The outcome entry of a paused hold, attributed to the held process as
/// the kernel's outcome entries are.
pub(super) fn paused_outcome(
    a: &Approval,
    allowed: bool,
    final_status: &str,
    how: &str,
) -> NewEntry {
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
pub(super) fn unused_grant_outcome(a: &Approval) -> NewEntry {
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
pub(super) fn approval_entry(actor: &Actor, a: &Approval, d: &Decided<'_>) -> NewEntry {
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
pub(super) fn hold_entry(
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
