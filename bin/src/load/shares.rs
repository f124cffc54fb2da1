//! `lanmesh-load shares`: traffic sharing (issue 9, S4) — proximity search in process and over
//! the edge, the offer write path and usage reports through the share entity — next to an exact
//! scan and the raw broker round trip measured in the same run.
//!
//! Three phases, each timed for `duration`:
//! 1. **Proximity, in process, before any node starts.** `n_offers` active offers at
//!    pseudo-random points (fixed seed) of a [`CITY_SIDE_M`] square around 31.23 N, 121.47 E,
//!    with random amounts, prices and sharers, are listed in a [`ProximityIndex`] of geohash
//!    cells of [`CELL_PRECISION`] characters. Queries at pseudo-random points of the same square
//!    (radius `range_m`, at least [`WANTED_BYTES`], one random sharer left out, no cut on the
//!    number of matches) run one after the other: first through [`scan_all`] over every offer
//!    (the baseline), then through [`ProximityIndex::query`], both on the same sequence of
//!    queries. An untimed pass then asks the index again for every query the scan answered and
//!    counts the answers whose share ids (in order) differ: each is an error. Another untimed
//!    pass counts the cells each index query asked.
//! 2. **Offers and `share.find` over the edge.** Set-up, not timed: the scenario spawns its own
//!    cluster (`n_nodes`, per-run cluster name, the nodes' daily share caps raised so that each
//!    sharer may make its offers) and signs up `n_sharers` sharers and as many requesters as
//!    the larger of `n_connections` and `n_shares` (`account.register` then `session.login`, one
//!    WebSocket each, round robin over the nodes). Timed: the sharers, each a closed loop on its
//!    own connection, make `n_cluster_offers` offers of [`OFFER_BYTES`] with `share.offer` at
//!    pseudo-random points of a [`CLUSTER_SIDE_M`] square (the write path: the user entity
//!    reserves today's allowance, the share entity opens and saves the share, and tells the
//!    offer cell to list it); its rate is over the offers alone, not over `duration`. Then
//!    `n_connections` requesters run closed loops of `share.find` for [`WANTED_BYTES`] at
//!    pseudo-random points of that square.
//! 3. **Usage reports through the share entity.** Set-up, not timed: `n_shares` requesters each
//!    take a distinct offer of phase 2 by its share id with `share.request` (from the offer's own
//!    place) and start it with `share.start` and the password relayed. Timed: each runs a closed
//!    loop of `share.report_usage` with totals growing by [`REPORT_STEP_BYTES`], never above the
//!    bytes granted by the previous answer; before a share holds [`MAX_USAGE_REPORTS`] reports,
//!    or when a report is refused with `too_many`, the requester takes and starts its next
//!    offer (inside the timed loop; those requests are not counted as reports). Afterwards each
//!    share's sharer reads it with `share.get`, and its `used_bytes` must equal the last total
//!    acknowledged (each difference is an error), and the stored records of an untouched offer
//!    and of the share with the most reports are measured in the nodes' SQLite file.
//!
//! The nodes' bus counters are read before and after each timed edge phase (publishes per
//! operation). Baselines, after the nodes have stopped: raw lapin request/reply on the same
//! broker (the `entities` scenario's helper: two confirmed persistent publishes per round trip),
//! one at a time and `n_connections` at once.

use crate::edge::protocol::{ErrorBody, ErrorCode, Mode};
use crate::edge::share_wire::{
    FindReply, OfferReply, OfferRequest, RequestReply, ShareRef, ShareReplyBody, ShareSearch,
    StartReply, StartRequest, UsageReply, UsageRequest,
};
use crate::load::campaigns::{
    BusCounters, CLUSTER_DATABASE_FILE, REPLY_TIMEOUT, SETTLE_TIMEOUT, broker_baseline,
    bus_counters, code_name, counts_text, short_id, stored_bytes, write_broker_baselines,
};
use crate::load::local_cluster::{ClusterSpec, LocalCluster};
use crate::load::ws_client::ImClient;
use crate::load::{LatencyMeasurement, load_node_env, measure_on_spawned};
use anyhow::{Context, bail};
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_actors::model::geo::{CellGrid, EARTH_RADIUS_M, GeoPoint};
use lanmesh_actors::model::offer_cell::{
    ListedOffer, OfferMatch, ProximityIndex, ProximityQuery, scan_all,
};
use lanmesh_actors::model::share::MAX_USAGE_REPORTS;
use lanmesh_storage::SqliteConfig;
use lanmesh_storage::sqlite::SqliteStore;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Geohash characters of the cells of phase 1 (the nodes' default `share.cell_precision`).
pub const CELL_PRECISION: u8 = 6;
/// Most cells one in-process query may ask (as the edge's limit per search).
const MAX_CELLS_PER_QUERY: usize = 64;
/// Centre of both squares: latitude, longitude in degrees (Shanghai).
const CENTER_DEGREES: (f64, f64) = (31.23, 121.47);
/// Side of phase 1's square, in meters.
pub const CITY_SIDE_M: f64 = 30_000.0;
/// Side of the square phases 2 and 3 offer and search in, in meters.
pub const CLUSTER_SIDE_M: f64 = 3_000.0;
/// Seed of phase 1's offers.
const CITY_SEED: u64 = 0x5348_4152_4553_0001;
/// Seed of phase 1's queries (the same sequence for the scan, the index and the checks).
const QUERY_SEED: u64 = 0x5348_4152_4553_0002;
/// Seed of phases 2 and 3 (mixed with the lane's number).
const CLUSTER_SEED: u64 = 0x5348_4152_4553_0003;
/// Distinct sharers of phase 1's offers.
const N_CITY_SHARERS: u64 = 10_000;
/// The clock of phase 1: every offer is listed before and expires after it.
const PROXIMITY_NOW_MS: u64 = 1_800_000_000_000;
const MIB: u64 = 1 << 20;
/// Bytes every query, find and request of the run asks for at least.
pub const WANTED_BYTES: u64 = 64 * MIB;
/// Bytes of each offer of phases 2 and 3 (and asked for by `share.request`).
pub const OFFER_BYTES: u64 = 1 << 30;
/// Bytes each usage report adds to the total.
pub const REPORT_STEP_BYTES: u64 = 64 * 1024;
/// Reports a requester makes on one share before it moves to the next.
const REPORTS_PER_SHARE: usize = MAX_USAGE_REPORTS - 1;
/// Highest price per unit of the run's offers, in minor units.
const MAX_PRICE_MINOR: u64 = 100;
/// Currency of every offer.
const CURRENCY: &str = "CNY";
/// How long each offer of phase 2 lasts.
const OFFER_VALIDITY_MS: u64 = 3_600_000;
/// The nodes' `share.max_results`: most offers one `share.find` answers.
pub const NODE_MAX_RESULTS: usize = 20;
/// The nodes' daily byte caps, offered and requested, per account (high enough never to refuse).
const DAILY_BYTES_CAP: u64 = 1 << 40;
/// Daily shares per account the nodes allow at least (their default).
const MIN_SHARES_PER_DAY: usize = 50;
/// The most `share.max_shares_per_day` may be.
const MAX_SHARES_PER_DAY: usize = 10_000;
/// Every account's password.
const ACCOUNT_PASSWORD: &str = "bench share password";
/// How long the first offer may take to show up in `share.find`.
const LISTED_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks for it.
const LISTED_POLL: Duration = Duration::from_millis(50);
/// Pause after a refused request, so that a refusal cannot spin.
const PAUSE_AFTER_REFUSAL: Duration = Duration::from_millis(100);
/// Offers a requester tries in a row before it gives up finding a share it can start.
const MAX_OPEN_ATTEMPTS: usize = 8;
/// Meters per degree of latitude.
const METERS_PER_DEGREE: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct SharesBenchSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// Nodes to spawn.
    pub n_nodes: usize,
    /// Shards of the cluster.
    pub n_shards: u16,
    /// How long each timed part runs (the offers of phase 2 excepted).
    pub duration: Duration,
    /// Offers of phase 1.
    pub n_offers: usize,
    /// Search radius of every phase, in meters (the nodes' `share.range_m`).
    pub range_m: u64,
    /// Sharer accounts of phase 2.
    pub n_sharers: usize,
    /// Offers they make together.
    pub n_cluster_offers: usize,
    /// Requester connections running `share.find`.
    pub n_connections: usize,
    /// Requesters reporting usage, one share at a time each.
    pub n_shares: usize,
    /// The `lanmesh-node` executable (default: beside this executable).
    pub node_binary_opt: Option<PathBuf>,
}

