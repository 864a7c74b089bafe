//! Links: the network programs attached to each agent's cgroup, the global
//! programs attached only while some agent needs them (`sys_exit`, the
//! page-fault guard of held execs), all pinned under `<pin dir>/links/` so
//! they outlive the daemon, and a predecessor's links dropped once this
//! daemon's own are in place.

use std::{fs::File, path::Path};

use aya::programs::{
    links::{CgroupAttachMode, FdLink, PinnedLink},
    BtfTracePoint, CgroupSock, CgroupSockAddr,
};
use warden_common::names;

use super::{map_err, Kernel, KernelError, Pinned};

impl Kernel {
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
        // Packet sockets are socket_create's where it is attached.
        let mode = if self.lsm.packet {
            mode & !warden_common::sys_exit_mode::PACKETS
        } else {
            mode
        };
        if mode == self.sys_exit_mode && (mode != 0) == self.sys_exit.is_some() {
            return Ok(());
        }
        if mode != 0 {
            if !self.sys_exit_loaded {
                self.load_sys_exit_now()?;
            }
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

    /// Loads `sys_exit` and its tail programs where start-up left them out
    /// (BPF LSM or fmod_ret decides every class they serve).
    fn load_sys_exit_now(&mut self) -> Result<(), KernelError> {
        let btf = aya::Btf::from_sys_fs().map_err(KernelError::Btf)?;
        let path_ops_unavailable = super::load::load_sys_exit(&mut self.bpf, &btf)?;
        // Operations on names stay BPF LSM's or fmod_ret's; kept for the
        // status all the same.
        self.path_ops_unavailable = path_ops_unavailable;
        self.sys_exit_loaded = true;
        tracing::info!("tp_btf/sys_exit loaded on first use");
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
        // While `sys_exit` was off no rename moved the epoch on.
        self.forget_cached_decisions();
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

    /// Attaches the network programs to an agent's cgroup and pins the
    /// links, so they keep enforcing while no daemon runs. Idempotent.
    pub fn attach(&mut self, cgroup: &Path, cgroup_id: u64) -> Result<(), KernelError> {
        if self.links.contains_key(&cgroup_id) {
            return Ok(());
        }
        self.covered_by.remove(&cgroup_id);
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
        // Raw and packet sockets are decided at creation.
        let name = names::PROG_SOCK_CREATE;
        let attach_err = |source| KernelError::Attach {
            name,
            cgroup: cgroup.display().to_string(),
            source,
        };
        let attached = self
            .bpf
            .program_mut(name)
            .and_then(|p| <&mut CgroupSock>::try_from(p).ok())
            .ok_or(KernelError::Missing {
                what: "cgroup sock program",
                name,
            })
            .and_then(|prog| {
                let id = prog
                    .attach(&file, CgroupAttachMode::Single)
                    .map_err(attach_err)?;
                let link = prog.take_link(id).map_err(attach_err)?;
                FdLink::try_from(link).map_err(|e| KernelError::Pin {
                    what: format!("{name} link on {}", cgroup.display()),
                    detail: e.to_string(),
                })
            })
            .and_then(|link| self.pin_link(link, &format!("cg-{cgroup_id}-{name}")));
        match attached {
            Ok(pinned) => links.push(pinned),
            Err(e) => {
                self.detach_links(links);
                return Err(e);
            }
        }
        self.links.insert(cgroup_id, links);
        Ok(())
    }

    /// Pins `link` as `<pin dir>/links/<name>-<daemon pid>`: unique per
    /// daemon, so a restarted daemon can tell its links from its
    /// predecessor's (see `drop_stale_links`).
    pub(super) fn pin_link(&mut self, link: FdLink, name: &str) -> Result<Pinned, KernelError> {
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

    pub(super) fn detach_links(&mut self, links: Vec<Pinned>) {
        for pinned in links {
            self.owned.remove(&pinned.path);
            match pinned.link.unpin() {
                Ok(link) => drop(link),
                Err(e) => tracing::warn!(pin = %pinned.path.display(), error = %e, "unpin failed"),
            }
        }
    }

    /// Whether programs decide the agent's network actions: its own, or
    /// those of the ancestor agent that covers it.
    pub fn is_attached(&self, cgroup_id: u64) -> bool {
        let attached = self.links.contains_key(&cgroup_id)
            || self
                .covered_by
                .get(&cgroup_id)
                .is_some_and(|top| self.links.contains_key(top));
        attached && self.installed.contains_key(&cgroup_id)
    }

    /// Hands an agent nested below another over to the ancestor's cgroup
    /// programs. A cgroup's attached programs run for every cgroup below it
    /// too, and each looks the caller's deepest agent up, so the ancestor's
    /// already decide for the nested agent with its own policy; a second
    /// set would decide and record each action twice (and consume a held
    /// action's grant in the first set, holding it again in the second).
    /// Does nothing until `top` is attached, so the agent is never left
    /// without programs.
    pub fn cover(&mut self, cgroup_id: u64, top: u64) {
        if !self.links.contains_key(&top) {
            return;
        }
        self.covered_by.insert(cgroup_id, top);
        if let Some(links) = self.links.remove(&cgroup_id) {
            self.detach_links(links);
        }
    }
}
