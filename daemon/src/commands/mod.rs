//! The CLI verbs other than `daemon`, one file per verb group. Each verb is
//! one function that does the work and returns what to print; `render`
//! turns that into the bytes the CLI prints, and `main.rs` parses arguments
//! and maps errors to exit codes.
//!
//! Verbs that change the registry write SQLite directly (so they work with
//! the daemon stopped) and then ask a running daemon to reconcile. This file
//! holds what the verbs share: their error, the root check, the database
//! and the daemon.

use std::{path::PathBuf, time::Duration};

use crate::{
    cgroup,
    config::Paths,
    control::{self, ControlError, Request, Response},
    evidence::{Durability, EvidenceStore, NewEntry},
    registry::Registry,
};

pub(crate) mod admin_event;
mod agent;
mod approvals;
mod evidence;
mod kill;
mod lineage;
mod log;
mod policy;
pub mod render;
pub mod review;
mod run;
mod run_child;

pub use admin_event::AdminEvent;
pub use agent::{agent_add, agent_list, agent_remove, agent_show, AddAgent};
pub use approvals::{approvals, budget_reset, decide, status};
pub use evidence::{evidence_archive, evidence_export, evidence_verify};
pub use kill::{kill, revive, uninstall, KillReport};
pub use lineage::{lineage, Lineage};
pub use log::{checkpoints, completeness, log, log_count, log_verify, tail, LogQuery, Verified};
pub use policy::{
    freeze_override, policy_check, policy_history, policy_proposals, policy_propose, policy_reload,
    policy_review, policy_shadow, policy_suggest, resolve_policy,
};
pub use render::{format_entry, LOG_HEADER};
pub use run::run;

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
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Suggest(#[from] crate::policy::suggest::SuggestError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::StoreError),
    #[error(transparent)]
    Verify(#[from] crate::evidence::VerifyError),
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
    #[error("agent add --parent: {0}")]
    Delegation(String),
    #[error(
        "agent '{0}' (a parent of the agent asked for) has no policy in force in the registry"
    )]
    NoPolicyInForce(String),
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
    #[error("start {cmd} in the agent's cgroup: {message}")]
    ChildSetup { cmd: String, message: String },
    #[error(transparent)]
    Time(#[from] crate::clock::TimeError),
    #[error(transparent)]
    Bundle(#[from] crate::export::BundleError),
    #[error(transparent)]
    Archive(#[from] crate::export::archive::ArchiveError),
    #[error("unknown decision '{given}'; valid: {valid}")]
    UnknownDecision { given: String, valid: String },
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

/// The store for a verb: no integrity check, so the verb's cost does not
/// grow with the log (`PRAGMA quick_check` reads the whole file: 16 s at
/// 7.5M entries). `warden log verify` and the daemon's start check it.
fn open_store(paths: &Paths) -> Result<EvidenceStore> {
    Ok(EvidenceStore::open_with(
        &paths.database(),
        crate::db::Integrity::Trust,
    )?)
}

/// The store after `PRAGMA quick_check`, for `warden log verify`.
fn open_store_checked(paths: &Paths) -> Result<EvidenceStore> {
    Ok(EvidenceStore::open(&paths.database())?)
}

fn record_durably(paths: &Paths, entry: NewEntry) -> Result<()> {
    let entry = with_lineage(paths, entry);
    open_store(paths)?.append(&[entry], Durability::Fsync)?;
    Ok(())
}

/// An entry the CLI writes itself about a delegated child carries the
/// chain too (`details.lineage`, as the daemon's writer adds it).
fn with_lineage(paths: &Paths, mut entry: NewEntry) -> NewEntry {
    if entry.details.contains_key("lineage") {
        return entry;
    }
    if let Ok(chain) = open_registry(paths).and_then(|r| Ok(r.lineage(&entry.agent)?)) {
        if chain.len() > 1 {
            entry
                .details
                .insert("lineage".into(), crate::lineage::chain_value(&chain));
        }
    }
    entry
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
