//! GAP entries: the record says so when it is not complete, so an auditor
//! can tell "nothing happened" from "we don't know".
//!
//! Two kinds:
//! - downtime: at start, the daemon records the period since the previous
//!   daemon's last entry, and whether that daemon stopped cleanly (a
//!   `daemon_stop` entry) or died;
//! - lost events: the kernel counts actions it could not record because the
//!   ring buffer was full (it refused them: fail-closed); every increase of
//!   that counter becomes an entry with the counts.

use serde_json::json;

use crate::{
    actor::{Actor, Recorded},
    evidence::{Entry, NewEntry},
    kernel::Counters,
};

fn gap_entry(actor: &Actor, action: &str, target: &str, decision: &str, details: serde_json::Map<String, serde_json::Value>) -> NewEntry {
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
pub fn downtime(last: Option<&Entry>, stopped: bool, now_ns: i64, actor: &Actor) -> Option<NewEntry> {
    let last = last?;
    let mut details = serde_json::Map::new();
    details.insert("from_ns".into(), json!(last.ts_ns));
    details.insert("to_ns".into(), json!(now_ns));
    details.insert("seconds".into(), json!((now_ns - last.ts_ns).max(0) / 1_000_000_000));
    details.insert("last_seq".into(), json!(last.seq));
    details.insert(
        "previous_daemon".into(),
        json!(if stopped { "stopped cleanly" } else { "ended without recording its stop (killed or crashed)" }),
    );
    details.insert(
        "during_gap".into(),
        json!("no daemon was reading: agents stayed enforced by the pinned programs, their decisions queued in the ring buffer (recorded after this entry); actions refused because it was full are counted in the next evidence.lost entry"),
    );
    Some(gap_entry(actor, "monitoring.gap", "daemon", "not-monitored", details))
}

/// Watches the kernel's count of actions refused because they could not be
/// recorded.
pub struct DropWatch {
    seen: u64,
}

impl DropWatch {
    pub fn new(seen: u64) -> Self {
        Self { seen }
    }

    /// An entry if the kernel refused unrecordable actions since last time.
    pub fn check(&mut self, counters: &Counters, actor: &Actor) -> Option<NewEntry> {
        let dropped = counters.dropped;
        if dropped <= self.seen {
            return None;
        }
        let mut details = serde_json::Map::new();
        details.insert("lost".into(), json!(dropped - self.seen));
        details.insert("lost_total".into(), json!(dropped));
        details.insert("kernel_events_total".into(), json!(counters.events));
        details.insert("fail_mode".into(), json!("closed: each action that could not be recorded was refused (EPERM)"));
        self.seen = dropped;
        Some(gap_entry(actor, "evidence.lost", "ring buffer", "denied", details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> Actor {
        Actor::current()
    }

    #[test]
    fn drops_are_reported_once_with_the_difference() {
        let mut w = DropWatch::new(0);
        let c = |dropped| Counters { dropped, events: 10, ..Default::default() };
        assert!(w.check(&c(0), &actor()).is_none());
        let e = w.check(&c(7), &actor()).unwrap();
        assert_eq!(e.kind, "gap");
        assert_eq!(e.details["lost"], 7);
        assert!(w.check(&c(7), &actor()).is_none());
        assert_eq!(w.check(&c(9), &actor()).unwrap().details["lost"], 2);
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
        assert!(e.details["previous_daemon"].as_str().unwrap().contains("killed"));
    }
}
