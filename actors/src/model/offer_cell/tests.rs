//! Unit and property tests of offer cells: the search filter, the order of matches, idempotent
//! listing, the cell's capacity, and that searching cell by cell finds exactly what a full scan
//! finds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use proptest::prelude::*;

/// The moment the searches run.
const NOW: u64 = 1_700_000_000_000;
/// When the test offers are listed.
const LISTED: u64 = NOW - 60_000;
const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn point(lat: f64, lon: f64) -> GeoPoint {
    GeoPoint::from_degrees(lat, lon).unwrap()
}

/// People's Square, Shanghai.
fn center() -> GeoPoint {
    point(31.230_416, 121.473_701)
}

/// An offer of 1 GiB at 5 fen a unit, listed a minute ago for an hour.
fn offer(share_id: &str, sharer: &str, location: GeoPoint) -> ListedOffer {
    ListedOffer {
        share_id: share_id.to_owned(),
        sharer: sharer.to_owned(),
        location,
        amount_bytes: GIB,
        price_minor_per_unit: 5,
        currency: "CNY".to_owned(),
        listed_at_unix_ms: LISTED,
        expires_at_unix_ms: LISTED + 3_600_000,
    }
}

/// Up to ten offers of any size within `radius_m` of the centre, from anyone.
fn query(radius_m: u64) -> ProximityQuery {
    ProximityQuery {
        center: center(),
        radius_m,
        min_amount_bytes: 0,
        exclude_sharer_opt: None,
        limit: 10,
    }
}

fn offer_match(offer: ListedOffer, distance_m: u64) -> OfferMatch {
    OfferMatch { offer, distance_m }
}

fn share_ids(matches: &[OfferMatch]) -> Vec<&str> {
    matches
        .iter()
        .map(|offer_match| offer_match.offer.share_id.as_str())
        .collect()
}

