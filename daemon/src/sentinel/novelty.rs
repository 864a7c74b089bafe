//! New-behaviour memory: per agent, the binaries it executed, the
//! destinations it connected to and the directories it wrote in, each
//! with when it was last seen. Something not seen within the policy's
//! `new_behaviour_days` is new. Bounded per agent (`MAX_SEEN_PER_AGENT`,
//! the least recently seen quarter forgotten when full) and kept in
//! SQLite (`sentinel_seen`) across daemon restarts.

use std::collections::HashMap;

use crate::evidence::NewEntry;

/// Keys remembered per agent.
pub const MAX_SEEN_PER_AGENT: usize = 4096;
/// A key seen again is written back to SQLite at most this often.
const REFRESH_NS: i64 = 86_400 * 1_000_000_000;

/// The new-behaviour detector and key an allowed entry stands for.
pub fn key_of(e: &NewEntry, class: usize) -> Option<(&'static str, &str)> {
    match class {
        0 => Some((DETECTORS[0], e.target.as_str())),
        1 => Some((DETECTORS[1], e.target.as_str())),
        2 => {
            let write = e
                .details
                .get("access")
                .and_then(|a| a.as_str())
                .is_some_and(|a| a.contains("write"))
                || matches!(e.action.as_str(), "rename" | "link");
            if !write {
                return None;
            }
            let path = e
                .details
                .get("new_path")
                .and_then(|p| p.as_str())
                .unwrap_or(&e.target);
            let dir = match path.rfind('/') {
                Some(0) => "/",
                Some(i) => &path[..i + 1],
                None => path,
            };
            Some((DETECTORS[2], dir))
        }
        _ => None,
    }
}

/// The new-behaviour detectors, in the order of `Seen::keys`.
pub const DETECTORS: [&str; 3] = ["new-connect", "new-exec", "new-write-prefix"];

/// One agent's memory.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Per detector: key -> last seen (ns). Looked up by `&str`, so a key
    /// seen before costs no allocation.
    keys: [HashMap<String, i64>; 3],
    /// When the agent was first seen: nothing is new while it is learning.
    pub since_ns: Option<i64>,
}

/// A change to write to SQLite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRow {
    pub agent: String,
    pub detector: &'static str,
    pub key: String,
    pub last_ns: i64,
}

impl Seen {
    /// Notes `key` seen at `ts`. Returns (new: not seen within
    /// `horizon_ns`, persist: the row should be written).
    pub fn see(
        &mut self,
        detector: &'static str,
        key: &str,
        ts: i64,
        horizon_ns: i64,
    ) -> (bool, bool) {
        self.since_ns.get_or_insert(ts);
        let d = slot(detector);
        if let Some(last) = self.keys[d].get_mut(key) {
            let new = ts - *last > horizon_ns;
            let persist = new || ts - *last > REFRESH_NS;
            if ts > *last {
                *last = ts;
            }
            return (new, persist);
        }
        if self.len() >= MAX_SEEN_PER_AGENT {
            self.forget_oldest_quarter();
        }
        self.keys[d].insert(key.to_string(), ts);
        (true, true)
    }

    /// Loads a remembered key (start-up).
    pub fn load(&mut self, detector: &'static str, key: String, last_ns: i64) {
        if self.len() >= MAX_SEEN_PER_AGENT {
            self.forget_oldest_quarter();
        }
        self.since_ns = Some(self.since_ns.map_or(last_ns, |s| s.min(last_ns)));
        self.keys[slot(detector)].insert(key, last_ns);
    }

    pub fn len(&self) -> usize {
        self.keys.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget_oldest_quarter(&mut self) {
        let mut times: Vec<i64> = self.keys.iter().flat_map(|m| m.values().copied()).collect();
        times.sort_unstable();
        let cut = times[times.len() / 4];
        for m in &mut self.keys {
            m.retain(|_, t| *t > cut);
        }
    }
}

/// The detector names, for reading them back from SQLite.
pub fn detector_name(s: &str) -> Option<&'static str> {
    DETECTORS.into_iter().find(|d| *d == s)
}

fn slot(detector: &str) -> usize {
    DETECTORS.iter().position(|d| *d == detector).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * 1_000_000_000;

    #[test]
    fn new_then_known_then_new_again_after_the_horizon() {
        let mut s = Seen::default();
        assert_eq!(s.see("new-exec", "/bin/sh", 0, 30 * DAY), (true, true));
        assert_eq!(
            s.see("new-exec", "/bin/sh", DAY / 2, 30 * DAY),
            (false, false)
        );
        assert_eq!(
            s.see("new-exec", "/bin/sh", 2 * DAY, 30 * DAY),
            (false, true)
        );
        assert_eq!(
            s.see("new-connect", "/bin/sh", 2 * DAY, 30 * DAY),
            (true, true)
        );
        assert_eq!(
            s.see("new-exec", "/bin/sh", 40 * DAY, 30 * DAY),
            (true, true)
        );
    }

    #[test]
    fn memory_is_bounded_and_keeps_the_recent() {
        let mut s = Seen::default();
        for i in 0..(MAX_SEEN_PER_AGENT as i64 * 10) {
            s.see("new-connect", &format!("10.0.0.{i}"), i, DAY);
            assert!(s.len() <= MAX_SEEN_PER_AGENT);
        }
        let last = MAX_SEEN_PER_AGENT as i64 * 10 - 1;
        assert!(!s.see("new-connect", &format!("10.0.0.{last}"), last, DAY).0);
    }
}
