//! Repeated allowed actions are counted, not copied: the first allowed open
//! (or exec, or connect) of a key is recorded individually, its repeats are
//! counted in the kernel and written as one `summary` entry per key and
//! sweep, chained like any entry. Denials stay individual every time.
//!
//! The sweep interval is set to an hour here and the daemon's stop sweeps,
//! so one burst is never split by a periodic sweep.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use serde_json::Value;
use warden_tests::{can_run, stderr, stdout, Files, Listener, TestEnv, RUNTIME_FILES};

const LONG_SWEEP: [(&str, &str); 1] = [("WARDEN_SUMMARY_SECS", "3600")];

fn entries(env: &TestEnv, kind: &str, action: &str, target: &str) -> Vec<Value> {
    env.evidence()
        .into_iter()
        .filter(|e| e["kind"] == kind && e["action"] == action && e["target"] == target)
        .collect()
}

fn file_policy(f: &Files, evidence: &str) -> String {
    format!(
        "version: 1\n{evidence}rules:\n{RUNTIME_FILES}  - id: public\n    file: {{ prefix: {}/, access: [read] }}\n    decision: allow\n",
        f.path("public")
    )
}

/// Waits until the individual record of the first open reached the log, so
/// the stop's sweep finds its first remembered.
fn wait_first(env: &TestEnv, target: &str) {
    env.wait_for_evidence("the first open", |e| {
        e["kind"] == "decision" && e["action"] == "open" && e["target"] == target
    });
}

#[test]
fn a_thousand_opens_of_one_file_are_one_entry_and_one_summary() {
    if !can_run("summaries") {
        return;
    }
    let mut env = TestEnv::new("summ1k");
    let f = Files::new(&env);
    let file = f.write("public/often.txt", "OFTEN");
    env.write_policy("p.yaml", &file_policy(&f, ""));
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("busy", "p.yaml");

    let out = env.probe_as("busy", &["read-n", &file, "1000"]);
    assert_eq!(stdout(&out), "ok OFTEN", "{}", stderr(&out));
    wait_first(&env, &file);
    env.stop_daemon();

    let firsts = entries(&env, "decision", "open", &file);
    assert_eq!(firsts.len(), 1, "one individual entry: {firsts:#?}");
    assert_eq!(firsts[0]["decision"], "allow");
    let summaries = entries(&env, "summary", "open", &file);
    assert_eq!(summaries.len(), 1, "one summary: {summaries:#?}");
    let s = &summaries[0];
    assert_eq!(s["details"]["count"], 999, "{s:#?}");
    assert_eq!(s["rule_id"], "public");
    assert_eq!(s["pid"], firsts[0]["pid"], "the same process");
    assert_eq!(s["policy_snapshot"], firsts[0]["policy_snapshot"]);
    assert_eq!(s["decision"], "allow");
    assert_eq!(s["method"], "counted");
    let (first, last) = (
        s["details"]["first_ns"].as_i64().unwrap(),
        s["details"]["last_ns"].as_i64().unwrap(),
    );
    assert!(first <= last && first > 0, "{s:#?}");
    assert!(
        s["seq"].as_u64() > firsts[0]["seq"].as_u64(),
        "after its first"
    );

    // Chained and verified like any entry; the accounting adds up with the
    // kernel's decision counter.
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    let checked = env.ok(&["log", "verify", "--completeness"]);
    let line = checked
        .lines()
        .find(|l| l.starts_with("agent busy: at its latest summary"))
        .unwrap_or_else(|| panic!("no accounting for busy: {checked}"));
    // "... accounts for X + Y = T of the kernel's K decisions": the agent
    // was idle at the stop's sweep, so nothing was in flight.
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "=").unwrap();
    assert_eq!(
        words[at + 1],
        words[at + 5],
        "individual + counted = kernel: {line}"
    );
}

