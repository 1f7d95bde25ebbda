//! The bytes of a segment: its header, the record frame and the scan that reads them back.
//! Pure functions over byte slices; the layout itself is documented in the module above.

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"BERTHLOG";
/// Bumped whenever the layout changes; a segment of another version is unreadable.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the segment header; the first record starts right after it.
pub const SEGMENT_HEADER: usize = 64;
/// Length of a record's header (frame length, CRC, kind, reserved).
pub const RECORD_HEADER: usize = 16;
/// Every record starts at a multiple of this offset.
pub const ALIGN: usize = 8;

/// Rounds `n` up to the next record boundary.
pub const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Bytes a record with a body of `len` bytes takes in a segment, padding included.
pub const fn framed_len(len: usize) -> usize {
    align(RECORD_HEADER + len)
}

/// The fixed header at offset 0 of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub id: u64,
    pub size: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER] {
        let mut out = [0u8; SEGMENT_HEADER];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(ALIGN as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.id.to_le_bytes());
        out[24..32].copy_from_slice(&self.size.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a header, or says why it cannot be trusted.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
        if bytes.len() < SEGMENT_HEADER {
            return Err("shorter than a segment header");
        }
        if bytes[0..8] != MAGIC {
            return Err("bad magic");
        }
        if u32_at(bytes, 32) != crc32c::crc32c(&bytes[0..32]) {
            return Err("header CRC mismatch");
        }
        if u32_at(bytes, 8) != FORMAT_VERSION {
            return Err("unknown format version");
        }
        if u32_at(bytes, 12) != ALIGN as u32 {
            return Err("unknown record alignment");
        }
        if bytes[36..SEGMENT_HEADER].iter().any(|&b| b != 0) {
            return Err("reserved header bytes are not zero");
        }
        Ok(SegmentHeader {
            id: u64_at(bytes, 16),
            size: u64_at(bytes, 24),
        })
    }
}

/// Writes the header of a record whose body already sits at `frame[RECORD_HEADER..]`.
/// `frame` is exactly header plus body (no padding); the padding after it must already be zero.
pub fn seal_record(frame: &mut [u8], kind: u8) {
    let frame_len = frame.len() as u32;
    frame[0..4].copy_from_slice(&frame_len.to_le_bytes());
    frame[8] = kind;
    frame[9..RECORD_HEADER].fill(0);
    let crc = record_crc(frame);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC-32C over the frame length, the kind, the reserved bytes and the body (every byte of the
/// frame except the CRC field itself).
fn record_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..])
}

/// What was found at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<'a> {
    /// An intact record; the next one starts at `next`.
    Record {
        kind: u8,
        body: &'a [u8],
        next: usize,
    },
    /// Zeroed space, or no room left for a record header: the data ends here.
    End,
    /// Bytes that are not a record; the reason says which check failed.
    Damaged(&'static str),
}

/// Reads the record at `offset` of a segment's bytes `data`, checking its length and CRC.
pub fn read_slot(data: &[u8], offset: usize) -> Slot<'_> {
    if offset + RECORD_HEADER > data.len() {
        return Slot::End;
    }
    let header = &data[offset..offset + RECORD_HEADER];
    let frame_len = u32_at(header, 0) as usize;
    if frame_len == 0 {
        return if header.iter().all(|&b| b == 0) {
            Slot::End
        } else {
            Slot::Damaged("zero length with a non-zero header")
        };
    }
    if frame_len < RECORD_HEADER || frame_len > data.len() - offset {
        return Slot::Damaged("length out of bounds");
    }
    let frame = &data[offset..offset + frame_len];
    if u32_at(frame, 4) != record_crc(frame) {
        return Slot::Damaged("CRC mismatch");
    }
    Slot::Record {
        kind: frame[8],
        body: &frame[RECORD_HEADER..],
        next: offset + align(frame_len),
    }
}

/// Bytes of a segment that are not records, found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Where the scan stopped reading records (a record boundary).
    pub at: usize,
    /// Where it read records again: the next offset, at a multiple of 8, holding a frame whose
    /// length and CRC check; for a tail (nothing valid after it), one past its last non-zero
    /// byte.
    pub until: usize,
    /// The check that failed at `at`.
    pub reason: &'static str,
}

/// What a segment's bytes hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Records passed to `visit`.
    pub records: u64,
    /// One past the last record read (the segment header's end when there is none): where
    /// appends would continue.
    pub end: usize,
    /// Damaged ranges followed by valid records, in order.
    pub damaged: Vec<Damage>,
    /// Non-zero bytes after the last valid record, with nothing valid after them: a write
    /// cut short, or damage to the last records.
    pub tail: Option<Damage>,
}

