//! Unit tests of the verifier: tampering of every kind, and the fast path.

use super::*;
use crate::evidence::record::compute_hash;
use crate::evidence::record::tests::sample;
use crate::evidence::store::tests::{insert_raw, v1_database};
use crate::evidence::store::Durability;
use rusqlite::params;
use std::path::{Path, PathBuf};

/// A store holding 20 entries, and a second connection for tampering.
fn chain() -> (tempfile::TempDir, PathBuf, EvidenceStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warden.db");
    let mut store = EvidenceStore::open(&path).expect("open");
    let entries: Vec<_> = (0..20).map(sample).collect();
    store
        .append(&entries[..5], Durability::Batched)
        .expect("append");
    store
        .append(&entries[5..], Durability::Fsync)
        .expect("append");
    (dir, path, store)
}

#[test]
fn the_fast_path_verifies_intact_chains_and_gives_up_on_tampering() {
    let (_dir, _path, store) = chain();
    let mut seen = Vec::new();
    let fast = verify_raw(store.connection(), None, &mut |seq, _| seen.push(seq))
        .expect("an intact chain takes the fast path");
    assert_eq!(
        fast,
        verify_streaming(&store, None, &mut |_| {}).expect("slow path")
    );
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
    // A late field, and fields in the first two SHA-256 blocks, which
    // rows share with their neighbours (the hasher's cached prefix).
    for (column, value) in [
        ("target", "x"),
        ("agent", "coder-2"),
        ("action", "connect6"),
        ("decision", "allow"),
    ] {
        let (_dir, path, store) = chain();
        let sql = format!("UPDATE evidence SET {column} = '{value}' WHERE seq = 7");
        let _attacker = tamper(&path, &sql);
        assert!(
            verify_raw(store.connection(), None, &mut |_, _| {}).is_none(),
            "{sql}"
        );
        assert_eq!(broken_at(&store), (7, TamperKind::HashMismatch), "{sql}");
    }
}

#[test]
fn the_prefix_cached_hasher_hashes_like_sha256() {
    let base: Vec<u8> = b"{\"action\":\"connect4\",\"agent\":\"coder-1\",\"decision\":\"deny\","
        .iter()
        .chain(&[b'x'; 300])
        .copied()
        .collect();
    let differs_at = |at: usize| {
        let mut m = base.clone();
        m[at] ^= 1;
        m
    };
    const HEAD: usize = BLOCK;
    let second_block_end = HEAD + BLOCK;
    let messages: Vec<Vec<u8>> = vec![
        base.clone(),
        base.clone(),
        differs_at(HEAD - 1),
        base.clone(),
        differs_at(HEAD),
        differs_at(HEAD),
        differs_at(second_block_end - 1),
        base.clone(),
        differs_at(second_block_end),
        differs_at(0),
        base[..HEAD - 1].into(),
        base[..HEAD].into(),
        base[..HEAD + 1].into(),
        base[..second_block_end - 1].into(),
        base[..second_block_end].into(),
        base[..second_block_end + 1].into(),
        Vec::new(),
        base.clone(),
        base.repeat(20),
        base.clone(),
    ];
    let mut hasher = PrefixCachedHasher::default();
    for (i, m) in messages.iter().enumerate() {
        let expected: [u8; 32] = Sha256::digest(m).into();
        assert_eq!(hasher.digest(m), expected, "message {i}");
    }
}

/// Messages from more distinct prefixes than are cached, in an order
/// that reuses, partly shares, evicts and comes back to them.
#[test]
fn the_prefix_cached_hasher_hashes_like_sha256_across_many_prefixes() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut hasher = PrefixCachedHasher::default();
    for i in 0..5000 {
        let first = next(PREFIXES as u64 + 4) as u8;
        let second = next(3) as u8;
        let tail = next(200) as usize;
        let mut m = vec![first; BLOCK];
        m.extend(std::iter::repeat_n(second, BLOCK));
        m.extend((0..tail).map(|b| b as u8 ^ first));
        // Some messages end inside the cached blocks.
        m.truncate(if next(10) == 0 {
            next(2 * BLOCK as u64) as usize
        } else {
            m.len()
        });
        let expected: [u8; 32] = Sha256::digest(&m).into();
        assert_eq!(hasher.digest(&m), expected, "message {i}");
        assert!(hasher.prefixes.len() <= PREFIXES);
    }
}

