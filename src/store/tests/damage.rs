//! The log against damage done to its files by hand: torn tails, corrupt records, headers
//! of another version or damaged, segments cut short or missing. Whatever is readable comes
//! back, and nothing after damaged bytes is ever appended to.

use super::*;

#[test]
fn torn_tail_is_cut_and_appends_continue_cleanly() {
    for damage in ["zero second half", "flip a body byte", "huge length"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let written = fill(&mut log, 1000);
        drop(log);
        let (last, _, last_body) = written.last().unwrap().clone();
        let at = u64::from(last.offset);
        match damage {
            "zero second half" => {
                let len = RECORD_HEADER + last_body.len();
                patch(
                    dir.path(),
                    last.segment,
                    at + len as u64 / 2,
                    &vec![0; len - len / 2],
                );
            }
            "flip a body byte" => patch(
                dir.path(),
                last.segment,
                at + RECORD_HEADER as u64 + 3,
                b"\xFF",
            ),
            _ => patch(dir.path(), last.segment, at, &u32::MAX.to_le_bytes()),
        }

        let (mut log, report, seen) = open(dir.path());
        assert_eq!(seen, written[..999], "{damage}");
        assert_eq!(report.torn_tail, Some(last), "{damage}");
        assert!(
            report.cut_bytes > 0 && report.damaged.is_empty() && report.sealed.is_empty(),
            "{damage}: {report:?}"
        );
        assert_eq!(
            log.head(),
            last,
            "{damage}: appends start where the torn record was"
        );
        let again = log.append(42, b"after the cut").unwrap();
        assert_eq!(again, last);
        drop(log);

        let (_, report, seen) = open(dir.path());
        assert!(report.is_clean(), "{damage}: {report:?}");
        assert_eq!(seen.len(), 1000);
        assert_eq!(seen[999], (last, 42, b"after the cut".to_vec()));
    }
}

#[test]
fn corrupt_record_in_an_older_segment_loses_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 3000);
    drop(log);
    let in_seg1: Vec<&(Position, u8, Vec<u8>)> =
        written.iter().filter(|(p, _, _)| p.segment == 1).collect();
    let victim = in_seg1[in_seg1.len() / 2].0;
    let next = in_seg1[in_seg1.len() / 2 + 1].0;
    patch(
        dir.path(),
        1,
        u64::from(victim.offset) + RECORD_HEADER as u64,
        b"\x00garbage",
    );

    let expected: Replayed = written
        .iter()
        .filter(|(p, _, _)| *p != victim)
        .cloned()
        .collect();
    let (mut log, report, seen) = open(dir.path());
    assert_eq!(seen.len(), expected.len());
    assert_eq!(seen, expected);
    let damage = Damaged {
        at: victim,
        bytes: u64::from(next.offset - victim.offset),
        reason: "CRC mismatch",
        valid_after: true,
    };
    assert_eq!(report.damaged, vec![damage]);
    assert_eq!(report.torn_tail, None);
    assert!(matches!(log.read(victim), Err(StoreError::Corrupt { .. })));
    assert_eq!(
        log.read(next).unwrap().0,
        written.iter().find(|r| r.0 == next).unwrap().1
    );
    // Appends go on in the head segment, never after the damage.
    let pos = log.append(1, b"new").unwrap();
    assert!(pos.segment > 1);
    drop(log);

    // The damage is left as it is, and reported again.
    let (_, report, seen) = open(dir.path());
    assert_eq!(report.damaged, vec![damage]);
    assert_eq!(seen[..expected.len()], expected[..]);
    assert_eq!(seen[expected.len()..], [(pos, 1, b"new".to_vec())]);
}

/// Rewrites segment `id`'s header with another format version, its CRC valid.
fn write_header_of_version(dir: &Path, id: u64, version: u32) {
    use super::format::SegmentHeader;
    let mut header = SegmentHeader { id, size: SMALL }.encode();
    header[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..32]);
    header[32..36].copy_from_slice(&crc.to_le_bytes());
    patch(dir, id, 0, &header);
}

#[test]
fn segment_of_another_format_version_is_skipped_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 3000);
    let last_segment = log.head().segment;
    drop(log);
    write_header_of_version(dir.path(), 1, 2);

    let (mut log, report, seen) = open(dir.path());
    let expected: Replayed = written
        .iter()
        .filter(|(p, _, _)| p.segment != 1)
        .cloned()
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(report.bad_segments, vec![(1, "unknown format version")]);
    assert_eq!(
        log.segments().collect::<Vec<_>>(),
        (0..=last_segment).collect::<Vec<_>>()
    );
    let in_seg1 = written.iter().find(|(p, _, _)| p.segment == 1).unwrap().0;
    assert!(matches!(log.read(in_seg1), Err(StoreError::NoRecord(_))));
    assert_eq!(log.remove_segments_before(2).unwrap(), 2 * SMALL);
    drop(log);
    assert!(!dir.path().join(file_name(1)).exists());
}

