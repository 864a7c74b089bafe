//! Live shadow evaluation of execs and opens on this kernel's fallback
//! (issue #19): a `shadow:` candidate with exec and file rules is
//! evaluated beside the policy in force at every exec and open of the
//! agent. The enforced decision (allow, or a kill) is carried out and
//! recorded as without it; where the candidate decides otherwise a
//! `shadow` entry says so (`would-deny`, `would-allow`, `would-hold`, the
//! candidate's rule and snapshot, the enforced decision, rule and
//! snapshot), first-then-count per agent.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use serde_json::Value;
use warden_tests::{
    can_run, killed, probe_path, stdout, wait_until, Files, TestEnv, RUNTIME_FILES,
};

/// No sweep while the test runs: the stop's sweep writes every count.
const LONG_SWEEP: [(&str, &str); 1] = [("WARDEN_SUMMARY_SECS", "3600")];

struct Paths {
    held_bin: String,
    other_bin: String,
    a: String,
    b: String,
    c: String,
}

/// The policy in force: allows `/usr/bin/true`, `held_bin`, the probe,
/// reads of A and C; denies everything else (`other_bin`, B). With
/// `shadow`, a candidate that denies `/usr/bin/true` and A, allows
/// `other_bin` and B, and holds `held_bin` and C.
fn policy(p: &Paths, shadow: bool) -> String {
    let probe = probe_path();
    let mut text = format!(
        "version: 1
rules:{RUNTIME_FILES}  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
  - id: true
    exec: {{ path: /usr/bin/true }}
    decision: allow
  - id: held-bin
    exec: {{ path: {held} }}
    decision: allow
  - id: read-a
    file: {{ path: {a}, access: [read] }}
    decision: allow
  - id: read-c
    file: {{ path: {c}, access: [read] }}
    decision: allow
",
        held = p.held_bin,
        a = p.a,
        c = p.c,
    );
    if shadow {
        let runtime = RUNTIME_FILES.replace("\n  ", "\n    ");
        text.push_str(&format!(
            "shadow:
  version: 1
  rules:{runtime}    - id: probe
      exec: {{ path: {probe} }}
      decision: allow
    - id: no-true
      exec: {{ path: /usr/bin/true }}
      decision: deny
    - id: other-ok
      exec: {{ path: {other} }}
      decision: allow
    - id: hold-bin
      exec: {{ path: {held} }}
      decision: hold
    - id: no-a
      file: {{ path: {a}, access: [read] }}
      decision: deny
    - id: read-b
      file: {{ path: {b}, access: [read] }}
      decision: allow
    - id: hold-c
      file: {{ path: {c}, access: [read] }}
      decision: hold
",
            held = p.held_bin,
            other = p.other_bin,
            a = p.a,
            b = p.b,
            c = p.c,
        ));
    }
    text
}

fn shadow_entries(env: &TestEnv, agent: &str, action: &str, target: &str) -> Vec<Value> {
    env.evidence()
        .into_iter()
        .filter(|e| {
            e["kind"] == "shadow"
                && e["agent"] == agent
                && e["action"] == action
                && e["target"] == target
        })
        .collect()
}