/// One side of phase 1.
#[derive(Debug, Clone, Serialize)]
pub struct ProximitySide {
    /// Queries answered, one at a time, with their latency.
    pub queries: LatencyMeasurement,
    /// Offers per answer, on average.
    pub mean_offers_returned: f64,
    /// Cells asked per query, on average (the index only).
    pub mean_cells_asked_opt: Option<f64>,
}

/// Phase 1: the proximity index against the scan, in process.
#[derive(Debug, Clone, Serialize)]
pub struct ProximityPhase {
    /// Offers listed.
    pub n_offers: usize,
    /// Side of the square they are in, in meters.
    pub side_m: f64,
    /// Geohash characters of the cells.
    pub cell_precision: u8,
    /// Cells holding at least one offer.
    pub n_cells_listed: usize,
    /// Search radius, in meters.
    pub radius_m: u64,
    /// [`ProximityIndex::query`].
    pub index: ProximitySide,
    /// [`scan_all`] over every offer: the baseline.
    pub scan: ProximitySide,
    /// Index queries per second over scan queries per second.
    pub index_over_scan: f64,
    /// Queries both answered and compared.
    pub n_compared: u64,
    /// Those whose answers (share ids in order) differ: each is an error.
    pub n_mismatches: u64,
}

/// One timed edge phase: an operation in closed loops.
#[derive(Debug, Clone, Serialize)]
pub struct EdgePhase {
    /// The operation and who sent it.
    pub name: String,
    /// Connections, each with one request outstanding.
    pub n_connections: usize,
    /// Requests answered `ok`, their rate and latency; refused and failed ones are `n_errors`.
    pub requests: LatencyMeasurement,
    /// Refusals, by error code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Requests that got no answer.
    pub n_failed: u64,
    /// The nodes' bus counters over the phase.
    pub bus: BusCounters,
    /// `bus.n_published` per request answered `ok`.
    pub published_per_request: f64,
}

/// Phase 2: offers made and searched.
#[derive(Debug, Clone, Serialize)]
pub struct OfferPhases {
    /// Side of the square, in meters.
    pub side_m: f64,
    /// Offers asked of the sharers.
    pub n_offers_asked: usize,
    /// `share.offer`, the sharers each a closed loop.
    pub offers: EdgePhase,
    /// `share.find` by the requester connections.
    pub finds: EdgePhase,
    /// Offers per `share.find` answer, on average.
    pub mean_offers_found: f64,
    /// The nodes' `share.max_results`: the most one answer holds.
    pub max_results: usize,
}

/// Phase 3: usage reports.
#[derive(Debug, Clone, Serialize)]
pub struct UsagePhase {
    /// `share.report_usage`, each requester a closed loop on its share.
    pub reports: EdgePhase,
    /// Bytes each report adds.
    pub report_step_bytes: u64,
    /// Shares reported on.
    pub n_shares_used: usize,
    /// Times a requester moved to its next share inside the timed loop.
    pub n_moves: u64,
    /// Refusals of `share.request` and `share.start`, set-up included, by code.
    pub open_errors_by_code: BTreeMap<String, u64>,
    /// The most reports one share got.
    pub max_reports_on_a_share: usize,
    /// Shares read back by their sharer after the phase.
    pub n_checked: usize,
    /// Those whose `used_bytes` is not the last total acknowledged: each is an error.
    pub n_used_mismatches: usize,
    /// Stored record of a share offered and never requested.
    pub offered_record_bytes_opt: Option<usize>,
    /// Stored record of the share with the most reports.
    pub reported_record_bytes_opt: Option<usize>,
}

/// The cluster phases 2 and 3 ran on.
#[derive(Debug, Clone, Serialize)]
pub struct SpawnedCluster {
    /// Its name (the prefix of its exchanges and queues).
    pub name: String,
    /// Its nodes.
    pub n_nodes: usize,
    /// Its shards.
    pub n_shards: u16,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct SharesBenchReport {
    /// Seconds of each timed part.
    pub seconds_per_part: f64,
    /// Where phases 2 and 3 ran.
    pub cluster: SpawnedCluster,
    /// Phase 1.
    pub proximity: ProximityPhase,
    /// Phase 2.
    pub offers: OfferPhases,
    /// Phase 3.
    pub usage: UsagePhase,
    /// Raw lapin request/reply (two confirmed publishes), one at a time.
    pub broker_single: LatencyMeasurement,
    /// Raw lapin request/reply, `n_connections` at once.
    pub broker_concurrent: LatencyMeasurement,
    /// What went wrong (answers that differ, totals not kept); empty when nothing did.
    pub problems: Vec<String>,
}

/// A small deterministic generator (splitmix64), so that every run draws the same points.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// Uniform in `low..=high` (near enough: the modulo bias is below 2⁻⁴⁰ here).
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high.saturating_sub(low).saturating_add(1)).max(1)
    }
}

/// A square of `side_m` around [`CENTER_DEGREES`].
#[derive(Debug, Clone, Copy)]
struct Square {
    side_m: f64,
}

impl Square {
    /// A pseudo-random point of the square.
    fn point(self, rng: &mut SplitMix64) -> anyhow::Result<GeoPoint> {
        let (center_lat, center_lon) = CENTER_DEGREES;
        let lat = center_lat + (rng.unit() - 0.5) * self.side_m / METERS_PER_DEGREE;
        let meters_per_lon_degree = METERS_PER_DEGREE * center_lat.to_radians().cos();
        let lon = center_lon + (rng.unit() - 0.5) * self.side_m / meters_per_lon_degree;
        GeoPoint::from_degrees(lat, lon).context("a point of the square")
    }
}

