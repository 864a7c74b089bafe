//! Agents cannot tamper with Warden: a real daemon, and attempts made from
//! inside an agent started by `warden run` (Landlock and seccomp, see
//! daemon/src/confine.rs). Each assertion names the errno the mechanism
//! returns: EPERM (1) from seccomp and from Landlock's signal scope and
//! ptrace rule, EACCES (13) from Landlock's file system rules.
//!
//! The environment lives under the target directory, not /tmp, so the
//! positive control can show that the agent still creates files in /tmp.
//! Only the test's own daemon is ever signalled.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{path::Path, process::Command};

use warden_tests::{can_run, probe_bin, stderr, stdout, Listener, TestEnv};

const EPERM: &str = "errno=1";
const EACCES: &str = "errno=13";

fn policy(port: u16) -> String {
    format!(
        "version: 1\nrules:\n  - id: api\n    connect: {{ to: 127.0.0.1, ports: [{port}] }}\n    decision: allow\n"
    )
}

fn setup(name: &str) -> (TestEnv, Listener) {
    let l = Listener::tcp4();
    let mut env = TestEnv::new_in(name, Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", &policy(l.port));
    env.start_daemon();
    env.add_agent("bot", "p.yaml");
    (env, l)
}

/// Runs the probe in the agent and returns its one-line report.
fn attempt(env: &TestEnv, args: &[&str]) -> String {
    let out = env.probe_as("bot", args);
    assert!(
        !stdout(&out).is_empty(),
        "{args:?}: no report (status {}): {}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

fn daemon_alive(env: &TestEnv, pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.trim().chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X') && env.cli(&["status"]).status.success()
}

#[test]
fn agents_cannot_signal_trace_or_load_code() {
    if !can_run("self_protection_processes") {
        return;
    }
    let (env, _l) = setup("selfproc");
    let daemon = env.daemon_pid().unwrap();
    let pid = daemon.to_string();
    let newest_thread = std::fs::read_dir(format!("/proc/{daemon}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&t| t != daemon)
        .max()
        .expect("the daemon has threads");
    // SAFETY: getpgid on our own child.
    let pgid = unsafe { libc::getpgid(daemon as i32) };

    // Signals: by pid, by any of its thread ids (kill(2) on a thread id
    // signals the whole process), by its process group, to everyone.
    assert_eq!(attempt(&env, &["kill", &pid, "15"]), EPERM);
    assert_eq!(
        attempt(&env, &["kill", &newest_thread.to_string(), "15"]),
        EPERM
    );
    // Signal 0 below: only the permission check, so a failure harms nothing.
    assert_eq!(attempt(&env, &["kill", &format!("-{pgid}"), "0"]), EPERM);
    assert_eq!(attempt(&env, &["kill", "-1", "0"]), EPERM);
    // The test started both, so they share a session: kill(0) is refused.
    assert_eq!(attempt(&env, &["kill", "0", "0"]), EPERM);
    assert!(
        daemon_alive(&env, daemon),
        "the daemon survived:\n{}",
        env.daemon_log()
    );
    // The agent may still signal its own processes.
    let out = env.cli(&[
        "run",
        "--agent",
        "bot",
        "--",
        "/bin/sh",
        "-c",
        "sleep 30 & kill $! && wait $!; echo $?",
    ]);
    assert_eq!(
        stdout(&out),
        "143",
        "kill of its own child: {}",
        stderr(&out)
    );

    // Tracing the daemon, and reading or sampling it.
    assert_eq!(attempt(&env, &["ptrace", &pid]), EPERM);
    assert_eq!(attempt(&env, &["perf", &pid]), EPERM);
    assert_eq!(
        attempt(&env, &["read", &format!("/proc/{daemon}/mem")]),
        EACCES
    );

    // Kernel code and eBPF.
    assert_eq!(attempt(&env, &["bpf", "map"]), EPERM);
    assert_eq!(attempt(&env, &["bpf", "prog"]), EPERM);
    assert_eq!(attempt(&env, &["finit-module"]), EPERM);
    // io_uring, whose opens the fallback hooks would not see. Outside the
    // agent it works: the refusal is the filter's.
    assert_eq!(attempt(&env, &["io-uring"]), EPERM);
    let outside = Command::new(probe_bin()).arg("io-uring").output().unwrap();
    assert_eq!(stdout(&outside), "ok", "io_uring outside agents");

    // The same after dropping to another user.
    let out = env.cli(&[
        "run",
        "--agent",
        "bot",
        "--user",
        "nobody",
        "--",
        probe_bin().to_str().unwrap(),
        "io-uring",
    ]);
    assert_eq!(stdout(&out), EPERM, "as nobody: {}", stderr(&out));
    assert!(daemon_alive(&env, daemon), "{}", env.daemon_log());
}

#[test]
fn agents_cannot_touch_wardens_files_or_leave_their_cgroup() {
    if !can_run("self_protection_files") {
        return;
    }
    let (env, _l) = setup("selffile");
    let state = env.state_dir();
    let s = |name: &str| state.join(name).to_str().unwrap().to_string();
    let db = s("warden.db");
    let key = s("host.key");
    assert!(Path::new(&key).exists(), "the daemon made its host key");
    std::fs::write(s("spare"), "spare").unwrap();

    // The database and keys: no writing, no reading the key, nothing new,
    // nothing removed.
    assert_eq!(attempt(&env, &["open-write", &db]), EACCES);
    assert_eq!(attempt(&env, &["open-write", &key]), EACCES);
    assert_eq!(attempt(&env, &["read", &key]), EACCES);
    assert_eq!(attempt(&env, &["read", &db]), EACCES);
    assert_eq!(attempt(&env, &["create", &s("warden.db-journal")]), EACCES);
    assert_eq!(attempt(&env, &["unlink", &s("spare")]), EACCES);
    assert!(Path::new(&s("spare")).exists());
    // Nor through a fresh SQLite handle (the `warden` CLI itself).
    let out = env.cli(&[
        "run",
        "--agent",
        "bot",
        "--",
        warden_tests::warden_bin().to_str().unwrap(),
        "agent",
        "remove",
        "bot",
    ]);
    assert!(!out.status.success(), "agent remove from inside the agent");
    assert!(env.ok(&["agent", "list"]).contains("bot"));

    // Policies: readable, not writable; the socket cannot be removed.
    let pol = env.policy_dir().join("p.yaml");
    let pol = pol.to_str().unwrap();
    assert!(attempt(&env, &["read", pol]).starts_with("ok "));
    assert_eq!(attempt(&env, &["open-write", pol]), EACCES);
    let new_pol = env.policy_dir().join("new.yaml");
    assert_eq!(
        attempt(&env, &["create", new_pol.to_str().unwrap()]),
        EACCES
    );
    assert_eq!(
        attempt(&env, &["unlink", env.socket().to_str().unwrap()]),
        EACCES
    );
    assert!(env.socket().exists());

    // The bpffs pins.
    let pins = env.pin_dir();
    assert!(pins.is_dir(), "the daemon pins under {}", pins.display());
    let pin = walk_files(&pins)
        .into_iter()
        .next()
        .expect("a pinned object");
    assert_eq!(attempt(&env, &["unlink", pin.to_str().unwrap()]), EACCES);
    assert!(pin.exists());
    assert_eq!(
        attempt(&env, &["mkdir", pins.join("x").to_str().unwrap()]),
        EACCES
    );

    // Cgroups: not into the parent, not into a child of its own (the exec
    // and open hooks would not see it there).
    let cg = env.agent_cgroup("bot");
    assert_eq!(
        attempt(&env, &["enter", env.cgroup_parent.to_str().unwrap()]),
        EACCES
    );
    assert_eq!(
        attempt(&env, &["mkdir", cg.join("escape").to_str().unwrap()]),
        EACCES
    );

    // Nothing of Warden's is left open in the agent.
    let fds = attempt(&env, &["fds"]);
    assert!(
        !fds.contains(state.to_str().unwrap()),
        "descriptors inherited into the agent:\n{fds}"
    );

    // Positive control: ordinary work goes on in a shared scratch
    // directory. Landlock can only grant, so a directory that contains one
    // of Warden's paths (e.g. /tmp when the checkout is under /tmp) gets no
    // new files directly in it (README, Self-protection): pick one that
    // does not.
    let protected = [
        env.state_dir(),
        env.policy_dir(),
        env.socket(),
        warden_tests::warden_bin(),
    ];
    let scratch = ["/tmp", "/var/tmp", "/dev/shm"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.is_dir() && !protected.iter().any(|p| p.starts_with(d)))
        .expect("a scratch directory outside Warden's paths");
    let tmp = format!(
        "{}/warden-selfprot-{}",
        scratch.display(),
        std::process::id()
    );
    let script = format!(
        "echo hello > {tmp} && cat {tmp} && rm {tmp} && mkdir {tmp}.d && rmdir {tmp}.d \
         && echo x > /dev/null && ls / > /dev/null && id -u"
    );
    let out = env.cli(&["run", "--agent", "bot", "--", "/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n0");
    assert!(attempt(&env, &["create", &format!("{tmp}.probe")]) == "ok");
}

#[test]
fn the_run_record_says_what_confined_it() {
    if !can_run("self_protection_record") {
        return;
    }
    let (env, _l) = setup("selfrec");
    let out = env.probe_as("bot", &["fds"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = env.wait_for_evidence("the run", |e| e["kind"] == "run");
    let c = &run["details"]["confinement"];
    assert_eq!(c["landlock"]["applied"], true, "{c}");
    assert!(c["landlock"]["abi"].as_i64().unwrap() >= 6, "{c}");
    assert_eq!(c["landlock"]["signal_scope"], true, "{c}");
    let state = env.state_dir().canonicalize().unwrap();
    assert!(
        c["landlock"]["no_access"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == state.to_str().unwrap()),
        "{c}"
    );
    assert_eq!(c["seccomp"]["applied"], true, "{c}");
    let denied = c["seccomp"]["denied"].as_array().unwrap();
    for name in ["bpf", "finit_module", "ptrace", "io_uring_setup"] {
        assert!(denied.iter().any(|d| d == name), "{name} in {c}");
    }
    assert_eq!(
        c["seccomp"]["signals_to_daemon"]["daemon_pid"],
        env.daemon_pid().unwrap(),
        "{c}"
    );
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
