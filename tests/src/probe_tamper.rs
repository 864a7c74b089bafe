//! `warden-probe` subcommands that try to tamper with Warden from inside an
//! agent (tests/tests/self_protection.rs). Each prints `ok` or `errno=N`
//! and undoes what it did if it succeeded, so a failed protection shows up
//! as a test failure, not as damage:
//!
//!   warden-probe kill PID SIG             kill(2)
//!   warden-probe ptrace PID               PTRACE_ATTACH (detached at once)
//!   warden-probe bpf map|prog             BPF_MAP_CREATE / BPF_PROG_LOAD
//!   warden-probe open-write PATH          open O_WRONLY (writes nothing)
//!   warden-probe create PATH              O_CREAT|O_EXCL (then unlinked)
//!   warden-probe unlink PATH              unlink(2)
//!   warden-probe mkdir PATH               mkdir(2) (then removed)
//!   warden-probe enter CGROUP             write our pid to CGROUP/cgroup.procs
//!   warden-probe finit-module             finit_module(2) of an empty file
//!   warden-probe io-uring                 io_uring_setup(2)
//!   warden-probe perf PID                 perf_event_open(2) on PID
//!   warden-probe fds                      the targets of our open fds
//!   warden-probe cgroup-loop MARKER PIDFILE  writes PIDFILE, then appends
//!                                         its own cgroup (from
//!                                         /proc/self/cgroup) to MARKER,
//!                                         one line per pass, forever
//!   warden-probe clone3-into CGROUP       raw clone3(CLONE_INTO_CGROUP) into
//!                                         CGROUP; the child prints
//!                                         `child cgroup=...` and exits
//!   warden-probe rlimit-core              prints `core=SOFT/HARD`
//!   warden-probe clone3-stay CGROUP FILE  clone3(CLONE_INTO_CGROUP) into
//!                                         CGROUP; the child writes its pid
//!                                         to FILE and sleeps 60 s; the
//!                                         parent waits for it
//!   warden-probe stay FILE                write our pid to FILE, sleep 60 s
//!   warden-probe move CGROUP PID          write PID to CGROUP/cgroup.procs
//!   warden-probe forks N                  N times fork, _exit(0), wait;
//!                                         prints `forked=N`
//!   warden-probe op NAME PATH             one operation on a name: unlink,
//!                                         mkdir, rmdir, symlink (to
//!                                         /etc/hostname), mknod (a fifo),
//!                                         chmod (0600), chown (to 0:0),
//!                                         truncate (to 0), setxattr
//!                                         (user.w), utime (now), bind (a
//!                                         unix socket), removexattr
//!                                         (user.keep), utimensat (to
//!                                         2001-09-09), fsetxattr and
//!                                         futimens (through a read-only
//!                                         descriptor), setacl (an access
//!                                         ACL equal to mode 0644)

use std::{ffi::CString, io, process::ExitCode};

/// Runs `args` if it names a subcommand of this module.
pub fn run(args: &[String]) -> Option<ExitCode> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let code = match args.first().map(String::as_str)? {
        "kill" => report(kill(&arg(1), &arg(2))),
        "ptrace" => report(ptrace(&arg(1))),
        "bpf" => report(bpf(&arg(1))),
        "open-write" => report(open_write(&arg(1))),
        "create" => report(create(&arg(1))),
        // SAFETY: a valid C string.
        "unlink" => report(check(unsafe { libc::unlink(c(&arg(1)).as_ptr()) } as i64)),
        "mkdir" => report(mkdir(&arg(1))),
        "enter" => report(std::fs::write(
            format!("{}/cgroup.procs", arg(1)),
            std::process::id().to_string(),
        )),
        "finit-module" => report(finit_module()),
        "io-uring" => report(io_uring()),
        "perf" => report(perf(&arg(1))),
        "fds" => fds(),
        "clone3-into" => report(clone3_into(&arg(1))),
        "clone3-stay" => report(clone3_stay(&arg(1), &arg(2))),
        "op" => report(path_op(&arg(1), &arg(2))),
        "forks" => {
            let n: u64 = arg(1).parse().unwrap_or(1000);
            for _ in 0..n {
                // SAFETY: the child only calls _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: leave at once.
                    unsafe { libc::_exit(0) };
                }
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            }
            println!("forked={n}");
            ExitCode::SUCCESS
        }
        "move" => report(std::fs::write(format!("{}/cgroup.procs", arg(1)), arg(2))),
        "stay" => {
            let _ = std::fs::write(arg(1), std::process::id().to_string());
            std::thread::sleep(std::time::Duration::from_secs(60));
            ExitCode::SUCCESS
        }
        "cgroup-loop" => {
            // Writes its pid file, then forever: reads its own cgroup and
            // appends it to MARKER (one line per pass, two syscalls).
            use std::io::Write;
            let _ = std::fs::write(arg(2), std::process::id().to_string());
            let mut marker = match std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(arg(1))
            {
                Ok(f) => f,
                Err(_) => return Some(ExitCode::from(2)),
            };
            loop {
                let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                let line = cgroup
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .unwrap_or("?")
                    .to_string();
                let _ = marker.write_all(format!("{line}\n").as_bytes());
            }
        }
        "rlimit-core" => rlimit_core(),
        _ => return None,
    };
    Some(code)
}

