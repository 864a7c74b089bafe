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
//! before anything changed. A `hold` rule holds (as an open under BPF
//! LSM): the thread stops inside the syscall before anything changed and
//! the syscall restarts when it is continued; the grant is bound to the
//! thread, the operation and both paths (`HoldKey::name`), and a rename
//! held for one pair of names is held again for another. (The fallback,
//! after the fact, refuses them; the inode hooks below refuse them too.)
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
//! setxattr, removexattr (and the POSIX ACLs, set through the same
//! syscalls at `inode_set_acl`/`inode_remove_acl`) and utime have no
//! `path_*` hook: their `inode_*` hooks carry a dentry and no mount, so
//! there is no one path to walk. The name is decided under every mount of
//! the file's super block instead (`decide_inode`): each mount that shows
//! the dentry in the acting process's mount namespace gives a path (the
//! file under a bind mount, the same file at its first mount), and every
//! one of them must be writable. Mounts of other mount namespaces
//! (systemd's PrivateTmp/ProtectSystem services each hold their own mount
//! of the root file system) are skipped before any walk by comparing
//! `mount.mnt_ns`, in a `bpf_loop` (`skip_other_namespaces`), so they do not
//! count. More than `MAX_SB_MOUNTS` mounts in the acting process's
//! namespace, more than `MAX_SB_MOUNT_SCAN` entries in the super block's
//! mount list, or no mount that shows the file, refuse (fail closed). An inner call made under overridden credentials (overlayfs
//! setting the xattr or times on its upper layer as its mounter, after the
//! outer call on the overlay file was decided here) is left alone.
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
    agent_counter, agent_flags, counter, name_hash, path_flags, rule, syscalls, Decision,
    EventKind, HoldKey, Method, NameEvent, EPERM, MAX_SB_MOUNTS, MAX_SB_MOUNT_SCAN,
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
    let (deciding, verdict) = judge_write(s, agent.slot, &b, agent.flags);
    if nr == syscalls::CREAT && verdict != DENIED {
        // The open after it decides, records and holds.
        entry.discard(0);
        return ALLOW;
    }
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved NameEvent; every field is written.
    unsafe {
        (*ev).header = event_header(
            EventKind::PathOp,
            Decision::Deny,
            deny,
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
    let (decision, method, ret) = carry_out(judged(verdict), agent.flags, deciding, deny, || {
        // SAFETY: the reserved record, filled above.
        let old = unsafe { name_hash(&(*ev).old_path, read_volatile(addr_of_mut!((*ev).old_len))) };
        HoldKey::name(cgroup_id, current_tid(), nr, old, 0)
    });
    // SAFETY: fields of the reserved record.
    unsafe {
        (*ev).header.decision = decision as u32;
        (*ev).header.method = method as u32;
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
    let (old_rule, old_verdict) = judge_write(s, c.slot, &b, c.agent_flags);
    // SAFETY: fields of the reserved record. `header.decision` parks
    // the old name's verdict until the end.
    unsafe {
        write_volatile(addr_of_mut!((*ev).old_rule), old_rule);
        write_volatile(addr_of_mut!((*ev).header.decision), old_verdict);
        write_volatile(addr_of_mut!((*ev).old_len), b.len);
        write_volatile(addr_of_mut!((*ev).flags), b.flags);
        path::copy_to(addr_of_mut!((*ev).old_path), s);
    }
    let b = path::build(s, c.ino, c.filename);
    let c = path::unpark(s);
    let (new_rule, new_verdict) = judge_write(s, c.slot, &b, c.agent_flags);
    // SAFETY: fields of the reserved record.
    let (old_rule, old_verdict, flags) = unsafe {
        write_volatile(addr_of_mut!((*ev).new_rule), new_rule);
        write_volatile(addr_of_mut!((*ev).new_len), b.len);
        path::copy_to(addr_of_mut!((*ev).new_path), s);
        (
            read_volatile(addr_of_mut!((*ev).old_rule)),
            read_volatile(addr_of_mut!((*ev).header.decision)),
            read_volatile(addr_of_mut!((*ev).flags)) | b.flags,
        )
    };
    // Both must be writable: a refusal of either refuses, else a hold of
    // either holds. The rule of the name that decided: the first refused,
    // else the first held, else the new name's.
    let verdict = if old_verdict == DENIED || new_verdict == DENIED {
        DENIED
    } else if old_verdict == HELD || new_verdict == HELD {
        HELD
    } else {
        ALLOWED
    };
    let deciding = if old_verdict == DENIED || (old_verdict == HELD && new_verdict != DENIED) {
        old_rule
    } else {
        new_rule
    };
    let (decision, method, ret) = carry_out(judged(verdict), c.agent_flags, deciding, deny, || {
        // SAFETY: the reserved record, both paths filled above.
        let (old, new) = unsafe {
            (
                name_hash(&(*ev).old_path, read_volatile(addr_of_mut!((*ev).old_len))),
                name_hash(&(*ev).new_path, read_volatile(addr_of_mut!((*ev).new_len))),
            )
        };
        HoldKey::name(c.cgroup_id, current_tid(), nr, old, new)
    });
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

/// `struct iattr.ia_valid` bits (include/linux/fs.h): its first member.
const ATTR_MODE: u32 = 1 << 0;
const ATTR_UID: u32 = 1 << 1;
const ATTR_GID: u32 = 1 << 2;
const ATTR_SIZE: u32 = 1 << 3;
const ATTR_ATIME: u32 = 1 << 4;
const ATTR_MTIME: u32 = 1 << 5;

/// Whether the current task runs under overridden credentials
/// (`override_creds`): a stacked file system's inner call on its lower
/// or upper layer (overlayfs), made after the outer call was decided.
#[inline(always)]
fn overridden_creds() -> bool {
    // SAFETY: a helper without arguments.
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() };
    path::read::<u64>(task, off!(task_cred)) != path::read::<u64>(task, off!(task_real_cred))
}

/// The mount after the list node `node` of a super block's mount list
/// (`head`: its `s_mounts`), or 0 at the end.
#[inline(always)]
fn next_mount(node: u64, head: u64) -> u64 {
    let next: u64 = path::read(node, 0);
    if off!(sb_mounts_kind) == 1 {
        // list_head: back at the head is the end.
        if next == head || next == 0 {
            0
        } else {
            next.wrapping_sub(off!(mount_sb_link))
        }
    } else {
        next
    }
}

/// `skip_other_namespaces` ran out of its scan budget: more entries in
/// the mount list than `MAX_SB_MOUNT_SCAN` (never a mount's address).
const SCAN_EXHAUSTED: u64 = u64::MAX;

/// The state of `skip_other_namespaces` (on the caller's stack).
#[repr(C)]
struct Skip {
    /// In: the first mount to look at (0: the end). Out: the first one of
    /// `ns` at or after it, or 0 at the end (when `stopped`).
    mount: u64,
    /// The super block's `s_mounts` (the list's end, `next_mount`).
    head: u64,
    /// The acting process's mount namespace.
    ns: u64,
    /// 1 once the scan found a mount of `ns` or the end.
    stopped: u64,
}

/// `bpf_loop` callback: one mount list entry. Stops (returns 1) at a
/// mount of `ns` or at the end. Verifier: no counter lives in the state
/// (the helper's `nr_loops` bounds the scan), so the callback's states
/// converge after one pass whatever the bound.
#[inline(never)]
extern "C" fn skip_step(_index: u64, ctx: *mut c_void) -> i64 {
    let k = ctx.cast::<Skip>();
    let (ns_off, link_off) = (off!(mount_mnt_ns), off!(mount_sb_link));
    // SAFETY: `ctx` is the caller's `Skip` (bpf_loop passes it through).
    unsafe {
        let mount = (*k).mount;
        if mount == 0 || path::read::<u64>(mount, ns_off) == (*k).ns {
            (*k).stopped = 1;
            return 1;
        }
        (*k).mount = next_mount(mount.wrapping_add(link_off), (*k).head);
    }
    0
}

/// The acting process's mount namespace (`task->nsproxy->mnt_ns`; 0 for
/// an exiting task: then no mount matches and the call is refused).
#[inline(always)]
fn mount_namespace() -> u64 {
    // SAFETY: a helper without arguments.
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() };
    let nsproxy: u64 = path::read(task, off!(task_nsproxy));
    if nsproxy == 0 {
        return 0;
    }
    path::read(nsproxy, off!(nsproxy_mnt_ns))
}

/// The first mount of the acting process's namespace `ns` at or after
/// `mount` in the super block's list (`head`), or 0 at the end, or
/// `SCAN_EXHAUSTED`; `budget` is the scan budget left, updated. Other
/// namespaces' mounts cost one read each and no path walk; `bpf_loop`
/// keeps the verifier's cost to one pass over `skip_step` whatever the
/// bound.
#[inline(always)]
fn skip_other_namespaces(mount: u64, head: u64, ns: u64, budget: &mut u32) -> u64 {
    if mount == 0 {
        return 0;
    }
    let mut k = Skip {
        mount,
        head,
        ns,
        stopped: 0,
    };
    // SAFETY: `skip_step` has bpf_loop's callback signature; `k` lives on
    // this frame for the call.
    let done = unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            *budget,
            skip_step as *mut c_void,
            addr_of_mut!(k).cast(),
            0,
        )
    };
    if done < 0 || k.stopped == 0 {
        // The budget is spent (or the helper refused, never with these
        // arguments): fail closed.
        *budget = 0;
        return SCAN_EXHAUSTED;
    }
    // `done` counts the stopping step too; never above `*budget`.
    *budget = budget.saturating_sub(done as u32);
    k.mount
}

