//! SQLite storage of the evidence chain.
//!
//! Rows are returned exactly as stored; nothing here checks hashes (that is
//! `verify`'s job), so a tampered row reads back as tampered.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rusqlite::types::{FromSql, FromSqlError};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde_json::{Map, Value};

use crate::db::{self, Database, DbError, Integrity};

use super::record::{Entry, EntryHasher, NewEntry, RecordError, GENESIS_PREV_HASH};

pub use crate::db::SCHEMA_VERSION;

/// Column order shared by every SELECT and by `read_row`.
pub(crate) const COLUMNS: &str = "seq, ts_ns, kind, agent, owner, uid, loginuid, user, \
    login_user, pid, exe, action, target, decision, rule_id, policy_snapshot, method, details, \
    prev_hash, hash, v";

const INSERT: &str = "INSERT INTO evidence (seq, ts_ns, kind, agent, owner, uid, loginuid, \
    user, login_user, pid, exe, action, target, decision, rule_id, policy_snapshot, method, \
    details, prev_hash, hash, v) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)";

/// The selection of [`EvidenceStore::refusals_after`]. `warden run`'s
/// explainer asks it every 100 ms with the seq of the run's start, so the
/// entries since then grow with the run: the unary `+` keeps SQLite off
/// the agent and kind indexes (and the seq range), which walk every
/// decision since the run's start (1.7 ms per 5,000 allowed entries, every
/// poll: a 43,000-file read run's explainer scanned them all ten times a
/// second), and onto `evidence_decision` (decision = each refusal, seq >
/// ?1): 0.02 ms.
const REFUSALS_AFTER: &str = "FROM evidence WHERE seq > ?1 AND +agent = ?2 \
    AND +kind = 'decision' AND decision IN ('deny', 'hold', 'rejected', 'expired') \
    ORDER BY seq LIMIT ?3";

/// The decisions [`REFUSALS_AFTER`] selects.
const REFUSAL_DECISIONS: [&str; 4] = ["deny", "hold", "rejected", "expired"];

/// Whether an entry of this kind and decision is one that
/// [`EvidenceStore::refusals_after`] returns (what `warden run` explains):
/// the daemon counts such entries of each agent while they are queued, so
/// an agent's `drained` barrier waits for them and nothing else.
pub fn is_explained_refusal(kind: &str, decision: &str) -> bool {
    kind == "decision" && REFUSAL_DECISIONS.contains(&decision)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening the file: integrity, WAL, schema version, migration.
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("{op} in evidence database {path}")]
    Sqlite {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("append evidence to {path}: entry {index} of the batch (would be seq {seq}) is invalid; nothing was written")]
    Seal {
        path: PathBuf,
        index: usize,
        seq: u64,
        #[source]
        source: RecordError,
    },
    #[error("read evidence from {path}: row seq {seq}: column {column} is malformed")]
    MalformedColumn {
        path: PathBuf,
        seq: i64,
        column: &'static str,
        #[source]
        source: FromSqlError,
    },
    #[error("read evidence from {path}: row seq {seq}: details is not a JSON object")]
    MalformedDetails {
        path: PathBuf,
        seq: i64,
        #[source]
        source: serde_json::Error,
    },
    #[error("archive evidence in {path}: entry {seq} is not the archived one any more (hash {found}, archived {expected}); nothing was pruned")]
    ArchiveMoved {
        path: PathBuf,
        seq: u64,
        found: String,
        expected: String,
    },
}

/// Where the stored chain starts after `warden evidence archive` pruned
/// its beginning: the last pruned entry (`seq`, `hash`), as the newest
/// `archive` entry names it. The next stored row must be `seq + 1` and
/// link to `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBase {
    pub seq: u64,
    pub hash: String,
}

/// `kind` of the entry `warden evidence archive` appends.
pub const ARCHIVE_KIND: &str = "archive";

/// How durable an append must be before `append` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the process, not necessarily of the machine; lets
    /// SQLite group commits for high-rate decisions.
    Batched,
    /// Synced to disk before returning; for holds, approvals and kills that
    /// must not be acknowledged and then lost.
    Fsync,
}

/// What [`EvidenceStore::count_matching`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counted {
    /// Entries that match.
    pub entries: u64,
    /// Repeats counted by the matching `summary` entries.
    pub counted: u64,
}

