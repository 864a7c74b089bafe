//! The evidence log against an attacker with write access to the database
//! file but not the host's signing key.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use rusqlite::{params, Connection};
use warden::evidence::{Entry, EvidenceStore, Filter};
use warden_tests::{can_run, stderr, Listener, TestEnv};

/// A daemon that signs a checkpoint every 3 entries, some agent activity,
/// then a clean stop (which signs a final checkpoint).
fn log_with_checkpoints(name: &str) -> TestEnv {
    let l = Listener::tcp4();
    // Inherited by the daemon this test starts (tests run one at a time).
    std::env::set_var("WARDEN_CHECKPOINT_ENTRIES", "3");
    let mut env = TestEnv::new(name);
    env.write_policy(
        "p.yaml",
        &format!("version: 1\nrules:\n  - id: api\n    connect: {{ to: 127.0.0.1, ports: [{}] }}\n    decision: allow\n", l.port),
    );
    env.start_daemon();
    env.add_agent("signed", "p.yaml");
    for _ in 0..4 {
        env.probe_as("signed", &["connect", &format!("127.0.0.1:{}", l.port)]);
    }
    env.wait_for_evidence("4 decisions", |_| {
        env.evidence()
            .iter()
            .filter(|e| e["kind"] == "decision")
            .count()
            >= 4
    });
    env.stop_daemon();
    std::env::remove_var("WARDEN_CHECKPOINT_ENTRIES");
    env
}

fn open(env: &TestEnv) -> Connection {
    let conn = Connection::open(env.database()).unwrap();
    // The guard triggers stop accidents, not an attacker.
    conn.execute_batch(
        "DROP TRIGGER IF EXISTS evidence_no_update; DROP TRIGGER IF EXISTS evidence_no_delete;",
    )
    .unwrap();
    conn
}

fn verify_fails(env: &TestEnv, args: &[&str], expect: &str) {
    let mut all = vec!["log", "verify"];
    all.extend_from_slice(args);
    let out = env.cli(&all);
    assert!(!out.status.success(), "verify must fail ({expect})");
    assert!(
        stderr(&out).contains(expect),
        "expected {expect:?} in: {}",
        stderr(&out)
    );
}

#[test]
fn an_intact_log_verifies_with_its_checkpoints() {
    if !can_run("evidence_intact") {
        return;
    }
    let env = log_with_checkpoints("evok");
    let out = env.ok(&["log", "verify"]);
    assert!(
        out.contains("chain intact") && out.contains("checkpoints valid"),
        "{out}"
    );
    let cps: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["log", "checkpoints"])).unwrap();
    // Signed after every group commit that brings 3 or more unsigned
    // entries, and at shutdown: the last one covers the daemon's stop.
    assert!(
        cps.len() >= 2,
        "periodic and shutdown checkpoints: {cps:#?}"
    );
    let stop = env
        .evidence()
        .into_iter()
        .rfind(|e| e["kind"] == "daemon_stop")
        .unwrap();
    assert!(
        cps.last().unwrap()["size"].as_u64() >= stop["seq"].as_u64(),
        "{cps:#?}"
    );
    // Every checkpoint is also in the chain, for copies kept elsewhere.
    let in_chain = env
        .evidence()
        .iter()
        .filter(|e| e["kind"] == "checkpoint")
        .count();
    assert_eq!(in_chain, cps.len());
}

#[test]
fn truncating_the_tail_is_caught() {
    if !can_run("evidence_truncate") {
        return;
    }
    let env = log_with_checkpoints("evtrunc");
    let conn = open(&env);
    // Drop the newest entries, but not far enough to lose the checkpoint.
    let cp_size: i64 = conn
        .query_row("SELECT max(size) FROM checkpoints", [], |r| r.get(0))
        .unwrap();
    conn.execute("DELETE FROM evidence WHERE seq >= ?1", [cp_size - 1])
        .unwrap();
    drop(conn);
    verify_fails(&env, &[], "truncated");
}

