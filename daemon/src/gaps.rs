//! GAP entries: the record says so when it is not complete, so an auditor
//! can tell "nothing happened" from "we don't know".
//!
//! Two kinds:
//! - downtime: at start, the daemon records the period since the previous
//!   daemon's last entry, and whether that daemon stopped cleanly (a
//!   `daemon_stop` entry) or died;
//! - lost events: the kernel counts, per agent, actions it could not record
//!   because the ring buffer was full: refused (fail-closed, the default)
//!   or allowed unrecorded (`on_evidence_loss: allow`); every increase of
//!   an agent's counts becomes an entry naming the agent, with the counts.

use std::collections::HashMap;

use serde_json::json;
use warden_common::AgentCounters;

use crate::{
    actor::{Actor, Recorded},
    evidence::{Entry, NewEntry},
    kernel::Counters,
};

fn gap_entry(
    actor: &Actor,
    action: &str,
    target: &str,
    decision: &str,
    details: serde_json::Map<String, serde_json::Value>,
) -> NewEntry {
    actor.entry(Recorded {
        kind: "gap",
        agent: "warden",
        owner: "system",
        action,
        target,
        decision,
        policy_snapshot: "none",
        details,
    })
}

/// The gap before this daemon started. `last` is the newest entry, `stopped`
/// whether the previous daemon recorded its stop after it last started.
pub fn downtime(
    last: Option<&Entry>,
    stopped: bool,
    now_ns: i64,
    actor: &Actor,
) -> Option<NewEntry> {
    let last = last?;
    let mut details = serde_json::Map::new();
    details.insert("from_ns".into(), json!(last.ts_ns));
    details.insert("to_ns".into(), json!(now_ns));
    details.insert(
        "seconds".into(),
        json!((now_ns - last.ts_ns).max(0) / 1_000_000_000),
    );
    details.insert("last_seq".into(), json!(last.seq));
    details.insert(
        "previous_daemon".into(),
        json!(if stopped {
            "stopped cleanly"
        } else {
            "ended without recording its stop (killed or crashed)"
        }),
    );
    details.insert(
        "during_gap".into(),
        json!("no daemon was reading: agents stayed enforced by the pinned programs, their decisions queued in the ring buffer (recorded after this entry); actions refused because it was full are counted in the next evidence.lost entry"),
    );
    Some(gap_entry(
        actor,
        "monitoring.gap",
        "daemon",
        "not-monitored",
        details,
    ))
}

/// Which agent an entry is about: name and owner.
pub struct AgentName {
    pub name: String,
    pub owner: String,
}

/// Watches the kernel's per-agent counts of actions whose event could not
/// be recorded (`AGENT_COUNTERS`): refused (fail-closed), or allowed
/// unrecorded (`on_evidence_loss: allow`).
pub struct DropWatch {
    /// Per agent id: the totals already recorded.
    seen: HashMap<u32, AgentCounters>,
}

impl DropWatch {
    /// `seen`: per agent id, the totals the log already accounts for.
    pub fn new(seen: HashMap<u32, AgentCounters>) -> Self {
        Self { seen }
    }

    /// Where to start after a restart: per agent, the totals of its last
    /// `evidence.lost` entry (`recorded`), but never more than the kernel
    /// counts now (after an uninstall the counts start from zero again).
    pub fn resume(recorded: &HashMap<u32, AgentCounters>, now: &[(u32, AgentCounters)]) -> Self {
        let seen = now
            .iter()
            .map(|(id, c)| {
                let r = recorded.get(id).copied().unwrap_or_default();
                (
                    *id,
                    AgentCounters {
                        decisions: 0,
                        dropped: r.dropped.min(c.dropped),
                        allowed_unrecorded: r.allowed_unrecorded.min(c.allowed_unrecorded),
                    },
                )
            })
            .collect();
        Self::new(seen)
    }

    /// One entry per agent whose kernel counts of unrecorded actions rose
    /// since last time.
    pub fn check(
        &mut self,
        per_agent: &[(u32, AgentCounters)],
        counters: &Counters,
        name_of: impl Fn(u32) -> AgentName,
        actor: &Actor,
    ) -> Vec<NewEntry> {
        let mut out = Vec::new();
        for (id, now) in per_agent {
            let seen = self.seen.entry(*id).or_default();
            // Counts that went down: the map was recreated; start over.
            if now.dropped < seen.dropped || now.allowed_unrecorded < seen.allowed_unrecorded {
                *seen = AgentCounters::default();
            }
            let lost = now.dropped - seen.dropped;
            let allowed = now.allowed_unrecorded - seen.allowed_unrecorded;
            if lost == 0 && allowed == 0 {
                continue;
            }
            *seen = *now;
            let who = name_of(*id);
            let mut details = serde_json::Map::new();
            details.insert("agent_id".into(), json!(id));
            details.insert("lost".into(), json!(lost));
            details.insert("allowed_unrecorded".into(), json!(allowed));
            details.insert("lost_total".into(), json!(now.dropped));
            details.insert(
                "allowed_unrecorded_total".into(),
                json!(now.allowed_unrecorded),
            );
            details.insert("agent_decisions_total".into(), json!(now.decisions));
            details.insert("kernel_events_total".into(), json!(counters.events));
            details.insert("kernel_dropped_total".into(), json!(counters.dropped));
            let mut modes = Vec::new();
            if lost > 0 {
                modes.push(
                    "closed: each action that could not be recorded was refused (EPERM or SIGKILL)",
                );
            }
            if allowed > 0 {
                modes.push("open (on_evidence_loss: allow): actions the policy allowed went ahead unrecorded; only this count records them");
            }
            details.insert("fail_mode".into(), json!(modes.join("; ")));
            let decision = match (lost > 0, allowed > 0) {
                (true, false) => "denied",
                (false, true) => "allowed-unrecorded",
                _ => "denied-and-allowed-unrecorded",
            };
            out.push(actor.entry(Recorded {
                kind: "gap",
                agent: &who.name,
                owner: &who.owner,
                action: "evidence.lost",
                target: "ring buffer",
                decision,
                policy_snapshot: "none",
                details,
            }));
        }
        out
    }
}

