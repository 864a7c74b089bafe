//! Signed checkpoints: the host's Ed25519 key signs (size, head hash, time)
//! of the evidence chain every N entries or T seconds and at shutdown.
//!
//! A hash chain alone shows edits, deletions and reordering, but not a
//! consistent rewrite (recompute every hash from the edit onwards) or the
//! removal of the newest entries. Checkpoints close both: a rewritten entry
//! no longer hashes to a signed head, and a shortened chain is shorter than
//! a signed size. Checkpoints are chained to each other (`prev`) and carry
//! consecutive ids, so one cannot be dropped, reordered or replayed in place
//! of a newer one without breaking a signature. Each checkpoint is also
//! appended to the evidence chain (kind `checkpoint`), so a copy shipped
//! elsewhere (a SIEM, an export) can later be checked against this host's
//! log with `warden log verify --anchor FILE`: that catches even an attacker
//! who truncated the log and all checkpoints after an old one.
//!
//! Signed message, version 1: `"warden/checkpoint/v1" || 0x00 ||` the
//! canonical JSON (sorted keys, no whitespace) of
//! `{"head_hash","id","key_id","prev","size","ts_ns","v":1}`.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::{DOMAIN_CHECKPOINT, GENESIS_PREV_HASH};

pub const PRIVATE_KEY_FILE: &str = "host.key";
pub const PUBLIC_KEY_FILE: &str = "host.pub";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is malformed: expected 64 hex digits")]
    BadKey { path: PathBuf },
    #[error("key file {path} is readable by others (mode {mode:o}); it must be 0600")]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("generate the host key: {0}")]
    Random(String),
    #[error("{op}: {source}")]
    Sql {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("checkpoint {id}: {problem}")]
    Invalid { id: u64, problem: String },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Short id of a public key: the first 16 hex digits of its sha256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

pub fn parse_public_key(text: &str, path: &Path) -> Result<VerifyingKey, CheckpointError> {
    let bad = || CheckpointError::BadKey {
        path: path.to_path_buf(),
    };
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// Reads `host.pub` from a state directory or an export bundle.
pub fn load_public_key(dir: &Path) -> Result<VerifyingKey, CheckpointError> {
    let path = dir.join(PUBLIC_KEY_FILE);
    let text = fs::read_to_string(&path).map_err(io_err("read public key", &path))?;
    parse_public_key(&text, &path)
}

/// The host's signing key (`host.key`, 0600; `host.pub` beside it).
pub struct HostKey {
    signing: SigningKey,
}

impl HostKey {
    /// Loads the key, creating it on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, CheckpointError> {
        let path = state_dir.join(PRIVATE_KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mode = fs::metadata(&path)
                    .map_err(io_err("stat", &path))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(CheckpointError::KeyMode {
                        path,
                        mode: mode & 0o777,
                    });
                }
                let seed: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(CheckpointError::BadKey { path: path.clone() })?;
                Ok(Self {
                    signing: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(state_dir),
            Err(e) => Err(io_err("read host key", &path)(e)),
        }
    }

    fn create(state_dir: &Path) -> Result<Self, CheckpointError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| CheckpointError::Random(e.to_string()))?;
        let signing = SigningKey::from_bytes(&seed);
        let path = state_dir.join(PRIVATE_KEY_FILE);
        // create_new: never overwrite a key another process just wrote.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create host key", &path))?;
        file.write_all(hex::encode(seed).as_bytes())
            .map_err(io_err("write host key", &path))?;
        file.sync_all().map_err(io_err("sync host key", &path))?;
        let public = state_dir.join(PUBLIC_KEY_FILE);
        fs::write(&public, hex::encode(signing.verifying_key().as_bytes()))
            .map_err(io_err("write public key", &public))?;
        Ok(Self { signing })
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Signs `domain || message`; returns the signature as hex.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> String {
        let mut bytes = domain.to_vec();
        bytes.extend_from_slice(message);
        hex::encode(self.signing.sign(&bytes).to_bytes())
    }
}