#[test]
fn rewriting_history_with_recomputed_hashes_is_caught() {
    if !can_run("evidence_rewrite") {
        return;
    }
    let env = log_with_checkpoints("evrewrite");
    // Change a denial's verdict and re-seal every entry from there on, so
    // the hash chain itself is perfect again.
    let entries: Vec<Entry> = EvidenceStore::open(&env.database())
        .unwrap()
        .query(&Filter::default())
        .unwrap();
    let victim = entries.iter().position(|e| e.kind == "decision").unwrap();
    let conn = open(&env);
    let mut prev = entries[victim - 1].hash.clone();
    for (i, e) in entries.iter().enumerate().skip(victim) {
        let mut new = e.clone();
        if i == victim {
            new.target = "10.9.9.9:443/tcp".into();
        }
        let fields: warden::evidence::NewEntry =
            serde_json::from_value(serde_json::to_value(&new).unwrap()).unwrap();
        let sealed = Entry::seal(e.seq, prev.clone(), fields).unwrap();
        conn.execute(
            "UPDATE evidence SET target = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?1",
            params![sealed.seq, sealed.target, sealed.prev_hash, sealed.hash],
        )
        .unwrap();
        prev = sealed.hash;
    }
    drop(conn);
    verify_fails(&env, &[], "history was rewritten");
}

#[test]
fn a_consistent_rollback_is_caught_by_an_anchor_kept_elsewhere() {
    if !can_run("evidence_anchor") {
        return;
    }
    let env = log_with_checkpoints("evanchor");
    // The auditor (or a SIEM) kept the checkpoints from an earlier look.
    let saved = env.dir.path().join("anchor.json");
    std::fs::write(&saved, env.ok(&["log", "checkpoints"])).unwrap();

    // The attacker rolls everything back to the first checkpoint: entries,
    // checkpoints, all consistent. Locally this cannot be told apart...
    let conn = open(&env);
    let (first_size,): (i64,) = conn
        .query_row("SELECT size FROM checkpoints WHERE id = 1", [], |r| {
            Ok((r.get(0)?,))
        })
        .unwrap();
    conn.execute("DELETE FROM checkpoints WHERE id > 1", [])
        .unwrap();
    conn.execute("DELETE FROM evidence WHERE seq > ?1", [first_size])
        .unwrap();
    drop(conn);
    env.ok(&["log", "verify"]);
    // ...but not against the anchor.
    verify_fails(&env, &["--anchor", saved.to_str().unwrap()], "truncated");

    // And a forged anchor is rejected, not trusted.
    let mut forged: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    forged[0]["size"] = serde_json::json!(1);
    std::fs::write(&saved, serde_json::to_string(&forged).unwrap()).unwrap();
    verify_fails(
        &env,
        &["--anchor", saved.to_str().unwrap()],
        "signature does not verify",
    );
}

#[test]
fn the_log_streams_to_a_siem_as_ocsf_and_follows_new_entries() {
    if !can_run("evidence_tail") {
        return;
    }
    let env = log_with_checkpoints("evtail");
    let all = env.evidence();
    let out = env.ok(&[
        "log",
        "tail",
        "--after",
        "0",
        "--no-follow",
        "--format",
        "ocsf",
    ]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), all.len(), "one OCSF event per entry");
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["metadata"]["sequence"], i as u64 + 1);
        assert_eq!(
            ev["unmapped"]["warden"]["hash"], all[i]["hash"],
            "the SIEM copy carries the chain"
        );
    }
    let connect = events
        .iter()
        .find(|e| e["unmapped"]["warden"]["action"] == "connect4" || e["class_uid"] == 4001)
        .unwrap();
    assert_eq!(connect["class_uid"], 4001);
    assert_eq!(connect["disposition"], "Allowed");
    assert!(
        events
            .iter()
            .any(|e| e["unmapped"]["warden"]["kind"] == "checkpoint"),
        "checkpoints are streamed too"
    );

    // Following: a new entry appears on the stream as it is appended.
    let mut tail = env
        .warden()
        .args(["log", "tail", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    env.write_policy("q.yaml", "version: 1\nrules: []\n");
    env.ok(&[
        "agent",
        "add",
        "late",
        "--owner",
        "late@example.com",
        "--policy",
        "q.yaml",
    ]);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tail.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    // SAFETY: kill(2) on the tail process this test started.
    unsafe { libc::kill(tail.id() as i32, libc::SIGTERM) };
    let _ = tail.wait();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["kind"], "agent_register");
    assert_eq!(entry["agent"], "late");
}

