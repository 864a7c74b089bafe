//! Loading the eBPF object into the kernel: maps (reused from the pins a
//! previous daemon left), programs, the kernel struct offsets from BTF
//! handed to the programs in `.rodata`, and adopting the agents already in
//! the pinned maps.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use aya::{
    maps::HashMap as BpfHashMap,
    programs::{BtfTracePoint, CgroupSkb, CgroupSock, CgroupSockAddr},
    Btf, EbpfLoader,
};
use warden_common::{
    names, AgentInfo, FileRule, KernelOffsets, Net4Key, Net6Key, NetRules, PathKey, PathRule,
};

use super::{
    btf, map_err, mechanism, pinned::ensure_bpffs, rules::keys_in_slot, Installed, Kernel,
    KernelError,
};

/// The object built by `build.rs`; embedded so the binary and its kernel
/// programs can never disagree about the ABI.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/warden-ebpf.o"));

impl Kernel {
    /// Loads maps and programs and attaches the exec program (the network
    /// programs are attached per agent, `sys_exit` on demand). A kernel
    /// that cannot run the exec or open programs still gets network
    /// enforcement; `exec_unavailable`/`file_unavailable` say why not.
    /// Loads the programs, reusing the maps pinned under `pins` if a
    /// previous daemon left them (agents stay enforced across restarts).
    pub fn load(pins: &Path) -> Result<Self, KernelError> {
        ensure_bpffs(pins)?;
        for sub in ["maps", "links"] {
            let dir = pins.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| KernelError::Bpffs(format!("create {}: {e}", dir.display())))?;
        }
        let map_pins: Vec<(&str, PathBuf)> = names::PINNED_MAPS
            .iter()
            .map(|n| (*n, pins.join("maps").join(n)))
            .collect();
        // Offsets for the exec and open programs. Without them those
        // programs refuse every decision (valid = 0) and the daemon refuses
        // policies that need them.
        let (offsets, offsets_error) =
            match btf::Btf::from_sys_fs().and_then(|b| b.kernel_offsets()) {
                Ok(o) => (o, None),
                Err(e) => (
                    KernelOffsets::default(),
                    Some(format!(
                        "kernel struct offsets from {}: {e}",
                        btf::VMLINUX_BTF
                    )),
                ),
            };
        let events_bytes = super::backpressure::events_bytes()?;
        let cache_ttl_ns = super::decision_cache::ttl_ns(
            std::env::var(super::decision_cache::TTL_VAR)
                .ok()
                .as_deref(),
        )?;
        let mut loader = EbpfLoader::new();
        // A ring buffer pinned by a previous daemon keeps its size.
        loader.map_max_entries(names::EVENTS, events_bytes);
        loader.override_global(names::KERNEL_OFFSETS, &offsets, true);
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader.load(OBJECT).map_err(KernelError::Load)?;
        for name in names::CGROUP_NET_PROGRAMS {
            let prog: &mut CgroupSockAddr = bpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or(KernelError::Missing {
                what: "cgroup sock_addr program",
                name,
            })?;
            prog.load()
                .map_err(|source| KernelError::ProgramLoad { name, source })?;
        }
        let name = names::PROG_SOCK_CREATE;
        let sock_create: &mut CgroupSock = bpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
                what: "cgroup sock program",
                name,
            })?;
        sock_create
            .load()
            .map_err(|source| KernelError::ProgramLoad { name, source })?;
        // `bytes: egress` budgets (attached per agent, `egress.rs`).
        let name = names::PROG_EGRESS;
        let egress: &mut CgroupSkb = bpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
                what: "cgroup skb program",
                name,
            })?;
        egress
            .load()
            .map_err(|source| KernelError::ProgramLoad { name, source })?;
        let btf = Btf::from_sys_fs().map_err(KernelError::Btf)?;
        for name in [
            names::AGENTS,
            names::NET4_RULES,
            names::NET6_RULES,
            names::COUNTERS,
            names::AGENT_COUNTERS,
            names::HELD,
            names::GRANTS,
            names::EXEC_RULES,
            names::FILE_RULES,
            names::SYS_EXIT_MODE,
            names::AGENT_LEVELS,
        ] {
            if bpf.map(name).is_none() {
                return Err(KernelError::Missing { what: "map", name });
            }
        }

        if offsets_error.is_none() {
            tracing::debug!(?offsets, "kernel struct offsets from BTF");
        }

        let mechanism::Selected {
            lsm,
            lsm_links,
            fmod_ret_links,
            hold_stop_link,
            cache_epoch_links,
            cache_unavailable,
            exec_link,
            exec_unavailable,
            fault_guard_loaded,
            file_unavailable,
            sys_exit_loaded,
            path_ops_unavailable,
        } = mechanism::select(&mut bpf, OBJECT, &btf, offsets_error)?;
        let mut kernel = Self {
            bpf,
            pins: pins.to_path_buf(),
            owned: HashSet::new(),
            links: HashMap::new(),
            covered_by: HashMap::new(),
            egress: HashMap::new(),
            installed: HashMap::new(),
            count_all: false,
            sys_exit: None,
            sys_exit_mode: 0,
            sys_exit_loaded,
            fault_guard_loaded,
            fault_guard: None,
            exec_unavailable,
            file_unavailable,
            lsm,
            escape_unavailable: None,
            path_ops_unavailable,
            cache_unavailable: cache_unavailable.clone(),
        };
        for (name, link) in lsm_links {
            // Kept attached by the pin, like the exec link below.
            drop(kernel.pin_link(link, name)?);
        }
        for l in fmod_ret_links {
            // Pinned raw (aya cannot wrap these links); owned like the rest.
            let path = pins
                .join("links")
                .join(format!("{}-{}", l.pin, std::process::id()));
            super::fmod_ret::pin(&l.link, &path).map_err(|detail| KernelError::Pin {
                what: path.display().to_string(),
                detail,
            })?;
            kernel.owned.insert(path);
        }
        if let Some(link) = hold_stop_link {
            drop(kernel.pin_link(link, "hold-stop")?);
        }
        for (name, link) in cache_epoch_links {
            drop(kernel.pin_link(link, name)?);
        }
        if let Some(link) = exec_link {
            let pinned = kernel.pin_link(link, "exec")?;
            // Owned by `owned`; the pin keeps it attached for the daemon's life
            // and after.
            drop(pinned);
        }
        if let Err(why) = kernel.attach_escape(&btf) {
            tracing::warn!(reason = %why, "agents leaving their cgroup are not detected on this kernel");
            kernel.escape_unavailable = Some(why);
        }
        kernel.adopt_installed()?;
        // Where BPF LSM or fmod_ret decides opens and the epoch programs
        // are not attached, renames would go unseen: no cache.
        kernel.set_decision_cache_ttl(if cache_unavailable.is_some() {
            0
        } else {
            cache_ttl_ns
        })?;
        Ok(kernel)
    }

    /// After a restart the pinned maps still hold every agent's entry and
    /// rules: index them, so the next install swaps halves and clears the
    /// old one as usual.
    fn adopt_installed(&mut self) -> Result<(), KernelError> {
        let agents: Vec<(u64, AgentInfo)> = {
            let name = names::AGENTS;
            let map = self
                .bpf
                .map(name)
                .ok_or(KernelError::Missing { what: "map", name })?;
            let agents: BpfHashMap<_, u64, AgentInfo> =
                BpfHashMap::try_from(map).map_err(map_err("open", name))?;
            agents.iter().filter_map(Result::ok).collect()
        };
        if agents.is_empty() {
            return Ok(());
        }
        for (cgroup_id, info) in agents {
            let slot = info.slot;
            self.installed.insert(
                cgroup_id,
                Installed {
                    info,
                    v4: keys_in_slot::<Net4Key, NetRules>(&self.bpf, names::NET4_RULES, slot),
                    v6: keys_in_slot::<Net6Key, NetRules>(&self.bpf, names::NET6_RULES, slot),
                    exec: keys_in_slot::<PathKey, PathRule>(&self.bpf, names::EXEC_RULES, slot),
                    file: keys_in_slot::<PathKey, FileRule>(&self.bpf, names::FILE_RULES, slot),
                    // Deleting an absent entry is harmless.
                    sock: true,
                },
            );
        }
        tracing::info!(
            agents = self.installed.len(),
            "adopted agents from pinned maps"
        );
        Ok(())
    }
}

