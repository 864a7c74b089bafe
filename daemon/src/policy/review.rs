//! Reviewed policy changes (`change_review:`), read from the evidence
//! chain: a `policy_proposal` entry (its `seq` is the proposal's id), its
//! `policy_review` entries, and the `policy_load` that activated it. The
//! chain is the only record, so what `policy history` shows and what the
//! daemon checks before activating are the same entries.
//!
//! Pure: the daemon reads the entries and asks [`verdict`] whether a
//! proposal may be installed under the policy in force.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ChangeReview;
use crate::attribution::LOGINUID_UNSET;
use crate::evidence::Entry;

/// Evidence kinds of the change workflow.
pub const PROPOSAL_KIND: &str = "policy_proposal";
pub const REVIEW_KIND: &str = "policy_review";

/// One review of a proposal.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Review {
    pub seq: u64,
    pub ts_ns: i64,
    pub reviewer: String,
    /// `user:alice` or `group:platform`: why the reviewer could review.
    pub role: String,
    /// `approved` or `rejected`.
    pub decision: String,
    pub comment: String,
}

/// A proposed policy change and what happened to it.
#[derive(Clone, Debug, Serialize)]
pub struct Proposal {
    pub id: u64,
    pub ts_ns: i64,
    pub agent: String,
    pub author: String,
    pub author_uid: u32,
    pub author_loginuid: u32,
    /// The proposed policy's snapshot.
    pub snapshot: String,
    /// The snapshot in force when it was proposed (the diff's base).
    pub from_snapshot: String,
    pub diff: String,
    pub reviews: Vec<Review>,
    /// The `policy_load` entry that installed it.
    pub activated: Option<u64>,
}

impl Proposal {
    /// `pending`, `approved`, `rejected` or `activated` (counting reviews
    /// as they were accepted when given).
    pub fn status(&self, min: u32) -> &'static str {
        if self.activated.is_some() {
            "activated"
        } else if self.reviews.iter().any(|r| r.decision == "rejected") {
            "rejected"
        } else if approvers(&self.reviews).len() >= min as usize {
            "approved"
        } else {
            "pending"
        }
    }
}

