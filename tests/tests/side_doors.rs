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