/// The decision on one name the kernel gives as a dentry without its
/// mount (the `inode_*` hooks): a `write` of its path under every mount of
/// its super block that shows it to the acting process (see the module
/// docs). Recorded is the path that decided: the first refused, else the
/// first allowed. `iattr`: setattr's `struct iattr` (0 for the other
/// hooks), decided only for a change of times (`times_only`).
#[inline(always)]
pub(crate) fn decide_inode(nr: u32, dentry: u64, previous: i32, deny: Method, iattr: u64) -> i32 {
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::FILE) else {
        return ALLOW;
    };
    if (iattr != 0 && !times_only(iattr)) || overridden_creds() {
        return ALLOW;
    }
    count_agent(agent.agent_id, agent_counter::DECISIONS);
    if !path::offsets_valid() || off!(sb_mounts_kind) == 0 {
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
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved NameEvent; every field is written here or
    // below. `header.decision` parks the walk's state until the end: 0 no
    // mount showed the file yet, 1 every one so far allowed, 2 refused.
    unsafe {
        (*ev).header = event_header(
            EventKind::PathOp,
            Decision::Deny,
            deny,
            rule::UNRESOLVED,
            agent.agent_id,
            agent.policy_gen,
            cgroup_id,
        );
        (*ev).header.decision = 0;
        (*ev).syscall = hook_nr(nr, deny);
        (*ev).flags = path_flags::READ_ERROR;
        (*ev).old_rule = rule::UNRESOLVED;
        (*ev).new_rule = rule::DEFAULT;
        (*ev).old_len = 0;
        (*ev).new_len = 0;
        (*ev).old_path[0] = 0;
        (*ev).new_path[0] = 0;
    }
    let sb: u64 = path::read(dentry, off!(dentry_d_sb));
    let head = sb.wrapping_add(off!(sb_s_mounts));
    let first = if off!(sb_mounts_kind) == 1 {
        next_mount(head, head)
    } else {
        path::read(head, 0)
    };
    let mut budget = MAX_SB_MOUNT_SCAN;
    let first = skip_other_namespaces(first, head, mount_namespace(), &mut budget);
    // Verifier: the loop's state (the mount to walk next, the dentry, the
    // list head) is parked across each walk (see `path::Carry`).
    path::park(
        s,
        Carry {
            cgroup_id: head,
            ino: dentry,
            filename: first,
            agent_id: agent.agent_id,
            policy_gen: agent.policy_gen,
            slot: agent.slot,
            agent_flags: agent.flags,
            dev: 0,
            flags: 0,
            // The scan budget left.
            access: budget,
            syscall: 0,
            compat: 0,
            _pad: 0,
        },
    );
    for i in 0..=MAX_SB_MOUNTS {
        let mut c = path::unpark(s);
        let mount = c.filename;
        if mount == 0 {
            break;
        }
        if i == MAX_SB_MOUNTS || mount == SCAN_EXHAUSTED {
            // More mounts than walked: refused (fails closed).
            // SAFETY: fields of the reserved record.
            unsafe {
                write_volatile(addr_of_mut!((*ev).header.decision), 2);
                write_volatile(addr_of_mut!((*ev).old_rule), rule::UNRESOLVED);
                let f = read_volatile(addr_of_mut!((*ev).flags));
                write_volatile(addr_of_mut!((*ev).flags), f | path_flags::TOO_MANY_MOUNTS);
            }
            break;
        }
        let mut budget = c.access;
        c.filename = skip_other_namespaces(
            next_mount(mount.wrapping_add(off!(mount_sb_link)), c.cgroup_id),
            c.cgroup_id,
            mount_namespace(),
            &mut budget,
        );
        c.access = budget;
        path::park(s, c);
        let b = path::build(s, c.ino, mount.wrapping_add(off!(mount_mnt)));
        let c = path::unpark(s);
        // SAFETY: a field of the reserved record.
        let state = unsafe { read_volatile(addr_of_mut!((*ev).header.decision)) };
        let elsewhere = path_flags::DETACHED | path_flags::ANONYMOUS;
        let broken = path_flags::READ_ERROR | path_flags::SCRATCH_RACE | path_flags::INCOMPLETE;
        if b.flags & elsewhere != 0 && b.flags & broken == 0 {
            // This mount does not show the file to this process (another
            // namespace's, a detached clone, or its root is not above the
            // file): not one of its paths. Kept as the record only while
            // no mount has shown it.
            if state == 0 {
                // SAFETY: fields of the reserved record.
                unsafe {
                    write_volatile(addr_of_mut!((*ev).flags), b.flags);
                    write_volatile(addr_of_mut!((*ev).old_len), b.len);
                    path::copy_to(addr_of_mut!((*ev).old_path), s);
                }
            }
            continue;
        }
        let (rule_idx, allowed) = write_rule(s, c.slot, &b, c.agent_flags);
        if state == 0 || allowed == 0 {
            // SAFETY: fields of the reserved record.
            unsafe {
                write_volatile(addr_of_mut!((*ev).old_rule), rule_idx);
                write_volatile(addr_of_mut!((*ev).flags), b.flags);
                write_volatile(addr_of_mut!((*ev).old_len), b.len);
                path::copy_to(addr_of_mut!((*ev).old_path), s);
                write_volatile(
                    addr_of_mut!((*ev).header.decision),
                    if allowed != 0 { 1 } else { 2 },
                );
            }
        }
        if allowed == 0 {
            break;
        }
    }
    let c = path::unpark(s);
    // SAFETY: fields of the reserved record.
    let (state, deciding) = unsafe {
        (
            read_volatile(addr_of_mut!((*ev).header.decision)),
            read_volatile(addr_of_mut!((*ev).old_rule)),
        )
    };
    let judged = if state == 1 {
        Decision::Allow
    } else {
        Decision::Deny
    };
    // A `hold` rule refuses here (`write_rule`): never a hold key.
    let (decision, method, ret) = carry_out(judged, c.agent_flags, deciding, deny, || {
        HoldKey::name(0, 0, 0, 0, 0)
    });
    // SAFETY: fields of the reserved record.
    unsafe {
        (*ev).header.decision = decision as u32;
        (*ev).header.method = method as u32;
        (*ev).header.rule_idx = deciding;
    }
    submit(entry, decision, method);
    ret
}

