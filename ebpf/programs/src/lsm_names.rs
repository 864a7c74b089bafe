//! Operations on names decided before they happen: BPF LSM `path_*` hooks
//! and their `fmod_ret` twins on the kernel's `security_path_*` functions
//! (`CONFIG_SECURITY_PATH`), attached where BPF LSM or `fmod_ret` decides
//! file opens (then the fallback's `sys_exit` decides no file rule).
//!
//! rename and link decide both names, every other operation its one name,
//! each as a `write` of that path by the agent's file rules (the judge of
//! the fallback, `fallback::names::write_rule`, on the same maps). The
//! paths are the kernel's: the directory's `struct path` and the dentry
//! (a new name is a negative dentry below it), walked by `path::build`, the
//! walk every hook uses; no user memory, no race, symbolic links already
//! resolved by the kernel's lookup. A refusal fails the syscall with EPERM
//! before anything changed. A `hold` rule refuses (as on the fallback): a
//! held name operation is not implemented.
//!
//! `path_mknod` also runs for the bind of a unix socket to a path
//! (`S_IFSOCK`): recorded as `bind`; and for the creation of a regular file
//! (`open` with `O_CREAT` of a new name, `mknod` with `S_IFREG`), recorded
//! as `create` and decided only to refuse: where the path may be written
//! or held, the open that follows decides (and records, and holds), so an
//! allowed creation is not recorded twice and a held one is held at the
//! open as before; where it may not, the file is never created. `path_chmod`/`path_chown` also run for
//! `fchmod`/`fchown` on an open descriptor, and are decided the same way.
//!
//! Global hooks: the agent cgroup lookup comes first and everything else
//! returns 0 after it. For an agent, internal errors fail closed (EPERM),
//! as in `lsm.rs`; a non-zero `previous` (an earlier program's verdict) is
//! passed through.

use core::{
    ffi::c_void,
    ptr::{addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    macros::lsm,
    programs::{FExitContext, LsmContext},
};
use warden_common::{
    agent_counter, agent_flags, counter, rule, syscalls, Decision, EventKind, Method, NameEvent,
    EPERM,
};

use crate::{
    agent::governing_agent,
    counters::{count, count_agent},
    events::{event_header, submit_flags, unrecorded},
    fallback::names::write_rule,
    maps::EVENTS,
    path::{self, off, Carry},
};

const ALLOW: i32 = 0;
const DENY: i32 = -EPERM;
/// `S_IFMT`, `S_IFSOCK` (include/uapi/linux/stat.h).
const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFREG: u32 = 0o100000;

/// `struct path { struct vfsmount *mnt; struct dentry *dentry; }`: the
/// (dentry, mnt) of a `const struct path *`. `mnt` is its first field; the
/// dentry's offset is the one `file->f_path` has past its `mnt`.
#[inline(always)]
fn path_of(p: u64) -> (u64, u64) {
    let dentry_rel = off!(file_f_path_dentry).wrapping_sub(off!(file_f_path_mnt));
    (path::read(p, dentry_rel), path::read(p, 0))
}

/// The syscall field: which hook (`NAME_HOOK_LSM`/`NAME_HOOK_FMODRET`)
/// and which operation (its plain syscall's number).
#[inline(always)]
fn hook_nr(nr: u32, deny: Method) -> u32 {
    nr | if matches!(deny, Method::FmodRetDeny) {
        syscalls::NAME_HOOK_FMODRET
    } else {
        syscalls::NAME_HOOK_LSM
    }
}

/// Fails closed for an agent when the record cannot be made: refused,
/// unless the agent's policy says allowed actions may go unrecorded (a
/// write refusal cannot tell yet: refused).
#[inline(always)]
fn no_record(agent: &warden_common::AgentInfo, kind: EventKind) -> i32 {
    unrecorded(agent, kind, false);
    count(counter::DENIED);
    DENY
}

/// The decision on one name (`dentry` on mount `mnt`): `nr` is the
/// operation (its plain syscall's number; `CREAT`: a regular file's
/// creation, decided only to refuse), `previous` the verdict of the hook's
/// earlier programs, `deny` how a refusal is recorded.
#[inline(always)]
pub(crate) fn decide_one(nr: u32, dentry: u64, mnt: u64, previous: i32, deny: Method) -> i32 {
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::FILE) else {
        return ALLOW;
    };
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    if !path::offsets_valid() {
        count(counter::DENIED);
        return DENY;
    }
    let Some(s) = path::scratch() else {
        count(counter::DENIED);
        return DENY;
    };
    let Some(mut entry) = EVENTS.reserve::<NameEvent>(0) else {
        return no_record(&agent, EventKind::PathOp);
    };
    let b = path::build(s, dentry, mnt);
    let (deciding, allowed) = write_rule(s, agent.slot, &b, agent.flags);
    if nr == syscalls::CREAT && (allowed != 0 || held(s, agent.slot, &b, agent.flags)) {
        // The open after it decides, records and holds.
        entry.discard(0);
        return ALLOW;
    }
    let judged = if allowed != 0 {
        Decision::Allow
    } else {
        Decision::Deny
    };
    let (decision, method, ret) = carry_out(judged, agent.flags, deciding, deny);
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved NameEvent; every field is written.
    unsafe {
        (*ev).header = event_header(
            EventKind::PathOp,
            decision,
            method,
            deciding,
            agent.agent_id,
            agent.policy_gen,
            cgroup_id,
        );
        (*ev).syscall = hook_nr(nr, deny);
        (*ev).flags = b.flags;
        (*ev).old_rule = deciding;
        (*ev).new_rule = rule::DEFAULT;
        (*ev).old_len = b.len;
        (*ev).new_len = 0;
        path::copy_to(addr_of_mut!((*ev).old_path), s);
        (*ev).new_path[0] = 0;
    }
    submit(entry, decision, method);
    ret
}

