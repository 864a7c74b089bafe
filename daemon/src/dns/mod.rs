//! Rules by name: each agent whose policy has `connect: { host: ... }`
//! rules gets a DNS proxy here (UDP and TCP on 127.0.0.1 and ::1, a port
//! of its own). The agent's cgroup programs send its DNS traffic there
//! (`ebpf/programs/src/dns.rs`); the proxy decides the question's name,
//! forwards allowed questions to the resolver the agent asked, writes the
//! answer's addresses into the agent's kernel tables for their TTL
//! (`learned`), and records a `dns` entry for every question.
//!
//! - `origin`: which agent socket sent a query (its cookie: the key of the
//!   original resolver in `DNS_ORIG`).
//! - `serve`: the per-agent listeners, the decision, the forwarding.
//! - `learned`: learned addresses, their kernel entries and expiry, and
//!   the address-to-names map that connect evidence names hosts from.
//! - `held`: names a `hold` rule decides, waiting for a human (the
//!   approval itself is recorded and decided by `holds`, like any hold).

mod held;
mod learned;
mod origin;
mod serve;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::evidence::NewEntry;
use crate::kernel::dns::DnsMaps;
use crate::policy::Policy;

pub use held::{NameDecision, HOLD_WAIT, MAX_HELD_NAMES_PER_AGENT, MAX_WAITERS_PER_NAME};
pub use learned::{clamp_ttl, MAX_TTL, MIN_TTL};

/// `job.action` of a held DNS name in the approvals table.
pub const HOLD_ACTION: &str = "dns";

/// A name a `hold` rule decides was asked for the first time: the daemon
/// records a pending approval (`holds::Holds::on_dns_held`) and later
/// calls [`decided`].
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub agent: String,
    pub owner: String,
    pub cgroup_id: u64,
    pub name: String,
    pub rule_id: String,
    pub snapshot: String,
    pub hold_timeout: Duration,
    /// The `hold` evidence entry (the daemon adds the approval's fields).
    pub entry: NewEntry,
}

/// Queries of one agent being forwarded at once; more are dropped (the
/// client retries), so one agent's flood cannot take the proxy's time
/// from the others (each agent also has its own sockets and tasks).
pub const MAX_INFLIGHT_PER_AGENT: usize = 64;
/// TCP connections of one agent served at once.
pub const MAX_TCP_PER_AGENT: usize = 16;
/// How long the proxy waits for the upstream resolver.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("bind the DNS proxy of agent {agent} on {addr}: {source}")]
    Bind {
        agent: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
}

/// What the proxies share: the kernel maps they write and the way to the
/// evidence writer.
struct Shared {
    maps: Mutex<DnsMaps>,
    evidence: std::sync::mpsc::Sender<NewEntry>,
    /// Where held names go to become approvals (the enforcer).
    hold: Box<dyn Fn(HoldRequest) + Send + Sync>,
    rt: tokio::runtime::Handle,
}

struct Proxies {
    shared: Arc<Shared>,
    agents: HashMap<u32, serve::AgentProxy>,
}

static PROXIES: Mutex<Option<Proxies>> = Mutex::new(None);
/// Set by `shutdown`: the evidence thread ends (and drops the writer).
static STOPPING: AtomicBool = AtomicBool::new(false);

fn proxies() -> std::sync::MutexGuard<'static, Option<Proxies>> {
    PROXIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stops every proxy and the evidence thread (daemon shutdown).
pub fn shutdown() {
    if let Some(mut p) = proxies().take() {
        let ids: Vec<u32> = p.agents.keys().copied().collect();
        for id in ids {
            if let Some(a) = p.agents.remove(&id) {
                a.stop(&p.shared);
            }
        }
    }
    STOPPING.store(true, Ordering::SeqCst);
}

