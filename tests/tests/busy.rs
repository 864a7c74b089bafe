//! Busy is not hostile: an agent whose allowed actions come faster than
//! the daemon writes them down is paused, never killed. When the ring
//! buffer is full, an allowed open's record is parked in the kernel
//! (`OVERFLOW`) and the thread stopped until the daemon has drained it.
//! Attacked with tens of thousands of real opens (`find | xargs cat` over
//! /usr/share), with the daemon running, and stopped for a second mid-run.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use warden_tests::{can_run, stderr, stdout, TestEnv, RUNTIME_FILES};

/// Reads every regular file under /usr/share, as the workload did.
const WORKLOAD: &str =
    "cd /usr/share && find /usr/share -type f -print0 | xargs -0 cat > /dev/null && echo done";

/// A small ring buffer (256 KiB, ~700 open records), so that the workload
/// overflows it.
const SMALL_RING: (&str, &str) = ("WARDEN_EVENTS_BYTES", "262144");

fn busy_env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    env.write_policy(
        "busy.yaml",
        &format!(
            "version: 1
rules:
{RUNTIME_FILES}
  - id: share-dir
    file: {{ path: /usr/share, access: [read] }}
    decision: allow
  - id: share
    file: {{ prefix: /usr/share/, access: [read] }}
    decision: allow
  - id: null
    file: {{ path: /dev/null, access: [read, write] }}
    decision: allow
  - id: locale-alias
    file: {{ path: /etc/locale.alias, access: [read] }}
    decision: allow
"
        ),
    );
    // The production log level: a debug line per decision would make the
    // daemon the bottleneck of the test rather than of the workload.
    env.start_daemon_with(&[SMALL_RING, ("WARDEN_LOG", "info")]);
    env.add_agent("busy", "busy.yaml");
    env
}

fn start_workload(env: &TestEnv) -> std::process::Child {
    env.warden()
        .args(["run", "--agent", "busy", "--", "/bin/sh", "-c", WORKLOAD])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What was refused, and the kernel's counters, for a failure report.
fn refusals(env: &TestEnv) -> (Vec<Value>, Value) {
    let refused = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "gap" || (e["kind"] == "decision" && e["decision"] != "allow"))
        .take(5)
        .collect();
    (refused, status(env)["kernel"].clone())
}

fn status(env: &TestEnv) -> Value {
    serde_json::from_str(&env.ok(&["status", "--json"])).unwrap()
}

/// Waits until the log holds every open the kernel decided, then checks:
/// no denial, no kill, no gap, every open recorded.
fn assert_all_recorded(env: &TestEnv) -> (u64, u64) {
    let kernel = status(env)["kernel"].clone();
    let allowed = kernel["allowed"].as_u64().unwrap();
    let mut entries: Vec<Value> = Vec::new();
    for _ in 0..600 {
        entries = env.evidence();
        let decisions = entries.iter().filter(|e| e["kind"] == "decision").count() as u64;
        if decisions >= allowed {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let decisions: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "decision" && e["agent"] == "busy")
        .collect();
    let refused: Vec<&&Value> = decisions
        .iter()
        .filter(|e| e["decision"] != "allow")
        .collect();
    assert!(
        refused.is_empty(),
        "refused or killed: {:#?}",
        &refused[..refused.len().min(5)]
    );
    let gaps: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "gap").collect();
    assert!(gaps.is_empty(), "GAP entries: {gaps:#?}");
    let kernel = status(env)["kernel"].clone();
    assert_eq!(
        kernel["dropped"], 0,
        "nothing refused for want of room: {kernel}"
    );
    assert_eq!(kernel["denied"], 0, "nothing denied: {kernel}");
    assert_eq!(
        decisions.len() as u64,
        kernel["allowed"].as_u64().unwrap(),
        "every allowed open is in the log: {kernel}"
    );
    let parked = kernel["parked"].as_u64().unwrap();
    eprintln!(
        "busy: {} opens recorded, {parked} parked while the ring buffer was full",
        decisions.len()
    );
    (decisions.len() as u64, parked)
}

#[test]
fn tens_of_thousands_of_allowed_opens_complete_without_a_kill() {
    if !can_run("busy") {
        return;
    }
    let env = busy_env("busy");
    let out = start_workload(&env).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{out:?}: {}\n{:#?}",
        stderr(&out),
        refusals(&env)
    );
    assert_eq!(stdout(&out), "done");
    let (recorded, _) = assert_all_recorded(&env);
    assert!(
        recorded > 20_000,
        "the workload opened tens of thousands: {recorded}"
    );
}

#[test]
fn a_stopped_daemon_pauses_the_agent_which_then_completes() {
    if !can_run("busy_daemon_stopped") {
        return;
    }
    let env = busy_env("busystop");
    let child = start_workload(&env);
    std::thread::sleep(Duration::from_millis(300));
    let daemon = env.daemon_pid().unwrap() as i32;
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemon, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{out:?}: {}\n{:#?}",
        stderr(&out),
        refusals(&env)
    );
    assert_eq!(stdout(&out), "done");
    let (_, parked) = assert_all_recorded(&env);
    assert!(parked > 0, "the agent was paused with its record parked");
}
