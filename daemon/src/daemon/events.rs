//! The event reader: drains the ring buffer, decodes and attributes each
//! decision, hands batches to the writer and holds to the enforcer.

use std::sync::{atomic::Ordering, mpsc, Arc, Mutex, RwLock};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::{
    enforcer::Command,
    pending::{Pending, PendingRefusals},
    summaries::{FirstSeen, PackedFirst, RepeatKey},
    views::{Stats, Views},
    writer::{Drained, EvidenceWriter, MAX_BATCH},
};
use crate::{
    attribution::{self, AgentView, FactsCache, PolicyView, UserNames},
    clock::BootClock,
    decode,
    evidence::NewEntry,
    kernel::{
        backpressure::{self, Backpressure},
        ring_positions::RingPositions,
    },
};

/// A `drained` barrier: its reply, and the agent whose refusals it waits
/// for. `None` (the request without an agent): every record queued before
/// it, through a marker behind the writer's whole queue.
pub(super) struct Barrier {
    pub(super) agent: Option<String>,
    pub(super) done: Drained,
}

/// How long the daemon may go without draining before the kernel stops
/// parking records for it (then `on_evidence_loss` decides): long enough
/// for a daemon stopped or busy for a few seconds, short enough that an
/// agent does not wait for a dead one.
const HEARTBEAT_STALE_NS: u64 = warden_common::limits::HEARTBEAT_STALE_NS;

