//! `warden run`: start a command as an agent, inside its cgroup, confined.

use super::{open_store, require_root, run_child, CommandError, Result, DAEMON_TIMEOUT};
use crate::evidence::Entry;
use crate::{
    cgroup,
    config::Paths,
    control::{self, ControlError, Request, Response},
};

/// `warden run`: starts CMD as the agent. Returns only on error; on success
/// CMD runs as this process's child, born in the agent's cgroup
/// (`run_child`), and this process ends as CMD ends (same exit code or
/// signal). Where the kernel cannot clone into a cgroup, this process
/// moves into it and becomes CMD (`exec_in_place`).
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

    // From inside an agent, only a delegation (decided and carried out by
    // the daemon); outside every agent, the usual rules below.
    let options = user.is_some() || !keep_fds.is_empty();
    if delegated(paths, agent_name, cmd, options)? {
        let source = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
        return Err(CommandError::Exec {
            cmd: cmd[0].clone(),
            source,
        });
    }

    require_root("warden run")?;
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
    // The daemon answers the agent's state and, if the run may start,
    // records it (attributed to this process, the socket's peer) durably
    // before it answers: this process opens no database on its way to the
    // command. No daemon: no run (the agent would not be enforced).
    let request = Request::RunStart {
        agent: agent_name.into(),
        argv: cmd.to_vec(),
        run_as: user.map(str::to_string),
        confinement: confinement.describe(),
    };
    let (state, recorded) = match control::call(&paths.socket, &request, DAEMON_TIMEOUT) {
        Ok(Response::RunStarted { state, seq }) => (*state, seq),
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
    let head = recorded
        .ok_or_else(|| CommandError::Daemon("the daemon did not record the run's start".into()))?;
    // Forked before the command starts: the explainer stays outside the
    // agent's cgroup and confinement.
    explain_refusals(paths, agent_name, head)?;

    let cgroup = std::path::Path::new(&state.cgroup);
    let argv = cmd
        .iter()
        .map(|a| std::ffi::CString::new(a.as_bytes()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CommandError::Exec {
            cmd: cmd[0].clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
    let switch = match &target_user {
        None => None,
        Some(u) => {
            let name = std::ffi::CString::new(u.name.clone())
                .map_err(|_| CommandError::UnknownUser(u.name.clone()))?;
            let groups =
                nix::unistd::getgrouplist(&name, u.gid).map_err(|source| CommandError::Sys {
                    op: format!("list the groups of {}", u.name),
                    source,
                })?;
            // The command's environment is this process's: set here, while
            // single-threaded, inherited by the child.
            std::env::set_var("HOME", &u.dir);
            std::env::set_var("USER", &u.name);
            std::env::set_var("LOGNAME", &u.name);
            Some(run_child::Switch {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                groups: groups.iter().map(|g| g.as_raw()).collect(),
            })
        }
    };
    let plan = run_child::Plan {
        argv,
        user: switch,
        confinement,
    };
    // The forwarded signals are blocked before the command exists: one
    // sent while it starts waits for `supervise`.
    let set = block_forwarded()?;
    match run_child::start(cgroup, plan, &cmd[0])? {
        run_child::Started::Child(pid) => {
            // The supervisor keeps no descriptor the agent could write to
            // or read from but its stderr (for its own errors).
            forget_stdio();
            supervise(pid, &set, &cmd[0], Some((&paths.socket, agent_name)))
        }
        run_child::Started::Unsupported(plan) => {
            let _ = nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
                Some(&set),
                None,
            );
            exec_in_place(cgroup, target_user, plan.confinement, cmd)
        }
    }
}

/// Without `clone3(CLONE_INTO_CGROUP)` (kernels before 5.7, or a clone
/// killed at birth: `run_child::start`): this process
/// moves into the agent's cgroup and becomes the command (the command keeps
/// `warden run`'s pid), or, when it cannot start a session, spawns it and
/// supervises it.
fn exec_in_place(
    cgroup: &std::path::Path,
    target_user: Option<nix::unistd::User>,
    confinement: crate::confine::Confinement,
    cmd: &[String],
) -> Result<std::convert::Infallible> {
    use std::os::unix::process::CommandExt;
    cgroup::move_process(cgroup, 0)?;

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
    // Its own session: a stopped agent (a hold, backpressure) is never in
    // an orphaned process group, which the kernel would SIGHUP when the
    // shell that started it exits. A process group leader (started by a
    // job-control shell) cannot setsid(): then the command runs as a child
    // in a new session and this process waits for it (`supervise`).
    if nix::unistd::setsid().is_err() {
        // SAFETY: setsid(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            })
        };
        let set = block_forwarded()?;
        let child = command.spawn().map_err(|source| CommandError::Exec {
            cmd: cmd[0].clone(),
            source,
        })?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        return supervise(pid, &set, &cmd[0], None);
    }
    let source = command.exec();
    Err(CommandError::Exec {
        cmd: cmd[0].clone(),
        source,
    })
}

/// Points this process's stdin and stdout at /dev/null (the supervisor's
/// and the explainer's): the command has its own copies, and a reader of
/// the command's output sees its end when the command ends.
fn forget_stdio() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// Asks the daemon whether this process runs inside an agent and, if it
/// does, to start `agent` as its delegated child: `Ok(true)` when this
/// process now runs in the child's cgroup (it keeps the confinement it
/// had, and execs the command), `Ok(false)` when it runs in no agent or no
/// daemon answers (the usual `warden run` follows, which needs a daemon).
fn delegated(
    paths: &crate::config::Paths,
    agent: &str,
    cmd: &[String],
    options: bool,
) -> Result<bool> {
    let request = Request::DelegatedRun {
        agent: agent.into(),
        argv: cmd.to_vec(),
        options,
    };
    match control::call(&paths.socket, &request, DAEMON_TIMEOUT) {
        Ok(Response::Delegated { started, .. }) => Ok(started),
        Ok(Response::Error { message }) => Err(CommandError::Daemon(message)),
        Ok(other) => Err(CommandError::Daemon(format!("unexpected answer {other:?}"))),
        Err(ControlError::NotRunning { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Signals passed on to the agent started in its own session: the ones a
/// terminal or a supervisor sends to stop a command. SIGHUP is not: not
/// dying of it is the point of the new session.
const FORWARDED: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGQUIT,
];

/// Blocks the `FORWARDED` signals and SIGCHLD (taken with sigtimedwait by
/// `supervise`); the set blocked. A child started afterwards unblocks them
/// before its exec (std's spawn, `run_child`).
fn block_forwarded() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|source| {
        CommandError::Sys {
            op: "block signals to forward".into(),
            source,
        }
    })?;
    Ok(set)
}

/// How long the supervisor keeps the ended command unreaped for the
/// daemon's barrier: the command's exit waits for it, so it is short
/// (the explainer waits longer, holding only stderr).
const SUPERVISE_BARRIER: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits for the command `pid` (a child, in its own session), passes
/// `FORWARDED` signals on to it, and ends as it ended: same exit code, or
/// the same signal. `set` is `block_forwarded`'s: SIGCHLD among them wakes
/// this loop as soon as the command ends. It only waits and signals: it
/// reads nothing the agent wrote.
///
/// With `barrier` (the socket and the agent), the ended command is left a
/// zombie until the daemon's `drained` barrier for the agent is answered
/// (at most `SUPERVISE_BARRIER`): the records
/// of its last actions are attributed from its /proc entry (its login uid),
/// which reaping would remove. When `warden run` was the command, its
/// caller reaped it only after the explainer's barrier had closed the
/// run's stderr.
fn supervise(
    pid: nix::unistd::Pid,
    set: &nix::sys::signal::SigSet,
    name: &str,
    barrier: Option<(&std::path::Path, &str)>,
) -> Result<std::convert::Infallible> {
    use nix::sys::{
        signal::{kill, raise, signal, SigHandler, SigmaskHow, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    };
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    loop {
        if let Some((socket, agent)) = barrier {
            if ended(pid) {
                let request = Request::Drained {
                    agent: Some(agent.to_string()),
                };
                let _ = control::call(socket, &request, SUPERVISE_BARRIER);
            }
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, s, _)) => {
                // End the same way: default action, unblocked, raised.
                // SAFETY: restoring the default disposition.
                let _ = unsafe { signal(s, SigHandler::SigDfl) };
                let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(set), None);
                let _ = raise(s);
                std::process::exit(128 + s as i32);
            }
            Ok(_) => {}
            Err(source) => {
                return Err(CommandError::Sys {
                    op: format!("wait for {name}"),
                    source,
                })
            }
        }
        // SAFETY: sigtimedwait with a valid set, no info wanted, a valid
        // timeout.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
        if sig > 0 && sig != libc::SIGCHLD {
            if let Ok(s) = Signal::try_from(sig) {
                let _ = kill(pid, s);
            }
        }
    }
}

