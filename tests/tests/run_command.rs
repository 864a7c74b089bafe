//! `warden run`'s command is a child born in the agent's cgroup
//! (`clone3(CLONE_INTO_CGROUP)`, issue #14 §5: the write to
//! `cgroup.procs` waited for an RCU grace period); `warden run` stays
//! outside the agent as its supervisor. Attacked here: the command is the
//! agent's from its first instruction; the run's pid still stands for the
//! command (SIGKILL of it ends the command, SIGTERM is passed on, exit codes
//! and signals come back); `warden kill` ends both; the agent cannot use
//! the supervisor (root, outside its confinement).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use warden_tests::{can_run, command_of, stderr, stdout, wait_until, TestEnv};

const POLICY: &str = "version: 1\nrules:\n  - id: system-bin\n    exec: { prefix: /usr/bin/ }\n    decision: allow\n  - id: bin\n    exec: { prefix: /bin/ }\n    decision: allow\n";

fn setup(name: &str, agent: &str) -> TestEnv {
    let mut env = TestEnv::new_in(name, Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", POLICY);
    env.start_daemon();
    env.add_agent(agent, "p.yaml");
    env
}

/// A pidfd of `pid` (a process this test started, directly or through
/// `warden run`): readable once it has exited, whatever reuses its pid.
fn pidfd(pid: u32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) with no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(fd >= 0, "pidfd_open {pid}");
    // SAFETY: a descriptor just returned to us.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
}

