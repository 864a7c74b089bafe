//! Guest assets: download the kernel, QEMU and busybox packages with apt, extract what the
//! guest needs into the cache, write the base initramfs, and mark the cache complete.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::initramfs::Newc;

/// Bump when the cache layout changes, so an old cache is rebuilt instead of misread.
const LAYOUT: &str = "1";
const READY: &str = "ready";
/// Modules the guest needs for its root filesystem, in load order (no modules.dep to ask).
const MODULES: [&str; 5] = ["netfs", "9pnet", "9pnet_virtio", "9p", "overlay"];

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

pub(super) fn join_paths(paths: &[PathBuf]) -> OsString {
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