impl Scan {
    /// True when the segment's bytes are intact records followed by zeroes.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.tail.is_none()
    }
}

/// Reads every record of a segment's bytes in order, calling `visit(offset, kind, body)`.
///
/// Where the records stop (a record that fails its checks, or zeroes followed by non-zero
/// bytes), the scan resynchronises: it looks for the next offset, at a multiple of 8, holding
/// a frame whose length stays in the segment and whose CRC matches, and reads on from there.
/// A random 8-byte-aligned candidate passes the CRC with a probability of about 2^-32, so a
/// resynchronisation on garbage is possible but rare; a damaged range with nothing valid
/// after it is the segment's tail.
pub fn scan(data: &[u8], mut visit: impl FnMut(usize, u8, &[u8])) -> Scan {
    let mut offset = SEGMENT_HEADER;
    let mut out = Scan::default();
    loop {
        let reason = match read_slot(data, offset) {
            Slot::Record { kind, body, next } => {
                visit(offset, kind, body);
                out.records += 1;
                out.end = next;
                offset = next;
                continue;
            }
            Slot::End => None,
            Slot::Damaged(reason) => Some(reason),
        };
        out.end = out.end.max(SEGMENT_HEADER).min(data.len());
        let from = offset.min(data.len());
        let garbage_end = last_nonzero_end(data, from);
        if reason.is_none() && garbage_end == from {
            return out; // Zeroes to the end: the clean end of data.
        }
        match resync(data, from + ALIGN, garbage_end) {
            Some(next) => {
                out.damaged.push(Damage {
                    at: from,
                    until: next,
                    reason: reason.unwrap_or("zeroed bytes before valid records"),
                });
                offset = next;
            }
            None => {
                out.tail = Some(Damage {
                    at: from,
                    until: garbage_end.max(from),
                    reason: reason.unwrap_or("non-zero bytes after the end of data"),
                });
                return out;
            }
        }
    }
}

/// The first offset in `from..limit`, at a multiple of 8, that holds a valid record.
fn resync(data: &[u8], from: usize, limit: usize) -> Option<usize> {
    (from..limit)
        .step_by(ALIGN)
        .find(|&at| matches!(read_slot(data, at), Slot::Record { .. }))
}

