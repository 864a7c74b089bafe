//! `warden log [verify|checkpoints|tail]`: read and verify the evidence log.

use std::{path::PathBuf, time::Duration};

use super::{open_store, open_store_checked, CommandError, Result};
use crate::{config::Paths, evidence};

/// `warden log [--agent A] [--kind K] [--decision D] [--since T] [--limit N]`
/// as typed: `decision` and `since` are resolved against the log and the clock.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub agent: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    /// RFC 3339 UTC, unix seconds, or an age: `30s`, `5m`, `2h`, `7d`.
    pub since: Option<String>,
    pub limit: Option<usize>,
}

pub fn log(paths: &Paths, query: &LogQuery) -> Result<Vec<evidence::Entry>> {
    let store = open_store(paths)?;
    let filter = log_filter(&store, query)?;
    Ok(store.query(&filter)?)
}

/// `warden log --count` with the same filters: how many entries match and
/// the repeats their summaries count, without reading the entries out.
pub fn log_count(paths: &Paths, query: &LogQuery) -> Result<evidence::Counted> {
    let store = open_store(paths)?;
    let filter = log_filter(&store, query)?;
    Ok(store.count_matching(&filter)?)
}

fn log_filter(store: &evidence::EvidenceStore, query: &LogQuery) -> Result<evidence::Filter> {
    let decisions = match &query.decision {
        None => Vec::new(),
        Some(given) => {
            let mut valid: Vec<String> = KNOWN_DECISIONS.iter().map(|s| s.to_string()).collect();
            valid.extend(store.distinct_decisions()?);
            decision_values(given, &valid)?
        }
    };
    let since_ns = query
        .since
        .as_deref()
        .map(|s| parse_since(s, crate::clock::now_ns()))
        .transpose()?;
    let filter = evidence::Filter {
        agent: query.agent.clone(),
        kind: query.kind.clone(),
        decisions,
        since_ns,
        until_ns: None,
        limit: query.limit,
    };
    Ok(filter)
}

/// Every `decision` Warden writes, so a valid value is accepted before the
/// log holds one. Kernel decisions first, then the other kinds' outcomes.
pub const KNOWN_DECISIONS: &[&str] = &[
    "allow",
    "deny",
    "hold",
    "denied",
    "allowed-unrecorded",
    "denied-and-allowed-unrecorded",
    "recorded",
    "signed",
    "loaded",
    "rejected",
    "registered",
    "removed",
    "started",
    "revoked",
    "active",
];

/// Spellings that name a class of decisions: `deny`/`denied` are every
/// refusal (kernel denials and GAP entries whose lost actions were
/// refused), `allow`/`allowed` every action that went ahead.
const DECISION_CLASSES: &[(&[&str], &[&str])] = &[
    (
        &["deny", "denied"],
        &["deny", "denied", "denied-and-allowed-unrecorded"],
    ),
    (
        &["allow", "allowed"],
        &[
            "allow",
            "allowed-unrecorded",
            "denied-and-allowed-unrecorded",
        ],
    ),
    (&["hold", "held"], &["hold"]),
];

