//! Agents are cgroups (v2): finding the hierarchy, creating or adopting an
//! agent's cgroup, moving processes into it, and ending or freezing them.
//!
//! The cgroup id the kernel reports (`bpf_get_current_cgroup_id`) is the
//! inode number of the cgroup's directory.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error("no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo); mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoCgroup2,
    #[error("cgroup {path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} is not inside the cgroup2 hierarchy mounted at {mount}")]
    OutsideHierarchy { path: PathBuf, mount: PathBuf },
    #[error("read /proc/{pid}/cgroup: {source}")]
    Proc {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup2 mount point, from /proc/self/mountinfo (never hard-coded: it
/// is /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified on hybrid ones).
/// Parsed here rather than with procfs, whose `MountInfo` (0.17) keeps the
/// kernel's octal escapes (`\040` for a space) in mount points.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    find_cgroup2_mount(&text).ok_or(CgroupError::NoCgroup2)
}

/// Parses mountinfo text (see proc(5)): field 5 is the mount point, and the
/// filesystem type follows the " - " separator.
fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        let mount_point = before.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel's id for a cgroup: the inode number of its directory.
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CgroupError::Missing {
            path: path.to_path_buf(),
        },
        _ => CgroupError::Io {
            op: "stat",
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    Ok(meta.ino())
}

/// The kernel's level of the cgroup at `path` (the hierarchy's root at
/// `mount` is 0, its children 1, ...), `None` outside the hierarchy.
pub fn level(mount: &Path, path: &Path) -> Option<u32> {
    let rel = path.strip_prefix(mount).ok()?;
    let mut n = 0u32;
    for c in rel.components() {
        match c {
            std::path::Component::Normal(_) => n += 1,
            _ => return None,
        }
    }
    Some(n)
}

/// Checks that `path` is an existing cgroup in the cgroup2 hierarchy at
/// `mount` (for adopting a systemd service's or a container's cgroup).
pub fn check_adoptable(mount: &Path, path: &Path) -> Result<(), CgroupError> {
    if !path.starts_with(mount) || path == mount {
        return Err(CgroupError::OutsideHierarchy {
            path: path.to_path_buf(),
            mount: mount.to_path_buf(),
        });
    }
    if !path.join("cgroup.procs").exists() {
        return Err(CgroupError::Missing {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Creates `path` (and missing parents). An existing directory is fine.
pub fn create(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(io_err("create cgroup", path))
}

/// Removes an empty cgroup. A cgroup that still has processes cannot be
/// removed; the error says so.
pub fn remove(path: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::Io {
            op: "remove cgroup",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn write_file(path: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let target = path.join(file);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .map_err(io_err("open", &target))?;
    f.write_all(value.as_bytes())
        .map_err(io_err("write", &target))
}

/// Moves process `pid` (0 = the caller) into the cgroup.
pub fn move_process(path: &Path, pid: u32) -> Result<(), CgroupError> {
    write_file(path, "cgroup.procs", &pid.to_string())
}

/// `CLONE_INTO_CGROUP` (Linux 5.7, include/uapi/linux/sched.h).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}
const _: () = assert!(std::mem::size_of::<CloneArgs>() == 88);

/// Forks (`clone3`, SIGCHLD on exit) a child born in the cgroup `dir` (an
/// open cgroup directory): 0 in the child, its pid in the parent. Unlike a
/// write to `cgroup.procs` it does not take `cgroup_threadgroup_rwsem` for
/// writing, which waits for an RCU grace period (milliseconds) on kernels
/// whose cgroup2 is mounted without `favordynmods`. ENOSYS, EINVAL or E2BIG:
/// a kernel without it (before 5.7).
///
/// # Safety
/// As fork(2): the child runs on a copy of the caller's memory with only the
/// calling thread, so if the caller has other threads the child may only
/// make async-signal-safe calls (raw system calls, then exec or `_exit`).
pub unsafe fn clone_into(dir: &fs::File) -> io::Result<libc::pid_t> {
    use std::os::fd::AsRawFd;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 with a valid `clone_args` of the size given and no
    // stack (fork semantics); the caller answers for the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as libc::pid_t)
}

/// The pids in the cgroup (not its descendants).
pub fn procs(path: &Path) -> Result<Vec<u32>, CgroupError> {
    let file = path.join("cgroup.procs");
    let text = fs::read_to_string(&file).map_err(io_err("read", &file))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Sends SIGKILL to every process in the cgroup and its descendants.
pub fn kill_all(path: &Path) -> Result<(), CgroupError> {
    write_file(path, "cgroup.kill", "1")
}

/// Freezes (`true`) or thaws (`false`) the cgroup.
pub fn freeze(path: &Path, frozen: bool) -> Result<(), CgroupError> {
    write_file(path, "cgroup.freeze", if frozen { "1" } else { "0" })
}

/// The cgroup of process `pid`, as a path below `mount` (from the `0::` line
/// of /proc/PID/cgroup).
pub fn cgroup_of(mount: &Path, pid: u32) -> Result<PathBuf, CgroupError> {
    let proc_err = |source| CgroupError::Proc { pid, source };
    let pid_i32 = i32::try_from(pid).map_err(|_| {
        proc_err(procfs::ProcError::NotFound(Some(
            format!("/proc/{pid}").into(),
        )))
    })?;
    let groups = procfs::process::Process::new(pid_i32)
        .and_then(|p| p.cgroups())
        .map_err(proc_err)?;
    let v2 = groups
        .into_iter()
        .find(|g| g.hierarchy == 0 && g.controllers.is_empty())
        .ok_or(CgroupError::NoCgroup2)?;
    Ok(mount.join(v2.pathname.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_count_components_below_the_mount() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(level(m, m), Some(0));
        assert_eq!(level(m, Path::new("/sys/fs/cgroup/a/b")), Some(2));
        assert_eq!(level(m, Path::new("/sys/fs/other")), None);
        assert_eq!(level(m, Path::new("/sys/fs/cgroup/a/../b")), None);
    }

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_cgroup2_with_optional_fields_and_escapes() {
        let text = "25 1 0:22 / /sys/fs/my\\040cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/my cgroup"))
        );
    }

    #[test]
    fn no_cgroup2_is_none() {
        let text = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw\n";
        assert_eq!(find_cgroup2_mount(text), None);
    }

    #[test]
    fn adopt_rejects_paths_outside_the_hierarchy() {
        let err = check_adoptable(Path::new("/sys/fs/cgroup"), Path::new("/tmp/x")).unwrap_err();
        assert!(matches!(err, CgroupError::OutsideHierarchy { .. }), "{err}");
        let err =
            check_adoptable(Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup")).unwrap_err();
        assert!(matches!(err, CgroupError::OutsideHierarchy { .. }), "{err}");
    }
}