#[test]
fn field_numbers_are_the_store_columns() {
    use Field::*;
    let fields = [
        (Seq, "seq"),
        (TsNs, "ts_ns"),
        (Kind, "kind"),
        (Agent, "agent"),
        (Owner, "owner"),
        (Uid, "uid"),
        (Loginuid, "loginuid"),
        (User, "user"),
        (LoginUser, "login_user"),
        (Pid, "pid"),
        (Exe, "exe"),
        (Action, "action"),
        (Target, "target"),
        (Decision, "decision"),
        (RuleId, "rule_id"),
        (PolicySnapshot, "policy_snapshot"),
        (Method, "method"),
        (Details, "details"),
        (PrevHash, "prev_hash"),
    ];
    let columns: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
    for (field, name) in fields {
        assert_eq!(columns[field as usize], name, "{field:?}");
    }
}

/// Varied entries with edge values, each sealed in both versions.
fn varied_entries() -> Vec<Entry> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let strings = |pick: u64| -> String {
        match pick {
            0 => String::new(),
            1 => "caf\u{e9} \u{1F600} \u{2028}\u{0}\u{1f}\u{7f}".into(),
            2 => "\"quoted\" \\back\\ /slash/\t\n\r".into(),
            // Two- and three-byte varint lengths.
            3 => "x".repeat(200),
            4 => "\u{e9}".repeat(9000),
            5 => "127.0.0.1:8080/tcp".into(),
            _ => format!("s{pick}"),
        }
    };
    let u32s = [0, 1, 1000, u32::MAX - 1, u32::MAX];
    let i64s = [i64::MIN, -1, 0, 1, 1_767_225_600_000_000_000, i64::MAX];
    let mut entries = Vec::new();
    for n in 0..400u64 {
        let mut details = sample(n).details;
        match n % 5 {
            0 => details.clear(),
            1 => {
                details.insert("max".into(), serde_json::json!(u64::MAX));
                details.insert("min".into(), serde_json::json!(i64::MIN));
                details.insert("\u{e9}\u{1F600}".into(), serde_json::json!("\u{0}\""));
            }
            2 => {
                details.insert("big".into(), serde_json::json!("d".repeat(100_000)));
            }
            3 => {
                let many: serde_json::Map<_, _> = (0..300)
                    .map(|i| (format!("k{i}"), serde_json::json!([i, {"n": -i}])))
                    .collect();
                details.insert("many".into(), serde_json::Value::Object(many));
            }
            _ => {}
        }
        let mut prev = [0u8; 32];
        prev.iter_mut().for_each(|b| *b = next(256) as u8);
        let seq = match n % 4 {
            0 => 1 + next(1000),
            1 => i64::MAX as u64,
            _ => next(i64::MAX as u64) + 1,
        };
        let ts_ns = i64s[next(i64s.len() as u64) as usize];
        let mut string = || strings(next(9));
        let mut e = Entry {
            seq,
            v: 2,
            ts_ns,
            kind: string(),
            agent: string(),
            owner: string(),
            uid: 0,
            loginuid: 0,
            user: string(),
            login_user: string(),
            pid: 0,
            exe: string(),
            action: string(),
            target: string(),
            decision: string(),
            rule_id: string(),
            policy_snapshot: string(),
            method: string(),
            details,
            prev_hash: hex::encode(prev),
            hash: String::new(),
        };
        e.uid = u32s[next(u32s.len() as u64) as usize];
        e.loginuid = u32s[next(u32s.len() as u64) as usize];
        e.pid = u32s[next(u32s.len() as u64) as usize];
        for v in [1, 2] {
            e.v = v;
            e.hash = compute_hash(&e).expect("hash");
            entries.push(e.clone());
        }
    }
    entries
}

