//! The event reader: drains the ring buffer, decodes and attributes each
//! decision, hands batches to the writer and holds to the enforcer.

use std::sync::{atomic::Ordering, mpsc, Arc, Mutex, RwLock};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::{
    enforcer::Command,
    summaries::{FirstSeen, RepeatKey},
    views::{Stats, Views},
    writer::EvidenceWriter,
};
use crate::{
    attribution::{self, AgentView, PolicyView, ProcessFacts, UserNames},
    clock::BootClock,
    decode,
    evidence::NewEntry,
};

pub(super) async fn read_events(
    ring: RingBuf<MapData>,
    views: Arc<RwLock<Views>>,
    writer: EvidenceWriter,
    enforcer: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    first_seen: Arc<Mutex<FirstSeen>>,
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
        let mut firsts = Vec::new();
        let batch = tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let batch = drain(guard.get_inner_mut(), &views, &enforcer, &stats, &mut users, &mut firsts);
                guard.clear_ready();
                batch
            }
            _ = tick.tick() => drain(fd.get_mut(), &views, &enforcer, &stats, &mut users, &mut firsts),
        };
        if !batch.is_empty() {
            writer.queue(batch);
        }
        // Remembered once queued, so a summary naming a first is always
        // queued after it.
        if !firsts.is_empty() {
            let mut seen = first_seen.lock().expect("first-seen lock");
            for (key, entry) in firsts {
                seen.remember(key, entry);
            }
        }
    }
}

pub(super) fn drain(
    ring: &mut RingBuf<MapData>,
    views: &RwLock<Views>,
    enforcer: &mpsc::Sender<Command>,
    stats: &Stats,
    users: &mut UserNames,
    firsts: &mut Vec<(RepeatKey, NewEntry)>,
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
                if ev.method == warden_common::Method::Allow {
                    firsts.push((RepeatKey::of_event(&ev), entry.clone()));
                }
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
