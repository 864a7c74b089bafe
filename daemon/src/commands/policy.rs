//! `warden policy check|reload|history`, and resolving the policy file an
//! agent is registered with.

use std::path::Path;

use super::{ask, open_registry, unexpected, CommandError, Result};
use crate::{
    config::Paths,
    control::{Request, Response},
    policy,
};

/// Resolves `--policy FILE` to its name inside the policy directory and
/// checks that it parses and compiles.
pub fn resolve_policy(paths: &Paths, file: &Path) -> Result<(String, policy::Policy)> {
    let full = if file.components().count() == 1 {
        paths.policy_dir.join(file)
    } else {
        file.to_path_buf()
    };
    let read_err = |source| CommandError::ReadPolicy {
        file: full.clone(),
        source,
    };
    let canonical = full.canonicalize().map_err(read_err)?;
    let dir = paths
        .policy_dir
        .canonicalize()
        .map_err(|source| CommandError::ReadPolicy {
            file: paths.policy_dir.clone(),
            source,
        })?;
    let name = match canonical.strip_prefix(&dir) {
        Ok(rel) if rel.components().count() == 1 => rel.to_string_lossy().into_owned(),
        _ => {
            return Err(CommandError::PolicyOutsideDir {
                file: full,
                dir: paths.policy_dir.clone(),
            })
        }
    };
    // The daemon checks the mechanisms when it reconciles, and this command
    // reports its refusal; capacity and format are checked here.
    let compiled = policy::compile_policy_file(&full, &policy::Capabilities::assume_all())?;
    Ok((name, compiled.parsed))
}

/// `warden policy check FILE...`: runs each file through the daemon's
/// pipeline (`compile_policy`), assuming every mechanism is present.
pub fn policy_check(file: &Path) -> Result<policy::CompiledPolicy> {
    Ok(policy::compile_policy_file(
        file,
        &policy::Capabilities::assume_all(),
    )?)
}

