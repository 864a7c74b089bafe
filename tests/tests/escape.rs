//! Leaving the agent (issue #15 §1): attempts from inside an agent to put
//! a process outside its cgroup, and what `warden run` strips before the
//! agent starts (inherited descriptors, core dumps). Real daemon, real
//! cgroups; each test makes its own cgroups under its environment's parent.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{os::fd::AsRawFd, path::Path, process::Command};

use warden_tests::{can_run, probe_bin, stderr, stdout, TestEnv};

const ENOSYS: &str = "errno=38";
const EACCES: &str = "errno=13";

const POLICY: &str = "version: 1\nrules:\n  - id: api\n    connect: { to: 127.0.0.1, ports: [9] }\n    decision: allow\n";

fn setup(name: &str) -> TestEnv {
    let mut env = TestEnv::new_in(name, Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", POLICY);
    env.start_daemon();
    env.add_agent("bot", "p.yaml");
    env
}

/// A cgroup outside every agent, made by the test under its own parent.
fn outside(env: &TestEnv) -> std::path::PathBuf {
    let dir = env.cgroup_parent.join("outside");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_agents_cannot_fork_or_move_into_another_cgroup() {
    if !can_run("escape_run_clone3") {
        return;
    }
    let env = setup("escclone");
    let out_cg = outside(&env);
    let out_str = out_cg.to_str().unwrap();

    // Positive control: outside an agent the probe does fork into the
    // other cgroup, so a refusal below is the confinement's.
    let free = Command::new(probe_bin())
        .args(["clone3-into", out_str])
        .output()
        .unwrap();
    let rel = out_cg
        .strip_prefix(warden::cgroup::cgroup2_mount().unwrap())
        .unwrap();
    assert!(
        stdout(&free).contains(&format!("child cgroup=/{}", rel.display())),
        "control: {} {}",
        stdout(&free),
        stderr(&free)
    );

    // From the agent: clone3 is answered ENOSYS (seccomp), whatever the
    // flags, so CLONE_INTO_CGROUP cannot be asked for.
    let out = env.probe_as("bot", &["clone3-into", out_str]);
    assert_eq!(stdout(&out), ENOSYS, "{}", stderr(&out));
    // Writing cgroup.procs (migration) is refused by Landlock, into the
    // other cgroup and into a child of the agent's own.
    let out = env.probe_as("bot", &["enter", out_str]);
    assert_eq!(stdout(&out), EACCES, "{}", stderr(&out));
    // libc still forks (clone fallback): the agent works as before.
    let out = env.cli(&[
        "run",
        "--agent",
        "bot",
        "--",
        "/bin/sh",
        "-c",
        "/bin/true && echo forked",
    ]);
    assert_eq!(stdout(&out), "forked", "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(out_cg.join("cgroup.procs"))
            .unwrap()
            .trim()
            .is_empty(),
        "nothing of the agent's reached the other cgroup"
    );

    // The evidence: every run entry says clone3 is answered ENOSYS.
    let run = env.wait_for_evidence("the run", |e| e["kind"] == "run");
    let enosys = &run["details"]["confinement"]["seccomp"]["enosys"];
    assert!(
        enosys.as_array().unwrap().iter().any(|s| s == "clone3"),
        "{run}"
    );
}

/// Opens `path` without O_CLOEXEC, so every child of the test inherits it.
fn inheritable(path: &Path) -> std::fs::File {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, 0) };
    f
}

#[test]
fn warden_run_closes_inherited_fds_and_core_dumps() {
    if !can_run("escape_run_fds") {
        return;
    }
    let env = setup("escfds");
    let secret = env.state_dir().parent().unwrap().join("leaked-secret");
    std::fs::write(&secret, "secret").unwrap();
    let secret = secret.canonicalize().unwrap();
    let file = inheritable(&secret);
    let fd = file.as_raw_fd().to_string();
    let name = secret.to_str().unwrap();

    // Not asked: the descriptor is gone in the agent.
    let out = env.probe_as("bot", &["fds"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains(name),
        "inherited descriptor visible in the agent:\n{}",
        stdout(&out)
    );
    // Reading it by number fails too.
    let out = env.probe_as("bot", &["read", &format!("/proc/self/fd/{fd}")]);
    assert!(stdout(&out).starts_with("errno="), "{}", stdout(&out));
    let run = env.wait_for_evidence("the run closing it", |e| {
        e["kind"] == "run"
            && e["details"]["confinement"]["fds"]["closed_inherited"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f["target"] == name))
    });
    assert_eq!(
        run["details"]["confinement"]["rlimits"]["core"]["hard"], 0,
        "{run}"
    );

    // Asked with --keep-fd: it is there.
    let probe = probe_bin();
    let out = env.cli(&[
        "run",
        "--agent",
        "bot",
        "--keep-fd",
        &fd,
        "--",
        probe.to_str().unwrap(),
        "fds",
    ]);
    assert!(stdout(&out).contains(name), "{}", stdout(&out));
    env.wait_for_evidence("the run keeping it", |e| {
        e["kind"] == "run"
            && e["details"]["confinement"]["fds"]["kept_inherited"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f["target"] == name))
    });

    // Core dumps: soft and hard limit 0 (a root agent with
    // CAP_SYS_RESOURCE may raise them again; README, Known gaps).
    let out = env.probe_as("bot", &["rlimit-core"]);
    assert_eq!(stdout(&out), "core=0/0", "{}", stderr(&out));
    drop(file);
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}
