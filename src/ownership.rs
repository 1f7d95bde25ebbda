//! Which core owns a client id.
//!
//! The owner of a client id is `FNV-1a-64(client id bytes) % cores`. The hash is fixed
//! (not `std`'s randomly seeded one) because ownership must be the same on every core, in
//! every process and across restarts: a persistent session lives in its owner core's log.

use bytestring::ByteString;

/// Index of a core (and of its executor, core and log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub usize);

impl std::fmt::Display for CoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The core that owns `client_id` when the broker runs `cores` cores.
pub fn owner_of(client_id: &str, cores: usize) -> CoreId {
    CoreId((fnv1a64(client_id.as_bytes()) % cores.max(1) as u64) as usize)
}

/// A fresh client id that `owner_of` maps to `core`, so that a client without an id stays
/// on the core that accepted it (no hand-off). `random` supplies entropy; about `cores`
/// draws are needed on average.
pub fn assign_client_id(core: CoreId, cores: usize, random: impl FnMut() -> u64) -> ByteString {
    assign_client_id_where(core, cores, random, |_| true)
}

/// As [`assign_client_id`], an id that `also` takes too: in a cluster, one whose slot this
/// node owns (`cluster`). `also` must take a fair share of ids (a node's slots, about
/// `1/nodes` of them), or this loops: about `cores / share` draws are needed.
pub fn assign_client_id_where(
    core: CoreId,
    cores: usize,
    mut random: impl FnMut() -> u64,
    also: impl Fn(&str) -> bool,
) -> ByteString {
    loop {
        let id = format!("berth-{:016x}", random());
        if owner_of(&id, cores) == core && also(&id) {
            return ByteString::from(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Vectors from the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn owner_is_stable_and_in_range() {
        for cores in 1..8 {
            for i in 0..100 {
                let id = format!("device-{i}");
                let owner = owner_of(&id, cores);
                assert!(owner.0 < cores);
                assert_eq!(owner, owner_of(&id, cores));
            }
        }
    }

    #[test]
    fn assigned_ids_hash_to_the_requested_core() {
        let mut seed = 7u64;
        let mut random = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed
        };
        for core in 0..4 {
            let id = assign_client_id(CoreId(core), 4, &mut random);
            assert_eq!(owner_of(&id, 4), CoreId(core));
            let odd = assign_client_id_where(CoreId(core), 4, &mut random, |id| {
                id.bytes().last().is_some_and(|b| b % 2 == 1)
            });
            assert_eq!(owner_of(&odd, 4), CoreId(core));
            assert_eq!(odd.as_bytes().last().unwrap() % 2, 1);
        }
    }
}