/// Loads the `sys_exit` program and the programs it tail-calls
/// (`warden_path_ops`, `warden_shadow_open`): `mechanism::select` does
/// where the fallback may decide something at start, `set_sys_exit_mode`
/// on first use elsewhere (`Kernel::sys_exit_loaded`). Returns why
/// operations on names are not decided on the fallback, if they are not.
pub(super) fn load_sys_exit(bpf: &mut aya::Ebpf, btf: &Btf) -> Result<Option<String>, KernelError> {
    let name = names::PROG_SYS_EXIT;
    let sys_exit: &mut BtfTracePoint = bpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(KernelError::Missing {
            what: "tp_btf program",
            name,
        })?;
    sys_exit
        .load(names::SYS_EXIT_TRACEPOINT, btf)
        .map_err(|source| KernelError::ProgramLoad { name, source })?;
    // Operations on one name, tail-called from `sys_exit`. Without it
    // they are not decided (said at start-up), the rest still is.
    let path_ops_unavailable = load_path_ops(bpf, btf).err();
    if let Some(why) = &path_ops_unavailable {
        tracing::warn!(reason = %why, "unlink, mkdir, chmod and other operations on names are not decided on the fallback");
    }
    // A `shadow:` candidate's opens, tail-called from `sys_exit`.
    // Without it they are not compared (said at start-up); nothing
    // enforced depends on it.
    if let Err(why) = load_tail(bpf, btf, names::PROG_SHADOW_OPEN, names::SHADOW_TAIL) {
        tracing::warn!(reason = %why, "a shadow candidate's file rules are not evaluated on the fallback");
    }
    Ok(path_ops_unavailable)
}

