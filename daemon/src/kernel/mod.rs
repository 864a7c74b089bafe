//! The kernel side: loading the eBPF object, attaching it to agent cgroups,
//! and writing compiled policy into its maps.
//!
//! One owner: the daemon's enforcement task holds the only `Kernel`, and other
//! tasks ask it for changes (see `daemon.rs`). Policy swaps are atomic per
//! agent: rules are written under the agent's idle slot, then the agent's
//! `AGENTS` entry is replaced in one map update, then the old slot is cleared.
//!
//! Exec and file opens (the fallback for kernels without BPF LSM) are
//! decided by global tracepoint programs: `sched_process_exec`, attached at
//! load, and the one `sys_exit` program, attached only while some agent
//! needs it (file rules or holds; see `set_sys_exit_mode`). Both need kernel
//! struct offsets from the kernel's BTF (`btf.rs`); where they or the
//! programs cannot load, the daemon still enforces the network and refuses
//! policies that need the missing mechanism (`exec_unavailable`,
//! `file_unavailable`). Where the kernel runs BPF LSM, `lsm/bprm_check_security`
//! and `lsm/file_open` decide them instead (probed at load, `lsm.rs`).
//!
//! Persistence: the stateful maps are pinned under `<pin dir>/maps/` and
//! every link under `<pin dir>/links/`, so agents stay enforced while the
//! daemon is stopped or restarting (their decisions queue in the pinned ring
//! buffer; once it is full, actions are refused and counted). A new daemon
//! reuses the pinned maps (agents never lose their entry), attaches its own
//! links, then unpins its predecessor's (`drop_stale_links`).

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf,
    },
    programs::{
        links::{CgroupAttachMode, FdLink, PinnedLink},
        BtfTracePoint, CgroupSockAddr,
    },
    Btf, Ebpf, EbpfLoader,
};
use warden_common::{
    agent_flags, counter, held_state, names, AgentCounters, AgentInfo, Decision, FileRule, Held,
    HoldKey, KernelOffsets, Net4Key, Net6Key, NetRules, PathKey, PathRule, SLOT_PREFIX_BITS,
};

use crate::policy::{CompiledNet, CompiledPaths};

pub mod btf;
pub mod lsm;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("load the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("load program {name} into the kernel: {source}")]
    ProgramLoad {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attach {name} to cgroup {cgroup}: {source}")]
    Attach {
        name: &'static str,
        cgroup: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("read the kernel's BTF (/sys/kernel/btf/vmlinux), needed for tp_btf programs: {0}")]
    Btf(#[source] aya::BtfError),
    #[error("pin {what}: {detail}")]
    Pin { what: String, detail: String },
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error("open cgroup {cgroup}: {source}")]
    OpenCgroup {
        cgroup: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} map {map}: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn map_err(op: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { op, map, source }
}

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub events: u64,
    pub dropped: u64,
    pub allowed: u64,
    pub denied: u64,
    pub held: u64,
    pub hold_failed: u64,
    /// Threads a fallback hold stopped that ran again without a grant and
    /// were killed.
    pub hold_breach: u64,
    /// Denials whose SIGKILL could not be sent (exec and file opens).
    #[serde(default)]
    pub kill_failed: u64,
}

/// The rules an agent has in the kernel right now.
struct Installed {
    info: AgentInfo,
    v4: Vec<Key<Net4Key>>,
    v6: Vec<Key<Net6Key>>,
    exec: Vec<Key<PathKey>>,
    file: Vec<Key<PathKey>>,
}

/// Rule keys carry the agent slot they belong to.
trait Slotted: aya::Pod {
    fn slot(&self) -> u32;
}

impl Slotted for Net4Key {
    fn slot(&self) -> u32 {
        self.slot
    }
}

impl Slotted for Net6Key {
    fn slot(&self) -> u32 {
        self.slot
    }
}

impl Slotted for PathKey {
    fn slot(&self) -> u32 {
        self.slot
    }
}

/// The keys of an LPM trie that belong to `slot`.
fn keys_in_slot<K: Slotted, V: aya::Pod>(bpf: &Ebpf, name: &str, slot: u32) -> Vec<Key<K>> {
    bpf.map(name)
        .and_then(|m| LpmTrie::<_, K, V>::try_from(m).ok())
        .map(|t| {
            t.keys()
                .filter_map(Result::ok)
                .filter(|k| k.data().slot() == slot)
                .collect()
        })
        .unwrap_or_default()
}

/// Removes `keys` from an LPM trie, best effort (see `clear_rules`).
fn remove_keys<K: aya::Pod, V: aya::Pod>(bpf: &mut Ebpf, name: &str, keys: &[Key<K>]) {
    if let Some(Ok(mut trie)) = bpf.map_mut(name).map(LpmTrie::<_, K, V>::try_from) {
        for key in keys {
            let _ = trie.remove(key);
        }
    }
}

/// Mounts bpffs at /sys/fs/bpf if `pins` is below it and nothing is
/// mounted there yet (fresh machines of this kind have it unmounted).
fn ensure_bpffs(pins: &Path) -> Result<(), KernelError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mut probe = pins.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let on_bpffs =
        |p: &Path| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    if on_bpffs(&probe) {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if pins.starts_with(root) && root.exists() && !on_bpffs(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| KernelError::Bpffs(format!("mount bpffs at {}: {e}", root.display())))?;
        tracing::info!("mounted bpffs at /sys/fs/bpf");
        return Ok(());
    }
    Err(KernelError::Bpffs(format!(
        "{} is not on a bpf filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) or choose --pin-dir below it",
        pins.display()
    )))
}

