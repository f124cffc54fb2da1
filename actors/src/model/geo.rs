//! Places on Earth in integer microdegrees, the great-circle distance between two of them, and the
//! geohash grid that splits the surface into cells: an offer of mobile data is listed in the cell
//! of its place, and a search for offers within a range reads the cells the range overlaps.
//!
//! # Cells
//!
//! At precision `p` (characters) a geohash splits longitude into `2^ceil(5p/2)` columns and
//! latitude into `2^floor(5p/2)` rows; a cell's name interleaves the bits of its column and row,
//! longitude first, five bits a character. The grid works on whole microdegrees with integer
//! arithmetic, so a point's cell never depends on floating-point rounding.

use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;
use thiserror::Error;

#[cfg(test)]
mod tests;

/// The Earth's mean radius (IUGG), in meters.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;
/// The geohash precisions a [`CellGrid`] accepts, in characters.
pub const PRECISION_CHARS: RangeInclusive<u8> = 1..=9;

const MICRODEGREES_PER_DEGREE: f64 = 1_000_000.0;
const MAX_LAT_E6: i64 = 90_000_000;
const MAX_LON_E6: i64 = 180_000_000;
const GEOHASH_ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// Why a place or a grid was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GeoError {
    /// A coordinate is NaN or infinite.
    #[error("coordinates ({lat}, {lon}) are not finite numbers")]
    NotFinite {
        /// The latitude given, in degrees.
        lat: f64,
        /// The longitude given, in degrees.
        lon: f64,
    },
    /// The latitude is beyond a pole.
    #[error("latitude {latitude} is outside -90..=90")]
    LatitudeOutOfRange {
        /// The latitude given, in degrees.
        latitude: f64,
    },
    /// The longitude is beyond the antimeridian.
    #[error("longitude {longitude} is outside -180..=180")]
    LongitudeOutOfRange {
        /// The longitude given, in degrees.
        longitude: f64,
    },
    /// The geohash precision is not in [`PRECISION_CHARS`].
    #[error("geohash precision {precision} is outside 1..=9")]
    PrecisionOutOfRange {
        /// The precision given, in characters.
        precision: u8,
    },
    /// The range overlaps more cells than the caller allows.
    #[error("the range overlaps {n_cells} cells, more than the limit of {max}")]
    TooManyCells {
        /// Cells the range's bounding box overlaps.
        n_cells: u64,
        /// The caller's limit.
        max: usize,
    },
}

/// A place on Earth, in whole microdegrees (about 11 cm of latitude); always in range, also when
/// deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawGeoPoint")]
pub struct GeoPoint {
    lat_e6: i32,
    lon_e6: i32,
}

/// A [`GeoPoint`] as stored or sent, before its range is checked.
#[derive(Deserialize)]
struct RawGeoPoint {
    lat_e6: i64,
    lon_e6: i64,
}

impl TryFrom<RawGeoPoint> for GeoPoint {
    type Error = GeoError;

    fn try_from(raw: RawGeoPoint) -> Result<Self, GeoError> {
        Self::from_e6(raw.lat_e6, raw.lon_e6)
    }
}

impl GeoPoint {
    /// The point at `lat` and `lon` degrees, rounded to the nearest microdegree; refuses NaN,
    /// infinities, `|lat| > 90` and `|lon| > 180`.
    pub fn from_degrees(lat: f64, lon: f64) -> Result<Self, GeoError> {
        if !lat.is_finite() || !lon.is_finite() {
            return Err(GeoError::NotFinite { lat, lon });
        }
        if !(-90.0..=90.0).contains(&lat) {
            return Err(GeoError::LatitudeOutOfRange { latitude: lat });
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(GeoError::LongitudeOutOfRange { longitude: lon });
        }
        Self::from_e6(
            (lat * MICRODEGREES_PER_DEGREE).round() as i64,
            (lon * MICRODEGREES_PER_DEGREE).round() as i64,
        )
    }

