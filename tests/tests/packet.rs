//! Packet sockets on the fallback (issue #15 §2): the cgroup `sock_create`
//! hook never sees `AF_PACKET` or `SOCK_PACKET` sockets (the kernel runs
//! it for inet sockets only), so without BPF LSM an adopted agent's root
//! process could open one unrecorded. `tp_btf/sys_exit` sees the
//! successful `socket()` (64-bit, ia32 `socket`, ia32
//! `socketcall(SYS_SOCKET)`) and kills the process before the call
//! returns, recorded; a `socket: { kind: packet }` rule allows them,
//! recorded as allowed. Raw inet sockets stay decided by the cgroup hook
//! (one entry each); root outside every agent opens one untouched. Real
//! daemon, real cgroups, real sockets; each test makes its own cgroups.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use warden_tests::{can_run, killed, probe_bin, stdout, wait_until, TestEnv};

/// Raw inet sockets allowed (the cgroup hook decides them), packet sockets
/// named by no rule.
const NO_PACKET: &str = "version: 1
rules:
  - id: ping
    socket: { kind: raw }
    decision: allow
";

const PACKET_ALLOWED: &str = "version: 1
rules:
  - id: ping
    socket: { kind: raw }
    decision: allow
  - id: sniff
    socket: { kind: packet }
    decision: allow
";

/// A daemon and an adopted agent cgroup (`agent add --cgroup`) named
/// `adopted` with `policy`.
fn adopted(name: &str, policy: &str) -> (TestEnv, PathBuf) {
    let mut env = TestEnv::new_in(name, Path::new(env!("CARGO_TARGET_TMPDIR")));
    env.write_policy("p.yaml", policy);
    env.start_daemon();
    let agent = env.cgroup_parent.join("adopted");
    std::fs::create_dir_all(&agent).unwrap();
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
    (env, agent)
}

/// `warden-probe ARGS` run by a root process that first moved itself into
/// `cgroup`.
fn in_agent(cgroup: &Path, args: &[&str]) -> Output {
    Command::new(probe_bin())
        .arg("join")
        .arg(cgroup)
        .args(args)
        .output()
        .unwrap()
}

/// The ways to ask for a packet socket, with the target they are
/// recorded as (family and type as the kernel made the socket).
const ATTEMPTS: [(&[&str], &str); 5] = [
    (
        &["socket", "17", "3", "768"],
        "packet packet raw protocol=768",
    ),
    // AF_INET/SOCK_PACKET: the kernel makes it an AF_PACKET socket.
    (
        &["socket", "2", "10", "768"],
        "packet packet packet protocol=768",
    ),
    // SOCK_DGRAM with SOCK_CLOEXEC (0x80000) in the type.
    (
        &["socket", "17", "524290", "768"],
        "packet packet dgram protocol=768",
    ),
    (
        &["op32", "socket", "17", "3", "768"],
        "packet packet raw protocol=768",
    ),
    (
        &["op32", "socketcall-socket", "17", "3", "768"],
        "packet packet raw protocol=768",
    ),
];

/// The `n`th packet socket entry (from 0), once it is written.
fn entry_number(env: &TestEnv, n: usize) -> serde_json::Value {
    let mut entries = Vec::new();
    wait_until(&format!("packet socket entry {n}"), || {
        entries = packet_entries(env);
        entries.len() > n
    });
    assert_eq!(entries.len(), n + 1, "one entry per attempt: {entries:#?}");
    entries.swap_remove(n)
}

fn packet_entries(env: &TestEnv) -> Vec<serde_json::Value> {
    env.evidence()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["action"] == "socket")
        .filter(|e| e["details"]["family"] == 17)
        .collect()
}

