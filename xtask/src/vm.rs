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
//! The scripts therefore live in this file and changes to them take effect without a re-setup.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

/// Bump when the cache layout changes, so an old cache is rebuilt instead of misread.
const LAYOUT: &str = "1";
const READY: &str = "ready";
/// Modules the guest needs for its root filesystem, in load order (no modules.dep to ask).
const MODULES: [&str; 5] = ["netfs", "9pnet", "9pnet_virtio", "9p", "overlay"];
/// Passed explicitly although Debian's default list already contains `bpf`: the tests depend on
/// it, so it must not hinge on a config default.
pub const GUEST_LSM: &str = "lockdown,capability,landlock,yama,bpf";
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything `run_in_vm` needs, all inside the cache directory (or the host, for firmware if
/// the host already has qemu-system-x86 installed).
#[allow(
    dead_code,
    reason = "library API for the guest tests; the CLI does not read it"
)]
#[derive(Debug, Clone)]
pub struct VmAssets {
    pub dir: PathBuf,
    pub qemu: PathBuf,
    /// Directories to put on `LD_LIBRARY_PATH` for `qemu`.
    pub library_path: Vec<PathBuf>,
    /// Directories passed to QEMU with `-L` (BIOS, option ROMs).
    pub firmware_dirs: Vec<PathBuf>,
    pub kernel: PathBuf,
    pub kernel_release: String,
    pub base_initramfs: PathBuf,
}

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

// ---------------------------------------------------------------------------------------------
// Assets
// ---------------------------------------------------------------------------------------------

/// Download and prepare the guest kernel, QEMU and the base initramfs into `cache` (the `vm`
/// directory itself). A second call only reads the completion marker.
pub fn ensure_assets(cache: &Path) -> Result<VmAssets> {
    if let Some(assets) = read_ready(cache) {
        return Ok(assets);
    }
    // Tests call this from many threads and possibly several processes at once: one in-process
    // mutex plus a lock directory so only one of them downloads.
    static LOCAL: Mutex<()> = Mutex::new(());
    let _local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
    fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let _lock = DirLock::acquire(&cache.join(".lock"))?;
    if let Some(assets) = read_ready(cache) {
        return Ok(assets);
    }
    let started = Instant::now();
    eprintln!(
        "warden vm: preparing guest assets in {} (one time)",
        cache.display()
    );
    prepare(cache)?;
    let assets = read_ready(cache).ok_or_else(|| {
        anyhow!(
            "assets prepared but {} is unreadable",
            cache.join(READY).display()
        )
    })?;
    eprintln!(
        "warden vm: assets ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(assets)
}

fn read_ready(cache: &Path) -> Option<VmAssets> {
    let text = fs::read_to_string(cache.join(READY)).ok()?;
    let kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    if kv.get("layout") != Some(&LAYOUT) {
        return None;
    }
    let assets = VmAssets {
        dir: cache.to_path_buf(),
        qemu: cache.join("qemu/usr/bin/qemu-system-x86_64"),
        library_path: qemu_library_path(&cache.join("qemu")),
        firmware_dirs: firmware_dirs(&cache.join("qemu")),
        kernel: cache.join("kernel/vmlinuz"),
        kernel_release: kv.get("kernel_release")?.to_string(),
        base_initramfs: cache.join("base.cpio"),
    };
    // A half-deleted cache must not pass for a complete one.
    for p in [&assets.qemu, &assets.kernel, &assets.base_initramfs] {
        if !p.is_file() {
            return None;
        }
    }
    Some(assets)
}

fn qemu_library_path(qemu_root: &Path) -> Vec<PathBuf> {
    // Debian 12 packages still put some libraries in /lib (libnl-3-200 does): both are needed.
    ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
        .iter()
        .map(|d| qemu_root.join(d))
        .filter(|d| d.is_dir())
        .collect()
}

fn firmware_dirs(qemu_root: &Path) -> Vec<PathBuf> {
    let private: Vec<PathBuf> = ["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"]
        .iter()
        .map(|d| qemu_root.join(d))
        .filter(|d| d.is_dir())
        .collect();
    if private.iter().any(|d| d.join("bios-256k.bin").exists()) {
        return private;
    }
    // The host already had seabios & co, so apt did not list them: use the host's copies.
    let mut dirs = private;
    dirs.extend(
        [
            "/usr/share/qemu",
            "/usr/share/seabios",
            "/usr/lib/ipxe/qemu",
        ]
        .iter()
        .map(PathBuf::from)
        .filter(|d| d.is_dir()),
    );
    dirs
}

fn prepare(cache: &Path) -> Result<()> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;

    ensure_apt_lists()?;
    let kernel_pkg = pick_kernel_package()?;
    let qemu_pkgs = qemu_packages()?;
    let mut wanted: Vec<String> = qemu_pkgs.clone();
    wanted.push("busybox-static".into());
    wanted.push(kernel_pkg.clone());
    if let Err(first) = download(&debs, &wanted) {
        // Stale package lists give 404s for superseded versions: refresh once and re-resolve.
        eprintln!("warden vm: download failed ({first:#}); running apt-get update and retrying");
        run_checked(apt("apt-get").arg("update"))?;
        return prepare_after_update(cache);
    }
    build(cache, &kernel_pkg, &qemu_pkgs)
}

