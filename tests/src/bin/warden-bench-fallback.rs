//! `warden-bench-fallback` (as root): what the exec and file-open fallback
//! (tracepoints + SIGKILL) costs, measured side by side in one run.
//!
//! - exec: fork + exec + wait of `/usr/bin/true`, per exec;
//! - open: `openat(O_RDONLY)` + `close` of one file, per open;
//!
//! each from a plain cgroup with Warden not loaded ("baseline": daemon
//! stopped and its pins removed, `TestEnv::unload`) and from an agent
//! cgroup whose policy allows them ("agent": the exec hook, the loader's
//! and the loop's opens decided and recorded); the same open loop from the plain cgroup with Warden loaded, in
//! short A-B-B-A blocks with the `sys_exit` program attached and detached
//! (the agent's policy reloaded with and without its file rules): what a
//! non-agent process pays for it, and
//!
//! - getppid: a tight `getppid()` loop outside any agent, per call, with
//!   Warden not loaded, with the `sys_exit` program attached for file rules
//!   (mode FILES), and attached for file rules and holds (FILES + HOLDS);
//! - page fault: touching fresh anonymous pages outside any agent, per
//!   fault, with Warden running on a policy without holds and on one that
//!   holds execs (the page-fault guard of paused execs attached), once per
//!   round and in short A-B-B-A block pairs.
//!
//! Sides are interleaved round by round (Warden is loaded and unloaded
//! each round) so that machine noise lands on all of them alike. The timed
//! sides run with `bpf_stats` as they found it (normally off: the kernel's
//! run-time bookkeeping costs every program run two clock reads); the
//! programs' own run time is read in a separate, untimed pass each round. Each
//! measurement is a fresh child of this binary that moves itself into its
//! cgroup (its pid into `cgroup.procs`, as `warden run` does), warms up,
//! then times each operation.
//!
//!   warden-bench-fallback [--rounds R] [--execs N] [--opens N] [--pairs P]
//!                         [--json FILE]
//!   warden-bench-fallback --shadow [--rounds R] [--pairs P]
//!   warden-bench-fallback --cache-full FILES [--rounds R] [--passes P]
//!
//! `--pairs` sets the block pairs per round of the paired measurements
//! (default 25 for exec, 10 for opens and page faults); `--json` also
//! writes the ratios and the exec mechanism `warden status` names to FILE
//! (`cargo xtask bench --guest` collects one per guest mechanism).
//!
//! `--shadow` measures only what a `shadow:` candidate with exec and file
//! rules adds: two agents with the same policy, one of them carrying a
//! candidate that would deny its execs of `/usr/bin/true` and its opens of
//! the file (each action pays the candidate's lookup and a counted
//! difference), exec and open blocks in A-B-B-A pairs, each block waiting
//! for the evidence of the last.
//!
//! `--cache-full FILES` runs only the decision cache when full: one process
//! opens FILES distinct files (default 100,000, more than the 65,536
//! entries of `DECISION_CACHE` and of `SUMMARIES`) in turn, once untimed
//! (every file's first) and then `--passes` times (default 2) timed, per
//! open: Warden not loaded, an agent with the cache (every open a miss and,
//! once full, an eviction) and an agent with `WARDEN_DECISION_CACHE_MS=0`,
//! the three sides in one run, in A-B-C / C-B-A order round by round
//! (default 3 rounds). It prints p50, p90, mean and p99 per side, their
//! ratios, and per agent side the cache hits and the evidence entries the
//! timed passes added.
//!
//! (One file of about 600 lines: one measurement, read top to bottom.)

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use warden_tests::{is_root, TestEnv};

const AGENT: &str = "fallback-bench";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("child") => child(&args[1..]),
        _ => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-bench-fallback: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The measuring child: `child CGROUP MODE N [FILE]`, prints the sorted
// samples (ns) on one line.

