//! The policy language against real programs (issue #14 §4), on this
//! kernel's fallback: a `prefix:` rule matches its directory itself, a pipe
//! reopened through `/dev/fd/N` is not a file, and `/proc/self/` means the
//! acting process's own `/proc/PID/`. Each is attacked from inside an agent
//! with the neighbouring objects the rule must not reach.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::process::Command;

use warden_tests::{can_run, killed, stderr, stdout, Files, TestEnv};

/// What every Rust or C program needs to start, without `/proc/`: the
/// tests here decide /proc themselves.
const LOADER: &str = "
  - id: loader-cache
    file: { path: /etc/ld.so.cache, access: [read] }
    decision: allow
  - id: system-libraries
    file: { prefix: /usr/lib/, access: [read] }
    decision: allow
";

#[test]
fn a_prefix_rule_matches_its_directory_itself() {
    if !can_run("prefix_dir") {
        return;
    }
    let mut env = TestEnv::new("prefixdir");
    let f = Files::new(&env);
    f.write("work/a.txt", "A");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:
{LOADER}
  - id: proc
    file: {{ prefix: /proc/, access: [read] }}
    decision: allow
  - id: work
    file: {{ prefix: {work}/, access: [read] }}
    decision: allow
",
            work = f.path("work"),
        ),
    );
    env.start_daemon();
    env.add_agent("pd", "p.yaml");
    let work = f.path("work");
    // Opening the directory itself (what `ls` and `git` do): allowed, and
    // read() then fails with EISDIR, not with a kill.
    let out = env.probe_as("pd", &["read", &work]);
    assert!(!killed(&out), "the prefix's own directory: {out:?}");
    assert_eq!(stdout(&out), "errno=21", "{}", stderr(&out));
    let e = env.wait_for_evidence("the directory's open", |e| {
        e["action"] == "open" && e["target"] == work.as_str()
    });
    assert_eq!(e["decision"], "allow", "{e}");
    assert_eq!(e["rule_id"], "work", "{e}");
    // Byte-wise still: a sibling whose name extends it is not covered, nor
    // is the parent.
    let workx = f.path("workx");
    std::fs::create_dir_all(&workx).unwrap();
    for other in [workx.as_str(), f.path("other").as_str()] {
        let out = env.probe_as("pd", &["read", other]);
        assert!(killed(&out), "{other} must be killed: {out:?}");
    }
    let out = env.probe_as("pd", &["read", &f.path("")]);
    assert!(killed(&out), "the parent must be killed: {out:?}");
}

#[test]
fn a_pipe_reopened_through_dev_fd_is_not_a_file() {
    if !can_run("dev_fd_pipe") {
        return;
    }
    let mut env = TestEnv::new("devfd");
    let f = Files::new(&env);
    let fifo = f.path("other/fifo");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:
{LOADER}
  - id: proc
    file: {{ prefix: /proc/, access: [read] }}
    decision: allow
"
        ),
    );
    env.start_daemon();
    env.add_agent("pipe", "p.yaml");
    // rustc's jobserver case: the pipe's path resolves to `/`, which the
    // policy denies (by default); a pipe is not a file, so it is not decided.
    for dir in ["/dev/fd", "/proc/self/fd"] {
        let out = env.probe_as("pipe", &["reopen-pipe", dir]);
        assert_eq!(stdout(&out), "ok PIPE", "{dir}: {out:?}");
    }
    // Not a decision, so not a record either.
    assert!(
        !env.evidence()
            .iter()
            .any(|e| e["action"] == "open" && e["target"] == "/"),
        "a pipe open was recorded as a file"
    );
    // A named FIFO on disk is a file with a path: decided (and denied by
    // default; the kill comes at the open's exit, after a writer came).
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(&fifo, "FIFO"))
    };
    let out = env.probe_as("pipe", &["read", &fifo]);
    assert!(killed(&out), "a named FIFO is decided: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let _ = writer.join();
    // The root directory itself is still denied.
    let out = env.probe_as("pipe", &["read", "/"]);
    assert!(killed(&out), "`/` must be killed: {out:?}");
    let e = env.wait_for_evidence("the root's denial", |e| {
        e["action"] == "open" && e["target"] == "/" && e["decision"] == "deny"
    });
    assert_eq!(e["rule_id"], "default-deny", "{e}");
}

