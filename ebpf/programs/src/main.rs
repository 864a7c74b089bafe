//! Warden's kernel programs.
//!
//! Every program here decides from maps the daemon fills (policy is data, see
//! `warden_common`); nothing about any particular agent is compiled in.
//!
//! Hooks, one file per mechanism:
//! - `cgroup_sock`: cgroup sock_addr programs attached to each agent's
//!   cgroup, so processes outside agent cgroups never run them.
//! - `lsm`: BPF LSM hooks (`bprm_check_security`, `file_open`), used where
//!   the kernel runs BPF LSM: they deny by failing the syscall with EPERM,
//!   and a hold stops the thread inside execve or open, which restart.
//! - `fmod_ret`: the same decisions as `lsm`, as `fmod_ret` programs on
//!   `security_bprm_check` and `security_file_open`, where BPF LSM is built
//!   but not active.
//! - `lsm_names`: rename, link, unlink, mkdir, ... decided before they
//!   happen at BPF LSM `path_*` hooks and their `fmod_ret` twins on
//!   `security_path_*` (EPERM), beside `lsm`/`fmod_ret`.
//! - `lsm_sock`: packet sockets (`AF_PACKET`) decided at BPF LSM
//!   `socket_create` or `fmod_ret/security_socket_create` (EPERM).
//! - `hold_stop`: `fexit` after the cgroup sock_addr programs, stops a
//!   thread whose network action they held (instead of `sys_exit`, where
//!   trampolines work).
//! - `cache_epoch`: `fexit` on the kernel functions that rename and mount,
//!   moving the decision cache's epoch on where `lsm`/`fmod_ret` decide
//!   opens (no `sys_exit` there).
//! - `fallback`: the tracepoints used instead of `lsm` elsewhere.
//!   `fallback::exec`: `tp_btf/sched_process_exec`, a global tracepoint
//!   filtered on agent cgroups first; denies by SIGKILL before the first
//!   instruction, holds by SIGSTOP there. `fallback::sys_exit`: the one
//!   `tp_btf/sys_exit` program. It stops threads whose syscall a hook held
//!   for human approval, guards threads a fallback hold stopped
//!   (`fallback::hold`), and decides agents' file opens after the open
//!   syscalls (`fallback::file`; deny = SIGKILL, hold = SIGSTOP).
//!   `fallback::hold::warden_fault_guard`: `tp_btf/page_fault_user`,
//!   attached only while some policy holds execs on the fallback.
//!
//! - `egress`: `cgroup_skb/egress` on the cgroups of agents with a `bytes:
//!   egress` budget: counts sent bytes, drops packets past the limit.
//!
//! - `escape`: global tracepoints (`sched_process_fork`,
//!   `cgroup_attach_task`, `sched_process_exit`) that keep each agent's
//!   processes in `MEMBERS` and kill and record a process of an agent that
//!   appears in a cgroup outside the agent's subtree.
//!
//! What they share:
//! - `judge`: the decisions themselves (`judge::net`, `judge::exec`,
//!   `judge::file`), lookups in the maps that every hook of an action calls.
//! - `maps`: every map; `agent`: which agent is calling; `events`: the ring
//!   buffer records; `counters`: the per-CPU counters.
//! - `path`: the bounded dentry walk that resolves a file's path.
#![no_std]
#![no_main]
// `atomic_cxchg`: the BPF target has no `AtomicU64` (its spec says no
// CAS), but the kernel has BPF_CMPXCHG; the eBPF build runs with
// RUSTC_BOOTSTRAP (xtask/src/ebpf.rs), so the intrinsic is available.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics: the one way to BPF_CMPXCHG here (judge::budget)"
)]
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "aya-ebpf's map methods take `impl Borrow<K>`: a key passed by value is \
              copied first, which made the cgroup programs 40 instructions longer"
)]

mod agent;
mod cache_epoch;
mod cgroup_sock;
mod counters;
mod dns;
mod egress;
mod escape;
mod events;
mod fallback;
mod fmod_ret;
mod hold_stop;
mod judge;
mod lsm;
mod lsm_names;
mod lsm_sock;
mod maps;
mod path;
mod shadow;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
