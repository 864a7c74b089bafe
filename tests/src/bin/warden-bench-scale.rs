//! The CLI at millions of entries, for `cargo xtask bench`: grows one
//! synthetic but valid hash-chained log (the store's own append, in large
//! transactions) through 10k, 1M and N entries (default 10M;
//! `WARDEN_BENCH_SCALE_ENTRIES` or the first argument), and at each size
//! times every verb that does not need a running agent, side by side, plus
//! `kill` and `revive` of a registered agent whose cgroup exists. Prints
//! each verb's time at the largest size over its time at 10k (target ~1.0:
//! cost independent of the log's size), and for `evidence export` (which
//! writes the whole chain, so its time grows) its wall time and peak RSS.
//! `log verify` must pass at every size. Everything lives in a temporary
//! directory under /tmp, deleted at the end. The benchmark reports, it
//! does not fail.

#![allow(clippy::unwrap_used, reason = "a benchmark: a panic is the report")]

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use warden::evidence::{Durability, EvidenceStore, NewEntry};
use warden_tests::{synthetic_entry as entry, TestEnv, SYNTHETIC_SPACING_NS as SPACING_NS};

const KILL_AGENT: &str = "bench-kill";
const RUNS: usize = 5;

/// Runs `warden ARGS` once; returns the wall time, the child's peak RSS
/// (KiB, from wait4) and whether it succeeded.
fn run_once(env: &TestEnv, args: &[String]) -> (Duration, u64, bool) {
    run_once_with(env.warden(), args)
}

/// [`run_once`] of a given `warden` command (another binary: see [`base`]).
fn run_once_with(mut cmd: std::process::Command, args: &[String]) -> (Duration, u64, bool) {
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let t = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also returns its rusage"
    )]
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child,
    // which std has not reaped (we never call wait on it).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: as above.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed();
    assert_eq!(r, pid, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        eprintln!("warden {args:?} failed: {err}");
    }
    (wall, usage.ru_maxrss.max(0) as u64, ok)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

struct Verb {
    name: &'static str,
    args: Vec<String>,
}

