//! Offline verification of the evidence hash chain.
//!
//! Every row is re-encoded and re-hashed; stored hashes are only compared,
//! never trusted. Rows removed from the end of the log cannot be detected
//! from the chain alone; that needs checkpoints.

use std::ffi::CString;
use std::fmt;
use std::ops::ControlFlow;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::record::{
    write_json_str, write_v2, Entry, EntryHasher, Field, FieldSource, DOMAIN_ENTRY_V1,
    DOMAIN_ENTRY_V2, GENESIS_PREV_HASH,
};
use super::scan::{Scan, ScanRow};
use super::store::{ChainBase, EvidenceStore, StoreError, COLUMNS};

/// What is wrong with the first bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperKind {
    /// The seq is not the previous seq + 1: rows were deleted.
    Gap,
    /// `prev_hash` is not the previous row's hash: rows were inserted,
    /// reordered, or the previous row was replaced and re-hashed.
    PrevHashMismatch,
    /// The row does not hash to its stored hash: it was edited.
    HashMismatch,
    /// The row cannot be decoded or canonically encoded.
    Malformed,
}

impl fmt::Display for TamperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TamperKind::Gap => "row is missing (deleted)",
            TamperKind::PrevHashMismatch => {
                "row does not link to the previous row (inserted, reordered or replaced)"
            }
            TamperKind::HashMismatch => "row content does not match its hash (edited)",
            TamperKind::Malformed => "row is malformed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("evidence chain broken at seq {seq}: {kind}; {detail}")]
pub struct ChainError {
    /// The first sequence number at which the chain is wrong.
    pub seq: u64,
    pub kind: TamperKind,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("verify evidence chain")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] super::checkpoint::CheckpointError),
    /// `warden log --count`'s quick answer disagrees with the chain: the
    /// maintained total (`evidence_counted`) was changed outside Warden.
    #[error(
        "the log's maintained totals disagree with the chain: {stored_entries} entries and \
         {stored_counted} counted repeats stored, {entries} and {counted} in the entries"
    )]
    Totals {
        stored_entries: u64,
        stored_counted: u64,
        entries: u64,
        counted: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    /// 0 for an empty log.
    pub head_seq: u64,
    /// The genesis hash (64 zeros) for an empty log.
    pub head_hash: String,
}

/// Checks entries fed in stored order. Stop at the first error: the state
/// after an error is not meaningful.
pub struct ChainVerifier {
    hasher: EntryHasher,
    entries: u64,
    head_seq: u64,
    head_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        ChainVerifier {
            hasher: EntryHasher::new(),
            entries: 0,
            head_seq: 0,
            head_hash: GENESIS_PREV_HASH.to_string(),
        }
    }

    /// A verifier for a chain whose beginning was archived and pruned: the
    /// first entry must follow `base`.
    pub fn from_base(base: Option<&ChainBase>) -> Self {
        let mut v = Self::new();
        if let Some(b) = base {
            v.head_seq = b.seq;
            v.head_hash.clone_from(&b.hash);
        }
        v
    }

    pub fn push(&mut self, entry: &Entry) -> Result<(), ChainError> {
        let expected = self.head_seq + 1;
        if entry.seq != expected {
            return Err(ChainError {
                seq: expected,
                kind: TamperKind::Gap,
                detail: format!(
                    "expected seq {expected}, next stored row is seq {}",
                    entry.seq
                ),
            });
        }
        if entry.prev_hash != self.head_hash {
            return Err(ChainError {
                seq: entry.seq,
                kind: TamperKind::PrevHashMismatch,
                detail: format!(
                    "prev_hash {} but the previous row's hash is {}",
                    entry.prev_hash, self.head_hash
                ),
            });
        }
        let digest = self.hasher.digest(entry).map_err(|e| ChainError {
            seq: entry.seq,
            kind: TamperKind::Malformed,
            detail: e.to_string(),
        })?;
        let mut computed = [0u8; 64];
        hex::encode_to_slice(digest, &mut computed).expect("32 bytes are 64 hex digits");
        if computed != entry.hash.as_bytes() {
            return Err(ChainError {
                seq: entry.seq,
                kind: TamperKind::HashMismatch,
                detail: format!(
                    "stored hash {} but the content hashes to {}",
                    entry.hash,
                    String::from_utf8_lossy(&computed)
                ),
            });
        }
        self.entries += 1;
        self.head_seq = entry.seq;
        self.head_hash.clear();
        self.head_hash.push_str(&entry.hash);
        Ok(())
    }

    pub fn finish(self) -> VerifyReport {
        VerifyReport {
            entries: self.entries,
            head_seq: self.head_seq,
            head_hash: self.head_hash,
        }
    }

    /// The error for a row the store could not decode. A gap before it is
    /// reported instead, being the earlier problem.
    fn undecodable(&self, raw_seq: i64, detail: String) -> ChainError {
        let expected = self.head_seq + 1;
        match u64::try_from(raw_seq) {
            Ok(seq) if seq > expected => ChainError {
                seq: expected,
                kind: TamperKind::Gap,
                detail: format!("expected seq {expected}, next stored row is seq {seq}"),
            },
            seq => ChainError {
                seq: seq.unwrap_or(0),
                kind: TamperKind::Malformed,
                detail,
            },
        }
    }
}