/// The `index`-th offer of phase 1.
fn city_offer(rng: &mut SplitMix64, index: usize) -> anyhow::Result<ListedOffer> {
    let square = Square {
        side_m: CITY_SIDE_M,
    };
    Ok(ListedOffer {
        share_id: format!("c{index:07}"),
        sharer: city_sharer(rng.between(0, N_CITY_SHARERS - 1)),
        location: square.point(rng)?,
        amount_bytes: rng.between(1, 10_240) * MIB,
        price_minor_per_unit: rng.between(1, MAX_PRICE_MINOR),
        currency: CURRENCY.to_owned(),
        listed_at_unix_ms: PROXIMITY_NOW_MS - rng.between(0, 3_600_000),
        expires_at_unix_ms: PROXIMITY_NOW_MS + rng.between(60_000, 86_400_000),
    })
}

fn city_sharer(index: u64) -> String {
    format!("citysharer{index}")
}

/// Phase 1's queries, the same sequence from every new stream.
struct QueryStream {
    rng: SplitMix64,
    radius_m: u64,
}

impl QueryStream {
    fn new(radius_m: u64) -> Self {
        Self {
            rng: SplitMix64::new(QUERY_SEED),
            radius_m,
        }
    }

    fn next_query(&mut self) -> anyhow::Result<ProximityQuery> {
        let square = Square {
            side_m: CITY_SIDE_M,
        };
        Ok(ProximityQuery {
            center: square.point(&mut self.rng)?,
            radius_m: self.radius_m,
            min_amount_bytes: WANTED_BYTES,
            exclude_sharer_opt: Some(city_sharer(self.rng.between(0, N_CITY_SHARERS - 1))),
            limit: usize::MAX,
        })
    }
}

/// What one timed side of phase 1 did.
struct TimedQueries {
    latencies: Vec<Duration>,
    n_returned: u64,
    elapsed: Duration,
}

/// Answers queries of a new [`QueryStream`] one after the other with `answer` for `duration`,
/// handing each answer to `keep` outside the clock of its query.
fn time_queries(
    radius_m: u64,
    duration: Duration,
    mut answer: impl FnMut(&ProximityQuery) -> anyhow::Result<Vec<OfferMatch>>,
    mut keep: impl FnMut(Vec<OfferMatch>),
) -> anyhow::Result<TimedQueries> {
    let mut queries = QueryStream::new(radius_m);
    let mut latencies = Vec::new();
    let mut n_returned = 0_u64;
    let started = std::time::Instant::now();
    while started.elapsed() < duration {
        let query = queries.next_query()?;
        let sent = std::time::Instant::now();
        let found = answer(&query)?;
        latencies.push(sent.elapsed());
        n_returned += found.len() as u64;
        keep(found);
    }
    Ok(TimedQueries {
        latencies,
        n_returned,
        elapsed: started.elapsed(),
    })
}

fn share_ids(found: &[OfferMatch]) -> Vec<String> {
    found
        .iter()
        .map(|offer_match| offer_match.offer.share_id.clone())
        .collect()
}

fn mean(total: u64, count: usize) -> f64 {
    total as f64 / count.max(1) as f64
}

/// Phase 1, in process (CPU-bound: run it off the async reactor).
fn proximity_phase(
    n_offers: usize,
    radius_m: u64,
    duration: Duration,
) -> anyhow::Result<ProximityPhase> {
    let grid = CellGrid::new(CELL_PRECISION)?;
    let mut rng = SplitMix64::new(CITY_SEED);
    let offers = (0..n_offers)
        .map(|index| city_offer(&mut rng, index))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut index = ProximityIndex::new(grid);
    for offer in &offers {
        if !index.list(offer.clone(), PROXIMITY_NOW_MS)? {
            bail!("offer {} was not listed", offer.share_id);
        }
    }
    let n_cells_listed = offers
        .iter()
        .map(|offer| grid.cell_of(offer.location))
        .collect::<HashSet<_>>()
        .len();
    tracing::info!(n_offers, n_cells_listed, "proximity: scanning every offer");
    let mut scanned_ids = Vec::new();
    let scan = time_queries(
        radius_m,
        duration,
        |query| Ok(scan_all(&offers, query, PROXIMITY_NOW_MS)),
        |found| scanned_ids.push(share_ids(&found)),
    )?;
    tracing::info!("proximity: asking the index");
    let indexed = time_queries(
        radius_m,
        duration,
        |query| Ok(index.query(query, PROXIMITY_NOW_MS, MAX_CELLS_PER_QUERY)?),
        drop,
    )?;
    tracing::info!("proximity: comparing");
    let mut queries = QueryStream::new(radius_m);
    let mut n_mismatches = 0_u64;
    for scanned in &scanned_ids {
        let query = queries.next_query()?;
        let found = index.query(&query, PROXIMITY_NOW_MS, MAX_CELLS_PER_QUERY)?;
        if share_ids(&found) != *scanned {
            n_mismatches += 1;
        }
    }
    let mut queries = QueryStream::new(radius_m);
    let mut n_cells_asked = 0_u64;
    for _ in 0..indexed.latencies.len() {
        let query = queries.next_query()?;
        n_cells_asked += grid
            .cells_within(query.center, query.radius_m, MAX_CELLS_PER_QUERY)?
            .len() as u64;
    }
    let n_index_queries = indexed.latencies.len();
    let n_scan_queries = scan.latencies.len();
    let index_side = ProximitySide {
        queries: LatencyMeasurement::new(
            "ProximityIndex::query",
            indexed.latencies,
            0,
            indexed.elapsed,
        ),
        mean_offers_returned: mean(indexed.n_returned, n_index_queries),
        mean_cells_asked_opt: Some(mean(n_cells_asked, n_index_queries)),
    };
    let scan_side = ProximitySide {
        queries: LatencyMeasurement::new("scan_all (baseline)", scan.latencies, 0, scan.elapsed),
        mean_offers_returned: mean(scan.n_returned, n_scan_queries),
        mean_cells_asked_opt: None,
    };
    Ok(ProximityPhase {
        n_offers,
        side_m: CITY_SIDE_M,
        cell_precision: CELL_PRECISION,
        n_cells_listed,
        radius_m,
        index_over_scan: index_side.queries.requests_per_second
            / scan_side.queries.requests_per_second.max(f64::MIN_POSITIVE),
        index: index_side,
        scan: scan_side,
        n_compared: scanned_ids.len() as u64,
        n_mismatches,
    })
}

/// An account signed up and logged in on a connection of its own.
struct Account {
    client: ImClient,
    key: String,
}

impl Account {
    /// Sends `op` with the account's key.
    async fn ask<B: Serialize, R: DeserializeOwned>(
        &mut self,
        op: &str,
        body: &B,
    ) -> anyhow::Result<Result<R, ErrorBody>> {
        self.client.request(op, Some(&self.key), body).await
    }
}

/// Registers `username` on the node at `address` and logs it in there.
async fn sign_up(address: &str, username: &str) -> anyhow::Result<Account> {
    let mut client = ImClient::connect(address).await?;
    client.set_reply_timeout(REPLY_TIMEOUT);
    client
        .register(username, ACCOUNT_PASSWORD, username)
        .await?
        .map_err(|error| anyhow::anyhow!("account.register refused: {}", error.message))?;
    let session = client
        .login(username, ACCOUNT_PASSWORD, "bench", Mode::Client)
        .await?
        .map_err(|error| anyhow::anyhow!("session.login refused: {}", error.message))?;
    let key = session
        .key
        .context("session.login answered without a key")?;
    Ok(Account { client, key })
}

