//! `warden kill` with the daemon running: the CLI sets the kernel flag and
//! ends the agent's processes itself (the kill switch works with no
//! daemon), then asks the daemon to mark the agent revoked and record the
//! `kill` entry. The daemon does both on its evidence writer's connection:
//! from the CLI's own connection each waited on SQLite's write lock, which
//! the writer holds almost without a break while an agent floods actions
//! (0.9 s seen under strace, in SQLite's busy handler).

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
        self.writer
            .set_status_then_write_durable(kill.agent.clone(), AgentStatus::Revoked, vec![entry])
            .map_err(|e| format!("record the kill: {}", crate::error_chain(&e)))?;
        tracing::info!(
            agent = %kill.agent,
            ms = asked.elapsed().as_secs_f64() * 1e3,
            "kill recorded"
        );
        Ok(())
    }
}
