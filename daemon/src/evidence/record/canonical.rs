//! The canonical encodings of an entry (version 1, JSON; version 2,
//! binary; see the parent module's documentation) and the entry hash.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::*;

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
    pub(in crate::evidence) fn details(&self) -> &[u8] {
        &self.details
    }
}

/// Appends `s` as a JSON string escaped as rule 6 says, byte for byte what
/// `serde_json::to_writer` writes for it; `None` if `s` is not UTF-8.
/// Stored strings are nearly always printable ASCII without `"` or `\`,
/// which is written as is, so those skip serde_json and UTF-8 validation.
pub(in crate::evidence) fn write_json_str(out: &mut Vec<u8>, s: &[u8]) -> Option<()> {
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

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes `{"key":value,...}`; keys must be given in canonical order.
pub(super) struct ObjectWriter<'a> {
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
pub(super) fn write_canonical(
    e: &Entry,
    out: &mut Vec<u8>,
    details: &mut Vec<u8>,
) -> Result<(), RecordError> {
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
pub(super) fn put_v2_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
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
pub(in crate::evidence) enum Field {
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
pub(in crate::evidence) trait FieldSource {
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
pub(in crate::evidence) fn write_v2<S: FieldSource>(out: &mut Vec<u8>, src: &mut S) -> Option<()> {
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
pub(super) struct EntryFields<'e> {
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

pub(super) fn write_canonical_v2(
    e: &Entry,
    out: &mut Vec<u8>,
    details: &[u8],
) -> Result<(), RecordError> {
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

pub(super) fn write_canonical_v1(
    e: &Entry,
    out: &mut Vec<u8>,
    details: &[u8],
) -> Result<(), RecordError> {
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

pub(super) enum ValueError {
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

pub(super) fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), ValueError> {
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

pub(super) fn write_members<'m>(
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

pub(super) fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), ValueError> {
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
