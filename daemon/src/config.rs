//! Where Warden keeps things. Every path can be set per invocation (flag or
//! environment variable), so tests and the demo run beside a real install
//! without touching it.

use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/warden";
pub const DEFAULT_POLICY_DIR: &str = "/etc/warden/policies";
pub const DEFAULT_SOCKET: &str = "/run/warden/warden.sock";
/// Agent cgroups are created under this directory of the cgroup2 hierarchy.
pub const DEFAULT_CGROUP_PARENT: &str = "warden";
/// Pinned maps and links, on bpffs.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/warden";

/// Every verb takes these as global flags; `help` is what `--help` says,
/// the doc comments are for readers of the library.
#[derive(Debug, Clone, clap::Args)]
pub struct Paths {
    /// Database (`warden.db`: registry and evidence) and keys.
    #[arg(long, global = true, env = "WARDEN_STATE_DIR", default_value = DEFAULT_STATE_DIR,
          help = "Database and keys")]
    pub state_dir: PathBuf,
    /// Policy files that agents reference by name.
    #[arg(long, global = true, env = "WARDEN_POLICY_DIR", default_value = DEFAULT_POLICY_DIR,
          help = "Policy files agents refer to")]
    pub policy_dir: PathBuf,
    /// The daemon's control socket.
    #[arg(long, global = true, env = "WARDEN_SOCKET", default_value = DEFAULT_SOCKET,
          help = "The daemon's control socket")]
    pub socket: PathBuf,
    /// Parent of created agent cgroups, relative to the cgroup2 mount.
    #[arg(long, global = true, env = "WARDEN_CGROUP_PARENT", default_value = DEFAULT_CGROUP_PARENT,
          help = "Parent of created agent cgroups, relative to the cgroup2 mount")]
    pub cgroup_parent: PathBuf,
    /// Pinned maps (`maps/`) and links (`links/`), on bpffs.
    #[arg(long, global = true, env = "WARDEN_PIN_DIR", default_value = DEFAULT_PIN_DIR,
          help = "Where programs and maps are pinned (on bpffs) so enforcement outlives the daemon")]
    pub pin_dir: PathBuf,
}

impl Paths {
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("warden.db")
    }

    /// The cgroup a new (not adopted) agent gets.
    pub fn agent_cgroup(&self, cgroup2_mount: &Path, agent: &str) -> PathBuf {
        cgroup2_mount.join(&self.cgroup_parent).join(agent)
    }
}
