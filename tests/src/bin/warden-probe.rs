//! A tiny program the tests run inside agent cgroups. It performs one action
//! and reports the outcome on stdout as `ok` or `errno=N`, exiting 0 or 1.
//!
//!   warden-probe connect ADDR:PORT        TCP connect
//!   warden-probe udp ADDR:PORT            UDP sendto (unconnected)
//!   warden-probe sleep SECS               stay alive (for kill tests)
//!   warden-probe join CGROUP SUBCOMMAND...
//!                                         move into CGROUP, then run the
//!                                         subcommand (no exec in between)
//!   warden-probe connect-timed ADDR:PORT  connect; prints `ok T` or
//!                                         `errno=N T`, T = CLOCK_MONOTONIC
//!                                         ns when connect() returned
//!   warden-probe socket FAMILY TYPE PROTO socket(2) with those numbers
//!                                         (decimal), then close
//!   warden-probe hold-conns SOCKET N      open N connections to a unix
//!                                         socket and keep them; prints
//!                                         `connected=C failed=F`, then
//!                                         sleeps until killed
//!   warden-probe udp-flood ADDR:PORT N    N unconnected UDP sends; prints
//!                                         `sent=S eperm=E`
//!   warden-probe connect-rate ADDR:PORT RATE:SECS...
//!                                         paced connects, phase by phase
//!                                         (sentinel.rs)
//!
//! File opens (exec_file.rs). Each prints `ok` and what it read, or `errno=N`:
//!   warden-probe read PATH                open O_RDONLY, print the content
//!   warden-probe append PATH TEXT         open O_WRONLY|O_APPEND, write TEXT
//!   warden-probe openat2 PATH             openat2(2), print the content
//!   warden-probe reopen-pipe DIR          write PIPE into a new pipe, read it
//!                                         back through DIR/N (/dev/fd/N)
//!   warden-probe open32 PATH              ia32 open (int 0x80) from 64-bit code
//!   warden-probe op32 OP PATH [PATH2]     an operation on a name through
//!                                         int 0x80 (tests/src/probe_ia32.rs)
//!   warden-probe race-open OK SECRET N    a sibling thread flips the path
//!                                         buffer between OK and SECRET (same
//!                                         length) while the main thread opens
//!                                         and reads it N times; prints LEAK if
//!                                         it ever reads SECRET's content
//!   warden-probe race-read SECRET         a sibling thread spins on read() of
//!                                         the fd number the open will get and
//!                                         prints what it reads at once
//!   warden-probe race-exec A B ARG        a sibling thread flips the path
//!                                         buffer between A and B (same length)
//!                                         while the main thread execs it
//!
//! Tampering with Warden (self_protection.rs): kill, ptrace, bpf,
//! open-write, create, unlink, mkdir, enter, finit-module, io-uring, perf,
//! fds; see tests/src/probe_tamper.rs.
//!
//! BPF LSM (lsm.rs), where a denial is an error, not a kill:
//!   warden-probe exec PATH ARG...         execv(PATH, [PATH, ARG...]); on
//!                                         failure prints `errno=N`, exits 1
//!   warden-probe truncate PATH            open O_WRONLY|O_TRUNC, then close
//!   warden-probe create-excl PATH         open O_WRONLY|O_CREAT|O_EXCL, then
//!                                         close (held creates, both paths)

// Attempts on Warden itself (self_protection.rs); see that file's list.
#[path = "../probe_names.rs"]
mod names;
#[path = "../probe_tamper.rs"]
mod tamper;
// Operations on names through the ia32 table (path_ops.rs).
#[path = "../probe_ia32.rs"]
mod ia32;

