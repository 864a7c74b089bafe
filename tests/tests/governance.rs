//! Governed change (issue #19): `warden policy shadow` replays an agent's
//! recorded decisions against a candidate policy before it goes live.
//!
//! The agent acts for real (loopback connects decided by the kernel), the
//! daemon records them (repeats of an allowed one as a summary), and the
//! replay's counts are checked against what was worked out by hand.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use serde_json::Value;
use warden_tests::{can_run, stderr, stdout, Listener, TestEnv};

/// One burst is never split by a periodic sweep; the stop sweeps.
const LONG_SWEEP: [(&str, &str); 1] = [("WARDEN_SUMMARY_SECS", "3600")];

#[test]
fn shadow_replay_counts_match_a_hand_computed_expectation() {
    if !can_run("governance") {
        return;
    }
    let mut env = TestEnv::new("shadow");
    let (api, db, admin, other) = (
        Listener::tcp4(),
        Listener::tcp4(),
        Listener::tcp4(),
        Listener::tcp4(),
    );
    env.write_policy(
        "bot.yaml",
        &format!(
            "version: 1
rules:
  - id: api
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
  - id: db
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
  - id: admin
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: deny
",
            api.port, db.port, admin.port
        ),
    );
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("bot", "bot.yaml");

    let run = |to: u16, n: &str| {
        let out = env.probe_as("bot", &["connect-n", &format!("127.0.0.1:{to}"), n]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // What the kernel decided, under the enforced policy.
    assert_eq!(run(api.port, "6"), "ok=6 eperm=0");
    assert_eq!(run(db.port, "3"), "ok=3 eperm=0");
    assert_eq!(run(admin.port, "2"), "ok=0 eperm=2");
    assert_eq!(run(other.port, "4"), "ok=0 eperm=4");
    // The firsts must be in the log before the stop's sweep looks for them.
    for port in [api.port, db.port] {
        env.wait_for_evidence("the first allowed connect", |e| {
            e["kind"] == "decision" && e["target"] == format!("127.0.0.1:{port}/tcp").as_str()
        });
    }
    env.stop_daemon();
    let summaries: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "summary" && e["agent"] == "bot")
        .collect();
    assert_eq!(
        summaries.len(),
        2,
        "one summary per allowed destination: {summaries:#?}"
    );

    let candidate = env.dir.path().join("candidate.yaml");
    std::fs::write(
        &candidate,
        format!(
            "version: 1
rules:
  - id: api
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
  - id: db-reviewed
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: hold
  - id: admin-opened
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
",
            api.port, db.port, admin.port
        ),
    )
    .unwrap();
    let out = env.ok(&[
        "policy",
        "shadow",
        "bot",
        candidate.to_str().unwrap(),
        "--json",
    ]);
    let r: Value = serde_json::from_str(&out).unwrap();
    // By hand: api 6 allow -> allow (unchanged); db 3 allow -> hold
    // (db-reviewed); admin 2 deny -> allow (admin-opened); the other port
    // 4 deny -> deny (default) unchanged. 1 + 1 summary + 1 + 1 summary +
    // 2 + 4 entries.
    assert_eq!(r["entries"], 10, "{r:#}");
    assert_eq!(r["actions"], 15, "{r:#}");
    assert_eq!(r["unchanged"], 10, "{r:#}");
    let groups: Vec<(String, String, u64, u64)> = r["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["change"].as_str().unwrap().to_string(),
                g["rule"].as_str().unwrap().to_string(),
                g["actions"].as_u64().unwrap(),
                g["entries"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("would-hold".into(), "db-reviewed".into(), 3, 2),
            ("would-allow".into(), "admin-opened".into(), 2, 2),
        ],
        "{r:#}"
    );
    let example = &r["differences"][1]["examples"][0];
    assert_eq!(example["recorded"], "deny by admin", "{r:#}");
    assert_eq!(
        example["target"],
        format!("127.0.0.1:{}/tcp", admin.port).as_str()
    );

    // The text form names the same, and --since after everything replays
    // nothing.
    let text = env.ok(&["policy", "shadow", "bot", candidate.to_str().unwrap()]);
    assert!(text.contains("would-hold 3"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("would-allow") && l.contains("admin-opened")),
        "{text}"
    );
    let none = env.ok(&[
        "policy",
        "shadow",
        "bot",
        candidate.to_str().unwrap(),
        "--since",
        "4000000000",
        "--json",
    ]);
    let none: Value = serde_json::from_str(&none).unwrap();
    assert_eq!(none["entries"], 0, "{none:#}");

    // A broken candidate is a clear error naming the file and changes nothing.
    std::fs::write(
        &candidate,
        "version: 1\nrules:\n  - id: x\n    connect: { to: 10.0.0.1/8 }\n    decision: allow\n",
    )
    .unwrap();
    let out = env.cli(&["policy", "shadow", "bot", candidate.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("candidate.yaml"), "{}", stderr(&out));
}
