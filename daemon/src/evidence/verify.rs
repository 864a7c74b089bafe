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
use super::store::{EvidenceStore, StoreError, COLUMNS};

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
    if let Some(report) = verify_raw(store.connection(), observe) {
        return Ok(report);
    }
    verify_streaming(store, &mut |e| observe(e.seq, &e.hash))
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
fn verify_raw(conn: &Connection, observe: &mut dyn FnMut(u64, &str)) -> Option<VerifyReport> {
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
        entries: head_seq,
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
fn hex_lower(digest: &[u8; 32]) -> [u8; 64] {
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
    let report = verify_chain(store, &mut |seq, hash| {
        if wanted.contains(&seq) {
            hashes.insert(seq, hash.to_string());
        }
    })?;
    let hash_at = |seq: u64| hashes.get(&seq).cloned();
    let signed = checkpoint::verify_all(&checkpoints, key, report.entries, &hash_at)?;
    for anchor in anchors {
        anchor.verify_signature(key)?;
        checkpoint::verify_against_chain(anchor, report.entries, &hash_at)?;
    }
    Ok((report, signed))
}

fn verify_streaming(
    store: &EvidenceStore,
    observe: &mut dyn FnMut(&Entry),
) -> Result<VerifyReport, VerifyError> {
    let mut verifier = ChainVerifier::new();
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
mod tests {
    use super::super::record::compute_hash;
    use super::super::record::tests::sample;
    use super::super::store::tests::{insert_raw, v1_database};
    use super::super::store::Durability;
    use super::*;
    use rusqlite::params;
    use std::path::{Path, PathBuf};

    /// A store holding 20 entries, and a second connection for tampering.
    fn chain() -> (tempfile::TempDir, PathBuf, EvidenceStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warden.db");
        let mut store = EvidenceStore::open(&path).expect("open");
        let entries: Vec<_> = (0..20).map(sample).collect();
        store
            .append(&entries[..5], Durability::Batched)
            .expect("append");
        store
            .append(&entries[5..], Durability::Fsync)
            .expect("append");
        (dir, path, store)
    }

    #[test]
    fn the_fast_path_verifies_intact_chains_and_gives_up_on_tampering() {
        let (_dir, _path, store) = chain();
        let mut seen = Vec::new();
        let fast = verify_raw(store.connection(), &mut |seq, _| seen.push(seq))
            .expect("an intact chain takes the fast path");
        assert_eq!(
            fast,
            verify_streaming(&store, &mut |_| {}).expect("slow path")
        );
        assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
        // A late field, and fields in the first two SHA-256 blocks, which
        // rows share with their neighbours (the hasher's cached prefix).
        for (column, value) in [
            ("target", "x"),
            ("agent", "coder-2"),
            ("action", "connect6"),
            ("decision", "allow"),
        ] {
            let (_dir, path, store) = chain();
            let sql = format!("UPDATE evidence SET {column} = '{value}' WHERE seq = 7");
            let _attacker = tamper(&path, &sql);
            assert!(
                verify_raw(store.connection(), &mut |_, _| {}).is_none(),
                "{sql}"
            );
            assert_eq!(broken_at(&store), (7, TamperKind::HashMismatch), "{sql}");
        }
    }

    #[test]
    fn the_prefix_cached_hasher_hashes_like_sha256() {
        let base: Vec<u8> =
            b"{\"action\":\"connect4\",\"agent\":\"coder-1\",\"decision\":\"deny\","
                .iter()
                .chain(&[b'x'; 300])
                .copied()
                .collect();
        let differs_at = |at: usize| {
            let mut m = base.clone();
            m[at] ^= 1;
            m
        };
        const HEAD: usize = BLOCK;
        let second_block_end = HEAD + BLOCK;
        let messages: Vec<Vec<u8>> = vec![
            base.clone(),
            base.clone(),
            differs_at(HEAD - 1),
            base.clone(),
            differs_at(HEAD),
            differs_at(HEAD),
            differs_at(second_block_end - 1),
            base.clone(),
            differs_at(second_block_end),
            differs_at(0),
            base[..HEAD - 1].into(),
            base[..HEAD].into(),
            base[..HEAD + 1].into(),
            base[..second_block_end - 1].into(),
            base[..second_block_end].into(),
            base[..second_block_end + 1].into(),
            Vec::new(),
            base.clone(),
            base.repeat(20),
            base.clone(),
        ];
        let mut hasher = PrefixCachedHasher::default();
        for (i, m) in messages.iter().enumerate() {
            let expected: [u8; 32] = Sha256::digest(m).into();
            assert_eq!(hasher.digest(m), expected, "message {i}");
        }
    }

    /// Messages from more distinct prefixes than are cached, in an order
    /// that reuses, partly shares, evicts and comes back to them.
    #[test]
    fn the_prefix_cached_hasher_hashes_like_sha256_across_many_prefixes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut hasher = PrefixCachedHasher::default();
        for i in 0..5000 {
            let first = next(PREFIXES as u64 + 4) as u8;
            let second = next(3) as u8;
            let tail = next(200) as usize;
            let mut m = vec![first; BLOCK];
            m.extend(std::iter::repeat_n(second, BLOCK));
            m.extend((0..tail).map(|b| b as u8 ^ first));
            // Some messages end inside the cached blocks.
            m.truncate(if next(10) == 0 {
                next(2 * BLOCK as u64) as usize
            } else {
                m.len()
            });
            let expected: [u8; 32] = Sha256::digest(&m).into();
            assert_eq!(hasher.digest(&m), expected, "message {i}");
            assert!(hasher.prefixes.len() <= PREFIXES);
        }
    }

    #[test]
    fn field_numbers_are_the_store_columns() {
        use Field::*;
        let fields = [
            (Seq, "seq"),
            (TsNs, "ts_ns"),
            (Kind, "kind"),
            (Agent, "agent"),
            (Owner, "owner"),
            (Uid, "uid"),
            (Loginuid, "loginuid"),
            (User, "user"),
            (LoginUser, "login_user"),
            (Pid, "pid"),
            (Exe, "exe"),
            (Action, "action"),
            (Target, "target"),
            (Decision, "decision"),
            (RuleId, "rule_id"),
            (PolicySnapshot, "policy_snapshot"),
            (Method, "method"),
            (Details, "details"),
            (PrevHash, "prev_hash"),
        ];
        let columns: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
        for (field, name) in fields {
            assert_eq!(columns[field as usize], name, "{field:?}");
        }
    }

    /// Varied entries with edge values, each sealed in both versions.
    fn varied_entries() -> Vec<Entry> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let strings = |pick: u64| -> String {
            match pick {
                0 => String::new(),
                1 => "caf\u{e9} \u{1F600} \u{2028}\u{0}\u{1f}\u{7f}".into(),
                2 => "\"quoted\" \\back\\ /slash/\t\n\r".into(),
                // Two- and three-byte varint lengths.
                3 => "x".repeat(200),
                4 => "\u{e9}".repeat(9000),
                5 => "127.0.0.1:8080/tcp".into(),
                _ => format!("s{pick}"),
            }
        };
        let u32s = [0, 1, 1000, u32::MAX - 1, u32::MAX];
        let i64s = [i64::MIN, -1, 0, 1, 1_767_225_600_000_000_000, i64::MAX];
        let mut entries = Vec::new();
        for n in 0..400u64 {
            let mut details = sample(n).details;
            match n % 5 {
                0 => details.clear(),
                1 => {
                    details.insert("max".into(), serde_json::json!(u64::MAX));
                    details.insert("min".into(), serde_json::json!(i64::MIN));
                    details.insert("\u{e9}\u{1F600}".into(), serde_json::json!("\u{0}\""));
                }
                2 => {
                    details.insert("big".into(), serde_json::json!("d".repeat(100_000)));
                }
                3 => {
                    let many: serde_json::Map<_, _> = (0..300)
                        .map(|i| (format!("k{i}"), serde_json::json!([i, {"n": -i}])))
                        .collect();
                    details.insert("many".into(), serde_json::Value::Object(many));
                }
                _ => {}
            }
            let mut prev = [0u8; 32];
            prev.iter_mut().for_each(|b| *b = next(256) as u8);
            let seq = match n % 4 {
                0 => 1 + next(1000),
                1 => i64::MAX as u64,
                _ => next(i64::MAX as u64) + 1,
            };
            let ts_ns = i64s[next(i64s.len() as u64) as usize];
            let mut string = || strings(next(9));
            let mut e = Entry {
                seq,
                v: 2,
                ts_ns,
                kind: string(),
                agent: string(),
                owner: string(),
                uid: 0,
                loginuid: 0,
                user: string(),
                login_user: string(),
                pid: 0,
                exe: string(),
                action: string(),
                target: string(),
                decision: string(),
                rule_id: string(),
                policy_snapshot: string(),
                method: string(),
                details,
                prev_hash: hex::encode(prev),
                hash: String::new(),
            };
            e.uid = u32s[next(u32s.len() as u64) as usize];
            e.loginuid = u32s[next(u32s.len() as u64) as usize];
            e.pid = u32s[next(u32s.len() as u64) as usize];
            for v in [1, 2] {
                e.v = v;
                e.hash = compute_hash(&e).expect("hash");
                entries.push(e.clone());
            }
        }
        entries
    }

    /// The writer (`record`, over an `Entry`) and the fast path (over the
    /// stored row) write the same bytes, hence the same hashes.
    #[test]
    fn the_writer_and_the_fast_path_encode_alike() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(&format!("CREATE TABLE evidence ({COLUMNS})"))
            .expect("table");
        let entries = varied_entries();
        for e in &entries {
            insert_row(&conn, e);
        }
        let sql =
            CString::new(format!("SELECT {COLUMNS} FROM evidence ORDER BY rowid")).expect("sql");
        let mut scan = Scan::new(&conn, &sql).expect("prepare");
        let mut hasher = PrefixCachedHasher::default();
        let mut digits = itoa::Buffer::new();
        let mut ours = Vec::new();
        for e in &entries {
            let mut row = scan.next().expect("step").expect("a row per entry");
            let mut prev = [0u8; 32];
            hex::decode_to_slice(&e.prev_hash, &mut prev).expect("hex");
            let prev_hex: [u8; 64] = e.prev_hash.as_bytes().try_into().expect("64");
            ours.clear();
            let domain = match e.v {
                1 => {
                    write_row_v1(&mut ours, &mut row, &mut digits, &prev_hex).expect("v1 row");
                    DOMAIN_ENTRY_V1
                }
                _ => {
                    write_row_v2(&mut ours, &mut row, &prev).expect("v2 row");
                    DOMAIN_ENTRY_V2
                }
            };
            let theirs = super::super::record::canonical_bytes(e).expect("encode");
            assert!(ours == theirs, "v{} seq {}: bytes differ", e.v, e.seq);
            let message = [domain, &ours].concat();
            assert_eq!(hex_lower(&hasher.digest(&message)), e.hash.as_bytes());
        }
        assert!(scan.next().expect("step").is_none());
    }

    /// Plain SQL, as an attacker with write access would use it.
    fn tamper(path: &Path, sql: &str) -> Connection {
        let conn = Connection::open(path).expect("attacker connection");
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS evidence_no_update;
             DROP TRIGGER IF EXISTS evidence_no_delete;
             PRAGMA ignore_check_constraints = ON;",
        )
        .expect("disarm");
        conn.execute_batch(sql).expect("tamper");
        conn
    }

    fn insert_row(conn: &Connection, e: &Entry) {
        insert_raw(conn, e, true);
    }

    fn row(store: &EvidenceStore, seq: u64) -> Entry {
        store.read_range(seq, seq).expect("read").remove(0)
    }

    fn broken_at(store: &EvidenceStore) -> (u64, TamperKind) {
        match verify_store(store) {
            Err(VerifyError::Chain(e)) => (e.seq, e.kind),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn untouched_chain_verifies() {
        let (_dir, _path, store) = chain();
        let report = verify_store(&store).expect("intact");
        let (head_seq, head_hash) = store.head().expect("head").expect("non-empty");
        assert_eq!(
            report,
            VerifyReport {
                entries: 20,
                head_seq,
                head_hash
            }
        );
        assert_eq!(report.head_seq, 20);
    }

    #[test]
    fn empty_chain_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EvidenceStore::open(&dir.path().join("e.db")).expect("open");
        let report = verify_store(&store).expect("empty is intact");
        assert_eq!(report.entries, 0);
        assert_eq!(report.head_seq, 0);
        assert_eq!(report.head_hash, GENESIS_PREV_HASH);
    }

    #[test]
    fn edited_row_is_a_hash_mismatch() {
        let (_dir, path, store) = chain();
        tamper(
            &path,
            "UPDATE evidence SET decision = 'allow' WHERE seq = 7",
        );
        assert_eq!(broken_at(&store), (7, TamperKind::HashMismatch));
    }

    #[test]
    fn deleted_row_is_a_gap() {
        let (_dir, path, store) = chain();
        tamper(&path, "DELETE FROM evidence WHERE seq = 7");
        assert_eq!(broken_at(&store), (7, TamperKind::Gap));
        tamper(&path, "DELETE FROM evidence WHERE seq <= 3");
        assert_eq!(broken_at(&store), (1, TamperKind::Gap));
    }

    #[test]
    fn swapped_rows_break_the_link() {
        let (_dir, path, store) = chain();
        let cols = COLUMNS.trim_start_matches("seq, ");
        tamper(
            &path,
            &format!(
                "CREATE TEMP TABLE swap AS SELECT * FROM evidence WHERE seq IN (7, 8);
                 UPDATE evidence SET ({cols}) =
                     (SELECT {cols} FROM swap WHERE swap.seq = 15 - evidence.seq)
                 WHERE seq IN (7, 8);"
            ),
        );
        assert_eq!(row(&store, 7).pid, sample(7).pid, "rows really swapped");
        assert_eq!(broken_at(&store), (7, TamperKind::PrevHashMismatch));
    }

    #[test]
    fn inserted_row_breaks_the_link() {
        const SHIFT: &str = "UPDATE evidence SET seq = seq + 1000000 WHERE seq > 7;
                             UPDATE evidence SET seq = seq - 999999 WHERE seq > 1000000;";
        // A forged row with a valid hash of its own but linked to nothing.
        let (_dir, path, store) = chain();
        let forged = Entry::seal(8, "ab".repeat(32), sample(99)).expect("forge");
        insert_row(&tamper(&path, SHIFT), &forged);
        assert_eq!(broken_at(&store), (8, TamperKind::PrevHashMismatch));

        // Linked correctly after row 7: the displaced old row 8 no longer links.
        let (_dir, path, store) = chain();
        let forged = Entry::seal(8, row(&store, 7).hash, sample(99)).expect("forge");
        insert_row(&tamper(&path, SHIFT), &forged);
        assert_eq!(broken_at(&store), (9, TamperKind::PrevHashMismatch));
    }

    #[test]
    fn edited_and_rehashed_row_is_caught_at_the_next_link() {
        let (_dir, path, store) = chain();
        let mut edited = row(&store, 7);
        edited.decision = "allow".into();
        edited.hash = compute_hash(&edited).expect("rehash");
        tamper(&path, "")
            .execute(
                "UPDATE evidence SET decision = ?1, hash = ?2 WHERE seq = 7",
                params![edited.decision, edited.hash],
            )
            .expect("update");
        assert_eq!(broken_at(&store), (8, TamperKind::PrevHashMismatch));
    }

    #[test]
    fn mixed_version_chains_take_the_fast_path_and_a_changed_version_is_caught() {
        let build = || {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("warden.db");
            v1_database(&path, 5);
            let mut store = EvidenceStore::open(&path).expect("open migrates");
            let new: Vec<_> = (5..10).map(sample).collect();
            store.append(&new, Durability::Batched).expect("append");
            (dir, path, store)
        };
        let (_dir, _path, store) = build();
        let fast = verify_raw(store.connection(), &mut |_, _| {})
            .expect("a mixed chain takes the fast path");
        assert_eq!(
            fast,
            verify_streaming(&store, &mut |_| {}).expect("slow path")
        );
        assert_eq!(fast.entries, 10);
        for (seq, v, kind) in [
            (3, 2, TamperKind::HashMismatch),
            (7, 1, TamperKind::HashMismatch),
            (7, 3, TamperKind::Malformed),
        ] {
            let (_dir, path, store) = build();
            let sql = format!("UPDATE evidence SET v = {v} WHERE seq = {seq}");
            tamper(&path, &sql);
            assert!(
                verify_raw(store.connection(), &mut |_, _| {}).is_none(),
                "{sql}"
            );
            assert_eq!(broken_at(&store), (seq, kind), "{sql}");
        }
    }

    #[test]
    fn undecodable_rows_are_malformed() {
        for sql in [
            "UPDATE evidence SET details = 'not json' WHERE seq = 7",
            "UPDATE evidence SET details = '{\"rtt\":1.5}' WHERE seq = 7",
            "UPDATE evidence SET details = '[]' WHERE seq = 7",
            "UPDATE evidence SET uid = -1 WHERE seq = 7",
            "UPDATE evidence SET pid = 4294967296 WHERE seq = 7",
            // 2^32 + 1000: the same bytes as 1000 if it were truncated.
            "UPDATE evidence SET uid = 4294968296 WHERE seq = 7",
        ] {
            let (_dir, path, store) = chain();
            tamper(&path, sql);
            assert_eq!(broken_at(&store), (7, TamperKind::Malformed), "{sql}");
        }
        // The earlier problem wins: a gap before an undecodable row.
        let (_dir, path, store) = chain();
        tamper(
            &path,
            "DELETE FROM evidence WHERE seq = 6;
             UPDATE evidence SET details = 'not json' WHERE seq = 7",
        );
        assert_eq!(broken_at(&store), (6, TamperKind::Gap));
    }

    #[test]
    fn error_message_names_seq_and_cause() {
        let (_dir, path, store) = chain();
        tamper(
            &path,
            "UPDATE evidence SET target = '10.0.0.1:443/tcp' WHERE seq = 17",
        );
        let msg = verify_store(&store).expect_err("broken").to_string();
        assert!(
            msg.starts_with(
                "evidence chain broken at seq 17: row content does not match its hash (edited); stored hash "
            ),
            "{msg}"
        );
    }

    /// CPU time of this thread; wall time is meaningless on a busy machine.
    fn thread_cpu() -> std::time::Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        let ns = stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        std::time::Duration::from_nanos(ns)
    }

    /// cargo test --release -- --ignored --nocapture append_and_verify_rates
    #[test]
    #[ignore]
    fn append_and_verify_rates() {
        use std::time::{Duration, Instant};
        const TOTAL: u64 = 200_000;
        const BATCH: u64 = 1_000;
        let timed = |f: &mut dyn FnMut()| -> (Duration, Duration) {
            let (wall, cpu) = (Instant::now(), thread_cpu());
            f();
            (wall.elapsed(), thread_cpu() - cpu)
        };
        let rate = |d: Duration| TOTAL as f64 / d.as_secs_f64();

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bench.db");
        let mut store = EvidenceStore::open(&path).expect("open");
        let batches: Vec<Vec<_>> = (0..TOTAL / BATCH)
            .map(|b| (b * BATCH..(b + 1) * BATCH).map(sample).collect())
            .collect();

        let (wall, cpu) = timed(&mut || {
            for batch in &batches {
                store.append(batch, Durability::Batched).expect("append");
            }
        });
        println!(
            "append {TOTAL} in batches of {BATCH}: wall {wall:.2?} = {:.0}/s, cpu {cpu:.2?} = {:.0}/s",
            rate(wall),
            rate(cpu)
        );
        drop(store);

        let mut store = None;
        let (wall, _) = timed(&mut || store = Some(EvidenceStore::open(&path).expect("reopen")));
        let store = store.expect("opened");
        let size = std::fs::metadata(&path).expect("stat").len();
        println!(
            "reopen (quick_check) of {:.1} MB: wall {wall:.2?}",
            size as f64 / 1e6
        );

        let mut report = None;
        let (wall, cpu) = timed(&mut || report = Some(verify_store(&store).expect("intact")));
        assert_eq!(report.expect("verified").entries, TOTAL);
        println!(
            "verify {TOTAL}: wall {wall:.2?} = {:.0}/s, cpu {cpu:.2?} = {:.0}/s",
            rate(wall),
            rate(cpu)
        );
    }
}
