//! `warden agent add|remove|list|show`: the registry of agents and their
//! cgroups.

use std::path::Path;

use super::{
    admin_event::AdminEvent, notify_daemon, open_registry, policy::resolve_policy, record_durably,
    require_root, CommandError, Result,
};
use crate::{
    actor::Actor,
    cgroup, clock,
    config::Paths,
    registry::{Agent, NewAgent},
};

pub struct AddAgent<'a> {
    pub name: &'a str,
    pub owner: &'a str,
    pub policy: &'a Path,
    pub adopt: Option<&'a Path>,
}

/// `warden agent add`: registers an agent, creating (or adopting) its cgroup.
/// On any error nothing is left behind.
pub fn agent_add(paths: &Paths, req: &AddAgent<'_>) -> Result<(Agent, String)> {
    require_root("warden agent add")?;
    if !crate::registry::valid_agent_name(req.name) {
        return Err(crate::registry::RegistryError::BadName(req.name.to_string()).into());
    }
    let (policy_name, parsed) = resolve_policy(paths, req.policy)?;
    let mount = cgroup::cgroup2_mount()?;
    let mut registry = open_registry(paths)?;
    if registry.get(req.name).is_ok() {
        return Err(crate::registry::RegistryError::Exists(req.name.to_string()).into());
    }
    let (cgroup_path, adopted) = match req.adopt {
        Some(path) => {
            cgroup::check_adoptable(&mount, path)?;
            (path.to_path_buf(), true)
        }
        None => (paths.agent_cgroup(&mount, req.name), false),
    };
    let created = !adopted && !cgroup_path.exists();
    if !adopted {
        cgroup::create(&cgroup_path)?;
    }
    let actor = Actor::current();
    let undo = |e: CommandError| {
        if created {
            let _ = cgroup::remove(&cgroup_path);
        }
        e
    };
    let agent = registry
        .add(&NewAgent {
            name: req.name,
            owner: req.owner,
            policy: &policy_name,
            cgroup: &cgroup_path,
            adopted,
            created_at_ns: clock::now_ns(),
            created_by: &actor.describe(),
        })
        .map_err(|e| undo(e.into()))?;
    let entry = AdminEvent::Register {
        agent: &agent,
        policy_snapshot: &parsed.snapshot(),
    }
    .entry(&actor);
    if let Err(e) = record_durably(paths, entry) {
        let _ = registry.remove(&agent.name);
        return Err(undo(e));
    }
    let note = match notify_daemon(paths)? {
        true => "enforced by the running daemon".to_string(),
        false => "the daemon is not running; it enforces this agent when it starts".to_string(),
    };
    Ok((agent, note))
}

/// `warden agent remove`: unregisters an agent whose cgroup is empty, and
/// removes the cgroup if Warden created it.
pub fn agent_remove(paths: &Paths, name: &str) -> Result<Agent> {
    require_root("warden agent remove")?;
    let mut registry = open_registry(paths)?;
    let agent = registry.get(name)?;
    if agent.cgroup.exists() {
        let pids = cgroup::procs(&agent.cgroup)?;
        if !pids.is_empty() {
            return Err(CommandError::Busy {
                agent: name.into(),
                cgroup: agent.cgroup.display().to_string(),
                pids,
            });
        }
    }
    let entry = AdminEvent::Remove { agent: &agent }.entry(&Actor::current());
    record_durably(paths, entry)?;
    registry.remove(name)?;
    notify_daemon(paths)?;
    if !agent.adopted {
        cgroup::remove(&agent.cgroup)?;
        // The parent Warden created goes too once its last agent has: rmdir
        // refuses a cgroup with children or processes, so others keep it.
        if let Some(parent) = agent.cgroup.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(agent)
}

pub fn agent_list(paths: &Paths) -> Result<Vec<Agent>> {
    Ok(open_registry(paths)?.list()?)
}

pub fn agent_show(paths: &Paths, name: &str) -> Result<Agent> {
    Ok(open_registry(paths)?.get(name)?)
}
