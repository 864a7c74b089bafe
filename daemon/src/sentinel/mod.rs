//! The sentinel: per agent and action class, an EWMA of the action rate
//! and of the denial ratio, and two-sided CUSUM change detectors over
//! them, fed with the evidence entries the daemon writes (so it sees what
//! the auditor sees, and nothing the kernel did not report).
//!
//! Rates come from entries, not from the kernel's per-agent counter (which
//! has no class): a `decision` or `hold` entry counts 1, a `summary`
//! entry (repeats of an allowed action, first-then-count) counts its
//! `count`, spread evenly over its `first_ns..last_ns`. Entries are put in
//! windows by their own time; a window is judged `settle` after it ends,
//! so the summaries of its repeats (written every `WARDEN_SUMMARY_SECS`)
//! have arrived. An entry older than the oldest open window counts in that
//! window.
//!
//! Classes: `connect` (connect and sendmsg), `exec`, `open` (opens,
//! renames, links) and `denials` (refusals of any class, `deny` and
//! `would-deny`). Per class and window: rate `x = n / window`; once
//! `warmup` windows set the baseline, `z = (x - mean) / sd` feeds the rate
//! CUSUM, where `sd = max(sqrt(EWMVar), sqrt(max(mean, min_rate) /
//! window), 5% of mean)` (the Poisson noise of a count is the floor, so a
//! short warm-up with no variance does not make every wobble an alarm).
//! The denial ratio `denied / n` (windows with actions only) has its own
//! EWMA and CUSUM with `sd >= max(0.02, sqrt(p(1-p)/n))`. An alarm resets
//! that detector and its baseline: the new level is learnt over `warmup`
//! windows, so one change raises one alert.
//!
//! The core here is pure (time is an argument); `hook` ties it to the
//! evidence writer.

pub mod detect;
pub mod hook;
pub mod novelty;

use std::collections::{HashMap, VecDeque};

use serde_json::json;

use self::detect::{Cusum, Ewma, Side};
use crate::{
    actor::{Actor, Recorded},
    evidence::NewEntry,
    policy::{Monitor, OnAlert},
};

/// Action classes, in the order of `AgentState::tracks`.
pub const CLASSES: [&str; 4] = ["connect", "exec", "open", "denials"];
const DENIALS: usize = 3;
/// The most windows ahead of the oldest open one an entry may create
/// (entries time-stamped far in the future are counted in the last).
const MAX_OPEN_WINDOWS: usize = 64;
/// An agent with no entry for this long is forgotten (its baseline too).
const IDLE_FORGET_NS: i64 = 24 * 3600 * 1_000_000_000;

/// One detector's alarm, or a new behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub agent: String,
    pub owner: String,
    pub policy_snapshot: String,
    pub class: &'static str,
    /// `cusum-rate`, `cusum-denial-ratio`, `new-exec`, `new-connect`,
    /// `new-write-prefix`.
    pub detector: &'static str,
    pub side: Option<Side>,
    pub statistic: f64,
    pub threshold: f64,
    pub baseline_mean: f64,
    pub baseline_sd: f64,
    pub observed: f64,
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    /// What the alert is about: the class, or the new binary/destination/
    /// prefix.
    pub target: String,
    pub on_alert: OnAlert,
}

impl Alert {
    /// What the daemon does about it: rate falls are only recorded (an
    /// agent that stops is no threat, and a killed one would alert again).
    pub fn response(&self) -> OnAlert {
        if self.side == Some(Side::Down) {
            OnAlert::Record
        } else {
            self.on_alert
        }
    }

