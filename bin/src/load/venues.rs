//! `lanmesh-load venues`: venue presence samples ingested per second end to end on one node,
//! next to the raw storage append rate measured in the same run.
//!
//! End to end: one node is spawned (RabbitMQ bus, SQLite). A bus client that is not a cluster
//! member publishes `n_events` login events, as the edge does when a client logs in from an
//! address inside a venue segment: a `SegmentRequest::Presence` told to the segment entity (id
//! the segment's canonical CIDR, `127.0.{i}.0/24`) through its shard queue (persistent,
//! mandatory, confirmed), at most `in_flight` publishes awaiting their confirm at once. The
//! node's host hands each delivery to the segment entity, which turns it into one presence
//! sample; the host appends it to the node's SQLite file and then acknowledges the delivery.
//! Every event has its own account (`bench-{n}`) and instant, so each becomes a distinct
//! sample. The clock runs from the first publish until a reader on the same SQLite file sees
//! every sample (polled every [`VISIBILITY_POLL_INTERVAL`]); the time until the last confirm
//! is reported too.
//!
//! Baseline, after the node has stopped: the same samples appended straight to a fresh SQLite
//! store, one sample per `append` with `in_flight` appends outstanding (what the host asks of
//! the store, with the concurrency the client had), then one sample per `append` with one
//! append per shard with work (the most the node can have outstanding: a shard's deliveries are
//! handled one at a time), then in batches of [`RAW_BATCH_SIZE`] (the best case). The store's
//! writer thread groups concurrent appends into one transaction; the commits it made are
//! reported beside each figure.

use crate::load::local_cluster::{ClusterSpec, client_amqp_config};
use crate::load::metrics_text::metric_value;
use crate::load::probe_client::PROBE_CLIENT_CONNECT_TIMEOUT;
use crate::load::{Measurement, spawn_local_cluster, stop_spawned};
use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use lanmesh_actors::entities::segment::{ClientEvent, SegmentRequest};
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_actors::model::segment::{Segment, canonical_address};
use lanmesh_bus::amqp::AmqpTransport;
use lanmesh_bus::envelope::now_unix_ms;
use lanmesh_bus::shard_map::ShardMap;
use lanmesh_bus::{Destination, Envelope, NodeId, PublishOptions, Transport};
use lanmesh_storage::sqlite::SqliteStore;
use lanmesh_storage::{PresenceEvent, PresenceSample, PresenceSampleStore, SqliteConfig};
use serde::Serialize;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// How long the spawned node may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the reader looks for the samples in the node's SQLite file.
const VISIBILITY_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Samples per `append` in the best-case baseline.
pub const RAW_BATCH_SIZE: usize = 500;
/// Most segments a run can use: `127.0.0.0/24` to `127.0.255.0/24`.
pub const MAX_SEGMENTS: usize = 256;
/// The SQLite file the nodes of a local cluster share, in the cluster's directory (see
/// `local_cluster.rs`).
const CLUSTER_DATABASE_FILE: &str = "cluster.db";

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct VenuesBenchSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// Shards of the spawned node.
    pub n_shards: u16,
    /// Login events to send (and samples to append in each baseline).
    pub n_events: u64,
    /// Publishes awaiting their confirm at once (and appends outstanding in the first
    /// baseline).
    pub in_flight: usize,
    /// Segments the events are spread over, round robin.
    pub n_segments: usize,
    /// How long the samples may take to become visible after the first publish.
    pub visible_timeout: Duration,
    /// The `lanmesh-node` executable (default: beside this executable).
    pub node_binary_opt: Option<PathBuf>,
}

/// One baseline: appends straight to a fresh SQLite store.
#[derive(Debug, Clone, Serialize)]
pub struct AppendMeasurement {
    /// Samples appended in what time.
    pub throughput: Measurement,
    /// Samples per `append` call.
    pub samples_per_append: usize,
    /// `append` calls outstanding at once.
    pub concurrency: usize,
    /// Transactions the store's writer committed.
    pub n_transactions: u64,
    /// Samples per committed transaction, on average.
    pub samples_per_transaction: f64,
}

