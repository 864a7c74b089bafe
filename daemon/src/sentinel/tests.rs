//! The sentinel on synthetic evidence: entries shaped as the daemon
//! writes them (first-then-count: one decision per sweep period, then a
//! summary counting the repeats), delivered with the delays the daemon
//! has, and the windows judged once a second.

use super::*;
use crate::policy::{Monitor, OnAlert};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_790_000_000 * S;

/// xorshift64*: deterministic "realistic" noise without a crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Exponential gap for a Poisson process of `rate` per second.
    fn gap_ns(&mut self, rate: f64) -> i64 {
        (-(1.0 - self.next()).ln() / rate * 1e9) as i64
    }
}

fn entry(agent: &str, kind: &str, action: &str, decision: &str, ts: i64) -> NewEntry {
    NewEntry {
        ts_ns: ts,
        kind: kind.into(),
        agent: agent.into(),
        owner: "alice@example.com".into(),
        uid: 1000,
        loginuid: 1000,
        user: "alice".into(),
        login_user: "alice".into(),
        pid: 42,
        exe: "/usr/bin/curl".into(),
        action: action.into(),
        target: "127.0.0.1:8443/tcp".into(),
        decision: decision.into(),
        rule_id: "api".into(),
        policy_snapshot: "ab".repeat(32),
        method: "allow".into(),
        details: Default::default(),
    }
}

fn summary(agent: &str, count: u64, first: i64, last: i64, at: i64) -> NewEntry {
    let mut e = entry(agent, "summary", "connect4", "allow", at);
    e.details.insert("count".into(), json!(count));
    e.details.insert("first_ns".into(), json!(first));
    e.details.insert("last_ns".into(), json!(last));
    e
}

/// An agent's connects at `rate(t)` per second (Poisson, with pauses of
/// up to 1.5 s now and then, as a loaded machine gives), recorded
/// first-then-count with sweeps every 10 s (+-1 s), each decision reaching
/// the sentinel 0-2 s late; the windows judged every second. Returns the
/// alerts with the time they were raised.
fn replay(secs: i64, rate: impl Fn(i64) -> f64, cfg: &Monitor, seed: u64) -> Vec<(i64, Alert)> {
    let mut rng = Rng(seed);
    let mut sentinel = Sentinel::default();
    let mut alerts = Vec::new();
    // (arrival time, entry), delivered in arrival order.
    let mut inbox: Vec<(i64, NewEntry)> = Vec::new();
    let mut t = T0;
    let mut first: Option<i64> = None;
    let (mut repeats, mut last) = (0u64, 0i64);
    let mut next_sweep = T0 + 3 * S;
    let end = T0 + secs * S;
    while t < end {
        let r = rate((t - T0) / S);
        t += rng.gap_ns(r);
        if rng.next() < 0.002 {
            t += (rng.next() * 1.5e9) as i64;
        }
        while next_sweep <= t {
            if let Some(f) = first.take() {
                if repeats > 0 {
                    inbox.push((next_sweep, summary("bot", repeats, f, last, next_sweep)));
                }
            }
            repeats = 0;
            next_sweep += 10 * S + ((rng.next() - 0.5) * 2e9) as i64;
        }
        if first.is_none() {
            first = Some(t);
            let late = (rng.next() * 2e9) as i64;
            inbox.push((t + late, entry("bot", "decision", "connect4", "allow", t)));
        } else {
            repeats += 1;
            last = t;
        }
    }
    inbox.sort_by_key(|(at, _)| *at);
    let mut now = T0;
    let mut it = inbox.into_iter().peekable();
    while now < end + 30 * S {
        now += S;
        while let Some((at, _)) = it.peek() {
            if *at > now {
                break;
            }
            let (_, e) = it.next().unwrap();
            if let Some(a) = sentinel.observe(&e, cfg) {
                alerts.push((now, a));
            }
        }
        for a in sentinel.tick(now, |_| cfg.clone()) {
            alerts.push((now, a));
        }
    }
    alerts
}

#[test]
fn ten_minutes_steady_with_jitter_raise_no_alert() {
    let cfg = Monitor::default();
    for seed in [1, 7, 42, 1234, 99_999] {
        // The replay ends with the agent stopping: only that fall may alert.
        let alerts = replay(600, |_| 10.0, &cfg, seed);
        let during: Vec<_> = alerts
            .iter()
            .filter(|(_, a)| a.window_end_ns <= T0 + 600 * S - 20 * S)
            .collect();
        assert!(
            during.is_empty(),
            "seed {seed}: false positives {during:#?}"
        );
    }
}