/// Actions a list of shadow entries stands for.
fn actions(entries: &[Value]) -> u64 {
    entries
        .iter()
        .map(|e| {
            if e["method"] == "counted" {
                e["details"]["count"].as_u64().unwrap()
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn a_shadow_candidate_of_execs_and_opens_changes_nothing_and_records_each_difference() {
    if !can_run("shadow-fs") {
        return;
    }
    let mut env = TestEnv::new("shadowfs");
    let f = Files::new(&env);
    let p = Paths {
        held_bin: f.binary("held-true", "/usr/bin/true"),
        other_bin: f.binary("other-true", "/usr/bin/true"),
        a: f.write("public/a.txt", "alpha"),
        b: f.write("work/b.txt", "bravo"),
        c: f.write("other/c.txt", "charlie"),
    };
    env.write_policy("cand.yaml", &policy(&p, true));
    env.write_policy("plain.yaml", &policy(&p, false));
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("cand", "cand.yaml");
    env.add_agent("plain", "plain.yaml");
    let load = env.wait_for_evidence("the policy load", |e| {
        e["kind"] == "policy_load" && e["agent"] == "cand" && e["decision"] == "loaded"
    });
    let candidate = load["details"]["shadow_snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no shadow_snapshot: {load}"))
        .to_string();
    let enforced = load["policy_snapshot"].as_str().unwrap().to_string();

    // The enforced outcomes, for both agents alike: the candidate's deny
    // and hold stop nothing, its allows open nothing.
    const REPEATS: u64 = 3;
    for agent in ["cand", "plain"] {
        let run = |bin: &str| env.cli(&["run", "--agent", agent, "--", bin]);
        for _ in 0..REPEATS {
            let out = run("/usr/bin/true");
            assert!(out.status.success(), "{agent}: true must run: {out:?}");
        }
        let out = run(&p.held_bin);
        assert!(
            out.status.success(),
            "{agent}: a would-hold must not stop: {out:?}"
        );
        let out = run(&p.other_bin);
        assert!(killed(&out), "{agent}: a would-allow must not run: {out:?}");

        let out = env.probe_as(agent, &["read-n", &p.a, "50"]);
        assert_eq!(stdout(&out), "ok alpha", "{agent}: {out:?}");
        for _ in 0..REPEATS {
            let out = env.probe_as(agent, &["read", &p.a]);
            assert_eq!(stdout(&out), "ok alpha", "{agent}: {out:?}");
        }
        let out = env.probe_as(agent, &["read", &p.c]);
        assert_eq!(stdout(&out), "ok charlie", "{agent}: a would-hold: {out:?}");
        let out = env.probe_as(agent, &["read", &p.b]);
        assert!(
            killed(&out),
            "{agent}: a would-allow must not read: {out:?}"
        );
        assert!(!stdout(&out).contains("bravo"), "{out:?}");
    }

    // Each difference kind, for execs and opens, by the candidate's rule.
    let cases = [
        (
            "exec",
            "/usr/bin/true",
            "would-deny",
            "no-true",
            "allow",
            "true",
        ),
        (
            "exec",
            p.held_bin.as_str(),
            "would-hold",
            "hold-bin",
            "allow",
            "held-bin",
        ),
        (
            "exec",
            p.other_bin.as_str(),
            "would-allow",
            "other-ok",
            "deny",
            "default-deny",
        ),
        (
            "open",
            p.a.as_str(),
            "would-deny",
            "no-a",
            "allow",
            "read-a",
        ),
        (
            "open",
            p.c.as_str(),
            "would-hold",
            "hold-c",
            "allow",
            "read-c",
        ),
        (
            "open",
            p.b.as_str(),
            "would-allow",
            "read-b",
            "deny",
            "default-deny",
        ),
    ];
    for (action, target, decision, rule, enforced_decision, enforced_rule) in cases {
        let e = env.wait_for_evidence(&format!("{decision} of {action} {target}"), |e| {
            e["kind"] == "shadow"
                && e["agent"] == "cand"
                && e["action"] == action
                && e["target"] == target
        });
        assert_eq!(e["decision"], decision, "{e}");
        assert_eq!(e["method"], "shadow", "{e}");
        assert_eq!(e["rule_id"], rule, "{e}");
        assert_eq!(e["policy_snapshot"], candidate.as_str(), "{e}");
        assert_eq!(e["details"]["enforced_decision"], enforced_decision, "{e}");
        assert_eq!(e["details"]["enforced_rule"], enforced_rule, "{e}");
        assert_eq!(e["details"]["enforced_snapshot"], enforced.as_str(), "{e}");
        // The enforced decision's own entry, as without a candidate.
        let d = env.wait_for_evidence(&format!("the decision on {target}"), |d| {
            d["kind"] == "decision"
                && d["agent"] == "cand"
                && d["action"] == action
                && d["target"] == target
        });
        assert_eq!(d["decision"], enforced_decision, "{d}");
        assert_eq!(d["rule_id"], enforced_rule, "{d}");
        assert_eq!(d["policy_snapshot"], enforced.as_str(), "{d}");
        let method = if enforced_decision == "deny" {
            "kill"
        } else {
            "allow"
        };
        assert_eq!(d["method"], method, "{d}");
    }
    // Nothing was held for the candidate's holds.
    assert!(
        env.evidence()
            .iter()
            .all(|e| !(e["kind"] == "hold" || e["kind"] == "approval")),
        "the candidate's hold made a hold"
    );
    let status = env.ok(&["status"]);
    for needle in [
        "would-deny (rule no-true)",
        "would-allow (rule read-b)",
        "would-hold (rule hold-c)",
    ] {
        assert!(status.contains(needle), "status lacks {needle}:\n{status}");
    }

    // At the stop every counted repeat is written: one individual entry
    // per difference, the rest counted, adding up to every action.
    env.stop_daemon();
    let execs = shadow_entries(&env, "cand", "exec", "/usr/bin/true");
    assert_eq!(
        execs.iter().filter(|e| e["method"] == "shadow").count(),
        1,
        "{execs:?}"
    );
    assert_eq!(actions(&execs), REPEATS, "{execs:?}");
    let opens = shadow_entries(&env, "cand", "open", &p.a);
    assert_eq!(
        opens.iter().filter(|e| e["method"] == "shadow").count(),
        1,
        "{opens:?}"
    );
    assert_eq!(actions(&opens), 50 + REPEATS, "{opens:?}");
    assert!(opens
        .iter()
        .all(|e| e["decision"] == "would-deny" && e["rule_id"] == "no-a"));
    // The agent without a candidate has none.
    let plain: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "shadow" && e["agent"] == "plain")
        .collect();
    assert!(
        plain.is_empty(),
        "shadow entries without a candidate: {plain:?}"
    );
    // Shadow entries are not decisions: the enforced evidence is the same
    // for both agents (allowed reads of A counted, B and other-true killed).
    for agent in ["cand", "plain"] {
        let kills = env
            .evidence()
            .into_iter()
            .filter(|e| e["agent"] == agent && e["kind"] == "decision" && e["method"] == "kill")
            .count();
        assert_eq!(kills, 2, "{agent}: the two enforced denials");
    }
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

/// The same file by other syscalls (`openat2`, the ia32 `open` through
/// `int 0x80`), by a symbolic link, and in a flood from several processes
/// at once: every open is the enforced allow and every one is a counted
/// difference of the one key (the file, its access, both rules). After a
/// reload without the candidate nothing more is compared.
#[test]
fn a_shadow_candidate_sees_every_way_to_the_same_file_and_a_flood_and_stops_at_a_reload() {
    if !can_run("shadow-fs") {
        return;
    }
    let mut env = TestEnv::new("shadowfsflood");
    let f = Files::new(&env);
    let p = Paths {
        held_bin: f.binary("held-true", "/usr/bin/true"),
        other_bin: f.binary("other-true", "/usr/bin/true"),
        a: f.write("public/a.txt", "alpha"),
        b: f.write("work/b.txt", "bravo"),
        c: f.write("other/c.txt", "charlie"),
    };
    let link = f.path("other/link-to-a");
    std::os::unix::fs::symlink(&p.a, &link).unwrap();
    env.write_policy("cand.yaml", &policy(&p, true));
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("cand", "cand.yaml");

    let mut opens = 0u64;
    for mode in ["read", "openat2", "open32"] {
        for path in [p.a.as_str(), link.as_str()] {
            let out = env.probe_as("cand", &[mode, path]);
            assert_eq!(stdout(&out), "ok alpha", "{mode} {path}: {out:?}");
            opens += 1;
        }
    }
    // A flood from 4 processes at once, on both CPUs.
    const EACH: u64 = 2000;
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| env.probe_as("cand", &["read-n", &p.a, &EACH.to_string()])))
            .collect();
        for r in runs {
            let out = r.join().unwrap();
            assert_eq!(stdout(&out), "ok alpha", "{out:?}");
        }
    });
    opens += 4 * EACH;
    env.wait_for_evidence("the first difference", |e| {
        e["kind"] == "shadow" && e["action"] == "open" && e["target"] == p.a.as_str()
    });

    // Without the candidate: the same policy in force, nothing compared.
    env.write_policy("cand.yaml", &policy(&p, false));
    let unshadowed = |env: &TestEnv| {
        env.evidence().iter().any(|e| {
            e["kind"] == "policy_load"
                && e["agent"] == "cand"
                && e["decision"] == "loaded"
                && e["details"]["shadow_snapshot"].is_null()
        })
    };
    assert!(!unshadowed(&env), "loaded without the candidate already");
    env.ok(&["policy", "reload"]);
    wait_until("the reload without the candidate", || unshadowed(&env));
    let out = env.probe_as("cand", &["read-n", &p.a, "100"]);
    assert_eq!(stdout(&out), "ok alpha", "{out:?}");
    let out = env.cli(&["run", "--agent", "cand", "--", "/usr/bin/true"]);
    assert!(out.status.success(), "{out:?}");

    env.stop_daemon();
    let entries = shadow_entries(&env, "cand", "open", &p.a);
    assert_eq!(
        entries.iter().filter(|e| e["method"] == "shadow").count(),
        1,
        "{entries:?}"
    );
    assert_eq!(actions(&entries), opens, "{entries:?}");
    assert!(entries
        .iter()
        .all(|e| e["decision"] == "would-deny" && e["rule_id"] == "no-a"));
    assert!(
        shadow_entries(&env, "cand", "exec", "/usr/bin/true").is_empty(),
        "an exec compared after the candidate was removed"
    );
    // The enforced reads were never refused.
    assert!(!env
        .evidence()
        .iter()
        .any(|e| e["kind"] == "decision" && e["decision"] == "deny"));
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}
