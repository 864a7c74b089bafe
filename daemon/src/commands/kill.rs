//! `warden kill|revive|uninstall`: the verbs that take enforcement away or
//! give it back. They work with the daemon stopped (pinned maps, direct
//! evidence appends) and only tell a running daemon afterwards.

use std::time::Duration;

use serde_json::json;

use super::{notify_daemon, open_registry, record_durably, require_root, CommandError, Result};
use crate::{
    actor::{Actor, Recorded},
    cgroup,
    config::Paths,
    registry::Agent,
};

/// What `warden kill` did.
pub struct KillReport {
    pub agent: Agent,
    /// Processes that were in the agent's cgroup: (pid, exe).
    pub processes: Vec<(u32, String)>,
    pub kernel: crate::kernel::Revocation,
    pub frozen: bool,
    /// From the start of the command to the flag being in the kernel.
    pub to_kernel: Duration,
    pub daemon_notified: bool,
}

/// `warden kill NAME --reason TEXT [--freeze]`: revokes the agent in one
/// action. Works with the daemon stopped (pinned maps, direct append).
/// Order: the registry first (so a daemon reconciling at the same moment
/// keeps it revoked), then the kernel flag (every hook refuses from the next
/// action), then the processes, then the durable evidence entry; only then
/// does it return.
pub fn kill(paths: &Paths, name: &str, reason: &str, freeze: bool) -> Result<KillReport> {
    let start = std::time::Instant::now();
    require_root("warden kill")?;
    let mut registry = open_registry(paths)?;
    let agent = registry.get(name)?;
    registry.set_status(name, crate::registry::AgentStatus::Revoked)?;
    let cgroup_id = cgroup::cgroup_id(&agent.cgroup)?;
    let kernel = crate::kernel::set_revoked_pinned(&paths.pin_dir, cgroup_id, agent.id, true)?;
    let to_kernel = start.elapsed();

    let processes: Vec<(u32, String)> = cgroup::procs(&agent.cgroup)?
        .into_iter()
        .map(|pid| (pid, crate::attribution::ProcessFacts::read(pid, "?").exe))
        .collect();
    if freeze {
        cgroup::freeze(&agent.cgroup, true)?;
    } else {
        cgroup::kill_all(&agent.cgroup)?;
        // cgroup.kill is asynchronous: wait (briefly) until they are gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !cgroup::procs(&agent.cgroup)?.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut details = serde_json::Map::new();
    details.insert("reason".into(), json!(reason));
    details.insert("mode".into(), json!(if freeze { "freeze" } else { "kill" }));
    details.insert(
        "processes".into(),
        json!(processes
            .iter()
            .map(|(pid, exe)| json!({"pid": pid, "exe": exe}))
            .collect::<Vec<_>>()),
    );
    details.insert(
        "kernel".into(),
        json!(match kernel {
            crate::kernel::Revocation::Applied => "revoked flag set in the pinned AGENTS map",
            crate::kernel::Revocation::NoPins =>
                "no Warden programs loaded: nothing to revoke in the kernel",
        }),
    );
    details.insert("to_kernel_us".into(), json!(to_kernel.as_micros() as u64));
    let entry = Actor::current().entry(Recorded {
        kind: "kill",
        agent: &agent.name,
        owner: &agent.owner,
        action: "agent.kill",
        target: &agent.cgroup.display().to_string(),
        decision: "revoked",
        policy_snapshot: "none",
        details,
    });
    record_durably(paths, entry)?;
    let daemon_notified = notify_daemon(paths).unwrap_or(false);
    Ok(KillReport {
        agent,
        processes,
        kernel,
        frozen: freeze,
        to_kernel,
        daemon_notified,
    })
}

/// `warden revive NAME --reason TEXT`: lifts the kill switch (thaws a
/// frozen agent). Recorded like the kill.
pub fn revive(paths: &Paths, name: &str, reason: &str) -> Result<Agent> {
    require_root("warden revive")?;
    let mut registry = open_registry(paths)?;
    let agent = registry.get(name)?;
    let cgroup_id = cgroup::cgroup_id(&agent.cgroup)?;
    registry.set_status(name, crate::registry::AgentStatus::Active)?;
    crate::kernel::set_revoked_pinned(&paths.pin_dir, cgroup_id, agent.id, false)?;
    cgroup::freeze(&agent.cgroup, false)?;
    let mut details = serde_json::Map::new();
    details.insert("reason".into(), json!(reason));
    let entry = Actor::current().entry(Recorded {
        kind: "revive",
        agent: &agent.name,
        owner: &agent.owner,
        action: "agent.revive",
        target: &agent.cgroup.display().to_string(),
        decision: "active",
        policy_snapshot: "none",
        details,
    });
    record_durably(paths, entry)?;
    notify_daemon(paths)?;
    Ok(agent)
}

/// `warden uninstall`: detaches and unpins everything Warden attached. The
/// daemon must be stopped (it would attach again).
pub fn uninstall(paths: &Paths) -> Result<usize> {
    require_root("warden uninstall")?;
    if std::os::unix::net::UnixStream::connect(&paths.socket).is_ok() {
        return Err(CommandError::DaemonRunning(paths.socket.clone()));
    }
    let removed = crate::kernel::uninstall(&paths.pin_dir)?;
    if paths.database().exists() {
        let mut details = serde_json::Map::new();
        details.insert("pins_removed".into(), json!(removed));
        details.insert("pin_dir".into(), json!(paths.pin_dir.display().to_string()));
        let entry = Actor::current().entry(Recorded {
            kind: "uninstall",
            agent: "warden",
            owner: "system",
            action: "warden.uninstall",
            target: &paths.pin_dir.display().to_string(),
            decision: "removed",
            policy_snapshot: "none",
            details,
        });
        record_durably(paths, entry)?;
    }
    Ok(removed)
}