    /// The `alert` evidence entry. Floats are decimal strings (the chain's
    /// canonical JSON has none).
    pub fn entry(&self, actor: &Actor) -> NewEntry {
        let dec = |x: f64| format!("{x:.3}");
        let mut details = serde_json::Map::new();
        details.insert("detector".into(), json!(self.detector));
        details.insert("class".into(), json!(self.class));
        if let Some(side) = self.side {
            details.insert("direction".into(), json!(side.name()));
        }
        details.insert("statistic".into(), json!(dec(self.statistic)));
        details.insert("threshold".into(), json!(dec(self.threshold)));
        details.insert(
            "baseline".into(),
            json!({"mean": dec(self.baseline_mean), "sd": dec(self.baseline_sd)}),
        );
        details.insert("observed".into(), json!(dec(self.observed)));
        details.insert(
            "window".into(),
            json!({
                "start_ns": self.window_start_ns,
                "end_ns": self.window_end_ns,
                "secs": (self.window_end_ns - self.window_start_ns) / 1_000_000_000,
            }),
        );
        let response = match self.response() {
            OnAlert::Record => "record",
            OnAlert::Hold => "hold",
            OnAlert::Kill => "kill",
        };
        details.insert("on_alert".into(), json!(response));
        let mut e = actor.entry(Recorded {
            kind: "alert",
            agent: &self.agent,
            owner: &self.owner,
            action: "sentinel.alert",
            target: &self.target,
            decision: "alert",
            policy_snapshot: &self.policy_snapshot,
            details,
        });
        e.rule_id = self.detector.into();
        e.method = "sentinel".into();
        e
    }
}

/// The class an entry's action counts in, if any.
fn class_of(action: &str) -> Option<usize> {
    match action {
        "connect4" | "connect6" | "sendmsg4" | "sendmsg6" => Some(0),
        "exec" => Some(1),
        "open" | "rename" | "link" => Some(2),
        _ => None,
    }
}

#[derive(Clone, Copy, Default)]
struct Window {
    n: [f64; 3],
    denied: [f64; 3],
}

#[derive(Clone, Copy, Default)]
struct Track {
    rate: Ewma,
    rate_cusum: Cusum,
    ratio: Ewma,
    ratio_cusum: Cusum,
}

struct AgentState {
    owner: String,
    snapshot: String,
    window_ns: i64,
    /// Start of `windows[0]`; windows are contiguous.
    start_ns: i64,
    windows: VecDeque<Window>,
    tracks: [Track; 4],
    last_entry_ns: i64,
}

impl AgentState {
    fn new(e: &NewEntry, window_ns: i64) -> Self {
        Self {
            owner: e.owner.clone(),
            snapshot: e.policy_snapshot.clone(),
            window_ns,
            start_ns: e.ts_ns.div_euclid(window_ns) * window_ns,
            windows: VecDeque::new(),
            tracks: [Track::default(); 4],
            last_entry_ns: e.ts_ns,
        }
    }

    fn index(&self, ts: i64) -> usize {
        let i = (ts - self.start_ns).max(0) / self.window_ns;
        (i as usize).min(MAX_OPEN_WINDOWS - 1)
    }

    /// Adds `count` actions (of which `denied` refused) spread evenly over
    /// `[from, to]`.
    fn add(&mut self, from: i64, to: i64, class: usize, count: f64, denied: f64) {
        let from = from.max(self.start_ns);
        let to = to.max(from);
        let (first, last) = (self.index(from), self.index(to));
        if self.windows.len() <= last {
            self.windows.resize(last + 1, Window::default());
        }
        if first == last {
            self.windows[first].n[class] += count;
            self.windows[first].denied[class] += denied;
            return;
        }
        let span = (to - from) as f64;
        for i in first..=last {
            let ws = self.start_ns + i as i64 * self.window_ns;
            let overlap = (to.min(ws + self.window_ns) - from.max(ws)).max(0) as f64;
            let share = if i == last && last == MAX_OPEN_WINDOWS - 1 {
                // Clamped: whatever is left.
                (to - from.max(ws)).max(0) as f64 / span
            } else {
                overlap / span
            };
            self.windows[i].n[class] += count * share;
            self.windows[i].denied[class] += denied * share;
        }
    }
}

