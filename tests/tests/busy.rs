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
    let refused = evidence(env)
        .into_iter()
        .filter(|e| e["kind"] == "gap" || (e["kind"] == "decision" && e["decision"] != "allow"))
        .take(5)
        .collect();
    (refused, status(env)["kernel"].clone())
}

/// The evidence log, retried while the daemon's writer holds the database
/// lock (a busy daemon writes tens of thousands of entries).
fn evidence(env: &TestEnv) -> Vec<Value> {
    for _ in 0..100 {
        let out = env.cli(&["log", "--json"]);
        if out.status.success() {
            return stdout(&out)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("warden log kept failing")
}

/// The daemon's peak resident memory (VmHWM), in KiB.
fn daemon_peak_kib(env: &TestEnv) -> u64 {
    let pid = env.daemon_pid().expect("the daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

fn status(env: &TestEnv) -> Value {
    serde_json::from_str(&env.ok(&["status", "--json"])).unwrap()
}

/// `warden log --count --json` with `filters`: (matching entries, repeats
/// their summaries count). Read through the log's indexes, so polling it
/// costs the same at any log size; retried while the daemon's writer holds
/// the database lock.
fn count(env: &TestEnv, filters: &[&str]) -> (u64, u64) {
    let mut args = vec!["log", "--count", "--json"];
    args.extend_from_slice(filters);
    for _ in 0..100 {
        let out = env.cli(&args);
        if out.status.success() {
            let c: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
            return (
                c["entries"].as_u64().unwrap(),
                c["counted"].as_u64().unwrap(),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("warden log --count kept failing")
}

/// What the log says about the busy agent, from count queries.
struct Tally {
    /// Its `decision` entries, and those of them that allowed.
    decisions: u64,
    allowed_decisions: u64,
    /// Repeats its summaries count.
    counted: u64,
    /// GAP entries of any agent.
    gaps: u64,
}

impl Tally {
    fn of(env: &TestEnv) -> Self {
        let busy = ["--agent", "busy"];
        let (decisions, _) = count(env, &[&busy[..], &["--kind", "decision"]].concat());
        let (allowed_decisions, _) = count(
            env,
            &[&busy[..], &["--kind", "decision", "--decision", "allow"]].concat(),
        );
        let (_, counted) = count(env, &[&busy[..], &["--kind", "summary"]].concat());
        let (gaps, _) = count(env, &["--kind", "gap"]);
        Self {
            decisions,
            allowed_decisions,
            counted,
            gaps,
        }
    }

    /// The allowed actions the busy agent's entries account for: one per
    /// decision entry, `count` repeats per summary (first-then-count).
    fn accounted(&self) -> u64 {
        self.decisions + self.counted
    }
}

/// Waits until the log accounts for every open the kernel decided (its
/// decision entries plus the repeats its summaries count), then checks: no
/// denial, no kill, no gap, every open accounted for.
fn assert_all_recorded(env: &TestEnv) -> (u64, u64) {
    let kernel = status(env)["kernel"].clone();
    let allowed = kernel["allowed"].as_u64().unwrap();
    let mut tally = Tally::of(env);
    // Summaries are written every WARDEN_SUMMARY_SECS (10 s by default).
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::time::Instant::now() < deadline && tally.accounted() < allowed {
        std::thread::sleep(Duration::from_millis(500));
        tally = Tally::of(env);
    }
    if tally.allowed_decisions != tally.decisions || tally.gaps != 0 {
        // Only for the failure report: the whole log, once.
        let refused: Vec<Value> = evidence(env)
            .into_iter()
            .filter(|e| {
                e["kind"] == "gap"
                    || (e["kind"] == "decision" && e["agent"] == "busy" && e["decision"] != "allow")
            })
            .take(5)
            .collect();
        panic!(
            "{} refused or killed, {} GAP entries: {refused:#?}",
            tally.decisions - tally.allowed_decisions,
            tally.gaps
        );
    }
    let kernel = status(env)["kernel"].clone();
    assert_eq!(
        kernel["dropped"], 0,
        "nothing refused for want of room: {kernel}"
    );
    assert_eq!(kernel["denied"], 0, "nothing denied: {kernel}");
    assert_eq!(
        tally.accounted(),
        kernel["allowed"].as_u64().unwrap(),
        "every allowed open is in the log, individually or counted: {kernel}"
    );
    let parked = kernel["parked"].as_u64().unwrap();
    let recorded = tally.accounted();
    eprintln!(
        "busy: {recorded} opens accounted for ({} decision entries), {parked} parked while the ring buffer was full",
        tally.decisions
    );
    (recorded, parked)
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

/// Per-agent share: a network-only agent sending allowed UDP as fast as it
/// can, and a second agent running 200 `cat` of an allowed file. The flood
/// is held to its share of the congested ring buffer (its over-share sends
/// refused, counted and recorded as `evidence.throttled`), and the second
/// agent's actions are all allowed and all recorded.
#[test]
fn a_flooding_agent_gets_its_share_and_the_others_are_not_killed() {
    if !can_run("busy_share") {
        return;
    }
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let mut env = TestEnv::new("busyshare");
    let file = env.dir.path().join("allowed.txt");
    std::fs::write(&file, "ALLOWED\n").unwrap();
    let file = file.to_str().unwrap().to_string();
    env.write_policy(
        "flood.yaml",
        // Every send recorded (`each`): the flood this test is about. With the
        // default first-then-count its repeats are counted in the kernel and
        // never fill the ring buffer at all.
        &format!("version: 1\nevidence: {{ allowed: each }}\nrules:\n  - id: udp\n    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: udp }}\n    decision: allow\n"),
    );
    env.write_policy(
        "reader.yaml",
        &format!(
            "version: 1
rules:
{RUNTIME_FILES}
  - id: the-file
    file: {{ path: {file}, access: [read] }}
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
    env.start_daemon_with(&[("WARDEN_EVENTS_BYTES", "4194304"), ("WARDEN_LOG", "info")]);
    env.add_agent("flood", "flood.yaml");
    env.add_agent("reader", "reader.yaml");
    let db_bytes = |env: &TestEnv| -> u64 {
        ["warden.db", "warden.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(env.state_dir().join(f)).ok())
            .map(|m| m.len())
            .sum()
    };

    // Both agents start (`warden run` asks the daemon) before the flood
    // begins; the reader's loop then runs during the flood.
    let script = format!(
        "sleep 1; i=0; while [ $i -lt 200 ]; do cat {file} > /dev/null || exit 1; i=$((i+1)); done; echo done"
    );
    let reader = env
        .warden()
        .args(["run", "--agent", "reader", "--", "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before = db_bytes(&env);
    let started = std::time::Instant::now();
    let mut flood = env
        .warden()
        .args(["run", "--agent", "flood", "--"])
        .arg(warden_tests::probe_bin())
        .args(["udp-flood", &format!("127.0.0.1:{port}"), "100000000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let flood_pid = warden_tests::command_of(flood.id());
    let out = reader.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let grown = db_bytes(&env).saturating_sub(before);
    // The daemon's peak memory: a writer that falls behind makes the event
    // reader wait (and the kernel's backpressure act) rather than queue
    // the flood in the daemon without limit (once 11 GiB in 5 minutes).
    let peak_kib = daemon_peak_kib(&env);
    // The flood is ours: end it.
    flood.kill().unwrap();
    flood.wait().unwrap();
    assert!(out.status.success(), "{out:?}\n{:#?}", refusals(&env));
    assert_eq!(stdout(&out), "done");

    // Every one of the reader's 200 opens of the file: allowed, recorded.
    let mut reads = 0;
    for _ in 0..300 {
        reads = evidence(&env)
            .iter()
            .filter(|e| {
                e["agent"] == "reader" && e["action"] == "open" && e["target"] == file.as_str()
            })
            .count();
        if reads >= 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let entries = evidence(&env);
    let reader: Vec<&Value> = entries.iter().filter(|e| e["agent"] == "reader").collect();
    let refused: Vec<&&Value> = reader
        .iter()
        .filter(|e| e["kind"] == "gap" || (e["kind"] == "decision" && e["decision"] != "allow"))
        .collect();
    assert!(refused.is_empty(), "the reader lost actions: {refused:#?}");
    assert_eq!(reads, 200, "each cat's open of the file is recorded");

    // The flood was held to its share, and that is recorded.
    let is_throttled = |e: &Value| {
        e["kind"] == "gap" && e["action"] == "evidence.throttled" && e["agent"] == "flood"
    };
    let mut throttled = None;
    for _ in 0..100 {
        throttled = evidence(&env).into_iter().find(is_throttled);
        if throttled.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let throttled = throttled.expect("an evidence.throttled entry for the flood");
    assert_eq!(throttled["details"]["class"], "sendmsg", "{throttled}");
    assert_eq!(
        throttled["details"]["last_process"]["pid"], flood_pid,
        "{throttled}"
    );
    assert!(
        peak_kib < 512 * 1024,
        "the daemon's memory stays bounded under a flood: peak {peak_kib} KiB"
    );
    let flood_entries = entries
        .iter()
        .filter(|e| e["agent"] == "flood" && e["kind"] == "decision")
        .count();
    eprintln!(
        "share: {flood_entries} flood decisions recorded in {:.1} s; evidence grew {} bytes ({:.0} bytes/s) while flooding; daemon peak {peak_kib} KiB",
        elapsed.as_secs_f64(),
        grown,
        grown as f64 / elapsed.as_secs_f64()
    );
}
