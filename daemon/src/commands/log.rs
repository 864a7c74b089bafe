//! `warden log [verify|checkpoints|tail]`: read and verify the evidence log.

use std::{path::PathBuf, time::Duration};

use super::{open_store, CommandError, Result};
use crate::{config::Paths, evidence};

pub fn log(paths: &Paths, filter: &evidence::Filter) -> Result<Vec<evidence::Entry>> {
    Ok(open_store(paths)?.query(filter)?)
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
    let store = open_store(paths)?;
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