fn verbs(since_s: i64) -> Vec<Verb> {
    let v = |name, args: &[&str]| Verb {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    let since = since_s.to_string();
    vec![
        v("log --limit 20", &["log", "--limit", "20"]),
        v("log --count", &["log", "--count"]),
        v(
            "log --agent A --limit 20",
            &["log", "--agent", "bench-3", "--limit", "20"],
        ),
        v(
            "log --decision deny --limit 20",
            &["log", "--decision", "deny", "--limit", "20"],
        ),
        v(
            "log --decision allow --limit 20",
            &["log", "--decision", "allow", "--limit", "20"],
        ),
        v(
            "log --kind gap --limit 20",
            &["log", "--kind", "gap", "--limit", "20"],
        ),
        v(
            "log --since T --limit 20",
            &["log", "--since", &since, "--limit", "20"],
        ),
        v(
            "log --agent A --since T --decision deny",
            &[
                "log",
                "--agent",
                "bench-7",
                "--since",
                &since,
                "--decision",
                "deny",
            ],
        ),
        v("agent list", &["agent", "list"]),
        v("agent show", &["agent", "show", KILL_AGENT]),
        v("log tail --no-follow", &["log", "tail", "--no-follow"]),
        v("policy history", &["policy", "history"]),
        v("log checkpoints", &["log", "checkpoints"]),
    ]
}

/// One column of the table: the median time of each verb at one size.
struct Column {
    entries: u64,
    times: Vec<Duration>,
    kill: Duration,
    revive: Duration,
    verify: Duration,
    export: Duration,
    export_rss_kib: u64,
    export_window: Duration,
    export_window_rss_kib: u64,
    bundle_verify: Duration,
    /// `policy shadow` of one synthetic agent (an eighth of the log)
    /// against a candidate: streams the whole log.
    shadow: Duration,
    shadow_rss_kib: u64,
}

fn measure(env: &TestEnv, entries: u64, head_ts_ns: i64) -> Column {
    let since_s = head_ts_ns / 1_000_000_000 - 300;
    let mut times = Vec::new();
    for verb in verbs(since_s) {
        let samples: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let (t, _, ok) = run_once(env, &verb.args);
                assert!(ok, "{}", verb.name);
                t
            })
            .collect();
        times.push(median(samples));
    }
    let s = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (mut kills, mut revives) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (k, _, ok) = run_once(env, &s(&["kill", KILL_AGENT, "--reason", "bench"]));
        assert!(ok, "kill");
        kills.push(k);
        let (r, _, ok) = run_once(env, &s(&["revive", KILL_AGENT, "--reason", "bench"]));
        assert!(ok, "revive");
        revives.push(r);
    }
    let (verify, _, ok) = run_once(env, &s(&["log", "verify"]));
    assert!(ok, "log verify must pass at {entries} entries");

    let out = env.dir.path().join("bundle");
    let out_s = out.to_str().unwrap().to_string();
    let (export, export_rss_kib, ok) = run_once(env, &s(&["evidence", "export", "--out", &out_s]));
    assert!(ok, "export");
    let (bundle_verify, _, ok) = run_once(env, &s(&["evidence", "verify", &out_s]));
    assert!(ok, "the exported bundle verifies");
    std::fs::remove_dir_all(&out).unwrap();
    // The first 10k entries' window, from a log of any size.
    let base_s = (head_ts_ns - (entries as i64 - 1) * SPACING_NS) / 1_000_000_000;
    let to = (base_s + 10_000 * SPACING_NS / 1_000_000_000).to_string();
    let (export_window, export_window_rss_kib, ok) = run_once(
        env,
        &s(&["evidence", "export", "--out", &out_s, "--to", &to]),
    );
    assert!(ok, "windowed export");
    let (_, _, ok) = run_once(env, &s(&["evidence", "verify", &out_s]));
    assert!(ok, "the windowed bundle verifies");
    std::fs::remove_dir_all(&out).unwrap();
    let candidate = env.dir.path().join("shadow-candidate.yaml");
    std::fs::write(
        &candidate,
        "version: 1\nrules:\n  - id: share\n    file: { prefix: /usr/share/doc/, access: [read] }\n    decision: allow\n  - id: tools\n    exec: { prefix: /usr/bin/ }\n    decision: hold\n",
    )
    .unwrap();
    let (shadow, shadow_rss_kib, ok) = run_once(
        env,
        &s(&[
            "policy",
            "shadow",
            "bench-7",
            candidate.to_str().unwrap(),
            "--json",
        ]),
    );
    assert!(ok, "policy shadow");
    Column {
        shadow,
        shadow_rss_kib,
        entries,
        times,
        kill: median(kills),
        revive: median(revives),
        verify,
        export,
        export_rss_kib,
        export_window,
        export_window_rss_kib,
        bundle_verify,
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// `WARDEN_BENCH_SCALE_ONLY=archive`: a log of `n` entries with a signed
/// checkpoint at its middle, then `warden evidence archive` of the first
/// half (export, bundle verification, prune) and `log verify` of the rest,
/// each timed once with its peak RSS.
fn archive_only(n: u64) {
    let env = TestEnv::new("bench-archive");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let key = warden::evidence::checkpoint::HostKey::load_or_create(&env.state_dir()).unwrap();
    let mut store = EvidenceStore::open(&env.database()).unwrap();
    let base_ns = warden::clock::now_ns() - n as i64 * SPACING_NS;
    let half = n / 2;
    let t = Instant::now();
    let mut made = 0u64;
    while made < n {
        let upto = (made + 50_000)
            .min(n)
            .min(if made < half { half } else { n });
        let batch: Vec<NewEntry> = (made..upto).map(|i| entry(i, base_ns)).collect();
        store.append(&batch, Durability::Batched).unwrap();
        made = upto;
        if made == half {
            let (size, head) = store.head().unwrap().unwrap();
            warden::evidence::checkpoint::write(store.connection(), &key, size, &head, base_ns)
                .unwrap();
        }
    }
    drop(store);
    let db = std::fs::metadata(env.database()).map_or(0, |m| m.len());
    println!(
        "generated {n} entries (checkpoint at {half}) in {:.1} s; warden.db {} MiB",
        t.elapsed().as_secs_f64(),
        db >> 20
    );
    let before = format!(
        "{}",
        (base_ns + half as i64 * SPACING_NS) / 1_000_000_000 + 1
    );
    let out = env.state_dir().join("archive");
    let args: Vec<String> = ["evidence", "archive", "--before", &before, "--out"]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect();
    let (wall, rss, ok) = run_once(&env, &args);
    println!(
        "  warden evidence archive --before <entry {half}> : {} ms, peak RSS {} MiB, {}",
        ms(wall),
        rss / 1024,
        if ok { "ok" } else { "FAILED" }
    );
    let (wall, rss, ok) = run_once(&env, &["log".into(), "verify".into()]);
    println!(
        "  warden log verify (the remaining {} entries): {} ms, peak RSS {} MiB, {}",
        n - half,
        ms(wall),
        rss / 1024,
        if ok { "ok" } else { "FAILED" }
    );
    let (wall, rss, ok) = run_once(
        &env,
        &[
            "evidence".into(),
            "verify".into(),
            out.display().to_string(),
        ],
    );
    println!(
        "  warden evidence verify (the archive's {half} entries): {} ms, peak RSS {} MiB, {}",
        ms(wall),
        rss / 1024,
        if ok { "ok" } else { "FAILED" }
    );
}

/// `WARDEN_BENCH_SCALE_ONLY=export`: a log with a signed checkpoint every
/// 1000 entries (as the daemon signs), grown to 1M, 3M and `n` entries; at
/// each size `warden evidence export` of a small window near the head (the
/// 10k entries ending 10k before it) with `--full-chain` (the chain from
/// seq 1 and the whole log's verification: the behaviour before windowed
/// bundles) and without (the chain from the newest checkpoint before the
/// window), side by side, each with its peak RSS (wait4's `ru_maxrss`, the
/// figure `/usr/bin/time -v` prints) and bundle size, and `evidence verify`
/// of each bundle. `WARDEN_BENCH_EXPORT_FULL_MAX=N` skips the
/// `--full-chain` side at sizes above N (at 10M it needs gigabytes of
/// bundle and minutes).
fn export_only(n: u64) {
    let full_max: u64 = std::env::var("WARDEN_BENCH_EXPORT_FULL_MAX").map_or(u64::MAX, |s| {
        s.parse().expect("WARDEN_BENCH_EXPORT_FULL_MAX: a number")
    });
    let env = TestEnv::new("bench-export");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let key = warden::evidence::checkpoint::HostKey::load_or_create(&env.state_dir()).unwrap();
    let mut store = EvidenceStore::open(&env.database()).unwrap();
    let base_ns = warden::clock::now_ns() - n as i64 * SPACING_NS;
    let mut sizes = vec![1_000_000u64, 3_000_000, n];
    sizes.retain(|s| *s <= n);
    sizes.dedup();
    let mut made = 0u64;
    let s = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let du = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap().metadata().unwrap().len())
            .sum()
    };
    println!("evidence export of a small window against the size of the log (one run each)");
    for size in sizes {
        let t = Instant::now();
        while made < size {
            let upto = (made + 1_000).min(size);
            let batch: Vec<NewEntry> = (made..upto).map(|i| entry(i, base_ns)).collect();
            store.append(&batch, Durability::Batched).unwrap();
            made = upto;
            let (seq, head) = store.head().unwrap().unwrap();
            let ts = base_ns + (made as i64 - 1) * SPACING_NS;
            warden::evidence::checkpoint::write(store.connection(), &key, seq, &head, ts).unwrap();
        }
        let db = std::fs::metadata(env.database()).map_or(0, |m| m.len());
        println!(
            "  {}: generated to {made} entries (a checkpoint every 1000) in {:.1} s; warden.db {} MiB",
            human(size),
            t.elapsed().as_secs_f64(),
            db >> 20
        );
        // Entries size-20k .. size-10k, in whole seconds (100 entries/s).
        let from = (base_ns + (made as i64 - 20_000) * SPACING_NS) / 1_000_000_000;
        let to = (base_ns + (made as i64 - 10_000) * SPACING_NS) / 1_000_000_000;
        for (label, extra) in [("--full-chain (before)", true), ("windowed (after)", false)] {
            let out = env.dir.path().join("bundle");
            let out_s = out.to_str().unwrap().to_string();
            let mut args = s(&[
                "evidence",
                "export",
                "--out",
                &out_s,
                "--from",
                &from.to_string(),
                "--to",
                &to.to_string(),
            ]);
            if extra {
                if size > full_max {
                    println!("    export {label:<22}: skipped (WARDEN_BENCH_EXPORT_FULL_MAX)");
                    continue;
                }
                args.push("--full-chain".into());
            }
            let (wall, rss, ok) = run_once(&env, &args);
            assert!(ok, "export {label}");
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
            let bytes = du(&out);
            let (vwall, vrss, vok) = run_once(&env, &s(&["evidence", "verify", &out_s]));
            assert!(vok, "the bundle ({label}) verifies");
            println!(
                "    export {label:<22}: {:>9} ms, peak RSS {:>4} MiB, bundle {:>6} MiB, {:>8} entries carried; evidence verify {:>9} ms, peak RSS {:>4} MiB",
                ms(wall),
                rss / 1024,
                bytes >> 20,
                manifest["entries"],
                ms(vwall),
                vrss / 1024
            );
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    drop(store);
}

/// `WARDEN_BENCH_SCALE_ONLY=cli`: the everyday verbs of issue #14 only, at
/// 10k, 1M and `n` entries (no `log verify`, shadow or unwindowed export):
/// `log --count`, `log --limit 20`, `kill` and `revive` of a registered
/// agent (median of `RUNS` each), `evidence export --from` the last minute
/// (about 6,000 entries; run once, with its peak RSS: the bundle holds the
/// chain from its start to the window's end) with the daemon stopped;
/// then a daemon started on the same database (its start-up timed once,
/// `quick_check` included), `status` and `run --agent A -- /usr/bin/true`
/// (start to exit, median of `RUNS`). Prints the largest size over 10k.
fn cli_only(n: u64) {
    let mut sizes = vec![10_000u64, 1_000_000, n];
    sizes.retain(|s| *s <= n);
    sizes.dedup();
    let mut env = TestEnv::new("bench-scale-cli");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    env.write_policy(
        "kill.yaml",
        "version: 1\ndescription: bench\nrules:\n  - id: local\n    connect: { to: 127.0.0.1, ports: [9], protocol: tcp }\n    decision: allow\n",
    );
    env.add_agent(KILL_AGENT, "kill.yaml");
    env.add_agent("bench-run", "kill.yaml");
    let base_ns = warden::clock::now_ns() - n as i64 * SPACING_NS;
    let s = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let names = [
        "log --count",
        "log --limit 20",
        "kill (registered agent)",
        "revive",
        "daemon start to socket (once)",
        "status (daemon running)",
        "run --agent A -- /usr/bin/true",
        "evidence export --from (last 60 s), once",
    ];
    let mut columns: Vec<(u64, Vec<Duration>)> = Vec::new();
    let mut made = 0u64;
    for &size in &sizes {
        let t = Instant::now();
        let mut store = EvidenceStore::open(&env.database()).unwrap();
        while made < size {
            let upto = (made + 50_000).min(size);
            let batch: Vec<NewEntry> = (made..upto).map(|i| entry(i, base_ns)).collect();
            store.append(&batch, Durability::Batched).unwrap();
            made = upto;
        }
        drop(store);
        let db = std::fs::metadata(env.database()).map_or(0, |m| m.len());
        println!(
            "  {} entries (grown in {:.1} s); warden.db {} MiB; load average {}",
            human(made),
            t.elapsed().as_secs_f64(),
            db >> 20,
            load()
        );
        let head_s = (base_ns + (made as i64 - 1) * SPACING_NS) / 1_000_000_000;
        let since = (head_s - 60).to_string();
        let out = env.dir.path().join("bundle");
        let out_s = out.to_str().unwrap().to_string();
        let none = || {};
        // Each figure printed as soon as it is measured.
        let mut times = Vec::new();
        let mut note = |t: Duration| {
            println!("    {:<40} {:>9} ms", names[times.len()], ms(t));
            times.push(t);
        };
        note(timed(&env, &s(&["log", "--count"]), "log --count", &none));
        note(timed(
            &env,
            &s(&["log", "--limit", "20"]),
            "log --limit 20",
            &none,
        ));
        let (mut kills, mut revives) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let (k, _, ok) = run_once(&env, &s(&["kill", KILL_AGENT, "--reason", "bench"]));
            assert!(ok, "kill");
            kills.push(k);
            let (r, _, ok) = run_once(&env, &s(&["revive", KILL_AGENT, "--reason", "bench"]));
            assert!(ok, "revive");
            revives.push(r);
        }
        note(median(kills));
        note(median(revives));
        let t = Instant::now();
        env.start_daemon_quiet();
        note(t.elapsed());
        note(timed(&env, &s(&["status"]), "status", &none));
        note(timed(
            &env,
            &s(&["run", "--agent", "bench-run", "--", "/usr/bin/true"]),
            "run",
            &none,
        ));
        env.stop_daemon();
        // Last and once: it writes the chain up to the window's end (see
        // README), the longest step here.
        let (export, export_rss, ok) = run_once(
            &env,
            &s(&["evidence", "export", "--out", &out_s, "--from", &since]),
        );
        assert!(ok, "export --from");
        std::fs::remove_dir_all(&out).unwrap();
        note(export);
        println!(
            "    evidence export --from (last 60 s): peak RSS {} MiB",
            export_rss / 1024
        );
        columns.push((made, times));
    }
    let (first, last) = (&columns[0], &columns[columns.len() - 1]);
    println!(
        "\n  {:<40} {:>9} {:>9}   ratio",
        "verb (ms, median of 5)",
        human(first.0),
        human(last.0)
    );
    for (i, name) in names.iter().enumerate() {
        println!(
            "  {name:<40} {:>9} {:>9}   {:.2}",
            ms(first.1[i]),
            ms(last.1[i]),
            last.1[i].as_secs_f64() / first.1[i].as_secs_f64().max(1e-9)
        );
    }
    println!("  load average at the end: {}", load());
}