/// Selection for [`EvidenceStore::query`]; unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub agent: Option<String>,
    pub kind: Option<String>,
    /// Any of these decisions (empty: any decision).
    pub decisions: Vec<String>,
    /// Inclusive lower bound on `ts_ns`.
    pub since_ns: Option<i64>,
    /// Exclusive upper bound on `ts_ns`.
    pub until_ns: Option<i64>,
    /// Keep only the newest `limit` matches.
    pub limit: Option<usize>,
}

pub struct EvidenceStore {
    conn: Connection,
    path: PathBuf,
}

impl EvidenceStore {
    /// Opens (creating if missing) the evidence database at `path`.
    ///
    /// An existing file is integrity-checked before anything is written to
    /// it, so a damaged or foreign file is reported and left byte-for-byte
    /// as it was. The check reads the whole file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Integrity::QuickCheck)
    }

    /// Opens the evidence database at `path`, checking it first or not as
    /// `integrity` says.
    pub fn open_with(path: &Path, integrity: Integrity) -> Result<Self, StoreError> {
        Self::from_database(db::open(path, integrity)?)
    }

    /// The store on a database [`db::open`] opened.
    pub fn from_database(database: Database) -> Result<Self, StoreError> {
        let (conn, path) = database.into_parts();
        let store = EvidenceStore { conn, path };
        // Batched appends may lose the newest entries in a machine crash,
        // never in a process crash; `Durability::Fsync` raises it per append.
        store.set_synchronous("NORMAL")?;
        Ok(store)
    }

    /// The connection, for tables that live beside the chain (checkpoints).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals `entries` after the current head and writes them in one
    /// transaction. The write lock is taken up front (`BEGIN IMMEDIATE`), so
    /// appends from several processes serialise and the chain stays linear.
    /// If any entry is invalid, nothing is written.
    pub fn append(
        &mut self,
        entries: &[NewEntry],
        durability: Durability,
    ) -> Result<Vec<Entry>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let summaries = has_summary(entries);
        self.append_with(durability, summaries, |tx, path| {
            seal_into(tx, path, entries)
        })
    }

    /// As [`Self::append`], for the evidence writer's batches: `entries`
    /// are sealed in place (moved, not copied; each slot holds its entry
    /// again when this returns, written or not) and only their number is
    /// returned.
    pub fn append_batch(
        &mut self,
        entries: &mut [NewEntry],
        durability: Durability,
    ) -> Result<usize, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let summaries = has_summary(entries);
        self.append_with(durability, summaries, |tx, path| {
            seal_in_place(tx, path, entries)
        })
    }

    /// Runs `seal` in one `BEGIN IMMEDIATE` transaction and commits it, at
    /// `synchronous = FULL` for [`Durability::Fsync`]. With `summaries`
    /// (the batch holds a `summary` entry) the summaries' total
    /// (`evidence_counted`) is brought up to date in the same transaction.
    fn append_with<T>(
        &mut self,
        durability: Durability,
        summaries: bool,
        seal: impl FnOnce(&rusqlite::Transaction<'_>, &PathBuf) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if durability == Durability::Batched {
            return self.append_tx(summaries, seal);
        }
        // SQLite refuses to change `synchronous` inside a transaction.
        self.set_synchronous("FULL")?;
        let result = self.append_tx(summaries, seal);
        // A failure here leaves the connection at FULL, which is only slower;
        // reporting it would make callers retry an append that succeeded.
        let _ = self.set_synchronous("NORMAL");
        result
    }

    fn append_tx<T>(
        &mut self,
        summaries: bool,
        seal: impl FnOnce(&rusqlite::Transaction<'_>, &PathBuf) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = &self.path;
        let sql = |op| {
            move |source| StoreError::Sqlite {
                op,
                path: path.clone(),
                source,
            }
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("begin append"))?;
        let sealed = seal(&tx, path)?;
        if summaries {
            count_summaries(&tx).map_err(sql("count the appended summaries"))?;
        }
        tx.commit().map_err(sql("commit append"))?;
        Ok(sealed)
    }

    /// Prunes the entries up to `through` (inclusive), whose last one must
    /// still hash to `through_hash`, and appends `entry` (the `archive`
    /// entry naming them), in one transaction, durably: a crash leaves
    /// either everything or nothing done. The entry is appended first, so
    /// the chain's head survives even when everything else is pruned.
    pub fn prune_archived(
        &mut self,
        through: u64,
        through_hash: &str,
        entry: NewEntry,
    ) -> Result<Entry, StoreError> {
        self.set_synchronous("FULL")?;
        let result = self.prune_tx(through, through_hash, entry);
        let _ = self.set_synchronous("NORMAL");
        result
    }

    fn prune_tx(
        &mut self,
        through: u64,
        through_hash: &str,
        entry: NewEntry,
    ) -> Result<Entry, StoreError> {
        let path = &self.path;
        let sql = |op| {
            move |source| StoreError::Sqlite {
                op,
                path: path.clone(),
                source,
            }
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("begin archive"))?;
        let found: Option<String> = tx
            .query_row("SELECT hash FROM evidence WHERE seq = ?1", [through], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("read the last archived entry"))?;
        if found.as_deref() != Some(through_hash) {
            return Err(StoreError::ArchiveMoved {
                path: path.clone(),
                seq: through,
                found: found.unwrap_or_else(|| "none".into()),
                expected: through_hash.into(),
            });
        }
        let mut sealed = seal_into(&tx, path, &[entry])?;
        // Every summary to be pruned must be in the total the delete
        // trigger subtracts it from.
        count_summaries(&tx).map_err(sql("count the summaries before pruning"))?;
        // The append-only guard (`db::schema`) is lifted for this delete
        // only, inside the transaction: it is back when the prune commits.
        tx.execute_batch("DROP TRIGGER IF EXISTS evidence_no_delete")
            .map_err(sql("lift the append-only guard"))?;
        tx.execute("DELETE FROM evidence WHERE seq <= ?1", [through])
            .map_err(sql("prune archived evidence"))?;
        tx.execute_batch(crate::db::EVIDENCE_NO_DELETE)
            .map_err(sql("restore the append-only guard"))?;
        tx.commit().map_err(sql("commit archive"))?;
        Ok(sealed.remove(0))
    }

    /// Where the stored chain starts: `None` if it starts at seq 1 (never
    /// pruned). Read from the newest `archive` entry (through the kind
    /// index); a malformed one is treated as no base, so verification
    /// reports the missing rows.
    pub fn base(&self) -> Result<Option<ChainBase>, StoreError> {
        let details: Option<String> = self
            .conn
            .query_row(
                "SELECT details FROM evidence WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
                [ARCHIVE_KIND],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read the archive base"))?;
        Ok(details.and_then(|d| {
            let v: Value = serde_json::from_str(&d).ok()?;
            Some(ChainBase {
                seq: v.get("pruned_through")?.as_u64()?,
                hash: v.get("base_hash")?.as_str()?.to_string(),
            })
        }))
    }
}

/// `kind` of the entries whose `details.count` the total in
/// `evidence_counted` sums.
const SUMMARY_KIND: &str = "summary";

fn has_summary(entries: &[NewEntry]) -> bool {
    entries.iter().any(|e| e.kind == SUMMARY_KIND)
}

/// Adds the summaries stored after `evidence_counted.through_seq` to the
/// total, inside the caller's transaction: once per batch, where a per-row
/// trigger would make every insert open a statement journal.
fn count_summaries(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.prepare_cached(crate::db::schema::COUNTED_CATCH_UP)?
        .execute([])
        .map(drop)
}

/// Seals `entries` after the stored head and inserts them, inside the
/// caller's transaction.
fn seal_into(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    entries: &[NewEntry],
) -> Result<Vec<Entry>, StoreError> {
    let sql = |op| {
        move |source| StoreError::Sqlite {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    {
        let (mut seq, mut prev_hash) = read_head(tx)
            .map_err(sql("read evidence head"))?
            .unwrap_or((0, GENESIS_PREV_HASH.to_string()));

        let mut sealed = Vec::with_capacity(entries.len());
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(sql("prepare append"))?;
            let mut hasher = EntryHasher::new();
            for (index, new) in entries.iter().enumerate() {
                seq += 1;
                let seal_err = |source| StoreError::Seal {
                    path: path.to_path_buf(),
                    index,
                    seq,
                    source,
                };
                let entry =
                    Entry::seal_with(&mut hasher, seq, prev_hash, new.clone()).map_err(seal_err)?;
                insert_row(&mut insert, &entry, hasher.details())
                    .map_err(sql("append evidence"))?;
                prev_hash = entry.hash.clone();
                sealed.push(entry);
            }
        }
        Ok(sealed)
    }
}

/// Inserts one sealed entry, its `details` as `canonical` (the encoding
/// the hasher wrote).
fn insert_row(
    insert: &mut rusqlite::CachedStatement<'_>,
    entry: &Entry,
    canonical: &[u8],
) -> rusqlite::Result<usize> {
    // The canonical writer only ever writes UTF-8, so the lossy path never
    // runs; `from_utf8` checks it several times faster than
    // `from_utf8_lossy` does (which walked it chunk by chunk, ~1% of the
    // daemon's CPU on a busy agent).
    let details_text = match std::str::from_utf8(canonical) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(canonical),
    };
    insert.execute(params![
        entry.seq,
        entry.ts_ns,
        entry.kind,
        entry.agent,
        entry.owner,
        entry.uid,
        entry.loginuid,
        entry.user,
        entry.login_user,
        entry.pid,
        entry.exe,
        entry.action,
        entry.target,
        entry.decision,
        entry.rule_id,
        entry.policy_snapshot,
        entry.method,
        details_text,
        entry.prev_hash,
        entry.hash,
        entry.v,
    ])
}

/// A `NewEntry` with nothing in it (no allocation), left in a batch's slot
/// while its entry is moved out to be sealed; never valid.
fn vacant() -> NewEntry {
    NewEntry {
        ts_ns: 0,
        kind: String::new(),
        agent: String::new(),
        owner: String::new(),
        uid: 0,
        loginuid: 0,
        user: String::new(),
        login_user: String::new(),
        pid: 0,
        exe: String::new(),
        action: String::new(),
        target: String::new(),
        decision: String::new(),
        rule_id: String::new(),
        policy_snapshot: String::new(),
        method: String::new(),
        details: Map::new(),
    }
}

/// As [`seal_into`], for the evidence writer's batches: each entry is
/// moved out of its slot to be sealed and inserted and moved back, instead
/// of copied (a decision entry is some 30 allocations), and the sealed
/// entries are not returned. On an error every slot holds its entry as it
/// came. Returns how many entries were inserted.
fn seal_in_place(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    entries: &mut [NewEntry],
) -> Result<usize, StoreError> {
    let sql = |op| {
        move |source| StoreError::Sqlite {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let (mut seq, mut prev_hash) = read_head(tx)
        .map_err(sql("read evidence head"))?
        .unwrap_or((0, GENESIS_PREV_HASH.to_string()));
    let mut insert = tx.prepare_cached(INSERT).map_err(sql("prepare append"))?;
    let mut hasher = EntryHasher::new();
    for (index, slot) in entries.iter_mut().enumerate() {
        seq += 1;
        let new = std::mem::replace(slot, vacant());
        let mut entry = match Entry::seal_or_return(&mut hasher, seq, prev_hash, new) {
            Ok(entry) => entry,
            Err(given_back) => {
                let (source, new) = *given_back;
                *slot = new;
                return Err(StoreError::Seal {
                    path: path.to_path_buf(),
                    index,
                    seq,
                    source,
                });
            }
        };
        let inserted = insert_row(&mut insert, &entry, hasher.details());
        prev_hash = std::mem::take(&mut entry.hash);
        *slot = entry.into_new();
        inserted.map_err(sql("append evidence"))?;
    }
    Ok(entries.len())
}

impl EvidenceStore {
    /// The last stored `(seq, hash)`, or `None` for an empty log.
    pub fn head(&self) -> Result<Option<(u64, String)>, StoreError> {
        read_head(&self.conn).map_err(self.sql("read evidence head"))
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM evidence", [], |row| row.get(0))
            .map_err(self.sql("count evidence"))
    }

    /// Entries with `from_seq <= seq <= to_seq`, in seq order.
    pub fn read_range(&self, from_seq: u64, to_seq: u64) -> Result<Vec<Entry>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM evidence WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq");
        self.collect(&sql, params![from_seq, to_seq], "read evidence range")
    }

    /// The decision entries of `agent` after `after_seq` that refused or
    /// held an action (what `warden run` explains on its stderr), oldest
    /// first, at most `limit`. Walks the decision index from `after_seq`
    /// ([`REFUSALS_AFTER`]), so its cost is the refusals since then, not
    /// the entries since then nor the log's size.
    pub fn refusals_after(
        &self,
        agent: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let sql = format!("SELECT {COLUMNS} {REFUSALS_AFTER}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.collect(&sql, params![after_seq, agent, limit], "read refusals")
    }

    /// Matching entries, oldest first; with a limit, the newest `limit`.
    ///
    /// Only the filters that are set become terms of the WHERE clause, so
    /// SQLite can pick one of the evidence indexes (`schema::EVIDENCE_INDEXES`)
    /// instead of scanning the log: the cost follows the matches, not the
    /// size of the log.
    ///
    /// Several decisions are one query each (SQLite cannot keep the
    /// `(decision, seq)` order across an `IN` list, so "the newest N" would
    /// sort every match), merged here.
    pub fn query(&self, filter: &Filter) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        let parts: Vec<Filter> = if filter.decisions.len() > 1 {
            filter
                .decisions
                .iter()
                .map(|d| Filter {
                    decisions: vec![d.clone()],
                    ..filter.clone()
                })
                .collect()
        } else {
            vec![filter.clone()]
        };
        for part in &parts {
            let (sql, values) = query_sql(part);
            entries.extend(self.collect(
                &sql,
                rusqlite::params_from_iter(values.iter()),
                "query evidence",
            )?);
        }
        if parts.len() > 1 {
            entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
            entries.dedup_by_key(|e| e.seq);
            if let Some(limit) = filter.limit {
                entries.truncate(limit);
            }
        }
        entries.reverse();
        Ok(entries)
    }

    /// How many entries match `filter` (its `limit` ignored), and the
    /// repeats their `summary` entries count (`details.count`): what
    /// `warden log --count` prints, read through the same indexes as
    /// `query` without materialising a row. Without a filter the entries
    /// are the stored chain's length (its last seq minus its first, two
    /// primary-key lookups: the chain is contiguous from its base, which
    /// `log verify` checks) and the repeats are the total the store keeps
    /// (`evidence_counted`), so the cost does not grow with
    /// the log. With a filter the entries are counted in the
    /// filter's index and the repeats over its summaries only.
    pub fn count_matching(&self, filter: &Filter) -> Result<Counted, StoreError> {
        let unfiltered = Filter {
            limit: None,
            ..filter.clone()
        } == Filter::default();
        let (entries, counted): (i64, f64) = if unfiltered {
            let entries = self
                .conn
                .query_row(CHAIN_LENGTH_SQL, [], |row| row.get(0))
                .map_err(self.sql("count evidence"))?;
            let counted = self
                .conn
                .query_row(SUMMARY_COUNT_SQL, [], |row| row.get(0))
                .optional()
                .map_err(self.sql("count summarised repeats"))?
                .unwrap_or(0.0);
            (entries, counted)
        } else {
            let (sql, values) = query_sql(&Filter {
                limit: None,
                ..filter.clone()
            });
            // The same WHERE clause as `query`, without its ORDER BY.
            let rest = sql.split_once(" FROM evidence").map_or("", |(_, r)| r);
            let filter_sql = rest.split_once(" ORDER BY").map_or(rest, |(w, _)| w);
            let params = || rusqlite::params_from_iter(values.iter());
            let entries = self
                .conn
                .query_row(
                    &format!("SELECT count(*) FROM evidence{filter_sql}"),
                    params(),
                    |row| row.get(0),
                )
                .map_err(self.sql("count evidence"))?;
            let counted = self
                .conn
                .query_row(
                    &format!(
                        "SELECT total(json_extract(details, '$.count')) FROM evidence\
                         {filter_sql} {} kind = 'summary'",
                        if filter_sql.is_empty() {
                            "WHERE"
                        } else {
                            "AND"
                        }
                    ),
                    params(),
                    |row| row.get(0),
                )
                .map_err(self.sql("count summarised repeats"))?;
            (entries, counted)
        };
        Ok(Counted {
            entries: entries.max(0) as u64,
            counted: counted.max(0.0) as u64,
        })
    }

    /// [`Self::count_matching`]'s quick totals without a filter, and the
    /// same figures counted from the entries themselves (`count(*)`, and
    /// the summaries' counts through the kind index), read in one snapshot
    /// so that a writer appending meanwhile cannot make them differ: what
    /// `log verify` checks the quick totals against.
    pub fn totals_and_recount(&self) -> Result<(Counted, Counted), StoreError> {
        let read = || -> Result<(Counted, Counted), StoreError> {
            let quick = self.count_matching(&Filter::default())?;
            let (entries, counted): (i64, f64) = self
                .conn
                .query_row(
                    "SELECT (SELECT count(*) FROM evidence), \
                     (SELECT total(json_extract(details, '$.count')) FROM evidence \
                     WHERE kind = 'summary')",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(self.sql("recount evidence"))?;
            let full = Counted {
                entries: entries.max(0) as u64,
                counted: counted.max(0.0) as u64,
            };
            Ok((quick, full))
        };
        if !self.conn.is_autocommit() {
            // Already inside the caller's transaction: one snapshot.
            return read();
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.sql("begin recount"))?;
        let result = read();
        tx.finish().map_err(self.sql("end recount"))?;
        result
    }

    /// Every distinct `decision` in the log, found by skipping through the
    /// decision index (one lookup per distinct value, not a scan).
    pub fn distinct_decisions(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT min(decision) FROM evidence WHERE decision > ?1")
            .map_err(self.sql("list decisions"))?;
        let mut found = Vec::new();
        let mut after = String::new();
        while let Some(next) = stmt
            .query_row([&after], |row| row.get::<_, Option<String>>(0))
            .map_err(self.sql("list decisions"))?
        {
            found.push(next.clone());
            after = next;
        }
        Ok(found)
    }

    /// Streams every entry in seq order to `f` until it breaks, without
    /// holding more than one row in memory. The same `Entry` buffer is
    /// refilled for each row, so `f` must clone what it wants to keep.
    pub fn for_each_entry<B>(
        &self,
        f: impl FnMut(&Entry) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, StoreError> {
        self.for_each_in_range(1, u64::MAX >> 1, f)
    }

    /// [`Self::for_each_entry`] for `from_seq <= seq <= to_seq`.
    pub fn for_each_in_range<B>(
        &self,
        from_seq: u64,
        to_seq: u64,
        mut f: impl FnMut(&Entry) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM evidence WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq");
        let mut stmt = self.conn.prepare(&sql).map_err(self.sql("read evidence"))?;
        let mut rows = stmt
            .query(params![from_seq, to_seq])
            .map_err(self.sql("read evidence"))?;
        let mut entry = Entry::blank();
        while let Some(row) = rows.next().map_err(self.sql("read evidence"))? {
            self.read_row(row, &mut entry)?;
            if let ControlFlow::Break(b) = f(&entry) {
                return Ok(ControlFlow::Break(b));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    fn collect(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        op: &'static str,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.sql(op))?;
        let mut rows = stmt.query(params).map_err(self.sql(op))?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next().map_err(self.sql(op))? {
            let mut entry = Entry::blank();
            self.read_row(row, &mut entry)?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Fills `e` from a row selected with [`COLUMNS`], reusing its strings.
    fn read_row(&self, row: &Row<'_>, e: &mut Entry) -> Result<(), StoreError> {
        let raw_seq: i64 = row.get(0).map_err(self.sql("read evidence"))?;
        let cols = Columns {
            row,
            seq: raw_seq,
            path: &self.path,
        };
        e.seq = cols.int(0, "seq")?;
        e.ts_ns = cols.int(1, "ts_ns")?;
        cols.text(2, "kind", &mut e.kind)?;
        cols.text(3, "agent", &mut e.agent)?;
        cols.text(4, "owner", &mut e.owner)?;
        e.uid = cols.int(5, "uid")?;
        e.loginuid = cols.int(6, "loginuid")?;
        cols.text(7, "user", &mut e.user)?;
        cols.text(8, "login_user", &mut e.login_user)?;
        e.pid = cols.int(9, "pid")?;
        cols.text(10, "exe", &mut e.exe)?;
        cols.text(11, "action", &mut e.action)?;
        cols.text(12, "target", &mut e.target)?;
        cols.text(13, "decision", &mut e.decision)?;
        cols.text(14, "rule_id", &mut e.rule_id)?;
        cols.text(15, "policy_snapshot", &mut e.policy_snapshot)?;
        cols.text(16, "method", &mut e.method)?;
        e.details = cols.details(17)?;
        cols.text(18, "prev_hash", &mut e.prev_hash)?;
        cols.text(19, "hash", &mut e.hash)?;
        e.v = cols.int(20, "v")?;
        Ok(())
    }

    fn set_synchronous(&self, level: &str) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "synchronous", level)
            .map_err(self.sql("set synchronous"))
    }

    fn sql(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            op,
            path: self.path.clone(),
            source,
        }
    }
}

/// The stored chain's length from its two ends (primary-key lookups).
pub(crate) const CHAIN_LENGTH_SQL: &str = "SELECT coalesce((SELECT max(seq) FROM evidence) - \
     (SELECT min(seq) FROM evidence) + 1, 0)";

/// The repeats every `summary` entry counts: the total `evidence_counted`
/// keeps (`db::schema`) plus the summaries stored after it (through the
/// kind index; none once a writer of this build appended).
pub(crate) const SUMMARY_COUNT_SQL: &str = "SELECT counted + \
     (SELECT total(json_extract(details, '$.count')) FROM evidence \
     WHERE kind = 'summary' AND seq > through_seq) FROM evidence_counted WHERE id = 1";

/// The SELECT for `filter` and its parameters, newest first.
pub(crate) fn query_sql(filter: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut terms: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut mark = |value: Value| {
        values.push(value);
        format!("?{}", values.len())
    };
    if let Some(agent) = &filter.agent {
        terms.push(format!("agent = {}", mark(Value::Text(agent.clone()))));
    }
    if let Some(kind) = &filter.kind {
        terms.push(format!("kind = {}", mark(Value::Text(kind.clone()))));
    }
    if !filter.decisions.is_empty() {
        let marks: Vec<String> = filter
            .decisions
            .iter()
            .map(|d| mark(Value::Text(d.clone())))
            .collect();
        terms.push(format!("decision IN ({})", marks.join(", ")));
    }
    if let Some(since) = filter.since_ns {
        terms.push(format!("ts_ns >= {}", mark(Value::Integer(since))));
    }
    if let Some(until) = filter.until_ns {
        terms.push(format!("ts_ns < {}", mark(Value::Integer(until))));
    }
    let limit = filter
        .limit
        .map(|l| mark(Value::Integer(i64::try_from(l).unwrap_or(i64::MAX))));
    let mut sql = format!("SELECT {COLUMNS} FROM evidence");
    if !terms.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&terms.join(" AND "));
    }
    // With only a time bound, walking the primary key backwards would read
    // the whole log when the bound is early or nothing matches (SQLite
    // cannot know time follows seq); walking the time index backwards stops
    // after `limit` rows. The order is then by time (seq breaks ties),
    // which is the seq order whenever entries were sealed in time order.
    let time_only = filter.agent.is_none() && filter.kind.is_none() && filter.decisions.is_empty();
    if time_only && (filter.since_ns.is_some() || filter.until_ns.is_some()) {
        sql.push_str(" ORDER BY ts_ns DESC, seq DESC");
    } else {
        sql.push_str(" ORDER BY seq DESC");
    }
    if let Some(limit) = limit {
        sql.push_str(" LIMIT ");
        sql.push_str(&limit);
    }
    (sql, values)
}

fn read_head(conn: &Connection) -> rusqlite::Result<Option<(u64, String)>> {
    conn.query_row(
        "SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
}

/// Typed access to one row, turning type problems into errors naming the
/// row and column: stored rows are untrusted input.
struct Columns<'r, 's> {
    row: &'r Row<'s>,
    seq: i64,
    path: &'r Path,
}

impl Columns<'_, '_> {
    fn malformed(&self, column: &'static str, source: FromSqlError) -> StoreError {
        StoreError::MalformedColumn {
            path: self.path.to_path_buf(),
            seq: self.seq,
            column,
            source,
        }
    }

    fn value(&self, idx: usize) -> Result<rusqlite::types::ValueRef<'_>, StoreError> {
        self.row.get_ref(idx).map_err(|source| StoreError::Sqlite {
            op: "read evidence",
            path: self.path.to_path_buf(),
            source,
        })
    }

    fn int<T: FromSql>(&self, idx: usize, column: &'static str) -> Result<T, StoreError> {
        T::column_result(self.value(idx)?).map_err(|e| self.malformed(column, e))
    }

    fn text(&self, idx: usize, column: &'static str, out: &mut String) -> Result<(), StoreError> {
        let s = self
            .value(idx)?
            .as_str()
            .map_err(|e| self.malformed(column, e))?;
        out.clear();
        out.push_str(s);
        Ok(())
    }

    fn details(&self, idx: usize) -> Result<Map<String, Value>, StoreError> {
        let s = self
            .value(idx)?
            .as_str()
            .map_err(|e| self.malformed("details", e))?;
        serde_json::from_str(s).map_err(|source| StoreError::MalformedDetails {
            path: self.path.to_path_buf(),
            seq: self.seq,
            source,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
