//! `warden kill` with the daemon running: the CLI sets the kernel flag and
//! ends the agent's processes itself (the kill switch works with no
//! daemon), then asks the daemon to mark the agent revoked and record the
//! `kill` entry, attributed to the socket's peer: the CLI needs no write
//! access to the database, and opens it only to read the agent.

use super::enforcer::Enforcer;
use crate::{
    actor::Actor, commands::admin_event::AdminEvent, kernel::Revocation, registry::AgentStatus,
};

/// What the CLI observed and did (`Request::KillRecord`).
#[derive(Debug)]
pub(crate) struct KillRecord {
    pub agent: String,
    pub reason: String,
    pub freeze: bool,
    pub processes: Vec<(u32, String)>,
    pub kernel_applied: bool,
    pub to_kernel_us: u64,
}

impl Enforcer {
    /// Marks the agent revoked and appends the `kill` entry for `actor`
    /// (the control socket's peer), both durable before the answer. Only
    /// from outside every agent: an agent's process may not write kill
    /// entries (it may not kill itself through Warden either).
    pub(super) fn kill_record(&mut self, kill: KillRecord, actor: &Actor) -> Result<(), String> {
        let asked = std::time::Instant::now();
        if let Some(why) = self.refuse_agent_caller(actor, "kill") {
            return Err(why);
        }
        let agent = self
            .registry
            .get(&kill.agent)
            .map_err(|e| crate::error_chain(&e))?;
        let entry = AdminEvent::Kill {
            agent: &agent,
            reason: &kill.reason,
            freeze: kill.freeze,
            processes: &kill.processes,
            kernel: if kill.kernel_applied {
                Revocation::Applied
            } else {
                Revocation::NoPins
            },
            to_kernel: std::time::Duration::from_micros(kill.to_kernel_us),
        }
        .entry(actor);
        // The registry first: an entry never says more than the registry.
        self.registry
            .set_status(&kill.agent, AgentStatus::Revoked)
            .map_err(|e| format!("mark the agent revoked: {}", crate::error_chain(&e)))?;
        // Durable before the answer, on the run starts' connection, not
        // through the writer: behind an agent's flood the writer's group in
        // progress held it 1-2 s (release build, 1M entries), longer than
        // the lock ever kept another connection waiting.
        let mut entries = vec![entry];
        crate::lineage::annotate(&mut entries);
        super::run_start::append_run(&self.paths.database(), &entries)
            .map_err(|e| format!("record the kill: {e}"))?;
        tracing::info!(
            agent = %kill.agent,
            ms = asked.elapsed().as_secs_f64() * 1e3,
            "kill recorded"
        );
        Ok(())
    }
}
