//! The denial explainer of `warden run` (issue #14 §3) ends with the
//! command: once the command has ended it asks the daemon for a barrier
//! (`drained`: every record the kernel had queued is in the log), prints
//! what that barrier let in, and lets go of the run's stderr. A refusal
//! that is the command's very last action is still explained, and a reader
//! of the run's stderr to its end does not wait out a fixed grace.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::path::Path;

use warden_tests::{can_run, killed, probe_bin, stderr, stdout, Files, TestEnv, RUNTIME_FILES};

/// How many times each last-action refusal is tried: the race is between
/// the kernel's record reaching the log and the explainer's last look.
const ROUNDS: usize = 5;

/// Three ways for a refusal to be the last thing a run does, each read to
/// the end of stderr (`Command::output`), several times: the run's own
/// process killed by the open it makes; a child killed and the shell
/// exiting at once with 0; a connect refused with EPERM and the probe
/// exiting at once. Every run's stderr holds its explanation line, and the
/// daemon answered the explainers' barriers (not the grace fallback).
#[test]
fn a_refusal_as_the_last_action_is_explained_before_stderr_ends() {
    if !can_run("explainer_last_action") {
        return;
    }
    let mut env = TestEnv::new_in("explainlast", Path::new(env!("CARGO_TARGET_TMPDIR")));
    let f = Files::new(&env);
    let secret = f.write("other/secret.txt", "SECRET");
    let refused = warden_tests::Listener::tcp4();
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:\n{}\n  - id: no-secret\n    file: {{ path: {secret}, access: [read] }}\n    decision: deny\n",
            RUNTIME_FILES.trim_end()
        ),
    );
    env.start_daemon();
    env.add_agent("ex-last", "p.yaml");
    let probe = probe_bin().display().to_string();
    let to = format!("127.0.0.1:{}", refused.port);
    let shell = format!("{probe} read {secret}; exit 0");
    let open_line = format!("warden: denied open {secret} (rule no-secret, policy snapshot ");
    let connect_line = format!("warden: denied connect4 {to}/tcp (rule default-deny, ");
    for round in 0..ROUNDS {
        // The run's own process is killed by its open.
        let out = env.cli(&["run", "--agent", "ex-last", "--", &probe, "read", &secret]);
        assert!(killed(&out), "round {round}: {out:?}");
        let err = stderr(&out);
        assert!(err.contains(&open_line), "round {round}, own kill: {err:?}");
        assert!(err.contains(" killed)"), "round {round}: {err:?}");

        // A child is killed; the shell goes on and exits 0 at once.
        let out = env.cli(&["run", "--agent", "ex-last", "--", "/bin/sh", "-c", &shell]);
        assert_eq!(out.status.code(), Some(0), "round {round}: {out:?}");
        let err = stderr(&out);
        assert!(err.contains(&open_line), "round {round}, child: {err:?}");

        // A refused connect (the process lives), then the probe exits.
        let out = env.cli(&["run", "--agent", "ex-last", "--", &probe, "connect", &to]);
        assert_eq!(
            stdout(&out).trim(),
            format!("errno={}", libc::EPERM),
            "round {round}: {out:?}"
        );
        let err = stderr(&out);
        assert!(
            err.contains(&connect_line),
            "round {round}, connect: {err:?}"
        );
    }
    // Each refusal is in the log too (what the lines were read from).
    let evidence = env.evidence();
    let denied = |action: &str| {
        evidence
            .iter()
            .filter(|e| {
                e["kind"] == "decision"
                    && e["agent"] == "ex-last"
                    && e["decision"] == "deny"
                    && e["action"] == action
            })
            .count()
    };
    assert!(denied("open") >= 2 * ROUNDS, "opens: {}", denied("open"));
    assert!(
        denied("connect4") >= ROUNDS,
        "connects: {}",
        denied("connect4")
    );
    // The explainers ended on the daemon's barrier, not on the grace.
    let answered = env.daemon_log().matches("drained: answered").count();
    assert!(answered >= 1, "no barrier answered:\n{}", env.daemon_log());
}

