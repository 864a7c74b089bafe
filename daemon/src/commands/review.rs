//! `warden review start|sign|status`: periodic access reviews. Each signed
//! review is an `access_review` evidence entry per agent, with the
//! reviewer (this process's credentials), the policy snapshot reviewed,
//! the agent's capabilities under it and its last activity. `revoke`
//! records the review, then does what `warden kill` does (registry
//! revoked, kernel flag, processes ended, `kill` entry): the agent stays
//! registered so its history and review stay attached to its name;
//! `warden agent remove` is the platform team's separate step.

use serde::Serialize;
use serde_json::json;

use super::{open_registry, open_store, record_durably, require_root, CommandError, Result};
use crate::{
    actor::{Actor, Recorded},
    config::Paths,
    evidence::{Entry, Filter},
    policy,
};

/// The evidence kind of a review (campaign start and each signature).
pub const ACCESS_REVIEW_KIND: &str = "access_review";
/// A review older than this is due when the policy says nothing.
pub const DEFAULT_REVIEW_EVERY_SECS: u64 = 90 * 86_400;

/// `warden review start`: opens a campaign (an entry naming every agent
/// to review). Returns its seq.
pub fn review_start(paths: &Paths) -> Result<u64> {
    require_root("warden review start")?;
    let agents: Vec<String> = open_registry(paths)?
        .list()?
        .into_iter()
        .map(|a| a.name)
        .collect();
    let mut details = serde_json::Map::new();
    details.insert("agents".into(), json!(agents));
    let entry = Actor::current().entry(Recorded {
        kind: ACCESS_REVIEW_KIND,
        agent: "warden",
        owner: "system",
        action: "review.start",
        target: "access review",
        decision: "started",
        policy_snapshot: "none",
        details,
    });
    record_durably(paths, entry)?;
    Ok(open_store(paths)?.head()?.map_or(0, |(seq, _)| seq))
}

/// `keep` or `revoke`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReviewDecision {
    Keep,
    Revoke,
}

/// `warden review sign --decision D AGENT... --comment C`. Every agent is
/// checked before anything is written; an unknown one changes nothing.
pub fn review_sign(
    paths: &Paths,
    decision: ReviewDecision,
    agents: &[String],
    comment: &str,
) -> Result<Vec<String>> {
    require_root("warden review sign")?;
    if comment.trim().is_empty() {
        return Err(CommandError::Daemon(
            "an access review needs a --comment".into(),
        ));
    }
    let registry = open_registry(paths)?;
    let store = open_store(paths)?;
    let campaign = store
        .query(&Filter {
            kind: Some(ACCESS_REVIEW_KIND.into()),
            decisions: vec!["started".into()],
            limit: Some(1),
            ..Default::default()
        })?
        .pop()
        .map(|e| e.seq);
    let mut entries = Vec::new();
    let actor = Actor::current();
    let decision_name = match decision {
        ReviewDecision::Keep => "keep",
        ReviewDecision::Revoke => "revoke",
    };
    for name in agents {
        let agent = registry.get(name)?;
        let version = registry.policy_versions(Some(name))?.pop();
        let (snapshot, capabilities) = match &version {
            Some(v) => (
                v.sha256.clone(),
                policy::parse_policy(&v.file, &v.content)
                    .map(|p| {
                        p.rules
                            .iter()
                            .map(|r| format!("{} {:?}", r.id, r.decision).to_lowercase())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            ),
            None => ("none".to_string(), Vec::new()),
        };
        let last = store
            .query(&Filter {
                agent: Some(name.clone()),
                limit: Some(1),
                ..Default::default()
            })?
            .pop();
        let mut details = serde_json::Map::new();
        details.insert("comment".into(), json!(comment));
        details.insert("campaign".into(), json!(campaign));
        details.insert("capabilities".into(), json!(capabilities));
        details.insert("policy_version".into(), json!(version.map(|v| v.id)));
        details.insert(
            "last_activity_ns".into(),
            json!(last.as_ref().map(|e| e.ts_ns)),
        );
        entries.push(actor.entry(Recorded {
            kind: ACCESS_REVIEW_KIND,
            agent: name,
            owner: &agent.owner,
            action: "review.sign",
            target: name,
            decision: decision_name,
            policy_snapshot: &snapshot,
            details,
        }));
    }
    for entry in entries {
        record_durably(paths, entry)?;
    }
    let mut said = Vec::new();
    for name in agents {
        if decision == ReviewDecision::Revoke {
            let reason = format!("access review: {comment}");
            let report = super::kill(paths, name, &reason, false)?;
            said.push(format!(
                "{name}: revoked by access review ({} processes ended)",
                report.processes.len()
            ));
        } else {
            said.push(format!("{name}: kept by access review"));
        }
    }
    Ok(said)
}

/// One agent's review standing.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewStatus {
    pub agent: String,
    pub owner: String,
    /// The latest signed review, if any.
    pub last_review: Option<Entry>,
    pub review_every_secs: u64,
    /// No review, or the latest is older than `review_every_secs`.
    pub due: bool,
}

/// The latest `access_review` signature per agent among `entries`.
pub fn latest_reviews(entries: Vec<Entry>) -> std::collections::BTreeMap<String, Entry> {
    let mut out = std::collections::BTreeMap::new();
    for e in entries {
        if e.kind == ACCESS_REVIEW_KIND && (e.decision == "keep" || e.decision == "revoke") {
            let newer = out.get(&e.agent).is_none_or(|old: &Entry| old.seq < e.seq);
            if newer {
                out.insert(e.agent.clone(), e);
            }
        }
    }
    out
}

/// `warden review status`: every registered agent, due first.
pub fn review_status(paths: &Paths, now_ns: i64) -> Result<Vec<ReviewStatus>> {
    let registry = open_registry(paths)?;
    let store = open_store(paths)?;
    let mut latest = latest_reviews(store.query(&Filter {
        kind: Some(ACCESS_REVIEW_KIND.into()),
        ..Default::default()
    })?);
    let mut out = Vec::new();
    for agent in registry.list()? {
        let every = registry
            .policy_versions(Some(&agent.name))?
            .pop()
            .and_then(|v| policy::parse_policy(&v.file, &v.content).ok())
            .and_then(|p| p.review_every_secs)
            .unwrap_or(DEFAULT_REVIEW_EVERY_SECS);
        let last = latest.remove(&agent.name);
        let due = last.as_ref().is_none_or(|e| {
            now_ns.saturating_sub(e.ts_ns) > (every as i64).saturating_mul(1_000_000_000)
        });
        out.push(ReviewStatus {
            agent: agent.name,
            owner: agent.owner,
            last_review: last,
            review_every_secs: every,
            due,
        });
    }
    out.sort_by_key(|s| (!s.due, s.agent.clone()));
    Ok(out)
}