use std::{
    ffi::CString,
    io::{self, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

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

fn addr(arg: Option<&String>) -> SocketAddr {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: warden-probe connect|udp ADDR:PORT");
        std::process::exit(2)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run(&args)
}

fn run(args: &[String]) -> ExitCode {
    if let Some(code) = tamper::run(args) {
        return code;
    }
    if let Some(code) = names::run(args) {
        return code;
    }
    if let Some(code) = ia32::run(args) {
        return code;
    }
    match args.first().map(String::as_str) {
        Some("connect") => {
            let to = addr(args.get(1));
            report(TcpStream::connect_timeout(&to, Duration::from_secs(5)).map(drop))
        }
        Some("hold-conns") => {
            let (Some(path), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok()))
            else {
                eprintln!("usage: warden-probe hold-conns SOCKET N");
                return ExitCode::from(2);
            };
            let mut held = Vec::with_capacity(n);
            let mut failed = 0;
            for _ in 0..n {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(s) => held.push(s),
                    Err(_) => failed += 1,
                }
            }
            println!("connected={} failed={failed}", held.len());
            let _ = io::stdout().flush();
            std::thread::sleep(Duration::from_secs(600));
            ExitCode::SUCCESS
        }
        Some("socket") => {
            let num = |i: usize| -> i32 {
                args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
                    eprintln!("usage: warden-probe socket FAMILY TYPE PROTO");
                    std::process::exit(2)
                })
            };
            // SAFETY: socket(2) with integer arguments; the fd is closed.
            let fd = unsafe { libc::socket(num(1), num(2), num(3)) };
            if fd >= 0 {
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
                report(Ok(()))
            } else {
                report(Err(io::Error::last_os_error()))
            }
        }
        Some("udp") => {
            let to = addr(args.get(1));
            let bind: SocketAddr = if to.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            }
            .parse()
            .expect("literal");
            report(
                UdpSocket::bind(bind)
                    .and_then(|s| s.send_to(b"probe", to))
                    .map(drop),
            )
        }
        Some("join") => {
            let Some(cgroup) = args.get(1) else {
                eprintln!("usage: warden-probe join CGROUP SUBCOMMAND...");
                return ExitCode::from(2);
            };
            if let Err(e) = std::fs::write(
                format!("{cgroup}/cgroup.procs"),
                std::process::id().to_string(),
            ) {
                eprintln!("join {cgroup}: {e}");
                return ExitCode::from(2);
            }
            run(&args[2..])
        }
        Some("connect-timed") => {
            let to = addr(args.get(1));
            let result = TcpStream::connect_timeout(&to, Duration::from_secs(600)).map(drop);
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes into the timespec we own.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            let ns = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
            match result {
                Ok(()) => println!("ok {ns}"),
                Err(e) => println!("errno={} {ns}", e.raw_os_error().unwrap_or(-1)),
            }
            ExitCode::SUCCESS
        }
        Some("udp-flood") => {
            let to = addr(args.get(1));
            let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
            let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
                eprintln!("bind a UDP socket");
                return ExitCode::from(2);
            };
            let (mut sent, mut eperm) = (0u64, 0u64);
            for _ in 0..n {
                match sock.send_to(b"x", to) {
                    Ok(_) => sent += 1,
                    Err(e) if e.raw_os_error() == Some(1) => eperm += 1,
                    Err(_) => {}
                }
            }
            println!("sent={sent} eperm={eperm}");
            ExitCode::SUCCESS
        }
        Some("tcp-send") => {
            // Sends up to BYTES over one connection for at most SECS
            // (writes time out while the kernel drops what would be sent).
            let to = addr(args.get(1));
            let total: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
            let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
            let mut s = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                Ok(s) => s,
                Err(e) => {
                    println!("connect errno={}", e.raw_os_error().unwrap_or(-1));
                    return ExitCode::SUCCESS;
                }
            };
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let chunk = [0x5au8; 16 * 1024];
            let deadline = std::time::Instant::now() + Duration::from_secs(secs);
            let mut sent = 0u64;
            while sent < total && std::time::Instant::now() < deadline {
                let n = chunk.len().min((total - sent) as usize);
                match s.write(&chunk[..n]) {
                    Ok(n) => sent += n as u64,
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            // Until the deadline, wait for what was written to leave
            // (the send queue drains unless the kernel drops it).
            let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
            loop {
                let mut queued: libc::c_int = 0;
                // SAFETY: TIOCOUTQ on our own socket writes one int.
                let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
                if rc != 0 || queued == 0 || std::time::Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Close with a reset: nothing left queued to retransmit after
            // the probe exits (it would count against the next window).
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on our own fd with a linger struct we own.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    std::ptr::addr_of!(linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            println!("sent={sent}");
            ExitCode::SUCCESS
        }
        Some("udp-send") => {
            // N datagrams of SIZE bytes; prints how many the kernel took.
            let to = addr(args.get(1));
            let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            let size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
            let bind = if to.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            let Ok(sock) = UdpSocket::bind(bind) else {
                eprintln!("bind a UDP socket");
                return ExitCode::from(2);
            };
            let buf = vec![0x5au8; size];
            let (mut sent, mut failed) = (0u64, 0u64);
            for _ in 0..n {
                match sock.send_to(&buf, to) {
                    Ok(_) => sent += 1,
                    Err(_) => failed += 1,
                }
            }
            println!("sent={sent} failed={failed}");
            ExitCode::SUCCESS
        }
        Some("sleep") => {
            let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
            std::thread::sleep(Duration::from_secs(secs));
            ExitCode::SUCCESS
        }
        Some("read") => report_read(open_read(&arg(args, 1), libc::O_RDONLY)),
        Some("script") => script(),
        // Opens and reads a file N times in this one process.
        Some("read-n") => {
            let n: u64 = arg(args, 2).parse().unwrap_or(1);
            let mut last = Ok(Vec::new());
            for _ in 0..n {
                last = open_read(&arg(args, 1), libc::O_RDONLY);
                if last.is_err() {
                    break;
                }
            }
            report_read(last)
        }
        // Connects N times to ADDR; prints how many succeeded and how many
        // were refused with EPERM.
        Some("connect-n") => {
            let to = addr(args.get(1));
            let n: u64 = arg(args, 2).parse().unwrap_or(1);
            let (mut ok, mut eperm) = (0u64, 0u64);
            for _ in 0..n {
                match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                    Ok(_) => ok += 1,
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
                    Err(_) => {}
                }
            }
            println!("ok={ok} eperm={eperm}");
            ExitCode::SUCCESS
        }
        // Connects at RATE per second for SECS, phase after phase, paced
        // to a schedule (a late connect is made at once, so a stall moves
        // actions, it does not lose them); prints `phase I START_NS` (unix
        // time) as each phase starts, then `ok=N other=M`.
        Some("connect-rate") => {
            let to = addr(args.get(1));
            let (mut ok, mut other) = (0u64, 0u64);
            for (i, phase) in args[2..].iter().enumerate() {
                let (rate, secs) = phase
                    .split_once(':')
                    .and_then(|(r, s)| Some((r.parse::<f64>().ok()?, s.parse::<f64>().ok()?)))
                    .unwrap_or_else(|| {
                        eprintln!("usage: warden-probe connect-rate ADDR RATE:SECS...");
                        std::process::exit(2)
                    });
                let start = std::time::Instant::now();
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                println!("phase {i} {unix}");
                let _ = io::stdout().flush();
                let n = (rate * secs) as u64;
                for k in 0..n {
                    let due = Duration::from_secs_f64(k as f64 / rate);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                        Ok(_) => ok += 1,
                        Err(_) => other += 1,
                    }
                }
            }
            println!("ok={ok} other={other}");
            ExitCode::SUCCESS
        }
        // Connects N times to ADDR from each of T threads at once; prints
        // how many succeeded and how many were refused with EPERM.
        Some("connect-threads") => {
            let to = addr(args.get(1));
            let threads: u64 = arg(args, 2).parse().unwrap_or(1);
            let n: u64 = arg(args, 3).parse().unwrap_or(1);
            let start = std::sync::Arc::new(std::sync::Barrier::new(threads as usize));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let start = start.clone();
                    std::thread::spawn(move || {
                        start.wait();
                        let (mut ok, mut eperm) = (0u64, 0u64);
                        for _ in 0..n {
                            match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                                Ok(_) => ok += 1,
                                Err(e) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
                                Err(_) => {}
                            }
                        }
                        (ok, eperm)
                    })
                })
                .collect();
            let (mut ok, mut eperm) = (0u64, 0u64);
            for h in handles {
                let (o, e) = h.join().unwrap_or((0, 0));
                ok += o;
                eperm += e;
            }
            println!("ok={ok} eperm={eperm}");
            ExitCode::SUCCESS
        }
        Some("append") => report(append(&arg(args, 1), &arg(args, 2))),
        Some("reopen-pipe") => report_read(reopen_pipe(&arg(args, 1))),
        Some("openat2") => report_read(openat2_read(&arg(args, 1))),
        Some("open32") => report_read(open32_read(&arg(args, 1))),
        Some("race-open") => {
            let n = arg(args, 3).parse().unwrap_or(100_000);
            race_open(&arg(args, 1), &arg(args, 2), n)
        }
        Some("race-read") => race_read(&arg(args, 1)),
        Some("race-exec") => race_exec(&arg(args, 1), &arg(args, 2), &arg(args, 3)),
        Some("exec") => exec(&arg(args, 1), &args[2..]),
        Some("truncate") => report(truncate(&arg(args, 1))),
        Some("create-excl") => report(create_excl(&arg(args, 1))),
        _ => {
            eprintln!(
                "usage: warden-probe connect|udp ADDR:PORT | sleep SECS | read|openat2|open32 PATH \
                 | append PATH TEXT | race-open OK SECRET N | race-read SECRET | race-exec A B ARG \
                 | exec PATH ARG... | truncate PATH | create-excl PATH | script"
            );
            ExitCode::from(2)
        }
    }
}

