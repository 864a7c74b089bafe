//! Resolving the path of an open `struct file` in the kernel, for the exec
//! and open programs.
//!
//! Outside BPF LSM and fentry there is no `bpf_d_path`, so the path is
//! rebuilt by a bounded walk up the dentry tree, crossing mount points, to
//! the root of the mount namespace's tree: the path the agent sees. It is
//! built from the kernel's own objects (the file the kernel opened or is
//! executing), never from user memory, so a racing thread that rewrites
//! the path buffer it passed cannot change what is judged.
//!
//! Field offsets come from the running kernel's BTF (`KernelOffsets`, read
//! by the daemon and frozen in `.rodata`); pointer chains are read with
//! `bpf_probe_read_kernel`.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::helpers::generated;
use warden_common::{
    path_flags, KernelOffsets, PathKey, DENTRY_SPAN_BYTES, EVENT_PATH_BYTES, MAX_PATH_DEPTH,
    PATH_KEY_BYTES, SLOT_PREFIX_BITS,
};

use crate::maps::PATH_SCRATCH;

/// Filled by the daemon from the kernel's BTF before the object is loaded.
/// `.rodata` is frozen at load, so the verifier sees these as constants.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    bprm_file: 0,
    bprm_filename: 0,
    file_f_inode: 0,
    file_f_mode: 0,
    file_f_path_dentry: 0,
    file_f_path_mnt: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    sb_s_dev: 0,
    dentry_d_parent: 0,
    dentry_d_name_name: 0,
    dentry_d_name_len: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    pt_regs_orig_ax: 0,
    task_ti_status: 0,
    valid: 0,
    file_f_flags: 0,
    task_start_time: 0,
    sb_s_magic: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_namespace_root: 0,
    pt_regs_di: 0,
    pt_regs_si: 0,
    pt_regs_dx: 0,
    pt_regs_r10: 0,
    task_fs: 0,
    fs_pwd_mnt: 0,
    fs_pwd_dentry: 0,
    task_tgid: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    cgroup_level: 0,
    cgroup_ancestors: 0,
    _pad_escape: 0,
    pt_regs_bx: 0,
    pt_regs_cx: 0,
    inode_i_nlink: 0,
    inode_i_generation: 0,
    inode_i_ctime_sec: 0,
    inode_i_ctime_nsec: 0,
    cache_valid: 0,
    _pad_cache: 0,
    dentry_d_sb: 0,
    sb_s_mounts: 0,
    mount_sb_link: 0,
    sb_mounts_kind: 0,
    task_cred: 0,
    task_real_cred: 0,
    mount_mnt_ns: 0,
    _pad_mnt_ns: 0,
};

/// One field offset of `KERNEL_OFFSETS`. Volatile, or LLVM folds the zero
/// initialiser into the code and the daemon's values are never read.
macro_rules! off {
    ($field:ident) => {{
        // SAFETY: a plain read of a static.
        let v = unsafe { ::core::ptr::read_volatile(&$crate::path::offsets().$field) };
        v as u64
    }};
}
pub(crate) use off;

pub fn offsets() -> &'static KernelOffsets {
    &KERNEL_OFFSETS
}

/// Whether the daemon filled `KERNEL_OFFSETS`.
#[inline(always)]
pub fn offsets_valid() -> bool {
    off!(valid) != 0
}

/// Reads a `T` at `base + offset` in kernel memory; zero if the read fails
/// (0 and bad addresses never fault). The helper zero-fills its buffer on
/// failure, so its return code is not looked at: one verifier path instead
/// of two per read, which keeps the walk's state count low.
#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u64) -> T {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes all size_of::<T>() bytes of `v` (the value,
    // or zeros on failure) and tolerates any source address.
    unsafe {
        generated::bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(offset) as *const _,
        );
        v.assume_init()
    }
}

