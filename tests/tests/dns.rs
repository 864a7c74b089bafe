//! Rules by name (`connect: { host: ... }`), end to end: the agent's DNS
//! is redirected in the kernel to its proxy in the daemon, which decides
//! the name, and the answer's addresses are allowed in the kernel for
//! their TTL. A test resolver (tests/src/dns_resolver.rs) answers on
//! 127.0.17.2:53 and [::1]:53 with other loopback addresses that have
//! listeners.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use warden_tests::dns_resolver::TestResolver;
use warden_tests::{can_run, probe_bin, stderr, stdout, TestEnv};

const RESOLVER4: &str = "127.0.17.2:53";
const RESOLVER6: &str = "[::1]:53";
/// Addresses the test names resolve to, each with a listener on `port()`.
const API: &str = "127.0.17.10";
const EVIL: &str = "127.0.17.11";
const WILD1: &str = "127.0.17.12";
const WILD2: &str = "127.0.17.13";
const BARE: &str = "127.0.17.14";
const SHORT: &str = "127.0.17.15";

fn dns_probe() -> PathBuf {
    probe_bin().with_file_name("warden-dns-probe")
}

/// One listener port shared by every answer address (and ::1), and the
/// resolvers; set up once per test process.
fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let first = TcpListener::bind(format!("{API}:0")).expect("bind listener");
        let port = first.local_addr().expect("addr").port();
        let mut listeners = vec![first];
        for a in [EVIL, WILD1, WILD2, BARE, SHORT, "::1"] {
            let ip: IpAddr = a.parse().expect("ip");
            listeners.push(TcpListener::bind(SocketAddr::new(ip, port)).expect("bind listener"));
        }
        for l in listeners {
            std::thread::spawn(move || {
                for c in l.incoming() {
                    drop(c)
                }
            });
        }
        let answers = |ttl_short: u32| {
            let mut v = vec![
                ("api.test.warden".to_string(), API.parse().expect("ip"), 300),
                (
                    "evil.test.warden".to_string(),
                    EVIL.parse().expect("ip"),
                    300,
                ),
                (
                    "a.wild.test.warden".to_string(),
                    WILD1.parse().expect("ip"),
                    300,
                ),
                (
                    "x.y.wild.test.warden".to_string(),
                    WILD2.parse().expect("ip"),
                    300,
                ),
                (
                    "wild.test.warden".to_string(),
                    BARE.parse().expect("ip"),
                    300,
                ),
                (
                    "short.test.warden".to_string(),
                    SHORT.parse().expect("ip"),
                    ttl_short,
                ),
                (
                    "v6.test.warden".to_string(),
                    "::1".parse().expect("ip"),
                    300,
                ),
            ];
            // More addresses for one name than an agent may learn.
            for i in 0..1100u32 {
                let ip = std::net::Ipv4Addr::new(127, 18, (i >> 8) as u8, i as u8);
                v.push(("many.test.warden".to_string(), IpAddr::V4(ip), 300));
            }
            v
        };
        let _ = Box::leak(Box::new(TestResolver::start(
            RESOLVER4.parse().expect("addr"),
            answers(1),
        )));
        let _ = Box::leak(Box::new(TestResolver::start(
            RESOLVER6.parse().expect("addr"),
            answers(1),
        )));
        port
    })
}

