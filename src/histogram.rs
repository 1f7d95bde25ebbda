//! Durations counted into fixed buckets, cheap enough to keep per core and per log: an
//! observation is a short scan of a dozen bounds and two additions, no allocation. The
//! owner observes; `/metrics` takes a copy of each core's at scrape time and adds them up
//! (`merge`). No clock here: the caller measures and passes the duration in.

use std::time::Duration;

/// Bucket bounds in seconds for a log's msync: from half a millisecond (a page cache
/// that is nearly clean) to 2.5 s (a disk that is struggling); 10-23 ms is usual here.
pub const FSYNC_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Bucket bounds in seconds for a whole checkpoint (its steps and the pauses between
/// them): from 10 ms (a few sessions) to 10 minutes.
pub const CHECKPOINT_SECONDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0,
];

/// Observations by bucket, with their count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending; a last bucket above them all (`+Inf`) follows.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative): `bounds.len() + 1` of them.
    counts: Box<[u64]>,
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1].into_boxed_slice(),
            sum_seconds: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// Adds `other`'s observations; one with other bounds is ignored (every histogram of
    /// one kind is made with the same bounds).
    pub fn merge(&mut self, other: &Histogram) {
        if self.bounds != other.bounds {
            return;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
        self.count += other.count;
    }

    /// Each bucket's upper bound (the last is `f64::INFINITY`) with its own count (not
    /// cumulative).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(10)); // on the bound: in it
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        assert_eq!(h.buckets(), vec![(0.01, 1), (0.1, 1), (f64::INFINITY, 1)]);
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 3.06).abs() < 1e-9);
    }

    #[test]
    fn merging_adds_counts_and_ignores_other_bounds() {
        let mut a = Histogram::new(FSYNC_SECONDS);
        let mut b = Histogram::new(FSYNC_SECONDS);
        a.observe(Duration::from_millis(12));
        b.observe(Duration::from_millis(12));
        b.observe(Duration::from_millis(400));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let mut other = Histogram::new(CHECKPOINT_SECONDS);
        other.observe(Duration::from_secs(1));
        a.merge(&other);
        assert_eq!(a.count(), 3);
        assert_eq!(a.buckets().iter().map(|(_, n)| n).sum::<u64>(), 3);
    }
}
