//! The evidence log: every enforcement decision and administrative event,
//! appended to a SHA-256 hash chain in a local SQLite database so that an
//! auditor can detect edits, deletions and reordering offline.
//! The canonical entry encoding that the hashes cover is specified in
//! [`record`]'s module documentation.

pub mod checkpoint;
pub mod completeness;
pub mod record;
mod scan;
pub mod store;
pub mod verify;

pub use record::{Entry, NewEntry, RecordError, KINDS};
pub use store::{is_explained_refusal, Counted, Durability, EvidenceStore, Filter, StoreError};
pub use verify::{
    verify_store, verify_store_signed, ChainError, ChainVerifier, TamperKind, VerifyError,
    VerifyReport,
};
