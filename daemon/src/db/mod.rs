//! The one way `warden.db` is opened: pragmas, the optional integrity check,
//! every table (`schema`) and the evidence layout's migrations. Registry,
//! approvals, evidence store and checkpoints all work on a [`Database`] this
//! module opened, so every connection to the file sees the same settings.

pub mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

pub(crate) use schema::EVIDENCE_NO_DELETE;
pub use schema::SCHEMA_VERSION;

/// How long a writer waits for another process's lock (daemon and CLI share
/// the file) before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

// The messages keep the wording they had when only the evidence store
// checked the file, so what `warden` prints about a bad file is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("open evidence database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "open evidence database {path}: integrity check failed ({detail}); refusing to use it"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("open evidence database {path}: journal mode is {mode:?}, not WAL")]
    NotWal { path: PathBuf, mode: String },
    #[error("open evidence database {path}: evidence schema version {found} is not the supported version {SCHEMA_VERSION}")]
    SchemaVersion { path: PathBuf, found: i64 },
    #[error("open evidence database {path}: create its tables")]
    Schema {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("open evidence database {path}: migrate evidence schema 1 to 2 (add each entry's encoding version); the file is unchanged")]
    Migrate {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("open evidence database {path}: migrate evidence schema 2 to 3 (count summaries per append, not per row); the file is unchanged")]
    MigrateCounted {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// Whether [`open`] reads the whole file to check it before using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// `PRAGMA quick_check` first: a damaged or foreign file is refused and
    /// left byte-for-byte as it was. Costs a read of the whole file.
    QuickCheck,
    /// No check: damage shows up only when a damaged page is read.
    Trust,
}

/// An open connection to `warden.db` with every table in place.
pub struct Database {
    conn: Connection,
    path: PathBuf,
}

impl Database {
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn into_parts(self) -> (Connection, PathBuf) {
        (self.conn, self.path)
    }
}

/// Bytes of the pages the database uses (its size less its free pages, as
/// this connection's snapshot sees it, write-ahead log included). Read
/// through SQLite: opening the file any other way in this process would
/// drop SQLite's POSIX locks on it.
pub fn bytes_in_use(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| -> rusqlite::Result<u64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0))
            .map(|v| v.max(0) as u64)
    };
    let pages = pragma("page_count")?.saturating_sub(pragma("freelist_count")?);
    Ok(pages.saturating_mul(pragma("page_size")?))
}

/// Opens (creating if missing) the database at `path`.
///
/// Several processes (daemon, CLI) may have it open at once: WAL and a busy
/// timeout serialise writers. A file whose evidence schema is newer than this
/// build's is refused before anything is written to it; an older file is
/// migrated one version at a time, each in one transaction.
pub fn open(path: &Path, integrity: Integrity) -> Result<Database, DbError> {
    let open_err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;

    if integrity == Integrity::QuickCheck {
        let problems = quick_check(&conn).map_err(|source| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => DbError::Corrupt {
                path: path.to_path_buf(),
                detail: source.to_string(),
            },
            _ => open_err(source),
        })?;
        if problems.first().map(String::as_str) != Some("ok") {
            return Err(DbError::Corrupt {
                path: path.to_path_buf(),
                detail: problems.join("; "),
            });
        }
    }

    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // FULL: registry changes and approval decisions must survive a machine
    // crash before they are acted on. The evidence store lowers it on its
    // own connection for batched appends (see `evidence::Durability`).
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(open_err)?;

    let version_err = |found| DbError::SchemaVersion {
        path: path.to_path_buf(),
        found,
    };
    // Checked before the tables are created, so a newer build's file is
    // refused untouched even if it lacks a table this build would add.
    match schema::existing_schema_version(&conn).map_err(open_err)? {
        Some(found) if found > SCHEMA_VERSION => return Err(version_err(found)),
        _ => {}
    }
    schema::create(&conn).map_err(|source| DbError::Schema {
        path: path.to_path_buf(),
        source,
    })?;

    let mut found = schema::schema_version(&conn).map_err(open_err)?;
    if found == 1 {
        schema::migrate_1_to_2(&mut conn).map_err(|source| DbError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
        found = schema::schema_version(&conn).map_err(open_err)?;
    }
    if found == 2 {
        schema::migrate_2_to_3(&mut conn).map_err(|source| DbError::MigrateCounted {
            path: path.to_path_buf(),
            source,
        })?;
        found = schema::schema_version(&conn).map_err(open_err)?;
    }
    if found != SCHEMA_VERSION {
        return Err(version_err(found));
    }
    Ok(Database {
        conn,
        path: path.to_path_buf(),
    })
}

fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    rows.take(10).collect()
}

#[cfg(test)]
mod tests;