/// What one agent should have in the kernel.
#[derive(Clone, Copy)]
pub struct AgentRules<'a> {
    pub agent_id: u32,
    /// The policy version's id (0: no valid policy yet, so nothing allowed).
    pub policy_gen: u32,
    pub net: &'a CompiledNet,
    pub paths: &'a CompiledPaths,
    /// Kill switch engaged.
    pub revoked: bool,
    /// `on_evidence_loss: allow`.
    pub fail_open: bool,
}

/// A link pinned by this daemon, and where.
struct Pinned {
    path: PathBuf,
    link: PinnedLink,
}

pub struct Kernel {
    bpf: Ebpf,
    /// `<pin dir>`: maps/ and links/ below it.
    pins: PathBuf,
    /// Pins this daemon created (the rest in links/ are a predecessor's).
    owned: HashSet<PathBuf>,
    links: HashMap<u64, Vec<Pinned>>,
    installed: HashMap<u64, Installed>,
    /// The `sys_exit` link while attached, and the `sys_exit_mode` bits in
    /// force.
    sys_exit: Option<Pinned>,
    sys_exit_mode: u32,
    /// The page-fault guard of held execs (`hold.rs`), loaded with the
    /// exec fallback, and its link while attached.
    fault_guard_loaded: bool,
    fault_guard: Option<Pinned>,
    /// Why exec rules cannot be enforced on this kernel, if they cannot.
    exec_unavailable: Option<String>,
    /// Why file rules cannot be enforced on this kernel, if they cannot.
    file_unavailable: Option<String>,
    /// Which classes BPF LSM decides (then the tracepoint fallback does
    /// not: `sched_process_exec` stays detached, `sys_exit` never decides
    /// opens).
    lsm: lsm::LsmState,
}

/// Comma-separated mechanisms the daemon must not load: `exec`, `file`
/// (the class, by any mechanism), `lsm` (BPF LSM: the tracepoint fallback
/// decides exec and file opens instead).
pub const DISABLE_VAR: &str = "WARDEN_DISABLE_MECHANISMS";

/// Why `what` is off, if `WARDEN_DISABLE_MECHANISMS` lists it (also
/// `ptrace`: the holds' seize of paused threads, `holds.rs`).
pub fn disabled(what: &str) -> Option<String> {
    let list = std::env::var(DISABLE_VAR).unwrap_or_default();
    list.split(',')
        .any(|d| d.trim() == what)
        .then(|| format!("disabled by {DISABLE_VAR}={what}"))
}