/// From inside an adopted agent whose root process has `CAP_NET_RAW` and
/// whose policy allows raw sockets but no packet sockets: each way of
/// opening a packet socket (64-bit `socket`, `SOCK_PACKET`, a type with
/// flags, ia32 `socket`, ia32 `socketcall(SYS_SOCKET)`) is killed before
/// the call returns (the probe never prints) and recorded with the kill;
/// a raw inet socket is allowed by the cgroup hook, one entry, no kill;
/// root outside every agent opens a packet socket untouched and
/// unrecorded.
#[test]
fn packet_sockets_of_an_adopted_agent_are_killed_and_recorded() {
    if !can_run("packet_killed") {
        return;
    }
    let (env, agent) = adopted("packetkill", NO_PACKET);
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let hook = status["global_hooks"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["hook"] == "tp_btf/sys_exit"))
        .unwrap_or_else(|| panic!("no sys_exit row: {status:#}"));
    assert_eq!(hook["attached"], true, "{hook}");
    assert!(
        hook["why"]
            .as_str()
            .unwrap()
            .contains("packet sockets of the adopted agent(s) adopted"),
        "{hook}"
    );

    for (n, (args, target)) in ATTEMPTS.iter().enumerate() {
        let out = in_agent(&agent, args);
        assert!(killed(&out), "{args:?} was not killed: {out:?}");
        assert_eq!(stdout(&out), "", "{args:?} returned to user space");
        let e = entry_number(&env, n);
        assert_eq!(e["target"], *target, "{e}");
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["agent"], "adopted", "{e}");
        assert_eq!(e["method"], "kill", "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
        assert_eq!(e["details"]["family"], 17, "{e}");
        assert_eq!(e["details"]["protocol"], 768, "{e}");
    }
    let entries = packet_entries(&env);
    assert_eq!(
        entries.len(),
        ATTEMPTS.len(),
        "one entry each: {entries:#?}"
    );

    // A raw inet socket: the cgroup hook's decision alone.
    let out = in_agent(&agent, &["socket", "2", "3", "1"]);
    assert_eq!(stdout(&out), "ok", "{out:?}");
    let e = env.wait_for_evidence("the allowed raw socket", |e| {
        e["action"] == "socket" && e["target"] == "raw inet raw protocol=1"
    });
    assert_eq!(e["rule_id"], "ping", "{e}");
    assert_eq!(e["decision"], "allow", "{e}");
    // An inet socket that is not raw: no decision at creation, no kill.
    let out = in_agent(&agent, &["socket", "2", "2", "0"]);
    assert_eq!(stdout(&out), "ok", "{out:?}");

    // Outside every agent: created, not recorded.
    for args in [
        &["socket", "17", "3", "768"][..],
        &["op32", "socketcall-socket", "17", "3", "768"],
    ] {
        let out = Command::new(probe_bin()).args(args).output().unwrap();
        assert_eq!(stdout(&out), "ok", "outside {args:?}: {out:?}");
    }
    // Give the outside attempts the time an entry would take to arrive
    // (the raw socket's entry above arrived after the agent's packets).
    let raws: Vec<_> = env
        .evidence()
        .into_iter()
        .filter(|e| e["action"] == "socket" && e["target"] == "raw inet raw protocol=1")
        .collect();
    assert_eq!(raws.len(), 1, "{raws:#?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        packet_entries(&env).len(),
        ATTEMPTS.len(),
        "root outside is not recorded"
    );
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    // The verifier's cost of the sys_exit programs, as logged at load
    // (shown with --nocapture).
    for line in env.daemon_log().lines() {
        if line.contains("verified_insns")
            && (line.contains("warden_sys_exit") || line.contains("warden_path_ops"))
        {
            eprintln!("{line}");
        }
    }
}

/// `socket: { kind: packet }` allows them: each way opens the socket and
/// returns, recorded as allowed by that rule; after a reload without the
/// rule the same call is killed again.
#[test]
fn a_packet_rule_allows_packet_sockets_and_its_removal_kills_again() {
    if !can_run("packet_allowed") {
        return;
    }
    let (env, agent) = adopted("packetallow", PACKET_ALLOWED);
    for (n, (args, target)) in ATTEMPTS.iter().enumerate() {
        let out = in_agent(&agent, args);
        assert_eq!(stdout(&out), "ok", "{args:?}: {out:?}");
        let e = entry_number(&env, n);
        assert_eq!(e["target"], *target, "{e}");
        assert_eq!(e["decision"], "allow", "{e}");
        assert_eq!(e["method"], "allow", "{e}");
        assert_eq!(e["rule_id"], "sniff", "{e}");
        assert_eq!(e["agent"], "adopted", "{e}");
    }
    assert_eq!(packet_entries(&env).len(), ATTEMPTS.len());

    env.write_policy("p.yaml", NO_PACKET);
    env.ok(&["policy", "reload"]);
    let out = in_agent(&agent, &["socket", "17", "3", "768"]);
    assert!(killed(&out), "after the reload: {out:?}");
    let e = env.wait_for_evidence("the denial after the reload", |e| {
        e["action"] == "socket" && e["details"]["family"] == 17 && e["decision"] == "deny"
    });
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}
