//! BPF LSM: the capability probe at daemon start, and what `warden status`
//! says about it.
//!
//! Where the kernel runs BPF LSM, execs and file opens are decided by
//! `lsm/bprm_check_security` and `lsm/file_open` (`ebpf/programs/src/lsm.rs`):
//! a denial fails the syscall with EPERM before it takes effect, and an exec
//! `hold` pauses the thread inside execve. Elsewhere (no `bpf` in the active
//! LSM list, no BPF trampolines: the kernel refuses the programs with EPERM
//! or EINVAL) the tracepoint fallback decides them and a denial kills.
//!
//! The probe is the real thing: load and attach the programs. It is all or
//! nothing for the classes asked for, so one mechanism decides each class
//! and `warden status` can say which. `WARDEN_DISABLE_MECHANISMS=lsm` skips
//! it (tests force the fallback on an LSM kernel that way).

use aya::{
    programs::{links::FdLink, Lsm},
    Btf, Ebpf,
};
use warden_common::names;

/// The kernel's list of active LSMs.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Which classes BPF LSM decides on this kernel, or why it decides none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsmState {
    /// `lsm/bprm_check_security` is attached: it decides execs.
    pub exec: bool,
    /// `lsm/file_open` is attached: it decides opens.
    pub file: bool,
    /// Why BPF LSM decides nothing here (`None` when it decides something).
    pub unavailable: Option<String>,
    /// `exec` and `file` are decided by `fmod_ret` on
    /// `security_bprm_check`/`security_file_open` instead of BPF LSM
    /// (`fmod_ret.rs`; `unavailable` says why not BPF LSM), with the same
    /// decisions, denials and holds.
    pub fmod_ret: bool,
    /// Why `fmod_ret` was not used either, when it was tried.
    pub fmod_ret_unavailable: Option<String>,
    /// Held network actions are stopped by `fexit` after the cgroup hook
    /// (`mechanism::hold_stop`; where BPF LSM or fmod_ret runs, trampolines
    /// work), so holds never need `sys_exit` here.
    pub net_holds: bool,
    /// Why not (`None` when `net_holds`, or when not tried).
    pub net_holds_unavailable: Option<String>,
    /// Operations on names (rename, link, unlink, mkdir, ...) are decided
    /// before they happen by the `path_*` hooks (`ebpf/programs/src/lsm_names.rs`),
    /// BPF LSM or, with `fmod_ret`, `security_path_*`.
    pub names: bool,
    /// Why not, when BPF LSM or fmod_ret decides opens but not names.
    pub names_unavailable: Option<String>,
    /// Packet sockets are decided at creation by `socket_create` (BPF LSM)
    /// or, with `fmod_ret`, `security_socket_create` (`lsm_sock.rs`).
    pub packet: bool,
    /// Why not, where BPF LSM or fmod_ret decides something.
    pub packet_unavailable: Option<String>,
}

/// Attaches BPF LSM `socket_create` (packet sockets).
pub fn attach_socket(bpf: &mut Ebpf, btf: &Btf) -> Result<FdLink, String> {
    attach(bpf, btf, names::PROG_LSM_SOCKET, names::LSM_SOCKET_HOOK)
}

/// What decides operations on names where `LsmState::names`.
pub const NAMES_MECHANISM: &str = "lsm/path_* (BPF LSM: path_rename, path_link, path_unlink, path_mkdir, path_rmdir, path_symlink, path_mknod (also a unix socket's bind), path_chmod, path_chown, path_truncate; inode_setxattr, inode_removexattr, inode_set_acl, inode_remove_acl, inode_setattr (times) under every mount of the file's super block in the caller's mount namespace, at most 4 there; other namespaces' mounts skipped, at most 4096 scanned), every name decided as a write of its path before the change, deny = the syscall fails with EPERM; a hold rule holds the thread inside the syscall (path_*; the inode hooks refuse)";

/// Attaches the BPF LSM `path_*` programs (operations on names), all or
/// none: the links to pin, or why not (nothing stays attached).
pub fn attach_names(bpf: &mut Ebpf, btf: &Btf) -> Result<Vec<(&'static str, FdLink)>, String> {
    let mut links = Vec::new();
    for hook in names::NAME_HOOKS.iter().chain(&names::INODE_HOOKS) {
        links.push((
            hook.lsm_pin,
            attach(bpf, btf, hook.lsm_prog, hook.lsm_hook)?,
        ));
    }
    Ok(links)
}

/// What the LSM path does, for `warden status` and the daemon_start entry.
pub const EXEC_MECHANISM: &str = "lsm/bprm_check_security (BPF LSM), deny = execve fails with EPERM before the point of no return (the old program goes on); hold stops the thread inside execve until a human decides";
pub const FILE_MECHANISM: &str = "lsm/file_open (BPF LSM), deny = the open fails with EPERM before a file descriptor exists (no O_CREAT/O_TRUNC side effects on the opened file, nothing to race for); hold stops the thread inside the open until a human decides";

/// Whether `bpf` is in a kernel LSM list (`/sys/kernel/security/lsm`:
/// comma-separated, e.g. `lockdown,capability,landlock,yama,bpf`).
pub fn list_has_bpf(list: &str) -> bool {
    list.trim().split(',').any(|l| l.trim() == "bpf")
}