fn child(args: &[String]) -> Result<()> {
    let [cgroup, mode, n, rest @ ..] = args else {
        bail!("usage: child CGROUP MODE N [FILE]");
    };
    let n: usize = n.parse()?;
    std::fs::write(Path::new(cgroup).join("cgroup.procs"), "0")
        .with_context(|| format!("move into {cgroup}"))?;
    let mut samples = match mode.as_str() {
        "exec" => {
            let once = || -> Result<u64> {
                let t = Instant::now();
                let status = Command::new("/usr/bin/true").status()?;
                ensure!(status.success(), "/usr/bin/true: {status}");
                Ok(t.elapsed().as_nanos() as u64)
            };
            for _ in 0..20 {
                once()?;
            }
            (0..n).map(|_| once()).collect::<Result<Vec<u64>>>()?
        }
        "open" => {
            let file = std::ffi::CString::new(rest.first().context("open needs FILE")?.as_str())?;
            let once = || -> Result<u64> {
                let t = Instant::now();
                // SAFETY: a valid C string; the fd is closed at once.
                let fd = unsafe { libc::openat(libc::AT_FDCWD, file.as_ptr(), libc::O_RDONLY) };
                ensure!(fd >= 0, "open: {}", std::io::Error::last_os_error());
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
                Ok(t.elapsed().as_nanos() as u64)
            };
            for _ in 0..OPEN_WARMUP {
                once()?;
            }
            (0..n).map(|_| once()).collect::<Result<Vec<u64>>>()?
        }
        "open-many" => {
            // `n` distinct files DIR/0..n, opened in turn: once untimed
            // (each file's first), then PASSES timed passes.
            let [dir, passes, ..] = rest else {
                bail!("open-many needs DIR PASSES");
            };
            let passes: usize = passes.parse()?;
            let files = (0..n)
                .map(|i| std::ffi::CString::new(format!("{dir}/{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            let once = |file: &std::ffi::CString| -> Result<u64> {
                let t = Instant::now();
                // SAFETY: a valid C string; the fd is closed at once.
                let fd = unsafe { libc::openat(libc::AT_FDCWD, file.as_ptr(), libc::O_RDONLY) };
                ensure!(fd >= 0, "open: {}", std::io::Error::last_os_error());
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
                Ok(t.elapsed().as_nanos() as u64)
            };
            for file in &files {
                once(file)?;
            }
            let mut samples = Vec::with_capacity(n * passes);
            for _ in 0..passes {
                for file in &files {
                    samples.push(once(file)?);
                }
            }
            samples
        }
        "getppid" => {
            // Per-call time of batches (one call is below the clock's reach).
            const BATCH: u64 = 10_000;
            let batch = || {
                let t = Instant::now();
                for _ in 0..BATCH {
                    // SAFETY: no arguments, no side effects.
                    unsafe { libc::syscall(libc::SYS_getppid) };
                }
                t.elapsed().as_nanos() as u64 / BATCH
            };
            for _ in 0..5 {
                batch();
            }
            (0..n).map(|_| batch()).collect()
        }
        "fault" => {
            // Per-fault time: map fresh anonymous pages and touch each.
            const PAGES: usize = 512;
            let batch = || {
                // SAFETY: a private anonymous mapping of our own, written
                // one byte per page, then unmapped.
                unsafe {
                    let len = PAGES * 4096;
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                    .cast::<u8>();
                    assert!(p.cast::<libc::c_void>() != libc::MAP_FAILED, "mmap");
                    let t = Instant::now();
                    for i in 0..PAGES {
                        p.add(i * 4096).write_volatile(1);
                    }
                    let ns = t.elapsed().as_nanos() as u64 / PAGES as u64;
                    libc::munmap(p.cast(), len);
                    ns
                }
            };
            for _ in 0..5 {
                batch();
            }
            (0..n).map(|_| batch()).collect()
        }
        other => bail!("unknown mode {other}"),
    };
    samples.sort_unstable();
    let text: Vec<String> = samples.iter().map(u64::to_string).collect();
    println!("{}", text.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------

struct Config {
    rounds: usize,
    execs: usize,
    opens: usize,
    /// Block pairs per round of every paired measurement (0: the defaults).
    pairs: usize,
    json: Option<PathBuf>,
    /// `--shadow`: only the shadow candidate's cost (`run_shadow`).
    shadow: bool,
    /// `--cache-full FILES`: only the full decision cache (0: not asked).
    cache_full: usize,
    /// Timed passes over the files of `--cache-full`.
    passes: usize,
}

fn parse(args: &[String]) -> Result<Config> {
    let mut c = Config {
        rounds: 6,
        execs: 300,
        opens: 5000,
        pairs: 0,
        json: None,
        shadow: false,
        cache_full: 0,
        passes: 2,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--rounds" => &mut c.rounds,
            "--execs" => &mut c.execs,
            "--opens" => &mut c.opens,
            "--pairs" => &mut c.pairs,
            "--cache-full" => &mut c.cache_full,
            "--passes" => &mut c.passes,
            "--json" => {
                c.json = Some(it.next().context("a file name after --json")?.into());
                continue;
            }
            "--shadow" => {
                c.shadow = true;
                continue;
            }
            other => bail!("unknown argument {other:?}"),
        };
        *slot = it.next().context("a number")?.parse()?;
    }
    Ok(c)
}

/// Samples per side, in ns.
#[derive(Default)]
struct Side(Vec<u64>);

impl Side {
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_unstable();
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * p).round() as usize] as f64
    }
}

