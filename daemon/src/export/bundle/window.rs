//! Windowed bundles: where the chain of an export with `--from`/`--to`
//! starts (the newest signed checkpoint before the window's first entry),
//! the host's verification of what such a bundle carries, and the offline
//! checks of its start and window bounds.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Manifest, Window};
use crate::evidence::{
    checkpoint::{self, Checkpoint, HostKey},
    store::ChainBase,
    ChainVerifier, Entry, EvidenceStore, StoreError,
};

/// Where a windowed bundle's chain starts, and why (`manifest.json`
/// `chain_start`; absent without a window or with `--full-chain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStart {
    /// The chain in `entries.jsonl` starts after this seq (0: seq 1).
    pub base_seq: u64,
    /// The hash of entry `base_seq` (64 zeros for 0).
    pub base_hash: String,
    /// The signed checkpoint whose head is (`base_seq`, `base_hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<u64>,
    /// `checkpoint` (the newest signed checkpoint before the window's first
    /// entry), `archive` (no such checkpoint after the archive base: the
    /// stored chain's start) or `log-start` (none at all: seq 1).
    pub reason: String,
    /// The window's first and last entries (by time; `None`: the window
    /// holds no entry, and the chain ends at the last entry before it).
    /// Entries after the base and before `window_first_seq` are the carried
    /// prefix: they link the window to the signed head, and the report
    /// does not count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_first_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_last_seq: Option<u64>,
}

/// Where a windowed export's chain starts and ends: it ends at the
/// window's last entry and starts after the newest signed checkpoint whose
/// head is before the window's first entry (not before the stored chain's
/// start). Both found through the time index over the window's entries
/// only, so the cost is the window's, not the log's.
pub(super) fn windowed_start(
    store: &EvidenceStore,
    window: &Window,
    stored_base: Option<&ChainBase>,
    checkpoints: &[Checkpoint],
) -> Result<(u64, ChainStart), StoreError> {
    use rusqlite::OptionalExtension;
    let sql_err = |op| {
        let path = store.path().to_path_buf();
        move |source| StoreError::Sqlite { op, path, source }
    };
    let from = window.from_ns.unwrap_or(i64::MIN);
    let to = window.to_ns.unwrap_or(i64::MAX);
    let (first, last): (Option<u64>, Option<u64>) = store
        .connection()
        .query_row(
            "SELECT min(seq), max(seq) FROM evidence INDEXED BY evidence_ts
             WHERE ts_ns >= ?1 AND ts_ns < ?2",
            [from, to],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(sql_err("find the export window's entries"))?;
    // The chain must reach the window's first entry, or (an empty window)
    // the last entry before it, one step down the time index.
    let (anchor, end_seq) = match (first, last) {
        (Some(f), Some(l)) => (f, l),
        _ => {
            let before: Option<u64> = if window.to_ns.is_some() {
                store
                    .connection()
                    .query_row(
                        "SELECT seq FROM evidence INDEXED BY evidence_ts WHERE ts_ns < ?1
                         ORDER BY ts_ns DESC, seq DESC LIMIT 1",
                        [to],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sql_err("find the end of the export window"))?
            } else {
                store.head()?.map(|(seq, _)| seq)
            };
            let e = before.unwrap_or(0);
            (e, e)
        }
    };
    let floor = stored_base.map_or(0, |b| b.seq);
    let signed = checkpoints
        .iter()
        .filter(|c| c.size >= floor && c.size < anchor.max(1))
        .max_by_key(|c| (c.size, c.id));
    let start = match (signed, stored_base) {
        (Some(c), _) if c.size > 0 => ChainStart {
            base_seq: c.size,
            base_hash: c.head_hash.clone(),
            checkpoint_id: Some(c.id),
            reason: "checkpoint".into(),
            window_first_seq: first,
            window_last_seq: last,
        },
        (_, Some(b)) => ChainStart {
            base_seq: b.seq,
            base_hash: b.hash.clone(),
            checkpoint_id: checkpoints
                .iter()
                .find(|c| c.size == b.seq && c.head_hash == b.hash)
                .map(|c| c.id),
            reason: "archive".into(),
            window_first_seq: first,
            window_last_seq: last,
        },
        _ => ChainStart {
            base_seq: 0,
            base_hash: crate::evidence::record::GENESIS_PREV_HASH.to_string(),
            checkpoint_id: None,
            reason: "log-start".into(),
            window_first_seq: first,
            window_last_seq: last,
        },
    };
    Ok((end_seq, start))
}

/// The host's verification of a windowed bundle's carried chain (see
/// `write_bundle`), as `verification.json` and the report state it.
pub(super) fn host_verification(
    verifier: ChainVerifier,
    problem: Option<String>,
    hashes: &mut HashMap<u64, String>,
    start: &ChainStart,
    end_seq: u64,
    checkpoints: &[Checkpoint],
    key: &HostKey,
) -> Result<String, String> {
    if let Some(p) = problem {
        return Err(p);
    }
    let chain = verifier.finish();
    if chain.head_seq != end_seq {
        return Err(format!(
            "expected the chain to reach seq {end_seq}, the stored rows end at seq {}",
            chain.head_seq
        ));
    }
    let base = (start.base_seq > 0).then(|| ChainBase {
        seq: start.base_seq,
        hash: start.base_hash.clone(),
    });
    if let Some(b) = &base {
        hashes.insert(b.seq, b.hash.clone());
    }
    let check = if start.checkpoint_id.is_some() {
        checkpoint::verify_suffix
    } else {
        checkpoint::verify_all_from
    };
    let signed = check(
        checkpoints,
        &key.verifying_key(),
        start.base_seq,
        chain.head_seq,
        &|seq| hashes.get(&seq).cloned(),
    )
    .and_then(|r| checkpoint::base_is_signed(checkpoints, base.as_ref()).map(|()| r))
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "carried chain intact: seq {}..={} ({} entries), head {}, starting {}; {} checkpoints valid, newest covers {} entries; the log outside the carried chain was not read at export (`warden log verify`, or export with --full-chain)",
        start.base_seq + 1,
        chain.head_seq,
        chain.entries,
        chain.head_hash,
        describe_start(start),
        signed.checkpoints,
        signed.signed_size
    ))
}

