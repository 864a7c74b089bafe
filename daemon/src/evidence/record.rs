//! Evidence entries and their canonical encodings.
//!
//! Every entry is hashed over a canonical byte string, so that an auditor
//! can recompute the chain in any language. Each entry records the version
//! of the encoding it was sealed with (`v`); new entries use version 2, and
//! entries sealed as version 1 before it existed keep verifying as such. A
//! chain may hold both: the link is always the previous entry's `hash`.
//!
//! # Canonical encoding, version 2 (binary, current)
//!
//! The fields, in this order, with nothing between them:
//!
//! | fields | encoding |
//! |---|---|
//! | `kind`, `agent`, `owner`, `user`, `login_user` | string each |
//! | `uid`, `loginuid` | u32 each, big-endian |
//! | `exe`, `policy_snapshot`, `method`, `rule_id`, `action`, `decision` | string each |
//! | `pid` | u32, big-endian |
//! | `target` | string |
//! | `details` | string: the object's canonical JSON (version 1, rules 3-6) |
//! | `ts_ns` | i64, big-endian two's complement |
//! | `seq` | u64, big-endian |
//! | `prev_hash` | 32 bytes: the previous entry's hash as raw bytes (all zero for `seq` 1) |
//!
//! A string is its length in bytes as an unsigned LEB128 varint (7 bits per
//! byte, least significant group first, high bit set on every byte but the
//! last), then its UTF-8 bytes. The entry hash is
//! `SHA-256("warden/entry/v2" || 0x00 || bytes)`, as 64 lowercase hex digits.
//!
//! Fields that usually repeat from one entry to the next (the agent, its
//! owner and policy) come first and those that always change last, so a
//! verifier can reuse SHA-256 state across consecutive entries. Version 2
//! hashes about half the bytes of version 1 (no key names, raw hashes), which
//! is what brings full-chain verification over 1M entries/s on one core.
//!
//! # Canonical encoding, version 1 (JSON, entries sealed before version 2)
//!
//! The rules:
//!
//! 1. Build one JSON object with these keys, each exactly once, and no others:
//!    `action`, `agent`, `decision`, `details`, `exe`, `kind`, `login_user`,
//!    `loginuid`, `method`, `owner`, `pid`, `policy_snapshot`, `prev_hash`,
//!    `rule_id`, `seq`, `target`, `ts_ns`, `uid`, `user`, `v`.
//!    That is every field of the entry except `hash`, plus `"v": 1`.
//! 2. `seq`, `ts_ns`, `uid`, `loginuid`, `pid` and `v` are JSON integers in
//!    plain decimal (`-` for negatives, no leading zeros, no exponent, no
//!    fraction). All other fields except `details` are JSON strings.
//! 3. `details` is a JSON object. Inside it only strings, integers, booleans
//!    (`true`/`false`), arrays and objects may appear; floats and `null` are
//!    rejected. Its objects are canonical too (rules 4-6), at every depth.
//! 4. Object keys are sorted by the bytes of their UTF-8 encoding (unescaped),
//!    ascending. Array order is kept as is.
//! 5. No whitespace anywhere: `{"a":1,"b":[true,"x"]}`.
//! 6. Strings are UTF-8 and escaped exactly as follows: `"` as `\"`, `\` as
//!    `\\`, U+0008 as `\b`, U+000C as `\f`, U+000A as `\n`, U+000D as `\r`,
//!    U+0009 as `\t`, every other character below U+0020 as `\u00XX` with
//!    lowercase hex digits. Everything else, including `/`, U+007F and all
//!    non-ASCII characters, is written as its raw UTF-8 bytes.
//!
//! For such objects this is exactly Python's `json.dumps(obj, sort_keys=True,
//! separators=(",", ":"), ensure_ascii=False).encode()`.
//!
//! The entry hash is `SHA-256("warden/entry/v1" || 0x00 || canonical_bytes)`
//! written as 64 lowercase hex digits.
//!
//! In both versions `prev_hash` of entry `seq = 1` is 64 `0` characters, and
//! every later entry's `prev_hash` is the previous entry's `hash`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Domain separation prefixes for entry hashes, per encoding version.
pub const DOMAIN_ENTRY_V1: &[u8] = b"warden/entry/v1\0";
pub const DOMAIN_ENTRY_V2: &[u8] = b"warden/entry/v2\0";
/// Domain separation prefix for checkpoint signatures.
pub const DOMAIN_CHECKPOINT: &[u8] = b"warden/checkpoint/v1\0";
/// The encoding version new entries are sealed with.
pub const ENCODING_VERSION: u32 = 2;
/// The encoding versions this build can verify.
pub const ENCODING_VERSIONS: [u32; 2] = [1, 2];
/// `prev_hash` of the first entry.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";
/// Value of `uid`/`loginuid` meaning "unset", as in the kernel.
pub const UNSET_ID: u32 = u32::MAX;
/// `policy_snapshot` of entries that are not governed by a policy.
pub const NO_POLICY: &str = "none";

