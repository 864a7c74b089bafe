//! `warden-bench-evidence` (no root needed): the evidence writer's cost per
//! entry, without the kernel: appends `--entries N` realistic allowed-open
//! decision entries (the fields and `details` the event reader builds, one
//! `summary` entry in every `--summary-every` entries) through
//! `EvidenceStore::append_batch` in batches of `--batch B` (the reader's
//! `MAX_BATCH`), into a fresh database in a temporary directory, and prints
//! the CPU time (user+system of this process) and wall time per entry of
//! the appends alone, `--rounds` times (the median last).
//!
//!   warden-bench-evidence [--entries N] [--batch B] [--summary-every K] [--rounds R]
//!                         [--sql STMTS] [--pre-sql STMTS]
//!
//! `--sql` runs statements on the fresh database before the appends (to
//! measure a schema variant, e.g. `"DROP INDEX evidence_ts"`);
//! `--pre-sql` runs statements on the empty file before Warden opens it
//! (e.g. an `evidence` table with other constraints).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Map};
use warden::evidence::{Durability, EvidenceStore, NewEntry};

fn flag(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name} needs a number"))?),
        None => Ok(default),
    }
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// An allowed open as `attribution::decision_entry` builds it.
fn open_entry(i: usize, summary_every: usize) -> NewEntry {
    let path = format!("/usr/share/doc/pkg{}/file{}.txt", i % 997, i);
    let mut details = Map::new();
    details.insert("tid".into(), json!(4242));
    details.insert("gid".into(), json!(0));
    details.insert("comm".into(), json!("cat"));
    details.insert("cgroup_id".into(), json!(123_456u64));
    details.insert("policy_version".into(), json!(3));
    details.insert("boot_ns".into(), json!(57_000_000_000u64 + i as u64));
    details.insert("file".into(), json!(format!("259:1/{}", 1_000_000 + i)));
    details.insert("access".into(), json!("read"));
    details.insert("read_rule".into(), json!("read-usr-share"));
    details.insert("syscall".into(), json!(257));
    details.insert("path_flags".into(), json!([]));
    details.insert("binary".into(), json!("259:1/5555"));
    let summary = summary_every > 0 && i % summary_every == summary_every - 1;
    if summary {
        details.insert("count".into(), json!(17));
        details.insert("first_ns".into(), json!(1_700_000_000_000_000_000i64));
        details.insert("last_ns".into(), json!(1_700_000_001_000_000_000i64));
    }
    NewEntry {
        ts_ns: 1_700_000_000_000_000_000 + i as i64,
        kind: if summary { "summary" } else { "decision" }.into(),
        agent: "wl-bench".into(),
        owner: "bench@example.com".into(),
        uid: 0,
        loginuid: u32::MAX,
        user: "root".into(),
        login_user: "unset".into(),
        pid: 4242,
        exe: "/usr/bin/cat".into(),
        action: "file.open".into(),
        target: path,
        decision: "allow".into(),
        rule_id: "read-usr-share".into(),
        policy_snapshot: "3f2a6b1c9d8e7f60112233445566778899aabbccddeeff00112233445566778f".into(),
        method: "allow".into(),
        details,
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let entries = flag(&args, "--entries", 200_000)?;
    let batch = flag(&args, "--batch", 4096)?.max(1);
    let summary_every = flag(&args, "--summary-every", 50)?;
    let rounds = flag(&args, "--rounds", 3)?.max(1);
    let text = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (sql, pre_sql) = (text("--sql"), text("--pre-sql"));
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for round in 0..rounds {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let path = dir.path().join("warden.db");
        if let Some(sql) = &pre_sql {
            rusqlite::Connection::open(&path)?
                .execute_batch(sql)
                .with_context(|| format!("run {sql}"))?;
        }
        let mut store = EvidenceStore::open(&path)?;
        if let Some(sql) = &sql {
            store
                .connection()
                .execute_batch(sql)
                .with_context(|| format!("run {sql}"))?;
        }
        // Built before the clock starts: the reader's work, not the writer's.
        let mut batches: Vec<Vec<NewEntry>> = (0..entries)
            .collect::<Vec<_>>()
            .chunks(batch)
            .map(|c| c.iter().map(|&i| open_entry(i, summary_every)).collect())
            .collect();
        let (c0, w0) = (cpu_time(), Instant::now());
        for b in &mut batches {
            store.append_batch(b, Durability::Batched)?;
        }
        let (c, w) = (cpu_time() - c0, w0.elapsed());
        let per = |d: Duration| d.as_secs_f64() * 1e6 / entries as f64;
        println!(
            "round {}: {entries} entries in batches of {batch}: CPU {:.2} us/entry, wall {:.2} us/entry",
            round + 1,
            per(c),
            per(w)
        );
        cpu.push(per(c));
        wall.push(per(w));
    }
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    println!(
        "median: CPU {:.2} us/entry, wall {:.2} us/entry",
        cpu[cpu.len() / 2],
        wall[wall.len() / 2]
    );
    Ok(())
}
