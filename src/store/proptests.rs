//! The log against a model: a `Vec` of the records that should be live. Random appends of
//! every size up to a whole segment, reopens, reclaims, reads and durability waits, on 4 KiB
//! segments so that records roll constantly; after every reopen the replay must be exactly
//! the model, in order, with a clean report.

use futures_lite::future::block_on;
use proptest::prelude::*;

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
                    prop_assert!(model.last().map_or(true, |(last, _, _)| *last < pos));
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
