//! The journal in memory: the broker's tests and the session fuzz model run against it,
//! and replay what it holds as a crash that kept those records.
//!
//! Invariant: positions grow in append order, `segment_len` records a segment, as the
//! log's do; clones share one set of records.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;

use super::Journal;
use crate::store::{Position, StoreError};

/// A journal in memory, for tests of the broker without a disk: segments of `segment_len`
/// records each. Clones share the same records, so a test can keep a handle and replay
/// what the broker wrote.
#[derive(Debug, Clone)]
pub struct MemJournal {
    pub records: Rc<RefCell<BTreeMap<Position, (u8, Bytes)>>>,
    pub segment_len: u32,
    head: Rc<Cell<Position>>,
    /// Tests of a full disk: `Some(n)` makes the journal report `n` bytes of room for
    /// messages and refuse (`NoRoom`) every append once `n` body bytes more were taken.
    pub full_after: Rc<Cell<Option<usize>>>,
}

impl MemJournal {
    pub fn new(segment_len: u32) -> MemJournal {
        MemJournal {
            records: Default::default(),
            segment_len: segment_len.max(1),
            head: Rc::new(Cell::new(Position {
                segment: 0,
                offset: 0,
            })),
            full_after: Default::default(),
        }
    }

    /// A journal of its own holding `records` at their positions, appending after the
    /// last (a crash that kept exactly these records).
    pub fn with_records(segment_len: u32, records: BTreeMap<Position, (u8, Bytes)>) -> MemJournal {
        let journal = MemJournal::new(segment_len);
        if let Some(last) = records.keys().next_back() {
            journal.head.set(journal.after(*last));
        }
        *journal.records.borrow_mut() = records;
        journal
    }

    /// Where the record after the one at `pos` goes: `segment_len` records a segment.
    fn after(&self, pos: Position) -> Position {
        if pos.offset + 1 >= self.segment_len {
            Position {
                segment: pos.segment + 1,
                offset: 0,
            }
        } else {
            Position {
                segment: pos.segment,
                offset: pos.offset + 1,
            }
        }
    }

    /// Replays every record, in order, as the log's `open` does.
    pub fn replay(&self, mut visit: impl FnMut(Position, u8, &[u8])) {
        for (pos, (kind, body)) in self.records.borrow().iter() {
            visit(*pos, *kind, body);
        }
    }
}

impl Journal for MemJournal {
    fn append(&mut self, kind: u8, body: &[u8]) -> Result<Position, StoreError> {
        if let Some(left) = self.full_after.get() {
            let left = left.checked_sub(body.len()).ok_or(StoreError::NoRoom)?;
            self.full_after.set(Some(left));
        }
        let pos = self.head.get();
        self.records
            .borrow_mut()
            .insert(pos, (kind, Bytes::copy_from_slice(body)));
        self.head.set(self.after(pos));
        Ok(pos)
    }
    fn read(&self, pos: Position) -> Result<(u8, Bytes), StoreError> {
        self.records
            .borrow()
            .get(&pos)
            .cloned()
            .ok_or(StoreError::NoRecord(pos))
    }
    fn head(&self) -> Position {
        self.head.get()
    }
    fn segment_count(&self) -> usize {
        let head = self.head.get();
        let first = self
            .records
            .borrow()
            .keys()
            .next()
            .map_or(head.segment, |p| p.segment);
        (head.segment - first + 1) as usize
    }
    fn remove_segments_before(&mut self, segment: u64) -> Result<u64, StoreError> {
        let mut records = self.records.borrow_mut();
        let keep = records.split_off(&Position { segment, offset: 0 });
        let freed = records.values().map(|(_, b)| b.len() as u64).sum();
        *records = keep;
        Ok(freed)
    }
    fn disk_bytes(&self) -> u64 {
        self.records
            .borrow()
            .values()
            .map(|(_, b)| b.len() as u64 + 12)
            .sum()
    }
    fn room_for_messages(&self) -> Option<usize> {
        self.full_after.get()
    }
}