/// Starts the DNS service of the daemon: `queue` appends entries to the
/// evidence log (the daemon's writer), from a thread of its own.
pub fn start(
    maps: DnsMaps,
    queue: impl Fn(Vec<NewEntry>) + Send + 'static,
    hold: impl Fn(HoldRequest) + Send + Sync + 'static,
    rt: tokio::runtime::Handle,
) {
    let (tx, rx) = std::sync::mpsc::channel::<NewEntry>();
    let spawned = std::thread::Builder::new()
        .name("dns-evidence".into())
        .spawn(move || {
            while !STOPPING.load(Ordering::SeqCst) {
                let Ok(first) = rx.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(4095));
                queue(batch);
            }
            // Entries sent before the stop.
            let rest: Vec<NewEntry> = rx.try_iter().collect();
            if !rest.is_empty() {
                queue(rest);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "DNS evidence thread not started; rules by name stay off");
        return;
    }
    let started = Proxies {
        shared: Arc::new(Shared {
            maps: Mutex::new(maps),
            evidence: tx,
            hold: Box::new(hold),
            rt,
        }),
        agents: HashMap::new(),
    };
    STOPPING.store(false, Ordering::SeqCst);
    *proxies() = Some(started);
}

/// The agent's policy changed (or it has none: `policy` None): start,
/// update or stop its proxy. Its learned addresses are gone with the old
/// slot (`Kernel::install`), so the table starts empty.
pub fn configure(
    agent_id: u32,
    agent: &str,
    owner: &str,
    cgroup_id: u64,
    policy: Option<(&Policy, &str)>,
) -> Result<(), DnsError> {
    let mut guard = proxies();
    let Some(p) = guard.as_mut() else {
        return Ok(());
    };
    if let Some(old) = p.agents.remove(&agent_id) {
        old.stop(&p.shared);
    }
    let Some((policy, snapshot)) = policy.filter(|(pol, _)| pol.has_host_rules()) else {
        return Ok(());
    };
    let proxy = serve::AgentProxy::start(
        &p.shared,
        serve::AgentInfo {
            agent_id,
            name: agent.to_string(),
            owner: owner.to_string(),
            cgroup_id,
            policy: Arc::new(policy.clone()),
            snapshot: snapshot.to_string(),
        },
    )?;
    p.agents.insert(agent_id, proxy);
    Ok(())
}

/// The agent of this cgroup is gone: stop its proxy.
pub fn forget_cgroup(cgroup_id: u64) {
    if let Some(p) = proxies().as_mut() {
        let ids: Vec<u32> = p
            .agents
            .iter()
            .filter(|(_, a)| a.cgroup_id() == cgroup_id)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(old) = p.agents.remove(&id) {
                old.stop(&p.shared);
            }
        }
    }
}

/// The names an agent resolved to `addr` whose answers are still live
/// (what connect evidence names as `hosts`).
pub fn names_of(agent_id: u32, addr: IpAddr) -> Vec<String> {
    learned::names_of(agent_id, addr)
}

/// The proxy's ports of an agent (`warden status`, tests).
pub fn ports_of(agent_id: u32) -> Option<(u16, u16)> {
    proxies().as_ref()?.agents.get(&agent_id).map(|a| a.ports)
}

/// The hold of `name` could not be recorded: the proxy forgets it (its
/// waiting questions go unanswered; the next question asks again).
pub fn hold_failed(cgroup_id: u64, snapshot: &str, name: &str) {
    if let Some(p) = proxies().as_ref() {
        for a in p.agents.values() {
            if a.cgroup_id() == cgroup_id && a.snapshot() == snapshot {
                a.forget_name(name);
            }
        }
    }
}

/// A human (or expiry) decided held name `name` of the agent of
/// `cgroup_id` under policy `snapshot`: its waiting questions are answered
/// (or refused), and so are later ones while that snapshot is in force.
/// False if no proxy serves that agent and snapshot now (the policy
/// changed: its proxy and waiting questions are gone).
pub fn decided(cgroup_id: u64, snapshot: &str, name: &str, d: NameDecision) -> bool {
    let guard = proxies();
    let Some(p) = guard.as_ref() else {
        return false;
    };
    p.agents
        .values()
        .find(|a| a.cgroup_id() == cgroup_id && a.snapshot() == snapshot)
        .is_some_and(|a| {
            a.decide_name(name, d);
            true
        })
}
