//! SQLite storage of the evidence chain.
//!
//! Rows are returned exactly as stored; nothing here checks hashes (that is
//! `verify`'s job), so a tampered row reads back as tampered.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde_json::{Map, Value};

use super::record::{Entry, EntryHasher, NewEntry, RecordError, GENESIS_PREV_HASH};

/// Version of the `evidence` table layout, kept in `evidence_meta`.
/// Version 2 added the `v` column (each entry's encoding version); `open`
/// migrates a version 1 database in place.
pub const SCHEMA_VERSION: i64 = 2;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS evidence (
    seq             INTEGER PRIMARY KEY CHECK (seq >= 1),
    ts_ns           INTEGER NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind <> ''),
    agent           TEXT    NOT NULL CHECK (agent <> ''),
    owner           TEXT    NOT NULL CHECK (owner <> ''),
    uid             INTEGER NOT NULL CHECK (uid BETWEEN 0 AND 4294967295),
    loginuid        INTEGER NOT NULL CHECK (loginuid BETWEEN 0 AND 4294967295),
    user            TEXT    NOT NULL CHECK (user <> ''),
    login_user      TEXT    NOT NULL CHECK (login_user <> ''),
    pid             INTEGER NOT NULL CHECK (pid BETWEEN 0 AND 4294967295),
    exe             TEXT    NOT NULL CHECK (exe <> ''),
    action          TEXT    NOT NULL CHECK (action <> ''),
    target          TEXT    NOT NULL CHECK (target <> ''),
    decision        TEXT    NOT NULL CHECK (decision <> ''),
    rule_id         TEXT    NOT NULL CHECK (rule_id <> ''),
    policy_snapshot TEXT    NOT NULL CHECK (policy_snapshot <> ''),
    method          TEXT    NOT NULL CHECK (method <> ''),
    details         TEXT    NOT NULL CHECK (json_valid(details)),
    prev_hash       TEXT    NOT NULL CHECK (length(prev_hash) = 64),
    hash            TEXT    NOT NULL CHECK (length(hash) = 64),
    v               INTEGER NOT NULL DEFAULT 1 CHECK (v IN (1, 2))
) STRICT;

-- Guards against bugs in code sharing this database, not against attackers:
-- anyone who can write the file can drop these, which verification catches.
CREATE TRIGGER IF NOT EXISTS evidence_no_update BEFORE UPDATE ON evidence
BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;
CREATE TRIGGER IF NOT EXISTS evidence_no_delete BEFORE DELETE ON evidence
BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;

CREATE TABLE IF NOT EXISTS evidence_meta (
    key   TEXT PRIMARY KEY,
    value ANY  NOT NULL
) STRICT;
INSERT OR IGNORE INTO evidence_meta (key, value) VALUES ('schema_version', 2);
INSERT OR IGNORE INTO evidence_meta (key, value) VALUES ('entry_encoding', 'warden/entry/v2');
";

/// Schema version 1 to 2, in one transaction: every existing entry was
/// sealed in encoding version 1, which the new column's default records.
/// No entry is rewritten. The CHECK is tested against the existing rows.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE evidence ADD COLUMN v INTEGER NOT NULL DEFAULT 1 CHECK (v IN (1, 2));
UPDATE evidence_meta SET value = 2 WHERE key = 'schema_version';
UPDATE evidence_meta SET value = 'warden/entry/v2' WHERE key = 'entry_encoding';
";

fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT value FROM evidence_meta WHERE key = 'schema_version'",
        [],
        |row| row.get(0),
    )
}

/// Migrates a version 1 database to version 2 in one transaction; on any
/// error nothing of it stays.
fn migrate_1_to_2(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated it while this one waited.
    if schema_version(&tx)? == 1 {
        tx.execute_batch(MIGRATE_1_TO_2)?;
    }
    tx.commit()
}

/// Column order shared by every SELECT and by `read_row`.
pub(super) const COLUMNS: &str = "seq, ts_ns, kind, agent, owner, uid, loginuid, user, \
    login_user, pid, exe, action, target, decision, rule_id, policy_snapshot, method, details, \
    prev_hash, hash, v";