/// Signs up `name{i}` for `i` in `0..n`, the `i`-th on node `(first + i) % n_nodes`.
async fn sign_up_all(
    addresses: &[String],
    name: &str,
    n: usize,
    first: usize,
) -> anyhow::Result<Vec<Account>> {
    let mut accounts = Vec::with_capacity(n);
    for index in 0..n {
        let address = addresses
            .get((first + index) % addresses.len().max(1))
            .context("no node to connect to")?;
        let username = format!("{name}{index}");
        accounts.push(
            sign_up(address, &username)
                .await
                .with_context(|| format!("signing {username} up"))?,
        );
    }
    Ok(accounts)
}

/// What the lanes of one phase did.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    n_failed: u64,
    first_failure_opt: Option<String>,
    finished: Duration,
    /// Offers found (finds).
    n_extra: u64,
}

impl Tally {
    /// Counts a refusal and pauses, so that a refusal cannot spin.
    async fn refused(&mut self, error: &ErrorBody) {
        *self.errors.entry(code_name(error)).or_default() += 1;
        self.first_failure_opt
            .get_or_insert_with(|| format!("{}: {}", code_name(error), error.message));
        tokio::time::sleep(PAUSE_AFTER_REFUSAL).await;
    }

    fn failed(&mut self, error: &anyhow::Error) {
        self.n_failed += 1;
        self.first_failure_opt.get_or_insert(format!("{error:#}"));
    }

    fn absorb(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        self.n_failed += other.n_failed;
        self.first_failure_opt = self.first_failure_opt.take().or(other.first_failure_opt);
        self.finished = self.finished.max(other.finished);
        self.n_extra += other.n_extra;
    }

    /// The phase's figures; `bus` is the nodes' counters over it.
    fn into_phase(self, name: String, n_connections: usize, bus: BusCounters) -> EdgePhase {
        if let Some(failure) = &self.first_failure_opt {
            tracing::warn!(phase = %name, failure = %failure, "some requests failed");
        }
        let n_refused: u64 = self.errors.values().sum();
        let n_answered = self.latencies.len() as u64;
        let elapsed = self.finished.max(Duration::from_millis(1));
        EdgePhase {
            requests: LatencyMeasurement::new(
                name.clone(),
                self.latencies,
                n_refused + self.n_failed,
                elapsed,
            ),
            name,
            n_connections,
            errors_by_code: self.errors,
            n_failed: self.n_failed,
            bus,
            published_per_request: bus.n_published as f64 / n_answered.max(1) as f64,
        }
    }
}

/// Runs `lane` on each of `lanes` at once; gives the accounts back in order, with the tallies
/// added up and each lane's own result.
async fn run_lanes<L, T, F, Fut>(
    lanes: Vec<L>,
    mut lane: F,
) -> anyhow::Result<(Vec<Account>, Tally, Vec<T>)>
where
    T: Send + 'static,
    F: FnMut(usize, L) -> Fut,
    Fut: Future<Output = (Account, Tally, T)> + Send + 'static,
{
    let mut running = JoinSet::new();
    for (index, item) in lanes.into_iter().enumerate() {
        let future = lane(index, item);
        running.spawn(async move {
            let (account, tally, result) = future.await;
            (index, account, tally, result)
        });
    }
    let mut done = Vec::new();
    let mut total = Tally::default();
    while let Some(joined) = running.join_next().await {
        let (index, account, tally, result) = joined.context("a lane panicked")?;
        total.absorb(tally);
        done.push((index, account, result));
    }
    done.sort_by_key(|(index, _, _)| *index);
    let (accounts, results) = done
        .into_iter()
        .map(|(_, account, result)| (account, result))
        .unzip();
    Ok((accounts, total, results))
}

/// An offer made in phase 2.
#[derive(Debug, Clone)]
struct PlacedOffer {
    share_id: String,
    sharer_index: usize,
    lat: f64,
    lon: f64,
}

/// Finishes a lane: a failure that ended it is counted, and the clock stops.
fn end_lane(tally: &mut Tally, ended: anyhow::Result<()>, started: Instant) {
    if let Err(error) = ended {
        tally.failed(&error);
    }
    tally.finished = started.elapsed();
}

/// Sharer `sharer_index` makes `n_offers` offers, one at a time.
async fn offer_lane(
    mut sharer: Account,
    sharer_index: usize,
    n_offers: usize,
    started: Instant,
) -> (Account, Tally, Vec<PlacedOffer>) {
    let mut tally = Tally::default();
    let mut placed = Vec::with_capacity(n_offers);
    let ended = make_offers(&mut sharer, sharer_index, n_offers, &mut tally, &mut placed).await;
    end_lane(&mut tally, ended, started);
    (sharer, tally, placed)
}

async fn make_offers(
    sharer: &mut Account,
    sharer_index: usize,
    n_offers: usize,
    tally: &mut Tally,
    placed: &mut Vec<PlacedOffer>,
) -> anyhow::Result<()> {
    let mut rng = SplitMix64::new(CLUSTER_SEED ^ (sharer_index as u64).wrapping_mul(0x1_0001));
    let square = Square {
        side_m: CLUSTER_SIDE_M,
    };
    for _ in 0..n_offers {
        let point = square.point(&mut rng)?;
        let request = OfferRequest {
            amount_bytes: OFFER_BYTES,
            price_minor_per_unit: rng.between(1, MAX_PRICE_MINOR),
            currency: CURRENCY.to_owned(),
            validity_ms: OFFER_VALIDITY_MS,
            lat: point.lat_degrees(),
            lon: point.lon_degrees(),
            password: None,
        };
        let sent = Instant::now();
        match sharer.ask::<_, OfferReply>("share.offer", &request).await? {
            Ok(reply) => {
                tally.latencies.push(sent.elapsed());
                placed.push(PlacedOffer {
                    share_id: reply.share_id,
                    sharer_index,
                    lat: request.lat,
                    lon: request.lon,
                });
            }
            Err(error) => tally.refused(&error).await,
        }
    }
    Ok(())
}

/// A requester runs `share.find` at random points of the square until `deadline`.
async fn find_lane(
    mut requester: Account,
    lane: usize,
    started: Instant,
    deadline: Instant,
) -> (Account, Tally, ()) {
    let mut tally = Tally::default();
    let ended = find_offers(&mut requester, lane, deadline, &mut tally).await;
    end_lane(&mut tally, ended, started);
    (requester, tally, ())
}