#[test]
fn proc_self_means_the_acting_process_only() {
    if !can_run("proc_self") {
        return;
    }
    let mut env = TestEnv::new("procself");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:
{LOADER}
  - id: own-proc
    file: {{ prefix: /proc/self/, access: [read] }}
    decision: allow
"
        ),
    );
    env.start_daemon();
    env.add_agent("ps", "p.yaml");
    // Its own status, by /proc/self and by its own pid (the kernel
    // resolves both to /proc/PID/status): allowed, recorded as /proc/self.
    let out = env.probe_as("ps", &["read", "/proc/self/status"]);
    assert!(stdout(&out).starts_with("ok Name:"), "{out:?}");
    let e = env.wait_for_evidence("the own status", |e| {
        e["action"] == "open" && e["target"] == "/proc/self/status"
    });
    assert_eq!(e["decision"], "allow", "{e}");
    assert_eq!(e["rule_id"], "own-proc", "{e}");
    let out = env.probe_as("ps", &["read", "/proc/thread-self/status"]);
    assert!(stdout(&out).starts_with("ok Name:"), "{out:?}");
    // Another process's: the test's own, PID 1's, and the daemon's.
    let me = std::process::id().to_string();
    let daemon = env.daemon_pid().unwrap().to_string();
    for pid in ["1", me.as_str(), daemon.as_str()] {
        let path = format!("/proc/{pid}/status");
        let out = env.probe_as("ps", &["read", &path]);
        assert!(killed(&out), "{path} must be killed: {out:?}");
        assert!(out.stdout.is_empty(), "{path}: {out:?}");
        env.wait_for_evidence(&format!("{path} denied"), |e| {
            e["action"] == "open" && e["target"] == path.as_str() && e["decision"] == "deny"
        });
    }
    // Other /proc files are not /proc/self.
    let out = env.probe_as("ps", &["read", "/proc/version"]);
    assert!(killed(&out), "/proc/version: {out:?}");
}

/// A refusal is explained on the run's stderr, where the agent (or the
/// model behind it) reads it: the action, the target, the rule, the policy
/// snapshot, and the process killed.
#[test]
fn denials_are_explained_on_the_runs_stderr() {
    if !can_run("explained") {
        return;
    }
    let mut env = TestEnv::new("explain");
    let f = Files::new(&env);
    let secret = f.write("other/secret.txt", "SECRET");
    let denied = warden_tests::Listener::tcp4();
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:
{LOADER}
  - id: proc
    file: {{ prefix: /proc/, access: [read] }}
    decision: allow
  - id: no-secret
    file: {{ path: {secret}, access: [read] }}
    decision: deny
"
        ),
    );
    env.start_daemon();
    env.add_agent("ex", "p.yaml");
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let snapshot = status["agents"][0]["policy_snapshot"].as_str().unwrap()[..8].to_string();

    // A killed open: the line names it all.
    let out = env.probe_as("ex", &["read", &secret]);
    assert!(killed(&out), "{out:?}");
    let err = stderr(&out);
    let want =
        format!("warden: denied open {secret} (rule no-secret, policy snapshot {snapshot}..; pid ");
    assert!(err.contains(&want), "{err}");
    assert!(err.contains(" killed)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A refused connect (EPERM, the process lives on): explained too.
    let to = format!("127.0.0.1:{}", denied.port);
    let out = env.probe_as("ex", &["connect", &to]);
    assert_eq!(stdout(&out), "errno=1", "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "warden: denied connect4 {to}/tcp (rule default-deny, policy snapshot {snapshot}..; pid "
        )),
        "{err}"
    );
    // Allowed work says nothing.
    let out = env.probe_as("ex", &["read", "/proc/self/status"]);
    assert!(stdout(&out).starts_with("ok"), "{out:?}");
    assert_eq!(stderr(&out), "", "{out:?}");
}
