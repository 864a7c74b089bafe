//! One agent's DNS proxy: UDP and TCP listeners on 127.0.0.1 and ::1 (one
//! port per family, the same for both transports), the decision on the
//! question's name, forwarding to the resolver the agent asked, and the
//! `dns` evidence entry of every question.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RData;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use warden_common::DnsProxy;

use super::held::{Ask, HeldNames, NameDecision, HOLD_WAIT, MAX_HELD_NAMES_PER_AGENT};
use super::learned::{clamp_ttl, Learned};
use super::{
    origin, DnsError, HoldRequest, Shared, HOLD_ACTION, MAX_INFLIGHT_PER_AGENT, MAX_TCP_PER_AGENT,
    UPSTREAM_TIMEOUT,
};
use crate::evidence::{record::UNSET_ID, NewEntry};
use crate::policy::budget::BudgetCount;
use crate::policy::{Decision, Policy};

/// Who the proxy serves.
pub struct AgentInfo {
    pub agent_id: u32,
    pub name: String,
    pub owner: String,
    pub cgroup_id: u64,
    pub policy: Arc<Policy>,
    pub snapshot: String,
}

struct Agent {
    info: AgentInfo,
    learned: Mutex<Learned>,
    held: Mutex<HeldNames>,
    inflight: Arc<Semaphore>,
    tcp: Arc<Semaphore>,
}

pub struct AgentProxy {
    agent: Arc<Agent>,
    tasks: Vec<JoinHandle<()>>,
    pub ports: (u16, u16),
}

/// The sockets of one family: UDP and TCP on the same port.
fn bind_pair(
    ip: IpAddr,
    agent: &str,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let err = |source| DnsError::Bind {
        agent: agent.to_string(),
        addr: ip.to_string(),
        source,
    };
    let mut last = None;
    // The UDP port is the kernel's choice; TCP may find it taken: retry.
    for _ in 0..16 {
        let udp = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(err)?;
        let port = udp.local_addr().map_err(err)?.port();
        match std::net::TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(tcp) => {
                udp.set_nonblocking(true).map_err(err)?;
                tcp.set_nonblocking(true).map_err(err)?;
                return Ok((udp, tcp));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(err(
        last.unwrap_or_else(|| std::io::Error::other("no free port"))
    ))
}

impl AgentProxy {
    pub(super) fn start(shared: &Arc<Shared>, info: AgentInfo) -> Result<Self, DnsError> {
        let (udp4, tcp4) = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), &info.name)?;
        // IPv6 loopback may be off on a host: port6 stays 0 and the
        // agent's IPv6 DNS is redirected to a port nobody serves (fails
        // closed).
        let six = bind_pair(IpAddr::V6(Ipv6Addr::LOCALHOST), &info.name).ok();
        let port4 = udp4.local_addr().map(|a| a.port()).unwrap_or(0);
        let port6 = six
            .as_ref()
            .and_then(|(u, _)| u.local_addr().ok())
            .map_or(0, |a| a.port());
        let agent = Arc::new(Agent {
            info,
            learned: Mutex::new(Learned::default()),
            held: Mutex::new(HeldNames::default()),
            inflight: Arc::new(Semaphore::new(MAX_INFLIGHT_PER_AGENT)),
            tcp: Arc::new(Semaphore::new(MAX_TCP_PER_AGENT)),
        });
        let _guard = shared.rt.enter();
        let mut tasks = Vec::new();
        let mut sockets = vec![(udp4, tcp4)];
        sockets.extend(six);
        for (udp, tcp) in sockets {
            let udp = Arc::new(UdpSocket::from_std(udp).map_err(|source| DnsError::Bind {
                agent: agent.info.name.clone(),
                addr: "udp".into(),
                source,
            })?);
            let tcp = TcpListener::from_std(tcp).map_err(|source| DnsError::Bind {
                agent: agent.info.name.clone(),
                addr: "tcp".into(),
                source,
            })?;
            tasks.push(
                shared
                    .rt
                    .spawn(serve_udp(udp, agent.clone(), shared.clone())),
            );
            tasks.push(
                shared
                    .rt
                    .spawn(serve_tcp(tcp, agent.clone(), shared.clone())),
            );
        }
        tasks.push(shared.rt.spawn(expire(agent.clone(), shared.clone())));
        // Last: the kernel redirects only once this entry is there.
        shared
            .maps
            .lock()
            .expect("dns maps lock")
            .proxy
            .insert(agent.info.agent_id, DnsProxy { port4, port6 }, 0)
            .map_err(|source| crate::kernel::KernelError::Map {
                op: "update",
                map: warden_common::names::DNS_PROXY,
                source,
            })?;
        tracing::info!(agent = %agent.info.name, port4, port6, "DNS proxy serving");
        Ok(AgentProxy {
            agent,
            tasks,
            ports: (port4, port6),
        })
    }

    pub(super) fn cgroup_id(&self) -> u64 {
        self.agent.info.cgroup_id
    }

    pub(super) fn snapshot(&self) -> &str {
        &self.agent.info.snapshot
    }

    pub(super) fn forget_name(&self, name: &str) {
        self.agent
            .held
            .lock()
            .expect("held names lock")
            .forget(name);
    }

    pub(super) fn decide_name(&self, name: &str, d: NameDecision) {
        self.agent
            .held
            .lock()
            .expect("held names lock")
            .decide(name, d);
    }

    pub(super) fn stop(self, shared: &Shared) {
        let mut maps = shared.maps.lock().expect("dns maps lock");
        let _ = maps.proxy.remove(&self.agent.info.agent_id);
        for t in &self.tasks {
            t.abort();
        }
        let a = &self.agent.info;
        self.agent.learned.lock().expect("learned lock").clear(
            &mut maps,
            &a.policy,
            a.agent_id,
            a.cgroup_id,
        );
    }
}