async fn find_offers(
    requester: &mut Account,
    lane: usize,
    deadline: Instant,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut rng = SplitMix64::new(CLUSTER_SEED ^ (lane as u64 + 1).wrapping_mul(0x7F4A_7C15));
    let square = Square {
        side_m: CLUSTER_SIDE_M,
    };
    while Instant::now() < deadline {
        let point = square.point(&mut rng)?;
        let search = ShareSearch {
            lat: point.lat_degrees(),
            lon: point.lon_degrees(),
            amount_bytes: WANTED_BYTES,
            share_id: None,
        };
        let sent = Instant::now();
        match requester.ask::<_, FindReply>("share.find", &search).await? {
            Ok(reply) => {
                tally.latencies.push(sent.elapsed());
                tally.n_extra += reply.offers.len() as u64;
            }
            Err(error) => tally.refused(&error).await,
        }
    }
    Ok(())
}

/// One share a requester reports on.
#[derive(Debug, Clone)]
struct ShareTrack {
    share_id: String,
    sharer_index: usize,
    /// Bytes granted by the last answer.
    granted_bytes: u64,
    /// The last total acknowledged.
    acked_bytes: u64,
    /// A total sent whose answer never came (it may or may not have been recorded).
    in_doubt_bytes_opt: Option<u64>,
    n_reports: usize,
}

/// Takes `offer` with `share.request` from its own place and starts it with the password.
async fn open_share(
    requester: &mut Account,
    offer: &PlacedOffer,
) -> anyhow::Result<Result<ShareTrack, ErrorBody>> {
    let search = ShareSearch {
        lat: offer.lat,
        lon: offer.lon,
        amount_bytes: OFFER_BYTES,
        share_id: Some(offer.share_id.clone()),
    };
    let matched: RequestReply = match requester.ask("share.request", &search).await? {
        Ok(matched) => matched,
        Err(error) => return Ok(Err(error)),
    };
    let start = StartRequest {
        share_id: offer.share_id.clone(),
        password: matched.password,
    };
    Ok(requester
        .ask::<_, StartReply>("share.start", &start)
        .await?
        .map(|started| ShareTrack {
            share_id: offer.share_id.clone(),
            sharer_index: offer.sharer_index,
            granted_bytes: started.granted_bytes,
            acked_bytes: 0,
            in_doubt_bytes_opt: None,
            n_reports: 0,
        }))
}

/// Opens the first of `offers` that can be started; refusals are counted in `refusals`.
async fn open_next(
    requester: &mut Account,
    offers: &mut impl Iterator<Item = PlacedOffer>,
    refusals: &mut BTreeMap<String, u64>,
) -> anyhow::Result<ShareTrack> {
    for _ in 0..MAX_OPEN_ATTEMPTS {
        let offer = offers.next().context("no offer left to request")?;
        match open_share(requester, &offer).await? {
            Ok(track) => return Ok(track),
            Err(error) => *refusals.entry(code_name(&error)).or_default() += 1,
        }
    }
    bail!("{MAX_OPEN_ATTEMPTS} offers in a row could not be requested and started")
}

/// What a reporting lane holds: its shares (the current one last), the offers left to it, and
/// the refusals met opening shares (set-up included).
struct UsageLane {
    tracks: Vec<ShareTrack>,
    spare: std::vec::IntoIter<PlacedOffer>,
    open_errors: BTreeMap<String, u64>,
}

/// Whether a report refused with `code` may be sent again as it was: the refusal says the node
/// was too busy to know, and a report repeated with its id and total is answered once.
fn worth_repeating(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Unavailable | ErrorCode::RateLimited)
}

/// A requester reports growing totals on its share until `deadline`, moving to its next offer
/// before the share holds [`MAX_USAGE_REPORTS`] reports, when the next total would pass the
/// grant, or when a report is refused for good (`too_many` among others).
async fn usage_lane(
    mut requester: Account,
    mut lane: UsageLane,
    started: Instant,
    deadline: Instant,
) -> (Account, Tally, UsageLane) {
    let mut tally = Tally::default();
    let ended = report_usage(&mut requester, &mut lane, deadline, &mut tally).await;
    end_lane(&mut tally, ended, started);
    (requester, tally, lane)
}

async fn report_usage(
    requester: &mut Account,
    lane: &mut UsageLane,
    deadline: Instant,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut move_on = false;
    while Instant::now() < deadline {
        let current_opt = lane.tracks.last_mut();
        let track = current_opt.context("a lane without a share")?;
        let next_bytes = track.acked_bytes + REPORT_STEP_BYTES;
        if move_on || track.n_reports >= REPORTS_PER_SHARE || next_bytes > track.granted_bytes {
            let next = open_next(requester, &mut lane.spare, &mut lane.open_errors).await?;
            lane.tracks.push(next);
            move_on = false;
            continue;
        }
        let report = UsageRequest {
            share_id: track.share_id.clone(),
            report_id: track.n_reports as u64 + 1,
            used_bytes: next_bytes,
        };
        // Until an answer says otherwise, the share may or may not have recorded it.
        track.in_doubt_bytes_opt = Some(next_bytes);
        let sent = Instant::now();
        match requester
            .ask::<_, UsageReply>("share.report_usage", &report)
            .await?
        {
            Ok(reply) => {
                tally.latencies.push(sent.elapsed());
                track.acked_bytes = next_bytes;
                track.in_doubt_bytes_opt = None;
                track.granted_bytes = reply.granted_bytes;
                track.n_reports += 1;
                // A bill: the share closed (used up).
                move_on = reply.bill.is_some();
            }
            Err(error) => {
                if !worth_repeating(error.code) {
                    track.in_doubt_bytes_opt = None;
                    move_on = true;
                }
                tally.refused(&error).await;
            }
        }
    }
    Ok(())
}

/// The nodes' HTTP addresses.
fn addresses_of(cluster: &LocalCluster) -> anyhow::Result<Vec<String>> {
    cluster
        .running_nodes()
        .into_iter()
        .map(|index| cluster.node(index).map(|node| node.http_address.clone()))
        .collect()
}

/// Waits until `share.find` at the first offer's place finds an offer (listing is told to the
/// offer cell after `share.offer` answered).
async fn wait_listed(requester: &mut Account, offer: &PlacedOffer) -> anyhow::Result<()> {
    let deadline = Instant::now() + LISTED_TIMEOUT;
    let search = ShareSearch {
        lat: offer.lat,
        lon: offer.lon,
        amount_bytes: WANTED_BYTES,
        share_id: None,
    };
    loop {
        let found: FindReply = requester
            .ask("share.find", &search)
            .await?
            .map_err(|error| anyhow::anyhow!("share.find refused: {}", error.message))?;
        if !found.offers.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no offer found within {LISTED_TIMEOUT:?} of the offers being made");
        }
        tokio::time::sleep(LISTED_POLL).await;
    }
}

/// Offers a sharer makes: `n_offers` spread as evenly as can be over `n_sharers`.
fn offers_of(sharer_index: usize, n_sharers: usize, n_offers: usize) -> usize {
    n_offers / n_sharers.max(1) + usize::from(sharer_index < n_offers % n_sharers.max(1))
}

