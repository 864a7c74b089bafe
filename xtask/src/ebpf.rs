//! Builds the kernel programs (`ebpf/programs`) into a BPF object.
//!
//! Used by `daemon/build.rs` (included with `#[path]`, so std only) and by
//! xtask. The recipe is the one verified on this machine kind:
//! - Debian's rustc (`/usr/bin/rustc`), because it ships the standard library
//!   sources that `-Z build-std=core` needs; rustup's toolchains here have
//!   none. `RUSTC_BOOTSTRAP=1` unlocks `-Z` on this stable compiler.
//! - `bpf-linker` from the tools cache (installed by `cargo xtask setup`).
//! - A target dir of its own, so the two toolchains never share artifacts.
//! - Environment leaked from an outer cargo (RUSTUP_TOOLCHAIN, RUSTFLAGS, ...)
//!   is removed before the inner build.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Where Warden caches tools (bpf-linker) and VM images between runs:
/// `$WARDEN_CACHE`, else `$HOME/.cache/warden`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("WARDEN_CACHE") {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/warden")
}

/// Directory that holds `bin/bpf-linker`.
pub fn tools_dir() -> PathBuf {
    cache_dir().join("tools")
}

pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const BPF_TARGET: &str = "bpfel-unknown-none";

/// Files whose change must trigger a rebuild of the object: every file
/// under the two source trees, subfolders included.
pub fn sources(workspace: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["ebpf/programs/src", "ebpf/common/src"] {
        collect_files(&workspace.join(dir), &mut out);
    }
    for file in [
        "ebpf/programs/Cargo.toml",
        "ebpf/programs/Cargo.lock",
        "ebpf/common/Cargo.toml",
    ] {
        out.push(workspace.join(file));
    }
    out
}

/// Every file below `dir`, recursively, and the directories themselves:
/// cargo scans a listed directory for any modification, which also
/// catches a file added to it.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_path_buf());
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// A command running `program` (`DEBIAN_CARGO`, or Debian's cargo-clippy
/// with `subcommand` "clippy") on the programs crate for the BPF target,
/// in the environment of the recipe above.
pub fn command(
    workspace: &Path,
    target_dir: &Path,
    program: &str,
    subcommand: &str,
) -> Result<Command, String> {
    let linker_dir = tools_dir().join("bin");
    if !linker_dir.join("bpf-linker").exists() {
        return Err(format!(
            "bpf-linker not found in {}: run `cargo xtask setup` first",
            linker_dir.display()
        ));
    }
    for tool in [DEBIAN_CARGO, DEBIAN_RUSTC, program] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} not found (Debian's rustc-web/cargo-web/rust-web-clippy): run `cargo xtask setup` first"
            ));
        }
    }
    let path = match env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![linker_dir.clone()];
            dirs.extend(env::split_paths(&p));
            env::join_paths(dirs).map_err(|e| format!("build PATH: {e}"))?
        }
        None => linker_dir.clone().into_os_string(),
    };
    let manifest = workspace.join("ebpf/programs/Cargo.toml");
    let mut cmd = Command::new(program);
    cmd.args([
        subcommand,
        "--release",
        "--locked",
        "--target",
        BPF_TARGET,
        "-Z",
        "build-std=core",
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .arg("--target-dir")
    .arg(target_dir);
    // Everything an outer cargo (or rustup) may have set that would steer the
    // inner build to the wrong compiler or flags.
    for var in env::vars_os().map(|(k, _)| k) {
        let name = var.to_string_lossy();
        let leaked = name.starts_with("CARGO_")
            || name.starts_with("RUSTUP_")
            || matches!(
                &*name,
                "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTDOC"
            );
        if leaked && name != "CARGO_HOME" {
            cmd.env_remove(&var);
        }
    }
    cmd.env("PATH", path)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1");
    Ok(cmd)
}

/// Builds the eBPF object and returns its path.
pub fn build(workspace: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let mut cmd = command(workspace, target_dir, DEBIAN_CARGO, "build")?;
    // BTF in the object, so the kernel and bpftool can show types.
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        "-Cdebuginfo=2\x1f-Clink-arg=--btf",
    );
    let manifest = workspace.join("ebpf/programs/Cargo.toml");
    let status = cmd
        .status()
        .map_err(|e| format!("run {DEBIAN_CARGO} build for {}: {e}", manifest.display()))?;
    if !status.success() {
        return Err(format!("building the eBPF programs failed ({status})"));
    }
    let object = target_dir.join(BPF_TARGET).join("release/warden-ebpf");
    if !object.exists() {
        return Err(format!(
            "eBPF build finished but {} is missing",
            object.display()
        ));
    }
    Ok(object)
}
