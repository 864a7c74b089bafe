//! Harness for Warden's root integration tests and benchmarks.
//!
//! Each `TestEnv` has its own state directory, policy directory, control
//! socket and cgroup parent (`warden-test-<pid>-<name>` under the cgroup2
//! mount), so tests never touch a real installation or each other. On drop
//! it stops the daemon it started (by PID), ends the processes left in its
//! own cgroups (`cgroup.kill`: they can only be processes the test started)
//! and removes those cgroups.
//!
//! These tests need root and a kernel that loads the programs. Outside CI a
//! test without root prints why and returns; under `CI=true` it fails.
//!
//! (Over 600 lines: the one test harness every root test and benchmark
//! shares: environments, the daemon, cgroups, probes and waits.)

pub mod dns_resolver;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// True under CI, where nothing may be skipped.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns false (after saying why) when the test cannot run here; panics
/// instead under CI.
pub fn can_run(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!ci(), "{test}: needs root, and CI=true forbids skipping");
    eprintln!("{test}: SKIPPED (needs root)");
    false
}

/// The warden binary: `$WARDEN_BIN` (set by `cargo xtask test`) or the
/// workspace's debug build.
pub fn warden_bin() -> PathBuf {
    std::env::var_os("WARDEN_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/warden"),
        PathBuf::from,
    )
}

/// The probe binary built with these tests.
pub fn probe_bin() -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    // Test binaries live in target/<profile>/deps; bins one level up.
    let profile_dir = me.parent().and_then(|d| {
        if d.ends_with("deps") {
            d.parent()
        } else {
            Some(d)
        }
    });
    profile_dir.expect("target dir").join("warden-probe")
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub cgroup_parent: PathBuf,
    daemon: Option<Child>,
}

impl TestEnv {
    pub fn new(name: &str) -> Self {
        Self::new_in(name, &std::env::temp_dir())
    }

    /// An environment whose directory is created under `parent` (a test
    /// that needs the agent to create files directly in /tmp keeps Warden's
    /// paths out of it).
    /// `WARDEN_TEST_TMPDIR` overrides `parent` (the QEMU guest sets it: its
    /// view of the host's target/ is read-only and cannot hold sockets).
    pub fn new_in(name: &str, parent: &Path) -> Self {
        let parent = std::env::var_os("WARDEN_TEST_TMPDIR")
            .map_or_else(|| parent.to_path_buf(), PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix(&format!("warden-{name}-"))
            .tempdir_in(&parent)
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("policies")).expect("policy dir");
        sweep_stale_test_state();
        let mount = warden::cgroup::cgroup2_mount().expect("cgroup2 mount");
        let parent = format!("{ENV_PREFIX}{}-{name}", std::process::id());
        Self {
            dir,
            name: name.into(),
            cgroup_parent: mount.join(parent),
            daemon: None,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("warden.sock")
    }
    pub fn database(&self) -> PathBuf {
        self.state_dir().join("warden.db")
    }
    /// This environment's bpffs pin directory (unpinned on drop).
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(PIN_BASE).join(self.cgroup_parent.file_name().expect("parent name"))
    }

    pub fn agent_cgroup(&self, agent: &str) -> PathBuf {
        self.cgroup_parent.join(agent)
    }

    pub fn write_policy(&self, file: &str, yaml: &str) {
        std::fs::write(self.policy_dir().join(file), yaml).expect("write policy");
    }

    /// A `warden` command wired to this environment.
    pub fn warden(&self) -> Command {
        let mut cmd = Command::new(warden_bin());
        let parent = self.cgroup_parent.file_name().expect("parent name");
        cmd.env("WARDEN_STATE_DIR", self.state_dir())
            .env("WARDEN_POLICY_DIR", self.policy_dir())
            .env("WARDEN_SOCKET", self.socket())
            .env("WARDEN_CGROUP_PARENT", parent)
            .env("WARDEN_PIN_DIR", self.pin_dir())
            .stdin(Stdio::null());
        cmd
    }