fn prepare_after_update(cache: &Path) -> Result<()> {
    let debs = cache.join("debs");
    let kernel_pkg = pick_kernel_package()?;
    let qemu_pkgs = qemu_packages()?;
    let mut wanted = qemu_pkgs.clone();
    wanted.push("busybox-static".into());
    wanted.push(kernel_pkg.clone());
    download(&debs, &wanted)?;
    build(cache, &kernel_pkg, &qemu_pkgs)
}

fn build(cache: &Path, kernel_pkg: &str, qemu_pkgs: &[String]) -> Result<()> {
    let debs = cache.join("debs");
    let staging = cache.join("staging");
    remove_if_exists(&staging)?;
    fs::create_dir_all(&staging)?;

    // QEMU: extract every package into a fresh tree, then swap it in.
    let qemu_new = staging.join("qemu");
    fs::create_dir_all(&qemu_new)?;
    for pkg in qemu_pkgs {
        let deb =
            deb_file(&debs, pkg)?.ok_or_else(|| anyhow!("{pkg}.deb missing after download"))?;
        run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&qemu_new))?;
    }
    check_qemu(&qemu_new)?;

    // busybox-static: one static binary, also used on the host to decompress the modules.
    let bb_dir = staging.join("busybox");
    let bb_deb =
        deb_file(&debs, "busybox-static")?.ok_or_else(|| anyhow!("busybox-static.deb missing"))?;
    run_checked(Command::new("dpkg-deb").arg("-x").arg(&bb_deb).arg(&bb_dir))?;
    let busybox = bb_dir.join("bin/busybox");
    if !busybox.is_file() {
        bail!("{} has no bin/busybox", bb_deb.display());
    }

    // Kernel: only the image and a handful of modules out of ~400 MB, straight from the tar
    // stream so the rest never touches the disk.
    let kdir = staging.join("kernel-deb");
    fs::create_dir_all(&kdir)?;
    let kdeb = deb_file(&debs, kernel_pkg)?.ok_or_else(|| anyhow!("{kernel_pkg}.deb missing"))?;
    let mut patterns = vec![
        "*/boot/vmlinuz-*".to_string(),
        "*/modules.builtin".to_string(),
    ];
    patterns.extend(MODULES.iter().map(|m| format!("*/{m}.ko*")));
    extract_from_deb(&kdeb, &kdir, &patterns)?;
    let vmlinuz = find_files(&kdir, &|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vmlinuz-"))
    })
    .into_iter()
    .next()
    .ok_or_else(|| anyhow!("no boot/vmlinuz-* in {}", kdeb.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or_else(|| anyhow!("odd kernel image name {}", vmlinuz.display()))?
        .to_string();
    let builtin = find_files(&kdir, &|p| {
        p.file_name().is_some_and(|n| n == "modules.builtin")
    })
    .first()
    .map(|p| fs::read_to_string(p).unwrap_or_default())
    .unwrap_or_default();

    let mut cpio = Newc::new(0);
    for d in [
        "bin", "dev", "proc", "sys", "newroot", "ovl", "modules", "warden",
    ] {
        cpio.dir(d, 0o755);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &fs::read(&busybox)?);
    for m in MODULES {
        let found = find_files(&kdir, &|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == format!("{m}.ko") || n.starts_with(&format!("{m}.ko.")))
        });
        let Some(ko) = found.first() else {
            if builtin.lines().any(|l| l.ends_with(&format!("/{m}.ko"))) {
                continue; // built in: nothing to load
            }
            bail!("module {m} is neither in {} nor built in", kdeb.display());
        };
        let data = decompress_module(&busybox, ko)?;
        cpio.file(&format!("modules/{m}.ko"), 0o644, &data);
    }
    let mut base = cpio.finish();
    // Pad to a 512-byte boundary, as cpio(1) does; the per-run archive follows it.
    base.resize(base.len().div_ceil(512) * 512, 0);

    // Swap everything into place, marker last.
    let kernel_dir = cache.join("kernel");
    remove_if_exists(&kernel_dir)?;
    fs::create_dir_all(&kernel_dir)?;
    fs::copy(&vmlinuz, kernel_dir.join("vmlinuz"))?;
    fs::write(cache.join("base.cpio"), &base)?;
    let qemu_dir = cache.join("qemu");
    remove_if_exists(&qemu_dir)?;
    fs::rename(&qemu_new, &qemu_dir)?;
    remove_if_exists(&staging)?;
    let ready = format!(
        "layout={LAYOUT}\nkernel_package={kernel_pkg}\nkernel_release={release}\nqemu_packages={}\n",
        qemu_pkgs.join(" ")
    );
    let tmp = cache.join(".ready.tmp");
    fs::write(&tmp, ready)?;
    fs::rename(&tmp, cache.join(READY))?;
    Ok(())
}