/// Accepted values of `kind`.
pub const KINDS: &[&str] = &[
    "decision",
    "policy_load",
    "agent_register",
    "agent_remove",
    "run",
    "daemon_start",
    "daemon_stop",
    "kill",
    "revive",
    "hold",
    "approval",
    "gap",
    "restart",
    "checkpoint",
    "uninstall",
    "summary",
];

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("seal evidence entry: field `{field}` is empty")]
    EmptyField { field: &'static str },
    #[error("seal evidence entry: unknown kind {kind:?}")]
    UnknownKind { kind: String },
    #[error("seal evidence entry: policy_snapshot {value:?} is neither \"none\" nor a lowercase hex sha256")]
    BadPolicySnapshot { value: String },
    #[error("seal evidence entry: seq must start at 1, got 0")]
    ZeroSeq,
    #[error("seal evidence entry {seq}: prev_hash {prev_hash:?} is not 64 lowercase hex digits")]
    BadPrevHash { seq: u64, prev_hash: String },
    #[error("encode evidence entry: details key {key:?} holds {found}; only strings, integers, booleans, arrays and objects are allowed")]
    UnsupportedDetail { key: String, found: &'static str },
    #[error("encode evidence entry as canonical JSON")]
    Encode(#[from] serde_json::Error),
    #[error(
        "encode evidence entry {seq}: unknown encoding version {v} (this build knows 1 and 2)"
    )]
    UnknownVersion { seq: u64, v: u32 },
}

/// An entry as callers append it; the store assigns `seq` and the hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEntry {
    /// Unix time in nanoseconds.
    pub ts_ns: i64,
    /// One of [`KINDS`].
    pub kind: String,
    pub agent: String,
    /// The agent's accountable human, e.g. an email address.
    pub owner: String,
    /// Of the process that acted; [`UNSET_ID`] means unset.
    pub uid: u32,
    pub loginuid: u32,
    /// Name of `uid` when recorded, or "uid:N".
    pub user: String,
    /// Name of `loginuid`, or "unset".
    pub login_user: String,
    pub pid: u32,
    pub exe: String,
    pub action: String,
    pub target: String,
    pub decision: String,
    pub rule_id: String,
    /// Hex sha256 of the agent's compiled policy, or [`NO_POLICY`].
    pub policy_snapshot: String,
    /// How the decision was enforced, e.g. "cgroup-deny" or "n/a".
    pub method: String,
    pub details: Map<String, Value>,
}

/// An entry as stored: a [`NewEntry`] plus its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// The canonical encoding it was sealed with. Bundles exported before
    /// version 2 existed carry no `v`: all their entries are version 1.
    #[serde(default = "encoding_v1")]
    pub v: u32,
    pub ts_ns: i64,
    pub kind: String,
    pub agent: String,
    pub owner: String,
    pub uid: u32,
    pub loginuid: u32,
    pub user: String,
    pub login_user: String,
    pub pid: u32,
    pub exe: String,
    pub action: String,
    pub target: String,
    pub decision: String,
    pub rule_id: String,
    pub policy_snapshot: String,
    pub method: String,
    pub details: Map<String, Value>,
    pub prev_hash: String,
    pub hash: String,
}

impl NewEntry {
    fn validate(&self) -> Result<(), RecordError> {
        let required = [
            ("kind", &self.kind),
            ("agent", &self.agent),
            ("owner", &self.owner),
            ("user", &self.user),
            ("login_user", &self.login_user),
            ("exe", &self.exe),
            ("action", &self.action),
            ("target", &self.target),
            ("decision", &self.decision),
            ("rule_id", &self.rule_id),
            ("policy_snapshot", &self.policy_snapshot),
            ("method", &self.method),
        ];
        if let Some((field, _)) = required.iter().find(|(_, value)| value.is_empty()) {
            return Err(RecordError::EmptyField { field });
        }
        if !KINDS.contains(&self.kind.as_str()) {
            return Err(RecordError::UnknownKind {
                kind: self.kind.clone(),
            });
        }
        if self.policy_snapshot != NO_POLICY && !is_sha256_hex(&self.policy_snapshot) {
            return Err(RecordError::BadPolicySnapshot {
                value: self.policy_snapshot.clone(),
            });
        }
        Ok(())
    }
}

