//! `warden kill` with the daemon running (issue #14 §4): the CLI sets the
//! kernel flag and ends the processes itself, then the daemon marks the
//! agent revoked and writes the `kill` entry durably through its evidence
//! writer (from the CLI's own connection both waited on the writer's lock
//! while an agent flooded). With no daemon the CLI records it itself.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{path::Path, process::Stdio};

use warden_tests::{can_run, probe_bin, stderr, stdout, wait_until, Listener, TestEnv};

fn policy(allowed: u16) -> String {
    format!(
        "version: 1\nrules:\n  - id: api\n    connect: {{ to: 127.0.0.1, ports: [{allowed}] }}\n    decision: allow\n"
    )
}

/// `warden kill ARGS` in a mount namespace of its own where the state
/// directory is read-only: the CLI can read the registry but write
/// nothing. Returns the CLI's pid (the shell's, which execs it) and output.
fn kill_read_only(env: &TestEnv, args: &[&str]) -> (u32, std::process::Output) {
    let state = env.state_dir();
    let state = state.to_str().unwrap();
    let script = format!(
        "mount --bind {state} {state} && mount -o remount,bind,ro {state} && echo $$ && exec \"$0\" kill \"$@\""
    );
    let warden = env.warden();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(warden.get_program())
        .args(args)
        .envs(warden.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let pid = stdout(&out)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (pid, out)
}

/// The CLI cannot write the database (read-only state directory): with the
/// daemon running the kill still revokes, ends the agent's process, marks
/// the agent revoked and is recorded, durably before `warden kill` returns,
/// attributed to the CLI's process (root, the `warden` binary). The same
/// kill with the daemon stopped fails: only the daemon could have written
/// it. With the daemon stopped and a writable directory, the CLI records
/// the kill itself; the chain verifies.
#[test]
fn the_daemon_records_a_kill_the_cli_could_not_have_written() {
    if !can_run("kill_recorded_by_daemon") {
        return;
    }
    let l = Listener::tcp4();
    let mut env = TestEnv::new_in("killrec", Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", &policy(l.port));
    env.start_daemon();
    env.add_agent("kr", "p.yaml");
    let cg = env.agent_cgroup("kr");
    let probe = probe_bin();
    let mut running = env
        .warden()
        .args(["run", "--agent", "kr", "--", probe.to_str().unwrap()])
        .args(["sleep", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the agent runs", || {
        warden::cgroup::procs(&cg).unwrap().len() == 1
    });

    let (pid, out) = kill_read_only(&env, &["kr", "--reason", "read-only drill"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 process(es) killed"),
        "{}",
        stdout(&out)
    );
    assert!(running.try_wait().unwrap().is_some(), "the agent is gone");
    // Durable before the CLI returned: read at once, no waiting.
    let kills: Vec<serde_json::Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "kill")
        .collect();
    assert_eq!(kills.len(), 1, "{kills:#?}");
    let kill = &kills[0];
    assert_eq!(kill["agent"], "kr", "{kill}");
    assert_eq!(kill["owner"], "kr-owner@example.com", "{kill}");
    assert_eq!(kill["details"]["reason"], "read-only drill", "{kill}");
    assert_eq!(
        kill["details"]["processes"].as_array().unwrap().len(),
        1,
        "{kill}"
    );
    assert_eq!(
        kill["details"]["kernel"],
        "revoked flag set in the pinned AGENTS map"
    );
    assert_eq!(kill["uid"], 0, "{kill}");
    assert_eq!(kill["user"], "root", "{kill}");
    assert_eq!(kill["pid"], pid, "the CLI's process: {kill}");
    assert!(kill["exe"].as_str().unwrap().ends_with("warden"), "{kill}");
    let list = env.ok(&["agent", "list"]);
    assert!(list.to_lowercase().contains("revoked"), "{list}");
    // The kernel refuses the agent's next action.
    let out = env.cli(&["run", "--agent", "kr", "--", "/bin/true"]);
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));

    // The same kill with no daemon to write it: refused, not recorded.
    env.stop_daemon();
    env.ok(&["revive", "kr", "--reason", "drill over"]);
    let (_, out) = kill_read_only(&env, &["kr", "--reason", "no daemon, read-only"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        !env.evidence()
            .iter()
            .any(|e| e["kind"] == "kill" && e["details"]["reason"] == "no daemon, read-only"),
        "nothing recorded"
    );

    // With no daemon and a writable directory: the CLI records it itself.
    let out = env.ok(&["kill", "kr", "--reason", "daemon down"]);
    assert!(out.contains("the daemon is not running"), "{out}");
    let kill = env
        .evidence()
        .into_iter()
        .find(|e| e["kind"] == "kill" && e["details"]["reason"] == "daemon down")
        .expect("the CLI's own kill entry");
    assert_eq!(kill["user"], "root", "{kill}");
    assert!(kill["exe"].as_str().unwrap().ends_with("warden"), "{kill}");
    let verify = env.ok(&["log", "verify"]);
    assert!(verify.contains("intact"), "{verify}");
}

/// A process inside an agent that sends `kill_record` itself is refused
/// and the refusal recorded: no kill entry, the agent not revoked.
#[test]
fn kill_record_from_inside_an_agent_is_refused() {
    if !can_run("kill_record_inside") {
        return;
    }
    let mut env = TestEnv::new_in("killrecin", Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", &policy(9));
    env.start_daemon();
    env.add_agent("kr-in", "p.yaml");
    env.add_agent("kr-victim", "p.yaml");
    let script = r#"import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"op":"kill_record","agent":"kr-victim","reason":"forged","freeze":false,"processes":[],"kernel_applied":true,"to_kernel_us":1}\n')
print(s.recv(8192).decode())
"#;
    let socket = env.socket();
    let out = env.cli(&[
        "run",
        "--agent",
        "kr-in",
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
    env.wait_for_evidence("the refusal", |e| {
        e["kind"] == "control_refused" && e["target"] == "kill"
    });
    assert!(
        !env.evidence().iter().any(|e| e["kind"] == "kill"),
        "no kill entry"
    );
    let list = env.ok(&["agent", "list"]);
    assert!(!list.to_lowercase().contains("revoked"), "{list}");
}
