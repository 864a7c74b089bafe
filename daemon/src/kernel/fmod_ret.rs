//! `fmod_ret` on the kernel's `security_*` functions: the second mechanism
//! for execs and file opens, for kernels that build BPF LSM but do not run
//! it (`bpf` missing from the active LSM list; Ubuntu's, Azure Linux's and
//! Flatcar's kernels) while BPF trampolines work. The verifier allows
//! `BPF_MODIFY_RETURN` on any function named `security_*` since 5.7. The
//! programs (`ebpf/programs/src/fmod_ret.rs`) make the BPF LSM hooks'
//! decisions; a deny fails the syscall with EPERM before it takes effect
//! and a hold stops the thread inside it, as with BPF LSM.
//!
//! aya 0.14 cannot load `BPF_MODIFY_RETURN` programs, so this loads them
//! itself: it parses the same object with aya-obj, points the map
//! references at the maps aya already created (`relocate_maps` with their
//! fds), links the calls, and loads the instructions with `bpf(2)` as
//! `BPF_PROG_TYPE_TRACING`/`BPF_MODIFY_RETURN` on the function's id in
//! vmlinux BTF, then attaches with `BPF_RAW_TRACEPOINT_OPEN` (the tracing
//! link, 5.7+). The programs sit in `fexit/...` sections so that aya's own
//! parse accepts the object; aya never loads them.
//!
//! Like the BPF LSM probe it is all or nothing for the classes asked for.

use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use aya::{maps::Map, Btf, Ebpf};
use aya_obj::{
    btf::BtfKind,
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type},
    Object,
};
use warden_common::names;

/// What the fmod_ret path does, for `warden status` and the daemon_start entry.
pub const EXEC_MECHANISM: &str = "fmod_ret/security_bprm_check (BPF LSM built but not active), deny = execve fails with EPERM before the point of no return (the old program goes on); hold stops the thread inside execve until a human decides";
pub const FILE_MECHANISM: &str = "fmod_ret/security_file_open (BPF LSM built but not active), deny = the open fails with EPERM before a file descriptor exists (no O_CREAT/O_TRUNC side effects on the opened file, nothing to race for); hold stops the thread inside the open until a human decides";

/// A loaded and attached fmod_ret program: the link keeps it attached
/// while open or pinned.
pub struct FmodRetLink {
    pub pin: &'static str,
    pub link: OwnedFd,
}

