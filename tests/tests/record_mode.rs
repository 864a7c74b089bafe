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

    // The auditor's report counts them apart from denials.
    let bundle = env.dir.path().join("bundle");
    env.ok(&["evidence", "export", "--out", bundle.to_str().unwrap()]);
    let html = std::fs::read_to_string(bundle.join("report.html")).unwrap();
    assert!(
        html.contains("record mode: would deny or hold"),
        "report lacks the column"
    );
    let row = html
        .split("<tr>")
        .find(|r| r.starts_with("<td>rec</td>"))
        .unwrap_or_else(|| panic!("no row for rec"));
    let cells: Vec<&str> = row.split("<td class=n>").skip(1).collect();
    // allowed, denied, held, approvals, would.
    assert!(cells[1].starts_with("0<"), "denied: {row}");
    // The secret, the two connects, and every open the policy has no rule
    // for (the loader's, in record mode every open is decided).
    let would: u64 = cells[4].split('<').next().unwrap().parse().unwrap();
    assert!(would >= 3, "would: {row}");

    // The kill switch is not recorded away.
    env.ok(&["kill", "rec", "--reason", "test"]);
    let out = env.probe_as("rec", &["read", &secret]);
    assert!(!out.status.success() || killed(&out), "{out:?}");
    assert!(!stdout(&out).contains("SECRET"), "{out:?}");
}

/// The loop the issue asks for: run a small script in record mode, turn
/// its record into a policy, enforce that policy, and the same script runs
/// with no denial while anything else is still refused.
#[test]
fn suggest_round_trip_record_then_enforce_with_zero_denials() {
    if !can_run("suggest_round_trip") {
        return;
    }
    let mut env = TestEnv::new("suggest");
    let f = Files::new(&env);
    for name in ["a", "b", "c"] {
        f.write(&format!("public/{name}.txt"), name);
    }
    f.write("other/one.txt", "one");
    let secret = f.write("other/secret.txt", "SECRET");
    let api = Listener::tcp4();
    let script = f.write(
        "bin/work.sh",
        &format!(
            "set -e\ncat {pub}/a.txt {pub}/b.txt {pub}/c.txt > {work}/out.txt\n\
             cat {one}\nls {pub} > /dev/null\n{probe} connect 127.0.0.1:{port}\n",
            pub = f.path("public"),
            work = f.path("work"),
            one = f.path("other/one.txt"),
            probe = warden_tests::probe_path(),
            port = api.port,
        ),
    );
    env.write_policy("rec.yaml", "version: 1\nmode: record\nrules: []\n");
    env.start_daemon();
    env.add_agent("learner", "rec.yaml");
    let run = |agent: &str| env.cli(&["run", "--agent", agent, "--", "/usr/bin/bash", &script]);
    let out = run("learner");
    assert!(out.status.success(), "record run: {out:?}");
    assert!(stdout(&out).ends_with("ok"), "{out:?}");
    // The daemon writes allowed decisions on its poll tick: wait for the
    // last action's entry.
    env.wait_for_evidence("the script's connect", |e| {
        e["agent"] == "learner" && e["action"] == "connect4"
    });

    let suggested = env.policy_dir().join("suggested.yaml");
    env.ok(&[
        "policy",
        "suggest",
        "learner",
        "--out",
        suggested.to_str().unwrap(),
    ]);
    let yaml = std::fs::read_to_string(&suggested).unwrap();
    // Grouped, recognised, exact where it should be, each with its evidence.
    assert!(
        yaml.contains(&format!(
            "prefix: \"{}/\", access: [read]",
            f.path("public")
        )),
        "{yaml}"
    );
    assert!(
        yaml.contains(&format!(
            "path: \"{}/out.txt\", access: [write]",
            f.path("work")
        )),
        "{yaml}"
    );
    assert!(
        yaml.contains(&format!(
            "path: \"{}\", access: [read]",
            f.path("other/one.txt")
        )),
        "{yaml}"
    );
    assert!(yaml.contains("  - loader\n"), "{yaml}");
    assert!(yaml.contains("exec: { path: \"/usr/bin/bash\" }"), "{yaml}");
    assert!(
        yaml.contains(&format!("ports: [{}], protocol: tcp", api.port)),
        "{yaml}"
    );
    assert!(yaml.matches("# evidence: seq ").count() >= 6, "{yaml}");
    assert!(!yaml.contains("secret"), "{yaml}");
    let check = env.cli(&["policy", "check", suggested.to_str().unwrap()]);
    assert!(check.status.success(), "policy check: {check:?}");
    // --diff against the record-mode policy: everything is new.
    let d = env.ok(&[
        "policy",
        "suggest",
        "learner",
        "--diff",
        env.policy_dir().join("rec.yaml").to_str().unwrap(),
    ]);
    assert!(d.lines().all(|l| l.starts_with("+ ")), "{d}");

    // Enforced: the same script runs, with no denial.
    env.add_agent("worker", "suggested.yaml");
    std::fs::remove_file(f.path("work/out.txt")).unwrap();
    let out = run("worker");
    assert!(out.status.success(), "enforced run: {out:?}");
    assert_eq!(
        std::fs::read_to_string(f.path("work/out.txt")).unwrap(),
        "abc"
    );
    env.wait_for_evidence("the enforced connect", |e| {
        e["agent"] == "worker" && e["action"] == "connect4"
    });
    let refused: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["agent"] == "worker" && e["decision"] != "allow")
        .collect();
    assert!(
        refused.is_empty(),
        "denials under the suggested policy: {refused:?}"
    );
    // And it is a policy: what the script did not do is refused.
    let out = env.probe_as("worker", &["read", &secret]);
    assert!(killed(&out), "{out:?}");
}
