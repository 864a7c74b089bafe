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

use std::{
    collections::HashMap,
    future::Future,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, RwLock,
    },
};

use aya::maps::{MapData, RingBuf};
use serde_json::json;
use tokio::{
    io::unix::AsyncFd,
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::oneshot,
};
use warden_common::sys_exit_mode;

use crate::{
    actor::{Actor, Recorded},
    approvals::Approvals,
    attribution::{self, AgentView, PolicyView, ProcessFacts, UserNames},
    cgroup,
    clock::{self, BootClock},
    config::Paths,
    control::{AgentState, GlobalHook, Mechanism, Request, Response, StatusReport},
    decode::{self, KernelEvent},
    evidence::{
        checkpoint::{self, HostKey},
        Durability, EvidenceStore, NewEntry,
    },
    gaps::{self, DropWatch},
    holds::{Caller, Holds, Verdict},
    kernel::{AgentRules, Kernel, KernelError},
    policy::{self, CompiledNet, CompiledPaths},
    registry::{Agent, AgentStatus, Registry, RegistryError},
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
    #[error("write evidence: {0}")]
    Write(String),
    #[error(transparent)]
    Approvals(#[from] crate::approvals::ApprovalError),
    #[error(transparent)]
    HostKey(#[from] checkpoint::CheckpointError),
}

/// What the kernel enforces with, per action class (shown by `warden status`
/// and recorded in the daemon_start entry). Exec and file open say which
/// mechanism this kernel gave us, or why there is none (then policies that
/// need it are refused, never silently allowed).
fn mechanisms(kernel: &Kernel) -> Vec<Mechanism> {
    let or_unavailable = |why: Option<&str>, mechanism: &str| match why {
        None => mechanism.to_string(),
        Some(why) => {
            format!("unavailable on this kernel ({why}): policies with these rules are refused")
        }
    };
    vec![
        Mechanism {
            action: "network (connect, sendmsg; IPv4 and IPv6)".into(),
            mechanism: "cgroup sock_addr programs attached to each agent cgroup (deny = EPERM)"
                .into(),
        },
        Mechanism {
            action: "hold (network)".into(),
            mechanism: "hook fails the syscall with ERESTARTNOINTR, tp_btf/sys_exit stops the thread (attached while a policy holds)".into(),
        },
        Mechanism {
            action: "BPF LSM".into(),
            mechanism: crate::lsm::status(kernel.lsm()),
        },
        Mechanism {
            action: "exec".into(),
            mechanism: or_unavailable(
                kernel.exec_unavailable(),
                if kernel.lsm().exec {
                    crate::lsm::EXEC_MECHANISM
                } else {
                    "tp_btf/sched_process_exec (fallback, no BPF LSM), deny = SIGKILL before the first instruction; hold = the process stops there (ptrace-seized, SIGCONT cannot continue it), approval continues it, rejection kills it"
                },
            ),
        },
        Mechanism {
            action: "file open".into(),
            mechanism: or_unavailable(
                kernel.file_unavailable(),
                if kernel.lsm().file {
                    crate::lsm::FILE_MECHANISM
                } else {
                    "tp_btf/sys_exit after open (fallback, no BPF LSM), deny = SIGKILL before the fd is used (detect-and-kill; O_TRUNC/O_CREAT side effects happen first); hold = the process stops before the fd reaches it (ptrace-seized), approval continues it, rejection kills it"
                },
            ),
        },
    ]
}

// ---------------------------------------------------------------------------
// Evidence writer

pub struct WriteJob {
    entries: Vec<NewEntry>,
    durability: Durability,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

#[derive(Clone)]
pub struct EvidenceWriter {
    tx: mpsc::Sender<WriteJob>,
}

impl EvidenceWriter {
    fn spawn(
        store: EvidenceStore,
        stats: Arc<Stats>,
        key: HostKey,
        checkpoints: CheckpointPolicy,
    ) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("evidence-writer".into())
            .spawn(move || write_loop(store, rx, stats, key, checkpoints))
            .expect("spawn evidence writer thread");
        (Self { tx }, handle)
    }

    /// Queues entries for the next group commit.
    fn queue(&self, entries: Vec<NewEntry>) {
        let job = WriteJob {
            entries,
            durability: Durability::Batched,
            done: None,
        };
        if self.tx.send(job).is_err() {
            tracing::error!("evidence writer is gone; entries lost");
        }
    }

    /// Appends entries and returns once they are durably on disk.
    fn write_durable(&self, entries: Vec<NewEntry>) -> Result<(), DaemonError> {
        let (done, wait) = oneshot::channel();
        let job = WriteJob {
            entries,
            durability: Durability::Fsync,
            done: Some(done),
        };
        self.tx
            .send(job)
            .map_err(|_| DaemonError::Write("evidence writer is gone".into()))?;
        wait.blocking_recv()
            .map_err(|_| DaemonError::Write("evidence writer is gone".into()))?
            .map_err(DaemonError::Write)
    }
}

/// When the writer signs a checkpoint: every `entries` appended entries or
/// every `period`, whichever comes first, and when it stops.
#[derive(Clone, Copy)]
pub struct CheckpointPolicy {
    pub entries: u64,
    pub period: std::time::Duration,
}

impl CheckpointPolicy {
    /// Defaults: 1000 entries or 60 s; `WARDEN_CHECKPOINT_ENTRIES` and
    /// `WARDEN_CHECKPOINT_SECS` override them (tests use short periods).
    pub fn from_env() -> Self {
        let num = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Self {
            entries: num("WARDEN_CHECKPOINT_ENTRIES", 1000),
            period: std::time::Duration::from_secs(num("WARDEN_CHECKPOINT_SECS", 60)),
        }
    }
}

fn write_loop(
    mut store: EvidenceStore,
    rx: mpsc::Receiver<WriteJob>,
    stats: Arc<Stats>,
    key: HostKey,
    policy: CheckpointPolicy,
) {
    let mut unsigned = 0u64;
    let mut last_checkpoint = std::time::Instant::now();
    loop {
        let wait = policy.period.saturating_sub(last_checkpoint.elapsed());
        match rx.recv_timeout(wait.max(std::time::Duration::from_millis(10))) {
            Ok(first) => unsigned += append_jobs(&mut store, first, &rx, &stats),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let due = unsigned >= policy.entries || last_checkpoint.elapsed() >= policy.period;
        if due && unsigned > 0 {
            sign_checkpoint(&mut store, &key, &stats);
            unsigned = 0;
        }
        if due {
            last_checkpoint = std::time::Instant::now();
        }
    }
    if unsigned > 0 {
        sign_checkpoint(&mut store, &key, &stats);
    }
}

/// Signs the current head and records the checkpoint in the chain too, so
/// copies of the log elsewhere carry it.
fn sign_checkpoint(store: &mut EvidenceStore, key: &HostKey, stats: &Stats) {
    let result = (|| -> Result<(), String> {
        let Some((size, head)) = store.head().map_err(|e| crate::error_chain(&e))? else {
            return Ok(());
        };
        let cp = checkpoint::write(store.connection(), key, size, &head, clock::now_ns())
            .map_err(|e| crate::error_chain(&e))?;
        let mut details = serde_json::Map::new();
        details.insert("checkpoint_id".into(), json!(cp.id));
        details.insert("size".into(), json!(cp.size));
        details.insert("head_hash".into(), json!(cp.head_hash));
        details.insert("signed_at_ns".into(), json!(cp.ts_ns));
        details.insert("prev".into(), json!(cp.prev));
        details.insert("key_id".into(), json!(cp.key_id));
        details.insert("signature".into(), json!(cp.signature));
        let entry = Actor::current().entry(Recorded {
            kind: "checkpoint",
            agent: "warden",
            owner: "system",
            action: "evidence.checkpoint",
            target: &format!("seq 1..{size}"),
            decision: "signed",
            policy_snapshot: "none",
            details,
        });
        let written = store
            .append(&[entry], Durability::Fsync)
            .map_err(|e| crate::error_chain(&e))?;
        stats
            .recorded
            .fetch_add(written.len() as u64, Ordering::Relaxed);
        tracing::debug!(id = cp.id, size, "checkpoint signed");
        Ok(())
    })();
    if let Err(e) = result {
        tracing::error!(error = %e, "sign checkpoint");
    }
}

/// Appends `first` and whatever else is queued in one transaction (group
/// commit). Returns how many entries were written.
fn append_jobs(
    store: &mut EvidenceStore,
    first: WriteJob,
    rx: &mpsc::Receiver<WriteJob>,
    stats: &Stats,
) -> u64 {
    let mut jobs = vec![first];
    while jobs.len() < 256 {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    let durability = if jobs
        .iter()
        .any(|j| matches!(j.durability, Durability::Fsync))
    {
        Durability::Fsync
    } else {
        Durability::Batched
    };
    let all: Vec<NewEntry> = jobs
        .iter()
        .flat_map(|j| j.entries.iter().cloned())
        .collect();
    match store.append(&all, durability) {
        Ok(written) => {
            stats
                .recorded
                .fetch_add(written.len() as u64, Ordering::Relaxed);
            for job in jobs {
                if let Some(done) = job.done {
                    let _ = done.send(Ok(()));
                }
            }
            written.len() as u64
        }
        // One bad entry must not cost the others their record: retry job by
        // job and report failures to whoever waits.
        Err(e) => {
            tracing::warn!(error = %e, "group append failed; retrying entries one job at a time");
            let mut count = 0;
            for job in jobs {
                let result = store
                    .append(&job.entries, durability)
                    .map(|w| count += w.len() as u64)
                    .map_err(|e| crate::error_chain(&e));
                if let Err(e) = &result {
                    tracing::error!(error = %e, entries = job.entries.len(), "evidence lost");
                }
                if let Some(done) = job.done {
                    let _ = done.send(result);
                }
            }
            stats.recorded.fetch_add(count, Ordering::Relaxed);
            count
        }
    }
}

// ---------------------------------------------------------------------------
// Shared views for attribution

#[derive(Default)]
pub struct Views {
    agents: HashMap<u32, AgentView>,
    policies: HashMap<u32, Arc<PolicyView>>,
}

#[derive(Default)]
pub struct Stats {
    recorded: AtomicU64,
    decode_errors: AtomicU64,
}

// ---------------------------------------------------------------------------
// Enforcer

enum Command {
    Reconcile {
        actor: Actor,
        reply: oneshot::Sender<Vec<String>>,
    },
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
    AgentState {
        agent: String,
        reply: oneshot::Sender<Result<AgentState, String>>,
    },
    Stop {
        actor: Actor,
        reply: oneshot::Sender<()>,
    },
    /// The kernel held an action (from the event reader).
    Held {
        ev: KernelEvent,
        entry: NewEntry,
        agent: AgentView,
        policy: Arc<PolicyView>,
        facts: ProcessFacts,
    },
    /// The kernel applied a decision on a held action.
    Outcome {
        ev: KernelEvent,
        entry: NewEntry,
    },
    Decide {
        id: u64,
        verdict: Verdict,
        reason: Option<String>,
        caller: Caller,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Approvals {
        all: bool,
        uid: u32,
        reply: oneshot::Sender<Vec<crate::approvals::Approval>>,
    },
    ExpireHolds,
    /// Apply decisions recorded but not applied before a restart.
    Replay {
        reply: oneshot::Sender<()>,
    },
}

/// What needs the on-demand global programs (`sys_exit`, the page-fault
/// guard) now.
struct GlobalNeeds<'a> {
    /// Agents whose policies have file rules.
    files: Vec<&'a str>,
    /// Agents whose policies hold actions that need `sys_exit`.
    holds: Vec<&'a str>,
    /// Agents whose policies hold execs on the fallback.
    fault_guard: Vec<&'a str>,
    /// Pending holds; `None` if they could not be listed.
    pending: Option<usize>,
    /// Threads in `HELD`.
    marked: usize,
}

struct Enforced {
    cgroup_id: u64,
    cgroup: PathBuf,
    snapshot: String,
    revoked: bool,
    /// The policy in force has file rules (the `sys_exit` program decides
    /// the agent's opens).
    needs_file: bool,
    /// The policy in force holds actions that need `sys_exit`: network
    /// holds (it stops them), and the fallback's paused execs and opens
    /// (it guards them).
    needs_hold: bool,
    /// The policy in force holds execs on the fallback (the page-fault
    /// guard runs).
    needs_fault_guard: bool,
}

struct Enforcer {
    kernel: Kernel,
    holds: Holds,
    drops: DropWatch,
    registry: Registry,
    paths: Paths,
    views: Arc<RwLock<Views>>,
    writer: EvidenceWriter,
    stats: Arc<Stats>,
    enforced: HashMap<String, Enforced>,
    policy_errors: Vec<String>,
    started_at_ns: i64,
    cgroup2: PathBuf,
    /// Hex of the Ed25519 key that signs checkpoints, and its short id.
    public_key: String,
    key_id: String,
}

impl Enforcer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Reconcile { actor, reply } => {
                    let errors = self.reconcile(&actor);
                    let _ = reply.send(errors);
                }
                Command::Status { reply } => {
                    let _ = reply.send(self.status());
                }
                Command::AgentState { agent, reply } => {
                    let _ = reply.send(self.agent_state(&agent));
                }
                Command::Held {
                    ev,
                    entry,
                    agent,
                    policy,
                    facts,
                } => {
                    // First, before anything is written: the window in
                    // which a SIGCONT could continue a paused thread.
                    self.holds.seize_if_paused(&self.kernel, ev.pid, ev.tid);
                    match self.holds.on_held(&ev, entry, &agent, &policy, &facts) {
                        Ok(Some(entry)) => self.record(entry),
                        Ok(None) => {
                            tracing::debug!(tid = ev.tid, "held action re-entered while pending")
                        }
                        Err(e) => tracing::error!(error = %crate::error_chain(&e), "record hold"),
                    }
                }
                Command::Outcome { ev, entry } => match self.holds.on_outcome(&ev, entry) {
                    Ok(entry) => self.record(entry),
                    Err(e) => {
                        tracing::error!(error = %crate::error_chain(&e), "record hold outcome")
                    }
                },
                Command::Decide {
                    id,
                    verdict,
                    reason,
                    caller,
                    reply,
                } => {
                    let _ = reply.send(self.decide(id, verdict, reason.as_deref(), &caller));
                }
                Command::Approvals { all, uid, reply } => {
                    let _ = reply.send(self.approvals(all, uid));
                }
                Command::ExpireHolds => {
                    if let (Ok(counters), Ok(per_agent)) =
                        (self.kernel.counters(), self.kernel.agent_counters())
                    {
                        let views = self.views.clone();
                        let name_of = |id: u32| {
                            let v = views.read().expect("views lock");
                            v.agents.get(&id).map_or_else(
                                || gaps::AgentName {
                                    name: "unknown".into(),
                                    owner: "system".into(),
                                },
                                |a| gaps::AgentName {
                                    name: a.name.clone(),
                                    owner: a.owner.clone(),
                                },
                            )
                        };
                        for gap in
                            self.drops
                                .check(&per_agent, &counters, name_of, &Actor::current())
                        {
                            tracing::warn!(
                                agent = %gap.agent,
                                lost = %gap.details["lost"],
                                allowed_unrecorded = %gap.details["allowed_unrecorded"],
                                "actions not recorded: ring buffer full"
                            );
                            self.record(gap);
                        }
                    }
                    let writer = &self.writer;
                    let mut record =
                        |e: NewEntry| writer.write_durable(vec![e]).map_err(|e| e.to_string());
                    if let Err(e) = self.holds.expire(&mut self.kernel, &mut record) {
                        tracing::error!(error = %crate::error_chain(&e), "expire holds");
                    }
                    if let Err(e) = self.holds.reap(&mut self.kernel, &mut record) {
                        tracing::error!(error = %crate::error_chain(&e), "finish ended holds");
                    }
                    if let Err(e) = self.kernel.settle_paused_flag() {
                        tracing::error!(error = %crate::error_chain(&e), "paused flag");
                    }
                    // Holds kept sys_exit attached after the last policy
                    // that holds went away: detach once they are done.
                    let stale = self.kernel.sys_exit_mode() & sys_exit_mode::HOLDS != 0
                        && !self.enforced.values().any(|e| e.needs_hold);
                    if stale {
                        if let Err(e) = self.update_sys_exit() {
                            tracing::error!(error = %e, "update sys_exit");
                        }
                    }
                }
                Command::Replay { reply } => {
                    // The first reconcile has attached this daemon's links:
                    // the previous daemon's can go now.
                    let stale = self.kernel.drop_stale_links();
                    if stale > 0 {
                        tracing::info!(links = stale, "unpinned the previous daemon's links");
                    }
                    let writer = &self.writer;
                    let mut record =
                        |e: NewEntry| writer.write_durable(vec![e]).map_err(|e| e.to_string());
                    if let Err(e) = self.holds.reseize(&self.kernel) {
                        tracing::error!(error = %crate::error_chain(&e), "seize paused threads");
                    }
                    match self.holds.replay(&mut self.kernel, &mut record) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            count = n,
                            "replayed decisions recorded before a restart"
                        ),
                        Err(e) => {
                            tracing::error!(error = %crate::error_chain(&e), "replay decisions")
                        }
                    }
                    let _ = reply.send(());
                }
                Command::Stop { actor, reply } => {
                    self.stop(&actor);
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    /// Brings the kernel in line with the registry and the policy files.
    /// Returns the errors (a policy that fails to load leaves the running
    /// one in force; an agent with no valid policy yet denies everything).
    fn reconcile(&mut self, actor: &Actor) -> Vec<String> {
        self.reconcile_all(actor)
    }

    /// Writes an entry durably, logging (not failing) if it cannot.
    fn record(&self, entry: NewEntry) {
        if let Err(e) = self.writer.write_durable(vec![entry]) {
            tracing::error!(error = %e, "evidence write failed");
        }
    }

    fn policy_by_snapshot(&self, snapshot: &str) -> Option<Arc<PolicyView>> {
        let views = self.views.read().expect("views lock");
        views
            .policies
            .values()
            .find(|p| p.snapshot == snapshot)
            .cloned()
    }

    fn decide(
        &mut self,
        id: u64,
        verdict: Verdict,
        reason: Option<&str>,
        caller: &Caller,
    ) -> Result<String, String> {
        let approval = self.holds.get(id).map_err(|e| crate::error_chain(&e))?;
        let current = self
            .enforced
            .get(&approval.job.agent)
            .map(|e| e.snapshot.clone());
        let policy = self.policy_by_snapshot(&approval.policy_snapshot);
        let cgroups: Vec<PathBuf> = self.enforced.values().map(|e| e.cgroup.clone()).collect();
        let writer = &self.writer;
        let mut record = |e: NewEntry| writer.write_durable(vec![e]).map_err(|e| e.to_string());
        self.holds.decide(
            &mut self.kernel,
            id,
            verdict,
            reason,
            caller,
            current.as_deref(),
            policy.as_deref(),
            &cgroups,
            &mut record,
        )
    }

    /// Holds the caller may see: all for root, otherwise those it may decide.
    fn approvals(&self, all: bool, uid: u32) -> Vec<crate::approvals::Approval> {
        let list = match self.holds.list(all) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "list approvals");
                return Vec::new();
            }
        };
        if uid == 0 {
            return list;
        }
        let Ok(Some(user)) = nix::unistd::User::from_uid(uid.into()) else {
            return Vec::new();
        };
        let groups = crate::approvals::groups_of(&user);
        list.into_iter()
            .filter(|a| {
                self.policy_by_snapshot(&a.policy_snapshot)
                    .is_some_and(|p| {
                        crate::approvals::approver_role(&p.approvers, &user.name, &groups).is_some()
                    })
            })
            .collect()
    }

    fn reconcile_all(&mut self, actor: &Actor) -> Vec<String> {
        let mut errors = Vec::new();
        let agents = match self.registry.list() {
            Ok(a) => a,
            Err(e) => return vec![e.to_string()],
        };
        // Agents removed from the registry.
        let gone: Vec<String> = self
            .enforced
            .keys()
            .filter(|name| !agents.iter().any(|a| &a.name == *name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.enforced.remove(&name) {
                if let Err(e) = self.kernel.remove(old.cgroup_id) {
                    errors.push(format!("agent '{name}': {}", crate::error_chain(&e)));
                }
            }
        }
        for agent in &agents {
            if let Err(e) = self.reconcile_agent(agent, actor) {
                errors.push(format!("agent '{}': {e}", agent.name));
            }
        }
        if let Err(e) = self.update_sys_exit() {
            errors.push(e);
        }
        for e in &errors {
            tracing::error!(error = %e, "reconcile");
        }
        self.policy_errors = errors.clone();
        errors
    }

    /// Attaches the `sys_exit` program while some agent needs it and
    /// detaches it when none does: file rules in force, network holds in a
    /// policy, a hold awaiting a decision, or a thread a hook marked and
    /// `sys_exit` has not stopped yet. (A hook that read an agent's old
    /// policy just before a reload that drops its last hold rule could
    /// still mark a thread after this check; the window is one map update.)
    /// The page-fault guard likewise, while some policy holds execs on
    /// the fallback or a thread is in `HELD`.
    fn update_sys_exit(&mut self) -> Result<(), String> {
        let needs = self.global_needs();
        let files = !needs.files.is_empty();
        // Pending holds that could not be listed count as some.
        let holds = !needs.holds.is_empty() || needs.marked > 0 || needs.pending != Some(0);
        let guard = !needs.fault_guard.is_empty() || needs.marked > 0;
        self.kernel
            .set_fault_guard(guard)
            .map_err(|e| format!("tp_btf/page_fault_user: {}", crate::error_chain(&e)))?;
        let mut mode = 0;
        if holds {
            mode |= sys_exit_mode::HOLDS;
        }
        if files {
            mode |= sys_exit_mode::FILES;
        }
        self.kernel
            .set_sys_exit_mode(mode)
            .map_err(|e| format!("tp_btf/sys_exit: {}", crate::error_chain(&e)))
    }

    fn reconcile_agent(&mut self, agent: &Agent, actor: &Actor) -> Result<(), String> {
        let cgroup_id = cgroup::cgroup_id(&agent.cgroup).map_err(|e| crate::error_chain(&e))?;
        let revoked = agent.status == AgentStatus::Revoked;
        if let Some(old) = self.enforced.get(&agent.name) {
            if old.cgroup_id != cgroup_id {
                // The cgroup was recreated: enforce on the new one.
                let old_id = old.cgroup_id;
                self.enforced.remove(&agent.name);
                self.kernel
                    .remove(old_id)
                    .map_err(|e| crate::error_chain(&e))?;
            }
        }
        self.views.write().expect("views lock").agents.insert(
            agent.id,
            AgentView {
                name: agent.name.clone(),
                owner: agent.owner.clone(),
            },
        );

        let file = self.paths.policy_dir.join(&agent.policy);
        let loaded = std::fs::read_to_string(&file)
            .map_err(|e| format!("read policy {}: {e}", file.display()))
            .and_then(|text| {
                let name = file.display().to_string();
                let parsed =
                    policy::parse_policy(&name, &text).map_err(|e| crate::error_chain(&e))?;
                check_supported(
                    &parsed,
                    &name,
                    self.kernel.exec_unavailable(),
                    self.kernel.file_unavailable(),
                )?;
                let net = policy::compile_network(&parsed).map_err(|e| crate::error_chain(&e))?;
                let paths = policy::compile_paths(&parsed).map_err(|e| crate::error_chain(&e))?;
                Ok((text, parsed, net, paths))
            });
        let (text, parsed, net, paths) = match loaded {
            Ok(l) => l,
            Err(e) => {
                self.record_policy_rejected(agent, actor, &e);
                if !self.kernel.is_attached(cgroup_id) {
                    // Never leave an agent unenforced: with no valid policy
                    // it gets none, so the default (deny) applies to all it
                    // does that this kernel lets us decide.
                    let none = CompiledPaths {
                        exec_governed: self.kernel.exec_unavailable().is_none(),
                        file_governed: self.kernel.file_unavailable().is_none(),
                        ..CompiledPaths::default()
                    };
                    if none.file_governed {
                        let mode = self.kernel.sys_exit_mode() | sys_exit_mode::FILES;
                        self.kernel
                            .set_sys_exit_mode(mode)
                            .map_err(|e| crate::error_chain(&e))?;
                    }
                    let rules = AgentRules {
                        agent_id: agent.id,
                        policy_gen: 0,
                        net: &CompiledNet::default(),
                        paths: &none,
                        revoked,
                        fail_open: false,
                    };
                    self.install(agent, cgroup_id, &rules)?;
                    self.enforced.insert(
                        agent.name.clone(),
                        Enforced {
                            cgroup_id,
                            cgroup: agent.cgroup.clone(),
                            snapshot: "none".into(),
                            revoked,
                            needs_file: none.file_governed,
                            needs_hold: false,
                            needs_fault_guard: false,
                        },
                    );
                } else if let Some(old) = self.enforced.get_mut(&agent.name) {
                    if old.revoked != revoked {
                        self.kernel
                            .set_revoked(cgroup_id, revoked)
                            .map_err(|e| crate::error_chain(&e))?;
                        old.revoked = revoked;
                    }
                }
                return Err(e);
            }
        };
        let snapshot = parsed.snapshot();
        if let Some(old) = self.enforced.get_mut(&agent.name) {
            if old.snapshot == snapshot {
                if old.revoked != revoked {
                    self.kernel
                        .set_revoked(cgroup_id, revoked)
                        .map_err(|e| crate::error_chain(&e))?;
                    old.revoked = revoked;
                }
                return Ok(());
            }
        }
        let previous = self
            .enforced
            .get(&agent.name)
            .map_or_else(|| "none".to_string(), |o| o.snapshot.clone());
        let (version, _new) = self
            .registry
            .record_policy_version(
                &agent.name,
                &agent.policy,
                &snapshot,
                &text,
                clock::now_ns(),
                &actor.describe(),
            )
            .map_err(|e| crate::error_chain(&e))?;
        self.views.write().expect("views lock").policies.insert(
            version,
            Arc::new(PolicyView {
                snapshot: snapshot.clone(),
                rule_ids: parsed.rule_ids(),
                approvers: parsed.approvers.clone(),
                hold_timeout: parsed.hold_timeout,
            }),
        );
        // The sys_exit program must run before the agent's flags ask for
        // it: attach (or widen its mode) first, narrow it after the install
        // (`update_sys_exit`).
        let (needs_hold, needs_fault_guard) = hold_needs(&parsed, self.kernel.lsm());
        if needs_fault_guard {
            self.kernel
                .set_fault_guard(true)
                .map_err(|e| crate::error_chain(&e))?;
        }
        let mut mode = self.kernel.sys_exit_mode();
        if needs_hold {
            mode |= sys_exit_mode::HOLDS;
        }
        if paths.file_governed {
            mode |= sys_exit_mode::FILES;
        }
        self.kernel
            .set_sys_exit_mode(mode)
            .map_err(|e| crate::error_chain(&e))?;
        let fail_open = parsed.on_evidence_loss == policy::EvidenceLoss::Allow;
        let rules = AgentRules {
            agent_id: agent.id,
            policy_gen: version,
            net: &net,
            paths: &paths,
            revoked,
            fail_open,
        };
        self.install(agent, cgroup_id, &rules)?;
        self.enforced.insert(
            agent.name.clone(),
            Enforced {
                cgroup_id,
                cgroup: agent.cgroup.clone(),
                snapshot: snapshot.clone(),
                revoked,
                needs_file: paths.file_governed,
                needs_hold,
                needs_fault_guard,
            },
        );
        let mut details = serde_json::Map::new();
        details.insert("policy_version".into(), json!(version));
        details.insert("previous_snapshot".into(), json!(previous));
        details.insert("file".into(), json!(file.display().to_string()));
        let entry = actor.entry(Recorded {
            kind: "policy_load",
            agent: &agent.name,
            owner: &agent.owner,
            action: "policy.load",
            target: &agent.policy,
            decision: "loaded",
            policy_snapshot: &snapshot,
            details,
        });
        self.writer
            .write_durable(vec![entry])
            .map_err(|e| crate::error_chain(&e))?;
        tracing::info!(agent = %agent.name, policy = %agent.policy, snapshot = %snapshot, version, "policy loaded");
        Ok(())
    }

    fn install(
        &mut self,
        agent: &Agent,
        cgroup_id: u64,
        rules: &AgentRules<'_>,
    ) -> Result<(), String> {
        // Rules and the agent entry first, then attach: the programs never
        // run for this cgroup without its rules in place.
        self.kernel
            .install(cgroup_id, rules)
            .map_err(|e| crate::error_chain(&e))?;
        self.kernel
            .attach(&agent.cgroup, cgroup_id)
            .map_err(|e| crate::error_chain(&e))
    }

    fn record_policy_rejected(&self, agent: &Agent, actor: &Actor, error: &str) {
        let running = self
            .enforced
            .get(&agent.name)
            .map_or("none", |e| e.snapshot.as_str());
        let mut details = serde_json::Map::new();
        details.insert("error".into(), json!(error));
        let entry = actor.entry(Recorded {
            kind: "policy_load",
            agent: &agent.name,
            owner: &agent.owner,
            action: "policy.load",
            target: &agent.policy,
            decision: "rejected",
            policy_snapshot: running,
            details,
        });
        if let Err(e) = self.writer.write_durable(vec![entry]) {
            tracing::error!(error = %e, "record rejected policy");
        }
    }

    fn agent_state(&self, name: &str) -> Result<AgentState, String> {
        let agent = self
            .registry
            .get(name)
            .map_err(|e| crate::error_chain(&e))?;
        let enforced = self.enforced.get(name);
        Ok(AgentState {
            agent: name.to_string(),
            enforced: enforced.is_some_and(|e| self.kernel.is_attached(e.cgroup_id)),
            cgroup: agent.cgroup.display().to_string(),
            policy_snapshot: enforced.map_or_else(|| "none".into(), |e| e.snapshot.clone()),
            revoked: agent.status == AgentStatus::Revoked,
        })
    }

    fn status(&self) -> StatusReport {
        let mut agents: Vec<AgentState> = self
            .enforced
            .iter()
            .map(|(name, e)| AgentState {
                agent: name.clone(),
                enforced: self.kernel.is_attached(e.cgroup_id),
                cgroup: e.cgroup.display().to_string(),
                policy_snapshot: e.snapshot.clone(),
                revoked: e.revoked,
            })
            .collect();
        agents.sort_by(|a, b| a.agent.cmp(&b.agent));
        StatusReport {
            pid: std::process::id(),
            started_at_ns: self.started_at_ns,
            cgroup2: self.cgroup2.display().to_string(),
            mechanisms: mechanisms(&self.kernel),
            agents,
            kernel: self.kernel.counters().unwrap_or_default(),
            decode_errors: self.stats.decode_errors.load(Ordering::Relaxed),
            recorded: self.stats.recorded.load(Ordering::Relaxed),
            policy_errors: self.policy_errors.clone(),
            public_key: self.public_key.clone(),
            key_id: self.key_id.clone(),
            global_hooks: self.global_hooks(),
        }
    }

    /// What needs the on-demand global programs now: `update_sys_exit`
    /// attaches them from this, and `warden status` reports it.
    fn global_needs(&self) -> GlobalNeeds<'_> {
        let agents = |needs: fn(&Enforced) -> bool| {
            let mut names: Vec<&str> = self
                .enforced
                .iter()
                .filter(|(_, e)| needs(e))
                .map(|(name, _)| name.as_str())
                .collect();
            names.sort_unstable();
            names
        };
        GlobalNeeds {
            files: agents(|e| e.needs_file),
            holds: agents(|e| e.needs_hold),
            fault_guard: agents(|e| e.needs_fault_guard),
            pending: self.holds.list(false).ok().map(|p| p.len()),
            marked: self.kernel.marked_threads(),
        }
    }

    /// The machine-wide programs attached only on demand, with what needs
    /// them now.
    fn global_hooks(&self) -> Vec<GlobalHook> {
        let needs = self.global_needs();
        let agents = |names: &[&str], what: &str| {
            (!names.is_empty()).then(|| format!("{what} of {}", names.join(", ")))
        };
        let marked = (needs.marked > 0)
            .then(|| format!("{} thread(s) held or marked for a stop", needs.marked));
        let pending = match needs.pending {
            Some(0) => None,
            Some(n) => Some(format!("{n} pending hold(s)")),
            None => Some("pending holds (they could not be listed)".to_string()),
        };
        // With BPF LSM the kernel leaves opens to lsm/file_open.
        let files = if self.kernel.lsm().file {
            None
        } else {
            agents(&needs.files, "file rules")
        };
        let hook = |hook: &str, attached: bool, cost: &str, reasons: Vec<Option<String>>| {
            let reasons: Vec<String> = reasons.into_iter().flatten().collect();
            let why = match (attached, reasons.is_empty()) {
                (true, false) => format!("{cost}; needed by {}", reasons.join("; ")),
                (true, true) => format!("{cost}; attached, no agent needs it any more"),
                (false, _) => format!("{cost} while attached; no agent needs it now"),
            };
            GlobalHook {
                hook: hook.into(),
                attached,
                why,
            }
        };
        vec![
            hook(
                "tp_btf/sys_exit",
                self.kernel.sys_exit_mode() != 0,
                "runs at every syscall exit on the machine",
                vec![
                    files,
                    agents(&needs.holds, "holds"),
                    pending,
                    marked.clone(),
                ],
            ),
            hook(
                "tp_btf/page_fault_user",
                self.kernel.fault_guard_attached(),
                "runs at every user page fault on the machine",
                vec![agents(&needs.fault_guard, "exec holds"), marked],
            ),
        ]
    }

    fn stop(&mut self, actor: &Actor) {
        let counters = self.kernel.counters().unwrap_or_default();
        let mut details = serde_json::Map::new();
        details.insert("kernel_counters".into(), json!(counters));
        let entry = actor.entry(Recorded {
            kind: "daemon_stop",
            agent: "warden",
            owner: "system",
            action: "daemon.stop",
            target: &self.paths.socket.display().to_string(),
            decision: "recorded",
            policy_snapshot: "none",
            details,
        });
        if let Err(e) = self.writer.write_durable(vec![entry]) {
            tracing::error!(error = %e, "record daemon stop");
        }
    }
}