/// Logs how many instructions the verifier went through for a program (the
/// path walk is bounded; this shows how close it is to the 1M limit).
fn log_verified(prog: &BtfTracePoint, name: &str) {
    if let Ok(info) = prog.info() {
        tracing::info!(
            program = name,
            verified_insns = info.verified_instruction_count(),
            "loaded"
        );
    }
}

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
        let mut loader = EbpfLoader::new();
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
        let btf = Btf::from_sys_fs().map_err(KernelError::Btf)?;
        let name = names::PROG_SYS_EXIT;
        let sys_exit: &mut BtfTracePoint = bpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
                what: "tp_btf program",
                name,
            })?;
        sys_exit
            .load(names::SYS_EXIT_TRACEPOINT, &btf)
            .map_err(|source| KernelError::ProgramLoad { name, source })?;
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
        ] {
            if bpf.map(name).is_none() {
                return Err(KernelError::Missing { what: "map", name });
            }
        }

        // An operator can keep the global tracepoint programs off a host
        // (policies that need them are then refused, like on a kernel that
        // cannot load them).
        if offsets_error.is_none() {
            tracing::debug!(?offsets, "kernel struct offsets from BTF");
        }

        // BPF LSM first: where it runs, it decides execs and opens instead
        // of the tracepoints below (see lsm.rs).
        let (lsm, lsm_links) = lsm::probe(
            &mut bpf,
            &btf,
            disabled("lsm"),
            disabled("exec").is_none() && offsets_error.is_none(),
            disabled("file").is_none() && offsets_error.is_none(),
        );

        // Exec: load and attach now. It runs at every exec on the machine
        // and returns after one lookup for processes outside agents.
        let mut exec_link = None;
        let exec_unavailable = disabled("exec")
            .or_else(|| offsets_error.clone())
            .or_else(|| {
                if lsm.exec {
                    return None;
                }
                let name = names::PROG_EXEC;
                let prog: Option<&mut BtfTracePoint> =
                    bpf.program_mut(name).and_then(|p| p.try_into().ok());
                let Some(prog) = prog else {
                    return Some(format!("the eBPF object has no tp_btf program {name}"));
                };
                let tp = names::EXEC_TRACEPOINT;
                prog.load(tp, &btf)
                    .map_err(|e| format!("load tp_btf/{tp} ({name}): {}", crate::error_chain(&e)))
                    .map(|()| log_verified(prog, name))
                    .and_then(|()| {
                        let id = prog.attach().map_err(|e| {
                            format!("attach tp_btf/{tp}: {}", crate::error_chain(&e))
                        })?;
                        let link = prog
                            .take_link(id)
                            .map_err(|e| format!("take tp_btf/{tp} link: {e}"))?;
                        exec_link = Some(FdLink::from(link));
                        Ok(())
                    })
                    .err()
            });
        if let Some(why) = &exec_unavailable {
            tracing::warn!(reason = %why, "exec rules cannot be enforced on this kernel");
        }
        // The guard of execs the fallback holds: loaded with it, attached
        // only while some policy holds execs (it runs at every user page
        // fault on the machine).
        let fault_guard_loaded = exec_link.is_some()
            && {
                let name = names::PROG_FAULT_GUARD;
                let prog: Option<&mut BtfTracePoint> =
                    bpf.program_mut(name).and_then(|p| p.try_into().ok());
                match prog.map(|p| p.load(names::FAULT_TRACEPOINT, &btf)) {
                    Some(Ok(())) => true,
                    Some(Err(e)) => {
                        tracing::warn!(error = %crate::error_chain(&e), "tp_btf/page_fault_user: held execs are guarded at sys_exit only");
                        false
                    }
                    None => false,
                }
            };
        // Opens: the sys_exit program loaded above; check once that it can
        // attach here, so that a policy with file rules is refused up front
        // rather than when its agent is installed.
        let file_unavailable = disabled("file").or(offsets_error).or_else(|| {
            if lsm.file {
                return None;
            }
            let name = names::PROG_SYS_EXIT;
            let prog: &mut BtfTracePoint = bpf.program_mut(name).and_then(|p| p.try_into().ok())?;
            log_verified(prog, name);
            match prog.attach() {
                Ok(link) => prog
                    .detach(link)
                    .err()
                    .map(|e| format!("detach tp_btf/sys_exit: {e}")),
                Err(e) => Some(format!(
                    "attach tp_btf/sys_exit: {}",
                    crate::error_chain(&e)
                )),
            }
        });
        if let Some(why) = &file_unavailable {
            tracing::warn!(reason = %why, "file rules cannot be enforced on this kernel");
        }
        let mut kernel = Self {
            bpf,
            pins: pins.to_path_buf(),
            owned: HashSet::new(),
            links: HashMap::new(),
            installed: HashMap::new(),
            sys_exit: None,
            sys_exit_mode: 0,
            fault_guard_loaded,
            fault_guard: None,
            exec_unavailable,
            file_unavailable,
            lsm,
        };
        for (name, link) in lsm_links {
            // Kept attached by the pin, like the exec link below.
            drop(kernel.pin_link(link, name)?);
        }
        if let Some(link) = exec_link {
            let pinned = kernel.pin_link(link, "exec")?;
            // Owned by `owned`; the pin keeps it attached for the daemon's life
            // and after.
            drop(pinned);
        }
        kernel.adopt_installed()?;
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
                },
            );
        }
        tracing::info!(
            agents = self.installed.len(),
            "adopted agents from pinned maps"
        );
        Ok(())
    }

    /// Why exec rules cannot be enforced here (`None`: they can).
    pub fn exec_unavailable(&self) -> Option<&str> {
        self.exec_unavailable.as_deref()
    }

    /// Why file rules cannot be enforced here (`None`: they can).
    pub fn file_unavailable(&self) -> Option<&str> {
        self.file_unavailable.as_deref()
    }

    /// Which classes BPF LSM decides here, or why none.
    pub fn lsm(&self) -> &lsm::LsmState {
        &self.lsm
    }

    /// The `sys_exit_mode` bits in force (0: the program is detached).
    pub fn sys_exit_mode(&self) -> u32 {
        self.sys_exit_mode
    }

    /// Sets what the `sys_exit` program does, attaching it when some bit is
    /// set and detaching it when none is: it runs at every syscall exit on
    /// the machine, so it is attached only while some agent needs it. The
    /// mode is written before the attach and after the detach, so the
    /// program never runs with a stale mode.
    pub fn set_sys_exit_mode(&mut self, mode: u32) -> Result<(), KernelError> {
        // Opens are lsm/file_open's where BPF LSM decides them.
        let mode = if self.lsm.file {
            mode & !warden_common::sys_exit_mode::FILES
        } else {
            mode
        };
        if mode == self.sys_exit_mode && (mode != 0) == self.sys_exit.is_some() {
            return Ok(());
        }
        if mode != 0 {
            self.write_sys_exit_mode(mode)?;
            if self.sys_exit.is_none() {
                let pinned = self.attach_global(names::PROG_SYS_EXIT, "sys_exit", "sys_exit")?;
                self.sys_exit = Some(pinned);
            }
        } else if let Some(pinned) = self.sys_exit.take() {
            self.detach_links(vec![pinned]);
            self.write_sys_exit_mode(0)?;
        }
        self.sys_exit_mode = mode;
        tracing::info!(mode, attached = self.sys_exit.is_some(), "tp_btf/sys_exit");
        Ok(())
    }

    /// Attaches the loaded global `tp_btf` program `name` (on
    /// `tracepoint`) and pins its link under `pin`.
    fn attach_global(
        &mut self,
        name: &'static str,
        tracepoint: &str,
        pin: &str,
    ) -> Result<Pinned, KernelError> {
        let attach_err = |source| KernelError::Attach {
            name,
            cgroup: format!("(global tracepoint {tracepoint})"),
            source,
        };
        let prog: &mut BtfTracePoint = self
            .bpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
            what: "tp_btf program",
            name,
        })?;
        let id = prog.attach().map_err(attach_err)?;
        let link = FdLink::from(prog.take_link(id).map_err(attach_err)?);
        self.pin_link(link, pin)
    }

    fn write_sys_exit_mode(&mut self, mode: u32) -> Result<(), KernelError> {
        let name = names::SYS_EXIT_MODE;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let mut array: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(map).map_err(map_err("open", name))?;
        array.set(0, mode, 0).map_err(map_err("update", name))
    }

    /// Attaches the page-fault guard of held execs while `on` (some
    /// policy holds execs on the fallback), detaches it otherwise.
    pub fn set_fault_guard(&mut self, on: bool) -> Result<(), KernelError> {
        if !self.fault_guard_loaded || on == self.fault_guard.is_some() {
            return Ok(());
        }
        if let Some(pinned) = self.fault_guard.take() {
            self.detach_links(vec![pinned]);
        } else {
            let pinned = self.attach_global(
                names::PROG_FAULT_GUARD,
                names::FAULT_TRACEPOINT,
                "fault_guard",
            )?;
            self.fault_guard = Some(pinned);
        }
        tracing::info!(attached = on, "tp_btf/page_fault_user");
        Ok(())
    }

    /// Whether the page-fault guard of held execs is attached.
    pub fn fault_guard_attached(&self) -> bool {
        self.fault_guard.is_some()
    }

    /// Threads in `HELD`: marked for a stop, or stopped by a fallback hold.
    pub fn marked_threads(&self) -> usize {
        self.bpf
            .map(names::HELD)
            .and_then(|m| BpfHashMap::<_, u32, Held>::try_from(m).ok())
            .map_or(0, |held| held.keys().count())
    }

    /// The `HELD` entry of a thread, if it has one.
    pub fn held(&self, tid: u32) -> Option<Held> {
        let map = self.bpf.map(names::HELD)?;
        let held = BpfHashMap::<_, u32, Held>::try_from(map).ok()?;
        held.get(&tid, 0).ok()
    }

    /// What an agent's rules in force say now about a path: an exec
    /// (`access` None) or an open with `access` bits, the strictest access
    /// deciding, as the kernel programs do (`exec::judge`, `file::judge`),
    /// by the same longest-prefix lookup. For a hold the kernel cannot
    /// decide again itself (see `holds.rs`). None: not an agent.
    pub fn decide_path_now(
        &self,
        cgroup_id: u64,
        access: Option<u32>,
        path: &str,
    ) -> Option<Decision> {
        let agents: BpfHashMap<_, u64, AgentInfo> =
            BpfHashMap::try_from(self.bpf.map(names::AGENTS)?).ok()?;
        let info = agents.get(&cgroup_id, 0).ok()?;
        if info.flags & agent_flags::REVOKED != 0 {
            return Some(Decision::Deny);
        }
        // The key as the kernel builds it: the path and its NUL, cut to
        // the key size.
        let mut bytes = path.as_bytes().to_vec();
        bytes.push(0);
        bytes.truncate(warden_common::PATH_KEY_BYTES);
        let mut key = PathKey {
            slot: info.slot,
            path: [0; warden_common::PATH_KEY_BYTES],
        };
        key.path[..bytes.len()].copy_from_slice(&bytes);
        let key = Key::new(SLOT_PREFIX_BITS + 8 * bytes.len() as u32, key);
        let decision = |stored: u8| Decision::from_u32(stored.into()).unwrap_or(Decision::Deny);
        let strictness = |d: Decision| match d {
            Decision::Allow => 0,
            Decision::Hold => 1,
            Decision::Deny => 2,
        };
        Some(match access {
            None => {
                let rules: LpmTrie<_, PathKey, PathRule> =
                    LpmTrie::try_from(self.bpf.map(names::EXEC_RULES)?).ok()?;
                rules
                    .get(&key, 0)
                    .map_or(Decision::Deny, |r| decision(r.decision))
            }
            Some(access) => {
                let rules: LpmTrie<_, PathKey, FileRule> =
                    LpmTrie::try_from(self.bpf.map(names::FILE_RULES)?).ok()?;
                let Ok(r) = rules.get(&key, 0) else {
                    return Some(Decision::Deny);
                };
                let mut out = Decision::Allow;
                for (bit, rule) in [
                    (warden_common::access::READ, r.read),
                    (warden_common::access::WRITE, r.write),
                ] {
                    if access & bit != 0 && strictness(decision(rule.decision)) > strictness(out) {
                        out = decision(rule.decision);
                    }
                }
                out
            }
        })
    }

    /// Removes a thread's `HELD` entry: before an approved paused thread
    /// is continued (the guards then let it be), or once it is gone.
    pub fn forget_held(&mut self, tid: u32) -> Result<(), KernelError> {
        self.delete::<u32, Held>(names::HELD, &tid).map(drop)
    }

    /// Clears the flag that makes `sys_exit` look up every syscall exit
    /// in `HELD` once no thread there is paused. Clear, then look again:
    /// a thread paused in between sets the flag itself, and if its store
    /// came before the clear, the second look sees its entry and sets the
    /// flag back. (A paused thread continued by a SIGCONT in the few
    /// microseconds between the clear and the second look would pass one
    /// syscall exit unguarded; the daemon has seized it by then unless it
    /// was paused at that very moment.)
    pub fn settle_paused_flag(&mut self) -> Result<(), KernelError> {
        let name = names::SYS_EXIT_MODE;
        let paused = |k: &Self| {
            k.bpf
                .map(names::HELD)
                .and_then(|m| BpfHashMap::<_, u32, Held>::try_from(m).ok())
                .is_some_and(|held| {
                    held.iter()
                        .flatten()
                        .any(|(_, h)| h.state != held_state::STOP_AT_EXIT)
                })
        };
        if self
            .sys_exit_array()?
            .get(&1, 0)
            .map_err(map_err("read", name))?
            == 0
            || paused(self)
        {
            return Ok(());
        }
        self.sys_exit_array()?
            .set(1, 0, 0)
            .map_err(map_err("update", name))?;
        if paused(self) {
            self.sys_exit_array()?
                .set(1, 1, 0)
                .map_err(map_err("update", name))?;
        }
        Ok(())
    }

    fn sys_exit_array(&mut self) -> Result<aya::maps::Array<&mut MapData, u32>, KernelError> {
        let name = names::SYS_EXIT_MODE;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        aya::maps::Array::try_from(map).map_err(map_err("open", name))
    }

    /// Records a human decision on one held action, for the hook to apply
    /// when the thread's syscall restarts (and consume: it opens one action).
    pub fn grant(&mut self, key: &HoldKey, decision: Decision) -> Result<(), KernelError> {
        let mut grants: BpfHashMap<_, HoldKey, u32> = self.map_mut(names::GRANTS)?;
        grants
            .insert(*key, decision as u8 as u32, 0)
            .map_err(map_err("update", names::GRANTS))
    }

    /// Withdraws a decision the hook has not consumed. Returns whether it
    /// was still there (false: the hook took it, its outcome is on its way).
    pub fn withdraw_grant(&mut self, key: &HoldKey) -> Result<bool, KernelError> {
        self.delete::<HoldKey, u32>(names::GRANTS, key)
    }

    /// Hands the ring buffer to the event reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let map = self
            .bpf
            .take_map(names::EVENTS)
            .ok_or(KernelError::Missing {
                what: "map",
                name: names::EVENTS,
            })?;
        RingBuf::try_from(map).map_err(map_err("open", names::EVENTS))
    }

    /// Attaches the network programs to an agent's cgroup and pins the
    /// links, so they keep enforcing while no daemon runs. Idempotent.
    pub fn attach(&mut self, cgroup: &Path, cgroup_id: u64) -> Result<(), KernelError> {
        if self.links.contains_key(&cgroup_id) {
            return Ok(());
        }
        let file = File::open(cgroup).map_err(|source| KernelError::OpenCgroup {
            cgroup: cgroup.display().to_string(),
            source,
        })?;
        let mut links = Vec::new();
        for name in names::CGROUP_NET_PROGRAMS {
            // aya attaches through a bpf_link when the kernel has them, and
            // the kernel refuses link flags: links always coexist with other
            // programs on the cgroup, so "Single" (no flags) is what we want.
            let attached = self.sock_addr(name).and_then(|prog| {
                let id = prog
                    .attach(&file, CgroupAttachMode::Single)
                    .map_err(|source| KernelError::Attach {
                        name,
                        cgroup: cgroup.display().to_string(),
                        source,
                    })?;
                let link = prog.take_link(id).map_err(|source| KernelError::Attach {
                    name,
                    cgroup: cgroup.display().to_string(),
                    source,
                })?;
                FdLink::try_from(link).map_err(|e| KernelError::Pin {
                    what: format!("{name} link on {}", cgroup.display()),
                    detail: e.to_string(),
                })
            });
            match attached.and_then(|link| self.pin_link(link, &format!("cg-{cgroup_id}-{name}"))) {
                Ok(pinned) => links.push(pinned),
                Err(e) => {
                    // Leave nothing half-attached.
                    self.detach_links(links);
                    return Err(e);
                }
            }
        }
        self.links.insert(cgroup_id, links);
        Ok(())
    }

    /// Pins `link` as `<pin dir>/links/<name>-<daemon pid>`: unique per
    /// daemon, so a restarted daemon can tell its links from its
    /// predecessor's (see `drop_stale_links`).
    fn pin_link(&mut self, link: FdLink, name: &str) -> Result<Pinned, KernelError> {
        let path = self
            .pins
            .join("links")
            .join(format!("{name}-{}", std::process::id()));
        let link = link.pin(&path).map_err(|e| KernelError::Pin {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
        self.owned.insert(path.clone());
        Ok(Pinned { path, link })
    }

    /// Unpins links this daemon does not own: its predecessor's, which kept
    /// enforcing until this daemon attached its own. Called once the first
    /// reconcile is done, so there is never a moment without either.
    pub fn drop_stale_links(&mut self) -> usize {
        let Ok(dir) = std::fs::read_dir(self.pins.join("links")) else {
            return 0;
        };
        let mut dropped = 0;
        for entry in dir.flatten() {
            let path = entry.path();
            if self.owned.contains(&path) {
                continue;
            }
            match PinnedLink::from_pin(&path)
                .map_err(|e| e.to_string())
                .and_then(|l| l.unpin().map_err(|e| e.to_string()))
            {
                // Dropping the last reference detaches it.
                Ok(fd_link) => {
                    drop(fd_link);
                    dropped += 1;
                }
                Err(e) => tracing::warn!(pin = %path.display(), error = %e, "unpin stale link"),
            }
        }
        dropped
    }

    fn sock_addr(&mut self, name: &'static str) -> Result<&mut CgroupSockAddr, KernelError> {
        self.bpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
                what: "cgroup sock_addr program",
                name,
            })
    }

    fn detach_links(&mut self, links: Vec<Pinned>) {
        for pinned in links {
            self.owned.remove(&pinned.path);
            match pinned.link.unpin() {
                Ok(link) => drop(link),
                Err(e) => tracing::warn!(pin = %pinned.path.display(), error = %e, "unpin failed"),
            }
        }
    }

    /// Installs an agent's compiled policy, replacing the previous one
    /// atomically (see the module comment).
    pub fn install(&mut self, cgroup_id: u64, rules: &AgentRules<'_>) -> Result<(), KernelError> {
        let AgentRules {
            agent_id,
            policy_gen,
            net,
            paths,
            revoked,
            fail_open,
        } = *rules;
        let old = self.installed.remove(&cgroup_id);
        let half = old.as_ref().map_or(0, |o| (o.info.slot & 1) ^ 1);
        let slot = AgentInfo::slot_for(agent_id, half);
        // `warden kill` sets REVOKED in the pinned map directly (it works
        // with no daemon); a reinstall racing it must not clear it. Lifting
        // it is `set_revoked(false)`'s job alone.
        let killed = self.current_flags(cgroup_id) & agent_flags::REVOKED;
        let mut flags = if revoked {
            agent_flags::REVOKED
        } else {
            killed
        };
        if paths.exec_governed {
            flags |= agent_flags::EXEC;
        }
        if paths.file_governed {
            flags |= agent_flags::FILE;
        }
        if fail_open {
            flags |= agent_flags::FAIL_OPEN;
        }
        let info = AgentInfo {
            agent_id,
            policy_gen,
            slot,
            flags,
        };

        let mut new = Installed {
            info,
            v4: Vec::new(),
            v6: Vec::new(),
            exec: Vec::new(),
            file: Vec::new(),
        };
        let result = self.write_rules(slot, net, paths, &mut new).and_then(|()| {
            let mut agents: BpfHashMap<_, u64, AgentInfo> = self.map_mut(names::AGENTS)?;
            agents
                .insert(cgroup_id, info, 0)
                .map_err(map_err("update", names::AGENTS))
        });
        match result {
            Ok(()) => {
                if let Some(old) = old {
                    if old.info.slot != slot {
                        self.clear_rules(&old);
                    }
                }
                self.installed.insert(cgroup_id, new);
                Ok(())
            }
            Err(e) => {
                // The old policy stays in force; drop what we half-wrote.
                self.clear_rules(&new);
                if let Some(old) = old {
                    self.installed.insert(cgroup_id, old);
                }
                Err(e)
            }
        }
    }

    /// The flags of an agent's entry in the kernel map now (0 if none).
    fn current_flags(&self, cgroup_id: u64) -> u32 {
        self.bpf
            .map(names::AGENTS)
            .and_then(|m| BpfHashMap::<_, u64, AgentInfo>::try_from(m).ok())
            .and_then(|agents| agents.get(&cgroup_id, 0).ok())
            .map_or(0, |info| info.flags)
    }

    /// Sets or clears the kill-switch flag without touching the rules.
    pub fn set_revoked(&mut self, cgroup_id: u64, revoked: bool) -> Result<(), KernelError> {
        let Some(inst) = self.installed.get(&cgroup_id) else {
            return Ok(());
        };
        let mut info = inst.info;
        info.flags = if revoked {
            info.flags | agent_flags::REVOKED
        } else {
            info.flags & !agent_flags::REVOKED
        };
        let mut agents: BpfHashMap<_, u64, AgentInfo> = self.map_mut(names::AGENTS)?;
        agents
            .insert(cgroup_id, info, 0)
            .map_err(map_err("update", names::AGENTS))?;
        if let Some(inst) = self.installed.get_mut(&cgroup_id) {
            inst.info = info;
        }
        Ok(())
    }

    /// Detaches an agent's programs and removes its maps entries.
    pub fn remove(&mut self, cgroup_id: u64) -> Result<(), KernelError> {
        if let Some(links) = self.links.remove(&cgroup_id) {
            self.detach_links(links);
        }
        if let Some(old) = self.installed.remove(&cgroup_id) {
            self.delete::<u64, AgentInfo>(names::AGENTS, &cgroup_id)?;
            self.clear_rules(&old);
        }
        Ok(())
    }

    /// Cgroup ids of the agents the kernel currently enforces.
    pub fn enforced(&self) -> impl Iterator<Item = (&u64, &AgentInfo)> {
        self.installed.iter().map(|(id, inst)| (id, &inst.info))
    }

    pub fn is_attached(&self, cgroup_id: u64) -> bool {
        self.links.contains_key(&cgroup_id) && self.installed.contains_key(&cgroup_id)
    }

    pub fn counters(&self) -> Result<Counters, KernelError> {
        let map = self.bpf.map(names::COUNTERS).ok_or(KernelError::Missing {
            what: "map",
            name: names::COUNTERS,
        })?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_err("open", names::COUNTERS))?;
        let sum = |index: u32| -> Result<u64, KernelError> {
            let values = array
                .get(&index, 0)
                .map_err(map_err("read", names::COUNTERS))?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            events: sum(counter::EVENTS)?,
            dropped: sum(counter::DROPPED)?,
            allowed: sum(counter::ALLOWED)?,
            denied: sum(counter::DENIED)?,
            held: sum(counter::HELD)?,
            hold_failed: sum(counter::HOLD_FAILED)?,
            hold_breach: sum(counter::HOLD_BREACH)?,
            kill_failed: sum(counter::KILL_FAILED)?,
        })
    }

    /// The kernel's per-agent counts (`AGENT_COUNTERS`), summed over CPUs.
    pub fn agent_counters(&self) -> Result<Vec<(u32, AgentCounters)>, KernelError> {
        let map = self
            .bpf
            .map(names::AGENT_COUNTERS)
            .ok_or(KernelError::Missing {
                what: "map",
                name: names::AGENT_COUNTERS,
            })?;
        let hash: PerCpuHashMap<_, u32, AgentCounters> =
            PerCpuHashMap::try_from(map).map_err(map_err("open", names::AGENT_COUNTERS))?;
        let mut out = Vec::new();
        for item in hash.iter() {
            let (agent_id, values) = item.map_err(map_err("read", names::AGENT_COUNTERS))?;
            let mut sum = AgentCounters::default();
            for v in values.iter() {
                sum.decisions += v.decisions;
                sum.dropped += v.dropped;
                sum.allowed_unrecorded += v.allowed_unrecorded;
            }
            out.push((agent_id, sum));
        }
        Ok(out)
    }

    fn map_mut<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, K, V>, KernelError> {
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        BpfHashMap::try_from(map).map_err(map_err("open", name))
    }

    /// Deletes `key` from the hash map `name`; returns whether it was
    /// there. A key already gone is not an error: aya reports it as the
    /// syscall's ENOENT (never as `MapError::KeyNotFound`, which only
    /// lookups return).
    fn delete<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        key: &K,
    ) -> Result<bool, KernelError> {
        match self.map_mut::<K, V>(name)?.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(map_err("delete from", name)(e)),
        }
    }

    fn write_rules(
        &mut self,
        slot: u32,
        net: &CompiledNet,
        paths: &CompiledPaths,
        into: &mut Installed,
    ) -> Result<(), KernelError> {
        let map = self
            .bpf
            .map_mut(names::NET4_RULES)
            .ok_or(KernelError::Missing {
                what: "map",
                name: names::NET4_RULES,
            })?;
        let mut v4: LpmTrie<_, Net4Key, NetRules> =
            LpmTrie::try_from(map).map_err(map_err("open", names::NET4_RULES))?;
        for (prefix, addr, rules) in &net.v4 {
            let key = Key::new(SLOT_PREFIX_BITS + prefix, Net4Key { slot, addr: *addr });
            v4.insert(&key, rules, 0)
                .map_err(map_err("update", names::NET4_RULES))?;
            into.v4.push(key);
        }
        let map = self
            .bpf
            .map_mut(names::NET6_RULES)
            .ok_or(KernelError::Missing {
                what: "map",
                name: names::NET6_RULES,
            })?;
        let mut v6: LpmTrie<_, Net6Key, NetRules> =
            LpmTrie::try_from(map).map_err(map_err("open", names::NET6_RULES))?;
        for (prefix, addr, rules) in &net.v6 {
            let key = Key::new(SLOT_PREFIX_BITS + prefix, Net6Key { slot, addr: *addr });
            v6.insert(&key, rules, 0)
                .map_err(map_err("update", names::NET6_RULES))?;
            into.v6.push(key);
        }
        let name = names::EXEC_RULES;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let mut exec: LpmTrie<_, PathKey, PathRule> =
            LpmTrie::try_from(map).map_err(map_err("open", name))?;
        for entry in &paths.exec {
            let (bits, data) = entry.key(slot);
            let key = Key::new(bits, data);
            exec.insert(&key, entry.value, 0)
                .map_err(map_err("update", name))?;
            into.exec.push(key);
        }
        let name = names::FILE_RULES;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let mut file: LpmTrie<_, PathKey, FileRule> =
            LpmTrie::try_from(map).map_err(map_err("open", name))?;
        for entry in &paths.file {
            let (bits, data) = entry.key(slot);
            let key = Key::new(bits, data);
            file.insert(&key, entry.value, 0)
                .map_err(map_err("update", name))?;
            into.file.push(key);
        }
        Ok(())
    }

    /// Best effort: a stale entry under an unused slot is never looked up.
    fn clear_rules(&mut self, inst: &Installed) {
        remove_keys::<Net4Key, NetRules>(&mut self.bpf, names::NET4_RULES, &inst.v4);
        remove_keys::<Net6Key, NetRules>(&mut self.bpf, names::NET6_RULES, &inst.v6);
        remove_keys::<PathKey, PathRule>(&mut self.bpf, names::EXEC_RULES, &inst.exec);
        remove_keys::<PathKey, FileRule>(&mut self.bpf, names::FILE_RULES, &inst.file);
    }
}

