//! Self-protection: what a process started by `warden run` may not do to
//! Warden itself, enforced by the kernel on the agent's process tree.
//!
//! `warden run` calls [`prepare`] while it is still root (it has to open and
//! list the protected paths' parents), records [`Confinement::describe`] in
//! the `run` evidence entry, starts the command's process in the agent's
//! cgroup, which drops to `--user` and calls [`Confinement::apply`] just
//! before `exec`. Both
//! mechanisms are inherited by every descendant and cannot be lifted:
//!
//! - **Landlock** (file system, and signals with ABI >= 6). The agent may
//!   not read or write Warden's state directory (database, keys), may not
//!   remove or replace the control socket, and may only read the policy
//!   directory, the cgroup2 hierarchy (so it cannot leave its cgroup, nor
//!   create a child cgroup), bpffs, the
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
//!   aimed at the daemon by number ([`signal_targets`]); ENOSYS for
//!   `clone3`, the only way to fork into another cgroup
//!   (`CLONE_INTO_CGROUP`), so libc falls back to `clone`.
//!
//! - **the process itself** (`process`): every inherited descriptor but
//!   stdio (and `--keep-fd`) is closed at exec, and `RLIMIT_CORE` is 0.
//!
//! With BPF LSM these would be `task_kill`, `ptrace_access_check`,
//! `file_open`/`inode_permission`, `bpf`, `kernel_read_file`/
//! `kernel_load_data` and `sb_mount` hooks filtered on agent cgroups, and
//! would cover cgroups Warden adopts too; this kernel refuses BPF LSM.

mod landlock_rules;
mod process;
mod seccomp;

use std::{
    io,
    path::{Path, PathBuf},
};

use landlock::{
    PathBeneath, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope,
};
use libseccomp::ScmpFilterContext;
use serde_json::{json, Value};

use crate::{config::Paths, control::ControlError};

pub use self::process::inherited_fds;
pub(crate) use self::{landlock_rules::*, seccomp::*};

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
    keep_fds: Vec<i32>,
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
/// `inherited` are the descriptors `warden run` was started with
/// ([`inherited_fds`]); all but stdio and `keep_fds` are closed at exec.
pub fn prepare(
    paths: &Paths,
    inherited: &[(i32, String)],
    keep_fds: &[i32],
) -> Result<Confinement, ConfineError> {
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
    let mut description = describe(&protected, &absent, &landlock, &daemon, &targets);
    if let (Value::Object(d), Value::Object(p)) =
        (&mut description, process::describe(inherited, keep_fds))
    {
        d.extend(p);
    }
    Ok(Confinement {
        landlock,
        seccomp,
        keep_fds: keep_fds.to_vec(),
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
        // Decide on what was opened, not on what was listed. fstat of the
        // descriptor itself: a duplicate to wrap in a File cost a dup and a
        // close for every sibling of a protected path (368 under /tmp here).
        let meta = {
            use std::os::fd::AsRawFd;
            nix::sys::stat::fstat(fd.as_raw_fd())
                .map_err(|e| io_err("stat", &rule.path)(e.into()))?
        };
        let is_dir = meta.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let access = if is_dir {
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
            "enosys": ENOSYS_SYSCALLS,
            "denied_sockets": DENIED_SOCKETS,
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

    /// Applies Landlock, the process limits (core dumps off, descriptors
    /// close-on-exec), then seccomp (which needs no privilege: Landlock and
    /// seccomp both set `PR_SET_NO_NEW_PRIVS`, so setuid binaries gain
    /// nothing afterwards).
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
        process::apply(&self.keep_fds)?;
        self.seccomp.load().map_err(seccomp_err("load filter"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use landlock::{AccessFs, BitFlags};
    use std::collections::BTreeMap;
    use std::ffi::OsString;

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