/// `warden policy reload`.
pub fn policy_reload(paths: &Paths) -> Result<()> {
    match ask(paths, &Request::Reload)? {
        Response::Ok { .. } => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// `warden policy suggest AGENT [--since T] [--diff CURRENT]`: a policy
/// from the agent's decision entries, and with `current` what would change.
pub fn policy_suggest(
    paths: &Paths,
    agent: &str,
    since: Option<&str>,
    current: Option<&Path>,
) -> Result<(policy::suggest::Suggestion, Option<String>)> {
    let filter = crate::evidence::Filter {
        agent: Some(agent.to_string()),
        kind: Some("decision".into()),
        since_ns: since.map(crate::clock::parse_time).transpose()?,
        ..Default::default()
    };
    let entries = super::open_store(paths)?.query(&filter)?;
    let suggestion = policy::suggest::suggest(agent, &entries)?;
    let diff = match current {
        Some(file) => {
            let current = policy::load_policy_file(file)?;
            Some(policy::suggest::diff(&current, &suggestion.policy))
        }
        None => None,
    };
    Ok((suggestion, diff))
}

/// `warden policy shadow AGENT CANDIDATE [--since T]`: the agent's
/// decision and summary entries replayed against the candidate.
pub fn policy_shadow(
    paths: &Paths,
    agent: &str,
    candidate: &Path,
    since: Option<&str>,
) -> Result<policy::shadow::ShadowReport> {
    let text = std::fs::read_to_string(candidate).map_err(|source| CommandError::ReadPolicy {
        file: candidate.to_path_buf(),
        source,
    })?;
    let since_ns = since.map(crate::clock::parse_time).transpose()?;
    let name = candidate.display().to_string();
    let caps = policy::Capabilities::assume_all();
    let compiled = policy::compile_policy(&name, &text, &caps)?;
    // A delegated child is decided by the intersection: its candidate is
    // replayed as it would have been enforced, each entry under its
    // parent's policy in force when the entry was recorded.
    let under = match parents_over_time(paths, agent)? {
        Some(parents) => Some(policy::shadow::ReplayUnder::new(
            &compiled.parsed,
            &parents,
        )?),
        None => None,
    };
    let store = super::open_store(paths)?;
    // Streamed in seq order, one row in memory at a time: the agent's
    // record can be millions of entries.
    let first = under
        .as_ref()
        .and_then(policy::shadow::ReplayUnder::latest)
        .unwrap_or(&compiled);
    let mut replay = policy::shadow::Replay::new(agent, &name, first);
    let _: std::ops::ControlFlow<()> = store.for_each_entry(|e| {
        if since_ns.is_none_or(|t| e.ts_ns >= t) {
            if let Some(c) = under.as_ref().and_then(|u| u.at(e.ts_ns)) {
                replay.set_policy(c);
            }
            replay.add(e);
        }
        std::ops::ControlFlow::<()>::Continue(())
    })?;
    Ok(replay.finish())
}

/// The policy of `agent`'s parent as the kernel enforced it on the parent
/// (for a grandchild, the intersection down the chain) over time, from
/// every version the registry recorded for each ancestor; `None` for an
/// agent without a parent. Candidates (`shadow:`) of the ancestors are
/// left out: the replay asks what this agent's candidate changes.
fn parents_over_time(paths: &Paths, agent: &str) -> Result<Option<Vec<(i64, policy::Policy)>>> {
    let registry = open_registry(paths)?;
    let chain = match registry.lineage(agent) {
        Ok(chain) => chain,
        // An agent the registry does not know: its record is replayed
        // against the candidate alone, as before delegation.
        Err(crate::registry::RegistryError::UnknownAgent(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut versions = Vec::new();
    for ancestor in chain.iter().skip(1).rev() {
        let mine: policy::shadow::AncestorVersions = registry
            .policy_versions(Some(&ancestor.name))?
            .into_iter()
            .map(|v| {
                let file = paths.policy_dir.join(&v.file).display().to_string();
                (v.loaded_at_ns, file, v.content)
            })
            .collect();
        if mine.is_empty() {
            return Err(CommandError::NoPolicyInForce(ancestor.name.clone()));
        }
        versions.push(mine);
    }
    if versions.is_empty() {
        return Ok(None);
    }
    Ok(Some(policy::shadow::parents_over_time(&versions)?))
}

/// `warden policy propose AGENT FILE`: the daemon records the proposal,
/// with this process's credentials as the author.
pub fn policy_propose(paths: &Paths, agent: &str, file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|source| CommandError::ReadPolicy {
        file: file.to_path_buf(),
        source,
    })?;
    let request = Request::Propose {
        agent: agent.into(),
        file: file.display().to_string(),
        text,
    };
    match ask(paths, &request)? {
        Response::Ok { message } => Ok(message),
        other => Err(unexpected(other)),
    }
}

/// `warden freeze override AGENT --reason R`.
pub fn freeze_override(paths: &Paths, agent: &str, reason: &str) -> Result<String> {
    let request = Request::FreezeOverride {
        agent: agent.into(),
        reason: reason.into(),
    };
    match ask(paths, &request)? {
        Response::Ok { message } => Ok(message),
        other => Err(unexpected(other)),
    }
}

/// `warden policy review ID --approve|--reject`.
pub fn policy_review(
    paths: &Paths,
    id: u64,
    approve: bool,
    comment: Option<&str>,
) -> Result<String> {
    let request = Request::Review {
        id,
        approve,
        comment: comment.map(str::to_string),
    };
    match ask(paths, &request)? {
        Response::Ok { message } => Ok(message),
        other => Err(unexpected(other)),
    }
}

/// The reviewed-change proposals, from the evidence log.
pub fn policy_proposals(
    paths: &Paths,
    agent: Option<&str>,
) -> Result<Vec<policy::review::Proposal>> {
    let store = super::open_store(paths)?;
    let mut entries = Vec::new();
    for kind in [
        policy::review::PROPOSAL_KIND,
        policy::review::REVIEW_KIND,
        "policy_load",
    ] {
        entries.extend(store.query(&crate::evidence::Filter {
            agent: agent.map(str::to_string),
            kind: Some(kind.into()),
            ..Default::default()
        })?);
    }
    entries.sort_by_key(|e| e.seq);
    Ok(policy::review::proposals(&entries))
}

pub fn policy_history(
    paths: &Paths,
    agent: Option<&str>,
) -> Result<Vec<crate::registry::PolicyVersion>> {
    Ok(open_registry(paths)?.policy_versions(agent)?)
}
