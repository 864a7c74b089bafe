//! Leaving an adopted agent (issue #15 §1): a process of an agent that
//! appears in a cgroup outside the agent's subtree is killed and recorded
//! with both cgroups, whichever way it got there: it moved itself (a write
//! to another `cgroup.procs`), it was forked there
//! (`clone3(CLONE_INTO_CGROUP)`), or someone else moved it. Processes
//! outside agents that do the same are left alone. Real daemon, real
//! cgroups; each test makes its own under its environment's parent.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use warden_tests::{can_run, killed, probe_bin, stderr, stdout, wait_until, TestEnv};

const POLICY: &str = "version: 1\nrules:\n  - id: api\n    connect: { to: 127.0.0.1, ports: [9] }\n    decision: allow\n";

struct Setup {
    env: TestEnv,
    agent: PathBuf,
    agent_id: u64,
    out: PathBuf,
    out_id: u64,
}

/// A daemon, an adopted agent cgroup (`adopted`, added with `agent add
/// --cgroup`) and a cgroup outside every agent. `before` runs between
/// making the agent cgroup and adopting it.
fn setup(name: &str, before: impl FnOnce(&Path)) -> Setup {
    let mut env = TestEnv::new_in(name, Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", POLICY);
    env.start_daemon();
    let agent = env.cgroup_parent.join("adopted");
    std::fs::create_dir_all(&agent).unwrap();
    let out = env.cgroup_parent.join("outside");
    std::fs::create_dir_all(&out).unwrap();
    before(&agent);
    env.ok(&[
        "agent",
        "add",
        "adopted",
        "--owner",
        "o@example.com",
        "--policy",
        "p.yaml",
        "--cgroup",
        agent.to_str().unwrap(),
    ]);
    let agent_id = warden::cgroup::cgroup_id(&agent).unwrap();
    let out_id = warden::cgroup::cgroup_id(&out).unwrap();
    Setup {
        env,
        agent,
        agent_id,
        out,
        out_id,
    }
}

/// The `leave-agent` entry for `pid`, checked for both cgroups.
fn escape_entry(s: &Setup, pid: u32, how: &str) -> serde_json::Value {
    let e = s.env.wait_for_evidence("leave-agent entry", |e| {
        e["kind"] == "decision"
            && e["action"] == "leave-agent"
            && e["details"]["escaped_pid"] == pid
    });
    assert_eq!(e["agent"], "adopted", "{e}");
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");
    assert_eq!(e["rule_id"], "left-agent", "{e}");
    assert_eq!(e["details"]["from_cgroup"], s.agent_id, "{e}");
    assert_eq!(e["details"]["to_cgroup"], s.out_id, "{e}");
    assert_eq!(e["details"]["how"], how, "{e}");
    e
}

/// Spawns `warden-probe ARGS` with stdout captured, waiting for its pid
/// file.
fn spawn_staying(args: &[&str], pid_file: &Path) -> (Child, u32) {
    let child = Command::new(probe_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pid = 0;
    wait_until("the probe's pid file", || {
        pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid != 0
    });
    (child, pid)
}

/// Whether `pid` is gone or a zombie.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_dead(what: &str, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dead(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_adopted_agent_process_that_moves_itself_out_is_killed_in_the_kernel() {
    if !can_run("leave_self_move") {
        return;
    }
    let s = setup("leaveself", |_| {});
    let agent = s.agent.to_str().unwrap();
    let out_str = s.out.to_str().unwrap();

    // Joins the agent (so it is the agent's), moves to a child cgroup of
    // the agent (still the agent: not killed, the entry below names the
    // outside cgroup), then writes its own pid into the other cgroup's
    // cgroup.procs: killed before the write returns.
    let below = s.agent.join("below");
    std::fs::create_dir_all(&below).unwrap();
    let child = Command::new(probe_bin())
        .args([
            "join",
            agent,
            "join",
            below.to_str().unwrap(),
            "enter",
            out_str,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(killed(&out), "self-move: {out:?}\n{}", s.env.daemon_log());
    assert_eq!(stdout(&out), "", "{}", stderr(&out));
    let e = escape_entry(&s, pid, "migrated");
    assert_eq!(
        e["details"]["killed"],
        serde_json::json!(["escaped-in-kernel"]),
        "{e}"
    );

    // `warden status` says what detects it here.
    let status = s.env.ok(&["status"]);
    assert!(
        status.contains("tp_btf/sched_process_fork, cgroup_attach_task"),
        "{status}"
    );

    // A process outside every agent moves between the same cgroups freely.
    let out = Command::new(probe_bin())
        .args(["enter", out_str])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    assert!(
        !s.env
            .evidence()
            .iter()
            .any(|e| e["action"] == "leave-agent" && e["details"]["escaped_pid"] != pid),
        "an outsider's move was recorded: {:#?}",
        s.env.evidence()
    );
}

#[test]
fn an_adopted_agent_process_that_forks_into_another_cgroup_is_killed() {
    if !can_run("leave_clone3") {
        return;
    }
    let s = setup("leaveclone", |_| {});
    let agent = s.agent.to_str().unwrap();
    let out_str = s.out.to_str().unwrap();
    let pid_file = s.env.dir.path().join("child.pid");
    let pid_str = pid_file.to_str().unwrap();

    // clone3(CLONE_INTO_CGROUP) from inside the agent: the parent is
    // killed at the fork, the child (already running in the other cgroup)
    // is killed from the record.
    let parent = Command::new(probe_bin())
        .args(["join", agent, "clone3-stay", out_str, pid_str])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = parent.wait_with_output().unwrap();
    assert!(killed(&out), "the forking parent: {out:?}");
    let mut child = 0u32;
    wait_until("the escaped child's pid", || {
        child = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        child != 0
    });
    wait_dead("the child forked into the other cgroup", child);
    let e = escape_entry(&s, child, "fork-into-cgroup");
    assert_eq!(
        e["details"]["killed"],
        serde_json::json!(["actor-in-kernel"]),
        "{e}"
    );

    // Outside every agent the same fork works and its child lives.
    let pid_file2 = s.env.dir.path().join("free.pid");
    let (mut free, _) = spawn_staying(
        &["clone3-stay", out_str, pid_file2.to_str().unwrap()],
        &pid_file2,
    );
    let free_child: u32 = std::fs::read_to_string(&pid_file2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!dead(free_child), "an outsider's clone3 child was killed");
    assert!(free.try_wait().unwrap().is_none(), "the outsider died");
    // SAFETY: our own probe's child, which we started.
    unsafe { libc::kill(free_child as i32, libc::SIGKILL) };
    let status = free.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_process_of_an_adopted_agent_moved_out_by_anyone_is_killed() {
    if !can_run("leave_moved") {
        return;
    }
    // One process already in the cgroup before it is adopted (never seen
    // forking), one that joins after.
    let mut early: Option<(Child, u32)> = None;
    let dir = tempfile::tempdir().unwrap();
    let early_file = dir.path().join("early.pid");
    let s = setup("leavemoved", |agent| {
        early = Some(spawn_staying(
            &[
                "join",
                agent.to_str().unwrap(),
                "stay",
                early_file.to_str().unwrap(),
            ],
            &early_file,
        ));
    });
    let (mut early, early_pid) = early.unwrap();
    let late_file = s.env.dir.path().join("late.pid");
    let (mut late, late_pid) = spawn_staying(
        &[
            "join",
            s.agent.to_str().unwrap(),
            "stay",
            late_file.to_str().unwrap(),
        ],
        &late_file,
    );
    let outsider_file = s.env.dir.path().join("outsider.pid");
    let (mut outsider, outsider_pid) =
        spawn_staying(&["stay", outsider_file.to_str().unwrap()], &outsider_file);

    // The test (root, outside every agent) moves each into the other
    // cgroup, as a service manager would.
    let procs = s.out.join("cgroup.procs");
    for pid in [early_pid, late_pid, outsider_pid] {
        std::fs::write(&procs, pid.to_string()).unwrap();
    }
    for (what, child, pid) in [
        ("adopted before", &mut early, early_pid),
        ("joined after", &mut late, late_pid),
    ] {
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: {status:?}");
        let e = escape_entry(&s, pid, "migrated");
        assert_eq!(e["details"]["killed"], serde_json::json!([]), "{e}");
    }
    // The outsider moved the same way lives on, unrecorded.
    std::thread::sleep(Duration::from_millis(500));
    assert!(outsider.try_wait().unwrap().is_none(), "the outsider died");
    assert!(
        !s.env
            .evidence()
            .iter()
            .any(|e| e["details"]["escaped_pid"] == outsider_pid),
        "the outsider's move was recorded"
    );
    outsider.kill().unwrap();
    outsider.wait().unwrap();
}

#[test]
fn an_agent_process_that_moves_another_out_is_killed_with_it() {
    if !can_run("leave_mover") {
        return;
    }
    let s = setup("leavemover", |_| {});
    let agent = s.agent.to_str().unwrap();
    let file = s.env.dir.path().join("moved.pid");
    let (mut moved, moved_pid) =
        spawn_staying(&["join", agent, "stay", file.to_str().unwrap()], &file);
    // Another process of the agent moves it out: the mover is killed in
    // the kernel, the moved process from the record.
    let pid = moved_pid.to_string();
    let out = Command::new(probe_bin())
        .args(["join", agent, "move", s.out.to_str().unwrap(), &pid])
        .output()
        .unwrap();
    assert!(killed(&out), "the mover: {out:?}");
    let status = moved.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the moved: {status:?}"
    );
    let e = escape_entry(&s, moved_pid, "migrated");
    assert_eq!(
        e["details"]["killed"],
        serde_json::json!(["actor-in-kernel"]),
        "{e}"
    );
}

/// `MEMBERS` holds the live processes of agents only: after many forks in
/// an agent (each child exits at once) it is back to what it was.
#[test]
fn membership_does_not_grow_with_forks() {
    if !can_run("leave_members_scale") {
        return;
    }
    let forks: u64 = std::env::var("WARDEN_TEST_FORKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let s = setup("leavescale", |_| {});
    let members = || {
        let pin = s.env.pin_dir().join("maps").join("MEMBERS");
        let data = aya::maps::MapData::from_pin(&pin).unwrap();
        let map = aya::maps::Map::HashMap(data);
        let m: aya::maps::HashMap<_, u32, [u8; 16]> = aya::maps::HashMap::try_from(&map).unwrap();
        m.keys().filter_map(Result::ok).count()
    };
    let before = members();
    let out = Command::new(probe_bin())
        .args([
            "join",
            s.agent.to_str().unwrap(),
            "forks",
            &forks.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), format!("forked={forks}"), "{}", stderr(&out));
    // The forker itself has exited too.
    let after = members();
    assert!(
        after <= before + 1,
        "MEMBERS grew from {before} to {after} after {forks} forks"
    );
    eprintln!("MEMBERS: {before} before, {after} after {forks} forks in the agent");
    // It does record them: a process that stays is there until it exits.
    let file = s.env.dir.path().join("stay.pid");
    let (mut stay, pid) = spawn_staying(
        &[
            "join",
            s.agent.to_str().unwrap(),
            "stay",
            file.to_str().unwrap(),
        ],
        &file,
    );
    assert_eq!(members(), after + 1, "the staying process {pid}");
    stay.kill().unwrap();
    stay.wait().unwrap();
    wait_until("its entry removed at exit", || members() == after);
}

/// A process of an adopted agent that an outside root process moves out
/// (a write to another cgroup's `cgroup.procs`) is marked by the
/// `cgroup_attach_task` program and killed by `sys_exit` at the first
/// syscall exit after the mark. The daemon is stopped before the move, so
/// the kill can only be the kernel's (the probe loops forever otherwise).
/// The kernel fires that tracepoint after the migration, in the mover's
/// context, so a syscall the process completes in between is not
/// prevented: the probe (reading its own cgroup from `/proc/self/cgroup`
/// and appending it to a marker file) may write a line naming the outside
/// cgroup (seen once in a CI run on this 2-core machine), which the test
/// prints, not asserts. Recorded twice, written when the daemon is back:
/// the move (`killed` empty: the mover is outside every agent) and the
/// kill at the syscall exit, both with both cgroups.
#[test]
fn a_process_moved_out_by_an_outsider_is_killed_by_the_kernel_with_no_daemon() {
    if !can_run("leave_doomed") {
        return;
    }
    let mut s = setup("leavedoomed", |_| {});
    let marker = s.env.dir.path().join("cgroups.txt");
    let pid_file = s.env.dir.path().join("loop.pid");
    let (mut child, pid) = spawn_staying(
        &[
            "join",
            s.agent.to_str().unwrap(),
            "cgroup-loop",
            marker.to_str().unwrap(),
            pid_file.to_str().unwrap(),
        ],
        &pid_file,
    );
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    wait_until("the loop's first lines", || lines().len() >= 10);
    s.env.stop_daemon();
    std::fs::write(s.out.join("cgroup.procs"), pid.to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // Our own probe: end it before failing.
            child.kill().unwrap();
            let _ = child.wait();
            panic!("the moved process still ran 30 s after the move");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "no daemon runs: the kernel kills it ({status:?})"
    );
    let all = lines();
    // The last line may be cut short by the kill.
    let complete = &all[..all.len() - 1];
    assert!(complete.len() >= 9, "{all:?}");
    // Every line before the move names the agent's cgroup; after it, only
    // what completed between the migration and the mark can follow.
    let before = all.iter().take_while(|l| l.ends_with("/adopted")).count();
    assert!(before >= 9, "{:?}", &all[..all.len().min(5)]);
    eprintln!(
        "lines after the move, before the kill: {}",
        all.len() - before
    );
    s.env.start_daemon();
    let moved = escape_entry(&s, pid, "migrated");
    assert_eq!(moved["details"]["killed"], serde_json::json!([]), "{moved}");
    let e = s
        .env
        .wait_for_evidence("the kill at the syscall exit", |e| {
            e["action"] == "leave-agent"
                && e["details"]["escaped_pid"] == pid
                && e["details"]["killed"] == serde_json::json!(["escaped-at-syscall-exit"])
        });
    assert_eq!(e["agent"], "adopted", "{e}");
    assert_eq!(
        e["pid"], pid,
        "recorded in the escaped process's context: {e}"
    );
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");
    assert_eq!(e["rule_id"], "left-agent", "{e}");
    assert_eq!(e["details"]["from_cgroup"], s.agent_id, "{e}");
    assert_eq!(e["details"]["to_cgroup"], s.out_id, "{e}");
    assert_eq!(e["details"]["how"], "migrated", "{e}");
    assert!(s.env.ok(&["log", "verify"]).contains("intact"));
}