/// One agent's losses in one action class, summed over CPUs
/// (`AGENT_LOSS`), with the last process that lost an action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassLoss {
    pub agent_id: u32,
    /// `EventKind` id.
    pub kind: u32,
    pub dropped: u64,
    pub allowed_unrecorded: u64,
    pub throttled: u64,
    pub last_pid: u32,
    pub last_tid: u32,
    pub last_comm: String,
}

/// The action class of an `EventKind` id, as GAP entries name it.
pub fn class_name(kind: u32) -> &'static str {
    use warden_common::EventKind;
    match EventKind::from_u32(kind) {
        Some(EventKind::Connect4 | EventKind::Connect6) => "connect",
        Some(EventKind::Sendmsg4 | EventKind::Sendmsg6) => "sendmsg",
        Some(EventKind::Exec) => "exec",
        Some(EventKind::Open) => "open",
        Some(EventKind::Socket) => "socket",
        Some(EventKind::Rename) => "rename",
        Some(EventKind::Link) => "link",
        Some(EventKind::Escape) => "leave-agent",
        Some(EventKind::PathOp) => "path-op",
        None => "unknown",
    }
}

fn class_detail(l: &ClassLoss) -> serde_json::Value {
    json!({
        "class": class_name(l.kind),
        "lost_total": l.dropped,
        "allowed_unrecorded_total": l.allowed_unrecorded,
        "throttled_total": l.throttled,
        "last_process": { "pid": l.last_pid, "tid": l.last_tid, "comm": l.last_comm },
    })
}

/// Adds to a GAP entry of agent `agent_id` which action classes and which
/// processes lost actions (`details.classes`, and `details.processes`:
/// the last process per class).
pub fn name_classes(entry: &mut NewEntry, agent_id: u32, losses: &[ClassLoss]) {
    let mine: Vec<&ClassLoss> = losses.iter().filter(|l| l.agent_id == agent_id).collect();
    if mine.is_empty() {
        return;
    }
    entry.details.insert(
        "classes".into(),
        json!(mine.iter().map(|l| class_detail(l)).collect::<Vec<_>>()),
    );
    let mut processes: Vec<serde_json::Value> = Vec::new();
    for l in &mine {
        let p = json!({ "pid": l.last_pid, "comm": l.last_comm, "class": class_name(l.kind) });
        if !processes.contains(&p) {
            processes.push(p);
        }
    }
    entry.details.insert("processes".into(), json!(processes));
}

/// Watches the actions refused because their agent was over its share of
/// a congested ring buffer (`LossCounts::throttled`): each rise becomes
/// an `evidence.throttled` entry naming the agent, the class and the last
/// process, so a throttled action is never a silent drop.
#[derive(Default)]
pub struct ThrottleWatch {
    seen: HashMap<(u32, u32), u64>,
}

impl ThrottleWatch {
    /// Starts from the kernel's totals now (a previous daemon recorded
    /// what came before).
    pub fn starting_from(losses: &[ClassLoss]) -> Self {
        Self {
            seen: losses
                .iter()
                .map(|l| ((l.agent_id, l.kind), l.throttled))
                .collect(),
        }
    }