impl Entry {
    /// Validates `new` and links it after an entry whose hash is `prev_hash`.
    pub fn seal(seq: u64, prev_hash: String, new: NewEntry) -> Result<Entry, RecordError> {
        Self::seal_with(&mut EntryHasher::new(), seq, prev_hash, new)
    }

    pub(super) fn seal_with(
        hasher: &mut EntryHasher,
        seq: u64,
        prev_hash: String,
        new: NewEntry,
    ) -> Result<Entry, RecordError> {
        new.validate()?;
        if seq == 0 {
            return Err(RecordError::ZeroSeq);
        }
        if !is_sha256_hex(&prev_hash) {
            return Err(RecordError::BadPrevHash { seq, prev_hash });
        }
        let NewEntry {
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
        } = new;
        let mut entry = Entry {
            seq,
            v: ENCODING_VERSION,
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
            prev_hash,
            hash: String::new(),
        };
        entry.hash = hex::encode(hasher.digest(&entry)?);
        Ok(entry)
    }

    /// An all-empty entry, used as a reusable read buffer; never valid.
    pub(super) fn blank() -> Entry {
        Entry {
            seq: 0,
            v: 0,
            ts_ns: 0,
            kind: String::new(),
            agent: String::new(),
            owner: String::new(),
            uid: 0,
            loginuid: 0,
            user: String::new(),
            login_user: String::new(),
            pid: 0,
            exe: String::new(),
            action: String::new(),
            target: String::new(),
            decision: String::new(),
            rule_id: String::new(),
            policy_snapshot: String::new(),
            method: String::new(),
            details: Map::new(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

fn encoding_v1() -> u32 {
    1
}

/// The canonical encoding of `entry` in its version `entry.v` (see the
/// module documentation), without the domain prefix.
pub fn canonical_bytes(entry: &Entry) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(512);
    write_canonical(entry, &mut out, &mut Vec::new())?;
    Ok(out)
}

/// The domain prefix of entry hashes in encoding version `v`.
pub fn entry_domain(v: u32) -> Option<&'static [u8]> {
    match v {
        1 => Some(DOMAIN_ENTRY_V1),
        2 => Some(DOMAIN_ENTRY_V2),
        _ => None,
    }
}

/// The hash `entry` should carry, as lowercase hex. Ignores `entry.hash`.
pub fn compute_hash(entry: &Entry) -> Result<String, RecordError> {
    Ok(hex::encode(EntryHasher::new().digest(entry)?))
}

/// Appends the canonical encoding of a `details` object to `out`.
pub fn write_canonical_details(
    details: &Map<String, Value>,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    write_object(details, out).map_err(|e| match e {
        ValueError::Unsupported { key, found } => RecordError::UnsupportedDetail { key, found },
        ValueError::Json(e) => RecordError::Encode(e),
    })
}

/// Hashes many entries without allocating per entry: the encoding buffer is
/// reused.
pub struct EntryHasher {
    buf: Vec<u8>,
    details: Vec<u8>,
}

impl Default for EntryHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryHasher {
    pub fn new() -> Self {
        EntryHasher {
            buf: Vec::with_capacity(1024),
            details: Vec::with_capacity(256),
        }
    }

    /// The raw SHA-256 `entry` should carry, in its encoding version.
    /// Ignores `entry.hash`.
    pub fn digest(&mut self, entry: &Entry) -> Result<[u8; 32], RecordError> {
        self.buf.clear();
        write_canonical(entry, &mut self.buf, &mut self.details)?;
        let domain = entry_domain(entry.v).expect("write_canonical checked the version");
        Ok(Sha256::new()
            .chain_update(domain)
            .chain_update(&self.buf)
            .finalize()
            .into())
    }

    /// The canonical `details` of the entry last digested, as the store
    /// keeps them (so they are encoded once per append).
    pub(super) fn details(&self) -> &[u8] {
        &self.details
    }
}

/// Appends `s` as a JSON string escaped as rule 6 says, byte for byte what
/// `serde_json::to_writer` writes for it; `None` if `s` is not UTF-8.
/// Stored strings are nearly always printable ASCII without `"` or `\`,
/// which is written as is, so those skip serde_json and UTF-8 validation.
pub(super) fn write_json_str(out: &mut Vec<u8>, s: &[u8]) -> Option<()> {
    // A fold rather than `any`: without the early exit it is vectorised.
    let special = s.iter().fold(false, |special, &b| {
        special | !(0x20..0x80).contains(&b) | (b == b'"') | (b == b'\\')
    });
    if special {
        return serde_json::to_writer(&mut *out, std::str::from_utf8(s).ok()?).ok();
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
    Some(())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes `{"key":value,...}`; keys must be given in canonical order.
struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    last_key: Option<&'static str>,
}

impl<'a> ObjectWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter {
            out,
            last_key: None,
        }
    }