/// Checks a signature made by [`HostKey::sign`].
pub fn verify_detached(
    key: &VerifyingKey,
    domain: &[u8],
    message: &[u8],
    signature_hex: &str,
) -> bool {
    let Some(sig) = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    let mut bytes = domain.to_vec();
    bytes.extend_from_slice(message);
    key.verify(&bytes, &Signature::from_bytes(&sig)).is_ok()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: u64,
    /// Entries in the chain when signed (the head's seq).
    pub size: u64,
    pub head_hash: String,
    pub ts_ns: i64,
    /// `digest()` of the previous checkpoint (64 zeros for the first).
    pub prev: String,
    pub key_id: String,
    pub signature: String,
}

/// The signed fields, in canonical (sorted) key order.
#[derive(Serialize)]
struct Signed<'a> {
    head_hash: &'a str,
    id: u64,
    key_id: &'a str,
    prev: &'a str,
    size: u64,
    ts_ns: i64,
    v: u32,
}

impl Checkpoint {
    fn message(&self) -> Vec<u8> {
        let signed = Signed {
            head_hash: &self.head_hash,
            id: self.id,
            key_id: &self.key_id,
            prev: &self.prev,
            size: self.size,
            ts_ns: self.ts_ns,
            v: 1,
        };
        let mut out = DOMAIN_CHECKPOINT.to_vec();
        out.extend(serde_json::to_vec(&signed).expect("plain fields serialise"));
        out
    }

    /// What the next checkpoint's `prev` must be.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.message());
        h.update(self.signature.as_bytes());
        hex::encode(h.finalize())
    }

    /// Checks the signature against `key`.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), CheckpointError> {
        let invalid = |problem: &str| CheckpointError::Invalid {
            id: self.id,
            problem: problem.into(),
        };
        if self.key_id != key_id(key) {
            return Err(invalid("signed by another key"));
        }
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("signature is not 64 bytes of hex"))?;
        key.verify(&self.message(), &Signature::from_bytes(&sig))
            .map_err(|_| invalid("signature does not verify (forged or altered)"))
    }
}

pub fn read_all(conn: &Connection) -> Result<Vec<Checkpoint>, CheckpointError> {
    let sql = |op| move |source| CheckpointError::Sql { op, source };
    let mut stmt = conn
        .prepare("SELECT id, size, head_hash, ts_ns, prev, key_id, signature FROM checkpoints ORDER BY id")
        .map_err(sql("read checkpoints"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Checkpoint {
                id: r.get(0)?,
                size: r.get(1)?,
                head_hash: r.get(2)?,
                ts_ns: r.get(3)?,
                prev: r.get(4)?,
                key_id: r.get(5)?,
                signature: r.get(6)?,
            })
        })
        .map_err(sql("read checkpoints"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("read checkpoints"))
}

/// Signs and stores a checkpoint of the chain head `(size, head_hash)`.
pub fn write(
    conn: &Connection,
    key: &HostKey,
    size: u64,
    head_hash: &str,
    ts_ns: i64,
) -> Result<Checkpoint, CheckpointError> {
    let last = read_all(conn)?.pop();
    let mut cp = Checkpoint {
        id: last.as_ref().map_or(1, |c| c.id + 1),
        size,
        head_hash: head_hash.to_string(),
        ts_ns,
        prev: last
            .as_ref()
            .map_or_else(|| GENESIS_PREV_HASH.to_string(), Checkpoint::digest),
        key_id: key_id(&key.verifying_key()),
        signature: String::new(),
    };
    cp.signature = hex::encode(key.signing.sign(&cp.message()).to_bytes());
    conn.execute(
        "INSERT INTO checkpoints (id, size, head_hash, ts_ns, prev, key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![cp.id, cp.size, cp.head_hash, cp.ts_ns, cp.prev, cp.key_id, cp.signature],
    )
    .map_err(|source| CheckpointError::Sql { op: "store checkpoint", source })?;
    Ok(cp)
}

/// What checkpoint verification established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    pub checkpoints: u64,
    /// Entries covered by the newest checkpoint.
    pub signed_size: u64,
    pub key_id: String,
}

/// Verifies checkpoints against a chain whose hashes were already verified.
/// `hash_at(seq)` gives the chain's hash at `seq` (None past its end).
pub fn verify_all(
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
    chain_len: u64,
    hash_at: &dyn Fn(u64) -> Option<String>,
) -> Result<CheckpointReport, CheckpointError> {
    verify_all_from(checkpoints, key, 0, chain_len, hash_at)
}

