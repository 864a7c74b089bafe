//! Budgets: the kernel counts an agent's allowed actions per window and,
//! past the limit, refuses (deny), holds or kills, with the daemon running
//! or stopped, and records the refusal under `budget:<id>`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use warden_tests::{can_run, killed, probe_bin, stdout, Listener, TestEnv};

const LIMIT: u64 = 20;

fn policy(port: u16, then: &str, limit: u64, per: &str) -> String {
    format!(
        "version: 1
approvers:
  users: [root]
rules:
  - id: api
    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: tcp }}
    decision: allow
budgets:
  - id: api-calls
    count: connect
    match: {{ rule: api }}
    limit: {limit}
    per: {per}
    then: {then}
"
    )
}

/// Waits until at least `margin` remains of the current `per`-long window
/// of the kernel's clock (`bpf_ktime_get_ns` is CLOCK_MONOTONIC; windows
/// are aligned to multiples of `per`), so a test's actions fall in one
/// window.
fn within_one_window(per: Duration, margin: Duration) {
    let now = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
    };
    let per = per.as_nanos();
    let left = per - now() % per;
    if left < margin.as_nanos() {
        thread::sleep(Duration::from_nanos(left as u64 + 50_000_000));
    }
}

/// Counted refusals are written at each sweep: every second here.
const FAST_SWEEP: [(&str, &str); 1] = [("WARDEN_SUMMARY_SECS", "1")];

fn setup(name: &str, then: &str) -> (TestEnv, Listener, String) {
    let l = Listener::tcp4();
    let mut env = TestEnv::new(name);
    env.write_policy("p.yaml", &policy(l.port, then, LIMIT, "1m"));
    env.start_daemon_with(&FAST_SWEEP);
    env.add_agent("bot", "p.yaml");
    let addr = format!("127.0.0.1:{}", l.port);
    (env, l, addr)
}

/// The probe moves itself into `cgroup` and connects `n` times: the
/// kernel alone decides (no `warden run`, no daemon needed).
fn connect_n_in(cgroup: &Path, addr: &str, n: u64) -> Output {
    Command::new(probe_bin())
        .arg("join")
        .arg(cgroup)
        .args(["connect-n", addr, &n.to_string()])
        .output()
        .unwrap()
}

/// The budget's refusals on the record: (recorded individually, counted
/// in `summary` entries).
fn budget_refusals(env: &TestEnv) -> (u64, u64) {
    let mut out = (0, 0);
    for e in env.evidence() {
        if e["rule_id"] != "budget:api-calls" {
            continue;
        }
        if e["kind"] == "decision" {
            out.0 += 1;
        } else if e["kind"] == "summary" {
            assert_eq!(e["decision"], "deny", "{e}");
            out.1 += e["details"]["count"].as_u64().unwrap();
        }
    }
    out
}

#[test]
fn a_connect_budget_denies_the_21st_with_the_daemon_running() {
    if !can_run("budget_deny") {
        return;
    }
    let (env, _l, addr) = setup("budgetdeny", "deny");
    within_one_window(Duration::from_secs(60), Duration::from_secs(20));
    let out = env.probe_as("bot", &["connect-n", &addr, "25"]);
    assert_eq!(stdout(&out), "ok=20 eperm=5");
    let e = env.wait_for_evidence("the budget's refusal", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:api-calls"
    });
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "cgroup-deny", "{e}");
    assert_eq!(e["target"], format!("{addr}/tcp"), "{e}");
    // Every refusal is on the record (none silent): the first of each
    // process and destination individually, the rest counted.
    env.wait_for_evidence("five refusals", |_| budget_refusals(&env) == (1, 4));

    // The export bundle lists the budget in force, and maps it to controls.
    let out = env.dir.path().join("bundle");
    env.ok(&["evidence", "export", "--out", out.to_str().unwrap()]);
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap()
    };
    let caps = read("capabilities.json");
    let row = caps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_id"] == "budget:api-calls")
        .unwrap_or_else(|| panic!("no budget row: {caps:#}"));
    assert_eq!(
        row["capability"],
        "budget: 20 connect allowed by api per 60 s, enforced in the kernel"
    );
    assert_eq!(row["decision"], "deny over the limit");
    let map = read("control_map.json");
    assert!(
        map.as_array().unwrap().iter().any(|m| m["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "budget_reset")
            && m["soc2"][0] == "CC7.2"
            && m["iso27001"][0] == "A.8.16"),
        "{map:#}"
    );
    let verified = env.ok(&["evidence", "verify", out.to_str().unwrap()]);
    assert!(
        verified.contains("OK") || verified.to_lowercase().contains("valid"),
        "{verified}"
    );
}