fn report(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("errno={}", e.raw_os_error().unwrap_or(-1));
            ExitCode::FAILURE
        }
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn check(ret: i64) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn close(fd: i64) {
    // SAFETY: fd is a descriptor this process just got.
    unsafe { libc::close(fd as i32) };
}

fn kill(pid: &str, sig: &str) -> io::Result<()> {
    let (pid, sig): (i32, i32) = (pid.parse().unwrap_or(i32::MAX), sig.parse().unwrap_or(0));
    // SAFETY: kill(2) has no memory arguments.
    check(unsafe { libc::kill(pid, sig) }.into())
}

fn ptrace(pid: &str) -> io::Result<()> {
    let pid: i32 = pid.parse().unwrap_or(i32::MAX);
    // SAFETY: PTRACE_ATTACH takes no memory arguments.
    check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) })?;
    // It worked (it must not): let the process go again at once.
    // SAFETY: waitpid and PTRACE_DETACH on the tracee we just attached.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    Ok(())
}

/// The leading fields of `union bpf_attr` for the two commands used.
#[repr(C)]
#[derive(Default)]
struct BpfAttr {
    // BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
    // BPF_PROG_LOAD: prog_type, insn_cnt, insns (u64), license (u64).
    a: u32,
    b: u32,
    c: u64,
    d: u64,
    pad: [u64; 16],
}

fn bpf(what: &str) -> io::Result<()> {
    // BPF_PROG_LOAD needs a program: `r0 = 0; exit`.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c("GPL");
    let (cmd, attr) = if what == "map" {
        // BPF_MAP_CREATE of an array: 4-byte keys and values, 1 entry.
        (
            0,
            BpfAttr {
                a: 2,
                b: 4,
                c: 4 | (1 << 32),
                ..Default::default()
            },
        )
    } else {
        // BPF_PROG_LOAD of a socket filter.
        (
            5,
            BpfAttr {
                a: 1,
                b: 2,
                c: insns.as_ptr() as u64,
                d: license.as_ptr() as u64,
                ..Default::default()
            },
        )
    };
    // SAFETY: attr is valid for its size; the pointers in it outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const BpfAttr,
            std::mem::size_of::<BpfAttr>(),
        )
    };
    check(fd)?;
    close(fd);
    Ok(())
}

fn open_write(path: &str) -> io::Result<()> {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(c(path).as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(fd.into())?;
    close(fd.into());
    Ok(())
}

fn create(path: &str) -> io::Result<()> {
    let p = c(path);
    // SAFETY: a valid C string.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        )
    };
    check(fd.into())?;
    // SAFETY: fd is ours; the text is valid for its length.
    let n = unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    close(fd.into());
    // SAFETY: a valid C string.
    unsafe { libc::unlink(p.as_ptr()) };
    check(n as i64)
}

fn mkdir(path: &str) -> io::Result<()> {
    let p = c(path);
    // SAFETY: a valid C string.
    check(unsafe { libc::mkdir(p.as_ptr(), 0o700) }.into())?;
    // SAFETY: a valid C string.
    unsafe { libc::rmdir(p.as_ptr()) };
    Ok(())
}

fn finit_module() -> io::Result<()> {
    // An empty file is no module: without a filter the kernel refuses it
    // for what it is (ENOEXEC, EINVAL, ...), never EPERM.
    let file = std::fs::File::open("/dev/null")?;
    let params = c("");
    // SAFETY: a valid fd and C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            params.as_ptr(),
            0,
        )
    };
    check(r)
}

fn io_uring() -> io::Result<()> {
    let mut params = [0u8; 120]; // struct io_uring_params
                                 // SAFETY: params is valid for the size the kernel reads and writes.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    check(fd)?;
    close(fd);
    Ok(())
}

fn perf(pid: &str) -> io::Result<()> {
    let pid: i32 = pid.parse().unwrap_or(i32::MAX);
    // struct perf_event_attr for PERF_TYPE_SOFTWARE / PERF_COUNT_SW_TASK_CLOCK.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // type
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&1u64.to_ne_bytes()); // config
                                                      // SAFETY: attr is valid for the size it declares.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), pid, -1, -1, 0) };
    check(fd)?;
    close(fd);
    Ok(())
}

fn fds() -> ExitCode {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return report(Err(io::Error::last_os_error()));
    };
    for entry in dir.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            println!("{}", target.display());
        }
    }
    ExitCode::SUCCESS
}

