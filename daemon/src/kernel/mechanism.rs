//! Which mechanism decides each class of action on this kernel, chosen in
//! one place: BPF LSM where the kernel runs it (`lsm.rs`), else `fmod_ret`
//! on the kernel's `security_*` functions where trampolines work
//! (`fmod_ret.rs`), else the tracepoint fallback (`sched_process_exec`, `sys_exit`), else none (then
//! policies that need the class are refused). Also the operator's
//! `WARDEN_DISABLE_MECHANISMS` and the mechanism table `warden status` and
//! the daemon_start entry show.

use aya::{
    programs::{links::FdLink, BtfTracePoint, FExit},
    Btf, Ebpf,
};
use warden_common::names;

use super::{fmod_ret, lsm, Kernel};
use crate::control::Mechanism;

/// Comma-separated mechanisms the daemon must not load: `exec`, `file`
/// (the class, by any mechanism), `lsm` (BPF LSM: `fmod_ret` or the
/// tracepoint fallback decides exec and file opens instead), `fmod_ret`
/// (`fmod_ret` on `security_*`: the tracepoint fallback instead).
pub const DISABLE_VAR: &str = "WARDEN_DISABLE_MECHANISMS";

/// Why `what` is off, if `WARDEN_DISABLE_MECHANISMS` lists it (also
/// `ptrace`: the holds' seize of paused threads, `holds.rs`).
pub fn disabled(what: &str) -> Option<String> {
    let list = std::env::var(DISABLE_VAR).unwrap_or_default();
    list.split(',')
        .any(|d| d.trim() == what)
        .then(|| format!("disabled by {DISABLE_VAR}={what}"))
}

/// Logs how many instructions the verifier went through for a program (the
/// path walk is bounded; this shows how close it is to the 1M limit).
pub(super) fn log_verified(prog: &BtfTracePoint, name: &str) {
    if let Ok(info) = prog.info() {
        tracing::info!(
            program = name,
            verified_insns = info.verified_instruction_count(),
            "loaded"
        );
    }
}

