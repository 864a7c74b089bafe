//! The control socket: one request line per connection, authorised by the
//! peer's credentials, answered by the enforcer.
//!
//! Bounded so that no client (an agent, any local user) can starve the
//! others or the daemon: connections per peer (uid and cgroup: a root agent
//! has its own budget, apart from the root admin's) and in all, the
//! request line's length, and the time to send it. Accept errors (EMFILE)
//! back off, and their log lines are rate-limited.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{ask, enforcer::Command, DaemonError};
use crate::{
    actor::Actor,
    control::{Request, Response},
    holds::{Caller, Verdict},
};

/// Longest request line (bytes, newline included). Requests are a verb and
/// a few short fields.
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// How long a client has to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections in all.
pub const MAX_CONNECTIONS: usize = 256;
/// Open connections of one peer (uid and cgroup).
pub const MAX_CONNECTIONS_PER_PEER: usize = 16;
/// At most one log line per this interval for repeated accept errors and
/// refused connections; the lines say how many were not logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Who a connection counts against.
type Peer = (u32, PathBuf);

/// Open connections, by peer and in all.
#[derive(Default)]
struct Budget {
    per_peer: HashMap<Peer, usize>,
    total: usize,
}

/// Releases a connection's place in the budget when the client is done,
/// on every path.
struct Slot {
    budget: Arc<Mutex<Budget>>,
    peer: Peer,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut b = self.budget.lock().expect("budget lock");
        b.total -= 1;
        if let Some(n) = b.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                b.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Takes a place for `peer`, or says which bound is full.
fn admit(budget: &Arc<Mutex<Budget>>, peer: Peer) -> Result<Slot, &'static str> {
    let mut b = budget.lock().expect("budget lock");
    if b.total >= MAX_CONNECTIONS {
        return Err("too many control connections");
    }
    let n = b.per_peer.entry(peer.clone()).or_insert(0);
    if *n >= MAX_CONNECTIONS_PER_PEER {
        return Err("too many control connections from this peer");
    }
    *n += 1;
    b.total += 1;
    Ok(Slot {
        budget: Arc::clone(budget),
        peer,
    })
}

/// One log line per `LOG_INTERVAL` for a repeated event, with the count of
/// those not logged.
struct RateLimited {
    what: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    const fn new(what: &'static str) -> Self {
        Self {
            what,
            last: None,
            suppressed: 0,
        }
    }

    fn warn(&mut self, detail: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %detail, suppressed = self.suppressed, "{}", self.what);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The peer's cgroup (empty if unreadable: such peers share one budget).
fn peer_cgroup(pid: Option<i32>) -> PathBuf {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(PathBuf::from))
        })
        .unwrap_or_default()
}

pub(super) async fn serve_control(
    listener: UnixListener,
    enforcer: mpsc::Sender<Command>,
    barriers: Barriers,
) {
    let budget = Arc::new(Mutex::new(Budget::default()));
    let mut accept_errors = RateLimited::new("control socket accept");
    let mut refusals = RateLimited::new("control connection refused");
    let mut backoff = Duration::ZERO;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff = Duration::ZERO;
                s
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOMEM stay until something is closed: wait
                // (10 ms doubling to 1 s) instead of spinning on them.
                accept_errors.warn(&e);
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let (uid, pid) = match stream.peer_cred() {
            Ok(c) => (c.uid(), c.pid()),
            Err(e) => {
                refusals.warn(&e);
                continue;
            }
        };
        let slot = match admit(&budget, (uid, peer_cgroup(pid))) {
            Ok(slot) => slot,
            Err(why) => {
                refusals.warn(&format!("uid {uid} pid {pid:?}: {why}"));
                // Best effort, never waiting: the client learns why.
                let line = format!("{{\"result\":\"error\",\"message\":\"{why}\"}}\n");
                let _ = stream.try_write(line.as_bytes());
                continue;
            }
        };
        let enforcer = enforcer.clone();
        let barriers = barriers.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = handle_client(stream, enforcer, barriers).await {
                tracing::debug!(error = %e, "control client");
            }
        });
    }
}