/// Loads `warden_path_ops` and puts it in `SYS_EXIT_TAIL`, where the
/// `sys_exit` program tail-calls it.
fn load_path_ops(bpf: &mut aya::Ebpf, btf: &Btf) -> Result<(), String> {
    load_tail(bpf, btf, names::PROG_PATH_OPS, names::SYS_EXIT_TAIL)
}

/// Loads tp_btf/sys_exit program `name` and puts it at index 0 of program
/// array `tail`, where the `sys_exit` program tail-calls it.
fn load_tail(
    bpf: &mut aya::Ebpf,
    btf: &Btf,
    name: &'static str,
    tail: &'static str,
) -> Result<(), String> {
    let prog: &mut BtfTracePoint = bpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| format!("the eBPF object has no tp_btf program {name}"))?;
    prog.load(names::SYS_EXIT_TRACEPOINT, btf)
        .map_err(|e| format!("load {name}: {}", crate::error_chain(&e)))?;
    super::mechanism::log_verified(prog, name);
    let fd = prog
        .fd()
        .map_err(|e| format!("{name} fd: {e}"))?
        .try_clone()
        .map_err(|e| format!("{name} fd: {e}"))?;
    let map = bpf
        .map_mut(tail)
        .ok_or_else(|| format!("the eBPF object has no map {tail}"))?;
    let mut array =
        aya::maps::ProgramArray::try_from(map).map_err(|e| format!("open {tail}: {e}"))?;
    array
        .set(0, &fd, 0)
        .map_err(|e| format!("set {tail}[0]: {e}"))
}