#[expect(
    clippy::too_many_arguments,
    reason = "the reader's handles, each owned by the task it runs as"
)]
pub(super) async fn read_events(
    ring: RingBuf<MapData>,
    mut parked: Backpressure,
    views: Arc<RwLock<Views>>,
    writer: EvidenceWriter,
    enforcer: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    first_seen: Arc<Mutex<FirstSeen>>,
    mut barriers: tokio::sync::mpsc::Receiver<Barrier>,
) -> std::io::Result<()> {
    // Where a barrier's records end: the producer position when it
    // arrived (without the mappings, a drain that empties the ring buffer,
    // which a flooding agent can put off indefinitely).
    let positions = RingPositions::new(&ring)
        .map_err(|e| tracing::warn!(error = %crate::error_chain(&e), "drained barriers wait for an empty ring buffer"))
        .ok();
    let target = || positions.as_ref().map(RingPositions::producer);
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
    let mut backlog = false;
    // `drained` barriers waiting for the records submitted before them to
    // be taken, each with the producer position when it arrived.
    let mut waiting: Vec<(Barrier, Option<usize>)> = Vec::new();
    // Barriers that arrived after this iteration's drain.
    let mut arrived: Vec<(Barrier, Option<usize>)> = Vec::new();
    let pending = writer.pending();
    // Records taken from the kernel and not yet queued to the writer, in
    // order (see `Taken`).
    let mut stash: std::collections::VecDeque<Taken> = std::collections::VecDeque::new();
    loop {
        let agent_ids: Vec<u32> = views
            .read()
            .expect("views lock")
            .agents
            .keys()
            .copied()
            .collect();
        parked.share_out(agent_ids.into_iter());
        if let Err(e) = parked.beat(HEARTBEAT_STALE_NS) {
            tracing::warn!(error = %e, "heartbeat not written");
        }
        let mut firsts = Vec::new();
        // Takes what the ring buffer holds, off the runtime's workers.
        let mut take = |ring: &mut RingBuf<MapData>| {
            off_the_workers(|| {
                drain(
                    ring,
                    &views,
                    &enforcer,
                    pending,
                    &stats,
                    &mut users,
                    &mut firsts,
                )
            })
        };
        // A drain that stopped at `MAX_BATCH` left records behind: take them
        // now rather than on the next wake-up.
        let mut batch = if backlog {
            take(fd.get_mut())
        } else {
            tokio::select! {
                guard = fd.readable_mut() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    let batch = take(ring);
                    guard.clear_ready();
                    batch
                }
                _ = tick.tick() => {
                    take(fd.get_mut())
                }
                Some(barrier) = barriers.recv() => {
                    // Whatever the kernel queued before the request is
                    // taken now, not on the next tick.
                    waiting.push((barrier, target()));
                    take(fd.get_mut())
                }
            }
        };
        backlog = batch.len() >= MAX_BATCH;
        let (more, resume) = drain_parked(
            &mut parked,
            &views,
            &enforcer,
            pending,
            &stats,
            &mut users,
            &mut firsts,
        );
        batch.extend(more);
        stash.push_back(Taken {
            _pending: pending.of_entries(&batch),
            entries: batch,
            firsts,
            resume,
        });
        // A barrier whose records are not all taken yet: the reader goes
        // on draining rather than wait for the writer's room (up to
        // `MAX_STASHED` entries), so the barrier does not wait for the
        // writer's backlog of other records.
        let barrier_behind = match &positions {
            Some(p) => waiting
                .iter()
                .any(|(_, at)| at.is_some_and(|at| !p.consumed(at))),
            None => false,
        };
        while let Some(front) = stash.pop_front() {
            let Taken {
                entries,
                firsts,
                resume,
                _pending,
            } = front;
            if !entries.is_empty() {
                if let Err(back) = writer.try_queue(entries) {
                    stash.push_front(Taken {
                        entries: back,
                        firsts,
                        resume,
                        _pending,
                    });
                    let stashed: usize = stash.iter().map(|t| t.entries.len()).sum();
                    if barrier_behind && stashed < MAX_STASHED {
                        break;
                    }
                    // A barrier that arrives while the reader waits for the
                    // writer does not wait with it: it is answered after
                    // the next drain (of the ring buffer and the parked
                    // records), the rest stays stashed.
                    if positions.is_some() {
                        while let Ok(barrier) = barriers.try_recv() {
                            arrived.push((barrier, target()));
                        }
                        if !arrived.is_empty() && stashed < MAX_STASHED {
                            break;
                        }
                    }
                    // Waits while the writer is behind (see `QUEUED_JOBS`),
                    // still beating: the daemon is alive and the parked
                    // threads will be continued, so the kernel should keep
                    // parking, not give up.
                    if let Err(e) = parked.beat(HEARTBEAT_STALE_NS) {
                        tracing::warn!(error = %e, "heartbeat not written");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            }
            // Queued (its refusals now counted by the writer): `_pending`
            // goes. Remembered once queued, so a summary naming a first is
            // always queued after it.
            if !firsts.is_empty() {
                let mut seen = first_seen.lock().expect("first-seen lock");
                for (key, entry) in firsts {
                    seen.remember_packed(key, entry);
                }
            }
            // Recorded (queued to the writer in order): the threads go on.
            for (pid, tid) in resume {
                backpressure::resume(pid, tid);
            }
        }
        // A barrier is drained once the consumer position has passed the
        // producer position it arrived at (every record submitted before
        // it taken) and a drain of the parked records has run since it
        // arrived: those records are now with the writer (its refusals
        // counted as pending) or with the enforcer (counted too), ahead of
        // the barrier.
        let mut still = Vec::new();
        for (Barrier { agent, done }, at) in std::mem::take(&mut waiting) {
            let drained = match (at, &positions) {
                (Some(at), Some(p)) => {
                    p.consumed(at)
                        || agent.as_deref().is_some_and(|agent| {
                            // Or nothing of the agent's that may be a
                            // refusal is among the records not taken yet:
                            // the backlog before it need not be decoded.
                            let ids: Vec<u32> = views
                                .read()
                                .expect("views lock")
                                .agents
                                .iter()
                                .filter(|(_, v)| v.name == agent)
                                .map(|(id, _)| *id)
                                .collect();
                            p.none_before(at, |rec| decode::may_be_refusal_of(rec, &ids))
                        })
                }
                _ => !backlog,
            } && (agent.is_some() || stash.is_empty());
            if !drained {
                still.push((Barrier { agent, done }, at));
                continue;
            }
            if let Some(agent) = agent {
                // Answered once none of the agent's refusals is still
                // queued before the writer's commit: at once if none is,
                // whatever else the writer has queued.
                writer.pending().wait(
                    &agent,
                    Box::new(move || {
                        let _ = done.send(Ok(()));
                    }),
                );
                continue;
            }
            // Without an agent: a marker behind everything queued.
            let mut marker = done;
            while let Err(back) = writer.try_mark(marker) {
                marker = back;
                if let Err(e) = parked.beat(HEARTBEAT_STALE_NS) {
                    tracing::warn!(error = %e, "heartbeat not written");
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        waiting = still;
        // Arrived during this drain: answered after the next one.
        waiting.append(&mut arrived);
        while let Ok(barrier) = barriers.try_recv() {
            waiting.push((barrier, target()));
        }
        if !waiting.is_empty() {
            // Drain again at once, letting the runtime's other tasks in.
            backlog = true;
            tokio::task::yield_now().await;
        }
    }
}

/// Records taken from the kernel, waiting for the writer's room: the
/// entries, the firsts to remember and the parked threads to continue once
/// they are queued, and their refusals counted as pending meanwhile.
struct Taken {
    entries: Vec<NewEntry>,
    firsts: Vec<(RepeatKey, PackedFirst)>,
    resume: Vec<(u32, u32)>,
    _pending: Vec<Pending>,
}

/// The most entries the reader holds while a barrier's records are still
/// being taken (more than the 8 MiB ring buffer's ~22,000 records; past
/// it, the reader waits for the writer's room as it does otherwise).
const MAX_STASHED: usize = 8 * MAX_BATCH;

/// Runs `f`, which reads /proc for every event (blocking file reads), where
/// it does not hold up the runtime's other tasks (the control socket): the
/// worker hands its queue to another thread first.
fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Takes records from the ring buffer until it is empty or `MAX_BATCH`
/// entries are collected.
pub(super) fn drain(
    ring: &mut RingBuf<MapData>,
    views: &RwLock<Views>,
    enforcer: &mpsc::Sender<Command>,
    pending: &PendingRefusals,
    stats: &Stats,
    users: &mut UserNames,
    firsts: &mut Vec<(RepeatKey, PackedFirst)>,
) -> Vec<NewEntry> {
    let boot = BootClock::now();
    let mut batch = Vec::new();
    let mut facts = FactsCache::default();
    while batch.len() < MAX_BATCH {
        let Some(item) = ring.next() else { break };
        let decoded = decode::decode(&item);
        drop(item);
        route(
            decoded, &boot, views, enforcer, pending, stats, users, &mut facts, &mut batch, firsts,
        );
    }
    batch
}

/// Drains the records parked while the ring buffer was full (after the
/// ring buffer, so that each agent's records keep their order as far as
/// possible). Returns the batch, and the (pid, tid) of the threads to
/// continue once it is queued.
pub(super) fn drain_parked(
    parked: &mut Backpressure,
    views: &RwLock<Views>,
    enforcer: &mpsc::Sender<Command>,
    pending: &PendingRefusals,
    stats: &Stats,
    users: &mut UserNames,
    firsts: &mut Vec<(RepeatKey, PackedFirst)>,
) -> (Vec<NewEntry>, Vec<(u32, u32)>) {
    let boot = BootClock::now();
    let mut batch = Vec::new();
    let mut resume = Vec::new();
    let mut facts = FactsCache::default();
    for rec in parked.drain() {
        let decoded = decode::decode(&rec.bytes);
        if rec.stopped {
            let pid = decoded.as_ref().map_or(rec.tid, |ev| ev.pid);
            resume.push((pid, rec.tid));
        }
        stats.parked.fetch_add(1, Ordering::Relaxed);
        route(
            decoded, &boot, views, enforcer, pending, stats, users, &mut facts, &mut batch, firsts,
        );
    }
    (batch, resume)
}

/// Decodes and attributes one record, and sends it where it goes: holds
/// to the enforcer, the rest into `batch`.
#[expect(
    clippy::too_many_arguments,
    reason = "the reader's state, passed apart so each borrow stays short"
)]
fn route(
    decoded: Result<decode::KernelEvent, decode::DecodeError>,
    boot: &BootClock,
    views: &RwLock<Views>,
    enforcer: &mpsc::Sender<Command>,
    pending: &PendingRefusals,
    stats: &Stats,
    users: &mut UserNames,
    facts_cache: &mut FactsCache,
    batch: &mut Vec<NewEntry>,
    firsts: &mut Vec<(RepeatKey, PackedFirst)>,
) {
    {
        let ev = match decoded {
            Ok(ev) => ev,
            Err(e) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "undecodable event");
                return;
            }
        };
        let lock = views;
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
                    budget_ids: Vec::new(),
                    approvers: Default::default(),
                    hold_timeout: std::time::Duration::from_secs(1),
                })
            });
        let freeze = views.freezes.get(&ev.policy_gen).cloned();
        // A shadow record: the policy in force, which decided the action.
        let enforced_policy = ev.enforced.map(|_| {
            views
                .policies
                .get(&(ev.policy_gen & !warden_common::SHADOW_GENERATION))
                .cloned()
        });
        drop(views);
        if let decode::Action::Escape {
            pid,
            from_cgroup,
            killed,
            ..
        } = ev.action
        {
            // Killed here unless the kernel killed it in place (the
            // record of the move), or at its syscall exit (a second record).
            let in_kernel = warden_common::escape_killed::ESCAPED
                | warden_common::escape_killed::AT_SYSCALL_EXIT;
            if killed & in_kernel == 0 {
                let _ = enforcer.send(Command::KillEscaped {
                    pid,
                    agent_cgroup: from_cgroup,
                });
            }
        }
        let exec = matches!(ev.action, decode::Action::Exec { .. });
        let facts = facts_cache.get(ev.pid, &ev.comm, exec);
        let mut entry = attribution::decision_entry(
            &ev,
            boot.to_unix_ns(ev.boot_ns),
            &agent,
            &policy,
            &facts,
            users,
        );
        if let (Some((_, rule)), Some(enforced)) = (ev.enforced, enforced_policy) {
            let (rule, snapshot) = enforced.map_or_else(
                || (format!("rule#{rule}"), "none".to_string()),
                |p| (p.rule_id(rule), p.snapshot.clone()),
            );
            entry
                .details
                .insert("enforced_rule".into(), serde_json::json!(rule));
            entry
                .details
                .insert("enforced_snapshot".into(), serde_json::json!(snapshot));
        }
        if ev.enforced.is_some() {
            lock.write().expect("views lock").count_shadow(&entry);
        }
        if let Some(window) = freeze {
            // Decided under a freeze window's variant of the policy.
            entry
                .details
                .insert("freeze_window".into(), serde_json::json!(window));
        }
        tracing::debug!(agent = %entry.agent, pid = ev.pid, rule = %entry.rule_id, decision = %entry.decision, target = %entry.target, "decision");
        // Holds and their outcomes go to the enforcer, which owns the
        // approvals and the kernel's grants.
        // A refusal the enforcer will write counts as pending from here,
        // as the writer counts what it is given.
        let routed = match ev.method {
            warden_common::Method::Held => enforcer
                .send(Command::Held {
                    pending: pending_refusal(pending, &entry),
                    ev,
                    entry,
                    agent,
                    policy,
                    facts,
                })
                .map_err(drop),
            warden_common::Method::Approved | warden_common::Method::Rejected => enforcer
                .send(Command::Outcome {
                    pending: pending_refusal(pending, &entry),
                    ev,
                    entry,
                })
                .map_err(drop),
            _ => {
                // The decisions the kernel counts repeats of: plain allows,
                // and denials refused without a kill (a cgroup hook; BPF
                // LSM and fmod_ret execs and opens).
                if matches!(
                    ev.method,
                    warden_common::Method::Allow
                        | warden_common::Method::CgroupDeny
                        | warden_common::Method::LsmDeny
                        | warden_common::Method::FmodRetDeny
                        | warden_common::Method::Shadow
                ) {
                    firsts.push((RepeatKey::of_event(&ev), PackedFirst::pack(&entry)));
                }
                batch.push(entry);
                Ok(())
            }
        };
        if routed.is_err() {
            tracing::error!("enforcer is gone; hold event not recorded");
        }
    }
}

/// A guard counting `entry` as pending if it is a refusal the explainer
/// prints (it travels with the entry to the enforcer, which writes it).
fn pending_refusal(pending: &PendingRefusals, entry: &NewEntry) -> Option<Pending> {
    let refusal = crate::evidence::is_explained_refusal(&entry.kind, &entry.decision);
    pending.hold(&entry.agent, usize::from(refusal))
}