/// The writer (`record`, over an `Entry`) and the fast path (over the
/// stored row) write the same bytes, hence the same hashes.
#[test]
fn the_writer_and_the_fast_path_encode_alike() {
    let conn = Connection::open_in_memory().expect("open");
    conn.execute_batch(&format!("CREATE TABLE evidence ({COLUMNS})"))
        .expect("table");
    let entries = varied_entries();
    for e in &entries {
        insert_row(&conn, e);
    }
    let sql = CString::new(format!("SELECT {COLUMNS} FROM evidence ORDER BY rowid")).expect("sql");
    let mut scan = Scan::new(&conn, &sql).expect("prepare");
    let mut hasher = PrefixCachedHasher::default();
    let mut digits = itoa::Buffer::new();
    let mut ours = Vec::new();
    for e in &entries {
        let mut row = scan.next().expect("step").expect("a row per entry");
        let mut prev = [0u8; 32];
        hex::decode_to_slice(&e.prev_hash, &mut prev).expect("hex");
        let prev_hex: [u8; 64] = e.prev_hash.as_bytes().try_into().expect("64");
        ours.clear();
        let domain = match e.v {
            1 => {
                write_row_v1(&mut ours, &mut row, &mut digits, &prev_hex).expect("v1 row");
                DOMAIN_ENTRY_V1
            }
            _ => {
                write_row_v2(&mut ours, &mut row, &prev).expect("v2 row");
                DOMAIN_ENTRY_V2
            }
        };
        let theirs = crate::evidence::record::canonical_bytes(e).expect("encode");
        assert!(ours == theirs, "v{} seq {}: bytes differ", e.v, e.seq);
        let message = [domain, &ours].concat();
        assert_eq!(hex_lower(&hasher.digest(&message)), e.hash.as_bytes());
    }
    assert!(scan.next().expect("step").is_none());
}

/// Plain SQL, as an attacker with write access would use it.
fn tamper(path: &Path, sql: &str) -> Connection {
    let conn = Connection::open(path).expect("attacker connection");
    conn.execute_batch(
        "DROP TRIGGER IF EXISTS evidence_no_update;
             DROP TRIGGER IF EXISTS evidence_no_delete;
             PRAGMA ignore_check_constraints = ON;",
    )
    .expect("disarm");
    conn.execute_batch(sql).expect("tamper");
    conn
}

fn insert_row(conn: &Connection, e: &Entry) {
    insert_raw(conn, e, true);
}

fn row(store: &EvidenceStore, seq: u64) -> Entry {
    store.read_range(seq, seq).expect("read").remove(0)
}

