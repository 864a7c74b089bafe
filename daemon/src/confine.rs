//! Self-protection: what a process started by `warden run` may not do to
//! Warden itself, enforced by the kernel on the agent's process tree.
//!
//! `warden run` calls [`prepare`] while it is still root (it has to open and
//! list the protected paths' parents), records [`Confinement::describe`] in
//! the `run` evidence entry, moves into the agent's cgroup, drops to
//! `--user`, and calls [`Confinement::apply`] just before `exec`. Both
//! mechanisms are inherited by every descendant and cannot be lifted:
//!
//! - **Landlock** (file system, and signals with ABI >= 6). The agent may
//!   not read or write Warden's state directory (database, keys), may not
//!   remove or replace the control socket, and may only read the policy
//!   directory, the cgroup2 hierarchy (so it cannot leave its cgroup, nor
//!   create a child cgroup the exec and open hooks do not see), bpffs, the
//!   rest of sysfs, `/dev` (except terminals, `null` & co, `shm`) and
//!   Warden's executables. It may never create device nodes. Landlock only
//!   grants, so the ruleset grants everything on each sibling of the paths
//!   leading to a protected path ([`plan`]). `LANDLOCK_SCOPE_SIGNAL` stops
//!   signals to any process outside the agent's domain, the daemon
//!   included, whatever the pid, tid or process group. Landlock also denies
//!   ptrace (and `/proc/PID/mem`, `pidfd_getfd`) of processes outside the
//!   domain, and every mount operation.
//! - **seccomp** (libseccomp, x86_64 and the ia32 table): EPERM for
//!   `bpf()`, module loading, kexec, ptrace and cross-process memory
//!   access, `perf_event_open`, io_uring (its opens bypass the open hook),
//!   `fanotify_init`, setting the clock (evidence timestamps), and signals
//!   aimed at the daemon by number ([`signal_targets`]).
//!
//! With BPF LSM these would be `task_kill`, `ptrace_access_check`,
//! `file_open`/`inode_permission`, `bpf`, `kernel_read_file`/
//! `kernel_load_data` and `sb_mount` hooks filtered on agent cgroups, and
//! would cover cgroups Warden adopts too; this kernel refuses BPF LSM.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    io,
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use landlock::{
    AccessFs, BitFlags, PathBeneath, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde_json::{json, Value};

use crate::{
    config::Paths,
    control::{self, ControlError, Request},
};

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("find the warden daemon's pid (the control socket's peer): {0}")]
    Daemon(#[source] ControlError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("landlock: {op}: {source}")]
    Landlock {
        op: String,
        #[source]
        source: landlock::RulesetError,
    },
    #[error("landlock: the kernel reports ABI {abi} but did not enforce the ruleset ({status:?})")]
    LandlockNotEnforced { abi: i32, status: RulesetStatus },
    #[error("seccomp: {op}: {source}")]
    Seccomp {
        op: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ConfineError + 'a {
    move |source| ConfineError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Landlock: which rights where.

/// The access rights the ruleset handles: every write-like right of ABI 5
/// (pinned, so a newer kernel or crate adds no semantics nobody tested) and
/// reading files (the keys). Executing and listing directories stay
/// unrestricted. On older kernels the crate drops what they lack (best
/// effort) and [`Confinement::describe`] records the ABI.
fn handled() -> BitFlags<AccessFs> {
    AccessFs::from_write(ABI::V5) | AccessFs::ReadFile
}

/// Everywhere else: everything handled except creating device nodes (a
/// root agent could otherwise `mknod` the disk under /tmp and write to it).
fn normal() -> BitFlags<AccessFs> {
    handled() & !(AccessFs::MakeBlock | AccessFs::MakeChar)
}

fn read_only() -> BitFlags<AccessFs> {
    AccessFs::ReadFile.into()
}

fn no_access() -> BitFlags<AccessFs> {
    BitFlags::EMPTY
}

/// Rights that mean something on a non-directory.
fn file_rights() -> BitFlags<AccessFs> {
    AccessFs::from_file(ABI::V5)
}

/// Devices under the read-only `/dev` that agents still use normally.
const WRITABLE_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
];

/// A subtree and the rights in it (the nearest zone above a path decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zone {
    pub path: PathBuf,
    pub access: BitFlags<AccessFs>,
}

