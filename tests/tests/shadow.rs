//! Live shadow evaluation (issue #19): a policy's `shadow:` candidate is
//! evaluated by the kernel beside the policy in force, on every connect
//! and sendmsg of the agent. Where the candidate decides otherwise, a
//! `shadow` entry says what it would have done (`would-deny`,
//! `would-allow`, `would-hold`, its rule, and the enforced decision and
//! rule), first-then-count per agent. The enforced decision never moves.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use serde_json::Value;
use warden_tests::{can_run, stderr, stdout, Listener, TestEnv};

/// No sweep of counted repeats while the test runs: the stop's sweep
/// writes them all at once, so the counts add up exactly.
const LONG_SWEEP: [(&str, &str); 1] = [("WARDEN_SUMMARY_SECS", "3600")];

fn shadow_entries(env: &TestEnv, agent: &str, target: &str) -> Vec<Value> {
    env.evidence()
        .into_iter()
        .filter(|e| e["kind"] == "shadow" && e["agent"] == agent && e["target"] == target)
        .collect()
}

/// Actions a list of shadow entries stands for: one per individual entry,
/// `count` per counted one.
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

fn policy(web: u16, closed: u16, held: u16) -> String {
    format!(
        "version: 1
rules:
  - id: web
    connect: {{ to: 127.0.0.1, ports: [{web}, {held}] }}
    decision: allow
shadow:
  version: 1
  rules:
    - id: no-web
      connect: {{ to: 127.0.0.1, ports: [{web}] }}
      decision: deny
    - id: hold-it
      connect: {{ to: 127.0.0.1, ports: [{held}] }}
      decision: hold
    - id: open-closed
      connect: {{ to: 127.0.0.1, ports: [{closed}] }}
      decision: allow
"
    )
}

#[test]
fn a_shadow_candidate_that_would_deny_changes_nothing_and_every_difference_is_counted() {
    if !can_run("shadow") {
        return;
    }
    let web = Listener::tcp4();
    let held = Listener::tcp4();
    let closed = Listener::tcp4();
    let mut env = TestEnv::new("shadowdeny");
    env.write_policy("p.yaml", &policy(web.port, closed.port, held.port));
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("cand", "p.yaml");
    let load = env.wait_for_evidence("the policy load", |e| {
        e["kind"] == "policy_load" && e["agent"] == "cand" && e["decision"] == "loaded"
    });
    let candidate = load["details"]["shadow_snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no shadow_snapshot: {load}"))
        .to_string();
    let enforced = load["policy_snapshot"].as_str().unwrap().to_string();
    assert_ne!(candidate, enforced);

    // Allowed by the policy in force, denied by the candidate: every
    // connect succeeds, from one process and from several.
    const N: u64 = 3000;
    let to = format!("127.0.0.1:{}", web.port);
    let out = env.probe_as("cand", &["connect-n", &to, &N.to_string()]);
    assert_eq!(stdout(&out), format!("ok={N} eperm=0"), "{}", stderr(&out));
    for _ in 0..3 {
        let out = env.probe_as("cand", &["connect", &to]);
        assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    }
    // A race: 4 threads at once, on every CPU, counted without loss.
    const THREADED: u64 = 4 * 500;
    let out = env.probe_as("cand", &["connect-threads", &to, "4", "500"]);
    assert_eq!(
        stdout(&out),
        format!("ok={THREADED} eperm=0"),
        "{}",
        stderr(&out)
    );
    // A candidate that would hold does not stop anything either.
    let to_held = format!("127.0.0.1:{}", held.port);
    let out = env.probe_as("cand", &["connect", &to_held]);
    assert_eq!(stdout(&out), "ok", "a would-hold must not stop: {out:?}");

    let target = format!("{to}/tcp");
    let first = env.wait_for_evidence("the first difference", |e| {
        e["kind"] == "shadow" && e["target"] == target.as_str()
    });
    assert_eq!(first["decision"], "would-deny", "{first}");
    assert_eq!(first["method"], "shadow", "{first}");
    assert_eq!(first["rule_id"], "no-web", "{first}");
    assert_eq!(first["policy_snapshot"], candidate.as_str(), "{first}");
    assert_eq!(first["details"]["enforced_decision"], "allow", "{first}");
    assert_eq!(first["details"]["enforced_rule"], "web", "{first}");
    assert_eq!(
        first["details"]["enforced_snapshot"],
        enforced.as_str(),
        "{first}"
    );
    let h = env.wait_for_evidence("the would-hold", |e| {
        e["kind"] == "shadow" && e["target"] == format!("{to_held}/tcp").as_str()
    });
    assert_eq!(h["decision"], "would-hold", "{h}");
    assert_eq!(h["rule_id"], "hold-it", "{h}");
    assert!(
        env.evidence()
            .iter()
            .all(|e| !(e["kind"] == "hold" || e["kind"] == "approval")),
        "the candidate's hold made a hold"
    );
    // The enforced decisions are recorded as ever: allows by `web`.
    let allowed = env.wait_for_evidence("the enforced allow", |e| {
        e["kind"] == "decision" && e["target"] == target.as_str()
    });
    assert_eq!(
        (allowed["decision"].as_str(), allowed["rule_id"].as_str()),
        (Some("allow"), Some("web")),
        "{allowed}"
    );
    let status = env.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains(&format!("shadow {candidate}"))
                && l.contains("would-deny (rule no-web)")),
        "{status}"
    );

    // At the stop every counted repeat is written: one individual entry,
    // the rest counted, adding up to every connect.
    env.stop_daemon();
    let entries = shadow_entries(&env, "cand", &target);
    let individual = entries.iter().filter(|e| e["method"] == "shadow").count();
    assert_eq!(individual, 1, "first individual, then counted: {entries:?}");
    assert_eq!(actions(&entries), N + 3 + THREADED, "{entries:?}");
    assert!(entries
        .iter()
        .all(|e| e["decision"] == "would-deny" && e["rule_id"] == "no-web"));
    // No denial anywhere: the candidate decided nothing.
    assert!(
        !env.evidence()
            .iter()
            .any(|e| e["agent"] == "cand" && e["kind"] == "decision" && e["decision"] == "deny"),
        "an enforced denial appeared"
    );
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

