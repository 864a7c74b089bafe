//! Network enforcement on this kernel, end to end: a real daemon, real agent
//! cgroups, real processes started with `warden run`, loopback listeners.

use warden_tests::{can_run, probe_bin, stderr, stdout, Listener, TestEnv};

fn net_policy(allowed: u16, denied: u16) -> String {
    format!(
        "version: 1
description: integration test policy
rules:
  - id: allow-api
    connect: {{ to: 127.0.0.1/32, ports: [{allowed}], protocol: tcp }}
    decision: allow
  - id: deny-other
    connect: {{ to: 127.0.0.1, ports: [{denied}] }}
    decision: deny
  - id: allow-v6-api
    connect: {{ to: '::1', ports: [{allowed}] }}
    decision: allow
  - id: allow-udp
    connect: {{ to: 127.0.0.0/8, ports: [{allowed}], protocol: udp }}
    decision: allow
"
    )
}

fn find<'a>(entries: &'a [serde_json::Value], pid_target: &str) -> Option<&'a serde_json::Value> {
    entries
        .iter()
        .find(|e| e["kind"] == "decision" && e["target"] == pid_target)
}

#[test]
fn allowed_connect_succeeds_denied_gets_eperm_outsiders_unaffected() {
    if !can_run("network") {
        return;
    }
    let allowed = Listener::tcp4();
    let denied = Listener::tcp4();
    let unlisted = Listener::tcp4();
    let mut env = TestEnv::new("net");
    env.write_policy("net.yaml", &net_policy(allowed.port, denied.port));
    env.start_daemon();
    env.add_agent("net-agent", "net.yaml");

    let a = format!("127.0.0.1:{}", allowed.port);
    let d = format!("127.0.0.1:{}", denied.port);
    let u = format!("127.0.0.1:{}", unlisted.port);

    let out = env.probe_as("net-agent", &["connect", &a]);
    assert_eq!(stdout(&out), "ok", "allowed connect: {}", stderr(&out));
    assert!(out.status.success());

    let out = env.probe_as("net-agent", &["connect", &d]);
    assert_eq!(
        stdout(&out),
        format!("errno={}", libc::EPERM),
        "denied connect: {}",
        stderr(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "warden run exits with the command's status"
    );

    // No rule names this port: the default is deny.
    let out = env.probe_as("net-agent", &["connect", &u]);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM));

    // A process outside any agent cgroup reaches all three.
    for target in [&a, &d, &u] {
        let out = std::process::Command::new(probe_bin())
            .args(["connect", target])
            .output()
            .unwrap();
        assert_eq!(stdout(&out), "ok", "outside connect to {target}");
    }

    // The evidence holds each decision with the fields an auditor needs.
    let snapshot = env.ok(&[
        "policy",
        "check",
        env.policy_dir().join("net.yaml").to_str().unwrap(),
    ]);
    let snapshot = snapshot
        .split("snapshot ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n'])
        .to_string();
    let target = |addr: &str| format!("{addr}/tcp");
    let allow = env.wait_for_evidence("allowed connect", |e| {
        e["kind"] == "decision" && e["target"] == target(&a)
    });
    let deny = env.wait_for_evidence("denied connect", |e| {
        e["kind"] == "decision" && e["target"] == target(&d)
    });
    let default = env.wait_for_evidence("default deny", |e| {
        e["kind"] == "decision" && e["target"] == target(&u)
    });
    for (e, decision, rule, method) in [
        (&allow, "allow", "allow-api", "allow"),
        (&deny, "deny", "deny-other", "cgroup-deny"),
        (&default, "deny", "default-deny", "cgroup-deny"),
    ] {
        assert_eq!(e["agent"], "net-agent", "{e}");
        assert_eq!(e["owner"], "net-agent-owner@example.com", "{e}");
        assert_eq!(e["decision"], decision, "{e}");
        assert_eq!(e["rule_id"], rule, "{e}");
        assert_eq!(e["method"], method, "{e}");
        assert_eq!(e["action"], "connect4", "{e}");
        assert_eq!(e["uid"], 0, "{e}");
        assert_eq!(e["user"], "root", "{e}");
        assert!(e["pid"].as_u64().unwrap() > 0, "{e}");
        assert!(
            e["exe"].as_str().unwrap().ends_with("warden-probe")
                || e["exe"].as_str().unwrap().starts_with("[exited:"),
            "{e}"
        );
        assert_eq!(e["policy_snapshot"], snapshot.as_str(), "{e}");
        assert_eq!(e["hash"].as_str().unwrap().len(), 64, "{e}");
    }
    // The outside connects were not recorded (nor decided) by Warden.
    let entries = env.evidence();
    let decisions = entries.iter().filter(|e| e["kind"] == "decision").count();
    assert_eq!(
        decisions, 3,
        "exactly the agent's three connects are decisions: {entries:#?}"
    );
    assert!(find(&entries, &target(&a)).is_some());

    // The `run` entries name the human who started each command.
    let runs: Vec<_> = entries.iter().filter(|e| e["kind"] == "run").collect();
    assert_eq!(runs.len(), 3, "{entries:#?}");
    assert!(runs
        .iter()
        .all(|r| r["agent"] == "net-agent" && r["decision"] == "started"));

    let verify = env.ok(&["log", "verify"]);
    assert!(verify.contains("intact"), "{verify}");
}

