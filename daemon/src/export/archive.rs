//! Retention: `warden evidence archive --before T --out DIR` exports the
//! beginning of the log as a bundle, verifies the bundle, and only then
//! prunes what it holds, leaving the rest of the chain verifiable.
//!
//! The cut is the newest signed checkpoint whose head is before `T` (and
//! after what an earlier archive pruned): that checkpoint is the signed
//! anchor the remaining chain is verified from. The bundle holds the chain
//! from the previous base (or seq 1) up to the anchor. Pruning is one
//! transaction that appends an `archive` entry (naming the anchor: seq,
//! hash, checkpoint id, the bundle manifest's sha256) and deletes the
//! archived rows; a crash leaves all of it or none of it done, and the
//! bundle is synced to disk before. Verification (`warden log verify`) then
//! starts at the anchor: the first stored row must follow it, a checkpoint
//! must have signed it, and the `archive` entry saying so is itself in the
//! chain, so deleting a prefix without archiving it is still a gap.

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::bundle::{self, BundleError, Window};
use crate::{
    actor::{Actor, Recorded},
    config::Paths,
    db::Integrity,
    evidence::{
        checkpoint::{self, CheckpointError},
        store::ARCHIVE_KIND,
        Entry, EvidenceStore, StoreError,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive: no signed checkpoint between seq {base} (already archived) and the last entry before the given time: nothing to archive (checkpoints are signed every 1000 entries or 60 s)")]
    Nothing { base: u64 },
    #[error("archive: the log does not verify, so nothing is archived or pruned: {0}")]
    LogInvalid(String),
    #[error("archive: the bundle in {dir} does not verify, so nothing was pruned: {problems}")]
    BundleInvalid { dir: PathBuf, problems: String },
    #[error("archive: the bundle in {dir} ends at {found}, not at the anchor {expected}; nothing was pruned")]
    BundleMismatch {
        dir: PathBuf,
        found: String,
        expected: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Where an archive cuts the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The previous base (0: the log starts at seq 1).
    pub base: u64,
    /// The anchor: the last archived entry, a checkpoint's head.
    pub through: u64,
    pub through_hash: String,
    pub checkpoint_id: u64,
}

/// The cut for "before `before_ns`": the newest checkpoint at or below the
/// last entry before that time, beyond the current base.
pub fn plan(store: &EvidenceStore, before_ns: i64) -> Result<Plan, ArchiveError> {
    let base = store.base()?.map_or(0, |b| b.seq);
    let last_before: u64 = store
        .connection()
        .query_row(
            "SELECT max(seq) FROM evidence INDEXED BY evidence_ts WHERE ts_ns < ?1",
            [before_ns],
            |row| row.get::<_, Option<u64>>(0),
        )
        .map_err(|source| StoreError::Sqlite {
            op: "find the archive's end",
            path: store.path().to_path_buf(),
            source,
        })?
        .unwrap_or(0);
    let cp = checkpoint::read_all(store.connection())?
        .into_iter()
        .filter(|c| c.size > base && c.size <= last_before)
        .max_by_key(|c| c.size)
        .ok_or(ArchiveError::Nothing { base })?;
    Ok(Plan {
        base,
        through: cp.size,
        through_hash: cp.head_hash,
        checkpoint_id: cp.id,
    })
}

/// What an archive did.
#[derive(Debug, Clone)]
pub struct Archived {
    pub plan: Plan,
    pub entries: u64,
    pub out: PathBuf,
    /// The `archive` entry appended.
    pub entry: Entry,
}

/// `warden evidence archive --before T --out DIR`.
pub fn archive(paths: &Paths, before_ns: i64, out: &Path) -> Result<Archived, ArchiveError> {
    let store = EvidenceStore::open_with(&paths.database(), Integrity::Trust)?;
    let plan = plan(&store, before_ns)?;
    drop(store);
    bundle::export_through(paths, out, &Window::default(), Some(plan.through))?;
    prune_verified(paths, &plan, out, before_ns)
}

/// Verifies the bundle in `out` against the host key and `plan`, then
/// prunes. Nothing is pruned unless the bundle verifies, holds exactly
/// the entries up to the anchor, and the host's log verified when it was
/// written.
pub fn prune_verified(
    paths: &Paths,
    plan: &Plan,
    out: &Path,
    before_ns: i64,
) -> Result<Archived, ArchiveError> {
    let key = checkpoint::load_public_key(&paths.state_dir)?;
    let report = bundle::verify(out, Some(&hex::encode(key.as_bytes())))?;
    if !report.is_valid() {
        return Err(ArchiveError::BundleInvalid {
            dir: out.to_path_buf(),
            problems: report.problems.join("; "),
        });
    }
    let entries = plan.through - plan.base;
    if report.head_hash != plan.through_hash || report.entries != entries {
        return Err(ArchiveError::BundleMismatch {
            dir: out.to_path_buf(),
            found: format!("{} entries, head {}", report.entries, report.head_hash),
            expected: format!("{entries} entries, head {}", plan.through_hash),
        });
    }
    // The host's verification of the whole log, made while exporting (and
    // covered by the manifest's signature, checked above).
    let verification: serde_json::Value = std::fs::read(out.join("verification.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if verification["valid"] != true {
        return Err(ArchiveError::LogInvalid(
            verification["problem"]
                .as_str()
                .unwrap_or("verification.json is missing")
                .to_string(),
        ));
    }
    let manifest = std::fs::read(out.join("manifest.json")).map_err(|source| BundleError::Io {
        op: "read",
        path: out.join("manifest.json"),
        source,
    })?;
    let mut details = serde_json::Map::new();
    details.insert("pruned_through".into(), json!(plan.through));
    details.insert("base_hash".into(), json!(plan.through_hash));
    details.insert("previous_base".into(), json!(plan.base));
    details.insert("entries".into(), json!(entries));
    details.insert("checkpoint_id".into(), json!(plan.checkpoint_id));
    details.insert("before_ns".into(), json!(before_ns));
    details.insert(
        "bundle_manifest_sha256".into(),
        json!(hex::encode(Sha256::digest(&manifest))),
    );
    let out_text = out.display().to_string();
    let entry = Actor::current().entry(Recorded {
        kind: ARCHIVE_KIND,
        agent: "warden",
        owner: "system",
        action: "evidence.archive",
        target: &out_text,
        decision: "archived",
        policy_snapshot: "none",
        details,
    });
    let mut store = EvidenceStore::open_with(&paths.database(), Integrity::Trust)?;
    let entry = store.prune_archived(plan.through, &plan.through_hash, entry)?;
    Ok(Archived {
        plan: plan.clone(),
        entries,
        out: out.to_path_buf(),
        entry,
    })
}

#[cfg(test)]
mod tests;