/// The node's bus counters at the end of the run (deliveries of every queue it consumes).
#[derive(Debug, Clone, Serialize)]
pub struct NodeBusCounters {
    /// Deliveries acknowledged.
    pub n_acked_opt: Option<u64>,
    /// Deliveries handed back for redelivery.
    pub n_retried_opt: Option<u64>,
    /// Deliveries dead-lettered.
    pub n_dead_lettered_opt: Option<u64>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct VenuesBenchReport {
    /// The cluster (one node) measured.
    pub cluster_name: String,
    /// Shards of the node.
    pub n_shards: u16,
    /// Segments the events went to.
    pub n_segments: usize,
    /// Distinct shards those segments map to: the deliveries the node can handle at once.
    pub n_shards_with_work: usize,
    /// Publishes awaiting their confirm at once.
    pub in_flight: usize,
    /// Distinct samples of the run found in the node's SQLite file at the end.
    pub n_samples_visible: u64,
    /// First publish → every sample visible in storage.
    pub end_to_end: Measurement,
    /// First publish → last confirm.
    pub publish_confirmed: Measurement,
    /// The node's bus counters after the run.
    pub node_bus: NodeBusCounters,
    /// Raw append, one sample per call, `in_flight` calls outstanding.
    pub raw_single_in_flight: AppendMeasurement,
    /// Raw append, one sample per call, `n_shards_with_work` calls outstanding.
    pub raw_single_per_shard: AppendMeasurement,
    /// Raw append, [`RAW_BATCH_SIZE`] samples per call, one call at a time.
    pub raw_batched: AppendMeasurement,
    /// `end_to_end / raw_single_in_flight` throughput.
    pub ratio_to_raw_single: f64,
}

/// What the end-to-end side measured.
struct EndToEnd {
    end_to_end: Measurement,
    publish_confirmed: Measurement,
    n_samples_visible: u64,
}

/// The events of a run: event `n` goes to segment `n mod n_segments`, from account
/// `bench-{n}` at `base_unix_ms + n`.
#[derive(Debug, Clone)]
struct EventPlan {
    segments: Vec<Segment>,
    n_events: u64,
    base_unix_ms: i64,
}

/// One planned login event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedEvent {
    segment: Segment,
    account: String,
    address: IpAddr,
    at_unix_ms: i64,
}

