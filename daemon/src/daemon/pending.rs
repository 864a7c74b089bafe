//! Refusals on their way to the log, counted per agent: what an agent's
//! `drained` barrier waits for. `warden run`'s denial explainer prints only
//! its agent's refusals (`EvidenceStore::refusals_after`), so its barrier
//! waits until none of them is queued before the writer's commit, not for
//! the writer's whole queue (another agent's, or its own allowed entries).
//!
//! A refusal is counted from the moment it is queued to the writer, or
//! routed to the enforcer that will write it, until its batch's commit has
//! either succeeded or failed for good (after the writer's per-job retry):
//! a [`Pending`] guard travels with it and gives the count back when it is
//! dropped, so every path (committed, lost, a job given back because the
//! writer was full, a channel whose receiver is gone) releases it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::evidence::{self, NewEntry};

/// Called once the agent has no refusal pending.
pub(super) type Waiter = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Inner {
    /// Agents with at least one refusal pending (an agent at zero is
    /// removed, so the map holds only what is in flight).
    counts: HashMap<String, usize>,
    /// Barriers waiting for an agent's count to reach zero.
    waiters: HashMap<String, Vec<Waiter>>,
}

/// The per-agent counts, shared by the writer's handles, the reader and
/// the enforcer.
#[derive(Clone, Default)]
pub struct PendingRefusals {
    inner: Arc<Mutex<Inner>>,
}

/// `n` refusals of `agent` not yet committed (or given up); dropping it
/// gives them back and wakes the agent's barriers if none is left.
#[must_use = "the refusals count as pending until this is dropped"]
pub struct Pending {
    set: PendingRefusals,
    agent: String,
    n: usize,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} x{})", self.agent, self.n)
    }
}

impl PendingRefusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A waiter that panicked leaves consistent counts behind.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `n` refusals of `agent` as pending (`None` for `n == 0`).
    pub fn hold(&self, agent: &str, n: usize) -> Option<Pending> {
        if n == 0 {
            return None;
        }
        *self.lock().counts.entry(agent.to_string()).or_insert(0) += n;
        Some(Pending {
            set: self.clone(),
            agent: agent.to_string(),
            n,
        })
    }

    /// Guards for the refusals among `entries` (one per agent that has
    /// any); none, and no lock taken, for a batch of allowed entries.
    pub fn of_entries(&self, entries: &[NewEntry]) -> Vec<Pending> {
        let mut per_agent: Vec<(&str, usize)> = Vec::new();
        for e in entries
            .iter()
            .filter(|e| evidence::is_explained_refusal(&e.kind, &e.decision))
        {
            match per_agent.iter_mut().find(|(a, _)| *a == e.agent) {
                Some((_, n)) => *n += 1,
                None => per_agent.push((&e.agent, 1)),
            }
        }
        per_agent
            .into_iter()
            .filter_map(|(agent, n)| self.hold(agent, n))
            .collect()
    }

    /// Runs `waiter` once no refusal of `agent` is pending: now, if none
    /// is, or when the last one's guard is dropped.
    pub(super) fn wait(&self, agent: &str, waiter: Waiter) {
        let mut inner = self.lock();
        if inner.counts.contains_key(agent) {
            inner
                .waiters
                .entry(agent.to_string())
                .or_default()
                .push(waiter);
            return;
        }
        drop(inner);
        waiter();
    }

    /// How many refusals of `agent` are pending.
    #[cfg(test)]
    pub(super) fn count(&self, agent: &str) -> usize {
        self.lock().counts.get(agent).copied().unwrap_or(0)
    }

    /// Agents with refusals pending or barriers waiting (for tests: both
    /// maps are emptied as counts reach zero).
    #[cfg(test)]
    pub(super) fn tracked(&self) -> usize {
        let inner = self.lock();
        inner.counts.len() + inner.waiters.len()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let woken = {
            let mut inner = self.set.lock();
            let left = match inner.counts.get_mut(&self.agent) {
                Some(count) => {
                    *count = count.saturating_sub(self.n);
                    *count
                }
                None => 0,
            };
            if left > 0 {
                return;
            }
            inner.counts.remove(&self.agent);
            inner.waiters.remove(&self.agent).unwrap_or_default()
        };
        // Outside the lock: a waiter answers a channel, nothing more.
        for waiter in woken {
            waiter();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::actor::{Actor, Recorded};

    fn entry(agent: &str, kind: &str, decision: &str) -> NewEntry {
        Actor::current().entry(Recorded {
            kind,
            agent,
            owner: "o@x",
            action: "open",
            target: "/etc/x",
            decision,
            policy_snapshot: "none",
            details: serde_json::Map::new(),
        })
    }

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Waiter) {
        let n = Arc::new(AtomicUsize::new(0));
        let make = {
            let n = n.clone();
            move || -> Waiter {
                let n = n.clone();
                Box::new(move || {
                    n.fetch_add(1, Ordering::SeqCst);
                })
            }
        };
        (n, make)
    }

    #[test]
    fn a_barrier_with_nothing_pending_is_answered_at_once() {
        let set = PendingRefusals::default();
        let (woken, waiter) = counter();
        set.wait("a", waiter());
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(set.tracked(), 0);
    }

    #[test]
    fn a_barrier_waits_for_its_agents_last_refusal_only() {
        let set = PendingRefusals::default();
        let (woken, waiter) = counter();
        let first = set.hold("a", 2);
        let second = set.hold("a", 1);
        let other = set.hold("b", 5);
        assert_eq!((set.count("a"), set.count("b")), (3, 5));
        set.wait("a", waiter());
        set.wait("a", waiter());
        drop(first);
        assert_eq!(woken.load(Ordering::SeqCst), 0, "one refusal still pending");
        drop(second);
        assert_eq!(woken.load(Ordering::SeqCst), 2, "both barriers answered");
        // Agent b's refusals never held agent a's barriers; b's own
        // barrier still waits for them.
        let (b_woken, b_waiter) = counter();
        set.wait("b", b_waiter());
        assert_eq!(b_woken.load(Ordering::SeqCst), 0);
        drop(other);
        assert_eq!(b_woken.load(Ordering::SeqCst), 1);
        assert_eq!(set.tracked(), 0, "nothing kept once the counts are zero");
    }

    #[test]
    fn only_what_the_explainer_prints_is_counted() {
        let set = PendingRefusals::default();
        let entries = [
            entry("a", "decision", "allow"),
            entry("a", "decision", "deny"),
            entry("a", "decision", "hold"),
            entry("b", "decision", "deny"),
            entry("a", "summary", "deny"),
            entry("a", "gap", "denied"),
            entry("a", "decision", "rejected"),
        ];
        let guards = set.of_entries(&entries);
        assert_eq!(guards.len(), 2, "{guards:?}");
        assert_eq!((set.count("a"), set.count("b")), (3, 1));
        drop(guards);
        assert_eq!(set.tracked(), 0);
        let allowed = [
            entry("a", "decision", "allow"),
            entry("b", "summary", "allow"),
        ];
        assert!(set.of_entries(&allowed).is_empty());
    }
}
