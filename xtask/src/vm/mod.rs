//! `cargo xtask vm`: run one command as root inside a throw-away QEMU guest.
//!
//! Why a VM at all: the kernel that CI and developers run here (6.18) refuses every program that
//! needs a BPF trampoline (`lsm/*`, `fentry`, ...), so BPF LSM enforcement can only be tested in
//! a guest whose kernel has BPF LSM enabled. This module downloads what that guest needs, boots
//! it, runs the command and hands back its exit status. The choices below are forced by what
//! was measured on this machine kind (see `/work/shared/kernel-facts.md`):
//!
//! * No KVM (nested virtualisation rejects a stock kernel), so QEMU runs with `-accel tcg`,
//!   single-threaded (`thread=single`): multi-threaded TCG with 2 vCPUs crashed ~4% of boots
//!   in the kernel's code patching. A `true` round trip takes about 4 s on an idle machine.
//! * Guest kernel: Debian's generic `linux-image-6.12.*-amd64-unsigned` (the `cloud-amd64` flavour
//!   has no 9p). Fetched with `apt-get download` because only package registries are reachable.
//!   Its modules ship as `.ko.xz` without `modules.dep`, so the five we need (netfs, 9pnet,
//!   9pnet_virtio, 9p, overlay) are decompressed on the host and `insmod`ed in a fixed order.
//! * QEMU: `apt-get install qemu-system-x86` would remove this machine's newer `qemu-utils`, so
//!   the packages apt *would* install (its own resolver, via `apt-get install -s`) are downloaded
//!   and `dpkg-deb -x`ed into the cache, and run with `LD_LIBRARY_PATH` and `-L` pointing there.
//! * Guest root filesystem: the host's `/`, shared read-only over virtio-9p, so host-built
//!   binaries (dynamically linked, same paths) run unchanged in the host's working directory.
//!   tmpfs overlays make /etc /tmp /var /root writable inside the guest only; `rw_dir` shares one
//!   host directory read-write at the same path for results. The initramfs is Debian's
//!   `busybox-static` plus the modules, written by a small newc writer here (no `cpio` needed).
//! * Exit status: the guest's init prints `WARDEN_VM_EXIT_<nonce>=<code>` on the serial console,
//!   which QEMU writes to a file that we tail; the nonce keeps the command's own output from
//!   faking it. PID 1 is busybox, never the command (BPF's `bpf_send_signal*` refuses PID 1).
//!   `panic=-1` + `-no-reboot` make a dying init end QEMU at once instead of waiting for the
//!   timeout; the timeout kills the QEMU process we started, by its PID.
//!
//! Nothing is written on the host outside the cache directory and one temporary directory
//! (plus whatever the command writes into `rw_dir`). The serial console carries about 90 KB/s
//! under TCG: write bulky results into `rw_dir`, not to stdout. `WARDEN_VM_KERNEL_PKG` pins
//! another kernel package for a fresh cache.
//!
//! Cache layout (`$WARDEN_CACHE/vm`, default `$HOME/.cache/warden/vm`):
//! ```text
//! debs/           the downloaded .deb files (reused if a setup is interrupted)
//! qemu/           qemu-system-x86 and its missing dependencies, extracted (usr/bin, usr/lib, usr/share)
//! kernel/vmlinuz  the guest kernel
//! base.cpio       initramfs part that never changes: busybox, the decompressed modules, /dev/console
//! ready           completion marker: once present, ensure_assets does nothing but read it
//! ```
//! Each run adds a tiny second newc archive (init scripts, command, environment) to a copy of
//! `base.cpio` in its temporary directory; the kernel unpacks concatenated archives in order.
//! The scripts therefore live in `init.rs` and changes to them take effect without a re-setup.

mod assets;
mod boot;
mod init;
mod initramfs;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

pub use assets::ensure_assets;
#[expect(
    unused_imports,
    reason = "keeps `vm::VmAssets` nameable for `run_in_vm` callers; the CLI only passes it along"
)]
pub use assets::VmAssets;
pub use boot::run_in_vm;

/// Passed explicitly although Debian's default list already contains `bpf`: the tests depend on
/// it, so it must not hinge on a config default.
pub const GUEST_LSM: &str = "lockdown,capability,landlock,yama,bpf";
/// The same without `bpf`: BPF LSM built but not active, as on Ubuntu's kernels (Warden then
/// decides execs and opens with `fmod_ret` on `security_*`).
pub const GUEST_LSM_NO_BPF: &str = "lockdown,capability,landlock,yama";

