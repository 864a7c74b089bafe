//! The evidence disk cap: how much disk the database may take before the
//! daemon stops recording countable actions one by one.
//!
//! The cap is `WARDEN_EVIDENCE_CAP` (bytes, or with a `K`, `M`, `G` or
//! `T` suffix, powers of 1024), else a quarter of the filesystem that holds
//! the database, measured at start. Use is the database's pages in use
//! (file size less its free pages, as of SQLite's last checkpoint) plus the
//! write-ahead log. At the cap the enforcer sets `agent_flags::COUNT_ALL` on
//! every agent: each allowed action and each denial refused without a kill
//! is counted in the kernel, its first too, and written only as `summary`
//! entries; kills, holds, approvals, GAPs and the daemon's own entries go on
//! one by one. Below 90% of the cap (after `warden evidence archive`
//! pruned), individual records resume. Both transitions are entries
//! (kind `evidence_cap`), and `warden status` shows the figures.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Use falls this far below the cap (in percent) before the cap lifts, so
/// that use hovering at the cap does not flip it every second.
const LIFT_PERCENT: u64 = 90;

#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("WARDEN_EVIDENCE_CAP={0:?}: expected a size in bytes, optionally with K, M, G or T (powers of 1024), above 0")]
    BadSize(String),
    #[error("statvfs {path}: {source}")]
    Statvfs {
        path: String,
        #[source]
        source: nix::Error,
    },
}

/// Parses `500M`, `2G`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, CapError> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(CapError::BadSize(s.into())),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| CapError::BadSize(s.into()))
}

/// Where the cap came from, for `warden status` and the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapSource {
    /// `WARDEN_EVIDENCE_CAP`.
    Configured,
    /// A quarter of the database's filesystem.
    Filesystem,
}

/// What `warden status` shows of the cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapState {
    pub cap_bytes: u64,
    pub source: CapSource,
    pub used_bytes: u64,
    /// Whether the cap holds now (countable actions are counted only).
    pub reached: bool,
    /// When it was last reached (unix ns), while it holds.
    pub since_ns: Option<i64>,
}

/// The cap from the environment's value, or from the filesystem of
/// `state_dir`.
pub fn configured(env: Option<&str>, state_dir: &Path) -> Result<(u64, CapSource), CapError> {
    if let Some(v) = env {
        return Ok((parse_size(v)?, CapSource::Configured));
    }
    let st = nix::sys::statvfs::statvfs(state_dir).map_err(|source| CapError::Statvfs {
        path: state_dir.display().to_string(),
        source,
    })?;
    let fs = (st.blocks() as u64).saturating_mul(st.fragment_size() as u64);
    Ok(((fs / 4).max(1), CapSource::Filesystem))
}

/// Bytes the database takes: its pages in use (`pages`, from
/// `db::bytes_in_use`) plus its write-ahead log file. Free pages (left by
/// a prune) are not counted: SQLite reuses them. Only the log file is
/// looked at here, by `stat`: opening the database file outside SQLite
/// would drop SQLite's locks on it.
pub fn used_bytes(pages: u64, database: &Path) -> u64 {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    pages + std::fs::metadata(Path::new(&wal)).map_or(0, |m| m.len())
}

/// The change to make: `Some(true)` to reach the cap, `Some(false)` to
/// lift it, `None` to stay.
pub fn transition(reached: bool, used: u64, cap: u64) -> Option<bool> {
    if !reached && used >= cap {
        Some(true)
    } else if reached && used.saturating_mul(100) < cap.saturating_mul(LIFT_PERCENT) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_bad_ones_are_refused() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        for bad in ["", "0", "M", "12X", "-1", "1.5G", "99999999999T"] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.contains("WARDEN_EVIDENCE_CAP"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cap_is_reached_at_it_and_lifts_below_ninety_percent() {
        assert_eq!(transition(false, 99, 100), None);
        assert_eq!(transition(false, 100, 100), Some(true));
        assert_eq!(transition(true, 95, 100), None);
        assert_eq!(transition(true, 89, 100), Some(false));
        assert_eq!(transition(true, 200, 100), None);
    }

    #[test]
    fn use_counts_pages_in_use_and_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warden.db");
        assert_eq!(used_bytes(8192, &db), 8192);
        std::fs::write(dir.path().join("warden.db-wal"), vec![0u8; 1000]).unwrap();
        assert_eq!(used_bytes(8192, &db), 8192 + 1000);
        let (cap, source) = configured(None, dir.path()).unwrap();
        assert!(cap > 0 && source == CapSource::Filesystem);
        assert_eq!(
            configured(Some("1M"), dir.path()).unwrap(),
            (1 << 20, CapSource::Configured)
        );
    }
}
