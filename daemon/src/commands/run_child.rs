//! `warden run`'s command born inside the agent's cgroup: `clone3` with
//! `CLONE_INTO_CGROUP` places the child there from its first instruction.
//! Writing a pid to `cgroup.procs` instead (what `warden run` did before)
//! takes `cgroup_threadgroup_rwsem` for writing, which on kernels whose
//! cgroup2 is mounted without `favordynmods` waits for an RCU grace period:
//! 5-16 ms of a 6 ms `warden run -- true` on this host. A clone into the
//! cgroup takes it only for reading.
//!
//! The child sets itself up (session, user, parent-death signal,
//! confinement) and execs; `warden run` stays outside the agent as its
//! supervisor (`run::supervise`). A failure before the exec comes back over
//! a close-on-exec pipe, so `warden run` reports it as it did when it was
//! the one exec'ing.

use std::{
    ffi::CString,
    io::Read,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use nix::unistd::Pid;

use super::{CommandError, Result};
use crate::confine::Confinement;

/// The user the command runs as (`--user`), resolved by the parent: the
/// child only makes system calls (no NSS lookup, whose file opens would be
/// the agent's).
pub(super) struct Switch {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
}

/// What the child needs, prepared before the clone.
pub(super) struct Plan {
    pub argv: Vec<CString>,
    pub user: Option<Switch>,
    pub confinement: Confinement,
}

/// The outcome of [`start`].
pub(super) enum Started {
    /// The command runs (its exec succeeded) as this child.
    Child(Pid),
    /// No clone into this cgroup here (kernel before 5.7, this process not
    /// single-threaded, or a child killed at birth: see `start`): the
    /// caller moves itself instead. The plan is handed back unused.
    Unsupported(Box<Plan>),
}

/// Starts `plan` as a child inside `cgroup`. On success the command has
/// exec'd; an error of the child before its exec (user switch,
/// confinement, exec) is returned here after the child is reaped.
pub(super) fn start(cgroup: &Path, plan: Plan, name: &str) -> Result<Started> {
    // The child runs on a copy of this process: with one thread it holds no
    // lock another thread held (allocator, stdio).
    if !single_threaded() {
        return Ok(Started::Unsupported(Box::new(plan)));
    }
    let dir = std::fs::File::open(cgroup).map_err(|source| CommandError::Exec {
        cmd: format!("(open cgroup {})", cgroup.display()),
        source,
    })?;
    let (status_read, status_write) = pipe()?;
    let parent = nix::unistd::getpid();
    // SAFETY: this process is single-threaded (checked above).
    let ret = match unsafe { crate::cgroup::clone_into(&dir) } {
        Ok(pid) => pid,
        // No clone3, or no CLONE_INTO_CGROUP (before 5.7).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG)
            ) =>
        {
            return Ok(Started::Unsupported(Box::new(plan)))
        }
        Err(e) => {
            return Err(CommandError::Sys {
                op: format!("clone3 into {}", cgroup.display()),
                source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })
        }
    };
    if ret == 0 {
        drop(status_read);
        child(plan, parent, status_write);
    }
    let pid = Pid::from_raw(ret);
    drop(status_write);
    drop(dir);
    // EOF: the exec happened (the pipe is close-on-exec). Anything else is
    // the child's report of why it did not.
    let mut report = Vec::new();
    let _ = std::fs::File::from(status_read).read_to_end(&mut report);
    match report.split_first() {
        // Born, then exec'd.
        Some((b'B', [])) => Ok(Started::Child(pid)),
        Some((b'B', failure)) => {
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(decode_failure(failure, name))
        }
        // Killed before its first instruction. This kernel (6.18) does so
        // to every clone into a cgroup on which (or on an ancestor of
        // which) `cgroup.kill` was ever written, as `warden kill` does: its
        // fork compares the destination's kill count with the one of the
        // caller's cgroup (cgroup_css_set_fork takes it before it knows
        // the destination). Measured: `warden kill`, `warden revive`, then
        // every `warden run` died of SIGKILL at birth. That cgroup is
        // entered the old way.
        _ => match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::SIGKILL, _)) => {
                Ok(Started::Unsupported(Box::new(plan)))
            }
            other => Err(CommandError::ChildSetup {
                cmd: name.into(),
                message: format!("ended before it could report: {other:?}"),
            }),
        },
    }
}