/// Forks a child born in the cgroup directory `cgroup` (opened `O_PATH`)
/// with Warden's own `clone3(CLONE_INTO_CGROUP)`: 0 in the child, its pid
/// in the parent.
fn clone3_child(cgroup: &str) -> io::Result<libc::pid_t> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(cgroup)?;
    // SAFETY: the probe is single-threaded; the children below only read
    // or write a file, print, sleep and leave with _exit.
    unsafe { warden::cgroup::clone_into(&dir) }
}

fn clone3_into(cgroup: &str) -> io::Result<()> {
    let pid = clone3_child(cgroup)?;
    if pid == 0 {
        let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let line = cg.lines().find(|l| l.starts_with("0::")).unwrap_or("");
        println!("child cgroup={}", line.trim_start_matches("0::"));
        // SAFETY: leave at once, running no destructor of the parent's.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(())
}

/// As `clone3_into`, but the child stays (the escape tests watch it die).
fn clone3_stay(cgroup: &str, pid_file: &str) -> io::Result<()> {
    let pid = clone3_child(cgroup)?;
    if pid == 0 {
        let _ = std::fs::write(pid_file, std::process::id().to_string());
        std::thread::sleep(std::time::Duration::from_secs(60));
        // SAFETY: leave at once, running no destructor of the parent's.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(())
}

fn rlimit_core() -> ExitCode {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut r) } != 0 {
        return report(Err(io::Error::last_os_error()));
    }
    println!("core={}/{}", r.rlim_cur, r.rlim_max);
    ExitCode::SUCCESS
}

/// One operation on the name `path` (see the module's list).
fn path_op(op: &str, path: &str) -> io::Result<()> {
    let p = c(path);
    let p = p.as_ptr();
    // SAFETY: each call gets a valid C string and plain values; bind gets
    // a sockaddr_un we own.
    let ret: i64 = unsafe {
        match op {
            "unlink" => libc::unlink(p).into(),
            "mkdir" => libc::mkdir(p, 0o755).into(),
            "rmdir" => libc::rmdir(p).into(),
            "symlink" => libc::symlink(c("/etc/hostname").as_ptr(), p).into(),
            "mknod" => libc::mknod(p, libc::S_IFIFO | 0o644, 0).into(),
            "chmod" => libc::chmod(p, 0o600).into(),
            "chown" => libc::chown(p, 0, 0).into(),
            "truncate" => libc::truncate(p, 0).into(),
            "setxattr" => {
                libc::setxattr(p, c("user.w").as_ptr(), b"1".as_ptr().cast(), 1, 0).into()
            }
            "utime" => libc::utimes(p, std::ptr::null()).into(),
            "removexattr" => libc::removexattr(p, c("user.keep").as_ptr()).into(),
            "utimensat" => {
                let t = [libc::timespec {
                    tv_sec: 1_000_000_000,
                    tv_nsec: 0,
                }; 2];
                libc::utimensat(libc::AT_FDCWD, p, t.as_ptr(), 0).into()
            }
            // The same through a descriptor (opened for reading only).
            "fsetxattr" | "futimens" => {
                let fd = libc::open(p, libc::O_RDONLY | libc::O_CLOEXEC);
                check(fd.into())?;
                let r = if op == "fsetxattr" {
                    libc::fsetxattr(fd, c("user.w").as_ptr(), b"1".as_ptr().cast(), 1, 0)
                } else {
                    libc::futimens(fd, std::ptr::null())
                };
                libc::close(fd);
                r.into()
            }
            // A POSIX access ACL equal to mode 0644 (ACL_USER_OBJ rw,
            // ACL_GROUP_OBJ r, ACL_OTHER r), set through setxattr(2).
            "setacl" => {
                let mut acl = Vec::new();
                acl.extend_from_slice(&2u32.to_le_bytes());
                for (tag, perm) in [(0x01u16, 6u16), (0x04, 4), (0x20, 4)] {
                    acl.extend_from_slice(&tag.to_le_bytes());
                    acl.extend_from_slice(&perm.to_le_bytes());
                    acl.extend_from_slice(&u32::MAX.to_le_bytes());
                }
                libc::setxattr(
                    p,
                    c("system.posix_acl_access").as_ptr(),
                    acl.as_ptr().cast(),
                    acl.len(),
                    0,
                )
                .into()
            }
            "bind" => {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                check(fd.into())?;
                let mut addr: libc::sockaddr_un = std::mem::zeroed();
                addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (d, s) in addr.sun_path.iter_mut().zip(path.bytes().take(107)) {
                    *d = s as libc::c_char;
                }
                let r = libc::bind(
                    fd,
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as u32,
                );
                libc::close(fd);
                r.into()
            }
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    };
    check(ret)
}
