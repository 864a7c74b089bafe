//! Which socket of the agent sent a query, by its socket cookie: the kernel
//! keeps each redirected socket's original resolver under its cookie
//! (`DNS_ORIG`), and the proxy only sees the socket's address. The
//! kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, one exact lookup by
//! address and port) give the cookie.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
/// `INET_DIAG_NOCOOKIE`: match whatever the cookie.
const NO_COOKIE: u32 = !0;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}
const _: () = assert!(size_of::<Request>() == 16 + 56);

/// Offset of `idiag_cookie` in a reply: the netlink header (16), then
/// `inet_diag_msg`'s family, state, timer, retrans (4) and the socket
/// id up to its cookie (40).
const COOKIE_AT: usize = 16 + 4 + 40;

fn words(addr: IpAddr) -> [u32; 4] {
    let mut out = [0u32; 4];
    match addr {
        IpAddr::V4(a) => out[0] = u32::from_ne_bytes(a.octets()),
        IpAddr::V6(a) => {
            let o = a.octets();
            for (i, w) in out.iter_mut().enumerate() {
                *w = u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
            }
        }
    }
    out
}

/// One exact lookup: the socket with local address `local` talking to
/// `remote`, as the kernel's diag code for `protocol` takes them.
fn lookup(family: u8, protocol: u8, src: SocketAddr, dst: SocketAddr) -> io::Result<Option<u64>> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = Request {
        len: size_of::<Request>() as u32,
        kind: SOCK_DIAG_BY_FAMILY,
        flags: NLM_F_REQUEST,
        seq: 1,
        pid: 0,
        family,
        protocol,
        ext: 0,
        pad: 0,
        states: !0,
        id: SockId {
            sport: src.port().to_be(),
            dport: dst.port().to_be(),
            src: words(src.ip()),
            dst: words(dst.ip()),
            ifindex: 0,
            cookie: [NO_COOKIE, NO_COOKIE],
        },
    };
    // SAFETY: sends the bytes of a plain repr(C) struct.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&raw const req).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 512];
    // SAFETY: receives into a local buffer of the given size.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY || n < COOKIE_AT + 8 {
        return Ok(None);
    }
    let lo = u32::from_ne_bytes([
        buf[COOKIE_AT],
        buf[COOKIE_AT + 1],
        buf[COOKIE_AT + 2],
        buf[COOKIE_AT + 3],
    ]);
    let hi = u32::from_ne_bytes([
        buf[COOKIE_AT + 4],
        buf[COOKIE_AT + 5],
        buf[COOKIE_AT + 6],
        buf[COOKIE_AT + 7],
    ]);
    Ok(Some(u64::from(lo) | u64::from(hi) << 32))
}

/// The cookie of the agent's socket at `peer` that sent to the proxy at
/// `local` (`tcp`: over a connection the proxy accepted). An IPv4 peer may
/// be an IPv6 socket's `::ffff:` address, so both families are tried. The
/// UDP diag lookup takes the remote end as `src` (the kernel's "swapped
/// for historical reasons"), TCP's the local one.
pub fn cookie_of(peer: SocketAddr, local: SocketAddr, tcp: bool) -> Option<u64> {
    let protocol = if tcp {
        libc::IPPROTO_TCP
    } else {
        libc::IPPROTO_UDP
    } as u8;
    let (src, dst) = if tcp { (peer, local) } else { (local, peer) };
    let mapped = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    let tries: &[(u8, SocketAddr, SocketAddr)] = if peer.is_ipv4() {
        &[
            (libc::AF_INET as u8, src, dst),
            (libc::AF_INET6 as u8, mapped(src), mapped(dst)),
        ]
    } else {
        &[(libc::AF_INET6 as u8, src, dst)]
    };
    for &(family, s, d) in tries {
        match lookup(family, protocol, s, d) {
            Ok(Some(c)) => return Some(c),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "sock_diag lookup"),
        }
    }
    None
}