/// What Warden protects, as absolute, canonical paths.
#[derive(Debug, Clone, Default)]
pub(crate) struct Protected {
    /// No access: the database and the keys.
    pub state_dir: Option<PathBuf>,
    /// No access (it cannot be removed or replaced; connecting is not a
    /// file access Landlock checks before ABI 9).
    pub socket: Option<PathBuf>,
    /// Read only.
    pub policy_dir: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub cgroup2: Vec<PathBuf>,
    pub bpffs: Vec<PathBuf>,
    pub executables: Vec<PathBuf>,
}

/// The zones for `protected`; the root zone `/` comes first.
pub(crate) fn zones(protected: &Protected) -> Vec<Zone> {
    let zone = |path: &Path, access| Zone {
        path: path.to_path_buf(),
        access,
    };
    let mut zones = vec![
        zone(Path::new("/"), normal()),
        // sysfs holds the cgroup2 hierarchy and bpffs on most hosts; it is
        // kernel configuration an agent has no business writing.
        zone(Path::new("/sys"), read_only()),
        zone(Path::new("/dev"), read_only()),
    ];
    zones.extend(
        WRITABLE_DEVICES
            .iter()
            .map(|d| zone(Path::new(d), normal())),
    );
    let read = protected
        .cgroup2
        .iter()
        .chain(&protected.bpffs)
        .chain(&protected.pin_dir)
        .chain(&protected.policy_dir)
        .chain(&protected.executables);
    zones.extend(read.map(|p| zone(p, read_only())));
    let none = protected.state_dir.iter().chain(&protected.socket);
    zones.extend(none.map(|p| zone(p, no_access())));
    zones
}

/// One Landlock rule: `access` beneath `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub path: PathBuf,
    pub access: BitFlags<AccessFs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
}

/// The file system as the planner sees it (a seam for the unit tests).
pub(crate) trait Tree {
    fn kind(&self, path: &Path) -> io::Result<Kind>;
    fn children(&self, dir: &Path) -> io::Result<Vec<(OsString, Kind)>>;
}

/// Rules that give every existing path the rights of its nearest zone.
///
/// Landlock rights are a union over a path's ancestors, so a zone with fewer
/// rights than the zone around it cannot sit beneath a rule granting more.
/// At each directory the planner grants what every zone beneath it shares;
/// where that is less than its own zone's rights, it lists the directory and
/// grants its zone's rights on each entry that leads to no zone (skipping
/// symlinks: access through one is decided at its target) and descends into
/// the entries that do. Entries created later in such a directory get only
/// what was granted above it: less, never more.
pub(crate) fn plan(zones: &[Zone], tree: &dyn Tree) -> io::Result<Vec<Rule>> {
    let mut by_path: BTreeMap<PathBuf, BitFlags<AccessFs>> = BTreeMap::new();
    for z in zones {
        by_path
            .entry(z.path.clone())
            .and_modify(|a| *a &= z.access)
            .or_insert(z.access);
    }
    let mut rules = Vec::new();
    if let Some(root_access) = by_path.get(Path::new("/")).copied() {
        visit(
            Path::new("/"),
            root_access,
            BitFlags::EMPTY,
            &by_path,
            tree,
            &mut rules,
        )?;
    }
    Ok(rules)
}

fn visit(
    dir: &Path,
    zone: BitFlags<AccessFs>,
    granted: BitFlags<AccessFs>,
    zones: &BTreeMap<PathBuf, BitFlags<AccessFs>>,
    tree: &dyn Tree,
    rules: &mut Vec<Rule>,
) -> io::Result<()> {
    fn grant(rules: &mut Vec<Rule>, path: &Path, access: BitFlags<AccessFs>) {
        if !access.is_empty() {
            rules.push(Rule {
                path: path.to_path_buf(),
                access,
            });
        }
    }
    let kind = match tree.kind(dir) {
        Ok(k) => k,
        // A protected path that does not exist has nothing to protect yet;
        // if it appears later it gets what its parent has.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match kind {
        Kind::Symlink => return Ok(()),
        Kind::File => {
            grant(rules, dir, (zone & !granted) & file_rights());
            return Ok(());
        }
        Kind::Dir => {}
    }
    let beneath: Vec<(&PathBuf, BitFlags<AccessFs>)> = zones
        .iter()
        .filter(|(p, _)| p.as_path() != dir && p.starts_with(dir))
        .map(|(p, a)| (p, *a))
        .collect();
    let shared = beneath.iter().fold(zone, |acc, (_, a)| acc & *a);
    grant(rules, dir, shared & !granted);
    let granted = granted | shared;
    // The entry of `dir` that leads to each zone beneath it.
    let mut next: BTreeMap<OsString, ()> = BTreeMap::new();
    for (p, _) in &beneath {
        if let Some(first) = p
            .strip_prefix(dir)
            .ok()
            .and_then(|rest| rest.components().next())
        {
            next.insert(first.as_os_str().to_os_string(), ());
        }
    }
    let descend = |name: &OsString, rules: &mut Vec<Rule>| {
        let child = dir.join(name);
        let child_zone = zones.get(&child).copied().unwrap_or(zone);
        visit(&child, child_zone, granted, zones, tree, rules)
    };
    if granted.contains(zone) {
        // Everything here already has its zone's rights; only zones with
        // more rights beneath need rules.
        for name in next.keys() {
            descend(name, rules)?;
        }
        return Ok(());
    }
    let mut children = tree.children(dir)?;
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in children {
        if next.contains_key(&name) {
            descend(&name, rules)?;
            continue;
        }
        let access = zone & !granted;
        match kind {
            Kind::Symlink => {}
            Kind::File => grant(rules, &dir.join(&name), access & file_rights()),
            Kind::Dir => grant(rules, &dir.join(&name), access),
        }
    }
    Ok(())
}

