//! `warden run` outside every agent: the daemon records the run's start,
//! so the CLI opens no database on its way to the command (a database open
//! and a durable append of its own, against the daemon's writer, were most
//! of `warden run`'s start on a busy host).

use super::enforcer::Enforcer;
use crate::{actor::Actor, commands::admin_event::AdminEvent, control::AgentState};

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
        // that says who started it is on disk.
        let seq = self
            .writer
            .write_durable_seq(vec![entry])
            .map_err(|e| format!("record the run: {}", crate::error_chain(&e)))?;
        Ok((state, Some(seq)))
    }
}