/// The size of a share's stored record in the nodes' SQLite file.
async fn share_record_sizes(
    cluster: &LocalCluster,
    share_ids: [Option<&String>; 2],
) -> anyhow::Result<[Option<usize>; 2]> {
    let path = cluster.directory().join(CLUSTER_DATABASE_FILE);
    let store = SqliteStore::open(&SqliteConfig {
        path: path.clone(),
        ..SqliteConfig::default()
    })
    .await
    .with_context(|| format!("opening the nodes' database {}", path.display()))?;
    let mut sizes = [None, None];
    for (slot, share_id_opt) in sizes.iter_mut().zip(share_ids) {
        if let Some(share_id) = share_id_opt {
            *slot = stored_bytes(&store, EntityKind::Share, share_id).await;
        }
    }
    store.close().await;
    Ok(sizes)
}

/// The sharers make their offers, each a closed loop; returns the offers made, a round over
/// the sharers at a time (so that neighbouring offers belong to different sharers).
async fn offer_phase(
    cluster: &LocalCluster,
    settings: &SharesBenchSettings,
    sharers: Vec<Account>,
) -> anyhow::Result<(Vec<Account>, EdgePhase, Vec<PlacedOffer>)> {
    tracing::info!(n_offers = settings.n_cluster_offers, "offering");
    let before = bus_counters(cluster).await?;
    let started = Instant::now();
    let (sharers, tally, placed) = run_lanes(sharers, |index, sharer| {
        let n_offers = offers_of(index, settings.n_sharers, settings.n_cluster_offers);
        offer_lane(sharer, index, n_offers, started)
    })
    .await?;
    let bus = bus_counters(cluster).await?.since(before);
    let phase = tally.into_phase(
        format!("share.offer × {}", settings.n_sharers),
        settings.n_sharers,
        bus,
    );
    let mut per_sharer: Vec<std::vec::IntoIter<PlacedOffer>> =
        placed.into_iter().map(Vec::into_iter).collect();
    let mut interleaved = Vec::new();
    loop {
        let before_round = interleaved.len();
        interleaved.extend(per_sharer.iter_mut().filter_map(Iterator::next));
        if interleaved.len() == before_round {
            break;
        }
    }
    Ok((sharers, phase, interleaved))
}

/// The finders run `share.find` for the run's duration; returns the mean offers per answer too.
async fn find_phase(
    cluster: &LocalCluster,
    settings: &SharesBenchSettings,
    finders: Vec<Account>,
) -> anyhow::Result<(Vec<Account>, EdgePhase, f64)> {
    tracing::info!(n_connections = finders.len(), "finding");
    let before = bus_counters(cluster).await?;
    let started = Instant::now();
    let deadline = started + settings.duration;
    let n_connections = finders.len();
    let (finders, tally, _) = run_lanes(finders, |lane, requester| {
        find_lane(requester, lane, started, deadline)
    })
    .await?;
    let bus = bus_counters(cluster).await?.since(before);
    let mean_offers_found = mean(tally.n_extra, tally.latencies.len());
    let phase = tally.into_phase(format!("share.find × {n_connections}"), n_connections, bus);
    Ok((finders, phase, mean_offers_found))
}

/// Each reporter takes and starts its first share (set-up), then reports usage for the run's
/// duration; returns the lanes with their shares.
async fn report_phase(
    cluster: &LocalCluster,
    settings: &SharesBenchSettings,
    reporters: Vec<Account>,
    offers: &[PlacedOffer],
) -> anyhow::Result<(Vec<Account>, EdgePhase, Vec<UsageLane>)> {
    tracing::info!(n_shares = reporters.len(), "requesting and starting shares");
    let n_lanes = reporters.len();
    let mut ready = Vec::with_capacity(n_lanes);
    for (index, mut requester) in reporters.into_iter().enumerate() {
        let mine: Vec<PlacedOffer> = offers
            .iter()
            .skip(index)
            .step_by(n_lanes.max(1))
            .cloned()
            .collect();
        let mut spare = mine.into_iter();
        let mut open_errors = BTreeMap::new();
        let first = open_next(&mut requester, &mut spare, &mut open_errors)
            .await
            .with_context(|| format!("opening requester {index}'s first share"))?;
        let lane = UsageLane {
            tracks: vec![first],
            spare,
            open_errors,
        };
        ready.push((requester, lane));
    }
    tracing::info!("reporting usage");
    let before = bus_counters(cluster).await?;
    let started = Instant::now();
    let deadline = started + settings.duration;
    let (reporters, tally, lanes) = run_lanes(ready, |_, (requester, lane)| {
        usage_lane(requester, lane, started, deadline)
    })
    .await?;
    let bus = bus_counters(cluster).await?.since(before);
    let phase = tally.into_phase(format!("share.report_usage × {n_lanes}"), n_lanes, bus);
    Ok((reporters, phase, lanes))
}

/// Each share's sharer reads it back: its `used_bytes` must be the last total acknowledged
/// (or a total whose answer never came). Returns the shares checked and the differences.
async fn check_totals(
    sharers: &mut [Account],
    tracks: &[&ShareTrack],
) -> anyhow::Result<(usize, Vec<String>)> {
    let mut differences = Vec::new();
    for track in tracks {
        let sharer = sharers
            .get_mut(track.sharer_index)
            .context("a share of an unknown sharer")?;
        let share = ShareRef {
            share_id: track.share_id.clone(),
        };
        let view: ShareReplyBody = sharer
            .ask("share.get", &share)
            .await?
            .map_err(|error| anyhow::anyhow!("share.get refused: {}", error.message))?;
        if view.used_bytes != track.acked_bytes && Some(view.used_bytes) != track.in_doubt_bytes_opt
        {
            differences.push(format!(
                "share {}: used_bytes {} stored, {} acknowledged",
                track.share_id, view.used_bytes, track.acked_bytes
            ));
        }
    }
    Ok((tracks.len(), differences))
}