/// Verifies the whole chain in `store`, streaming row by row.
pub fn verify_store(store: &EvidenceStore) -> Result<VerifyReport, VerifyError> {
    verify_chain(store, &mut |_, _| {})
}

/// The fast path, then (only if it finds anything irregular) the slow path,
/// which is the authority on what is wrong and where. `observe` sees every
/// verified (seq, hash).
fn verify_chain(
    store: &EvidenceStore,
    observe: &mut dyn FnMut(u64, &str),
) -> Result<VerifyReport, VerifyError> {
    let base = store.base()?;
    if let Some(report) = verify_raw(store.connection(), base.as_ref(), observe) {
        return Ok(report);
    }
    verify_streaming(store, base.as_ref(), &mut |e| observe(e.seq, &e.hash))
}

/// Verification on the rows' own bytes, without building entries: each
/// row's canonical encoding (in its version `v`) is written straight from
/// SQLite's column values, splicing the stored `details` text (stored
/// canonical). On any mismatch or odd row it gives up (None) and the slow
/// path names the problem.
///
/// It never accepts what the slow path rejects: a row passes only if the
/// bytes written for it hash to its stored hash, so (barring a SHA-256
/// collision) they are the canonical bytes of the entry that was sealed.
/// Both encodings are unambiguous: every piece written is a literal, a
/// fixed-width integer, a length-prefixed string (version 2) or a
/// self-delimiting JSON token (version 1: an integer, an escaped string),
/// and the details text must then be the sealed entry's canonical details
/// object. So equal bytes mean every column holds what the slow path decodes
/// to that same entry. Integers are range-checked, never truncated.
fn verify_raw(
    conn: &Connection,
    base: Option<&ChainBase>,
    observe: &mut dyn FnMut(u64, &str),
) -> Option<VerifyReport> {
    // No mmap_size: on the benchmark's database stepping through mmap cost
    // ~100 ns a row more than SQLite's ordinary page reads.
    let sql = CString::new(format!("SELECT {COLUMNS} FROM evidence ORDER BY seq")).ok()?;
    let mut scan = Scan::new(conn, &sql).ok()?;
    let mut hasher = PrefixCachedHasher::default();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut digits = itoa::Buffer::new();
    let mut head = [0u8; 32];
    let mut head_hex = [b'0'; 64];
    let mut head_seq = 0u64;
    if let Some(b) = base {
        hex::decode_to_slice(&b.hash, &mut head).ok()?;
        head_hex = hex_lower(&head);
        head_seq = b.seq;
    }
    let first = head_seq;
    while let Some(mut row) = scan.next().ok()? {
        let seq = row.int(Field::Seq as i32)?;
        if u64::try_from(seq).ok()? != head_seq + 1 || row.text(Field::PrevHash as i32)? != head_hex
        {
            return None;
        }
        buf.clear();
        match row.int(20)? {
            1 => {
                buf.extend_from_slice(DOMAIN_ENTRY_V1);
                write_row_v1(&mut buf, &mut row, &mut digits, &head_hex)?;
            }
            2 => {
                buf.extend_from_slice(DOMAIN_ENTRY_V2);
                write_row_v2(&mut buf, &mut row, &head)?;
            }
            _ => return None,
        }
        head = hasher.digest(&buf);
        head_hex = hex_lower(&head);
        if row.text(19)? != head_hex {
            return None;
        }
        head_seq += 1;
        observe(head_seq, std::str::from_utf8(&head_hex).ok()?);
    }
    Some(VerifyReport {
        entries: head_seq - first,
        head_seq,
        head_hash: String::from_utf8(head_hex.to_vec()).ok()?,
    })
}

/// Version 2 of a row whose `prev_hash` is `prev`: `record::write_v2`,
/// the writer's own encoder, reading the row in place.
fn write_row_v2(b: &mut Vec<u8>, row: &mut ScanRow<'_>, prev: &[u8; 32]) -> Option<()> {
    write_v2(b, &mut RowFields { row, prev })
}

/// A stored row as `record::write_v2` reads it; its `prev_hash` column was
/// checked by the caller to be `prev` in hex. Integers are range-checked,
/// never truncated.
struct RowFields<'r, 's> {
    row: &'r mut ScanRow<'s>,
    prev: &'r [u8; 32],
}

