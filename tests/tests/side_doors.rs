//! Side doors around the network rules (issue #15 §2), attacked from inside
//! agents on this kernel: the unspecified destination that the kernel
//! delivers to loopback, raw and packet sockets.

use warden_tests::{can_run, stderr, stdout, Listener, TestEnv};

/// `allow 0.0.0.0/0` and `deny 127.0.0.0/8`: a connect to `0.0.0.0`, `::`
/// or `::ffff:0.0.0.0` goes to loopback, so it is decided (and recorded)
/// as loopback and refused.
#[test]
fn a_wildcard_connect_is_decided_as_the_loopback_it_reaches() {
    if !can_run("side_doors") {
        return;
    }
    let v4 = Listener::tcp4();
    let v6 = Listener::tcp6();
    let mut env = TestEnv::new("wildcard");
    env.write_policy(
        "wild.yaml",
        "version: 1
rules:
  - id: no-loopback
    connect: { to: 127.0.0.0/8 }
    decision: deny
  - id: no-loopback6
    connect: { to: '::1' }
    decision: deny
  - id: anywhere
    connect: { to: 0.0.0.0/0 }
    decision: allow
  - id: anywhere6
    connect: { to: '::/0' }
    decision: allow
",
    );
    env.start_daemon();
    env.add_agent("wild", "wild.yaml");

    let eperm = format!("errno={}", libc::EPERM);
    for (to, recorded) in [
        (
            format!("0.0.0.0:{}", v4.port),
            format!("127.0.0.1:{}/tcp", v4.port),
        ),
        (
            format!("[::]:{}", v6.port),
            format!("[::1]:{}/tcp", v6.port),
        ),
        (
            format!("[::ffff:0.0.0.0]:{}", v4.port),
            format!("[::ffff:127.0.0.1]:{}/tcp", v4.port),
        ),
    ] {
        let out = env.probe_as("wild", &["connect", &to]);
        assert_eq!(stdout(&out), eperm, "connect {to}: {}", stderr(&out));
        let e = env.wait_for_evidence(&format!("denied {to}"), |e| {
            e["kind"] == "decision" && e["target"] == recorded.as_str()
        });
        assert_eq!(e["decision"], "deny", "{e}");
        assert!(
            e["rule_id"] == "no-loopback" || e["rule_id"] == "no-loopback6",
            "{e}"
        );
    }
    // The wildcard itself is never what the record says.
    assert!(
        !env.evidence().iter().any(|e| e["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("0.0.0.0") || t.starts_with("[::]"))),
        "{:#?}",
        env.evidence()
    );
}

/// The same rewrite lets an allowed loopback port through: the wildcard is
/// decided as 127.0.0.1, not refused outright.
#[test]
fn a_wildcard_connect_to_an_allowed_loopback_port_succeeds() {
    if !can_run("side_doors") {
        return;
    }
    let v4 = Listener::tcp4();
    let mut env = TestEnv::new("wildok");
    env.write_policy(
        "ok.yaml",
        &format!(
            "version: 1
rules:
  - id: api
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
",
            v4.port
        ),
    );
    env.start_daemon();
    env.add_agent("wildok", "ok.yaml");
    let out = env.probe_as("wildok", &["connect", &format!("0.0.0.0:{}", v4.port)]);
    assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    let e = env.wait_for_evidence("allowed wildcard", |e| {
        e["kind"] == "decision" && e["target"] == format!("127.0.0.1:{}/tcp", v4.port)
    });
    assert_eq!(e["rule_id"], "api", "{e}");
}

const AF_INET: &str = "2";
const AF_INET6: &str = "10";
const AF_PACKET: &str = "17";
const SOCK_STREAM: &str = "1";
const SOCK_DGRAM: &str = "2";
const SOCK_RAW: &str = "3";
const SOCK_PACKET: &str = "10";
/// `SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC`.
const SOCK_RAW_FLAGS: &str = "526339";
/// `htons(ETH_P_ALL)` as socket(2) takes it.
const ETH_P_ALL_BE: &str = "768";

/// Raw IP sockets (a hand-built header with `IPPROTO_RAW`, ICMP, IPv6)
/// send what the connect rules never see. A root agent is refused each at
/// creation by the cgroup `sock_create` hook, with EPERM and a record;
/// ordinary sockets and processes outside agents are unaffected; a
/// `socket` rule allows raw sockets.
#[test]
fn raw_sockets_are_refused_and_recorded_unless_a_rule_allows_them() {
    if !can_run("side_doors") {
        return;
    }
    let mut env = TestEnv::new("rawsock");
    env.write_policy(
        "none.yaml",
        "version: 1
rules:
  - id: anywhere
    connect: { to: 0.0.0.0/0 }
    decision: allow
",
    );
    env.write_policy(
        "raw.yaml",
        "version: 1
rules:
  - id: ping
    socket: { kind: raw }
    decision: allow
",
    );
    env.start_daemon();
    env.add_agent("noraw", "none.yaml");
    env.add_agent("raw", "raw.yaml");
    let eperm = format!("errno={}", libc::EPERM);

    for (args, target) in [
        ([AF_INET, SOCK_RAW, "255"], "raw inet raw protocol=255"),
        ([AF_INET, SOCK_RAW_FLAGS, "1"], "raw inet raw protocol=1"),
        ([AF_INET6, SOCK_RAW, "58"], "raw inet6 raw protocol=58"),
    ] {
        let mut probe = vec!["socket"];
        probe.extend_from_slice(&args);
        let out = env.probe_as("noraw", &probe);
        assert_eq!(stdout(&out), eperm, "socket {args:?}: {}", stderr(&out));
        let e = env.wait_for_evidence(target, |e| {
            e["kind"] == "decision" && e["agent"] == "noraw" && e["target"] == target
        });
        assert_eq!(e["action"], "socket", "{e}");
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
        assert_eq!(e["method"], "cgroup-deny", "{e}");
        assert_eq!(e["uid"], 0, "{e}");
    }
    // Ordinary sockets are decided at connect, not at creation.
    for args in [[AF_INET, SOCK_STREAM, "0"], [AF_INET6, SOCK_DGRAM, "0"]] {
        let mut probe = vec!["socket"];
        probe.extend_from_slice(&args);
        let out = env.probe_as("noraw", &probe);
        assert_eq!(stdout(&out), "ok", "socket {args:?}: {}", stderr(&out));
    }
    // Outside any agent, root keeps its raw sockets.
    let out = std::process::Command::new(warden_tests::probe_bin())
        .args(["socket", AF_INET, SOCK_RAW, "255"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok", "outside: {}", stderr(&out));

    // The rule allows raw sockets, and the record names it.
    let out = env.probe_as("raw", &["socket", AF_INET, SOCK_RAW, "1"]);
    assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    let e = env.wait_for_evidence("allowed raw", |e| {
        e["kind"] == "decision" && e["agent"] == "raw" && e["target"] == "raw inet raw protocol=1"
    });
    assert_eq!(e["decision"], "allow", "{e}");
    assert_eq!(e["rule_id"], "ping", "{e}");
}

/// Packet sockets (`AF_PACKET`, and `AF_INET` with the obsolete
/// `SOCK_PACKET` type, which the kernel turns into one) never reach the
/// `sock_create` hook; `warden run` refuses them by seccomp, whatever the
/// policy, and its `run` entry says so.
#[test]
fn packet_sockets_are_refused_to_warden_run_agents() {
    if !can_run("side_doors") {
        return;
    }
    let mut env = TestEnv::new("pktsock");
    env.write_policy(
        "raw.yaml",
        "version: 1
rules:
  - id: ping
    socket: { kind: raw }
    decision: allow
",
    );
    env.start_daemon();
    env.add_agent("pkt", "raw.yaml");
    let eperm = format!("errno={}", libc::EPERM);
    for args in [
        [AF_PACKET, SOCK_RAW, ETH_P_ALL_BE],
        [AF_PACKET, SOCK_DGRAM, ETH_P_ALL_BE],
        [AF_PACKET, SOCK_RAW_FLAGS, "0"],
        [AF_INET, SOCK_PACKET, ETH_P_ALL_BE],
    ] {
        let mut probe = vec!["socket"];
        probe.extend_from_slice(&args);
        let out = env.probe_as("pkt", &probe);
        assert_eq!(stdout(&out), eperm, "socket {args:?}: {}", stderr(&out));
    }
    // Outside any agent, root keeps its packet sockets.
    let out = std::process::Command::new(warden_tests::probe_bin())
        .args(["socket", AF_PACKET, SOCK_RAW, ETH_P_ALL_BE])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok", "outside: {}", stderr(&out));
    let run = env.wait_for_evidence("run entry", |e| e["kind"] == "run");
    let denied = &run["details"]["confinement"]["seccomp"]["denied_sockets"];
    assert!(
        denied
            .as_array()
            .is_some_and(|d| d.iter().any(|s| s == "socket(AF_PACKET, *)")),
        "{run}"
    );
}
