//! Windowed bundles: the chain starts at the newest signed checkpoint
//! before the window, verifies offline, and tampering anywhere in what it
//! carries (or with the checkpoint that vouches for the rest) is caught.

use super::*;
use crate::evidence::{checkpoint::HostKey, Durability, NewEntry};

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

/// Entry `i` (seq `i + 1`), at `BASE_NS + i * STEP_NS`; every 10th a denial.
fn entry(i: u64) -> NewEntry {
    let deny = i % 10 == 3;
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
        decision: if deny { "deny" } else { "allow" }.into(),
        rule_id: "r".into(),
        policy_snapshot: "none".into(),
        method: if deny { "deny" } else { "allow" }.into(),
        details: serde_json::Map::new(),
    }
}

/// A log of `n` entries with a signed checkpoint after every 100 (ids 1, 2,
/// ...: checkpoint k signed seq 100k).
fn setup(n: u64) -> (tempfile::TempDir, Paths, HostKey) {
    let dir = tempfile::tempdir().unwrap();
    let p = paths(dir.path());
    std::fs::create_dir_all(&p.state_dir).unwrap();
    let key = HostKey::load_or_create(&p.state_dir).unwrap();
    let mut store = EvidenceStore::open(&p.database()).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<NewEntry> = chunk.iter().map(|i| entry(*i)).collect();
        store.append(&batch, Durability::Batched).unwrap();
        let (size, head) = store.head().unwrap().unwrap();
        let ts = BASE_NS + *chunk.last().unwrap() as i64 * STEP_NS;
        checkpoint::write(store.connection(), &key, size, &head, ts).unwrap();
    }
    (dir, p, key)
}

/// The time of entry `i` (seq `i + 1`).
fn at(i: u64) -> i64 {
    BASE_NS + i as i64 * STEP_NS
}

fn window(from: Option<u64>, to: Option<u64>) -> Window {
    Window {
        from_ns: from.map(at),
        to_ns: to.map(at),
        agent: None,
    }
}

fn lines(dir: &Path) -> Vec<Entry> {
    std::fs::read_to_string(dir.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn problems(dir: &Path) -> String {
    let r = verify(dir, None).unwrap();
    assert!(!r.is_valid(), "must not verify");
    r.problems.join("; ")
}

/// Re-signs an edited manifest with the host key: what only the key's
/// holder can do, to test the checks behind the signature.
fn resign(dir: &Path, key: &HostKey, edit: impl FnOnce(&mut Manifest)) {
    let mut m: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    edit(&mut m);
    let text = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(dir.join("manifest.json"), &text).unwrap();
    std::fs::write(dir.join("manifest.sig"), key.sign(DOMAIN_BUNDLE, &text)).unwrap();
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

#[test]
fn a_window_starts_at_the_newest_checkpoint_before_it_and_verifies() {
    let (dir, p, key) = setup(1000);
    let out = dir.path().join("w");
    // Entries 550..650 are seqs 551..=650: the newest checkpoint before 551
    // signed seq 500 (checkpoint 5).
    let m = export(&p, &out, &window(Some(550), Some(650))).unwrap();
    let start = m.chain_start.clone().unwrap();
    assert_eq!(
        (
            start.base_seq,
            start.checkpoint_id,
            start.reason.as_str(),
            start.window_first_seq,
            start.window_last_seq
        ),
        (500, Some(5), "checkpoint", Some(551), Some(650))
    );
    assert_eq!(m.base.as_ref().map(|b| b.seq), Some(500));
    assert_eq!(m.format, FORMAT_WINDOWED);
    // The checkpoints from the one that signed the base to the window's end.
    let cps: Vec<Checkpoint> =
        serde_json::from_slice(&std::fs::read(out.join("checkpoints.json")).unwrap()).unwrap();
    assert_eq!(
        cps.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![5, 6],
        "checkpoints 5 (the base) and 6 (seq 600, inside)"
    );
    assert_eq!(
        m.entries, 150,
        "the carried prefix 501..=550 and the window"
    );
    let carried = lines(&out);
    assert_eq!((carried[0].seq, carried.last().unwrap().seq), (501, 650));
    let r = verify(&out, Some(&hex::encode(key.verifying_key().as_bytes()))).unwrap();
    assert!(r.is_valid(), "{:?}", r.problems);
    assert_eq!((r.entries, r.signed_size), (150, 600));
    assert_eq!(r.chain_start, Some(start));
    // The host verified what it carries, and says what it did not read.
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("verification.json")).unwrap()).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    let said = v["summary"].as_str().unwrap();
    assert!(
        said.contains("seq 501..=650")
            && said.contains("checkpoint 5")
            && said.contains("not read"),
        "{said}"
    );
    // The report counts the window only, and names the carried prefix.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("entries 501–650 · 100 in this report's window"),
        "report header"
    );
    assert!(
        html.contains("seq 501–550 before them are the carried prefix"),
        "report names the prefix"
    );
    assert!(html.contains("Entries 1–500 are not in this bundle"));

    // Off by one: a window whose first entry is a checkpoint's head starts
    // at the checkpoint before it (the window's first entry is carried).
    let out = dir.path().join("at-head");
    let m = export(&p, &out, &window(Some(499), Some(520))).unwrap();
    let s = m.chain_start.unwrap();
    assert_eq!((s.base_seq, s.window_first_seq), (400, Some(500)));
    assert!(verify(&out, None).unwrap().is_valid());
    // And one just after a head carries no prefix.
    let out = dir.path().join("after-head");
    let m = export(&p, &out, &window(Some(500), None)).unwrap();
    let s = m.chain_start.unwrap();
    assert_eq!(
        (s.base_seq, s.window_first_seq, s.window_last_seq, m.entries),
        (500, Some(501), Some(1000), 500)
    );
    assert!(verify(&out, None).unwrap().is_valid());
}

