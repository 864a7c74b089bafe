//! The control socket and the daemon process against a hostile local
//! client (issue #15 §4): idle connections by the thousand, a huge request
//! line, reading the daemon's /proc entries, and a root agent's `reload`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{net::UnixStream, process::CommandExt},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use warden_tests::{can_run, probe_bin, stderr, stdout, TestEnv};

const NOBODY: u32 = 65534;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Lets `nobody` reach the socket in this environment's private directory.
fn open_dir_to_others(env: &TestEnv) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
}

/// 20,000 idle connections from an unprivileged process: its peer budget
/// fills, the rest are turned away at once, and `warden status` still
/// answers; the daemon's log does not flood.
#[test]
fn idle_connections_from_one_user_do_not_starve_status() {
    if !can_run("control_bounds") {
        return;
    }
    let mut env = TestEnv::new("idle");
    env.start_daemon();
    open_dir_to_others(&env);
    // Two holders of 10,000 each: the soft descriptor limit they inherit
    // is raised to the hard one (20,000 here).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur > 10_100,
        "hard descriptor limit {}",
        lim.rlim_cur
    );
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut holder = Command::new(probe_bin())
            .args(["hold-conns", env.socket().to_str().unwrap(), "10000"])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        holders.push(holder);
        assert!(line.starts_with("connected=10000"), "{line}");
    }

    let start = Instant::now();
    let out = env.cli(&["status"]);
    let took = start.elapsed();
    for mut holder in holders {
        let _ = holder.kill();
        let _ = holder.wait();
    }
    assert!(out.status.success(), "status: {}", stderr(&out));
    eprintln!("status answered in {took:?} with 20,000 idle connections held");
    assert!(took < Duration::from_secs(5), "status took {took:?}");
    // Refused connections are logged once per interval, with a count.
    let log = env.daemon_log();
    let lines = log.matches("control connection refused").count();
    assert!(
        (1..=10).contains(&lines),
        "{lines} log lines about refused connections"
    );
}

/// A 256 MB request line is cut off at 64 KiB with a clear error, and the
/// daemon does not grow.
#[test]
fn a_huge_request_line_is_refused_without_growing_the_daemon() {
    if !can_run("control_bounds") {
        return;
    }
    let mut env = TestEnv::new("hugeline");
    env.start_daemon();
    let pid = env.daemon_pid().unwrap();
    env.ok(&["status"]);
    let before = rss_kib(pid);
    let mut s = UnixStream::connect(env.socket()).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        while sent < 256 << 20 {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    drop(s);
    let sent = writer.join().unwrap();
    assert!(
        answer.contains("request line longer than 65536 bytes"),
        "answer: {answer:?}"
    );
    assert!(sent < 256 << 20, "the daemon read all {sent} bytes");
    let after = rss_kib(pid);
    eprintln!("256 MB line: client sent {sent} bytes; daemon RSS {before} -> {after} KiB");
    assert!(
        after < before + 16 * 1024,
        "daemon RSS grew from {before} KiB to {after} KiB"
    );
    // And it still answers.
    env.ok(&["status"]);
}

/// A client that connects and sends nothing is cut off after the request
/// timeout, with an answer saying so.
#[test]
fn a_silent_client_is_cut_off() {
    if !can_run("control_bounds") {
        return;
    }
    let mut env = TestEnv::new("silent");
    env.start_daemon();
    let mut s = UnixStream::connect(env.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.contains("no complete request line within 5s"),
        "{answer:?}"
    );
}

/// The daemon's environment, maps and fds are closed to other users.
#[test]
fn the_daemons_proc_entries_are_closed() {
    if !can_run("control_bounds") {
        return;
    }
    let mut env = TestEnv::new("nodump");
    env.start_daemon();
    let pid = env.daemon_pid().unwrap();
    for entry in ["environ", "maps", "fd/0"] {
        let path = format!("/proc/{pid}/{entry}");
        let out = Command::new("cat")
            .arg(&path)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "nobody read {path}: {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains("Permission denied"),
            "{}",
            stderr(&out)
        );
    }
}

/// A root agent may not `reload`: refused with a clear error, recorded;
/// the same request from outside agents works.
#[test]
fn an_agent_cannot_reload() {
    if !can_run("control_bounds") {
        return;
    }
    let mut env = TestEnv::new("agentreload");
    env.write_policy("p.yaml", "version: 1\nrules: []\n");
    env.start_daemon();
    env.add_agent("rl", "p.yaml");
    let warden = warden_tests::warden_bin();
    let out = env.cli(&[
        "run",
        "--agent",
        "rl",
        "--",
        warden.to_str().unwrap(),
        "policy",
        "reload",
    ]);
    assert!(!out.status.success(), "agent reload succeeded");
    let err = stderr(&out);
    assert!(
        err.contains("refused: `reload`") && err.contains("agents cannot change Warden"),
        "{err}"
    );
    let e = env.wait_for_evidence("refused reload", |e| e["kind"] == "control_refused");
    assert_eq!(e["target"], "reload", "{e}");
    assert_eq!(e["decision"], "deny", "{e}");
    env.ok(&["policy", "reload"]);
}
