//! `warden-bench-workloads` (as root): real workloads run outside any agent
//! and as two agents whose policy governs every file open and exec (file
//! and exec rules allowing everything the workloads touch), interleaved,
//! `--rounds` times each (default 3):
//!
//! - `git`: init, add, commit, log, grep on a generated 300-file repo;
//! - `compileall`: `python3 -m compileall` on a copy of a stdlib directory;
//! - `make`: a C build with make and gcc, 40 generated sources;
//! - `read`: reading up to 60,000 files under /usr/share, one process;
//! - `unittest`: `python3 -m unittest` of a generated module of 300 tests;
//! - `cargo`: `cargo build --offline` of a generated crate with no
//!   dependencies (40 modules), its target directory removed each run.
//!
//! The sides of a workload run in turn, in reverse order every other round
//! (so the host's drift lands on all alike), and each round also times
//! `warden run --agent A -- /usr/bin/true` (what every agent side includes
//! for starting the agent) and prints the load average.
//!
//! One agent's policy says `evidence: { allowed: each }` (one entry per
//! allowed action, as before summaries), one the default
//! `first-then-count` (per process), one `first-then-count, per: agent`. Printed per workload: median wall time of each side,
//! the ratios to outside, and the evidence entries and bytes (sum of the
//! stored columns) each agent run added, summaries included (the daemon
//! sweeps every second here, and the bench waits for the log to settle
//! before it counts; that wait is not timed).
//!
//!   warden-bench-workloads [--rounds R] [--files N] [--only NAME,...]

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use warden_tests::{is_root, TestEnv};

const EACH: &str = "wl-each";
const COUNT: &str = "wl-count";
const PER_AGENT: &str = "wl-agent";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("read-list") => read_list(args.get(1).map(String::as_str).unwrap_or("")),
        Some("in-cgroup") => in_cgroup(&args[1..]),
        _ => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-bench-workloads: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `in-cgroup DIR CMD ARGS...`: runs CMD as a child born in the cgroup DIR
/// (`clone3(CLONE_INTO_CGROUP)`, as `warden run` starts its command), waits
/// for it and ends as it ended. A write to `cgroup.procs` instead would
/// wait for an RCU grace period, a cost that side would not share with
/// `warden run`.
fn in_cgroup(args: &[String]) -> Result<()> {
    use std::ffi::CString;
    ensure!(args.len() >= 2, "in-cgroup DIR CMD [ARGS...]");
    let dir = std::fs::File::open(&args[0]).with_context(|| format!("open {}", args[0]))?;
    let argv: Vec<CString> = args[1..]
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: this process is single-threaded (no thread is started on this
    // path); the child only execs or exits.
    let pid = unsafe { warden::cgroup::clone_into(&dir) }.context("clone3 into the cgroup")?;
    if pid == 0 {
        // SAFETY: a NUL-terminated argv of C strings alive until the exec.
        unsafe {
            libc::execvp(ptrs[0], ptrs.as_ptr());
            libc::_exit(127)
        }
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    ensure!(
        unsafe { libc::waitpid(pid, &mut status, 0) } == pid,
        "waitpid"
    );
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(());
    }
    bail!("{} ended with status {status:#x}", args[1])
}

/// Reads every file named in `list` (one path a line).
fn read_list(list: &str) -> Result<()> {
    let text = std::fs::read_to_string(list).with_context(|| format!("read {list}"))?;
    let mut bytes = 0usize;
    for path in text.lines() {
        if let Ok(b) = std::fs::read(path) {
            bytes += b.len();
        }
    }
    println!("{bytes}");
    Ok(())
}

fn flag(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()?),
        None => Ok(default),
    }
}