    /// `warden run --agent AGENT -- /bin/sh -c SCRIPT` with stdout and
    /// stderr piped; returns once the script printed its first line (and
    /// that line, trimmed).
    pub fn start_shell(&self, agent: &str, script: &str) -> (Child, String) {
        use std::io::BufRead;
        let mut run = self
            .warden()
            .args(["run", "--agent", agent, "--", "/bin/sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warden run");
        let mut line = String::new();
        std::io::BufReader::new(run.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the script's first line");
        (run, line.trim().to_string())
    }

    /// Runs `warden ARGS` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.warden().args(args).output().expect("run warden")
    }

    /// Runs `warden ARGS`, panicking with its stderr unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "warden {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start_daemon(&mut self) {
        self.start_daemon_with(&[]);
    }

    /// Starts the daemon at the production log level (`info`, no line per
    /// decision), for benchmarks: the tests' `debug` log costs the daemon
    /// CPU that would land on the measured side.
    pub fn start_daemon_quiet(&mut self) {
        self.start_daemon_with(&[("WARDEN_LOG", "info")]);
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_daemon_with(&mut self, vars: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "daemon already started");
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).expect("daemon log");
        let mut child = self
            .warden()
            .arg("daemon")
            .env("WARDEN_LOG", "debug")
            .envs(vars.iter().copied())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start daemon");
        // Generous: a debug daemon verifies ~400k instructions at start,
        // which took over 30 s on the shared 2-core machine under load.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "daemon exited during start-up ({status}):\n{}",
                    self.daemon_log()
                );
            }
            if Instant::now() >= deadline {
                // Do not leave it running: stop the daemon we started.
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not start within 120 s:\n{}", self.daemon_log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.daemon = Some(child);
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// The names of the BPF programs this test's daemon holds loaded: the
    /// `prog_id` of each of its program and link fds (`/proc/PID/fdinfo`),
    /// named by the kernel's own list. Only this daemon's, whatever other
    /// daemons run on the machine.
    pub fn daemon_programs(&self) -> Vec<String> {
        let pid = self.daemon_pid().expect("daemon running");
        let mut ids = std::collections::HashSet::new();
        let dir = format!("/proc/{pid}/fdinfo");
        for entry in std::fs::read_dir(&dir).expect("daemon fdinfo").flatten() {
            let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in info.lines() {
                if let Some(id) = line.strip_prefix("prog_id:") {
                    ids.insert(id.trim().parse::<u32>().expect("prog_id"));
                }
            }
        }
        let mut names: Vec<String> = aya::programs::loaded_programs()
            .flatten()
            .filter(|p| ids.contains(&p.id()))
            .map(|p| p.name_as_str().unwrap_or("").to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Stops the daemon with `signal` (by the PID this test started) and
    /// waits for it to exit.
    pub fn stop_daemon_with(&mut self, signal: i32) {
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "daemon ignored signal {signal} for 15 s:\n{}",
                self.daemon_log()
            );
        }
    }

    pub fn stop_daemon(&mut self) {
        self.stop_daemon_with(libc::SIGTERM);
    }

    /// Ids of the programs behind the links this environment has pinned
    /// (read through the pins: the daemon closes a link's fd once pinned).
    pub fn pinned_program_ids(&self) -> Vec<u32> {
        use aya::programs::links::{FdLink, PinnedLink};
        std::fs::read_dir(self.pin_dir().join("links"))
            .map(|d| {
                d.flatten()
                    .filter_map(|f| PinnedLink::from_pin(f.path()).ok())
                    .filter_map(|link| FdLink::from(link).info().ok())
                    .map(|info| info.program_id())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the daemon and detaches and unpins everything it attached
    /// (`warden uninstall`): Warden not loaded at all. Stopping alone
    /// leaves the pinned programs enforcing, by design.
    pub fn unload(&mut self) {
        self.stop_daemon();
        self.ok(&["uninstall"]);
    }

    pub fn add_agent(&self, agent: &str, policy: &str) {
        self.ok(&[
            "agent",
            "add",
            agent,
            "--owner",
            &format!("{agent}-owner@example.com"),
            "--policy",
            policy,
        ]);
    }

    /// Runs the probe as `agent` with the given arguments.
    pub fn probe_as(&self, agent: &str, args: &[&str]) -> Output {
        let probe = probe_bin();
        let mut all = vec![
            "run",
            "--agent",
            agent,
            "--",
            probe.to_str().expect("utf-8 path"),
        ];
        all.extend_from_slice(args);
        self.cli(&all)
    }

    /// The evidence log as JSON objects, oldest first.
    pub fn evidence(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["log", "--json"]);
        out.lines()
            .map(|l| serde_json::from_str(l).expect("evidence line is JSON"))
            .collect()
    }

    /// Waits until the evidence log has an entry matching `pred`.
    pub fn wait_for_evidence(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.evidence().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no evidence entry for {what}:\n{:#?}\ndaemon log:\n{}",
                self.evidence(),
                self.daemon_log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every environment's cgroup parent and pin directory is named
/// `warden-test-<pid>-<name>`, under the cgroup2 mount and `PIN_BASE`.
const ENV_PREFIX: &str = "warden-test-";
const PIN_BASE: &str = "/sys/fs/bpf";

/// Removes, once per test process, what test processes that no longer run
/// left behind: their pin directories (unpinned, which detaches their
/// programs) and their cgroup trees (removed if empty; one with processes
/// in it is reported and left). A test binary ended by SIGKILL never runs
/// `Drop`; nothing of a live process is touched.
fn sweep_stale_test_state() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for pins in dead_env_dirs(Path::new(PIN_BASE)) {
            eprintln!(
                "removing pins a finished test process left: {}",
                pins.display()
            );
            if let Err(e) = warden::kernel::uninstall(&pins) {
                panic!("unpin {}: {e}", pins.display());
            }
        }
        let Ok(mount) = warden::cgroup::cgroup2_mount() else {
            return;
        };
        for tree in dead_env_dirs(&mount) {
            eprintln!(
                "removing cgroups a finished test process left: {}",
                tree.display()
            );
            if let Err(e) = remove_empty_tree(&tree) {
                eprintln!("  left in place ({e}): processes still run in it");
            }
        }
    });
}

/// Environment directories under `base` whose test process no longer runs.
fn dead_env_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(ENV_PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|e| e.path())
        .collect()
}

/// rmdir of a cgroup tree, children first; fails on a populated cgroup.
fn remove_empty_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            remove_empty_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Removes a cgroup tree we created, ending its processes first.
fn remove_cgroup_tree(path: &Path) {
    if !path.exists() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(path).is_err() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        // Unpin what this environment's daemons pinned (links first, which
        // detaches the programs), then end what is left in its cgroups.
        let _ = warden::kernel::uninstall(&self.pin_dir());
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// Loopback TCP listeners that accept and drop connections in the
/// background, on ports the kernel picks.
pub struct Listener {
    pub port: u16,
}

impl Listener {
    pub fn tcp4() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = l.local_addr().expect("addr").port();
        thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
        Self { port }
    }

    pub fn tcp6() -> Self {
        let l = std::net::TcpListener::bind("[::1]:0").expect("bind ::1");
        let port = l.local_addr().expect("addr").port();
        thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
        Self { port }
    }
}

/// stdout of an output, trimmed.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// The scheduler state letter of a process ('T' = stopped).
pub fn state_of(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|r| r.trim().chars().next())
        .unwrap_or('?')
}