fn arg(args: &[String], i: usize) -> String {
    args.get(i).cloned().unwrap_or_else(|| {
        eprintln!("warden-probe: missing argument {i}");
        std::process::exit(2)
    })
}

fn cstring(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| {
        eprintln!("warden-probe: NUL in {s:?}");
        std::process::exit(2)
    })
}

/// Prints `ok` and the bytes read on one line, or `errno=N`.
fn report_read(result: io::Result<Vec<u8>>) -> ExitCode {
    match result {
        Ok(bytes) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(b"ok ");
            let _ = out.write_all(&bytes);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("errno={}", e.raw_os_error().unwrap_or(-1));
            ExitCode::FAILURE
        }
    }
}

/// Reads up to 4 KiB from `fd`, then closes it.
fn read_fd(fd: libc::c_int) -> io::Result<Vec<u8>> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 4096];
    // SAFETY: fd is ours; buf is valid for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Writes `PIPE` into a new pipe and reads it back by reopening the read
/// end as `DIR/N` (`/dev/fd` or `/proc/self/fd`), as rustc does with
/// cargo's jobserver pipe.
fn reopen_pipe(dir: &str) -> io::Result<Vec<u8>> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fds[1] is our pipe's write end; the buffer is 4 bytes.
    if unsafe { libc::write(fds[1], b"PIPE".as_ptr().cast(), 4) } != 4 {
        return Err(io::Error::last_os_error());
    }
    open_read(&format!("{dir}/{}", fds[0]), libc::O_RDONLY)
}

