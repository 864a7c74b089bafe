//! The kill switch, and enforcement that outlives the daemon (pinned maps
//! and links).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use warden_tests::{
    can_run, probe_bin, stderr, stdout, wait_until, Listener, TestEnv, RUNTIME_FILES,
};

fn policy(allowed: u16) -> String {
    format!(
        "version: 1\nrules:\n  - id: api\n    connect: {{ to: 127.0.0.1, ports: [{allowed}] }}\n    decision: allow\n"
    )
}

/// Runs the probe, which moves itself into `cgroup` and then acts with no
/// exec in between: the kernel alone decides, as for a process the agent
/// forks or a service restarted into the cgroup (not `warden run`).
fn probe_in_cgroup(cgroup: &Path, args: &[&str]) -> std::process::Output {
    Command::new(probe_bin())
        .arg("join")
        .arg(cgroup)
        .args(args)
        .output()
        .unwrap()
}

/// Execs the probe inside `cgroup` (moved there by a shell first).
fn exec_in_cgroup(cgroup: &Path) -> std::process::ExitStatus {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec \"$0\" sleep 0",
        cgroup.display()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(probe_bin())
        .status()
        .unwrap()
}

fn long_running(env: &TestEnv, agent: &str) -> Child {
    let probe = probe_bin();
    env.warden()
        .args([
            "run",
            "--agent",
            agent,
            "--",
            probe.to_str().unwrap(),
            "sleep",
            "120",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn setup(name: &str) -> (TestEnv, Listener, String) {
    let l = Listener::tcp4();
    let mut env = TestEnv::new(name);
    env.write_policy("p.yaml", &policy(l.port));
    env.start_daemon();
    env.add_agent("bot", "p.yaml");
    let addr = format!("127.0.0.1:{}", l.port);
    (env, l, addr)
}

#[test]
fn kill_revokes_in_the_kernel_and_ends_the_agents_processes() {
    if !can_run("kill") {
        return;
    }
    let (env, _l, addr) = setup("kill");
    let cg = env.agent_cgroup("bot");
    assert_eq!(
        stdout(&probe_in_cgroup(&cg, &["connect", &addr])),
        "ok",
        "allowed before"
    );
    let mut running = long_running(&env, "bot");
    wait_until("the agent runs", || {
        warden::cgroup::procs(&cg).unwrap().len() == 1
    });

    let out = env.ok(&["kill", "bot", "--reason", "suspected prompt injection"]);
    assert!(
        out.contains("every hook now refuses it") && out.contains("1 process(es) killed"),
        "{out}"
    );
    // Gone by the time kill returned.
    assert!(
        running.try_wait().unwrap().is_some(),
        "the agent's process is gone"
    );
    assert!(warden::cgroup::procs(&cg).unwrap().is_empty());

    // The kernel refuses the next action, even from a process that did not
    // go through `warden run`.
    let out = probe_in_cgroup(&cg, &["connect", &addr]);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM));
    // And nothing new runs: an exec in the cgroup is killed at the exec.
    let status = exec_in_cgroup(&cg);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status:?}"
    );
    env.wait_for_evidence("revoked decision", |e| {
        e["kind"] == "decision" && e["rule_id"] == "revoked"
    });
    let out = env.cli(&["run", "--agent", "bot", "--", "true"]);
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));

    let kill = env.wait_for_evidence("kill entry", |e| e["kind"] == "kill");
    assert_eq!(kill["details"]["reason"], "suspected prompt injection");
    assert_eq!(kill["details"]["processes"].as_array().unwrap().len(), 1);
    assert_eq!(kill["user"], "root");
    assert_eq!(kill["owner"], "bot-owner@example.com");

    env.ok(&["revive", "bot", "--reason", "cleared"]);
    assert_eq!(
        stdout(&probe_in_cgroup(&cg, &["connect", &addr])),
        "ok",
        "allowed again after revive"
    );
    env.wait_for_evidence("revive entry", |e| e["kind"] == "revive");
}

