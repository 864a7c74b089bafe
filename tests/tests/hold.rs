//! Holds on this kernel: the agent's thread stops at the connect() syscall
//! until a human decides; approval lets the same syscall succeed, rejection
//! makes it fail with EPERM.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    os::unix::process::CommandExt,
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use warden_tests::{
    approvals, can_run, probe_bin, state_of, stderr, stdout, wait_until, Listener, TestEnv,
};

fn hold_policy(port: u16, timeout: &str, decision: &str) -> String {
    format!(
        "version: 1
approvers:
  users: [root]
hold_timeout: {timeout}
rules:
  - id: payments-api
    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: tcp }}
    decision: {decision}
"
    )
}

/// Starts the probe as `agent` without waiting for it.
fn spawn_probe(env: &TestEnv, agent: &str, target: &str) -> Child {
    let probe = probe_bin();
    env.warden()
        .args([
            "run",
            "--agent",
            agent,
            "--",
            probe.to_str().unwrap(),
            "connect",
            target,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warden run")
}

/// Waits for the held connect to be pending and the thread to be stopped.
fn wait_held(env: &TestEnv, child: &Child) -> Value {
    warden_tests::wait_held(
        env,
        warden_tests::command_of(child.id()),
        &['T'],
        "the connect is held",
    )
}

fn finish(child: Child) -> (String, Option<i32>) {
    let out = child.wait_with_output().expect("wait probe");
    (stdout(&out), out.status.code())
}

fn setup(name: &str, timeout: &str) -> (TestEnv, Listener, String) {
    let l = Listener::tcp4();
    let mut env = TestEnv::new(name);
    env.write_policy("hold.yaml", &hold_policy(l.port, timeout, "hold"));
    env.start_daemon();
    env.add_agent("payer", "hold.yaml");
    let target = format!("127.0.0.1:{}", l.port);
    (env, l, target)
}

#[test]
fn approved_hold_resumes_the_syscall_which_succeeds() {
    if !can_run("hold_approve") {
        return;
    }
    let (env, _l, target) = setup("holdok", "5m");
    let child = spawn_probe(&env, "payer", &target);
    let pending = wait_held(&env, &child);
    assert_eq!(pending["job"]["target"], format!("{target}/tcp"));
    assert_eq!(pending["job"]["pid"], warden_tests::command_of(child.id()));
    assert_eq!(pending["job_hash"].as_str().unwrap().len(), 64);
    assert_eq!(pending["status"], "pending");
    let id = pending["id"].as_u64().unwrap().to_string();

    let said = env.ok(&["approve", &id, "--reason", "invoice 42 checked"]);
    assert!(said.contains("approved"), "{said}");
    let (out, code) = finish(child);
    assert_eq!(
        out, "ok",
        "the held connect() returned 0 after approval (no EINTR)"
    );
    assert_eq!(code, Some(0));

    // Idempotent: a second approve is answered and counted, not applied.
    let again = env.ok(&["approve", &id]);
    assert!(again.contains("already approved"), "{again}");
    // The outcome is recorded when the kernel's event reaches the daemon,
    // just after the syscall returned.
    wait_until("the outcome is recorded", || {
        approvals(&env, true)[0]["final_status"] == "executed"
    });
    let all = approvals(&env, true);
    assert_eq!(all[0]["repeated_decisions"], 1);
    assert_eq!(all[0]["decided_by"], "root");

    // Evidence: the hold, the approval and the outcome, each complete.
    let hold = env.wait_for_evidence("hold", |e| e["kind"] == "hold");
    assert_eq!(hold["details"]["approval_required"], true);
    assert_eq!(hold["details"]["job_hash"], pending["job_hash"]);
    assert_eq!(hold["rule_id"], "payments-api");
    let approval = env.wait_for_evidence("approval", |e| e["kind"] == "approval");
    assert_eq!(approval["decision"], "approved");
    assert_eq!(approval["details"]["approved_by"], "root");
    assert_eq!(approval["details"]["approved_role"], "user:root");
    assert!(approval["details"]["approved_at_ns"].as_i64().unwrap() > 0);
    assert_eq!(approval["details"]["reason"], "invoice 42 checked");
    assert_eq!(approval["policy_snapshot"], hold["policy_snapshot"]);
    let outcome = env.wait_for_evidence("outcome", |e| {
        e["kind"] == "decision" && e["method"] == "approved"
    });
    assert_eq!(outcome["decision"], "allow");
    assert_eq!(outcome["details"]["final_status"], "executed");
    assert_eq!(outcome["details"]["job_hash"], pending["job_hash"]);
    let checked = env.ok(&["log", "verify", "--completeness"]);
    assert!(
        checked.contains("3 approval-gated entries, every required field present"),
        "{checked}"
    );
}

#[test]
fn rejected_hold_fails_with_eperm_and_sigcont_never_lets_it_through() {
    if !can_run("hold_reject") {
        return;
    }
    let (env, _l, target) = setup("holdno", "5m");
    let child = spawn_probe(&env, "payer", &target);
    let pending = wait_held(&env, &child);

    // A SIGCONT from anyone just re-enters the hook: it is held again.
    // SAFETY: kill(2) on the probe this test started.
    unsafe { libc::kill(warden_tests::command_of(child.id()) as i32, libc::SIGCONT) };
    thread::sleep(Duration::from_millis(300));
    wait_until("the probe is stopped again", || {
        state_of(warden_tests::command_of(child.id())) == 'T'
    });
    assert_eq!(
        approvals(&env, false).len(),
        1,
        "re-entry does not create a second hold"
    );

    let id = pending["id"].as_u64().unwrap().to_string();
    let said = env.ok(&["reject", &id]);
    assert!(said.contains("rejected"), "{said}");
    let (out, code) = finish(child);
    assert_eq!(out, format!("errno={}", libc::EPERM));
    assert_eq!(code, Some(1));
    let out = env.cli(&["approve", &id]);
    assert!(!out.status.success(), "approve after reject must fail");
    assert!(
        stderr(&out).contains("already rejected"),
        "{}",
        stderr(&out)
    );
    env.wait_for_evidence("refused outcome", |e| {
        e["method"] == "rejected" && e["details"]["final_status"] == "refused"
    });
}

#[test]
fn approval_after_a_policy_change_is_a_conflict_and_the_new_policy_decides() {
    if !can_run("hold_conflict") {
        return;
    }
    let (env, l, target) = setup("holdconf", "5m");
    let child = spawn_probe(&env, "payer", &target);
    let pending = wait_held(&env, &child);
    env.write_policy("hold.yaml", &hold_policy(l.port, "5m", "deny"));
    env.ok(&["policy", "reload"]);

    let id = pending["id"].as_u64().unwrap().to_string();
    let said = env.ok(&["approve", &id]);
    assert!(said.contains("conflict"), "{said}");
    let (out, _) = finish(child);
    assert_eq!(
        out,
        format!("errno={}", libc::EPERM),
        "decided again under the new policy (deny)"
    );
    let all = approvals(&env, true);
    assert_eq!(all[0]["status"], "conflict");
    assert_eq!(all[0]["final_status"], "redecided", "the hold is finished");
    env.wait_for_evidence("conflict", |e| {
        e["kind"] == "approval" && e["decision"] == "conflict"
    });
}

#[test]
fn holds_expire_and_are_rejected() {
    if !can_run("hold_expiry") {
        return;
    }
    let (env, _l, target) = setup("holdexp", "2s");
    let child = spawn_probe(&env, "payer", &target);
    wait_held(&env, &child);
    let (out, _) = finish(child);
    assert_eq!(out, format!("errno={}", libc::EPERM));
    let all = approvals(&env, true);
    assert_eq!(all[0]["status"], "expired");
    assert_eq!(all[0]["decided_by"], "warden");
    env.wait_for_evidence("expiry", |e| {
        e["kind"] == "approval" && e["decision"] == "expired"
    });
}

#[test]
fn only_named_approvers_outside_agents_may_decide() {
    if !can_run("hold_authz") {
        return;
    }
    let (env, _l, target) = setup("holdauth", "5m");
    // Let an unprivileged user reach the socket; the daemon authorises.
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let child = spawn_probe(&env, "payer", &target);
    let pending = wait_held(&env, &child);
    let id = pending["id"].as_u64().unwrap().to_string();

    // A user the policy does not name.
    let out = env
        .warden()
        .args(["approve", &id])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not an approver"), "{}", stderr(&out));

    // Root, but from inside an agent cgroup: agents never approve.
    let warden = warden_tests::warden_bin();
    let out = env.cli(&[
        "run",
        "--agent",
        "payer",
        "--",
        warden.to_str().unwrap(),
        "approve",
        &id,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("agents cannot approve"),
        "{}",
        stderr(&out)
    );

    assert_eq!(approvals(&env, false).len(), 1, "still pending");
    assert_eq!(state_of(warden_tests::command_of(child.id())), 'T');
    env.ok(&["reject", &id]);
    finish(child);
}

#[test]
fn a_hold_survives_a_daemon_killed_with_sigkill() {
    if !can_run("hold_restart") {
        return;
    }
    let (mut env, _l, target) = setup("holdkill", "5m");
    let child = spawn_probe(&env, "payer", &target);
    let pending = wait_held(&env, &child);
    env.stop_daemon_with(libc::SIGKILL);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        state_of(warden_tests::command_of(child.id())),
        'T',
        "still stopped while the daemon is down"
    );

    env.start_daemon();
    let again = approvals(&env, false);
    assert_eq!(again.len(), 1, "the pending hold was reloaded");
    assert_eq!(again[0]["id"], pending["id"]);
    env.ok(&["approve", &pending["id"].as_u64().unwrap().to_string()]);
    let (out, code) = finish(child);
    assert_eq!((out.as_str(), code), ("ok", Some(0)));
}

/// The session id of process `pid` (field 6 of /proc/PID/stat).
fn session_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    rest.split(' ').nth(3).unwrap().parse().unwrap()
}

#[test]
fn approving_a_hold_whose_process_ended_says_so() {
    if !can_run("hold_process_ended") {
        return;
    }
    let (env, _l, target) = setup("holdgone", "5m");
    let mut child = spawn_probe(&env, "payer", &target);
    let pending = wait_held(&env, &child);
    let id = pending["id"].as_u64().unwrap().to_string();
    // The held process ends (killed by someone) before anyone decides.
    child.kill().unwrap();
    child.wait().unwrap();

    let said = env.ok(&["approve", &id]);
    assert!(said.contains("has ended"), "{said}");
    assert!(!said.contains("the action proceeds"), "{said}");
    let all = approvals(&env, true);
    assert_eq!(all[0]["status"], "approved", "the human's act is recorded");
    assert_eq!(
        all[0]["final_status"], "process-ended",
        "the hold says its process ended: {all:#?}"
    );
    // Rejecting it afterwards is answered, not applied.
    let out = env.cli(&["reject", &id]);
    assert!(!out.status.success(), "{}", stdout(&out));
}

/// `warden run` puts the agent in its own session: when the shell that
/// started it exits while it is stopped at a hold, the kernel does not
/// SIGHUP it (it is not in an orphaned process group of that session), and
/// it proceeds once approved.
#[test]
fn a_held_agent_outlives_the_shell_that_started_it() {
    if !can_run("hold_orphan") {
        return;
    }
    let (env, _l, target) = setup("holdorphan", "5m");
    let dir = env.dir.path();
    let pidfile = dir.join("agent.pid");
    let outfile = dir.join("agent.out");
    // A shell in its own session (like a login shell) starts the agent in
    // the background and exits while the agent (the child of `warden run`)
    // is held.
    let script = format!(
        "{warden} run --agent payer -- {probe} connect {target} > {out} 2>&1 &\n\
         echo $! > {pidfile}\n\
         while [ -d /proc/$! ]; do\n\
           for c in $(cat /proc/$!/task/$!/children); do\n\
             grep -q '^State:.*T' /proc/$c/status 2>/dev/null && exit 0\n\
           done\n\
           sleep 0.05\n\
         done\n\
         exit 1",
        warden = warden_tests::warden_bin().display(),
        probe = probe_bin().display(),
        out = outfile.display(),
        pidfile = pidfile.display(),
    );
    // The environment `warden` needs, from the harness's own command.
    let shell = env.warden();
    let status = std::process::Command::new("/usr/bin/setsid")
        .args(["/bin/sh", "-c", &script])
        .envs(shell.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let run: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = warden_tests::command_of(run);
    assert_eq!(session_of(pid), pid, "the agent leads its own session");
    let pending = warden_tests::wait_held(&env, pid, &['T'], "the orphaned agent is held");
    // Its starting shell is gone: still there, still stopped, a while on.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        state_of(pid),
        'T',
        "the held agent survived its shell's exit"
    );
    env.ok(&["approve", &pending["id"].as_u64().unwrap().to_string()]);
    wait_until("the approved agent finishes", || {
        std::fs::read_to_string(&outfile).is_ok_and(|s| s.trim() == "ok")
    });
}

/// Started by a job-control shell, `warden run` leads a process group and
/// cannot setsid(): the agent runs as its child in a new session, and
/// `warden run` ends as the agent did (exit code, or signal).
#[test]
fn run_as_a_process_group_leader_starts_the_agent_in_its_own_session() {
    if !can_run("run_session") {
        return;
    }
    let (env, _l, _target) = setup("runsession", "5m");
    let run = |script: &str| {
        env.warden()
            .args(["run", "--agent", "payer", "--", "/bin/sh", "-c", script])
            .process_group(0)
            .output()
            .unwrap()
    };
    let out = run("echo $$ $(cut -d' ' -f6 /proc/$$/stat)");
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    let (pid, sid) = said.split_once(' ').unwrap();
    assert_eq!(pid, sid, "the agent leads its own session: {said}");
    assert_eq!(run("exit 7").status.code(), Some(7));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(run("kill -9 $$").status.signal(), Some(libc::SIGKILL));
}