/// What `select` chose at load.
pub(super) struct Selected {
    pub lsm: lsm::LsmState,
    /// The LSM programs' links, to pin under their names.
    pub lsm_links: Vec<(&'static str, FdLink)>,
    /// The fmod_ret programs' links (where they decide instead), to pin.
    pub fmod_ret_links: Vec<fmod_ret::FmodRetLink>,
    /// The fexit that stops held network actions (`hold_stop`), to pin.
    pub hold_stop_link: Option<FdLink>,
    /// The fexit programs that move the decision cache's epoch on after
    /// renames and mount changes (where BPF LSM or fmod_ret decides opens),
    /// with their pin names.
    pub cache_epoch_links: Vec<(&'static str, FdLink)>,
    /// Why the decision cache is off where BPF LSM or fmod_ret decides
    /// opens (`None` elsewhere, or when it is on).
    pub cache_unavailable: Option<String>,
    /// The attached `sched_process_exec` link (the exec fallback), to pin.
    pub exec_link: Option<FdLink>,
    pub exec_unavailable: Option<String>,
    pub fault_guard_loaded: bool,
    pub file_unavailable: Option<String>,
    /// Whether `sys_exit` and its tail programs are loaded (`load::load_sys_exit`):
    /// not where BPF LSM or fmod_ret decides every class it serves.
    pub sys_exit_loaded: bool,
    /// Why operations on names are not decided on the fallback, if they
    /// are not (`None` too when `sys_exit` is not loaded).
    pub path_ops_unavailable: Option<String>,
}

/// Probes BPF LSM, then loads (and for exec attaches) the tracepoint
/// fallback for the classes it does not decide. `offsets_error`: why the
/// kernel struct offsets could not be read (then neither class can be
/// decided). Errors: the `sys_exit` program, where it is loaded, does not
/// load.
pub(super) fn select(
    bpf: &mut Ebpf,
    object: &[u8],
    btf: &Btf,
    offsets_error: Option<String>,
) -> Result<Selected, super::KernelError> {
    // An operator can keep the global tracepoint programs off a host
    // (policies that need them are then refused, like on a kernel that
    // cannot load them).
    //
    // BPF LSM first: where it runs, it decides execs and opens instead
    // of the tracepoints below (see lsm.rs).
    let want_exec = disabled("exec").is_none() && offsets_error.is_none();
    let want_file = disabled("file").is_none() && offsets_error.is_none();
    let (mut lsm, lsm_links) = lsm::probe(bpf, btf, disabled("lsm"), want_exec, want_file);
    // Then fmod_ret on security_*, where BPF LSM decides nothing: the same
    // decisions from the same maps, before the action like BPF LSM.
    let mut fmod_ret_links = Vec::new();
    let mut relocated = fmod_ret::Relocated::default();
    if let (Some(lsm_why), true) = (lsm.unavailable.clone(), want_exec || want_file) {
        let tried = match disabled("fmod_ret") {
            Some(why) => Err(why),
            None => fmod_ret::probe(
                bpf,
                object,
                btf,
                &fmod_ret::exec_file(want_exec, want_file),
                &mut relocated,
            ),
        };
        match tried {
            Ok(links) => {
                tracing::info!(reason = %lsm_why, "BPF LSM not used; fmod_ret on security_* decides exec and file opens");
                fmod_ret_links = links;
                lsm = lsm::LsmState {
                    exec: want_exec,
                    file: want_file,
                    unavailable: Some(lsm_why),
                    fmod_ret: true,
                    ..lsm::LsmState::default()
                };
            }
            Err(why) => {
                tracing::info!(reason = %why, "fmod_ret not used; exec and file opens use the tracepoint fallback");
                lsm.fmod_ret_unavailable = Some(why);
            }
        }
    }

    // Operations on names: where BPF LSM or fmod_ret decides opens, its
    // path_* hooks decide them before they happen (sys_exit decides no
    // file rule there). Optional: without them opens are still decided,
    // and the status says names are not.
    let mut lsm_links = lsm_links;
    if lsm.file {
        let tried = match disabled("names") {
            Some(why) => Err(why),
            None if lsm.fmod_ret => {
                fmod_ret::probe(bpf, object, btf, &fmod_ret::names(), &mut relocated).map(|links| {
                    fmod_ret_links.extend(links);
                })
            }
            None => lsm::attach_names(bpf, btf).map(|links| lsm_links.extend(links)),
        };
        match tried {
            Ok(()) => lsm.names = true,
            Err(why) => {
                tracing::warn!(reason = %why, "operations on names are not decided on this kernel");
                lsm.names_unavailable = Some(why);
            }
        }
    }

    // Packet sockets, which the cgroup sock_create hook never sees: where
    // BPF LSM or fmod_ret runs, socket_create decides them for every agent.
    if lsm.exec || lsm.file {
        let tried = match disabled("packet") {
            Some(why) => Err(why),
            None if lsm.fmod_ret => {
                fmod_ret::probe(bpf, object, btf, &fmod_ret::socket(), &mut relocated)
                    .map(|links| fmod_ret_links.extend(links))
            }
            None => lsm::attach_socket(bpf, btf).map(|link| lsm_links.push(("lsm-socket", link))),
        };
        match tried {
            Ok(()) => lsm.packet = true,
            Err(why) => {
                tracing::warn!(reason = %why, "packet sockets are decided by warden run's seccomp only");
                lsm.packet_unavailable = Some(why);
            }
        }
    }

    // Held network actions: where BPF LSM or fmod_ret decides (BPF
    // trampolines work), an fexit after the cgroup hook stops the held
    // thread instead of sys_exit.
    let mut hold_stop_link = None;
    if lsm.exec || lsm.file {
        match hold_stop(bpf, btf) {
            Ok(link) => {
                hold_stop_link = Some(link);
                lsm.net_holds = true;
            }
            Err(why) => {
                tracing::warn!(reason = %why, "held network actions are stopped by sys_exit");
                lsm.net_holds_unavailable = Some(why);
            }
        }
    }

    // The decision cache of opens where BPF LSM or fmod_ret decides them:
    // fexit after renames and mount changes moves its epoch on (there is
    // no sys_exit to do it). Without them the cache is off (`load`).
    let mut cache_epoch_links = Vec::new();
    let mut cache_unavailable = None;
    if lsm.file {
        match disabled("cache").map_or_else(|| cache_epoch(bpf, btf), Err) {
            Ok(links) => cache_epoch_links = links,
            Err(why) => {
                tracing::warn!(reason = %why, "the decision cache of opens is off");
                cache_unavailable = Some(why);
            }
        }
    }

    // `sys_exit` (~800k instructions to verify, its tail programs ~250k
    // more) decides opens, packet sockets and the fallback's holds. Where
    // BPF LSM or fmod_ret decides all of those it is only ever attached
    // for a thread still marked in `HELD` (the fexit normally consumes the
    // mark first): loaded then, on first use (`set_sys_exit_mode`).
    let sys_exit_deferred = lsm.exec && lsm.file && lsm.packet && lsm.net_holds;
    let path_ops_unavailable = if sys_exit_deferred {
        tracing::info!("tp_btf/sys_exit not loaded: BPF LSM or fmod_ret decides every class it serves (loaded if a hold mark ever needs it)");
        None
    } else {
        super::load::load_sys_exit(bpf, btf)?
    };

    // Exec: load and attach now. It runs at every exec on the machine
    // and returns after one lookup for processes outside agents.
    let mut exec_link = None;
    let exec_unavailable = disabled("exec")
        .or_else(|| offsets_error.clone())
        .or_else(|| {
            if lsm.exec {
                return None;
            }
            let name = names::PROG_EXEC;
            let prog: Option<&mut BtfTracePoint> =
                bpf.program_mut(name).and_then(|p| p.try_into().ok());
            let Some(prog) = prog else {
                return Some(format!("the eBPF object has no tp_btf program {name}"));
            };
            let tp = names::EXEC_TRACEPOINT;
            prog.load(tp, btf)
                .map_err(|e| format!("load tp_btf/{tp} ({name}): {}", crate::error_chain(&e)))
                .map(|()| log_verified(prog, name))
                .and_then(|()| {
                    let id = prog
                        .attach()
                        .map_err(|e| format!("attach tp_btf/{tp}: {}", crate::error_chain(&e)))?;
                    let link = prog
                        .take_link(id)
                        .map_err(|e| format!("take tp_btf/{tp} link: {e}"))?;
                    exec_link = Some(FdLink::from(link));
                    Ok(())
                })
                .err()
        });
    if let Some(why) = &exec_unavailable {
        tracing::warn!(reason = %why, "exec rules cannot be enforced on this kernel");
    }
    // The guard of execs the fallback holds: loaded with it, attached
    // only while some policy holds execs (it runs at every user page
    // fault on the machine).
    let fault_guard_loaded = exec_link.is_some()
        && {
            let name = names::PROG_FAULT_GUARD;
            let prog: Option<&mut BtfTracePoint> =
                bpf.program_mut(name).and_then(|p| p.try_into().ok());
            match prog.map(|p| p.load(names::FAULT_TRACEPOINT, btf)) {
                Some(Ok(())) => true,
                Some(Err(e)) => {
                    tracing::warn!(error = %crate::error_chain(&e), "tp_btf/page_fault_user: held execs are guarded at sys_exit only");
                    false
                }
                None => false,
            }
        };
    // Opens: the sys_exit program `Kernel::load` loaded; check once that it can
    // attach here, so that a policy with file rules is refused up front
    // rather than when its agent is installed.
    let file_unavailable = disabled("file").or(offsets_error).or_else(|| {
        if lsm.file {
            return None;
        }
        let name = names::PROG_SYS_EXIT;
        let prog: &mut BtfTracePoint = bpf.program_mut(name).and_then(|p| p.try_into().ok())?;
        log_verified(prog, name);
        match prog.attach() {
            Ok(link) => prog
                .detach(link)
                .err()
                .map(|e| format!("detach tp_btf/sys_exit: {e}")),
            Err(e) => Some(format!(
                "attach tp_btf/sys_exit: {}",
                crate::error_chain(&e)
            )),
        }
    });
    if let Some(why) = &file_unavailable {
        tracing::warn!(reason = %why, "file rules cannot be enforced on this kernel");
    }
    Ok(Selected {
        lsm,
        lsm_links,
        fmod_ret_links,
        hold_stop_link,
        cache_epoch_links,
        cache_unavailable,
        exec_link,
        exec_unavailable,
        fault_guard_loaded,
        file_unavailable,
        sys_exit_loaded: !sys_exit_deferred,
        path_ops_unavailable,
    })
}

/// Loads and attaches `fexit/__cgroup_bpf_run_filter_sock_addr`
/// (`ebpf/programs/src/hold_stop.rs`).
fn hold_stop(bpf: &mut Ebpf, btf: &Btf) -> Result<FdLink, String> {
    let name = names::PROG_HOLD_STOP;
    let function = names::HOLD_STOP_FN;
    let prog: &mut FExit = bpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| format!("the eBPF object has no fexit program {name}"))?;
    prog.load(function, btf)
        .map_err(|e| format!("load fexit/{function}: {}", crate::error_chain(&e)))?;
    let id = prog
        .attach()
        .map_err(|e| format!("attach fexit/{function}: {}", crate::error_chain(&e)))?;
    let link = prog
        .take_link(id)
        .map_err(|e| format!("take fexit/{function} link: {e}"))?;
    Ok(FdLink::from(link))
}

/// Loads and attaches the `fexit` programs of `names::CACHE_EPOCH_PROGRAMS`
/// (`ebpf/programs/src/cache_epoch.rs`), all or none: the links to pin, or
/// why not (nothing stays attached).
fn cache_epoch(bpf: &mut Ebpf, btf: &Btf) -> Result<Vec<(&'static str, FdLink)>, String> {
    let mut links = Vec::new();
    for (name, function, pin) in names::CACHE_EPOCH_PROGRAMS {
        let prog: &mut FExit = bpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| format!("the eBPF object has no fexit program {name}"))?;
        prog.load(function, btf)
            .map_err(|e| format!("load fexit/{function}: {}", crate::error_chain(&e)))?;
        let id = prog
            .attach()
            .map_err(|e| format!("attach fexit/{function}: {}", crate::error_chain(&e)))?;
        let link = prog
            .take_link(id)
            .map_err(|e| format!("take fexit/{function} link: {e}"))?;
        links.push((pin, FdLink::from(link)));
    }
    Ok(links)
}

