//! Tests of the opener: pragmas, integrity refusal, schema versions and the
//! migration, through `open` and through the three constructors built on it.

use super::*;
use crate::approvals::Approvals;
use crate::evidence::record;
use crate::evidence::store::{
    tests::{batch, new_store, v1_database},
    COLUMNS,
};
use crate::evidence::{Durability, EvidenceStore};
use crate::registry::Registry;

#[test]
fn a_schema_1_database_is_migrated_and_keeps_its_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    let old = v1_database(&path, 5);
    let mut store = EvidenceStore::open(&path).expect("open migrates");
    assert_eq!(
        schema::schema_version(store.connection()).expect("version"),
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
    let report = crate::evidence::verify_store(&store).expect("mixed chain verifies");
    assert_eq!(report.entries, 8);
    drop(store);
    let store = EvidenceStore::open(&path).expect("reopen: already migrated");
    assert_eq!(store.count().expect("count"), 8);
    let encoding: String = store
        .connection()
        .query_row(
            "SELECT value FROM evidence_meta WHERE key = 'entry_encoding'",
            [],
            |row| row.get(0),
        )
        .expect("encoding");
    assert_eq!(encoding, "warden/entry/v2");
}

/// `batch(from, n)` with every third entry a `summary` counting 5.
fn with_summaries(from: u64, n: u64) -> Vec<crate::evidence::NewEntry> {
    let mut entries = batch(from, n);
    for e in entries.iter_mut().step_by(3) {
        e.kind = "summary".into();
        e.details.insert("count".into(), serde_json::json!(5));
    }
    entries
}

/// A database as schema version 2 left it: the summaries' total kept by
/// a per-row insert trigger, no `through_seq`, and `n` entries (every
/// third a summary) sealed and counted as that build did.
fn v2_database(path: &std::path::Path, n: u64) -> Vec<record::Entry> {
    let store = EvidenceStore::open(path).expect("open");
    store
        .connection()
        .execute_batch(
            "ALTER TABLE evidence_counted DROP COLUMN through_seq;
             CREATE TRIGGER evidence_counted_insert AFTER INSERT ON evidence
             WHEN NEW.kind = 'summary'
             BEGIN UPDATE evidence_counted SET counted = counted + coalesce(json_extract(NEW.details, '$.count'), 0) WHERE id = 1; END;
             UPDATE evidence_meta SET value = 2 WHERE key = 'schema_version';",
        )
        .expect("schema 2");
    let mut prev = record::GENESIS_PREV_HASH.to_string();
    let mut entries = Vec::new();
    for new in with_summaries(0, n) {
        let e = record::Entry::seal(entries.len() as u64 + 1, prev, new).expect("seal");
        crate::evidence::store::tests::insert_raw(store.connection(), &e, true);
        prev = e.hash.clone();
        entries.push(e);
    }
    entries
}

/// What `warden log --count` answers without a filter, and the same
/// figures counted from every row.
fn quick_and_full(store: &EvidenceStore) -> (crate::evidence::Counted, crate::evidence::Counted) {
    store.totals_and_recount().expect("totals")
}