struct Workload {
    name: &'static str,
    /// A shell script run with `sh -c` in `dir`.
    script: String,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// Generates the workloads' inputs under `root`.
fn prepare(root: &Path, files: usize) -> Result<Vec<Workload>> {
    // git: a generated tree, copied fresh into a scratch repo each run.
    let src = root.join("git-src");
    std::fs::create_dir_all(&src)?;
    for i in 0..300 {
        let d = src.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&d)?;
        write(
            &d.join(format!("f{i}.txt")),
            &format!("line one of {i}\nneedle {i}\nline three\n").repeat(20),
        )?;
    }
    let git = format!(
        "rm -rf repo && cp -r {src} repo && cd repo && git init -q && git add . && \
         git -c user.name=b -c user.email=b@b commit -qm gen && git log --oneline >/dev/null && \
         git grep -c needle >/dev/null && git status --short >/dev/null",
        src = src.display()
    );
    // compileall: a copy of a stdlib package, caches removed each run.
    let stdlib = [
        "/usr/lib/python3.11/email",
        "/usr/lib/python3/dist-packages",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_dir())
    .context("no stdlib directory to compile")?;
    let py = root.join("py");
    let status = Command::new("cp").args(["-r", stdlib]).arg(&py).status()?;
    ensure!(status.success(), "copy {stdlib}");
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let compileall = format!(
        "find {py} -name __pycache__ -prune -exec rm -rf {{}} + ; {python} -m compileall -q {py} >/dev/null",
        py = py.display()
    );
    // make: 40 sources and a Makefile.
    let c = root.join("c");
    std::fs::create_dir_all(&c)?;
    let mut objs = Vec::new();
    for i in 0..40 {
        write(
            &c.join(format!("u{i}.c")),
            &format!("#include <stdio.h>\n#include <string.h>\nint u{i}(int x) {{ char b[32]; snprintf(b, sizeof b, \"%d\", x); return (int)strlen(b) + {i}; }}\n"),
        )?;
        objs.push(format!("u{i}.o"));
    }
    let calls: String = (0..40).map(|i| format!("s += u{i}(s);")).collect();
    let decls: String = (0..40).map(|i| format!("int u{i}(int);")).collect();
    write(
        &c.join("main.c"),
        &format!("{decls}\nint main(void) {{ int s = 1; {calls} return s == 0; }}\n"),
    )?;
    write(
        &c.join("Makefile"),
        &format!(
            "prog: main.o {objs}\n\tgcc -o $@ $^\n%.o: %.c\n\tgcc -O1 -c $< -o $@\nclean:\n\trm -f *.o prog\n",
            objs = objs.join(" ")
        ),
    )?;
    let make = format!("cd {} && make -s clean && make -s prog", c.display());
    // read: a list of files under /usr/share.
    let out = Command::new("find")
        .args(["/usr/share", "-type", "f", "-size", "-256k"])
        .stderr(Stdio::null())
        .output()?;
    let list: Vec<&str> = std::str::from_utf8(&out.stdout)?
        .lines()
        .take(files)
        .collect();
    let list_file = root.join("files.list");
    write(&list_file, &(list.join("\n") + "\n"))?;
    eprintln!("read: {} files under /usr/share", list.len());
    let me = std::env::current_exe()?;
    let read = format!(
        "{} read-list {} >/dev/null",
        me.display(),
        list_file.display()
    );
    // unittest: a generated module of 300 small tests.
    let ut = root.join("ut");
    std::fs::create_dir_all(&ut)?;
    let tests: String = (0..300)
        .map(|i| {
            format!(
                "    def test_{i}(self):\n        d = {{'k': {i}, 'v': list(range({i} % 50))}}\n        \
                 self.assertEqual(json.loads(json.dumps(d)), d)\n"
            )
        })
        .collect();
    write(
        &ut.join("test_gen.py"),
        &format!("import json\nimport unittest\n\n\nclass Gen(unittest.TestCase):\n{tests}"),
    )?;
    let unittest = format!(
        "cd {} && {python} -m unittest -q test_gen 2>/dev/null",
        ut.display()
    );
    // cargo: a generated crate without dependencies, built offline.
    let krate = root.join("krate");
    std::fs::create_dir_all(krate.join("src"))?;
    write(
        &krate.join("Cargo.toml"),
        "[package]\nname = \"gen\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    )?;
    let mods: String = (0..40).map(|i| format!("mod m{i};\n")).collect();
    let uses: String = (0..40).map(|i| format!("s += m{i}::f(s);")).collect();
    write(
        &krate.join("src/main.rs"),
        &format!("{mods}fn main() {{ let mut s = 1u64; {uses} println!(\"{{s}}\"); }}\n"),
    )?;
    for i in 0..40 {
        write(
            &krate.join(format!("src/m{i}.rs")),
            &format!(
                "pub fn f(x: u64) -> u64 {{ let v: Vec<u64> = (0..x % 64).collect(); \
                 v.iter().sum::<u64>() + {i} }}\n"
            ),
        )?;
    }
    let cargo_bin = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("cargo"))
                .find(|c| c.is_file())
        })
        .context("no cargo on PATH")?;
    // Its own CARGO_HOME: the shared one's package-cache lock and
    // `.global-cache` database are taken by every other cargo on the host
    // (other builds), and a side that waited for them measured the host.
    let cargo_home = root.join("cargo-home");
    std::fs::create_dir_all(&cargo_home)?;
    let cargo = format!(
        "cd {} && rm -rf target && CARGO_HOME={} {} build --offline -q",
        krate.display(),
        cargo_home.display(),
        cargo_bin.display()
    );
    Ok(vec![
        Workload {
            name: "unittest",
            script: unittest,
        },
        Workload {
            name: "cargo",
            script: cargo,
        },
        Workload {
            name: "git",
            script: git,
        },
        Workload {
            name: "compileall",
            script: compileall,
        },
        Workload {
            name: "make",
            script: make,
        },
        Workload {
            name: "read",
            script: read,
        },
    ])
}

