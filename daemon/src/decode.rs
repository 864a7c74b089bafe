//! Decoding ring buffer records into typed kernel events (pure).
//!
//! The record layouts are the `#[repr(C)]` types in `warden_common`; every
//! record starts with an `EventHeader` whose `kind` says which type follows.
//!
//! (Over 600 lines because of its unit tests, about 280 of them.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use warden_common::{
    access, path_flags, sock_class, Decision, EscapeEvent, EventHeader, EventKind, ExecEvent,
    HoldKey, Method, NameEvent, NetEvent, OpenEvent, ShadowExecEvent, ShadowNetEvent,
    ShadowOpenEvent, SocketEvent,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {len} bytes is shorter than the {need}-byte {what}")]
    Short {
        len: usize,
        need: usize,
        what: &'static str,
    },
    #[error("ring buffer record has unknown event kind {0}")]
    UnknownKind(u32),
    #[error("ring buffer record has unknown {field} {value}")]
    UnknownValue { field: &'static str, value: u32 },
}

/// A decision the kernel made, with the fields common to every action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEvent {
    pub kind: EventKind,
    pub decision: Decision,
    pub method: Method,
    pub rule_idx: u32,
    pub agent_id: u32,
    pub policy_gen: u32,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub boot_ns: u64,
    pub comm: String,
    pub action: Action,
    /// A shadow record (`Method::Shadow`): the enforced policy's decision
    /// and rule for the action; `decision` and `rule_idx` are then the
    /// candidate's.
    pub enforced: Option<(Decision, u32)>,
}

/// What the agent tried to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Net {
        addr: IpAddr,
        port: u16,
        proto: u8,
    },
    /// An exec, decided on the file the kernel executes.
    Exec {
        /// The executed file's path as the kernel resolved it (for a `#!`
        /// script, the interpreter's).
        path: String,
        /// The path as the caller passed it (`bprm->filename`).
        filename: String,
        file: FileId,
        /// `path_flags` bits.
        flags: u32,
    },
    /// A file open, decided on the file the kernel opened.
    Open {
        path: String,
        file: FileId,
        /// `access` bits the open requested.
        access: u32,
        syscall: u32,
        /// The syscall came through the ia32 table.
        compat: bool,
        /// The rule that decided each requested access.
        read_rule: u32,
        write_rule: u32,
        flags: u32,
    },
    /// Creation of a raw IP socket (`sock_class`).
    Socket {
        family: u32,
        sock_type: u32,
        protocol: u32,
        class: u32,
    },
    /// A rename or link that succeeded, both names decided as writes
    /// (`EventKind` says which); the names as rebuilt from the syscall's
    /// arguments (see `NameEvent`).
    Name {
        old_path: String,
        new_path: String,
        syscall: u32,
        old_rule: u32,
        new_rule: u32,
        flags: u32,
        /// `name_hash` of the old and new path's bytes as received (the
        /// key of a held operation on names, `HoldKey::name`).
        hashes: [u64; 2],
    },
    /// A process of the agent that appeared in a cgroup outside the
    /// agent's subtree (see `EscapeEvent`).
    Escape {
        /// The escaped process (thread group id).
        pid: u32,
        from_cgroup: u64,
        to_cgroup: u64,
        /// `escape_how`.
        how: u32,
        /// `escape_killed` bits.
        killed: u32,
    },
}

/// A file's identity: device (as `stat()` encodes `st_dev`) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// From the kernel's `sb->s_dev` (`major << 20 | minor`).
    pub fn from_kernel(kdev: u32, ino: u64) -> Self {
        let major = kdev >> 20;
        let minor = kdev & 0xf_ffff;
        Self {
            dev: libc::makedev(major, minor),
            ino,
        }
    }
}

impl FileId {
    /// Back to the kernel's (`sb->s_dev`, inode), as hooks key holds.
    pub fn to_kernel(self) -> (u32, u64) {
        let major = libc::major(self.dev);
        let minor = libc::minor(self.dev);
        ((major << 20) | (minor & 0xf_ffff), self.ino)
    }
}

