//! `cargo xtask demo`: the main job, scripted. Starts the daemon on the
//! example policies (state under target/demo, so nothing system-wide is
//! touched), registers an agent, shows an allowed and a refused connect from
//! inside the agent, prints the evidence and verifies its hash chain.

use std::{
    net::TcpListener,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{setup, workspace};

const AGENT: &str = "demo-agent";
const ALLOWED_PORT: u16 = 18080;
const DENIED_PORT: u16 = 18081;
const HELD_PORT: u16 = 18082;

/// A running daemon, stopped (by its PID) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    bin: PathBuf,
    state: PathBuf,
    socket: PathBuf,
}

impl Env {
    fn warden(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("WARDEN_STATE_DIR", &self.state)
            .env("WARDEN_POLICY_DIR", workspace().join("policies"))
            .env("WARDEN_SOCKET", &self.socket)
            .env("WARDEN_CGROUP_PARENT", "warden-demo")
            .env("WARDEN_PIN_DIR", "/sys/fs/bpf/warden-demo");
        cmd
    }

    /// Runs a warden verb, echoing it like a terminal session would.
    fn show(&self, args: &[&str]) -> Result<bool> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains([' ', '\'', '&', '<', '>']) {
                    format!("'{a}'")
                } else {
                    a.to_string()
                }
            })
            .collect();
        println!("\n$ warden {}", shown.join(" "));
        let status = self.warden().args(args).status().context("run warden")?;
        Ok(status.success())
    }
}

impl Env {
    /// How many signed checkpoints the log has.
    fn checkpoints(&self) -> Result<usize> {
        let out = self
            .warden()
            .args(["log", "checkpoints"])
            .output()
            .context("run warden log checkpoints")?;
        anyhow::ensure!(
            out.status.success(),
            "warden log checkpoints: {}",
            out.status
        );
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).context("parse warden log checkpoints")?;
        Ok(list.len())
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

/// Accepts and closes connections until the process exits.
fn listen(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("listen on 127.0.0.1:{port} (is another demo running?)"))?;
    thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    Ok(())
}

fn wait_for_socket(path: &Path, daemon: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        if let Some(status) = daemon.try_wait()? {
            bail!("the daemon exited during start-up ({status}); see its messages above");
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("the daemon did not open {} within 30 s", path.display())
}

/// The scheduler state of a process ('T' = stopped), for the narration.
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|r| r.trim().chars().next())
        .unwrap_or('?')
}