/// Per-CPU scratch space. Starts with the exact layout of an LPM lookup key
/// (`prefix_len`, then `PathKey`), so the built path is looked up in place.
/// The path buffer is twice the event's path so that masked writes of up to
/// 255 bytes at offsets up to 255 stay inside it.
#[repr(C)]
pub struct Scratch {
    pub prefix_len: u32,
    pub slot: u32,
    pub path: [u8; 2 * EVENT_PATH_BYTES],
    /// `d_name.name` of walk step i (leaf first); 0 for a mount crossing.
    names: [u64; MAX_PATH_DEPTH],
    lens: [u32; MAX_PATH_DEPTH],
    // Loop-carried state of the walk, kept here behind volatile accesses:
    // in registers each branch combination is a separate verifier state and
    // the 128-step loop goes over the 1M-instruction limit.
    cur_dentry: u64,
    cur_mount: u64,
    cur_root: u64,
    end: u32,
    off: u32,
    flags: u32,
    depth: u32,
    /// Bumped by every walk on this CPU. A walk that finds it changed at its
    /// end was preempted by another (possible on fully preemptible kernels)
    /// and its buffers are not its own any more.
    generation: u64,
    /// What the caller needs after the walk, parked here (see `park`).
    carry: Carry,
    /// The decision cache's epoch and `cache_state` bits, parked across
    /// the walk for the same reason as `carry` (`park_cache`).
    cache_epoch: u64,
    cache_state: u32,
    _cache_pad: u32,
    /// What the open fallback leaves for the shadow candidate's tail call
    /// (`park_shadow`): 1 when it is to run, the walk's length and flags.
    shadow_pending: u32,
    shadow_len: u32,
    shadow_flags: u32,
    /// The judged decision and rule (`Decision as u32`, rule index).
    shadow_decision: u32,
    shadow_rule: u32,
    _shadow_pad: u32,
}

/// Parks what a `shadow:` candidate's lookup needs after the enforced
/// decision (`fallback::shadow`): whether it runs, and the built path's
/// length and flags (the path and `Carry` stay in the scratch space).
#[inline(always)]
pub fn park_shadow(s: &mut Scratch, pending: u32, len: u32, flags: u32, judged: (u32, u32)) {
    // SAFETY: fields of this CPU's scratch value.
    unsafe {
        write_volatile(&mut s.shadow_pending, pending);
        write_volatile(&mut s.shadow_len, len);
        write_volatile(&mut s.shadow_flags, flags);
        write_volatile(&mut s.shadow_decision, judged.0);
        write_volatile(&mut s.shadow_rule, judged.1);
    }
}

/// The judged `(Decision as u32, rule)` `park_shadow` stored.
#[inline(always)]
pub fn shadow_judged(s: &Scratch) -> (u32, u32) {
    // SAFETY: fields of this CPU's scratch value.
    unsafe {
        (
            read_volatile(&s.shadow_decision),
            read_volatile(&s.shadow_rule),
        )
    }
}

/// Whether `park_shadow` left a lookup pending.
#[inline(always)]
pub fn shadow_pending(s: &Scratch) -> bool {
    // SAFETY: a field of this CPU's scratch value.
    unsafe { read_volatile(&s.shadow_pending) != 0 }
}

/// Takes what `park_shadow` stored, once: `(len, flags)` if pending.
#[inline(always)]
pub fn take_shadow(s: &mut Scratch) -> Option<Built> {
    // SAFETY: fields of this CPU's scratch value.
    unsafe {
        if read_volatile(&s.shadow_pending) == 0 {
            return None;
        }
        write_volatile(&mut s.shadow_pending, 0);
        Some(Built {
            len: read_volatile(&s.shadow_len),
            flags: read_volatile(&s.shadow_flags),
        })
    }
}

/// Bits of the parked `cache_state`.
pub mod cache_state {
    /// An allow may be remembered (the cache is on for this open).
    pub const ON: u32 = 1;
    /// The agent's decision counter already counted this open.
    pub const COUNTED: u32 = 2;
}

/// Parks the decision cache's epoch and state (see `Carry`).
#[inline(always)]
pub fn park_cache(s: &mut Scratch, epoch: u64, state: u32) {
    // SAFETY: fields of this CPU's scratch value.
    unsafe {
        write_volatile(&mut s.cache_epoch, epoch);
        write_volatile(&mut s.cache_state, state);
    }
}

