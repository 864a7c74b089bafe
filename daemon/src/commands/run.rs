//! `warden run`: start a command as an agent, inside its cgroup, confined.

use super::{
    admin_event::AdminEvent, open_registry, record_durably, require_root, CommandError, Result,
    DAEMON_TIMEOUT,
};
use crate::{
    actor::Actor,
    cgroup,
    config::Paths,
    control::{self, ControlError, Request, Response},
};

/// `warden run`: starts CMD as the agent. Returns only on error; on success
/// this process becomes CMD (so its exit status is CMD's).
pub fn run(
    paths: &Paths,
    agent_name: &str,
    user: Option<&str>,
    keep_fds: &[i32],
    cmd: &[String],
) -> Result<std::convert::Infallible> {
    use std::os::unix::process::CommandExt;

    // Before this process opens anything of its own.
    let inherited = crate::confine::inherited_fds();

    require_root("warden run")?;
    let agent = open_registry(paths)?.get(agent_name)?;
    let state = match control::call(
        &paths.socket,
        &Request::AgentState {
            agent: agent_name.into(),
        },
        DAEMON_TIMEOUT,
    ) {
        Ok(Response::AgentState(s)) => s,
        Ok(Response::Error { message }) => return Err(CommandError::Daemon(message)),
        Ok(other) => return Err(CommandError::Daemon(format!("unexpected answer {other:?}"))),
        Err(e @ ControlError::NotRunning { .. }) => {
            return Err(CommandError::NotEnforced {
                agent: agent_name.into(),
                why: e.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    if state.revoked {
        return Err(CommandError::Revoked(agent_name.into()));
    }
    if !state.enforced {
        return Err(CommandError::NotEnforced {
            agent: agent_name.into(),
            why: "its programs are not attached; see `warden status`".into(),
        });
    }
    let target_user = match user {
        None => None,
        Some(u) => Some(
            nix::unistd::User::from_name(u)
                .map_err(|source| CommandError::Sys {
                    op: format!("look up user {u}"),
                    source,
                })?
                .ok_or_else(|| CommandError::UnknownUser(u.into()))?,
        ),
    };
    // Built now, while root and before the record (which it must appear in
    // and which it would forbid); applied last before exec.
    let confinement = crate::confine::prepare(paths, &inherited, keep_fds)?;
    let entry = AdminEvent::Run {
        agent: &agent,
        policy_snapshot: &state.policy_snapshot,
        argv: cmd,
        run_as: user,
        cgroup: &state.cgroup,
        confinement: confinement.describe(),
    }
    .entry(&Actor::current());
    record_durably(paths, entry)?;
    cgroup::move_process(&agent.cgroup, 0)?;

    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    if let Some(u) = target_user {
        let name = std::ffi::CString::new(u.name.clone())
            .map_err(|_| CommandError::UnknownUser(u.name.clone()))?;
        nix::unistd::initgroups(&name, u.gid).map_err(|source| CommandError::Sys {
            op: format!("initgroups for {}", u.name),
            source,
        })?;
        nix::unistd::setgid(u.gid).map_err(|source| CommandError::Sys {
            op: "setgid".into(),
            source,
        })?;
        nix::unistd::setuid(u.uid).map_err(|source| CommandError::Sys {
            op: "setuid".into(),
            source,
        })?;
        command
            .env("HOME", &u.dir)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    confinement.apply()?;
    let source = command.exec();
    Err(CommandError::Exec {
        cmd: cmd[0].clone(),
        source,
    })
}
