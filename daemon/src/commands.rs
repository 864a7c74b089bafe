//! The CLI verbs other than `daemon`. Each is one function that does the
//! work and returns what to print; `main.rs` parses arguments and maps
//! errors to exit codes.
//!
//! Verbs that change the registry write SQLite directly (so they work with
//! the daemon stopped) and then ask a running daemon to reconcile.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::json;

use crate::{
    actor::{Actor, Recorded},
    cgroup, clock,
    config::Paths,
    control::{self, ControlError, Request, Response},
    evidence::{self, Durability, EvidenceStore, NewEntry},
    policy,
    registry::{Agent, NewAgent, Registry},
};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0} needs root (it manages cgroups and Warden's database); run it with sudo")]
    NotRoot(&'static str),
    #[error("policy file {file} is not in the policy directory {dir}")]
    PolicyOutsideDir { file: PathBuf, dir: PathBuf },
    #[error("read policy file {file}: {source}")]
    ReadPolicy {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Evidence(#[from] evidence::StoreError),
    #[error(transparent)]
    Verify(#[from] evidence::VerifyError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("read checkpoint anchor {file}: {source}")]
    Anchor {
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
    #[error("confine the agent: {0}")]
    Confine(#[from] crate::confine::ConfineError),
    #[error("the warden daemon is running (it answers on {0}); stop it before uninstalling")]
    DaemonRunning(PathBuf),
    #[error("the daemon refused: {0}")]
    Daemon(String),
    #[error("agent '{agent}' is not enforced by the running daemon ({why}); refusing to start an unenforced agent")]
    NotEnforced { agent: String, why: String },
    #[error("agent '{0}' is revoked (kill switch); `warden revive` lifts it")]
    Revoked(String),
    #[error("agent '{agent}' still has processes in {cgroup}: {pids:?}; stop them first")]
    Busy {
        agent: String,
        cgroup: String,
        pids: Vec<u32>,
    },
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
    #[error("start {cmd}: {source}")]
    Exec {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = CommandError> = std::result::Result<T, E>;

const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

fn require_root(verb: &'static str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(CommandError::NotRoot(verb))
    }
}

fn open_registry(paths: &Paths) -> Result<Registry> {
    std::fs::create_dir_all(&paths.state_dir).map_err(|source| CommandError::StateDir {
        path: paths.state_dir.clone(),
        source,
    })?;
    Ok(Registry::open(&paths.database())?)
}

fn open_store(paths: &Paths) -> Result<EvidenceStore> {
    Ok(EvidenceStore::open(&paths.database())?)
}

fn record_durably(paths: &Paths, entry: NewEntry) -> Result<()> {
    open_store(paths)?.append(&[entry], Durability::Fsync)?;
    Ok(())
}

/// Resolves `--policy FILE` to its name inside the policy directory and
/// checks that it parses and compiles.
pub fn resolve_policy(paths: &Paths, file: &Path) -> Result<(String, policy::Policy)> {
    let full = if file.components().count() == 1 {
        paths.policy_dir.join(file)
    } else {
        file.to_path_buf()
    };
    let read_err = |source| CommandError::ReadPolicy {
        file: full.clone(),
        source,
    };
    let canonical = full.canonicalize().map_err(read_err)?;
    let dir = paths
        .policy_dir
        .canonicalize()
        .map_err(|source| CommandError::ReadPolicy {
            file: paths.policy_dir.clone(),
            source,
        })?;
    let name = match canonical.strip_prefix(&dir) {
        Ok(rel) if rel.components().count() == 1 => rel.to_string_lossy().into_owned(),
        _ => {
            return Err(CommandError::PolicyOutsideDir {
                file: full,
                dir: paths.policy_dir.clone(),
            })
        }
    };
    // The daemon checks the mechanisms when it reconciles, and this command
    // reports its refusal; capacity and format are checked here.
    let compiled = policy::compile_policy_file(&full, &policy::Capabilities::assume_all())?;
    Ok((name, compiled.parsed))
}

/// Asks a running daemon to reconcile. `Ok(false)` when no daemon runs.
fn notify_daemon(paths: &Paths) -> Result<bool> {
    match control::call(&paths.socket, &Request::Reload, DAEMON_TIMEOUT) {
        Ok(Response::Ok { .. }) => Ok(true),
        Ok(Response::Error { message }) => Err(CommandError::Daemon(message)),
        Ok(other) => Err(unexpected(other)),
        Err(ControlError::NotRunning { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

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
    let mut details = serde_json::Map::new();
    details.insert("cgroup".into(), json!(cgroup_path.display().to_string()));
    details.insert("adopted".into(), json!(adopted));
    details.insert("agent_id".into(), json!(agent.id));
    let entry = actor.entry(Recorded {
        kind: "agent_register",
        agent: &agent.name,
        owner: &agent.owner,
        action: "agent.register",
        target: &policy_name,
        decision: "registered",
        policy_snapshot: &parsed.snapshot(),
        details,
    });
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
    let entry = Actor::current().entry(Recorded {
        kind: "agent_remove",
        agent: &agent.name,
        owner: &agent.owner,
        action: "agent.remove",
        target: &agent.cgroup.display().to_string(),
        decision: "removed",
        policy_snapshot: "none",
        details: serde_json::Map::new(),
    });
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

fn shell_words(cmd: &[String]) -> String {
    cmd.iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `warden run`: starts CMD as the agent. Returns only on error; on success
/// this process becomes CMD (so its exit status is CMD's).
pub fn run(
    paths: &Paths,
    agent_name: &str,
    user: Option<&str>,
    cmd: &[String],
) -> Result<std::convert::Infallible> {
    use std::os::unix::process::CommandExt;

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
    let mut details = serde_json::Map::new();
    details.insert("argv".into(), json!(cmd));
    details.insert("run_as".into(), json!(user.unwrap_or("(caller)")));
    details.insert("cgroup".into(), json!(state.cgroup));
    // Built now, while root and before the record (which it must appear in
    // and which it would forbid); applied last before exec.
    let confinement = crate::confine::prepare(paths)?;
    details.insert("confinement".into(), confinement.describe());
    let entry = Actor::current().entry(Recorded {
        kind: "run",
        agent: &agent.name,
        owner: &agent.owner,
        action: "run",
        target: &shell_words(cmd),
        decision: "started",
        policy_snapshot: &state.policy_snapshot,
        details,
    });
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

/// `warden policy check FILE...`: runs the daemon's policy pipeline on each
/// file, assuming every mechanism present (see `policy::Capabilities`).
pub fn policy_check(file: &Path) -> Result<policy::Policy> {
    let compiled = policy::compile_policy_file(file, &policy::Capabilities::assume_all())?;
    Ok(compiled.parsed)
}

/// Asks the running daemon; its refusals become errors, any other answer
/// is returned for the caller to match.
fn ask(paths: &Paths, request: &Request) -> Result<Response> {
    match control::call(&paths.socket, request, DAEMON_TIMEOUT)? {
        Response::Error { message } => Err(CommandError::Daemon(message)),
        answer => Ok(answer),
    }
}

fn unexpected(answer: Response) -> CommandError {
    CommandError::Daemon(format!("unexpected answer {answer:?}"))
}

/// `warden policy reload`.
pub fn policy_reload(paths: &Paths) -> Result<()> {
    match ask(paths, &Request::Reload)? {
        Response::Ok { .. } => Ok(()),
        other => Err(unexpected(other)),
    }
}

pub fn policy_history(
    paths: &Paths,
    agent: Option<&str>,
) -> Result<Vec<crate::registry::PolicyVersion>> {
    Ok(open_registry(paths)?.policy_versions(agent)?)
}

pub fn log(paths: &Paths, filter: &evidence::Filter) -> Result<Vec<evidence::Entry>> {
    Ok(open_store(paths)?.query(filter)?)
}

/// `warden log tail`: calls `emit` for every entry after `after` (default:
/// the head now), then, with `follow`, for each new one as it is appended.
/// Stops when `emit` returns false.
pub fn tail(
    paths: &Paths,
    after: Option<u64>,
    follow: bool,
    emit: &mut dyn FnMut(&evidence::Entry) -> bool,
) -> Result<()> {
    let store = open_store(paths)?;
    let mut next = match after {
        Some(seq) => seq + 1,
        None => store.head()?.map_or(1, |(seq, _)| seq + 1),
    };
    loop {
        let head = store.head()?.map_or(0, |(seq, _)| seq);
        while next <= head {
            let to = head.min(next + 999);
            for e in store.read_range(next, to)? {
                if !emit(&e) {
                    return Ok(());
                }
            }
            next = to + 1;
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `warden log verify --completeness`: approval-gated entries missing a
/// required field.
pub fn completeness(paths: &Paths) -> Result<evidence::completeness::Completeness> {
    let store = open_store(paths)?;
    let mut check = evidence::completeness::Completeness::default();
    // The closure never breaks, so the flow is always Continue.
    let _ = store.for_each_entry(|e| {
        check.push(e);
        std::ops::ControlFlow::<()>::Continue(())
    })?;
    Ok(check)
}

/// `warden log checkpoints`.
pub fn checkpoints(paths: &Paths) -> Result<Vec<evidence::checkpoint::Checkpoint>> {
    let store = open_store(paths)?;
    evidence::checkpoint::read_all(store.connection())
        .map_err(|e| CommandError::Verify(evidence::VerifyError::from(e)))
}

/// What `warden log verify` established.
pub struct Verified {
    pub chain: evidence::VerifyReport,
    /// None when this host has no signing key yet (no daemon has run).
    pub checkpoints: Option<evidence::checkpoint::CheckpointReport>,
    pub anchors: usize,
}

/// `warden log verify [--anchor FILE...]`: the chain, every checkpoint
/// (with the host's public key), and checkpoints kept elsewhere.
pub fn log_verify(paths: &Paths, anchor_files: &[PathBuf]) -> Result<Verified> {
    use evidence::checkpoint::{self, Checkpoint};
    let store = open_store(paths)?;
    let mut anchors = Vec::new();
    for file in anchor_files {
        let text = std::fs::read_to_string(file).map_err(|source| CommandError::ReadPolicy {
            file: file.clone(),
            source,
        })?;
        // A file may hold one checkpoint or a list (checkpoints.json of an export).
        let parsed: Result<Vec<Checkpoint>, _> = serde_json::from_str::<Vec<Checkpoint>>(&text)
            .or_else(|_| serde_json::from_str::<Checkpoint>(&text).map(|c| vec![c]));
        anchors.extend(parsed.map_err(|e| CommandError::Anchor {
            file: file.clone(),
            source: e,
        })?);
    }
    let key = match checkpoint::load_public_key(&paths.state_dir) {
        Ok(key) => key,
        Err(_) if anchors.is_empty() => {
            return Ok(Verified {
                chain: evidence::verify_store(&store)?,
                checkpoints: None,
                anchors: 0,
            })
        }
        Err(e) => return Err(evidence::VerifyError::from(e).into()),
    };
    let (chain, signed) = evidence::verify_store_signed(&store, &key, &anchors)?;
    Ok(Verified {
        chain,
        checkpoints: Some(signed),
        anchors: anchors.len(),
    })
}

/// `warden approvals`: holds awaiting a decision (or all with `all`).
pub fn approvals(paths: &Paths, all: bool) -> Result<Vec<crate::approvals::Approval>> {
    match ask(paths, &Request::Approvals { all })? {
        Response::Approvals { approvals } => Ok(approvals),
        other => Err(unexpected(other)),
    }
}

/// `warden approve|reject ID`: the daemon identifies the approver from this
/// process's credentials on the socket.
pub fn decide(paths: &Paths, id: u64, approve: bool, reason: Option<&str>) -> Result<String> {
    let request = Request::Decide {
        id,
        approve,
        reason: reason.map(str::to_string),
    };
    match ask(paths, &request)? {
        Response::Ok { message } => Ok(message),
        other => Err(unexpected(other)),
    }
}

pub fn status(paths: &Paths) -> Result<control::StatusReport> {
    match ask(paths, &Request::Status)? {
        Response::Status(s) => Ok(*s),
        other => Err(unexpected(other)),
    }
}

/// `s`, shortened to `width` characters with an ellipsis (tables only; the
/// JSON output and the evidence keep every byte).
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width - 1).collect();
        out.push('…');
        out
    }
}

/// Table row for `warden log`.
pub fn format_entry(e: &evidence::Entry) -> String {
    format!(
        "{:>6}  {}  {:<14} {:<18} {:>7}  {:<14} {:<26} {:<9} {}",
        e.seq,
        clock::format_ns(e.ts_ns),
        e.agent,
        if e.login_user == "unset" || e.login_user == e.user {
            e.user.clone()
        } else {
            format!("{}({})", e.user, e.login_user)
        },
        e.pid,
        e.action,
        clip(&e.target, 26),
        e.decision,
        e.rule_id
    )
}

pub const LOG_HEADER: &str =
    "   seq  time                      agent          user                   pid  action         target                     decision  rule";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quotes_only_when_needed() {
        let cmd = vec![
            "curl".to_string(),
            "-s".into(),
            "http://x/a b".into(),
            "it's".into(),
        ];
        assert_eq!(shell_words(&cmd), r"curl -s 'http://x/a b' 'it'\''s'");
    }
}
