//! Unit and property tests of places, distances and the geohash grid: known geohashes and
//! distances, refused inputs, and that the cells of a range hold every point within it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use proptest::prelude::*;

fn point(lat: f64, lon: f64) -> GeoPoint {
    GeoPoint::from_degrees(lat, lon).unwrap()
}

fn grid(precision: u8) -> CellGrid {
    CellGrid::new(precision).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Points
// ---------------------------------------------------------------------------------------------

#[test]
fn from_degrees_rounds_to_the_nearest_microdegree() {
    let rounded = point(57.649_110_4, -10.407_440_6);
    assert_eq!(
        (rounded.lat_e6(), rounded.lon_e6()),
        (57_649_110, -10_407_441)
    );
    assert_eq!(rounded.lat_degrees(), 57.649_11);
    assert_eq!(rounded.lon_degrees(), -10.407_441);
    assert_eq!(
        point(90.0, -180.0),
        GeoPoint::from_e6(90_000_000, -180_000_000).unwrap()
    );
}

#[test]
fn out_of_range_and_non_finite_coordinates_are_refused() {
    fn check(result: Result<GeoPoint, GeoError>, expected_message: &str) {
        assert_eq!(result.unwrap_err().to_string(), expected_message);
    }
    check(
        GeoPoint::from_degrees(91.5, 0.0),
        "latitude 91.5 is outside -90..=90",
    );
    check(
        GeoPoint::from_degrees(-90.000_001, 0.0),
        "latitude -90.000001 is outside -90..=90",
    );
    check(
        GeoPoint::from_degrees(0.0, 180.5),
        "longitude 180.5 is outside -180..=180",
    );
    check(
        GeoPoint::from_degrees(f64::NAN, 0.0),
        "coordinates (NaN, 0) are not finite numbers",
    );
    check(
        GeoPoint::from_degrees(0.0, f64::NEG_INFINITY),
        "coordinates (0, -inf) are not finite numbers",
    );
    check(
        GeoPoint::from_e6(90_000_001, 0),
        "latitude 90.000001 is outside -90..=90",
    );
    check(
        GeoPoint::from_e6(0, -180_000_001),
        "longitude -180.000001 is outside -180..=180",
    );
    check(
        GeoPoint::from_e6(i64::from(i32::MAX) + 1, 0),
        "latitude 2147.483648 is outside -90..=90",
    );
}

#[test]
fn points_round_trip_through_message_pack_and_refuse_out_of_range_values() {
    let original = point(-33.868_82, 151.209_29);
    let bytes = rmp_serde::to_vec_named(&original).unwrap();
    assert_eq!(rmp_serde::from_slice::<GeoPoint>(&bytes).unwrap(), original);
    let json = serde_json::to_string(&original).unwrap();
    assert_eq!(json, r#"{"lat_e6":-33868820,"lon_e6":151209290}"#);

    for refused in [
        r#"{"lat_e6":90000001,"lon_e6":0}"#,
        r#"{"lat_e6":0,"lon_e6":-180000001}"#,
        r#"{"lat_e6":0,"lon_e6":99999999999}"#,
    ] {
        let error = serde_json::from_str::<GeoPoint>(refused).unwrap_err();
        assert!(
            error.to_string().contains("is outside"),
            "{refused}: {error}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Distances
// ---------------------------------------------------------------------------------------------

#[test]
fn known_distances() {
    fn check(from: GeoPoint, to: GeoPoint, expected_m: u64) {
        assert_eq!(from.distance_m(&to), expected_m, "{from:?} to {to:?}");
        assert_eq!(to.distance_m(&from), expected_m, "{to:?} to {from:?}");
    }
    // A degree of a great circle is EARTH_RADIUS_M * pi / 180 = 111_195.08 m.
    check(point(10.0, 20.0), point(11.0, 20.0), 111_195);
    check(point(0.0, 0.0), point(0.0, 1.0), 111_195);
    check(point(0.0, 179.5), point(0.0, -179.5), 111_195);
    check(point(89.5, 0.0), point(89.5, 180.0), 111_195);
    // Half the circumference.
    check(point(0.0, 0.0), point(0.0, 180.0), 20_015_114);
    check(point(90.0, 0.0), point(-90.0, 0.0), 20_015_114);
    check(point(48.858_37, 2.294_481), point(48.858_37, 2.294_481), 0);
    // Paris (Eiffel Tower) to London (Big Ben): about 340.5 km.
    check(
        point(48.858_37, 2.294_481),
        point(51.500_729, -0.124_625),
        340_545,
    );
    // One microdegree of latitude is 11 cm.
    check(point(0.0, 0.0), GeoPoint::from_e6(9, 0).unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------------------

#[test]
fn precision_is_checked() {
    assert_eq!(
        CellGrid::new(0).unwrap_err().to_string(),
        "geohash precision 0 is outside 1..=9"
    );
    assert_eq!(
        CellGrid::new(10).unwrap_err(),
        GeoError::PrecisionOutOfRange { precision: 10 }
    );
    for precision in PRECISION_CHARS {
        assert_eq!(grid(precision).precision(), precision);
    }
}

#[test]
fn known_geohashes() {
    fn check(lat: f64, lon: f64, precision: u8, expected: &str) {
        assert_eq!(
            grid(precision).cell_of(point(lat, lon)),
            expected,
            "({lat}, {lon}) at precision {precision}"
        );
    }
    check(57.649_11, 10.407_44, 9, "u4pruydqq");
    check(42.6, -5.6, 5, "ezs42");
    check(-25.382_708, -49.265_506, 9, "6gkzwgjzn");
    check(51.500_729, -0.124_625, 6, "gcpuvp");
    check(0.0, 0.0, 9, "s00000000");
    check(-90.0, -180.0, 9, "000000000");
    check(90.0, 180.0, 9, "zzzzzzzzz");
    check(90.0, -180.0, 1, "b");
    check(-90.0, 180.0, 1, "p");
    check(-0.000_001, -0.000_001, 3, "7zz");
    check(0.0, -0.000_001, 3, "ebp");
    check(-0.000_001, 0.0, 3, "kpb");
}

#[test]
fn a_zero_radius_names_the_centres_cell_unless_the_centre_is_on_an_edge() {
    let center = point(42.605, -5.603);
    assert_eq!(
        grid(5).cells_within(center, 0, 1).unwrap(),
        vec!["ezs42".to_owned()]
    );
    // (0, 0) is the corner of four cells, and a point 0.16 m away in any of them is 0 m away.
    let south_west = GeoPoint::from_e6(-1, -1).unwrap();
    assert_eq!(point(0.0, 0.0).distance_m(&south_west), 0);
    assert_eq!(grid(1).cell_of(south_west), "7");
    assert_eq!(
        grid(1).cells_within(point(0.0, 0.0), 0, 4).unwrap(),
        vec!["7", "e", "k", "s"]
    );
}

#[test]
fn cells_wrap_across_the_antimeridian() {
    let cells = grid(4).cells_within(point(0.0, 180.0), 1000, 100).unwrap();
    for neighbour in [
        point(0.0, 179.995),
        point(0.0, -179.995),
        point(-0.005, 180.0),
    ] {
        assert!(
            cells.contains(&grid(4).cell_of(neighbour)),
            "{neighbour:?} in {cells:?}"
        );
    }
    // The box spans two columns either side of the antimeridian and two rows either side of
    // the equator.
    assert_eq!(cells, vec!["2pbp", "8000", "rzzz", "xbpb"]);
}

#[test]
fn a_range_reaching_a_pole_covers_every_longitude() {
    // Precision 1 has 8 columns and 4 rows; the range reaches the pole from the top row.
    let cells = grid(1).cells_within(point(89.99, 10.0), 5_000, 32).unwrap();
    assert_eq!(cells, vec!["b", "c", "f", "g", "u", "v", "y", "z"]);
    // A range as wide as the Earth covers every cell.
    assert_eq!(
        grid(1)
            .cells_within(point(0.0, 0.0), u64::MAX, 32)
            .unwrap()
            .len(),
        32
    );
}

#[test]
fn too_many_cells_are_refused() {
    let error = grid(7)
        .cells_within(point(30.0, 120.0), 3_000, 100)
        .unwrap_err();
    let GeoError::TooManyCells { n_cells, max } = error.clone() else {
        panic!("unexpected {error:?}")
    };
    assert_eq!(max, 100);
    assert!(n_cells > 100, "{n_cells}");
    assert_eq!(
        error.to_string(),
        format!("the range overlaps {n_cells} cells, more than the limit of 100")
    );
    let cells = grid(7)
        .cells_within(point(30.0, 120.0), 3_000, n_cells as usize)
        .unwrap();
    assert_eq!(cells.len() as u64, n_cells);
    assert!(
        cells.windows(2).all(|pair| pair[0] < pair[1]),
        "sorted, unique"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Any latitude within `±max_lat`, any longitude.
fn point_strategy(max_lat: f64) -> impl Strategy<Value = GeoPoint> {
    (-max_lat..=max_lat, -180.0..=180.0_f64).prop_map(|(lat, lon)| point(lat, lon))
}

/// Centres anywhere up to 85° from the equator, a third of them within 0.2° of the antimeridian.
fn center_strategy() -> impl Strategy<Value = GeoPoint> {
    prop_oneof![
        2 => point_strategy(85.0),
        1 => (-85.0..=85.0_f64, -0.2..=0.2_f64)
            .prop_map(|(lat, offset)| point(lat, if offset < 0.0 { -180.0 - offset } else { 180.0 - offset })),
    ]
}

/// The point `distance_m` from `start` in direction `bearing_degrees` (clockwise from north).
fn destination(start: GeoPoint, bearing_degrees: f64, distance_m: f64) -> GeoPoint {
    let angle = distance_m / EARTH_RADIUS_M;
    let bearing = bearing_degrees.to_radians();
    let start_lat = start.lat_degrees().to_radians();
    let lat = (start_lat.sin() * angle.cos() + start_lat.cos() * angle.sin() * bearing.cos())
        .clamp(-1.0, 1.0)
        .asin();
    let lon = start.lon_degrees().to_radians()
        + (bearing.sin() * angle.sin() * start_lat.cos())
            .atan2(angle.cos() - start_lat.sin() * lat.sin());
    let lon_degrees = (lon.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
    point(lat.to_degrees().clamp(-90.0, 90.0), lon_degrees)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cells_within_a_range_hold_every_point_within_it(
        center in center_strategy(),
        radius_m in 0..=5_000_u64,
        bearing in 0.0..360.0_f64,
        fraction in 0.0..=1.002_f64,
        precision in 1..=7_u8,
    ) {
        let target = destination(center, bearing, radius_m as f64 * fraction);
        let cells = grid(precision).cells_within(center, radius_m, 1_000_000).unwrap();
        prop_assert!(cells.windows(2).all(|pair| pair[0] < pair[1]), "sorted, unique");
        prop_assert!(cells.contains(&grid(precision).cell_of(center)));
        if center.distance_m(&target) <= radius_m {
            prop_assert!(
                cells.contains(&grid(precision).cell_of(target)),
                "{target:?} is {} m from {center:?}", center.distance_m(&target)
            );
        }
    }

    #[test]
    fn a_cell_is_a_prefix_of_its_finer_cells(point in point_strategy(90.0)) {
        let finest = grid(9).cell_of(point);
        for precision in 1..9 {
            let cell = grid(precision).cell_of(point);
            prop_assert_eq!(cell.len(), usize::from(precision));
            prop_assert!(finest.starts_with(&cell), "{} is not a prefix of {}", cell, finest);
        }
    }

    #[test]
    fn distance_is_a_metric_within_rounding(
        first in point_strategy(90.0),
        second in point_strategy(90.0),
        third in point_strategy(90.0),
    ) {
        prop_assert_eq!(first.distance_m(&first), 0);
        prop_assert_eq!(first.distance_m(&second), second.distance_m(&first));
        prop_assert!(
            first.distance_m(&third) <= first.distance_m(&second) + second.distance_m(&third) + 2
        );
    }

    #[test]
    fn nearby_points_obey_the_triangle_inequality(
        first in center_strategy(),
        bearings in (0.0..360.0_f64, 0.0..360.0_f64),
        distances in (0.0..3_000.0_f64, 0.0..3_000.0_f64),
    ) {
        let second = destination(first, bearings.0, distances.0);
        let third = destination(second, bearings.1, distances.1);
        prop_assert!(
            first.distance_m(&third) <= first.distance_m(&second) + second.distance_m(&third) + 2
        );
    }
}