/// Short blocks of two configurations measured in A-B-B-A order, so that
/// the host's drift between minutes lands on both: "on" (the one with
/// more of Warden) and "off".
#[derive(Default)]
struct Paired {
    /// Per pair: on p50 / off p50.
    ratios: Vec<f64>,
    on: Side,
    off: Side,
}

impl Paired {
    /// `pairs` pairs of `block(true)` and `block(false)`, alternating which
    /// goes first.
    fn measure(&mut self, pairs: usize, mut block: impl FnMut(bool) -> Result<Side>) -> Result<()> {
        for pair in 0..pairs {
            let (on, off) = if pair % 2 == 0 {
                let on = block(true)?;
                (on, block(false)?)
            } else {
                let off = block(false)?;
                (block(true)?, off)
            };
            self.ratios.push(on.percentile(0.5) / off.percentile(0.5));
            self.on.0.extend(on.0);
            self.off.0.extend(off.0);
        }
        Ok(())
    }

    /// Pooled p50 ratio and the median of the per-pair ratios.
    fn ratios(&self) -> (f64, f64) {
        let mut r = self.ratios.clone();
        r.sort_by(f64::total_cmp);
        let median = r.get(r.len().saturating_sub(1) / 2).copied();
        (
            self.on.percentile(0.5) / self.off.percentile(0.5),
            median.unwrap_or(f64::NAN),
        )
    }

    /// "pooled p50 R (+D ns); per pair median, quartiles (N pairs)".
    fn summary(&self) -> String {
        let mut r = self.ratios.clone();
        r.sort_by(f64::total_cmp);
        let q = |p: f64| r[((r.len() - 1) as f64 * p).round() as usize];
        format!(
            "pooled p50 {:.3}x ({:+.0} ns); per pair median {:.3}x, quartiles {:.3} / {:.3} \
             ({} pairs)",
            self.on.percentile(0.5) / self.off.percentile(0.5),
            self.on.percentile(0.5) - self.off.percentile(0.5),
            q(0.5),
            q(0.25),
            q(0.75),
            r.len()
        )
    }
}

/// Block pairs per round of the paired exec measurement, execs per block.
const EXEC_PAIRS: usize = 25;
const EXEC_BLOCK: usize = 20;

/// Block pairs per round of the paired non-agent open measurement, opens
/// per block.
const OPEN_PAIRS: usize = 10;
const OPEN_BLOCK: usize = 1000;

/// Block pairs per round of the paired page-fault measurement, batches of
/// 512 faults per block.
const FAULT_PAIRS: usize = 10;
const FAULT_BLOCK: usize = 10;

/// Opens each open child makes before it starts timing.
const OPEN_WARMUP: usize = 200;

/// Execs and opens of each round's untimed `bpf_stats` pass.
const KERNEL_EXECS: usize = 50;
const KERNEL_OPENS: usize = 1000;

/// `kernel.bpf_stats_enabled` switched on, and put back as it was when
/// dropped, also when the bench fails half way: it is machine-wide.
struct BpfStats(String);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let before = std::fs::read_to_string(BPF_STATS).context(BPF_STATS)?;
        std::fs::write(BPF_STATS, "1").context(BPF_STATS)?;
        Ok(Self(before.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.0) {
            eprintln!("warden-bench-fallback: could not put back {BPF_STATS}: {e}");
        }
    }
}

fn measure(cgroup: &Path, mode: &str, n: usize, file: Option<&Path>) -> Result<Vec<u64>> {
    let me = std::env::current_exe()?;
    let mut cmd = Command::new(me);
    cmd.arg("child").arg(cgroup).arg(mode).arg(n.to_string());
    if let Some(f) = file {
        cmd.arg(f);
    }
    let out = cmd.output()?;
    ensure!(
        out.status.success(),
        "{mode} child in {}: {} {}",
        cgroup.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|s| s.parse().context("sample"))
        .collect()
}

fn policy(file: &Path, holds: bool) -> String {
    policy_with(file, true, holds)
}