/// Phases 2 and 3 on the spawned cluster, with the problems they found.
async fn measure(
    settings: &SharesBenchSettings,
    cluster: &mut LocalCluster,
) -> anyhow::Result<(OfferPhases, UsagePhase, Vec<String>)> {
    cluster.wait_settled(SETTLE_TIMEOUT).await?;
    let addresses = addresses_of(cluster)?;
    let n_requesters = settings.n_connections.max(settings.n_shares);
    tracing::info!(
        n_sharers = settings.n_sharers,
        n_requesters,
        "signing accounts up"
    );
    let sharers = sign_up_all(&addresses, "sharer", settings.n_sharers, 0).await?;
    let mut requesters =
        sign_up_all(&addresses, "requester", n_requesters, settings.n_sharers).await?;

    let (mut sharers, offers, mut placed) = offer_phase(cluster, settings, sharers).await?;
    let first_offer = placed.first().context("no offer was made")?;
    let first_requester = requesters.first_mut().context("no requester")?;
    wait_listed(first_requester, first_offer).await?;
    let finders: Vec<Account> = requesters.drain(..settings.n_connections).collect();
    let (finders, finds, mean_offers_found) = find_phase(cluster, settings, finders).await?;
    let mut requesters: Vec<Account> = finders.into_iter().chain(requesters).collect();

    // The last offer made stays untouched: its stored record is the size of a fresh share.
    let untouched_opt = placed.pop();
    let reporters: Vec<Account> = requesters.drain(..settings.n_shares).collect();
    let (reporters, reports, lanes) = report_phase(cluster, settings, reporters, &placed).await?;
    let n_moves = lanes
        .iter()
        .map(|lane| lane.tracks.len().saturating_sub(1) as u64)
        .sum();
    let mut open_errors_by_code = BTreeMap::new();
    for lane in &lanes {
        for (code, n) in &lane.open_errors {
            *open_errors_by_code.entry(code.clone()).or_default() += n;
        }
    }
    tracing::info!("checking the shares' totals");
    let tracks: Vec<&ShareTrack> = lanes.iter().flat_map(|lane| &lane.tracks).collect();
    let (n_checked, problems) = check_totals(&mut sharers, &tracks).await?;
    let busiest_opt = tracks.iter().max_by_key(|track| track.n_reports);
    let [offered_record_bytes_opt, reported_record_bytes_opt] = share_record_sizes(
        cluster,
        [
            untouched_opt.as_ref().map(|offer| &offer.share_id),
            busiest_opt.map(|track| &track.share_id),
        ],
    )
    .await?;
    let usage = UsagePhase {
        reports,
        report_step_bytes: REPORT_STEP_BYTES,
        n_shares_used: tracks.len(),
        n_moves,
        open_errors_by_code,
        max_reports_on_a_share: busiest_opt.map_or(0, |track| track.n_reports),
        n_checked,
        n_used_mismatches: problems.len(),
        offered_record_bytes_opt,
        reported_record_bytes_opt,
    };
    for account in sharers.into_iter().chain(reporters).chain(requesters) {
        if let Err(error) = account.client.close().await {
            tracing::debug!(error = %format!("{error:#}"), "closing a connection");
        }
    }
    let offer_phases = OfferPhases {
        side_m: CLUSTER_SIDE_M,
        n_offers_asked: settings.n_cluster_offers,
        offers,
        finds,
        mean_offers_found,
        max_results: NODE_MAX_RESULTS,
    };
    Ok((offer_phases, usage, problems))
}

/// The nodes' settings: the load defaults, the run's range and result cap, and daily caps that
/// let each sharer make its offers and each requester move on as often as it needs.
fn node_env(settings: &SharesBenchSettings, shares_per_day: usize) -> Vec<(String, String)> {
    let mut env = load_node_env();
    let share = [
        ("RANGE_M", settings.range_m.to_string()),
        ("CELL_PRECISION", CELL_PRECISION.to_string()),
        ("MAX_RESULTS", NODE_MAX_RESULTS.to_string()),
        ("MAX_SHARES_PER_DAY", shares_per_day.to_string()),
        ("MAX_OFFERED_BYTES_PER_DAY", DAILY_BYTES_CAP.to_string()),
        ("MAX_REQUESTED_BYTES_PER_DAY", DAILY_BYTES_CAP.to_string()),
    ];
    env.extend(
        share
            .into_iter()
            .map(|(name, value)| (format!("LANMESH__SHARE__{name}"), value)),
    );
    env
}

/// Runs phase 1, then phases 2 and 3 on a cluster it spawns, stops the cluster, then measures
/// the broker baselines.
pub async fn run(settings: &SharesBenchSettings) -> anyhow::Result<SharesBenchReport> {
    if settings.n_nodes == 0
        || settings.n_sharers == 0
        || settings.n_connections == 0
        || settings.n_shares == 0
        || settings.n_offers == 0
    {
        bail!("--nodes, --offers, --sharers, --connections and --shares must be positive");
    }
    if settings.duration.is_zero() {
        bail!("--duration-secs must be positive");
    }
    if !(1..=5_000).contains(&settings.range_m) {
        bail!("--range-m is 1 to 5000 (the nodes' bounds on share.range_m)");
    }
    // One offer stays untouched (its stored record is measured) and each requester needs one.
    if settings.n_cluster_offers < settings.n_shares + 1 {
        bail!("--cluster-offers must be more than --shares");
    }
    let offers_per_sharer = offers_of(0, settings.n_sharers, settings.n_cluster_offers);
    if offers_per_sharer > MAX_SHARES_PER_DAY {
        bail!("at most {MAX_SHARES_PER_DAY} offers per sharer: raise --sharers");
    }
    let shares_per_day = offers_per_sharer.clamp(MIN_SHARES_PER_DAY, MAX_SHARES_PER_DAY);

    tracing::info!(n_offers = settings.n_offers, "proximity phase, in process");
    let (n_offers, range_m, duration) = (settings.n_offers, settings.range_m, settings.duration);
    let proximity =
        tokio::task::spawn_blocking(move || proximity_phase(n_offers, range_m, duration))
            .await
            .context("the proximity phase panicked")??;

    let cluster_name = format!("lanmesh-shares-{}", short_id());
    let mut spec = ClusterSpec::new(settings.n_shards);
    spec.extra_env = node_env(settings, shares_per_day);
    let (offers, usage, mut problems) = measure_on_spawned(
        &settings.amqp_url,
        &cluster_name,
        spec,
        (settings.n_nodes, settings.node_binary_opt.as_deref()),
        async |cluster| Box::pin(measure(settings, cluster)).await,
    )
    .await?;

    tracing::info!("broker baselines");
    let broker_single = broker_baseline(&settings.amqp_url, 1).await?;
    let broker_concurrent = broker_baseline(&settings.amqp_url, settings.n_connections).await?;
    if proximity.n_mismatches > 0 {
        problems.insert(
            0,
            format!(
                "{} of {} queries: the index and the scan found different offers",
                proximity.n_mismatches, proximity.n_compared
            ),
        );
    }
    Ok(SharesBenchReport {
        seconds_per_part: settings.duration.as_secs_f64(),
        cluster: SpawnedCluster {
            name: cluster_name,
            n_nodes: settings.n_nodes,
            n_shards: settings.n_shards,
        },
        proximity,
        offers,
        usage,
        broker_single,
        broker_concurrent,
        problems,
    })
}

/// Titles and widths of the columns of phase 1's table, after a label of [`LABEL_WIDTH`].
const PROXIMITY_COLUMNS: [(&str, usize); 8] = [
    ("queries", 9),
    ("seconds", 8),
    ("queries/s", 10),
    ("p50 ms", 9),
    ("p99 ms", 9),
    ("max ms", 9),
    ("offers", 9),
    ("cells", 7),
];
/// Titles and widths of the columns of the edge phases' table.
const EDGE_COLUMNS: [(&str, usize); 8] = [
    ("ok", 9),
    ("errors", 7),
    ("seconds", 8),
    ("req/s", 10),
    ("p50 ms", 9),
    ("p99 ms", 9),
    ("max ms", 9),
    ("pub./req", 9),
];
/// Width of the label column of both tables.
const LABEL_WIDTH: usize = 40;

/// A header row: an empty label, then each title right-aligned in its width.
fn write_header(formatter: &mut fmt::Formatter<'_>, columns: &[(&str, usize)]) -> fmt::Result {
    write!(formatter, "{:<LABEL_WIDTH$}", "")?;
    for (title, width) in columns {
        write!(formatter, " {title:>width$}")?;
    }
    writeln!(formatter)
}

fn size_text(bytes_opt: Option<usize>) -> String {
    bytes_opt.map_or_else(|| "?".to_owned(), |bytes| format!("{bytes} B"))
}

