//! Installing the toolchain (see ../../README.md, "Building"): Debian's
//! rustc/cargo with the standard library sources (build-std for the BPF
//! target), LLVM 22, and bpf-linker built against it into the tools cache.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{ebpf, workspace};

// sqlite3: the integration tests tamper with the database the way an attacker
// with file access would. libseccomp-dev: the daemon links libseccomp
// (daemon/src/confine.rs).
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    // Clippy for the BPF target, with the compiler that builds the programs
    // (`cargo xtask test`, lint tier).
    "rust-web-clippy",
    "llvm-22-dev",
    "sqlite3",
    "libseccomp-dev",
    // The export test runs the README's Python verifier of the encoding.
    "python3",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs a command, failing with its name if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Installs missing Debian packages (needs root).
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("packages {missing:?} are missing and installing them needs root");
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn ensure_bpf_linker() -> Result<()> {
    let root = ebpf::tools_dir();
    let linker = root.join("bin/bpf-linker");
    let version = Command::new(&linker).arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} into {} (about a minute)",
        root.display()
    );
    // Without LLVM_PREFIX its build script finds LLVM 14 and fails to link.
    run(Command::new(cargo())
        .args(["install", "--locked", "--quiet", "--force"])
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .args(["--no-default-features", "--features", "llvm-22", "--root"])
        .arg(&root)
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

pub fn setup() -> Result<()> {
    ensure_apt(APT_PACKAGES)?;
    ensure_bpf_linker()
}

/// The cargo that runs xtask (rustup's), for host builds.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds the warden binary (and with it the eBPF object); returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace()).args([
        "build",
        "--quiet",
        "--package",
        "warden",
        "--bin",
        "warden",
    ]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("warden"))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}