fn approvers(reviews: &[Review]) -> Vec<&str> {
    let mut names: Vec<&str> = reviews
        .iter()
        .filter(|r| r.decision == "approved")
        .map(|r| r.reviewer.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

fn text(e: &Entry, key: &str) -> String {
    e.details
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The proposals among `entries` (any kinds, oldest first), with their
/// reviews and activation.
pub fn proposals(entries: &[Entry]) -> Vec<Proposal> {
    let mut out: BTreeMap<u64, Proposal> = BTreeMap::new();
    for e in entries {
        let of = || {
            e.details
                .get("proposal")
                .and_then(serde_json::Value::as_u64)
        };
        match e.kind.as_str() {
            PROPOSAL_KIND => {
                out.insert(
                    e.seq,
                    Proposal {
                        id: e.seq,
                        ts_ns: e.ts_ns,
                        agent: e.agent.clone(),
                        author: e.user.clone(),
                        author_uid: e.uid,
                        author_loginuid: e.loginuid,
                        snapshot: e.policy_snapshot.clone(),
                        from_snapshot: text(e, "from_snapshot"),
                        diff: text(e, "diff"),
                        reviews: Vec::new(),
                        activated: None,
                    },
                );
            }
            REVIEW_KIND => {
                if let Some(p) = of().and_then(|id| out.get_mut(&id)) {
                    p.reviews.push(Review {
                        seq: e.seq,
                        ts_ns: e.ts_ns,
                        reviewer: e.user.clone(),
                        role: text(e, "role"),
                        decision: e.decision.clone(),
                        comment: text(e, "comment"),
                    });
                }
            }
            "policy_load" if e.decision == "loaded" => {
                if let Some(p) = of().and_then(|id| out.get_mut(&id)) {
                    p.activated = Some(e.seq);
                }
            }
            _ => {}
        }
    }
    out.into_values().collect()
}

/// Whether two processes' credentials are the same person: the same uid,
/// or one's login uid (kept across sudo) is the other's uid or login uid.
pub fn same_person(a_uid: u32, a_login: u32, b_uid: u32, b_login: u32) -> bool {
    let set = |l: u32| l != LOGINUID_UNSET;
    a_uid == b_uid
        || (set(a_login) && (a_login == b_uid || a_login == b_login))
        || (set(b_login) && b_login == a_uid)
}

/// Whether `role` (as recorded at review time) is still one `rule` accepts.
fn role_accepted(rule: &ChangeReview, role: &str) -> bool {
    match role.split_once(':') {
        Some(("user", u)) => rule.approvers.users.iter().any(|x| x == u),
        Some(("group", g)) => rule.approvers.groups.iter().any(|x| x == g),
        _ => false,
    }
}

/// Whether `p` may be installed under the policy in force (`in_force`
/// snapshot, whose `rule` applies): made against that policy, not
/// rejected, and approved by at least `min` distinct approvers the rule
/// still names. `Ok` lists them; `Err` says why not.
pub fn verdict(p: &Proposal, in_force: &str, rule: &ChangeReview) -> Result<Vec<String>, String> {
    if p.from_snapshot != in_force {
        return Err(format!(
            "proposal {} was made against policy {}, not the one in force ({in_force}); propose it again",
            p.id, p.from_snapshot
        ));
    }
    let accepted: Vec<&Review> = p
        .reviews
        .iter()
        .filter(|r| role_accepted(rule, &r.role))
        .collect();
    if let Some(r) = accepted.iter().find(|r| r.decision == "rejected") {
        return Err(format!(
            "proposal {} was rejected by {} ({})",
            p.id, r.reviewer, r.comment
        ));
    }
    let mut names: Vec<String> = accepted
        .iter()
        .filter(|r| r.decision == "approved")
        .map(|r| r.reviewer.clone())
        .collect();
    names.sort();
    names.dedup();
    if names.len() < rule.min as usize {
        return Err(format!(
            "proposal {} has {} of the {} approvals its change_review needs",
            p.id,
            names.len(),
            rule.min
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Approvers;
    use serde_json::json;

    fn entry(
        seq: u64,
        kind: &str,
        user: &str,
        uid: u32,
        decision: &str,
        details: serde_json::Value,
    ) -> Entry {
        Entry {
            seq,
            v: 2,
            ts_ns: seq as i64,
            kind: kind.into(),
            agent: "bot".into(),
            owner: "o".into(),
            uid,
            loginuid: LOGINUID_UNSET,
            user: user.into(),
            login_user: "unset".into(),
            pid: 1,
            exe: "/x".into(),
            action: "a".into(),
            target: "t".into(),
            decision: decision.into(),
            rule_id: "n/a".into(),
            policy_snapshot: "new".into(),
            method: "n/a".into(),
            details: details.as_object().cloned().unwrap_or_default(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn rule(users: &[&str], min: u32) -> ChangeReview {
        ChangeReview {
            approvers: Approvers {
                users: users.iter().map(|s| s.to_string()).collect(),
                groups: vec![],
            },
            min,
        }
    }

    #[test]
    fn a_proposal_needs_min_distinct_named_approvers_and_no_rejection() {
        let mut entries = vec![entry(
            5,
            PROPOSAL_KIND,
            "alice",
            1000,
            "proposed",
            json!({"from_snapshot": "old", "diff": "+ x"}),
        )];
        let review = |seq, user: &str, decision: &str| {
            entry(
                seq,
                REVIEW_KIND,
                user,
                1001,
                decision,
                json!({"proposal": 5, "role": format!("user:{user}"), "comment": "c"}),
            )
        };
        let p = &proposals(&entries)[0];
        assert_eq!(p.status(1), "pending");
        assert!(verdict(p, "old", &rule(&["bob"], 1))
            .unwrap_err()
            .contains("0 of the 1"));
        entries.push(review(6, "bob", "approved"));
        entries.push(review(7, "bob", "approved"));
        let p = &proposals(&entries)[0];
        assert_eq!(
            verdict(p, "old", &rule(&["bob", "carol"], 1)).unwrap(),
            vec!["bob"]
        );
        assert!(
            verdict(p, "old", &rule(&["bob", "carol"], 2)).is_err(),
            "bob twice is one approver"
        );
        assert!(verdict(p, "other", &rule(&["bob"], 1))
            .unwrap_err()
            .contains("propose it again"));
        assert!(
            verdict(p, "old", &rule(&["carol"], 1)).is_err(),
            "bob is no longer an approver"
        );
        entries.push(review(8, "carol", "rejected"));
        let p = &proposals(&entries)[0];
        assert!(verdict(p, "old", &rule(&["bob", "carol"], 1))
            .unwrap_err()
            .contains("rejected by carol"));
        entries.push(entry(
            9,
            "policy_load",
            "root",
            0,
            "loaded",
            json!({"proposal": 5}),
        ));
        assert_eq!(proposals(&entries)[0].activated, Some(9));
    }

    #[test]
    fn change_review_is_parsed_and_checked() {
        let parse = |cr: &str| {
            crate::policy::parse_policy("p.yaml", &format!("version: 1\n{cr}rules: []\n"))
        };
        let p = parse("change_review: { approvers: [bob, alice, bob], groups: [ops] }\n").unwrap();
        let cr = p.change_review.unwrap();
        assert_eq!(
            (cr.approvers.users, cr.approvers.groups, cr.min),
            (
                vec!["alice".to_string(), "bob".to_string()],
                vec!["ops".to_string()],
                1
            )
        );
        let snapshot = |t: &str| parse(t).unwrap().snapshot();
        assert_ne!(
            snapshot(""),
            snapshot("change_review: { approvers: [bob] }\n")
        );
        for (bad, says) in [
            ("change_review: {}\n", "names no approvers"),
            (
                "change_review: { approvers: [bob], min: 0 }\n",
                "at least 1",
            ),
            (
                "change_review: { approvers: [bob], min: 2 }\n",
                "only 1 approvers",
            ),
            ("change_review: { approvers: [Bob!] }\n", "p.yaml:2"),
            ("change_review: { approver: [bob] }\n", "unknown field"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.starts_with("p.yaml:2:"), "{bad}: {e}");
        }
    }

    #[test]
    fn sudo_does_not_make_a_second_person() {
        assert!(same_person(1000, LOGINUID_UNSET, 1000, LOGINUID_UNSET));
        assert!(
            same_person(0, 1000, 1000, LOGINUID_UNSET),
            "root via sudo from alice is alice"
        );
        assert!(same_person(1000, LOGINUID_UNSET, 0, 1000));
        assert!(same_person(0, 1000, 0, 1000));
        assert!(!same_person(0, 1000, 1001, LOGINUID_UNSET));
        assert!(!same_person(65534, LOGINUID_UNSET, 0, LOGINUID_UNSET));
    }
}
