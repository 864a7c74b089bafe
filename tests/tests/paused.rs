//! Holds of execs and opens on this kernel (no BPF LSM): the hooks run
//! after the action took effect, so the process is paused there (SIGSTOP,
//! then ptrace-seized by the daemon so that SIGCONT cannot continue it).
//! Approval continues it, rejection kills it; a held program never runs an
//! instruction before a human decides, and a held open's bytes never reach
//! the program unless approved.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    path::Path,
    process::{Child, Output, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use warden_tests::{
    approvals, can_run, killed, probe_path, state_of, stdout, wait_until, Files, TestEnv,
    RUNTIME_FILES,
};

/// An agent whose policy holds one binary and one file, allowing the
/// probe and what programs need to start.
fn setup(name: &str, vars: &[(&str, &str)]) -> (TestEnv, Files, String, String) {
    let mut env = TestEnv::new(name);
    let f = Files::new(&env);
    let held_touch = f.binary("held-touch", "/usr/bin/touch");
    let held_file = f.write("work/held.txt", "HELD-CONTENT");
    env.write_policy(
        "paused.yaml",
        &format!(
            "version: 1
approvers:
  users: [root]
hold_timeout: 5m
rules:
{RUNTIME_FILES}
  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
  - id: deploy-tool
    exec: {{ path: {held_touch} }}
    decision: hold
  - id: markers
    file: {{ prefix: {markers}/, access: [read, write] }}
    decision: allow
  - id: locale
    file: {{ path: /etc/locale.alias, access: [read] }}
    decision: allow
  - id: customer-data
    file: {{ path: {held_file}, access: [read] }}
    decision: hold
  - id: new-files
    file: {{ prefix: {new}/, access: [write] }}
    decision: hold
",
            probe = probe_path(),
            markers = f.path("markers"),
            new = f.path("work/new"),
        ),
    );
    std::fs::create_dir_all(f.path("work/new")).unwrap();
    env.start_daemon_with(vars);
    env.add_agent("paused", "paused.yaml");
    (env, f, held_touch, held_file)
}

/// Starts `cmd` as the agent without waiting for it.
fn spawn(env: &TestEnv, cmd: &[&str]) -> Child {
    env.warden()
        .args(["run", "--agent", "paused", "--"])
        .args(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warden run")
}

/// Waits until the action is pending and the process is stopped ('T') or
/// in a ptrace stop ('t'); returns the pending approval.
fn wait_paused(env: &TestEnv, child: &Child, traced: bool) -> Value {
    let states: &[char] = if traced { &['t'] } else { &['t', 'T'] };
    let pending = warden_tests::wait_held(
        env,
        warden_tests::command_of(child.id()),
        states,
        "the action is held",
    );
    assert_eq!(pending["job"]["pid"], warden_tests::command_of(child.id()));
    pending
}

/// SIGCONT, several times, to the process this test started.
fn sigcont(child: &Child) {
    let command = warden_tests::command_of(child.id());
    for _ in 0..5 {
        // SAFETY: kill(2) on a process this test started.
        unsafe { libc::kill(command as i32, libc::SIGCONT) };
        thread::sleep(Duration::from_millis(40));
    }
}

fn decide(env: &TestEnv, verb: &str, pending: &Value) -> String {
    let id = pending["id"].as_u64().unwrap().to_string();
    env.ok(&[verb, &id])
}

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("wait warden run")
}

/// The outcome entry of a hold, once recorded.
fn outcome(env: &TestEnv, pending: &Value) -> Value {
    env.wait_for_evidence("the hold's outcome", |e| {
        e["kind"] == "decision"
            && matches!(e["method"].as_str(), Some("approved" | "rejected"))
            && e["details"]["approval_id"] == pending["id"]
    })
}

#[test]
fn held_exec_never_runs_until_approved_and_never_runs_when_rejected() {
    if !can_run("paused_exec") {
        return;
    }
    let (env, f, held_touch, _) = setup("pexec", &[]);

    // Approved: the program runs from its first instruction, as if never
    // stopped.
    let marker = f.marker("approved");
    let child = spawn(&env, &[&held_touch, &marker]);
    let pending = wait_paused(&env, &child, true);
    assert_eq!(pending["job"]["action"], "exec");
    assert_eq!(pending["job"]["target"], held_touch);
    // SIGCONT cannot continue a paused exec: it stays stopped, unrun.
    sigcont(&child);
    assert_eq!(
        state_of(warden_tests::command_of(child.id())),
        't',
        "still paused after SIGCONT"
    );
    assert!(!Path::new(&marker).exists(), "the held program ran");
    assert!(decide(&env, "approve", &pending).contains("approved"));
    let out = finish(child);
    assert!(out.status.success(), "approved exec: {out:?}");
    assert!(Path::new(&marker).exists(), "the approved program ran");
    let e = outcome(&env, &pending);
    assert_eq!(e["decision"], "allow");
    assert_eq!(e["details"]["final_status"], "executed");

    // Rejected: killed without having run.
    let marker = f.marker("rejected");
    let child = spawn(&env, &[&held_touch, &marker]);
    let pending = wait_paused(&env, &child, true);
    assert!(decide(&env, "reject", &pending).contains("rejected"));
    let out = finish(child);
    assert!(killed(&out), "rejected exec is killed: {out:?}");
    assert!(!Path::new(&marker).exists(), "the rejected program ran");
    let e = outcome(&env, &pending);
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["details"]["final_status"], "refused");

    let checked = env.ok(&["log", "verify", "--completeness"]);
    assert!(
        checked.contains("6 approval-gated entries, every required field present"),
        "{checked}"
    );
}