/// The decision on both names of a rename or link (`kind`): the old one
/// (`old_dentry` on `old_mnt`) and the new one; each must be writable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide_two(
    kind: EventKind,
    nr: u32,
    old_dentry: u64,
    old_mnt: u64,
    new_dentry: u64,
    new_mnt: u64,
    previous: i32,
    deny: Method,
) -> i32 {
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::FILE) else {
        return ALLOW;
    };
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    if !path::offsets_valid() {
        count(counter::DENIED);
        return DENY;
    }
    let Some(s) = path::scratch() else {
        count(counter::DENIED);
        return DENY;
    };
    // Reserved first: the decision is made in two halves, parked in it
    // across the walks (as `fallback::names`).
    let Some(mut entry) = EVENTS.reserve::<NameEvent>(0) else {
        return no_record(&agent, kind);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved NameEvent; every field is written below.
    unsafe {
        (*ev).header = event_header(
            kind,
            Decision::Deny,
            deny,
            rule::DEFAULT,
            agent.agent_id,
            agent.policy_gen,
            cgroup_id,
        );
        (*ev).syscall = hook_nr(nr, deny);
    }
    // Verifier: what is used after a walk is parked in the scratch space
    // and read back as unknown values (see `path::Carry`).
    path::park(
        s,
        Carry {
            cgroup_id,
            ino: new_dentry,
            filename: new_mnt,
            agent_id: agent.agent_id,
            policy_gen: agent.policy_gen,
            slot: agent.slot,
            agent_flags: agent.flags,
            dev: 0,
            flags: 0,
            access: 0,
            syscall: 0,
            compat: 0,
            _pad: 0,
        },
    );
    let b = path::build(s, old_dentry, old_mnt);
    let c = path::unpark(s);
    let (old_rule, old_allowed) = write_rule(s, c.slot, &b, c.agent_flags);
    // SAFETY: fields of the reserved record. `header.decision` parks
    // whether the old name was allowed until the end.
    unsafe {
        write_volatile(addr_of_mut!((*ev).old_rule), old_rule);
        write_volatile(addr_of_mut!((*ev).header.decision), old_allowed);
        write_volatile(addr_of_mut!((*ev).old_len), b.len);
        write_volatile(addr_of_mut!((*ev).flags), b.flags);
        path::copy_to(addr_of_mut!((*ev).old_path), s);
    }
    let b = path::build(s, c.ino, c.filename);
    let c = path::unpark(s);
    let (new_rule, new_allowed) = write_rule(s, c.slot, &b, c.agent_flags);
    // SAFETY: fields of the reserved record.
    let (old_rule, old_allowed, flags) = unsafe {
        write_volatile(addr_of_mut!((*ev).new_rule), new_rule);
        write_volatile(addr_of_mut!((*ev).new_len), b.len);
        path::copy_to(addr_of_mut!((*ev).new_path), s);
        (
            read_volatile(addr_of_mut!((*ev).old_rule)),
            read_volatile(addr_of_mut!((*ev).header.decision)),
            read_volatile(addr_of_mut!((*ev).flags)) | b.flags,
        )
    };
    let allowed = old_allowed != 0 && new_allowed != 0;
    // The rule of the first name refused, or of the new name if allowed.
    let deciding = if old_allowed == 0 { old_rule } else { new_rule };
    let judged = if allowed {
        Decision::Allow
    } else {
        Decision::Deny
    };
    let (decision, method, ret) = carry_out(judged, c.agent_flags, deciding, deny);
    // SAFETY: fields of the reserved record.
    unsafe {
        (*ev).header.decision = decision as u32;
        (*ev).header.method = method as u32;
        (*ev).header.rule_idx = deciding;
        (*ev).old_rule = old_rule;
        (*ev).new_rule = new_rule;
        (*ev).flags = flags;
    }
    submit(entry, decision, method);
    ret
}