#[test]
fn a_shadow_candidate_that_would_allow_a_denied_port_does_not_open_it() {
    if !can_run("shadow") {
        return;
    }
    let web = Listener::tcp4();
    let held = Listener::tcp4();
    let closed = Listener::tcp4();
    let mut env = TestEnv::new("shadowallow");
    env.write_policy("p.yaml", &policy(web.port, closed.port, held.port));
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("cand", "p.yaml");

    // Denied in force, allowed by the candidate: refused, by IPv4, by the
    // IPv4-mapped IPv6 address of the same destination, and by UDP.
    let to = format!("127.0.0.1:{}", closed.port);
    let out = env.probe_as("cand", &["connect-n", &to, "50"]);
    assert_eq!(stdout(&out), "ok=0 eperm=50", "{}", stderr(&out));
    let mapped = format!("[::ffff:127.0.0.1]:{}", closed.port);
    let out = env.probe_as("cand", &["connect", &mapped]);
    assert_eq!(stdout(&out), "errno=1", "{out:?}");

    let target = format!("{to}/tcp");
    let e = env.wait_for_evidence("the would-allow", |e| {
        e["kind"] == "shadow" && e["target"] == target.as_str()
    });
    assert_eq!(e["decision"], "would-allow", "{e}");
    assert_eq!(e["rule_id"], "open-closed", "{e}");
    assert_eq!(e["details"]["enforced_decision"], "deny", "{e}");
    assert_eq!(e["details"]["enforced_rule"], "default-deny", "{e}");
    // Sendmsg: UDP datagrams to the same port, each refused, each a
    // difference (one entry, the rest counted).
    let out = env.probe_as("cand", &["udp-flood", &to, "200"]);
    assert_eq!(stdout(&out), "sent=0 eperm=200", "{}", stderr(&out));
    let udp = format!("{to}/udp");
    let u = env.wait_for_evidence("the would-allow of a datagram", |e| {
        e["kind"] == "shadow" && e["target"] == udp.as_str()
    });
    assert_eq!(
        (u["action"].as_str(), u["decision"].as_str()),
        (Some("sendmsg4"), Some("would-allow")),
        "{u}"
    );
    let e6 = env.wait_for_evidence("the would-allow over IPv6", |e| {
        e["kind"] == "shadow" && e["action"] == "connect6"
    });
    assert_eq!(e6["decision"], "would-allow", "{e6}");
    // The refusal itself is the enforced policy's.
    let d = env.wait_for_evidence("the denial", |e| {
        e["kind"] == "decision" && e["target"] == target.as_str()
    });
    assert_eq!(
        (d["decision"].as_str(), d["rule_id"].as_str()),
        (Some("deny"), Some("default-deny")),
        "{d}"
    );

    // Without the candidate (reload), nothing more is evaluated.
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:\n  - id: web\n    connect: {{ to: 127.0.0.1, ports: [{}] }}\n    decision: allow\n",
            web.port
        ),
    );
    env.ok(&["policy", "reload"]);
    env.wait_for_evidence("the reload", |e| {
        e["kind"] == "policy_load"
            && e["decision"] == "loaded"
            && e["details"]["shadow_snapshot"].is_null()
    });
    let out = env.probe_as("cand", &["connect-n", &to, "20"]);
    assert_eq!(stdout(&out), "ok=0 eperm=20", "{}", stderr(&out));
    env.stop_daemon();
    let total = actions(&shadow_entries(&env, "cand", &target));
    assert_eq!(total, 50, "differences after the candidate was removed");
    assert_eq!(actions(&shadow_entries(&env, "cand", &udp)), 200);
}