/// Entries and stored bytes in the evidence log.
fn log_size(db: &Path) -> Result<(u64, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (n, bytes): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(length(kind)+length(agent)+length(owner)+length(user)+length(login_user)+length(exe)+length(action)+length(target)+length(decision)+length(rule_id)+length(policy_snapshot)+length(method)+length(details)+length(prev_hash)+length(hash)+40), 0) FROM evidence",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((n as u64, bytes as u64))
}

fn head_seq(db: &Path) -> Result<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM evidence", [], |r| {
        r.get(0)
    })?;
    Ok(seq as u64)
}

/// For the `each` agent's run after `after_seq` (every allowed action its
/// own entry): (allowed actions, distinct (process, action, file identity
/// or target, access, rule, policy) keys, the same without the process).
/// The keys are the floor of first-then-count's entries per sweep.
fn distinct_keys(db: &Path, after_seq: u64) -> Result<(u64, u64, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let key = "action || '|' || COALESCE(json_extract(details, '$.file'), target) || '|' || \
               COALESCE(json_extract(details, '$.access'), '') || '|' || rule_id || '|' || policy_snapshot";
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT pid || '|' || {key}), COUNT(DISTINCT {key}) FROM evidence \
         WHERE seq > ?1 AND agent = ?2 AND kind = 'decision' AND decision = 'allow'"
    );
    let (n, p, a): (i64, i64, i64) =
        conn.query_row(&sql, rusqlite::params![after_seq as i64, EACH], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((n as u64, p as u64, a as u64))
}

/// Waits until the log stops growing (the reader drained, the sweep ran).
fn settled(db: &Path) -> Result<(u64, u64)> {
    let mut last = log_size(db)?;
    let mut still = 0;
    while still < 3 {
        std::thread::sleep(Duration::from_millis(700));
        let now = log_size(db)?;
        if now == last {
            still += 1;
        } else {
            still = 0;
            last = now;
        }
    }
    Ok(last)
}