    /// The point at `lat_e6` and `lon_e6` microdegrees; refuses `|lat| > 90°` and `|lon| > 180°`.
    pub fn from_e6(lat_e6: i64, lon_e6: i64) -> Result<Self, GeoError> {
        let lat_e6_checked =
            in_range_e6(lat_e6, MAX_LAT_E6).ok_or(GeoError::LatitudeOutOfRange {
                latitude: lat_e6 as f64 / MICRODEGREES_PER_DEGREE,
            })?;
        let lon_e6_checked =
            in_range_e6(lon_e6, MAX_LON_E6).ok_or(GeoError::LongitudeOutOfRange {
                longitude: lon_e6 as f64 / MICRODEGREES_PER_DEGREE,
            })?;
        Ok(Self {
            lat_e6: lat_e6_checked,
            lon_e6: lon_e6_checked,
        })
    }

    /// The latitude, in microdegrees (north positive).
    pub fn lat_e6(&self) -> i32 {
        self.lat_e6
    }

    /// The longitude, in microdegrees (east positive).
    pub fn lon_e6(&self) -> i32 {
        self.lon_e6
    }

    /// The latitude, in degrees.
    pub fn lat_degrees(&self) -> f64 {
        f64::from(self.lat_e6) / MICRODEGREES_PER_DEGREE
    }

    /// The longitude, in degrees.
    pub fn lon_degrees(&self) -> f64 {
        f64::from(self.lon_e6) / MICRODEGREES_PER_DEGREE
    }

    /// The great-circle (haversine) distance to `other` on a sphere of [`EARTH_RADIUS_M`], rounded
    /// to the meter; exactly symmetric.
    pub fn distance_m(&self, other: &GeoPoint) -> u64 {
        let self_lat = self.lat_degrees().to_radians();
        let other_lat = other.lat_degrees().to_radians();
        // Absolute differences, so that swapping the points computes the very same floats.
        let half_lat_difference = (other_lat - self_lat).abs() / 2.0;
        let half_lon_difference = (other.lon_degrees() - self.lon_degrees())
            .abs()
            .to_radians()
            / 2.0;
        let haversine = half_lat_difference.sin().powi(2)
            + self_lat.cos() * other_lat.cos() * half_lon_difference.sin().powi(2);
        let central_angle = 2.0 * haversine.sqrt().min(1.0).asin();
        (EARTH_RADIUS_M * central_angle).round() as u64
    }
}

/// `value_e6` as an `i32` if it is within `±max_e6`.
fn in_range_e6(value_e6: i64, max_e6: i64) -> Option<i32> {
    if (-max_e6..=max_e6).contains(&value_e6) {
        i32::try_from(value_e6).ok()
    } else {
        None
    }
}

/// The geohash grid at one precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellGrid {
    precision: u8,
}

impl CellGrid {
    /// The grid of geohashes `precision` characters long, within [`PRECISION_CHARS`].
    pub fn new(precision: u8) -> Result<Self, GeoError> {
        if PRECISION_CHARS.contains(&precision) {
            Ok(Self { precision })
        } else {
            Err(GeoError::PrecisionOutOfRange { precision })
        }
    }

    /// The length of the grid's cell names, in characters.
    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// The name of the cell holding `point`: its standard geohash at the grid's precision. The
    /// north pole and the antimeridian (+180°) belong to the last row and column.
    pub fn cell_of(&self, point: GeoPoint) -> String {
        let column = grid_index(i64::from(point.lon_e6), MAX_LON_E6, self.n_lon_bits());
        let row = grid_index(i64::from(point.lat_e6), MAX_LAT_E6, self.n_lat_bits());
        self.cell_name(
            column.min((1 << self.n_lon_bits()) - 1),
            row.min((1 << self.n_lat_bits()) - 1),
        )
    }

