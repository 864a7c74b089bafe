//! seccomp: the syscalls an agent may never make, and signals aimed at
//! the daemon by number.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use crate::control::{self, Request};

use super::*;

/// Denied with EPERM, always. Each line says why.
pub(super) const DENIED_SYSCALLS: &[&str] = &[
    // Load or change eBPF programs and maps (Warden's own included).
    "bpf",
    // Kernel code: modules, or a new kernel.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    // Read or change another process (the daemon's memory, its keys).
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    // Uprobes on the daemon and system-wide sampling of its registers and
    // stack; agents have no profiling to do.
    "perf_event_open",
    // io_uring opens and connects are not seen by the fallback hooks.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Permission events would let an agent gate the daemon's own opens.
    "fanotify_init",
    // Evidence timestamps come from this clock.
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    // A signal by pidfd cannot be matched to the daemon by number.
    "pidfd_send_signal",
];

/// Answered with ENOSYS, so libc falls back to an older syscall that lacks
/// the dangerous flag. `clone3` is the only way to `CLONE_INTO_CGROUP`
/// (fork straight into another cgroup, a check Landlock never sees: the
/// cgroup is named by an O_PATH fd); glibc's `fork`, `posix_spawn` and
/// `pthread_create` retry with `clone` on ENOSYS.
pub(super) const ENOSYS_SYSCALLS: &[&str] = &["clone3"];
/// Socket creation refused with EPERM, as the `run` entry lists it: packet
/// sockets send link-layer frames the connect rules never see, and the
/// cgroup `sock_create` hook that decides raw IP sockets is not run for
/// them (the kernel calls it from `inet_create`/`inet6_create` only).
/// `AF_INET` with the obsolete `SOCK_PACKET` type is a packet socket too.
/// ia32 `socketcall(2)` hides its arguments behind a pointer, so it is
/// refused whole (glibc has used the direct calls since Linux 4.3).
pub(crate) const DENIED_SOCKETS: &[&str] = &[
    "socket(AF_PACKET, *)",
    "socket(AF_INET, SOCK_PACKET)",
    "socketcall (ia32)",
];

/// The daemon as `warden run` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DaemonProcess {
    pub pid: i32,
    /// Its threads now: kill(2) on any thread id signals the whole process.
    pub tids: Vec<i32>,
    pub pgid: i32,
    pub sid: i32,
}

/// First arguments of kill(2), tkill(2) and rt_sigqueueinfo(2) that could
/// reach the daemon: its pid, its thread ids, its process group, -1 (every
/// process), and 0 (the caller's group) when the caller shares its session
/// (it could setpgid(2) into the daemon's group). Threads the daemon
/// starts later are not in the list; `LANDLOCK_SCOPE_SIGNAL` covers those.
pub(crate) fn signal_targets(daemon: &DaemonProcess, our_sid: i32) -> Vec<i32> {
    let mut t = vec![daemon.pid];
    t.extend(daemon.tids.iter().copied().filter(|&t| t != daemon.pid));
    if daemon.pgid > 0 {
        t.push(-daemon.pgid);
    }
    t.push(-1);
    if daemon.sid == our_sid {
        t.push(0);
    }
    t
}