/// `drained` from inside an agent: refused (and recorded), answered at
/// once, however often it is sent; the daemon goes on answering others.
#[test]
fn the_barrier_from_inside_an_agent_is_refused_and_harmless() {
    if !can_run("explainer_barrier_inside") {
        return;
    }
    let mut env = TestEnv::new_in("explainin", Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy(
        "p.yaml",
        "version: 1\nrules:\n  - id: api\n    connect: { to: 127.0.0.1, ports: [9] }\n    decision: allow\n",
    );
    env.start_daemon();
    env.add_agent("ex-in", "p.yaml");
    // (A raw string: a `\` line continuation would eat the indentation.)
    let script = r#"import socket, sys
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sys.argv[1])
    s.sendall(b'{"op":"drained"}\n')
    print(s.recv(8192).decode().strip())
    s.close()
"#;
    let socket = env.socket();
    let out = env.cli(&[
        "run",
        "--agent",
        "ex-in",
        "--",
        "/usr/bin/python3",
        "-c",
        script,
        socket.to_str().unwrap(),
        "20",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answers = stdout(&out);
    assert_eq!(answers.lines().count(), 20, "{answers}");
    for a in answers.lines() {
        assert!(
            a.contains("\"error\"") && a.contains("agents cannot change Warden"),
            "{a}"
        );
    }
    env.wait_for_evidence("the refusal", |e| {
        e["kind"] == "control_refused" && e["target"] == "drained"
    });
    // Outside every agent, root: the daemon answers.
    let status = env.ok(&["status"]);
    assert!(status.contains("ex-in"), "{status}");
    // The barriers run are the python run's own (outside the agent: its
    // explainer's, and its supervisor's before it reaps the command), none
    // of the agent's twenty.
    let answered = env.daemon_log().matches("drained: answered").count();
    assert!(answered <= 2, "barriers run for the agent: {answered}");
}

/// While another agent floods allowed opens under `evidence: { allowed:
/// each }` (one entry per open, so the evidence writer has a backlog of the
/// other agent's entries the whole time), a run whose last action is
/// refused still prints its explanation line before its stderr ends, round
/// after round: the explainer's barrier names its agent and waits for that
/// agent's refusals, not behind the writer's whole queue. Two ways: the
/// run's own process killed by its open, and a child killed with the shell
/// exiting 0 at once.
#[test]
fn a_last_refusal_is_explained_while_another_agent_floods_the_writer() {
    if !can_run("explainer_under_flood") {
        return;
    }
    let mut env = TestEnv::new_in("explainflood", Path::new(env!("CARGO_TARGET_TMPDIR")));
    let f = Files::new(&env);
    let secret = f.write("other/secret.txt", "SECRET");
    let flooded = f.write("other/flooded.txt", "flood\n");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:\n{}\n  - id: no-secret\n    file: {{ path: {secret}, access: [read] }}\n    decision: deny\n",
            RUNTIME_FILES.trim_end()
        ),
    );
    env.write_policy(
        "flood.yaml",
        &format!(
            "version: 1\nevidence: {{ allowed: each }}\nrules:\n{}\n  - id: the-file\n    file: {{ path: {flooded}, access: [read] }}\n    decision: allow\n",
            RUNTIME_FILES.trim_end()
        ),
    );
    env.start_daemon();
    env.add_agent("ex-busy", "p.yaml");
    env.add_agent("ex-flood", "flood.yaml");
    let probe = probe_bin().display().to_string();
    let flood_count = || {
        let out = env.ok(&["log", "--count", "--agent", "ex-flood"]);
        out.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut flood = env
        .warden()
        .args([
            "run", "--agent", "ex-flood", "--", &probe, "read-n", &flooded,
        ])
        .arg("1000000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The flood's entries are arriving before the first round.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while flood_count() < 10_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood wrote {} entries in 60 s",
            flood_count()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let before = flood_count();
    let shell = format!("{probe} read {secret}; exit 0");
    let open_line = format!("warden: denied open {secret} (rule no-secret, policy snapshot ");
    // A refusal queued behind the flood's backlog waits for it to be
    // committed: 2.6-9.2 s per barrier with a debug daemon on this loaded
    // 2-core host (0.67-0.77 s with a release one), so the explainers here
    // wait up to 30 s for their barrier rather than the default 10 s.
    let cli = |args: &[&str]| {
        env.warden()
            .env("WARDEN_EXPLAIN_BARRIER_SECS", "30")
            .args(args)
            .output()
            .unwrap()
    };
    for round in 0..ROUNDS {
        let out = cli(&["run", "--agent", "ex-busy", "--", &probe, "read", &secret]);
        assert!(killed(&out), "round {round}: {out:?}");
        let err = stderr(&out);
        let drained = || {
            env.daemon_log()
                .lines()
                .filter(|l| l.contains("drained"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            err.contains(&open_line),
            "round {round}, own kill: {err:?}\n{}",
            drained()
        );
        assert!(err.contains(" killed)"), "round {round}: {err:?}");

        let out = cli(&["run", "--agent", "ex-busy", "--", "/bin/sh", "-c", &shell]);
        assert_eq!(out.status.code(), Some(0), "round {round}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&open_line),
            "round {round}, child: {err:?}\n{}",
            drained()
        );
    }
    // The flood ran (and wrote) through every round.
    assert!(flood.try_wait().unwrap().is_none(), "the flood ended early");
    let during = flood_count() - before;
    flood.kill().unwrap();
    flood.wait().unwrap();
    assert!(during > 0, "no flood entry written during the rounds");
    // The explainers' barriers were the agent's own, answered by the daemon.
    let log = env.daemon_log();
    let answered = log
        .lines()
        .filter(|l| l.contains("drained: answered") && l.contains("for_agent=true"))
        .count();
    assert!(answered >= 1, "no agent barrier answered:\n{log}");
    eprintln!(
        "flood entries written during the rounds: {during}; agent barriers answered: {answered}"
    );
    for l in log.lines().filter(|l| l.contains("drained: answered")) {
        eprintln!("  {l}");
    }
}
