//! The evidence disk cap (`WARDEN_EVIDENCE_CAP`): at the cap, allowed
//! actions and denials refused without a kill are counted in the kernel,
//! their first too, and written only as `summary` entries; kills stay one
//! entry each; reaching the cap is an entry and shows in `warden status`;
//! the counts still add up to the kernel's decision counter.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use serde_json::Value;
use warden_tests::{can_run, killed, stderr, stdout, Files, Listener, TestEnv, RUNTIME_FILES};

const LONG_SWEEP: (&str, &str) = ("WARDEN_SUMMARY_SECS", "3600");

fn of(env: &TestEnv, kind: &str, target: &str) -> Vec<Value> {
    env.evidence()
        .into_iter()
        .filter(|e| e["kind"] == kind && e["target"] == target)
        .collect()
}

fn policy(f: &Files) -> String {
    format!(
        "version: 1\nrules:\n{RUNTIME_FILES}  - id: public\n    file: {{ prefix: {}/, access: [read] }}\n    decision: allow\n",
        f.path("public")
    )
}

fn cap_entries(env: &TestEnv) -> Vec<Value> {
    env.evidence()
        .into_iter()
        .filter(|e| e["kind"] == "evidence_cap")
        .collect()
}

/// "individual + counted = total of the kernel's K decisions" for `agent`.
fn adds_up(env: &TestEnv, agent: &str) {
    let checked = env.ok(&["log", "verify", "--completeness"]);
    let line = checked
        .lines()
        .find(|l| l.starts_with(&format!("agent {agent}: at its latest summary")))
        .unwrap_or_else(|| panic!("no accounting for {agent}: {checked}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "=").unwrap();
    assert_eq!(
        words[at + 1],
        words[at + 5],
        "individual + counted = kernel: {line}"
    );
}

#[test]
fn at_the_cap_actions_are_counted_only_and_kills_stay_individual() {
    if !can_run("evidence_cap") {
        return;
    }
    let denied = Listener::tcp4();
    let mut env = TestEnv::new("evcap");
    let f = Files::new(&env);
    let public = f.write("public/often.txt", "OFTEN");
    let secret = f.write("secret.txt", "SECRET");
    env.write_policy("p.yaml", &policy(&f));
    // One byte: reached at the first check after start.
    env.start_daemon_with(&[("WARDEN_EVIDENCE_CAP", "1"), LONG_SWEEP]);
    env.wait_for_evidence("the cap reached", |e| {
        e["kind"] == "evidence_cap" && e["decision"] == "reached"
    });
    let status = env.ok(&["status"]);
    assert!(status.contains("CAP REACHED"), "{status}");
    let json: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["evidence_cap"]["reached"], true, "{json:#}");
    assert_eq!(json["evidence_cap"]["cap_bytes"], 1);
    assert_eq!(json["evidence_cap"]["source"], "configured");
    // An agent added while the cap holds is counted only as well.
    env.add_agent("capped", "p.yaml");

    let out = env.probe_as("capped", &["read-n", &public, "500"]);
    assert_eq!(stdout(&out), "ok OFTEN", "{}", stderr(&out));
    let to = format!("127.0.0.1:{}", denied.port);
    let out = env.probe_as("capped", &["connect-n", &to, "1000"]);
    assert_eq!(stdout(&out), "ok=0 eperm=1000", "{}", stderr(&out));
    // A kill is still its own entry.
    let out = env.probe_as("capped", &["read", &secret]);
    assert!(killed(&out), "the denied open is killed: {}", stderr(&out));
    env.wait_for_evidence("the kill", |e| {
        e["kind"] == "decision" && e["target"] == secret.as_str()
    });
    env.stop_daemon();

    assert!(
        of(&env, "decision", &public).is_empty(),
        "no individual entry for the allowed opens"
    );
    let s = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "summary" && e["action"] == "open" && e["details"]["count"] == 500)
        .collect::<Vec<_>>();
    assert_eq!(
        s.len(),
        1,
        "one summary counts all 500, the first included: {:#?}",
        env.evidence()
            .into_iter()
            .filter(|e| e["kind"] == "summary")
            .collect::<Vec<_>>()
    );
    assert_eq!(s[0]["details"]["count_includes_first"], true, "{:#?}", s[0]);
    assert_eq!(s[0]["details"]["evidence_cap"], true);
    assert_eq!(s[0]["decision"], "allow");
    assert_eq!(s[0]["rule_id"], "public");

    let target = format!("{to}/tcp");
    assert!(of(&env, "decision", &target).is_empty());
    let d = of(&env, "summary", &target);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0]["details"]["count"], 1000);
    assert_eq!(d[0]["decision"], "deny");

    let kills = of(&env, "decision", &secret);
    assert_eq!(kills.len(), 1, "{kills:#?}");
    assert_eq!(kills[0]["method"], "kill");

    let caps = cap_entries(&env);
    assert_eq!(caps.len(), 1, "{caps:#?}");
    assert_eq!(caps[0]["details"]["cap_bytes"], 1);
    assert!(caps[0]["details"]["used_bytes"].as_u64().unwrap() > 1);
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    adds_up(&env, "capped");
}

