//! `warden-probe` subcommands that reach files by other names than their
//! path (tests/tests/names.rs). Each prints `ok ...` or `errno=N` (with the
//! call that failed):
//!
//!   warden-probe memfd-exec BIN ARG...    copy BIN into a memfd, fexecve it
//!   warden-probe open-tree DIR NAME       open_tree(DIR, OPEN_TREE_CLONE),
//!                                         then openat(tree, NAME) and read
//!   warden-probe rename FROM TO           rename(2)
//!   warden-probe link FROM TO             link(2)
//!   warden-probe rename-exec FROM TO ARG  rename(2), then execv(TO, ARG)
//!   warden-probe link-read FROM TO        link(2), then open TO and read

use std::{ffi::CString, io, process::ExitCode};

/// Runs `args` if it names a subcommand of this module.
pub fn run(args: &[String]) -> Option<ExitCode> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let code = match args.first().map(String::as_str)? {
        "memfd-exec" => memfd_exec(&arg(1), args.get(2..).unwrap_or_default()),
        "open-tree" => open_tree_read(&arg(1), &arg(2)),
        // SAFETY: valid C strings.
        "rename" => status("rename", unsafe {
            libc::rename(c(&arg(1)).as_ptr(), c(&arg(2)).as_ptr())
        }),
        // SAFETY: valid C strings.
        "link" => status("link", unsafe {
            libc::link(c(&arg(1)).as_ptr(), c(&arg(2)).as_ptr())
        }),
        "rename-exec" => {
            // SAFETY: valid C strings.
            if unsafe { libc::rename(c(&arg(1)).as_ptr(), c(&arg(2)).as_ptr()) } < 0 {
                return Some(failed("rename"));
            }
            let (to, a) = (c(&arg(2)), c(&arg(3)));
            let argv = [to.as_ptr(), a.as_ptr(), std::ptr::null()];
            // SAFETY: NUL-terminated argv; returns only on failure.
            unsafe { libc::execv(to.as_ptr(), argv.as_ptr()) };
            failed("execv")
        }
        "link-read" => {
            // SAFETY: valid C strings.
            if unsafe { libc::link(c(&arg(1)).as_ptr(), c(&arg(2)).as_ptr()) } < 0 {
                return Some(failed("link"));
            }
            match std::fs::read(arg(2)) {
                Ok(bytes) => {
                    println!("ok {}", String::from_utf8_lossy(&bytes));
                    ExitCode::SUCCESS
                }
                Err(_) => failed("read"),
            }
        }
        _ => return None,
    };
    Some(code)
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn failed(call: &str) -> ExitCode {
    let e = io::Error::last_os_error();
    println!("{call} errno={}", e.raw_os_error().unwrap_or(-1));
    ExitCode::FAILURE
}

fn status(call: &str, ret: libc::c_int) -> ExitCode {
    if ret < 0 {
        return failed(call);
    }
    println!("ok");
    ExitCode::SUCCESS
}

fn memfd_exec(bin: &str, rest: &[String]) -> ExitCode {
    let Ok(bytes) = std::fs::read(bin) else {
        return failed("read");
    };
    // SAFETY: a valid C string; no flags (the fd must survive the exec of
    // an interpreter-less binary either way).
    let fd = unsafe { libc::memfd_create(c("warden-probe").as_ptr(), 0) };
    if fd < 0 {
        return failed("memfd_create");
    }
    // SAFETY: fd is ours; bytes is valid for its length.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if n != bytes.len() as isize {
        return failed("write");
    }
    let argv0 = c(bin);
    let args: Vec<CString> = rest.iter().map(|a| c(a)).collect();
    let mut argv: Vec<*const libc::c_char> = vec![argv0.as_ptr()];
    argv.extend(args.iter().map(|a| a.as_ptr()));
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: NUL-terminated argv and envp; returns only on failure.
    unsafe { libc::fexecve(fd, argv.as_ptr(), envp.as_ptr()) };
    failed("fexecve")
}

fn open_tree_read(dir: &str, name: &str) -> ExitCode {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: a valid C string; open_tree(2) takes (dfd, path, flags).
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c(dir).as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return failed("open_tree");
    }
    // SAFETY: a valid C string and our fd.
    let fd = unsafe { libc::openat(tree as libc::c_int, c(name).as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return failed("openat");
    }
    let mut buf = vec![0u8; 4096];
    // SAFETY: fd is ours; buf is valid for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return failed("read");
    }
    buf.truncate(n as usize);
    println!("ok {}", String::from_utf8_lossy(&buf));
    ExitCode::SUCCESS
}