#[test]
fn allowed_each_keeps_one_entry_per_open() {
    if !can_run("summaries") {
        return;
    }
    let mut env = TestEnv::new("summeach");
    let f = Files::new(&env);
    let file = f.write("public/each.txt", "EACH");
    env.write_policy("p.yaml", &file_policy(&f, "evidence: { allowed: each }\n"));
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("each", "p.yaml");

    let out = env.probe_as("each", &["read-n", &file, "50"]);
    assert_eq!(stdout(&out), "ok EACH", "{}", stderr(&out));
    warden_tests::wait_until("50 individual entries", || {
        entries(&env, "decision", "open", &file).len() >= 50
    });
    env.stop_daemon();
    assert_eq!(entries(&env, "decision", "open", &file).len(), 50);
    assert!(entries(&env, "summary", "open", &file).is_empty());
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

#[test]
fn repeated_denials_stay_individual_and_allowed_connects_are_counted() {
    if !can_run("summaries") {
        return;
    }
    let allowed = Listener::tcp4();
    let denied = Listener::tcp4();
    let mut env = TestEnv::new("summnet");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:\n  - id: api\n    connect: {{ to: 127.0.0.1, ports: [{}] }}\n    decision: allow\n",
            allowed.port
        ),
    );
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("net", "p.yaml");

    let to_denied = format!("127.0.0.1:{}", denied.port);
    let out = env.probe_as("net", &["connect-n", &to_denied, "20"]);
    assert_eq!(stdout(&out), "ok=0 eperm=20", "{}", stderr(&out));
    let to_allowed = format!("127.0.0.1:{}", allowed.port);
    let out = env.probe_as("net", &["connect-n", &to_allowed, "20"]);
    assert_eq!(stdout(&out), "ok=20 eperm=0", "{}", stderr(&out));
    // Network targets are recorded as ADDR:PORT/PROTOCOL.
    let (to_denied, to_allowed) = (format!("{to_denied}/tcp"), format!("{to_allowed}/tcp"));
    env.wait_for_evidence("the first allowed connect", |e| {
        e["kind"] == "decision" && e["target"] == to_allowed.as_str()
    });
    warden_tests::wait_until("20 denials", || {
        entries(&env, "decision", "connect4", &to_denied).len() >= 20
    });
    env.stop_daemon();

    let denials = entries(&env, "decision", "connect4", &to_denied);
    assert_eq!(denials.len(), 20, "each denial is its own entry");
    assert!(denials.iter().all(|d| d["decision"] == "deny"));
    assert!(entries(&env, "summary", "connect4", &to_denied).is_empty());
    assert_eq!(entries(&env, "decision", "connect4", &to_allowed).len(), 1);
    let s = entries(&env, "summary", "connect4", &to_allowed);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["details"]["count"], 19);
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    env.ok(&["log", "verify", "--completeness"]);
}

#[test]
fn per_agent_counts_repeats_across_processes() {
    if !can_run("summaries") {
        return;
    }
    let mut env = TestEnv::new("summagent");
    let f = Files::new(&env);
    let file = f.write("public/shared.txt", "SHARED");
    env.write_policy(
        "p.yaml",
        &file_policy(&f, "evidence: { allowed: first-then-count, per: agent }\n"),
    );
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("wide", "p.yaml");

    for _ in 0..3 {
        let out = env.probe_as("wide", &["read-n", &file, "10"]);
        assert_eq!(stdout(&out), "ok SHARED", "{}", stderr(&out));
    }
    wait_first(&env, &file);
    env.stop_daemon();

    let firsts = entries(&env, "decision", "open", &file);
    assert_eq!(
        firsts.len(),
        1,
        "one first for three processes: {firsts:#?}"
    );
    let s = entries(&env, "summary", "open", &file);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["details"]["count"], 29);
    assert_eq!(s[0]["details"]["counted_per"], "agent");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    env.ok(&["log", "verify", "--completeness"]);
}