/// `WARDEN_BENCH_RUN_ROUNDS`, or `default`.
fn run_rounds(default: usize) -> usize {
    std::env::var("WARDEN_BENCH_RUN_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

/// An environment for timing a verb against a busy daemon: `policy`, a
/// connect-only policy for the agent timed, and `flood.yaml`, which allows
/// reading one file (returned) under `evidence: { allowed: each }`.
fn busy_env(name: &str, policy: &str) -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new(name);
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let file = env.dir.path().join("flooded.txt");
    std::fs::write(&file, "flood\n").unwrap();
    env.write_policy(
        policy,
        "version: 1\ndescription: bench\nrules:\n  - id: local\n    connect: { to: 127.0.0.1, ports: [9], protocol: tcp }\n    decision: allow\n",
    );
    env.write_policy(
        "flood.yaml",
        &format!(
            "version: 1\nevidence: {{ allowed: each }}\nrules:\n{}\n  - id: the-file\n    file: {{ path: {}, access: [read] }}\n    decision: allow\n",
            warden_tests::RUNTIME_FILES.trim_end(),
            file.display()
        ),
    );
    (env, file)
}

/// Starts agent `bench-flood` reading `file` in a loop, and returns once
/// its entries are arriving in the log (or after 30 s).
fn start_flood(env: &TestEnv, file: &std::path::Path) -> std::process::Child {
    let count = || env.ok(&["log", "--count"]).trim().to_string();
    let flood = env
        .warden()
        .args(["run", "--agent", "bench-flood", "--"])
        .arg(warden_tests::probe_bin())
        .args(["read-n", file.to_str().unwrap(), "1000000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let before = count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    flood
}

/// `WARDEN_BENCH_SCALE_ONLY=run`: `warden run --agent A -- /usr/bin/true`
/// (start to exit) with the daemon idle and with the daemon busy, in
/// alternating rounds (`WARDEN_BENCH_RUN_ROUNDS`, default 4, of `RUNS`
/// runs each): busy is a second agent reading one file in a loop under
/// `evidence: { allowed: each }`, so the daemon's writer appends an entry
/// per open the whole time. Prints each round's median, the median of all
/// runs of each side and the log's size at the end.
fn run_only() {
    let rounds = run_rounds(4);
    let (mut env, file) = busy_env("bench-scale-run", "run.yaml");
    env.start_daemon_quiet();
    env.add_agent("bench-run", "run.yaml");
    env.add_agent("bench-flood", "flood.yaml");
    let s = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let run = s(&["run", "--agent", "bench-run", "--", "/usr/bin/true"]);
    let count = |env: &TestEnv| env.ok(&["log", "--count"]).trim().to_string();
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let times = |into: &mut Vec<Duration>| {
            let mut mine = Vec::new();
            for _ in 0..RUNS {
                let (t, _, ok) = run_once(&env, &run);
                assert!(ok, "run");
                mine.push(t);
            }
            into.extend(&mine);
            median(mine)
        };
        let quiet = times(&mut idle);
        let mut flood = start_flood(&env, &file);
        let loaded = times(&mut busy);
        // Until the end of stdout and stderr while the daemon is busy: the
        // explainer's barrier waits for the writer's queue.
        if let Some((bin, _)) = base(&env) {
            let eof = |make: &dyn Fn() -> std::process::Command| {
                median(
                    (0..RUNS)
                        .map(|_| {
                            let mut cmd = make();
                            cmd.args(&run).stdout(Stdio::piped());
                            let t = Instant::now();
                            let out = cmd.output().unwrap();
                            assert!(out.status.success(), "run");
                            t.elapsed()
                        })
                        .collect(),
                )
            };
            let mine_eof = eof(&|| env.warden());
            let base_eof = eof(&|| base(&env).unwrap().1);
            println!(
                "  round {round}: busy daemon, run -- true until the end of stdout and stderr: this binary {} ms, {bin} {} ms",
                ms(mine_eof),
                ms(base_eof)
            );
        }
        if round + 1 == rounds {
            strace(&env, &run, "busy");
        }
        flood.kill().unwrap();
        flood.wait().unwrap();
        println!(
            "  round {round}: run -- true idle {:>9} ms, while another agent floods opens {:>9} ms; load average {}",
            ms(quiet),
            ms(loaded),
            load()
        );
    }
    strace(&env, &run, "idle");
    // Until the output's end, as `$(warden run ...)` and `Command::output`
    // see it: the denial explainer outlives the command by its grace.
    let until_eof_with = |stderr_too: bool, make: &dyn Fn() -> std::process::Command| {
        median(
            (0..RUNS)
                .map(|_| {
                    let mut cmd = make();
                    cmd.args(&run).stdout(Stdio::piped());
                    if !stderr_too {
                        cmd.stderr(Stdio::null());
                    }
                    let t = Instant::now();
                    let out = cmd.output().unwrap();
                    assert!(out.status.success(), "run");
                    t.elapsed()
                })
                .collect(),
        )
    };
    let until_eof = |stderr_too: bool| until_eof_with(stderr_too, &|| env.warden());
    println!(
        "  run -- true (idle) until the end of its stdout {} ms, of stdout and stderr {} ms",
        ms(until_eof(false)),
        ms(until_eof(true))
    );
    // With `WARDEN_BENCH_BASE_BIN`: that binary's CLI and this one's,
    // alternating, on this daemon (its explainer's end is the CLI's).
    if let Some((bin, _)) = base(&env) {
        for round in 0..3 {
            let base_eof = until_eof_with(true, &|| base(&env).unwrap().1);
            let mine_eof = until_eof(true);
            println!(
                "  round {round}: run -- true until the end of stdout and stderr: this binary {} ms, {bin} {} ms",
                ms(mine_eof),
                ms(base_eof)
            );
        }
    }
    if std::env::var_os("WARDEN_BENCH_RUN_STRACE").is_some() {
        // The daemon's side of each start (its log at `info`).
        for l in env.daemon_log().lines().filter(|l| l.contains("run start")) {
            println!("    daemon: {l}");
        }
    }
    println!(
        "  run --agent A -- /usr/bin/true, median of {} runs: idle {} ms, busy daemon {} ms; log --count: {}",
        idle.len(),
        ms(median(idle)),
        ms(median(busy)),
        count(&env)
    );
}

/// With `WARDEN_BENCH_RUN_STRACE=PREFIX`: one more `warden ARGS` under
/// `strace -f -tt -T`, written to `PREFIX.WHAT` (where the start goes).
fn strace(env: &TestEnv, args: &[String], what: &str) {
    let Ok(prefix) = std::env::var("WARDEN_BENCH_RUN_STRACE") else {
        return;
    };
    let warden = env.warden();
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-tt", "-T", "-o", &format!("{prefix}.{what}")])
        .arg(warden.get_program())
        .args(args)
        .stdout(Stdio::null());
    for (k, v) in warden.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "strace {what}: {out:?}");
}

/// The median of `RUNS` runs of `warden ARGS`, each followed by `after`.
fn timed(env: &TestEnv, args: &[String], what: &str, after: &dyn Fn()) -> Duration {
    median(
        (0..RUNS)
            .map(|_| {
                let (t, _, ok) = run_once(env, args);
                assert!(ok, "{what}");
                after();
                t
            })
            .collect(),
    )
}

/// `WARDEN_BENCH_BASE_BIN`: another `warden` binary (say, main's) whose
/// CLI is timed against this one's, alternating, on the same daemon (this
/// one's). `env.warden()`'s environment with that program.
fn base(env: &TestEnv) -> Option<(String, std::process::Command)> {
    let bin = std::env::var("WARDEN_BENCH_BASE_BIN").ok()?;
    let mine = env.warden();
    let mut cmd = std::process::Command::new(&bin);
    for (k, v) in mine.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null());
    Some((bin, cmd))
}

