//! Working on the pins with no daemon: the kill switch straight into the
//! pinned `AGENTS` map, uninstalling every pin; and the bpffs mount the pins
//! live on.

use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, MapData};
use warden_common::{agent_flags, names, AgentInfo};

use super::{map_err, KernelError};

/// Mounts bpffs at /sys/fs/bpf if `pins` is below it and nothing is
/// mounted there yet (fresh machines of this kind have it unmounted).
pub(super) fn ensure_bpffs(pins: &Path) -> Result<(), KernelError> {
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