/// [`verify_all`] for a chain archived and pruned up to `base_seq`: the
/// checkpoints of the pruned part are checked as a chain of signatures
/// (their entries are in the archive's bundle, not here).
pub fn verify_all_from(
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
    base_seq: u64,
    chain_len: u64,
    hash_at: &dyn Fn(u64) -> Option<String>,
) -> Result<CheckpointReport, CheckpointError> {
    verify_checkpoints(checkpoints, key, base_seq, chain_len, hash_at, true)
}

/// [`verify_all_from`] for checkpoints that start at a later one than
/// checkpoint 1 (a windowed bundle carries those from the one that signed
/// its base on): the first is checked by its signature alone (its `prev`
/// links to checkpoints not given), each later one as in
/// [`verify_all_from`], and each against the chain from `base_seq` on.
pub fn verify_suffix(
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
    base_seq: u64,
    chain_len: u64,
    hash_at: &dyn Fn(u64) -> Option<String>,
) -> Result<CheckpointReport, CheckpointError> {
    verify_checkpoints(checkpoints, key, base_seq, chain_len, hash_at, false)
}

fn verify_checkpoints(
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
    base_seq: u64,
    chain_len: u64,
    hash_at: &dyn Fn(u64) -> Option<String>,
    from_first: bool,
) -> Result<CheckpointReport, CheckpointError> {
    let mut prev: Option<&Checkpoint> = None;
    for (i, cp) in checkpoints.iter().enumerate() {
        let invalid = |problem: String| CheckpointError::Invalid { id: cp.id, problem };
        cp.verify_signature(key)?;
        if i == 0 && !from_first {
            if cp.size >= base_seq {
                verify_against_chain(cp, chain_len, hash_at)?;
            }
            prev = Some(cp);
            continue;
        }
        let expected_id = prev.map_or(1, |p| p.id + 1);
        if cp.id != expected_id {
            return Err(invalid(format!(
                "expected checkpoint id {expected_id} (one was removed or replayed)"
            )));
        }
        let expected_prev = prev.map_or_else(|| GENESIS_PREV_HASH.to_string(), Checkpoint::digest);
        if cp.prev != expected_prev {
            return Err(invalid(
                "does not follow the previous checkpoint (replayed or reordered)".into(),
            ));
        }
        if let Some(p) = prev {
            if cp.size < p.size || cp.ts_ns < p.ts_ns {
                return Err(invalid("goes backwards in size or time (replayed)".into()));
            }
        }
        if cp.size >= base_seq {
            verify_against_chain(cp, chain_len, hash_at)?;
        }
        prev = Some(cp);
    }
    Ok(CheckpointReport {
        checkpoints: checkpoints.len() as u64,
        signed_size: prev.map_or(0, |p| p.size),
        key_id: key_id(key),
    })
}

/// A pruned chain's base must be a signed checkpoint's head (the signed
/// anchor the remaining chain is verified from).
pub fn base_is_signed(
    checkpoints: &[Checkpoint],
    base: Option<&super::store::ChainBase>,
) -> Result<(), CheckpointError> {
    let Some(b) = base else {
        return Ok(());
    };
    if checkpoints
        .iter()
        .any(|c| c.size == b.seq && c.head_hash == b.hash)
    {
        Ok(())
    } else {
        Err(CheckpointError::Invalid {
            id: 0,
            problem: format!(
                "the chain starts after seq {} (archived, or a windowed bundle's base), but no signed checkpoint has that head",
                b.seq
            ),
        })
    }
}

