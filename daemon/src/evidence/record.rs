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
    // A control request refused because of who sent it (an agent's
    // mutating verb).
    "control_refused",
    "summary",
    // A sentinel alert (`crate::sentinel`).
    "alert",
    // An approver started a budget's count afresh.
    "budget_reset",
    // The evidence disk cap reached or lifted (`daemon::evidence_cap`).
    "evidence_cap",
    // `warden evidence archive` pruned the log's beginning
    // (`export::archive`).
    "archive",
    // Governed change (policy/review.rs, daemon/governance.rs): a proposed
    // policy change and its reviews.
    "policy_proposal",
    "policy_review",
    // A break-glass lift of a freeze window (daemon/governance.rs).
    "freeze_override",
    // An access review: a campaign started, or one agent kept or revoked
    // (commands/review.rs).
    "access_review",
    // A DNS question of an agent with `host` rules, decided by its proxy.
    "dns",
    // A `shadow:` candidate would have decided an action otherwise
    // (`would-allow`/`would-deny`/`would-hold`; counted after the first).
    "shadow",
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
        Self::seal_or_return(hasher, seq, prev_hash, new).map_err(|b| b.0)
    }

    /// As [`Self::seal_with`], but an entry that cannot be sealed is given
    /// back unchanged with the error (the store seals a batch in place,
    /// moving each entry in and out instead of copying it, and retries the
    /// batch's jobs one by one when one fails).
    pub(super) fn seal_or_return(
        hasher: &mut EntryHasher,
        seq: u64,
        prev_hash: String,
        new: NewEntry,
    ) -> Result<Entry, Box<(RecordError, NewEntry)>> {
        if let Err(e) = new.validate() {
            return Err(Box::new((e, new)));
        }
        if seq == 0 {
            return Err(Box::new((RecordError::ZeroSeq, new)));
        }
        if !is_sha256_hex(&prev_hash) {
            return Err(Box::new((RecordError::BadPrevHash { seq, prev_hash }, new)));
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
        match hasher.digest(&entry) {
            Ok(digest) => {
                // `hex::encode` builds the string a char at a time (about
                // 1% of the daemon's CPU per entry on a busy agent).
                let hex = super::verify::hex_lower(&digest);
                entry.hash = std::str::from_utf8(&hex)
                    .expect("hex digits are ASCII")
                    .to_owned();
                Ok(entry)
            }
            Err(e) => Err(Box::new((e, entry.into_new()))),
        }
    }

    /// The fields an entry was sealed from, given back.
    pub(super) fn into_new(self) -> NewEntry {
        NewEntry {
            ts_ns: self.ts_ns,
            kind: self.kind,
            agent: self.agent,
            owner: self.owner,
            uid: self.uid,
            loginuid: self.loginuid,
            user: self.user,
            login_user: self.login_user,
            pid: self.pid,
            exe: self.exe,
            action: self.action,
            target: self.target,
            decision: self.decision,
            rule_id: self.rule_id,
            policy_snapshot: self.policy_snapshot,
            method: self.method,
            details: self.details,
        }
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

mod canonical;

use self::canonical::is_sha256_hex;
pub use self::canonical::{
    canonical_bytes, compute_hash, entry_domain, write_canonical_details, EntryHasher,
};
pub(in crate::evidence) use self::canonical::{write_json_str, write_v2, Field, FieldSource};

#[cfg(test)]
pub(super) mod tests;