fn broken_at(store: &EvidenceStore) -> (u64, TamperKind) {
    match verify_store(store) {
        Err(VerifyError::Chain(e)) => (e.seq, e.kind),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[test]
fn untouched_chain_verifies() {
    let (_dir, _path, store) = chain();
    let report = verify_store(&store).expect("intact");
    let (head_seq, head_hash) = store.head().expect("head").expect("non-empty");
    assert_eq!(
        report,
        VerifyReport {
            entries: 20,
            head_seq,
            head_hash
        }
    );
    assert_eq!(report.head_seq, 20);
}

#[test]
fn empty_chain_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EvidenceStore::open(&dir.path().join("e.db")).expect("open");
    let report = verify_store(&store).expect("empty is intact");
    assert_eq!(report.entries, 0);
    assert_eq!(report.head_seq, 0);
    assert_eq!(report.head_hash, GENESIS_PREV_HASH);
}

#[test]
fn edited_row_is_a_hash_mismatch() {
    let (_dir, path, store) = chain();
    tamper(
        &path,
        "UPDATE evidence SET decision = 'allow' WHERE seq = 7",
    );
    assert_eq!(broken_at(&store), (7, TamperKind::HashMismatch));
}

#[test]
fn deleted_row_is_a_gap() {
    let (_dir, path, store) = chain();
    tamper(&path, "DELETE FROM evidence WHERE seq = 7");
    assert_eq!(broken_at(&store), (7, TamperKind::Gap));
    tamper(&path, "DELETE FROM evidence WHERE seq <= 3");
    assert_eq!(broken_at(&store), (1, TamperKind::Gap));
}

#[test]
fn swapped_rows_break_the_link() {
    let (_dir, path, store) = chain();
    let cols = COLUMNS.trim_start_matches("seq, ");
    tamper(
        &path,
        &format!(
            "CREATE TEMP TABLE swap AS SELECT * FROM evidence WHERE seq IN (7, 8);
                 UPDATE evidence SET ({cols}) =
                     (SELECT {cols} FROM swap WHERE swap.seq = 15 - evidence.seq)
                 WHERE seq IN (7, 8);"
        ),
    );
    assert_eq!(row(&store, 7).pid, sample(7).pid, "rows really swapped");
    assert_eq!(broken_at(&store), (7, TamperKind::PrevHashMismatch));
}

#[test]
fn inserted_row_breaks_the_link() {
    const SHIFT: &str = "UPDATE evidence SET seq = seq + 1000000 WHERE seq > 7;
                             UPDATE evidence SET seq = seq - 999999 WHERE seq > 1000000;";
    // A forged row with a valid hash of its own but linked to nothing.
    let (_dir, path, store) = chain();
    let forged = Entry::seal(8, "ab".repeat(32), sample(99)).expect("forge");
    insert_row(&tamper(&path, SHIFT), &forged);
    assert_eq!(broken_at(&store), (8, TamperKind::PrevHashMismatch));

    // Linked correctly after row 7: the displaced old row 8 no longer links.
    let (_dir, path, store) = chain();
    let forged = Entry::seal(8, row(&store, 7).hash, sample(99)).expect("forge");
    insert_row(&tamper(&path, SHIFT), &forged);
    assert_eq!(broken_at(&store), (9, TamperKind::PrevHashMismatch));
}

#[test]
fn edited_and_rehashed_row_is_caught_at_the_next_link() {
    let (_dir, path, store) = chain();
    let mut edited = row(&store, 7);
    edited.decision = "allow".into();
    edited.hash = compute_hash(&edited).expect("rehash");
    tamper(&path, "")
        .execute(
            "UPDATE evidence SET decision = ?1, hash = ?2 WHERE seq = 7",
            params![edited.decision, edited.hash],
        )
        .expect("update");
    assert_eq!(broken_at(&store), (8, TamperKind::PrevHashMismatch));
}

#[test]
fn mixed_version_chains_take_the_fast_path_and_a_changed_version_is_caught() {
    let build = || {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warden.db");
        v1_database(&path, 5);
        let mut store = EvidenceStore::open(&path).expect("open migrates");
        let new: Vec<_> = (5..10).map(sample).collect();
        store.append(&new, Durability::Batched).expect("append");
        (dir, path, store)
    };
    let (_dir, _path, store) = build();
    let fast = verify_raw(store.connection(), None, &mut |_, _| {})
        .expect("a mixed chain takes the fast path");
    assert_eq!(
        fast,
        verify_streaming(&store, None, &mut |_| {}).expect("slow path")
    );
    assert_eq!(fast.entries, 10);
    for (seq, v, kind) in [
        (3, 2, TamperKind::HashMismatch),
        (7, 1, TamperKind::HashMismatch),
        (7, 3, TamperKind::Malformed),
    ] {
        let (_dir, path, store) = build();
        let sql = format!("UPDATE evidence SET v = {v} WHERE seq = {seq}");
        tamper(&path, &sql);
        assert!(
            verify_raw(store.connection(), None, &mut |_, _| {}).is_none(),
            "{sql}"
        );
        assert_eq!(broken_at(&store), (seq, kind), "{sql}");
    }
}

#[test]
fn undecodable_rows_are_malformed() {
    for sql in [
        "UPDATE evidence SET details = 'not json' WHERE seq = 7",
        "UPDATE evidence SET details = '{\"rtt\":1.5}' WHERE seq = 7",
        "UPDATE evidence SET details = '[]' WHERE seq = 7",
        "UPDATE evidence SET uid = -1 WHERE seq = 7",
        "UPDATE evidence SET pid = 4294967296 WHERE seq = 7",
        // 2^32 + 1000: the same bytes as 1000 if it were truncated.
        "UPDATE evidence SET uid = 4294968296 WHERE seq = 7",
    ] {
        let (_dir, path, store) = chain();
        tamper(&path, sql);
        assert_eq!(broken_at(&store), (7, TamperKind::Malformed), "{sql}");
    }
    // The earlier problem wins: a gap before an undecodable row.
    let (_dir, path, store) = chain();
    tamper(
        &path,
        "DELETE FROM evidence WHERE seq = 6;
             UPDATE evidence SET details = 'not json' WHERE seq = 7",
    );
    assert_eq!(broken_at(&store), (6, TamperKind::Gap));
}

#[test]
fn error_message_names_seq_and_cause() {
    let (_dir, path, store) = chain();
    tamper(
        &path,
        "UPDATE evidence SET target = '10.0.0.1:443/tcp' WHERE seq = 17",
    );
    let msg = verify_store(&store).expect_err("broken").to_string();
    assert!(
            msg.starts_with(
                "evidence chain broken at seq 17: row content does not match its hash (edited); stored hash "
            ),
            "{msg}"
        );
}

/// CPU time of this thread; wall time is meaningless on a busy machine.
fn thread_cpu() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    std::time::Duration::from_nanos(ns)
}