fn apt(program: &str) -> Command {
    let mut c = Command::new(program);
    // Stable, parseable output and no prompts.
    c.env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    c
}

/// `apt-cache` finds nothing on a fresh machine until `apt-get update` has run once.
fn ensure_apt_lists() -> Result<()> {
    let out = run_checked(apt("apt-cache").args(["policy", "qemu-system-x86"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let has_candidate = text
        .lines()
        .any(|l| l.trim_start().starts_with("Candidate:") && !l.contains("(none)"));
    if !has_candidate {
        eprintln!("warden vm: apt knows no qemu-system-x86; running apt-get update");
        run_checked(apt("apt-get").arg("update"))?;
    }
    Ok(())
}

/// Newest `linux-image-6.12.N+debX-amd64-unsigned` (generic flavour: cloud lacks 9p).
/// `WARDEN_VM_KERNEL_PKG` pins another package name.
fn pick_kernel_package() -> Result<String> {
    if let Some(p) = std::env::var("WARDEN_VM_KERNEL_PKG")
        .ok()
        .filter(|p| !p.is_empty())
    {
        return Ok(p);
    }
    let search = || -> Result<Vec<(u64, String)>> {
        let out = run_checked(apt("apt-cache").args([
            "search",
            "--names-only",
            r"^linux-image-6\.12\..*-amd64-unsigned$",
        ]))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|name| {
                let mid = name
                    .strip_prefix("linux-image-6.12.")?
                    .strip_suffix("-amd64-unsigned")?;
                // "115+deb12" is the generic flavour; "115+deb12-cloud", "-rt" are not.
                if mid.contains('-') {
                    return None;
                }
                let patch: String = mid.chars().take_while(|c| c.is_ascii_digit()).collect();
                Some((patch.parse().ok()?, name.to_string()))
            })
            .collect())
    };
    let mut found = search()?;
    if found.is_empty() {
        run_checked(apt("apt-get").arg("update"))?;
        found = search()?;
    }
    found.sort();
    found
        .pop()
        .map(|(_, n)| n)
        .ok_or_else(|| anyhow!("apt-cache finds no linux-image-6.12.*-amd64-unsigned package"))
}

/// What apt itself would install for qemu-system-x86 without recommends: exactly the packages
/// missing on this host, resolved by apt's own resolver (alternatives, virtual packages).
fn qemu_packages() -> Result<Vec<String>> {
    let out = run_checked(apt("apt-get").args([
        "install",
        "-s",
        "--no-install-recommends",
        "qemu-system-x86",
    ]))?;
    let mut pkgs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| p.split(':').next().unwrap_or(p).to_string())
        .collect();
    if !pkgs.iter().any(|p| p == "qemu-system-x86") {
        // Already installed on the host: still take a private copy of the binary package, its
        // libraries are then all present.
        pkgs.push("qemu-system-x86".into());
    }
    Ok(pkgs)
}

