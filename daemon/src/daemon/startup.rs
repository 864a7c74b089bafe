//! What the daemon reads before it starts enforcing: the previous daemon's
//! last entry (to record the downtime) and the losses it already recorded.

use std::collections::HashMap;

use crate::evidence::EvidenceStore;

/// The log's last entry, and whether the daemon that wrote it recorded its
/// stop.
pub(super) type LastRun = Option<(crate::evidence::Entry, bool)>;

/// Per agent id, the totals of unrecorded actions recorded so far.
pub(super) type LossTotals = HashMap<u32, warden_common::AgentCounters>;

/// What the log says about the previous daemon: its last entry and whether
/// it recorded its stop, and per agent id the totals of unrecorded actions
/// its last `evidence.lost` entry for that agent recorded.
///
/// A log that cannot be read is an error, not "no previous daemon": that
/// would leave the period no daemon ran out of the log, and count losses
/// already recorded again.
pub(super) fn previous_run(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::{Actor, Recorded};

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
}