/// A failure report: `E` and the exec's errno, or `M` and a message.
fn decode_failure(report: &[u8], name: &str) -> CommandError {
    match report.split_first() {
        Some((b'E', errno)) if errno.len() == 4 => {
            let errno = i32::from_ne_bytes([errno[0], errno[1], errno[2], errno[3]]);
            CommandError::Exec {
                cmd: name.into(),
                source: std::io::Error::from_raw_os_error(errno),
            }
        }
        Some((_, message)) => CommandError::ChildSetup {
            cmd: name.into(),
            message: String::from_utf8_lossy(message).into_owned(),
        },
        None => CommandError::ChildSetup {
            cmd: name.into(),
            message: "no report".into(),
        },
    }
}

/// The child: never returns. Only system calls and the confinement's own
/// setup happen here; on any failure it reports on `status` and exits 127.
fn child(plan: Plan, parent: Pid, status: OwnedFd) -> ! {
    let fail = |report: &[u8]| -> ! {
        // SAFETY: write(2) of a valid buffer to our own pipe, then _exit(2)
        // (no destructors, no atexit handlers of the parent's copy).
        unsafe {
            libc::write(status.as_raw_fd(), report.as_ptr().cast(), report.len());
            libc::_exit(127)
        }
    };
    // Alive: its first instruction ran (see `start`).
    // SAFETY: write(2) of one byte to our own pipe.
    unsafe { libc::write(status.as_raw_fd(), b"B".as_ptr().cast(), 1) };
    let sys = |what: &str, ret: libc::c_long| {
        if ret < 0 {
            let e = std::io::Error::last_os_error();
            fail(format!("M{what}: {e}").as_bytes());
        }
    };
    // Its own session: a stopped agent (a hold, backpressure) is never in
    // an orphaned process group. A new child is no group leader, so this
    // cannot fail with EPERM.
    // SAFETY: setsid(2).
    sys("setsid", unsafe { libc::setsid() } as libc::c_long);
    if let Some(u) = &plan.user {
        // Raw system calls: glibc's wrappers would try to change the
        // credentials of every thread its (copied) list names.
        // SAFETY: setgroups/setresgid/setresuid with valid arguments.
        unsafe {
            sys(
                "setgroups",
                libc::syscall(libc::SYS_setgroups, u.groups.len(), u.groups.as_ptr()),
            );
            sys(
                "setgid",
                libc::syscall(libc::SYS_setresgid, u.gid, u.gid, u.gid),
            );
            sys(
                "setuid",
                libc::syscall(libc::SYS_setresuid, u.uid, u.uid, u.uid),
            );
        }
    }
    // Killing `warden run` (its pid is what the caller knows) ends the
    // command, as when that pid was the command. After the user switch,
    // which clears the parent-death signal; then a parent already gone is
    // caught by its pid.
    // SAFETY: prctl(2) with an int argument.
    sys(
        "prctl(PR_SET_PDEATHSIG)",
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } as libc::c_long,
    );
    // SAFETY: getppid(2).
    if unsafe { libc::getppid() } != parent.as_raw() {
        fail(b"Mwarden run ended before its command started");
    }
    // The command starts as `exec` would have started it: no signal
    // blocked (the supervisor blocks the ones it forwards), SIGPIPE at its
    // default (Rust's runtime ignores it).
    // SAFETY: sigprocmask with an empty set; signal(2) with SIG_DFL.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let Plan {
        argv, confinement, ..
    } = plan;
    if let Err(e) = confinement.apply() {
        fail(format!("Mconfine the agent: {}", crate::error_chain(&e)).as_bytes());
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NUL-terminated argv of valid C strings that outlive the call.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut report = vec![b'E'];
    report.extend_from_slice(&errno.to_ne_bytes());
    fail(&report)
}

/// True when this process has one thread (`/proc/self/task`).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(CommandError::Sys {
            op: "pipe for the command's start".into(),
            source: nix::errno::Errno::last(),
        });
    }
    // SAFETY: two descriptors just returned to us, owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn an_exec_failure_reads_back_as_the_exec_error() {
        let mut report = vec![b'E'];
        report.extend_from_slice(&libc::ENOENT.to_ne_bytes());
        let e = decode_failure(&report, "nope");
        assert_eq!(
            e.to_string(),
            format!("start nope: {}", std::io::Error::from_raw_os_error(2))
        );
        let e = decode_failure(b"Msetuid: Operation not permitted", "x");
        assert!(
            e.to_string().contains("setuid: Operation not permitted"),
            "{e}"
        );
    }

    #[test]
    fn the_single_thread_check_sees_other_threads() {
        // cargo test runs tests on threads: the check must see them.
        let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(!single_threaded());
        t.join().unwrap();
    }
}