#[test]
fn burst_after_steady_alerts_within_one_window_and_settle() {
    let cfg = Monitor {
        on_alert: OnAlert::Kill,
        ..Monitor::default()
    };
    let burst_at = 300;
    let alerts = replay(400, |t| if t < burst_at { 10.0 } else { 300.0 }, &cfg, 5);
    let (raised, first) = alerts
        .iter()
        .find(|(_, a)| a.detector == "cusum-rate")
        .expect("the burst raises an alert");
    assert_eq!(first.class, "connect");
    assert_eq!(first.side, Some(Side::Up));
    assert_eq!(first.response(), OnAlert::Kill);
    assert!(first.statistic > first.threshold);
    assert!(
        first.baseline_mean > 8.0 && first.baseline_mean < 12.0,
        "{first:?}"
    );
    // No alert before the burst; raised at most window + settle + tick
    // (10 + 15 + 1 s) after it started. The alerting window may be the one
    // just before the burst: a summary whose sweep period straddles the
    // start spreads the burst's first repeats over its whole period.
    assert!(*raised > T0 + burst_at * S, "{first:?}");
    assert!(first.window_end_ns >= T0 + (burst_at - 10) * S, "{first:?}");
    let delay = (raised - (T0 + burst_at * S)) / S;
    assert!(delay <= 26, "raised {delay} s after the burst");
    // One change, one alert: the new level is learnt, not re-alerted.
    let ups = alerts
        .iter()
        .filter(|(_, a)| a.side == Some(Side::Up) && a.window_end_ns < T0 + 390 * S)
        .count();
    assert_eq!(ups, 1, "{alerts:#?}");
}

#[test]
fn a_fall_is_recorded_but_never_acted_on() {
    let cfg = Monitor {
        on_alert: OnAlert::Kill,
        ..Monitor::default()
    };
    let alerts = replay(300, |t| if t < 200 { 50.0 } else { 0.5 }, &cfg, 3);
    let down = alerts
        .iter()
        .find(|(_, a)| a.side == Some(Side::Down))
        .expect("the fall is noticed");
    assert_eq!(down.1.response(), OnAlert::Record);
}

#[test]
fn denial_ratio_change_alerts() {
    let cfg = Monitor::default();
    let mut s = Sentinel::default();
    let mut alerts = Vec::new();
    // 20 opens a second; from 120 s on, every other one is refused.
    for sec in 0..200i64 {
        for i in 0..20 {
            let ts = T0 + sec * S + i * (S / 20);
            let d = if sec >= 120 && i % 2 == 0 {
                "deny"
            } else {
                "allow"
            };
            let mut e = entry("bot", "decision", "open", d, ts);
            e.target = format!("/data/f{}", i % 4);
            s.observe(&e, &cfg);
        }
        alerts.extend(s.tick(T0 + (sec + 1) * S, |_| cfg.clone()));
    }
    let ratio = alerts
        .iter()
        .find(|a| a.detector == "cusum-denial-ratio")
        .expect("ratio alert");
    assert_eq!((ratio.class, ratio.side), ("open", Some(Side::Up)));
    assert!((ratio.observed - 0.5).abs() < 0.01, "{ratio:?}");
    assert!(alerts
        .iter()
        .any(|a| a.class == "denials" && a.detector == "cusum-rate"));
}

