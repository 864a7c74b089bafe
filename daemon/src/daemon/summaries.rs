//! Summary entries: repeats of an allowed action, counted in the kernel
//! (`SUMMARIES`) and written here, one `summary` entry per key and sweep.
//!
//! The event reader remembers the entry of each individually recorded
//! allowed action (`FirstSeen`), so that the enforcer, sweeping the kernel's
//! counts every interval, can write the summary with the same agent,
//! process, executable, target, rule and policy snapshot as the first. The
//! memory is bounded: at most `limits::MAX_SUMMARY_KEYS` entries per
//! generation, two generations (the current sweep's and the previous one's,
//! for a first decoded just after its key was swept). A summary whose first
//! is not remembered names the file by `dev:ino` (or the destination).

use std::{collections::HashMap, net::IpAddr};

use serde_json::json;
use warden_common::{limits, EventKind, SummaryKey};

use crate::{
    attribution::{AgentView, PolicyView, ProcessFacts},
    decode::{Action, FileId, KernelEvent},
    evidence::{record::UNSET_ID, NewEntry},
    kernel::Swept,
};

/// What makes two allowed actions the same, as the daemon sees it (the
/// kernel's `SummaryKey` with the file identity decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RepeatKey {
    agent_id: u32,
    policy_gen: u32,
    pid: u32,
    kind: u32,
    rule_idx: u32,
    access: u32,
    file: Option<(u64, u64)>,
    addr: [u8; 16],
    /// `Decision as u32`: a denial and an allow of the same target are
    /// counted apart.
    decision: u32,
}

/// A file's shadow difference keys the enforced rule where a network
/// key has its address; zeros for every other event.
fn shadow_addr(ev: &KernelEvent) -> [u8; 16] {
    let mut addr = [0u8; 16];
    if let Some((_, rule)) = ev.enforced {
        addr[..4].copy_from_slice(&rule.to_ne_bytes());
    }
    addr
}

impl RepeatKey {
    pub fn of_event(ev: &KernelEvent) -> Self {
        let (access, file, addr) = match &ev.action {
            Action::Net { addr, port, proto } => {
                let mut a = [0u8; 16];
                match addr {
                    IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => a = v6.octets(),
                }
                (u32::from(*port) | u32::from(*proto) << 16, None, a)
            }
            // A shadow difference keys the enforced rule in the address
            // (`fallback/shadow.rs`).
            Action::Exec { file, .. } => (0, Some((file.dev, file.ino)), shadow_addr(ev)),
            Action::Open { file, access, .. } => {
                (*access, Some((file.dev, file.ino)), shadow_addr(ev))
            }
            // Never counted by the kernel (each is recorded): a key no
            // summary will name.
            Action::Socket { .. } | Action::Name { .. } | Action::Escape { .. } => {
                (0, None, [0; 16])
            }
        };
        Self {
            agent_id: ev.agent_id,
            policy_gen: ev.policy_gen,
            pid: ev.pid,
            kind: ev.kind as u32,
            rule_idx: ev.rule_idx,
            access,
            file,
            addr,
            decision: match ev.enforced {
                // As the kernel keys a shadow difference (`shadow.rs`).
                Some((enforced, _)) => {
                    warden_common::shadow_summary_decision(ev.decision as u32, enforced as u32)
                }
                None => ev.decision as u32,
            },
        }
    }

    pub fn of_kernel(k: &SummaryKey) -> Self {
        let is_net = !matches!(
            EventKind::from_u32(k.kind),
            Some(EventKind::Exec | EventKind::Open)
        );
        let file = (!is_net).then(|| {
            let f = FileId::from_kernel(k.dev, k.ino);
            (f.dev, f.ino)
        });
        Self {
            agent_id: k.agent_id,
            policy_gen: k.policy_gen,
            pid: k.tgid,
            kind: k.kind,
            rule_idx: k.rule_idx,
            access: k.access,
            file,
            addr: k.addr,
            decision: k.decision,
        }
    }

