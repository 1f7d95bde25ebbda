//! The log against a model: a `Vec` of the records that should be live. Random appends of
//! every size up to a whole segment, reopens, reclaims, reads and durability waits, on 4 KiB
//! segments so that records roll constantly; after every reopen the replay must be exactly
//! the model, in order, with a clean report.

use futures_lite::future::block_on;
use proptest::prelude::*;

use super::segment;
use super::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        kind: u8,
        len: usize,
    },
    Reopen,
    /// Reclaim before the n-th live segment (modulo how many there are).
    RemoveBefore(usize),
    Read(usize),
    Durable,
}

fn op(max_body: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (any::<u8>(), 0..200usize).prop_map(|(kind, len)| Op::Append { kind, len }),
        2 => (any::<u8>(), 0..=max_body).prop_map(|(kind, len)| Op::Append { kind, len }),
        2 => Just(Op::Reopen),
        1 => any::<usize>().prop_map(Op::RemoveBefore),
        3 => any::<usize>().prop_map(Op::Read),
        1 => Just(Op::Durable),
    ]
}

type Model = Vec<(Position, u8, Vec<u8>)>;

fn reopen(config: &LogConfig, model: &Model) -> Result<Log, TestCaseError> {
    let mut seen = Vec::new();
    let (log, report) = Log::open(config.clone(), |p, k, b| seen.push((p, k, b.to_vec()))).unwrap();
    prop_assert!(report.is_clean(), "{:?}", report);
    prop_assert_eq!(&seen, model);
    Ok(log)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_vec_model(
        always in any::<bool>(),
        ops in proptest::collection::vec(op(4096 - 64 - 16), 1..120),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let fsync = if always { FsyncPolicy::Always } else { FsyncPolicy::Never };
        let config = LogConfig { fsync, segment_size: 4096, ..LogConfig::new(dir.path()) };
        let mut model: Model = Vec::new();
        let mut log = reopen(&config, &model)?;
        let mut stamp = 0u8;
        for op in ops {
            match op {
                Op::Append { kind, len } => {
                    stamp = stamp.wrapping_add(1);
                    let body: Vec<u8> = (0..len).map(|i| stamp ^ i as u8).collect();
                    let head = log.head();
                    let pos = log.append(kind, &body).unwrap();
                    prop_assert!(pos == head || (pos.segment > head.segment && pos.offset == 64));
                    prop_assert!(model.last().is_none_or(|(last, _, _)| *last < pos));
                    model.push((pos, kind, body));
                }
                Op::Reopen => {
                    drop(log);
                    log = reopen(&config, &model)?;
                }
                Op::RemoveBefore(n) => {
                    let live: Vec<u64> = log.segments().collect();
                    let before = live[n % live.len()];
                    let freed = log.remove_segments_before(before).unwrap();
                    prop_assert_eq!(freed, (n % live.len()) as u64 * 4096);
                    model.retain(|(p, _, _)| p.segment >= before);
                }
                Op::Read(n) if !model.is_empty() => {
                    let (pos, kind, body) = &model[n % model.len()];
                    prop_assert_eq!(log.read(*pos).unwrap(), (*kind, &body[..]));
                }
                Op::Read(_) => {}
                Op::Durable => block_on(log.durable()).unwrap(),
            }
        }
        drop(log);
        reopen(&config, &model)?;
    }
}

/// Damage done to the files of a closed log; segments are picked by their index among the
/// segment files present (modulo their count).
#[derive(Clone, Debug)]
enum Damage {
    /// Truncate the file to a fraction (per mille) of its length.
    Cut {
        seg: usize,
        per_mille: u16,
    },
    /// XOR one byte with a non-zero mask.
    Flip {
        seg: usize,
        at: u16,
        mask: u8,
    },
    /// Zero a range.
    Zero {
        seg: usize,
        at: u16,
        len: u16,
    },
    Delete {
        seg: usize,
    },
    /// Swap the names of two segment files.
    Swap {
        a: usize,
        b: usize,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0..1000u16).prop_map(|(seg, per_mille)| Damage::Cut { seg, per_mille }),
        (any::<usize>(), 0..4096u16, 1..=255u8).prop_map(|(seg, at, mask)| Damage::Flip {
            seg,
            at,
            mask
        }),
        (any::<usize>(), 0..4096u16, 1..600u16).prop_map(|(seg, at, len)| Damage::Zero {
            seg,
            at,
            len
        }),
        any::<usize>().prop_map(|seg| Damage::Delete { seg }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Damage::Swap { a, b }),
    ]
}

/// The segment files of a log, by what they hold: file id -> (the id they were written as,
/// their length now, the byte ranges damage touched).
type Files = std::collections::BTreeMap<u64, (u64, usize, Vec<std::ops::Range<usize>>)>;

fn segment_files(dir: &std::path::Path) -> Files {
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            files.insert(
                id,
                (id, entry.metadata().unwrap().len() as usize, Vec::new()),
            );
        }
    }
    files
}