fn policy() -> String {
    let p = port();
    format!(
        "version: 1
rules:
  - id: api
    connect: {{ host: API.test.warden, ports: [{p}], protocol: tcp }}
    decision: allow
  - id: wild
    connect: {{ host: \"*.wild.test.warden\", ports: [{p}] }}
    decision: allow
  - id: evil
    connect: {{ host: evil.test.warden }}
    decision: deny
  - id: short
    connect: {{ host: short.test.warden, ports: [{p}] }}
    decision: allow
  - id: v6
    connect: {{ host: v6.test.warden, ports: [{p}] }}
    decision: allow
  - id: many
    connect: {{ host: many.test.warden, ports: [{p}] }}
    decision: allow
"
    )
}

fn setup(name: &str) -> Option<TestEnv> {
    if !can_run("dns") {
        return None;
    }
    port();
    let mut env = TestEnv::new(name);
    env.write_policy("dns.yaml", &policy());
    env.start_daemon();
    env.add_agent("dns-agent", "dns.yaml");
    Some(env)
}

fn dns_as(env: &TestEnv, agent: &str, args: &[&str]) -> String {
    let probe = dns_probe();
    let mut all = vec![
        "run",
        "--agent",
        agent,
        "--",
        probe.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    let out = env.cli(&all);
    assert!(
        !stdout(&out).is_empty(),
        "probe printed nothing: {}",
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn allowed_name_connects_denied_name_refused_and_its_address_refused() {
    let Some(env) = setup("dns-allow") else {
        return;
    };
    let p = port().to_string();
    // Connected UDP (as glibc asks), then a connect to the answer.
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "api.test.warden", "A", &p],
    );
    assert_eq!(out, format!("NOERROR {API} connect=ok"));
    // Unconnected UDP: the reply's source is the resolver asked (recvmsg4).
    let out = dns_as(
        &env,
        "dns-agent",
        &[
            "resolve",
            "udp-unconnected",
            RESOLVER4,
            "api.test.warden",
            "A",
        ],
    );
    assert_eq!(out, format!("NOERROR {API} from={RESOLVER4}"));
    // A denied name: REFUSED, and its address stays closed when connected
    // to directly.
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "evil.test.warden", "A"],
    );
    assert_eq!(out, "REFUSED");
    let out = env.probe_as("dns-agent", &["connect", &format!("{EVIL}:{p}")]);
    assert_eq!(
        stdout(&out),
        format!("errno={}", libc::EPERM),
        "{}",
        stderr(&out)
    );
    // A name no rule matches: REFUSED too (default).
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "other.test.warden", "A"],
    );
    assert_eq!(out, "REFUSED");

    // Evidence: the dns decisions with name, rule and agent, and the
    // connect to the learned address naming the host.
    let allowed = env.wait_for_evidence("dns allow of api", |e| {
        e["kind"] == "dns" && e["target"] == "api.test.warden" && e["decision"] == "allow"
    });
    assert_eq!(allowed["rule_id"], "api");
    assert_eq!(allowed["agent"], "dns-agent");
    assert_eq!(allowed["details"]["resolver"], RESOLVER4);
    let denied = env.wait_for_evidence("dns deny of evil", |e| {
        e["kind"] == "dns" && e["target"] == "evil.test.warden"
    });
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["rule_id"], "evil");
    assert_eq!(denied["details"]["response_code"], "REFUSED");
    let other = env.wait_for_evidence("dns deny of other", |e| {
        e["kind"] == "dns" && e["target"] == "other.test.warden"
    });
    assert_eq!(
        (other["decision"].as_str(), other["rule_id"].as_str()),
        (Some("deny"), Some("default"))
    );
    let connect = env.wait_for_evidence("connect to the learned address", |e| {
        e["kind"] == "decision"
            && e["target"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("{API}:{p}")))
    });
    assert_eq!(connect["decision"], "allow");
    assert_eq!(connect["rule_id"], "api");
    assert_eq!(
        connect["details"]["hosts"],
        serde_json::json!(["api.test.warden"])
    );
}

#[test]
fn wildcard_matches_one_and_several_labels_not_the_bare_domain() {
    let Some(env) = setup("dns-wild") else { return };
    let p = port().to_string();
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "A.Wild.test.warden", "A", &p],
    );
    assert_eq!(out, format!("NOERROR {WILD1} connect=ok"));
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "x.y.wild.test.warden", "A", &p],
    );
    assert_eq!(out, format!("NOERROR {WILD2} connect=ok"));
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "wild.test.warden", "A"],
    );
    assert_eq!(out, "REFUSED");
    let out = env.probe_as("dns-agent", &["connect", &format!("{BARE}:{p}")]);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM));
}

#[test]
fn ttl_expiry_removes_the_address() {
    let Some(env) = setup("dns-ttl") else { return };
    let p = port().to_string();
    // TTL 1 s, clamped to the 2 s minimum.
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "short.test.warden", "A", &p],
    );
    assert_eq!(out, format!("NOERROR {SHORT} connect=ok"));
    // Expired: the daemon removed it (sweeps every 250 ms); generous wait.
    let target = format!("{SHORT}:{p}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = env.probe_as("dns-agent", &["connect", &target]);
        if stdout(&out) == format!("errno={}", libc::EPERM) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "address still allowed: {}",
            stdout(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Asking again opens it again.
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "short.test.warden", "A", &p],
    );
    assert_eq!(out, format!("NOERROR {SHORT} connect=ok"));
}

#[test]
fn tcp_dns_and_ipv6_answers() {
    let Some(env) = setup("dns-tcp6") else { return };
    let p = port().to_string();
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "tcp", RESOLVER4, "api.test.warden", "A", &p],
    );
    assert_eq!(out, format!("NOERROR {API} connect=ok"));
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "tcp", RESOLVER4, "evil.test.warden", "A"],
    );
    assert_eq!(out, "REFUSED");
    // An AAAA answer, asked over IPv6, connected over IPv6.
    let out = dns_as(
        &env,
        "dns-agent",
        &[
            "resolve",
            "udp-unconnected",
            RESOLVER6,
            "v6.test.warden",
            "AAAA",
            &p,
        ],
    );
    assert_eq!(out, format!("NOERROR ::1 from={RESOLVER6} connect=ok"));
    let e = env.wait_for_evidence("dns over tcp", |e| {
        e["kind"] == "dns" && e["target"] == "api.test.warden" && e["details"]["transport"] == "tcp"
    });
    assert_eq!(e["decision"], "allow");
}