/// `WARDEN_BENCH_SCALE_ONLY=kill`: `warden kill` and `revive` of a
/// registered agent (no process in it) at `n` entries (the first argument;
/// default here 1M) with the daemon running and busy: a second agent reads
/// one file in a loop under `evidence: { allowed: each }`, so the writer
/// appends the whole time. `RUNS` kills per round, `WARDEN_BENCH_RUN_ROUNDS`
/// rounds (default 3); with `WARDEN_BENCH_BASE_BIN`, each round also times
/// that binary's kill, alternating. `WARDEN_BENCH_RUN_STRACE=PREFIX`: one
/// more kill of each binary under `strace -f -tt -T`.
fn kill_only(n: u64) {
    let rounds = run_rounds(3);
    let (mut env, file) = busy_env("bench-scale-kill", "kill.yaml");
    let base_ns = warden::clock::now_ns() - n as i64 * SPACING_NS;
    let t = Instant::now();
    let mut store = EvidenceStore::open(&env.database()).unwrap();
    let mut made = 0u64;
    while made < n {
        let upto = (made + 50_000).min(n);
        let batch: Vec<NewEntry> = (made..upto).map(|i| entry(i, base_ns)).collect();
        store.append(&batch, Durability::Batched).unwrap();
        made = upto;
    }
    drop(store);
    println!(
        "  {} entries (grown in {:.1} s); load average {}",
        human(made),
        t.elapsed().as_secs_f64(),
        load()
    );
    env.start_daemon_quiet();
    env.add_agent(KILL_AGENT, "kill.yaml");
    env.add_agent("bench-flood", "flood.yaml");
    let s = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let kill = s(&["kill", KILL_AGENT, "--reason", "bench"]);
    let revive = s(&["revive", KILL_AGENT, "--reason", "bench"]);
    let count = |env: &TestEnv| env.ok(&["log", "--count"]).trim().to_string();
    let mut flood = start_flood(&env, &file);
    let other = base(&env);
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    let times = |cmd: &dyn Fn() -> std::process::Command, into: &mut Vec<Duration>| {
        let mut round = Vec::new();
        for _ in 0..RUNS {
            let (k, _, ok) = run_once_with(cmd(), &kill);
            assert!(ok, "kill");
            round.push(k);
            let (_, _, ok) = run_once_with(cmd(), &revive);
            assert!(ok, "revive");
        }
        into.extend(&round);
        median(round)
    };
    for round in 0..rounds {
        let m = times(&|| env.warden(), &mut mine);
        let b = other
            .as_ref()
            .map(|_| times(&|| base(&env).unwrap().1, &mut theirs));
        println!(
            "  round {round}: kill with a busy daemon: this binary {} ms{}; load average {}",
            ms(m),
            b.map_or(String::new(), |b| format!(", base {} ms", ms(b))),
            load()
        );
    }
    strace(&env, &kill, "kill");
    strace(&env, &revive, "revive");
    if let (Ok(prefix), Some((_, cmd))) = (std::env::var("WARDEN_BENCH_RUN_STRACE"), base(&env)) {
        let out = std::process::Command::new("strace")
            .args(["-f", "-tt", "-T", "-o", &format!("{prefix}.kill-base")])
            .arg(cmd.get_program())
            .args(&kill)
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "strace base kill: {out:?}");
        let _ = run_once_with(base(&env).unwrap().1, &revive);
    }
    flood.kill().unwrap();
    flood.wait().unwrap();
    if std::env::var_os("WARDEN_BENCH_RUN_STRACE").is_some() {
        // The daemon's side of each kill (its log at `info`).
        for l in env
            .daemon_log()
            .lines()
            .filter(|l| l.contains("kill recorded"))
        {
            println!("    daemon: {l}");
        }
    }
    println!(
        "  kill at {} entries with a busy daemon, median of {} runs: this binary {} ms{}; log --count: {}",
        human(made),
        mine.len(),
        ms(median(mine)),
        if theirs.is_empty() {
            String::new()
        } else {
            format!(", base {} ms", ms(median(theirs)))
        },
        count(&env)
    );
}