pub(super) fn seccomp_err(
    op: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> ConfineError {
    let op = op.into();
    move |source| ConfineError::Seccomp { op, source }
}

pub(super) fn build_seccomp(
    daemon: &DaemonProcess,
    targets: &[i32],
) -> Result<ScmpFilterContext, ConfineError> {
    let eperm = ScmpAction::Errno(libc::EPERM);
    let mut ctx =
        ScmpFilterContext::new(ScmpAction::Allow).map_err(seccomp_err("create filter"))?;
    // ia32 (int 0x80) and x32 reach the same kernel functions by other
    // numbers; libseccomp writes the rules for each table.
    #[cfg(target_arch = "x86_64")]
    for arch in [ScmpArch::X86, ScmpArch::X32] {
        ctx.add_arch(arch)
            .map_err(seccomp_err(format!("add architecture {arch:?}")))?;
    }
    let syscall =
        |name: &str| ScmpSyscall::from_name(name).map_err(seccomp_err(format!("syscall {name}")));
    for name in DENIED_SYSCALLS {
        ctx.add_rule(eperm, syscall(name)?)
            .map_err(seccomp_err(format!("deny {name}")))?;
    }
    let enosys = ScmpAction::Errno(libc::ENOSYS);
    for name in ENOSYS_SYSCALLS {
        ctx.add_rule(enosys, syscall(name)?)
            .map_err(seccomp_err(format!("answer {name} with ENOSYS")))?;
    }
    // pid_t is 32 bits: compare the low half only, so a value with junk in
    // the upper half (which the kernel truncates) still matches.
    let low32 = |v: i32| {
        ScmpArgCompare::new(
            0,
            ScmpCompareOp::MaskedEqual(0xffff_ffff),
            u64::from(v as u32),
        )
    };
    for name in ["kill", "tkill", "rt_sigqueueinfo"] {
        let nr = syscall(name)?;
        for &t in targets {
            ctx.add_rule_conditional(eperm, nr, &[low32(t)])
                .map_err(seccomp_err(format!("deny {name}({t}, ...)")))?;
        }
    }
    // DENIED_SOCKETS. The type argument carries SOCK_NONBLOCK and
    // SOCK_CLOEXEC above SOCK_TYPE_MASK (0xf).
    let socket = syscall("socket")?;
    let arg_eq = |arg: u32, mask: u64, v: i32| {
        ScmpArgCompare::new(arg, ScmpCompareOp::MaskedEqual(mask), u64::from(v as u32))
    };
    ctx.add_rule_conditional(eperm, socket, &[arg_eq(0, 0xffff_ffff, libc::AF_PACKET)])
        .map_err(seccomp_err("deny socket(AF_PACKET, ...)"))?;
    ctx.add_rule_conditional(
        eperm,
        socket,
        &[
            arg_eq(0, 0xffff_ffff, libc::AF_INET),
            // SOCK_PACKET (libc deprecates the name, which is the point).
            arg_eq(1, 0xf, 10),
        ],
    )
    .map_err(seccomp_err("deny socket(AF_INET, SOCK_PACKET)"))?;
    #[cfg(target_arch = "x86_64")]
    ctx.add_rule(eperm, syscall("socketcall")?)
        .map_err(seccomp_err("deny socketcall"))?;
    for name in ["tgkill", "rt_tgsigqueueinfo"] {
        ctx.add_rule_conditional(eperm, syscall(name)?, &[low32(daemon.pid)])
            .map_err(seccomp_err(format!("deny {name}({}, ...)", daemon.pid)))?;
    }
    Ok(ctx)
}

/// The daemon answering on `socket`: its pid from the socket's peer
/// credentials (the kernel's word), its threads, group and session.
pub(super) fn find_daemon(socket: &Path) -> Result<DaemonProcess, ConfineError> {
    let (_, pid) = control::call_with_peer(socket, &Request::Status, Duration::from_secs(10))
        .map_err(ConfineError::Daemon)?;
    let pid = pid as i32;
    let task = PathBuf::from(format!("/proc/{pid}/task"));
    let mut tids: Vec<i32> = procfs::process::Process::new(pid)
        .and_then(|p| p.tasks())
        .map_err(|e| io_err("list", &task)(std::io::Error::other(e)))?
        .filter_map(|t| Some(t.ok()?.tid))
        .collect();
    tids.sort_unstable();
    let nix_pid = nix::unistd::Pid::from_raw(pid);
    let sys = |op: &'static str| {
        let path = task.clone();
        move |e: nix::errno::Errno| ConfineError::Io {
            op,
            path,
            source: e.into(),
        }
    };
    let pgid = nix::unistd::getpgid(Some(nix_pid))
        .map_err(sys("getpgid"))?
        .as_raw();
    let sid = nix::unistd::getsid(Some(nix_pid))
        .map_err(sys("getsid"))?
        .as_raw();
    Ok(DaemonProcess {
        pid,
        tids,
        pgid,
        sid,
    })
}
