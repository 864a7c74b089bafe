//! Held names: a question whose name a `hold` host rule decides is not
//! answered until a human decides in `warden approvals`. One approval per
//! name and policy snapshot (this proxy's): the client's retries of a
//! pending name join it, and the decision answers them all and every later
//! question of the name while this proxy (this snapshot) serves.
//!
//! Bounds, so that an agent asking for many names cannot grow the daemon:
//! at most [`MAX_HELD_NAMES_PER_AGENT`] names pending at once (past it the
//! question gets REFUSED, recorded), at most [`MAX_WAITERS_PER_NAME`]
//! questions waiting on one name (more are dropped unanswered; the client
//! retries), each waiting at most [`HOLD_WAIT`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Names of one agent waiting for a decision at once.
pub const MAX_HELD_NAMES_PER_AGENT: usize = 16;
/// Questions waiting on one held name at once (a client's retries and its
/// A and AAAA questions).
pub const MAX_WAITERS_PER_NAME: usize = 8;
/// How long one question waits for the decision before it is dropped
/// unanswered (clients give up sooner and ask again; the retry joins).
pub const HOLD_WAIT: Duration = Duration::from_secs(60);

/// A human's decision on a name: approved or not, and the approval's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameDecision {
    pub approved: bool,
    pub id: u64,
}

struct Pending {
    tx: watch::Sender<Option<NameDecision>>,
    waiters: Arc<AtomicUsize>,
}

/// What a question of a held name comes to.
pub enum Ask {
    /// Decided before: answer (or refuse) now.
    Decided(NameDecision),
    /// Wait for the decision. `new`: the first question of the name, whose
    /// hold the daemon must record.
    Wait {
        rx: watch::Receiver<Option<NameDecision>>,
        waiter: Waiter,
        new: bool,
    },
    /// Too many names pending: refuse (and record).
    Full,
    /// Too many questions waiting on this name: drop it (the client retries).
    Busy,
}

/// One waiting question; counted until dropped.
pub struct Waiter(Arc<AtomicUsize>);

impl Drop for Waiter {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One proxy's held and decided names.
#[derive(Default)]
pub struct HeldNames {
    pending: HashMap<String, Pending>,
    /// One entry per name a human (or expiry) decided; bounded by the
    /// pending bound and the hold timeout.
    decided: HashMap<String, NameDecision>,
}

impl HeldNames {
    pub fn ask(&mut self, name: &str) -> Ask {
        if let Some(d) = self.decided.get(name) {
            return Ask::Decided(*d);
        }
        let new = !self.pending.contains_key(name);
        if new && self.pending.len() >= MAX_HELD_NAMES_PER_AGENT {
            return Ask::Full;
        }
        let p = self
            .pending
            .entry(name.to_string())
            .or_insert_with(|| Pending {
                tx: watch::channel(None).0,
                waiters: Arc::new(AtomicUsize::new(0)),
            });
        if p.waiters.fetch_add(1, Ordering::SeqCst) >= MAX_WAITERS_PER_NAME {
            p.waiters.fetch_sub(1, Ordering::SeqCst);
            return Ask::Busy;
        }
        Ask::Wait {
            rx: p.tx.subscribe(),
            waiter: Waiter(p.waiters.clone()),
            new,
        }
    }

    /// The decision on `name`: wakes its waiters; later questions get it
    /// at once. False if the name was not pending here.
    pub fn decide(&mut self, name: &str, d: NameDecision) -> bool {
        self.decided.insert(name.to_string(), d);
        match self.pending.remove(name) {
            Some(p) => {
                p.tx.send_replace(Some(d));
                true
            }
            None => false,
        }
    }

    /// The hold of `name` could not be recorded: forget it, so that its
    /// waiters give up and the next question asks for a hold again.
    pub fn forget(&mut self, name: &str) {
        self.pending.remove(name);
    }

    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(a: Ask) -> (watch::Receiver<Option<NameDecision>>, Waiter, bool) {
        match a {
            Ask::Wait { rx, waiter, new } => (rx, waiter, new),
            _ => panic!("expected to wait"),
        }
    }

    #[test]
    fn retries_join_the_pending_name_and_the_decision_answers_all() {
        let mut h = HeldNames::default();
        let (rx1, _w1, new1) = wait(h.ask("a.example"));
        let (rx2, _w2, new2) = wait(h.ask("a.example"));
        assert!(new1 && !new2, "only the first question is a new hold");
        assert_eq!(h.pending(), 1);
        let d = NameDecision {
            approved: true,
            id: 7,
        };
        assert!(h.decide("a.example", d));
        assert_eq!(*rx1.borrow(), Some(d));
        assert_eq!(*rx2.borrow(), Some(d));
        assert_eq!(h.pending(), 0);
        assert!(matches!(h.ask("a.example"), Ask::Decided(x) if x == d));
        // A hold that could not be recorded is asked for again.
        let (rx, _w, _) = wait(h.ask("b.example"));
        h.forget("b.example");
        assert!(rx.has_changed().is_err(), "its waiters give up");
        assert!(matches!(h.ask("b.example"), Ask::Wait { new: true, .. }));
    }

    #[test]
    fn pending_names_and_waiters_are_bounded() {
        let mut h = HeldNames::default();
        let mut keep = Vec::new();
        for i in 0..MAX_HELD_NAMES_PER_AGENT {
            keep.push(wait(h.ask(&format!("n{i}.example"))));
        }
        assert!(matches!(h.ask("one-more.example"), Ask::Full));
        // A pending name still takes its retries, up to the waiter bound.
        for _ in 1..MAX_WAITERS_PER_NAME {
            keep.push(wait(h.ask("n0.example")));
        }
        assert!(matches!(h.ask("n0.example"), Ask::Busy));
        // A waiter that gives up makes room.
        keep.pop();
        assert!(matches!(h.ask("n0.example"), Ask::Wait { new: false, .. }));
        // A decision frees a pending place.
        h.decide(
            "n1.example",
            NameDecision {
                approved: false,
                id: 1,
            },
        );
        assert!(matches!(
            h.ask("one-more.example"),
            Ask::Wait { new: true, .. }
        ));
    }
}