#[test]
fn a_connect_budget_is_enforced_with_the_daemon_stopped() {
    if !can_run("budget_no_daemon") {
        return;
    }
    let (mut env, _l, addr) = setup("budgetdown", "deny");
    let cg = env.agent_cgroup("bot");
    env.stop_daemon();
    within_one_window(Duration::from_secs(60), Duration::from_secs(20));
    assert_eq!(stdout(&connect_n_in(&cg, &addr, 25)), "ok=20 eperm=5");
    // The first refusal waited in the pinned ring buffer for the next
    // daemon, the count of the rest in the pinned summaries.
    env.start_daemon_with(&FAST_SWEEP);
    let e = env.wait_for_evidence("a refusal made while the daemon was down", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:api-calls"
    });
    assert_eq!(e["decision"], "deny", "{e}");
    env.wait_for_evidence("five refusals", |_| budget_refusals(&env) == (1, 4));
}

#[test]
fn a_hold_budget_holds_the_21st_until_a_human_approves_one_more() {
    if !can_run("budget_hold") {
        return;
    }
    let (env, _l, addr) = setup("budgethold", "hold");
    within_one_window(Duration::from_secs(60), Duration::from_secs(40));
    let probe = probe_bin();
    let child = env
        .warden()
        .args(["run", "--agent", "bot", "--", probe.to_str().unwrap()])
        .args(["connect-n", &addr, "21"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pending = warden_tests::wait_held(
        &env,
        warden_tests::command_of(child.id()),
        &['T'],
        "the 21st connect is held",
    );
    assert_eq!(pending["job"]["target"], format!("{addr}/tcp"), "{pending}");
    assert_eq!(pending["rule_id"], "budget:api-calls", "{pending}");
    let id = pending["id"].as_u64().unwrap().to_string();
    env.ok(&["approve", &id, "--reason", "one more call"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "ok=21 eperm=0");
    env.wait_for_evidence("the approved over-budget connect", |e| {
        e["kind"] == "decision" && e["method"] == "approved" && e["rule_id"] == "budget:api-calls"
    });
}

#[test]
fn a_kill_budget_kills_the_process_at_the_21st() {
    if !can_run("budget_kill") {
        return;
    }
    let (mut env, _l, addr) = setup("budgetkill", "kill");
    within_one_window(Duration::from_secs(60), Duration::from_secs(20));
    let out = env.probe_as("bot", &["connect-n", &addr, "25"]);
    assert!(killed(&out), "{:?}", out.status);
    let e = env.wait_for_evidence("the kill", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:api-calls"
    });
    assert_eq!(
        (e["decision"].as_str(), e["method"].as_str()),
        (Some("deny"), Some("kill")),
        "{e}"
    );
    // The kill is the kernel's too: with the daemon stopped, in a new
    // window's worth of budget... the same budget is already spent, so
    // the next connect is refused and its process killed.
    let cg = env.agent_cgroup("bot");
    env.stop_daemon();
    let out = connect_n_in(&cg, &addr, 1);
    assert!(
        killed(&out),
        "daemon stopped: {:?} {}",
        out.status,
        stdout(&out)
    );
}

/// Many processes with many threads race one budget: the kernel counts
/// with compare-and-swap, so no two CPUs take the same unit and the agent
/// never gets more than the limit (slack 0). A lost race retries; after 4
/// lost tries the action is refused, so a few may be refused early
/// (never allowed late).
#[test]
fn racing_processes_never_get_more_than_the_limit() {
    if !can_run("budget_race") {
        return;
    }
    const RACE_LIMIT: u64 = 200;
    let l = Listener::tcp4();
    let mut env = TestEnv::new("budgetrace");
    env.write_policy("p.yaml", &policy(l.port, "deny", RACE_LIMIT, "1h"));
    env.start_daemon_with(&FAST_SWEEP);
    env.add_agent("bot", "p.yaml");
    let addr = format!("127.0.0.1:{}", l.port);
    let cg = env.agent_cgroup("bot");
    within_one_window(Duration::from_secs(3600), Duration::from_secs(120));
    // 16 processes x 4 threads x 10 connects = 640 tries for 200 units.
    let children: Vec<_> = (0..16)
        .map(|_| {
            Command::new(probe_bin())
                .arg("join")
                .arg(&cg)
                .args(["connect-threads", &addr, "4", "10"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut ok, mut eperm) = (0u64, 0u64);
    for c in children {
        let out = c.wait_with_output().unwrap();
        let s = stdout(&out);
        let mut parts = s.split(' ');
        let field = |p: Option<&str>, name: &str| -> u64 {
            p.and_then(|p| p.strip_prefix(name))
                .unwrap()
                .parse()
                .unwrap()
        };
        ok += field(parts.next(), "ok=");
        eperm += field(parts.next(), "eperm=");
    }
    assert_eq!(
        ok + eperm,
        640,
        "every connect either went through or was refused"
    );
    assert!(
        ok <= RACE_LIMIT,
        "{ok} connects went through a budget of {RACE_LIMIT}"
    );
    assert!(
        ok >= RACE_LIMIT - 8,
        "only {ok} of {RACE_LIMIT} went through"
    );
    // Each refusal is on the record, individually (the first of each
    // process) or counted.
    env.wait_for_evidence("every refusal", |_| {
        let (each, counted) = budget_refusals(&env);
        each <= 16 && each + counted == eperm
    });
}

/// An exec budget on the fallback (`tp_btf/sched_process_exec`, the judge
/// the LSM hooks share): the 4th exec of a budget of 3 is refused, which
/// the fallback carries out by killing the process before the new image's
/// first instruction; the execs the budget does not match are not counted.
#[test]
fn an_exec_budget_kills_the_exec_over_the_limit() {
    if !can_run("budget_exec") {
        return;
    }
    let mut env = TestEnv::new("budgetexec");
    let f = warden_tests::Files::new(&env);
    let touch = f.binary("touch", "/usr/bin/touch");
    env.write_policy(
        "exec.yaml",
        &format!(
            "version: 1
rules:
  - id: tools
    exec: {{ path: {touch} }}
    decision: allow
  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
budgets:
  - id: touches
    count: exec
    match: {{ rule: tools }}
    limit: 3
    per: 1m
    then: deny
",
            probe = warden_tests::probe_path(),
        ),
    );
    env.start_daemon();
    env.add_agent("execer", "exec.yaml");
    within_one_window(Duration::from_secs(60), Duration::from_secs(30));
    for i in 0..4 {
        let marker = f.marker(&format!("m{i}"));
        let out = env.probe_as("execer", &["exec", &touch, &marker]);
        let ran = Path::new(&marker).exists();
        if i < 3 {
            assert!(out.status.success() && ran, "exec {i}: {:?}", out.status);
        } else {
            assert!(killed(&out) && !ran, "exec {i}: {:?}", out.status);
        }
    }
    let e = env.wait_for_evidence("the exec budget's refusal", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:touches"
    });
    assert_eq!(
        (e["action"].as_str(), e["method"].as_str()),
        (Some("exec"), Some("kill")),
        "{e}"
    );
}

fn budget_state(env: &TestEnv) -> Value {
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    status["agents"][0]["budgets"][0].clone()
}

/// `warden status` shows the kernel's count; `warden budget reset` starts
/// it afresh for the agent's approvers only, never from inside an agent,
/// and records who did it and what it cleared.
#[test]
fn status_shows_use_and_only_an_approver_outside_the_agent_resets_it() {
    if !can_run("budget_reset") {
        return;
    }
    let (env, _l, addr) = setup("budgetreset", "deny");
    within_one_window(Duration::from_secs(60), Duration::from_secs(30));
    assert_eq!(
        stdout(&env.probe_as("bot", &["connect-n", &addr, "22"])),
        "ok=20 eperm=2"
    );
    let b = budget_state(&env);
    assert_eq!(
        (b["id"].as_str(), b["used"].as_u64(), b["limit"].as_u64()),
        (Some("api-calls"), Some(20), Some(20)),
        "{b}"
    );
    let text = env.ok(&["status"]);
    assert!(
        text.contains("budget api-calls: 20/20 connect per 60s, then deny"),
        "{text}"
    );

    // Not an approver.
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = {
        use std::os::unix::process::CommandExt;
        env.warden()
            .args(["budget", "reset", "bot", "api-calls", "--reason", "x"])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert!(!out.status.success());
    assert!(
        warden_tests::stderr(&out).contains("not an approver"),
        "{}",
        warden_tests::stderr(&out)
    );
    // Root, from inside the agent.
    let warden = warden_tests::warden_bin();
    let out = env.cli(&[
        "run",
        "--agent",
        "bot",
        "--",
        warden.to_str().unwrap(),
        "budget",
        "reset",
        "bot",
        "api-calls",
        "--reason",
        "more please",
    ]);
    assert!(!out.status.success());
    assert!(
        warden_tests::stderr(&out).contains("agents cannot change Warden"),
        "{}",
        warden_tests::stderr(&out)
    );
    // Unknown budget.
    let out = env.cli(&["budget", "reset", "bot", "nope", "--reason", "x"]);
    assert!(
        warden_tests::stderr(&out).contains("has no budget 'nope'"),
        "{}",
        warden_tests::stderr(&out)
    );
    assert_eq!(budget_state(&env)["used"], 20, "nothing changed");

    let said = env.ok(&[
        "budget",
        "reset",
        "bot",
        "api-calls",
        "--reason",
        "ticket 7 approved",
    ]);
    assert!(said.contains("reset (20/20 used"), "{said}");
    let e = env.wait_for_evidence("the reset", |e| e["kind"] == "budget_reset");
    assert_eq!(e["target"], "budget:api-calls", "{e}");
    assert_eq!(e["details"]["used"], 20, "{e}");
    assert_eq!(e["details"]["reason"], "ticket 7 approved", "{e}");
    assert_eq!(e["details"]["approver_role"], "user:root", "{e}");
    assert_eq!(budget_state(&env)["used"], 0);
    assert_eq!(
        stdout(&env.probe_as("bot", &["connect-n", &addr, "3"])),
        "ok=3 eperm=0"
    );
    assert_eq!(budget_state(&env)["used"], 3);
}

/// The counts live in pinned maps: restarting the daemon does not give
/// the agent a fresh budget.
#[test]
fn a_daemon_restart_does_not_refill_a_budget() {
    if !can_run("budget_restart") {
        return;
    }
    let (mut env, _l, addr) = setup("budgetrestart", "deny");
    within_one_window(Duration::from_secs(60), Duration::from_secs(30));
    assert_eq!(
        stdout(&env.probe_as("bot", &["connect-n", &addr, "15"])),
        "ok=15 eperm=0"
    );
    env.stop_daemon();
    env.start_daemon();
    assert_eq!(
        stdout(&env.probe_as("bot", &["connect-n", &addr, "10"])),
        "ok=5 eperm=5"
    );
}

/// With the daemon stopped, the kernel holds the 21st connect itself (the
/// thread stops at the syscall); the next daemon finds the hold in the
/// pinned ring buffer and a human approves it.
#[test]
fn a_hold_budget_holds_with_the_daemon_stopped_until_the_next_daemon_approves() {
    if !can_run("budget_hold_no_daemon") {
        return;
    }
    let (mut env, _l, addr) = setup("budgetholddown", "hold");
    let cg = env.agent_cgroup("bot");
    env.stop_daemon();
    within_one_window(Duration::from_secs(60), Duration::from_secs(40));
    let child = Command::new(probe_bin())
        .arg("join")
        .arg(&cg)
        .args(["connect-n", &addr, "21"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    warden_tests::wait_until("the 21st connect is held", || {
        warden_tests::state_of(child.id()) == 'T'
    });
    env.start_daemon_with(&FAST_SWEEP);
    let pending = warden_tests::wait_held(&env, child.id(), &['T'], "the hold reaches the daemon");
    assert_eq!(pending["rule_id"], "budget:api-calls", "{pending}");
    let id = pending["id"].as_u64().unwrap().to_string();
    env.ok(&["approve", &id, "--reason", "one more"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "ok=21 eperm=0");
}

// ---- bytes: egress ----

/// Bytes an egress byte budget lets out per window: 256 KiB.
const EGRESS_LIMIT: u64 = 256 * 1024;

fn egress_policy(tcp: u16, udp: u16) -> String {
    format!(
        "version: 1
approvers:
  users: [root]
rules:
  - id: sink-tcp
    connect: {{ to: 127.0.0.1, ports: [{tcp}], protocol: tcp }}
    decision: allow
  - id: sink-udp
    connect: {{ to: 127.0.0.1, ports: [{udp}], protocol: udp }}
    decision: allow
budgets:
  - id: egress
    bytes: egress
    limit: 256KiB
    per: 1m
    then: deny
"
    )
}

/// Loopback receivers outside every agent that count the bytes that
/// arrive: what the agent got out.
struct Sink {
    tcp_port: u16,
    udp_port: u16,
    tcp: std::sync::Arc<std::sync::atomic::AtomicU64>,
    udp: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Sink {
    fn new() -> Self {
        use std::{
            io::Read,
            net::{TcpListener, UdpSocket},
            os::fd::AsRawFd,
            sync::{atomic::AtomicU64, atomic::Ordering, Arc},
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_port = listener.local_addr().unwrap().port();
        let tcp = Arc::new(AtomicU64::new(0));
        let count = tcp.clone();
        thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(mut c) = c else { continue };
                let count = count.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        count.fetch_add(n as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_port = sock.local_addr().unwrap().port();
        // Room for a whole burst, so the receiver loses nothing itself.
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on our own socket with an int we own.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::addr_of!(size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let udp = Arc::new(AtomicU64::new(0));
        let count = udp.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf) {
                count.fetch_add(n as u64, Ordering::SeqCst);
            }
        });
        Self {
            tcp_port,
            udp_port,
            tcp,
            udp,
        }
    }

    /// What arrived so far, once nothing more arrives for a second.
    fn settled(counter: &std::sync::atomic::AtomicU64) -> u64 {
        let mut last = counter.load(std::sync::atomic::Ordering::SeqCst);
        loop {
            thread::sleep(Duration::from_secs(1));
            let now = counter.load(std::sync::atomic::Ordering::SeqCst);
            if now == last {
                return now;
            }
            last = now;
        }
    }

    fn tcp_bytes(&self) -> u64 {
        Self::settled(&self.tcp)
    }

    fn udp_bytes(&self) -> u64 {
        Self::settled(&self.udp)
    }
}

/// The egress budget's entries: (`decision` entries, dropped packets and
/// bytes over every entry).
fn egress_drops(env: &TestEnv) -> (u64, u64, u64) {
    let mut out = (0, 0, 0);
    for e in env.evidence() {
        if e["rule_id"] != "budget:egress" || e["action"] != "egress" {
            continue;
        }
        assert_eq!(e["decision"], "deny", "{e}");
        if e["kind"] == "decision" {
            assert_eq!(e["method"], "cgroup-skb-drop", "{e}");
            out.0 += 1;
        } else {
            assert_eq!(e["kind"], "summary", "{e}");
            assert_eq!(
                e["details"]["count"], e["details"]["dropped_packets"],
                "{e}"
            );
        }
        out.1 += e["details"]["dropped_packets"].as_u64().unwrap();
        out.2 += e["details"]["dropped_bytes"].as_u64().unwrap();
    }
    out
}

fn egress_setup(name: &str) -> (TestEnv, Sink) {
    let sink = Sink::new();
    let mut env = TestEnv::new(name);
    env.write_policy("p.yaml", &egress_policy(sink.tcp_port, sink.udp_port));
    env.start_daemon_with(&FAST_SWEEP);
    env.add_agent("bot", "p.yaml");
    (env, sink)
}

/// A delegated child and its parent both have an egress budget: each of the
/// child's packets is counted once against the child. (The program runs
/// for every cgroup below the one it is attached to, so attached at both
/// it counted every packet twice, and the child got half its limit out.)
/// UDP, so that no retransmission blurs the count: 400 datagrams of 1,000
/// bytes, 1,028 bytes each as IP packets.
#[test]
fn a_nested_agents_egress_is_counted_once() {
    if !can_run("budget_egress_nested") {
        return;
    }
    let sink = Sink::new();
    let mut env = TestEnv::new("budgetegressnest");
    env.write_policy("child.yaml", &egress_policy(sink.tcp_port, sink.udp_port));
    env.write_policy(
        "parent.yaml",
        "version: 1
rules:
  - id: local
    connect: { to: 127.0.0.1 }
    decision: allow
budgets:
  - id: egress
    bytes: egress
    limit: 100MiB
    per: 1m
    then: deny
",
    );
    env.start_daemon_with(&FAST_SWEEP);
    env.add_agent("top", "parent.yaml");
    env.ok(&[
        "agent",
        "add",
        "bot",
        "--owner",
        "carol@example.com",
        "--policy",
        "child.yaml",
        "--parent",
        "top",
    ]);
    within_one_window(Duration::from_secs(60), Duration::from_secs(40));
    let udp = format!("127.0.0.1:{}", sink.udp_port);
    let out = env.probe_as("bot", &["udp-send", &udp, "400", "1000"]);
    assert!(stdout(&out).starts_with("sent="), "{out:?}");
    let got = sink.udp_bytes();
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let bot = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "bot")
        .unwrap_or_else(|| panic!("no bot in {status}"))
        .clone();
    let used = bot["budgets"][0]["used"].as_u64().unwrap();
    eprintln!("nested: {got} bytes arrived, {used} counted (limit {EGRESS_LIMIT})");
    // Once each: every datagram that fits goes out (255 of 1,028 bytes).
    assert_eq!(got, EGRESS_LIMIT / 1028 * 1000, "{used} counted");
    assert_eq!(used, got / 1000 * 1028, "each datagram counted once");
    let (decisions, packets, _) = egress_drops(&env);
    assert!(decisions >= 1 && packets >= 1, "the drops are recorded");
}

/// An agent streams 4 MiB over loopback TCP against a 256 KiB egress
/// budget: no more than the limit arrives (the budget counts whole IP
/// packets, headers included, so the payload that arrives is below it),
/// the drops are recorded once for the window and then counted, `warden
/// status` shows the use, and after `warden budget reset` UDP datagrams get
/// out again, again only up to the limit.
#[test]
fn an_egress_budget_drops_tcp_and_udp_past_the_limit_and_records_it() {
    if !can_run("budget_egress") {
        return;
    }
    let (env, sink) = egress_setup("budgetegress");
    within_one_window(Duration::from_secs(60), Duration::from_secs(40));
    let tcp = format!("127.0.0.1:{}", sink.tcp_port);
    let out = env.probe_as("bot", &["tcp-send", &tcp, &(4u64 << 20).to_string(), "4"]);
    assert!(stdout(&out).starts_with("sent="), "{out:?}");
    let got = sink.tcp_bytes();
    eprintln!(
        "tcp: {} ; {got} bytes arrived (limit {EGRESS_LIMIT})",
        stdout(&out)
    );
    assert!(
        got <= EGRESS_LIMIT,
        "{got} bytes arrived, over the {EGRESS_LIMIT} limit"
    );
    assert!(got >= EGRESS_LIMIT / 4, "only {got} bytes arrived");
    let e = env.wait_for_evidence("the egress budget's drops", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:egress"
    });
    assert_eq!(e["target"], "egress", "{e}");
    assert_eq!(e["details"]["limit_bytes"], EGRESS_LIMIT, "{e}");
    assert!(
        e["details"]["dropped_packets"].as_u64().unwrap() >= 1,
        "{e}"
    );
    assert!(e["details"]["dropped_bytes"].as_u64().unwrap() >= 1, "{e}");
    // Later sweeps of the same window count; they never add a decision.
    thread::sleep(Duration::from_secs(3));
    let (decisions, packets, bytes) = egress_drops(&env);
    eprintln!("recorded: {decisions} decision, {packets} packets / {bytes} bytes dropped");
    assert_eq!(decisions, 1);
    assert!(
        packets >= 1 && bytes >= packets,
        "{packets} packets, {bytes} bytes"
    );

    let b = budget_state(&env);
    assert_eq!(b["id"], "egress", "{b}");
    assert_eq!(b["count"], "bytes egress", "{b}");
    let used = b["used"].as_u64().unwrap();
    assert!(
        used <= EGRESS_LIMIT && used >= got,
        "used {used}, arrived {got}: {b}"
    );
    let text = env.ok(&["status"]);
    assert!(
        text.contains(&format!(
            "budget egress: {used}/{EGRESS_LIMIT} bytes egress per 60s, then deny"
        )),
        "{text}"
    );

    // The export bundle lists the budget in force in its own file.
    let bundle = env.dir.path().join("bundle");
    env.ok(&["evidence", "export", "--out", bundle.to_str().unwrap()]);
    let budgets: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("budgets.json")).unwrap())
            .unwrap();
    let row = &budgets.as_array().unwrap()[0];
    assert_eq!(
        (&row["agent"], &row["rule_id"], &row["count"], &row["unit"]),
        (
            &Value::from("bot"),
            &Value::from("budget:egress"),
            &Value::from("bytes egress"),
            &Value::from("bytes")
        ),
        "{budgets:#}"
    );
    assert_eq!(row["limit"], EGRESS_LIMIT, "{row}");
    assert_eq!(
        (row["per_secs"].as_u64(), row["then"].as_str()),
        (Some(60), Some("deny"))
    );

    let said = env.ok(&["budget", "reset", "bot", "egress", "--reason", "more data"]);
    assert!(said.contains("reset ("), "{said}");
    assert!(budget_state(&env)["used"].as_u64().unwrap() < 1000);
    // 400 datagrams of 1000 bytes (1028 with headers): about 255 fit.
    let udp = format!("127.0.0.1:{}", sink.udp_port);
    let out = env.probe_as("bot", &["udp-send", &udp, "400", "1000"]);
    let said = stdout(&out);
    assert!(said.starts_with("sent="), "{out:?}");
    let got = sink.udp_bytes();
    eprintln!("udp: {said} ; {got} bytes arrived (limit {EGRESS_LIMIT})");
    assert!(got <= EGRESS_LIMIT, "{got} UDP bytes arrived: {said}");
    assert!(
        got >= 200 * 1000,
        "only {got} UDP bytes arrived after the reset: {said}"
    );
    // After a reset the next drop is on the record again as a decision.
    env.wait_for_evidence("a second decision after the reset", |_| {
        egress_drops(&env).0 == 2
    });
}

/// With no daemon the pinned program keeps counting and dropping; the
/// drops wait in the pinned map and the next daemon records them.
#[test]
fn an_egress_budget_drops_with_the_daemon_stopped() {
    if !can_run("budget_egress_down") {
        return;
    }
    let (mut env, sink) = egress_setup("budgetegressdown");
    let cg = env.agent_cgroup("bot");
    env.stop_daemon();
    within_one_window(Duration::from_secs(60), Duration::from_secs(30));
    let tcp = format!("127.0.0.1:{}", sink.tcp_port);
    let out = Command::new(probe_bin())
        .arg("join")
        .arg(&cg)
        .args(["tcp-send", &tcp, &(4u64 << 20).to_string(), "4"])
        .output()
        .unwrap();
    assert!(stdout(&out).starts_with("sent="), "{out:?}");
    let got = sink.tcp_bytes();
    eprintln!(
        "tcp, no daemon: {} ; {got} bytes arrived (limit {EGRESS_LIMIT})",
        stdout(&out)
    );
    assert!(got <= EGRESS_LIMIT, "{got} bytes arrived with no daemon");
    assert!(got >= EGRESS_LIMIT / 4, "only {got} bytes arrived");
    env.start_daemon_with(&FAST_SWEEP);
    let e = env.wait_for_evidence("drops made while the daemon was down", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:egress"
    });
    assert!(
        e["details"]["dropped_packets"].as_u64().unwrap() >= 1,
        "{e}"
    );
}

/// Racing senders: four TCP streams and four UDP floods at once, half of
/// them from a cgroup the agent made below its own (a process there is
/// still the agent's). The budget's word is moved by compare-and-swap, so
/// all of them together get no more than the limit out.
#[test]
fn racing_senders_in_the_agent_and_its_child_cgroup_share_one_egress_limit() {
    if !can_run("budget_egress_race") {
        return;
    }
    let (env, sink) = egress_setup("budgetegressrace");
    let cg = env.agent_cgroup("bot");
    let child = cg.join("worker");
    std::fs::create_dir(&child).unwrap();
    within_one_window(Duration::from_secs(60), Duration::from_secs(40));
    let tcp = format!("127.0.0.1:{}", sink.tcp_port);
    let udp = format!("127.0.0.1:{}", sink.udp_port);
    let senders: Vec<_> = (0..8)
        .map(|i| {
            let at = if i % 2 == 0 { &cg } else { &child };
            let mut cmd = Command::new(probe_bin());
            cmd.arg("join").arg(at);
            if i < 4 {
                cmd.args(["tcp-send", &tcp, &(2u64 << 20).to_string(), "4"]);
            } else {
                cmd.args(["udp-send", &udp, "400", "1000"]);
            }
            cmd.stdout(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for s in senders {
        let out = s.wait_with_output().unwrap();
        // A stream whose SYN came after the limit never connects.
        let said = stdout(&out);
        assert!(
            said.starts_with("sent=") || said.starts_with("connect errno="),
            "{out:?}"
        );
    }
    let (t, u) = (sink.tcp_bytes(), sink.udp_bytes());
    eprintln!("race: {t} TCP + {u} UDP bytes arrived (limit {EGRESS_LIMIT})");
    assert!(t + u <= EGRESS_LIMIT, "{t} + {u} bytes arrived");
    assert!(t + u >= EGRESS_LIMIT / 4, "only {t} + {u} bytes arrived");
    let b = budget_state(&env);
    assert!(b["used"].as_u64().unwrap() <= EGRESS_LIMIT, "{b}");
    env.wait_for_evidence("the race's drops", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:egress"
    });
    std::fs::remove_dir(&child).unwrap();
}

/// `mode: record`: nothing is dropped; what would have been is recorded
/// as `would-deny` under the budget.
#[test]
fn a_record_mode_egress_budget_sends_everything_and_records_would_deny() {
    if !can_run("budget_egress_record") {
        return;
    }
    let sink = Sink::new();
    let mut env = TestEnv::new("budgetegressrec");
    let p = egress_policy(sink.tcp_port, sink.udp_port)
        .replace("version: 1\n", "version: 1\nmode: record\n");
    env.write_policy("p.yaml", &p);
    env.start_daemon_with(&FAST_SWEEP);
    env.add_agent("bot", "p.yaml");
    within_one_window(Duration::from_secs(60), Duration::from_secs(30));
    let tcp = format!("127.0.0.1:{}", sink.tcp_port);
    let total = 1u64 << 20;
    let out = env.probe_as("bot", &["tcp-send", &tcp, &total.to_string(), "10"]);
    assert_eq!(stdout(&out), format!("sent={total}"), "{out:?}");
    let got = sink.tcp_bytes();
    assert!(
        got > EGRESS_LIMIT,
        "only {got} bytes arrived in record mode"
    );
    let e = env.wait_for_evidence("the would-be drops", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:egress"
    });
    assert_eq!(
        (e["decision"].as_str(), e["method"].as_str()),
        (Some("would-deny"), Some("record")),
        "{e}"
    );
}

/// IPv6 is counted the same: UDP datagrams to `::1` stop at the limit.
#[test]
fn an_egress_budget_counts_ipv6_too() {
    if !can_run("budget_egress_v6") {
        return;
    }
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    };
    let sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on our own socket with an int we own.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let got = Arc::new(AtomicU64::new(0));
    let count = got.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            count.fetch_add(n as u64, Ordering::SeqCst);
        }
    });
    let mut env = TestEnv::new("budgetegress6");
    let p = egress_policy(1, 2).replace(
        "budgets:",
        &format!(
            "  - id: sink-v6
    connect: {{ to: \"::1\", ports: [{port}], protocol: udp }}
    decision: allow
budgets:"
        ),
    );
    env.write_policy("p.yaml", &p);
    env.start_daemon_with(&FAST_SWEEP);
    env.add_agent("bot", "p.yaml");
    within_one_window(Duration::from_secs(60), Duration::from_secs(30));
    let out = env.probe_as(
        "bot",
        &["udp-send", &format!("[::1]:{port}"), "400", "1000"],
    );
    let said = stdout(&out);
    assert!(said.starts_with("sent="), "{out:?}");
    let got = Sink::settled(&got);
    eprintln!("udp6: {said} ; {got} bytes arrived (limit {EGRESS_LIMIT})");
    // 1048 bytes per datagram with the IPv6 and UDP headers: 250 fit.
    assert!(got <= EGRESS_LIMIT, "{got} bytes arrived over IPv6: {said}");
    assert!(
        got >= 200 * 1000,
        "only {got} bytes arrived over IPv6: {said}"
    );
    env.wait_for_evidence("the IPv6 drops", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:egress"
    });
}