#[test]
fn tampering_in_the_window_the_prefix_or_the_base_checkpoint_is_caught() {
    let (dir, p, key) = setup(1000);
    let good = dir.path().join("good");
    export(&p, &good, &window(Some(550), Some(650))).unwrap();
    assert!(verify(&good, None).unwrap().is_valid());
    let case = |name: &str, f: &dyn Fn(&Path)| {
        let d = dir.path().join(name);
        copy(&good, &d);
        f(&d);
        problems(&d)
    };
    let edit_line = |d: &Path, seq: u64| {
        let path = d.join("entries.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        let i = seq - 1;
        let edited = text.replacen(
            &format!("\"/data/{i}\""),
            &format!("\"/data/{i}-edited\""),
            1,
        );
        assert_ne!(text, edited);
        std::fs::write(&path, edited).unwrap();
    };

    let e = case("in-window", &|d| edit_line(d, 600));
    assert!(e.contains("seq 600") && e.contains("hashes to"), "{e}");
    let e = case("in-prefix", &|d| edit_line(d, 520));
    assert!(e.contains("seq 520") && e.contains("hashes to"), "{e}");
    // The first carried entry must link to the signed head.
    let e = case("first-dropped", &|d| {
        let path = d.join("entries.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        let rest: Vec<&str> = text.lines().skip(1).collect();
        std::fs::write(&path, rest.join("\n") + "\n").unwrap();
    });
    assert!(e.contains("seq 501"), "{e}");

    // The base checkpoint's signature.
    let e = case("base-signature", &|d| {
        let path = d.join("checkpoints.json");
        let mut cps: Vec<Checkpoint> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let c = cps.iter_mut().find(|c| c.id == 5).unwrap();
        let flipped = if c.signature.starts_with('0') {
            "1"
        } else {
            "0"
        };
        c.signature.replace_range(0..1, flipped);
        std::fs::write(&path, serde_json::to_vec_pretty(&cps).unwrap()).unwrap();
    });
    assert!(
        e.contains("checkpoint 5") && e.contains("signature does not verify"),
        "{e}"
    );
    // The base checkpoint removed, or one after it.
    let drop_checkpoint = |id: u64| {
        let key = &key;
        move |d: &Path| {
            let path = d.join("checkpoints.json");
            let mut cps: Vec<Checkpoint> =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            cps.retain(|c| c.id != id);
            std::fs::write(&path, serde_json::to_vec_pretty(&cps).unwrap()).unwrap();
            resign(d, key, |m| {
                let sha = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
                m.files.insert("checkpoints.json".into(), sha);
            });
        }
    };
    let e = case("base-removed", &drop_checkpoint(5));
    assert!(
        e.contains("no signed checkpoint has that head") || e.contains("names checkpoint 5"),
        "{e}"
    );
    // Checkpoint 6 replaced by a copy of 5: a replay.
    let e = case("inside-replayed", &|d: &Path| {
        let path = d.join("checkpoints.json");
        let mut cps: Vec<Checkpoint> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        cps[1] = cps[0].clone();
        std::fs::write(&path, serde_json::to_vec_pretty(&cps).unwrap()).unwrap();
    });
    assert!(
        e.contains("checkpoint 5") && e.contains("expected checkpoint id 6"),
        "{e}"
    );
    // The base's head moved to another hash (a forged starting point).
    let e = case("base-head", &|d| {
        resign(d, &key, |m| {
            let b = m.base.as_mut().unwrap();
            b.hash = "f".repeat(64);
            m.chain_start.as_mut().unwrap().base_hash = "f".repeat(64);
        });
    });
    assert!(e.contains("seq 501"), "{e}");
    // A manifest that moves the start without the key.
    let e = case("base-unsigned", &|d| {
        let path = d.join("manifest.json");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("\"reason\": \"checkpoint\"", "\"reason\": \"archive\""),
        )
        .unwrap();
    });
    assert!(e.contains("manifest.sig does not verify"), "{e}");
    // Window bounds, behind the signature: a start that skipped part of the
    // window, or a chain that stops before the window's end.
    let e = case("first-misplaced", &|d| {
        resign(d, &key, |m| {
            m.chain_start.as_mut().unwrap().window_first_seq = Some(560);
        });
    });
    assert!(
        e.contains("seq 551 is inside the window") && e.contains("carried prefix"),
        "{e}"
    );
    let e = case("last-misplaced", &|d| {
        resign(d, &key, |m| {
            m.chain_start.as_mut().unwrap().window_last_seq = Some(700);
        });
    });
    assert!(
        e.contains("not at the window's last entry (seq 700)"),
        "{e}"
    );
    let e = case("wrong-checkpoint", &|d| {
        resign(d, &key, |m| {
            m.chain_start.as_mut().unwrap().checkpoint_id = Some(4);
        });
    });
    assert!(e.contains("names checkpoint 4"), "{e}");
}

#[test]
fn a_window_before_the_first_checkpoint_starts_at_seq_1() {
    let (dir, p, _key) = setup(1000);
    let out = dir.path().join("early");
    let m = export(&p, &out, &window(Some(50), Some(80))).unwrap();
    let s = m.chain_start.clone().unwrap();
    assert_eq!(
        (s.base_seq, s.checkpoint_id, s.reason.as_str()),
        (0, None, "log-start")
    );
    assert!(m.base.is_none());
    assert_eq!(m.entries, 80, "seq 1..=80");
    assert_eq!(lines(&out)[0].seq, 1);
    let r = verify(&out, None).unwrap();
    assert!(r.is_valid(), "{:?}", r.problems);

    // Only --to: the window starts at the log's start.
    let out = dir.path().join("to-only");
    let m = export(&p, &out, &window(None, Some(250))).unwrap();
    assert_eq!((m.entries, m.chain_start.unwrap().base_seq), (250, 0));
    assert!(verify(&out, None).unwrap().is_valid());

    // An empty window: the chain ends at the last entry before it, from
    // the checkpoint before that.
    let out = dir.path().join("empty");
    let w = Window {
        from_ns: Some(at(700) + 1),
        to_ns: Some(at(700) + 2),
        agent: None,
    };
    let m = export(&p, &out, &w).unwrap();
    let s = m.chain_start.unwrap();
    assert_eq!(
        (s.base_seq, s.window_first_seq, m.entries),
        (700, None, 1),
        "seq 701, the last entry before the window"
    );
    assert!(verify(&out, None).unwrap().is_valid());
}

#[test]
fn full_chain_and_unwindowed_exports_carry_everything() {
    let (dir, p, _key) = setup(1000);
    let out = dir.path().join("full");
    let m = export_span(&p, &out, &window(Some(550), Some(650)), ChainSpan::Full).unwrap();
    assert!(m.chain_start.is_none() && m.base.is_none());
    assert_eq!(m.entries, 650, "seq 1 to the window's end");
    assert_eq!(lines(&out)[0].seq, 1);
    let r = verify(&out, None).unwrap();
    assert!(r.is_valid(), "{:?}", r.problems);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("verification.json")).unwrap()).unwrap();
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("chain intact: 1000 entries"),
        "the whole log verified: {v}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("entries 1–650 · 100 in this report's window"));

    let out = dir.path().join("all");
    let m = export(&p, &out, &Window::default()).unwrap();
    assert!(m.chain_start.is_none());
    assert_eq!(m.entries, 1000);
    assert!(verify(&out, None).unwrap().is_valid());
}