/// Schema 2 kept the summaries' total with a per-row insert trigger;
/// opening migrates it to the per-batch total: the trigger is gone, the
/// entries and the total unchanged, the old chain verifies, appends
/// (with summaries) keep the total equal to a recount, a batch that fails
/// changes nothing, and rows a writer without the total inserted (an
/// older build still running) are counted too.
#[test]
fn a_schema_2_database_is_migrated_to_the_per_batch_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v2.db");
    let old = v2_database(&path, 30);
    let mut store = EvidenceStore::open(&path).expect("open migrates");
    assert_eq!(
        schema::schema_version(store.connection()).expect("version"),
        SCHEMA_VERSION
    );
    let insert_triggers: i64 = store
        .connection()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' \
             AND tbl_name = 'evidence' AND sql LIKE '%INSERT ON evidence%'",
            [],
            |row| row.get(0),
        )
        .expect("triggers");
    assert_eq!(insert_triggers, 0, "no per-row trigger on inserts");
    assert_eq!(
        store.read_range(1, 30).expect("read"),
        old,
        "entries unchanged"
    );
    let (quick, full) = quick_and_full(&store);
    assert_eq!(quick, full);
    assert_eq!(full.counted, 10 * 5);
    let through: i64 = store
        .connection()
        .query_row("SELECT through_seq FROM evidence_counted", [], |r| r.get(0))
        .expect("through_seq");
    assert_eq!(through, 30, "the trigger had counted every stored summary");
    crate::evidence::verify_store(&store).expect("the old chain verifies");

    store
        .append(&with_summaries(30, 9), Durability::Batched)
        .expect("append after migration");
    let (quick, full) = quick_and_full(&store);
    assert_eq!(quick, full);
    assert_eq!(full.counted, 13 * 5);

    // A failing batch (its last entry is invalid) leaves the total as it was.
    let mut bad = with_summaries(39, 4);
    bad[3].owner.clear();
    store
        .append_batch(&mut bad, Durability::Batched)
        .expect_err("invalid entry");
    assert_eq!(quick_and_full(&store), (quick, full));

    // Summaries inserted by a writer that does not keep the total.
    let head = store.read_range(39, 39).expect("head").remove(0);
    let mut e = record::Entry::seal(40, head.hash, with_summaries(39, 1).remove(0)).expect("seal");
    e.details.insert("count".into(), serde_json::json!(7));
    e.hash = record::compute_hash(&e).expect("hash");
    crate::evidence::store::tests::insert_raw(store.connection(), &e, true);
    let (quick, full) = quick_and_full(&store);
    assert_eq!(quick, full, "counted by the reader");
    assert_eq!(full.counted, 13 * 5 + 7);
    store
        .append(&batch(40, 2), Durability::Batched)
        .expect("append without summaries");
    store
        .append(&with_summaries(42, 1), Durability::Batched)
        .expect("append a summary");
    assert_eq!(quick_and_full(&store).0.counted, 13 * 5 + 7 + 5);
    let through: i64 = store
        .connection()
        .query_row("SELECT through_seq FROM evidence_counted", [], |r| r.get(0))
        .expect("through_seq");
    assert_eq!(through, 43, "caught up by the next append with a summary");
    let report = crate::evidence::verify_store(&store).expect("verifies");
    assert_eq!(report.entries, 43);
    drop(store);
    let store = EvidenceStore::open(&path).expect("reopen: already migrated");
    let (quick, full) = quick_and_full(&store);
    assert_eq!(quick, full);
}

