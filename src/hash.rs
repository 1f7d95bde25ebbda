//! The hasher for the maps on the publish path: topic levels in the tree's child maps,
//! client ids in the session and connection maps, message sequence numbers.
//!
//! Why not std's SipHash: a publish hashes one level per tree level, and at a million
//! filters those hashes are a visible share of the match time; SipHash-1-3 costs several
//! times more than a folded multiply on short strings. Every delivery also looks up its
//! session and its connection by client id. Why not a fixed-key fast hash: the
//! levels come from peers, and a fixed key lets one craft colliding filters that turn a
//! child map into a list. So this is a folded-multiply hash (the construction of wyhash and
//! foldhash) keyed per map from std's `RandomState`: fast, and not predictable from outside.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` with [`HashState`]: fast and keyed per map.
pub(crate) type FastMap<K, V> = HashMap<K, V, HashState>;

/// Odd 64-bit constants (digits of pi) that keep the multiplies from collapsing to zero.
const PI: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// The low and high halves of the 128-bit product, XORed: every input bit reaches the output.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Builds [`FastHasher`]s with a random key per map.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HashState {
    seed: [u64; 2],
}

impl HashState {
    /// A fresh random key, drawn from std's per-thread `RandomState` keys.
    pub(crate) fn random() -> Self {
        let state = std::collections::hash_map::RandomState::new();
        let a = state.hash_one(PI[0]);
        let b = state.hash_one(PI[1]);
        HashState {
            seed: [a ^ PI[2], b ^ PI[3]],
        }
    }
}

impl Default for HashState {
    fn default() -> Self {
        HashState::random()
    }
}

impl BuildHasher for HashState {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            acc: self.seed[0],
            key: self.seed[1],
        }
    }
}

/// Hashes the bytes it is given eight at a time; `str`'s `Hash` adds a 0xFF terminator
/// through `write_u8`, which keeps `"a"` and `"a\0"` apart.
pub(crate) struct FastHasher {
    acc: u64,
    key: u64,
}

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.acc = folded_multiply(word ^ self.key, self.acc ^ PI[1]);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.mix(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.mix(u64::from(byte) ^ PI[3]);
    }

    /// Slices hash their length first; one multiply rather than eight bytes through `write`.
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.acc, self.key ^ PI[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_short_levels_rarely_collide() {
        let state = HashState::random();
        let mut seen = HashSet::new();
        let n = 100_000;
        for i in 0..n {
            seen.insert(state.hash_one(format!("{i}")));
            seen.insert(state.hash_one(format!("device-{i:08}")));
        }
        // A 64-bit hash of 200,000 keys should essentially never collide.
        assert!(seen.len() >= 2 * n - 1, "{} distinct", seen.len());
    }

    #[test]
    fn keys_differ_between_states() {
        let (a, b) = (HashState::random(), HashState::random());
        assert_ne!(a.hash_one("sport"), b.hash_one("sport"));
        assert_eq!(a.hash_one("sport"), a.hash_one("sport"));
        assert_ne!(a.hash_one("a"), a.hash_one("a\0"));
        assert_ne!(a.hash_one(""), a.hash_one("\u{ff}"));
    }
}
