//! A forward-only scan of a query's rows through SQLite's C API, for the
//! verification fast path.
//!
//! rusqlite's typed column access makes four C calls per column, each
//! re-checking the statement; on the 20-column evidence rows that cost about
//! as much as hashing them. Here each column is fetched once as a
//! `sqlite3_value` and read from that, which takes about a third of the time.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use rusqlite::{ffi, Connection};

/// A prepared statement, finalized on drop. Borrows the connection so it
/// cannot outlive it.
pub(super) struct Scan<'c> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    _conn: PhantomData<&'c Connection>,
}

/// SQLite's result code of a failed prepare or step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ScanError(pub i32);

impl<'c> Scan<'c> {
    pub(super) fn new(conn: &'c Connection, sql: &CStr) -> Result<Self, ScanError> {
        let mut stmt = ptr::null_mut();
        // SAFETY: the handle is open for as long as `conn` is borrowed, and
        // rusqlite's connections are not shared between threads; `sql` is
        // NUL-terminated. On failure SQLite leaves `stmt` null.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(conn.handle(), sql.as_ptr(), -1, &mut stmt, ptr::null_mut())
        };
        match NonNull::new(stmt) {
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(Scan {
                stmt,
                _conn: PhantomData,
            }),
            // An empty statement (only a comment) prepares to null.
            _ => Err(ScanError(rc)),
        }
    }

    /// Steps to the next row; `None` after the last one.
    pub(super) fn next(&mut self) -> Result<Option<ScanRow<'_>>, ScanError> {
        // SAFETY: `stmt` is a live statement of a live connection.
        match unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) } {
            ffi::SQLITE_ROW => Ok(Some(ScanRow {
                stmt: self.stmt,
                _scan: PhantomData,
            })),
            ffi::SQLITE_DONE => Ok(None),
            rc => Err(ScanError(rc)),
        }
    }
}

impl Drop for Scan<'_> {
    fn drop(&mut self) {
        // SAFETY: `stmt` came from sqlite3_prepare_v2 and is finalized once.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// The current row. It borrows the scan mutably, so the scan cannot step
/// (which invalidates the row's values) while it exists.
pub(super) struct ScanRow<'s> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    _scan: PhantomData<&'s mut ()>,
}

impl ScanRow<'_> {
    /// Column `col` if it is stored as an INTEGER.
    pub(super) fn int(&mut self, col: i32) -> Option<i64> {
        // SAFETY: the statement is live and on a row (we hold the scan's
        // borrow); an out-of-range column reads as NULL.
        unsafe {
            let value = ffi::sqlite3_column_value(self.stmt.as_ptr(), col);
            (ffi::sqlite3_value_type(value) == ffi::SQLITE_INTEGER)
                .then(|| ffi::sqlite3_value_int64(value))
        }
    }

    /// Column `col`'s bytes if it is stored as TEXT (not checked for UTF-8).
    /// The slice lives until the next call on this row, which is what keeps
    /// it valid: reading a column may convert it in place.
    pub(super) fn text(&mut self, col: i32) -> Option<&[u8]> {
        // SAFETY: as in `int`. For a TEXT value, sqlite3_value_text returns
        // its UTF-8 bytes (converting them first if the database is UTF-16)
        // and sqlite3_value_bytes, called after it as SQLite's documentation
        // asks, their length; both stay valid until the row's values change,
        // which needs `&mut self` (a later call) or a step.
        unsafe {
            let value = ffi::sqlite3_column_value(self.stmt.as_ptr(), col);
            if ffi::sqlite3_value_type(value) != ffi::SQLITE_TEXT {
                return None;
            }
            let text = ffi::sqlite3_value_text(value);
            let len = usize::try_from(ffi::sqlite3_value_bytes(value)).ok()?;
            if text.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts(text, len))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_integers_and_text_and_nothing_else() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE t (a ANY, b ANY) STRICT;
             INSERT INTO t VALUES (-7, 'caf\u{e9}'), ('', 9), (x'41', 1.5), (NULL, 'x');",
        )
        .expect("fill");
        let mut scan = Scan::new(&conn, c"SELECT a, b FROM t ORDER BY rowid").expect("prepare");
        let mut rows = Vec::new();
        while let Some(mut row) = scan.next().expect("step") {
            let a = (row.int(0), row.text(0).map(<[u8]>::to_vec));
            let b = (row.int(1), row.text(1).map(<[u8]>::to_vec));
            assert_eq!(row.int(2), None, "out of range");
            rows.push((a, b));
        }
        let text = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(
            rows,
            [
                ((Some(-7), None), (None, text("caf\u{e9}"))),
                ((None, text("")), (Some(9), None)),
                ((None, None), (None, None)),
                ((None, None), (None, text("x"))),
            ]
        );
    }

    #[test]
    fn bad_sql_and_step_errors_are_reported() {
        let conn = Connection::open_in_memory().expect("open");
        assert!(Scan::new(&conn, c"SELECT * FROM missing").is_err());
        assert!(Scan::new(&conn, c"-- nothing").is_err());
        let mut scan = Scan::new(&conn, c"SELECT abs(-9223372036854775808)").expect("prepare");
        assert!(scan.next().is_err(), "integer overflow fails at step");
    }
}