    pub fn agent_id(&self) -> u32 {
        self.agent_id
    }

    pub fn policy_gen(&self) -> u32 {
        self.policy_gen
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A shadow candidate's differences (`warden_common::SUMMARY_SHADOW`).
    fn is_shadow(&self) -> bool {
        self.decision & warden_common::SUMMARY_SHADOW != 0
    }

    /// The decision as the log spells it.
    fn decision_name(&self) -> &'static str {
        if self.is_shadow() {
            return match self.decision & 0xff {
                1 => "would-allow",
                3 => "would-hold",
                _ => "would-deny",
            };
        }
        if self.decision & !warden_common::SUMMARY_COUNT_ALL == warden_common::Decision::Deny as u32
        {
            "deny"
        } else {
            "allow"
        }
    }

    /// Counted under the evidence cap: the count includes the first.
    fn counts_first(&self) -> bool {
        self.decision & warden_common::SUMMARY_COUNT_ALL != 0
    }

    /// The action's target when its first entry is not remembered.
    fn fallback_target(&self) -> String {
        match self.file {
            Some((dev, ino)) => FileId { dev, ino }.to_string(),
            None => {
                // As a decision entry names it (`KernelEvent::target`), so
                // a summary and its first name one target alike.
                let port = self.access & 0xffff;
                let proto = match self.access >> 16 {
                    6 => "tcp".to_string(),
                    17 => "udp".to_string(),
                    p => format!("proto{p}"),
                };
                let v6 = matches!(
                    EventKind::from_u32(self.kind),
                    Some(EventKind::Connect6 | EventKind::Sendmsg6)
                );
                let ip = if v6 {
                    IpAddr::from(self.addr)
                } else {
                    IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
                };
                match ip {
                    IpAddr::V4(v4) => format!("{v4}:{port}/{proto}"),
                    IpAddr::V6(v6) => format!("[{v6}]:{port}/{proto}"),
                }
            }
        }
    }

    fn action(&self) -> &'static str {
        match EventKind::from_u32(self.kind) {
            Some(EventKind::Exec) => "exec",
            Some(EventKind::Open) => "open",
            Some(EventKind::Connect4) => "connect4",
            Some(EventKind::Connect6) => "connect6",
            Some(EventKind::Sendmsg4) => "sendmsg4",
            Some(EventKind::Sendmsg6) => "sendmsg6",
            Some(EventKind::Socket) => "socket",
            Some(EventKind::Rename) => "rename",
            Some(EventKind::Link) => "link",
            Some(EventKind::Escape) => "leave-agent",
            Some(EventKind::PathOp) => "path-op",
            None => "unknown",
        }
    }
}

/// A remembered first entry, packed into one buffer. Every individually
/// recorded allow is remembered and almost none is read back (only the
/// firsts of keys the kernel counted repeats of): a clone of the entry is
/// some 30 allocations made by the event reader and freed by the sweep
/// (about a fifth of the daemon's CPU per entry on a busy agent), packing
/// it is one.
///
/// Layout: `ts_ns` (i64), `uid`, `loginuid`, `pid` (u32 each), the twelve
/// strings as a u32 length and their bytes, then `details` as JSON, all
/// native-endian (it never leaves the process).
pub struct PackedFirst(Vec<u8>);