/// True once `pid` (a child) has ended, leaving it unreaped.
fn ended(pid: nix::unistd::Pid) -> bool {
    // SAFETY: an all-zero siginfo is valid; waitid on our own child with
    // WNOWAIT (the child stays waitable).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let ret = unsafe {
        libc::waitid(
            libc::P_PID,
            pid.as_raw() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid (0 when no child has changed state).
    ret == 0 && unsafe { info.si_pid() } == pid.as_raw()
}

/// How often the explainer looks for new refusals while the command runs;
/// how long it waits for the daemon's `drained` barrier once the command
/// has ended; and how long it keeps looking after the end when no barrier
/// is answered (the kernel's record of a kill reaches the log a moment
/// after the process is gone). The barrier names this agent, so the
/// daemon answers it once the records before it are taken and none of
/// this agent's refusals is still uncommitted: it waits long only for a
/// refusal of this agent queued behind a backlog, which it then prints.
const EXPLAIN_POLL: std::time::Duration = std::time::Duration::from_millis(100);
const EXPLAIN_BARRIER: std::time::Duration = std::time::Duration::from_secs(10);

/// `EXPLAIN_BARRIER`, or `WARDEN_EXPLAIN_BARRIER_SECS` (1 to 30: what the
/// daemon waits at most) where a slow daemon is expected, such as a debug
/// build under a flood in the tests.
fn explain_barrier() -> std::time::Duration {
    std::env::var("WARDEN_EXPLAIN_BARRIER_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| (1..=30).contains(s))
        .map_or(EXPLAIN_BARRIER, std::time::Duration::from_secs)
}
const EXPLAIN_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// Denials explained where the agent sees them: forks a process that
/// prints one line on this run's stderr for every action of the agent
/// refused, killed or held from now on, until this process (the command's
/// supervisor, or the command itself after its exec on the old path) has
/// ended. It reads the evidence log, so what it says
/// is what was recorded. Every process of the agent is reported, not only
/// this run's (the log knows the agent, not the run).
///
/// The end is seen at once (a pidfd of this process, which stays valid
/// across an exec and becomes readable when it exits); then the daemon's
/// `drained` barrier for this agent says every refusal of it the kernel
/// had queued is in the log, one last look prints them, and the run's
/// stderr is let go. A
/// barrier not answered within `EXPLAIN_BARRIER` (the daemon's writer that
/// far behind) ends it too, after one last look; with no daemon at all the
/// explainer keeps looking for `EXPLAIN_GRACE` instead.
fn explain_refusals(paths: &crate::config::Paths, agent: &str, after_seq: u64) -> Result<()> {
    use nix::unistd::{fork, ForkResult};
    let parent = nix::unistd::getpid();
    // Opened before the fork, close-on-exec: the command does not inherit
    // it. None on a kernel without pidfd_open (5.3+): getppid() then.
    let ended = pidfd_of(parent);
    // SAFETY: `warden run` is single-threaded (its control call is a
    // blocking socket), so the child may allocate and open files.
    match unsafe { fork() }.map_err(|source| CommandError::Sys {
        op: "fork the denial explainer".into(),
        source,
    })? {
        ForkResult::Parent { .. } => {
            drop(ended);
            Ok(())
        }
        ForkResult::Child => {
            // It writes on stderr only: holding the run's stdin and stdout
            // would keep a reader of the command's output (`$(warden run
            // ...)`, a pipe) waiting until the explainer ends.
            forget_stdio();
            let mut after = after_seq;
            let store = open_store(paths).ok();
            let mut print = || {
                if let Some(store) = &store {
                    if let Ok(entries) = store.refusals_after(agent, after, 1000) {
                        for e in &entries {
                            eprintln!("{}", explain(e));
                            after = e.seq;
                        }
                    }
                }
            };
            loop {
                print();
                if command_ended(ended.as_ref(), parent, EXPLAIN_POLL) {
                    break;
                }
            }
            // Only this agent's refusals: what it prints.
            let barrier = Request::Drained {
                agent: Some(agent.to_string()),
            };
            match control::call(&paths.socket, &barrier, explain_barrier()) {
                // No daemon: the grace below.
                Err(ControlError::NotRunning { .. }) => {}
                // Answered, or waited for longer than the grace already
                // (a daemon whose writer is that far behind): a last look.
                _ => {
                    print();
                    std::process::exit(0);
                }
            }
            let since = std::time::Instant::now();
            loop {
                print();
                if since.elapsed() > EXPLAIN_GRACE {
                    std::process::exit(0);
                }
                std::thread::sleep(EXPLAIN_POLL);
            }
        }
    }
}

/// A pidfd of `pid` (close-on-exec), or None where pidfd_open is missing.
fn pidfd_of(pid: nix::unistd::Pid) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) with a pid and no flags; it returns a new
    // descriptor (O_CLOEXEC) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor just returned to us, owned by nothing else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits up to `timeout` for the command's end: true once `parent` (its
/// supervisor, or the command on the old path) has exited.
fn command_ended(
    pidfd: Option<&std::os::fd::OwnedFd>,
    parent: nix::unistd::Pid,
    timeout: std::time::Duration,
) -> bool {
    use std::os::fd::AsRawFd;
    let Some(fd) = pidfd else {
        std::thread::sleep(timeout);
        return nix::unistd::getppid() != parent;
    };
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a bounded timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as libc::c_int) };
    ready > 0
}

/// `warden: denied open /etc/shadow (rule default-deny, policy snapshot
/// 3f2a1b2c..; pid 1234 cat killed)`.
pub fn explain(e: &Entry) -> String {
    let verb = match e.decision.as_str() {
        "deny" => "denied",
        "hold" => "held for approval (`warden approvals`)",
        "rejected" => "rejected",
        "expired" => "expired without approval",
        other => other,
    };
    let snapshot: String = e.policy_snapshot.chars().take(8).collect();
    let comm = e
        .details
        .get("comm")
        .and_then(|c| c.as_str())
        .unwrap_or(&e.exe);
    let how = match e.method.as_str() {
        "kill" => format!("; pid {} {comm} killed", e.pid),
        _ => format!("; pid {} {comm}", e.pid),
    };
    format!(
        "warden: {verb} {} {} (rule {}, policy snapshot {snapshot}..{how})",
        e.action, e.target, e.rule_id
    )
}