/// A side's run: wall time until the command exited, and until its
/// stdout and stderr ended (which `warden run`'s denial explainer holds
/// open a moment after the command), and the daemon's CPU time (user and
/// system, all threads) while the command ran and until the log settled.
#[derive(Clone, Copy, Default)]
struct Timing {
    exit: Duration,
    eof: Duration,
}

/// The daemon's CPU time so far (utime + stime of /proc/PID/stat).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Runs `cmd` with its output piped and read to the end, timing both.
fn timed_split(mut cmd: Command, what: &str) -> Result<Timing> {
    use std::io::Read;
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let status = child.wait()?;
    let exit = t.elapsed();
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    let eof = t.elapsed();
    if !status.success() {
        bail!("{what}: {status}\n{}", String::from_utf8_lossy(&stderr));
    }
    Ok(Timing { exit, eof })
}

fn timed(mut cmd: Command, what: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd.output()?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!(
            "{what}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// As `timed`, but a failed run (an agent killed because the ring buffer
/// was full: issue #14 section 2) is reported and counted, not fatal.
fn timed_or_killed(cmd: Command, what: &str, kills: &mut u64) -> Result<Timing> {
    let t = Instant::now();
    match timed_split(cmd, what) {
        Ok(d) => Ok(d),
        Err(e) => {
            eprintln!("{e:#}");
            *kills += 1;
            Ok(Timing {
                exit: t.elapsed(),
                eof: t.elapsed(),
            })
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!("needs root (loads eBPF programs, creates cgroups)");
    }
    let rounds = flag(args, "--rounds", 3)?;
    let files = flag(args, "--files", 60_000)?;
    let mut env = TestEnv::new("workloads");
    // Outside the state directory, which agents may not touch.
    let work = tempfile::tempdir()?;
    let root: PathBuf = work.path().canonicalize()?;
    std::fs::create_dir_all(root.join("tmp"))?;
    let mut workloads = prepare(&root, files)?;
    // `--only a,b`: those workloads alone (while looking into one).
    if let Some(i) = args.iter().position(|a| a == "--only") {
        let names: Vec<&str> = args
            .get(i + 1)
            .context("--only needs workload names")?
            .split(',')
            .collect();
        workloads.retain(|w| names.contains(&w.name));
        ensure!(!workloads.is_empty(), "--only: no workload named {names:?}");
    }
    // Everything the workloads read, write and execute is allowed by file
    // and exec rules, so every open and exec is decided and recorded.
    let policy = |evidence: &str| {
        format!(
            "version: 1\n{evidence}rules:\n  - id: all-files\n    file: {{ prefix: /, access: [read, write] }}\n    decision: allow\n  - id: all-programs\n    exec: {{ prefix: / }}\n    decision: allow\n    allow_write_exec: true\n"
        )
    };
    env.write_policy("each.yaml", &policy("evidence: { allowed: each }\n"));
    env.write_policy("count.yaml", &policy(""));
    env.write_policy(
        "agent.yaml",
        &policy("evidence: { allowed: first-then-count, per: agent }\n"),
    );
    env.start_daemon_with(&[("WARDEN_SUMMARY_SECS", "1"), ("WARDEN_LOG", "info")]);
    env.add_agent(EACH, "each.yaml");
    env.add_agent(COUNT, "count.yaml");
    env.add_agent(PER_AGENT, "agent.yaml");
    let db = env.database();

    struct Side {
        /// Until the output's end (what the first table shows).
        wall: Vec<Duration>,
        /// Until the command exited.
        exit: Vec<Duration>,
        /// The daemon's CPU from the start until the log settled.
        cpu: Vec<Duration>,
        entries: Vec<u64>,
        bytes: Vec<u64>,
        failed: u64,
        /// `each` side only: `distinct_keys` per run.
        keys: Vec<(u64, u64, u64)>,
    }
    let new_side = || Side {
        wall: Vec::new(),
        exit: Vec::new(),
        cpu: Vec::new(),
        entries: Vec::new(),
        bytes: Vec::new(),
        failed: 0,
        keys: Vec::new(),
    };
    let mut results: Vec<[Side; 5]> = workloads
        .iter()
        .map(|_| [new_side(), new_side(), new_side(), new_side(), new_side()])
        .collect();
    let daemon = env.daemon_pid().context("daemon pid")?;
    let count_cgroup = env.agent_cgroup(COUNT);
    let mut starts = Vec::new();
    for round in 0..rounds {
        let mut start = env.warden();
        start.args(["run", "--agent", COUNT, "--", "/usr/bin/true"]);
        starts.push(timed(start, "warden run -- true")?);
        eprintln!(
            "round {}/{rounds}: load average {}",
            round + 1,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        for (w, res) in workloads.iter().zip(results.iter_mut()) {
            // Warm the page cache and the workload's own caches alike.
            if round == 0 {
                let mut warm = Command::new("sh");
                warm.args(["-c", &w.script])
                    .current_dir(&root)
                    .env("TMPDIR", root.join("tmp"));
                timed(warm, w.name)?;
            }
            // Side 4: the per-process agent's cgroup entered directly (this
            // binary's `in-cgroup` starts the script's shell born in it, as
            // `warden run` starts its command), without `warden run`: the
            // kernel's and the daemon's part alone, no run start, Landlock,
            // seccomp or denial explainer.
            let mut order = [
                (0usize, None),
                (1, Some(EACH)),
                (2, Some(COUNT)),
                (3, Some(PER_AGENT)),
                (4, None),
            ];
            if round % 2 == 1 {
                order.reverse();
            }
            for (side, agent) in order {
                let before = settled(&db)?;
                let before_seq = head_seq(&db)?;
                let cmd = match agent {
                    None if side == 4 => {
                        let mut c = Command::new(std::env::current_exe()?);
                        c.arg("in-cgroup")
                            .arg(&count_cgroup)
                            .args(["sh", "-c", &w.script]);
                        c
                    }
                    None => {
                        let mut c = Command::new("sh");
                        c.args(["-c", &w.script]);
                        c
                    }
                    Some(a) => {
                        let mut c = env.warden();
                        c.args(["run", "--agent", a, "--", "sh", "-c", &w.script]);
                        c
                    }
                };
                let mut cmd = cmd;
                // The test environment's state directory is under /tmp, and
                // agents may not create files beside it (self-protection).
                cmd.current_dir(&root).env("TMPDIR", root.join("tmp"));
                let s = &mut res[side];
                let cpu_before = cpu_of(daemon);
                let took = timed_or_killed(cmd, &format!("{} ({agent:?})", w.name), &mut s.failed)?;
                let after = settled(&db)?;
                s.cpu.push(cpu_of(daemon).saturating_sub(cpu_before));
                s.wall.push(took.eof);
                s.exit.push(took.exit);
                s.entries.push(after.0 - before.0);
                s.bytes.push(after.1 - before.1);
                if agent == Some(EACH) {
                    s.keys.push(distinct_keys(&db, before_seq)?);
                }
            }
        }
    }
    println!(
        "workloads, {rounds} rounds each, interleaved; medians. Sides: outside any agent, and agents with \
         evidence allowed: each (today's one entry per action), first-then-count per process (new default), per agent"
    );
    println!(
        "{:<11} {:>9} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>7} {:>11} {:>11} {:>11}",
        "workload",
        "outside",
        "each/x",
        "proc/x",
        "agent/x",
        "ent:each",
        "ent:proc",
        "ent:agent",
        "fewer:p",
        "fewer:a",
        "B:each",
        "B:proc",
        "B:agent"
    );
    for (w, res) in workloads.iter().zip(results.iter_mut()) {
        let med = |v: &mut Vec<u64>| {
            v.sort();
            v[v.len() / 2]
        };
        let o = median(&mut res[0].wall);
        let walls: Vec<f64> = res[1..4]
            .iter_mut()
            .map(|s| median(&mut s.wall).as_secs_f64() / o.as_secs_f64())
            .collect();
        let ents: Vec<u64> = res[1..4].iter_mut().map(|s| med(&mut s.entries)).collect();
        let bytes: Vec<u64> = res[1..4].iter_mut().map(|s| med(&mut s.bytes)).collect();
        println!(
            "{:<11} {:>7.0}ms {:>6.2}x {:>6.2}x {:>6.2}x {:>9} {:>9} {:>9} {:>6.1}x {:>6.1}x {:>11} {:>11} {:>11}",
            w.name,
            o.as_secs_f64() * 1e3,
            walls[0],
            walls[1],
            walls[2],
            ents[0],
            ents[1],
            ents[2],
            ents[0] as f64 / ents[1].max(1) as f64,
            ents[0] as f64 / ents[2].max(1) as f64,
            bytes[0],
            bytes[1],
            bytes[2]
        );
        if let Some(&(n, per_process, per_agent)) = res[1].keys.get(res[1].keys.len() / 2) {
            println!(
                "{:<11} allowed actions {n}, distinct keys per process {per_process} ({:.1}x fewer at best), \
                 per agent {per_agent} ({:.1}x)",
                w.name,
                n as f64 / per_process.max(1) as f64,
                n as f64 / per_agent.max(1) as f64
            );
        }
        let failed: Vec<u64> = res.iter().map(|s| s.failed).collect();
        if failed.iter().any(|f| *f > 0) {
            println!(
                "{:<11} failed runs (killed): outside {}, each {}, proc {}, agent {}, cgroup {}",
                w.name, failed[0], failed[1], failed[2], failed[3], failed[4]
            );
        }
    }
    println!(
        "until the command exited (not its output's end), medians; `cgroup`: the per-process \
         agent's cgroup entered without `warden run`; daemon CPU (user+system) per run until the \
         log settled, and per entry of the `each` side"
    );
    println!(
        "{:<11} {:>9} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "workload",
        "outside",
        "each/x",
        "proc/x",
        "agent/x",
        "cgroup/x",
        "cpu:each",
        "cpu:proc",
        "cpu:agent",
        "cpu:cgrp",
        "cpu:out",
        "us/entry"
    );
    for (w, res) in workloads.iter().zip(results.iter_mut()) {
        let o = median(&mut res[0].exit).as_secs_f64();
        let x: Vec<f64> = res[1..]
            .iter_mut()
            .map(|s| median(&mut s.exit).as_secs_f64() / o)
            .collect();
        let cpu: Vec<f64> = res
            .iter_mut()
            .map(|s| median(&mut s.cpu).as_secs_f64() * 1e3)
            .collect();
        let mut each_entries = res[1].entries.clone();
        each_entries.sort();
        let per_entry = cpu[1] * 1e3 / each_entries[each_entries.len() / 2].max(1) as f64;
        println!(
            "{:<11} {:>7.0}ms {:>6.2}x {:>6.2}x {:>6.2}x {:>7.2}x {:>7.0}ms {:>7.0}ms {:>7.0}ms {:>7.0}ms {:>7.0}ms {:>8.1}",
            w.name,
            o * 1e3,
            x[0],
            x[1],
            x[2],
            x[3],
            cpu[1],
            cpu[2],
            cpu[3],
            cpu[4],
            cpu[0],
            per_entry
        );
    }
    println!(
        "`warden run --agent A -- /usr/bin/true` (in every agent side's wall time): median {:.1} ms \
         over {rounds} rounds; load average at the end {}",
        median(&mut starts).as_secs_f64() * 1e3,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let verify = env.cli(&["log", "verify", "--completeness"]);
    println!(
        "log verify --completeness: {}",
        String::from_utf8_lossy(&verify.stdout).trim()
    );
    Ok(())
}