/// The agent's policy; without `files`, only its exec rule (no file
/// rules: the daemon detaches the `sys_exit` program).
fn policy_with(file: &Path, files: bool, holds: bool) -> String {
    let hold = if holds {
        "  - id: held-port\n    connect: { to: 127.0.0.1, ports: [9] }\n    decision: hold\n  \
         - id: held-exec\n    exec: { path: /usr/bin/false }\n    decision: hold\n"
    } else {
        ""
    };
    let files = if files {
        format!(
            "  - id: loader-cache
    file: {{ path: /etc/ld.so.cache, access: [read] }}
    decision: allow
  - id: system-libraries
    file: {{ prefix: /usr/lib/, access: [read] }}
    decision: allow
  - id: bench-file
    file: {{ path: {} , access: [read] }}
    decision: allow
",
            file.display()
        )
    } else {
        String::new()
    };
    format!(
        "version: 1
rules:
  - id: run-true
    exec: {{ path: /usr/bin/true }}
    decision: allow
{files}{hold}"
    )
}

/// The agent with a `shadow:` candidate in `--shadow`.
const SHADOWED: &str = "fallback-shadowed";

/// `--shadow`: exec and open blocks of an agent whose policy carries a
/// candidate that would deny both ("on") against an agent with the same
/// policy and no candidate ("off").
fn run_shadow(c: &Config) -> Result<()> {
    let pairs = |default: usize| if c.pairs == 0 { default } else { c.pairs };
    let mut env = TestEnv::new("benchshadow");
    let file: PathBuf = env.dir.path().canonicalize()?.join("bench-file.txt");
    std::fs::write(&file, "x")?;
    let plain = policy(&file, false);
    // The same rules, but the two measured actions denied.
    let candidate = format!(
        "shadow:
  version: 1
  rules:
    - id: no-true
      exec: {{ path: /usr/bin/true }}
      decision: deny
    - id: loader-cache
      file: {{ path: /etc/ld.so.cache, access: [read] }}
      decision: allow
    - id: system-libraries
      file: {{ prefix: /usr/lib/, access: [read] }}
      decision: allow
    - id: no-bench-file
      file: {{ path: {}, access: [read] }}
      decision: deny
",
        file.display()
    );
    env.write_policy("plain.yaml", &plain);
    env.write_policy("shadowed.yaml", &format!("{plain}{candidate}"));
    env.start_daemon_quiet();
    env.add_agent(AGENT, "plain.yaml");
    env.add_agent(SHADOWED, "shadowed.yaml");
    let (off, on) = (env.agent_cgroup(AGENT), env.agent_cgroup(SHADOWED));
    let start = event_counts(&env)?;
    let mut exec_paired = Paired::default();
    let mut open_paired = Paired::default();
    for round in 0..c.rounds {
        let t = Instant::now();
        exec_paired.measure(pairs(EXEC_PAIRS), |shadow| {
            let cgroup = if shadow { &on } else { &off };
            let side = measure(cgroup, "exec", EXEC_BLOCK, None).map(Side)?;
            settle(&env, start)?;
            Ok(side)
        })?;
        open_paired.measure(pairs(OPEN_PAIRS), |shadow| {
            let cgroup = if shadow { &on } else { &off };
            let side = measure(cgroup, "open", OPEN_BLOCK, Some(&file)).map(Side)?;
            settle(&env, start)?;
            Ok(side)
        })?;
        eprintln!("round {round}: {:.0} s", t.elapsed().as_secs_f64());
    }
    // The candidate was evaluated: its differences are in the status.
    let status = env.ok(&["status"]);
    ensure!(
        status.contains("would-deny (rule no-true)")
            && status.contains("would-deny (rule no-bench-file)"),
        "the candidate's differences are not counted:\n{status}"
    );
    env.unload();
    println!(
        "exec, agent with a shadow candidate / without: {}",
        exec_paired.summary()
    );
    println!(
        "open, agent with a shadow candidate / without: {}",
        open_paired.summary()
    );
    for (name, p) in [("exec", &exec_paired), ("open", &open_paired)] {
        println!(
            "{name} p50: {:.1} us with, {:.1} us without",
            p.on.percentile(0.5) / 1e3,
            p.off.percentile(0.5) / 1e3
        );
    }
    Ok(())
}

/// Run count and run time (ns) of the programs behind the environment's
/// pinned links, by program name.
fn program_stats(env: &TestEnv) -> std::collections::HashMap<String, (u64, u64)> {
    let ids = env.pinned_program_ids();
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| ids.contains(&p.id()))
        .filter_map(|p| {
            let name = p.name_as_str()?.to_string();
            Some((name, (p.run_count(), p.run_time().as_nanos() as u64)))
        })
        .collect()
}

/// The kernel's event count (pinned: it runs on across daemons) and what
/// this daemon has recorded so far.
fn event_counts(env: &TestEnv) -> Result<(u64, u64)> {
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"]))?;
    let dropped = status["kernel"]["dropped"].as_u64().unwrap_or(0);
    ensure!(
        dropped == 0,
        "the ring buffer overflowed: {dropped} events dropped"
    );
    Ok((
        status["kernel"]["events"].as_u64().unwrap_or(0),
        status["recorded"].as_u64().unwrap_or(0),
    ))
}