#[test]
fn ipv6_and_udp_are_enforced() {
    if !can_run("ipv6_udp") {
        return;
    }
    let v6 = Listener::tcp6();
    let mut env = TestEnv::new("v6udp");
    env.write_policy("net.yaml", &net_policy(v6.port, 1));
    env.start_daemon();
    env.add_agent("v6-agent", "net.yaml");

    let out = env.probe_as("v6-agent", &["connect", &format!("[::1]:{}", v6.port)]);
    assert_eq!(stdout(&out), "ok", "allowed IPv6 connect: {}", stderr(&out));
    // IPv4-mapped IPv6 follows the IPv4 rules: port 1 is denied there.
    let out = env.probe_as("v6-agent", &["connect", "[::ffff:127.0.0.1]:1"]);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM));
    // Unconnected UDP (sendmsg hook): allowed port passes, another is refused.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let out = env.probe_as("v6-agent", &["udp", &format!("127.0.0.1:{udp_port}")]);
    assert_eq!(
        stdout(&out),
        format!("errno={}", libc::EPERM),
        "UDP to a port with no rule"
    );
    let out = env.probe_as("v6-agent", &["udp", &format!("127.0.0.1:{}", v6.port)]);
    assert_eq!(
        stdout(&out),
        "ok",
        "UDP to the allowed port: {}",
        stderr(&out)
    );
    env.wait_for_evidence("udp deny", |e| {
        e["action"] == "sendmsg4"
            && e["decision"] == "deny"
            && e["target"] == format!("127.0.0.1:{udp_port}/udp")
    });
    env.wait_for_evidence("v6 allow", |e| {
        e["action"] == "connect6" && e["decision"] == "allow" && e["rule_id"] == "allow-v6-api"
    });
}

#[test]
fn policy_reload_swaps_rules_and_malformed_policy_changes_nothing() {
    if !can_run("reload") {
        return;
    }
    let l = Listener::tcp4();
    let addr = format!("127.0.0.1:{}", l.port);
    let mut env = TestEnv::new("reload");
    env.write_policy("p.yaml", &net_policy(1, l.port));
    env.start_daemon();
    env.add_agent("reload-agent", "p.yaml");
    assert_eq!(
        stdout(&env.probe_as("reload-agent", &["connect", &addr])),
        format!("errno={}", libc::EPERM)
    );

    // A valid new version: the port is now allowed.
    env.write_policy("p.yaml", &net_policy(l.port, 1));
    env.ok(&["policy", "reload"]);
    assert_eq!(
        stdout(&env.probe_as("reload-agent", &["connect", &addr])),
        "ok"
    );

    // A malformed version: reload fails naming file, line and rule, and
    // the running policy stays in force.
    let broken = net_policy(l.port, 1).replace("to: 127.0.0.1/32", "to: 127.0.0/33");
    env.write_policy("p.yaml", &broken);
    let out = env.cli(&["policy", "reload"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("p.yaml:5:") && err.contains("allow-api"),
        "error names file, line and rule: {err}"
    );
    assert_eq!(
        stdout(&env.probe_as("reload-agent", &["connect", &addr])),
        "ok",
        "old policy still enforced"
    );

    // SIGHUP reloads too.
    env.write_policy("p.yaml", &net_policy(1, l.port));
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(env.daemon_pid().unwrap() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = env.probe_as("reload-agent", &["connect", &addr]);
        if stdout(&out) == format!("errno={}", libc::EPERM) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Every loaded version is kept, and each load and rejection is evidence.
    let history = env.ok(&["policy", "history", "--agent", "reload-agent"]);
    assert_eq!(history.lines().count(), 3, "{history}");
    let entries = env.evidence();
    let loads = entries
        .iter()
        .filter(|e| e["kind"] == "policy_load" && e["decision"] == "loaded")
        .count();
    let rejected = entries
        .iter()
        .filter(|e| e["kind"] == "policy_load" && e["decision"] == "rejected")
        .count();
    assert_eq!((loads, rejected), (3, 1), "{entries:#?}");
}

#[test]
fn tampering_with_the_database_is_caught() {
    if !can_run("tamper") {
        return;
    }
    let l = Listener::tcp4();
    let mut env = TestEnv::new("tamper");
    env.write_policy("p.yaml", &net_policy(1, l.port));
    env.start_daemon();
    env.add_agent("tamper-agent", "p.yaml");
    let addr = format!("127.0.0.1:{}", l.port);
    env.probe_as("tamper-agent", &["connect", &addr]);
    let deny = env.wait_for_evidence("deny", |e| {
        e["kind"] == "decision" && e["decision"] == "deny"
    });
    env.stop_daemon();
    env.ok(&["log", "verify"]);

    // Rewrite the denial as an allow, directly in the database file.
    let seq = deny["seq"].as_u64().unwrap();
    sqlite_update(&env.database(), seq);
    let out = env.cli(&["log", "verify"]);
    assert!(!out.status.success(), "verify must fail after tampering");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("seq {seq}")),
        "names the first bad sequence number: {err}"
    );
}