/// The real file system, never following symlinks.
struct Fs;

fn kind_of(t: std::fs::FileType) -> Kind {
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    }
}

impl Tree for Fs {
    fn kind(&self, path: &Path) -> io::Result<Kind> {
        Ok(kind_of(std::fs::symlink_metadata(path)?.file_type()))
    }
    fn children(&self, dir: &Path) -> io::Result<Vec<(OsString, Kind)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = match entry.file_type() {
                Ok(t) => kind_of(t),
                // Gone since the listing: nothing to grant.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push((entry.file_name(), kind));
        }
        Ok(out)
    }
}

/// Opens a planned path without following any symlink on the way (the plan
/// has only canonical paths, so one found now was swapped in since): a
/// rule must never land on a symlink's target.
fn open_beneath(path: &Path) -> io::Result<Option<OwnedFd>> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(libc::AT_FDCWD, path, how) {
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The running kernel's Landlock ABI version, or why there is none.
fn landlock_abi() -> Result<i32, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call
    // only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v > 0 {
        return Ok(v as i32);
    }
    Err(match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS) => "not built into this kernel".into(),
        Some(libc::EOPNOTSUPP) => "built in but not enabled (add landlock to lsm=)".into(),
        other => format!("landlock_create_ruleset: errno {other:?}"),
    })
}

// ---------------------------------------------------------------------------
// seccomp.

/// Denied with EPERM, always. Each line says why.
const DENIED_SYSCALLS: &[&str] = &[
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

fn seccomp_err(
    op: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> ConfineError {
    let op = op.into();
    move |source| ConfineError::Seccomp { op, source }
}

fn build_seccomp(
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
    for name in ["tgkill", "rt_tgsigqueueinfo"] {
        ctx.add_rule_conditional(eperm, syscall(name)?, &[low32(daemon.pid)])
            .map_err(seccomp_err(format!("deny {name}({}, ...)", daemon.pid)))?;
    }
    Ok(ctx)
}

/// The daemon answering on `socket`: its pid from the socket's peer
/// credentials (the kernel's word), its threads, group and session.
fn find_daemon(socket: &Path) -> Result<DaemonProcess, ConfineError> {
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

// ---------------------------------------------------------------------------
// Putting it together.

/// Mount points of the given filesystem types, from mountinfo text.
pub(crate) fn mount_points(mountinfo: &str, fstypes: &[&str]) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let mount_point = before.split_whitespace().nth(4)?;
            fstypes
                .contains(&fstype)
                .then(|| PathBuf::from(crate::cgroup::unescape_mountinfo(mount_point)))
        })
        .collect()
}

/// Ready to apply: built while root, applied just before exec.
pub struct Confinement {
    landlock: Result<(RulesetCreated, LandlockPlan), String>,
    seccomp: ScmpFilterContext,
    description: Value,
}

struct LandlockPlan {
    abi: i32,
    rules: usize,
}

