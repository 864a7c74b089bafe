//! Exec and file-open decisions through `fmod_ret` on the kernel's
//! `security_*` functions, for kernels that build BPF LSM but do not run it
//! (no `bpf` in the active LSM list) while BPF trampolines work. The
//! verifier allows `BPF_MODIFY_RETURN` on any function named `security_*`
//! since 5.7, whichever LSMs are active.
//!
//! The decisions are the BPF LSM hooks' (`lsm::decide_exec`,
//! `lsm::decide_open`: same judges, same maps, same holds); only the deny
//! is recorded as `FmodRetDeny`. A non-zero return skips the function, and
//! with it every other LSM's check for this call, so these return non-zero
//! only to deny or hold; a non-zero `ret` from an earlier `fmod_ret`
//! program is passed through.
//!
//! aya cannot load `BPF_MODIFY_RETURN` programs: they sit in `fexit/...`
//! sections (which aya parses and leaves alone), and the daemon loads the
//! relocated instructions itself with the right attach type
//! (`daemon/src/kernel/fmod_ret.rs`). The `fexit` macro cannot be used: its
//! wrapper always returns 0.

use core::ffi::c_void;

use aya_ebpf::programs::FExitContext;
use warden_common::Method;

use crate::lsm::{decide_exec, decide_open};

/// `int security_bprm_check(struct linux_binprm *bprm)`; `ret` follows.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_bprm_check")]
pub fn warden_fmodret_exec(ctx: *mut c_void) -> i32 {
    let ctx = FExitContext::new(ctx);
    decide_exec(ctx.arg(0), ctx.arg(1), Method::FmodRetDeny)
}

/// `int security_file_open(struct file *file)`; `ret` follows. On overlayfs
/// it runs twice in one open (the overlay file, then the backing file):
/// `decide_open` decides the first and leaves the backing file alone.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_file_open")]
pub fn warden_fmodret_open(ctx: *mut c_void) -> i32 {
    let ctx = FExitContext::new(ctx);
    decide_open(ctx.arg(0), ctx.arg(1), Method::FmodRetDeny)
}