/// Reads one request line of at most `MAX_LINE_BYTES` within
/// `REQUEST_TIMEOUT`; `Err` is the answer to send instead.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(read: R) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(read.take(MAX_LINE_BYTES as u64 + 1));
    match tokio::time::timeout(REQUEST_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
        Err(_) => Err(format!(
            "no complete request line within {}s",
            REQUEST_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("read request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_LINE_BYTES => {
            Err(format!("request line longer than {MAX_LINE_BYTES} bytes"))
        }
        Ok(Ok(_)) => Ok(line),
    }
}

pub(super) async fn handle_client(
    stream: UnixStream,
    enforcer: mpsc::Sender<Command>,
    barriers: Barriers,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let response = match read_request(read).await {
        Err(message) => Response::Error { message },
        Ok(line) => match serde_json::from_slice::<Request>(&line) {
            Err(e) => Response::Error {
                message: format!("malformed request: {e}"),
            },
            Ok(req) => {
                let peer_pid = cred.pid().unwrap_or(0) as u32;
                dispatch(req, cred.uid(), peer_pid, &enforcer, &barriers).await
            }
        },
    };
    let mut text = serde_json::to_string(&response)
        .unwrap_or_else(|e| format!(r#"{{"result":"error","message":"serialise response: {e}"}}"#));
    text.push('\n');
    tokio::time::timeout(REQUEST_TIMEOUT, write.write_all(text.as_bytes()))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// The reply of a command that answers a message or a refusal.
fn answer(reply: Option<Result<String, String>>) -> Response {
    match reply {
        Some(Ok(message)) => Response::Ok { message },
        Some(Err(message)) => Response::Error { message },
        None => Response::Error {
            message: "daemon is shutting down".into(),
        },
    }
}

/// Where `drained` barriers go: the event reader (`read_events`).
pub(super) type Barriers = tokio::sync::mpsc::Sender<super::events::Barrier>;

/// How long a `drained` barrier may take in the daemon before its answer
/// is an error: the most an explainer may wait (`WARDEN_EXPLAIN_BARRIER_SECS`
/// up to 30 s; 10 s by default). An agent's barrier waits only for that
/// agent's refusals, but those can be queued behind another agent's
/// backlog: in a debug build under a flood, 2.7-9.2 s.
const DRAIN_BOUND: Duration = Duration::from_secs(30);

pub(super) async fn dispatch(
    req: Request,
    uid: u32,
    pid: u32,
    enforcer: &mpsc::Sender<Command>,
    barriers: &Barriers,
) -> Response {
    let gone = || Response::Error {
        message: "daemon is shutting down".into(),
    };
    match req {
        Request::Status => match ask(enforcer, |reply| Command::Status { reply }).await {
            Some(s) => Response::Status(Box::new(s)),
            None => gone(),
        },
        Request::AgentState { agent } => {
            match ask(enforcer, |reply| Command::AgentState { agent, reply }).await {
                Some(Ok(s)) => Response::AgentState(s),
                Some(Err(e)) => Response::Error {
                    message: crate::error_chain(&e),
                },
                None => gone(),
            }
        }
        Request::Approvals { all } => {
            match ask(enforcer, |reply| Command::Approvals { all, uid, reply }).await {
                Some(approvals) => Response::Approvals { approvals },
                None => gone(),
            }
        }
        Request::Decide {
            id,
            approve,
            reason,
        } => {
            let verdict = if approve {
                Verdict::Approve
            } else {
                Verdict::Reject
            };
            let caller = Caller { uid, pid };
            match ask(enforcer, |reply| Command::Decide {
                id,
                verdict,
                reason,
                caller,
                reply,
            })
            .await
            {
                Some(Ok(message)) => Response::Ok { message },
                Some(Err(e)) => Response::Error {
                    message: crate::error_chain(&e),
                },
                None => gone(),
            }
        }
        Request::BudgetReset {
            agent,
            budget,
            reason,
        } => {
            let actor = Actor::of(uid, pid);
            answer(
                ask(enforcer, |reply| Command::BudgetReset {
                    agent,
                    budget,
                    reason,
                    actor,
                    reply,
                })
                .await,
            )
        }
        Request::Propose { agent, file, text } => {
            let caller = Caller { uid, pid };
            answer(
                ask(enforcer, |reply| Command::Propose {
                    agent,
                    file,
                    text,
                    caller,
                    reply,
                })
                .await,
            )
        }
        Request::Review {
            id,
            approve,
            comment,
        } => {
            let caller = Caller { uid, pid };
            answer(
                ask(enforcer, |reply| Command::Review {
                    id,
                    approve,
                    comment,
                    caller,
                    reply,
                })
                .await,
            )
        }
        Request::FreezeOverride { agent, reason } => {
            let caller = Caller { uid, pid };
            answer(
                ask(enforcer, |reply| Command::FreezeOverride {
                    agent,
                    reason,
                    caller,
                    reply,
                })
                .await,
            )
        }
        Request::DelegatedRun {
            agent,
            argv,
            options,
        } => {
            let actor = Actor::of(uid, pid);
            match ask(enforcer, |reply| Command::DelegatedRun {
                child: agent,
                argv,
                options,
                actor,
                reply,
            })
            .await
            {
                Some(Ok(super::delegation::DelegatedRun::NotInAgent)) => Response::Delegated {
                    started: false,
                    message: "the caller runs in no agent".into(),
                },
                Some(Ok(super::delegation::DelegatedRun::Started(message))) => {
                    Response::Delegated {
                        started: true,
                        message,
                    }
                }
                Some(Err(message)) => Response::Error { message },
                None => gone(),
            }
        }
        Request::RunStart {
            agent,
            argv,
            run_as,
            confinement,
        } => {
            if uid != 0 {
                return Response::Error {
                    message: format!("warden run needs root; caller is uid {uid}"),
                };
            }
            let actor = Actor::of(uid, pid);
            let start = super::run_start::RunStart {
                agent,
                argv,
                run_as,
                confinement,
            };
            match ask(enforcer, |reply| Command::RunStart {
                start,
                actor,
                reply,
            })
            .await
            {
                Some(Ok((state, seq))) => Response::RunStarted {
                    state: Box::new(state),
                    seq,
                },
                Some(Err(message)) => Response::Error { message },
                None => gone(),
            }
        }
        Request::Drained { agent } => drained(uid, pid, agent, enforcer, barriers).await,
        Request::KillRecord {
            agent,
            reason,
            freeze,
            processes,
            kernel_applied,
            to_kernel_us,
        } => {
            if uid != 0 {
                return Response::Error {
                    message: format!("warden kill needs root; caller is uid {uid}"),
                };
            }
            let actor = Actor::of(uid, pid);
            let kill = super::kill_record::KillRecord {
                agent,
                reason,
                freeze,
                processes,
                kernel_applied,
                to_kernel_us,
            };
            match ask(enforcer, |reply| Command::KillRecord { kill, actor, reply }).await {
                Some(Ok(())) => Response::Ok {
                    message: "kill recorded".into(),
                },
                Some(Err(message)) => Response::Error { message },
                None => Response::Error {
                    message: "daemon is shutting down".into(),
                },
            }
        }
        Request::Reload => {
            if uid != 0 {
                return Response::Error {
                    message: format!("reload needs root; caller is uid {uid}"),
                };
            }
            let actor = Actor::of(uid, pid);
            let check = actor.clone();
            match ask(enforcer, |reply| Command::RefuseAgentCaller {
                actor: check,
                verb: "reload",
                reply,
            })
            .await
            {
                Some(None) => {}
                Some(Some(message)) => return Response::Error { message },
                None => return gone(),
            }
            match ask(enforcer, |reply| Command::Reconcile { actor, reply }).await {
                Some(errors) if errors.is_empty() => Response::Ok {
                    message: "registry and policies reloaded".into(),
                },
                Some(errors) => Response::Error {
                    message: errors.join("\n"),
                },
                None => gone(),
            }
        }
    }
}

/// `drained`: root, from outside every agent (each answer costs the reader
/// a drain and the writer a commit, which an agent may not ask for in a
/// loop); answered once the reader has handed every record queued before
/// the request to the writer (and the enforcer) and then, for `agent`,
/// once none of its refusals is still queued before the writer's commit
/// (`pending`), or without one, once the writer has committed everything
/// queued before the request.
async fn drained(
    uid: u32,
    pid: u32,
    agent: Option<String>,
    enforcer: &mpsc::Sender<Command>,
    barriers: &Barriers,
) -> Response {
    let asked = Instant::now();
    if uid != 0 {
        return Response::Error {
            message: format!("drained needs root; caller is uid {uid}"),
        };
    }
    if agent.as_deref().is_some_and(str::is_empty) {
        return Response::Error {
            message: "drained: the agent's name is empty".into(),
        };
    }
    let actor = Actor::of(uid, pid);
    match ask(enforcer, |reply| Command::RefuseAgentCaller {
        actor,
        verb: "drained",
        reply,
    })
    .await
    {
        Some(None) => {}
        Some(Some(message)) => return Response::Error { message },
        None => {
            return Response::Error {
                message: "daemon is shutting down".into(),
            }
        }
    }
    let (done, wait) = tokio::sync::oneshot::channel();
    let for_agent = agent.is_some();
    let barrier = super::events::Barrier { agent, done };
    if barriers.send(barrier).await.is_err() {
        return Response::Error {
            message: "the event reader has stopped".into(),
        };
    }
    match tokio::time::timeout(DRAIN_BOUND, wait).await {
        Ok(Ok(Ok(()))) => {
            tracing::debug!(
                pid,
                for_agent,
                ms = asked.elapsed().as_secs_f64() * 1e3,
                "drained: answered"
            );
            let message = if for_agent {
                "every refusal of the agent queued before the request is in the log"
            } else {
                "every record queued before the request is in the log"
            };
            Response::Ok {
                message: message.into(),
            }
        }
        Ok(Ok(Err(e))) => Response::Error {
            message: crate::error_chain(&e),
        },
        Ok(Err(_)) => Response::Error {
            message: "the event reader has stopped".into(),
        },
        Err(_) => Response::Error {
            message: format!(
                "the log did not catch up within {} s",
                DRAIN_BOUND.as_secs()
            ),
        },
    }
}

pub(super) fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let io = |op, source| DaemonError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create socket directory", e))?;
    }
    if path.exists() {
        // A live daemon answers; a stale socket file from a crash does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| io("remove stale socket", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io("bind control socket", e))?;
    // Anyone may connect; each request is authorised by the caller's
    // credentials (SO_PEERCRED).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| io("set permissions of", e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_has_its_own_budget_and_places_come_back() {
        let budget = Arc::new(Mutex::new(Budget::default()));
        let agent = (0, PathBuf::from("/agents/a"));
        let admin = (0, PathBuf::from("/user.slice"));
        let held: Vec<Slot> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| admit(&budget, agent.clone()).expect("within the budget"))
            .collect();
        assert!(
            admit(&budget, agent.clone()).is_err(),
            "over the peer budget"
        );
        // Same uid, another cgroup: not starved.
        let other = admit(&budget, admin).expect("another peer");
        drop(held);
        drop(other);
        let b = budget.lock().unwrap();
        assert_eq!((b.total, b.per_peer.len()), (0, 0));
    }

    #[tokio::test]
    async fn a_line_over_the_bound_is_refused_without_reading_on() {
        let long = vec![b'a'; 10 * MAX_LINE_BYTES];
        let err = read_request(&long[..]).await.unwrap_err();
        assert_eq!(
            err,
            format!("request line longer than {MAX_LINE_BYTES} bytes")
        );
        let ok = read_request(&b"{\"request\":\"status\"}\nrest"[..]).await;
        assert_eq!(ok.unwrap(), b"{\"request\":\"status\"}\n");
    }
}