/// Waits for the daemon to report a pending hold; returns its id.
fn wait_for_hold(env: &Env) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let out = env.warden().args(["approvals", "--json"]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // `"id": N` of the first pending hold, without a JSON dependency.
        if let Some(rest) = text.split("\"id\":").nth(1) {
            let id: String = rest
                .trim()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !id.is_empty() {
                return Ok(id);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("the held connect did not show up in `warden approvals` within 15 s")
}

pub fn run() -> Result<i32> {
    if !setup::is_root() {
        bail!("the demo loads eBPF programs and creates cgroups: run it as root");
    }
    setup::setup()?;
    let bin = setup::build(false)?;
    let dir = setup::target_dir().join("demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        bin,
        state: dir.join("state"),
        socket: dir.join("warden.sock"),
    };

    step("Start the daemon on the example policies (policies/)");
    let mut child = env
        .warden()
        .arg("daemon")
        .stdin(Stdio::null())
        .spawn()
        .context("start warden daemon")?;
    wait_for_socket(&env.socket, &mut child)?;
    let daemon = Daemon(child);

    step("Register an agent: a cgroup, an accountable owner, a policy");
    if !env.show(&[
        "agent",
        "add",
        AGENT,
        "--owner",
        "alice@example.com",
        "--policy",
        "demo-agent.yaml",
    ])? {
        bail!("agent registration failed");
    }
    env.show(&["status"])?;

    listen(ALLOWED_PORT)?;
    listen(DENIED_PORT)?;
    listen(HELD_PORT)?;
    let connect = |port: u16| {
        format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo 'connected to 127.0.0.1:{port}'")
    };

    step(&format!(
        "The agent connects to 127.0.0.1:{ALLOWED_PORT}: its policy allows it"
    ));
    let allowed = env.show(&[
        "run",
        "--agent",
        AGENT,
        "--",
        "bash",
        "-c",
        &connect(ALLOWED_PORT),
    ])?;

    step(&format!(
        "The agent connects to 127.0.0.1:{DENIED_PORT}: its policy denies it, in the kernel"
    ));
    let denied = !env.show(&[
        "run",
        "--agent",
        AGENT,
        "--",
        "bash",
        "-c",
        &connect(DENIED_PORT),
    ])?;

    step("The same connect from outside the agent is not affected");
    let outside = Command::new("bash")
        .args(["-c", &connect(DENIED_PORT)])
        .status()?
        .success();
    println!(
        "(a process outside any agent cgroup: {})",
        if outside { "connected" } else { "FAILED" }
    );

    step(&format!(
        "The agent connects to 127.0.0.1:{HELD_PORT}: its policy holds it for a human"
    ));
    println!("\n$ warden run --agent {AGENT} -- bash -c '...connect 127.0.0.1:{HELD_PORT}...' &");
    let mut held = env
        .warden()
        .args([
            "run",
            "--agent",
            AGENT,
            "--",
            "bash",
            "-c",
            &connect(HELD_PORT),
        ])
        .spawn()
        .context("start the held connect")?;
    let id = wait_for_hold(&env)?;
    println!(
        "(the agent's process {} is stopped inside connect(): state {})",
        held.id(),
        process_state(held.id())
    );
    env.show(&["approvals"])?;
    step("A human approves it; the same connect() call returns successfully");
    env.show(&["approve", &id, "--reason", "demo: expected call"])?;
    let held_ok = held.wait()?.success();

    // Give the reader a moment to append the kernel's last decisions.
    thread::sleep(Duration::from_millis(500));
    step("Kill switch: revoke the agent everywhere in one action");
    let mut sleeper = env
        .warden()
        .args(["run", "--agent", AGENT, "--", "sleep", "600"])
        .spawn()
        .context("start a long-running agent command")?;
    thread::sleep(Duration::from_millis(300));
    // Alive until the kill: the kill switch, not a policy denial, ends it.
    let alive = sleeper.try_wait()?.is_none();
    let killed = env.show(&["kill", AGENT, "--reason", "demo: incident drill"])?;
    let sleeper_gone = alive && sleeper.wait()?.signal() == Some(libc::SIGKILL);
    println!("(the agent's running command was ended: {sleeper_gone})");
    let refused = !env.show(&["run", "--agent", AGENT, "--", "true"])?;
    env.show(&["revive", AGENT, "--reason", "demo: drill over"])?;

    step("The evidence: every decision, attributed to the agent, its owner and the human");
    env.show(&["log"])?;

    step("Stop the daemon: it signs a checkpoint over the whole log as it stops");
    drop(daemon);
    step(
        "Verify the hash chain and the signed checkpoints (offline: reads only the database file)",
    );
    let verified = env.show(&["log", "verify"])? && env.checkpoints()? > 0;

    step("Remove the demo agent, unpin everything");
    env.show(&["agent", "remove", AGENT])?;
    env.show(&["uninstall"])?;

    println!();
    let ok =
        allowed && denied && outside && held_ok && killed && sleeper_gone && refused && verified;
    if ok {
        println!("demo: allowed connect succeeded, denied connect was refused with EPERM,");
        println!("      held connect completed after approval, kill switch ended the agent,");
        println!("      evidence chain and checkpoints verified");
        println!("(state kept in {} for inspection)", dir.display());
        Ok(0)
    } else {
        println!(
            "demo: FAILED (allowed={allowed} denied={denied} outside={outside} held={held_ok} killed={killed}/{sleeper_gone}/{refused} verified={verified})"
        );
        Ok(1)
    }
}