    fn key(&mut self, key: &'static str) {
        // Keys are literals below; this catches a field added out of order.
        debug_assert!(
            self.last_key.is_none_or(|last| last < key),
            "{key} out of order"
        );
        if self.last_key.is_some() {
            self.out.push(b',');
        }
        self.last_key = Some(key);
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), RecordError> {
        self.key(key);
        serde_json::to_writer(&mut *self.out, value)?;
        Ok(())
    }

    fn finish(self) {
        self.out.push(b'}');
    }
}

/// Appends `e`'s canonical encoding to `out`, leaving its canonical
/// `details` in `details` (cleared first).
fn write_canonical(e: &Entry, out: &mut Vec<u8>, details: &mut Vec<u8>) -> Result<(), RecordError> {
    if !ENCODING_VERSIONS.contains(&e.v) {
        return Err(RecordError::UnknownVersion { seq: e.seq, v: e.v });
    }
    details.clear();
    write_canonical_details(&e.details, details)?;
    match e.v {
        1 => write_canonical_v1(e, out, details),
        _ => write_canonical_v2(e, out, details),
    }
}

/// Appends `bytes` as a version 2 string: varint length, then the bytes.
#[inline]
fn put_v2_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut n = bytes.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(bytes);
}

/// An entry's fields that the encodings cover, numbered as the store's
/// columns are (`store::COLUMNS`), so a stored row is read field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Seq = 0,
    TsNs,
    Kind,
    Agent,
    Owner,
    Uid,
    Loginuid,
    User,
    LoginUser,
    Pid,
    Exe,
    Action,
    Target,
    Decision,
    RuleId,
    PolicySnapshot,
    Method,
    Details,
    PrevHash,
}

/// An entry's fields wherever they are held: an [`Entry`] being sealed or
/// hashed, or a stored row the verifier's fast path reads in place. `None`
/// means the field is missing or out of range, and the encoding fails.
pub(super) trait FieldSource {
    /// A string field's UTF-8 bytes; for [`Field::Details`], the canonical
    /// details object.
    fn text(&mut self, field: Field) -> Option<&[u8]>;
    /// `uid`, `loginuid` or `pid`.
    fn u32(&mut self, field: Field) -> Option<u32>;
    fn ts_ns(&mut self) -> Option<i64>;
    fn seq(&mut self) -> Option<u64>;
    /// The previous entry's hash as raw bytes.
    fn prev_hash(&mut self) -> Option<[u8; 32]>;
}

/// Appends the version 2 encoding of `src` to `out`. The one statement of
/// the field order, which the writer and the verifier's fast path both
/// call, so the bytes they hash cannot drift apart.
#[inline]
pub(super) fn write_v2<S: FieldSource>(out: &mut Vec<u8>, src: &mut S) -> Option<()> {
    use Field::*;
    for field in [Kind, Agent, Owner, User, LoginUser] {
        put_v2_bytes(out, src.text(field)?);
    }
    out.extend_from_slice(&src.u32(Uid)?.to_be_bytes());
    out.extend_from_slice(&src.u32(Loginuid)?.to_be_bytes());
    for field in [Exe, PolicySnapshot, Method, RuleId, Action, Decision] {
        put_v2_bytes(out, src.text(field)?);
    }
    out.extend_from_slice(&src.u32(Pid)?.to_be_bytes());
    put_v2_bytes(out, src.text(Target)?);
    put_v2_bytes(out, src.text(Details)?);
    out.extend_from_slice(&src.ts_ns()?.to_be_bytes());
    out.extend_from_slice(&src.seq()?.to_be_bytes());
    out.extend_from_slice(&src.prev_hash()?);
    Some(())
}

/// An [`Entry`] as [`write_v2`] reads it, with its canonical details and
/// its `prev_hash` decoded.
struct EntryFields<'e> {
    entry: &'e Entry,
    details: &'e [u8],
    prev: [u8; 32],
}