#[test]
fn malformed_packet_gets_formerr_is_recorded_and_the_proxy_keeps_serving() {
    let Some(env) = setup("dns-bad") else { return };
    let p = port().to_string();
    // A header claiming one question, then garbage.
    let out = dns_as(
        &env,
        "dns-agent",
        &["raw", RESOLVER4, "beef0100000100000000000003ff"],
    );
    assert_eq!(out, "FORMERR");
    let e = env.wait_for_evidence("malformed dns", |e| {
        e["kind"] == "dns" && e["decision"] == "malformed"
    });
    assert_eq!(e["details"]["response_code"], "FORMERR");
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "api.test.warden", "A", &p],
    );
    assert_eq!(out, format!("NOERROR {API} connect=ok"));
}

#[test]
fn one_agents_flood_does_not_delay_anothers_queries() {
    let Some(env) = setup("dns-flood") else {
        return;
    };
    env.add_agent("dns-quiet", "dns.yaml");
    let probe = dns_probe();
    let flood = env
        .warden()
        .args([
            "run",
            "--agent",
            "dns-agent",
            "--",
            probe.to_str().expect("utf-8"),
            "flood",
            RESOLVER4,
            "api.test.warden",
            "6000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start flood");
    std::thread::sleep(Duration::from_millis(1000));
    // The bound: the quiet agent's question is answered within 1 s (its
    // own sockets and tasks; the flooder has at most 64 in flight).
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let out = dns_as(
            &env,
            "dns-quiet",
            &["resolve", "udp", RESOLVER4, "api.test.warden", "A"],
        );
        assert_eq!(out, format!("NOERROR {API}"));
        // `warden run` itself takes time; the probe's query timeout is 4 s,
        // so an answer at all (no retry) is within the bound. Keep a
        // generous wall-clock check for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "quiet agent waited {:?}",
            started.elapsed()
        );
    }
    let out = flood.wait_with_output().expect("flood");
    let sent = String::from_utf8_lossy(&out.stdout);
    assert!(sent.trim().starts_with("sent="), "{sent}");
}

#[test]
fn side_doors_other_ports_and_other_agents_stay_closed() {
    let Some(env) = setup("dns-side") else { return };
    env.add_agent("dns-other", "dns.yaml");
    let p = port().to_string();
    // DNS to another port is not redirected: decided by the CIDR rules
    // (none: default deny), so the agent cannot ask a resolver the proxy
    // does not see.
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", "127.0.17.2:5353", "api.test.warden", "A"],
    );
    assert_eq!(out, format!("connect errno={}", libc::EPERM));
    let out = dns_as(
        &env,
        "dns-agent",
        &[
            "resolve",
            "udp-unconnected",
            "127.0.17.2:5353",
            "api.test.warden",
            "A",
        ],
    );
    assert_eq!(out, format!("send errno={}", libc::EPERM));
    // One agent's learned address is not another's.
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "api.test.warden", "A", &p],
    );
    assert_eq!(out, format!("NOERROR {API} connect=ok"));
    let out = env.probe_as("dns-other", &["connect", &format!("{API}:{p}")]);
    assert_eq!(
        stdout(&out),
        format!("errno={}", libc::EPERM),
        "{}",
        stderr(&out)
    );
    // The learned address opens only the rule's ports and protocol.
    let out = env.probe_as("dns-agent", &["connect", &format!("{API}:1")]);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM));
}

#[test]
fn an_agent_cannot_learn_addresses_without_bound() {
    let Some(env) = setup("dns-many") else { return };
    let p = port().to_string();
    // 1100 addresses in one answer: past the 1024 an agent may hold, the
    // answer is SERVFAIL and recorded; the proxy goes on serving.
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "many.test.warden", "A"],
    );
    assert_eq!(out, "SERVFAIL");
    let e = env.wait_for_evidence("learned-address limit", |e| {
        e["kind"] == "dns" && e["target"] == "many.test.warden"
    });
    assert_eq!(e["decision"], "error");
    assert!(
        e["details"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("1024 learned addresses")),
        "{e}"
    );
    // Full: a new address is refused until some expire.
    let out = dns_as(
        &env,
        "dns-agent",
        &["resolve", "udp", RESOLVER4, "api.test.warden", "A", &p],
    );
    assert_eq!(out, "SERVFAIL");
}