/// Checks one (signature-verified) checkpoint against the chain: the chain
/// must be at least as long, and hash to the signed head at that size.
pub fn verify_against_chain(
    cp: &Checkpoint,
    chain_len: u64,
    hash_at: &dyn Fn(u64) -> Option<String>,
) -> Result<(), CheckpointError> {
    let invalid = |problem: String| CheckpointError::Invalid { id: cp.id, problem };
    if cp.size > chain_len {
        return Err(invalid(format!(
            "signed a chain of {} entries but only {chain_len} remain (the tail was truncated)",
            cp.size
        )));
    }
    if cp.size > 0 && hash_at(cp.size).as_deref() != Some(cp.head_hash.as_str()) {
        return Err(invalid(format!(
            "entry {} no longer hashes to the signed head (history was rewritten)",
            cp.size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path) -> HostKey {
        HostKey::load_or_create(dir).unwrap()
    }

    fn chain(n: u64) -> Vec<String> {
        (1..=n).map(|i| format!("{i:064x}")).collect()
    }

    fn setup() -> (tempfile::TempDir, Connection, HostKey) {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = crate::db::open(&dir.path().join("c.db"), crate::db::Integrity::Trust)
            .unwrap()
            .into_parts();
        let k = key(dir.path());
        (dir, conn, k)
    }

    fn verify(
        conn: &Connection,
        k: &HostKey,
        hashes: &[String],
    ) -> Result<CheckpointReport, CheckpointError> {
        let cps = read_all(conn).unwrap();
        verify_all(&cps, &k.verifying_key(), hashes.len() as u64, &|seq| {
            hashes.get(seq as usize - 1).cloned()
        })
    }

    #[test]
    fn key_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = key(dir.path());
        let b = key(dir.path());
        assert_eq!(a.verifying_key(), b.verifying_key());
        let mode = fs::metadata(dir.path().join(PRIVATE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_public_key(dir.path()).unwrap(), a.verifying_key());
        fs::set_permissions(
            dir.path().join(PRIVATE_KEY_FILE),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(
            HostKey::load_or_create(dir.path()),
            Err(CheckpointError::KeyMode { .. })
        ));
    }

    #[test]
    fn valid_checkpoints_verify() {
        let (_d, conn, k) = setup();
        let hashes = chain(30);
        write(&conn, &k, 10, &hashes[9], 100).unwrap();
        write(&conn, &k, 25, &hashes[24], 200).unwrap();
        let report = verify(&conn, &k, &hashes).unwrap();
        assert_eq!((report.checkpoints, report.signed_size), (2, 25));
    }

    #[test]
    fn truncated_tail_is_caught() {
        let (_d, conn, k) = setup();
        let hashes = chain(30);
        write(&conn, &k, 30, &hashes[29], 100).unwrap();
        let err = verify(&conn, &k, &hashes[..20]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn rewritten_history_is_caught() {
        let (_d, conn, k) = setup();
        let mut hashes = chain(30);
        write(&conn, &k, 30, &hashes[29], 100).unwrap();
        hashes[29] = "f".repeat(64);
        let err = verify(&conn, &k, &hashes).unwrap_err();
        assert!(err.to_string().contains("rewritten"), "{err}");
    }

    #[test]
    fn replayed_removed_or_forged_checkpoints_are_caught() {
        let (_d, conn, k) = setup();
        let hashes = chain(30);
        write(&conn, &k, 10, &hashes[9], 100).unwrap();
        write(&conn, &k, 20, &hashes[19], 200).unwrap();
        write(&conn, &k, 30, &hashes[29], 300).unwrap();
        // An old checkpoint swapped in as the newest.
        conn.execute_batch(
            "UPDATE checkpoints SET size = (SELECT size FROM checkpoints WHERE id = 1),
               head_hash = (SELECT head_hash FROM checkpoints WHERE id = 1),
               ts_ns = (SELECT ts_ns FROM checkpoints WHERE id = 1),
               prev = (SELECT prev FROM checkpoints WHERE id = 1),
               signature = (SELECT signature FROM checkpoints WHERE id = 1) WHERE id = 3",
        )
        .unwrap();
        let err = verify(&conn, &k, &hashes).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Invalid { id: 3, .. }),
            "{err}"
        );

        // A checkpoint removed from the middle.
        let (_d, conn, k) = setup();
        write(&conn, &k, 10, &hashes[9], 100).unwrap();
        write(&conn, &k, 20, &hashes[19], 200).unwrap();
        write(&conn, &k, 30, &hashes[29], 300).unwrap();
        conn.execute("DELETE FROM checkpoints WHERE id = 2", [])
            .unwrap();
        let err = verify(&conn, &k, &hashes).unwrap_err();
        assert!(
            err.to_string().contains("expected checkpoint id 2"),
            "{err}"
        );

        // A signature by another key.
        let (_d, conn, _k) = setup();
        let other = tempfile::tempdir().unwrap();
        let stranger = key(other.path());
        write(&conn, &stranger, 10, &hashes[9], 100).unwrap();
        let err = verify(&conn, &k, &hashes).unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
    }
}