impl FieldSource for EntryFields<'_> {
    fn text(&mut self, field: Field) -> Option<&[u8]> {
        let e = self.entry;
        Some(match field {
            Field::Kind => e.kind.as_bytes(),
            Field::Agent => e.agent.as_bytes(),
            Field::Owner => e.owner.as_bytes(),
            Field::User => e.user.as_bytes(),
            Field::LoginUser => e.login_user.as_bytes(),
            Field::Exe => e.exe.as_bytes(),
            Field::Action => e.action.as_bytes(),
            Field::Target => e.target.as_bytes(),
            Field::Decision => e.decision.as_bytes(),
            Field::RuleId => e.rule_id.as_bytes(),
            Field::PolicySnapshot => e.policy_snapshot.as_bytes(),
            Field::Method => e.method.as_bytes(),
            Field::Details => self.details,
            Field::Seq | Field::TsNs | Field::Uid | Field::Loginuid | Field::Pid => return None,
            Field::PrevHash => return None,
        })
    }

    fn u32(&mut self, field: Field) -> Option<u32> {
        match field {
            Field::Uid => Some(self.entry.uid),
            Field::Loginuid => Some(self.entry.loginuid),
            Field::Pid => Some(self.entry.pid),
            _ => None,
        }
    }

    fn ts_ns(&mut self) -> Option<i64> {
        Some(self.entry.ts_ns)
    }

    fn seq(&mut self) -> Option<u64> {
        Some(self.entry.seq)
    }

    fn prev_hash(&mut self) -> Option<[u8; 32]> {
        Some(self.prev)
    }
}

fn write_canonical_v2(e: &Entry, out: &mut Vec<u8>, details: &[u8]) -> Result<(), RecordError> {
    let mut prev = [0u8; 32];
    if !is_sha256_hex(&e.prev_hash) || hex::decode_to_slice(&e.prev_hash, &mut prev).is_err() {
        return Err(RecordError::BadPrevHash {
            seq: e.seq,
            prev_hash: e.prev_hash.clone(),
        });
    }
    let mut fields = EntryFields {
        entry: e,
        details,
        prev,
    };
    write_v2(out, &mut fields).expect("an entry holds every field of version 2");
    Ok(())
}

fn write_canonical_v1(e: &Entry, out: &mut Vec<u8>, details: &[u8]) -> Result<(), RecordError> {
    let mut w = ObjectWriter::new(out);
    w.field("action", &e.action)?;
    w.field("agent", &e.agent)?;
    w.field("decision", &e.decision)?;
    w.key("details");
    w.out.extend_from_slice(details);
    w.field("exe", &e.exe)?;
    w.field("kind", &e.kind)?;
    w.field("login_user", &e.login_user)?;
    w.field("loginuid", &e.loginuid)?;
    w.field("method", &e.method)?;
    w.field("owner", &e.owner)?;
    w.field("pid", &e.pid)?;
    w.field("policy_snapshot", &e.policy_snapshot)?;
    w.field("prev_hash", &e.prev_hash)?;
    w.field("rule_id", &e.rule_id)?;
    w.field("seq", &e.seq)?;
    w.field("target", &e.target)?;
    w.field("ts_ns", &e.ts_ns)?;
    w.field("uid", &e.uid)?;
    w.field("user", &e.user)?;
    w.field("v", &1)?;
    w.finish();
    Ok(())
}

enum ValueError {
    /// `key` is filled in by the top-level object, where it is most useful.
    Unsupported {
        key: String,
        found: &'static str,
    },
    Json(serde_json::Error),
}