/// An agent allowed to send UDP to a local port, whose 80,000 sends hit a
/// ring buffer nobody drains (the daemon is SIGSTOPped meanwhile). Returns
/// the environment and what the probe saw: (sent, refused with EPERM).
fn flood_with_the_daemon_stopped(
    name: &str,
    agent: &str,
    on_evidence_loss: &str,
) -> (TestEnv, u64, u64) {
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let mut env = TestEnv::new(name);
    env.write_policy(
        "p.yaml",
        // `allowed: each`: the flood must reach the ring buffer one record
        // per send (repeats would otherwise be counted in the kernel).
        &format!("version: 1\non_evidence_loss: {on_evidence_loss}\nevidence: {{ allowed: each }}\nrules:\n  - id: udp\n    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: udp }}\n    decision: allow\n"),
    );
    // The 4 MiB ring buffer these figures assume (the host's default may
    // be larger), and no per-agent share: this is about a full ring buffer
    // (busy.rs tests the share).
    env.start_daemon_with(&[
        ("WARDEN_EVENTS_BYTES", "4194304"),
        ("WARDEN_AGENT_RECORDS_PER_SEC", "0"),
    ]);
    env.add_agent(agent, "p.yaml");
    let pid = env.daemon_pid().unwrap() as i32;
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let out = std::process::Command::new(warden_tests::probe_bin())
        .args([
            "join",
            env.agent_cgroup(agent).to_str().unwrap(),
            "udp-flood",
            &format!("127.0.0.1:{port}"),
            "80000",
        ])
        .output()
        .unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let field = |name: &str| -> u64 {
        said.split(&format!("{name}="))
            .nth(1)
            .and_then(|n| n.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("probe output lacks {name}: {said}"))
    };
    (env, field("sent"), field("eperm"))
}

/// Decisions the log holds for `agent`, once the reader has caught up with
/// `expected` of them (the backlog drains after the gap entry is written).
fn recorded_decisions(env: &TestEnv, agent: &str, expected: u64) -> u64 {
    let count = || {
        env.evidence()
            .iter()
            .filter(|e| e["kind"] == "decision" && e["agent"] == agent)
            .count() as u64
    };
    // The backlog is tens of thousands of entries, written by a debug build
    // on a machine that may be busy: wait while it is being written, and fail
    // only when 15 s pass with no new entry.
    let mut seen = count();
    let mut last_progress = std::time::Instant::now();
    while seen < expected {
        assert!(
            last_progress.elapsed() < std::time::Duration::from_secs(15),
            "the reader stopped draining the backlog at {seen} of {expected} decisions"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
        let now = count();
        if now > seen {
            last_progress = std::time::Instant::now();
        }
        seen = now;
    }
    seen
}

#[test]
fn a_full_ring_buffer_refuses_actions_and_the_log_counts_them() {
    if !can_run("evidence_overflow") {
        return;
    }
    let (env, sent, eperm) = flood_with_the_daemon_stopped("evoverflow", "flood", "deny");
    assert!(
        eperm > 0,
        "fail-closed: allowed sends were refused once nothing could record them"
    );
    assert!(
        sent > 30_000,
        "the buffer held tens of thousands first ({sent})"
    );
    let gap = env.wait_for_evidence("lost-events gap", |e| {
        e["kind"] == "gap" && e["action"] == "evidence.lost"
    });
    assert_eq!(
        gap["details"]["lost"], eperm,
        "the gap counts exactly the refused actions: {gap}"
    );
    assert_eq!(gap["agent"], "flood", "the gap names the agent: {gap}");
    assert_ne!(
        gap["owner"], "system",
        "the gap names the agent's owner: {gap}"
    );
    assert_eq!(
        recorded_decisions(&env, "flood", sent),
        sent,
        "every allowed send is in the log"
    );
}

#[test]
fn on_evidence_loss_allow_lets_allowed_actions_through_and_counts_them() {
    if !can_run("evidence_overflow_open") {
        return;
    }
    let (env, sent, eperm) = flood_with_the_daemon_stopped("evfailopen", "openflood", "allow");
    assert_eq!(eperm, 0, "fail-open: no send was refused");
    assert!(sent > 30_000, "the sends went ahead ({sent})");
    let gap = env.wait_for_evidence("allowed-unrecorded gap", |e| {
        e["kind"] == "gap" && e["action"] == "evidence.lost" && e["agent"] == "openflood"
    });
    assert_eq!(gap["details"]["lost"], 0, "nothing was refused: {gap}");
    let unrecorded = gap["details"]["allowed_unrecorded"].as_u64().unwrap();
    assert!(unrecorded > 0, "the ring buffer overflowed: {gap}");
    assert_eq!(
        recorded_decisions(&env, "openflood", sent - unrecorded) + unrecorded,
        sent,
        "the gap counts exactly the unrecorded sends: {gap}"
    );
}
