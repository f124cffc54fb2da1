//! Rendezvous (highest random weight) assignment of shards to nodes.
//!
//! For each shard, every candidate node gets a pseudo-random weight and the shard goes to the
//! candidate with the highest one. Nodes that agree on the candidates agree on every owner
//! without talking to each other, and when a candidate joins or leaves only the shards it gains
//! or loses move (about `1/n` of them); every other shard keeps its owner.
//!
//! The weight is part of the cluster's wire contract (nodes of different builds must agree on
//! it), so it is written out here and pinned by a test: 64-bit FNV-1a over the node id's bytes
//! followed by the shard number as two big-endian bytes, finished with the splitmix64 finaliser
//! so that weights of similar inputs are well mixed. Equal weights (practically never seen) go to
//! the smallest node id.

use crate::address::{NodeId, ShardId};
use crate::shard_map::fnv1a_64;
use std::collections::BTreeSet;

/// The weight of `node` for `shard`: the shard goes to the candidate with the highest weight.
pub fn weight(node: &NodeId, shard: ShardId) -> u64 {
    let bytes = node.as_str().bytes().chain(shard.0.to_be_bytes());
    splitmix64_finish(fnv1a_64(bytes))
}

/// The splitmix64 finaliser (Stafford's "Mix13"): a bijection on `u64` with full avalanche.
fn splitmix64_finish(hash: u64) -> u64 {
    let mut mixed = hash;
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^ (mixed >> 31)
}

/// The candidate that owns `shard`: the highest [`weight`], ties to the smallest node id;
/// `None` when there is no candidate.
pub fn owner_of<'a>(shard: ShardId, candidates: &'a BTreeSet<NodeId>) -> Option<&'a NodeId> {
    // Candidates come in ascending order and only a strictly higher weight replaces the best so
    // far, so a tie keeps the smaller id.
    let mut best_opt: Option<(u64, &'a NodeId)> = None;
    for candidate in candidates {
        let candidate_weight = weight(candidate, shard);
        if best_opt.is_none_or(|(best_weight, _)| candidate_weight > best_weight) {
            best_opt = Some((candidate_weight, candidate));
        }
    }
    best_opt.map(|(_, owner)| owner)
}