/// Whether a `hold` rule decides the write of the built path.
#[inline(always)]
fn held(s: &mut path::Scratch, slot: u32, b: &path::Built, flags: u32) -> bool {
    if flags & agent_flags::REVOKED != 0 || b.flags & path::UNRESOLVED_FLAGS != 0 {
        return false;
    }
    crate::maps::FILE_RULES
        .get(path::key(s, slot, b))
        .is_some_and(|r| r.write.decision == Decision::Hold as u8)
}

/// (decision, method, the hook's return) for a judged write.
#[inline(always)]
fn carry_out(judged: Decision, flags: u32, deciding: u32, deny: Method) -> (Decision, Method, i32) {
    if crate::judge::recorded(flags, judged, deciding) {
        // Record mode: written down as judged, not carried out.
        return (judged, Method::Recorded, ALLOW);
    }
    match judged {
        Decision::Allow => (Decision::Allow, Method::Allow, ALLOW),
        _ => (Decision::Deny, deny, DENY),
    }
}

#[inline(always)]
fn submit(
    entry: aya_ebpf::maps::ring_buf::RingBufEntry<NameEvent>,
    decision: Decision,
    method: Method,
) {
    let allowed = decision == Decision::Allow || method == Method::Recorded;
    count(counter::EVENTS);
    count(if allowed {
        counter::ALLOWED
    } else {
        counter::DENIED
    });
    entry.submit(submit_flags(
        allowed,
        core::mem::size_of::<NameEvent>() as u64,
    ));
}

// The hooks. Arguments as in include/linux/lsm_hook_defs.h (6.x), the
// previous verdict after them; the `security_path_*` functions take the
// same arguments, `ret` after them.

/// rename(old_dir, old_dentry, new_dir, new_dentry, flags)
#[inline(always)]
fn rename(a: [u64; 6], deny: Method) -> i32 {
    let (_, old_mnt) = path_of(a[0]);
    let (_, new_mnt) = path_of(a[2]);
    decide_two(
        EventKind::Rename,
        syscalls::RENAME,
        a[1],
        old_mnt,
        a[3],
        new_mnt,
        a[5] as i32,
        deny,
    )
}

/// link(old_dentry, new_dir, new_dentry): one mount (EXDEV otherwise).
#[inline(always)]
fn link(a: [u64; 4], deny: Method) -> i32 {
    let (_, mnt) = path_of(a[1]);
    decide_two(
        EventKind::Link,
        syscalls::LINK,
        a[0],
        mnt,
        a[2],
        mnt,
        a[3] as i32,
        deny,
    )
}

/// An operation on `dentry` below `dir` (unlink, mkdir, rmdir, symlink,
/// mknod).
#[inline(always)]
fn in_dir(nr: u32, dir: u64, dentry: u64, previous: u64, deny: Method) -> i32 {
    let (_, mnt) = path_of(dir);
    decide_one(nr, dentry, mnt, previous as i32, deny)
}

/// An operation on the object at `path` (chmod, chown, truncate).
#[inline(always)]
fn at_path(nr: u32, p: u64, previous: u64, deny: Method) -> i32 {
    let (dentry, mnt) = path_of(p);
    decide_one(nr, dentry, mnt, previous as i32, deny)
}