#[test]
fn kill_with_freeze_keeps_the_processes_for_forensics() {
    if !can_run("kill_freeze") {
        return;
    }
    let (env, _l, _addr) = setup("freeze");
    let cg = env.agent_cgroup("bot");
    let mut running = long_running(&env, "bot");
    wait_until("the agent runs", || {
        warden::cgroup::procs(&cg).unwrap().len() == 1
    });
    env.ok(&["kill", "bot", "--reason", "forensics", "--freeze"]);
    let events = std::fs::read_to_string(cg.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    assert!(running.try_wait().unwrap().is_none(), "frozen, not killed");
    env.ok(&["revive", "bot", "--reason", "done"]);
    let events = std::fs::read_to_string(cg.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 0"), "{events}");
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(running.id() as i32, libc::SIGKILL) };
    let _ = running.wait();
}

#[test]
fn kill_works_with_the_daemon_stopped_and_the_daemon_picks_it_up() {
    if !can_run("kill_no_daemon") {
        return;
    }
    let (mut env, _l, addr) = setup("killdown");
    let cg = env.agent_cgroup("bot");
    env.stop_daemon();
    // The pinned programs still enforce with no daemon.
    assert_eq!(stdout(&probe_in_cgroup(&cg, &["connect", &addr])), "ok");
    assert_eq!(
        stdout(&probe_in_cgroup(&cg, &["connect", "127.0.0.1:9"])),
        format!("errno={}", libc::EPERM)
    );

    let out = env.ok(&["kill", "bot", "--reason", "daemon down drill"]);
    assert!(
        out.contains("every hook now refuses it") && out.contains("the daemon is not running"),
        "{out}"
    );
    assert_eq!(
        stdout(&probe_in_cgroup(&cg, &["connect", &addr])),
        format!("errno={}", libc::EPERM)
    );

    env.start_daemon();
    let status = env.ok(&["status"]);
    assert!(status.contains("REVOKED"), "{status}");
    assert_eq!(
        stdout(&probe_in_cgroup(&cg, &["connect", &addr])),
        format!("errno={}", libc::EPERM),
        "still revoked after restart"
    );
    env.ok(&["log", "verify"]);
}

#[test]
fn a_daemon_killed_under_load_leaves_enforcement_on_and_the_record_explains_the_gap() {
    if !can_run("daemon_sigkill") {
        return;
    }
    let (mut env, _l, addr) = setup("sigkill");
    let cg = env.agent_cgroup("bot");
    env.stop_daemon_with(libc::SIGKILL);

    // While no daemon runs: deny rules hold, allow rules allow, and each
    // decision waits in the pinned ring buffer.
    assert_eq!(
        stdout(&probe_in_cgroup(&cg, &["connect", "127.0.0.1:9"])),
        format!("errno={}", libc::EPERM)
    );
    assert_eq!(stdout(&probe_in_cgroup(&cg, &["connect", &addr])), "ok");

    env.start_daemon();
    let gap = env.wait_for_evidence("downtime gap", |e| {
        e["kind"] == "gap" && e["action"] == "monitoring.gap"
    });
    assert!(
        gap["details"]["previous_daemon"]
            .as_str()
            .unwrap()
            .contains("killed"),
        "{gap}"
    );
    // The decisions made while it was down reach the log, with their rules.
    env.wait_for_evidence("queued deny", |e| {
        e["kind"] == "decision"
            && e["target"] == "127.0.0.1:9/tcp"
            && e["rule_id"] == "default-deny"
    });
    env.wait_for_evidence("queued allow", |e| {
        e["kind"] == "decision" && e["target"] == format!("{addr}/tcp") && e["rule_id"] == "api"
    });
    // The new daemon replaced the old links: one set per program, its own.
    let links: Vec<String> = std::fs::read_dir(env.pin_dir().join("links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cg-"))
        .collect();
    let pid = env.daemon_pid().unwrap();
    // The four sock_addr programs and sock_create.
    assert_eq!(
        links.len(),
        warden_common::names::CGROUP_NET_PROGRAMS.len() + 1,
        "{links:?}"
    );
    assert!(
        links.iter().all(|n| n.ends_with(&format!("-{pid}"))),
        "{links:?}"
    );
    // And exactly one decision per action: no double enforcement.
    assert_eq!(
        stdout(&probe_in_cgroup(&cg, &["connect", "127.0.0.1:9"])),
        format!("errno={}", libc::EPERM)
    );
    thread::sleep(Duration::from_millis(300));
    let denies = env
        .evidence()
        .iter()
        .filter(|e| e["kind"] == "decision" && e["target"] == "127.0.0.1:9/tcp")
        .count();
    assert_eq!(denies, 2, "one entry per denied connect");
    env.ok(&["log", "verify"]);
}

#[test]
fn uninstall_detaches_everything_and_refuses_while_the_daemon_runs() {
    if !can_run("uninstall") {
        return;
    }
    let (mut env, l, _addr) = setup("uninstall");
    let cg = env.agent_cgroup("bot");
    // File rules too, so that the global `sys_exit` program is attached.
    env.write_policy("p.yaml", &format!("{}{RUNTIME_FILES}", policy(l.port)));
    env.ok(&["policy", "reload"]);
    let programs = env.pinned_program_ids();
    assert!(
        programs.len() >= 3,
        "exec, sys_exit and the agent's network programs: {programs:?}"
    );
    let out = env.cli(&["uninstall"]);
    assert!(
        stderr(&out).contains("stop it before uninstalling"),
        "{}",
        stderr(&out)
    );
    env.stop_daemon();
    assert_eq!(
        stdout(&probe_in_cgroup(&cg, &["connect", "127.0.0.1:9"])),
        format!("errno={}", libc::EPERM)
    );
    let out = env.ok(&["uninstall"]);
    assert!(out.contains("removed"), "{out}");
    assert!(!env.pin_dir().exists(), "pin directory removed");
    // Nothing enforces any more: the programs are detached.
    let out = probe_in_cgroup(&cg, &["connect", "127.0.0.1:9"]);
    assert_eq!(
        stdout(&out),
        format!("errno={}", libc::ECONNREFUSED),
        "no Warden program left attached"
    );
    // Not even loaded: nothing holds them any more (the kernel frees them
    // a moment after the last reference goes).
    wait_until("every program that was attached is unloaded", || {
        aya::programs::loaded_programs()
            .flatten()
            .all(|p| !programs.contains(&p.id()))
    });
}