/// Refuses policies that need a mechanism this kernel did not give us,
/// rather than silently allowing what it cannot see.
fn check_supported(
    p: &policy::Policy,
    file: &str,
    exec_unavailable: Option<&str>,
    file_unavailable: Option<&str>,
) -> Result<(), String> {
    let needs = policy::policy_needs(p);
    let mut missing = Vec::new();
    if let (true, Some(why)) = (needs.exec, exec_unavailable) {
        missing.push(format!("exec rules need tp_btf/sched_process_exec: {why}"));
    }
    if let (true, Some(why)) = (needs.file, file_unavailable) {
        missing.push(format!("file rules need tp_btf/sys_exit: {why}"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{file}: {}; refusing the policy",
            missing.join("; ")
        ))
    }
}

/// Whether a policy holds network actions (exec and file `hold` rules are
/// enforced as deny and need no stop).
/// What a policy's holds need of the global programs: (`sys_exit`, the
/// page-fault guard). `sys_exit` stops network holds and guards the
/// fallback's paused execs and opens; the page-fault guard is for paused
/// execs. BPF LSM holds need neither.
fn hold_needs(p: &policy::Policy, lsm: &crate::lsm::LsmState) -> (bool, bool) {
    let holds = |f: fn(&policy::Selector) -> bool| {
        p.rules
            .iter()
            .any(|r| r.decision == policy::Decision::Hold && f(&r.selector))
    };
    let net = holds(|s| matches!(s, policy::Selector::Connect { .. }));
    let exec = holds(|s| matches!(s, policy::Selector::Exec { .. })) && !lsm.exec;
    let file = holds(|s| matches!(s, policy::Selector::File { .. })) && !lsm.file;
    (net || exec || file, exec)
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

/// The log's last entry, and whether the daemon that wrote it recorded its
/// stop.
type LastRun = Option<(crate::evidence::Entry, bool)>;

/// Per agent id, the totals of unrecorded actions recorded so far.
type LossTotals = HashMap<u32, warden_common::AgentCounters>;

/// What the log says about the previous daemon: its last entry and whether
/// it recorded its stop, and per agent id the totals of unrecorded actions
/// its last `evidence.lost` entry for that agent recorded.
///
/// A log that cannot be read is an error, not "no previous daemon": that
/// would leave the period no daemon ran out of the log, and count losses
/// already recorded again.
fn previous_run(
    store: &EvidenceStore,
) -> Result<(LastRun, LossTotals), crate::evidence::StoreError> {
    use crate::evidence::Filter;
    let newest = |kind: &str| {
        store
            .query(&Filter {
                kind: Some(kind.into()),
                limit: Some(1),
                ..Default::default()
            })
            .map(|mut v| v.pop())
    };
    let last = match store.head()? {
        Some((seq, _)) => store.read_range(seq, seq)?.pop(),
        None => None,
    };
    let started = newest("daemon_start")?.map_or(0, |e| e.seq);
    let stop = newest("daemon_stop")?;
    let stopped = stop.as_ref().is_some_and(|e| e.seq > started);
    let mut recorded: HashMap<u32, (u64, warden_common::AgentCounters)> = HashMap::new();
    // All of them: an agent's newest `evidence.lost` may be older than any
    // number of other agents' gap entries.
    let gaps = store.query(&Filter {
        kind: Some("gap".into()),
        ..Default::default()
    })?;
    for e in gaps.iter().filter(|e| e.action == "evidence.lost") {
        let d = &e.details;
        let Some(id) = d
            .get("agent_id")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
        else {
            continue;
        };
        let total = |k: &str| d.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let counts = warden_common::AgentCounters {
            decisions: 0,
            dropped: total("lost_total"),
            allowed_unrecorded: total("allowed_unrecorded_total"),
        };
        let newer = recorded.get(&id).is_none_or(|(seq, _)| e.seq > *seq);
        if newer {
            recorded.insert(id, (e.seq, counts));
        }
    }
    Ok((
        last.map(|l| (l, stopped)),
        recorded.into_iter().map(|(id, (_, c))| (id, c)).collect(),
    ))
}

/// Loads every policy version the registry knows into the views.
fn prefill_views(registry: &Registry, views: &RwLock<Views>) {
    let mut v = views.write().expect("views lock");
    for agent in registry.list().unwrap_or_default() {
        v.agents.insert(
            agent.id,
            AgentView {
                name: agent.name.clone(),
                owner: agent.owner.clone(),
            },
        );
    }
    for version in registry.policy_versions(None).unwrap_or_default() {
        if let Ok(p) = policy::parse_policy(&version.file, &version.content) {
            v.policies.insert(
                version.id,
                Arc::new(PolicyView {
                    snapshot: version.sha256.clone(),
                    rule_ids: p.rule_ids(),
                    approvers: p.approvers.clone(),
                    hold_timeout: p.hold_timeout,
                }),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Event reader

async fn read_events(
    ring: RingBuf<MapData>,
    views: Arc<RwLock<Views>>,
    writer: EvidenceWriter,
    enforcer: mpsc::Sender<Command>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for
    // as long as the AsyncFd (which owns the RingBuf) exists.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? };
    let mut users = UserNames::default();
    // The exec and open programs submit allowed decisions without waking
    // us (a wake-up is a self-IPI, ~10 us per event in a VM): they are
    // collected on this tick, or with the next event that does wake us.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(
        warden_common::limits::EVENTS_POLL_MS,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let batch = drain(guard.get_inner_mut(), &views, &enforcer, &stats, &mut users);
                guard.clear_ready();
                batch
            }
            _ = tick.tick() => drain(fd.get_mut(), &views, &enforcer, &stats, &mut users),
        };
        if !batch.is_empty() {
            writer.queue(batch);
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    views: &RwLock<Views>,
    enforcer: &mpsc::Sender<Command>,
    stats: &Stats,
    users: &mut UserNames,
) -> Vec<NewEntry> {
    let boot = BootClock::now();
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        let ev = match decode::decode(&item) {
            Ok(ev) => ev,
            Err(e) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "undecodable event");
                continue;
            }
        };
        drop(item);
        let views = views.read().expect("views lock");
        let agent = views
            .agents
            .get(&ev.agent_id)
            .cloned()
            .unwrap_or_else(|| AgentView {
                name: format!("unregistered-cgroup:{}", ev.cgroup_id),
                owner: "unknown".into(),
            });
        let policy = views
            .policies
            .get(&ev.policy_gen)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(PolicyView {
                    snapshot: "none".into(),
                    rule_ids: Vec::new(),
                    approvers: Default::default(),
                    hold_timeout: std::time::Duration::from_secs(1),
                })
            });
        drop(views);
        let facts = ProcessFacts::read(ev.pid, &ev.comm);
        let entry = attribution::decision_entry(
            &ev,
            boot.to_unix_ns(ev.boot_ns),
            &agent,
            &policy,
            &facts,
            users,
        );
        tracing::debug!(agent = %entry.agent, pid = ev.pid, rule = %entry.rule_id, decision = %entry.decision, target = %entry.target, "decision");
        // Holds and their outcomes go to the enforcer, which owns the
        // approvals and the kernel's grants.
        let routed = match ev.method {
            warden_common::Method::Held => enforcer
                .send(Command::Held {
                    ev,
                    entry,
                    agent,
                    policy,
                    facts,
                })
                .map_err(drop),
            warden_common::Method::Approved | warden_common::Method::Rejected => {
                enforcer.send(Command::Outcome { ev, entry }).map_err(drop)
            }
            _ => {
                batch.push(entry);
                Ok(())
            }
        };
        if routed.is_err() {
            tracing::error!("enforcer is gone; hold event not recorded");
        }
    }
    batch
}

