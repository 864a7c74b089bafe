//! The control socket: one request line per connection, authorised by the
//! peer's credentials, answered by the enforcer.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::mpsc};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{ask, enforcer::Command, DaemonError};
use crate::{
    actor::Actor,
    control::{Request, Response},
    holds::{Caller, Verdict},
};

pub(super) async fn serve_control(listener: UnixListener, enforcer: mpsc::Sender<Command>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept");
                continue;
            }
        };
        let enforcer = enforcer.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_client(stream, enforcer).await {
                tracing::warn!(error = %e, "control client");
            }
        });
    }
}

pub(super) async fn handle_client(
    stream: UnixStream,
    enforcer: mpsc::Sender<Command>,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::Error {
            message: format!("malformed request: {e}"),
        },
        Ok(req) => {
            let peer_pid = cred.pid().unwrap_or(0) as u32;
            dispatch(req, cred.uid(), peer_pid, &enforcer).await
        }
    };
    let mut text = serde_json::to_string(&response)
        .unwrap_or_else(|e| format!(r#"{{"result":"error","message":"serialise response: {e}"}}"#));
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

pub(super) async fn dispatch(
    req: Request,
    uid: u32,
    pid: u32,
    enforcer: &mpsc::Sender<Command>,
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
        Request::Reload => {
            if uid != 0 {
                return Response::Error {
                    message: format!("reload needs root; caller is uid {uid}"),
                };
            }
            let actor = Actor::of(uid, pid);
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
