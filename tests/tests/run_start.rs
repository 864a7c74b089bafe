//! `warden run`'s start (issue #14 §4): the daemon records the run, so the
//! CLI opens no database on its way to the command. The record still names
//! the human who started it and precedes every action of the command.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::path::Path;

use warden_tests::{can_run, probe_bin, stderr, stdout, TestEnv};

const POLICY: &str = "version: 1\nrules:\n  - id: api\n    connect: { to: 127.0.0.1, ports: [9] }\n    decision: allow\n";

/// The CLI is given a state directory it cannot create or open (under a
/// regular file): the run still starts, and its `run` entry, written by the
/// daemon, is attributed to the CLI's process (the command's parent: `warden
/// run` starts it as a child in the agent's cgroup and waits for it) and
/// comes before the command's first decision.
#[test]
fn the_daemon_records_the_run_the_cli_could_not_have_written() {
    if !can_run("run_start_by_daemon") {
        return;
    }
    let mut env = TestEnv::new_in("runstart", Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", POLICY);
    env.start_daemon();
    env.add_agent("rs-agent", "p.yaml");

    let blocker = env.dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let unreachable = blocker.join("state");
    let script = format!(
        "echo $$ $PPID; exec {} connect 127.0.0.1:1",
        probe_bin().display()
    );
    let out = env
        .warden()
        .env("WARDEN_STATE_DIR", &unreachable)
        .args(["run", "--agent", "rs-agent", "--", "/bin/sh", "-c", &script])
        .output()
        .unwrap();
    // The probe's refused connect is its exit status 1.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = stdout(&out);
    let mut lines = stdout.lines();
    let (pid, parent) = lines.next().unwrap().trim().split_once(' ').unwrap();
    let pid: u64 = pid.parse().unwrap();
    let parent: u64 = parent.parse().unwrap();
    assert_eq!(
        lines.next(),
        Some(format!("errno={}", libc::EPERM).as_str()),
        "the command ran as the agent: {}",
        stderr(&out)
    );
    assert!(!unreachable.exists(), "the CLI made no state of its own");

    let run = env.wait_for_evidence("the run", |e| e["kind"] == "run");
    assert_eq!(run["agent"], "rs-agent", "{run}");
    assert_eq!(run["owner"], "rs-agent-owner@example.com", "{run}");
    assert_eq!(run["decision"], "started", "{run}");
    assert_eq!(run["uid"], 0, "{run}");
    assert_eq!(run["user"], "root", "{run}");
    assert_eq!(
        run["pid"], parent,
        "the CLI's process, the command's parent: {run}"
    );
    assert!(
        run["exe"].as_str().unwrap().ends_with("warden"),
        "recorded while the CLI waited, before its exec: {run}"
    );
    assert_eq!(run["details"]["argv"][0], "/bin/sh", "{run}");
    assert_eq!(run["details"]["run_as"], "(caller)", "{run}");
    assert_eq!(
        run["details"]["confinement"]["landlock"]["applied"], true,
        "{run}"
    );
    let denied = env.wait_for_evidence("the command's connect", |e| {
        e["kind"] == "decision" && e["agent"] == "rs-agent" && e["decision"] == "deny"
    });
    assert_eq!(denied["pid"], pid, "{denied}");
    assert!(
        run["seq"].as_u64().unwrap() < denied["seq"].as_u64().unwrap(),
        "the run is recorded before the command acts: {run} {denied}"
    );
    let verify = env.ok(&["log", "verify"]);
    assert!(verify.contains("intact"), "{verify}");
}

/// A revoked agent: refused as before, and no `run ... started` entry.
#[test]
fn a_revoked_agent_is_refused_and_no_run_is_recorded() {
    if !can_run("run_start_revoked") {
        return;
    }
    let mut env = TestEnv::new_in("runstartrv", Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", POLICY);
    env.start_daemon();
    env.add_agent("rs-revoked", "p.yaml");
    env.ok(&["kill", "rs-revoked", "--reason", "test"]);
    let out = env.cli(&["run", "--agent", "rs-revoked", "--", "/bin/true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    assert!(
        !env.evidence()
            .iter()
            .any(|e| e["kind"] == "run" && e["decision"] == "started"),
        "no run started"
    );
}

/// The denial explainer `warden run` forks (it outlives the command by a
/// grace period, to print kills recorded a moment later) holds only the
/// run's stderr: a reader of the command's stdout sees its end when the
/// command ends, not when the explainer does.
#[test]
fn the_explainer_does_not_hold_the_runs_stdout() {
    if !can_run("run_start_explainer_fds") {
        return;
    }
    let mut env = TestEnv::new_in("runstartfd", Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", POLICY);
    env.start_daemon();
    env.add_agent("rs-fds", "p.yaml");
    // The shell (this run's command) lists the children of its parent (the
    // `warden run` process), the explainer among them, then waits to be
    // ended by this test.
    let (mut run, line) = env.start_shell(
        "rs-fds",
        "cat /proc/$PPID/task/$PPID/children; echo; exec sleep 60",
    );
    let link = |pid: &str, fd: u32| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let explainers: Vec<&str> = line
        .split_whitespace()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("warden"))
        })
        .collect();
    let fds: Vec<(String, String, String)> = explainers
        .iter()
        .map(|pid| (link(pid, 0), link(pid, 1), link(pid, 2)))
        .collect();
    // End the run (ours: the `warden run` process, whose death ends its
    // command, the shell become sleep) before asserting.
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(fds.len(), 1, "one explainer among the children {line:?}");
    let (stdin, stdout, stderr) = &fds[0];
    assert_eq!(stdin, "/dev/null", "explainer stdin");
    assert_eq!(stdout, "/dev/null", "explainer stdout");
    assert!(
        stderr.starts_with("pipe:"),
        "explainer keeps stderr: {stderr}"
    );
}

/// A process inside an agent that sends `run_start` itself (not through
/// `warden run`, which asks for a delegation there) is refused, and the
/// refusal is recorded; no run entry is written for it.
#[test]
fn run_start_from_inside_an_agent_is_refused_and_recorded() {
    if !can_run("run_start_inside") {
        return;
    }
    let mut env = TestEnv::new_in("runstartin", Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", POLICY);
    env.start_daemon();
    env.add_agent("rs-in", "p.yaml");
    let script = "import socket, sys\n\
s = socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
s.sendall(b'{\"op\":\"run_start\",\"agent\":\"rs-in\",\"argv\":[\"forged\"],\"run_as\":null,\"confinement\":{}}\\n')\n\
print(s.recv(8192).decode())\n";
    let socket = env.socket();
    let out = env.cli(&[
        "run",
        "--agent",
        "rs-in",
        "--",
        "/usr/bin/python3",
        "-c",
        script,
        socket.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer = stdout(&out);
    assert!(
        answer.contains("\"error\"") && answer.contains("agents cannot change Warden"),
        "{answer}"
    );
    let refused = env.wait_for_evidence("the refusal", |e| {
        e["kind"] == "control_refused" && e["target"] == "run"
    });
    assert_eq!(refused["decision"], "deny", "{refused}");
    let runs: Vec<_> = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "run")
        .collect();
    assert_eq!(runs.len(), 1, "only the real run: {runs:#?}");
    assert_ne!(runs[0]["target"], "forged", "{runs:#?}");
}