impl FieldSource for RowFields<'_, '_> {
    #[inline]
    fn text(&mut self, field: Field) -> Option<&[u8]> {
        self.row.text(field as i32)
    }

    #[inline]
    fn u32(&mut self, field: Field) -> Option<u32> {
        u32::try_from(self.row.int(field as i32)?).ok()
    }

    #[inline]
    fn ts_ns(&mut self) -> Option<i64> {
        self.row.int(Field::TsNs as i32)
    }

    #[inline]
    fn seq(&mut self) -> Option<u64> {
        u64::try_from(self.row.int(Field::Seq as i32)?).ok()
    }

    #[inline]
    fn prev_hash(&mut self) -> Option<[u8; 32]> {
        Some(*self.prev)
    }
}

/// Version 1 of a row whose `prev_hash` is `prev_hex`: the same fields as
/// `record::write_canonical_v1`, keys in byte order.
fn write_row_v1(
    b: &mut Vec<u8>,
    row: &mut ScanRow<'_>,
    digits: &mut itoa::Buffer,
    prev_hex: &[u8; 64],
) -> Option<()> {
    b.push(b'{');
    put_str(b, b"\"action\":", row.text(Field::Action as i32))?;
    put_str(b, b",\"agent\":", row.text(Field::Agent as i32))?;
    put_str(b, b",\"decision\":", row.text(Field::Decision as i32))?;
    b.extend_from_slice(b",\"details\":");
    b.extend_from_slice(row.text(Field::Details as i32)?);
    put_str(b, b",\"exe\":", row.text(Field::Exe as i32))?;
    put_str(b, b",\"kind\":", row.text(Field::Kind as i32))?;
    put_str(b, b",\"login_user\":", row.text(Field::LoginUser as i32))?;
    put_int(
        b,
        digits,
        b",\"loginuid\":",
        row.int(Field::Loginuid as i32),
    )?;
    put_str(b, b",\"method\":", row.text(Field::Method as i32))?;
    put_str(b, b",\"owner\":", row.text(Field::Owner as i32))?;
    put_int(b, digits, b",\"pid\":", row.int(Field::Pid as i32))?;
    put_str(
        b,
        b",\"policy_snapshot\":",
        row.text(Field::PolicySnapshot as i32),
    )?;
    // Checked by the caller to be the previous row's hash: hex, nothing to
    // escape.
    b.extend_from_slice(b",\"prev_hash\":\"");
    b.extend_from_slice(prev_hex);
    b.push(b'"');
    put_str(b, b",\"rule_id\":", row.text(Field::RuleId as i32))?;
    put_int(b, digits, b",\"seq\":", row.int(Field::Seq as i32))?;
    put_str(b, b",\"target\":", row.text(Field::Target as i32))?;
    put_int(b, digits, b",\"ts_ns\":", row.int(Field::TsNs as i32))?;
    put_int(b, digits, b",\"uid\":", row.int(Field::Uid as i32))?;
    put_str(b, b",\"user\":", row.text(Field::User as i32))?;
    b.extend_from_slice(b",\"v\":1}");
    Some(())
}

/// SHA-256 of a message (domain prefix and canonical bytes), reusing the
/// states after the first [`CACHED_BLOCKS`] 64-byte blocks of recent
/// messages that share them. In version 2 the first two blocks hold the
/// fields that usually repeat (kind, agent, owner, users, ids, exe, the start
/// of the policy snapshot), so one agent's entries share both (on the
/// benchmark's rows, two compressions of five). The last [`PREFIXES`]
/// distinct prefixes are kept, so entries of a few agents taking turns
/// share them too. A block is reused only if its bytes equal the cached
/// message's in full.
#[derive(Default)]
struct PrefixCachedHasher {
    /// Most recently used first.
    prefixes: Vec<CachedPrefix>,
}

/// The message bytes the cached blocks cover, and the state after each.
#[derive(Default)]
struct CachedPrefix {
    bytes: Vec<u8>,
    states: Vec<Sha256>,
}

const CACHED_BLOCKS: usize = 2;
const PREFIXES: usize = 8;
const BLOCK: usize = 64;

impl CachedPrefix {
    /// How many of the cached blocks `message` starts with.
    fn shared(&self, message: &[u8]) -> usize {
        let end = |i: usize| BLOCK * (i + 1);
        (0..self.states.len())
            .take_while(|&i| message.get(..end(i)) == self.bytes.get(..end(i)))
            .count()
    }
}

