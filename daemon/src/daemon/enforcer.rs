//! The enforcer thread: owns the `Kernel` (eBPF handle), the registry and
//! the holds, and takes `Command`s from the event reader, the control
//! server and the timer, one at a time, with replies.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{mpsc, Arc, Mutex, RwLock},
};

use serde_json::json;
use tokio::sync::oneshot;
use warden_common::sys_exit_mode;

use super::{
    reconcile::Enforced,
    summaries::{summary_entry, FirstSeen},
    views::{Stats, Views},
    writer::EvidenceWriter,
};
use crate::{
    actor::{Actor, Recorded},
    attribution::{AgentView, PolicyView, ProcessFacts},
    config::Paths,
    control::{AgentState, StatusReport},
    decode::KernelEvent,
    evidence::NewEntry,
    gaps::{self, DropWatch},
    holds::{Caller, HoldError, Holds, Verdict},
    kernel::Kernel,
    registry::{Registry, RegistryError},
};

pub(super) enum Command {
    /// A mutating control request: refused (and recorded) if the caller
    /// is, or descends from, a process in an agent's cgroup. Replies with
    /// the refusal message, or `None` to go ahead.
    RefuseAgentCaller {
        actor: Actor,
        verb: &'static str,
        reply: oneshot::Sender<Option<String>>,
    },
    Reconcile {
        actor: Actor,
        reply: oneshot::Sender<Vec<String>>,
    },
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
    AgentState {
        agent: String,
        reply: oneshot::Sender<Result<AgentState, RegistryError>>,
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
        /// `entry` counted as a pending refusal until it is written.
        pending: Option<super::pending::Pending>,
    },
    /// The DNS proxy held a name (`dns::HoldRequest`).
    DnsHeld(crate::dns::HoldRequest),
    /// The kernel applied a decision on a held action.
    Outcome {
        ev: KernelEvent,
        entry: NewEntry,
        /// `entry` counted as a pending refusal until it is written.
        pending: Option<super::pending::Pending>,
    },
    Decide {
        id: u64,
        verdict: Verdict,
        reason: Option<String>,
        caller: Caller,
        reply: oneshot::Sender<Result<String, HoldError>>,
    },
    Approvals {
        all: bool,
        uid: u32,
        reply: oneshot::Sender<Vec<crate::approvals::Approval>>,
    },
    /// `warden budget reset`: replies with what was done, or the refusal.
    BudgetReset {
        agent: String,
        budget: String,
        reason: String,
        actor: Actor,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// `warden policy propose` (daemon/governance.rs).
    Propose {
        agent: String,
        file: String,
        text: String,
        caller: Caller,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// `warden policy review`.
    Review {
        id: u64,
        approve: bool,
        comment: Option<String>,
        caller: Caller,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// `warden freeze override`.
    FreezeOverride {
        agent: String,
        reason: String,
        caller: Caller,
        reply: oneshot::Sender<Result<String, String>>,
    },
    ExpireHolds,
    /// `warden run --agent CHILD` from a process that may be in an agent.
    DelegatedRun {
        child: String,
        argv: Vec<String>,
        options: bool,
        actor: Actor,
        reply: oneshot::Sender<Result<super::delegation::DelegatedRun, String>>,
    },
    /// `warden run --agent A` outside every agent: state, and the run's
    /// start recorded (`run_start`).
    RunStart {
        start: super::run_start::RunStart,
        actor: Actor,
        reply: oneshot::Sender<Result<(AgentState, Option<u64>), String>>,
    },
    /// `warden kill` asks the daemon to record it (`kill_record.rs`).
    KillRecord {
        kill: super::kill_record::KillRecord,
        actor: Actor,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A process of an agent left the agent's subtree and the kernel could
    /// not kill it in place (it did not move itself): kill it here.
    KillEscaped {
        pid: u32,
        agent_cgroup: u64,
    },
    /// Write the kernel's counts of repeated allowed actions as `summary`
    /// entries and reset them (every `WARDEN_SUMMARY_SECS`).
    SweepSummaries,
    /// Apply decisions recorded but not applied before a restart.
    Replay {
        reply: oneshot::Sender<()>,
    },
}

pub(super) struct Enforcer {
    pub(super) kernel: Kernel,
    pub(super) holds: Holds,
    pub(super) drops: DropWatch,
    /// Over-share refusals already recorded, per (agent, class).
    pub(super) throttles: gaps::ThrottleWatch,
    pub(super) registry: Registry,
    pub(super) paths: Paths,
    pub(super) views: Arc<RwLock<Views>>,
    pub(super) writer: EvidenceWriter,
    pub(super) stats: Arc<Stats>,
    pub(super) enforced: HashMap<String, Enforced>,
    pub(super) policy_errors: Vec<String>,
    pub(super) started_at_ns: i64,
    pub(super) cgroup2: PathBuf,
    /// Hex of the Ed25519 key that signs checkpoints, and its short id.
    pub(super) public_key: String,
    pub(super) key_id: String,
    /// Entries of allowed actions recorded individually (see `summaries`).
    pub(super) first_seen: Arc<Mutex<FirstSeen>>,
    /// Each agent's `monitor:` settings, read by the sentinel.
    pub(super) monitors: crate::sentinel::hook::Monitors,
    /// The evidence disk cap and whether it holds (`evidence_cap`).
    pub(super) cap: super::evidence_cap::CapState,
    /// The budget window of the last egress drops recorded, per (agent
    /// id, budget index): the next sweep in it counts (`egress`).
    pub(super) egress_windows: HashMap<(u32, u32), u64>,
}

impl Enforcer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::RefuseAgentCaller { actor, verb, reply } => {
                    let _ = reply.send(self.refuse_agent_caller(&actor, verb));
                }
                Command::DelegatedRun {
                    child,
                    argv,
                    options,
                    actor,
                    reply,
                } => {
                    let _ = reply.send(self.delegated_run(&child, &argv, options, &actor));
                }
                Command::RunStart {
                    start,
                    actor,
                    reply,
                } => {
                    let _ = reply.send(self.run_start(start, &actor));
                }
                Command::KillRecord { kill, actor, reply } => {
                    let _ = reply.send(self.kill_record(kill, &actor));
                }
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
                    pending,
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
                    // Written (or not to be): the agent's barrier may go.
                    drop(pending);
                }
                Command::DnsHeld(held) => {
                    let (cgroup_id, snapshot, name) =
                        (held.cgroup_id, held.snapshot.clone(), held.name.clone());
                    match self.holds.on_dns_held(held) {
                        Ok(Some(entry)) => self.record(entry),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %crate::error_chain(&e), name = %name, "record held DNS name");
                            crate::dns::hold_failed(cgroup_id, &snapshot, &name);
                        }
                    }
                }
                Command::Outcome { ev, entry, pending } => {
                    match self.holds.on_outcome(&ev, entry) {
                        Ok(entry) => self.record(entry),
                        Err(e) => {
                            tracing::error!(error = %crate::error_chain(&e), "record hold outcome")
                        }
                    }
                    drop(pending);
                }
                Command::Decide {
                    id,
                    verdict,
                    reason,
                    caller,
                    reply,
                } => {
                    let _ = reply.send(self.decide(id, verdict, reason.as_deref(), &caller));
                }
                Command::KillEscaped { pid, agent_cgroup } => {
                    let dir = self
                        .enforced
                        .values()
                        .find(|e| e.cgroup_id == agent_cgroup)
                        .map(|e| e.cgroup.clone());
                    let killed = dir.is_some_and(|dir| {
                        crate::kernel::escape::kill_escaped(&self.kernel, pid, agent_cgroup, &dir)
                    });
                    tracing::warn!(pid, agent_cgroup, killed, "process left its agent's cgroup");
                }
                Command::BudgetReset {
                    agent,
                    budget,
                    reason,
                    actor,
                    reply,
                } => {
                    let _ = reply.send(self.budget_reset(&agent, &budget, &reason, &actor));
                }
                Command::Approvals { all, uid, reply } => {
                    let _ = reply.send(self.approvals(all, uid));
                }
                Command::Propose {
                    agent,
                    file,
                    text,
                    caller,
                    reply,
                } => {
                    let _ = reply.send(self.propose(&agent, &file, &text, &caller));
                }
                Command::Review {
                    id,
                    approve,
                    comment,
                    caller,
                    reply,
                } => {
                    let _ = reply.send(self.review(id, approve, comment.as_deref(), &caller));
                }
                Command::FreezeOverride {
                    agent,
                    reason,
                    caller,
                    reply,
                } => {
                    let _ = reply.send(self.freeze_override(&agent, &reason, &caller));
                }
                Command::ExpireHolds => {
                    self.check_cap();
                    // Freeze window edges: the kernel's rules follow the
                    // clock within a second.
                    self.freeze_tick();
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
                        let losses = self.kernel.agent_losses().unwrap_or_default();
                        for gap in self.throttles.check(&losses, name_of, &Actor::current()) {
                            tracing::warn!(agent = %gap.agent, class = %gap.target, throttled = %gap.details["throttled"], "actions over the agent's share refused");
                            self.record(gap);
                        }
                        for mut gap in
                            self.drops
                                .check(&per_agent, &counters, name_of, &Actor::current())
                        {
                            if let Some(id) = gap.details["agent_id"].as_u64() {
                                gaps::name_classes(&mut gap, id as u32, &losses);
                            }
                            tracing::warn!(
                                agent = %gap.agent,
                                lost = %gap.details["lost"],
                                allowed_unrecorded = %gap.details["allowed_unrecorded"],
                                "actions not recorded: ring buffer full"
                            );
                            self.record(gap);
                        }
                    }
                    if let Err(e) = self.holds.expire(&mut self.kernel) {
                        tracing::error!(error = %crate::error_chain(&e), "expire holds");
                    }
                    if let Err(e) = self.holds.reap(&mut self.kernel) {
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
                    if let Err(e) = self.holds.reseize(&self.kernel) {
                        tracing::error!(error = %crate::error_chain(&e), "seize paused threads");
                    }
                    match self.holds.replay(&mut self.kernel) {
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
                Command::SweepSummaries => {
                    self.sweep_summaries();
                    self.sweep_egress();
                }
                Command::Stop { actor, reply } => {
                    self.sweep_summaries();
                    self.sweep_egress();
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
    pub(super) fn reconcile(&mut self, actor: &Actor) -> Vec<String> {
        self.reconcile_all(actor)
    }

    /// Writes an entry durably, logging (not failing) if it cannot.
    pub(super) fn record(&self, entry: NewEntry) {
        if let Err(e) = self.writer.write_durable(vec![entry]) {
            tracing::error!(error = %e, "evidence write failed");
        }
    }

    pub(super) fn policy_by_snapshot(&self, snapshot: &str) -> Option<Arc<PolicyView>> {
        let views = self.views.read().expect("views lock");
        views
            .policies
            .values()
            .find(|p| p.snapshot == snapshot)
            .cloned()
    }

    pub(super) fn decide(
        &mut self,
        id: u64,
        verdict: Verdict,
        reason: Option<&str>,
        caller: &Caller,
    ) -> Result<String, HoldError> {
        let approval = self.holds.get(id)?;
        let current = self
            .enforced
            .get(&approval.job.agent)
            .map(|e| e.snapshot.clone());
        let policy = self.policy_by_snapshot(&approval.policy_snapshot);
        let cgroups: Vec<PathBuf> = self.enforced.values().map(|e| e.cgroup.clone()).collect();
        self.holds.decide(
            &mut self.kernel,
            id,
            verdict,
            reason,
            caller,
            current.as_deref(),
            policy.as_deref(),
            &cgroups,
        )
    }

    /// Holds the caller may see: all for root, otherwise those it may decide.
    pub(super) fn approvals(&self, all: bool, uid: u32) -> Vec<crate::approvals::Approval> {
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

    /// Agents may not use mutating verbs, whatever user they run as: the
    /// caller and each of its ancestors (up to `MAX_ANCESTORS`) must be
    /// outside every agent cgroup, and a caller whose cgroup cannot be
    /// read is refused too. A refusal is recorded (`control_refused`).
    pub(super) fn refuse_agent_caller(&self, actor: &Actor, verb: &str) -> Option<String> {
        let cgroups: Vec<PathBuf> = self.enforced.values().map(|e| e.cgroup.clone()).collect();
        let why = match agent_lineage(actor.pid, &cgroups) {
            Ok(None) => return None,
            Ok(Some((pid, cgroup))) => format!(
                "refused: `{verb}` from pid {} (process {pid} runs in agent cgroup {}); agents \
                 cannot change Warden",
                actor.pid,
                cgroup.display()
            ),
            Err(e) => format!(
                "refused: `{verb}` from pid {}: cannot tell whether it runs inside an agent ({e})",
                actor.pid
            ),
        };
        let mut details = serde_json::Map::new();
        details.insert("verb".into(), json!(verb));
        details.insert("reason".into(), json!(why));
        self.record(actor.entry(Recorded {
            kind: "control_refused",
            agent: "warden",
            owner: "system",
            action: "control.request",
            target: verb,
            decision: "deny",
            policy_snapshot: "none",
            details,
        }));
        Some(why)
    }

    /// Writes one `summary` entry per key the kernel counted repeats of,
    /// and deletes the keys (their next action is recorded individually).
    pub(super) fn sweep_summaries(&mut self) {
        let swept = match self.kernel.sweep_summaries() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "sweep repeated actions");
                return;
            }
        };
        let boot = crate::clock::BootClock::now();
        let now = crate::clock::now_ns();
        let views = self.views.read().expect("views lock");
        let mut first = self.first_seen.lock().expect("first-seen lock");
        let entries: Vec<NewEntry> = swept
            .iter()
            .map(|s| {
                summary_entry(
                    s,
                    &first,
                    now,
                    |b| boot.to_unix_ns(b),
                    |key| {
                        let agent =
                            views
                                .agents
                                .get(&key.agent_id())
                                .cloned()
                                .unwrap_or(AgentView {
                                    name: format!("agent#{}", key.agent_id()),
                                    owner: "unknown".into(),
                                });
                        let policy = views
                            .policies
                            .get(&key.policy_gen())
                            .cloned()
                            .unwrap_or_else(|| {
                                Arc::new(PolicyView {
                                    snapshot: "none".into(),
                                    rule_ids: Vec::new(),
                                    budget_ids: Vec::new(),
                                    approvers: Default::default(),
                                    hold_timeout: std::time::Duration::from_secs(1),
                                })
                            });
                        (agent, policy, ProcessFacts::read(key.pid(), "unknown"))
                    },
                )
            })
            .collect();
        let forgotten = first.rotate();
        drop(first);
        drop(forgotten);
        drop(views);
        {
            let mut views = self.views.write().expect("views lock");
            for e in &entries {
                views.count_shadow(e);
            }
        }
        // The agent's kernel decision counter as of this sweep, so an
        // auditor can check that individual entries and counts add up.
        let kernel: HashMap<u32, u64> = self
            .kernel
            .agent_counters()
            .unwrap_or_default()
            .into_iter()
            .map(|(id, c)| (id, c.decisions))
            .collect();
        let mut entries = entries;
        for (e, s) in entries.iter_mut().zip(&swept) {
            if let Some(d) = kernel.get(&s.key.agent_id) {
                e.details.insert("agent_kernel_decisions".into(), json!(d));
            }
        }
        if !entries.is_empty() {
            tracing::debug!(summaries = entries.len(), "repeated actions summarised");
            self.writer.queue(entries);
        }
    }

    /// Measures the database and reaches or lifts the evidence cap
    /// (see `evidence_cap`), recording either change.
    pub(super) fn check_cap(&mut self) {
        use super::evidence_cap::{transition, used_bytes};
        let pages = match self.registry.database_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "evidence cap: measure the database");
                return;
            }
        };
        self.cap.used_bytes = used_bytes(pages, &self.paths.database());
        let Some(reach) = transition(self.cap.reached, self.cap.used_bytes, self.cap.cap_bytes)
        else {
            return;
        };
        if let Err(e) = self.kernel.set_count_all(reach) {
            tracing::error!(error = %crate::error_chain(&e), "evidence cap: set agent flags");
            return;
        }
        self.cap.reached = reach;
        self.cap.since_ns = reach.then(crate::clock::now_ns);
        let mut details = serde_json::Map::new();
        details.insert("cap_bytes".into(), json!(self.cap.cap_bytes));
        details.insert("used_bytes".into(), json!(self.cap.used_bytes));
        details.insert("cap_source".into(), json!(self.cap.source));
        details.insert(
            "effect".into(),
            json!(if reach {
                "allowed actions and denials without a kill are counted only (summary entries); kills, holds, approvals and gaps are recorded one by one"
            } else {
                "actions are recorded as the policies say"
            }),
        );
        if reach {
            tracing::warn!(
                used = self.cap.used_bytes,
                cap = self.cap.cap_bytes,
                "evidence cap reached: countable actions are counted only"
            );
        } else {
            tracing::info!(
                used = self.cap.used_bytes,
                cap = self.cap.cap_bytes,
                "evidence cap lifted"
            );
        }
        let entry = Actor::current().entry(Recorded {
            kind: "evidence_cap",
            agent: "warden",
            owner: "system",
            action: "evidence.cap",
            target: &self.paths.database().display().to_string(),
            decision: if reach { "reached" } else { "lifted" },
            policy_snapshot: "none",
            details,
        });
        self.record(entry);
    }

    pub(super) fn stop(&mut self, actor: &Actor) {
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

/// How many parents `agent_lineage` follows: far more than a process tree
/// between a login shell and a client needs.
const MAX_ANCESTORS: usize = 64;

/// The first of `pid` and its ancestors (`PPid` chain, bounded) that runs
/// in one of `agent_cgroups` (or below it), with that cgroup.
fn agent_lineage(
    pid: u32,
    agent_cgroups: &[PathBuf],
) -> Result<Option<(u32, PathBuf)>, crate::cgroup::CgroupError> {
    let mount = crate::cgroup::cgroup2_mount()?;
    let mut cur = pid;
    for depth in 0..MAX_ANCESTORS {
        let cg = match crate::cgroup::cgroup_of(&mount, cur) {
            Ok(cg) => cg,
            // An ancestor that exited: the chain above it is unknown, and
            // the caller itself was checked.
            Err(_) if depth > 0 => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(agent) = agent_cgroups.iter().find(|c| cg.starts_with(c)) {
            return Ok(Some((cur, agent.clone())));
        }
        let ppid = std::fs::read_to_string(format!("/proc/{cur}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PPid:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })
            .unwrap_or(0);
        if ppid <= 1 {
            return Ok(None);
        }
        cur = ppid;
    }
    Ok(None)
}