impl PackedFirst {
    pub fn pack(e: &NewEntry) -> Self {
        let strings = Self::strings(e);
        let len: usize = strings.iter().map(|s| 4 + s.len()).sum();
        // Room for the usual details too, so packing allocates once.
        let mut out = Vec::with_capacity(20 + len + 48 * e.details.len() + 2);
        out.extend_from_slice(&e.ts_ns.to_ne_bytes());
        for n in [e.uid, e.loginuid, e.pid] {
            out.extend_from_slice(&n.to_ne_bytes());
        }
        for s in strings {
            out.extend_from_slice(&(s.len() as u32).to_ne_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        // A map of JSON values always serialises.
        let _ = serde_json::to_writer(&mut out, &e.details);
        Self(out)
    }

    fn strings(e: &NewEntry) -> [&str; 12] {
        [
            &e.kind,
            &e.agent,
            &e.owner,
            &e.user,
            &e.login_user,
            &e.exe,
            &e.action,
            &e.target,
            &e.decision,
            &e.rule_id,
            &e.policy_snapshot,
            &e.method,
        ]
    }

    /// The entry [`Self::pack`] packed (None only if the buffer is not one
    /// it wrote).
    pub fn unpack(&self) -> Option<NewEntry> {
        let mut rest = self.0.as_slice();
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let ts_ns = i64::from_ne_bytes(take(8)?.try_into().ok()?);
        let mut num = || -> Option<u32> { Some(u32::from_ne_bytes(take(4)?.try_into().ok()?)) };
        let (uid, loginuid, pid) = (num()?, num()?, num()?);
        let mut strings: [String; 12] = Default::default();
        for s in &mut strings {
            let n = u32::from_ne_bytes(take(4)?.try_into().ok()?) as usize;
            *s = std::str::from_utf8(take(n)?).ok()?.to_owned();
        }
        let details = serde_json::from_slice(rest).ok()?;
        let [kind, agent, owner, user, login_user, exe, action, target, decision, rule_id, policy_snapshot, method] =
            strings;
        Some(NewEntry {
            ts_ns,
            kind,
            agent,
            owner,
            uid,
            loginuid,
            user,
            login_user,
            pid,
            exe,
            action,
            target,
            decision,
            rule_id,
            policy_snapshot,
            method,
            details,
        })
    }
}

/// The entries of allowed actions recorded individually, by key, so a
/// summary can name what its first named.
#[derive(Default)]
pub struct FirstSeen {
    // Shared by a first's two keys (its process's and its agent's).
    current: HashMap<RepeatKey, std::sync::Arc<PackedFirst>>,
    previous: HashMap<RepeatKey, std::sync::Arc<PackedFirst>>,
}

impl FirstSeen {
    /// [`Self::remember_packed`] of `entry`.
    #[cfg(test)]
    pub fn remember(&mut self, key: RepeatKey, entry: NewEntry) {
        self.remember_packed(key, PackedFirst::pack(&entry));
    }

    /// Remembers the entry of an individually recorded plain allow (the
    /// only decisions the kernel counts), packed by the event reader
    /// before the entry itself went to the writer; drops it when this
    /// generation is full.
    pub fn remember_packed(&mut self, key: RepeatKey, entry: PackedFirst) {
        if self.current.len() + 1 < limits::MAX_SUMMARY_KEYS as usize {
            let entry = std::sync::Arc::new(entry);
            // Also as the first of the agent's (any process: pid 0), for
            // agents whose repeats are counted per agent; the first one
            // stays.
            self.current
                .entry(RepeatKey { pid: 0, ..key })
                .or_insert_with(|| entry.clone());
            self.current.insert(key, entry);
        }
    }

    fn get(&self, key: &RepeatKey) -> Option<NewEntry> {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .and_then(|e| e.unpack())
    }

    /// After a sweep: the kernel deleted every key, so each first recorded
    /// before the previous sweep is no longer needed. Returns the
    /// generation that is let go, for the caller to drop after releasing
    /// the lock (freeing tens of thousands of firsts takes a while).
    pub fn rotate(&mut self) -> HashMap<RepeatKey, std::sync::Arc<PackedFirst>> {
        let capacity = self.current.capacity();
        let current = std::mem::replace(&mut self.current, HashMap::with_capacity(capacity));
        std::mem::replace(&mut self.previous, current)
    }
}

/// The `summary` entry for one swept key: the first's fields (or what the
/// key says), with the count and the time span. `to_unix` turns a boot
/// time into Unix nanoseconds.
pub fn summary_entry(
    swept: &Swept,
    first: &FirstSeen,
    now_ns: i64,
    to_unix: impl Fn(u64) -> i64,
    ctx: impl FnOnce(&RepeatKey) -> (AgentView, std::sync::Arc<PolicyView>, ProcessFacts),
) -> NewEntry {
    let key = RepeatKey::of_kernel(&swept.key);
    let mut entry = match first.get(&key) {
        Some(e) => e,
        None => {
            let (agent, policy, process) = ctx(&key);
            let mut details = serde_json::Map::new();
            if key.counts_first() {
                // The evidence cap held: the first has no entry of its own
                // and is in `count`.
                details.insert("evidence_cap".into(), json!(true));
                details.insert("count_includes_first".into(), json!(true));
            } else {
                details.insert("first_entry".into(), json!("not in this daemon's memory"));
            }
            NewEntry {
                ts_ns: now_ns,
                kind: "summary".into(),
                agent: agent.name.clone(),
                owner: agent.owner.clone(),
                uid: UNSET_ID,
                loginuid: process.loginuid,
                user: "unknown".into(),
                login_user: "unknown".into(),
                pid: key.pid,
                exe: process.exe.clone(),
                action: key.action().into(),
                target: key.fallback_target(),
                decision: key.decision_name().into(),
                rule_id: policy.rule_id(key.rule_idx),
                policy_snapshot: policy.snapshot.clone(),
                method: "counted".into(),
                details,
            }
        }
    };
    entry.ts_ns = now_ns;
    // A shadow candidate's repeated difference stays a `shadow` entry, so
    // that nothing counting decisions counts it.
    entry.kind = if key.is_shadow() { "shadow" } else { "summary" }.into();
    if key.is_shadow() && !entry.details.contains_key("enforced_decision") {
        let enforced = (key.decision >> 12) & 0xf;
        let name = warden_common::Decision::from_u32(enforced)
            .map_or("unknown", crate::attribution::decision_name);
        entry
            .details
            .insert("enforced_decision".into(), json!(name));
    }
    entry.method = "counted".into();
    // Fields of the first only (its thread and its time) would mislead.
    entry.details.remove("tid");
    entry.details.remove("boot_ns");
    entry.details.insert("count".into(), json!(swept.count));
    entry
        .details
        .insert("first_ns".into(), json!(to_unix(swept.first_boot_ns)));
    entry
        .details
        .insert("last_ns".into(), json!(to_unix(swept.last_boot_ns)));
    entry
        .details
        .insert("policy_version".into(), json!(swept.key.policy_gen));
    if key.pid == 0 {
        // Counted per agent: the first's process made the first, any of
        // the agent's processes the repeats.
        entry.details.insert("counted_per".into(), json!("agent"));
    }
    if let Some((dev, ino)) = key.file {
        entry
            .details
            .insert("file".into(), json!(FileId { dev, ino }.to_string()));
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn swept(key: SummaryKey) -> Swept {
        Swept {
            key,
            count: 999,
            first_boot_ns: 10,
            last_boot_ns: 20,
        }
    }

    /// `summary_entry` where the first may be forgotten: agent `a` (owner
    /// `o`), a policy `snapshot` whose only rule is `rule`, the process
    /// read from /proc (gone in these tests).
    fn summarised(
        swept: &Swept,
        first: &FirstSeen,
        now_ns: i64,
        snapshot: &str,
        rule: &str,
    ) -> NewEntry {
        summary_entry(
            swept,
            first,
            now_ns,
            |b| b as i64,
            |key| {
                (
                    AgentView {
                        name: "a".into(),
                        owner: "o".into(),
                    },
                    Arc::new(PolicyView {
                        snapshot: snapshot.into(),
                        rule_ids: vec![rule.into()],
                        approvers: Default::default(),
                        hold_timeout: std::time::Duration::from_secs(1),
                        budget_ids: Vec::new(),
                    }),
                    ProcessFacts::read(key.pid(), "gone"),
                )
            },
        )
    }

    fn open_key() -> SummaryKey {
        SummaryKey {
            agent_id: 3,
            policy_gen: 7,
            tgid: 42,
            kind: EventKind::Open as u32,
            rule_idx: 0,
            access: 1,
            dev: (8 << 20) | 1,
            decision: warden_common::Decision::Allow as u32,
            ino: 99,
            addr: [0; 16],
        }
    }

    /// A first is kept packed: what comes back is the entry, every field
    /// and every kind of detail (nested, non-ASCII, empty strings) as it was.
    #[test]
    fn a_packed_first_unpacks_to_the_same_entry() {
        let mut details = serde_json::Map::new();
        details.insert("tid".into(), json!(43));
        details.insert("neg".into(), json!(-7));
        details.insert("big".into(), json!(u64::MAX));
        details.insert("comm".into(), json!("päth\n\"x\""));
        details.insert("flags".into(), json!(["a", 1, true, {"k": []}]));
        let entry = NewEntry {
            ts_ns: -1,
            kind: "decision".into(),
            agent: "a".into(),
            owner: "ö@x".into(),
            uid: u32::MAX,
            loginuid: 0,
            user: String::new(),
            login_user: "root".into(),
            pid: 42,
            exe: "/bin/x".into(),
            action: "file.open".into(),
            target: "/etc/\u{1F600} x".into(),
            decision: "allow".into(),
            rule_id: "r".into(),
            policy_snapshot: "s".into(),
            method: "allow".into(),
            details,
        };
        assert_eq!(PackedFirst::pack(&entry).unpack(), Some(entry));
        assert_eq!(
            PackedFirst(vec![1, 2, 3]).unpack(),
            None,
            "not a packed entry"
        );
    }

    #[test]
    fn a_remembered_first_names_the_summary() {
        let k = open_key();
        let ev_key = RepeatKey::of_kernel(&k);
        let mut first = FirstSeen::default();
        let mut details = serde_json::Map::new();
        details.insert("tid".into(), json!(43));
        details.insert("boot_ns".into(), json!(10));
        let entry = NewEntry {
            ts_ns: 1,
            kind: "decision".into(),
            agent: "a".into(),
            owner: "o".into(),
            uid: 0,
            loginuid: 0,
            user: "root".into(),
            login_user: "root".into(),
            pid: 42,
            exe: "/bin/x".into(),
            action: "open".into(),
            target: "/etc/x".into(),
            decision: "allow".into(),
            rule_id: "r".into(),
            policy_snapshot: "s".into(),
            method: "allow".into(),
            details,
        };
        first.remember(ev_key, entry);
        let s = summary_entry(
            &swept(k),
            &first,
            500,
            |b| b as i64 + 1000,
            |_| panic!("the first is remembered"),
        );
        assert_eq!((s.kind.as_str(), s.method.as_str()), ("summary", "counted"));
        assert_eq!((s.target.as_str(), s.pid, s.ts_ns), ("/etc/x", 42, 500));
        assert_eq!(s.details["count"], 999);
        assert_eq!(s.details["first_ns"], 1010);
        assert_eq!(s.details["last_ns"], 1020);
        assert_eq!(s.details["file"], "2049:99");
        assert!(s.details.get("tid").is_none() && s.details.get("boot_ns").is_none());

        // Two rotations later the first is forgotten: the summary names the
        // file by identity.
        first.rotate();
        first.rotate();
        let s = summarised(&swept(k), &first, 500, "s", "r");
        assert_eq!((s.target.as_str(), s.rule_id.as_str()), ("2049:99", "r"));
        assert_eq!(s.action, "open");
    }

    #[test]
    fn a_forgotten_denial_is_summarised_as_a_denial() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let k = SummaryKey {
            kind: EventKind::Connect4 as u32,
            access: 8080 | 6 << 16,
            decision: warden_common::Decision::Deny as u32,
            addr,
            ..SummaryKey::default()
        };
        let allow = SummaryKey {
            decision: warden_common::Decision::Allow as u32,
            ..k
        };
        assert_ne!(RepeatKey::of_kernel(&k), RepeatKey::of_kernel(&allow));
        let s = summarised(&swept(k), &FirstSeen::default(), 5, "s", "default-deny");
        assert_eq!(
            (s.decision.as_str(), s.method.as_str()),
            ("deny", "counted")
        );
        assert_eq!(s.target, "127.0.0.1:8080/tcp");
    }

    #[test]
    fn a_key_counted_under_the_cap_says_its_count_includes_the_first() {
        let k = SummaryKey {
            decision: warden_common::Decision::Allow as u32 | warden_common::SUMMARY_COUNT_ALL,
            ..open_key()
        };
        let s = summarised(&swept(k), &FirstSeen::default(), 5, "s", "r");
        assert_eq!(s.decision, "allow");
        assert_eq!(s.details["count_includes_first"], true);
        assert_eq!(s.details["evidence_cap"], true);
        assert!(s.details.get("first_entry").is_none());
    }

    #[test]
    fn a_shadow_difference_is_summarised_as_shadow() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let k = SummaryKey {
            kind: EventKind::Connect4 as u32,
            access: 8080 | 6 << 16,
            decision: warden_common::shadow_summary_decision(
                warden_common::Decision::Deny as u32,
                warden_common::Decision::Allow as u32,
            ),
            rule_idx: 0,
            dev: 0,
            addr,
            ..SummaryKey::default()
        };
        let s = summarised(&swept(k), &FirstSeen::default(), 5, "candidate", "no-web");
        assert_eq!(
            (s.kind.as_str(), s.decision.as_str(), s.method.as_str()),
            ("shadow", "would-deny", "counted")
        );
        assert_eq!(s.details["enforced_decision"], "allow");
        assert_eq!(
            (s.rule_id.as_str(), s.details["count"].as_u64()),
            ("no-web", Some(999))
        );
    }

    #[test]
    fn network_keys_match_between_kernel_and_event() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let k = SummaryKey {
            kind: EventKind::Connect4 as u32,
            access: 8080 | 6 << 16,
            addr,
            ..SummaryKey::default()
        };
        assert_eq!(
            RepeatKey::of_kernel(&k).fallback_target(),
            "127.0.0.1:8080/tcp"
        );
    }