#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Whole run, boot included. QEMU is killed when it expires.
    pub timeout: Duration,
    /// Host directory shared read-write at the same path in the guest.
    pub rw_dir: Option<PathBuf>,
    /// `NAME` passes the host's value through (skipped if unset); `NAME=VALUE` sets it.
    /// The guest command otherwise gets only PATH, HOME, USER, LOGNAME, TERM=dumb and LANG.
    pub env: Vec<String>,
    /// Boot the kernel with `quiet` and echo only the command's output, not the boot log.
    pub quiet: bool,
    /// Echo the console (filtered by `quiet`) with `print!` while the guest runs, so test
    /// harnesses capture it like any other output.
    pub stream: bool,
    /// Working directory of the command in the guest; default: the host's current directory.
    pub cwd: Option<PathBuf>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The guest kernel's `lsm=` list; default `GUEST_LSM`.
    pub lsm: Option<String>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            timeout: Duration::from_secs(120),
            rw_dir: None,
            env: Vec::new(),
            quiet: true,
            stream: true,
            cwd: None,
            memory_mib: 1024,
            cpus: 2,
            lsm: None,
        }
    }
}

#[allow(
    dead_code,
    reason = "library API for the guest tests; the CLI does not read it"
)]
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// The command's exit status as the guest shell saw it (128+N when killed by signal N;
    /// 125 when the guest could not set up or enter the working directory).
    pub exit_code: i32,
    /// What the command wrote to stdout and stderr (interleaved, `\r` removed).
    pub output: String,
    /// The whole serial console, boot log included.
    pub console: String,
    pub elapsed: Duration,
}

/// `$WARDEN_CACHE/vm`, or `$HOME/.cache/warden/vm`.
pub fn default_cache_dir() -> PathBuf {
    let base = match std::env::var_os("WARDEN_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| OsString::from("/root"));
            PathBuf::from(home).join(".cache").join("warden")
        }
    };
    base.join("vm")
}

/// Convenience for tests: default cache, then `run_in_vm`.
#[allow(
    dead_code,
    reason = "library API for the guest tests; the CLI does not read it"
)]
pub fn run(cmd: &[String], opts: &VmOptions) -> Result<VmOutcome> {
    let assets = ensure_assets(&default_cache_dir())?;
    run_in_vm(&assets, cmd, opts)
}

#[derive(clap::Parser, Debug)]
#[command(
    name = "cargo xtask vm",
    about = "Run a command as root in a QEMU guest (Debian 6.12 kernel, BPF LSM on, host / read-only)"
)]
struct Cli {
    /// Seconds before QEMU is killed (boot included).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Host directory to share read-write at the same path.
    #[arg(long, value_name = "DIR")]
    rw: Option<PathBuf>,
    /// Pass NAME from this environment, or set NAME=VALUE, in the guest (repeatable).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Show the kernel's boot log too.
    #[arg(long, short)]
    verbose: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// The guest kernel's active LSM list (`lsm=`); without `bpf`, BPF LSM is built but not
    /// active, as on Ubuntu's kernels.
    #[arg(long, value_name = "LIST", default_value = GUEST_LSM)]
    lsm: String,
    /// Asset cache (default: $WARDEN_CACHE/vm or ~/.cache/warden/vm).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Command and arguments to run in the guest (after `--`, or after the last option).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    cmd: Vec<String>,
}

/// `cargo xtask vm [--timeout SECS] [--rw DIR] [--env NAME]... -- CMD...`; `args` excludes the
/// program and subcommand names. Returns the guest command's exit code.
pub fn main(args: Vec<String>) -> Result<i32> {
    use clap::Parser;
    let argv = std::iter::once("cargo xtask vm".to_string()).chain(args);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    let cache = cli.cache.clone().unwrap_or_else(default_cache_dir);
    let assets = ensure_assets(&cache)?;
    let opts = VmOptions {
        timeout: Duration::from_secs(cli.timeout),
        rw_dir: cli.rw,
        env: cli.env,
        quiet: !cli.verbose,
        stream: true,
        cwd: None,
        memory_mib: cli.memory,
        cpus: cli.cpus,
        lsm: Some(cli.lsm),
    };
    let outcome = run_in_vm(&assets, &cli.cmd, &opts)?;
    if cli.verbose {
        eprintln!(
            "warden vm: exit {} after {:.1} s",
            outcome.exit_code,
            outcome.elapsed.as_secs_f64()
        );
    }
    Ok(outcome.exit_code)
}