/// Builds the confinement for an agent started by `warden run`: finds the
/// daemon, plans the Landlock ruleset for Warden's paths and compiles the
/// seccomp filter. Nothing is applied yet. If the kernel has no Landlock,
/// the confinement is seccomp only and [`Confinement::describe`] says so.
pub fn prepare(paths: &Paths) -> Result<Confinement, ConfineError> {
    let daemon = find_daemon(&paths.socket)?;
    let our_sid = nix::unistd::getsid(None)
        .map_err(|e| io_err("getsid", Path::new("self"))(e.into()))?
        .as_raw();
    let targets = signal_targets(&daemon, our_sid);
    let seccomp = build_seccomp(&daemon, &targets)?;

    let mut absent = Vec::new();
    let mut canonical = |p: &Path| match p.canonicalize() {
        Ok(c) => Some(c),
        Err(_) => {
            absent.push(p.display().to_string());
            None
        }
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
    let mut executables: Vec<PathBuf> = Vec::new();
    for exe in [
        std::env::current_exe().ok(),
        std::fs::read_link(format!("/proc/{}/exe", daemon.pid)).ok(),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(c) = canonical(&exe) {
            if !executables.contains(&c) {
                executables.push(c);
            }
        }
    }
    let protected = Protected {
        state_dir: canonical(&paths.state_dir),
        socket: canonical(&paths.socket),
        policy_dir: canonical(&paths.policy_dir),
        pin_dir: canonical(&paths.pin_dir),
        cgroup2: mount_points(&mountinfo, &["cgroup2"]),
        bpffs: mount_points(&mountinfo, &["bpf"]),
        executables,
    };

    let landlock = match landlock_abi() {
        Err(why) => Err(why),
        Ok(abi) => {
            let (ruleset, rules) = build_landlock(&protected)?;
            Ok((ruleset, LandlockPlan { abi, rules }))
        }
    };
    let description = describe(&protected, &absent, &landlock, &daemon, &targets);
    Ok(Confinement {
        landlock,
        seccomp,
        description,
    })
}

fn build_landlock(protected: &Protected) -> Result<(RulesetCreated, usize), ConfineError> {
    let ll = |op: &str| {
        let op = op.to_string();
        move |source: landlock::RulesetError| ConfineError::Landlock { op, source }
    };
    let rules = plan(&zones(protected), &Fs)
        .map_err(io_err("plan landlock rules under", Path::new("/")))?;
    let mut ruleset = Ruleset::default()
        .handle_access(handled())
        .map_err(ll("handle file system access"))?
        .scope(Scope::Signal)
        .map_err(ll("scope signals"))?
        .create()
        .map_err(ll("create ruleset"))?;
    let mut added = 0;
    for rule in &rules {
        let Some(fd) = open_beneath(&rule.path).map_err(io_err("open", &rule.path))? else {
            continue;
        };
        let meta = std::fs::File::from(fd.try_clone().map_err(io_err("dup", &rule.path))?)
            .metadata()
            .map_err(io_err("stat", &rule.path))?;
        // Decide on what was opened, not on what was listed.
        let access = if meta.is_dir() {
            rule.access
        } else {
            rule.access & file_rights()
        };
        if access.is_empty() {
            continue;
        }
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(ll(&format!("add rule for {}", rule.path.display())))?;
        added += 1;
    }
    Ok((ruleset, added))
}

fn describe(
    protected: &Protected,
    absent: &[String],
    landlock: &Result<(RulesetCreated, LandlockPlan), String>,
    daemon: &DaemonProcess,
    targets: &[i32],
) -> Value {
    let show = |p: &PathBuf| p.display().to_string();
    let landlock = match landlock {
        Err(why) => json!({ "applied": false, "why": why }),
        Ok((_, plan)) => {
            let no_access: Vec<String> = protected
                .state_dir
                .iter()
                .chain(&protected.socket)
                .map(show)
                .collect();
            let mut read_only: Vec<String> = vec!["/sys".into(), "/dev".into()];
            read_only.extend(
                protected
                    .policy_dir
                    .iter()
                    .chain(&protected.pin_dir)
                    .chain(&protected.cgroup2)
                    .chain(&protected.bpffs)
                    .chain(&protected.executables)
                    .map(show),
            );
            json!({
                "applied": true,
                "abi": plan.abi,
                "signal_scope": plan.abi >= 6,
                "no_access": no_access,
                "read_only": read_only,
                "writable_devices": WRITABLE_DEVICES,
                "absent": absent,
                "rules": plan.rules,
            })
        }
    };
    json!({
        "landlock": landlock,
        "seccomp": {
            "applied": true,
            "denied": DENIED_SYSCALLS,
            "signals_to_daemon": {
                "daemon_pid": daemon.pid,
                "denied_targets": targets,
            },
        },
        "no_new_privs": true,
    })
}

impl Confinement {
    /// What will protect the run, for the `run` evidence entry.
    pub fn describe(&self) -> Value {
        self.description.clone()
    }

    /// Applies Landlock, then seccomp (which needs no privilege: both set
    /// `PR_SET_NO_NEW_PRIVS`, so setuid binaries gain nothing afterwards).
    /// Call it last before exec, after the move into the cgroup and the
    /// change of user.
    pub fn apply(self) -> Result<(), ConfineError> {
        if let Ok((ruleset, plan)) = self.landlock {
            let status = ruleset
                .restrict_self()
                .map_err(|source| ConfineError::Landlock {
                    op: "restrict self".into(),
                    source,
                })?;
            if status.ruleset == RulesetStatus::NotEnforced {
                return Err(ConfineError::LandlockNotEnforced {
                    abi: plan.abi,
                    status: status.ruleset,
                });
            }
        }
        self.seccomp.load().map_err(seccomp_err("load filter"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory tree: paths and their kinds.
    struct FakeTree(BTreeMap<PathBuf, Kind>);

    impl FakeTree {
        fn new(entries: &[(&str, Kind)]) -> Self {
            let mut m = BTreeMap::new();
            m.insert(PathBuf::from("/"), Kind::Dir);
            for (p, k) in entries {
                m.insert(PathBuf::from(p), *k);
            }
            Self(m)
        }
    }

    impl Tree for FakeTree {
        fn kind(&self, path: &Path) -> io::Result<Kind> {
            self.0
                .get(path)
                .copied()
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
        fn children(&self, dir: &Path) -> io::Result<Vec<(OsString, Kind)>> {
            Ok(self
                .0
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, k)| (p.file_name().unwrap().to_os_string(), *k))
                .collect())
        }
    }

    use Kind::{Dir, File, Symlink};

    fn tree() -> FakeTree {
        FakeTree::new(&[
            ("/etc", Dir),
            ("/etc/passwd", File),
            ("/etc/warden", Dir),
            ("/etc/warden/policies", Dir),
            ("/etc/warden/policies/a.yaml", File),
            ("/tmp", Dir),
            ("/usr", Dir),
            ("/var", Dir),
            ("/var/lib", Dir),
            ("/var/lib/apt", Dir),
            ("/var/lib/warden", Dir),
            ("/var/lib/warden/host.key", File),
            ("/var/lib/evil", Symlink),
            ("/run", Dir),
            ("/run/warden", Dir),
            ("/run/warden/warden.sock", File),
            ("/sys", Dir),
            ("/sys/fs", Dir),
            ("/sys/fs/cgroup", Dir),
            ("/sys/fs/cgroup/warden", Dir),
            ("/sys/fs/cgroup/warden/bot", Dir),
            ("/dev", Dir),
            ("/dev/null", File),
            ("/dev/pts", Dir),
            ("/dev/sda", File),
        ])
    }

    fn protected() -> Protected {
        Protected {
            state_dir: Some("/var/lib/warden".into()),
            socket: Some("/run/warden/warden.sock".into()),
            policy_dir: Some("/etc/warden/policies".into()),
            pin_dir: Some("/sys/fs/bpf/warden".into()),
            cgroup2: vec!["/sys/fs/cgroup".into()],
            bpffs: vec![],
            executables: vec![],
        }
    }

    /// The effective rights at `path`: the union over it and its ancestors,
    /// as Landlock computes them.
    fn effective(rules: &[Rule], path: &str) -> BitFlags<AccessFs> {
        rules
            .iter()
            .filter(|r| Path::new(path).starts_with(&r.path))
            .fold(BitFlags::EMPTY, |acc, r| acc | r.access)
    }

    fn rules() -> Vec<Rule> {
        plan(&zones(&protected()), &tree()).unwrap()
    }

    #[test]
    fn protected_paths_get_exactly_their_zone() {
        let r = rules();
        assert_eq!(effective(&r, "/var/lib/warden/host.key"), no_access());
        assert_eq!(effective(&r, "/var/lib/warden/new-file"), no_access());
        assert_eq!(effective(&r, "/run/warden/warden.sock"), no_access());
        assert_eq!(effective(&r, "/etc/warden/policies/a.yaml"), read_only());
        assert_eq!(
            effective(&r, "/sys/fs/cgroup/warden/bot/cgroup.procs"),
            read_only()
        );
        assert_eq!(effective(&r, "/sys/fs/cgroup/cgroup.procs"), read_only());
        assert_eq!(effective(&r, "/dev/sda"), read_only());
    }

    #[test]
    fn everything_else_is_normal() {
        let r = rules();
        assert_eq!(effective(&r, "/tmp/x/y"), normal());
        assert_eq!(effective(&r, "/usr/bin/true"), normal());
        assert_eq!(effective(&r, "/var/lib/apt/lists/x"), normal());
        assert_eq!(effective(&r, "/dev/pts/3"), normal());
        // Files get the rights that mean something on a file.
        assert_eq!(effective(&r, "/etc/passwd"), normal() & file_rights());
        assert_eq!(effective(&r, "/dev/null"), normal() & file_rights());
    }

    #[test]
    fn directories_above_protected_paths_stay_closed() {
        let r = rules();
        // Nothing may be created, removed or renamed directly in them: that
        // would reach the protected entries.
        for dir in ["/", "/var", "/var/lib", "/run", "/run/warden"] {
            assert!(
                r.iter().all(|rule| rule.path != Path::new(dir)),
                "{dir}: {r:?}"
            );
            assert_eq!(
                effective(&r, &format!("{dir}/new")),
                BitFlags::EMPTY,
                "{dir}"
            );
        }
        // Above a read-only zone: read, and nothing else.
        assert_eq!(effective(&r, "/etc/warden/new"), read_only());
        // No rule lands on a symlink (its target could be anything).
        assert!(r.iter().all(|rule| rule.path != Path::new("/var/lib/evil")));
    }

    #[test]
    fn no_device_nodes_anywhere() {
        for rule in rules() {
            assert!(!rule.access.contains(AccessFs::MakeBlock), "{rule:?}");
            assert!(!rule.access.contains(AccessFs::MakeChar), "{rule:?}");
        }
    }

    #[test]
    fn read_only_trees_need_no_listing() {
        // /sys is granted read at its top: no rule per entry below it.
        let r = rules();
        assert!(r
            .iter()
            .any(|rule| rule.path == Path::new("/sys") && rule.access == read_only()));
        assert!(!r.iter().any(|rule| rule.path.starts_with("/sys/fs")));
    }

    #[test]
    fn missing_protected_paths_are_skipped() {
        let mut p = protected();
        p.state_dir = Some("/nonexistent/state".into());
        let r = plan(&zones(&p), &tree()).unwrap();
        assert_eq!(effective(&r, "/var/lib/warden/host.key"), normal());
        assert!(!r.iter().any(|rule| rule.path.starts_with("/nonexistent")));
    }

    #[test]
    fn a_protected_path_inside_a_writable_device_dir() {
        let mut p = protected();
        p.state_dir = Some("/dev/shm/warden".into());
        let t = FakeTree::new(&[
            ("/dev", Dir),
            ("/dev/shm", Dir),
            ("/dev/shm/warden", Dir),
            ("/dev/shm/other", Dir),
            ("/dev/sda", File),
        ]);
        let r = plan(&zones(&p), &t).unwrap();
        assert_eq!(effective(&r, "/dev/shm/warden/x"), no_access());
        assert_eq!(effective(&r, "/dev/shm/other/x"), normal());
        assert_eq!(effective(&r, "/dev/sda"), read_only());
    }

    #[test]
    fn signal_targets_cover_pid_threads_group_and_broadcast() {
        let d = DaemonProcess {
            pid: 100,
            tids: vec![100, 101, 102],
            pgid: 90,
            sid: 80,
        };
        assert_eq!(signal_targets(&d, 80), vec![100, 101, 102, -90, -1, 0]);
        // Another session cannot join the daemon's group: kill(0) is fine.
        assert_eq!(signal_targets(&d, 81), vec![100, 101, 102, -90, -1]);
    }

    #[test]
    fn the_seccomp_filter_compiles_for_every_table() {
        let d = DaemonProcess {
            pid: 100,
            tids: vec![100, 101],
            pgid: 100,
            sid: 100,
        };
        build_seccomp(&d, &signal_targets(&d, 5)).unwrap();
    }

    #[test]
    fn mount_points_by_type() {
        let text = "\
30 1 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
31 1 0:27 / /sys/fs/bpf rw - bpf bpf rw
32 1 0:28 / /mnt/with\\040space rw - bpf bpf rw
33 1 0:29 / /tmp rw - tmpfs tmpfs rw";
        assert_eq!(
            mount_points(text, &["cgroup2"]),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        assert_eq!(
            mount_points(text, &["bpf"]),
            vec![
                PathBuf::from("/sys/fs/bpf"),
                PathBuf::from("/mnt/with space")
            ]
        );
    }
}