/// A write's verdict (`judge_write`): refused, allowed, held.
const DENIED: u32 = 0;
const ALLOWED: u32 = 1;
const HELD: u32 = 2;

/// The write rule that decides the built path and its verdict (`DENIED`,
/// `ALLOWED`, `HELD`): as `fallback::names::write_rule`, with a `hold`
/// rule held (a `path_*` hook runs before the change and can stop the
/// thread in it) instead of refused.
#[inline(always)]
fn judge_write(s: &mut path::Scratch, slot: u32, b: &path::Built, flags: u32) -> (u32, u32) {
    if flags & agent_flags::REVOKED != 0 {
        return (rule::REVOKED, DENIED);
    }
    if b.flags & path::UNRESOLVED_FLAGS != 0 {
        return (rule::UNRESOLVED, DENIED);
    }
    match crate::maps::FILE_RULES.get(path::key(s, slot, b)) {
        Some(r) if r.write.decision == Decision::Allow as u8 => (r.write.rule_idx, ALLOWED),
        Some(r) if r.write.decision == Decision::Hold as u8 => (r.write.rule_idx, HELD),
        Some(r) => (r.write.rule_idx, DENIED),
        None => (rule::DEFAULT, DENIED),
    }
}

#[inline(always)]
fn judged(verdict: u32) -> Decision {
    match verdict {
        ALLOWED => Decision::Allow,
        HELD => Decision::Hold,
        _ => Decision::Deny,
    }
}