/// One past the last non-zero byte of `data` at or after `from` (or `from` when all are zero).
/// Checks whole pages first: the usual answer is a long run of zeroes.
pub fn last_nonzero_end(data: &[u8], from: usize) -> usize {
    // Compared with a zero page, which is a memcmp: the check runs over every segment's
    // zeroed remainder at each open.
    static ZERO_PAGE: [u8; 4096] = [0; 4096];
    let mut end = data.len();
    for chunk in data[from..].rchunks(4096) {
        if chunk != &ZERO_PAGE[..chunk.len()] {
            if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
                return end - chunk.len() + i + 1;
            }
        }
        end -= chunk.len();
    }
    from
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(records: &[(u8, &[u8])], size: usize) -> Vec<u8> {
        let mut data = vec![0u8; size];
        data[..SEGMENT_HEADER].copy_from_slice(
            &SegmentHeader {
                id: 7,
                size: size as u64,
            }
            .encode(),
        );
        let mut at = SEGMENT_HEADER;
        for (kind, body) in records {
            let end = at + RECORD_HEADER + body.len();
            data[at + RECORD_HEADER..end].copy_from_slice(body);
            seal_record(&mut data[at..end], *kind);
            at = align(end);
        }
        data
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            id: 42,
            size: 1 << 20,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for at in [0, 9, 17, 25, 33, 40] {
            let mut bad = bytes;
            bad[at] ^= 0x01;
            assert!(
                SegmentHeader::decode(&bad).is_err(),
                "flip at {at} accepted"
            );
        }
        assert!(SegmentHeader::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn records_are_aligned_and_read_back() {
        let data = segment_with(&[(1, b"hello"), (0, b""), (255, &[9u8; 100])], 4096);
        let mut seen = Vec::new();
        let scanned = scan(&data, |off, kind, body| {
            seen.push((off, kind, body.to_vec()))
        });
        assert_eq!(scanned.records, 3);
        assert_eq!(seen[0], (64, 1, b"hello".to_vec()));
        assert_eq!(seen[1], (64 + framed_len(5), 0, vec![]));
        assert_eq!(seen[2].0, 64 + framed_len(5) + framed_len(0));
        assert_eq!(scanned.end, seen[2].0 + framed_len(100));
        assert!(scanned.is_clean());
        assert!(seen.iter().all(|(off, _, _)| off % ALIGN == 0));
    }

    #[test]
    fn empty_body_kind_zero_record_is_not_end_of_data() {
        let data = segment_with(&[(0, b"")], 4096);
        assert_eq!(scan(&data, |_, _, _| {}).records, 1);
    }

    #[test]
    fn any_flipped_byte_of_a_record_is_damage() {
        let clean = segment_with(&[(3, b"abcdefgh-body")], 4096);
        for at in SEGMENT_HEADER..SEGMENT_HEADER + RECORD_HEADER + 13 {
            let mut data = clean.clone();
            data[at] ^= 0x40;
            assert!(
                matches!(read_slot(&data, SEGMENT_HEADER), Slot::Damaged(_)),
                "flip at {at} not detected"
            );
        }
    }

    #[test]
    fn length_past_the_segment_end_is_damage() {
        let mut data = segment_with(&[], 4096);
        data[SEGMENT_HEADER..SEGMENT_HEADER + 4].copy_from_slice(&10_000u32.to_le_bytes());
        assert_eq!(
            read_slot(&data, SEGMENT_HEADER),
            Slot::Damaged("length out of bounds")
        );
    }

    #[test]
    fn no_room_for_a_header_is_end_of_data() {
        let data = segment_with(&[], 4096);
        assert_eq!(read_slot(&data, 4096 - 8), Slot::End);
    }

    fn offsets(data: &[u8]) -> (Vec<usize>, Scan) {
        let mut seen = Vec::new();
        let scanned = scan(data, |off, _, _| seen.push(off));
        (seen, scanned)
    }

    #[test]
    fn the_scan_resynchronises_after_a_damaged_record() {
        let records: Vec<(u8, &[u8])> = vec![(1, b"one"), (2, b"two-two"), (3, b"three"), (4, b"")];
        let clean = segment_with(&records, 4096);
        let (all, _) = offsets(&clean);
        // A flipped body byte, a huge length, a zeroed record: the others are all read.
        for damage in 0..3 {
            let mut data = clean.clone();
            match damage {
                0 => data[all[1] + RECORD_HEADER + 2] ^= 0x10,
                1 => data[all[1]..all[1] + 4].copy_from_slice(&u32::MAX.to_le_bytes()),
                _ => data[all[1]..all[2]].fill(0),
            }
            let (seen, scanned) = offsets(&data);
            assert_eq!(seen, [all[0], all[2], all[3]], "damage {damage}");
            assert_eq!(scanned.damaged.len(), 1, "damage {damage}");
            assert_eq!(
                (scanned.damaged[0].at, scanned.damaged[0].until),
                (all[1], all[2])
            );
            assert_eq!(scanned.tail, None);
            assert_eq!(scanned.end, all[3] + framed_len(0));
        }
    }

    #[test]
    fn damage_with_nothing_valid_after_it_is_the_tail() {
        let clean = segment_with(&[(1, b"one"), (2, b"two-two")], 4096);
        let (all, _) = offsets(&clean);
        let mut data = clean.clone();
        data[all[1] + RECORD_HEADER] ^= 0x01;
        let (seen, scanned) = offsets(&data);
        assert_eq!(seen, [all[0]]);
        assert!(scanned.damaged.is_empty());
        let tail = scanned.tail.unwrap();
        assert_eq!((tail.at, tail.reason), (all[1], "CRC mismatch"));
        assert_eq!(tail.until, all[1] + RECORD_HEADER + 7);
        assert_eq!(scanned.end, all[1]);
    }

    #[test]
    fn a_truncated_segment_reads_every_record_before_the_cut() {
        let clean = segment_with(&[(1, b"one"), (2, b"two-two"), (3, b"three")], 4096);
        let (all, _) = offsets(&clean);
        for cut in all[2] + 1..all[2] + RECORD_HEADER + 5 {
            let (seen, scanned) = offsets(&clean[..cut]);
            assert_eq!(seen, all[..2], "cut at {cut}");
            assert_eq!(scanned.tail.map(|t| t.at), Some(all[2]), "cut at {cut}");
        }
        // Cut right after the last record's body (its padding gone): all three are read.
        let (seen, scanned) = offsets(&clean[..all[2] + RECORD_HEADER + 5]);
        assert_eq!(seen, all);
        assert!(scanned.is_clean());
    }

    #[test]
    fn last_nonzero_end_finds_garbage_after_a_point() {
        let mut data = vec![0u8; 10_000];
        assert_eq!(last_nonzero_end(&data, 10), 10);
        data[50] = 1;
        assert_eq!(last_nonzero_end(&data, 10), 51);
        assert_eq!(last_nonzero_end(&data, 51), 51);
        data[9_000] = 1;
        assert_eq!(last_nonzero_end(&data, 10), 9_001);
        data[9_999] = 1;
        assert_eq!(last_nonzero_end(&data, 10), 10_000);
    }
}
