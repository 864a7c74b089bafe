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
    /// `--parent`: a registered agent that delegates to this one. The
    /// child's cgroup is created below the parent's.
    pub parent: Option<&'a str>,
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
    let parent = match req.parent {
        Some(name) => Some(delegating_parent(paths, &registry, name, req)?),
        None => None,
    };
    let (cgroup_path, adopted) = match (req.adopt, &parent) {
        (Some(path), None) => {
            cgroup::check_adoptable(&mount, path)?;
            (path.to_path_buf(), true)
        }
        (None, Some(parent)) => (parent.cgroup.join(req.name), false),
        (None, None) => (paths.agent_cgroup(&mount, req.name), false),
        (Some(_), Some(_)) => {
            return Err(CommandError::Delegation(
                "a delegated child's cgroup is created below its parent's; it cannot adopt one (--cgroup)"
                    .into(),
            ))
        }
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
            parent: req.parent,
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

/// The parent of `agent add --parent`: registered, not itself revoked, and
/// its policy and the child's intersect (the effective policy compiles:
/// bad input is refused here, before anything is created).
fn delegating_parent(
    paths: &Paths,
    registry: &crate::registry::Registry,
    name: &str,
    req: &AddAgent<'_>,
) -> Result<Agent> {
    let parent = registry.get(name)?;
    if parent.status == crate::registry::AgentStatus::Revoked {
        return Err(CommandError::Revoked(parent.name));
    }
    let caps = crate::policy::Capabilities::assume_all();
    let parent_file = paths.policy_dir.join(&parent.policy);
    let parent_policy = crate::policy::compile_policy_file(&parent_file, &caps)?;
    let child_file = if req.policy.components().count() == 1 {
        paths.policy_dir.join(req.policy)
    } else {
        req.policy.to_path_buf()
    };
    let child_policy = crate::policy::compile_policy_file(&child_file, &caps)?;
    crate::policy::compile_delegated(&parent_policy, &child_policy, &caps)?;
    Ok(parent)
}

/// `warden agent remove`: unregisters an agent whose cgroup is empty, and
/// removes the cgroup if Warden created it.
pub fn agent_remove(paths: &Paths, name: &str) -> Result<Agent> {
    require_root("warden agent remove")?;
    let mut registry = open_registry(paths)?;
    let agent = registry.get(name)?;
    let children = registry.children(name)?;
    if !children.is_empty() {
        return Err(crate::registry::RegistryError::HasChildren(
            name.to_string(),
            children.join(", "),
        )
        .into());
    }
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
        // A delegated child's parent cgroup is its parent agent's: kept.
        if let (Some(parent), None) = (agent.cgroup.parent(), &agent.parent) {
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