// ---------------------------------------------------------------------------
// Control socket

async fn serve_control(listener: UnixListener, enforcer: mpsc::Sender<Command>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept");
                continue;
            }
        };
        let enforcer = enforcer.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_client(stream, enforcer).await {
                tracing::warn!(error = %e, "control client");
            }
        });
    }
}

async fn handle_client(stream: UnixStream, enforcer: mpsc::Sender<Command>) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::Error {
            message: format!("malformed request: {e}"),
        },
        Ok(req) => {
            let peer_pid = cred.pid().unwrap_or(0) as u32;
            dispatch(req, cred.uid(), peer_pid, &enforcer).await
        }
    };
    let mut text = serde_json::to_string(&response)
        .unwrap_or_else(|e| format!(r#"{{"result":"error","message":"serialise response: {e}"}}"#));
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

async fn dispatch(req: Request, uid: u32, pid: u32, enforcer: &mpsc::Sender<Command>) -> Response {
    let gone = || Response::Error {
        message: "daemon is shutting down".into(),
    };
    match req {
        Request::Status => match ask(enforcer, |reply| Command::Status { reply }).await {
            Some(s) => Response::Status(Box::new(s)),
            None => gone(),
        },
        Request::AgentState { agent } => {
            match ask(enforcer, |reply| Command::AgentState { agent, reply }).await {
                Some(Ok(s)) => Response::AgentState(s),
                Some(Err(message)) => Response::Error { message },
                None => gone(),
            }
        }
        Request::Approvals { all } => {
            match ask(enforcer, |reply| Command::Approvals { all, uid, reply }).await {
                Some(approvals) => Response::Approvals { approvals },
                None => gone(),
            }
        }
        Request::Decide {
            id,
            approve,
            reason,
        } => {
            let verdict = if approve {
                Verdict::Approve
            } else {
                Verdict::Reject
            };
            let caller = Caller { uid, pid };
            match ask(enforcer, |reply| Command::Decide {
                id,
                verdict,
                reason,
                caller,
                reply,
            })
            .await
            {
                Some(Ok(message)) => Response::Ok { message },
                Some(Err(message)) => Response::Error { message },
                None => gone(),
            }
        }
        Request::Reload => {
            if uid != 0 {
                return Response::Error {
                    message: format!("reload needs root; caller is uid {uid}"),
                };
            }
            let actor = Actor::of(uid, pid);
            match ask(enforcer, |reply| Command::Reconcile { actor, reply }).await {
                Some(errors) if errors.is_empty() => Response::Ok {
                    message: "registry and policies reloaded".into(),
                },
                Some(errors) => Response::Error {
                    message: errors.join("\n"),
                },
                None => gone(),
            }
        }
    }
}

fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let io = |op, source| DaemonError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create socket directory", e))?;
    }
    if path.exists() {
        // A live daemon answers; a stale socket file from a crash does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| io("remove stale socket", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io("bind control socket", e))?;
    // Anyone may connect; each request is authorised by the caller's
    // credentials (SO_PEERCRED).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| io("set permissions of", e))?;
    Ok(listener)
}

// ---------------------------------------------------------------------------
// Start and stop

/// Runs the daemon until `shutdown` completes.
pub async fn run(paths: Paths, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        return Err(DaemonError::NotRoot(uid));
    }
    let cgroup2 = cgroup::cgroup2_mount()?;
    std::fs::create_dir_all(&paths.state_dir).map_err(|source| DaemonError::Io {
        op: "create state directory",
        path: paths.state_dir.clone(),
        source,
    })?;
    let store = EvidenceStore::open(&paths.database())?;
    let registry = Registry::open(&paths.database())?;
    let (downtime, dropped_recorded) = previous_run(&store)?;
    let holds = Holds::new(Approvals::open(&paths.database())?);
    let mut kernel = Kernel::load(&paths.pin_dir)?;
    let ring = kernel.take_events()?;
    let listener = bind_socket(&paths.socket)?;

    let stats = Arc::new(Stats::default());
    let key = HostKey::load_or_create(&paths.state_dir)?;
    let public_key = hex::encode(key.verifying_key().as_bytes());
    let key_id = checkpoint::key_id(&key.verifying_key());
    let (writer, writer_thread) =
        EvidenceWriter::spawn(store, stats.clone(), key, CheckpointPolicy::from_env());
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
        tokio::task::spawn_blocking(move || w.write_durable(vec![gap]))
            .await
            .map_err(|e| DaemonError::Write(e.to_string()))??;
    }

    let mut details = serde_json::Map::new();
    details.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    details.insert("mechanisms".into(), json!(mechanisms(&kernel)));
    details.insert("cgroup2".into(), json!(cgroup2.display().to_string()));
    details.insert(
        "policy_dir".into(),
        json!(paths.policy_dir.display().to_string()),
    );
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
    tokio::task::spawn_blocking(move || w.write_durable(vec![start]))
        .await
        .map_err(|e| DaemonError::Write(e.to_string()))??;

    let (cmd_tx, cmd_rx) = mpsc::channel();
    let enforcer = Enforcer {
        kernel,
        holds,
        drops,
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

    let reader = tokio::spawn(read_events(
        ring,
        views,
        writer.clone(),
        cmd_tx.clone(),
        stats.clone(),
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
    let server = tokio::spawn(serve_control(listener, cmd_tx.clone()));
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
    reader.abort();
    let _ = reader.await;
    let _ = ask(&cmd_tx, |reply| Command::Stop {
        actor: actor.clone(),
        reply,
    })
    .await;
    let _ = enforcer_thread.join();
    drop(cmd_tx);
    drop(writer);
    let _ = writer_thread.join();
    let _ = std::fs::remove_file(&paths.socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> policy::Policy {
        policy::parse_policy("p.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_unreadable_log_stops_the_start_instead_of_hiding_the_downtime() {
        use crate::evidence::{Durability, StoreError};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = EvidenceStore::open(&dir.path().join("evidence.db")).expect("open");
        let start = Actor::current().entry(Recorded {
            kind: "daemon_start",
            agent: "warden",
            owner: "system",
            action: "warden.start",
            target: "-",
            decision: "recorded",
            policy_snapshot: "none",
            details: serde_json::Map::new(),
        });
        store.append(&[start], Durability::Batched).expect("append");
        let (last, _) = previous_run(&store).expect("a readable log");
        assert_eq!(last.map(|(e, stopped)| (e.seq, stopped)), Some((1, false)));
        // Valid JSON, so SQLite's checks pass, but not an entry's details.
        store
            .connection()
            .execute_batch(
                "DROP TRIGGER evidence_no_update; UPDATE evidence SET details = '[]' WHERE seq = 1",
            )
            .expect("tamper");
        let err = previous_run(&store).expect_err("an unreadable entry");
        assert!(
            matches!(err, StoreError::MalformedDetails { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn policies_needing_a_missing_mechanism_are_refused_with_the_reason() {
        let net = parse(
            "version: 1\nrules:\n  - id: a\n    connect: { to: 10.0.0.1 }\n    decision: allow\n",
        );
        let both = parse(
            "version: 1\nrules:\n  - id: a\n    exec: { path: /bin/sh }\n    decision: allow\n  \
             - id: b\n    file: { prefix: /etc/, access: [read] }\n    decision: allow\n",
        );
        assert_eq!(
            check_supported(&net, "p.yaml", Some("no BTF"), Some("no BTF")),
            Ok(())
        );
        assert_eq!(check_supported(&both, "p.yaml", None, None), Ok(()));
        assert_eq!(
            check_supported(&both, "p.yaml", Some("no BTF"), None),
            Err(
                "p.yaml: exec rules need tp_btf/sched_process_exec: no BTF; refusing the policy"
                    .into()
            )
        );
        assert_eq!(
            check_supported(&both, "p.yaml", Some("x"), Some("y")),
            Err(
                "p.yaml: exec rules need tp_btf/sched_process_exec: x; file rules need \
                 tp_btf/sys_exit: y; refusing the policy"
                    .into()
            )
        );
    }

    #[test]
    fn holds_need_sys_exit_except_under_bpf_lsm() {
        let exec_hold = parse(
            "version: 1\nrules:\n  - id: a\n    exec: { path: /bin/sh }\n    decision: hold\n",
        );
        let file_hold = parse(
            "version: 1\nrules:\n  - id: a\n    file: { path: /etc/x, access: [read] }\n    decision: hold\n",
        );
        let net_hold = parse(
            "version: 1\nrules:\n  - id: a\n    connect: { to: 10.0.0.1 }\n    decision: hold\n",
        );
        let fallback = crate::lsm::LsmState::default();
        let lsm = crate::lsm::LsmState {
            exec: true,
            file: true,
            unavailable: None,
        };
        assert_eq!(hold_needs(&exec_hold, &fallback), (true, true));
        assert_eq!(hold_needs(&file_hold, &fallback), (true, false));
        assert_eq!(hold_needs(&net_hold, &fallback), (true, false));
        assert_eq!(hold_needs(&exec_hold, &lsm), (false, false));
        assert_eq!(hold_needs(&file_hold, &lsm), (false, false));
        assert_eq!(hold_needs(&net_hold, &lsm), (true, false));
    }
}