impl EventPlan {
    fn new(n_segments: usize, n_events: u64, base_unix_ms: i64) -> anyhow::Result<Self> {
        if n_segments == 0 || n_segments > MAX_SEGMENTS {
            bail!("--segments must be between 1 and {MAX_SEGMENTS}, not {n_segments}");
        }
        let segments = (0..n_segments)
            .map(|index| {
                let id = format!("127.0.{index}.0/24");
                Segment::from_canonical_str(&id).with_context(|| format!("segment {id}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            segments,
            n_events,
            base_unix_ms,
        })
    }

    fn n_segments(&self) -> u64 {
        self.segments.len() as u64
    }

    /// Event `n`.
    fn event(&self, n: u64) -> anyhow::Result<PlannedEvent> {
        let n_segments = self.n_segments().max(1);
        let segment_index = usize::try_from(n % n_segments)?;
        let segment = *self
            .segments
            .get(segment_index)
            .context("segment index out of range")?;
        let third_octet = u8::try_from(segment_index)?;
        // Hosts .1 to .254 in turn: always inside the /24.
        let host = u8::try_from((n / n_segments) % 254 + 1)?;
        Ok(PlannedEvent {
            segment,
            account: format!("bench-{n}"),
            address: IpAddr::V4(Ipv4Addr::new(127, 0, third_octet, host)),
            at_unix_ms: self.at_unix_ms(n)?,
        })
    }

    fn at_unix_ms(&self, n: u64) -> anyhow::Result<i64> {
        Ok(self.base_unix_ms + i64::try_from(n)?)
    }

    /// The window holding every event's instant.
    fn window(&self) -> anyhow::Result<(i64, i64)> {
        Ok((self.base_unix_ms, self.at_unix_ms(self.n_events)?))
    }

    /// The sample the segment entity makes of event `n`.
    fn sample(&self, n: u64) -> anyhow::Result<PresenceSample> {
        let event = self.event(n)?;
        Ok(PresenceSample {
            segment: event.segment.to_string(),
            address: canonical_address(event.address),
            account: event.account,
            event: PresenceEvent::Login,
            at_unix_ms: event.at_unix_ms,
        })
    }

    /// Events of segment `segment_index`.
    fn n_events_of_segment(&self, segment_index: u64) -> u64 {
        self.n_events
            .saturating_sub(segment_index)
            .div_ceil(self.n_segments().max(1))
    }
}

/// Which of one segment's events are visible in storage; event `n` of the segment's `k`-th
/// turn is `segment_index + k * n_segments`.
struct SegmentProgress {
    segment_id: String,
    segment_index: u64,
    seen: Vec<bool>,
    n_seen: u64,
    /// No turn below this one is missing.
    lowest_missing_turn: u64,
}

impl SegmentProgress {
    fn new(plan: &EventPlan, segment_index: u64, segment: &Segment) -> anyhow::Result<Self> {
        Ok(Self {
            segment_id: segment.to_string(),
            segment_index,
            seen: vec![false; usize::try_from(plan.n_events_of_segment(segment_index))?],
            n_seen: 0,
            lowest_missing_turn: 0,
        })
    }

    fn is_complete(&self) -> bool {
        self.n_seen == self.seen.len() as u64
    }

    /// Marks the samples of this segment found in storage; ignores others and duplicates.
    fn mark(&mut self, plan: &EventPlan, samples: &[PresenceSample]) {
        let n_segments = plan.n_segments().max(1);
        for sample in samples {
            let Ok(n) = u64::try_from(sample.at_unix_ms - plan.base_unix_ms) else {
                continue;
            };
            if n % n_segments != self.segment_index || sample.account != format!("bench-{n}") {
                continue;
            }
            let Ok(turn) = usize::try_from(n / n_segments) else {
                continue;
            };
            if let Some(seen) = self.seen.get_mut(turn)
                && !*seen
            {
                *seen = true;
                self.n_seen += 1;
            }
        }
        while usize::try_from(self.lowest_missing_turn)
            .ok()
            .and_then(|turn| self.seen.get(turn))
            .is_some_and(|seen| *seen)
        {
            self.lowest_missing_turn += 1;
        }
    }

    /// Reads what is new since the lowest missing sample and marks it.
    async fn poll(&mut self, plan: &EventPlan, store: &SqliteStore) -> anyhow::Result<()> {
        let (_, window_end) = plan.window()?;
        let from_n = self.segment_index + self.lowest_missing_turn * plan.n_segments();
        let samples = store
            .samples_in_window(&self.segment_id, plan.at_unix_ms(from_n)?, window_end)
            .await
            .with_context(|| format!("reading the samples of {}", self.segment_id))?;
        self.mark(plan, &samples);
        Ok(())
    }
}

/// Runs the scenario on a node it spawns, stops the node, then measures the baselines.
pub async fn run(settings: &VenuesBenchSettings) -> anyhow::Result<VenuesBenchReport> {
    if settings.in_flight == 0 || settings.n_events == 0 {
        bail!("--events and --in-flight must be positive");
    }
    let plan = EventPlan::new(
        settings.n_segments,
        settings.n_events,
        i64::try_from(now_unix_ms())?,
    )?;
    let shard_map = ShardMap::new(settings.n_shards).context("--n-shards must be positive")?;
    let n_shards_with_work = plan
        .segments
        .iter()
        .map(|segment| Ok(shard_map.shard_for(&EntityKind::Segment.address(segment.to_string())?)))
        .collect::<anyhow::Result<HashSet<_>>>()?
        .len();
    let cluster_name = format!(
        "lanmesh-venues-{}",
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..8)
            .unwrap_or("x")
    );
    let spec = ClusterSpec {
        log_filter_opt: Some("warn".to_owned()),
        ..ClusterSpec::new(settings.n_shards)
    };
    let mut cluster = spawn_local_cluster(
        &settings.amqp_url,
        &cluster_name,
        spec,
        1,
        settings.node_binary_opt.as_deref(),
    )?;
    let measured = async {
        cluster.wait_settled(SETTLE_TIMEOUT).await?;
        tracing::info!(cluster = %cluster_name, "spawned node settled");
        let database = cluster.directory().join(CLUSTER_DATABASE_FILE);
        let measured = Box::pin(end_to_end(settings, &cluster_name, &plan, &database)).await?;
        let metrics = cluster.scrape(0).await?;
        let counter = |name: &str| metric_value(&metrics, name).map(|value| value as u64);
        let node_bus = NodeBusCounters {
            n_acked_opt: counter("lanmesh_bus_acked_total"),
            n_retried_opt: counter("lanmesh_bus_retried_total"),
            n_dead_lettered_opt: counter("lanmesh_bus_dead_lettered_total"),
        };
        Ok::<_, anyhow::Error>((measured, node_bus))
    }
    .await;
    stop_spawned(cluster, measured.is_err()).await?;
    let (measured, node_bus) = measured?;

    let raw_directory = std::env::temp_dir().join(format!(
        "lanmesh-venues-raw-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let baselines = Box::pin(raw_baselines(
        &plan,
        &raw_directory,
        settings.in_flight,
        n_shards_with_work,
    ))
    .await;
    if raw_directory.exists() {
        std::fs::remove_dir_all(&raw_directory)
            .with_context(|| format!("removing {}", raw_directory.display()))?;
    }
    let (raw_single_in_flight, raw_single_per_shard, raw_batched) = baselines?;
    Ok(VenuesBenchReport {
        cluster_name,
        n_shards: settings.n_shards,
        n_segments: settings.n_segments,
        n_shards_with_work,
        in_flight: settings.in_flight,
        n_samples_visible: measured.n_samples_visible,
        ratio_to_raw_single: measured.end_to_end.messages_per_second
            / raw_single_in_flight
                .throughput
                .messages_per_second
                .max(f64::MIN_POSITIVE),
        end_to_end: measured.end_to_end,
        publish_confirmed: measured.publish_confirmed,
        node_bus,
        raw_single_in_flight,
        raw_single_per_shard,
        raw_batched,
    })
}

/// Publishes every event as a tell to its segment entity and waits until the node's SQLite
/// file holds every sample.
async fn end_to_end(
    settings: &VenuesBenchSettings,
    cluster_name: &str,
    plan: &EventPlan,
    database: &Path,
) -> anyhow::Result<EndToEnd> {
    let reader = SqliteStore::open(&SqliteConfig {
        path: database.to_path_buf(),
        ..SqliteConfig::default()
    })
    .await
    .with_context(|| format!("opening the node's database {}", database.display()))?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let client_id = NodeId::new(format!(
        "venues-client-{}",
        suffix.get(..12).unwrap_or(&suffix)
    ))?;
    let transport = AmqpTransport::start(client_amqp_config(
        &settings.amqp_url,
        cluster_name,
        settings.n_shards,
        client_id.clone(),
    ));
    let measured = async {
        transport
            .wait_until_ready(PROBE_CLIENT_CONNECT_TIMEOUT)
            .await
            .context("connecting the venues client")?;
        let shard_map = ShardMap::new(settings.n_shards).context("--n-shards must be positive")?;
        let publishing_failed = AtomicBool::new(false);
        let started = Instant::now();
        let publishing = async {
            let publishing =
                publish_all(&transport, &shard_map, &client_id, plan, settings.in_flight).await;
            if publishing.is_err() {
                publishing_failed.store(true, Ordering::Release);
            }
            publishing.map(|()| started.elapsed())
        };
        let polling = wait_visible(
            plan,
            &reader,
            started,
            settings.visible_timeout,
            &publishing_failed,
        );
        let (published, visible) = tokio::join!(publishing, polling);
        let publish_elapsed = published?;
        let (n_samples_visible, visible_elapsed) = visible?;
        Ok::<_, anyhow::Error>(EndToEnd {
            end_to_end: Measurement::new(
                "end to end: publish → stored",
                n_samples_visible,
                visible_elapsed,
            ),
            publish_confirmed: Measurement::new(
                "publish → confirm only",
                settings.n_events,
                publish_elapsed,
            ),
            n_samples_visible,
        })
    }
    .await;
    transport.close().await;
    reader.close().await;
    measured
}

/// Publishes every event of `plan` as the edge does, at most `in_flight` awaiting confirms.
async fn publish_all(
    transport: &AmqpTransport,
    shard_map: &ShardMap,
    client_id: &NodeId,
    plan: &EventPlan,
    in_flight: usize,
) -> anyhow::Result<()> {
    let n_failed = AtomicU64::new(0);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let publish_one = |n: u64| async move {
        let event = plan.event(n)?;
        let target = EntityKind::Segment.address(event.segment.to_string())?;
        let request = SegmentRequest::Presence {
            account: event.account,
            address: event.address,
            event: ClientEvent::Login,
            at_unix_ms: event.at_unix_ms,
        };
        let payload = lanmesh_actors::entities::encode(&request)?;
        let destination = Destination::Shard(shard_map.shard_for(&target));
        let envelope = Envelope::new(target, client_id.clone(), payload);
        transport
            .publish(&destination, envelope, &PublishOptions::default())
            .await
            .with_context(|| format!("publishing event {n} to {destination}"))?;
        Ok::<_, anyhow::Error>(())
    };
    stream::iter(0..plan.n_events)
        .for_each_concurrent(in_flight, |n| {
            let n_failed = &n_failed;
            let first_error = &first_error;
            let published = publish_one(n);
            async move {
                if let Err(error) = published.await {
                    n_failed.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert_with(|| format!("{error:#}"));
                }
            }
        })
        .await;
    let n_failed = n_failed.load(Ordering::Relaxed);
    if n_failed > 0 {
        let first_error = first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        bail!(
            "{n_failed} of {} publishes failed; first: {first_error}",
            plan.n_events
        );
    }
    Ok(())
}

/// Polls the node's database until every sample of `plan` is visible; returns the distinct
/// samples seen and how long after `started` the poll that found the last of them ended.
async fn wait_visible(
    plan: &EventPlan,
    reader: &SqliteStore,
    started: Instant,
    timeout: Duration,
    publishing_failed: &AtomicBool,
) -> anyhow::Result<(u64, Duration)> {
    let deadline = started + timeout;
    let mut progress = plan
        .segments
        .iter()
        .zip(0_u64..)
        .map(|(segment, segment_index)| SegmentProgress::new(plan, segment_index, segment))
        .collect::<anyhow::Result<Vec<_>>>()?;
    loop {
        for segment in progress.iter_mut().filter(|segment| !segment.is_complete()) {
            segment.poll(plan, reader).await?;
        }
        let n_seen: u64 = progress.iter().map(|segment| segment.n_seen).sum();
        if n_seen == plan.n_events {
            return Ok((n_seen, started.elapsed()));
        }
        if publishing_failed.load(Ordering::Acquire) {
            bail!(
                "publishing failed; {n_seen} of {} samples stored",
                plan.n_events
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "only {n_seen} of {} samples visible in the node's database in time",
                plan.n_events
            );
        }
        tokio::time::sleep(VISIBILITY_POLL_INTERVAL).await;
    }
}

/// The three baselines, each on a fresh SQLite file in `directory`.
async fn raw_baselines(
    plan: &EventPlan,
    directory: &Path,
    in_flight: usize,
    n_shards_with_work: usize,
) -> anyhow::Result<(AppendMeasurement, AppendMeasurement, AppendMeasurement)> {
    let single_in_flight =
        raw_append(plan, &directory.join("single-in-flight.db"), 1, in_flight).await?;
    let single_per_shard = raw_append(
        plan,
        &directory.join("single-per-shard.db"),
        1,
        n_shards_with_work,
    )
    .await?;
    let batched = raw_append(plan, &directory.join("batched.db"), RAW_BATCH_SIZE, 1).await?;
    Ok((single_in_flight, single_per_shard, batched))
}

/// Appends the samples of `plan` to a fresh store at `path`, `samples_per_append` per call,
/// `concurrency` calls outstanding.
async fn raw_append(
    plan: &EventPlan,
    path: &Path,
    samples_per_append: usize,
    concurrency: usize,
) -> anyhow::Result<AppendMeasurement> {
    let store = SqliteStore::open(&SqliteConfig {
        path: path.to_path_buf(),
        ..SqliteConfig::default()
    })
    .await
    .with_context(|| format!("opening {}", path.display()))?;
    let samples = (0..plan.n_events)
        .map(|n| plan.sample(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let batches: Vec<Vec<PresenceSample>> = samples
        .chunks(samples_per_append.max(1))
        .map(<[PresenceSample]>::to_vec)
        .collect();
    let stats_before = store.writer_stats();
    let started = Instant::now();
    let results: Vec<Result<(), lanmesh_storage::StoreError>> = stream::iter(batches)
        .map(|batch| store.append(batch))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let stats_after = store.writer_stats();
    store.close().await;
    let n_failed = results.iter().filter(|result| result.is_err()).count();
    if let Some(Err(error)) = results.into_iter().find(Result::is_err) {
        bail!("{n_failed} raw appends failed; first: {error}");
    }
    let n_transactions = stats_after
        .n_committed_transactions
        .saturating_sub(stats_before.n_committed_transactions);
    let name = if samples_per_append == 1 {
        format!("raw append, 1 sample × {concurrency} at once")
    } else {
        format!("raw append, {samples_per_append} per call × {concurrency}")
    };
    Ok(AppendMeasurement {
        throughput: Measurement::new(name, plan.n_events, elapsed),
        samples_per_append,
        concurrency,
        n_transactions,
        samples_per_transaction: plan.n_events as f64 / n_transactions.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_inside_their_segment_and_are_distinct() {
        let plan = EventPlan::new(16, 10_000, 1_000).unwrap();
        let mut instants = HashSet::new();
        let mut accounts = HashSet::new();
        for n in 0..plan.n_events {
            let event = plan.event(n).unwrap();
            assert!(event.segment.contains(event.address), "{event:?}");
            assert!(instants.insert(event.at_unix_ms));
            assert!(accounts.insert(event.account));
        }
        let (from, to) = plan.window().unwrap();
        assert!(instants.iter().all(|at| (from..to).contains(at)));
    }

    #[test]
    fn segments_split_the_events() {
        let plan = EventPlan::new(16, 1_003, 0).unwrap();
        let total: u64 = (0..16).map(|index| plan.n_events_of_segment(index)).sum();
        assert_eq!(total, 1_003);
        assert_eq!(plan.n_events_of_segment(0), 63);
        assert_eq!(plan.n_events_of_segment(15), 62);
    }

    #[test]
    fn segment_counts_are_checked() {
        assert!(EventPlan::new(0, 10, 0).is_err());
        assert!(EventPlan::new(257, 10, 0).is_err());
        assert!(EventPlan::new(256, 10, 0).is_ok());
    }

    #[test]
    fn progress_counts_distinct_samples_of_its_segment_only() {
        let plan = EventPlan::new(4, 40, 5_000).unwrap();
        let segment = plan.segments[1];
        let mut progress = SegmentProgress::new(&plan, 1, &segment).unwrap();
        let samples_of = |ns: &[u64]| -> Vec<PresenceSample> {
            ns.iter().map(|n| plan.sample(*n).unwrap()).collect()
        };
        // Event 2 belongs to another segment; event 5 twice counts once.
        progress.mark(&plan, &samples_of(&[1, 5, 5, 2, 13]));
        assert_eq!(progress.n_seen, 3);
        assert_eq!(progress.lowest_missing_turn, 2);
        assert!(!progress.is_complete());
        progress.mark(&plan, &samples_of(&[9, 17, 21, 25, 29, 33, 37]));
        assert_eq!(progress.lowest_missing_turn, 10);
        assert!(progress.is_complete());
    }
}
