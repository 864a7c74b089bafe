//! `warden`: the command line. Each verb parses its arguments, calls one
//! library function and maps the result to an exit code (0 success, 1
//! failure, 2 usage; `warden run` exits with the command's own status).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use warden::{
    commands::{self, AddAgent},
    config::{self, Paths},
    evidence,
};

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Kernel-enforced policy and evidence for AI agents"
)]
struct Cli {
    #[command(flatten)]
    paths: PathArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct PathArgs {
    /// Database and keys.
    #[arg(long, global = true, env = "WARDEN_STATE_DIR", default_value = config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Policy files agents refer to.
    #[arg(long, global = true, env = "WARDEN_POLICY_DIR", default_value = config::DEFAULT_POLICY_DIR)]
    policy_dir: PathBuf,
    /// The daemon's control socket.
    #[arg(long, global = true, env = "WARDEN_SOCKET", default_value = config::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Parent of created agent cgroups, relative to the cgroup2 mount.
    #[arg(long, global = true, env = "WARDEN_CGROUP_PARENT", default_value = config::DEFAULT_CGROUP_PARENT)]
    cgroup_parent: PathBuf,
    /// Where programs and maps are pinned (on bpffs) so enforcement
    /// outlives the daemon.
    #[arg(long, global = true, env = "WARDEN_PIN_DIR", default_value = config::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (loads the kernel programs, enforces, records).
    Daemon,
    /// Register, list and inspect agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Run a command as an agent (inside its cgroup); exits with its status.
    Run {
        #[arg(long)]
        agent: String,
        /// Run as this user instead of the caller.
        #[arg(long)]
        user: Option<String>,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Check, reload and list policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Show the evidence log, or verify its hash chain.
    Log(LogArgs),
    /// Export a bundle an auditor verifies elsewhere, or verify one.
    #[command(subcommand)]
    Evidence(EvidenceCmd),
    /// Kill switch: revoke an agent everywhere in one action (works with the
    /// daemon stopped). Its processes are killed, or frozen with --freeze.
    Kill {
        name: String,
        #[arg(long)]
        reason: String,
        /// Freeze the processes (cgroup.freeze) for forensics instead.
        #[arg(long)]
        freeze: bool,
    },
    /// Lift the kill switch.
    Revive {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Detach and unpin every program and map Warden attached (daemon stopped).
    Uninstall,
    /// Actions held for approval.
    Approvals {
        /// Every hold, decided or not.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve a held action (you are identified by your credentials).
    Approve {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a held action: it fails with EPERM.
    Reject {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// What the daemon enforces, with which mechanisms, and its counters.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Register an agent: creates its cgroup (or adopts one with --cgroup).
    Add {
        name: String,
        /// The accountable human (e.g. an email address).
        #[arg(long)]
        owner: String,
        /// Policy file in the policy directory.
        #[arg(long)]
        policy: PathBuf,
        /// Adopt this existing cgroup (e.g. a systemd service's) instead.
        #[arg(long)]
        cgroup: Option<PathBuf>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Unregister an agent whose processes have ended.
    Remove { name: String },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Parse and compile policy files; report errors with file, line and rule.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Ask the daemon to reload every agent's policy (same as SIGHUP).
    Reload,
    /// Every policy version loaded, with its hash, author and time.
    History {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct LogArgs {
    #[command(subcommand)]
    cmd: Option<LogCmd>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    decision: Option<String>,
    /// Show at most this many (the newest).
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EvidenceCmd {
    /// Write the bundle: entries (JSON Lines, CSV), checkpoints, public key,
    /// inventory, capability matrix, policy history, approvals, control map,
    /// verification report and report.html.
    Export {
        #[arg(long)]
        out: PathBuf,
        /// Report from this time (RFC 3339 UTC, e.g. 2026-11-01T00:00:00Z, or unix seconds).
        #[arg(long)]
        from: Option<String>,
        /// Report until this time (exclusive); the bundle ends there.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        agent: Option<String>,
    },
    /// Verify a bundle with nothing but its files; exit 0 only if it holds.
    Verify {
        dir: PathBuf,
        /// The host's public key (hex, from `warden status`) the bundle must be signed with.
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
enum LogCmd {
    /// Recompute the hash chain and check every signed checkpoint; exit 0
    /// only if all hold.
    Verify {
        /// A checkpoint (or a list, e.g. an export's checkpoints.json) kept
        /// elsewhere, that this log must still contain.
        #[arg(long)]
        anchor: Vec<PathBuf>,
        /// Also list approval-gated entries (holds, approvals, their
        /// outcomes) missing a required field.
        #[arg(long)]
        completeness: bool,
    },
    /// The signed checkpoints, as JSON (keep a copy elsewhere: it is what
    /// `verify --anchor` checks this log against later).
    Checkpoints,
    /// Print entries as they are appended, checkpoints included (for a
    /// SIEM): one JSON object per line, Warden's own or OCSF 1.1.
    Tail {
        #[arg(long, value_enum, default_value = "json")]
        format: TailFormat,
        /// Start after this sequence number (default: the current head).
        #[arg(long)]
        after: Option<u64>,
        /// Print what is there and exit instead of following.
        #[arg(long)]
        no_follow: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TailFormat {
    Json,
    Ocsf,
}

fn paths(p: &PathArgs) -> Paths {
    Paths {
        state_dir: p.state_dir.clone(),
        policy_dir: p.policy_dir.clone(),
        socket: p.socket.clone(),
        cgroup_parent: p.cgroup_parent.clone(),
        pin_dir: p.pin_dir.clone(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.cmd, Cmd::Daemon);
    let default_level = if daemon { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = paths(&cli.paths);
    match cli.cmd {
        Cmd::Daemon => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("start the async runtime")?;
            runtime.block_on(async {
                let shutdown = async {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .expect("install SIGTERM handler");
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                };
                warden::daemon::run(paths, shutdown).await
            })?;
        }
        Cmd::Agent(AgentCmd::Add {
            name,
            owner,
            policy,
            cgroup,
        }) => {
            let (agent, note) = commands::agent_add(
                &paths,
                &AddAgent {
                    name: &name,
                    owner: &owner,
                    policy: &policy,
                    adopt: cgroup.as_deref(),
                },
            )?;
            println!(
                "registered agent '{}' (owner {}, cgroup {}): {note}",
                agent.name,
                agent.owner,
                agent.cgroup.display()
            );
        }
        Cmd::Agent(AgentCmd::List { json }) => {
            let agents = commands::agent_list(&paths)?;
            if json {
                print_json(&agents)?;
            } else {
                println!(
                    "{:<20} {:<28} {:<22} {:<8} cgroup",
                    "agent", "owner", "policy", "status"
                );
                for a in agents {
                    println!(
                        "{:<20} {:<28} {:<22} {:<8} {}",
                        a.name,
                        a.owner,
                        a.policy,
                        format!("{:?}", a.status).to_lowercase(),
                        a.cgroup.display()
                    );
                }
            }
        }
        Cmd::Agent(AgentCmd::Show { name, json }) => {
            let a = commands::agent_show(&paths, &name)?;
            if json {
                print_json(&a)?;
            } else {
                println!("agent:      {}\nowner:      {}\npolicy:     {}\ncgroup:     {}{}\nstatus:     {:?}\nregistered: {} by {}",
                    a.name, a.owner, a.policy, a.cgroup.display(), if a.adopted { " (adopted)" } else { "" },
                    a.status, warden::clock::format_ns(a.created_at_ns), a.created_by);
            }
        }
        Cmd::Agent(AgentCmd::Remove { name }) => {
            let a = commands::agent_remove(&paths, &name)?;
            println!("removed agent '{}'", a.name);
        }
        Cmd::Run { agent, user, cmd } => {
            commands::run(&paths, &agent, user.as_deref(), &cmd)?;
        }
        Cmd::Policy(PolicyCmd::Check { files }) => {
            let mut failed = false;
            for file in files {
                match commands::policy_check(&file) {
                    Ok(p) => println!(
                        "{}: ok ({} rules, snapshot {})",
                        file.display(),
                        p.rules.len(),
                        p.snapshot()
                    ),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Policy(PolicyCmd::Reload) => {
            commands::policy_reload(&paths)?;
            println!("policies reloaded");
        }
        Cmd::Policy(PolicyCmd::History { agent, json }) => {
            let versions = commands::policy_history(&paths, agent.as_deref())?;
            if json {
                print_json(&versions)?;
            } else {
                for v in versions {
                    println!(
                        "{:>4}  {}  {:<18} {:<22} {}  by {}",
                        v.id,
                        warden::clock::format_ns(v.loaded_at_ns),
                        v.agent,
                        v.file,
                        v.sha256,
                        v.loaded_by
                    );
                }
            }
        }
        Cmd::Log(args) => match args.cmd {
            Some(LogCmd::Tail {
                format,
                after,
                no_follow,
            }) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                commands::tail(&paths, after, !no_follow, &mut |e| {
                    let line = match format {
                        TailFormat::Json => serde_json::to_string(e),
                        TailFormat::Ocsf => {
                            serde_json::to_string(&warden::export::ocsf::to_ocsf(e))
                        }
                    }
                    .unwrap_or_default();
                    // A closed pipe (the SIEM shipper went away) ends the tail.
                    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
                })?;
            }
            Some(LogCmd::Checkpoints) => {
                print_json(&commands::checkpoints(&paths)?)?;
            }
            Some(LogCmd::Verify {
                anchor,
                completeness,
            }) => {
                let v = commands::log_verify(&paths, &anchor)?;
                println!(
                    "evidence chain intact: {} entries, head seq {} hash {}",
                    v.chain.entries, v.chain.head_seq, v.chain.head_hash
                );
                match v.checkpoints {
                    Some(c) => println!(
                        "checkpoints valid: {} signed by key {}, newest covers {} of {} entries",
                        c.checkpoints, c.key_id, c.signed_size, v.chain.entries
                    ),
                    None => println!(
                        "no checkpoints: this host has no signing key yet (no daemon has run)"
                    ),
                }
                if v.anchors > 0 {
                    println!(
                        "anchors valid: {} checkpoint(s) kept elsewhere match this log",
                        v.anchors
                    );
                }
                if completeness {
                    let c = commands::completeness(&paths)?;
                    for (seq, missing) in &c.incomplete {
                        eprintln!("warden: incomplete: seq {seq} lacks {}", missing.join(", "));
                    }
                    if !c.incomplete.is_empty() {
                        eprintln!(
                            "warden: error: {} of {} approval-gated entries are incomplete",
                            c.incomplete.len(),
                            c.gated
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    println!(
                        "completeness: {} approval-gated entries, every required field present",
                        c.gated
                    );
                }
            }
            None => {
                let filter = evidence::Filter {
                    agent: args.agent,
                    kind: args.kind,
                    decision: args.decision,
                    limit: args.limit,
                    ..Default::default()
                };
                let entries = commands::log(&paths, &filter)?;
                if args.json {
                    for e in entries {
                        println!("{}", serde_json::to_string(&e)?);
                    }
                } else {
                    println!("{}", commands::LOG_HEADER);
                    for e in &entries {
                        println!("{}", commands::format_entry(e));
                    }
                }
            }
        },
        Cmd::Evidence(EvidenceCmd::Export {
            out,
            from,
            to,
            agent,
        }) => {
            let window = warden::export::Window {
                from_ns: from.as_deref().map(warden::clock::parse_time).transpose()?,
                to_ns: to.as_deref().map(warden::clock::parse_time).transpose()?,
                agent,
            };
            let m = warden::export::export(&paths, &out, &window)?;
            println!(
                "exported {} entries (head {}) signed by key {} to {}",
                m.entries,
                m.head_hash,
                m.key_id,
                out.display()
            );
        }
        Cmd::Evidence(EvidenceCmd::Verify { dir, key }) => {
            let r = warden::export::verify(&dir, key.as_deref())?;
            if r.is_valid() {
                println!(
                    "bundle valid: {} entries, head {}, {} checkpoints (newest covers {}), key {}",
                    r.entries, r.head_hash, r.checkpoints, r.signed_size, r.key_id
                );
            } else {
                for p in &r.problems {
                    eprintln!("warden: bundle: {p}");
                }
                eprintln!(
                    "warden: error: bundle {} is NOT valid ({} problems)",
                    dir.display(),
                    r.problems.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Kill {
            name,
            reason,
            freeze,
        } => {
            let r = commands::kill(&paths, &name, &reason, freeze)?;
            let kernel = match r.kernel {
                warden::kernel::Revocation::Applied => "every hook now refuses it",
                warden::kernel::Revocation::NoPins => "no Warden programs are loaded",
            };
            println!(
                "agent '{}' revoked in {:.1} ms ({kernel}); {} process(es) {}{}",
                r.agent.name,
                r.to_kernel.as_secs_f64() * 1000.0,
                r.processes.len(),
                if r.frozen { "frozen" } else { "killed" },
                if r.daemon_notified {
                    ""
                } else {
                    "; the daemon is not running and picks this up when it starts"
                }
            );
        }
        Cmd::Revive { name, reason } => {
            let a = commands::revive(&paths, &name, &reason)?;
            println!("agent '{}' active again", a.name);
        }
        Cmd::Uninstall => {
            let n = commands::uninstall(&paths)?;
            println!(
                "removed {n} pinned programs and maps under {}",
                paths.pin_dir.display()
            );
        }
        Cmd::Approvals { all, json } => {
            let list = commands::approvals(&paths, all)?;
            if json {
                print_json(&list)?;
            } else {
                println!(
                    "{:>4}  {:<9} {:<16} {:<24} {:<22} {:<12} job_hash",
                    "id", "status", "agent", "target", "held at", "by"
                );
                for a in list {
                    println!(
                        "{:>4}  {:<9} {:<16} {:<24} {:<22} {:<12} {}",
                        a.id,
                        a.status.as_str(),
                        a.job.agent,
                        a.job.target,
                        warden::clock::format_ns(a.created_at_ns),
                        a.decided_by.as_deref().unwrap_or("-"),
                        &a.job_hash[..16]
                    );
                }
            }
        }
        Cmd::Approve { id, reason } => {
            println!("{}", commands::decide(&paths, id, true, reason.as_deref())?);
        }
        Cmd::Reject { id, reason } => {
            println!(
                "{}",
                commands::decide(&paths, id, false, reason.as_deref())?
            );
        }
        Cmd::Status { json } => {
            let s = commands::status(&paths)?;
            if json {
                print_json(&s)?;
            } else {
                println!(
                    "daemon:   running (pid {}, since {})",
                    s.pid,
                    warden::clock::format_ns(s.started_at_ns)
                );
                println!("cgroup2:  {}", s.cgroup2);
                println!(
                    "evidence: checkpoints signed by Ed25519 key {} ({})",
                    s.key_id, s.public_key
                );
                println!("enforcement:");
                for m in &s.mechanisms {
                    println!("  {:<44} {}", m.action, m.mechanism);
                }
                println!("machine-wide hooks (every process pays their dispatch while attached):");
                for h in &s.global_hooks {
                    let state = if h.attached { "attached" } else { "detached" };
                    println!("  {:<24} {:<9} {}", h.hook, state, h.why);
                }
                println!("agents:");
                for a in &s.agents {
                    let state = if a.revoked {
                        "REVOKED"
                    } else if a.enforced {
                        "enforced"
                    } else {
                        "NOT ENFORCED"
                    };
                    println!(
                        "  {:<20} {:<12} policy {}  {}",
                        a.agent, state, a.policy_snapshot, a.cgroup
                    );
                }
                println!(
                    "kernel:   {} events, {} allowed, {} denied, {} dropped (ring buffer full)",
                    s.kernel.events, s.kernel.allowed, s.kernel.denied, s.kernel.dropped
                );
                println!(
                    "daemon:   {} decisions recorded, {} undecodable",
                    s.recorded, s.decode_errors
                );
                for e in &s.policy_errors {
                    println!("policy error: {e}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