impl std::fmt::Display for FileId {
    /// `dev:ino`, as `ProcessFacts::binary` writes an executable's identity.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

/// Names of `path_flags` bits, for evidence.
pub fn path_flag_names(flags: u32) -> Vec<&'static str> {
    [
        (path_flags::TRUNCATED, "truncated"),
        (path_flags::INCOMPLETE, "incomplete"),
        (path_flags::READ_ERROR, "read_error"),
        (path_flags::CROSSED_MOUNT, "crossed_mount"),
        (path_flags::KILL_FAILED, "kill_failed"),
        (path_flags::SCRATCH_RACE, "scratch_race"),
        (path_flags::NO_OFFSETS, "no_offsets"),
        (path_flags::DETACHED, "detached_mount"),
        (path_flags::ANONYMOUS, "anonymous"),
        (path_flags::NOT_NORMALISED, "not_normalised"),
        (path_flags::TOO_MANY_MOUNTS, "too_many_mounts"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// `access` bits as evidence names them: "read", "write" or "read,write".
pub fn access_name(bits: u32) -> String {
    let mut names = Vec::new();
    if bits & access::READ != 0 {
        names.push("read");
    }
    if bits & access::WRITE != 0 {
        names.push("write");
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// The action name of an operation on one name (`EventKind::PathOp`), by
/// its x86-64 syscall number.
pub fn path_op_name(syscall: u32) -> &'static str {
    use warden_common::syscalls as nr;
    match syscall & !(nr::NAME_HOOK_LSM | nr::NAME_HOOK_FMODRET) {
        nr::UNLINK | nr::UNLINKAT => "unlink",
        nr::MKDIR | nr::MKDIRAT => "mkdir",
        nr::RMDIR => "rmdir",
        nr::SYMLINK | nr::SYMLINKAT => "symlink",
        nr::MKNOD | nr::MKNODAT => "mknod",
        nr::CHMOD | nr::FCHMODAT | nr::FCHMODAT2 => "chmod",
        nr::CHOWN | nr::LCHOWN | nr::FCHOWNAT => "chown",
        nr::TRUNCATE => "truncate",
        nr::SETXATTR | nr::LSETXATTR => "setxattr",
        nr::REMOVEXATTR | nr::LREMOVEXATTR => "removexattr",
        nr::UTIME | nr::UTIMES | nr::FUTIMESAT | nr::UTIMENSAT => "utime",
        nr::BIND => "bind",
        // A regular file created at `path_mknod` (an open with O_CREAT).
        nr::CREAT => "create",
        _ => "path-op",
    }
}

/// The x86-64 number of a name event's syscall: an ia32 one
/// (`path_flags::IA32`, made with `int 0x80`) is mapped to the 64-bit call
/// it makes.
pub fn native_syscall(syscall: u32, flags: u32) -> u32 {
    if flags & path_flags::IA32 != 0 {
        warden_common::syscalls::ia32_native(syscall)
    } else {
        syscall
    }
}

/// The hook that decided an operation on names before it happened
/// (`NameEvent::syscall` with `NAME_HOOK_LSM` or `NAME_HOOK_FMODRET`), e.g.
/// `lsm/path_rename`, `fmod_ret/security_path_unlink`; `None` for one
/// decided at `sys_exit` (the syscall's number is recorded then).
pub fn name_hook(syscall: u32) -> Option<String> {
    use warden_common::syscalls as nr;
    let prefix = if syscall & nr::NAME_HOOK_LSM != 0 {
        "lsm/"
    } else if syscall & nr::NAME_HOOK_FMODRET != 0 {
        "fmod_ret/security_"
    } else {
        return None;
    };
    // The inode hooks (no mount; `lsm_names::decide_inode`).
    let inode = match syscall & !(nr::NAME_HOOK_LSM | nr::NAME_HOOK_FMODRET) {
        nr::SETXATTR => Some("setxattr"),
        nr::REMOVEXATTR => Some("removexattr"),
        nr::LSETXATTR => Some("set_acl"),
        nr::LREMOVEXATTR => Some("remove_acl"),
        nr::UTIMENSAT => Some("setattr"),
        _ => None,
    };
    if let Some(op) = inode {
        return Some(format!("{prefix}inode_{op}"));
    }
    let op = match syscall & !(nr::NAME_HOOK_LSM | nr::NAME_HOOK_FMODRET) {
        nr::RENAME => "rename",
        nr::LINK => "link",
        // The bind of a unix socket to a path, a regular file's creation:
        // the kernel's mknod of the new name.
        nr::BIND | nr::CREAT => "mknod",
        other => path_op_name(other),
    };
    Some(format!("{prefix}path_{op}"))
}

/// `name_hash` of a NUL-terminated (or full) path field, as the hook
/// hashes the path it recorded.
fn path_hash(bytes: &[u8; warden_common::EVENT_PATH_BYTES]) -> u64 {
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    warden_common::name_hash(bytes, len as u32)
}

/// A NUL-terminated (or full) byte field as text. Paths are bytes on Linux;
/// evidence is UTF-8, so invalid sequences become U+FFFD.
fn c_text(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

impl KernelEvent {
    /// The action's name in evidence ("connect4", "sendmsg6", ...).
    pub fn action_name(&self) -> &'static str {
        match self.kind {
            EventKind::Connect4 => "connect4",
            EventKind::Connect6 => "connect6",
            EventKind::Sendmsg4 => "sendmsg4",
            EventKind::Sendmsg6 => "sendmsg6",
            EventKind::Exec => "exec",
            EventKind::Open => "open",
            EventKind::Socket => "socket",
            EventKind::Rename => "rename",
            EventKind::Link => "link",
            EventKind::Escape => "leave-agent",
            EventKind::PathOp => match &self.action {
                Action::Name { syscall, flags, .. } => {
                    path_op_name(native_syscall(*syscall, *flags))
                }
                _ => "path-op",
            },
        }
    }

    /// The kernel's key for this exact action (thread and destination), as
    /// the hook builds it for holds and grants.
    pub fn hold_key(&self) -> HoldKey {
        let (addr, port, proto) = match &self.action {
            Action::Net { addr, port, proto } => (addr, port, proto),
            // Never held (a socket rule is allow or deny): an empty key.
            Action::Socket { .. } => {
                return HoldKey::exec(self.cgroup_id, self.tid, 0, 0);
            }
            // Held execs are bound to the binary.
            Action::Exec { file, .. } => {
                let (dev, ino) = file.to_kernel();
                return HoldKey::exec(self.cgroup_id, self.tid, dev, ino);
            }
            // Held opens: to the file and the access.
            Action::Open { file, access, .. } => {
                let (dev, ino) = file.to_kernel();
                return HoldKey::file(self.cgroup_id, self.tid, dev, ino, *access);
            }
            // Held operations on names (the `path_*` hooks): to the
            // operation and both paths; the new one 0 for one name.
            Action::Name {
                syscall, hashes, ..
            } => {
                use warden_common::syscalls as nr;
                let op = syscall & !(nr::NAME_HOOK_LSM | nr::NAME_HOOK_FMODRET);
                let new = if matches!(self.kind, EventKind::Rename | EventKind::Link) {
                    hashes[1]
                } else {
                    0
                };
                return HoldKey::name(self.cgroup_id, self.tid, op, hashes[0], new);
            }
            // Never held: a key that no grant is ever written for.
            Action::Escape { .. } => return HoldKey::file(self.cgroup_id, self.tid, 0, 0, 0),
        };
        let (family, bytes) = match addr {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                (2, b)
            }
            IpAddr::V6(a) => (10, a.octets()),
        };
        HoldKey {
            cgroup_id: self.cgroup_id,
            tid: self.tid,
            family,
            port: *port,
            proto: *proto,
            _pad: [0; 7],
            addr: bytes,
        }
    }

    /// The action's target in evidence ("127.0.0.1:8080/tcp", "[::1]:53/udp").
    pub fn target(&self) -> String {
        match &self.action {
            Action::Net { addr, port, proto } => {
                let proto = match *proto {
                    6 => "tcp".to_string(),
                    17 => "udp".to_string(),
                    p => format!("proto{p}"),
                };
                match addr {
                    IpAddr::V4(a) => format!("{a}:{port}/{proto}"),
                    IpAddr::V6(a) => format!("[{a}]:{port}/{proto}"),
                }
            }
            Action::Exec { path, .. } | Action::Open { path, .. } => path.clone(),
            Action::Socket {
                family,
                sock_type,
                protocol,
                class,
            } => socket_target(*class, *family, *sock_type, *protocol),
            // The name the action created (the old one is in the details).
            // (An operation on one name has only the old one.)
            Action::Name {
                old_path, new_path, ..
            } if new_path.is_empty() => old_path.clone(),
            Action::Name { new_path, .. } => new_path.clone(),
            // The process that left, and where it is now.
            Action::Escape { pid, to_cgroup, .. } => format!("pid {pid} -> cgroup {to_cgroup}"),
        }
    }
}

/// A socket creation's target in evidence: the class, then the socket(2)
/// arguments by name ("raw inet raw protocol=255").
pub fn socket_target(class: u32, family: u32, sock_type: u32, protocol: u32) -> String {
    let class = match class {
        sock_class::RAW => "raw".to_string(),
        sock_class::PACKET => "packet".to_string(),
        c => format!("class{c}"),
    };
    let family = match family {
        2 => "inet".to_string(),
        10 => "inet6".to_string(),
        17 => "packet".to_string(),
        f => format!("family{f}"),
    };
    let ty = match sock_type {
        1 => "stream".to_string(),
        2 => "dgram".to_string(),
        3 => "raw".to_string(),
        10 => "packet".to_string(),
        t => format!("type{t}"),
    };
    format!("{class} {family} {ty} protocol={protocol}")
}

/// Reads a `T` from the start of `bytes` (records are not necessarily
/// aligned for `T` in the ring buffer, so this copies).
fn read<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need,
            what,
        });
    }
    // SAFETY: the length was checked, `T` is one of the plain-data ABI types
    // (integers and byte arrays, any bit pattern valid), and
    // read_unaligned tolerates any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Whether a record not decoded yet may become a refusal entry of one of