/// Where a windowed chain starts, in words (report, verify output).
pub fn describe_start(start: &ChainStart) -> String {
    match (start.reason.as_str(), start.checkpoint_id) {
        ("log-start", _) => "at seq 1".to_string(),
        (_, Some(id)) => format!(
            "after seq {} (hash {}), the head signed by checkpoint {id}",
            start.base_seq, start.base_hash
        ),
        (_, None) => format!(
            "after seq {} (hash {}), the archive base",
            start.base_seq, start.base_hash
        ),
    }
}

/// The checks of a windowed bundle's start and window (`chain_start`):
/// the base is the one the manifest names and the checkpoint it names
/// signed it (its signature is checked with every other checkpoint), the
/// window's first entry comes after the base, no carried entry before it
/// is inside the window, and the chain ends at the window's last entry.
pub(super) struct WindowBounds {
    start: ChainStart,
    problems: Vec<String>,
    last_in_window: Option<bool>,
}

impl WindowBounds {
    pub(super) fn new(start: &ChainStart, manifest: &Manifest, checkpoints: &[Checkpoint]) -> Self {
        let mut problems = Vec::new();
        let base = manifest.base.as_ref().map(|b| (b.seq, b.hash.as_str()));
        let named = (start.base_seq > 0).then_some((start.base_seq, start.base_hash.as_str()));
        if base != named {
            problems.push(format!(
                "manifest chain_start says the chain starts after seq {}, its base says {:?}",
                start.base_seq,
                manifest.base.as_ref().map(|b| b.seq)
            ));
        }
        if let Some(id) = start.checkpoint_id {
            if !checkpoints
                .iter()
                .any(|c| c.id == id && c.size == start.base_seq && c.head_hash == start.base_hash)
            {
                problems.push(format!(
                    "manifest chain_start names checkpoint {id} as signing seq {}, but checkpoints.json has no such checkpoint",
                    start.base_seq
                ));
            }
        } else if start.base_seq > 0 && start.reason != "archive" {
            problems.push(format!(
                "manifest chain_start starts after seq {} without a checkpoint that signed it",
                start.base_seq
            ));
        }
        if let Some(first) = start.window_first_seq {
            if first <= start.base_seq {
                problems.push(format!(
                    "the window's first entry (seq {first}) is not after the chain's base (seq {})",
                    start.base_seq
                ));
            }
        }
        WindowBounds {
            start: start.clone(),
            problems,
            last_in_window: None,
        }
    }

    fn in_time(e: &Entry, w: &Window) -> bool {
        w.from_ns.is_none_or(|f| e.ts_ns >= f) && w.to_ns.is_none_or(|t| e.ts_ns < t)
    }

    pub(super) fn observe(&mut self, e: &Entry, w: &Window) {
        let inside = Self::in_time(e, w);
        match self.start.window_first_seq {
            Some(first) if e.seq == first && !inside => self.problems.push(format!(
                "seq {first}, the window's first entry, is not inside the window (ts_ns {})",
                e.ts_ns
            )),
            first if first.is_none_or(|f| e.seq < f) && inside => {
                self.problems.push(format!(
                    "seq {} is inside the window (ts_ns {}) but before its first entry {:?}: the carried prefix must precede the window",
                    e.seq, e.ts_ns, first
                ));
            }
            _ => {}
        }
        self.last_in_window = Some(inside);
    }

    pub(super) fn finish(mut self, head_seq: u64) -> Vec<String> {
        if let Some(last) = self.start.window_last_seq {
            if head_seq != last {
                self.problems.push(format!(
                    "the chain ends at seq {head_seq}, not at the window's last entry (seq {last})"
                ));
            } else if self.last_in_window == Some(false) {
                self.problems.push(format!(
                    "seq {last}, the window's last entry, is not inside the window"
                ));
            }
        }
        self.problems.truncate(10);
        self.problems
    }
}