/// What the kill switch did in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The flag is set (or cleared) in the pinned `AGENTS` map: every hook
    /// refuses (or decides normally) from the next action on.
    Applied,
    /// No pinned maps at the pin directory: no Warden programs are loaded,
    /// so there is nothing in the kernel to revoke.
    NoPins,
}

/// Sets or clears an agent's kill-switch flag directly in the pinned
/// `AGENTS` map: no daemon needed. An agent with no entry yet gets one
/// (with no rules), so the global exec/open hooks refuse it too.
pub fn set_revoked_pinned(
    pins: &Path,
    cgroup_id: u64,
    agent_id: u32,
    revoked: bool,
) -> Result<Revocation, KernelError> {
    let path = pins.join("maps").join(names::AGENTS);
    if !path.exists() {
        return Ok(Revocation::NoPins);
    }
    let name = names::AGENTS;
    let data = MapData::from_pin(&path).map_err(map_err("open pinned", name))?;
    let mut agents: BpfHashMap<_, u64, AgentInfo> =
        BpfHashMap::try_from(aya::maps::Map::HashMap(data)).map_err(map_err("open", name))?;
    let mut info = match agents.get(&cgroup_id, 0) {
        Ok(info) => info,
        Err(aya::maps::MapError::KeyNotFound) if !revoked => return Ok(Revocation::Applied),
        Err(aya::maps::MapError::KeyNotFound) => AgentInfo {
            agent_id,
            policy_gen: 0,
            slot: AgentInfo::slot_for(agent_id, 0),
            flags: 0,
        },
        Err(e) => return Err(map_err("read", name)(e)),
    };
    if revoked {
        info.flags |= agent_flags::REVOKED;
    } else {
        info.flags &= !agent_flags::REVOKED;
    }
    agents
        .insert(cgroup_id, info, 0)
        .map_err(map_err("update", name))?;
    Ok(Revocation::Applied)
}

/// Unpins every link and map under `pins` (detaching the programs) and
/// removes the directories. Returns how many pins were removed.
pub fn uninstall(pins: &Path) -> Result<usize, KernelError> {
    let mut removed = 0;
    // Links first: once they are gone no program runs, then the maps.
    for sub in ["links", "maps"] {
        let dir = pins.join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            std::fs::remove_file(entry.path()).map_err(|e| {
                KernelError::Bpffs(format!("unpin {}: {e}", entry.path().display()))
            })?;
            removed += 1;
        }
        std::fs::remove_dir(&dir)
            .map_err(|e| KernelError::Bpffs(format!("remove {}: {e}", dir.display())))?;
    }
    if pins.exists() {
        std::fs::remove_dir(pins)
            .map_err(|e| KernelError::Bpffs(format!("remove {}: {e}", pins.display())))?;
    }
    Ok(removed)
}