const INSERT: &str = "INSERT INTO evidence (seq, ts_ns, kind, agent, owner, uid, loginuid, \
    user, login_user, pid, exe, action, target, decision, rule_id, policy_snapshot, method, \
    details, prev_hash, hash, v) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("open evidence database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "open evidence database {path}: integrity check failed ({detail}); refusing to use it"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("open evidence database {path}: journal mode is {mode:?}, not WAL")]
    NotWal { path: PathBuf, mode: String },
    #[error("open evidence database {path}: evidence schema version {found} is not the supported version {SCHEMA_VERSION}")]
    SchemaVersion { path: PathBuf, found: i64 },
    #[error("create evidence schema")]
    Schema(#[source] rusqlite::Error),
    #[error("open evidence database {path}: migrate evidence schema 1 to 2 (add each entry's encoding version); the file is unchanged")]
    Migrate {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
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
}

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

/// Selection for [`EvidenceStore::query`]; unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub agent: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    /// Inclusive lower bound on `ts_ns`.
    pub since_ns: Option<i64>,
    /// Exclusive upper bound on `ts_ns`.
    pub until_ns: Option<i64>,
    /// Keep only the newest `limit` matches.
    pub limit: Option<usize>,
}

/// Idempotently creates the `evidence` and `evidence_meta` tables.
pub fn create_schema(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA).map_err(StoreError::Schema)
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
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;

        let problems = quick_check(&conn).map_err(|source| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: source.to_string(),
            },
            _ => open_err(source),
        })?;
        if problems.first().map(String::as_str) != Some("ok") {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: problems.join("; "),
            });
        }

        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(open_err)?;
        create_schema(&conn)?;

        let mut found = schema_version(&conn).map_err(open_err)?;
        if found == 1 {
            migrate_1_to_2(&mut conn).map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
            found = schema_version(&conn).map_err(open_err)?;
        }
        if found != SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion {
                path: path.to_path_buf(),
                found,
            });
        }
        Ok(EvidenceStore {
            conn,
            path: path.to_path_buf(),
        })
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
        if durability == Durability::Batched {
            return self.append_tx(entries);
        }
        // SQLite refuses to change `synchronous` inside a transaction.
        self.set_synchronous("FULL")?;
        let result = self.append_tx(entries);
        // A failure here leaves the connection at FULL, which is only slower;
        // reporting it would make callers retry an append that succeeded.
        let _ = self.set_synchronous("NORMAL");
        result
    }

    fn append_tx(&mut self, entries: &[NewEntry]) -> Result<Vec<Entry>, StoreError> {
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
        let (mut seq, mut prev_hash) = read_head(&tx)
            .map_err(sql("read evidence head"))?
            .unwrap_or((0, GENESIS_PREV_HASH.to_string()));

        let mut sealed = Vec::with_capacity(entries.len());
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(sql("prepare append"))?;
            let mut hasher = EntryHasher::new();
            for (index, new) in entries.iter().enumerate() {
                seq += 1;
                let seal_err = |source| StoreError::Seal {
                    path: path.clone(),
                    index,
                    seq,
                    source,
                };
                let entry =
                    Entry::seal_with(&mut hasher, seq, prev_hash, new.clone()).map_err(seal_err)?;
                // serde_json only ever writes UTF-8, so this never replaces anything.
                let details_text = String::from_utf8_lossy(hasher.details());
                insert
                    .execute(params![
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
                    .map_err(sql("append evidence"))?;
                prev_hash = entry.hash.clone();
                sealed.push(entry);
            }
        }
        tx.commit().map_err(sql("commit append"))?;
        Ok(sealed)
    }

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

    /// Matching entries, oldest first; with a limit, the newest `limit`.
    pub fn query(&self, filter: &Filter) -> Result<Vec<Entry>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM evidence \
             WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR kind = ?2) \
               AND (?3 IS NULL OR decision = ?3) \
               AND (?4 IS NULL OR ts_ns >= ?4) AND (?5 IS NULL OR ts_ns < ?5) \
             ORDER BY seq DESC LIMIT ?6"
        );
        // SQLite reads a negative LIMIT as "no limit".
        let limit = filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut entries = self.collect(
            &sql,
            params![
                filter.agent,
                filter.kind,
                filter.decision,
                filter.since_ns,
                filter.until_ns,
                limit
            ],
            "query evidence",
        )?;
        entries.reverse();
        Ok(entries)
    }

    /// Streams every entry in seq order to `f` until it breaks, without
    /// holding more than one row in memory. The same `Entry` buffer is
    /// refilled for each row, so `f` must clone what it wants to keep.
    pub fn for_each_entry<B>(
        &self,
        mut f: impl FnMut(&Entry) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM evidence ORDER BY seq");
        let mut stmt = self.conn.prepare(&sql).map_err(self.sql("read evidence"))?;
        let mut rows = stmt.query([]).map_err(self.sql("read evidence"))?;
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

fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    rows.take(10).collect()
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
pub(super) mod tests {
    use super::super::record::{self, tests::sample};
    use super::*;

    /// Inserts `e` as a row, bypassing `append` (no sealing or linking);
    /// without `v` as schema version 1 had it.
    pub(in super::super) fn insert_raw(conn: &Connection, e: &Entry, with_v: bool) {
        let mut details = Vec::new();
        record::write_canonical_details(&e.details, &mut details).expect("details");
        let details = String::from_utf8(details).expect("utf8");
        let (columns, v) = match with_v {
            true => (COLUMNS, ",?21"),
            false => (COLUMNS.trim_end_matches(", v"), ""),
        };
        let sql = format!(
            "INSERT INTO evidence ({columns}) VALUES \
             (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20{v})"
        );
        let mut stmt = conn.prepare(&sql).expect("prepare insert");
        let base = params![
            e.seq,
            e.ts_ns,
            e.kind,
            e.agent,
            e.owner,
            e.uid,
            e.loginuid,
            e.user,
            e.login_user,
            e.pid,
            e.exe,
            e.action,
            e.target,
            e.decision,
            e.rule_id,
            e.policy_snapshot,
            e.method,
            details,
            e.prev_hash,
            e.hash,
            e.v
        ];
        let n = if with_v { 21 } else { 20 };
        stmt.execute(&base[..n]).expect("insert row");
    }

    /// A database at `path` as schema version 1 left it: no `v` column, and
    /// `n` entries sealed in encoding version 1.
    pub(in super::super) fn v1_database(path: &Path, n: u64) -> Vec<Entry> {
        let conn = Connection::open(path).expect("open");
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        let schema = SCHEMA
            .replace(
                ",\n    v               INTEGER NOT NULL DEFAULT 1 CHECK (v IN (1, 2))",
                "",
            )
            .replace("('schema_version', 2)", "('schema_version', 1)")
            .replace("warden/entry/v2", "warden/entry/v1");
        assert!(!schema.contains("CHECK (v IN"), "schema 1 has no v column");
        conn.execute_batch(&schema).expect("schema 1");
        let mut prev = GENESIS_PREV_HASH.to_string();
        let mut entries = Vec::new();
        for new in batch(0, n) {
            let mut e = Entry::seal(entries.len() as u64 + 1, prev, new).expect("seal");
            e.v = 1;
            e.hash = record::compute_hash(&e).expect("hash");
            insert_raw(&conn, &e, false);
            prev = e.hash.clone();
            entries.push(e);
        }
        entries
    }

    #[test]
    fn a_schema_1_database_is_migrated_and_keeps_its_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        let old = v1_database(&path, 5);
        let mut store = EvidenceStore::open(&path).expect("open migrates");
        assert_eq!(
            schema_version(&store.conn).expect("version"),
            SCHEMA_VERSION
        );
        assert_eq!(
            store.read_range(1, 5).expect("read"),
            old,
            "entries unchanged"
        );
        let new = store
            .append(&batch(5, 3), Durability::Batched)
            .expect("append after migration");
        assert!(new.iter().all(|e| e.v == record::ENCODING_VERSION));
        assert_eq!(new[0].prev_hash, old[4].hash, "the chain goes on");
        let report = super::super::verify::verify_store(&store).expect("mixed chain verifies");
        assert_eq!(report.entries, 8);
        drop(store);
        let store = EvidenceStore::open(&path).expect("reopen: already migrated");
        assert_eq!(store.count().expect("count"), 8);
        let encoding: String = store
            .conn
            .query_row(
                "SELECT value FROM evidence_meta WHERE key = 'entry_encoding'",
                [],
                |row| row.get(0),
            )
            .expect("encoding");
        assert_eq!(encoding, "warden/entry/v2");
    }

    #[test]
    fn a_newer_schema_is_refused_without_touching_the_file() {
        let (_dir, path, store) = new_store();
        store
            .conn
            .execute(
                "UPDATE evidence_meta SET value = 3 WHERE key = 'schema_version'",
                [],
            )
            .expect("bump");
        drop(store);
        let before = std::fs::read(&path).expect("read");
        let err = EvidenceStore::open(&path).err().expect("refused");
        assert!(
            matches!(err, StoreError::SchemaVersion { found: 3, .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }

    fn new_store() -> (tempfile::TempDir, PathBuf, EvidenceStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warden.db");
        let store = EvidenceStore::open(&path).expect("open");
        (dir, path, store)
    }

    fn batch(from: u64, n: u64) -> Vec<NewEntry> {
        (from..from + n).map(sample).collect()
    }

    /// Deterministic noise, to avoid a dependency for random bytes.
    fn noise(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn append_links_entries_and_reads_them_back() {
        let (_dir, path, mut store) = new_store();
        assert_eq!(store.head().expect("head"), None);
        assert_eq!(store.count().expect("count"), 0);

        let first = store
            .append(&batch(0, 3), Durability::Batched)
            .expect("append");
        let second = store
            .append(&batch(3, 2), Durability::Fsync)
            .expect("append fsync");
        assert_eq!(first[0].prev_hash, GENESIS_PREV_HASH);
        assert_eq!(second[0].seq, 4);
        assert_eq!(second[0].prev_hash, first[2].hash);
        assert_eq!(
            store.head().expect("head"),
            Some((5, second[1].hash.clone()))
        );
        assert_eq!(store.count().expect("count"), 5);

        let all: Vec<Entry> = first.iter().chain(&second).cloned().collect();
        assert_eq!(store.read_range(1, 5).expect("range"), all);
        assert_eq!(store.read_range(2, 3).expect("range"), all[1..3].to_vec());
        assert!(store.read_range(4, 2).expect("empty range").is_empty());

        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(sync, 1, "synchronous back to NORMAL after an Fsync append");

        drop(store);
        let reopened = EvidenceStore::open(&path).expect("reopen");
        assert_eq!(reopened.read_range(1, 5).expect("range"), all);
    }

    #[test]
    fn invalid_entry_aborts_the_whole_batch() {
        let (_dir, _path, mut store) = new_store();
        store
            .append(&batch(0, 2), Durability::Batched)
            .expect("append");
        let mut entries = batch(2, 3);
        entries[1].owner.clear();
        let err = store
            .append(&entries, Durability::Batched)
            .expect_err("invalid");
        assert!(
            matches!(
                &err,
                StoreError::Seal {
                    index: 1,
                    seq: 4,
                    source: RecordError::EmptyField { field: "owner" },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(store.count().expect("count"), 2);
        // The failed transaction must not leave the connection unusable.
        store
            .append(&batch(2, 1), Durability::Batched)
            .expect("append after failure");
        assert_eq!(store.head().expect("head").map(|h| h.0), Some(3));
    }

    #[test]
    fn for_each_entry_streams_in_order_and_stops_on_break() {
        let (_dir, _path, mut store) = new_store();
        store
            .append(&batch(0, 10), Durability::Batched)
            .expect("append");
        let mut seen = Vec::new();
        let flow = store
            .for_each_entry(|e| {
                seen.push(e.seq);
                if e.seq == 4 {
                    ControlFlow::Break(e.hash.clone())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .expect("stream");
        assert_eq!(seen, [1, 2, 3, 4]);
        let h4 = store.read_range(4, 4).expect("range").remove(0).hash;
        assert_eq!(flow, ControlFlow::Break(h4));
    }

    #[test]
    fn query_filters_and_keeps_newest() {
        let (_dir, _path, mut store) = new_store();
        let mut entries = batch(0, 12);
        entries[5].agent = "other".into();
        entries[6].kind = "kill".into();
        store.append(&entries, Durability::Batched).expect("append");
        let seqs = |f: Filter| -> Vec<u64> {
            store
                .query(&f)
                .expect("query")
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs(Filter::default()).len(), 12);
        assert_eq!(
            seqs(Filter {
                agent: Some("other".into()),
                ..Filter::default()
            }),
            [6]
        );
        assert_eq!(
            seqs(Filter {
                kind: Some("kill".into()),
                ..Filter::default()
            }),
            [7]
        );
        // sample(n) denies when n % 3 == 0, i.e. seq 1, 4, 7, 10.
        let deny = Filter {
            decision: Some("deny".into()),
            ..Filter::default()
        };
        assert_eq!(seqs(deny.clone()), [1, 4, 7, 10]);
        assert_eq!(
            seqs(Filter {
                limit: Some(2),
                ..deny
            }),
            [7, 10]
        );
        let t = |seq: u64| entries[seq as usize - 1].ts_ns;
        let window = Filter {
            since_ns: Some(t(3)),
            until_ns: Some(t(6)),
            ..Filter::default()
        };
        assert_eq!(seqs(window), [3, 4, 5]);
    }

    #[test]
    fn concurrent_appenders_keep_one_linear_chain() {
        let (_dir, path, store) = new_store();
        drop(store);
        let workers: Vec<_> = (0..4u64)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut store = EvidenceStore::open(&path).expect("open");
                    for i in 0..25 {
                        let from = w * 1000 + i * 10;
                        store
                            .append(&batch(from, 10), Durability::Batched)
                            .expect("append");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        let store = EvidenceStore::open(&path).expect("open");
        let report = super::super::verify::verify_store(&store).expect("chain intact");
        assert_eq!(report.entries, 1000);
    }

    #[test]
    fn open_is_idempotent_and_schema_rejects_bad_rows() {
        let (_dir, path, mut store) = new_store();
        store
            .append(&batch(0, 1), Durability::Batched)
            .expect("append");
        create_schema(&store.conn).expect("schema again");
        drop(store);
        let store = EvidenceStore::open(&path).expect("reopen");
        let err = store
            .conn
            .execute(
                &format!(
                    "INSERT INTO evidence ({COLUMNS}) SELECT seq + 1, ts_ns, kind, '', owner, \
                    uid, loginuid, user, login_user, pid, exe, action, target, decision, rule_id, \
                    policy_snapshot, method, details, prev_hash, hash, v FROM evidence"
                ),
                [],
            )
            .expect_err("empty agent");
        assert!(err.to_string().contains("CHECK"), "{err}");
        let err = store
            .conn
            .execute("DELETE FROM evidence", [])
            .expect_err("append-only");
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    #[test]
    fn open_refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warden.db");
        let bytes = noise(64 * 1024, 0x9e37_79b9_7f4a_7c15);
        std::fs::write(&path, &bytes).expect("write");

        let err = EvidenceStore::open(&path).err().expect("must refuse");
        let chain = format!(
            "{err}: {}",
            std::error::Error::source(&err).map_or(String::new(), |s| s.to_string())
        );
        assert!(chain.contains(&path.display().to_string()), "{chain}");
        assert!(chain.contains("not a database"), "{chain}");
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
    }

    #[test]
    fn open_refuses_a_corrupt_database_without_touching_it() {
        let (_dir, path, mut store) = new_store();
        for i in 0..20 {
            store
                .append(&batch(i * 50, 50), Durability::Batched)
                .expect("append");
        }
        drop(store); // closing the last connection checkpoints the WAL into the file
        let page_size = 4096;
        let mut bytes = std::fs::read(&path).expect("read");
        assert!(
            bytes.len() > 8 * page_size,
            "need several pages, got {}",
            bytes.len()
        );
        let page = 5;
        bytes[page * page_size..(page + 1) * page_size]
            .copy_from_slice(&noise(page_size, 0x2545_f491_4f6c_dd1d));
        std::fs::write(&path, &bytes).expect("write");

        let err = EvidenceStore::open(&path).err().expect("must refuse");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
    }
}