impl Kernel {
    /// Why exec rules cannot be enforced here (`None`: they can).
    pub fn exec_unavailable(&self) -> Option<&str> {
        self.exec_unavailable.as_deref()
    }

    /// Why file rules cannot be enforced here (`None`: they can).
    pub fn file_unavailable(&self) -> Option<&str> {
        self.file_unavailable.as_deref()
    }

    /// Which classes BPF LSM decides here, or why none.
    pub fn lsm(&self) -> &lsm::LsmState {
        &self.lsm
    }

    /// What decides each class of action here, for `warden status` and the
    /// daemon_start entry.
    /// What this kernel can enforce, for the policy pipeline: a policy
    /// with rules it cannot enforce is refused, never silently allowed.
    pub fn capabilities(&self) -> crate::policy::Capabilities {
        crate::policy::Capabilities {
            exec_unavailable: self.exec_unavailable().map(Into::into),
            file_unavailable: self.file_unavailable().map(Into::into),
        }
    }

    pub fn mechanisms(&self) -> Vec<Mechanism> {
        let or_unavailable = |why: Option<&str>, mechanism: &str| match why {
            None => mechanism.to_string(),
            Some(why) => {
                format!("unavailable on this kernel ({why}): policies with these rules are refused")
            }
        };
        vec![
            Mechanism {
                action: "network (connect, sendmsg; IPv4 and IPv6)".into(),
                mechanism: "cgroup sock_addr programs attached to each agent cgroup (deny = EPERM)"
                    .into(),
            },
            Mechanism {
                action: "hold (network)".into(),
                mechanism: if self.lsm().net_holds {
                    "the cgroup hook fails the syscall with ERESTARTNOINTR, fexit/__cgroup_bpf_run_filter_sock_addr stops the thread right after it (no sys_exit)".into()
                } else {
                    let why = self
                        .lsm()
                        .net_holds_unavailable
                        .as_ref()
                        .map(|w| format!(" (fexit stop not used: {w})"))
                        .unwrap_or_default();
                    format!("hook fails the syscall with ERESTARTNOINTR, tp_btf/sys_exit stops the thread (attached while a policy holds){why}")
                },
            },
            Mechanism {
                action: "network: packet sockets (AF_PACKET, SOCK_PACKET)".into(),
                mechanism: match (self.lsm().packet, self.lsm().fmod_ret, &self.lsm().packet_unavailable) {
                    (true, true, _) => "fmod_ret/security_socket_create, every agent: allowed only by a `socket: { kind: packet }` rule, deny = socket() fails with EPERM, recorded".into(),
                    (true, false, _) => "lsm/socket_create (BPF LSM), every agent: allowed only by a `socket: { kind: packet }` rule, deny = socket() fails with EPERM, recorded".into(),
                    (false, _, why) if self.path_ops_unavailable.is_none() => format!(
                        "tp_btf/sys_exit after a successful socket() (fallback; attached while an adopted agent is installed), every agent: allowed only by a `socket: {{ kind: packet }}` rule, deny = SIGKILL before socket() returns, recorded (detect-and-kill: the socket existed); warden run's seccomp refuses them with EPERM whatever the policy{}",
                        why.as_ref().map(|w| format!(" (socket_create not used: {w})")).unwrap_or_default()
                    ),
                    (false, _, why) => format!(
                        "warden run's seccomp only (EPERM, not recorded per attempt; adopted agents with CAP_NET_RAW are not decided){}",
                        why.as_ref().map(|w| format!(": {w}")).unwrap_or_default()
                    ),
                },
            },
            Mechanism {
                action: "BPF LSM".into(),
                mechanism: lsm::status(self.lsm()),
            },
            Mechanism {
                action: "exec".into(),
                mechanism: or_unavailable(
                    self.exec_unavailable(),
                    if self.lsm().exec && self.lsm().fmod_ret {
                        fmod_ret::EXEC_MECHANISM
                    } else if self.lsm().exec {
                        lsm::EXEC_MECHANISM
                    } else {
                        "tp_btf/sched_process_exec (fallback, no BPF LSM), deny = SIGKILL before the first instruction; hold = the process stops there (ptrace-seized, SIGCONT cannot continue it), approval continues it, rejection kills it"
                    },
                ),
            },
            Mechanism {
                action: "file open".into(),
                mechanism: or_unavailable(
                    self.file_unavailable(),
                    if self.lsm().file && self.lsm().fmod_ret {
                        fmod_ret::FILE_MECHANISM
                    } else if self.lsm().file {
                        lsm::FILE_MECHANISM
                    } else {
                        "tp_btf/sys_exit after open (fallback, no BPF LSM), deny = SIGKILL before the fd is used (detect-and-kill; O_TRUNC/O_CREAT side effects happen first); hold = the process stops before the fd reaches it (ptrace-seized), approval continues it, rejection kills it"
                    },
                ),
            },
            Mechanism {
                action: "decision cache of allowed file opens".into(),
                mechanism: match &self.cache_unavailable {
                    Some(why) => format!("off ({why}): every open is walked"),
                    None if self.lsm().file => "in the open hook; its epoch moves on at fexit of vfs_rename, path_mount, path_umount, do_move_mount and pivot_root (WARDEN_DECISION_CACHE_MS bounds an entry's age)".into(),
                    None => "in tp_btf/sys_exit; its epoch moves on at the exit of every successful rename, mount, umount, move_mount and pivot_root syscall (WARDEN_DECISION_CACHE_MS bounds an entry's age)".into(),
                },
            },
            Mechanism {
                action: "leaving the agent (a process in a cgroup outside the agent's subtree)".into(),
                mechanism: match &self.escape_unavailable {
                    None => "tp_btf/sched_process_fork, cgroup_attach_task, sched_process_exit (MEMBERS): killed, the mover or forking parent in the kernel; a process moved out by another is marked (DOOMED) and killed at its next syscall exit where tp_btf/sys_exit is attached, and by the daemon from the record; a child forked out by the daemon from the record".into(),
                    Some(why) => format!("not detected on this kernel ({why})"),
                },
            },
            Mechanism {
                action: "rename, link, unlink, mkdir, rmdir, symlink, mknod, chmod, chown, truncate, setxattr, utime, bind (operations on names)".into(),
                mechanism: match &self.path_ops_unavailable {
                    _ if self.lsm().names && self.lsm().fmod_ret => format!("{}; setxattr, removexattr, utime: not decided", fmod_ret::NAMES_MECHANISM),
                    _ if self.lsm().names => format!("{}; setxattr, removexattr, utime: not decided", lsm::NAMES_MECHANISM),
                    _ if self.lsm().file => format!(
                        "not decided ({})",
                        self.lsm().names_unavailable.as_deref().unwrap_or("path_* hooks not attached")
                    ),
                    None => "tp_btf/sys_exit (fallback; rename and link there, the others by tail call), decided as a write of the path after the fact, deny = SIGKILL; a hold rule refuses".into(),
                    Some(why) => format!("not decided on this kernel ({why})"),
                },
            },
        ]
    }
}
