use super::*;
use crate::evidence::{checkpoint::HostKey, verify_store_signed, Durability, NewEntry};

const BASE_NS: i64 = 1_700_000_000_000_000_000;
const STEP_NS: i64 = 10_000_000;

fn paths(dir: &Path) -> Paths {
    Paths {
        state_dir: dir.join("state"),
        policy_dir: dir.join("policies"),
        socket: dir.join("warden.sock"),
        cgroup_parent: "unused".into(),
        pin_dir: dir.join("pins"),
    }
}

fn entry(i: u64) -> NewEntry {
    NewEntry {
        ts_ns: BASE_NS + i as i64 * STEP_NS,
        kind: "decision".into(),
        agent: "a".into(),
        owner: "o".into(),
        uid: 0,
        loginuid: 0,
        user: "root".into(),
        login_user: "root".into(),
        pid: 7,
        exe: "/bin/x".into(),
        action: "open".into(),
        target: format!("/data/{i}"),
        decision: "allow".into(),
        rule_id: "r".into(),
        policy_snapshot: "none".into(),
        method: "allow".into(),
        details: serde_json::Map::new(),
    }
}

/// Appends entries `from..to` (their number in the log's history, which
/// sets their time) with a signed checkpoint after every 100.
fn grow(paths: &Paths, key: &HostKey, from: u64, to: u64) {
    let mut store = EvidenceStore::open(&paths.database()).unwrap();
    for chunk in (from..to).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<NewEntry> = chunk.iter().map(|i| entry(*i)).collect();
        store.append(&batch, Durability::Batched).unwrap();
        let (size, head) = store.head().unwrap().unwrap();
        let ts = BASE_NS + *chunk.last().unwrap() as i64 * STEP_NS;
        checkpoint::write(store.connection(), key, size, &head, ts).unwrap();
    }
}

fn setup(n: u64) -> (tempfile::TempDir, Paths, HostKey) {
    let dir = tempfile::tempdir().unwrap();
    let p = paths(dir.path());
    std::fs::create_dir_all(&p.state_dir).unwrap();
    let key = HostKey::load_or_create(&p.state_dir).unwrap();
    grow(&p, &key, 0, n);
    (dir, p, key)
}

fn verify(p: &Paths, key: &HostKey) -> Result<u64, String> {
    let store = EvidenceStore::open(&p.database()).unwrap();
    verify_store_signed(&store, &key.verifying_key(), &[])
        .map(|(r, _)| r.head_seq)
        .map_err(|e| crate::error_chain(&e))
}

/// A connection as a tamperer has it: the append-only guards dropped.
fn tamper(p: &Paths) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(p.database()).unwrap();
    conn.execute_batch("DROP TRIGGER evidence_no_update; DROP TRIGGER evidence_no_delete;")
        .unwrap();
    conn
}

fn before(i: u64) -> i64 {
    BASE_NS + i as i64 * STEP_NS
}

#[test]
fn archive_prunes_at_a_checkpoint_and_both_parts_verify() {
    let (dir, p, key) = setup(1000);
    let out = dir.path().join("archive-1");
    // Entry 550 is seq 551: the newest checkpoint before it signed 500.
    let done = archive(&p, before(550), &out).unwrap();
    assert_eq!(
        (done.plan.base, done.plan.through, done.entries),
        (0, 500, 500)
    );
    let store = EvidenceStore::open(&p.database()).unwrap();
    assert_eq!(
        store.count().unwrap(),
        501,
        "500 left and the archive entry"
    );
    let base = store.base().unwrap().unwrap();
    assert_eq!(base.seq, 500);
    assert_eq!(done.entry.kind, "archive");
    assert_eq!(done.entry.seq, 1001);
    drop(store);
    assert_eq!(verify(&p, &key), Ok(1001));
    let bundle = bundle::verify(&out, None).unwrap();
    assert!(bundle.is_valid(), "{:?}", bundle.problems);
    assert_eq!(bundle.entries, 500);

    // More entries, and a second archive: its bundle starts at the base.
    grow(&p, &key, 1000, 1200);
    let out2 = dir.path().join("archive-2");
    let done = archive(&p, before(850), &out2).unwrap();
    assert_eq!((done.plan.base, done.plan.through), (500, 800));
    let bundle = bundle::verify(&out2, None).unwrap();
    assert!(bundle.is_valid(), "{:?}", bundle.problems);
    assert_eq!(bundle.entries, 300);
    assert!(verify(&p, &key).is_ok(), "{:?}", verify(&p, &key));
    // Nothing left before that time beyond the base.
    assert!(matches!(
        archive(&p, before(850), &dir.path().join("archive-3")),
        Err(ArchiveError::Nothing { base: 800 })
    ));
}

#[test]
fn tampering_with_the_remainder_is_still_detected() {
    let (dir, p, key) = setup(600);
    archive(&p, before(450), &dir.path().join("a")).unwrap();
    let conn = tamper(&p);
    conn.execute("UPDATE evidence SET target = 'x' WHERE seq = 450", [])
        .unwrap();
    let e = verify(&p, &key).unwrap_err();
    assert!(e.contains("seq 450") && e.contains("edited"), "{e}");
    // (Opening the store recreated the guards.)
    let conn = tamper(&p);
    conn.execute(
        "UPDATE evidence SET target = '/data/449' WHERE seq = 450",
        [],
    )
    .unwrap();
    assert!(verify(&p, &key).is_ok());

    // Deleting the first remaining row is a gap.
    let conn = tamper(&p);
    conn.execute("DELETE FROM evidence WHERE seq = 401", [])
        .unwrap();
    let e = verify(&p, &key).unwrap_err();
    assert!(e.contains("seq 401") && e.contains("missing"), "{e}");
}

#[test]
fn a_prefix_deleted_without_its_archive_entry_is_a_gap() {
    let (dir, p, key) = setup(600);
    archive(&p, before(450), &dir.path().join("a")).unwrap();
    let conn = tamper(&p);
    conn.execute("DELETE FROM evidence WHERE kind = 'archive'", [])
        .unwrap();
    let e = verify(&p, &key).unwrap_err();
    assert!(e.contains("seq 1") && e.contains("missing"), "{e}");
}

#[test]
fn a_corrupt_bundle_is_refused_before_anything_is_pruned() {
    let (dir, p, key) = setup(600);
    let out = dir.path().join("bad");
    let store = EvidenceStore::open(&p.database()).unwrap();
    let plan = plan(&store, before(450)).unwrap();
    drop(store);
    bundle::export_through(&p, &out, &Window::default(), Some(plan.through)).unwrap();
    let jsonl = out.join("entries.jsonl");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    std::fs::write(&jsonl, text.replacen("/data/17\"", "/data/71\"", 1)).unwrap();
    let e = prune_verified(&p, &plan, &out, before(450)).unwrap_err();
    assert!(matches!(e, ArchiveError::BundleInvalid { .. }), "{e}");
    assert!(e.to_string().contains("nothing was pruned"), "{e}");
    let store = EvidenceStore::open(&p.database()).unwrap();
    assert_eq!(store.count().unwrap(), 600, "nothing pruned, nothing added");
    assert_eq!(store.base().unwrap(), None);
    drop(store);
    assert!(verify(&p, &key).is_ok());

    // A bundle that verifies but ends elsewhere is refused too.
    let other = dir.path().join("short");
    bundle::export_through(&p, &other, &Window::default(), Some(plan.through - 100)).unwrap();
    let e = prune_verified(&p, &plan, &other, before(450)).unwrap_err();
    assert!(matches!(e, ArchiveError::BundleMismatch { .. }), "{e}");
}