#[test]
fn first_exec_after_learning_is_new_behaviour() {
    let cfg = Monitor::default();
    let mut s = Sentinel::default();
    let exec = |target: &str, ts: i64| {
        let mut e = entry("bot", "decision", "exec", "allow", ts);
        e.target = target.into();
        e
    };
    // Learning (6 windows of 10 s): a new binary is only remembered.
    assert!(s.observe(&exec("/usr/bin/git", T0), &cfg).is_none());
    assert!(s
        .observe(&exec("/usr/bin/make", T0 + 30 * S), &cfg)
        .is_none());
    // After: the first of a binary alerts once, a known one does not.
    assert!(s
        .observe(&exec("/usr/bin/git", T0 + 70 * S), &cfg)
        .is_none());
    let a = s
        .observe(&exec("/usr/bin/nc", T0 + 80 * S), &cfg)
        .expect("new");
    assert_eq!((a.detector, a.target.as_str()), ("new-exec", "/usr/bin/nc"));
    assert!(s.observe(&exec("/usr/bin/nc", T0 + 81 * S), &cfg).is_none());
    // A refused exec is not behaviour the agent showed.
    let mut denied = exec("/usr/bin/ssh", T0 + 82 * S);
    denied.decision = "deny".into();
    assert!(s.observe(&denied, &cfg).is_none());
    // Memory rows to persist: git, make, nc.
    let rows = s.take_seen_rows();
    assert_eq!(rows.len(), 3, "{rows:?}");
    // Off with new_behaviour_days: 0.
    let off = Monitor {
        new_behaviour_days: 0,
        ..Monitor::default()
    };
    assert!(s
        .observe(&exec("/usr/bin/curl", T0 + 90 * S), &off)
        .is_none());
}

#[test]
fn first_write_below_a_prefix_and_first_destination() {
    let cfg = Monitor::default();
    let mut s = Sentinel::default();
    let mut open = |path: &str, access: &str, ts: i64| {
        let mut e = entry("bot", "decision", "open", "allow", ts);
        e.target = path.into();
        e.details.insert("access".into(), json!(access));
        s.observe(&e, &cfg)
    };
    assert!(open("/work/a.txt", "write", T0).is_none());
    assert!(open("/work/b.txt", "write", T0 + 100 * S).is_none());
    assert!(open("/etc/passwd", "read", T0 + 100 * S).is_none());
    let a = open("/etc/cron.d/x", "read,write", T0 + 101 * S).expect("new prefix");
    assert_eq!(
        (a.detector, a.target.as_str()),
        ("new-write-prefix", "/etc/cron.d/")
    );
    let mut c = entry("bot", "decision", "connect4", "allow", T0 + 102 * S);
    c.target = "203.0.113.9:443/tcp".into();
    let a = s.observe(&c, &cfg).expect("new destination");
    assert_eq!(a.detector, "new-connect");
}

#[test]
fn alert_entry_carries_the_detector_fields_and_seals() {
    let a = Alert {
        agent: "bot".into(),
        owner: "alice@example.com".into(),
        policy_snapshot: "ab".repeat(32),
        class: "connect",
        detector: "cusum-rate",
        side: Some(Side::Up),
        statistic: 290.5,
        threshold: 8.0,
        baseline_mean: 10.0,
        baseline_sd: 1.0,
        observed: 300.0,
        window_start_ns: T0,
        window_end_ns: T0 + 10 * S,
        target: "connect rate".into(),
        on_alert: OnAlert::Hold,
    };
    let e = a.entry(&Actor::current());
    assert_eq!((e.kind.as_str(), e.decision.as_str()), ("alert", "alert"));
    let d = &e.details;
    assert_eq!(d["detector"], "cusum-rate");
    assert_eq!(d["class"], "connect");
    assert_eq!(d["statistic"], "290.500");
    assert_eq!(d["threshold"], "8.000");
    assert_eq!(d["baseline"]["mean"], "10.000");
    assert_eq!(d["window"]["secs"], 10);
    assert_eq!(d["on_alert"], "hold");
    // It is a valid entry of the chain (no floats, known kind).
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::evidence::EvidenceStore::open(&dir.path().join("w.db")).unwrap();
    store
        .append(&[e], crate::evidence::Durability::Batched)
        .unwrap();
}

#[test]
fn state_is_bounded_by_agents_and_windows() {
    let cfg = Monitor::default();
    let mut s = Sentinel::default();
    // An entry stamped far in the future does not grow the window list
    // past its bound.
    s.observe(&entry("bot", "decision", "connect4", "allow", T0), &cfg);
    s.observe(
        &entry("bot", "decision", "connect4", "allow", T0 + 1_000_000 * S),
        &cfg,
    );
    assert!(s.agents["bot"].windows.len() <= MAX_OPEN_WINDOWS);
    // Idle agents are forgotten.
    s.tick(T0 + 1_000_000 * S + 2 * IDLE_FORGET_NS, |_| cfg.clone());
    assert_eq!(s.agents(), 0);
}