/// Reads back what `park_cache` stored.
#[inline(always)]
pub fn unpark_cache(s: &Scratch) -> (u64, u32) {
    // SAFETY: fields of this CPU's scratch value.
    unsafe { (read_volatile(&s.cache_epoch), read_volatile(&s.cache_state)) }
}

/// Values a program computes before the walk and uses after it.
///
/// Verifier: a value that reaches the walk in a register, and is tested in
/// a branch after it, makes the verifier explore the 128-step walk once per
/// distinct value (a revoked agent, an open with no access, a failed read
/// each pass through it again), which goes over the 1M-instruction limit.
/// Parked in the map value and read back with volatile loads, these are
/// unknown scalars to the verifier, and the walk is explored once.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Carry {
    pub cgroup_id: u64,
    pub ino: u64,
    pub filename: u64,
    pub agent_id: u32,
    pub policy_gen: u32,
    pub slot: u32,
    pub agent_flags: u32,
    pub dev: u32,
    /// `path_flags` found before the walk.
    pub flags: u32,
    pub access: u32,
    pub syscall: u32,
    pub compat: u32,
    pub _pad: u32,
}

/// Parks `carry` in the scratch space (see `Carry`).
#[inline(always)]
pub fn park(s: &mut Scratch, carry: Carry) {
    // SAFETY: a field of this CPU's scratch value.
    unsafe { write_volatile(&mut s.carry, carry) }
}

/// Reads back what `park` stored.
#[inline(always)]
pub fn unpark(s: &Scratch) -> Carry {
    // SAFETY: a field of this CPU's scratch value.
    unsafe { read_volatile(&s.carry) }
}

/// The path the walk built into the scratch space.
pub struct Built {
    /// Bytes of path (without the NUL).
    pub len: u32,
    /// `path_flags`.
    pub flags: u32,
}

macro_rules! get {
    ($p:expr) => {
        // SAFETY: a field of this CPU's scratch value.
        unsafe { read_volatile(&$p) }
    };
}
macro_rules! set {
    ($p:expr, $v:expr) => {{
        let v = $v;
        // SAFETY: a field of this CPU's scratch value.
        unsafe { write_volatile(&mut $p, v) }
    }};
}

/// This CPU's scratch space.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    let ptr = PATH_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a per-CPU map value; programs on this CPU run one at a time
    // except when preempted, which `generation` detects.
    Some(unsafe { &mut *ptr })
}