#[test]
fn a_window_after_an_archive_starts_at_a_checkpoint_not_before_the_base() {
    let (dir, p, _key) = setup(1000);
    crate::export::archive::archive(&p, at(450), &dir.path().join("archive")).unwrap();
    // The stored chain starts after seq 400 (checkpoint 4).
    let out = dir.path().join("w");
    let m = export(&p, &out, &window(Some(420), Some(430))).unwrap();
    let s = m.chain_start.unwrap();
    assert_eq!((s.base_seq, s.checkpoint_id), (400, Some(4)));
    assert_eq!(m.entries, 30);
    let r = verify(&out, None).unwrap();
    assert!(r.is_valid(), "{:?}", r.problems);
    let out = dir.path().join("later");
    let m = export(&p, &out, &window(Some(820), None)).unwrap();
    assert_eq!(m.chain_start.unwrap().base_seq, 800);
    assert!(verify(&out, None).unwrap().is_valid());
}

#[test]
fn the_host_verification_of_a_window_covers_what_it_carries() {
    let (dir, p, _key) = setup(1000);
    // An edit in the carried prefix, made past the append-only guards.
    let conn = rusqlite::Connection::open(p.database()).unwrap();
    conn.execute_batch("DROP TRIGGER evidence_no_update;")
        .unwrap();
    conn.execute("UPDATE evidence SET target = 'x' WHERE seq = 520", [])
        .unwrap();
    drop(conn);
    let out = dir.path().join("w");
    export(&p, &out, &window(Some(550), Some(650))).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("verification.json")).unwrap()).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["problem"].as_str().unwrap().contains("seq 520"), "{v}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Verification FAILED on the host at export"));
    assert!(problems(&out).contains("seq 520"));

    // An edit before the base is outside what the window's bundle carries:
    // it verifies, and says the rest of the log was not read.
    let (dir, p, _key) = setup(1000);
    let conn = rusqlite::Connection::open(p.database()).unwrap();
    conn.execute_batch("DROP TRIGGER evidence_no_update;")
        .unwrap();
    conn.execute("UPDATE evidence SET target = 'x' WHERE seq = 100", [])
        .unwrap();
    drop(conn);
    let out = dir.path().join("w");
    export(&p, &out, &window(Some(550), Some(650))).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("verification.json")).unwrap()).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert!(v["summary"].as_str().unwrap().contains("not read"), "{v}");
    assert!(verify(&out, None).unwrap().is_valid());
    // --full-chain reads it, and says so.
    let full = dir.path().join("full");
    export_span(&p, &full, &window(Some(550), Some(650)), ChainSpan::Full).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(full.join("verification.json")).unwrap()).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["problem"].as_str().unwrap().contains("seq 100"), "{v}");
}