/// cargo test --release -- --ignored --nocapture append_and_verify_rates
#[test]
#[ignore]
fn append_and_verify_rates() {
    use std::time::{Duration, Instant};
    const TOTAL: u64 = 200_000;
    const BATCH: u64 = 1_000;
    let timed = |f: &mut dyn FnMut()| -> (Duration, Duration) {
        let (wall, cpu) = (Instant::now(), thread_cpu());
        f();
        (wall.elapsed(), thread_cpu() - cpu)
    };
    let rate = |d: Duration| TOTAL as f64 / d.as_secs_f64();

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let mut store = EvidenceStore::open(&path).expect("open");
    let batches: Vec<Vec<_>> = (0..TOTAL / BATCH)
        .map(|b| (b * BATCH..(b + 1) * BATCH).map(sample).collect())
        .collect();

    let (wall, cpu) = timed(&mut || {
        for batch in &batches {
            store.append(batch, Durability::Batched).expect("append");
        }
    });
    println!(
        "append {TOTAL} in batches of {BATCH}: wall {wall:.2?} = {:.0}/s, cpu {cpu:.2?} = {:.0}/s",
        rate(wall),
        rate(cpu)
    );
    drop(store);

    let mut store = None;
    let (wall, _) = timed(&mut || store = Some(EvidenceStore::open(&path).expect("reopen")));
    let store = store.expect("opened");
    let size = std::fs::metadata(&path).expect("stat").len();
    println!(
        "reopen (quick_check) of {:.1} MB: wall {wall:.2?}",
        size as f64 / 1e6
    );

    let mut report = None;
    let (wall, cpu) = timed(&mut || report = Some(verify_store(&store).expect("intact")));
    assert_eq!(report.expect("verified").entries, TOTAL);
    println!(
        "verify {TOTAL}: wall {wall:.2?} = {:.0}/s, cpu {cpu:.2?} = {:.0}/s",
        rate(wall),
        rate(cpu)
    );
}
