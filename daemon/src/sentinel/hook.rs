//! The sentinel on the evidence writer's path: the writer hands it every
//! batch it appended, asks it once a second for the windows it can judge,
//! appends the alerts to the chain and carries out `on_alert`.
//!
//! `on_alert: kill` and `hold` use the kill switch (`warden kill`, and
//! `warden kill --freeze` for hold: the agent is revoked and its processes
//! frozen until a human runs `warden revive`), run on a thread of its own
//! so the writer never waits for it; the kill switch records its own
//! `kill` entry, whose reason names the alert.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use rusqlite::Connection;

use super::{novelty, Alert, Sentinel};
use crate::{
    actor::Actor,
    config::Paths,
    evidence::NewEntry,
    policy::{Monitor, OnAlert},
};

/// Each agent's `monitor:` settings, by agent name, kept by the enforcer
/// as it loads policies. Agents not in it get the defaults.
pub type Monitors = Arc<RwLock<HashMap<String, Monitor>>>;

/// How often windows are judged.
const TICK: Duration = Duration::from_secs(1);
/// An agent is acted on at most once in this long (the alert entries are
/// all written).
const ACT_COOLDOWN: Duration = Duration::from_secs(60);

pub struct SentinelHook {
    sentinel: Sentinel,
    monitors: Monitors,
    /// Where the kill switch works (`None`: record only, as in benches).
    paths: Option<Paths>,
    pending: Vec<Alert>,
    last_tick: Instant,
    acted: HashMap<String, Instant>,
    actor: Actor,
}

impl SentinelHook {
    pub fn new(monitors: Monitors, paths: Option<Paths>) -> Self {
        Self {
            sentinel: Sentinel::default(),
            monitors,
            paths,
            pending: Vec::new(),
            last_tick: Instant::now(),
            acted: HashMap::new(),
            actor: Actor::current(),
        }
    }

    /// Loads the new-behaviour memory from `sentinel_seen`.
    pub fn load(&mut self, conn: &Connection) -> rusqlite::Result<usize> {
        crate::db::schema::create_sentinel_seen(conn)?;
        let mut stmt = conn.prepare("SELECT agent, detector, key, last_ns FROM sentinel_seen")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut n = 0;
        for row in rows {
            let (agent, detector, key, last_ns) = row?;
            if let Some(d) = novelty::detector_name(&detector) {
                self.sentinel.remember(&agent, d, key, last_ns);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Counts appended entries.
    pub fn observe(&mut self, entries: &[NewEntry]) {
        let monitors = self.monitors.read().expect("monitors lock");
        let default = Monitor::default();
        for e in entries {
            let cfg = monitors.get(&e.agent).unwrap_or(&default);
            if let Some(a) = self.sentinel.observe(e, cfg) {
                self.pending.push(a);
            }
        }
    }

    /// The alerts due now (new behaviour seen, windows judged once a
    /// second), as entries to append.
    pub fn due(&mut self, now_ns: i64) -> Vec<Alert> {
        let mut out = std::mem::take(&mut self.pending);
        if self.last_tick.elapsed() >= TICK {
            self.last_tick = Instant::now();
            let monitors = self.monitors.read().expect("monitors lock").clone();
            out.extend(
                self.sentinel
                    .tick(now_ns, |a| monitors.get(a).cloned().unwrap_or_default()),
            );
        }
        out
    }

    pub fn entries(&self, alerts: &[Alert]) -> Vec<NewEntry> {
        alerts.iter().map(|a| a.entry(&self.actor)).collect()
    }

    /// Writes the new-behaviour memory's changes; bounded per agent.
    pub fn persist(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let rows = self.sentinel.take_seen_rows();
        if rows.is_empty() {
            return Ok(());
        }
        crate::db::schema::create_sentinel_seen(conn)?;
        let tx = conn.unchecked_transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO sentinel_seen (agent, detector, key, last_ns) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (agent, detector, key) DO UPDATE SET last_ns = max(last_ns, excluded.last_ns)",
            )?;
            for r in &rows {
                put.execute(rusqlite::params![r.agent, r.detector, r.key, r.last_ns])?;
            }
            // The same bound as in memory: the least recently seen go.
            let mut trim = tx.prepare_cached(
                "DELETE FROM sentinel_seen WHERE agent = ?1 AND rowid IN (
                   SELECT rowid FROM sentinel_seen WHERE agent = ?1
                   ORDER BY last_ns DESC LIMIT -1 OFFSET ?2)",
            )?;
            let mut agents: Vec<&str> = rows.iter().map(|r| r.agent.as_str()).collect();
            agents.sort_unstable();
            agents.dedup();
            for a in agents {
                trim.execute(rusqlite::params![a, novelty::MAX_SEEN_PER_AGENT as i64])?;
            }
        }
        tx.commit()
    }

    /// Carries out `on_alert` for alerts just written (`seqs` are their
    /// sequence numbers, for the kill switch's reason).
    pub fn respond(&mut self, alerts: &[Alert], seqs: &[u64]) {
        let Some(paths) = &self.paths else { return };
        for (a, seq) in alerts.iter().zip(seqs) {
            let freeze = match a.response() {
                OnAlert::Record => continue,
                OnAlert::Hold => true,
                OnAlert::Kill => false,
            };
            if self
                .acted
                .get(&a.agent)
                .is_some_and(|t| t.elapsed() < ACT_COOLDOWN)
            {
                continue;
            }
            self.acted.insert(a.agent.clone(), Instant::now());
            let reason = format!(
                "sentinel alert (evidence seq {seq}): {} on {} ({})",
                a.detector, a.class, a.target
            );
            let (paths, agent) = (paths.clone(), a.agent.clone());
            tracing::warn!(agent = %agent, detector = a.detector, freeze, "sentinel: on_alert");
            let spawned = std::thread::Builder::new()
                .name("sentinel-kill".into())
                .spawn(move || {
                    if let Err(e) = crate::commands::kill(&paths, &agent, &reason, freeze) {
                        tracing::error!(agent = %agent, error = %crate::error_chain(&e), "sentinel: kill switch failed");
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "sentinel: spawn kill thread");
            }
        }
    }
}