fn exited(fd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// The agent's cgroup as /proc/PID/cgroup names it (`0::/...`).
fn proc_cgroup_line(env: &TestEnv, agent: &str) -> String {
    let mount = warden::cgroup::cgroup2_mount().unwrap();
    let cg = env.agent_cgroup(agent);
    format!("0::/{}", cg.strip_prefix(&mount).unwrap().display())
}

/// The command's exec is decided as the agent's (the kernel's exec hook
/// saw it in the agent's cgroup, so it was there before its first
/// instruction), what it reads in /proc/self/cgroup is the agent's cgroup,
/// and `warden run` itself is not in it.
#[test]
fn the_command_is_the_agents_from_its_first_instruction() {
    if !can_run("run_command_cgroup") {
        return;
    }
    let env = setup("runcmdcg", "rc-cg");
    let out = env
        .warden()
        .args([
            "run",
            "--agent",
            "rc-cg",
            "--",
            "/usr/bin/cat",
            "/proc/self/cgroup",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let want = proc_cgroup_line(&env, "rc-cg");
    assert!(
        stdout(&out).lines().any(|l| l == want),
        "cat ran in {want}: {}",
        stdout(&out)
    );
    let cat = std::fs::canonicalize("/usr/bin/cat").unwrap();
    let exec = env.wait_for_evidence("the command's exec", |e| {
        e["kind"] == "decision"
            && e["action"] == "exec"
            && e["agent"] == "rc-cg"
            && e["target"] == cat.to_str().unwrap()
    });
    assert_eq!(exec["decision"], "allow", "{exec}");
    assert_eq!(exec["rule_id"], "system-bin", "{exec}");
    let run = env.wait_for_evidence("the run", |e| e["kind"] == "run");
    assert_ne!(
        run["pid"], exec["pid"],
        "the command is a child: {run} {exec}"
    );
    assert!(
        run["seq"].as_u64().unwrap() < exec["seq"].as_u64().unwrap(),
        "{run} {exec}"
    );

    // While it runs: the command is in the agent's cgroup, `warden run`
    // (its parent) is not.
    let (mut run, _) = env.start_shell("rc-cg", "echo up; exec sleep 60");
    let command = command_of(run.id());
    let cgroup_of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup_of(command).lines().any(|l| l == want));
    assert!(!cgroup_of(run.id()).lines().any(|l| l == want));
    assert!(!warden::cgroup::procs(&env.agent_cgroup("rc-cg"))
        .unwrap()
        .contains(&run.id()));
    run.kill().unwrap();
    run.wait().unwrap();
}

/// SIGKILL of the `warden run` pid (all a caller knows) ends the command,
/// as when that pid was the command.
#[test]
fn sigkill_of_the_run_ends_the_command() {
    if !can_run("run_command_sigkill") {
        return;
    }
    let env = setup("runcmdkill", "rc-kill");
    let (mut run, _) = env.start_shell("rc-kill", "echo up; exec sleep 600");
    let command = command_of(run.id());
    let command_fd = pidfd(command);
    // SAFETY: kill(2) on the `warden run` this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGKILL) };
    assert_eq!(run.wait().unwrap().signal(), Some(libc::SIGKILL));
    wait_until("the command ends with its run", || exited(&command_fd));
    wait_until("the agent's cgroup is empty", || {
        warden::cgroup::procs(&env.agent_cgroup("rc-kill"))
            .unwrap()
            .is_empty()
    });
}

/// SIGTERM (and SIGINT, SIGQUIT) sent to the run reach the command: a
/// command that handles it ends with its own code, one that does not dies
/// of it and the run ends by the same signal.
#[test]
fn sigterm_is_passed_on_and_the_commands_end_comes_back() {
    if !can_run("run_command_sigterm") {
        return;
    }
    let env = setup("runcmdterm", "rc-term");
    let (run, _) = env.start_shell(
        "rc-term",
        "trap 'exit 7' TERM; echo up; while :; do sleep 0.1; done",
    );
    // SAFETY: kill(2) on the `warden run` this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));

    let (mut run, _) = env.start_shell("rc-term", "echo up; exec sleep 600");
    let command_fd = pidfd(command_of(run.id()));
    // SAFETY: as above.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    assert_eq!(run.wait().unwrap().signal(), Some(libc::SIGINT));
    assert!(exited(&command_fd), "the command died of the SIGINT");

    // Exit codes and signals of the command itself.
    let code = env.cli(&[
        "run", "--agent", "rc-term", "--", "/bin/sh", "-c", "exit 42",
    ]);
    assert_eq!(code.status.code(), Some(42), "{}", stderr(&code));
    let signalled = env.cli(&[
        "run",
        "--agent",
        "rc-term",
        "--",
        "/bin/sh",
        "-c",
        "kill -USR1 $$",
    ]);
    assert_eq!(signalled.status.signal(), Some(libc::SIGUSR1));
    // A command that cannot be started is reported as before.
    let missing = env.cli(&["run", "--agent", "rc-term", "--", "/nonexistent/tool"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("start /nonexistent/tool: No such file or directory"),
        "{}",
        stderr(&missing)
    );
}

/// `warden kill` ends the command (in the agent's cgroup) and `warden run`
/// then ends with the command's SIGKILL; the kill is recorded.
#[test]
fn warden_kill_ends_the_command_and_its_run() {
    if !can_run("run_command_warden_kill") {
        return;
    }
    let env = setup("runcmdwk", "rc-wk");
    let (run, _) = env.start_shell("rc-wk", "echo up; exec sleep 600");
    let command = command_of(run.id());
    env.ok(&["kill", "rc-wk", "--reason", "drill"]);
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", stderr(&out));
    let kill = env.wait_for_evidence("the kill", |e| e["kind"] == "kill");
    let pids: Vec<u64> = kill["details"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_u64().or_else(|| p.as_u64()))
        .collect();
    assert_eq!(pids, vec![u64::from(command)], "{kill}");
}

/// The supervisor is root and outside the agent's confinement: the agent
/// can neither signal it nor read its memory (Landlock scopes signals and
/// ptrace to the agent's domain); it goes on waiting and ends as the
/// command ends.
#[test]
fn the_agent_cannot_use_its_supervisor() {
    if !can_run("run_command_supervisor") {
        return;
    }
    let env = setup("runcmdsup", "rc-sup");
    let script = "kill -STOP $PPID 2>/dev/null; echo stop=$?; \
                  kill -KILL $PPID 2>/dev/null; echo kill=$?; \
                  cmp -s /proc/$PPID/environ /proc/$$/environ; echo same-environ=$?; \
                  head -c1 /proc/$PPID/mem >/dev/null 2>&1; echo mem=$?; \
                  exit 3";
    let out = env.cli(&["run", "--agent", "rc-sup", "--", "/bin/sh", "-c", script]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the supervisor waited and passed the code back: {}",
        stderr(&out)
    );
    let said = stdout(&out);
    for refused in ["stop=", "kill=", "mem="] {
        let line = said.lines().find(|l| l.starts_with(refused)).unwrap();
        assert_ne!(line, format!("{refused}0"), "refused: {said}");
    }
    // The kernel lets a process read the environment of another of the
    // same uid (PTRACE_MODE_READ, which Landlock does not restrict): the
    // supervisor's is the one the agent was given, nothing more.
    assert!(said.contains("same-environ=0"), "{said}");
}

/// After `warden kill` and `warden revive` the agent runs again. This
/// kernel kills a child cloned into a cgroup that `cgroup.kill` was ever
/// written to (the kill count it compares is the caller's cgroup's):
/// `warden run` sees its command die before its first instruction and
/// enters that cgroup the old way.
#[test]
fn an_agent_killed_and_revived_runs_again() {
    if !can_run("run_command_revived") {
        return;
    }
    let env = setup("runcmdrev", "rc-rev");
    env.ok(&["kill", "rc-rev", "--reason", "drill"]);
    env.ok(&["revive", "rc-rev", "--reason", "drill over"]);
    for _ in 0..3 {
        let out = env.cli(&["run", "--agent", "rc-rev", "--", "/bin/sh", "-c", "exit 5"]);
        assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    }
    let out = env.cli(&[
        "run",
        "--agent",
        "rc-rev",
        "--",
        "/usr/bin/cat",
        "/proc/self/cgroup",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = proc_cgroup_line(&env, "rc-rev");
    assert!(stdout(&out).lines().any(|l| l == want), "{}", stdout(&out));
}