/// Builds the absolute path of (dentry, vfsmount) into `s.path`.
///
/// Phase 1 walks from the leaf to the root, one slot per step (a component,
/// or a mount crossing: at a mount's root it continues from the mount point
/// in the parent mount). Phase 2 writes the components root first, so a
/// path too long for the buffer keeps its prefix (what directory rules
/// match) and loses its tail.
#[inline(always)]
pub fn build(s: &mut Scratch, dentry: u64, vfsmount: u64) -> Built {
    let generation = get!(s.generation).wrapping_add(1);
    set!(s.generation, generation);

    // One read per step covers d_parent and d_name (`DENTRY_SPAN_BYTES`;
    // the daemon checked the layout): the 8-byte words of `name` and `len`
    // in that span, and where `len` sits in its word.
    let o_parent = off!(dentry_d_parent);
    let name_word = (off!(dentry_d_name_name) - o_parent) / 8;
    let len_rel = off!(dentry_d_name_len) - o_parent;
    let len_word = len_rel / 8;
    let len_shift = (len_rel % 8) * 8;
    let o_root = off!(vfsmount_mnt_root);
    let o_mnt = off!(mount_mnt);
    let o_mparent = off!(mount_mnt_parent);
    let o_mpoint = off!(mount_mnt_mountpoint);

    set!(s.cur_dentry, dentry);
    // container_of(vfsmount, struct mount, mnt)
    set!(s.cur_mount, vfsmount.wrapping_sub(o_mnt));
    set!(s.cur_root, read::<u64>(vfsmount, o_root));
    set!(s.flags, path_flags::INCOMPLETE);
    set!(s.end, MAX_PATH_DEPTH as u32);
    for i in 0..MAX_PATH_DEPTH {
        let d = get!(s.cur_dentry);
        let span = read::<[u64; DENTRY_SPAN_WORDS]>(d, o_parent);
        let parent = span[0];
        if parent == 0 {
            // Every dentry has a parent (the root is its own): a failed read.
            set!(s.flags, get!(s.flags) | path_flags::READ_ERROR);
            set!(s.end, i as u32);
            break;
        }
        let root = get!(s.cur_root);
        if d == parent && d != root {
            // A dentry outside any mount tree (memfd, nsfs, pipefs): keep
            // its name for the record, and say it is anonymous.
            set!(s.names[i], word(&span, name_word));
            set!(
                s.lens[i],
                (word(&span, len_word) >> (len_shift & 63)) as u32
            );
            set!(
                s.flags,
                (get!(s.flags) & !path_flags::INCOMPLETE) | path_flags::ANONYMOUS
            );
            set!(s.end, i as u32 + 1);
            break;
        }
        if d == root {
            let mnt = get!(s.cur_mount);
            let mparent = read::<u64>(mnt, o_mparent);
            if mparent == mnt || mparent == 0 {
                // The root of a mount tree: done (whose tree is checked
                // after the loop).
                set!(s.flags, get!(s.flags) & !path_flags::INCOMPLETE);
                set!(s.end, i as u32);
                break;
            }
            set!(s.cur_dentry, read::<u64>(mnt, o_mpoint));
            set!(s.cur_mount, mparent);
            set!(s.cur_root, read::<u64>(mparent.wrapping_add(o_mnt), o_root));
            set!(s.flags, get!(s.flags) | path_flags::CROSSED_MOUNT);
            set!(s.names[i], 0);
            set!(s.lens[i], 0);
            continue;
        }
        set!(s.names[i], word(&span, name_word));
        set!(
            s.lens[i],
            (word(&span, len_word) >> (len_shift & 63)) as u32
        );
        set!(s.cur_dentry, parent);
    }

    // The tree the walk ended in must be the acting process's own: a
    // detached mount (open_tree clone) or an internal one (shm, the memfd
    // mount) ends in a root of its own, and its "path" is not a real one.
    if get!(s.flags) & (path_flags::INCOMPLETE | path_flags::READ_ERROR | path_flags::ANONYMOUS)
        == 0
    {
        // SAFETY: a helper without arguments.
        let task = unsafe { generated::bpf_get_current_task() };
        let nsproxy = read::<u64>(task, off!(task_nsproxy));
        let ns = read::<u64>(nsproxy, off!(nsproxy_mnt_ns));
        let ns_root = read::<u64>(ns, off!(mnt_namespace_root));
        if ns_root == 0 || ns_root != get!(s.cur_mount) {
            set!(s.flags, get!(s.flags) | path_flags::DETACHED);
        }
    }

    const MASK: usize = EVENT_PATH_BYTES - 1;
    set!(s.off, 0);
    set!(s.depth, 0);
    for j in 0..MAX_PATH_DEPTH {
        // `end` is re-read every iteration: a register compared with `j`
        // would carry a different range on each path and defeat pruning.
        let end = get!(s.end) as usize;
        if j >= end {
            break;
        }
        let i = end - 1 - j;
        if i >= MAX_PATH_DEPTH {
            break; // a bound for the verifier
        }
        let name = get!(s.names[i]);
        if name == 0 {
            continue; // a mount crossing
        }
        set!(s.depth, get!(s.depth) + 1);
        let off = get!(s.off) as usize & MASK;
        if off >= MASK {
            set!(s.flags, get!(s.flags) | path_flags::TRUNCATED);
            break;
        }
        s.path[off] = b'/';
        let off = off + 1;
        let len = get!(s.lens[i]) as usize;
        let room = MASK - off;
        let n = if len < room { len } else { room };
        // SAFETY: the destination is inside s.path: off <= 255 and
        // n & 255 <= 255 in a 512-byte buffer. Masks for the verifier.
        unsafe {
            generated::bpf_probe_read_kernel(
                s.path.as_mut_ptr().add(off & MASK).cast(),
                (n & MASK) as u32,
                name as *const _,
            );
        }
        set!(s.off, (off + n) as u32);
        if n < len {
            set!(s.flags, get!(s.flags) | path_flags::TRUNCATED);
            break;
        }
    }
    let mut len = get!(s.off) as usize & MASK;
    if len == 0 {
        s.path[0] = b'/';
        len = 1;
    }
    let len = proc_self(s, len);
    // Exact rules end with the NUL; directory rules end with '/'. Bytes
    // after the NUL are never compared, so they need no clearing.
    s.path[len] = 0;
    let mut flags = get!(s.flags);
    if get!(s.generation) != generation {
        flags |= path_flags::SCRATCH_RACE;
    }
    Built {
        len: len as u32,
        flags,
    }
}

