//! `cargo xtask bench` (rules by name): DNS query latency through an
//! agent's proxy vs directly to the same test resolver, and connect
//! latency to a name-allowed address vs a CIDR-allowed one, inside the
//! same agent. Prints p50s and the ratios against the targets
//! (added p50 <= 150 us; connect ratio <= 1.02x).
//!
//! `warden-bench-dns [N]` (default 3000 samples each); the measuring loop
//! runs as `warden-bench-dns child ...` inside or outside the agent.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use warden_tests::dns_resolver::TestResolver;
use warden_tests::{stderr, stdout, TestEnv};

const RESOLVER: &str = "127.0.18.2:53";
const NAMED: &str = "127.0.18.10";
const CIDR: &str = "127.0.18.11";
const NAME: &str = "api.bench.warden";

fn query(id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii(NAME).expect("name"),
            RecordType::A,
        ));
    m.to_vec().expect("encode")
}

fn p50(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0) as f64
}

/// `child dns N`: N queries over connected UDP, one at a time; prints the
/// p50 in ns. `child connect N PORT`: resolves NAME once, then N connects
/// alternating between the learned address and the CIDR one; prints both
/// p50s.
fn child(args: &[String]) -> Result<()> {
    let n: usize = args.get(1).context("N")?.parse()?;
    let server: SocketAddr = RESOLVER.parse()?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
    sock.connect(server)?;
    let mut buf = vec![0u8; 4096];
    let mut ask = |id: u16| -> Result<Vec<u8>> {
        sock.send(&query(id))?;
        let len = sock.recv(&mut buf)?;
        Ok(buf[..len].to_vec())
    };
    match args.first().map(String::as_str) {
        Some("dns") => {
            let mut ns = Vec::with_capacity(n);
            for i in 0..n {
                let t = Instant::now();
                ask(i as u16)?;
                ns.push(t.elapsed().as_nanos() as u64);
            }
            println!("{}", p50(ns));
        }
        Some("connect") => {
            let port: u16 = args.get(2).context("PORT")?.parse()?;
            let reply = Message::from_vec(&ask(1)?)?;
            ensure!(
                reply
                    .answers()
                    .iter()
                    .any(|r| matches!(r.data(), RData::A(_))),
                "no A answer for {NAME}: {reply:?}"
            );
            let named: SocketAddr = format!("{NAMED}:{port}").parse()?;
            let cidr: SocketAddr = format!("{CIDR}:{port}").parse()?;
            let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..2 * n {
                let (to, out) = if i % 2 == 0 {
                    (named, &mut a)
                } else {
                    (cidr, &mut b)
                };
                let t = Instant::now();
                let s = TcpStream::connect(to).with_context(|| format!("connect {to}"))?;
                out.push(t.elapsed().as_nanos() as u64);
                drop(s);
            }
            println!("{} {}", p50(a), p50(b));
        }
        _ => bail!("child dns N | child connect N PORT"),
    }
    std::io::stdout().flush()?;
    Ok(())
}

fn bench(n: usize) -> Result<()> {
    let named = TcpListener::bind(format!("{NAMED}:0"))?;
    let port = named.local_addr()?.port();
    let cidr = TcpListener::bind(format!("{CIDR}:{port}"))?;
    for l in [named, cidr] {
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c)
            }
        });
    }
    let _resolver = TestResolver::start(
        RESOLVER.parse()?,
        vec![(NAME.to_string(), NAMED.parse()?, 3600)],
    );
    let me = std::env::current_exe()?;
    let me = me.to_str().context("utf-8 path")?;
    let mut env = TestEnv::new("bench-dns");
    env.write_policy(
        "dns.yaml",
        &format!(
            "version: 1\nrules:\n  - id: named\n    connect: {{ host: {NAME}, ports: [{port}], protocol: tcp }}\n    decision: allow\n  - id: cidr\n    connect: {{ to: {CIDR}, ports: [{port}], protocol: tcp }}\n    decision: allow\n"
        ),
    );
    env.start_daemon_quiet();
    env.add_agent("bench-dns", "dns.yaml");
    let n_s = n.to_string();
    let run_in = |args: &[&str]| -> Result<String> {
        let mut all = vec!["run", "--agent", "bench-dns", "--", me, "child"];
        all.extend_from_slice(args);
        let out = env.cli(&all);
        ensure!(out.status.success(), "child failed: {}", stderr(&out));
        Ok(stdout(&out))
    };
    let direct = std::process::Command::new(me)
        .args(["child", "dns", &n_s])
        .output()?;
    ensure!(direct.status.success(), "direct child: {}", stderr(&direct));
    let direct: f64 = stdout(&direct).parse()?;
    let proxied: f64 = run_in(&["dns", &n_s])?.parse()?;
    let connect = run_in(&["connect", &n_s, &port.to_string()])?;
    let mut it = connect.split_whitespace().map(str::parse::<f64>);
    let (by_name, by_cidr) = (it.next().context("p50")??, it.next().context("p50")??);
    let added = (proxied - direct) / 1000.0;
    println!("rules by name ({n} samples each, p50):");
    println!(
        "  DNS query: direct {:.1} us, through the agent's proxy {:.1} us: +{added:.1} us (target <= 150 us: {})",
        direct / 1000.0,
        proxied / 1000.0,
        if added <= 150.0 { "met" } else { "NOT met" }
    );
    let ratio = by_name / by_cidr;
    println!(
        "  connect: to a name-allowed address {:.1} us, to a CIDR-allowed one {:.1} us: {ratio:.3}x (target <= 1.02x: {})",
        by_name / 1000.0,
        by_cidr / 1000.0,
        if ratio <= 1.02 { "met" } else { "NOT met" }
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("child") => child(&args[1..]),
        other => {
            if std::env::var_os("WARDEN_BIN").is_none() {
                if let Ok(me) = std::env::current_exe() {
                    // Single-threaded here.
                    std::env::set_var("WARDEN_BIN", me.with_file_name("warden"));
                }
            }
            other
                .map_or(Ok(3000), str::parse)
                .map_err(anyhow::Error::from)
                .and_then(bench)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-bench-dns: {e:#}");
            ExitCode::FAILURE
        }
    }
}