/// One fmod_ret program: (program name, `security_*` function, pin name).
pub type Wanted = (&'static str, &'static str, &'static str);

/// The programs that decide execs and opens, for the classes asked for.
pub fn exec_file(exec: bool, file: bool) -> Vec<Wanted> {
    let mut wanted = Vec::new();
    if exec {
        wanted.push((
            names::PROG_FMODRET_EXEC,
            names::FMODRET_EXEC_FN,
            "fmodret-exec",
        ));
    }
    if file {
        wanted.push((
            names::PROG_FMODRET_OPEN,
            names::FMODRET_OPEN_FN,
            "fmodret-open",
        ));
    }
    wanted
}

/// What decides operations on names where fmod_ret does (`LsmState::names`).
pub const NAMES_MECHANISM: &str = "fmod_ret/security_path_* (BPF LSM built but not active: rename, link, unlink, mkdir, rmdir, symlink, mknod (also a unix socket's bind), chmod, chown, truncate; security_inode_setxattr, removexattr, set_acl, remove_acl, setattr (times) under every mount of the file's super block in the caller's mount namespace, at most 4 there; other namespaces' mounts skipped, at most 4096 scanned), every name decided as a write of its path before the change, deny = the syscall fails with EPERM; a hold rule holds the thread inside the syscall (path_*; the inode hooks refuse)";

/// The program that decides packet sockets (`security_socket_create`).
pub fn socket() -> Vec<Wanted> {
    vec![(
        names::PROG_FMODRET_SOCKET,
        names::FMODRET_SOCKET_FN,
        "fmodret-socket",
    )]
}

/// The programs that decide operations on names (`security_path_*`).
pub fn names() -> Vec<Wanted> {
    names::NAME_HOOKS
        .iter()
        .chain(&names::INODE_HOOKS)
        .map(|h| (h.fmodret_prog, h.fmodret_fn, h.fmodret_pin))
        .collect()
}

/// The object parsed and relocated against the loaded maps, made by the
/// first `probe` of a load and reused by the others (exec and opens,
/// names, packet sockets), so the object is parsed and relocated (and its
/// BTF loaded) once per daemon start, not once per step.
#[derive(Default)]
pub struct Relocated(Option<(Object, Option<OwnedFd>)>);

/// Loads and attaches the `wanted` fmod_ret programs. On any failure
/// nothing stays attached (the links are dropped) and the reason names the
/// program and the kernel's error (with the verifier's last lines).
/// `relocated` is the object shared by the probes of one load.
pub fn probe(
    bpf: &Ebpf,
    object: &[u8],
    btf: &Btf,
    wanted: &[Wanted],
    relocated: &mut Relocated,
) -> Result<Vec<FmodRetLink>, String> {
    if wanted.is_empty() {
        return Err("neither exec nor file opens asked for".into());
    }
    let (obj, obj_btf) = match &mut relocated.0 {
        Some(shared) => shared,
        None => relocated.0.insert(relocated_object(bpf, object)?),
    };
    let mut links = Vec::new();
    for &(name, function, pin) in wanted {
        let prog = obj
            .programs
            .remove(name)
            .ok_or_else(|| format!("the eBPF object has no fmod_ret program {name}"))?;
        let fun = &obj.functions[&prog.function_key()];
        let target = btf
            .id_by_type_name_kind(function, BtfKind::Func)
            .map_err(|e| format!("find {function} in vmlinux BTF: {e}"))?;
        let info = obj_btf.as_ref().map(|fd| FuncInfo {
            btf: fd,
            bytes: fun.func_info.func_info_bytes(),
            count: fun.func_info.len() as u32,
            rec_size: fun.func_info_rec_size as u32,
        });
        let prog_fd = load(
            name,
            &fun.instructions,
            &prog.license,
            target,
            info.as_ref(),
        )
        .map_err(|e| format!("load fmod_ret/{function} ({name}): {e}"))?;
        let link = attach(&prog_fd).map_err(|e| format!("attach fmod_ret/{function}: {e}"))?;
        tracing::info!(program = name, function, "fmod_ret attached");
        links.push(FmodRetLink { pin, link });
    }
    Ok(links)
}

/// The object with its map references pointing at `bpf`'s maps and its
/// calls linked, as aya does for its own programs, and its BTF loaded into
/// the kernel (sanitized as aya does) when it has one: a program that
/// passes a callback (`bpf_loop`) needs its func_info. Without it the
/// other programs still load.
fn relocated_object(bpf: &Ebpf, object: &[u8]) -> Result<(Object, Option<OwnedFd>), String> {
    let mut obj = Object::parse(object).map_err(|e| format!("parse the eBPF object: {e}"))?;
    let obj_btf = match aya::features().btf() {
        Some(features) => match obj.fixup_and_sanitize_btf(features) {
            Ok(Some(b)) => match load_btf(&b.to_bytes()) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "load the eBPF object's BTF for fmod_ret");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "sanitize the eBPF object's BTF for fmod_ret");
                None
            }
        },
        None => None,
    };
    let mut fds = Vec::new();
    for (name, map) in bpf.maps() {
        fds.push((name.to_string(), map_fd(map)));
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    let maps = std::mem::take(&mut obj.maps);
    let by_name = fds
        .iter()
        .filter_map(|(name, fd)| maps.get(name.as_str()).map(|m| (name.as_str(), *fd, m)));
    obj.relocate_maps(by_name, &text_sections)
        .map_err(|e| format!("relocate maps: {e}"))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| format!("relocate calls: {e}"))?;
    Ok((obj, obj_btf))
}

/// BPF_BTF_LOAD of `bytes`.
fn load_btf(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: bpf_attr is plain data; all-zero is its empty value.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the BTF-load member of the union is the one in use.
    let u = unsafe { &mut attr.__bindgen_anon_7 };
    u.btf = bytes.as_ptr() as u64;
    u.btf_size = bytes.len() as u32;
    let fd = sys_bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr)?;
    // SAFETY: BPF_BTF_LOAD returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A program's BTF function info (its own function and every linked one).