async fn expire(agent: Arc<Agent>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let mut maps = shared.maps.lock().expect("dns maps lock");
        let a = &agent.info;
        agent.learned.lock().expect("learned lock").sweep(
            &mut maps,
            &a.policy,
            a.agent_id,
            a.cgroup_id,
        );
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, agent: Arc<Agent>, shared: Arc<Shared>) {
    let local = sock.local_addr().ok();
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "DNS proxy recv");
                continue;
            }
        };
        // Over its share of queries in flight: dropped, the client retries.
        let Ok(permit) = agent.inflight.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (sock, agent, shared) = (sock.clone(), agent.clone(), shared.clone());
        tokio::spawn(async move {
            let Some(local) = local else { return };
            let origin = origin::cookie_of(peer, local, false);
            if let Some(reply) = answer(&agent, &shared, &query, origin, false, Some(permit)).await
            {
                let _ = sock.send_to(&reply, peer).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, agent: Arc<Agent>, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = agent.tcp.clone().try_acquire_owned() else {
            continue;
        };
        let (agent, shared) = (agent.clone(), shared.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = serve_conn(stream, peer, &agent, &shared).await;
        });
    }
}

async fn serve_conn(
    mut s: TcpStream,
    peer: SocketAddr,
    agent: &Agent,
    shared: &Shared,
) -> std::io::Result<()> {
    let local = s.local_addr()?;
    let origin = origin::cookie_of(peer, local, true);
    loop {
        let mut len = [0u8; 2];
        // Idle for 10 s, or the client closed: done (a closed connection
        // is not an empty query).
        if !matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return Ok(());
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut query).await?;
        if let Some(reply) = answer(agent, shared, &query, origin, true, None).await {
            let n = u16::try_from(reply.len()).unwrap_or(u16::MAX);
            s.write_all(&n.to_be_bytes()).await?;
            s.write_all(&reply[..usize::from(n)]).await?;
        }
    }
}

/// An error answer to `query` (its id and question kept when it parsed).
fn error_reply(query: &[u8], parsed: Option<&Message>, code: ResponseCode) -> Vec<u8> {
    let mut m = match parsed {
        Some(q) => {
            let mut m = Message::new();
            m.set_id(q.id())
                .set_op_code(q.op_code())
                .set_recursion_desired(q.recursion_desired())
                .add_queries(q.queries().to_vec());
            m
        }
        None => {
            let id = if query.len() >= 2 {
                u16::from_be_bytes([query[0], query[1]])
            } else {
                0
            };
            let mut m = Message::new();
            m.set_id(id);
            m
        }
    };
    m.set_message_type(MessageType::Response)
        .set_recursion_available(true)
        .set_response_code(code);
    m.to_vec().unwrap_or_default()
}