/// mknod(dir, dentry, mode, dev): a unix socket bound to a path is `bind`,
/// a regular file `create` (an open with `O_CREAT`, or mknod(2)).
#[inline(always)]
fn mknod(a: [u64; 5], deny: Method) -> i32 {
    let nr = match (a[2] as u32) & S_IFMT {
        S_IFSOCK => syscalls::BIND,
        0 | S_IFREG => syscalls::CREAT,
        _ => syscalls::MKNOD,
    };
    in_dir(nr, a[0], a[1], a[4], deny)
}

macro_rules! args {
    ($ctx:expr, $n:literal) => {{
        let mut a = [0u64; $n];
        let mut i = 0;
        while i < $n {
            a[i] = $ctx.arg(i);
            i += 1;
        }
        a
    }};
}

#[lsm(hook = "path_rename")]
pub fn warden_lsm_rename(ctx: LsmContext) -> i32 {
    rename(args!(ctx, 6), Method::LsmDeny)
}
#[lsm(hook = "path_link")]
pub fn warden_lsm_link(ctx: LsmContext) -> i32 {
    link(args!(ctx, 4), Method::LsmDeny)
}
#[lsm(hook = "path_unlink")]
pub fn warden_lsm_unlink(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 3);
    in_dir(syscalls::UNLINK, a[0], a[1], a[2], Method::LsmDeny)
}
#[lsm(hook = "path_mkdir")]
pub fn warden_lsm_mkdir(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 4);
    in_dir(syscalls::MKDIR, a[0], a[1], a[3], Method::LsmDeny)
}
#[lsm(hook = "path_rmdir")]
pub fn warden_lsm_rmdir(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 3);
    in_dir(syscalls::RMDIR, a[0], a[1], a[2], Method::LsmDeny)
}
#[lsm(hook = "path_symlink")]
pub fn warden_lsm_symlink(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 4);
    in_dir(syscalls::SYMLINK, a[0], a[1], a[3], Method::LsmDeny)
}
#[lsm(hook = "path_mknod")]
pub fn warden_lsm_mknod(ctx: LsmContext) -> i32 {
    mknod(args!(ctx, 5), Method::LsmDeny)
}
#[lsm(hook = "path_chmod")]
pub fn warden_lsm_chmod(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 3);
    at_path(syscalls::CHMOD, a[0], a[2], Method::LsmDeny)
}
#[lsm(hook = "path_chown")]
pub fn warden_lsm_chown(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 4);
    at_path(syscalls::CHOWN, a[0], a[3], Method::LsmDeny)
}
#[lsm(hook = "path_truncate")]
pub fn warden_lsm_truncate(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 2);
    at_path(syscalls::TRUNCATE, a[0], a[1], Method::LsmDeny)
}

// fmod_ret twins: `fexit/...` sections the daemon loads as
// BPF_MODIFY_RETURN (see `fmod_ret.rs`).

#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_rename")]
pub fn warden_fmodret_rename(ctx: *mut c_void) -> i32 {
    let ctx = FExitContext::new(ctx);
    rename(args!(ctx, 6), Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_link")]
pub fn warden_fmodret_link(ctx: *mut c_void) -> i32 {
    let ctx = FExitContext::new(ctx);
    link(args!(ctx, 4), Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_unlink")]
pub fn warden_fmodret_unlink(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 3);
    in_dir(syscalls::UNLINK, a[0], a[1], a[2], Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_mkdir")]
pub fn warden_fmodret_mkdir(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 4);
    in_dir(syscalls::MKDIR, a[0], a[1], a[3], Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_rmdir")]
pub fn warden_fmodret_rmdir(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 3);
    in_dir(syscalls::RMDIR, a[0], a[1], a[2], Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_symlink")]
pub fn warden_fmodret_symlink(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 4);
    in_dir(syscalls::SYMLINK, a[0], a[1], a[3], Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_mknod")]
pub fn warden_fmodret_mknod(ctx: *mut c_void) -> i32 {
    let ctx = FExitContext::new(ctx);
    mknod(args!(ctx, 5), Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_chmod")]
pub fn warden_fmodret_chmod(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 3);
    at_path(syscalls::CHMOD, a[0], a[2], Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_chown")]
pub fn warden_fmodret_chown(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 4);
    at_path(syscalls::CHOWN, a[0], a[3], Method::FmodRetDeny)
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_truncate")]
pub fn warden_fmodret_truncate(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 2);
    at_path(syscalls::TRUNCATE, a[0], a[1], Method::FmodRetDeny)
}