impl PrefixCachedHasher {
    fn digest(&mut self, message: &[u8]) -> [u8; 32] {
        // Message bytes up to the end of block `i`.
        let end = |i: usize| BLOCK * (i + 1);
        // The most recent prefix sharing most; a new one (or the least
        // recently used, replaced) if none shares a block.
        let mut best = (0, 0);
        for (i, prefix) in self.prefixes.iter().enumerate() {
            let shared = prefix.shared(message);
            if shared > best.1 {
                best = (i, shared);
            }
            if shared == CACHED_BLOCKS {
                break;
            }
        }
        let (index, shared) = if best.1 > 0 {
            best
        } else {
            if self.prefixes.len() < PREFIXES {
                self.prefixes.push(CachedPrefix::default());
            }
            (self.prefixes.len() - 1, 0)
        };
        self.prefixes[..=index].rotate_right(1);
        let cached = &mut self.prefixes[0];
        cached.states.truncate(shared);
        let mut done = shared.checked_sub(1).map_or(0, end);
        cached.bytes.truncate(done);
        let mut hasher = cached.states.last().cloned().unwrap_or_default();
        while cached.states.len() < CACHED_BLOCKS {
            let Some(block) = message.get(done..end(cached.states.len())) else {
                break;
            };
            hasher.update(block);
            cached.bytes.extend_from_slice(block);
            cached.states.push(hasher.clone());
            done += block.len();
        }
        hasher.update(&message[done..]);
        hasher.finalize().into()
    }
}

fn put_str(buf: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) -> Option<()> {
    buf.extend_from_slice(key);
    write_json_str(buf, value?)
}

fn put_int(buf: &mut Vec<u8>, digits: &mut itoa::Buffer, key: &[u8], n: Option<i64>) -> Option<()> {
    buf.extend_from_slice(key);
    buf.extend_from_slice(digits.format(n?).as_bytes());
    Some(())
}

/// Lowercase hex, as stored (`hex::encode_to_slice` is several times slower).
pub(super) fn hex_lower(digest: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

/// Verifies the chain, then every checkpoint stored beside it against the
/// host's public key, then any `anchors` (checkpoints kept elsewhere, e.g.
/// from an earlier export or a SIEM) against the chain.
pub fn verify_store_signed(
    store: &EvidenceStore,
    key: &ed25519_dalek::VerifyingKey,
    anchors: &[super::checkpoint::Checkpoint],
) -> Result<(VerifyReport, super::checkpoint::CheckpointReport), VerifyError> {
    use super::checkpoint;
    let checkpoints = checkpoint::read_all(store.connection())?;
    // Remember the chain's hash at every size a checkpoint signed.
    let wanted: std::collections::HashSet<u64> =
        checkpoints.iter().chain(anchors).map(|c| c.size).collect();
    let mut hashes = std::collections::HashMap::new();
    // Archived and pruned up to `base`: the chain continues from its hash,
    // which a checkpoint must have signed (checked below).
    let base = store.base()?;
    if let Some(b) = &base {
        hashes.insert(b.seq, b.hash.clone());
    }
    let base_seq = base.as_ref().map_or(0, |b| b.seq);
    let report = verify_chain(store, &mut |seq, hash| {
        if wanted.contains(&seq) {
            hashes.insert(seq, hash.to_string());
        }
    })?;
    let hash_at = |seq: u64| hashes.get(&seq).cloned();
    let signed =
        checkpoint::verify_all_from(&checkpoints, key, base_seq, report.head_seq, &hash_at)?;
    checkpoint::base_is_signed(&checkpoints, base.as_ref())?;
    for anchor in anchors.iter().filter(|a| a.size >= base_seq) {
        anchor.verify_signature(key)?;
        checkpoint::verify_against_chain(anchor, report.head_seq, &hash_at)?;
    }
    let (stored, recounted) = store.totals_and_recount()?;
    if stored != recounted {
        return Err(VerifyError::Totals {
            stored_entries: stored.entries,
            stored_counted: stored.counted,
            entries: recounted.entries,
            counted: recounted.counted,
        });
    }
    Ok((report, signed))
}

fn verify_streaming(
    store: &EvidenceStore,
    base: Option<&ChainBase>,
    observe: &mut dyn FnMut(&Entry),
) -> Result<VerifyReport, VerifyError> {
    let mut verifier = ChainVerifier::from_base(base);
    let flow = store.for_each_entry(|entry| match verifier.push(entry) {
        Ok(()) => {
            observe(entry);
            ControlFlow::Continue(())
        }
        Err(e) => ControlFlow::Break(e),
    });
    match flow {
        Ok(ControlFlow::Continue(())) => Ok(verifier.finish()),
        Ok(ControlFlow::Break(e)) => Err(e.into()),
        Err(StoreError::MalformedColumn {
            seq,
            column,
            source,
            ..
        }) => Err(verifier
            .undecodable(
                seq,
                format!("stored row seq {seq}: column {column}: {source}"),
            )
            .into()),
        Err(StoreError::MalformedDetails { seq, source, .. }) => Err(verifier
            .undecodable(
                seq,
                format!("stored row seq {seq}: details is not a JSON object: {source}"),
            )
            .into()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