/// `.deb` for `pkg` in `dir` (file names are `name_version_arch.deb`; names have no `_`).
fn deb_file(dir: &Path, pkg: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{pkg}_");
    for e in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(dir.join(name)));
        }
    }
    Ok(None)
}

fn download(debs: &Path, pkgs: &[String]) -> Result<()> {
    let mut missing = Vec::new();
    for p in pkgs {
        if deb_file(debs, p)?.is_none() {
            missing.push(p.clone());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("warden vm: apt-get download {}", missing.join(" "));
    // Download into a side directory and move complete files in, so an interrupted download
    // never leaves a truncated .deb that would later be taken as present.
    let dl = debs.join(".dl");
    remove_if_exists(&dl)?;
    fs::create_dir_all(&dl)?;
    let mut cmd = apt("apt-get");
    if is_root() {
        // The _apt sandbox user cannot enter /root/.cache; downloading as root is what apt does
        // anyway after warning about it.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg("download").args(&missing).current_dir(&dl);
    run_checked(&mut cmd)?;
    for e in fs::read_dir(&dl)? {
        let e = e?;
        fs::rename(e.path(), debs.join(e.file_name()))?;
    }
    fs::remove_dir(&dl)?;
    Ok(())
}

fn extract_from_deb(deb: &Path, dest: &Path, patterns: &[String]) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let stdout = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let mut tar = Command::new("tar");
    tar.arg("-x")
        .arg("-C")
        .arg(dest)
        .args(["--wildcards", "--wildcards-match-slash", "-f", "-"])
        .args(patterns)
        .stdin(Stdio::from(stdout));
    let tar_result = run_checked(&mut tar);
    let dpkg_out = dpkg.wait_with_output()?;
    if !dpkg_out.status.success() {
        bail!(
            "`dpkg-deb --fsys-tarfile {}` failed ({}): {}",
            deb.display(),
            dpkg_out.status,
            String::from_utf8_lossy(&dpkg_out.stderr).trim()
        );
    }
    tar_result.map(|_| ())
}

fn decompress_module(busybox: &Path, ko: &Path) -> Result<Vec<u8>> {
    let name = ko.to_string_lossy();
    // busybox-static has unxz/gunzip applets, so the host needs no xz-utils.
    let applet = if name.ends_with(".ko") {
        return Ok(fs::read(ko)?);
    } else if name.ends_with(".xz") {
        "unxz"
    } else if name.ends_with(".gz") {
        "gunzip"
    } else {
        bail!("{name}: unsupported module compression (busybox can only undo xz and gzip)");
    };
    Ok(run_checked(Command::new(busybox).arg(applet).arg("-c").arg(ko))?.stdout)
}

fn check_qemu(root: &Path) -> Result<()> {
    let qemu = root.join("usr/bin/qemu-system-x86_64");
    let mut cmd = Command::new(&qemu);
    cmd.arg("--version")
        .env("LD_LIBRARY_PATH", join_paths(&qemu_library_path(root)));
    if let Err(e) = run_checked(&mut cmd) {
        // Name the missing libraries, the usual cause.
        let mut ldd = Command::new("ldd");
        ldd.arg(&qemu)
            .env("LD_LIBRARY_PATH", join_paths(&qemu_library_path(root)));
        let missing = ldd
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains("not found"))
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Err(e.context(format!("extracted QEMU does not run; missing: [{missing}]")));
    }
    Ok(())
}

fn join_paths(paths: &[PathBuf]) -> OsString {
    let mut s = OsString::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            s.push(":");
        }
        s.push(p);
    }
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|o| !o.is_empty()) {
        s.push(":");
        s.push(old);
    }
    s
}