/// What one question came to, for its evidence entry.
struct Outcome<'a> {
    name: String,
    qtype: String,
    decision: &'a str,
    rule: String,
    transport: &'a str,
    resolver: Option<SocketAddr>,
    addresses: Vec<String>,
    code: ResponseCode,
    detail: Option<String>,
    /// The approval that decided a held name.
    approval: Option<u64>,
}

/// The RFC mnemonic of a response code (`NOERROR`, `REFUSED`, ...).
fn rcode_name(code: ResponseCode) -> String {
    match u16::from(code) {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

fn record(agent: &Agent, shared: &Shared, o: Outcome<'_>) {
    let mut details = serde_json::Map::new();
    details.insert("qtype".into(), json!(o.qtype));
    details.insert("transport".into(), json!(o.transport));
    details.insert("response_code".into(), json!(rcode_name(o.code)));
    if let Some(r) = o.resolver {
        details.insert("resolver".into(), json!(r.to_string()));
    }
    if !o.addresses.is_empty() {
        details.insert("addresses".into(), json!(o.addresses));
    }
    if let Some(d) = o.detail {
        details.insert("error".into(), json!(d));
    }
    if let Some(id) = o.approval {
        details.insert("approval_id".into(), json!(id));
    }
    let entry = dns_entry(agent, o.name, o.decision, o.rule, details);
    let _ = shared.evidence.send(entry);
}

/// A `dns` entry of this agent (the proxy knows the socket, not the task).
fn dns_entry(
    agent: &Agent,
    name: String,
    decision: &str,
    rule: String,
    details: serde_json::Map<String, serde_json::Value>,
) -> NewEntry {
    NewEntry {
        ts_ns: crate::clock::now_ns(),
        kind: "dns".into(),
        agent: agent.info.name.clone(),
        owner: agent.info.owner.clone(),
        uid: UNSET_ID,
        loginuid: UNSET_ID,
        user: "unknown".into(),
        login_user: "unset".into(),
        pid: 0,
        // The asking process is not known here (a socket, not a task).
        exe: "unknown".into(),
        action: "dns".into(),
        target: name,
        decision: decision.into(),
        rule_id: rule,
        policy_snapshot: agent.info.snapshot.clone(),
        method: "dns-proxy".into(),
        details,
    }
}

/// What waiting on a held name came to.
enum Held {
    Approved(u64),
    /// Rejected (or expired): its approval's id.
    Rejected(u64),
    /// Too many names pending: refused, with why.
    OverBound(String),
    /// No decision in time, or too many questions waiting: no answer (the
    /// client retries, and the retry joins the hold).
    NoAnswer,
}

/// A question of a name a `hold` rule decides: the decision made before,
/// or a wait for it (the first question records the hold). The query's
/// share of the in-flight bound is given back while it waits: the held
/// names and their waiters have bounds of their own.
async fn wait_for_name(
    agent: &Agent,
    shared: &Shared,
    name: &str,
    rule_id: &str,
    hold_entry: impl FnOnce() -> NewEntry,
    permit: Option<OwnedSemaphorePermit>,
) -> Held {
    let asked = agent.held.lock().expect("held names lock").ask(name);
    let (mut rx, _waiter) = match asked {
        Ask::Decided(d) if d.approved => return Held::Approved(d.id),
        Ask::Decided(d) => return Held::Rejected(d.id),
        Ask::Full => {
            return Held::OverBound(format!(
                "{MAX_HELD_NAMES_PER_AGENT} names of this agent already wait for a decision (the limit)"
            ))
        }
        Ask::Busy => return Held::NoAnswer,
        Ask::Wait { rx, waiter, new } => {
            if new {
                (shared.hold)(HoldRequest {
                    agent: agent.info.name.clone(),
                    owner: agent.info.owner.clone(),
                    cgroup_id: agent.info.cgroup_id,
                    name: name.to_string(),
                    rule_id: rule_id.to_string(),
                    snapshot: agent.info.snapshot.clone(),
                    hold_timeout: agent.info.policy.hold_timeout,
                    entry: hold_entry(),
                });
            }
            (rx, waiter)
        }
    };
    drop(permit);
    let decided = match tokio::time::timeout(HOLD_WAIT, rx.wait_for(Option::is_some)).await {
        Ok(Ok(d)) => *d,
        // Timed out, or the proxy stopped (policy changed).
        _ => None,
    };
    match decided {
        Some(d) if d.approved => Held::Approved(d.id),
        Some(d) => Held::Rejected(d.id),
        None => Held::NoAnswer,
    }
}

/// Decides and answers one query. None: no answer (the upstream did not
/// reply; the client times out as it would have).
async fn answer(
    agent: &Agent,
    shared: &Shared,
    query: &[u8],
    cookie: Option<u64>,
    tcp: bool,
    permit: Option<OwnedSemaphorePermit>,
) -> Option<Vec<u8>> {
    let transport = if tcp { "tcp" } else { "udp" };
    let parsed = Message::from_vec(query).ok();
    let question = parsed
        .as_ref()
        .filter(|m| m.message_type() == MessageType::Query)
        .and_then(|m| m.queries().first().cloned());
    let Some(question) = question else {
        record(
            agent,
            shared,
            Outcome {
                name: "(malformed)".into(),
                qtype: String::new(),
                decision: "malformed",
                rule: "n/a".into(),
                transport,
                resolver: None,
                addresses: Vec::new(),
                code: ResponseCode::FormErr,
                detail: Some(format!("{} bytes that are not a DNS query", query.len())),
                approval: None,
            },
        );
        return Some(error_reply(query, None, ResponseCode::FormErr));
    };
    let parsed = parsed?;
    let name = crate::policy::host::normalise(&question.name().to_ascii());
    let qtype = question.query_type().to_string();
    let policy = &agent.info.policy;
    let rule = policy.host_rule_for(&name);
    let rule_id = rule.map_or_else(|| "default".to_string(), |i| policy.rules[i].id.clone());
    let decision = rule.map(|i| policy.rules[i].decision);
    let resolver = cookie.and_then(|c| {
        let maps = shared.maps.lock().ok()?;
        let o = maps.orig.get(&c, 0).ok()?;
        let ip = if o.family == libc::AF_INET as u16 {
            IpAddr::V4(Ipv4Addr::new(o.addr[0], o.addr[1], o.addr[2], o.addr[3]))
        } else {
            let v6 = Ipv6Addr::from(o.addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        };
        Some(SocketAddr::new(ip, o.port))
    });
    let base = |decision, code, detail: Option<String>| Outcome {
        name: name.clone(),
        qtype: qtype.clone(),
        decision,
        rule: rule_id.clone(),
        transport,
        resolver,
        addresses: Vec::new(),
        code,
        detail,
        approval: None,
    };
    let mut approval = None;
    if decision == Some(Decision::Hold) {
        let hold_entry = || {
            let mut details = serde_json::Map::new();
            details.insert("qtype".into(), json!(qtype));
            details.insert("transport".into(), json!(transport));
            if let Some(r) = resolver {
                details.insert("resolver".into(), json!(r.to_string()));
            }
            let mut e = dns_entry(agent, name.clone(), "hold", rule_id.clone(), details);
            e.kind = "hold".into();
            e.action = HOLD_ACTION.into();
            e
        };
        match wait_for_name(agent, shared, &name, &rule_id, hold_entry, permit).await {
            Held::Approved(id) => approval = Some(id),
            Held::Rejected(id) => {
                let mut o = base("deny", ResponseCode::Refused, None);
                o.approval = Some(id);
                record(agent, shared, o);
                return Some(error_reply(query, Some(&parsed), ResponseCode::Refused));
            }
            Held::OverBound(why) => {
                record(
                    agent,
                    shared,
                    base("deny", ResponseCode::Refused, Some(why)),
                );
                return Some(error_reply(query, Some(&parsed), ResponseCode::Refused));
            }
            Held::NoAnswer => return None,
        }
    } else if decision != Some(Decision::Allow) {
        record(agent, shared, base("deny", ResponseCode::Refused, None));
        return Some(error_reply(query, Some(&parsed), ResponseCode::Refused));
    }
    let rule = rule?;
    if let Some((over, why)) = over_budget(agent, shared, rule) {
        let mut o = base("deny", ResponseCode::Refused, why);
        o.rule = over;
        o.approval = approval;
        record(agent, shared, o);
        return Some(error_reply(query, Some(&parsed), ResponseCode::Refused));
    }
    let Some(upstream) = resolver else {
        let why = "the original resolver of this socket is unknown".to_string();
        record(
            agent,
            shared,
            base("error", ResponseCode::ServFail, Some(why)),
        );
        return Some(error_reply(query, Some(&parsed), ResponseCode::ServFail));
    };
    let reply = match forward(upstream, query, tcp).await {
        Ok(r) => r,
        Err(e) => {
            record(
                agent,
                shared,
                base("error", ResponseCode::ServFail, Some(e.to_string())),
            );
            return Some(error_reply(query, Some(&parsed), ResponseCode::ServFail));
        }
    };
    let Ok(answer) = Message::from_vec(&reply) else {
        let why = "the resolver's answer is not DNS".to_string();
        record(
            agent,
            shared,
            base("error", ResponseCode::ServFail, Some(why)),
        );
        return Some(error_reply(query, Some(&parsed), ResponseCode::ServFail));
    };
    // Before the agent sees an address, the kernel allows it.
    let mut addresses = Vec::new();
    let mut failed = None;
    {
        let mut maps = shared.maps.lock().expect("dns maps lock");
        let mut learned = agent.learned.lock().expect("learned lock");
        for r in answer.answers() {
            let addr = match r.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            let ttl = clamp_ttl(r.ttl());
            match learned.add(
                &mut maps,
                policy,
                agent.info.agent_id,
                agent.info.cgroup_id,
                addr,
                rule,
                &name,
                ttl,
            ) {
                Ok(()) => addresses.push(format!("{addr} ttl {}s", ttl.as_secs())),
                Err(e) => failed = Some(e),
            }
        }
    }
    if let Some(e) = failed {
        record(
            agent,
            shared,
            base("error", ResponseCode::ServFail, Some(e)),
        );
        return Some(error_reply(query, Some(&parsed), ResponseCode::ServFail));
    }
    let mut o = base("allow", answer.response_code(), None);
    o.addresses = addresses;
    o.approval = approval;
    record(agent, shared, o);
    Some(reply)
}

/// Counts an allowed question (decided by rule `rule`) against the
/// agent's `count: dns` budgets, in policy order as the kernel does; the
/// first one at its limit refuses it: `budget:<id>`. A budget whose count
/// cannot be written refuses too (fails closed), with the error.
fn over_budget(agent: &Agent, shared: &Shared, rule: usize) -> Option<(String, Option<String>)> {
    let policy = &agent.info.policy;
    let rule_id = &policy.rules[rule].id;
    let mut maps = shared.maps.lock().expect("dns maps lock");
    for (i, b) in policy.budgets.iter().enumerate() {
        if b.count != BudgetCount::Dns || !(b.rules.is_empty() || b.rules.contains(rule_id)) {
            continue;
        }
        match maps.take_budget(
            agent.info.agent_id,
            i as u32,
            b.limit,
            b.per.as_nanos() as u64,
        ) {
            Ok(true) => {}
            Ok(false) => return Some((format!("budget:{}", b.id), None)),
            Err(e) => {
                let why = format!("count budget '{}': {}", b.id, crate::error_chain(&e));
                return Some((format!("budget:{}", b.id), Some(why)));
            }
        }
    }
    None
}

async fn forward(upstream: SocketAddr, query: &[u8], tcp: bool) -> std::io::Result<Vec<u8>> {
    let timed_out = || {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {upstream}"),
        )
    };
    if tcp {
        let work = async {
            let mut s = TcpStream::connect(upstream).await?;
            let n = u16::try_from(query.len()).unwrap_or(u16::MAX);
            s.write_all(&n.to_be_bytes()).await?;
            s.write_all(query).await?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await?;
            let mut out = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut out).await?;
            Ok(out)
        };
        return tokio::time::timeout(UPSTREAM_TIMEOUT, work)
            .await
            .map_err(|_| timed_out())?;
    }
    let any: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).await?;
    s.connect(upstream).await?;
    s.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, s.recv(&mut buf))
        .await
        .map_err(|_| timed_out())??;
    buf.truncate(n);
    Ok(buf)
}
