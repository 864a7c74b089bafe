//! The ring buffer's consumer and producer positions, read from read-only
//! mappings of its two metadata pages (beside aya's own mappings): a
//! `drained` barrier notes the producer position when it arrives and is
//! drained once the consumer position has passed it, i.e. once every
//! record submitted before the request has been taken, however many the
//! kernel submits after it (an agent flooding the ring buffer).
//!
//! It can also look at the records not taken yet without taking them
//! ([`RingPositions::none_before`]): an agent's barrier needs only that no
//! record of that agent which may be a refusal is among them, not that a
//! backlog of other records (another agent's, or its own allowed ones) has
//! been decoded and attributed.

use std::{
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicUsize, Ordering},
};

#[derive(Debug, thiserror::Error)]
#[error("map the ring buffer's {page} page read-only")]
pub struct RingPositionsError {
    page: &'static str,
    #[source]
    source: std::io::Error,
}

/// Read-only mappings of the consumer page (offset 0) and the producer
/// page (offset one page) of a `BPF_MAP_TYPE_RINGBUF` map, and of its data
/// pages (after the producer page, mapped twice in a row by the kernel so
/// a record that wraps reads as one slice).
pub struct RingPositions {
    consumer: *mut libc::c_void,
    producer: *mut libc::c_void,
    page: usize,
    /// The producer page and the data pages, `page + 2 * size` bytes.
    data: Option<(*mut libc::c_void, usize)>,
}

/// The ring buffer's record header (`BPF_RINGBUF_HDR_SZ`): the length with
/// the busy and discard bits, and the page offset.
const HDR: usize = 8;
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;

// SAFETY: the mappings are read only through atomics; nothing else is
// shared.
unsafe impl Send for RingPositions {}
// SAFETY: as above.
unsafe impl Sync for RingPositions {}

impl RingPositions {
    pub fn new(ring: &impl AsFd) -> Result<Self, RingPositionsError> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let fd = ring.as_fd().as_raw_fd();
        let map = |offset: usize, what: &'static str| {
            // SAFETY: a new shared read-only mapping of one page of the
            // map's fd; the kernel allows read-only mappings of every page
            // of a ring buffer.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                Err(RingPositionsError {
                    page: what,
                    source: std::io::Error::last_os_error(),
                })
            } else {
                Ok(p)
            }
        };
        let consumer = map(0, "consumer")?;
        let producer = match map(page, "producer") {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: the mapping made just above, used by nothing.
                unsafe { libc::munmap(consumer, page) };
                return Err(e);
            }
        };
        // The data pages: without them (or the map's size), barriers wait
        // for every record before them to be taken.
        let size = ring
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| aya::maps::MapData::from_fd(fd).ok())
            .and_then(|m| m.info().ok())
            .map(|i| i.max_entries() as usize)
            .filter(|s| s.is_power_of_two());
        let data = size.and_then(|size| {
            let len = page + 2 * size;
            // SAFETY: as above; the kernel allows this exact read-only
            // mapping (aya maps the same range).
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    page as libc::off_t,
                )
            };
            (p != libc::MAP_FAILED).then_some((p, len))
        });
        Ok(Self {
            consumer,
            producer,
            page,
            data,
        })
    }

    /// Whether none of the records from the consumer position up to
    /// `producer` (a value of [`Self::producer`]) is one `maybe` picks out
    /// (given each record's bytes), without taking them. `false` too when
    /// a record there is still being written, or without the data pages.
    pub fn none_before(&self, producer: usize, maybe: impl Fn(&[u8]) -> bool) -> bool {
        let Some((ptr, len)) = self.data else {
            return false;
        };
        let size = (len - self.page) / 2;
        // SAFETY: the mapping made in `new`, `len` bytes, alive while
        // `self` is; the kernel writes records while we read, which the
        // busy bit (read with acquire, as the consumer does) accounts for.
        let data = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().add(self.page), 2 * size) };
        let header = |off: usize| {
            // SAFETY: `off + 4 <= data.len()` (see `records_clear`), the
            // header is 8-byte aligned in a page-aligned mapping.
            unsafe {
                &*data
                    .as_ptr()
                    .add(off)
                    .cast::<std::sync::atomic::AtomicU32>()
            }
            .load(Ordering::Acquire)
        };
        records_clear(
            data,
            size,
            header,
            Self::load(self.consumer),
            producer,
            maybe,
        )
    }

    fn load(page: *mut libc::c_void) -> usize {
        // SAFETY: the position is the first word of its page-aligned,
        // mapped page, written by the kernel (producer) or aya (consumer)
        // with atomic stores.
        unsafe { &*page.cast::<AtomicUsize>() }.load(Ordering::Acquire)
    }

    /// Where the kernel's next record will start.
    pub fn producer(&self) -> usize {
        Self::load(self.producer)
    }

    /// Whether every record that started before `producer` (a value of
    /// [`Self::producer`]) has been taken. The positions only grow (they
    /// wrap as words), so the distance decides, not the order.
    pub fn consumed(&self, producer: usize) -> bool {
        (Self::load(self.consumer).wrapping_sub(producer) as isize) >= 0
    }
}