/// The first three fields of /proc/loadavg (1, 5 and 15 minutes).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("WARDEN_BENCH_SCALE_ENTRIES").ok())
        .map_or(10_000_000, |s| s.parse().expect("entries: a number"));
    if std::env::var("WARDEN_BENCH_SCALE_ONLY").as_deref() == Ok("archive") {
        archive_only(n);
        return;
    }
    if std::env::var("WARDEN_BENCH_SCALE_ONLY").as_deref() == Ok("export") {
        export_only(n);
        return;
    }
    if std::env::var("WARDEN_BENCH_SCALE_ONLY").as_deref() == Ok("cli") {
        cli_only(n);
        return;
    }
    if std::env::var("WARDEN_BENCH_SCALE_ONLY").as_deref() == Ok("run") {
        run_only();
        return;
    }
    if std::env::var("WARDEN_BENCH_SCALE_ONLY").as_deref() == Ok("kill") {
        kill_only(
            std::env::args()
                .nth(1)
                .or_else(|| std::env::var("WARDEN_BENCH_SCALE_ENTRIES").ok())
                .map_or(1_000_000, |s| s.parse().expect("entries: a number")),
        );
        return;
    }
    let mut sizes = vec![10_000u64, 1_000_000, n];
    sizes.retain(|s| *s <= n);
    sizes.dedup();

    let env = TestEnv::new("bench-scale");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    env.write_policy(
        "kill.yaml",
        "version: 1\ndescription: bench\nrules:\n  - id: local\n    connect: { to: 127.0.0.1, ports: [9], protocol: tcp }\n    decision: allow\n",
    );
    env.add_agent(KILL_AGENT, "kill.yaml");

    let mut store = EvidenceStore::open(&env.database()).unwrap();
    let base_ns = warden::clock::now_ns() - n as i64 * SPACING_NS;
    println!(
        "CLI cost against the size of the log (median of {RUNS} runs each; database in {})",
        env.state_dir().display()
    );
    let mut columns = Vec::new();
    let mut made = 0u64;
    for &size in &sizes {
        const BATCH: u64 = 50_000;
        let t = Instant::now();
        let from = made;
        while made < size {
            let upto = (made + BATCH).min(size);
            let batch: Vec<NewEntry> = (made..upto).map(|i| entry(i, base_ns)).collect();
            store.append(&batch, Durability::Batched).unwrap();
            made = upto;
        }
        let secs = t.elapsed().as_secs_f64();
        let db = std::fs::metadata(env.database()).map_or(0, |m| m.len());
        println!(
            "  generated {} entries in {secs:.1} s ({:.0}/s with the store's append); warden.db {} MiB",
            made - from,
            (made - from) as f64 / secs.max(1e-9),
            db >> 20
        );
        let head_ts = base_ns + (made as i64 - 1) * SPACING_NS;
        // + the register entry and every kill/revive so far: verbs see them too.
        columns.push(measure(&env, made, head_ts));
    }
    drop(store);

    let (first, last) = (&columns[0], &columns[columns.len() - 1]);
    let header: Vec<String> = columns.iter().map(|c| human(c.entries)).collect();
    println!(
        "\n  {:<42} {:>10} {:>10} {:>10}   ratio {} / {}",
        "verb (ms)",
        header.first().cloned().unwrap_or_default(),
        header.get(1).cloned().unwrap_or_default(),
        header.get(2).cloned().unwrap_or_default(),
        human(last.entries),
        human(first.entries)
    );
    let row = |name: &str, pick: &dyn Fn(&Column) -> Duration| {
        let cells: Vec<String> = columns.iter().map(|c| ms(pick(c))).collect();
        let ratio = pick(last).as_secs_f64() / pick(first).as_secs_f64().max(1e-9);
        println!(
            "  {name:<42} {:>10} {:>10} {:>10}   {ratio:.2}",
            cells.first().cloned().unwrap_or_default(),
            cells.get(1).cloned().unwrap_or_default(),
            cells.get(2).cloned().unwrap_or_default(),
        );
    };
    for (i, verb) in verbs(0).iter().enumerate() {
        row(verb.name, &|c| c.times[i]);
    }
    row("kill (registered agent, cgroup exists)", &|c| c.kill);
    row("revive", &|c| c.revive);
    let kill_ms = last.kill.as_secs_f64() * 1e3;
    println!(
        "  kill at {} entries: {kill_ms:.1} ms (target < 50 ms: {})",
        human(last.entries),
        if kill_ms < 50.0 { "met" } else { "MISSED" }
    );
    println!("\n  grows with the log by design (reads every entry):");
    row("log verify (quick_check + chain)", &|c| c.verify);
    row("evidence export (whole chain)", &|c| c.export);
    row("evidence verify (the bundle)", &|c| c.bundle_verify);
    row("policy shadow (one agent, streams the log)", &|c| c.shadow);
    for c in &columns {
        println!(
            "  policy shadow at {:>4}: peak RSS {:>6} MiB",
            human(c.entries),
            c.shadow_rss_kib / 1024
        );
    }
    row("evidence export --to (first 10k entries)", &|c| {
        c.export_window
    });
    for c in &columns {
        println!(
            "  export at {:>4}: whole chain {:>8} ms, peak RSS {:>6} MiB; first 10k entries {:>8} ms, peak RSS {:>6} MiB",
            human(c.entries),
            ms(c.export),
            c.export_rss_kib / 1024,
            ms(c.export_window),
            c.export_window_rss_kib / 1024
        );
    }
    println!(
        "  (`approvals` and `status` are answered by the daemon over its socket, not from the log; not timed here)"
    );
    // The cgroup and the temporary directory (and the database) go with `env`.
}