#[test]
fn held_open_gets_its_bytes_only_when_approved() {
    if !can_run("paused_open") {
        return;
    }
    let (env, _f, _, held_file) = setup("popen", &[]);
    let probe = probe_path();

    let child = spawn(&env, &[&probe, "read", &held_file]);
    let pending = wait_paused(&env, &child, true);
    assert_eq!(pending["job"]["action"], "open");
    assert_eq!(pending["job"]["target"], held_file);
    sigcont(&child);
    assert_eq!(
        state_of(warden_tests::command_of(child.id())),
        't',
        "still paused after SIGCONT"
    );
    assert!(decide(&env, "approve", &pending).contains("approved"));
    let out = finish(child);
    assert_eq!(stdout(&out), "ok HELD-CONTENT", "{out:?}");
    assert_eq!(
        outcome(&env, &pending)["details"]["final_status"],
        "executed"
    );

    let child = spawn(&env, &[&probe, "read", &held_file]);
    let pending = wait_paused(&env, &child, true);
    assert!(decide(&env, "reject", &pending).contains("rejected"));
    let out = finish(child);
    assert!(killed(&out), "rejected open is killed: {out:?}");
    assert_eq!(stdout(&out), "", "not one byte of a rejected open");
    assert_eq!(
        outcome(&env, &pending)["details"]["final_status"],
        "refused"
    );
}

/// On the fallback a held exclusive create is paused after it succeeded,
/// so approval hands the new file's descriptor over (with BPF LSM the
/// restart fails with EEXIST instead: lsm.rs).
#[test]
fn a_held_exclusive_create_gets_its_file_when_approved() {
    if !can_run("paused_excl") {
        return;
    }
    let (env, f, _, _) = setup("pexcl", &[]);
    let created = f.path("work/new/report.txt");
    let child = spawn(&env, &[&probe_path(), "create-excl", &created]);
    let pending = wait_paused(&env, &child, true);
    assert_eq!(pending["job"]["target"], created.as_str());
    assert!(
        Path::new(&created).exists(),
        "created before the hook paused it"
    );
    assert!(decide(&env, "approve", &pending).contains("approved"));
    let out = finish(child);
    assert_eq!(stdout(&out), "ok", "{out:?}");
    assert_eq!(
        outcome(&env, &pending)["details"]["final_status"],
        "executed"
    );
}

#[test]
fn a_paused_exec_survives_a_daemon_killed_with_sigkill() {
    if !can_run("paused_restart") {
        return;
    }
    let (mut env, f, held_touch, _) = setup("prestart", &[]);
    let marker = f.marker("after-restart");
    let child = spawn(&env, &[&held_touch, &marker]);
    let pending = wait_paused(&env, &child, true);
    env.stop_daemon_with(libc::SIGKILL);
    // The trace ended with the daemon: stopped, not continued.
    wait_until("the stop outlives the tracer", || {
        state_of(warden_tests::command_of(child.id())) == 'T'
    });
    env.start_daemon();
    wait_until("the new daemon seizes it", || {
        state_of(warden_tests::command_of(child.id())) == 't'
    });
    assert!(!Path::new(&marker).exists(), "the held program ran");
    assert!(decide(&env, "approve", &pending).contains("approved"));
    let out = finish(child);
    assert!(out.status.success(), "approved after restart: {out:?}");
    assert!(Path::new(&marker).exists());
}

/// Without ptrace (here switched off; on hosts where it is refused), a
/// SIGCONT can continue a paused exec before anyone decides: the kernel's
/// guard kills it at the new image's first instruction, so it still never
/// runs, and the hold ends as such.
#[test]
fn without_ptrace_a_continued_paused_exec_is_killed_before_it_runs() {
    if !can_run("paused_guard") {
        return;
    }
    let (env, f, held_touch, held_file) =
        setup("pguard", &[("WARDEN_DISABLE_MECHANISMS", "ptrace")]);
    let marker = f.marker("continued");
    let child = spawn(&env, &[&held_touch, &marker]);
    let pending = wait_paused(&env, &child, false);
    assert_eq!(
        state_of(warden_tests::command_of(child.id())),
        'T',
        "stopped, not traced"
    );
    sigcont(&child);
    let out = finish(child);
    assert!(killed(&out), "continued without approval: killed: {out:?}");
    assert!(!Path::new(&marker).exists(), "the held program ran");
    let e = outcome(&env, &pending);
    assert_eq!(e["details"]["final_status"], "ended");
    let all = approvals(&env, true);
    assert_eq!(all[0]["status"], "rejected");
    assert_eq!(all[0]["decided_role"], "process-exit");

    // A held open continued the same way is killed at its next syscall's
    // exit (the read), before it returns to the program: no byte printed.
    let child = spawn(&env, &[&probe_path(), "read", &held_file]);
    let pending = wait_paused(&env, &child, false);
    sigcont(&child);
    let out = finish(child);
    assert!(killed(&out), "continued without approval: killed: {out:?}");
    assert_eq!(stdout(&out), "", "not one byte of a held open");
    assert_eq!(outcome(&env, &pending)["details"]["final_status"], "ended");
}