fn grid() -> CellGrid {
    CellGrid::new(6).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The filter
// ---------------------------------------------------------------------------------------------

/// Lists `offer` (at [`LISTED`]) in a cell and in an index, and checks that a cell, the index
/// and a full scan all answer `query` at [`NOW`] with it (and its distance) or without it.
fn check(offer: &ListedOffer, query: &ProximityQuery, expected_included: bool) {
    let expected = if expected_included {
        vec![offer_match(
            offer.clone(),
            query.center.distance_m(&offer.location),
        )]
    } else {
        Vec::new()
    };
    let mut cell = OfferCell::default();
    assert!(cell.list(offer.clone(), LISTED).unwrap());
    let mut index = ProximityIndex::new(grid());
    assert!(index.list(offer.clone(), LISTED).unwrap());

    assert_eq!(
        cell.query(query, NOW),
        expected,
        "cell: {offer:?} {query:?}"
    );
    assert_eq!(
        index.query(query, NOW, 10_000).unwrap(),
        expected,
        "index: {offer:?} {query:?}"
    );
    assert_eq!(
        scan_all([offer], query, NOW),
        expected,
        "scan: {offer:?} {query:?}"
    );
}

#[test]
fn the_filter() {
    let nearby = GeoPoint::from_e6(
        i64::from(center().lat_e6()) + 4_000,
        i64::from(center().lon_e6()) + 3_000,
    )
    .unwrap();
    let distance_m = center().distance_m(&nearby);
    assert_eq!(distance_m, 528);
    let base = offer("s1", "alice", nearby);

    // In range, and just outside by one meter.
    check(&base, &query(distance_m), true);
    check(&base, &query(distance_m - 1), false);
    check(&offer("s1", "alice", center()), &query(0), true);

    // Expired at the moment of the search, or a millisecond before it.
    check(
        &ListedOffer {
            expires_at_unix_ms: NOW,
            ..base.clone()
        },
        &query(1_000),
        false,
    );
    check(
        &ListedOffer {
            expires_at_unix_ms: NOW + 1,
            ..base.clone()
        },
        &query(1_000),
        true,
    );

    // Too small, and just big enough.
    let at_least = |min_amount_bytes| ProximityQuery {
        min_amount_bytes,
        ..query(1_000)
    };
    check(&base, &at_least(GIB + 1), false);
    check(&base, &at_least(GIB), true);

    // The requester's own offer, and someone else's.
    let excluding = |sharer: &str| ProximityQuery {
        exclude_sharer_opt: Some(sharer.to_owned()),
        ..query(1_000)
    };
    check(&base, &excluding("alice"), false);
    check(&base, &excluding("bob"), true);

    // No room for any match.
    check(
        &base,
        &ProximityQuery {
            limit: 0,
            ..query(1_000)
        },
        false,
    );
}

// ---------------------------------------------------------------------------------------------
// Order
// ---------------------------------------------------------------------------------------------

#[test]
fn matches_are_ordered_by_price_distance_listing_time_then_share_id() {
    let priced = |share_id: &str, price, listed_at| ListedOffer {
        price_minor_per_unit: price,
        listed_at_unix_ms: listed_at,
        ..offer(share_id, "alice", center())
    };
    let best_first = vec![
        offer_match(priced("z-cheapest", 3, LISTED), 900),
        offer_match(priced("y-near", 5, LISTED), 100),
        offer_match(priced("x-older", 5, LISTED - 1), 200),
        offer_match(priced("a-tie", 5, LISTED), 200),
        offer_match(priced("b-tie", 5, LISTED), 200),
        offer_match(priced("a-far", 5, LISTED - 1_000), 201),
    ];
    let mut reversed: Vec<OfferMatch> = best_first.iter().rev().cloned().collect();
    order_matches(&mut reversed);
    assert_eq!(reversed, best_first);

    // The same share id with different contents still orders the same way in any input order.
    let smaller = offer_match(
        ListedOffer {
            amount_bytes: 1,
            ..priced("same", 5, LISTED)
        },
        10,
    );
    let larger = offer_match(priced("same", 5, LISTED), 10);
    let mut one_way = vec![larger.clone(), smaller.clone()];
    let mut other_way = vec![smaller.clone(), larger];
    order_matches(&mut one_way);
    order_matches(&mut other_way);
    assert_eq!(one_way, other_way);
    assert_eq!(one_way[0], smaller);
}

#[test]
fn merging_dedups_orders_and_truncates_whatever_the_order_of_cells() {
    let cheap = offer_match(
        ListedOffer {
            price_minor_per_unit: 1,
            ..offer("cheap", "alice", center())
        },
        300,
    );
    let near = offer_match(offer("near", "bob", center()), 0);
    let far = offer_match(offer("far", "carol", center()), 2_000);
    // A share listed in two cells (it moved): its better match wins.
    let moved_before = offer_match(offer("moved", "dave", center()), 50);
    let moved_after = offer_match(offer("moved", "dave", center()), 40);

    let cells = vec![
        vec![near.clone(), far.clone(), moved_before],
        vec![],
        vec![cheap.clone(), moved_after.clone()],
    ];
    let merged = merge_matches(cells.clone(), 10);
    assert_eq!(merged, vec![cheap.clone(), near.clone(), moved_after, far]);
    assert_eq!(
        merge_matches(cells.iter().rev().cloned().collect(), 10),
        merged
    );
    assert_eq!(merge_matches(cells, 2), vec![cheap, near]);
    assert_eq!(merge_matches(Vec::new(), 10), Vec::new());
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

#[test]
fn listing_and_unlisting_are_idempotent() {
    let mut cell = OfferCell::default();
    let listed = offer("s1", "alice", center());
    assert!(cell.is_empty());
    assert_eq!(cell.list(listed.clone(), LISTED), Ok(true));
    assert_eq!(cell.list(listed.clone(), LISTED + 1), Ok(false));
    assert_eq!(cell.len(), 1);

    let changed = ListedOffer {
        amount_bytes: 2 * GIB,
        ..listed.clone()
    };
    assert_eq!(cell.list(changed.clone(), LISTED + 2), Ok(true));
    assert_eq!(cell.len(), 1);
    assert_eq!(cell.query(&query(0), NOW)[0].offer, changed);

    assert!(cell.unlist("s1"));
    assert!(!cell.unlist("s1"));
    assert!(cell.is_empty());

    // An offer expired when it arrives is not listed.
    assert_eq!(
        cell.list(listed.clone(), listed.expires_at_unix_ms),
        Ok(false)
    );
    assert!(cell.is_empty());
}

#[test]
fn expired_offers_are_dropped() {
    let mut cell = OfferCell::default();
    for (share_id, expires_at_unix_ms) in [("a", NOW - 1), ("b", NOW), ("c", NOW + 1)] {
        let listed = ListedOffer {
            expires_at_unix_ms,
            ..offer(share_id, "alice", center())
        };
        assert_eq!(cell.list(listed, LISTED), Ok(true));
    }
    assert_eq!(cell.drop_expired(NOW), 2);
    assert_eq!(cell.len(), 1);
    assert_eq!(cell.drop_expired(NOW), 0);
    assert_eq!(cell.drop_expired(NOW + 1), 1);
    assert!(cell.is_empty());
}

#[test]
fn a_full_cell_refuses_new_offers_until_one_expires() {
    let mut cell = OfferCell::default();
    let offers: Vec<ListedOffer> = (0..MAX_OFFERS_PER_CELL)
        .map(|index| ListedOffer {
            expires_at_unix_ms: NOW + 1 + index as u64,
            ..offer(&format!("s{index:04}"), "alice", center())
        })
        .collect();
    for listed in &offers {
        assert_eq!(cell.list(listed.clone(), NOW), Ok(true));
    }
    let newcomer = offer("new", "bob", center());
    let newcomer_at = |now| ListedOffer {
        expires_at_unix_ms: now + 3_600_000,
        ..newcomer.clone()
    };
    let full = OfferCellError::CellFull {
        max: MAX_OFFERS_PER_CELL,
    };
    assert_eq!(cell.list(newcomer_at(NOW), NOW), Err(full.clone()));
    assert_eq!(full.to_string(), "the cell lists 5000 offers already");

    // A listed share may still change.
    let changed = ListedOffer {
        price_minor_per_unit: 1,
        ..offers[0].clone()
    };
    assert_eq!(cell.list(changed, NOW), Ok(true));

    // Once the first offer expires, the newcomer takes its place.
    assert_eq!(cell.list(newcomer_at(NOW + 1), NOW + 1), Ok(true));
    assert_eq!(cell.len(), MAX_OFFERS_PER_CELL);
    assert!(!cell.unlist("s0000"));
}

#[test]
fn a_cell_round_trips_through_message_pack_as_a_list() {
    let mut cell = OfferCell::default();
    cell.list(offer("s1", "alice", center()), LISTED).unwrap();
    cell.list(offer("s2", "bob", point(31.24, 121.48)), LISTED)
        .unwrap();
    let bytes = rmp_serde::to_vec_named(&cell).unwrap();
    assert_eq!(rmp_serde::from_slice::<OfferCell>(&bytes).unwrap(), cell);

    let json = serde_json::to_value(&cell).unwrap();
    let listed = json["offers"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["share_id"], "s1");
}

#[test]
fn the_index_lists_offers_in_the_cells_of_their_places() {
    let mut index = ProximityIndex::new(grid());
    let here = offer("s1", "alice", center());
    let there = offer("s2", "bob", point(31.3, 121.5));
    assert!(index.is_empty());
    assert_eq!(index.list(here.clone(), LISTED), Ok(true));
    assert_eq!(index.list(here.clone(), LISTED), Ok(false));
    assert_eq!(index.list(there.clone(), LISTED), Ok(true));
    assert_eq!(index.len(), 2);

    // Expired offers are not listed and leave no empty cell behind.
    let expired = ListedOffer {
        expires_at_unix_ms: LISTED,
        ..offer("s3", "carol", point(-10.0, 10.0))
    };
    assert_eq!(index.list(expired, LISTED), Ok(false));
    assert_eq!(index.len(), 2);

    // Unlisting needs the place the offer was listed at.
    assert!(!index.unlist("s1", there.location));
    assert!(index.unlist("s1", here.location));
    assert!(!index.unlist("s1", here.location));
    assert!(index.unlist("s2", there.location));
    assert!(index.is_empty());
}

#[test]
fn a_search_over_too_many_cells_is_refused() {
    let index = ProximityIndex::new(CellGrid::new(8).unwrap());
    assert!(matches!(
        index.query(&query(3_000), NOW, 100),
        Err(GeoError::TooManyCells { max: 100, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// South-west corners of the boxes offers are drawn from: a city, across the antimeridian (Fiji)
/// and far north (Svalbard).
const CORNERS_E6: [(i64, i64); 3] = [
    (31_180_000, 121_420_000),
    (-16_800_000, 179_950_000),
    (78_180_000, 15_550_000),
];
/// A box about 10 km on a side.
const BOX_LAT_E6: i64 = 90_000;
const BOX_LON_E6: i64 = 120_000;

/// The point `lat_offset_e6` north and `lon_offset_e6` east of `corner`, across the
/// antimeridian if need be.
fn offset_point(corner: (i64, i64), lat_offset_e6: i64, lon_offset_e6: i64) -> GeoPoint {
    let lon_e6 = (corner.1 + lon_offset_e6 + 180_000_000).rem_euclid(360_000_000) - 180_000_000;
    GeoPoint::from_e6(corner.0 + lat_offset_e6, lon_e6).unwrap()
}

/// Offsets from `corner` within the box, or up to `margin_e6` beyond it (a query's centre may
/// be outside the box).
fn offset_strategy(corner: (i64, i64), margin_e6: i64) -> impl Strategy<Value = GeoPoint> {
    // Three times the longitude far north, for a box about as wide as it is tall.
    let box_lon_e6 = if corner.0 > 60_000_000 {
        3 * BOX_LON_E6
    } else {
        BOX_LON_E6
    };
    (
        -margin_e6..=BOX_LAT_E6 + margin_e6,
        -margin_e6..=box_lon_e6 + margin_e6,
    )
        .prop_map(move |(lat_offset_e6, lon_offset_e6)| {
            offset_point(corner, lat_offset_e6, lon_offset_e6)
        })
}

/// Offers with few distinct prices, amounts, sharers and times, so that ties are common; some
/// expire before they are listed, some before the search or at it.
fn offers_strategy(corner: (i64, i64)) -> impl Strategy<Value = Vec<ListedOffer>> {
    proptest::collection::vec(
        (
            offset_strategy(corner, 0),
            0..4_u64,
            0..4_u64,
            0..5_u8,
            0..3_u64,
            0..4_u64,
        ),
        0..300,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(
                |(index, (location, price, gib, sharer, listed_ago, lifetime))| ListedOffer {
                    share_id: format!("s{index}"),
                    sharer: format!("a{sharer}"),
                    location,
                    amount_bytes: gib * GIB,
                    price_minor_per_unit: price,
                    currency: "CNY".to_owned(),
                    listed_at_unix_ms: LISTED - listed_ago,
                    // At the listing, before the search, at it, or after it.
                    expires_at_unix_ms: LISTED + lifetime * 30_000,
                },
            )
            .collect()
    })
}

fn query_strategy(corner: (i64, i64)) -> impl Strategy<Value = ProximityQuery> {
    (
        offset_strategy(corner, 20_000),
        0..=3_000_u64,
        0..3_u64,
        proptest::option::of(0..6_u8),
        0..30_usize,
    )
        .prop_map(|(center, radius_m, gib, excluded, limit)| ProximityQuery {
            center,
            radius_m,
            min_amount_bytes: gib * GIB,
            exclude_sharer_opt: excluded.map(|sharer| format!("a{sharer}")),
            limit,
        })
}

fn case_strategy() -> impl Strategy<Value = (Vec<ListedOffer>, Vec<ProximityQuery>, u8)> {
    proptest::sample::select(CORNERS_E6.to_vec()).prop_flat_map(|corner| {
        (
            offers_strategy(corner),
            proptest::collection::vec(query_strategy(corner), 1..8),
            5..=7_u8,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_index_finds_exactly_what_a_full_scan_finds(
        (offers, queries, precision) in case_strategy(),
    ) {
        let mut index = ProximityIndex::new(CellGrid::new(precision).unwrap());
        for listed in &offers {
            let expected_listed = listed.expires_at_unix_ms > LISTED;
            prop_assert_eq!(index.list(listed.clone(), LISTED), Ok(expected_listed));
        }
        for query in &queries {
            let from_index = index.query(query, NOW, 1_000_000).unwrap();
            let from_scan = scan_all(&offers, query, NOW);
            prop_assert_eq!(share_ids(&from_index), share_ids(&from_scan));
            prop_assert_eq!(from_index, from_scan);
        }
    }
}