    /// The names, sorted, of every cell that holds a point whose [`GeoPoint::distance_m`] from
    /// `center` is at most `radius_m`: the cells overlapping the range's latitude/longitude
    /// bounding box (a meter wider, for the rounding of distances), across the antimeridian and
    /// around a pole. Usually a radius of 0 names only the centre's cell, but a centre within a
    /// meter of a cell's edge also names the neighbour. Refuses a box of more than `max_cells`.
    pub fn cells_within(
        &self,
        center: GeoPoint,
        radius_m: u64,
        max_cells: usize,
    ) -> Result<Vec<String>, GeoError> {
        let n_columns: i64 = 1 << self.n_lon_bits();
        let n_rows: i64 = 1 << self.n_lat_bits();
        // Half a meter for the rounding of distances, half for floating-point error.
        let span_degrees = ((radius_m as f64 + 1.0) / EARTH_RADIUS_M).to_degrees();
        let lat_span_e6 = (span_degrees * MICRODEGREES_PER_DEGREE)
            .ceil()
            .min(2.0 * MAX_LAT_E6 as f64) as i64;
        let lat_low_e6 = i64::from(center.lat_e6) - lat_span_e6;
        let lat_high_e6 = i64::from(center.lat_e6) + lat_span_e6;
        let first_row = grid_index(lat_low_e6.max(-MAX_LAT_E6), MAX_LAT_E6, self.n_lat_bits());
        let last_row =
            grid_index(lat_high_e6.min(MAX_LAT_E6), MAX_LAT_E6, self.n_lat_bits()).min(n_rows - 1);

        let all_columns = (0, n_columns - 1);
        let (first_column, last_column) = if lat_low_e6 <= -MAX_LAT_E6 || lat_high_e6 >= MAX_LAT_E6
        {
            all_columns
        } else {
            // Along any path from the centre the longitude changes at most by the path's length
            // over the cosine of the latitude farthest from the equator the path can reach.
            let edge_lat_e6 = lat_low_e6.abs().max(lat_high_e6.abs());
            let edge_lat = (edge_lat_e6 as f64 / MICRODEGREES_PER_DEGREE).to_radians();
            let lon_span_degrees = span_degrees / edge_lat.cos();
            if lon_span_degrees >= 180.0 {
                all_columns
            } else {
                let lon_span_e6 = (lon_span_degrees * MICRODEGREES_PER_DEGREE).ceil() as i64;
                let center_lon_e6 = i64::from(center.lon_e6);
                // Unwrapped: below 0 or from `n_columns` on, columns continue across the
                // antimeridian.
                let first = grid_index(center_lon_e6 - lon_span_e6, MAX_LON_E6, self.n_lon_bits());
                let last = grid_index(center_lon_e6 + lon_span_e6, MAX_LON_E6, self.n_lon_bits());
                if last - first + 1 >= n_columns {
                    all_columns
                } else {
                    (first, last)
                }
            }
        };

        let n_cells = (last_column - first_column + 1) as u64 * (last_row - first_row + 1) as u64;
        if n_cells > max_cells as u64 {
            return Err(GeoError::TooManyCells {
                n_cells,
                max: max_cells,
            });
        }
        let mut cells: Vec<String> = (first_column..=last_column)
            .flat_map(|column| {
                (first_row..=last_row).map(move |row| (column.rem_euclid(n_columns), row))
            })
            .map(|(column, row)| self.cell_name(column, row))
            .collect();
        cells.sort_unstable();
        Ok(cells)
    }

    /// Bits of longitude in a cell's name.
    fn n_lon_bits(&self) -> u32 {
        (5 * u32::from(self.precision)).div_ceil(2)
    }

    /// Bits of latitude in a cell's name.
    fn n_lat_bits(&self) -> u32 {
        5 * u32::from(self.precision) / 2
    }

    /// The geohash of the cell at `column` and `row` (both within the grid).
    fn cell_name(&self, column: i64, row: i64) -> String {
        let n_bits = 5 * u32::from(self.precision);
        let mut bits: i64 = 0;
        for position in 0..n_bits {
            // Even positions, from the most significant, carry longitude; odd ones latitude.
            let bit = if position % 2 == 0 {
                column >> (self.n_lon_bits() - 1 - position / 2)
            } else {
                row >> (self.n_lat_bits() - 1 - position / 2)
            };
            bits = (bits << 1) | (bit & 1);
        }
        (0..u32::from(self.precision))
            .rev()
            .map(|character| {
                let symbol = ((bits >> (5 * character)) & 31) as usize;
                GEOHASH_ALPHABET
                    .get(symbol)
                    .map_or('0', |byte| char::from(*byte))
            })
            .collect()
    }
}

/// The slice of `2^n_bits` equal slices of `-max_e6..=max_e6` that holds `value_e6`; a value
/// outside that range gives a slice below 0 or from `2^n_bits` on, and `max_e6` itself gives
/// `2^n_bits`.
fn grid_index(value_e6: i64, max_e6: i64, n_bits: u32) -> i64 {
    ((value_e6 + max_e6) * (1 << n_bits)).div_euclid(2 * max_e6)
}