/// Edits one row with the sqlite3 shell, as an attacker with file access would.
fn sqlite_update(db: &std::path::Path, seq: u64) {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        // The store's guard triggers stop accidental edits, not an attacker.
        .arg(format!(
            "DROP TRIGGER evidence_no_update; UPDATE evidence SET decision = 'allow' WHERE seq = {seq};"
        ))
        .output()
        .expect("run sqlite3 (installed by cargo xtask setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_changes_nothing() {
    if !can_run("bad_input") {
        return;
    }
    let mut env = TestEnv::new("badinput");
    env.write_policy("ok.yaml", &net_policy(1, 2));
    env.write_policy(
        "broken.yaml",
        "version: 1\nrules:\n  - id: x\n    connect: { to: 10.0.0.1/8 }\n    decision: allow\n",
    );
    env.start_daemon();

    let out = env.cli(&["run", "--agent", "nobody", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown agent 'nobody'"),
        "{}",
        stderr(&out)
    );

    let out = env.cli(&[
        "agent",
        "add",
        "a1",
        "--owner",
        "o@x",
        "--policy",
        "broken.yaml",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("broken.yaml:4:") && err.contains("'x'") && err.contains("host bits"),
        "{err}"
    );

    let out = env.cli(&[
        "agent",
        "add",
        "a2",
        "--owner",
        "o@x",
        "--policy",
        "ok.yaml",
        "--cgroup",
        "/sys/fs/cgroup/does-not-exist-warden",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does-not-exist-warden"),
        "{}",
        stderr(&out)
    );

    let out = env.cli(&[
        "agent",
        "add",
        "a3",
        "--owner",
        "o@x",
        "--policy",
        "missing.yaml",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.yaml"), "{}", stderr(&out));

    // None of the failed registrations left an agent, a cgroup or evidence.
    assert!(env.ok(&["agent", "list", "--json"]).trim() == "[]");
    assert!(!env.agent_cgroup("a1").exists() && !env.agent_cgroup("a3").exists());
    assert!(env.evidence().iter().all(|e| e["kind"] != "agent_register"));

    // A second daemon on the same socket refuses to start.
    let out = env.cli(&["daemon"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already serving"), "{}", stderr(&out));

    // A corrupt database: a clear error, and the file is left as it was.
    env.stop_daemon();
    let garbage = vec![0x5au8; 8192];
    std::fs::write(env.database(), &garbage).unwrap();
    let _ = std::fs::remove_file(env.state_dir().join("warden.db-wal"));
    let _ = std::fs::remove_file(env.state_dir().join("warden.db-shm"));
    let out = env.cli(&["log", "verify"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("warden.db"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(env.database()).unwrap(),
        garbage,
        "corrupt file left untouched"
    );
}