struct FuncInfo<'a> {
    btf: &'a OwnedFd,
    bytes: Vec<u8>,
    count: u32,
    rec_size: u32,
}

/// The fd of a map aya created (every variant holds its `MapData`).
fn map_fd(map: &Map) -> RawFd {
    macro_rules! fd {
        ($($v:ident),*) => {
            match map { $(Map::$v(d) => d.fd().as_fd().as_raw_fd(),)* }
        };
    }
    fd!(
        Array,
        ArrayOfMaps,
        BloomFilter,
        CgroupArray,
        CgroupStorage,
        CgrpStorage,
        CpuMap,
        DevMap,
        DevMapHash,
        HashMap,
        HashOfMaps,
        InodeStorage,
        LpmTrie,
        LruHashMap,
        PerCpuArray,
        PerCpuCgroupStorage,
        PerCpuHashMap,
        PerCpuLruHashMap,
        PerfEventArray,
        ProgramArray,
        Queue,
        ReusePortSockArray,
        RingBuf,
        SockHash,
        SockMap,
        SkStorage,
        Stack,
        StackTraceMap,
        Unsupported,
        XskMap
    )
}

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-initialised bpf_attr of the size
    // passed; the pointers inside it outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// BPF_PROG_LOAD as `BPF_MODIFY_RETURN` on vmlinux BTF id `target`. On a
/// refusal, loads again with the verifier log and returns its last lines.
fn load(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
    target: u32,
    info: Option<&FuncInfo<'_>>,
) -> Result<OwnedFd, String> {
    let attempt = |log: &mut [u8]| {
        // SAFETY: bpf_attr is plain data; all-zero is its empty value.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the program-load member of the union is the one in use.
        let u = unsafe { &mut attr.__bindgen_anon_3 };
        u.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
        u.expected_attach_type = bpf_attach_type::BPF_MODIFY_RETURN as u32;
        u.attach_btf_id = target;
        u.insns = insns.as_ptr() as u64;
        u.insn_cnt = insns.len() as u32;
        u.license = license.as_ptr() as u64;
        if let Some(i) = info.filter(|i| i.rec_size > 0 && i.count > 0) {
            u.prog_btf_fd = i.btf.as_raw_fd() as u32;
            u.func_info = i.bytes.as_ptr() as u64;
            u.func_info_cnt = i.count;
            u.func_info_rec_size = i.rec_size;
        }
        let bytes = name.as_bytes();
        let len = bytes.len().min(u.prog_name.len() - 1);
        for (d, s) in u.prog_name.iter_mut().zip(&bytes[..len]) {
            *d = *s as libc::c_char;
        }
        if !log.is_empty() {
            u.log_level = 1;
            u.log_buf = log.as_mut_ptr() as u64;
            u.log_size = log.len() as u32;
        }
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    match attempt(&mut []) {
        // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let mut log = vec![0u8; 1 << 22];
            let _ = attempt(&mut log).map(|fd| {
                // SAFETY: as above; loaded on the second try: close it.
                drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
            });
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(if tail.is_empty() {
                e.to_string()
            } else {
                format!("{e}; verifier: {}", tail.join(" | "))
            })
        }
    }
}

/// Attaches a loaded tracing program to its BTF target; the returned link
/// detaches it when closed (unless pinned).
fn attach(prog: &OwnedFd) -> Result<OwnedFd, String> {
    // SAFETY: as in `load`.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.raw_tracepoint.name = 0;
    attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    let fd = sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).map_err(|e| e.to_string())?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Pins a link at `path` (bpffs), so it stays attached after the daemon.
pub fn pin(link: &OwnedFd, path: &Path) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("pin {}: NUL in path", path.display()))?;
    // SAFETY: as in `load`.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the object-pin member of the union is the one in use.
    let u = unsafe { &mut attr.__bindgen_anon_4 };
    u.bpf_fd = link.as_raw_fd() as u32;
    u.pathname = c.as_ptr() as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr)
        .map(drop)
        .map_err(|e| format!("pin {}: {e}", path.display()))
}