#[test]
fn a_newer_schema_is_refused_without_touching_the_file() {
    let (_dir, path, store) = new_store();
    store
        .connection()
        .execute(
            "UPDATE evidence_meta SET value = ?1 WHERE key = 'schema_version'",
            [SCHEMA_VERSION + 1],
        )
        .expect("bump");
    drop(store);
    let before = std::fs::read(&path).expect("read");
    let err = open(&path, Integrity::QuickCheck).err().expect("refused");
    assert!(
        matches!(err, DbError::SchemaVersion { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), before);
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
fn open_is_idempotent_and_schema_rejects_bad_rows() {
    let (_dir, path, mut store) = new_store();
    store
        .append(&batch(0, 1), Durability::Batched)
        .expect("append");
    schema::create(store.connection()).expect("schema again");
    drop(store);
    let store = EvidenceStore::open(&path).expect("reopen");
    let err = store
        .connection()
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
        .connection()
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

    let err = open(&path, Integrity::QuickCheck)
        .err()
        .expect("must refuse");
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

    let err = open(&path, Integrity::QuickCheck)
        .err()
        .expect("must refuse");
    assert!(matches!(err, DbError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
}

#[test]
fn trust_still_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warden.db");
    let bytes = noise(64 * 1024, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(&path, &bytes).expect("write");

    let err = open(&path, Integrity::Trust).err().expect("must refuse");
    assert!(matches!(err, DbError::Open { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
}

/// What one connection to the file says about itself: the pragmas that
/// must agree across openers, `synchronous`, and every schema object.
fn settings(conn: &rusqlite::Connection) -> (String, i64, i64, i64, Vec<String>) {
    let pragma = |name: &str| -> i64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .expect(name)
    };
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    let mut stmt = conn
        .prepare(
            "SELECT type || ' ' || name FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
        )
        .expect("prepare");
    let objects = stmt
        .query_map([], |r| r.get(0))
        .expect("objects")
        .collect::<Result<_, _>>()
        .expect("objects");
    (
        mode,
        pragma("busy_timeout"),
        pragma("foreign_keys"),
        pragma("synchronous"),
        objects,
    )
}

#[test]
fn every_constructor_in_any_order_gives_the_same_pragmas_and_all_tables() {
    const ALL_OBJECTS: [&str; 17] = [
        "index approvals_pending",
        "index evidence_agent",
        "index evidence_decision",
        "index evidence_kind",
        "index evidence_ts",
        "index policy_versions_agent",
        "table agent_parents",
        "table agents",
        "table approvals",
        "table checkpoints",
        "table evidence",
        "table evidence_counted",
        "table evidence_meta",
        "table policy_versions",
        "trigger evidence_counted_delete",
        "trigger evidence_no_delete",
        "trigger evidence_no_update",
    ];
    #[derive(Debug, Clone, Copy)]
    enum Opener {
        Registry,
        Approvals,
        Evidence,
    }
    let orders = [
        [Opener::Registry, Opener::Approvals, Opener::Evidence],
        [Opener::Registry, Opener::Evidence, Opener::Approvals],
        [Opener::Approvals, Opener::Registry, Opener::Evidence],
        [Opener::Approvals, Opener::Evidence, Opener::Registry],
        [Opener::Evidence, Opener::Registry, Opener::Approvals],
        [Opener::Evidence, Opener::Approvals, Opener::Registry],
    ];
    for order in orders {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warden.db");
        // All kept open at once, as the daemon and a CLI verb do.
        let (mut registry, mut approvals, mut evidence) = (None, None, None);
        for opener in order {
            let (got, synchronous) = match opener {
                Opener::Registry => {
                    let r = registry.insert(Registry::open(&path).expect("registry"));
                    (settings(r.connection()), 2)
                }
                Opener::Approvals => {
                    let a = approvals.insert(Approvals::open(&path).expect("approvals"));
                    (settings(a.connection()), 2)
                }
                // NORMAL: batched appends, see `EvidenceStore::from_database`.
                Opener::Evidence => {
                    let e = evidence.insert(EvidenceStore::open(&path).expect("evidence"));
                    (settings(e.connection()), 1)
                }
            };
            let want = (
                "wal".to_string(),
                BUSY_TIMEOUT.as_millis() as i64,
                1,
                synchronous,
                ALL_OBJECTS.map(String::from).to_vec(),
            );
            assert_eq!(got, want, "{opener:?} in {order:?}");
        }
    }
}

#[test]
fn the_schema_names_every_object_it_creates_and_a_complete_file_is_not_written() {
    let names: Vec<&str> = super::schema::object_names_for_tests();
    for name in [
        "evidence",
        "evidence_no_update",
        "evidence_no_delete",
        "evidence_meta",
        "checkpoints",
        "agents",
        "policy_versions",
        "approvals",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.db");
    drop(super::open(&path, super::Integrity::Trust).expect("create"));
    // A second process holds the write lock (the daemon's writer under
    // load): opening for reading must not wait for it.
    let holder = rusqlite::Connection::open(&path).expect("holder");
    holder.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    let started = std::time::Instant::now();
    super::open(&path, super::Integrity::Trust).expect("open while another writes");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "open waited {:?} for the write lock",
        started.elapsed()
    );
    holder.execute_batch("ROLLBACK").expect("release");
}

#[test]
fn the_delete_guard_is_the_schemas() {
    assert!(super::schema::EVIDENCE.contains(super::EVIDENCE_NO_DELETE));
}