    #[test]
    fn shadow_file_keys_match_between_kernel_and_event() {
        use warden_common::{Decision, Method};
        // As `fallback/shadow.rs` keys an open's difference: the file, its
        // access, the candidate's rule, both decisions, the enforced rule in
        // the address, counted per agent.
        let kdev = (254 << 20) | 1;
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&7u32.to_ne_bytes());
        let k = SummaryKey {
            agent_id: 3,
            policy_gen: 5 | warden_common::SHADOW_GENERATION,
            kind: EventKind::Open as u32,
            rule_idx: 2,
            access: 1,
            dev: kdev,
            ino: 99,
            decision: warden_common::shadow_summary_decision(
                Decision::Deny as u32,
                Decision::Allow as u32,
            ),
            addr,
            ..SummaryKey::default()
        };
        let ev = |enforced_rule: u32| KernelEvent {
            kind: EventKind::Open,
            decision: Decision::Deny,
            method: Method::Shadow,
            rule_idx: 2,
            agent_id: 3,
            policy_gen: 5 | warden_common::SHADOW_GENERATION,
            pid: 0,
            tid: 0,
            uid: 0,
            gid: 0,
            cgroup_id: 1,
            boot_ns: 0,
            comm: String::new(),
            action: Action::Open {
                path: "/srv/a".into(),
                file: FileId::from_kernel(kdev, 99),
                access: 1,
                syscall: 257,
                compat: false,
                read_rule: 2,
                write_rule: u32::MAX,
                flags: 0,
            },
            enforced: Some((Decision::Allow, enforced_rule)),
        };
        assert_eq!(RepeatKey::of_event(&ev(7)), RepeatKey::of_kernel(&k));
        // Another enforced rule is another key.
        assert_ne!(RepeatKey::of_event(&ev(8)), RepeatKey::of_kernel(&k));
    }
}