/// Checks that BPF LSM is active: without it the kernel accepts the
/// programs but never runs them, so loading them proves nothing.
fn active() -> Result<(), String> {
    let list = std::fs::read_to_string(LSM_LIST)
        .map_err(|e| format!("read {LSM_LIST}: {e} (securityfs not mounted, or no LSM support)"))?;
    if list_has_bpf(&list) {
        Ok(())
    } else {
        Err(format!(
            "bpf is not in the active LSM list ({LSM_LIST}: {}); boot with lsm=...,bpf",
            list.trim()
        ))
    }
}

/// Loads and attaches the LSM programs for the classes asked for (`exec`,
/// `file`), unless `disabled` says why not. Returns the state and the links
/// to pin; on any failure nothing stays attached (the links are dropped)
/// and the reason names the program and the kernel's error.
pub fn probe(
    bpf: &mut Ebpf,
    btf: &Btf,
    disabled: Option<String>,
    exec: bool,
    file: bool,
) -> (LsmState, Vec<(&'static str, FdLink)>) {
    let refuse = |why: String| {
        tracing::info!(reason = %why, "BPF LSM not used; exec and file opens use the tracepoint fallback");
        (
            LsmState {
                unavailable: Some(why),
                ..LsmState::default()
            },
            Vec::new(),
        )
    };
    if let Some(why) = disabled {
        return refuse(why);
    }
    if !exec && !file {
        return refuse("neither exec nor file opens can be decided here".into());
    }
    if let Err(why) = active() {
        return refuse(why);
    }
    let mut links = Vec::new();
    let wanted = [
        (exec, names::PROG_LSM_EXEC, names::LSM_EXEC_HOOK, "lsm-exec"),
        (file, names::PROG_LSM_OPEN, names::LSM_OPEN_HOOK, "lsm-open"),
    ];
    for (want, name, hook, pin) in wanted {
        if !want {
            continue;
        }
        match attach(bpf, btf, name, hook) {
            Ok(link) => links.push((pin, link)),
            // Dropping the links already made detaches them.
            Err(why) => return refuse(why),
        }
    }
    tracing::info!(exec, file, "BPF LSM decides exec and file opens");
    (
        LsmState {
            exec,
            file,
            unavailable: None,
            ..LsmState::default()
        },
        links,
    )
}

fn attach(bpf: &mut Ebpf, btf: &Btf, name: &'static str, hook: &str) -> Result<FdLink, String> {
    let prog: &mut Lsm = bpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| format!("the eBPF object has no LSM program {name}"))?;
    prog.load(hook, btf)
        .map_err(|e| format!("load lsm/{hook} ({name}): {}", crate::error_chain(&e)))?;
    if let Ok(info) = prog.info() {
        tracing::info!(
            program = name,
            verified_insns = info.verified_instruction_count(),
            "loaded"
        );
    }
    let id = prog
        .attach()
        .map_err(|e| format!("attach lsm/{hook}: {}", crate::error_chain(&e)))?;
    let link = prog
        .take_link(id)
        .map_err(|e| format!("take lsm/{hook} link: {e}"))?;
    Ok(FdLink::from(link))
}

/// The `warden status` row about BPF LSM itself: in use, or why not.
pub fn status(state: &LsmState) -> String {
    match (&state.unavailable, state.exec, state.file) {
        (Some(why), _, _) if state.fmod_ret => {
            format!("not used ({why}): exec and file opens use fmod_ret on security_* below")
        }
        (Some(why), _, _) => {
            let fmod_ret = state
                .fmod_ret_unavailable
                .as_ref()
                .map(|y| format!("; fmod_ret on security_* not used either ({y})"))
                .unwrap_or_default();
            format!(
                "not used ({why}){fmod_ret}: exec and file opens use the tracepoint fallback below"
            )
        }
        (None, true, true) => "in use for exec and file opens".into(),
        (None, true, false) => "in use for exec".into(),
        (None, false, _) => "in use for file opens".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_must_be_in_the_active_list() {
        assert!(list_has_bpf("lockdown,capability,landlock,yama,bpf\n"));
        assert!(list_has_bpf("bpf"));
        assert!(list_has_bpf("capability,bpf,ima,evm"));
        assert!(!list_has_bpf("lockdown,capability,landlock,yama,apparmor"));
        assert!(!list_has_bpf("bpfx,xbpf"));
        assert!(!list_has_bpf(""));
    }

    #[test]
    fn status_says_what_decides() {
        let used = LsmState {
            exec: true,
            file: true,
            unavailable: None,
            ..LsmState::default()
        };
        assert_eq!(status(&used), "in use for exec and file opens");
        let refused = LsmState {
            unavailable: Some("load lsm/file_open: Operation not permitted".into()),
            ..LsmState::default()
        };
        assert_eq!(
            status(&refused),
            "not used (load lsm/file_open: Operation not permitted): exec and file opens use the tracepoint fallback below"
        );
        let fmod_ret = LsmState {
            exec: true,
            file: true,
            unavailable: Some("bpf is not in the active LSM list".into()),
            fmod_ret: true,
            ..LsmState::default()
        };
        assert_eq!(
            status(&fmod_ret),
            "not used (bpf is not in the active LSM list): exec and file opens use fmod_ret on security_* below"
        );
        let neither = LsmState {
            unavailable: Some("disabled".into()),
            fmod_ret_unavailable: Some("attach: EINVAL".into()),
            ..LsmState::default()
        };
        assert_eq!(
            status(&neither),
            "not used (disabled); fmod_ret on security_* not used either (attach: EINVAL): exec and file opens use the tracepoint fallback below"
        );
    }
}