/// The stored decisions `--decision given` selects; an unknown spelling is
/// an error listing the valid ones (`valid`: known and present in the log).
pub fn decision_values(given: &str, valid: &[String]) -> Result<Vec<String>> {
    let wanted = given.trim().to_ascii_lowercase();
    if let Some((_, members)) = DECISION_CLASSES
        .iter()
        .find(|(names, _)| names.contains(&wanted.as_str()))
    {
        return Ok(members.iter().map(|s| s.to_string()).collect());
    }
    if valid.iter().any(|v| v == &wanted) {
        return Ok(vec![wanted]);
    }
    let mut all: Vec<String> = DECISION_CLASSES
        .iter()
        .flat_map(|(names, _)| names.iter().map(|s| s.to_string()))
        .chain(valid.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    Err(CommandError::UnknownDecision {
        given: given.to_string(),
        valid: all.join(", "),
    })
}

/// `--since`: an absolute time, or an age before `now_ns`.
pub fn parse_since(s: &str, now_ns: i64) -> Result<i64> {
    let age = crate::clock::whole_secs(s, "smhd")
        .and_then(|secs| i64::try_from(secs).ok())
        .and_then(|secs| secs.checked_mul(1_000_000_000));
    match age {
        Some(age) => Ok(now_ns.saturating_sub(age)),
        None => Ok(crate::clock::parse_time(s)?),
    }
}

/// `warden log tail`: calls `emit` for every entry after `after` (default:
/// the head now), then, with `follow`, for each new one as it is appended.
/// Stops when `emit` returns false.
pub fn tail(
    paths: &Paths,
    after: Option<u64>,
    follow: bool,
    emit: &mut dyn FnMut(&evidence::Entry) -> bool,
) -> Result<()> {
    let store = open_store(paths)?;
    let mut next = match after {
        Some(seq) => seq + 1,
        None => store.head()?.map_or(1, |(seq, _)| seq + 1),
    };
    loop {
        let head = store.head()?.map_or(0, |(seq, _)| seq);
        while next <= head {
            let to = head.min(next + 999);
            for e in store.read_range(next, to)? {
                if !emit(&e) {
                    return Ok(());
                }
            }
            next = to + 1;
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `warden log verify --completeness`: approval-gated entries missing a
/// required field.
pub fn completeness(paths: &Paths) -> Result<evidence::completeness::Completeness> {
    let store = open_store(paths)?;
    let mut check = evidence::completeness::Completeness::default();
    // The closure never breaks, so the flow is always Continue.
    let _ = store.for_each_entry(|e| {
        check.push(e);
        std::ops::ControlFlow::<()>::Continue(())
    })?;
    Ok(check)
}

/// `warden log checkpoints`.
pub fn checkpoints(paths: &Paths) -> Result<Vec<evidence::checkpoint::Checkpoint>> {
    let store = open_store(paths)?;
    evidence::checkpoint::read_all(store.connection())
        .map_err(|e| CommandError::Verify(evidence::VerifyError::from(e)))
}

/// What `warden log verify` established.
pub struct Verified {
    pub chain: evidence::VerifyReport,
    /// None when this host has no signing key yet (no daemon has run).
    pub checkpoints: Option<evidence::checkpoint::CheckpointReport>,
    pub anchors: usize,
}

/// `warden log verify [--anchor FILE...]`: the chain, every checkpoint
/// (with the host's public key), and checkpoints kept elsewhere.
pub fn log_verify(paths: &Paths, anchor_files: &[PathBuf]) -> Result<Verified> {
    use evidence::checkpoint::{self, Checkpoint};
    let store = open_store_checked(paths)?;
    let mut anchors = Vec::new();
    for file in anchor_files {
        let text = std::fs::read_to_string(file).map_err(|source| CommandError::ReadPolicy {
            file: file.clone(),
            source,
        })?;
        // A file may hold one checkpoint or a list (checkpoints.json of an export).
        let parsed: Result<Vec<Checkpoint>, _> = serde_json::from_str::<Vec<Checkpoint>>(&text)
            .or_else(|_| serde_json::from_str::<Checkpoint>(&text).map(|c| vec![c]));
        anchors.extend(parsed.map_err(|e| CommandError::Anchor {
            file: file.clone(),
            source: e,
        })?);
    }
    let key = match checkpoint::load_public_key(&paths.state_dir) {
        Ok(key) => key,
        Err(_) if anchors.is_empty() => {
            return Ok(Verified {
                chain: evidence::verify_store(&store)?,
                checkpoints: None,
                anchors: 0,
            })
        }
        Err(e) => return Err(evidence::VerifyError::from(e).into()),
    };
    let (chain, signed) = evidence::verify_store_signed(&store, &key, &anchors)?;
    Ok(Verified {
        chain,
        checkpoints: Some(signed),
        anchors: anchors.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Vec<String> {
        KNOWN_DECISIONS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn deny_and_denied_select_every_refusal() {
        for spelling in ["deny", "denied", "DENIED", " deny "] {
            let got = decision_values(spelling, &valid()).unwrap();
            assert_eq!(got, ["deny", "denied", "denied-and-allowed-unrecorded"]);
        }
        assert_eq!(decision_values("held", &valid()).unwrap(), ["hold"]);
        assert!(decision_values("allowed", &valid())
            .unwrap()
            .contains(&"allowed-unrecorded".to_string()));
    }

    #[test]
    fn other_printed_decisions_match_themselves_even_if_only_in_the_log() {
        assert_eq!(decision_values("revoked", &valid()).unwrap(), ["revoked"]);
        let mut with_log = valid();
        with_log.push("future-outcome".into());
        assert_eq!(
            decision_values("future-outcome", &with_log).unwrap(),
            ["future-outcome"]
        );
    }

    #[test]
    fn a_mistyped_decision_is_an_error_listing_the_valid_ones() {
        let err = decision_values("dney", &valid()).unwrap_err().to_string();
        assert!(err.contains("'dney'"), "{err}");
        for v in [
            "allow", "allowed", "deny", "denied", "hold", "held", "revoked",
        ] {
            assert!(err.contains(v), "{v} missing from: {err}");
        }
    }

    #[test]
    fn since_takes_ages_and_times() {
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_since("5m", now).unwrap(), now - 300 * 1_000_000_000);
        assert_eq!(parse_since("2h", now).unwrap(), now - 7200 * 1_000_000_000);
        assert_eq!(
            parse_since("1d", now).unwrap(),
            now - 86_400 * 1_000_000_000
        );
        assert_eq!(parse_since("30", now).unwrap(), 30 * 1_000_000_000);
        assert_eq!(
            parse_since("1970-01-01T00:01:00Z", now).unwrap(),
            60 * 1_000_000_000
        );
        assert!(parse_since("5x", now).is_err());
        assert!(parse_since("-5m", now).is_err());
    }
}
