//! `warden kill|revive|uninstall`: the verbs that take enforcement away or
//! give it back. They work with the daemon stopped (pinned maps, direct
//! evidence appends) and only tell a running daemon afterwards; `kill`
//! has a running daemon write its record (`kill_record`) once the kernel
//! flag is set and the processes are ended.

use std::time::Duration;

use super::{
    admin_event::AdminEvent, notify_daemon, open_registry, record_durably, require_root,
    CommandError, Result,
};
use crate::{
    actor::Actor,
    cgroup,
    config::Paths,
    control::{self, Request, Response},
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

/// How long `warden kill` waits for the daemon to record it before it
/// records the kill itself.
const KILL_RECORD_BOUND: Duration = Duration::from_secs(2);

/// `warden kill NAME --reason TEXT [--freeze]`: revokes the agent in one
/// action. Works with the daemon stopped (pinned maps, direct append).
/// Order: the kernel flag first (every hook refuses from the next action;
/// it needs only a read of the registry, which never waits on a writer),
/// then the processes, then the registry's `revoked` and the durable
/// evidence entry: through the running daemon's writer when it answers
/// within `KILL_RECORD_BOUND`, else directly; only then does it return.
/// A daemon that reconciled between the flag and the registry's change
/// wrote the old status back into the kernel: the flag is set again once
/// the registry says revoked.
pub fn kill(paths: &Paths, name: &str, reason: &str, freeze: bool) -> Result<KillReport> {
    let start = std::time::Instant::now();
    require_root("warden kill")?;
    let mut registry = open_registry(paths)?;
    let agent = registry.get(name)?;
    let cgroup_id = cgroup::cgroup_id(&agent.cgroup)?;
    let kernel = crate::kernel::set_revoked_pinned(&paths.pin_dir, cgroup_id, agent.id, true)?;
    // Its delegated children, whose cgroups are below its own (cgroup.kill
    // and cgroup.freeze below reach their processes): refused in the
    // kernel too, so none can be started again. Their registry status
    // stays; the daemon keeps them revoked while an ancestor is. Best
    // effort: the agent itself is revoked already, and a child not yet in
    // the kernel is revoked by the daemon's next reconcile.
    for child in registry.descendants(name).unwrap_or_default() {
        if let Ok(id) = cgroup::cgroup_id(&child.cgroup) {
            let _ = crate::kernel::set_revoked_pinned(&paths.pin_dir, id, child.id, true);
        }
    }
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
    let request = Request::KillRecord {
        agent: name.into(),
        reason: reason.into(),
        freeze,
        processes: processes.clone(),
        kernel_applied: kernel == crate::kernel::Revocation::Applied,
        to_kernel_us: to_kernel.as_micros() as u64,
    };
    let by_daemon = matches!(
        control::call(&paths.socket, &request, KILL_RECORD_BOUND),
        Ok(Response::Ok { .. })
    );
    if !by_daemon {
        registry.set_status(name, crate::registry::AgentStatus::Revoked)?;
        let entry = AdminEvent::Kill {
            agent: &agent,
            reason,
            freeze,
            processes: &processes,
            kernel: kernel.clone(),
            to_kernel,
        }
        .entry(&Actor::current());
        record_durably(paths, entry)?;
    }
    crate::kernel::set_revoked_pinned(&paths.pin_dir, cgroup_id, agent.id, true)?;
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
    let entry = AdminEvent::Revive {
        agent: &agent,
        reason,
    }
    .entry(&Actor::current());
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
        let entry = AdminEvent::Uninstall {
            pin_dir: &paths.pin_dir,
            pins_removed: removed,
        }
        .entry(&Actor::current());
        record_durably(paths, entry)?;
    }
    Ok(removed)
}