#[inline(always)]
fn current_tid() -> u32 {
    aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32
}

/// (decision, method, the hook's return) for a judged write; a hold is on
/// the action `key` names (`lsm::hold`: a grant for it applied once, else
/// the thread stopped inside the syscall, which restarts when continued).
#[inline(always)]
fn carry_out(
    judged: Decision,
    flags: u32,
    deciding: u32,
    deny: Method,
    key: impl FnOnce() -> HoldKey,
) -> (Decision, Method, i32) {
    if crate::judge::recorded(flags, judged, deciding) {
        // Record mode: written down as judged, not carried out.
        return (judged, Method::Recorded, ALLOW);
    }
    match judged {
        Decision::Allow => (Decision::Allow, Method::Allow, ALLOW),
        Decision::Hold => crate::lsm::hold(&key(), deny),
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
    } else if method == Method::Held {
        counter::HELD
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

/// setattr(idmap, dentry, attr): decided only when it changes times and
/// nothing the `path_*` hooks or the open decide (mode, owner, size); the
/// `struct iattr` is read after the agent lookup (`decide_inode`).
#[inline(always)]
fn setattr(a: [u64; 4], deny: Method) -> i32 {
    decide_inode(syscalls::UTIMENSAT, a[1], a[3] as i32, deny, a[2])
}

/// Whether a `struct iattr` changes times and nothing else decided
/// elsewhere.
#[inline(always)]
fn times_only(iattr: u64) -> bool {
    let valid: u32 = path::read(iattr, 0);
    valid & (ATTR_ATIME | ATTR_MTIME) != 0
        && valid & (ATTR_MODE | ATTR_UID | ATTR_GID | ATTR_SIZE) == 0
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

// The inode hooks (no mount): the operation's number in the record says
// which hook decided (`decode::name_hook`): SETXATTR inode_setxattr,
// REMOVEXATTR inode_removexattr, LSETXATTR inode_set_acl, LREMOVEXATTR
// inode_remove_acl, UTIMENSAT inode_setattr.

#[lsm(hook = "inode_setxattr")]
pub fn warden_lsm_setxattr(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 7);
    decide_inode(syscalls::SETXATTR, a[1], a[6] as i32, Method::LsmDeny, 0)
}
#[lsm(hook = "inode_removexattr")]
pub fn warden_lsm_removexattr(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 4);
    decide_inode(syscalls::REMOVEXATTR, a[1], a[3] as i32, Method::LsmDeny, 0)
}
#[lsm(hook = "inode_set_acl")]
pub fn warden_lsm_set_acl(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 5);
    decide_inode(syscalls::LSETXATTR, a[1], a[4] as i32, Method::LsmDeny, 0)
}
#[lsm(hook = "inode_remove_acl")]
pub fn warden_lsm_remove_acl(ctx: LsmContext) -> i32 {
    let a = args!(ctx, 4);
    decide_inode(
        syscalls::LREMOVEXATTR,
        a[1],
        a[3] as i32,
        Method::LsmDeny,
        0,
    )
}
#[lsm(hook = "inode_setattr")]
pub fn warden_lsm_setattr(ctx: LsmContext) -> i32 {
    setattr(args!(ctx, 4), Method::LsmDeny)
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

#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_inode_setxattr")]
pub fn warden_fmodret_setxattr(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 7);
    decide_inode(
        syscalls::SETXATTR,
        a[1],
        a[6] as i32,
        Method::FmodRetDeny,
        0,
    )
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_inode_removexattr")]
pub fn warden_fmodret_removexattr(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 4);
    decide_inode(
        syscalls::REMOVEXATTR,
        a[1],
        a[3] as i32,
        Method::FmodRetDeny,
        0,
    )
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_inode_set_acl")]
pub fn warden_fmodret_set_acl(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 5);
    decide_inode(
        syscalls::LSETXATTR,
        a[1],
        a[4] as i32,
        Method::FmodRetDeny,
        0,
    )
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_inode_remove_acl")]
pub fn warden_fmodret_remove_acl(ctx: *mut c_void) -> i32 {
    let a = args!(FExitContext::new(ctx), 4);
    decide_inode(
        syscalls::LREMOVEXATTR,
        a[1],
        a[3] as i32,
        Method::FmodRetDeny,
        0,
    )
}
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_inode_setattr")]
pub fn warden_fmodret_setattr(ctx: *mut c_void) -> i32 {
    let ctx = FExitContext::new(ctx);
    setattr(args!(ctx, 4), Method::FmodRetDeny)
}
