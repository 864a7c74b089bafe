//! The control socket: a Unix stream socket carrying one JSON request and one
//! JSON response per connection. The daemon identifies callers by the
//! socket's peer credentials (SO_PEERCRED), never by anything they send.

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::kernel::Counters;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Re-read the registry and every agent's policy file.
    Reload,
    /// Is this agent enforced right now?
    AgentState {
        agent: String,
    },
    /// Holds awaiting a decision (`all`: every hold ever).
    Approvals {
        all: bool,
    },
    /// Approve or reject a hold. The approver is the socket's peer.
    Decide {
        id: u64,
        approve: bool,
        reason: Option<String>,
    },
    /// Start an agent's budget afresh. Only the agent's approvers, from
    /// outside every agent; recorded (`budget_reset`).
    BudgetReset {
        agent: String,
        budget: String,
        reason: String,
    },
    /// Propose a new policy for an agent whose policy in force asks for
    /// review (`change_review`). The author is the socket's peer.
    Propose {
        agent: String,
        /// Where the text came from (shown, not read by the daemon).
        file: String,
        text: String,
    },
    /// Approve or reject a proposal. The reviewer is the socket's peer.
    Review {
        id: u64,
        approve: bool,
        comment: Option<String>,
    },
    /// Lift an agent's open freeze window (an approver; the socket's peer).
    FreezeOverride {
        agent: String,
        reason: String,
    },
    /// `warden run --agent CHILD` from the socket's peer: if the peer runs
    /// inside an agent, the daemon decides the delegation and moves the
    /// peer into CHILD's cgroup (answer `Delegated`).
    DelegatedRun {
        agent: String,
        argv: Vec<String>,
        /// `--user` or `--keep-fd` was given: refused for a delegated run
        /// (it keeps the caller's user and descriptors).
        #[serde(default)]
        options: bool,
    },
    /// `warden run --agent AGENT` outside every agent: the daemon answers
    /// the agent's state and, if it is enforced and not revoked, records
    /// the run's start (attributed to the peer) durably before answering
    /// (`RunStarted`), so the CLI opens no database on this path.
    RunStart {
        agent: String,
        argv: Vec<String>,
        /// `--user`, `None` for the caller.
        run_as: Option<String>,
        /// What `confine::prepare` built, as the entry records it.
        confinement: serde_json::Value,
    },
    /// A barrier for `warden run`'s denial explainer, from outside every
    /// agent: answered (`Ok`) once every record the kernel had queued when
    /// the request arrived (ring buffer and parked records) has been taken
    /// by the daemon and, with `agent`, once none of that agent's refusals
    /// (what `EvidenceStore::refusals_after` returns) is still queued
    /// before the writer's commit; without `agent` (`{"op":"drained"}`, as
    /// before), once everything queued before it is committed.
    Drained {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    /// `warden kill` from outside every agent, after it set the kernel flag
    /// and ended the agent's processes itself: the daemon marks the agent
    /// revoked in the registry and appends the `kill` entry (attributed to
    /// the peer) durably, through its evidence writer, before it answers
    /// `Ok` (from the CLI's own connection both waited on the writer's
    /// lock while an agent kept it busy).
    KillRecord {
        agent: String,
        reason: String,
        freeze: bool,
        /// (pid, exe) of the processes that were in the cgroup.
        processes: Vec<(u32, String)>,
        /// The flag was set in the pinned maps (false: no programs loaded).
        kernel_applied: bool,
        to_kernel_us: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok {
        message: String,
    },
    Status(Box<StatusReport>),
    AgentState(AgentState),
    Approvals {
        approvals: Vec<crate::approvals::Approval>,
    },
    Error {
        message: String,
    },
    /// `started: false`: the peer runs in no agent (the usual rules of
    /// `warden run` apply); `true`: it now runs as the child.
    Delegated {
        started: bool,
        message: String,
    },
    /// The answer to `RunStart`: the agent's state and, when it was
    /// recorded (enforced, not revoked), the `run` entry's sequence number.
    RunStarted {
        state: Box<AgentState>,
        seq: Option<u64>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentState {
    pub agent: String,
    pub enforced: bool,
    pub cgroup: String,
    pub policy_snapshot: String,
    pub revoked: bool,
    /// The policy in force says `mode: record`: nothing is refused, every
    /// decision is recorded as it would have been.
    #[serde(default)]
    pub record: bool,
    /// The policy's use of its share of each rule map
    /// (`NET4_RULES 3/4096, ...`; empty: no policy in force).
    #[serde(default)]
    pub rule_maps: String,
    /// Each budget of the policy in force, with its use now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetState>,
    /// The `shadow:` candidate evaluated beside the policy in force, with
    /// the differences recorded since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowState>,
}

/// A shadow candidate and its differences from the policy in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShadowState {
    pub snapshot: String,
    /// Per (would-decision, candidate rule): the actions, most first.
    pub differences: Vec<ShadowCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShadowCount {
    /// `would-allow`, `would-deny` or `would-hold`.
    pub decision: String,
    pub rule: String,
    pub count: u64,
}

/// One budget and its use in the current window (read from the kernel).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BudgetState {
    pub id: String,
    /// `connect`, `exec`, `file` or `any`.
    pub count: String,
    pub used: u64,
    pub limit: u64,
    pub per_secs: u64,
    /// `deny`, `hold` or `kill`.
    pub then: String,
    /// Seconds until the kernel starts the next window.
    pub resets_in_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusReport {
    pub pid: u32,
    pub started_at_ns: i64,
    pub cgroup2: String,
    /// Which kernel mechanism enforces each action class.
    pub mechanisms: Vec<Mechanism>,
    pub agents: Vec<AgentState>,
    pub kernel: Counters,
    /// Ring buffer records the daemon received and could not decode.
    pub decode_errors: u64,
    /// Decisions appended to the evidence log by this daemon.
    pub recorded: u64,
    pub policy_errors: Vec<String>,
    /// The Ed25519 public key that signs evidence checkpoints (hex).
    pub public_key: String,
    pub key_id: String,
    /// The on-demand programs that run for every process on the machine
    /// while attached, and why they are attached now.
    #[serde(default)]
    pub global_hooks: Vec<GlobalHook>,
    /// The evidence disk cap, use, and whether it holds.
    #[serde(default)]
    pub evidence_cap: Option<crate::daemon::evidence_cap::CapState>,
}

/// A program attached machine-wide only while some agent's policy needs it:
/// every process pays its dispatch then, agents or not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GlobalHook {
    pub hook: String,
    pub attached: bool,
    /// What it costs everyone, and the agents whose policies need it now.
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mechanism {
    pub action: String,
    pub mechanism: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "the warden daemon is not running (no answer on {socket}): start it with `warden daemon`"
    )]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talk to the warden daemon on {socket}: {source}")]
    Io {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the warden daemon sent a malformed answer: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Sends one request and waits for the answer (blocking; used by the CLI).
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ControlError> {
    call_with_peer(socket, request, timeout).map(|(response, _)| response)
}

/// [`call`], also returning the pid of the process that answered: the
/// socket's peer credentials, the kernel's word rather than the daemon's.
pub fn call_with_peer(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<(Response, u32), ControlError> {
    let io = |source| ControlError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ControlError::NotRunning {
            socket: socket.to_path_buf(),
            source,
        },
        _ => ControlError::Io {
            socket: socket.to_path_buf(),
            source,
        },
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| io(e.into()))?;
    let mut line = serde_json::to_string(request).map_err(ControlError::Malformed)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let response = serde_json::from_str(&answer).map_err(ControlError::Malformed)?;
    Ok((response, peer.pid() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_tagged_json() {
        let req = Request::AgentState {
            agent: "bot".into(),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(text, r#"{"op":"agent_state","agent":"bot"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        let resp = Response::Error {
            message: "no".into(),
        };
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"result":"error","message":"no"}"#
        );
    }

    #[test]
    fn barrier_and_kill_record_wire_format() {
        // Without an agent: the request as it was (and as earlier CLIs
        // send it).
        let every = Request::Drained { agent: None };
        assert_eq!(
            serde_json::to_string(&every).unwrap(),
            r#"{"op":"drained"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"drained"}"#).unwrap(),
            every
        );
        let mine = Request::Drained {
            agent: Some("bot".into()),
        };
        let text = serde_json::to_string(&mine).unwrap();
        assert_eq!(text, r#"{"op":"drained","agent":"bot"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), mine);
        let kill = Request::KillRecord {
            agent: "bot".into(),
            reason: "r".into(),
            freeze: false,
            processes: vec![(7, "/bin/sh".into())],
            kernel_applied: true,
            to_kernel_us: 1200,
        };
        let text = serde_json::to_string(&kill).unwrap();
        assert_eq!(
            text,
            r#"{"op":"kill_record","agent":"bot","reason":"r","freeze":false,"processes":[[7,"/bin/sh"]],"kernel_applied":true,"to_kernel_us":1200}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), kill);
    }

    #[test]
    fn missing_socket_means_not_running() {
        let err = call(
            Path::new("/nonexistent/warden.sock"),
            &Request::Status,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, ControlError::NotRunning { .. }), "{err}");
    }
}
