//! The open offers of mobile data listed in one geohash cell, the proximity search over them, and
//! the deterministic order that lets a requester's node merge the answers of many cells.
//!
//! An offer is listed in the cell of its place (see [`CellGrid::cell_of`]); a search for offers
//! within a range asks every cell the range overlaps ([`CellGrid::cells_within`]) and merges the
//! answers with [`merge_matches`]. [`ProximityIndex`] does the same over cells held in memory,
//! and [`scan_all`] is the exact baseline it must agree with.

use crate::model::geo::{CellGrid, GeoError, GeoPoint};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap, HashSet};
use thiserror::Error;

#[cfg(test)]
mod tests;

/// Most offers one cell lists.
pub const MAX_OFFERS_PER_CELL: usize = 5_000;

/// Why an offer was not listed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OfferCellError {
    /// The cell lists [`MAX_OFFERS_PER_CELL`] unexpired offers already.
    #[error("the cell lists {max} offers already")]
    CellFull {
        /// The cell's capacity.
        max: usize,
    },
}

/// An open offer as a cell lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedOffer {
    /// The share the offer opens.
    pub share_id: String,
    /// The sharer's account.
    pub sharer: String,
    /// Where the sharer is.
    pub location: GeoPoint,
    /// Bytes offered.
    pub amount_bytes: u64,
    /// Price per rating unit, in the currency's minor units.
    pub price_minor_per_unit: u64,
    /// ISO 4217 code, e.g. `CNY`.
    pub currency: String,
    /// When the offer was listed.
    pub listed_at_unix_ms: u64,
    /// When the offer ends (it is expired from this moment on).
    pub expires_at_unix_ms: u64,
}

/// A requester's search for offers near it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProximityQuery {
    /// Where the requester is.
    pub center: GeoPoint,
    /// How far an offer may be, in meters (inclusive).
    pub radius_m: u64,
    /// Offers of fewer bytes are left out.
    pub min_amount_bytes: u64,
    /// Offers of this account (the requester's own) are left out.
    pub exclude_sharer_opt: Option<String>,
    /// Most matches answered.
    pub limit: usize,
}

/// An offer that answers a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferMatch {
    /// The offer.
    pub offer: ListedOffer,
    /// Its distance from the query's centre, in meters.
    pub distance_m: u64,
}

/// The unexpired offers listed in one cell, by share id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferCell {
    /// Stored as a list of offers: the share id is in each.
    #[serde(with = "offers_as_list")]
    offers: BTreeMap<String, ListedOffer>,
}

impl OfferCell {
    /// Lists `offer`; `Ok(false)` when nothing changed (the same offer is listed already, or it
    /// is expired at `now_unix_ms`). A different offer under a listed share id replaces it.
    /// Expired offers make room for a new one; a cell still full refuses it.
    pub fn list(&mut self, offer: ListedOffer, now_unix_ms: u64) -> Result<bool, OfferCellError> {
        if offer.expires_at_unix_ms <= now_unix_ms {
            return Ok(false);
        }
        match self.offers.get(&offer.share_id) {
            Some(listed) if *listed == offer => return Ok(false),
            Some(_) => {}
            None => {
                if self.offers.len() >= MAX_OFFERS_PER_CELL {
                    self.drop_expired(now_unix_ms);
                }
                if self.offers.len() >= MAX_OFFERS_PER_CELL {
                    return Err(OfferCellError::CellFull {
                        max: MAX_OFFERS_PER_CELL,
                    });
                }
            }
        }
        self.offers.insert(offer.share_id.clone(), offer);
        Ok(true)
    }

    /// Removes the offer of `share_id`; whether it was listed.
    pub fn unlist(&mut self, share_id: &str) -> bool {
        self.offers.remove(share_id).is_some()
    }

    /// Removes the offers expired at `now_unix_ms`; how many.
    pub fn drop_expired(&mut self, now_unix_ms: u64) -> usize {
        let n_before = self.offers.len();
        self.offers
            .retain(|_, offer| offer.expires_at_unix_ms > now_unix_ms);
        n_before - self.offers.len()
    }

    /// The offers that answer `query` at `now_unix_ms`, best first (see [`scan_all`]).
    pub fn query(&self, query: &ProximityQuery, now_unix_ms: u64) -> Vec<OfferMatch> {
        scan_all(self.offers.values(), query, now_unix_ms)
    }

    /// Offers listed, expired ones included until dropped.
    pub fn len(&self) -> usize {
        self.offers.len()
    }

    /// Whether no offer is listed.
    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }
}

/// Serializes a cell's offers as a list, since each carries its share id.
mod offers_as_list {
    use super::{Deserialize, Deserializer, ListedOffer, Serializer};
    use std::collections::BTreeMap;