/// `/proc/self`: 10 bytes.
const PROC_SELF: &[u8; 10] = b"/proc/self";
/// Digits of a pid (pid_max is at most 2^22).
const PID_DIGITS: usize = 10;

/// Rewrites `/proc/<pid>` to `/proc/self` when `<pid>` is the acting
/// process (its thread group id), so that a rule for `/proc/self/maps`
/// matches the process's own `/proc/PID/maps` and no other process's.
/// Returns the new length (the tail past 255 bytes is cut and flagged).
/// The pid is the one of the initial pid namespace: an agent with a pid
/// namespace and its own /proc is not rewritten (see policies/README.md).
#[inline(always)]
fn proc_self(s: &mut Scratch, len: usize) -> usize {
    const MASK: usize = EVENT_PATH_BYTES - 1;
    if len < 7 || s.path[..6] != PROC_SELF[..6] {
        return len;
    }
    // SAFETY: a helper without arguments.
    let tgid = unsafe { generated::bpf_get_current_pid_tgid() } >> 32;
    let mut pid: u64 = 0;
    let mut end = 6;
    for k in 0..PID_DIGITS {
        let c = s.path[6 + k];
        if !c.is_ascii_digit() {
            break;
        }
        pid = pid * 10 + u64::from(c - b'0');
        end = 7 + k;
    }
    // Digits up to the end or a '/', and the number is ours (a leading 0
    // is never a pid, so `/proc/01` stays as it is).
    if end == 6 || pid != tgid || s.path[6] == b'0' || (end < len && s.path[end] != b'/') {
        return len;
    }
    if end > len {
        return len;
    }
    let tail = (len - end) & MASK;
    let room = MASK - PROC_SELF.len();
    let n = if tail < room { tail } else { room };
    // The tail goes to the upper half and back: the helper's copy must not
    // overlap itself.
    // SAFETY: both regions are inside s.path (2 * 256 bytes): end <= 16 and
    // n <= 245; the upper half starts at 256.
    unsafe {
        generated::bpf_probe_read_kernel(
            s.path.as_mut_ptr().add(EVENT_PATH_BYTES).cast(),
            (n & MASK) as u32,
            s.path.as_ptr().add(end & 31).cast(),
        );
    }
    s.path[6..10].copy_from_slice(&PROC_SELF[6..]);
    // SAFETY: as above.
    unsafe {
        generated::bpf_probe_read_kernel(
            s.path.as_mut_ptr().add(PROC_SELF.len()).cast(),
            (n & MASK) as u32,
            s.path.as_ptr().add(EVENT_PATH_BYTES).cast(),
        );
    }
    if n < tail {
        set!(s.flags, get!(s.flags) | path_flags::TRUNCATED);
    }
    PROC_SELF.len() + n
}

const DENTRY_SPAN_WORDS: usize = DENTRY_SPAN_BYTES as usize / 8;

/// Word `i` of a span, with constant indices only (no variable stack
/// offset for the verifier).
#[inline(always)]
fn word(span: &[u64; DENTRY_SPAN_WORDS], i: u64) -> u64 {
    match i {
        0 => span[0],
        1 => span[1],
        2 => span[2],
        _ => span[3],
    }
}

