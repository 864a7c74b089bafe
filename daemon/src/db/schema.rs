//! Every table, index and trigger in `warden.db`, and the migrations between
//! versions of the evidence layout: the one place the file's shape is written.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// Version of the `evidence` table layout, kept in `evidence_meta`.
/// Version 2 added the `v` column (each entry's encoding version); version
/// 3 keeps the summaries' total per append instead of per row (no insert
/// trigger on `evidence`, `evidence_counted.through_seq`). Opening migrates
/// an older database in place.
pub const SCHEMA_VERSION: i64 = 3;

/// The delete guard of `EVIDENCE`, which `warden evidence archive` lifts
/// and restores inside its pruning transaction (the same text: checked by
/// `the_delete_guard_is_the_schemas`).
pub(crate) const EVIDENCE_NO_DELETE: &str =
    "CREATE TRIGGER IF NOT EXISTS evidence_no_delete BEFORE DELETE ON evidence
BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;";

/// The evidence chain and its metadata.
pub(crate) const EVIDENCE: &str = "
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
INSERT OR IGNORE INTO evidence_meta (key, value) VALUES ('schema_version', 3);
INSERT OR IGNORE INTO evidence_meta (key, value) VALUES ('entry_encoding', 'warden/entry/v2');
";

/// Signed checkpoints of the chain (`evidence::checkpoint`).
const CHECKPOINTS: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    id        INTEGER PRIMARY KEY,
    size      INTEGER NOT NULL CHECK (size >= 0),
    head_hash TEXT NOT NULL CHECK (length(head_hash) = 64),
    ts_ns     INTEGER NOT NULL,
    prev      TEXT NOT NULL CHECK (length(prev) = 64),
    key_id    TEXT NOT NULL CHECK (key_id <> ''),
    signature TEXT NOT NULL CHECK (length(signature) = 128)
) STRICT;
";

/// The agent registry and every policy version each agent has had.
const REGISTRY: &str = "
CREATE TABLE IF NOT EXISTS agents (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE CHECK (name <> ''),
    owner         TEXT NOT NULL CHECK (owner <> ''),
    policy        TEXT NOT NULL CHECK (policy <> ''),
    cgroup        TEXT NOT NULL UNIQUE CHECK (cgroup <> ''),
    adopted       INTEGER NOT NULL CHECK (adopted IN (0, 1)),
    status        TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at_ns INTEGER NOT NULL,
    created_by    TEXT NOT NULL CHECK (created_by <> '')
);
CREATE TABLE IF NOT EXISTS policy_versions (
    id           INTEGER PRIMARY KEY,
    agent        TEXT NOT NULL CHECK (agent <> ''),
    file         TEXT NOT NULL CHECK (file <> ''),
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    content      TEXT NOT NULL,
    loaded_at_ns INTEGER NOT NULL,
    loaded_by    TEXT NOT NULL CHECK (loaded_by <> '')
);
CREATE INDEX IF NOT EXISTS policy_versions_agent ON policy_versions (agent, id);
CREATE TABLE IF NOT EXISTS agent_parents (
    child  TEXT PRIMARY KEY CHECK (child <> ''),
    parent TEXT NOT NULL CHECK (parent <> '' AND parent <> child)
);
";