/// Waits until the daemon has recorded what the kernel sent since `start`
/// (`event_counts` when the daemon came up), so that one side's evidence
/// writing does not land on the next side.
fn settle(env: &TestEnv, start: (u64, u64)) -> Result<()> {
    settle_within(env, start, 20)
}

fn settle_within(env: &TestEnv, start: (u64, u64), secs: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (events, recorded) = event_counts(env)?;
        // `recorded` also counts the daemon's own entries: close enough.
        if recorded - start.1 >= events - start.0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the daemon did not record the kernel's events within {secs} s"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn run(args: &[String]) -> Result<()> {
    ensure!(
        is_root(),
        "run as root (it loads eBPF programs and creates cgroups)"
    );
    let given = |flag: &str| args.iter().any(|a| a == flag);
    let mut c = parse(args)?;
    if c.shadow {
        return run_shadow(&c);
    }
    if given("--cache-full") {
        if !given("--rounds") {
            c.rounds = 3;
        }
        return cache_full(&c);
    }
    let pairs = |default: usize| if c.pairs == 0 { default } else { c.pairs };
    let mut env = TestEnv::new("benchfb");
    std::fs::create_dir_all(&env.cgroup_parent)?;
    let plain = env.cgroup_parent.join("bench-plain");
    std::fs::create_dir_all(&plain)?;
    let file: PathBuf = env.dir.path().canonicalize()?.join("bench-file.txt");
    std::fs::write(&file, "x")?;
    env.write_policy("p.yaml", &policy(&file, false));
    env.start_daemon_quiet();
    env.add_agent(AGENT, "p.yaml");
    env.unload();
    let agent = env.agent_cgroup(AGENT);

    let names = [
        "exec baseline",
        "exec agent",
        "open baseline",
        "open agent",
        "getppid not loaded",
        "getppid sys_exit FILES",
        "getppid sys_exit FILES+HOLDS",
        "page fault, no holds",
        "page fault, exec holds",
        "open agent, cache off",
    ];
    let mut sides: Vec<Side> = names.iter().map(|_| Side::default()).collect();
    let getppid_batches = 40;
    // Program run time, from bpf_stats: (runs, ns) per tracepoint, summed
    // over the untimed passes of the agent's exec and open loops.
    let mut kernel_exec = (0u64, 0u64);
    let mut kernel_open = (0u64, 0u64);
    // What decides execs here, as `warden status` says (read once).
    let mut exec_mechanism = String::new();
    // Whether `sys_exit` (every syscall's dispatch) was attached while the
    // non-agent getppid loops ran: file rules, then file rules and holds.
    let (mut sys_exit_files, mut sys_exit_holds) = (false, false);
    let mut exec_paired = Paired::default();
    let mut open_paired = Paired::default();
    let mut fault_paired = Paired::default();
    for round in 0..c.rounds {
        let t = Instant::now();
        // Warden not loaded.
        sides[0].0.extend(measure(&plain, "exec", c.execs, None)?);
        sides[2]
            .0
            .extend(measure(&plain, "open", c.opens, Some(&file))?);
        sides[4]
            .0
            .extend(measure(&plain, "getppid", getppid_batches, None)?);
        // Warden running; the agent's policy allows the loops.
        env.write_policy("p.yaml", &policy(&file, false));
        env.start_daemon_quiet();
        thread::sleep(Duration::from_millis(300));
        if exec_mechanism.is_empty() {
            exec_mechanism = mechanism_of(&env, "exec")?;
        }
        let start = event_counts(&env)?;
        sides[1].0.extend(measure(&agent, "exec", c.execs, None)?);
        settle(&env, start)?;
        sides[3]
            .0
            .extend(measure(&agent, "open", c.opens, Some(&file))?);
        settle(&env, start)?;
        // The programs' own run time, untimed.
        let stats = BpfStats::enable()?;
        let s0 = program_stats(&env);
        measure(&agent, "exec", KERNEL_EXECS, None)?;
        let s1 = program_stats(&env);
        settle(&env, start)?;
        let s2 = program_stats(&env);
        measure(&agent, "open", KERNEL_OPENS, Some(&file))?;
        let s3 = program_stats(&env);
        drop(stats);
        let delta = |a: &std::collections::HashMap<String, (u64, u64)>,
                     b: &std::collections::HashMap<String, (u64, u64)>,
                     tp: &str| {
            let (r0, t0) = a.get(tp).copied().unwrap_or_default();
            let (r1, t1) = b.get(tp).copied().unwrap_or_default();
            (r1.saturating_sub(r0), t1.saturating_sub(t0))
        };
        // The fallback's program or the BPF LSM hook, whichever decides
        // here (the other has no runs).
        for (a, b, programs, sum) in [
            (
                &s0,
                &s1,
                ["warden_exec", "warden_lsm_exec"],
                &mut kernel_exec,
            ),
            (
                &s2,
                &s3,
                ["warden_sys_exit", "warden_lsm_open"],
                &mut kernel_open,
            ),
        ] {
            for program in programs {
                let d = delta(a, b, program);
                *sum = (sum.0 + d.0, sum.1 + d.1);
            }
        }
        settle(&env, start)?;
        // Exec again in short blocks, agent and non-agent cgroup with
        // Warden loaded, in A-B-B-A order: the host's drift between minutes
        // lands on both blocks of a pair.
        exec_paired.measure(pairs(EXEC_PAIRS), |in_agent| {
            let cgroup = if in_agent { &agent } else { &plain };
            measure(cgroup, "exec", EXEC_BLOCK, None).map(Side)
        })?;
        // Non-agent opens, the `sys_exit` program attached (file rules)
        // and detached (none).
        open_paired.measure(pairs(OPEN_PAIRS), |files| {
            env.write_policy("p.yaml", &policy_with(&file, files, false));
            env.ok(&["policy", "reload"]);
            measure(&plain, "open", OPEN_BLOCK, Some(&file)).map(Side)
        })?;
        // Non-agent page faults, with the page-fault guard of held execs
        // attached (a policy that holds execs) and detached.
        fault_paired.measure(pairs(FAULT_PAIRS), |holds| {
            env.write_policy("p.yaml", &policy(&file, holds));
            env.ok(&["policy", "reload"]);
            measure(&plain, "fault", FAULT_BLOCK, None).map(Side)
        })?;
        env.write_policy("p.yaml", &policy(&file, false));
        env.ok(&["policy", "reload"]);
        settle(&env, start)?;
        sys_exit_files = hook_attached(&env, "tp_btf/sys_exit")?;
        sides[5]
            .0
            .extend(measure(&plain, "getppid", getppid_batches, None)?);
        sides[7]
            .0
            .extend(measure(&plain, "fault", getppid_batches, None)?);
        env.write_policy("p.yaml", &policy(&file, true));
        env.ok(&["policy", "reload"]);
        sys_exit_holds = hook_attached(&env, "tp_btf/sys_exit")?;
        sides[6]
            .0
            .extend(measure(&plain, "getppid", getppid_batches, None)?);
        // Exec holds attach the page-fault guard of paused execs.
        sides[8]
            .0
            .extend(measure(&plain, "fault", getppid_batches, None)?);
        env.unload();
        // The agent's opens again with the decision cache off: every
        // repeat walks the path (what `open agent` cost before the cache).
        env.start_daemon_with(&[("WARDEN_LOG", "info"), ("WARDEN_DECISION_CACHE_MS", "0")]);
        thread::sleep(Duration::from_millis(300));
        let start = event_counts(&env)?;
        sides[9]
            .0
            .extend(measure(&agent, "open", c.opens, Some(&file))?);
        settle(&env, start)?;
        env.unload();
        eprintln!(
            "round {}/{} done in {:.1} s",
            round + 1,
            c.rounds,
            t.elapsed().as_secs_f64()
        );
    }
    println!(
        "{:<32} {:>10} {:>10} {:>8}",
        "side", "p50 ns", "p99 ns", "samples"
    );
    for (name, side) in names.iter().zip(&sides) {
        println!(
            "{name:<32} {:>10.0} {:>10.0} {:>8}",
            side.percentile(0.5),
            side.percentile(0.99),
            side.0.len()
        );
    }
    let avg = |(runs, ns): (u64, u64)| ns as f64 / runs.max(1) as f64;
    let exec_line = if kernel_exec.0 == 0 {
        "exec program: no runs seen".to_string()
    } else {
        format!(
            "exec program (sched_process_exec, or lsm/bprm_check_security with BPF LSM): \
             {:.0} ns per agent exec ({} runs)",
            avg(kernel_exec),
            kernel_exec.0
        )
    };
    println!(
        "\nkernel (bpf_stats, untimed passes; includes ~45 ns of stats bookkeeping per run):\n  \
         {exec_line}\n  \
         open program during the agent's open loop (sys_exit: every syscall exit on the \
         machine, the loop's opens and closes among them; or lsm/file_open: every open): \
         {:.0} ns per run ({} runs), {:.0} ns per open",
        avg(kernel_open),
        kernel_open.0,
        // The child's warm-up opens run the program too.
        kernel_open.1 as f64 / ((KERNEL_OPENS + OPEN_WARMUP) * c.rounds) as f64
    );
    let ratio = |a: usize, b: usize| sides[b].percentile(0.5) - sides[a].percentile(0.5);
    let times = |a: usize, b: usize| sides[b].percentile(0.5) / sides[a].percentile(0.5);
    println!(
        "\nexec: agent p50 / baseline p50 = {:.3}x ({:+.0} ns; target 1.02x)",
        times(0, 1),
        ratio(0, 1)
    );
    println!(
        "exec, paired blocks of {EXEC_BLOCK} (Warden loaded, agent / non-agent cgroup, A-B-B-A): \
         {}; target 1.02x",
        exec_paired.summary()
    );
    println!(
        "open: agent p50 / baseline p50 = {:.3}x ({:+.0} ns; target 1.10x)",
        times(2, 3),
        ratio(2, 3)
    );
    println!(
        "open: agent with the decision cache off (every repeat walks) p50 / baseline p50 = \
         {:.3}x ({:+.0} ns); cache hits / cache off = {:.3}x ({:+.0} ns)",
        times(2, 9),
        ratio(2, 9),
        times(9, 3),
        ratio(9, 3)
    );
    println!(
        "open (non-agent), paired blocks of {OPEN_BLOCK} (sys_exit attached / detached, \
         A-B-B-A): {}; target 1.01x",
        open_paired.summary()
    );
    println!(
        "getppid (non-agent): FILES / not loaded = {:.3}x ({:+.1} ns/call; target 1.01x)",
        times(4, 5),
        ratio(4, 5)
    );
    println!(
        "getppid (non-agent): FILES+HOLDS - not loaded = {:+.1} ns/call",
        ratio(4, 6)
    );
    println!(
        "page fault (non-agent): exec holds (guard attached) - no holds = {:+.1} ns/fault",
        ratio(7, 8)
    );
    println!(
        "page fault (non-agent), paired blocks of {FAULT_BLOCK} x 512 faults (page-fault \
         guard attached / detached, A-B-B-A): {}",
        fault_paired.summary()
    );
    if let Some(path) = &c.json {
        let p50 = |i: usize| sides[i].percentile(0.5);
        let (exec_pooled, exec_median) = exec_paired.ratios();
        let (open_pooled, open_median) = open_paired.ratios();
        let summary = serde_json::json!({
            "exec_mechanism": exec_mechanism,
            "rounds": c.rounds,
            "execs": c.execs,
            "opens": c.opens,
            "exec_not_loaded_p50_ns": p50(0),
            "exec_agent_p50_ns": p50(1),
            "exec_agent_vs_not_loaded": times(0, 1),
            "exec_paired_pooled": exec_pooled,
            "exec_paired_median": exec_median,
            "exec_pairs": exec_paired.ratios.len(),
            "open_not_loaded_p50_ns": p50(2),
            "open_agent_p50_ns": p50(3),
            "open_agent_vs_not_loaded": times(2, 3),
            "open_nonagent_paired_pooled": open_pooled,
            "open_nonagent_paired_median": open_median,
            "open_pairs": open_paired.ratios.len(),
            "getppid_not_loaded_p50_ns": p50(4),
            "getppid_loaded_p50_ns": p50(5),
            "getppid_loaded_vs_not_loaded": times(4, 5),
            "getppid_holds_p50_ns": p50(6),
            "getppid_holds_vs_not_loaded": times(4, 6),
            "sys_exit_attached_files": sys_exit_files,
            "sys_exit_attached_holds": sys_exit_holds,
        });
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Whether `warden status --json` lists the machine-wide `hook` as attached.
fn hook_attached(env: &TestEnv, hook: &str) -> Result<bool> {
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"]))?;
    Ok(status["global_hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|h| h["hook"] == hook && h["attached"] == true))
}

/// The mechanism `warden status --json` names for `action` ("exec", ...).
fn mechanism_of(env: &TestEnv, action: &str) -> Result<String> {
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"]))?;
    status["mechanisms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["action"] == action)
        .and_then(|m| m["mechanism"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("`warden status --json` names no mechanism for {action:?}"))
}

/// `kernel.cache_hits` of `warden status --json`: opens the decision cache
/// decided.
fn cache_hits(env: &TestEnv) -> Result<u64> {
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"]))?;
    Ok(status["kernel"]["cache_hits"].as_u64().unwrap_or(0))
}

/// `--cache-full FILES`: the decision cache when an agent's opens touch
/// more distinct files than it holds, against the cache off and Warden not
/// loaded (see the module doc).
fn cache_full(c: &Config) -> Result<()> {
    let n = c.cache_full;
    let mut env = TestEnv::new("benchcache");
    std::fs::create_dir_all(&env.cgroup_parent)?;
    let plain = env.cgroup_parent.join("bench-plain");
    std::fs::create_dir_all(&plain)?;
    let dir: PathBuf = env.dir.path().canonicalize()?.join("many");
    std::fs::create_dir_all(&dir)?;
    for i in 0..n {
        std::fs::write(dir.join(i.to_string()), "x")?;
    }
    let dir_s = dir
        .to_str()
        .context("a UTF-8 temporary directory")?
        .to_string();
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:\n  - id: run-true\n    exec: {{ path: /usr/bin/true }}\n    \
             decision: allow\n  - id: many\n    file: {{ prefix: {dir_s}/, access: [read] }}\n    \
             decision: allow\n"
        ),
    );
    env.start_daemon_quiet();
    env.add_agent(AGENT, "p.yaml");
    env.unload();
    let agent = env.agent_cgroup(AGENT);
    let names = [
        "open not loaded",
        "open agent, cache on",
        "open agent, cache off",
    ];
    let mut sides: Vec<Side> = names.iter().map(|_| Side::default()).collect();
    // Per agent side: (cache hits, evidence entries) over the timed passes.
    let mut added = [(0u64, 0u64); 3];
    let many = |cgroup: &Path| -> Result<Vec<u64>> {
        let me = std::env::current_exe()?;
        let out = Command::new(me)
            .arg("child")
            .arg(cgroup)
            .arg("open-many")
            .arg(n.to_string())
            .arg(&dir_s)
            .arg(c.passes.to_string())
            .output()?;
        ensure!(
            out.status.success(),
            "open-many child in {}: {} {}",
            cgroup.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|s| s.parse().context("sample"))
            .collect()
    };
    for round in 0..c.rounds {
        let t = Instant::now();
        let mut order = [0usize, 1, 2];
        if round % 2 == 1 {
            order.reverse();
        }
        for side in order {
            if side == 0 {
                sides[0].0.extend(many(&plain)?);
                continue;
            }
            let ttl = if side == 1 { "1000" } else { "0" };
            env.start_daemon_with(&[("WARDEN_LOG", "info"), ("WARDEN_DECISION_CACHE_MS", ttl)]);
            thread::sleep(Duration::from_millis(300));
            let start = event_counts(&env)?;
            let hits = cache_hits(&env)?;
            sides[side].0.extend(many(&agent)?);
            settle_within(&env, start, 300)?;
            let end = event_counts(&env)?;
            added[side].0 += cache_hits(&env)? - hits;
            added[side].1 += end.1 - start.1;
            env.unload();
        }
        eprintln!(
            "round {}/{} done in {:.1} s (load average {})",
            round + 1,
            c.rounds,
            t.elapsed().as_secs_f64(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    let mean = |s: &Side| s.0.iter().sum::<u64>() as f64 / s.0.len().max(1) as f64;
    println!(
        "{n} distinct files, {} timed passes per side and round, {} rounds",
        c.passes, c.rounds
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>14}",
        "side", "p50 ns", "p90 ns", "mean ns", "p99 ns", "samples", "cache hits", "entries added"
    );
    for (i, (name, side)) in names.iter().zip(&sides).enumerate() {
        let (hits, entries) = if i == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (added[i].0.to_string(), added[i].1.to_string())
        };
        println!(
            "{name:<24} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9} {hits:>12} {entries:>14}",
            side.percentile(0.5),
            side.percentile(0.9),
            mean(side),
            side.percentile(0.99),
            side.0.len()
        );
    }
    let p50 = |i: usize| sides[i].percentile(0.5);
    println!(
        "cache on / not loaded: p50 {:.3}x, mean {:.3}x; cache off / not loaded: p50 {:.3}x, \
         mean {:.3}x; cache on / cache off: p50 {:.3}x ({:+.0} ns), mean {:.3}x",
        p50(1) / p50(0),
        mean(&sides[1]) / mean(&sides[0]),
        p50(2) / p50(0),
        mean(&sides[2]) / mean(&sides[0]),
        p50(1) / p50(2),
        p50(1) - p50(2),
        mean(&sides[1]) / mean(&sides[2]),
    );
    Ok(())
}
