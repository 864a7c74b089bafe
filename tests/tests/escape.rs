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

/// A process moved into a cgroup two levels below an adopted agent's: its
/// exec, open and connect are decided by the agent's policy and recorded
/// under the agent's name with the child cgroup's id.
#[test]
fn a_cgroup_below_an_adopted_agent_is_the_agent() {
    use warden_tests::{killed, probe_path, Files, Listener, RUNTIME_FILES};
    if !can_run("escape_descendants") {
        return;
    }
    let allowed = Listener::tcp4();
    let denied = Listener::tcp4();
    let mut env = TestEnv::new_in("escdesc", Path::new(env!("CARGO_TARGET_TMPDIR")));
    let f = Files::new(&env);
    let public = f.write("public/ok.txt", "public");
    let secret = f.write("other/secret.txt", "secret");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:{RUNTIME_FILES}
  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
  - id: public
    file: {{ prefix: {public_dir}/, access: [read] }}
    decision: allow
  - id: api
    connect: {{ to: 127.0.0.1, ports: [{port}] }}
    decision: allow
",
            probe = probe_path(),
            public_dir = f.path("public"),
            port = allowed.port,
        ),
    );
    env.start_daemon();
    let agent_cg = env.cgroup_parent.join("adopted");
    std::fs::create_dir_all(&agent_cg).unwrap();
    env.ok(&[
        "agent",
        "add",
        "adopted",
        "--owner",
        "o@example.com",
        "--policy",
        "p.yaml",
        "--cgroup",
        agent_cg.to_str().unwrap(),
    ]);
    let grand = agent_cg.join("child").join("grand");
    std::fs::create_dir_all(&grand).unwrap();
    let grand_id = warden::cgroup::cgroup_id(&grand).unwrap();
    let grand_str = grand.to_str().unwrap();
    let probe = |args: &[&str]| {
        Command::new(probe_bin())
            .arg("join")
            .arg(grand_str)
            .args(args)
            .output()
            .unwrap()
    };
    let decision = |what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        let e = env.wait_for_evidence(what, |e| e["kind"] == "decision" && pred(e));
        assert_eq!(e["agent"], "adopted", "{e}");
        assert_eq!(e["details"]["cgroup_id"], grand_id, "{e}");
        e
    };

    // Allowed by the agent's rules.
    let out = probe(&["read", &public]);
    assert_eq!(stdout(&out), "ok public", "{}", stderr(&out));
    let to_allowed = format!("127.0.0.1:{}", allowed.port);
    let allowed_target = format!("{to_allowed}/tcp");
    let out = probe(&["connect", &to_allowed]);
    assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    let e = decision("allowed connect", &|e| {
        e["target"] == allowed_target.as_str()
    });
    assert_eq!(e["decision"], "allow", "{e}");

    // Denied by the agent's default, each recorded as the agent's.
    let to_denied = format!("127.0.0.1:{}", denied.port);
    let denied_target = format!("{to_denied}/tcp");
    let out = probe(&["connect", &to_denied]);
    assert_eq!(stdout(&out), "errno=1", "{}", stderr(&out));
    let e = decision("denied connect", &|e| e["target"] == denied_target.as_str());
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["rule_id"], "default-deny", "{e}");

    let out = probe(&["read", &secret]);
    assert!(killed(&out), "open of the secret: {out:?}");
    assert!(!stdout(&out).contains("secret"), "{}", stdout(&out));
    let e = decision("denied open", &|e| {
        e["action"] == "open" && e["target"] == secret.as_str()
    });
    assert_eq!(e["decision"], "deny", "{e}");

    let out = probe(&["exec", "/usr/bin/id"]);
    assert!(killed(&out), "exec of id: {out:?}");
    assert!(stdout(&out).is_empty(), "id ran: {}", stdout(&out));
    let e = decision("denied exec", &|e| {
        e["action"] == "exec" && e["target"] == "/usr/bin/id"
    });
    assert_eq!(e["decision"], "deny", "{e}");

    // Outside the agent the same actions are not decided.
    let out = Command::new(probe_bin())
        .args(["read", &secret])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok secret");
}

/// A process that descends from an agent process but moved its cgroup out
/// of the agent asks to approve the agent's held connect: refused, and the
/// attempt recorded. The test's own approval then goes through.
#[test]
fn a_process_descended_from_an_agent_never_approves() {
    use std::process::Stdio;
    use warden_tests::{approvals, wait_held, Listener};
    if !can_run("escape_approve") {
        return;
    }
    let l = Listener::tcp4();
    let mut env = TestEnv::new_in("escappr", Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy(
        "hold.yaml",
        &format!(
            "version: 1\napprovers:\n  users: [root]\nhold_timeout: 5m\nrules:
  - id: payments-api
    connect: {{ to: 127.0.0.1, ports: [{}], protocol: tcp }}
    decision: hold
",
            l.port
        ),
    );
    // The second line of defence: with escape detection on, the shell that
    // leaves the agent is killed before it can ask (leave_agent.rs); off,
    // the daemon still refuses the approval.
    env.start_daemon_with(&[("WARDEN_DISABLE_MECHANISMS", "escape")]);
    let agent_cg = env.cgroup_parent.join("adopted");
    std::fs::create_dir_all(&agent_cg).unwrap();
    env.ok(&[
        "agent",
        "add",
        "payer",
        "--owner",
        "o@example.com",
        "--policy",
        "hold.yaml",
        "--cgroup",
        agent_cg.to_str().unwrap(),
    ]);
    let out_cg = outside(&env);
    let target = format!("127.0.0.1:{}", l.port);
    let held = Command::new(probe_bin())
        .args(["join", agent_cg.to_str().unwrap(), "connect", &target])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pending = wait_held(
        &env,
        warden_tests::command_of(held.id()),
        &['T'],
        "the connect is held",
    );
    let id = pending["id"].as_u64().unwrap().to_string();

    // A shell in the agent starts a child that leaves for another cgroup
    // and runs `warden approve` from there.
    let approve = env.warden();
    let script = format!(
        "echo $$ > {a}/cgroup.procs && sh -c 'echo $$ > {o}/cgroup.procs && exec \"$0\" approve {id}' {w}",
        a = agent_cg.display(),
        o = out_cg.display(),
        w = warden_tests::warden_bin().display(),
    );
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .envs(approve.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the escaped approve: {out:?}");
    assert!(
        stderr(&out).contains("agents cannot approve") && stderr(&out).contains("ancestor"),
        "{}",
        stderr(&out)
    );
    let e = env.wait_for_evidence("the refused approval", |e| {
        e["kind"] == "approval" && e["decision"] == "refused"
    });
    assert_eq!(e["agent"], "payer", "{e}");
    assert_eq!(e["details"]["relation"], "ancestor", "{e}");
    assert_eq!(e["details"]["approval_id"], pending["id"], "{e}");
    assert_eq!(approvals(&env, false).len(), 1, "still pending");

    // The test (outside every agent) approves; the connect completes.
    let said = env.ok(&["approve", &id]);
    assert!(said.contains("approved"), "{said}");
    let out = held.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "ok");
}