fn open_read(path: &str, flags: libc::c_int) -> io::Result<Vec<u8>> {
    let c = cstring(path);
    // SAFETY: a valid C string.
    read_fd(unsafe { libc::openat(libc::AT_FDCWD, c.as_ptr(), flags) })
}

fn append(path: &str, text: &str) -> io::Result<()> {
    let c = cstring(path);
    // SAFETY: a valid C string.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, c.as_ptr(), libc::O_WRONLY | libc::O_APPEND) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours; text is valid for its length.
    let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn openat2_read(path: &str) -> io::Result<Vec<u8>> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let c = cstring(path);
    let how = OpenHow {
        flags: libc::O_RDONLY as u64,
        mode: 0,
        resolve: 0,
    };
    // SAFETY: valid pointers and the struct's size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            size_of::<OpenHow>(),
        )
    };
    read_fd(fd as libc::c_int)
}

/// open() through the ia32 syscall table (`int 0x80`) from 64-bit code:
/// number 5, which is fstat in the 64-bit table. A hook that only knows
/// 64-bit numbers misses it.
fn open32_read(path: &str) -> io::Result<Vec<u8>> {
    // The path must be addressable with 32 bits.
    // SAFETY: an anonymous private mapping.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED || path.len() >= 4096 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is 4 KiB, zeroed, and the path shorter.
    unsafe { std::ptr::copy_nonoverlapping(path.as_ptr(), page.cast::<u8>(), path.len()) };
    let ret: i32;
    // SAFETY: ia32 open(path, O_RDONLY, 0); int 0x80 clobbers r8-r11. LLVM
    // reserves rbx, so the argument is swapped in and out of it.
    unsafe {
        std::arch::asm!(
            "xchg rbx, rsi",
            "int 0x80",
            "xchg rbx, rsi",
            inlateout("eax") 5i32 => ret,
            inout("rsi") page as u64 => _,
            in("ecx") 0u32,
            in("edx") 0u32,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    read_fd(ret)
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Starts a thread that rewrites the NUL-terminated path in `buf` between
/// `a` and `b` (same length) as fast as it can.
fn flipper(buf: &'static mut [u8; 512], a: &str, b: &str) -> std::thread::JoinHandle<()> {
    assert_eq!(a.len(), b.len(), "race paths must have the same length");
    assert!(a.len() < buf.len());
    buf[..a.len()].copy_from_slice(a.as_bytes());
    let at = buf.as_mut_ptr() as usize;
    let (a, b) = (a.as_bytes().to_vec(), b.as_bytes().to_vec());
    std::thread::spawn(move || {
        let p = at as *mut u8;
        while !STOP.load(Ordering::Relaxed) {
            for src in [&a, &b] {
                for (i, &c) in src.iter().enumerate() {
                    // SAFETY: racy on purpose: that is the test.
                    unsafe { std::ptr::write_volatile(p.add(i), c) };
                }
            }
        }
    })
}

/// The main thread opens the flipping path and reads it, `n` times. Exits 0
/// with `no leak` if it never read SECRET's content; the hook kills it if
/// the kernel ever opened the secret (so it prints nothing more).
fn race_open(ok: &str, secret: &str, n: u64) -> ExitCode {
    let secret_content = std::fs::read(secret).unwrap_or_default();
    let buf: &'static mut [u8; 512] = Box::leak(Box::new([0u8; 512]));
    let at = buf.as_ptr() as usize;
    let flip = flipper(buf, ok, secret);
    let mut opened = 0u64;
    for _ in 0..n {
        // SAFETY: buf stays valid (leaked); its contents race on purpose.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, at as *const libc::c_char, libc::O_RDONLY) };
        let Ok(bytes) = read_fd(fd) else { continue };
        opened += 1;
        if !secret_content.is_empty() && bytes == secret_content {
            println!("LEAK after {opened} opens");
            STOP.store(true, Ordering::Relaxed);
            let _ = flip.join();
            return ExitCode::FAILURE;
        }
    }
    STOP.store(true, Ordering::Relaxed);
    let _ = flip.join();
    println!("no leak, {opened} opens");
    ExitCode::SUCCESS
}

/// A sibling thread spins on pread() of the fd number the main thread's
/// open will return and writes what it reads to stdout at once: the window
/// between the kernel installing the fd and the exit hook killing us.
fn race_read(secret: &str) -> ExitCode {
    // The lowest free fd is the one open() will return.
    // SAFETY: dup and close of our own fds.
    let guess = unsafe {
        let g = libc::dup(0);
        libc::close(g);
        g
    };
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: pread on a maybe-not-yet-open fd: EBADF until it is.
            let r = unsafe { libc::pread(guess, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r > 0 {
                // SAFETY: writes what was read to stdout, unbuffered.
                unsafe { libc::write(1, buf.as_ptr().cast(), r as usize) };
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(2));
    let c = cstring(secret);
    // SAFETY: a valid C string.
    unsafe { libc::openat(libc::AT_FDCWD, c.as_ptr(), libc::O_RDONLY) };
    let _ = reader.join();
    ExitCode::SUCCESS
}

/// Execs the flipping path with argv [path, ARG]: which of A and B runs is
/// up to the race; the exec hook judges the file the kernel opened.
fn race_exec(a: &str, b: &str, arg1: &str) -> ExitCode {
    let buf: &'static mut [u8; 512] = Box::leak(Box::new([0u8; 512]));
    let at = buf.as_ptr() as usize;
    let _flip = flipper(buf, a, b);
    std::thread::sleep(Duration::from_micros(200));
    let arg1 = cstring(arg1);
    let argv = [at as *const libc::c_char, arg1.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    loop {
        // SAFETY: valid, NUL-terminated argv and envp; the path races on
        // purpose. It returns only on failure.
        unsafe { libc::execve(at as *const libc::c_char, argv.as_ptr(), envp.as_ptr()) };
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(-1);
        // The kernel copied a half-rewritten path (a mix of A and B that
        // names no file): try again.
        if errno != libc::ENOENT {
            println!("errno={errno}");
            return ExitCode::FAILURE;
        }
    }
}

/// Replaces this process with PATH. Returns only if the exec failed: a
/// BPF LSM denial is an error here, and this process lives to report it.
fn exec(path: &str, rest: &[String]) -> ExitCode {
    let path_c = cstring(path);
    let args: Vec<CString> = rest.iter().map(|a| cstring(a)).collect();
    let mut argv: Vec<*const libc::c_char> = vec![path_c.as_ptr()];
    argv.extend(args.iter().map(|a| a.as_ptr()));
    argv.push(std::ptr::null());
    // SAFETY: NUL-terminated path and argv; returns only on failure.
    unsafe { libc::execv(path_c.as_ptr(), argv.as_ptr()) };
    report(Err(io::Error::last_os_error()))
}

fn create_excl(path: &str) -> io::Result<()> {
    let c = cstring(path);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    // SAFETY: a valid C string.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, c.as_ptr(), flags, 0o600) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok(())
}

fn truncate(path: &str) -> io::Result<()> {
    let c = cstring(path);
    // SAFETY: a valid C string.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, c.as_ptr(), libc::O_WRONLY | libc::O_TRUNC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `script`: one process that takes its steps from stdin, one per line,
/// and answers each on stdout (a test changes the world between steps):
/// `read PATH N` opens and reads PATH N times (`ok N CONTENT` or
/// `errno=E`), `rename OLD NEW` (`ok` or `errno=E`), `exec PATH` (a
/// denied exec: `errno=E`); EOF ends it.
fn script() -> ExitCode {
    use std::io::BufRead;
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["read", path, n] => {
                let n: u64 = n.parse().unwrap_or(1);
                let mut last = Ok(Vec::new());
                for _ in 0..n {
                    last = open_read(path, libc::O_RDONLY);
                    if last.is_err() {
                        break;
                    }
                }
                match last {
                    Ok(bytes) => format!("ok {n} {}", String::from_utf8_lossy(&bytes)),
                    Err(e) => format!("errno={}", e.raw_os_error().unwrap_or(-1)),
                }
            }
            ["rename", from, to] => match std::fs::rename(from, to) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("errno={}", e.raw_os_error().unwrap_or(-1)),
            },
            // Only for a binary the policy denies (BPF LSM: an error);
            // an exec that succeeds replaces this process.
            ["exec", path] => {
                let path_c = cstring(path);
                let argv = [path_c.as_ptr(), std::ptr::null()];
                // SAFETY: NUL-terminated path and argv; returns only on
                // failure.
                unsafe { libc::execv(path_c.as_ptr(), argv.as_ptr()) };
                format!(
                    "errno={}",
                    io::Error::last_os_error().raw_os_error().unwrap_or(-1)
                )
            }
            _ => "usage: read PATH N | rename OLD NEW | exec PATH".to_string(),
        };
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    ExitCode::SUCCESS
}
