//! Renames and links on kernels without BPF LSM, at `sys_exit` of
//! rename/renameat/renameat2/link/linkat (64-bit table), called from
//! `sys_exit.rs`.
//!
//! Both names are decided as a `write` of that path by the agent's file
//! rules: moving a copy of a denied binary over an exec-allowed path, or
//! linking a denied file into a writable directory, needs write on both.
//! This is after the fact: the syscall has succeeded when the program runs,
//! so a denial kills the process before the syscall returns (its next step,
//! the exec or the open, never runs) and the new name stays in place.
//!
//! The names come from the syscall's arguments in user memory, read here:
//! a sibling thread can rewrite them between the kernel's copy and this
//! read (racy), and symbolic links in the directories they name are not
//! resolved (the kernel's lookup is not available to this program). A
//! relative name is appended to the kernel's path of its directory fd or of
//! the working directory (`fs->pwd`). Names with `.`, `..` or empty
//! components are refused as unresolved.

use core::ptr::{addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::helpers::{bpf_get_current_task_btf, generated};
use warden_common::{
    agent_counter, agent_flags, counter, held_state, path_flags, rule, syscalls, Decision,
    EventKind, NameEvent, EVENT_PATH_BYTES,
};

use crate::{
    agent::governing_agent,
    counters::{count, count_agent},
    events::{event_header, submit_flags},
    fallback::hold,
    maps::{EVENTS, FILE_RULES},
    path::{self, off, Built, Carry, Scratch, UNRESOLVED_FLAGS},
};

pub(crate) const AT_FDCWD: i32 = -100;
/// `thread_info.status` bit set during an ia32 syscall (x86).
pub(crate) const TS_COMPAT: u32 = 0x0002;
const MASK: usize = EVENT_PATH_BYTES - 1;

/// Decides the rename or link (if this syscall is one that succeeded).
#[inline(always)]
pub fn decide(regs: *const u8, ret: i64) {
    if ret != 0 || !path::offsets_valid() {
        return;
    }
    let orig_ax = off!(pt_regs_orig_ax) as usize;
    // SAFETY: a direct, BTF-checked load at a frozen offset (as file.rs).
    let nr = unsafe { read_volatile(regs.add(orig_ax).cast::<u64>()) };
    let nr = nr as u32;
    // Any number that is a rename or link in either table (the table is
    // checked after, as file.rs does): the 64-bit numbers, then the ia32
    // ones (`int 0x80` works from 64-bit code).
    if !matches!(
        nr,
        syscalls::RENAME
            | syscalls::RENAMEAT
            | syscalls::RENAMEAT2
            | syscalls::LINK
            | syscalls::LINKAT
            | syscalls::IA32_RENAME
            | syscalls::IA32_RENAMEAT
            | syscalls::IA32_RENAMEAT2
            | syscalls::IA32_LINK
            | syscalls::IA32_LINKAT
    ) {
        return;
    }
    // SAFETY: as above, the typed current task.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let ti_status = off!(task_ti_status) as usize;
    // SAFETY: a direct, BTF-checked load at a frozen offset.
    let status = unsafe { read_volatile(task.add(ti_status).cast::<u32>()) };
    let compat = status & TS_COMPAT != 0;
    // An ia32 number means another call in the 64-bit table (38 is
    // setitimer there) and the reverse: each table's own numbers only.
    let native = if compat {
        syscalls::ia32_native(nr)
    } else {
        nr
    };
    let kind = match native {
        syscalls::RENAME | syscalls::RENAMEAT | syscalls::RENAMEAT2 => EventKind::Rename,
        syscalls::LINK | syscalls::LINKAT => EventKind::Link,
        _ => return,
    };
    let Some((cgroup_id, agent)) = governing_agent(agent_flags::FILE) else {
        return;
    };
    let arg = |field: u64| -> u64 {
        // SAFETY: a direct, BTF-checked load at a frozen offset.
        unsafe { read_volatile(regs.add(field as usize).cast::<u64>()) }
    };
    // The first four arguments: `di, si, dx, r10` (64-bit), `bx, cx, dx,
    // si` (ia32, where the kernel uses the low 32 bits of each: so does
    // this, or high bits the kernel ignores would point the read
    // elsewhere).
    let (di, si, dx, r10) = if compat {
        (
            arg(off!(pt_regs_bx)) as u32 as u64,
            arg(off!(pt_regs_cx)) as u32 as u64,
            arg(off!(pt_regs_dx)) as u32 as u64,
            arg(off!(pt_regs_si)) as u32 as u64,
        )
    } else {
        (
            arg(off!(pt_regs_di)),
            arg(off!(pt_regs_si)),
            arg(off!(pt_regs_dx)),
            arg(off!(pt_regs_r10)),
        )
    };
    // rename(old, new), link(old, new); the *at forms take a directory fd
    // before each name.
    let (old_dfd, old, new_dfd, new) = if native == syscalls::RENAME || native == syscalls::LINK {
        (AT_FDCWD, di, AT_FDCWD, si)
    } else {
        (di as i32, si, dx as i32, r10)
    };
    let ia32 = if compat { path_flags::IA32 } else { 0 };

    count_agent(agent.agent_id, agent_counter::DECISIONS);
    let Some(s) = path::scratch() else {
        hold::kill_unrecorded();
        return;
    };
    // The record is reserved first: the decision is made in two halves,
    // and both are parked in it across the walks (see `path::Carry`).
    let Some(mut entry) = EVENTS.reserve::<NameEvent>(0) else {
        // The syscall is done and nothing can say what it did: fail closed.
        crate::events::unrecorded(&agent, warden_common::EventKind::Rename, false);
        hold::kill_unrecorded();
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved NameEvent; every field is written below.
    unsafe {
        (*ev).header = event_header(
            kind,
            Decision::Deny,
            warden_common::Method::Kill,
            rule::DEFAULT,
            agent.agent_id,
            agent.policy_gen,
            cgroup_id,
        );
        (*ev).syscall = nr;
    }
    let task = task as u64;
    // Verifier: what is used after a walk is parked in the scratch space
    // and read back as unknown values, or the walk is explored once per
    // known value (see `path::Carry`).
    path::park(
        s,
        Carry {
            cgroup_id,
            ino: task,
            filename: new,
            agent_id: agent.agent_id,
            policy_gen: agent.policy_gen,
            slot: agent.slot,
            agent_flags: agent.flags,
            dev: 0,
            flags: 0,
            access: 0,
            syscall: new_dfd as u32,
            // Parked like the rest: a known constant kept live across
            // the walks would make the verifier walk them once per table.
            compat: ia32,
            _pad: 0,
        },
    );

    let b = resolve(s, task, old_dfd, old);
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
    let b = resolve(s, c.ino, c.syscall as i32, c.filename);
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
    let flags = flags | c.compat;
    let allowed = old_allowed != 0 && new_allowed != 0;
    // The rule of the first name refused, or of the new name if allowed.
    let deciding = if old_allowed == 0 { old_rule } else { new_rule };
    let decision = if allowed {
        Decision::Allow
    } else {
        Decision::Deny
    };
    let (decision, method, kill_failed) = hold::carry_out(decision, held_state::PAUSED);
    // SAFETY: fields of the reserved record.
    unsafe {
        (*ev).header.decision = decision as u32;
        (*ev).header.method = method as u32;
        (*ev).header.rule_idx = deciding;
        (*ev).old_rule = old_rule;
        (*ev).new_rule = new_rule;
        (*ev).flags = flags | kill_failed;
    }
    entry.submit(submit_flags(
        decision == Decision::Allow,
        core::mem::size_of::<NameEvent>() as u64,
    ));
    count(counter::EVENTS);
}

/// The write decision for the path in the scratch space: the deciding rule
/// and 1 if it allows (a `hold` cannot pause a rename that already
/// happened: refused).
#[inline(always)]
pub(crate) fn write_rule(s: &mut Scratch, slot: u32, b: &Built, flags_of_agent: u32) -> (u32, u32) {
    if flags_of_agent & agent_flags::REVOKED != 0 {
        return (rule::REVOKED, 0);
    }
    if b.flags & UNRESOLVED_FLAGS != 0 {
        return (rule::UNRESOLVED, 0);
    }
    match FILE_RULES.get(path::key(s, slot, b)) {
        Some(r) => (
            r.write.rule_idx,
            (r.write.decision == Decision::Allow as u8) as u32,
        ),
        None => (rule::DEFAULT, 0),
    }
}

/// Builds the absolute path of one name argument into the scratch space:
/// the user string if it is absolute, else the kernel's path of `dirfd`
/// (or the working directory) and the string.
#[inline(always)]
pub(crate) fn resolve(s: &mut Scratch, task: u64, dirfd: i32, upath: u64) -> Built {
    let mut first = 0u8;
    // SAFETY: one byte into a local; the helper tolerates any address.
    let got = unsafe {
        generated::bpf_probe_read_user((&mut first as *mut u8).cast(), 1, upath as *const _)
    };
    if got != 0 {
        return Built {
            len: 0,
            flags: path_flags::READ_ERROR,
        };
    }
    let (start, mut flags) = if first == b'/' {
        (0usize, 0u32)
    } else {
        let (dentry, mnt) = if dirfd == AT_FDCWD {
            let fs: u64 = path::read(task, off!(task_fs));
            (
                path::read::<u64>(fs, off!(fs_pwd_dentry)),
                path::read::<u64>(fs, off!(fs_pwd_mnt)),
            )
        } else {
            let files: u64 = path::read(task, off!(task_files));
            let fdt: u64 = path::read(files, off!(files_fdt));
            let max_fds: u32 = path::read(fdt, off!(fdtable_max_fds));
            let fd_array: u64 = path::read(fdt, off!(fdtable_fd));
            let file: u64 = if dirfd >= 0 && (dirfd as u32) < max_fds {
                path::read(fd_array, dirfd as u64 * 8)
            } else {
                0
            };
            (
                path::read::<u64>(file, off!(file_f_path_dentry)),
                path::read::<u64>(file, off!(file_f_path_mnt)),
            )
        };
        let base = path::build(s, dentry, mnt);
        let mut flags = base.flags;
        if dentry == 0 || mnt == 0 {
            flags |= path_flags::READ_ERROR;
        }
        if base.flags & path_flags::TRUNCATED != 0 {
            // No room to append: the name cannot be built.
            flags |= path_flags::INCOMPLETE;
        }
        let len = base.len as usize & MASK;
        if len <= 1 {
            (1, flags) // the root: "/" + name
        } else {
            s.path[len] = b'/';
            (len + 1, flags)
        }
    };
    let start = start & MASK;
    // SAFETY: `start` <= 255 and 256 bytes fit in the 512-byte buffer.
    let n = unsafe {
        generated::bpf_probe_read_user_str(
            s.path.as_mut_ptr().add(start).cast(),
            EVENT_PATH_BYTES as u32,
            upath as *const _,
        )
    };
    if n <= 0 {
        return Built {
            len: start as u32,
            flags: flags | path_flags::READ_ERROR,
        };
    }
    let mut len = start + n as usize - 1;
    if len >= MASK {
        len = MASK;
        flags |= path_flags::TRUNCATED;
    }
    s.path[len & MASK] = 0;
    if !normalised(s, len) {
        flags |= path_flags::NOT_NORMALISED;
    }
    Built {
        len: len as u32,
        flags,
    }
}

/// Whether the path in the scratch space (`len` bytes) has no `.`, `..`
/// or empty component.
#[inline(always)]
fn normalised(s: &Scratch, len: usize) -> bool {
    let mut bad = 0u32;
    for i in 0..EVENT_PATH_BYTES - 1 {
        if i >= len {
            break;
        }
        if s.path[i] != b'/' {
            continue;
        }
        let next = s.path[i + 1];
        if next == b'/' {
            bad = 1;
            break;
        }
        if next == b'.' {
            let after = s.path[i + 2];
            if after == b'/' || after == b'.' || after == 0 {
                bad = 1;
                break;
            }
        }
    }
    bad == 0
}