fn find_files(root: &Path, pred: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && pred(&p) => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run to completion (stdin as the caller set it); on failure the error names the command and carries its stderr.
fn run_checked(cmd: &mut Command) -> Result<std::process::Output> {
    let desc = describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{desc}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("`{desc}` failed ({}): {}", out.status, tail.join("\n"));
    }
    Ok(out)
}

/// Cross-process lock: a directory holding the owner's PID; a lock whose owner is gone is
/// taken over (a killed setup must not block every later run).
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path) -> Result<DirLock> {
        let deadline = Instant::now() + Duration::from_secs(900);
        let me = std::process::id().to_string();
        loop {
            match fs::create_dir(path) {
                Ok(()) => {
                    fs::write(path.join("pid"), &me)?;
                    return Ok(DirLock(path.to_path_buf()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(path.join("pid")).unwrap_or_default();
                    let owner = owner.trim();
                    // Same PID: a leftover of ours (this process holds the in-process mutex).
                    let stale = owner == me
                        || (!owner.is_empty() && !Path::new("/proc").join(owner).exists());
                    if stale {
                        remove_if_exists(path)?;
                        continue;
                    }
                    if Instant::now() > deadline {
                        bail!("{} is held by PID {owner} for too long", path.display());
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// newc (SVR4 "070701") archives: all the kernel's initramfs unpacker needs
// ---------------------------------------------------------------------------------------------

struct Newc {
    buf: Vec<u8>,
    ino: u32,
}

impl Newc {
    fn new(first_ino: u32) -> Newc {
        Newc {
            buf: Vec::new(),
            ino: first_ino,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

// ---------------------------------------------------------------------------------------------
// Guest scripts
// ---------------------------------------------------------------------------------------------

/// Stage 1, PID 1 in the initramfs: load modules, mount the host root and the writable layers,
/// then switch_root into the host's tree with busybox still PID 1 (stage 2).
const STAGE1: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
. /warden/run.env
die() { echo "warden-vm: $*"; echo "WARDEN_VM_EXIT_${WARDEN_NONCE}=125"; $B sync; $B poweroff -f; }
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
for m in netfs 9pnet 9pnet_virtio 9p overlay; do
    if [ -e /modules/$m.ko ]; then $B insmod /modules/$m.ko || die "insmod $m failed"; fi
done
R=/newroot
# cache=loose: the root is read-only and nobody changes it during a run; page-cached reads make
# exec of large host binaries several times faster.
$B mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot $R \
    || die "cannot mount the host root over 9p"
# Writable layers live in RAM only: the guest never writes to the host outside rw_dir.
$B mount -t tmpfs -o mode=0755 ovl /ovl || die "tmpfs for overlays"
for d in etc tmp var root; do
    [ -d $R/$d ] || continue
    $B mkdir -p /ovl/$d/upper /ovl/$d/work
    # The merged root takes the upper dir's mode: keep /tmp 1777 and /root 0700.
    $B chmod "$($B stat -c %a $R/$d)" /ovl/$d/upper
    $B mount -t overlay overlay -o lowerdir=$R/$d,upperdir=/ovl/$d/upper,workdir=/ovl/$d/work $R/$d \
        || die "overlay on /$d failed"
done
$B mount -t proc proc $R/proc || die "proc"
$B mount -t sysfs sys $R/sys || die "sysfs"
$B mount -t devtmpfs dev $R/dev || die "devtmpfs"
$B mkdir -p $R/dev/pts $R/dev/shm
$B mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
$B mount -t tmpfs -o mode=1777 shm $R/dev/shm
$B mount -t tmpfs -o mode=0755 run $R/run || die "tmpfs on /run"
$B mount -t securityfs securityfs $R/sys/kernel/security || die "securityfs"
$B mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || die "cgroup2"
$B mount -t bpf bpf $R/sys/fs/bpf || die "bpffs"
$B mount -t tracefs tracefs $R/sys/kernel/tracing || die "tracefs"
$B mount -t debugfs debugfs $R/sys/kernel/debug
if [ -n "$WARDEN_RW" ]; then
    # cache=mmap: coherent with the host and still allows shared writable mmap (SQLite WAL).
    $B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap wardenrw "$R$WARDEN_RW" \
        || die "cannot mount the rw dir $WARDEN_RW"
fi
$B mkdir -p $R/run/warden
$B cp $B /warden/stage2 /warden/run.env $R/run/warden/ || die "copy to /run/warden"
exec $B switch_root $R /run/warden/busybox sh /run/warden/stage2
die "switch_root failed"
"#;

/// Stage 2, PID 1 in the host's tree: run the command as a child (never as PID 1), report.
const STAGE2: &str = r#"B=/run/warden/busybox
. /run/warden/run.env
echo "WARDEN_VM_BEGIN_${WARDEN_NONCE}"
if cd "$WARDEN_CWD"; then
    $B env -i "$@" </dev/null
    rc=$?
else
    echo "warden-vm: cannot enter $WARDEN_CWD in the guest"
    rc=125
fi
# Results in the rw dir must be on the host before QEMU goes away.
$B sync
echo "WARDEN_VM_EXIT_${WARDEN_NONCE}=$rc"
$B poweroff -f
"#;

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn valid_env_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// QEMU option values escape a comma by doubling it.
fn qemu_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

fn run_env(
    nonce: &str,
    cwd: &Path,
    rw: Option<&Path>,
    cmd: &[String],
    env: &[String],
) -> Result<String> {
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), GUEST_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("USER".into(), "root".into()),
        ("LOGNAME".into(), "root".into()),
        ("TERM".into(), "dumb".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for e in env {
        let (name, value) = match e.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        if !valid_env_name(&name) {
            bail!("invalid environment variable name {name:?}");
        }
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
    }
    let mut args: Vec<String> = vars
        .iter()
        .map(|(n, v)| sh_quote(&format!("{n}={v}")))
        .collect();
    args.extend(cmd.iter().map(|a| sh_quote(a)));
    let cwd = cwd
        .to_str()
        .ok_or_else(|| anyhow!("working directory is not UTF-8"))?;
    let rw = match rw {
        Some(p) => p.to_str().ok_or_else(|| anyhow!("rw dir is not UTF-8"))?,
        None => "",
    };
    Ok(format!(
        "WARDEN_NONCE={}\nWARDEN_CWD={}\nWARDEN_RW={}\nset -- {}\n",
        nonce,
        sh_quote(cwd),
        sh_quote(rw),
        args.join(" ")
    ))
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("warden-vm-{tag}"));
        fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Boot the guest, run `cmd` as root in the host's working directory (or `opts.cwd`), return
/// its exit status. Errors: bad options, QEMU failing, the guest dying without a status, or
/// the timeout (QEMU is then killed).
pub fn run_in_vm(assets: &VmAssets, cmd: &[String], opts: &VmOptions) -> Result<VmOutcome> {
    if cmd.is_empty() {
        bail!("no command to run in the VM");
    }
    let started = Instant::now();
    let cwd = match &opts.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let cwd = cwd
        .canonicalize()
        .with_context(|| format!("working directory {}", cwd.display()))?;
    let rw = match &opts.rw_dir {
        Some(d) => {
            let d = d
                .canonicalize()
                .with_context(|| format!("rw dir {}", d.display()))?;
            if !d.is_dir() || d == Path::new("/") {
                bail!("rw dir {} must be a directory other than /", d.display());
            }
            Some(d)
        }
        None => None,
    };

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let nonce = format!("{:x}{:x}", std::process::id(), nanos);
    let tmp = TempDir::new(&nonce)?;

    // initrd = cached base archive + this run's scripts (the kernel unpacks both in order).
    let mut run_cpio = Newc::new(0x10000);
    run_cpio.file("init", 0o755, STAGE1.as_bytes());
    run_cpio.file("warden/stage2", 0o644, STAGE2.as_bytes());
    run_cpio.file(
        "warden/run.env",
        0o644,
        run_env(&nonce, &cwd, rw.as_deref(), cmd, &opts.env)?.as_bytes(),
    );
    let mut initrd = fs::read(&assets.base_initramfs)
        .with_context(|| format!("cannot read {}", assets.base_initramfs.display()))?;
    initrd.extend_from_slice(&run_cpio.finish());
    let initrd_path = tmp.0.join("initrd.cpio");
    fs::write(&initrd_path, initrd)?;

    let console_path = tmp.0.join("console.log");
    fs::write(&console_path, b"")?;
    let stderr_path = tmp.0.join("qemu.stderr");

    let mut append = format!("console=ttyS0 rdinit=/init panic=-1 lsm={GUEST_LSM} mitigations=off");
    if opts.quiet {
        append.push_str(" quiet");
    }
    let mut qemu = Command::new(&assets.qemu);
    qemu.env("LD_LIBRARY_PATH", join_paths(&assets.library_path));
    for d in &assets.firmware_dirs {
        qemu.arg("-L").arg(d);
    }
    // thread=single: with multi-threaded TCG and 2 vCPUs, about 1 boot in 25 died of
    // "Oops: int3" while the kernel live-patched a static key (cross-CPU code modification
    // racing QEMU's translation cache). One host thread for all vCPUs never did (0 in 30)
    // and costs nothing measurable: a boot is mostly one busy vCPU anyway.
    qemu.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-machine",
        "pc",
    ])
    .args([
        "-smp",
        &opts.cpus.max(1).to_string(),
        "-m",
        &format!("{}M", opts.memory_mib.max(256)),
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vga",
        "none",
    ])
    .args(["-monitor", "none", "-parallel", "none", "-no-reboot"])
    .args([
        "-chardev",
        &format!("file,id=con,path={}", qemu_escape(&console_path)),
    ])
    .args(["-serial", "chardev:con"])
    .arg("-kernel")
    .arg(&assets.kernel)
    .arg("-initrd")
    .arg(&initrd_path)
    .args(["-append", &append])
    // security_model=none: files keep the host's owners and modes, and chown failures from
    // an unprivileged host user are ignored. multidevs=remap: / spans several host
    // filesystems whose inode numbers would otherwise collide in the guest.
    .args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
    ])
    .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"]);
    if let Some(d) = &rw {
        qemu.args([
            "-fsdev",
            &format!(
                "local,id=wardenrw,path={},security_model=none,multidevs=remap",
                qemu_escape(d)
            ),
        ])
        .args(["-device", "virtio-9p-pci,fsdev=wardenrw,mount_tag=wardenrw"]);
    }
    qemu.current_dir(&tmp.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path)?);
    let child = qemu
        .spawn()
        .with_context(|| format!("cannot start {}", assets.qemu.display()))?;
    let pid = child.id();
    // However this function is left (error, panic), the QEMU we started does not outlive it.
    let mut guard = KillOnDrop(child);
    let child = &mut guard.0;

    let mut reader = ConsoleReader::new(&nonce, opts.quiet, opts.stream);
    let mut console = fs::File::open(&console_path)?;
    let deadline = started + opts.timeout;
    let mut exited_at: Option<Instant> = None;
    let status = loop {
        reader.pump(&mut console)?;
        if let Some(status) = child.try_wait()? {
            reader.pump(&mut console)?;
            break Some(status);
        }
        if reader.exit_code.is_some() && exited_at.is_none() {
            exited_at = Some(Instant::now());
        }
        // The status is in; a guest that then fails to power off only costs a short grace.
        if exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            reader.pump(&mut console)?;
            reader.finish();
            bail!(
                "VM timed out after {} s: killed QEMU (pid {pid}); console tail:\n{}",
                opts.timeout.as_secs(),
                tail(&reader.console, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.finish();
    let Some(exit_code) = reader.exit_code else {
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        bail!(
            "guest ended without reporting an exit status (QEMU {}){}; console tail:\n{}",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed".into()),
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("; QEMU stderr: {}", stderr.trim())
            },
            tail(&reader.console, 30)
        );
    };
    Ok(VmOutcome {
        exit_code,
        output: reader.output,
        console: reader.console,
        elapsed: started.elapsed(),
    })
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s
        .lines()
        .filter(|l| !l.starts_with("WARDEN_VM_BEGIN_"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Splits the console file into lines as it grows, finds the nonce markers, echoes.
struct ConsoleReader {
    begin: String,
    exit: String,
    quiet: bool,
    stream: bool,
    pending: Vec<u8>,
    in_command: bool,
    exit_code: Option<i32>,
    output: String,
    console: String,
}

impl ConsoleReader {
    fn new(nonce: &str, quiet: bool, stream: bool) -> ConsoleReader {
        ConsoleReader {
            begin: format!("WARDEN_VM_BEGIN_{nonce}"),
            exit: format!("WARDEN_VM_EXIT_{nonce}="),
            quiet,
            stream,
            pending: Vec::new(),
            in_command: false,
            exit_code: None,
            output: String::new(),
            console: String::new(),
        }
    }

    fn pump(&mut self, f: &mut fs::File) -> Result<()> {
        let mut chunk = Vec::new();
        f.read_to_end(&mut chunk)?;
        self.pending.extend_from_slice(&chunk);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.line(&line[..line.len() - 1]);
        }
        Ok(())
    }

    fn finish(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.line(&line);
        }
    }

    fn line(&mut self, raw: &[u8]) {
        // The serial tty turns "\n" into "\r\n".
        let text = String::from_utf8_lossy(raw).replace('\r', "");
        self.console.push_str(&text);
        self.console.push('\n');
        if self.exit_code.is_some() {
            if !self.quiet {
                self.echo(&text);
            }
            return;
        }
        if text.contains(&self.begin) {
            self.in_command = true;
            return;
        }
        // Output without a final newline puts the marker mid-line: keep what precedes it.
        if let Some(at) = text.find(&self.exit) {
            let code: String = text[at + self.exit.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(code) = code.parse() {
                let before = &text[..at];
                if !before.is_empty() {
                    if self.in_command {
                        self.output.push_str(before);
                    }
                    if self.in_command || !self.quiet {
                        self.echo(before);
                    }
                }
                // Guest-side failures (stage 1 died) print their reason before the marker;
                // show it even in quiet mode.
                if !self.in_command && self.quiet {
                    for l in self
                        .console
                        .lines()
                        .rev()
                        .skip(1)
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                    {
                        if l.starts_with("warden-vm:") {
                            self.echo(l);
                        }
                    }
                }
                self.exit_code = Some(code);
                self.in_command = false;
                return;
            }
        }
        if self.in_command {
            self.output.push_str(&text);
            self.output.push('\n');
        }
        if self.in_command || !self.quiet {
            self.echo(&text);
        }
    }

    fn echo(&self, text: &str) {
        if self.stream {
            println!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

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