#[test]
fn a_damaged_header_seals_its_segment_but_its_records_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 3000);
    drop(log);
    patch(dir.path(), 1, 0, b"NOTALOG!");

    let (log, report, seen) = open(dir.path());
    assert_eq!(seen, written);
    assert_eq!(report.sealed, vec![(1, "bad magic")]);
    assert!(report.bad_segments.is_empty() && report.damaged.is_empty());
    for (pos, kind, body) in &written {
        assert_eq!(log.read(*pos).unwrap(), (*kind, &body[..]));
    }
}

#[test]
fn newest_segment_with_a_bad_header_is_read_but_never_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 1000);
    let newest = log.head().segment;
    drop(log);
    // Claim another size than the file has: the header's own CRC is then wrong too.
    patch(dir.path(), newest, 24, &(SMALL * 2).to_le_bytes());

    let (mut log, report, seen) = open(dir.path());
    assert_eq!(report.sealed, vec![(newest, "header CRC mismatch")]);
    assert_eq!(seen, written);
    assert_eq!(
        log.head(),
        Position {
            segment: newest + 1,
            offset: SEGMENT_HEADER as u32
        }
    );
    log.append(3, b"fresh").unwrap();
    drop(log);
    let (_, _, seen) = open(dir.path());
    assert_eq!(seen[..written.len()], written[..]);
    assert_eq!(
        seen.last().unwrap(),
        &(
            Position {
                segment: newest + 1,
                offset: 64
            },
            3,
            b"fresh".to_vec()
        )
    );
}

#[test]
fn a_write_cut_short_before_its_header_is_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 10);
    let head = log.head();
    drop(log);
    // A body that was being copied when the process died: its header was never written.
    patch(
        dir.path(),
        head.segment,
        u64::from(head.offset) + RECORD_HEADER as u64,
        b"half a body",
    );

    let (mut log, report, seen) = open(dir.path());
    assert_eq!(seen, written);
    assert_eq!(report.torn_tail, Some(head));
    assert_eq!(
        report.cut_bytes,
        (RECORD_HEADER + b"half a body".len()) as u64
    );
    let pos = log.append_with(1, 4, |buf| {
        assert_eq!(buf, [0; 4], "append_with hands out zeroed bytes");
        buf.copy_from_slice(b"next");
    });
    assert_eq!(pos.unwrap(), head);
    drop(log);
    let (_, report, seen) = open(dir.path());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(seen.len(), 11);
}

#[test]
fn corruption_in_the_newest_segment_with_valid_records_after_is_kept_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 100);
    let newest = log.head().segment;
    drop(log);
    let victim = written
        .iter()
        .find(|(p, _, _)| p.segment == newest)
        .unwrap()
        .0;
    patch(
        dir.path(),
        newest,
        u64::from(victim.offset) + RECORD_HEADER as u64,
        b"\xFF",
    );
    let before = std::fs::read(dir.path().join(file_name(newest))).unwrap();

    let (mut log, report, seen) = open(dir.path());
    let expected: Replayed = written.iter().filter(|r| r.0 != victim).cloned().collect();
    assert_eq!(seen, expected);
    assert_eq!(
        report.torn_tail, None,
        "valid records follow: not a torn tail"
    );
    assert!(report.damaged[0].valid_after, "{report:?}");
    assert_eq!(
        report.sealed,
        vec![(newest, "damaged records followed by valid ones")]
    );
    // A fresh head after it; the damaged file is never written.
    assert_eq!(log.head().segment, newest + 1);
    let pos = log.append(1, b"new").unwrap();
    drop(log);
    assert_eq!(
        std::fs::read(dir.path().join(file_name(newest))).unwrap(),
        before
    );
    let (_, _, seen) = open(dir.path());
    assert_eq!(seen[..expected.len()], expected[..]);
    assert_eq!(seen[expected.len()..], [(pos, 1, b"new".to_vec())]);
}

#[test]
fn a_segment_truncated_mid_record_keeps_the_records_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 3000);
    drop(log);
    // Cut segment 0, the oldest, in the middle of one of its records.
    let in_seg0: Vec<_> = written.iter().filter(|r| r.0.segment == 0).collect();
    let cut = in_seg0[in_seg0.len() / 2].0;
    let file = OpenOptions::new()
        .write(true)
        .open(dir.path().join(file_name(0)))
        .unwrap();
    file.set_len(u64::from(cut.offset) + 11).unwrap();

    let (log, report, seen) = open(dir.path());
    let expected: Replayed = written
        .iter()
        .filter(|r| r.0.segment != 0 || r.0 < cut)
        .cloned()
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        report.sealed,
        vec![(0, "file shorter than its header says (truncated)")]
    );
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].at, cut);
    let first = written[0].0;
    assert_eq!(log.read(first).unwrap().1, &written[0].2[..]);
}

#[test]
fn a_deleted_middle_segment_is_reported_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 3000);
    drop(log);
    std::fs::remove_file(dir.path().join(file_name(2))).unwrap();
    let (_, report, seen) = open(dir.path());
    assert_eq!(report.missing, vec![(2, 2)]);
    let expected: Replayed = written
        .iter()
        .filter(|r| r.0.segment != 2)
        .cloned()
        .collect();
    assert_eq!(seen, expected);
}