/// Held actions and their decisions (`approvals`). The last CHECK makes a
/// decided approval without approver, role and time impossible to store.
const APPROVALS: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    id                 INTEGER PRIMARY KEY,
    agent              TEXT NOT NULL CHECK (agent <> ''),
    owner              TEXT NOT NULL CHECK (owner <> ''),
    job                TEXT NOT NULL CHECK (json_valid(job)),
    job_hash           TEXT NOT NULL CHECK (length(job_hash) = 64),
    rule_id            TEXT NOT NULL CHECK (rule_id <> ''),
    policy_snapshot    TEXT NOT NULL CHECK (length(policy_snapshot) = 64),
    hold_key           TEXT NOT NULL,
    approval_required  INTEGER NOT NULL CHECK (approval_required = 1),
    created_at_ns      INTEGER NOT NULL,
    expires_at_ns      INTEGER NOT NULL CHECK (expires_at_ns > created_at_ns),
    status             TEXT NOT NULL CHECK (status IN ('pending','approved','rejected','expired','conflict')),
    decided_by         TEXT,
    decided_role       TEXT,
    decided_at_ns      INTEGER,
    reason             TEXT,
    applied            INTEGER NOT NULL DEFAULT 0 CHECK (applied IN (0, 1)),
    final_status       TEXT,
    repeated_decisions INTEGER NOT NULL DEFAULT 0,
    CHECK (status = 'pending' OR (decided_by IS NOT NULL AND decided_by <> ''
                                  AND decided_role IS NOT NULL AND decided_role <> ''
                                  AND decided_at_ns IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (status, hold_key);
";

/// Indexes for `warden log`'s filters (`EvidenceStore::query`), so a
/// filtered read costs what it returns, not the size of the log. Each ends
/// in `seq` so "the newest N matching" walks one index backwards. Additive:
/// an older file gets them the first time this build opens it (a one-time
/// build, proportional to the log); the entries are unchanged and an
/// older build ignores them. Each costs the writer an index insert per entry
/// (and `evidence_counted` an update per `summary` entry).
pub(crate) const EVIDENCE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS evidence_agent ON evidence (agent, seq);
CREATE INDEX IF NOT EXISTS evidence_kind ON evidence (kind, seq);
CREATE INDEX IF NOT EXISTS evidence_decision ON evidence (decision, seq);
CREATE INDEX IF NOT EXISTS evidence_ts ON evidence (ts_ns);

-- The repeats every `summary` entry counts, summed, for `warden log
-- --count` without a filter (a maintained total instead of a scan):
-- `counted` sums the summaries with seq <= `through_seq`. The store adds
-- each batch's summaries in the batch's transaction (`COUNTED_CATCH_UP`,
-- one statement per batch: a per-row insert trigger would make every
-- insert open a statement journal); readers add the few summaries after
-- `through_seq` (none once a writer of this build appended), so rows any
-- other writer inserted are counted too. A trigger keeps it on delete
-- (archive's prune, which first appends, so everything pruned is at or
-- below `through_seq`). Seeded from the log the first time this build
-- opens a file that has none.
CREATE TABLE IF NOT EXISTS evidence_counted (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    counted     NUMERIC NOT NULL,
    through_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS evidence_counted_delete AFTER DELETE ON evidence
WHEN OLD.kind = 'summary'
BEGIN UPDATE evidence_counted SET counted = counted - coalesce(json_extract(OLD.details, '$.count'), 0) WHERE id = 1; END;
INSERT OR IGNORE INTO evidence_counted (id, counted, through_seq)
SELECT 1, total(json_extract(details, '$.count')), coalesce(max(seq), 0) FROM evidence
WHERE kind = 'summary' AND NOT EXISTS (SELECT 1 FROM evidence_counted);
";

/// Adds the summaries appended after `through_seq` (through the kind
/// index) to `evidence_counted`, inside the appending transaction.
pub(crate) const COUNTED_CATCH_UP: &str = "UPDATE evidence_counted SET \
    counted = counted + (SELECT total(json_extract(details, '$.count')) FROM evidence \
    WHERE kind = 'summary' AND seq > through_seq), \
    through_seq = (SELECT coalesce(max(seq), 0) FROM evidence) WHERE id = 1";

/// The sentinel's new-behaviour memory (`sentinel::novelty`): what each
/// agent executed, connected to and wrote below, and when it was last
/// seen. Not evidence (the alerts are); bounded per agent by the writer.
/// Created by the evidence writer when it first needs it.
pub(crate) const SENTINEL_SEEN: &str = "
CREATE TABLE IF NOT EXISTS sentinel_seen (
    agent    TEXT    NOT NULL,
    detector TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    last_ns  INTEGER NOT NULL,
    PRIMARY KEY (agent, detector, key)
) STRICT;
CREATE INDEX IF NOT EXISTS sentinel_seen_age ON sentinel_seen (agent, last_ns);
";

pub(crate) fn create_sentinel_seen(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SENTINEL_SEEN)
}

/// Every table of the file, in the order they are created.
pub(crate) const ALL: [&str; 5] = [EVIDENCE, EVIDENCE_INDEXES, CHECKPOINTS, REGISTRY, APPROVALS];

/// Idempotently creates every table, index and trigger.
pub fn create(conn: &Connection) -> rusqlite::Result<()> {
    // Readers (`warden log`, `kill`, ...) must not need the write lock the
    // daemon's writer holds most of the time under load: when every table,
    // index and trigger is there, nothing is executed.
    if is_complete(conn)? {
        return Ok(());
    }
    ALL.iter().try_for_each(|sql| conn.execute_batch(sql))
}

/// The names `ALL` creates, read from its own `IF NOT EXISTS name` clauses
/// (one source of truth).
fn object_names() -> impl Iterator<Item = &'static str> {
    ALL.iter().flat_map(|sql| {
        sql.split("IF NOT EXISTS ")
            .skip(1)
            .filter_map(|rest| rest.split([' ', '(', '\n']).next())
    })
}

#[cfg(test)]
pub(crate) fn object_names_for_tests() -> Vec<&'static str> {
    object_names().collect()
}

