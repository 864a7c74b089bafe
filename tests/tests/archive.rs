//! Retention: `warden evidence archive --before T --out DIR` while the
//! daemon runs and agents act: the bundle verifies on its own, the pruned
//! log still verifies (and keeps growing and being checkpointed), and
//! tampering with what is left is still caught.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use serde_json::Value;
use warden_tests::{can_run, stderr, stdout, Files, TestEnv, RUNTIME_FILES};

#[test]
fn archive_while_running_leaves_a_verifiable_log_and_bundle() {
    if !can_run("archive") {
        return;
    }
    let mut env = TestEnv::new("archive");
    let f = Files::new(&env);
    let file = f.write("public/a.txt", "A");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nevidence: {{ allowed: each }}\nrules:\n{RUNTIME_FILES}  - id: public\n    file: {{ prefix: {}/, access: [read] }}\n    decision: allow\n",
            f.path("public")
        ),
    );
    let vars = [
        ("WARDEN_CHECKPOINT_ENTRIES", "50"),
        ("WARDEN_SUMMARY_SECS", "3600"),
    ];
    env.start_daemon_with(&vars);
    env.add_agent("busy", "p.yaml");
    let out = env.probe_as("busy", &["read-n", &file, "400"]);
    assert_eq!(stdout(&out), "ok A", "{}", stderr(&out));
    warden_tests::wait_until("400 entries", || {
        env.evidence()
            .iter()
            .filter(|e| e["target"] == file.as_str())
            .count()
            >= 400
    });
    let checkpoints: Vec<Value> = serde_json::from_str(&env.ok(&["log", "checkpoints"])).unwrap();
    assert!(!checkpoints.is_empty(), "{checkpoints:#?}");
    let before_count = env.evidence().len();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let cut = warden::clock::now_ns();
    let cut_text = format!("{}", cut / 1_000_000_000 + 1);

    let dir = env.state_dir().join("archive-1");
    let dir_text = dir.display().to_string();
    let said = env.ok(&[
        "evidence", "archive", "--before", &cut_text, "--out", &dir_text,
    ]);
    assert!(said.contains("verified, and pruned"), "{said}");
    let left = env.evidence();
    assert!(
        left.len() < before_count,
        "{} of {before_count} left",
        left.len()
    );
    let archive: Vec<&Value> = left.iter().filter(|e| e["kind"] == "archive").collect();
    assert_eq!(archive.len(), 1, "{archive:#?}");
    let through = archive[0]["details"]["pruned_through"].as_u64().unwrap();
    assert_eq!(
        left[0]["seq"].as_u64().unwrap(),
        through + 1,
        "starts after the anchor"
    );
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    let bundle = env.ok(&["evidence", "verify", &dir_text]);
    assert!(
        bundle.contains("valid") || bundle.contains("intact"),
        "{bundle}"
    );

    // The daemon goes on appending and signing after the cut.
    let out = env.probe_as("busy", &["read-n", &file, "120"]);
    assert_eq!(stdout(&out), "ok A", "{}", stderr(&out));
    env.stop_daemon();
    let after: Vec<Value> = serde_json::from_str(&env.ok(&["log", "checkpoints"])).unwrap();
    assert!(after.len() > checkpoints.len(), "checkpoints after the cut");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    env.ok(&["log", "verify", "--completeness"]);

    // Tampering with what is left is caught, naming the row.
    let now = env.evidence();
    assert!(now.len() > 100, "the entries since the cut");
    let victim = now[now.len() / 2]["seq"].as_u64().unwrap();
    let conn = rusqlite::Connection::open(env.database()).unwrap();
    conn.execute_batch("DROP TRIGGER evidence_no_update;")
        .unwrap();
    conn.execute(
        "UPDATE evidence SET target = '/etc/shadow' WHERE seq = ?1",
        [victim],
    )
    .unwrap();
    let out = env.cli(&["log", "verify"]);
    assert!(!out.status.success());
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(err.contains(&format!("seq {victim}")), "{err}");
    // The archive still verifies on its own.
    env.ok(&["evidence", "verify", &dir_text]);
}

#[test]
fn nothing_is_archived_before_the_first_checkpoint() {
    if !can_run("archive") {
        return;
    }
    let mut env = TestEnv::new("archnone");
    env.start_daemon();
    env.stop_daemon();
    let count = env.evidence().len();
    let dir = env.state_dir().join("none");
    let out = env.cli(&[
        "evidence",
        "archive",
        "--before",
        "1000",
        "--out",
        &dir.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing to archive"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.evidence().len(), count, "nothing changed");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}