/// The pid of the command a `warden run` process (`run`, a pid this test
/// started) runs: its child born in the agent's cgroup (the run's denial
/// explainer, its other child, stays in the run's cgroup). Where the kernel
/// cannot clone into a cgroup the run moves itself and execs, so its own
/// pid is the command's. Waits up to 15 s for the command to exist.
pub fn command_of(run: u32) -> u32 {
    let cgroup = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok();
    let ours = cgroup(std::process::id());
    let mut found = None;
    wait_until("warden run's command starts", || {
        if cgroup(run) != ours {
            found = Some(run);
            return true;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{run}/task/{run}/children")).unwrap_or_default();
        found = children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|&p| cgroup(p).is_some_and(|c| Some(&c) != ours.as_ref()));
        found.is_some()
    });
    found.expect("the command's pid")
}

/// Polls `f` until it holds, failing the test after 15 s.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(25));
    }
}

/// `warden approvals --json [--all]`.
pub fn approvals(env: &TestEnv, all: bool) -> Vec<serde_json::Value> {
    let mut args = vec!["approvals", "--json"];
    if all {
        args.push("--all");
    }
    serde_json::from_str(&env.ok(&args)).expect("approvals JSON")
}

/// Waits until exactly one approval is pending and process `pid` is in one
/// of the scheduler `states` ('T' stopped, 't' in a ptrace stop); returns
/// the approval.
pub fn wait_held(env: &TestEnv, pid: u32, states: &[char], what: &str) -> serde_json::Value {
    let mut pending = Vec::new();
    wait_until(what, || {
        pending = approvals(env, false);
        !pending.is_empty() && states.contains(&state_of(pid))
    });
    assert_eq!(pending.len(), 1, "{pending:#?}");
    pending.remove(0)
}