/// Whether every object `ALL` creates exists, read without writing.
fn is_complete(conn: &Connection) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT count(*) > 0 FROM sqlite_master WHERE name = ?1")?;
    for name in object_names() {
        if !stmt.query_row([name], |row| row.get::<_, bool>(0))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Schema version 1 to 2, in one transaction: every existing entry was
/// sealed in encoding version 1, which the new column's default records.
/// No entry is rewritten. The CHECK is tested against the existing rows.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE evidence ADD COLUMN v INTEGER NOT NULL DEFAULT 1 CHECK (v IN (1, 2));
UPDATE evidence_meta SET value = 2 WHERE key = 'schema_version';
UPDATE evidence_meta SET value = 'warden/entry/v2' WHERE key = 'entry_encoding';
";

/// Schema version 2 to 3, in one transaction under the write lock: the
/// insert trigger had counted every summary stored so far, so the total
/// is complete through the last seq; from now on the store adds each
/// batch's summaries itself. No entry is touched. A version 2 file that
/// had no total yet got one (with `through_seq`) when it was opened.
pub(crate) fn migrate_2_to_3(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if schema_version(&tx)? == 2 {
        let has_through: bool = tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('evidence_counted') \
             WHERE name = 'through_seq'",
            [],
            |row| row.get(0),
        )?;
        if !has_through {
            tx.execute_batch(
                "ALTER TABLE evidence_counted ADD COLUMN through_seq INTEGER NOT NULL DEFAULT 0;
                 UPDATE evidence_counted SET through_seq = (SELECT coalesce(max(seq), 0) FROM evidence);",
            )?;
        }
        tx.execute_batch(
            "DROP TRIGGER IF EXISTS evidence_counted_insert;
             UPDATE evidence_meta SET value = 3 WHERE key = 'schema_version';",
        )?;
    }
    tx.commit()
}

pub(crate) fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT value FROM evidence_meta WHERE key = 'schema_version'",
        [],
        |row| row.get(0),
    )
}

/// The evidence schema version of a file that has one (None for a new file),
/// read without writing anything.
pub(crate) fn existing_schema_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let has_meta: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'evidence_meta'",
        [],
        |row| row.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    schema_version(conn).optional()
}

/// Migrates a version 1 database to version 2 in one transaction; on any
/// error nothing of it stays.
pub(crate) fn migrate_1_to_2(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated it while this one waited.
    if schema_version(&tx)? == 1 {
        tx.execute_batch(MIGRATE_1_TO_2)?;
    }
    tx.commit()
}