/// The sentinel's state for every agent it has seen.
#[derive(Default)]
pub struct Sentinel {
    agents: HashMap<String, AgentState>,
    /// New-behaviour memory per agent (kept apart from the rate state,
    /// which is forgotten when an agent is idle).
    seen: HashMap<String, novelty::Seen>,
    /// Memory rows to write to SQLite (`take_seen_rows`).
    dirty: Vec<novelty::SeenRow>,
}

impl Sentinel {
    /// Counts one written entry; returns new-behaviour alerts.
    pub fn observe(&mut self, e: &NewEntry, cfg: &Monitor) -> Option<Alert> {
        if !cfg.enabled || !matches!(e.kind.as_str(), "decision" | "summary" | "hold") {
            return None;
        }
        let class = class_of(&e.action)?;
        let window_ns = cfg.window.as_nanos() as i64;
        let state = match self.agents.get_mut(&e.agent) {
            Some(s) if s.window_ns == window_ns => s,
            _ => {
                self.agents
                    .insert(e.agent.clone(), AgentState::new(e, window_ns));
                self.agents.get_mut(&e.agent).expect("just inserted")
            }
        };
        if e.policy_snapshot != state.snapshot && e.policy_snapshot != "none" {
            state.snapshot.clone_from(&e.policy_snapshot);
        }
        state.last_entry_ns = state.last_entry_ns.max(e.ts_ns);
        if e.kind == "summary" {
            let count = e.details.get("count").and_then(|v| v.as_u64()).unwrap_or(0);
            let ns = |k: &str| e.details.get(k).and_then(|v| v.as_i64());
            let last = ns("last_ns").unwrap_or(e.ts_ns);
            let first = ns("first_ns").unwrap_or(last).min(last);
            state.add(first, last, class, count as f64, 0.0);
            return None;
        }
        let denied = matches!(e.decision.as_str(), "deny" | "would-deny");
        state.add(e.ts_ns, e.ts_ns, class, 1.0, if denied { 1.0 } else { 0.0 });
        if denied || cfg.new_behaviour_days == 0 {
            return None;
        }
        let (detector, key) = novelty::key_of(e, class)?;
        let horizon = i64::from(cfg.new_behaviour_days) * 86_400 * 1_000_000_000;
        let seen = self.seen.entry(e.agent.clone()).or_default();
        let (new, persist) = seen.see(detector, key, e.ts_ns, horizon);
        // Nothing is new while the agent is learning (its first `warmup`
        // windows).
        let learning = i64::from(cfg.warmup) * window_ns;
        let warm = seen.since_ns.is_some_and(|s| e.ts_ns - s >= learning);
        if persist {
            self.dirty.push(novelty::SeenRow {
                agent: e.agent.clone(),
                detector,
                key: key.to_string(),
                last_ns: e.ts_ns,
            });
        }
        (new && warm).then(|| Alert {
            agent: e.agent.clone(),
            owner: state.owner.clone(),
            policy_snapshot: state.snapshot.clone(),
            class: CLASSES[class],
            detector,
            side: None,
            statistic: 1.0,
            threshold: 0.0,
            baseline_mean: 0.0,
            baseline_sd: 0.0,
            observed: 1.0,
            window_start_ns: e.ts_ns - horizon,
            window_end_ns: e.ts_ns,
            target: key.to_string(),
            on_alert: cfg.on_alert,
        })
    }