/// The LPM key for the built path under `slot`, in place in the scratch
/// space: the path with its NUL, or only the bytes that fit when the path
/// is too long for the key (then only directory rules can match).
#[inline(always)]
pub fn key<'a>(
    s: &'a mut Scratch,
    slot: u32,
    built: &Built,
) -> &'a aya_ebpf::maps::lpm_trie::Key<PathKey> {
    let with_nul = if built.flags & path_flags::TRUNCATED != 0 {
        built.len
    } else {
        built.len + 1
    };
    let bytes = if with_nul > PATH_KEY_BYTES as u32 {
        PATH_KEY_BYTES as u32
    } else {
        with_nul
    };
    s.slot = slot;
    s.prefix_len = SLOT_PREFIX_BITS + 8 * bytes;
    // SAFETY: Scratch starts with the layout of Key<PathKey> (u32
    // prefix_len, u32 slot, then at least PATH_KEY_BYTES of path), and the
    // pointer is to a map value that outlives the lookup.
    unsafe { &*(s as *const Scratch).cast::<aya_ebpf::maps::lpm_trie::Key<PathKey>>() }
}

/// Copies the built path into an event's path field.
#[inline(always)]
pub fn copy_to(dst: *mut [u8; EVENT_PATH_BYTES], s: &Scratch) {
    // SAFETY: both are valid EVENT_PATH_BYTES-byte regions (the scratch
    // path is twice that).
    unsafe {
        generated::bpf_probe_read_kernel(
            dst.cast(),
            EVENT_PATH_BYTES as u32,
            s.path.as_ptr().cast(),
        );
    }
}

/// The identity and location of an open file: reads `file->f_inode` (dev,
/// ino) and `file->f_path`.
pub struct FileFacts {
    pub dev: u32,
    pub ino: u64,
    pub dentry: u64,
    pub vfsmount: u64,
    /// `path_flags::READ_ERROR` when something is missing.
    pub flags: u32,
}

#[inline(always)]
pub fn file_facts(file: u64) -> FileFacts {
    let inode: u64 = read(file, off!(file_f_inode));
    let ino: u64 = read(inode, off!(inode_i_ino));
    let sb: u64 = read(inode, off!(inode_i_sb));
    let dev: u32 = read(sb, off!(sb_s_dev));
    let dentry: u64 = read(file, off!(file_f_path_dentry));
    let vfsmount: u64 = read(file, off!(file_f_path_mnt));
    let missing = file == 0 || inode == 0 || dentry == 0 || vfsmount == 0;
    FileFacts {
        dev,
        ino,
        dentry,
        vfsmount,
        flags: if missing { path_flags::READ_ERROR } else { 0 },
    }
}

/// Whether an opened `struct file` is not a file the file rules decide:
/// an anonymous pipe or a socket (reached by reopening `/dev/fd/N` or
/// `/proc/PID/fd/N`, like cargo's jobserver pipe, whose path resolves to
/// `/`), or an anonymous inode: told by the file system it lives on
/// (pipefs, sockfs, anon_inodefs), which nothing can mount. A named FIFO on
/// disk, a memfd (tmpfs), device nodes and every other file are decided.
#[inline(always)]
pub fn not_a_file(file: u64) -> bool {
    // include/uapi/linux/magic.h
    const PIPEFS_MAGIC: u64 = 0x5049_5045;
    const SOCKFS_MAGIC: u64 = 0x534F_434B;
    const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;
    let inode: u64 = read(file, off!(file_f_inode));
    let sb: u64 = read(inode, off!(inode_i_sb));
    let magic: u64 = read(sb, off!(sb_s_magic));
    magic == PIPEFS_MAGIC || magic == SOCKFS_MAGIC || magic == ANON_INODE_FS_MAGIC
}

/// Flags that make a path unusable for a decision: refused (fail closed).
pub const UNRESOLVED_FLAGS: u32 = path_flags::INCOMPLETE
    | path_flags::READ_ERROR
    | path_flags::SCRATCH_RACE
    | path_flags::NO_OFFSETS
    | path_flags::DETACHED
    | path_flags::ANONYMOUS
    | path_flags::NOT_NORMALISED
    | path_flags::TOO_MANY_MOUNTS;