impl From<serde_json::Error> for ValueError {
    fn from(e: serde_json::Error) -> Self {
        ValueError::Json(e)
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), ValueError> {
    out.push(b'{');
    // serde_json's Map is already sorted unless some crate in the build turns
    // on its `preserve_order` feature; only sort when needed.
    if map.keys().is_sorted() {
        write_members(map.iter(), out)?;
    } else {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        members.sort_unstable_by(|a, b| a.0.cmp(b.0));
        write_members(members.into_iter(), out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_members<'m>(
    members: impl Iterator<Item = (&'m String, &'m Value)>,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key)?;
        out.push(b':');
        write_value(value, out).map_err(|e| match e {
            ValueError::Unsupported { key: _, found } => ValueError::Unsupported {
                key: key.clone(),
                found,
            },
            other => other,
        })?;
    }
    Ok(())
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), ValueError> {
    let unsupported = |found| ValueError::Unsupported {
        key: String::new(),
        found,
    };
    match value {
        Value::Null => return Err(unsupported("null")),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                serde_json::to_writer(&mut *out, &i)?;
            } else if let Some(u) = n.as_u64() {
                serde_json::to_writer(&mut *out, &u)?;
            } else {
                return Err(unsupported("a float"));
            }
        }
        Value::String(s) => serde_json::to_writer(&mut *out, s)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out)?,
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// A valid entry for tests; `n` varies a few fields.
    pub(in super::super) fn sample(n: u64) -> NewEntry {
        let details = json!({
            "proto": "tcp",
            "port": 8080 + n,
            "cgroup_id": 4242,
            "args": ["curl", "-s", "http://127.0.0.1:8080/"],
            "flags": {"hold": false, "dry_run": n.is_multiple_of(2)},
        });
        NewEntry {
            ts_ns: 1_767_225_600_000_000_000 + n as i64 * 1_000,
            kind: "decision".into(),
            agent: "coder-1".into(),
            owner: "alice@example.com".into(),
            uid: 1000,
            loginuid: 1000,
            user: "alice".into(),
            login_user: "alice".into(),
            pid: 31337 + n as u32,
            exe: "/usr/bin/curl".into(),
            action: "connect4".into(),
            target: format!("127.0.0.1:{}/tcp", 8080 + n),
            decision: if n.is_multiple_of(3) { "deny" } else { "allow" }.into(),
            rule_id: "net.allow.localhost".into(),
            policy_snapshot: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .into(),
            method: "cgroup-deny".into(),
            details: match details {
                Value::Object(m) => m,
                _ => unreachable!(),
            },
        }
    }

    /// The golden entry, sealed in encoding version `v`.
    fn golden_entry(v: u32) -> Entry {
        let mut new = sample(0);
        new.uid = UNSET_ID;
        new.login_user = "unset".into();
        new.target = "caf\u{e9}/\"q\"\n\u{1}\u{7f}".into();
        let mut entry =
            Entry::seal(1, GENESIS_PREV_HASH.to_string(), new).expect("seal golden entry");
        entry.v = v;
        entry.hash = compute_hash(&entry).expect("hash");
        entry
    }

    #[test]
    fn new_entries_are_sealed_in_the_current_version() {
        let entry = Entry::seal(1, GENESIS_PREV_HASH.into(), sample(1)).expect("seal");
        assert_eq!(entry.v, ENCODING_VERSION);
        assert_eq!(ENCODING_VERSION, 2);
    }

    #[test]
    fn golden_v1_encoding_and_hash() {
        let entry = golden_entry(1);
        let canonical = String::from_utf8(canonical_bytes(&entry).expect("encode")).expect("utf8");
        let expected = concat!(
            r#"{"action":"connect4","agent":"coder-1","decision":"deny","#,
            r#""details":{"args":["curl","-s","http://127.0.0.1:8080/"],"cgroup_id":4242,"#,
            r#""flags":{"dry_run":true,"hold":false},"port":8080,"proto":"tcp"},"#,
            r#""exe":"/usr/bin/curl","kind":"decision","login_user":"unset","loginuid":1000,"#,
            r#""method":"cgroup-deny","owner":"alice@example.com","pid":31337,"#,
            r#""policy_snapshot":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","#,
            r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
            r#""rule_id":"net.allow.localhost","seq":1,"#,
            "\"target\":\"caf\u{e9}/\\\"q\\\"\\n\\u0001\u{7f}\",",
            r#""ts_ns":1767225600000000000,"uid":4294967295,"user":"alice","v":1}"#,
        );
        assert_eq!(canonical, expected);
        assert_eq!(
            entry.hash,
            "84fd56e6b03f13fc925c95138952ac8fc6c7feff2bf835d97762685f4eedf009"
        );
    }

    /// Bytes and hash from the README's independent Python implementation
    /// of version 2, on the same entry at seq 2 after a non-zero hash, with
    /// a 200-byte target (a two-byte varint length).
    #[test]
    fn golden_v2_encoding_and_hash() {
        let mut entry = golden_entry(2);
        entry.seq = 2;
        entry.prev_hash = "00ff".repeat(16);
        entry.target.push_str(&"x".repeat(200 - entry.target.len()));
        let bytes = canonical_bytes(&entry).expect("encode");
        assert_eq!(hex::encode(&bytes), GOLDEN_V2_HEX);
        assert_eq!(compute_hash(&entry).expect("hash"), GOLDEN_V2_HASH);
    }

    const GOLDEN_V2_HEX: &str = concat!(
        "086465636973696f6e07636f6465722d3111616c696365406578616d706c652e636f6d05616c6963",
        "6505756e736574ffffffff000003e80d2f7573722f62696e2f6375726c4039663836643038313838",
        "34633764363539613266656161306335356164303135613362663466316232623062383232636431",
        "35643663313562306630306130380b6367726f75702d64656e79136e65742e616c6c6f772e6c6f63",
        "616c686f737408636f6e6e656374340464656e7900007a69c801636166c3a92f2271220a017f7878",
        "78787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "78787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "78787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "78787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787880017b2261726773223a5b226375",
        "726c222c222d73222c22687474703a2f2f3132372e302e302e313a383038302f225d2c226367726f",
        "75705f6964223a343234322c22666c616773223a7b226472795f72756e223a747275652c22686f6c",
        "64223a66616c73657d2c22706f7274223a383038302c2270726f746f223a22746370227d18867251",
        "edfa0000000000000000000200ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff",
        "00ff00ff",
    );
    const GOLDEN_V2_HASH: &str = "70bc7d5293e89ab47002c09e073a9758f349842abb02bde7b3445b711dc03040";

    #[test]
    fn unknown_versions_are_refused() {
        for v in [0, 3] {
            let mut entry = golden_entry(2);
            entry.v = v;
            let err = compute_hash(&entry).expect_err("unknown version");
            assert!(
                matches!(err, RecordError::UnknownVersion { seq: 1, v: found } if found == v),
                "{err}"
            );
        }
    }

    #[test]
    fn entries_without_v_deserialize_as_version_1() {
        let mut json = serde_json::to_value(golden_entry(1)).expect("serialize");
        json.as_object_mut().expect("object").remove("v");
        let entry: Entry = serde_json::from_value(json).expect("deserialize");
        assert_eq!(entry.v, 1);
        assert_eq!(compute_hash(&entry).expect("hash"), entry.hash);
    }

    #[test]
    fn details_key_order_does_not_matter() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":1,"p":2}],"x":true}}"#).expect("json");
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"x":true,"y":[1,{"p":2,"q":1}]},"b":1}"#).expect("json");
        let mut out_a = Vec::new();
        let mut out_b = Vec::new();
        write_canonical_details(&a, &mut out_a).expect("encode a");
        write_canonical_details(&b, &mut out_b).expect("encode b");
        assert_eq!(out_a, out_b);
        assert_eq!(out_a, br#"{"a":{"x":true,"y":[1,{"p":2,"q":1}]},"b":1}"#);

        let mut new_a = sample(1);
        new_a.details = a;
        let mut new_b = sample(1);
        new_b.details = b;
        let ea = Entry::seal(1, GENESIS_PREV_HASH.into(), new_a).expect("seal a");
        let eb = Entry::seal(1, GENESIS_PREV_HASH.into(), new_b).expect("seal b");
        assert_eq!(ea.hash, eb.hash);
    }

    #[test]
    fn floats_and_nulls_are_rejected() {
        for bad in [json!({"x": {"deep": [1, 1.5]}}), json!({"x": null})] {
            let mut new = sample(1);
            new.details = bad.as_object().expect("object").clone();
            let err = Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect_err("must reject");
            assert!(
                matches!(&err, RecordError::UnsupportedDetail { key, .. } if key == "x"),
                "{err}"
            );
        }
    }

    #[test]
    fn big_integers_are_kept_exactly() {
        let mut details = Map::new();
        details.insert("max".into(), json!(u64::MAX));
        details.insert("min".into(), json!(i64::MIN));
        let mut out = Vec::new();
        write_canonical_details(&details, &mut out).expect("encode");
        assert_eq!(
            out,
            br#"{"max":18446744073709551615,"min":-9223372036854775808}"#
        );
    }

    #[test]
    fn empty_required_fields_are_rejected() {
        type FieldOf = fn(&mut NewEntry) -> &mut String;
        let fields: [(&str, FieldOf); 12] = [
            ("kind", |e| &mut e.kind),
            ("agent", |e| &mut e.agent),
            ("owner", |e| &mut e.owner),
            ("user", |e| &mut e.user),
            ("login_user", |e| &mut e.login_user),
            ("exe", |e| &mut e.exe),
            ("action", |e| &mut e.action),
            ("target", |e| &mut e.target),
            ("decision", |e| &mut e.decision),
            ("rule_id", |e| &mut e.rule_id),
            ("policy_snapshot", |e| &mut e.policy_snapshot),
            ("method", |e| &mut e.method),
        ];
        for (name, field) in fields {
            let mut new = sample(1);
            field(&mut new).clear();
            let err = Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect_err(name);
            assert!(
                matches!(err, RecordError::EmptyField { field } if field == name),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_kind_snapshot_seq_and_prev_hash_are_rejected() {
        let mut new = sample(1);
        new.kind = "decisions".into();
        let err = Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect_err("kind");
        assert!(matches!(err, RecordError::UnknownKind { .. }));

        let mut new = sample(1);
        new.policy_snapshot = "sha256:abc".into();
        let err = Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect_err("snapshot");
        assert!(matches!(err, RecordError::BadPolicySnapshot { .. }));

        let mut new = sample(1);
        new.policy_snapshot = NO_POLICY.into();
        Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect("\"none\" is a valid snapshot");

        let err = Entry::seal(0, GENESIS_PREV_HASH.into(), sample(1)).expect_err("seq 0");
        assert!(matches!(err, RecordError::ZeroSeq));

        let err = Entry::seal(
            2,
            GENESIS_PREV_HASH.to_uppercase().replace('0', "A"),
            sample(1),
        )
        .expect_err("prev hash");
        assert!(matches!(err, RecordError::BadPrevHash { seq: 2, .. }));
    }

    #[test]
    fn canonical_bytes_v1_are_compact_valid_json() {
        let entry = golden_entry(1);
        let bytes = canonical_bytes(&entry).expect("encode");
        let parsed: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        let obj = parsed.as_object().expect("object");
        assert_eq!(obj.len(), 20);
        assert!(!obj.contains_key("hash"));
        assert_eq!(obj["v"], json!(1));
        assert!(!bytes.contains(&b' '));
    }

    #[test]
    fn json_strings_are_written_as_serde_json_writes_them() {
        let mut cases: Vec<String> = [
            "",
            "plain ascii 127.0.0.1:8443/tcp",
            "quote \" inside",
            "\"",
            "back\\slash",
            "\\",
            "/usr/bin/\u{7f}",
            "caf\u{e9}",
            "\u{1F600} emoji",
            "tab\tnew\nline\r",
            "a\u{0}b",
            "ends with control\u{1f}",
            "\u{2028}\u{2029}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cases.extend((0u8..0x80).map(|b| format!("x{}y", char::from(b))));
        // Every position of a special byte in and around vector-sized blocks.
        for special in ["\"", "\\", "\u{1}", "\u{e9}"] {
            cases.extend(
                (0..70).map(|at| format!("{}{special}{}", "a".repeat(at), "b".repeat(69 - at))),
            );
        }
        cases.push("a".repeat(1000) + "\"");
        for case in &cases {
            let mut ours = b"prefix".to_vec();
            write_json_str(&mut ours, case.as_bytes()).expect("valid UTF-8");
            let mut theirs = b"prefix".to_vec();
            serde_json::to_writer(&mut theirs, case).expect("serde_json");
            assert_eq!(ours, theirs, "{case:?}");
        }
        for bad in [&b"\xff"[..], b"ok\xc3", b"\xed\xa0\x80", b"\"\xfe"] {
            assert!(write_json_str(&mut Vec::new(), bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn hash_ignores_stored_hash_and_covers_every_field() {
        type Edit = fn(&mut Entry);
        let edits: [Edit; 19] = [
            |e| e.seq += 1,
            |e| e.ts_ns += 1,
            |e| e.kind = "hold".into(),
            |e| e.agent.push('x'),
            |e| e.owner.push('x'),
            |e| e.uid ^= 1,
            |e| e.loginuid ^= 1,
            |e| e.user.push('x'),
            |e| e.login_user.push('x'),
            |e| e.pid += 1,
            |e| e.exe.push('x'),
            |e| e.action.push('x'),
            |e| e.target.push('x'),
            |e| e.decision.push('x'),
            |e| e.rule_id.push('x'),
            |e| e.policy_snapshot = NO_POLICY.into(),
            |e| e.method.push('x'),
            |e| {
                e.details.insert("extra".into(), json!(1));
            },
            |e| e.prev_hash = "1".repeat(64),
        ];
        for v in ENCODING_VERSIONS {
            let entry = golden_entry(v);
            let mut other = entry.clone();
            other.hash = "f".repeat(64);
            assert_eq!(compute_hash(&other).expect("hash"), entry.hash, "v{v}");
            for (i, edit) in edits.iter().enumerate() {
                let mut other = entry.clone();
                edit(&mut other);
                assert_ne!(
                    compute_hash(&other).expect("hash"),
                    entry.hash,
                    "v{v} edit {i}"
                );
            }
            // Moving bytes from one string to the next changes the hash.
            let mut other = entry.clone();
            other.kind.push_str(&other.agent[..1]);
            other.agent.remove(0);
            assert_ne!(
                compute_hash(&other).expect("hash"),
                entry.hash,
                "v{v} shift"
            );
        }
    }
}