#[test]
fn the_cap_is_reached_during_a_flood_and_nothing_goes_unaccounted() {
    if !can_run("evidence_cap") {
        return;
    }
    let mut env = TestEnv::new("evcapflood");
    let f = Files::new(&env);
    let files: Vec<String> = (0..4000)
        .map(|i| f.write(&format!("public/f{i}"), "x"))
        .collect();
    // cat reads the locale aliases too.
    env.write_policy(
        "p.yaml",
        &format!(
            "{}  - id: locale\n    file: {{ path: /etc/locale.alias, access: [read] }}\n    decision: allow\n",
            policy(&f)
        ),
    );
    env.start_daemon_with(&[LONG_SWEEP]);
    env.add_agent("flood", "p.yaml");
    let mut used = 0;
    warden_tests::wait_until("the database measured", || {
        let json: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
        assert_eq!(json["evidence_cap"]["reached"], false, "{json:#}");
        assert_eq!(json["evidence_cap"]["source"], "filesystem");
        used = json["evidence_cap"]["used_bytes"].as_u64().unwrap();
        used > 0
    });
    env.stop_daemon();
    // The database as the daemon left it, plus room for a few hundred
    // entries (about 650 bytes each).
    let cap = (used + 300 * 1024).to_string();
    env.start_daemon_with(&[("WARDEN_EVIDENCE_CAP", cap.as_str()), LONG_SWEEP]);

    // Each file once, in rounds: every open is a first (a distinct file),
    // so without the cap each would be an entry.
    for chunk in files.chunks(500) {
        let mut args = vec!["exec", "/bin/cat"];
        args.extend(chunk.iter().map(String::as_str));
        let out = env.probe_as("flood", &args);
        assert!(out.status.success(), "{}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    warden_tests::wait_until("the cap reached", || {
        cap_entries(&env).iter().any(|e| e["decision"] == "reached")
    });
    let status = env.ok(&["status"]);
    assert!(status.contains("CAP REACHED"), "{status}");
    env.stop_daemon();

    let ev = env.evidence();
    let individual = ev
        .iter()
        .filter(|e| {
            e["kind"] == "decision"
                && e["action"] == "open"
                && files.iter().any(|p| e["target"] == p.as_str())
        })
        .count();
    let counted: u64 = ev
        .iter()
        .filter(|e| e["kind"] == "summary" && e["details"]["count_includes_first"] == true)
        .map(|e| e["details"]["count"].as_u64().unwrap())
        .sum();
    assert!(individual > 0, "recorded one by one before the cap");
    assert!(
        individual < files.len(),
        "{individual} of {} opens recorded one by one: the cap stopped that",
        files.len()
    );
    assert!(counted > 0, "counted after the cap");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    adds_up(&env, "flood");
}

#[test]
fn a_bad_cap_is_refused_before_the_daemon_starts() {
    if !can_run("evidence_cap") {
        return;
    }
    let env = TestEnv::new("evcapbad");
    let out = env
        .warden()
        .arg("daemon")
        .env("WARDEN_EVIDENCE_CAP", "12X")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("WARDEN_EVIDENCE_CAP=\"12X\""), "{err}");
    assert!(!env.socket().exists(), "nothing started: no control socket");
}
