//! The shard map: which shard an entity address belongs to.
//!
//! The hash is FNV-1a over the kind, a separator byte and the id. It is written out here rather
//! than taken from `std` because it must never change between builds, platforms or Rust
//! versions: every node of a cluster, old and new, must agree on it.

use crate::address::{EntityAddress, ShardId};

/// Default number of shards per cluster.
pub const DEFAULT_N_SHARDS: u16 = 256;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Maps entity addresses to shards; the shard count is fixed for the life of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    n_shards: u16,
}

impl ShardMap {
    /// A map over `n_shards` shards; `None` when `n_shards` is zero.
    pub fn new(n_shards: u16) -> Option<Self> {
        (n_shards > 0).then_some(Self { n_shards })
    }

    /// The shard that owns `address`.
    pub fn shard_for(&self, address: &EntityAddress) -> ShardId {
        let hash = stable_hash(&address.kind, &address.id);
        let shard = hash % u64::from(self.n_shards);
        ShardId(u16::try_from(shard).unwrap_or(0))
    }
}

impl Default for ShardMap {
    fn default() -> Self {
        Self {
            n_shards: DEFAULT_N_SHARDS,
        }
    }
}

fn stable_hash(kind: &str, id: &str) -> u64 {
    fnv1a_64(kind.bytes().chain(std::iter::once(0xff)).chain(id.bytes()))
}

/// 64-bit FNV-1a over `bytes`, written out so it never changes (also used by
/// [`crate::rendezvous`]).
pub(crate) fn fnv1a_64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_shards_is_refused() {
        assert!(ShardMap::new(0).is_none());
    }

    #[test]
    fn hash_values_are_pinned() {
        // These values are part of the cluster's wire contract: a change reshuffles every entity.
        assert_eq!(stable_hash("", ""), 0xaf64_724c_8602_eb6e);
        let map = ShardMap::default();
        let shard = |kind: &str, id: &str| map.shard_for(&EntityAddress::new(kind, id).unwrap()).0;
        assert_eq!(shard("user", "42"), shard("user", "42"));
        assert_eq!(
            [
                shard("user", "42"),
                shard("user", "43"),
                shard("gateway", "42")
            ],
            [PINNED_USER_42, PINNED_USER_43, PINNED_GATEWAY_42]
        );
    }

    const PINNED_USER_42: u16 = 113;
    const PINNED_USER_43: u16 = 190;
    const PINNED_GATEWAY_42: u16 = 160;

    #[test]
    fn spread_is_even() {
        let map = ShardMap::new(16).unwrap();
        let mut counts = [0_u32; 16];
        for id in 0..16_000 {
            let address = EntityAddress::new("user", id.to_string()).unwrap();
            counts[usize::from(map.shard_for(&address).0)] += 1;
        }
        for count in counts {
            assert!((800..1200).contains(&count), "uneven spread: {counts:?}");
        }
    }
}