    pub(super) fn serialize<S: Serializer>(
        offers: &BTreeMap<String, ListedOffer>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(offers.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, ListedOffer>, D::Error> {
        let offers = Vec::<ListedOffer>::deserialize(deserializer)?;
        Ok(offers
            .into_iter()
            .map(|offer| (offer.share_id.clone(), offer))
            .collect())
    }
}

/// Orders matches best first: cheapest price, then nearest, then listed longest (earliest
/// `listed_at`), then by share id, then by the rest of the offer, so that the order is total
/// and merging the answers of several cells gives the same list in any arrival order.
pub fn order_matches(matches: &mut [OfferMatch]) {
    matches.sort_unstable_by(|first, second| order_key(first).cmp(&order_key(second)));
}

/// The fields [`order_matches`] compares, most significant first.
fn order_key(offer_match: &OfferMatch) -> (u64, u64, u64, &str, &str, &str, u64, u64, i32, i32) {
    let offer = &offer_match.offer;
    (
        offer.price_minor_per_unit,
        offer_match.distance_m,
        offer.listed_at_unix_ms,
        &offer.share_id,
        &offer.sharer,
        &offer.currency,
        offer.amount_bytes,
        offer.expires_at_unix_ms,
        offer.location.lat_e6(),
        offer.location.lon_e6(),
    )
}

/// Merges the answers of several cells: the best `limit` matches, ordered by [`order_matches`],
/// each share once (its best match when cells disagree).
pub fn merge_matches(per_cell: Vec<Vec<OfferMatch>>, limit: usize) -> Vec<OfferMatch> {
    let mut matches: Vec<OfferMatch> = per_cell.into_iter().flatten().collect();
    order_matches(&mut matches);
    let mut seen_share_ids = HashSet::new();
    matches.retain(|offer_match| seen_share_ids.insert(offer_match.offer.share_id.clone()));
    matches.truncate(limit);
    matches
}

/// The baseline search, with no index: every offer of `offers` unexpired at `now_unix_ms`, at
/// most `radius_m` from the centre, of at least `min_amount_bytes`, not the excluded sharer's;
/// ordered by [`order_matches`] and cut to `limit`.
pub fn scan_all<'a>(
    offers: impl IntoIterator<Item = &'a ListedOffer>,
    query: &ProximityQuery,
    now_unix_ms: u64,
) -> Vec<OfferMatch> {
    let mut matches: Vec<OfferMatch> = offers
        .into_iter()
        .filter(|offer| {
            offer.expires_at_unix_ms > now_unix_ms
                && offer.amount_bytes >= query.min_amount_bytes
                && query.exclude_sharer_opt.as_deref() != Some(offer.sharer.as_str())
        })
        .filter_map(|offer| {
            let distance_m = query.center.distance_m(&offer.location);
            (distance_m <= query.radius_m).then(|| OfferMatch {
                offer: offer.clone(),
                distance_m,
            })
        })
        .collect();
    order_matches(&mut matches);
    matches.truncate(query.limit);
    matches
}

/// An in-memory index over many cells: what a node holding every listing would do. The
/// benchmark uses it, and tests check that searching cell by cell finds exactly what
/// [`scan_all`] finds.
#[derive(Debug, Clone)]
pub struct ProximityIndex {
    grid: CellGrid,
    cells: HashMap<String, OfferCell>,
}

impl ProximityIndex {
    /// An empty index over `grid`'s cells.
    pub fn new(grid: CellGrid) -> Self {
        Self {
            grid,
            cells: HashMap::new(),
        }
    }

    /// Lists `offer` in the cell of its location (see [`OfferCell::list`]). An offer that moves
    /// must be unlisted from its former location first.
    pub fn list(&mut self, offer: ListedOffer, now_unix_ms: u64) -> Result<bool, OfferCellError> {
        let cell_name = self.grid.cell_of(offer.location);
        let cell = self.cells.entry(cell_name.clone()).or_default();
        let listed = cell.list(offer, now_unix_ms);
        if cell.is_empty() {
            self.cells.remove(&cell_name);
        }
        listed
    }

    /// Removes the offer of `share_id` listed at `location`; whether it was listed.
    pub fn unlist(&mut self, share_id: &str, location: GeoPoint) -> bool {
        let cell_name = self.grid.cell_of(location);
        let Some(cell) = self.cells.get_mut(&cell_name) else {
            return false;
        };
        let was_listed = cell.unlist(share_id);
        if cell.is_empty() {
            self.cells.remove(&cell_name);
        }
        was_listed
    }

    /// Answers `query` from the cells its range overlaps, refusing a range over more than
    /// `max_cells` cells.
    pub fn query(
        &self,
        query: &ProximityQuery,
        now_unix_ms: u64,
        max_cells: usize,
    ) -> Result<Vec<OfferMatch>, GeoError> {
        let per_cell = self
            .grid
            .cells_within(query.center, query.radius_m, max_cells)?
            .iter()
            .filter_map(|cell_name| self.cells.get(cell_name))
            .map(|cell| cell.query(query, now_unix_ms))
            .collect();
        Ok(merge_matches(per_cell, query.limit))
    }

    /// Offers listed in all cells.
    pub fn len(&self) -> usize {
        self.cells.values().map(OfferCell::len).sum()
    }

    /// Whether no offer is listed.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}
