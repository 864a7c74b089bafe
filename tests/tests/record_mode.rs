//! `mode: record` (issue #14 §3): an agent whose policy says so is never
//! refused, killed or held; every decision is recorded as the policy would
//! have made it (`would-deny`, `would-hold`, method `record`). Then
//! `warden policy suggest` turns that record into a policy under which the
//! same work runs with no denial.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use serde_json::Value;
use warden_tests::{approvals, can_run, killed, stderr, stdout, Files, Listener, TestEnv};

fn denials(env: &TestEnv, agent: &str) -> Vec<Value> {
    env.evidence()
        .into_iter()
        .filter(|e| {
            e["kind"] == "decision"
                && e["agent"] == agent
                && (e["decision"] == "deny" || e["decision"] == "hold")
        })
        .collect()
}

#[test]
fn record_mode_allows_everything_and_records_what_would_be_refused() {
    if !can_run("record_mode") {
        return;
    }
    let mut env = TestEnv::new("record");
    let f = Files::new(&env);
    let secret = f.write("other/secret.txt", "SECRET");
    let held = Listener::tcp4();
    let unlisted = Listener::tcp4();
    env.write_policy(
        "rec.yaml",
        &format!(
            "version: 1
mode: record
rules:
  - id: held-port
    connect: {{ to: 127.0.0.1, ports: [{held}] }}
    decision: hold
  - id: no-secret
    file: {{ path: {secret}, access: [read] }}
    decision: deny
",
            held = held.port,
        ),
    );
    env.start_daemon();
    env.add_agent("rec", "rec.yaml");
    let status = env.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("rec") && l.contains("RECORD-ONLY")),
        "{status}"
    );

    // Each of these is refused or held in enforce mode; here each goes on.
    let out = env.probe_as("rec", &["read", &secret]);
    assert_eq!(stdout(&out), "ok SECRET", "{}", stderr(&out));
    let to = format!("127.0.0.1:{}", unlisted.port);
    let out = env.probe_as("rec", &["connect", &to]);
    assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    let to_held = format!("127.0.0.1:{}", held.port);
    let out = env.probe_as("rec", &["connect", &to_held]);
    assert_eq!(stdout(&out), "ok", "a would-hold must not stop: {out:?}");
    assert!(approvals(&env, true).is_empty(), "record mode made a hold");

    let e = env.wait_for_evidence("would-deny of the secret", |e| {
        e["action"] == "open" && e["target"] == secret.as_str()
    });
    assert_eq!(e["decision"], "would-deny", "{e}");
    assert_eq!(e["method"], "record", "{e}");
    assert_eq!(e["rule_id"], "no-secret", "{e}");
    let e = env.wait_for_evidence("would-deny of the unlisted port", |e| {
        e["action"] == "connect4" && e["target"].as_str().unwrap_or("").starts_with(&to)
    });
    assert_eq!(e["decision"], "would-deny", "{e}");
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    let e = env.wait_for_evidence("would-hold of the held port", |e| {
        e["action"] == "connect4" && e["target"].as_str().unwrap_or("").starts_with(&to_held)
    });
    assert_eq!(e["decision"], "would-hold", "{e}");
    assert_eq!(e["rule_id"], "held-port", "{e}");
    // A policy without exec rules still gets its execs recorded in record
    // mode (the record must be whole for `policy suggest`).
    env.wait_for_evidence("the probe's exec", |e| {
        e["action"] == "exec" && e["agent"] == "rec"
    });
    assert!(denials(&env, "rec").is_empty(), "record mode refused");
    let load = env.wait_for_evidence("the policy load", |e| {
        e["kind"] == "policy_load" && e["agent"] == "rec"
    });
    assert_eq!(load["details"]["mode"], "record", "{load}");

    // The kill switch is not recorded away.
    env.ok(&["kill", "rec", "--reason", "test"]);
    let out = env.probe_as("rec", &["read", &secret]);
    assert!(!out.status.success() || killed(&out), "{out:?}");
    assert!(!stdout(&out).contains("SECRET"), "{out:?}");
}
