//! `warden log --lineage SEQ`: who answers for one entry. The chain of
//! agents from the entry's agent up (each with its owner), the human whose
//! login session started the acting process, and the delegated `run` that
//! started the child agent (the latest before the entry).

use serde::Serialize;

use super::{open_registry, open_store, CommandError, Result};
use crate::{config::Paths, evidence};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Link {
    pub agent: String,
    pub owner: String,
}

/// The delegated `run` entry that started the entry's agent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StartedBy {
    pub seq: u64,
    pub ts_ns: i64,
    pub delegated_by: String,
    pub pid: u32,
    pub user: String,
    pub login_user: String,
    pub loginuid: u32,
    pub argv: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    pub seq: u64,
    pub kind: String,
    pub action: String,
    pub target: String,
    pub decision: String,
    pub rule_id: String,
    /// The entry's agent first, then its parent, ...
    pub chain: Vec<Link>,
    /// `entry` when the chain was sealed in the entry (`details.lineage`),
    /// `registry` when it was read from today's registry.
    pub chain_from: &'static str,
    /// The human whose login session started the acting process.
    pub login_user: String,
    pub loginuid: u32,
    pub user: String,
    pub pid: u32,
    pub started_by: Option<StartedBy>,
}

/// How many of the agent's latest runs before an entry are searched for
/// the delegated one that started it.
const RUNS_SEARCHED: usize = 1000;

pub fn lineage(paths: &Paths, seq: u64) -> Result<Lineage> {
    let store = open_store(paths)?;
    let entry = store
        .read_range(seq, seq)?
        .into_iter()
        .next()
        .ok_or_else(|| CommandError::Daemon(format!("no evidence entry with seq {seq}")))?;
    let sealed: Option<Vec<Link>> =
        entry
            .details
            .get("lineage")
            .and_then(|v| v.as_array())
            .map(|links| {
                links
                    .iter()
                    .map(|l| Link {
                        agent: l["agent"].as_str().unwrap_or("?").to_string(),
                        owner: l["owner"].as_str().unwrap_or("?").to_string(),
                    })
                    .collect()
            });
    let (chain, chain_from) = match sealed {
        Some(chain) => (chain, "entry"),
        None => {
            let mut chain = vec![Link {
                agent: entry.agent.clone(),
                owner: entry.owner.clone(),
            }];
            if let Ok(agents) = open_registry(paths).and_then(|r| Ok(r.lineage(&entry.agent)?)) {
                chain.extend(agents.into_iter().skip(1).map(|a| Link {
                    agent: a.name,
                    owner: a.owner,
                }));
            }
            (chain, "registry")
        }
    };
    // The newest runs of the agent up to the entry (a run is written before
    // the child acts), bounded: the log of a busy child holds many.
    let runs = store.query(&evidence::Filter {
        agent: Some(entry.agent.clone()),
        kind: Some("run".into()),
        decisions: vec!["started".into()],
        since_ns: None,
        until_ns: Some(entry.ts_ns.saturating_add(1)),
        limit: Some(RUNS_SEARCHED),
    })?;
    let started_by = runs
        .iter()
        .rev()
        .find(|r| r.seq < entry.seq && r.details.contains_key("delegated_by"))
        .map(|r| StartedBy {
            seq: r.seq,
            ts_ns: r.ts_ns,
            delegated_by: r.details["delegated_by"].as_str().unwrap_or("?").into(),
            pid: r.pid,
            user: r.user.clone(),
            login_user: r.login_user.clone(),
            loginuid: r.loginuid,
            argv: r.target.clone(),
        });
    Ok(Lineage {
        seq: entry.seq,
        kind: entry.kind,
        action: entry.action,
        target: entry.target,
        decision: entry.decision,
        rule_id: entry.rule_id,
        chain,
        chain_from,
        login_user: entry.login_user,
        loginuid: entry.loginuid,
        user: entry.user,
        pid: entry.pid,
        started_by,
    })
}