    /// Judges every window that ended `settle` before `now_ns`.
    pub fn tick(&mut self, now_ns: i64, cfg: impl Fn(&str) -> Monitor) -> Vec<Alert> {
        let mut alerts = Vec::new();
        self.agents
            .retain(|_, s| now_ns - s.last_entry_ns < IDLE_FORGET_NS);
        for (agent, state) in &mut self.agents {
            let cfg = cfg(agent);
            if !cfg.enabled {
                continue;
            }
            let settle = cfg.settle.as_nanos() as i64;
            // A daemon that did not tick for long (suspended) skips ahead
            // rather than judging hours of empty windows.
            let behind = (now_ns - settle - state.start_ns) / state.window_ns;
            if behind > 2 * MAX_OPEN_WINDOWS as i64 {
                state.windows.clear();
                state.start_ns = (now_ns - settle).div_euclid(state.window_ns) * state.window_ns
                    - state.window_ns;
            }
            while state.start_ns + state.window_ns + settle <= now_ns {
                let w = state.windows.pop_front().unwrap_or_default();
                judge(agent, state, &w, &cfg, &mut alerts);
                state.start_ns += state.window_ns;
            }
        }
        alerts
    }

    /// Agents tracked (for bounds and tests).
    pub fn agents(&self) -> usize {
        self.agents.len()
    }

    /// Seeds the new-behaviour memory (from the database at start-up).
    pub fn remember(&mut self, agent: &str, detector: &'static str, key: String, last_ns: i64) {
        self.seen
            .entry(agent.to_string())
            .or_default()
            .load(detector, key, last_ns);
    }

    /// The new-behaviour rows changed since the last call.
    pub fn take_seen_rows(&mut self) -> Vec<novelty::SeenRow> {
        std::mem::take(&mut self.dirty)
    }
}

fn judge(agent: &str, s: &mut AgentState, w: &Window, cfg: &Monitor, alerts: &mut Vec<Alert>) {
    let secs = s.window_ns as f64 / 1e9;
    let window_start_ns = s.start_ns;
    let mut raise = |class: usize, detector: &'static str, side, stat, mean, sd, observed| {
        alerts.push(Alert {
            agent: agent.to_string(),
            owner: s.owner.clone(),
            policy_snapshot: s.snapshot.clone(),
            class: CLASSES[class],
            detector,
            side: Some(side),
            statistic: stat,
            threshold: cfg.h,
            baseline_mean: mean,
            baseline_sd: sd,
            observed,
            window_start_ns,
            window_end_ns: window_start_ns + s.window_ns,
            target: format!(
                "{} {}",
                CLASSES[class],
                if detector == "cusum-rate" {
                    "rate"
                } else {
                    "denial ratio"
                }
            ),
            on_alert: cfg.on_alert,
        });
    };
    for class in 0..CLASSES.len() {
        let (n, denied) = if class == DENIALS {
            (w.denied.iter().sum::<f64>(), 0.0)
        } else {
            (w.n[class], w.denied[class])
        };
        let t = &mut s.tracks[class];
        let x = n / secs;
        if t.rate.n >= cfg.warmup {
            let sd = t
                .rate
                .var
                .sqrt()
                .max((t.rate.mean.max(cfg.min_rate) / secs).sqrt())
                .max(0.05 * t.rate.mean);
            let z = (x - t.rate.mean) / sd;
            if let Some((side, stat)) = t.rate_cusum.step(z, cfg.k, cfg.h) {
                raise(class, "cusum-rate", side, stat, t.rate.mean, sd, x);
                t.rate_cusum.reset();
                t.rate.reset();
            }
        }
        t.rate.update(x, cfg.alpha);
        if class == DENIALS || n < 1.0 {
            continue;
        }
        let r = (denied / n).clamp(0.0, 1.0);
        if t.ratio.n >= cfg.warmup {
            let p = t.ratio.mean;
            let sd = t.ratio.var.sqrt().max(0.02).max((p * (1.0 - p) / n).sqrt());
            let z = (r - p) / sd;
            if let Some((side, stat)) = t.ratio_cusum.step(z, cfg.k, cfg.h) {
                raise(class, "cusum-denial-ratio", side, stat, p, sd, r);
                t.ratio_cusum.reset();
                t.ratio.reset();
            }
        }
        t.ratio.update(r, cfg.alpha);
    }
}

#[cfg(test)]
mod tests;