/// The probe binary by canonical path (what exec rules and evidence see).
pub fn probe_path() -> String {
    probe_bin()
        .canonicalize()
        .expect("probe binary")
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// Test binaries and files under the test's directory, by canonical path
/// (exec and file rules match the path the kernel resolves).
pub struct Files {
    root: PathBuf,
}

impl Files {
    pub fn new(env: &TestEnv) -> Self {
        std::fs::create_dir_all(env.dir.path().join("files")).expect("files dir");
        let root = env
            .dir
            .path()
            .join("files")
            .canonicalize()
            .expect("files dir");
        for d in ["bin", "public", "work", "other", "markers"] {
            std::fs::create_dir_all(root.join(d)).expect("files subdir");
        }
        Self { root }
    }

    pub fn path(&self, rel: &str) -> String {
        self.root
            .join(rel)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }

    /// A copy of a system binary under bin/.
    pub fn binary(&self, name: &str, from: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let to = self.root.join("bin").join(name);
        std::fs::copy(from, &to).expect("copy binary");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        to.to_str().expect("utf-8 path").to_string()
    }

    pub fn write(&self, rel: &str, content: &str) -> String {
        std::fs::write(self.root.join(rel), content).expect("write test file");
        self.path(rel)
    }

    /// Where a test binary would leave a marker if it ran.
    pub fn marker(&self, name: &str) -> String {
        self.path(&format!("markers/{name}"))
    }
}

/// The rules every dynamically linked program (the probe, coreutils) needs
/// to start: the loader reads its cache and the libraries, and Rust's
/// runtime reads /proc/self/maps. A policy with file rules governs every
/// open, so tests' file policies start with these.
pub const RUNTIME_FILES: &str = "
  - id: loader-cache
    file: { path: /etc/ld.so.cache, access: [read] }
    decision: allow
  - id: system-libraries
    file: { prefix: /usr/lib/, access: [read] }
    decision: allow
  - id: proc
    file: { prefix: /proc/, access: [read] }
    decision: allow
";

/// The process was ended by SIGKILL (how the fallback refuses).
pub fn killed(out: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(libc::SIGKILL)
}

/// Agents `bench-0`..`bench-7` take turns in [`synthetic_entry`].
pub const SYNTHETIC_AGENTS: u64 = 8;
/// Spacing of the synthetic entries' times: 10M entries span ~28 hours.
pub const SYNTHETIC_SPACING_NS: i64 = 10_000_000;

/// Entry `i` of a synthetic log (benchmarks and scale tests, appended with
/// the store's own `append`, so the chain is valid): mostly allowed opens of many files by
/// several agents, with denials, execs, connects and a few GAP entries, the
/// mix of an agent's working day.
pub fn synthetic_entry(i: u64, base_ns: i64) -> warden::evidence::NewEntry {
    let agent = i % SYNTHETIC_AGENTS;
    let mut details = serde_json::Map::new();
    details.insert("tid".into(), serde_json::json!(1000 + i % 50_000));
    details.insert("comm".into(), serde_json::json!("python3"));
    details.insert("policy_version".into(), serde_json::json!(3));
    let (kind, action, target, decision, rule, method) = if i % 100_000 == 99_999 {
        details.insert("lost".into(), serde_json::json!(1));
        (
            "gap",
            "evidence.lost",
            "ring buffer".to_string(),
            "denied",
            "none",
            "recorded",
        )
    } else if i % 1_000 == 7 {
        (
            "decision",
            "open",
            format!("/etc/secret/{}", i % 37),
            "deny",
            "default",
            "deny",
        )
    } else if i % 50 == 3 {
        (
            "decision",
            "exec",
            format!("/usr/bin/tool{}", i % 20),
            "allow",
            "tools",
            "allow",
        )
    } else if i % 50 == 5 {
        (
            "decision",
            "connect4",
            format!("127.0.0.1:{}/tcp", 8000 + i % 10),
            "allow",
            "local-api",
            "allow",
        )
    } else {
        (
            "decision",
            "open",
            format!("/usr/share/doc/pkg{}/file{}", i % 997, i % 50_021),
            "allow",
            "read-share",
            "allow",
        )
    };
    warden::evidence::NewEntry {
        ts_ns: base_ns + i as i64 * SYNTHETIC_SPACING_NS,
        kind: kind.into(),
        agent: format!("bench-{agent}"),
        owner: format!("owner{agent}@example.com"),
        uid: 1000,
        loginuid: 1000,
        user: "svc".into(),
        login_user: "alice".into(),
        pid: 4000 + (i % 300) as u32,
        exe: "/usr/bin/python3".into(),
        action: action.into(),
        target,
        decision: decision.into(),
        rule_id: rule.into(),
        policy_snapshot: "ab".repeat(32),
        method: method.into(),
        details,
    }
}

/// One agent process (`warden-probe script` under `warden run`) that takes
/// its steps from the test (decision_cache.rs, lsm.rs).
pub struct Scripted {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Scripted {
    pub fn start(env: &TestEnv, agent: &str) -> Self {
        use std::process::Stdio;
        let mut child = env
            .warden()
            .args(["run", "--agent", agent, "--"])
            .arg(probe_bin())
            .arg("script")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warden run ... warden-probe script");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdin: Some(stdin),
            stdout,
        }
    }

    /// Sends one step; its answer, or `None` if the process ended first.
    pub fn step(&mut self, line: &str) -> Option<String> {
        use std::io::{BufRead, Write};
        let stdin = self.stdin.as_mut()?;
        if writeln!(stdin, "{line}").is_err() {
            return None;
        }
        let _ = stdin.flush();
        let mut answer = String::new();
        match self.stdout.read_line(&mut answer) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(answer.trim_end().to_string()),
        }
    }

    /// Waits for the process; true if SIGKILL ended it (how the fallback
    /// refuses an open).
    pub fn killed(mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for the scripted agent");
        status.signal() == Some(libc::SIGKILL)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        // Only our own child, and only if it still runs.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The kernel's count of opens decided from the decision cache
/// (`kernel.cache_hits` in `warden status --json`).
pub fn cache_hits(env: &TestEnv) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "--json"])).expect("status --json");
    status["kernel"]["cache_hits"]
        .as_u64()
        .unwrap_or_else(|| panic!("no kernel.cache_hits in status: {status}"))
}
