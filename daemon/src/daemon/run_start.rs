//! `warden run` outside every agent: the daemon records the run's start,
//! so the CLI opens no database on its way to the command (a database open
//! and a durable append of its own, against the daemon's writer, were most
//! of `warden run`'s start on a busy host).

use super::enforcer::Enforcer;
use crate::{
    actor::Actor,
    commands::admin_event::AdminEvent,
    control::AgentState,
    evidence::{Durability, EvidenceStore},
};

thread_local! {
    /// The enforcer thread's own connection for run starts, opened on the
    /// first one (without `quick_check`: the daemon checked at start).
    static RUN_STORE: std::cell::RefCell<Option<EvidenceStore>> =
        const { std::cell::RefCell::new(None) };
}

/// What the CLI asks to be recorded (`Request::RunStart`).
#[derive(Debug)]
pub(crate) struct RunStart {
    pub agent: String,
    pub argv: Vec<String>,
    pub run_as: Option<String>,
    pub confinement: serde_json::Value,
}

impl Enforcer {
    /// The agent's state and, when it is enforced and not revoked, the
    /// sequence number of the `run` entry written durably for `actor` (the
    /// control socket's peer). A refused state is answered unrecorded: the
    /// CLI refuses the run as it did when it asked for the state alone.
    pub(super) fn run_start(
        &mut self,
        start: RunStart,
        actor: &Actor,
    ) -> Result<(AgentState, Option<u64>), String> {
        let asked = std::time::Instant::now();
        // Only from outside every agent (a run from inside is a delegation,
        // `DelegatedRun`): an agent's process may not write run entries.
        if let Some(why) = self.refuse_agent_caller(actor, "run") {
            return Err(why);
        }
        let state = self
            .agent_state(&start.agent)
            .map_err(|e| crate::error_chain(&e))?;
        if state.revoked || !state.enforced {
            return Ok((state, None));
        }
        let agent = self
            .registry
            .get(&start.agent)
            .map_err(|e| crate::error_chain(&e))?;
        let entry = AdminEvent::Run {
            agent: &agent,
            policy_snapshot: &state.policy_snapshot,
            argv: &start.argv,
            run_as: start.run_as.as_deref(),
            cgroup: &state.cgroup,
            confinement: start.confinement,
        }
        .entry(actor);
        // Durable before the answer: the command runs only after the entry
        // that says who started it is on disk. On a connection of its own
        // (the store serialises appends from several connections), not
        // through the writer: behind an agent's flood the writer's queue
        // and its group in progress held it 0.1-0.9 s.
        let mut entries = vec![entry];
        crate::lineage::annotate(&mut entries);
        let written = append_run(&self.paths.database(), &entries)
            .map_err(|e| format!("record the run: {e}"))?;
        let seq = written.last().map_or(0, |e| e.seq);
        tracing::info!(
            agent = %start.agent,
            seq,
            ms = asked.elapsed().as_secs_f64() * 1e3,
            "run start recorded"
        );
        Ok((state, Some(seq)))
    }
}

/// Appends `entries` durably on the enforcer thread's run-start connection,
/// opening it first if needed; a failed append drops it (the next run
/// opens it again).
pub(super) fn append_run(
    database: &std::path::Path,
    entries: &[crate::evidence::NewEntry],
) -> Result<Vec<crate::evidence::Entry>, String> {
    RUN_STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let store = EvidenceStore::open_with(database, crate::db::Integrity::Trust)
                .map_err(|e| crate::error_chain(&e))?;
            *slot = Some(store);
        }
        let Some(store) = slot.as_mut() else {
            return Err("no evidence store".into());
        };
        let result = store
            .append(entries, Durability::Fsync)
            .map_err(|e| crate::error_chain(&e));
        if result.is_err() {
            *slot = None;
        }
        result
    })
}