/// The shards among `0..n_shards` that `node` owns when `candidates` share them out (empty when
/// `node` is not a candidate).
pub fn shards_of(node: &NodeId, candidates: &BTreeSet<NodeId>, n_shards: u16) -> BTreeSet<ShardId> {
    (0..n_shards)
        .map(ShardId)
        .filter(|shard| owner_of(*shard, candidates) == Some(node))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn nodes(names: &[&str]) -> BTreeSet<NodeId> {
        names.iter().map(|name| node(name)).collect()
    }

    /// Owner of every shard among `0..n_shards`.
    fn assignment(candidates: &BTreeSet<NodeId>, n_shards: u16) -> BTreeMap<ShardId, NodeId> {
        (0..n_shards)
            .map(ShardId)
            .map(|shard| (shard, owner_of(shard, candidates).unwrap().clone()))
            .collect()
    }

    #[test]
    fn weights_and_owners_are_pinned() {
        // Part of the cluster's wire contract: a change moves shards between nodes of different
        // builds, so that two of them could both believe they own a shard.
        let check = |name: &str, shard: u16, expected: u64| {
            assert_eq!(
                weight(&node(name), ShardId(shard)),
                expected,
                "weight({name}, {shard})"
            );
        };
        check("node-1", 0, PINNED_NODE_1_SHARD_0);
        check("node-1", 1, PINNED_NODE_1_SHARD_1);
        check("node-2", 0, PINNED_NODE_2_SHARD_0);
        check("node-a", 255, PINNED_NODE_A_SHARD_255);
        let candidates = nodes(&["node-1", "node-2", "node-3"]);
        let owners: Vec<&str> = (0..8)
            .map(|shard| owner_of(ShardId(shard), &candidates).unwrap().as_str())
            .collect();
        assert_eq!(owners, PINNED_OWNERS_OF_0_TO_7);
    }

    const PINNED_NODE_1_SHARD_0: u64 = 0x4a20_aba8_bed8_1f7d;
    const PINNED_NODE_1_SHARD_1: u64 = 0x6a11_1ce5_f61e_82b4;
    const PINNED_NODE_2_SHARD_0: u64 = 0x82bb_a728_325d_98ae;
    const PINNED_NODE_A_SHARD_255: u64 = 0x8c86_0261_59a6_b1a6;
    const PINNED_OWNERS_OF_0_TO_7: [&str; 8] = [
        "node-3", "node-1", "node-3", "node-2", "node-2", "node-3", "node-2", "node-2",
    ];

    #[test]
    fn no_candidates_means_no_owner() {
        assert_eq!(owner_of(ShardId(0), &BTreeSet::new()), None);
        assert!(shards_of(&node("node-1"), &BTreeSet::new(), 256).is_empty());
    }

    #[test]
    fn a_node_that_is_not_a_candidate_owns_nothing() {
        let candidates = nodes(&["node-1", "node-2"]);
        assert!(shards_of(&node("node-3"), &candidates, 256).is_empty());
    }

    #[test]
    fn a_single_candidate_owns_everything() {
        let candidates = nodes(&["only"]);
        assert_eq!(shards_of(&node("only"), &candidates, 16).len(), 16);
    }

    #[test]
    fn shards_of_partitions_the_shards() {
        let candidates = nodes(&["node-1", "node-2", "node-3"]);
        let mut seen = BTreeSet::new();
        for candidate in &candidates {
            for shard in shards_of(candidate, &candidates, 256) {
                assert!(seen.insert(shard), "shard {shard} has two owners");
                assert_eq!(owner_of(shard, &candidates), Some(candidate));
            }
        }
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn three_nodes_share_256_shards_evenly() {
        for names in [
            ["node-1", "node-2", "node-3"],
            ["node-a", "node-b", "node-c"],
            [
                "node-3f2a9c1b0d4e",
                "node-77aa01c3be90",
                "node-c0ffee000001",
            ],
        ] {
            let candidates = nodes(&names);
            for candidate in &candidates {
                let n_owned = shards_of(candidate, &candidates, 256).len();
                // 256 / 3 = 85.3; allow ±25 %.
                assert!(
                    (64..=106).contains(&n_owned),
                    "{candidate} owns {n_owned} of 256 shards among {names:?}"
                );
            }
        }
    }

    fn node_name() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,12}".prop_map(|suffix| format!("node-{suffix}"))
    }

    proptest! {
        #[test]
        fn a_joining_node_only_takes_shards(
            names in proptest::collection::btree_set(node_name(), 1..6),
            newcomer_name in node_name(),
        ) {
            let before: BTreeSet<NodeId> = names.iter().map(|name| node(name)).collect();
            let newcomer = node(&newcomer_name);
            prop_assume!(!before.contains(&newcomer));
            let mut after = before.clone();
            after.insert(newcomer.clone());
            let (old, new) = (assignment(&before, 256), assignment(&after, 256));
            for (shard, old_owner) in &old {
                let new_owner = &new[shard];
                prop_assert!(
                    new_owner == old_owner || *new_owner == newcomer,
                    "shard {} moved from {} to {}, not to the newcomer {}",
                    shard, old_owner, new_owner, newcomer
                );
            }
        }

        #[test]
        fn a_leaving_node_only_gives_up_its_own_shards(
            names in proptest::collection::btree_set(node_name(), 2..7),
            leaver_index in 0_usize..7,
        ) {
            let before: BTreeSet<NodeId> = names.iter().map(|name| node(name)).collect();
            let leaver = before.iter().nth(leaver_index % before.len()).unwrap().clone();
            let mut after = before.clone();
            after.remove(&leaver);
            let (old, new) = (assignment(&before, 256), assignment(&after, 256));
            for (shard, old_owner) in &old {
                if *old_owner != leaver {
                    prop_assert_eq!(&new[shard], old_owner, "shard {} moved", shard);
                }
            }
        }
    }
}