impl Drop for RingPositions {
    fn drop(&mut self) {
        // SAFETY: the two mappings made in `new`, used by nothing else.
        unsafe {
            libc::munmap(self.consumer, self.page);
            libc::munmap(self.producer, self.page);
            if let Some((p, len)) = self.data {
                libc::munmap(p, len);
            }
        }
    }
}

/// Walks the records of a ring buffer of `size` bytes (`data` holds its
/// pages twice in a row) from position `from` to `to`: false at the first
/// record `maybe` picks out or one still being written (busy); discarded
/// records are skipped. `header(off)` reads the length word at `off`.
fn records_clear(
    data: &[u8],
    size: usize,
    header: impl Fn(usize) -> u32,
    from: usize,
    to: usize,
    maybe: impl Fn(&[u8]) -> bool,
) -> bool {
    let mask = size - 1;
    let mut pos = from;
    while (to.wrapping_sub(pos) as isize) > 0 {
        let off = pos & mask;
        let word = header(off);
        if word & BUSY != 0 {
            return false;
        }
        let len = (word & !(BUSY | DISCARD)) as usize;
        let start = off + HDR;
        if start + len > data.len() || len > size {
            // Not a record we can read: do not claim anything.
            return false;
        }
        if word & DISCARD == 0 && maybe(&data[start..start + len]) {
            return false;
        }
        pos = pos.wrapping_add((len + HDR + 7) & !7);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring buffer of `size` bytes, doubled, with records written at
    /// their positions from `start`: (length word flags, payload byte).
    fn ring(size: usize, start: usize, records: &[(u32, u8, usize)]) -> (Vec<u8>, usize) {
        let mut data = vec![0u8; 2 * size];
        let mut pos = start;
        for &(flags, byte, len) in records {
            let off = pos & (size - 1);
            let word = flags | len as u32;
            for copy in [off, off + size] {
                if copy + HDR + len <= 2 * size {
                    data[copy..copy + 4].copy_from_slice(&word.to_ne_bytes());
                    data[copy + HDR..copy + HDR + len].fill(byte);
                }
            }
            pos = pos.wrapping_add((len + HDR + 7) & !7);
        }
        (data, pos)
    }

    fn clear(data: &[u8], size: usize, from: usize, to: usize, bad: u8) -> bool {
        let header = |off: usize| u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
        records_clear(data, size, header, from, to, |r| r[0] == bad)
    }

    #[test]
    fn only_the_records_up_to_the_position_are_looked_at() {
        let size = 256;
        let (data, end) = ring(size, 0, &[(0, 1, 20), (0, 1, 13), (0, 7, 30)]);
        assert!(clear(&data, size, 0, end, 9), "no record is a 9");
        assert!(!clear(&data, size, 0, end, 7), "the third is a 7");
        // Up to the third record's start only: it is not looked at.
        assert!(clear(&data, size, 0, 28 + 24, 7));
        // Nothing to look at.
        assert!(clear(&data, size, end, end, 7));
    }

    #[test]
    fn busy_records_stop_the_walk_and_discarded_ones_are_skipped() {
        let size = 256;
        let (data, end) = ring(size, 0, &[(DISCARD, 7, 20), (0, 1, 8)]);
        assert!(clear(&data, size, 0, end, 7), "the 7 was discarded");
        let (data, end) = ring(size, 0, &[(0, 1, 20), (BUSY, 1, 8)]);
        assert!(
            !clear(&data, size, 0, end, 7),
            "a record still being written"
        );
    }

    #[test]
    fn a_record_that_wraps_is_read_whole_and_positions_wrap() {
        let size = 64;
        // Positions near the word's end: the walk wraps with them.
        let start = usize::MAX - 47;
        let (data, _) = ring(size, start, &[(0, 1, 16), (0, 7, 40)]);
        let end = start.wrapping_add(24).wrapping_add(48);
        assert!(!clear(&data, size, start, end, 7));
        assert!(clear(&data, size, start, start.wrapping_add(24), 7));
    }
}
