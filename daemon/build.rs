//! Builds the eBPF object and places it in OUT_DIR, where `kernel::load`
//! embeds it with `include_bytes_aligned!`. Building it here (rather than
//! embedding a path under target/) means the object can never be stale.

#[path = "../xtask/src/ebpf.rs"]
mod ebpf;

use std::{env, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    for source in ebpf::sources(&workspace) {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    println!("cargo:rerun-if-env-changed=WARDEN_CACHE");

    let target_dir = workspace.join("target/ebpf");
    match ebpf::build(&workspace, &target_dir) {
        Ok(object) => {
            std::fs::copy(&object, out_dir.join("warden-ebpf.o"))
                .unwrap_or_else(|e| panic!("copy {} to OUT_DIR: {e}", object.display()));
        }
        Err(e) => panic!("{e}"),
    }
}
