//! The daemon: keeps the kernel's maps in step with the registry and the
//! policy files, and writes down every decision the kernel reports.
//!
//! Three owners, each on its own thread or task, talking over channels:
//! - the enforcer thread owns the `Kernel` (eBPF handle) and the registry;
//!   it takes `Command`s (reconcile, status, agent state) with replies;
//! - the event reader task drains the ring buffer, decodes and attributes
//!   each decision, and hands batches to the writer;
//! - the evidence writer thread owns the evidence store and appends batches
//!   in one transaction each (group commit), fsyncing when a caller needs
//!   the entry durable before it answers.

mod budgets;
mod control_server;
mod delegation;
mod egress;
mod enforcer;
mod events;
pub mod evidence_cap;
mod governance;
mod kill_record;
mod pending;
mod reconcile;
mod run_start;
mod startup;
mod status;
mod summaries;
mod views;
mod writer;

pub use writer::{EvidenceWriter, WriteError};

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    sync::{mpsc, Arc, Mutex, RwLock},
};

use serde_json::json;
use tokio::sync::oneshot;

use self::{
    control_server::{bind_socket, serve_control},
    enforcer::{Command, Enforcer},
    events::read_events,
    startup::previous_run,
    views::{prefill_views, Stats, Views},
    writer::CheckpointPolicy,
};
use crate::{
    actor::{Actor, Recorded},
    approvals::Approvals,
    cgroup, clock,
    config::Paths,
    evidence::{
        checkpoint::{self, HostKey},
        EvidenceStore,
    },
    gaps::{self, DropWatch},
    holds::Holds,
    kernel::{Kernel, KernelError},
    registry::{Registry, RegistryError},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("warden daemon must run as root (it loads eBPF programs and manages cgroups); running as uid {0}")]
    NotRoot(u32),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::StoreError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another warden daemon is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("a start-up task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Approvals(#[from] crate::approvals::ApprovalError),
    #[error(transparent)]
    HostKey(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    EvidenceCap(#[from] evidence_cap::CapError),
}

/// Sends a command to the enforcer and waits for its reply.
async fn ask<T>(
    tx: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Option<T> {
    let (reply, wait) = oneshot::channel();
    tx.send(make(reply)).ok()?;
    wait.await.ok()
}

/// Runs the daemon until `shutdown` completes.
/// Non-dumpable: `/proc/PID/{environ,maps,mem,fd}` of the daemon become
/// root-owned and need ptrace access, which Landlock and seccomp deny to
/// agents, and no core dump of its memory (the host key) is written. The
/// descriptor limit is raised to its hard limit, so the control socket's
/// bounds (not EMFILE) decide when clients are turned away.
fn harden_process() {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "prctl(PR_SET_DUMPABLE, 0)");
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub async fn run(paths: Paths, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        return Err(DaemonError::NotRoot(uid));
    }
    harden_process();
    let cgroup2 = cgroup::cgroup2_mount()?;
    std::fs::create_dir_all(&paths.state_dir).map_err(|source| DaemonError::Io {
        op: "create state directory",
        path: paths.state_dir.clone(),
        source,
    })?;
    // Refused before anything is loaded: a bad cap changes nothing.
    let (cap_bytes, cap_source) = evidence_cap::configured(
        std::env::var("WARDEN_EVIDENCE_CAP").ok().as_deref(),
        &paths.state_dir,
    )?;
    let store = EvidenceStore::open(&paths.database())?;
    let registry = Registry::open(&paths.database())?;
    let (downtime, dropped_recorded) = previous_run(&store)?;
    let approvals = Approvals::open(&paths.database())?;
    let mut kernel = Kernel::load(&paths.pin_dir)?;
    let ring = kernel.take_events()?;
    let parked = kernel.take_backpressure()?;
    let throttles = gaps::ThrottleWatch::starting_from(&kernel.agent_losses().unwrap_or_default());
    let listener = bind_socket(&paths.socket)?;

    let stats = Arc::new(Stats::default());
    let key = HostKey::load_or_create(&paths.state_dir)?;
    let public_key = hex::encode(key.verifying_key().as_bytes());
    let key_id = checkpoint::key_id(&key.verifying_key());
    let monitors: crate::sentinel::hook::Monitors = Default::default();
    let (writer, writer_thread) = EvidenceWriter::spawn(
        store,
        stats.clone(),
        key,
        CheckpointPolicy::from_env(),
        crate::sentinel::hook::SentinelHook::new(monitors.clone(), Some(paths.clone())),
    );
    let holds = Holds::new(approvals, writer.clone());
    let views = Arc::new(RwLock::new(Views::default()));
    // Decisions queued while no daemon ran name policy versions loaded by
    // an earlier daemon: know them all before the reader starts.
    prefill_views(&registry, &views);
    let actor = Actor::current();
    // Counters live in pinned maps: losses while no daemon read events show
    // in the first check (min: after an uninstall they start from zero).
    let drops = DropWatch::resume(
        &dropped_recorded,
        &kernel.agent_counters().unwrap_or_default(),
    );
    if let Some(gap) = downtime
        .and_then(|(last, stopped)| gaps::downtime(Some(&last), stopped, clock::now_ns(), &actor))
    {
        let w = writer.clone();
        tokio::task::spawn_blocking(move || w.write_durable(vec![gap])).await??;
    }

    let mut details = serde_json::Map::new();
    details.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    details.insert("mechanisms".into(), json!(kernel.mechanisms()));
    details.insert("cgroup2".into(), json!(cgroup2.display().to_string()));
    details.insert(
        "policy_dir".into(),
        json!(paths.policy_dir.display().to_string()),
    );
    details.insert("evidence_cap_bytes".into(), json!(cap_bytes));
    details.insert("evidence_cap_source".into(), json!(cap_source));
    let start = actor.entry(Recorded {
        kind: "daemon_start",
        agent: "warden",
        owner: "system",
        action: "daemon.start",
        target: &paths.socket.display().to_string(),
        decision: "recorded",
        policy_snapshot: "none",
        details,
    });
    let w = writer.clone();
    tokio::task::spawn_blocking(move || w.write_durable(vec![start])).await??;

    let (cmd_tx, cmd_rx) = mpsc::channel();
    // Rules by name: the DNS proxies write the kernel's tables through
    // handles of their own and queue their `dns` entries; a held name
    // goes to the enforcer, which owns the approvals.
    match kernel.dns_maps() {
        Ok(maps) => {
            let w = writer.clone();
            let holds_tx = std::sync::Mutex::new(cmd_tx.clone());
            crate::dns::start(
                maps,
                move |batch| w.queue(batch),
                move |held| {
                    let tx = holds_tx
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if tx.send(Command::DnsHeld(held)).is_err() {
                        tracing::error!("held DNS name not recorded: the enforcer has stopped");
                    }
                },
                tokio::runtime::Handle::current(),
            );
        }
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "DNS proxy unavailable: host rules are not enforced by name")
        }
    }

    let first_seen = Arc::new(Mutex::new(summaries::FirstSeen::default()));
    let enforcer = Enforcer {
        kernel,
        holds,
        drops,
        throttles,
        registry,
        paths: paths.clone(),
        views: views.clone(),
        writer: writer.clone(),
        stats: stats.clone(),
        enforced: HashMap::new(),
        policy_errors: Vec::new(),
        started_at_ns: clock::now_ns(),
        cgroup2,
        public_key,
        key_id,
        first_seen: first_seen.clone(),
        monitors,
        egress_windows: HashMap::new(),
        cap: evidence_cap::CapState {
            cap_bytes,
            source: cap_source,
            used_bytes: 0,
            reached: false,
            since_ns: None,
        },
    };
    let enforcer_thread = std::thread::Builder::new()
        .name("enforcer".into())
        .spawn(move || enforcer.run(cmd_rx))
        .map_err(|source| DaemonError::Io {
            op: "spawn enforcer thread",
            path: PathBuf::new(),
            source,
        })?;

    let errors = ask(&cmd_tx, |reply| Command::Reconcile {
        actor: actor.clone(),
        reply,
    })
    .await
    .unwrap_or_default();
    for e in errors {
        tracing::error!(error = %e, "agent not enforced as configured");
    }

    let _ = ask(&cmd_tx, |reply| Command::Replay { reply }).await;

    // `drained` barriers: the control server hands them to the reader.
    let (barrier_tx, barrier_rx) = tokio::sync::mpsc::channel(64);
    let reader = tokio::spawn(read_events(
        ring,
        parked,
        views,
        writer.clone(),
        cmd_tx.clone(),
        stats.clone(),
        first_seen,
        barrier_rx,
    ));
    let expiry_tx = cmd_tx.clone();
    let expiry = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            if expiry_tx.send(Command::ExpireHolds).is_err() {
                return;
            }
        }
    });
    // Repeated allowed actions are counted in the kernel and written as
    // summaries every interval (`WARDEN_SUMMARY_SECS`, default 10).
    let sweep_tx = cmd_tx.clone();
    let sweep = tokio::spawn(async move {
        let secs = std::env::var("WARDEN_SUMMARY_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(10);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
        tick.tick().await;
        loop {
            tick.tick().await;
            if sweep_tx.send(Command::SweepSummaries).is_err() {
                return;
            }
        }
    });
    let server = tokio::spawn(serve_control(listener, cmd_tx.clone(), barrier_tx));
    tracing::info!(socket = %paths.socket.display(), "warden daemon ready");

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|source| DaemonError::Io {
            op: "install SIGHUP handler",
            path: PathBuf::new(),
            source,
        })?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading registry and policies");
                let mut a = Actor::current();
                a.exe = format!("{} (SIGHUP)", a.exe);
                let errors = ask(&cmd_tx, |reply| Command::Reconcile { actor: a, reply }).await.unwrap_or_default();
                for e in errors {
                    tracing::error!(error = %e, "reload: running policy kept");
                }
            }
        }
    }

    tracing::info!("shutting down");
    server.abort();
    let _ = server.await;
    expiry.abort();
    let _ = expiry.await;
    sweep.abort();
    let _ = sweep.await;
    reader.abort();
    let _ = reader.await;
    let _ = ask(&cmd_tx, |reply| Command::Stop {
        actor: actor.clone(),
        reply,
    })
    .await;
    let _ = enforcer_thread.join();
    // The DNS proxies stop and their evidence thread lets go of the writer.
    crate::dns::shutdown();
    drop(cmd_tx);
    drop(writer);
    let _ = writer_thread.join();
    let _ = std::fs::remove_file(&paths.socket);
    Ok(())
}