impl ProximitySide {
    fn write_row(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queries = &self.queries;
        let cells = self
            .mean_cells_asked_opt
            .map_or_else(|| "-".to_owned(), |cells| format!("{cells:.1}"));
        writeln!(
            formatter,
            "{:<40} {:>9} {:>8.2} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.1} {:>7}",
            queries.name,
            queries.n_requests,
            queries.elapsed_seconds,
            queries.requests_per_second,
            queries.p50_ms,
            queries.p99_ms,
            queries.max_ms,
            self.mean_offers_returned,
            cells
        )
    }
}

impl EdgePhase {
    fn write_row(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let requests = &self.requests;
        writeln!(
            formatter,
            "{:<40} {:>9} {:>7} {:>8.2} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
            self.name,
            requests.n_requests,
            requests.n_errors,
            requests.elapsed_seconds,
            requests.requests_per_second,
            requests.p50_ms,
            requests.p99_ms,
            requests.max_ms,
            self.published_per_request
        )
    }

    fn write_errors(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "  {}: refusals {}; no answer {}; bus {} published, {} acked, {} retried, {} dead-lettered",
            self.name,
            counts_text(&self.errors_by_code),
            self.n_failed,
            self.bus.n_published,
            self.bus.n_acked,
            self.bus.n_retried,
            self.bus.n_dead_lettered
        )
    }
}

impl fmt::Display for SharesBenchReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proximity = &self.proximity;
        writeln!(
            formatter,
            "phase 1, in process: {} offers over {:.0} × {:.0} km in {} cells of precision {}; radius {} m, {:.0} s per side",
            proximity.n_offers,
            proximity.side_m / 1_000.0,
            proximity.side_m / 1_000.0,
            proximity.n_cells_listed,
            proximity.cell_precision,
            proximity.radius_m,
            self.seconds_per_part
        )?;
        write_header(formatter, &PROXIMITY_COLUMNS)?;
        proximity.index.write_row(formatter)?;
        proximity.scan.write_row(formatter)?;
        writeln!(
            formatter,
            "index / scan: {:.0}×; {} queries compared, {} with different answers",
            proximity.index_over_scan, proximity.n_compared, proximity.n_mismatches
        )?;
        let offers = &self.offers;
        writeln!(
            formatter,
            "phases 2 and 3, over the edge: cluster {} ({} node{}, {} shards), {} offers of {} MiB over {:.0} × {:.0} km",
            self.cluster.name,
            self.cluster.n_nodes,
            if self.cluster.n_nodes == 1 { "" } else { "s" },
            self.cluster.n_shards,
            offers.n_offers_asked,
            OFFER_BYTES / MIB,
            offers.side_m / 1_000.0,
            offers.side_m / 1_000.0
        )?;
        write_header(formatter, &EDGE_COLUMNS)?;
        offers.offers.write_row(formatter)?;
        offers.finds.write_row(formatter)?;
        self.usage.reports.write_row(formatter)?;
        write_broker_baselines(formatter, &self.broker_single, &self.broker_concurrent)?;
        offers.offers.write_errors(formatter)?;
        offers.finds.write_errors(formatter)?;
        self.usage.reports.write_errors(formatter)?;
        writeln!(
            formatter,
            "  share.find found {:.1} offers on average (at most {} per answer)",
            offers.mean_offers_found, offers.max_results
        )?;
        let usage = &self.usage;
        writeln!(
            formatter,
            "  usage: +{} KiB per report, {} shares, {} moves to a next share (refusals on the way: {}), at most {} reports on one share",
            usage.report_step_bytes / 1024,
            usage.n_shares_used,
            usage.n_moves,
            counts_text(&usage.open_errors_by_code),
            usage.max_reports_on_a_share
        )?;
        writeln!(
            formatter,
            "  used_bytes read back by the sharer: {} of {} shares as acknowledged",
            usage.n_checked - usage.n_used_mismatches,
            usage.n_checked
        )?;
        writeln!(
            formatter,
            "  stored share record: {} offered, {} after {} reports",
            size_text(usage.offered_record_bytes_opt),
            size_text(usage.reported_record_bytes_opt),
            usage.max_reports_on_a_share
        )?;
        if self.problems.is_empty() {
            writeln!(formatter, "problems: none")
        } else {
            for problem in &self.problems {
                writeln!(formatter, "PROBLEM: {problem}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_stay_in_their_square() {
        let mut rng = SplitMix64::new(7);
        for side_m in [CITY_SIDE_M, CLUSTER_SIDE_M] {
            let square = Square { side_m };
            let (lat, lon) = CENTER_DEGREES;
            let center = GeoPoint::from_degrees(lat, lon).unwrap();
            for _ in 0..1_000 {
                let point = square.point(&mut rng).unwrap();
                // The farthest a point can be is the half diagonal.
                let half_diagonal = side_m * std::f64::consts::SQRT_2 / 2.0;
                assert!(center.distance_m(&point) as f64 <= half_diagonal + 1.0);
            }
        }
    }

    #[test]
    fn the_generator_is_deterministic_and_bounded() {
        let draw = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..100).map(|_| rng.between(3, 9)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        assert!(draw(1).iter().all(|value| (3..=9).contains(value)));
        assert!(draw(1).contains(&3) && draw(1).contains(&9));
        let mut rng = SplitMix64::new(5);
        assert!((0..1_000).all(|_| (0.0..1.0).contains(&rng.unit())));
    }

    #[test]
    fn offers_are_spread_evenly_over_the_sharers() {
        let check = |n_sharers: usize, n_offers: usize| {
            let counts: Vec<usize> = (0..n_sharers)
                .map(|index| offers_of(index, n_sharers, n_offers))
                .collect();
            assert_eq!(counts.iter().sum::<usize>(), n_offers, "{counts:?}");
            let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
            assert!(spread <= 1, "{counts:?}");
        };
        check(50, 2_000);
        check(7, 100);
        check(3, 2);
    }

    #[test]
    fn the_index_and_the_scan_agree_on_a_small_city() {
        let phase = proximity_phase(2_000, 500, Duration::from_millis(50)).unwrap();
        assert!(phase.n_compared > 0);
        assert_eq!(phase.n_mismatches, 0);
        assert!(phase.index.mean_cells_asked_opt.unwrap() >= 1.0);
    }

    #[test]
    fn the_nodes_get_the_share_settings() {
        let settings = SharesBenchSettings {
            amqp_url: String::new(),
            n_nodes: 1,
            n_shards: 64,
            duration: Duration::from_secs(1),
            n_offers: 1,
            range_m: 700,
            n_sharers: 50,
            n_cluster_offers: 2_000,
            n_connections: 16,
            n_shares: 16,
            node_binary_opt: None,
        };
        let env = node_env(&settings, 40);
        let value = |name: &str| {
            env.iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(value("LANMESH__SHARE__RANGE_M").as_deref(), Some("700"));
        assert_eq!(
            value("LANMESH__SHARE__MAX_SHARES_PER_DAY").as_deref(),
            Some("40")
        );
        assert!(value("LANMESH__AUTH__ARGON2_MEMORY_KIB").is_some());
    }
}
