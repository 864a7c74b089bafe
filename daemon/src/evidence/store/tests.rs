//! Test helpers other evidence tests build on (raw rows, a schema 1 file)
//! and the tests of appending, reading and querying the chain.

use super::*;
use crate::evidence::record::{self, tests::sample};

/// Inserts `e` as a row, bypassing `append` (no sealing or linking);
/// without `v` as schema version 1 had it.
pub(crate) fn insert_raw(conn: &Connection, e: &Entry, with_v: bool) {
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
pub(crate) fn v1_database(path: &Path, n: u64) -> Vec<Entry> {
    let conn = Connection::open(path).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .expect("wal");
    assert_eq!(mode, "wal");
    let schema = crate::db::schema::EVIDENCE
        .replace(
            ",\n    v               INTEGER NOT NULL DEFAULT 1 CHECK (v IN (1, 2))",
            "",
        )
        .replace(
            &format!("('schema_version', {SCHEMA_VERSION})"),
            "('schema_version', 1)",
        )
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

pub(crate) fn new_store() -> (tempfile::TempDir, PathBuf, EvidenceStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warden.db");
    let store = EvidenceStore::open(&path).expect("open");
    (dir, path, store)
}

pub(crate) fn batch(from: u64, n: u64) -> Vec<NewEntry> {
    (from..from + n).map(sample).collect()
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
fn a_batch_sealed_in_place_is_the_chain_append_writes_and_its_entries_stay() {
    let (_a_dir, _a_path, mut copied) = new_store();
    let (_b_dir, _b_path, mut in_place) = new_store();
    let expected = copied
        .append(&batch(0, 3), Durability::Batched)
        .expect("append");
    let more = copied
        .append(&batch(3, 2), Durability::Fsync)
        .expect("append fsync");
    let mut entries = batch(0, 3);
    assert_eq!(
        in_place
            .append_batch(&mut entries, Durability::Batched)
            .expect("append_batch"),
        3
    );
    // The caller still has its entries, unchanged.
    assert_eq!(entries, batch(0, 3));
    let mut entries = batch(3, 2);
    assert_eq!(
        in_place
            .append_batch(&mut entries, Durability::Fsync)
            .expect("append_batch fsync"),
        2
    );
    let all: Vec<Entry> = expected.into_iter().chain(more).collect();
    assert_eq!(in_place.read_range(1, 5).expect("range"), all);
    let sync: i64 = in_place
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(sync, 1, "synchronous back to NORMAL after an Fsync append");
}

#[test]
fn a_batch_sealed_in_place_with_an_invalid_entry_writes_nothing_and_gives_every_entry_back() {
    let (_dir, _path, mut store) = new_store();
    store
        .append_batch(&mut batch(0, 2), Durability::Batched)
        .expect("append");
    let mut entries = batch(2, 3);
    entries[2].owner.clear();
    let before = entries.clone();
    let err = store
        .append_batch(&mut entries, Durability::Batched)
        .expect_err("invalid");
    assert!(
        matches!(
            &err,
            StoreError::Seal {
                index: 2,
                seq: 5,
                source: RecordError::EmptyField { field: "owner" },
                ..
            }
        ),
        "{err:?}"
    );
    // The two valid entries were sealed and moved back, the invalid one
    // given back: a retry of each job sees them as they came.
    assert_eq!(entries, before);
    assert_eq!(store.count().expect("count"), 2);
    let mut valid = entries[..2].to_vec();
    store
        .append_batch(&mut valid, Durability::Batched)
        .expect("append after failure");
    assert_eq!(store.head().expect("head").map(|h| h.0), Some(4));
}

#[test]
fn refusals_after_walks_the_decision_index_not_every_entry_since() {
    let (_dir, _path, mut store) = new_store();
    let mut entries = batch(0, 40);
    for (i, e) in entries.iter_mut().enumerate() {
        e.agent = "explained".into();
        e.kind = "decision".into();
        e.decision = if i % 10 == 3 { "deny" } else { "allow" }.into();
    }
    store.append(&entries, Durability::Batched).unwrap();
    let plan: Vec<String> = store
        .connection()
        .prepare(&format!("EXPLAIN QUERY PLAN SELECT seq {REFUSALS_AFTER}"))
        .unwrap()
        .query_map(params![0, "explained", 1000], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter()
            .any(|p| p.contains("USING INDEX evidence_decision")),
        "{plan:?}"
    );
    // The same answer: the refusals after the seq, oldest first.
    let seqs: Vec<u64> = store
        .refusals_after("explained", 5, 1000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [14, 24, 34]);
    let first: Vec<u64> = store
        .refusals_after("explained", 0, 1)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(first, [4]);
    assert!(store.refusals_after("other", 0, 1000).unwrap().is_empty());
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
        decisions: vec!["deny".into()],
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
    let report = crate::evidence::verify_store(&store).expect("chain intact");
    assert_eq!(report.entries, 1000);
}

/// `warden log`'s filters read through an index, never a scan of the log
/// (with a limit and no filter, the newest rows by rowid, which is fine).
#[test]
fn every_log_filter_uses_an_index() {
    let (_dir, _path, mut store) = new_store();
    store.append(&batch(1, 20), Durability::Batched).unwrap();
    let a = || Some("a1".to_string());
    let filters = [
        Filter {
            agent: a(),
            ..Filter::default()
        },
        Filter {
            kind: Some("decision".into()),
            ..Filter::default()
        },
        Filter {
            decisions: vec!["deny".into()],
            ..Filter::default()
        },
        Filter {
            decisions: vec!["allow".into()],
            limit: Some(20),
            ..Filter::default()
        },
        Filter {
            since_ns: Some(5),
            limit: Some(20),
            ..Filter::default()
        },
        Filter {
            since_ns: Some(5),
            ..Filter::default()
        },
        Filter {
            since_ns: Some(5),
            until_ns: Some(9),
            ..Filter::default()
        },
        Filter {
            agent: a(),
            decisions: vec!["deny".into()],
            limit: Some(20),
            ..Filter::default()
        },
        Filter {
            agent: a(),
            since_ns: Some(5),
            limit: Some(20),
            ..Filter::default()
        },
        Filter {
            kind: Some("gap".into()),
            limit: Some(1),
            ..Filter::default()
        },
    ];
    for filter in filters {
        let (sql, values) = query_sql(&filter);
        let mut stmt = store
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(values.iter()), |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(
            plan.contains("USING INDEX evidence_")
                || plan.contains("USING COVERING INDEX evidence_"),
            "{filter:?} scans: {plan}"
        );
        assert!(
            !plan.contains("SCAN evidence;") && plan != "SCAN evidence",
            "{filter:?}: {plan}"
        );
        // A limit is met by walking the index in order, not by sorting.
        if filter.limit.is_some() {
            assert!(!plan.contains("TEMP B-TREE"), "{filter:?} sorts: {plan}");
        }
    }
    // No filter and a limit: the newest rows by primary key, no sort.
    let (sql, _) = query_sql(&Filter {
        limit: Some(20),
        ..Filter::default()
    });
    let plan: String = store
        .connection()
        .query_row(&format!("EXPLAIN QUERY PLAN {sql}"), [20], |row| row.get(3))
        .unwrap();
    assert_eq!(plan, "SCAN evidence", "{sql}");
}

#[test]
fn several_decisions_merge_newest_first() {
    let (_dir, _path, mut store) = new_store();
    store.append(&batch(1, 10), Durability::Batched).unwrap();
    let seqs = |limit| {
        store
            .query(&Filter {
                decisions: vec!["deny".into(), "allow".into()],
                limit,
                ..Filter::default()
            })
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(None), (1..=10).collect::<Vec<_>>());
    assert_eq!(seqs(Some(3)), [8, 9, 10]);
}

#[test]
fn distinct_decisions_lists_each_once() {
    let (_dir, _path, mut store) = new_store();
    store.append(&batch(1, 10), Durability::Batched).unwrap();
    assert_eq!(store.distinct_decisions().unwrap(), ["allow", "deny"]);
}

/// `warden log --count`: the entries `query` would return (any limit
/// ignored) and the repeats their summaries count.
#[test]
fn count_matching_counts_entries_and_summarised_repeats() {
    let (_dir, _path, mut store) = new_store();
    let mut entries = batch(0, 10);
    entries[2].kind = "summary".into();
    entries[2].details = [("count".to_string(), serde_json::json!(40))]
        .into_iter()
        .collect();
    entries[3].kind = "summary".into();
    entries[3].details = [("count".to_string(), serde_json::json!(2))]
        .into_iter()
        .collect();
    entries[3].agent = "other".into();
    store.append(&entries, Durability::Batched).expect("append");
    let count = |f: Filter| store.count_matching(&f).expect("count");
    assert_eq!(
        count(Filter::default()),
        Counted {
            entries: 10,
            counted: 42
        }
    );
    let mine = Filter {
        agent: Some(entries[0].agent.clone()),
        limit: Some(1),
        ..Filter::default()
    };
    assert_eq!(
        count(mine.clone()),
        Counted {
            entries: 9,
            counted: 40
        }
    );
    assert_eq!(
        count(Filter {
            kind: Some("summary".into()),
            ..mine
        }),
        Counted {
            entries: 1,
            counted: 40
        }
    );
    // The same selection `query` makes.
    let deny = Filter {
        decisions: vec!["deny".into()],
        ..Filter::default()
    };
    assert_eq!(
        count(deny.clone()).entries,
        store.query(&deny).expect("query").len() as u64
    );
}

/// `warden log --count` without a filter answers from two primary-key
/// lookups and the triggers' maintained total (no scan of the table), and its
/// figures equal a full `COUNT(*)` and sum over the rows after appends,
/// after an archive prunes the chain's start, and after a reopen.
#[test]
fn unfiltered_count_uses_the_indexes_and_equals_a_full_count() {
    let (_dir, path, mut store) = new_store();
    let plan = |store: &EvidenceStore, sql: &str| -> String {
        let mut stmt = store
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("plan");
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .expect("plan rows");
        rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("\n")
    };
    for sql in [
        SUMMARY_COUNT_SQL,
        CHAIN_LENGTH_SQL,
        crate::db::schema::COUNTED_CATCH_UP,
    ] {
        let p = plan(&store, sql);
        assert!(!p.contains("SCAN evidence"), "{sql}: {p}");
    }
    let full = |store: &EvidenceStore| -> Counted {
        let (entries, counted): (i64, i64) = store
            .connection()
            .query_row(
                "SELECT count(*), coalesce(sum(CASE WHEN kind = 'summary' \
                 THEN json_extract(details, '$.count') ELSE 0 END), 0) FROM evidence",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("full count");
        Counted {
            entries: entries as u64,
            counted: counted as u64,
        }
    };
    let count = |store: &EvidenceStore| store.count_matching(&Filter::default()).expect("count");
    assert_eq!(count(&store), Counted::default());
    for round in 0..3u64 {
        let mut entries = batch(round * 10, 10);
        for (i, e) in entries.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
            e.kind = "summary".into();
            e.details = [("count".to_string(), serde_json::json!(i as u64 + round))]
                .into_iter()
                .collect();
        }
        store.append(&entries, Durability::Batched).expect("append");
        assert_eq!(count(&store), full(&store));
    }
    assert_eq!(count(&store).entries, 30);
    let (through, hash) = store
        .connection()
        .query_row("SELECT seq, hash FROM evidence WHERE seq = 12", [], |r| {
            Ok((r.get::<_, u64>(0)?, r.get::<_, String>(1)?))
        })
        .expect("entry 12");
    store
        .prune_archived(through, &hash, sample(99))
        .expect("archive");
    assert_eq!(count(&store), full(&store));
    assert_eq!(count(&store).entries, 19);
    drop(store);
    let store = EvidenceStore::open(&path).expect("reopen");
    assert_eq!(count(&store), full(&store));
    // A file from a build before the total: seeded from the log on open.
    store
        .connection()
        .execute_batch("DROP TRIGGER evidence_counted_delete; DROP TABLE evidence_counted;")
        .expect("drop the total");
    drop(store);
    let store = EvidenceStore::open(&path).expect("reopen an older file");
    assert!(full(&store).counted > 0);
    assert_eq!(count(&store), full(&store));
    // The filtered path agrees with a filtered full count too.
    let summaries = Filter {
        kind: Some("summary".into()),
        ..Filter::default()
    };
    let n: i64 = store
        .connection()
        .query_row(
            "SELECT count(*) FROM evidence WHERE kind = 'summary'",
            [],
            |r| r.get(0),
        )
        .expect("summaries");
    let got = store.count_matching(&summaries).expect("count summaries");
    assert_eq!(got.entries, n as u64);
    assert_eq!(got.counted, full(&store).counted);
}

/// `log verify` checks `--count`'s quick totals against the chain: a total
/// changed outside Warden is reported.
#[test]
fn log_verify_checks_the_maintained_totals() {
    let (dir, _path, mut store) = new_store();
    let mut entries = batch(0, 6);
    entries[1].kind = "summary".into();
    entries[1].details = [("count".to_string(), serde_json::json!(7))]
        .into_iter()
        .collect();
    store.append(&entries, Durability::Batched).expect("append");
    let key = crate::evidence::checkpoint::HostKey::load_or_create(dir.path()).expect("key");
    let verify = |store: &EvidenceStore| {
        crate::evidence::verify::verify_store_signed(store, &key.verifying_key(), &[])
    };
    verify(&store).expect("the totals agree with the chain");
    store
        .connection()
        .execute("UPDATE evidence_counted SET counted = counted + 1", [])
        .expect("tamper with the total");
    assert!(matches!(
        verify(&store),
        Err(crate::evidence::verify::VerifyError::Totals { .. })
    ));
}

#[test]
fn the_refusal_predicate_is_what_refusals_after_returns() {
    let (_dir, _path, mut store) = new_store();
    let kinds = ["decision", "summary", "gap", "hold"];
    let decisions = [
        "allow",
        "deny",
        "hold",
        "rejected",
        "expired",
        "would-deny",
        "denied",
        "approved",
    ];
    let mut entries = Vec::new();
    for kind in kinds {
        for decision in decisions {
            for agent in ["mine", "other"] {
                let mut e = sample(entries.len() as u64);
                (e.kind, e.decision, e.agent) = (kind.into(), decision.into(), agent.into());
                entries.push(e);
            }
        }
    }
    store.append(&entries, Durability::Batched).unwrap();
    let returned: Vec<(String, String)> = store
        .refusals_after("mine", 0, 1000)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.decision))
        .collect();
    let predicted: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e.agent == "mine" && is_explained_refusal(&e.kind, &e.decision))
        .map(|e| (e.kind.clone(), e.decision.clone()))
        .collect();
    assert_eq!(returned, predicted);
    assert_eq!(predicted.len(), 4, "{predicted:?}");
}
