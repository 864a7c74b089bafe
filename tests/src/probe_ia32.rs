//! `warden-probe op32 OP PATH [PATH2]`: one operation on a name made
//! through the ia32 syscall table (`int 0x80`) from this 64-bit process
//! (tests/tests/path_ops.rs). The numbers mean other calls in the 64-bit
//! table (10, unlink here, is mprotect there), so a hook that only knows
//! 64-bit numbers misses them. Every argument register carries junk in its
//! high 32 bits, which the kernel ignores: a hook that reads the full
//! register reads another address. Prints `ok` or `errno=N`.
//!
//!   unlink, mkdir, rmdir, symlink (PATH is the new name), mknod, chmod,
//!   chown (chown32), lchown16, truncate, truncate64, setxattr, utime,
//!   bind (bind(2), number 361), socketcall-bind (socketcall(SYS_BIND)),
//!   unlinkat (AT_FDCWD), rename PATH PATH2, link PATH PATH2
//!
//! `warden-probe op32 socket|socketcall-socket FAMILY TYPE PROTO`: a
//! socket made by the ia32 `socket` (359) or `socketcall(SYS_SOCKET)`
//! (tests/tests/packet.rs).

use std::{ffi::c_void, io, process::ExitCode};

/// Junk for the high half of each argument register.
const HIGH: u64 = 0xdead_beef_0000_0000;

/// Runs `args` if it names this module's subcommand.
pub fn run(args: &[String]) -> Option<ExitCode> {
    if args.first().map(String::as_str) != Some("op32") {
        return None;
    }
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let result = if arg(1) == "socket" || arg(1) == "socketcall-socket" {
        let num = |i: usize| arg(i).parse::<u32>().unwrap_or(u32::MAX);
        socket32(&arg(1), [num(2), num(3), num(4)])
    } else {
        op32(&arg(1), &arg(2), &arg(3))
    };
    Some(match result {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("errno={}", e.raw_os_error().unwrap_or(-1));
            ExitCode::FAILURE
        }
    })
}

/// Memory addressable with 32 bits (`MAP_32BIT`), filled from the start.
struct Low {
    base: *mut u8,
    used: usize,
}

impl Low {
    fn new() -> io::Result<Self> {
        // SAFETY: an anonymous private mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Low {
            base: base.cast(),
            used: 0,
        })
    }

    /// Copies `bytes` in (8-aligned) and returns their 32-bit address.
    fn put(&mut self, bytes: &[u8]) -> u32 {
        assert!(self.used + bytes.len() + 8 <= 8192, "low page full");
        // SAFETY: within the mapping (checked above); the mapping is ours.
        let at = unsafe { self.base.add(self.used) };
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len()) };
        self.used = (self.used + bytes.len() + 8) & !7;
        at as u64 as u32
    }

    /// A NUL-terminated copy of `s`.
    fn c(&mut self, s: &str) -> u32 {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(&v)
    }
}

/// `int 0x80` with up to five arguments (`bx, cx, dx, si, di`), each with
/// junk in its high half. Returns the raw result (-errno on failure).
fn int80(nr: u32, a: [u32; 5]) -> i64 {
    let w = |x: u32| HIGH | u64::from(x);
    let ret: i64;
    // SAFETY: an ia32 syscall on memory this process owns; `int 0x80`
    // clobbers r8-r11. LLVM reserves rbx, so the first argument is swapped
    // in and out of it through r12.
    unsafe {
        std::arch::asm!(
            "xchg rbx, r12",
            "int 0x80",
            "xchg rbx, r12",
            inlateout("rax") u64::from(nr) => ret,
            inout("r12") w(a[0]) => _,
            in("rcx") w(a[1]),
            in("rdx") w(a[2]),
            in("rsi") w(a[3]),
            in("rdi") w(a[4]),
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    // The result is a 32-bit int.
    i64::from(ret as i32)
}

fn check(ret: i64) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error((-ret) as i32))
    } else {
        Ok(())
    }
}

const AT_FDCWD: u32 = -100i32 as u32;

/// `socket(family, type, protocol)` as the ia32 `socket` (359) or as
/// `socketcall(SYS_SOCKET, args)` (102); the socket is closed.
fn socket32(op: &str, [family, ty, proto]: [u32; 3]) -> io::Result<()> {
    let mut low = Low::new()?;
    let ret = if op == "socket" {
        int80(359, [family, ty, proto, 0, 0])
    } else {
        let mut words = Vec::new();
        for w in [family, ty, proto] {
            words.extend_from_slice(&w.to_ne_bytes());
        }
        let args = low.put(&words);
        int80(102, [1, args, 0, 0, 0])
    };
    if ret >= 0 {
        // SAFETY: the socket just made.
        unsafe { libc::close(ret as i32) };
    }
    // SAFETY: the mapping made in `Low::new`.
    unsafe { libc::munmap(low.base.cast::<c_void>(), 8192) };
    check(ret)
}

fn op32(op: &str, path: &str, path2: &str) -> io::Result<()> {
    let mut low = Low::new()?;
    let p = low.c(path);
    let ret = match op {
        "unlink" => int80(10, [p, 0, 0, 0, 0]),
        "mkdir" => int80(39, [p, 0o755, 0, 0, 0]),
        "rmdir" => int80(40, [p, 0, 0, 0, 0]),
        "symlink" => {
            let target = low.c("/etc/hostname");
            int80(83, [target, p, 0, 0, 0])
        }
        "mknod" => int80(14, [p, libc::S_IFIFO | 0o644, 0, 0, 0]),
        "chmod" => int80(15, [p, 0o600, 0, 0, 0]),
        "chown" => int80(212, [p, 0, 0, 0, 0]),
        "lchown16" => int80(16, [p, 0, 0, 0, 0]),
        "truncate" => int80(92, [p, 0, 0, 0, 0]),
        // truncate64(path, low half, high half).
        "truncate64" => int80(193, [p, 0, 0, 0, 0]),
        "setxattr" => {
            let (name, value) = (low.c("user.w"), low.put(b"1"));
            int80(226, [p, name, value, 1, 0])
        }
        "utime" => int80(30, [p, 0, 0, 0, 0]),
        "unlinkat" => int80(301, [AT_FDCWD, p, 0, 0, 0]),
        "rename" => int80(38, [p, low.c(path2), 0, 0, 0]),
        "link" => int80(9, [p, low.c(path2), 0, 0, 0]),
        "bind" | "socketcall-bind" => {
            // SAFETY: plain values.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            check(fd.into())?;
            let mut addr = [0u8; 110];
            addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
            for (d, s) in addr[2..].iter_mut().zip(path.bytes().take(107)) {
                *d = s;
            }
            let a = low.put(&addr);
            let len = addr.len() as u32;
            let r = if op == "bind" {
                int80(361, [fd as u32, a, len, 0, 0])
            } else {
                let mut words = Vec::new();
                for w in [fd as u32, a, len] {
                    words.extend_from_slice(&w.to_ne_bytes());
                }
                let args = low.put(&words);
                int80(102, [2, args, 0, 0, 0])
            };
            // SAFETY: our socket.
            unsafe { libc::close(fd) };
            r
        }
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    // SAFETY: the mapping made in `Low::new`.
    unsafe { libc::munmap(low.base.cast::<c_void>(), 8192) };
    check(ret)
}