/// The candidate follows the agent's rules across a reload (the rule slots
/// swap halves) and a daemon restart (the maps stay pinned, the daemon
/// reinstalls): its differences keep being recorded, each naming the
/// policy in force at the time.
#[test]
fn a_shadow_candidate_survives_reloads_and_a_daemon_restart() {
    if !can_run("shadow") {
        return;
    }
    let web = Listener::tcp4();
    let held = Listener::tcp4();
    let closed = Listener::tcp4();
    let mut env = TestEnv::new("shadowreload");
    let first = policy(web.port, closed.port, held.port);
    env.write_policy("p.yaml", &first);
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("cand", "p.yaml");
    let to = format!("127.0.0.1:{}", closed.port);
    let target = format!("{to}/tcp");
    let differences = |env: &TestEnv| -> Vec<Value> {
        env.evidence()
            .into_iter()
            .filter(|e| {
                e["kind"] == "shadow" && e["target"] == target.as_str() && e["method"] == "shadow"
            })
            .collect()
    };
    let refused = |env: &TestEnv| {
        let out = env.probe_as("cand", &["connect", &to]);
        assert_eq!(stdout(&out), "errno=1", "{out:?}");
    };
    refused(&env);
    env.wait_for_evidence("the first difference", |e| {
        e["kind"] == "shadow" && e["target"] == target.as_str()
    });

    // A changed policy in force, the same candidate: reloaded into the
    // other half of the agent's slots.
    let second = first.replacen(
        "rules:\n",
        "rules:\n  - id: extra\n    connect: { to: 10.9.9.9 }\n    decision: allow\n",
        1,
    );
    env.write_policy("p.yaml", &second);
    env.ok(&["policy", "reload"]);
    let load = env.wait_for_evidence("the reload", |e| {
        e["kind"] == "policy_load"
            && e["decision"] == "loaded"
            && e["details"]["policy_version"] == 2
    });
    refused(&env);
    // A new key (the generation changed): a new individual entry.
    warden_tests::wait_until("a difference under the reloaded policy", || {
        differences(&env)
            .iter()
            .any(|e| e["details"]["enforced_snapshot"] == load["policy_snapshot"])
    });

    // A daemon restart: the pinned programs and maps stay, the new daemon
    // installs the candidate again.
    env.stop_daemon();
    let before = differences(&env).len();
    env.start_daemon_with(&LONG_SWEEP);
    env.wait_for_evidence("the reinstall", |e| {
        e["kind"] == "policy_load"
            && e["decision"] == "loaded"
            && e["seq"].as_u64() > load["seq"].as_u64()
            && !e["details"]["shadow_snapshot"].is_null()
    });
    refused(&env);
    // The stop swept the counted keys, so the first after the restart is
    // an individual entry again.
    warden_tests::wait_until("a difference after the restart", || {
        differences(&env).len() > before
    });
    let status = env.ok(&["status"]);
    assert!(
        status.contains("would-allow (rule open-closed)"),
        "{status}"
    );
}