/// `agent_ids` (what an agent's `drained` barrier waits for): anything of
/// those agents but a plain allow, and anything too short to tell.
pub fn may_be_refusal_of(bytes: &[u8], agent_ids: &[u32]) -> bool {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(agent), Some(decision), Some(method)) = (
        word(std::mem::offset_of!(EventHeader, agent_id)),
        word(std::mem::offset_of!(EventHeader, decision)),
        word(std::mem::offset_of!(EventHeader, method)),
    ) else {
        return true;
    };
    agent_ids.contains(&agent)
        && !(decision == Decision::Allow as u32 && method == Method::Allow as u32)
}

pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    let header: EventHeader = read(bytes, "event header")?;
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let decision = Decision::from_u32(header.decision).ok_or(DecodeError::UnknownValue {
        field: "decision",
        value: header.decision,
    })?;
    let method = Method::from_u32(header.method).ok_or(DecodeError::UnknownValue {
        field: "method",
        value: header.method,
    })?;
    let action = match kind {
        EventKind::Connect4 | EventKind::Connect6 | EventKind::Sendmsg4 | EventKind::Sendmsg6 => {
            let ev: NetEvent = read(bytes, "network event")?;
            let addr = if ev.family == 2 {
                IpAddr::V4(Ipv4Addr::new(
                    ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
                ))
            } else {
                IpAddr::V6(Ipv6Addr::from(ev.addr))
            };
            Action::Net {
                addr,
                port: ev.port,
                proto: ev.proto,
            }
        }
        EventKind::Exec => {
            let ev: ExecEvent = read(bytes, "exec event")?;
            Action::Exec {
                path: c_text(&ev.path),
                filename: c_text(&ev.filename),
                file: FileId::from_kernel(ev.dev, ev.ino),
                flags: ev.flags,
            }
        }
        EventKind::Open => {
            let ev: OpenEvent = read(bytes, "open event")?;
            Action::Open {
                path: c_text(&ev.path),
                file: FileId::from_kernel(ev.dev, ev.ino),
                access: ev.access,
                syscall: ev.syscall,
                compat: ev.syscall_compat != 0,
                read_rule: ev.read_rule,
                write_rule: ev.write_rule,
                flags: ev.flags,
            }
        }
        EventKind::Socket => {
            let ev: SocketEvent = read(bytes, "socket event")?;
            Action::Socket {
                family: ev.family,
                sock_type: ev.sock_type,
                protocol: ev.protocol,
                class: ev.class,
            }
        }
        EventKind::Rename | EventKind::Link | EventKind::PathOp => {
            let ev: NameEvent = read(bytes, "name event")?;
            Action::Name {
                old_path: c_text(&ev.old_path),
                new_path: c_text(&ev.new_path),
                syscall: ev.syscall,
                old_rule: ev.old_rule,
                new_rule: ev.new_rule,
                flags: ev.flags,
                hashes: [path_hash(&ev.old_path), path_hash(&ev.new_path)],
            }
        }
        EventKind::Escape => {
            let ev: EscapeEvent = read(bytes, "escape event")?;
            Action::Escape {
                pid: ev.pid,
                from_cgroup: ev.from_cgroup,
                to_cgroup: ev.to_cgroup,
                how: ev.how,
                killed: ev.killed,
            }
        }
    };
    let enforced = if method == Method::Shadow {
        // The enforced decision and rule follow the kind's own body.
        let (decision, rule) = match kind {
            EventKind::Exec => {
                let ev: ShadowExecEvent = read(bytes, "shadow exec event")?;
                (ev.enforced_decision, ev.enforced_rule)
            }
            EventKind::Open => {
                let ev: ShadowOpenEvent = read(bytes, "shadow open event")?;
                (ev.enforced_decision, ev.enforced_rule)
            }
            _ => {
                let ev: ShadowNetEvent = read(bytes, "shadow event")?;
                (ev.enforced_decision, ev.enforced_rule)
            }
        };
        let d = Decision::from_u32(decision).ok_or(DecodeError::UnknownValue {
            field: "enforced decision",
            value: decision,
        })?;
        Some((d, rule))
    } else {
        None
    };
    let comm_len = header
        .comm
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(header.comm.len());
    Ok(KernelEvent {
        kind,
        decision,
        method,
        rule_idx: header.rule_idx,
        agent_id: header.agent_id,
        policy_gen: header.policy_gen,
        pid: header.pid,
        tid: header.tid,
        uid: header.uid,
        gid: header.gid,
        cgroup_id: header.cgroup_id,
        boot_ns: header.boot_ns,
        comm: String::from_utf8_lossy(&header.comm[..comm_len]).into_owned(),
        action,
        enforced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: EventKind, family: u16, addr: [u8; 16]) -> NetEvent {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        NetEvent {
            header: EventHeader {
                kind: kind as u32,
                decision: Decision::Deny as u32,
                method: Method::CgroupDeny as u32,
                rule_idx: 3,
                agent_id: 7,
                policy_gen: 42,
                pid: 1234,
                tid: 1235,
                uid: 1000,
                gid: 1000,
                cgroup_id: 99,
                boot_ns: 5,
                comm,
            },
            family,
            port: 8080,
            proto: 6,
            _pad: [0; 3],
            addr,
        }
    }

    fn bytes_of(ev: &NetEvent) -> Vec<u8> {
        // SAFETY: NetEvent is repr(C) plain data without padding.
        unsafe {
            std::slice::from_raw_parts((ev as *const NetEvent).cast::<u8>(), size_of::<NetEvent>())
        }
        .to_vec()
    }

    #[test]
    fn socket_events_decode_with_a_readable_target() {
        let header = EventHeader {
            kind: EventKind::Socket as u32,
            ..sample(EventKind::Connect4, 2, [0; 16]).header
        };
        let ev = SocketEvent {
            header,
            family: 2,
            sock_type: 3,
            protocol: 255,
            class: sock_class::RAW,
        };
        // SAFETY: SocketEvent is repr(C) plain data without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const SocketEvent).cast::<u8>(),
                size_of::<SocketEvent>(),
            )
        };
        let got = decode(bytes).unwrap();
        assert_eq!(got.kind, EventKind::Socket);
        assert_eq!(got.action_name(), "socket");
        assert_eq!(got.target(), "raw inet raw protocol=255");
        assert_eq!(
            decode(&bytes[..size_of::<SocketEvent>() - 1]),
            Err(DecodeError::Short {
                len: size_of::<SocketEvent>() - 1,
                need: size_of::<SocketEvent>(),
                what: "socket event"
            })
        );
        assert_eq!(socket_target(1, 10, 3, 58), "raw inet6 raw protocol=58");
        assert_eq!(
            socket_target(sock_class::PACKET, 17, 10, 768),
            "packet packet packet protocol=768"
        );
    }

    #[test]
    fn round_trip_ipv4_connect() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let ev = decode(&bytes_of(&sample(EventKind::Connect4, 2, addr))).unwrap();
        assert_eq!(ev.kind, EventKind::Connect4);
        assert_eq!(ev.decision, Decision::Deny);
        assert_eq!(ev.method, Method::CgroupDeny);
        assert_eq!((ev.rule_idx, ev.agent_id, ev.policy_gen), (3, 7, 42));
        assert_eq!(
            (ev.pid, ev.tid, ev.uid, ev.cgroup_id),
            (1234, 1235, 1000, 99)
        );
        assert_eq!(ev.comm, "curl");
        assert_eq!(ev.target(), "127.0.0.1:8080/tcp");
        assert_eq!(ev.action_name(), "connect4");
    }

    #[test]
    fn round_trip_shadow_record() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut net = sample(EventKind::Connect4, 2, addr);
        net.header.method = Method::Shadow as u32;
        net.header.decision = Decision::Deny as u32;
        let ev = ShadowNetEvent {
            net,
            enforced_decision: Decision::Allow as u32,
            enforced_rule: 5,
        };
        // SAFETY: ShadowNetEvent is repr(C) plain data without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const ShadowNetEvent).cast::<u8>(),
                size_of::<ShadowNetEvent>(),
            )
        };
        let got = decode(bytes).unwrap();
        assert_eq!((got.method, got.decision), (Method::Shadow, Decision::Deny));
        assert_eq!(got.enforced, Some((Decision::Allow, 5)));
        assert_eq!(got.target(), "127.0.0.1:8080/tcp");
        // A plain network record is not a shadow one; a shadow record cut
        // short is refused.
        assert_eq!(decode(&bytes_of(&net_plain())).unwrap().enforced, None);
        assert!(matches!(
            decode(&bytes[..size_of::<NetEvent>()]),
            Err(DecodeError::Short {
                what: "shadow event",
                ..
            })
        ));
    }

    fn net_plain() -> NetEvent {
        sample(EventKind::Connect4, 2, [0; 16])
    }

    #[test]
    fn round_trip_ipv6_sendmsg() {
        let addr = Ipv6Addr::LOCALHOST.octets();
        let mut raw = sample(EventKind::Sendmsg6, 10, addr);
        raw.proto = 17;
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.target(), "[::1]:8080/udp");
        assert_eq!(ev.action_name(), "sendmsg6");
    }

    fn header(kind: EventKind, decision: Decision, method: Method) -> EventHeader {
        let mut h = sample(EventKind::Connect4, 2, [0; 16]).header;
        h.kind = kind as u32;
        h.decision = decision as u32;
        h.method = method as u32;
        h
    }

    fn raw<T>(ev: &T) -> Vec<u8> {
        // SAFETY: the ABI types are repr(C) plain data without padding.
        unsafe { std::slice::from_raw_parts((ev as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn an_undecoded_record_may_be_a_refusal_unless_a_plain_allow_or_another_agents() {
        let mut h = header(EventKind::Open, Decision::Allow, Method::Allow);
        h.agent_id = 4;
        assert!(!may_be_refusal_of(&raw(&h), &[4]));
        assert!(!may_be_refusal_of(&raw(&h), &[5]));
        for (decision, method) in [
            (Decision::Deny, Method::Kill),
            (Decision::Deny, Method::CgroupDeny),
            (Decision::Hold, Method::Held),
            (Decision::Allow, Method::Approved),
        ] {
            let mut h = header(EventKind::Open, decision, method);
            h.agent_id = 4;
            assert!(may_be_refusal_of(&raw(&h), &[4]), "{decision:?} {method:?}");
            assert!(!may_be_refusal_of(&raw(&h), &[5, 6]));
        }
        assert!(may_be_refusal_of(&raw(&h)[..12], &[5]), "too short to tell");
    }

    fn path_field(s: &str) -> [u8; warden_common::EVENT_PATH_BYTES] {
        let mut out = [0u8; warden_common::EVENT_PATH_BYTES];
        out[..s.len()].copy_from_slice(s.as_bytes());
        out
    }

    /// A held exec's key, rebuilt from its event, is the one the LSM hook
    /// built in the kernel: the grant the daemon writes must match it.
    #[test]
    fn held_exec_key_is_the_kernels() {
        let kdev = (259 << 20) | 3;
        let ev = ExecEvent {
            header: header(EventKind::Exec, Decision::Hold, Method::Held),
            dev: kdev,
            flags: 0,
            ino: 0x1_0000_0042,
            path_len: 9,
            _pad: 0,
            path: path_field("/bin/true"),
            filename: path_field("true"),
        };
        let got = decode(&raw(&ev)).unwrap();
        assert_eq!(got.method, Method::Held);
        let key = got.hold_key();
        assert_eq!(
            key,
            HoldKey::exec(ev.header.cgroup_id, ev.header.tid, kdev, 0x1_0000_0042)
        );
        assert_eq!(key.family, warden_common::HOLD_FAMILY_EXEC);
        assert_eq!(
            decode(&raw(&ExecEvent {
                header: header(EventKind::Exec, Decision::Deny, Method::LsmDeny),
                ..ev
            }))
            .unwrap()
            .method,
            Method::LsmDeny
        );
        assert_eq!(
            decode(&raw(&ExecEvent {
                header: header(EventKind::Exec, Decision::Deny, Method::FmodRetDeny),
                ..ev
            }))
            .unwrap()
            .method,
            Method::FmodRetDeny
        );
    }

    #[test]
    fn round_trip_exec_kill() {
        let ev = ExecEvent {
            header: header(EventKind::Exec, Decision::Deny, Method::Kill),
            // /dev/vda1: major 254, minor 1, in the kernel's encoding.
            dev: (254 << 20) | 1,
            flags: path_flags::CROSSED_MOUNT,
            ino: 4242,
            path_len: 14,
            _pad: 0,
            path: path_field("/usr/bin/touch"),
            filename: path_field("touch"),
        };
        let got = decode(&raw(&ev)).unwrap();
        assert_eq!(got.kind, EventKind::Exec);
        assert_eq!(got.method, Method::Kill);
        assert_eq!(got.action_name(), "exec");
        assert_eq!(got.target(), "/usr/bin/touch");
        let Action::Exec {
            filename,
            file,
            flags,
            ..
        } = &got.action
        else {
            panic!("{got:?}")
        };
        assert_eq!(filename, "touch");
        assert_eq!(file.to_string(), format!("{}:4242", libc::makedev(254, 1)));
        assert_eq!(path_flag_names(*flags), vec!["crossed_mount"]);
        assert!(matches!(
            decode(&raw(&ev)[..300]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn round_trip_open_allow() {
        let ev = OpenEvent {
            header: header(EventKind::Open, Decision::Allow, Method::Allow),
            dev: 7,
            flags: 0,
            ino: 9,
            path_len: 10,
            access: access::READ | access::WRITE,
            syscall: 257,
            syscall_compat: 0,
            read_rule: 2,
            write_rule: 3,
            path: path_field("/srv/a.txt"),
        };
        let got = decode(&raw(&ev)).unwrap();
        assert_eq!(got.action_name(), "open");
        assert_eq!(got.target(), "/srv/a.txt");
        let Action::Open {
            access: bits,
            read_rule,
            write_rule,
            compat,
            ..
        } = got.action
        else {
            panic!()
        };
        assert_eq!(access_name(bits), "read,write");
        assert_eq!((read_rule, write_rule, compat), (2, 3, false));
        assert_eq!(access_name(0), "none");
    }

    #[test]
    fn round_trip_shadow_exec_and_open_records() {
        let exec = ShadowExecEvent {
            exec: ExecEvent {
                header: header(EventKind::Exec, Decision::Hold, Method::Shadow),
                dev: 7,
                flags: 0,
                ino: 9,
                path_len: 13,
                _pad: 0,
                path: path_field("/usr/bin/true"),
                filename: path_field("true"),
            },
            enforced_decision: Decision::Allow as u32,
            enforced_rule: 4,
        };
        let got = decode(&raw(&exec)).unwrap();
        assert_eq!((got.method, got.decision), (Method::Shadow, Decision::Hold));
        assert_eq!(got.enforced, Some((Decision::Allow, 4)));
        assert_eq!(got.target(), "/usr/bin/true");
        let open = ShadowOpenEvent {
            open: OpenEvent {
                header: header(EventKind::Open, Decision::Allow, Method::Shadow),
                dev: 7,
                flags: 0,
                ino: 9,
                path_len: 10,
                access: access::READ,
                syscall: 257,
                syscall_compat: 0,
                read_rule: 1,
                write_rule: u32::MAX,
                path: path_field("/srv/b.txt"),
            },
            enforced_decision: Decision::Deny as u32,
            enforced_rule: u32::MAX,
        };
        let got = decode(&raw(&open)).unwrap();
        assert_eq!(got.enforced, Some((Decision::Deny, u32::MAX)));
        assert_eq!(got.target(), "/srv/b.txt");
        // The enforced pair is required: a shadow open without it is short,
        // and a plain open (not `Method::Shadow`) has none.
        assert!(matches!(
            decode(&raw(&open)[..size_of::<OpenEvent>()]),
            Err(DecodeError::Short {
                what: "shadow open event",
                ..
            })
        ));
        let mut plain = open.open;
        plain.header.method = Method::Allow as u32;
        assert_eq!(decode(&raw(&plain)).unwrap().enforced, None);
    }

    #[test]
    fn round_trip_rename_and_link_kill() {
        for (kind, name) in [(EventKind::Rename, "rename"), (EventKind::Link, "link")] {
            let ev = NameEvent {
                header: header(kind, Decision::Deny, Method::Kill),
                syscall: 316,
                flags: path_flags::NOT_NORMALISED,
                old_rule: 4,
                new_rule: warden_common::rule::DEFAULT,
                old_len: 10,
                new_len: 13,
                old_path: path_field("/work/evil"),
                new_path: path_field("/srv/bin/tool"),
            };
            let got = decode(&raw(&ev)).unwrap();
            assert_eq!(got.action_name(), name);
            assert_eq!(got.target(), "/srv/bin/tool");
            assert_eq!(
                got.action,
                Action::Name {
                    old_path: "/work/evil".into(),
                    new_path: "/srv/bin/tool".into(),
                    syscall: 316,
                    old_rule: 4,
                    new_rule: warden_common::rule::DEFAULT,
                    flags: path_flags::NOT_NORMALISED,
                    hashes: [
                        warden_common::name_hash(&ev.old_path, 10),
                        warden_common::name_hash(&ev.new_path, 13),
                    ],
                }
            );
        }
        assert_eq!(
            path_flag_names(
                path_flags::DETACHED | path_flags::ANONYMOUS | path_flags::NOT_NORMALISED
            ),
            ["detached_mount", "anonymous", "not_normalised"]
        );
    }

    #[test]
    fn round_trip_path_op_and_escape() {
        let ev = NameEvent {
            header: header(EventKind::PathOp, Decision::Deny, Method::Kill),
            syscall: warden_common::syscalls::UNLINKAT,
            flags: 0,
            old_rule: warden_common::rule::DEFAULT,
            new_rule: warden_common::rule::DEFAULT,
            old_len: 12,
            new_len: 0,
            old_path: path_field("/srv/victim"),
            new_path: path_field(""),
        };
        let got = decode(&raw(&ev)).unwrap();
        assert_eq!(got.action_name(), "unlink");
        assert_eq!(got.target(), "/srv/victim");
        for (nr, name) in [
            (warden_common::syscalls::FCHMODAT2, "chmod"),
            (warden_common::syscalls::BIND, "bind"),
            (warden_common::syscalls::UTIMENSAT, "utime"),
            (9999, "path-op"),
        ] {
            assert_eq!(path_op_name(nr), name);
        }
        // Decided at a path_* hook: the operation and the hook.
        use warden_common::syscalls as nr;
        for (syscall, name, hook) in [
            (nr::NAME_HOOK_LSM | nr::UNLINK, "unlink", "lsm/path_unlink"),
            (nr::NAME_HOOK_LSM | nr::BIND, "bind", "lsm/path_mknod"),
            (nr::NAME_HOOK_LSM | nr::CREAT, "create", "lsm/path_mknod"),
            (
                nr::NAME_HOOK_FMODRET | nr::CHMOD,
                "chmod",
                "fmod_ret/security_path_chmod",
            ),
            (
                nr::NAME_HOOK_FMODRET | nr::RENAME,
                "path-op",
                "fmod_ret/security_path_rename",
            ),
            (
                nr::NAME_HOOK_LSM | nr::SETXATTR,
                "setxattr",
                "lsm/inode_setxattr",
            ),
            (
                nr::NAME_HOOK_FMODRET | nr::LSETXATTR,
                "setxattr",
                "fmod_ret/security_inode_set_acl",
            ),
            (
                nr::NAME_HOOK_LSM | nr::REMOVEXATTR,
                "removexattr",
                "lsm/inode_removexattr",
            ),
            (
                nr::NAME_HOOK_LSM | nr::UTIMENSAT,
                "utime",
                "lsm/inode_setattr",
            ),
        ] {
            assert_eq!(path_op_name(syscall), name);
            assert_eq!(name_hook(syscall).as_deref(), Some(hook));
        }
        assert_eq!(name_hook(nr::UNLINKAT), None);

        // A held rename's key: the operation and both paths, as the hook
        // builds it from the bytes it recorded.
        let held = |to: &str| NameEvent {
            header: header(EventKind::Rename, Decision::Hold, Method::Held),
            syscall: nr::NAME_HOOK_LSM | nr::RENAME,
            old_path: path_field("/w/a"),
            new_path: path_field(to),
            ..ev
        };
        let key = decode(&raw(&held("/held/a"))).unwrap().hold_key();
        let (mut old, mut new) = (
            [0u8; warden_common::EVENT_PATH_BYTES],
            [0u8; warden_common::EVENT_PATH_BYTES],
        );
        old[..4].copy_from_slice(b"/w/a");
        new[..7].copy_from_slice(b"/held/a");
        let want = HoldKey::name(
            ev.header.cgroup_id,
            ev.header.tid,
            nr::RENAME,
            warden_common::name_hash(&old, 4),
            warden_common::name_hash(&new, 7),
        );
        assert_eq!(key, want);
        assert_ne!(key, decode(&raw(&held("/held/b"))).unwrap().hold_key());

        // An ia32 syscall's event carries its ia32 number: named by the
        // call it makes, not by the 64-bit call of that number (10 is
        // mprotect there).
        let ev = NameEvent {
            syscall: warden_common::syscalls::IA32_UNLINK,
            flags: path_flags::IA32,
            ..ev
        };
        assert_eq!(decode(&raw(&ev)).unwrap().action_name(), "unlink");
        for (nr, name) in [
            (warden_common::syscalls::IA32_MKDIR, "mkdir"),
            (warden_common::syscalls::IA32_CHOWN16, "chown"),
            (warden_common::syscalls::IA32_TRUNCATE64, "truncate"),
            (warden_common::syscalls::IA32_SOCKETCALL, "bind"),
            (warden_common::syscalls::IA32_FCHMODAT2, "chmod"),
            (warden_common::syscalls::IA32_UTIMENSAT_TIME64, "utime"),
            (14, "mknod"),
            (5, "path-op"), // open: not a name operation
        ] {
            assert_eq!(
                path_op_name(native_syscall(nr, path_flags::IA32)),
                name,
                "{nr}"
            );
        }
        assert_eq!(path_flag_names(path_flags::IA32), Vec::<&str>::new());

        let ev = warden_common::EscapeEvent {
            header: header(EventKind::Escape, Decision::Deny, Method::Kill),
            pid: 4242,
            tid: 4242,
            from_cgroup: 7,
            to_cgroup: 9,
            how: warden_common::escape_how::FORK,
            killed: warden_common::escape_killed::ACTOR,
        };
        let got = decode(&raw(&ev)).unwrap();
        assert_eq!(got.action_name(), "leave-agent");
        assert_eq!(got.target(), "pid 4242 -> cgroup 9");
        assert_eq!(
            got.action,
            Action::Escape {
                pid: 4242,
                from_cgroup: 7,
                to_cgroup: 9,
                how: warden_common::escape_how::FORK,
                killed: warden_common::escape_killed::ACTOR,
            }
        );
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(decode(&[0u8; 10]), Err(DecodeError::Short { .. })));
        let mut raw = bytes_of(&sample(EventKind::Connect4, 2, [0; 16]));
        raw[0] = 200;
        assert_eq!(decode(&raw), Err(DecodeError::UnknownKind(200)));
        let raw = bytes_of(&sample(EventKind::Connect4, 2, [0; 16]));
        assert!(matches!(decode(&raw[..80]), Err(DecodeError::Short { .. })));
    }
}