    pub fn check(
        &mut self,
        losses: &[ClassLoss],
        name_of: impl Fn(u32) -> AgentName,
        actor: &Actor,
    ) -> Vec<NewEntry> {
        let mut out = Vec::new();
        for l in losses {
            let seen = self.seen.entry((l.agent_id, l.kind)).or_default();
            if l.throttled < *seen {
                *seen = 0;
            }
            let new = l.throttled - *seen;
            if new == 0 {
                continue;
            }
            *seen = l.throttled;
            let who = name_of(l.agent_id);
            let mut details = serde_json::Map::new();
            details.insert("agent_id".into(), json!(l.agent_id));
            details.insert("class".into(), json!(class_name(l.kind)));
            details.insert("throttled".into(), json!(new));
            details.insert("throttled_total".into(), json!(l.throttled));
            details.insert(
                "last_process".into(),
                json!({ "pid": l.last_pid, "tid": l.last_tid, "comm": l.last_comm }),
            );
            details.insert(
                "why".into(),
                json!("the agent was over its share of a congested ring buffer: these allowed actions were refused (EPERM) and only this count records them"),
            );
            out.push(actor.entry(Recorded {
                kind: "gap",
                agent: &who.name,
                owner: &who.owner,
                action: "evidence.throttled",
                target: class_name(l.kind),
                decision: "denied",
                policy_snapshot: "none",
                details,
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> Actor {
        Actor::current()
    }

    #[test]
    fn drops_are_reported_once_per_agent_with_the_difference() {
        let mut w = DropWatch::new(HashMap::new());
        let c = Counters {
            events: 10,
            ..Default::default()
        };
        let name = |id: u32| AgentName {
            name: format!("a{id}"),
            owner: "o".into(),
        };
        let k = |dropped, allowed_unrecorded| AgentCounters {
            decisions: 20,
            dropped,
            allowed_unrecorded,
        };
        assert!(w.check(&[(1, k(0, 0))], &c, name, &actor()).is_empty());
        let e = w.check(&[(1, k(7, 0)), (2, k(0, 3))], &c, name, &actor());
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kind, "gap");
        assert_eq!(e[0].agent, "a1");
        assert_eq!(e[0].details["lost"], 7);
        assert_eq!(e[1].agent, "a2");
        assert_eq!(e[1].details["allowed_unrecorded"], 3);
        assert!(w
            .check(&[(1, k(7, 0)), (2, k(0, 3))], &c, name, &actor())
            .is_empty());
        assert_eq!(
            w.check(&[(1, k(9, 0))], &c, name, &actor())[0].details["lost"],
            2
        );
    }

    #[test]
    fn resume_starts_from_what_the_log_recorded() {
        let recorded = HashMap::from([(
            1,
            AgentCounters {
                decisions: 0,
                dropped: 5,
                allowed_unrecorded: 0,
            },
        )]);
        let now = [(
            1,
            AgentCounters {
                decisions: 9,
                dropped: 8,
                allowed_unrecorded: 0,
            },
        )];
        let mut w = DropWatch::resume(&recorded, &now);
        let name = |_| AgentName {
            name: "a".into(),
            owner: "o".into(),
        };
        let e = w.check(&now, &Counters::default(), name, &actor());
        assert_eq!(e[0].details["lost"], 3);
    }

    #[test]
    fn downtime_says_how_the_previous_daemon_ended() {
        assert!(downtime(None, true, 5, &actor()).is_none());
        let last: Entry = serde_json::from_value(json!({
            "seq": 9, "ts_ns": 1_000_000_000i64, "kind": "decision", "agent": "a", "owner": "o",
            "uid": 0, "loginuid": 0, "user": "root", "login_user": "root", "pid": 1, "exe": "/x",
            "action": "connect4", "target": "t", "decision": "allow", "rule_id": "r",
            "policy_snapshot": "none", "method": "allow", "details": {},
            "prev_hash": "0".repeat(64), "hash": "b".repeat(64)
        }))
        .unwrap();
        let e = downtime(Some(&last), false, 61_000_000_000, &actor()).unwrap();
        assert_eq!(e.details["seconds"], 60);
        assert!(e.details["previous_daemon"]
            .as_str()
            .unwrap()
            .contains("killed"));
    }

    #[test]
    fn gap_entries_name_the_class_and_the_process() {
        let loss = ClassLoss {
            agent_id: 1,
            kind: warden_common::EventKind::Open as u32,
            dropped: 5,
            last_pid: 42,
            last_tid: 43,
            last_comm: "cat".into(),
            ..Default::default()
        };
        let mut w = DropWatch::new(HashMap::new());
        let k = AgentCounters {
            decisions: 9,
            dropped: 5,
            allowed_unrecorded: 0,
        };
        let name = |id: u32| AgentName {
            name: format!("a{id}"),
            owner: "o".into(),
        };
        let mut e = w.check(&[(1, k)], &Counters::default(), name, &actor());
        name_classes(&mut e[0], 1, std::slice::from_ref(&loss));
        assert_eq!(e[0].details["classes"][0]["class"], "open");
        assert_eq!(e[0].details["processes"][0]["pid"], 42);
        assert_eq!(e[0].details["processes"][0]["comm"], "cat");

        let mut t = ThrottleWatch::default();
        let throttled = ClassLoss {
            kind: warden_common::EventKind::Sendmsg4 as u32,
            throttled: 100,
            ..loss.clone()
        };
        let e = t.check(std::slice::from_ref(&throttled), name, &actor());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].action, "evidence.throttled");
        assert_eq!(e[0].agent, "a1");
        assert_eq!(e[0].details["class"], "sendmsg");
        assert_eq!(e[0].details["throttled"], 100);
        assert!(t.check(&[throttled], name, &actor()).is_empty());
    }
}
