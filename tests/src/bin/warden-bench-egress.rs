//! What a `bytes: egress` budget costs a sending agent: loopback TCP
//! throughput of an agent whose policy has an egress byte budget far above
//! its use (the `cgroup_skb/egress` program counts every packet) beside
//! the same agent without one, in the same run, blocks alternating
//! A-B-B-A so host drift hits both sides alike.
//!
//!   warden-bench-egress [--rounds R] [--mib M]
//!
//! Each block: a sender process in the agent's cgroup connects to a
//! receiver outside every agent, writes M MiB (default 256), shuts down
//! its side and waits for the receiver to close once it has read every
//! byte; the block's figure is MiB/s from connect to that close. The
//! report gives each side's median, the median of the paired ratios
//! (budget / plain) and the load average before and after. Needs root.

#![allow(clippy::unwrap_used, reason = "a benchmark: a panic is the report")]

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::Command,
    thread,
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};
use warden_tests::TestEnv;

const WITH: &str = "bench-egress";
const WITHOUT: &str = "bench-plain";

fn policy(port: u16, budget: bool) -> String {
    let mut p = format!(
        "version: 1
rules:
  - id: sink
    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: tcp }}
    decision: allow
"
    );
    if budget {
        // The largest byte limit a window can hold (4 GiB per 1 s): above
        // what the blocks send per second here; the report says whether
        // any packet was dropped.
        p.push_str(
            "budgets:
  - id: egress
    bytes: egress
    limit: 4294967295
    per: 1s
    then: deny
",
        );
    }
    p
}

/// The receiver: reads each connection to its end, then closes it.
fn serve(listener: TcpListener) {
    for c in listener.incoming() {
        let Ok(mut c) = c else { continue };
        thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
        });
    }
}

/// The child side: join `cgroup`, send `mib` MiB to `port`, print the ns
/// from connect to the receiver's close.
fn send(cgroup: &str, port: u16, mib: u64) -> Result<()> {
    std::fs::write(
        format!("{cgroup}/cgroup.procs"),
        std::process::id().to_string(),
    )
    .with_context(|| format!("join {cgroup}"))?;
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
    for _ in 0..mib {
        s.write_all(&chunk).context("write")?;
    }
    s.shutdown(Shutdown::Write).context("shutdown")?;
    let mut rest = [0u8; 16];
    // The receiver closes once it has read everything: read returns 0.
    let _ = s.read(&mut rest);
    println!("{}", t.elapsed().as_nanos());
    Ok(())
}

fn block(cgroup: &std::path::Path, port: u16, mib: u64) -> Result<f64> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--send")
        .arg(cgroup)
        .arg(port.to_string())
        .arg(mib.to_string())
        .output()?;
    ensure!(
        out.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(mib as f64 / (ns / 1e9))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--send") {
        let [_, cg, port, mib] = args.as_slice() else {
            bail!("usage: --send CGROUP PORT MIB");
        };
        return send(cg, port.parse()?, mib.parse()?);
    }
    let (mut rounds, mut mib) = (6usize, 256u64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num =
            || -> Result<u64> { Ok(it.next().context("a number after the flag")?.parse()?) };
        match a.as_str() {
            "--rounds" => rounds = num()? as usize,
            "--mib" => mib = num()?,
            other => {
                bail!("unknown argument {other}; usage: warden-bench-egress [--rounds R] [--mib M]")
            }
        }
    }
    // SAFETY: getuid has no preconditions.
    ensure!(
        unsafe { libc::getuid() } == 0,
        "run as root: it loads eBPF programs and makes cgroups"
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || serve(listener));

    let mut env = TestEnv::new("benchegress");
    env.write_policy("with.yaml", &policy(port, true));
    env.write_policy("without.yaml", &policy(port, false));
    env.start_daemon_quiet();
    env.add_agent(WITH, "with.yaml");
    env.add_agent(WITHOUT, "without.yaml");
    let (with_cg, without_cg) = (env.agent_cgroup(WITH), env.agent_cgroup(WITHOUT));
    let load_before = loadavg();
    // Warm-up, not counted.
    block(&with_cg, port, mib / 4)?;
    block(&without_cg, port, mib / 4)?;
    let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        // A-B-B-A: the order flips every round.
        let (a1, b1, b2, a2) = if r % 2 == 0 {
            let a1 = block(&with_cg, port, mib)?;
            let b1 = block(&without_cg, port, mib)?;
            let b2 = block(&without_cg, port, mib)?;
            (a1, b1, b2, block(&with_cg, port, mib)?)
        } else {
            let b1 = block(&without_cg, port, mib)?;
            let a1 = block(&with_cg, port, mib)?;
            let a2 = block(&with_cg, port, mib)?;
            let b2 = block(&without_cg, port, mib)?;
            (a1, b1, b2, a2)
        };
        eprintln!("round {r}: with budget {a1:.0} {a2:.0} MiB/s, without {b1:.0} {b2:.0} MiB/s");
        ratios.push((a1 + a2) / (b1 + b2));
        with.extend([a1, a2]);
        without.extend([b1, b2]);
    }
    // Drops are swept into evidence every 10 s: wait one sweep.
    thread::sleep(std::time::Duration::from_secs(11));
    let status = env.ok(&["status", "--json"]);
    let drops = env
        .evidence()
        .iter()
        .filter(|e| e["rule_id"] == "budget:egress")
        .count();
    drop(env);
    println!("egress byte budget, loopback TCP throughput ({rounds} rounds x 4 blocks of {mib} MiB, A-B-B-A)");
    println!(
        "  with a bytes: egress budget   median {:>8.0} MiB/s",
        median(&mut with)
    );
    println!(
        "  same agent without one        median {:>8.0} MiB/s",
        median(&mut without)
    );
    let mut sorted = ratios.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  paired ratio with/without     median {:.3} (rounds {:.3}..{:.3})",
        median(&mut ratios),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    println!("  budget entries (drops) recorded: {drops} (0: the budget was never reached)");
    println!("  load average before {load_before}, after {}", loadavg());
    ensure!(
        status.contains(WITH),
        "the agent was not enforced: {status}"
    );
    Ok(())
}