fn do_damage(dir: &std::path::Path, files: &mut Files, damage: &Damage) {
    use std::os::unix::fs::FileExt;
    let ids: Vec<u64> = files.keys().copied().collect();
    if ids.is_empty() {
        return;
    }
    let pick = |n: usize| ids[n % ids.len()];
    let path = |id: u64| dir.join(segment::file_name(id));
    let open = |id: u64| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path(id))
            .unwrap()
    };
    match *damage {
        Damage::Cut { seg, per_mille } => {
            let id = pick(seg);
            let entry = files.get_mut(&id).unwrap();
            let to = entry.1 * per_mille as usize / 1000;
            open(id).set_len(to as u64).unwrap();
            entry.1 = to;
        }
        Damage::Flip { seg, at, mask } => {
            let id = pick(seg);
            let entry = files.get_mut(&id).unwrap();
            let at = at as usize;
            if at < entry.1 {
                let file = open(id);
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, at as u64).unwrap();
                file.write_all_at(&[byte[0] ^ mask], at as u64).unwrap();
                entry.2.push(at..at + 1);
            }
        }
        Damage::Zero { seg, at, len } => {
            let id = pick(seg);
            let entry = files.get_mut(&id).unwrap();
            let (at, end) = (at as usize, (at as usize + len as usize).min(entry.1));
            if at < end {
                open(id)
                    .write_all_at(&vec![0; end - at], at as u64)
                    .unwrap();
                entry.2.push(at..end);
            }
        }
        Damage::Delete { seg } => {
            let id = pick(seg);
            std::fs::remove_file(path(id)).unwrap();
            files.remove(&id);
        }
        Damage::Swap { a, b } => {
            let (a, b) = (pick(a), pick(b));
            if a != b {
                let tmp = dir.join("swap");
                std::fs::rename(path(a), &tmp).unwrap();
                std::fs::rename(path(b), path(a)).unwrap();
                std::fs::rename(&tmp, path(b)).unwrap();
                let (ea, eb) = (files.remove(&a).unwrap(), files.remove(&b).unwrap());
                files.insert(a, eb);
                files.insert(b, ea);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Damage to a closed log (cut, flip, zero, delete, reorder), then open: the replay holds
    /// every record whose bytes were not touched (at the position of the file now holding it),
    /// nothing that was never appended, in position order; the damaged bytes are left as they
    /// are except for a torn tail; appends after it come back, after everything replayed.
    #[test]
    fn recovery_keeps_every_untouched_record(
        lens in proptest::collection::vec((any::<u8>(), 0..300usize), 1..150),
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_size: 4096,
            fsync: FsyncPolicy::Never,
            ..LogConfig::new(dir.path())
        };
        let mut model: Model = Vec::new();
        let (mut log, _) = Log::open(config.clone(), |_, _, _| {}).unwrap();
        for (i, (kind, len)) in lens.into_iter().enumerate() {
            let body: Vec<u8> = (0..len).map(|j| (i as u8).wrapping_mul(31) ^ j as u8).collect();
            model.push((log.append(kind, &body).unwrap(), kind, body));
        }
        drop(log);
        let mut files = segment_files(dir.path());
        for d in &damages {
            do_damage(dir.path(), &mut files, d);
        }
        // Where each written segment is now, and whether a record's bytes are untouched.
        let held_as: std::collections::HashMap<u64, u64> =
            files.iter().map(|(&file, &(written, _, _))| (written, file)).collect();
        let mut must: Model = model
            .iter()
            .filter_map(|(pos, kind, body)| {
                let file = *held_as.get(&pos.segment)?;
                let (_, len, touched) = &files[&file];
                let range = pos.offset as usize..pos.offset as usize + 16 + body.len();
                let untouched = range.end <= *len
                    && touched.iter().all(|t| t.end <= range.start || t.start >= range.end);
                let moved = Position { segment: file, offset: pos.offset };
                untouched.then(|| (moved, *kind, body.clone()))
            })
            .collect();
        must.sort_by_key(|r| r.0);

        let mut seen: Model = Vec::new();
        let (mut log, report) =
            Log::open(config.clone(), |p, k, b| seen.push((p, k, b.to_vec()))).unwrap();
        prop_assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "replay out of position order");
        for (pos, kind, body) in &seen {
            let written = files[&pos.segment].0;
            let original = Position { segment: written, offset: pos.offset };
            prop_assert!(
                model.iter().any(|r| r.0 == original && r.1 == *kind && r.2 == *body),
                "{:?} was never appended ({:?})", pos, report
            );
            prop_assert_eq!(log.read(*pos).unwrap(), (*kind, &body[..]));
        }
        let lost: Vec<_> = must.iter().filter(|r| !seen.contains(r)).map(|r| r.0).collect();
        prop_assert!(lost.is_empty(), "lost {:?}; {:?}", lost, report);
        let ids: Vec<u64> = files.keys().copied().collect();
        if ids.windows(2).any(|w| w[1] > w[0] + 1) {
            prop_assert!(!report.missing.is_empty(), "gap not reported: {:?}", ids);
        }

        let pos = log.append(7, b"after the damage").unwrap();
        prop_assert!(seen.last().is_none_or(|last| last.0 < pos));
        drop(log);
        let mut again: Model = Vec::new();
        let (_, second) = Log::open(config, |p, k, b| again.push((p, k, b.to_vec()))).unwrap();
        prop_assert_eq!(&again[..seen.len()], &seen[..]);
        prop_assert_eq!(&again[seen.len()..], &[(pos, 7, b"after the damage".to_vec())][..]);
        prop_assert_eq!(second.torn_tail, None);
    }
}
