//! `lanmesh-load entities`: request/reply with probe entities hosted by real nodes, against
//! raw lapin request/reply on the same broker, in one run.
//!
//! Entity side: a client (a bus participant, not a cluster member) sends `Record { seq }` to
//! probes. Each request goes client → the probe's shard queue (persistent, confirmed) → the
//! node that owns the shard → the probe actor, which applies it and persists it in storage
//! before acknowledging → the reply, published to the client's inbox (confirmed) → the client.
//! Each probe gets its sequence numbers in order from one worker only.
//!
//! Raw side: the same broker hops with nothing of lanmesh. A requester publishes a body of the
//! same size (persistent, mandatory, confirmed) to one durable quorum queue; a responder on its
//! own connection consumes it, publishes the reply (confirmed) to the requester's exclusive
//! reply queue and then acknowledges the request; the requester matches the reply by
//! correlation id. No storage, no envelope codec, no shard routing.
//!
//! Both sides run `concurrency` closed-loop workers, each with one request outstanding, for
//! the same duration (or number of requests). Latency is from sending a request to receiving
//! its reply.

use crate::load::local_cluster::ClusterSpec;
use crate::load::probe_client::{ProbeClient, ProbeClientSettings};
use crate::load::raw_lapin::{
    PERSISTENT, TRANSIENT, confirm_channel, consume_with_prefetch, declare_quorum_queue,
    ensure_acked, publish_mandatory, unique_queue_name,
};
use crate::load::{LatencyMeasurement, spawn_local_cluster, stop_spawned};
use anyhow::{Context, bail};
use futures_util::StreamExt;
use lanmesh_actors::entities::probe::{self, ProbeRequest};
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_bus::codec::{FrameLimits, encode_envelope};
use lanmesh_bus::request_reply::RequestPolicy;
use lanmesh_bus::{Envelope, NodeId};
use lapin::message::Delivery as LapinDelivery;
use lapin::options::{BasicAckOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long spawned nodes may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Entity requests: resend after 5 s without a reply (same `msg_id`), give up after 60 s.
const ENTITY_REQUEST_POLICY: RequestPolicy = RequestPolicy {
    attempt_timeout: Duration::from_secs(5),
    total_timeout: Duration::from_secs(60),
};
/// Raw requests give up after this long.
const RAW_REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Deliveries the raw requester's reply consumer takes ahead, as a lanmesh client's inbox
/// (the default `bus.prefetch`).
const RAW_REPLY_PREFETCH: u16 = 64;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct EntityBenchSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// The cluster to talk to; by default a unique name when spawning nodes, else `lanmesh`.
    pub cluster_name_opt: Option<String>,
    /// Shards of the cluster (must be the nodes' `cluster.n_shards`).
    pub n_shards: u16,
    /// Distinct probes the requests go to.
    pub n_probes: usize,
    /// Closed-loop workers, each with one request outstanding.
    pub concurrency: usize,
    /// How long each side runs (unless `n_requests_opt` is set).
    pub duration: Duration,
    /// Requests per side instead of a duration.
    pub n_requests_opt: Option<u64>,
    /// Nodes to start for the run (0 = use a running cluster).
    pub spawn_nodes: usize,
    /// The `lanmesh-node` executable to spawn (default: beside this executable).
    pub node_binary_opt: Option<PathBuf>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct EntityBenchReport {
    /// The cluster measured.
    pub cluster_name: String,
    /// Nodes started by this run (0 = an existing cluster).
    pub n_nodes_spawned: usize,
    /// Shards of the cluster.
    pub n_shards: u16,
    /// Distinct probes.
    pub n_probes: usize,
    /// Closed-loop workers per side.
    pub concurrency: usize,
    /// Entity request/reply through the nodes.
    pub entity: LatencyMeasurement,
    /// Raw lapin request/reply on the same broker.
    pub raw_lapin: LatencyMeasurement,
    /// `entity / raw_lapin` throughput.
    pub ratio: f64,
}

/// Runs both sides and, when it started nodes, stops them and deletes the topology.
pub async fn run(settings: &EntityBenchSettings) -> anyhow::Result<EntityBenchReport> {
    if settings.concurrency == 0 || settings.n_probes < settings.concurrency {
        bail!(
            "--n-probes ({}) must be at least --concurrency ({}), which must be positive: \
             each probe gets its requests from one worker, in order",
            settings.n_probes,
            settings.concurrency
        );
    }
    let cluster_name = match (&settings.cluster_name_opt, settings.spawn_nodes) {
        (Some(name), _) => name.clone(),
        (None, 0) => "lanmesh".to_owned(),
        (None, _) => format!(
            "lanmesh-load-{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .unwrap_or("x")
        ),
    };
    let mut cluster_opt = None;
    if settings.spawn_nodes > 0 {
        cluster_opt = Some(spawn_local_cluster(
            &settings.amqp_url,
            &cluster_name,
            ClusterSpec::new(settings.n_shards),
            settings.spawn_nodes,
            settings.node_binary_opt.as_deref(),
        )?);
    }
    let measured = async {
        if let Some(cluster) = &mut cluster_opt {
            cluster.wait_settled(SETTLE_TIMEOUT).await?;
            tracing::info!(n_nodes = settings.spawn_nodes, cluster = %cluster_name, "spawned nodes settled");
        }
        let entity = entity_round(settings, &cluster_name).await?;
        let raw_lapin = raw_round(settings).await?;
        Ok::<_, anyhow::Error>((entity, raw_lapin))
    }
    .await;
    if let Some(cluster) = cluster_opt {
        stop_spawned(cluster, measured.is_err()).await?;
    }
    let (entity, raw_lapin) = measured?;
    Ok(EntityBenchReport {
        cluster_name,
        n_nodes_spawned: settings.spawn_nodes,
        n_shards: settings.n_shards,
        n_probes: settings.n_probes,
        concurrency: settings.concurrency,
        ratio: entity.requests_per_second / raw_lapin.requests_per_second.max(f64::MIN_POSITIVE),
        entity,
        raw_lapin,
    })
}

/// When the workers stop: after a number of requests, or at a deadline.
struct StopRule {
    n_requests_opt: Option<u64>,
    duration: Duration,
}

/// Shared by the workers of one round.
struct Budget {
    n_requests_opt: Option<u64>,
    n_claimed: AtomicU64,
    deadline: Instant,
}

impl Budget {
    fn new(rule: &StopRule) -> Self {
        Self {
            n_requests_opt: rule.n_requests_opt,
            n_claimed: AtomicU64::new(0),
            deadline: Instant::now() + rule.duration,
        }
    }

    /// Whether a worker may send one more request.
    fn claim(&self) -> bool {
        match self.n_requests_opt {
            Some(n_requests) => self.n_claimed.fetch_add(1, Ordering::AcqRel) < n_requests,
            None => Instant::now() < self.deadline,
        }
    }
}

fn stop_rule(settings: &EntityBenchSettings) -> StopRule {
    StopRule {
        n_requests_opt: settings.n_requests_opt,
        duration: settings.duration,
    }
}

/// Runs `concurrency` closed-loop workers; worker `w` calls `request(w, i)` for its i-th
/// request until the budget is spent.
async fn drive<F, Fut>(
    name: &str,
    concurrency: usize,
    rule: &StopRule,
    request: F,
) -> anyhow::Result<LatencyMeasurement>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let request = Arc::new(request);
    let budget = Arc::new(Budget::new(rule));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let request = Arc::clone(&request);
        let budget = Arc::clone(&budget);
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut n_errors = 0_u64;
            let mut first_error_opt = None;
            let mut iteration = 0_u64;
            while budget.claim() {
                let sent = Instant::now();
                match request(worker, iteration).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(error) => {
                        n_errors += 1;
                        first_error_opt.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
                iteration += 1;
            }
            (latencies, n_errors, first_error_opt)
        });
    }
    let mut latencies = Vec::new();
    let mut n_errors = 0;
    let mut first_error_opt = None;
    while let Some(joined) = workers.join_next().await {
        let (worker_latencies, worker_errors, worker_error_opt) =
            joined.context("a load worker panicked")?;
        latencies.extend(worker_latencies);
        n_errors += worker_errors;
        first_error_opt = first_error_opt.or(worker_error_opt);
    }
    let elapsed = started.elapsed();
    if let Some(error) = first_error_opt {
        tracing::warn!(scenario = name, n_errors, error = %error, "requests failed");
    }
    Ok(LatencyMeasurement::new(name, latencies, n_errors, elapsed))
}

/// The probes worker `worker` of `concurrency` sends to: every `concurrency`-th one.
fn n_probes_of_worker(n_probes: usize, concurrency: usize, worker: usize) -> usize {
    n_probes.saturating_sub(worker).div_ceil(concurrency.max(1))
}

async fn entity_round(
    settings: &EntityBenchSettings,
    cluster_name: &str,
) -> anyhow::Result<LatencyMeasurement> {
    let client = Arc::new(
        ProbeClient::connect(&ProbeClientSettings {
            amqp_url: settings.amqp_url.clone(),
            cluster_name: cluster_name.to_owned(),
            n_shards: settings.n_shards,
            client_id_prefix: "load-client".to_owned(),
            request_policy: ENTITY_REQUEST_POLICY,
        })
        .await?,
    );
    let run_tag = uuid::Uuid::new_v4().simple().to_string();
    let probe_ids: Arc<Vec<String>> = Arc::new(
        (0..settings.n_probes)
            .map(|index| format!("load-{}-{index}", run_tag.get(..8).unwrap_or("x")))
            .collect(),
    );
    // Warm-up, not timed: every probe applies seq 1, so its actor is live and its shard owned.
    let warmed_up = Instant::now();
    let warm_up: Vec<anyhow::Result<u64>> = futures_util::stream::iter(probe_ids.iter())
        .map(|probe_id| client.record(probe_id, 1))
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    for result in warm_up {
        result.context("warm-up")?;
    }
    tracing::info!(
        n_probes = settings.n_probes,
        seconds = warmed_up.elapsed().as_secs_f64(),
        "probes warmed up"
    );

    let concurrency = settings.concurrency;
    let n_probes = settings.n_probes;
    let measured = {
        let client = Arc::clone(&client);
        drive(
            "entity request/reply",
            concurrency,
            &stop_rule(settings),
            move |worker, iteration| {
                let client = Arc::clone(&client);
                let probe_ids = Arc::clone(&probe_ids);
                async move {
                    let n_assigned = n_probes_of_worker(n_probes, concurrency, worker) as u64;
                    let turn = iteration % n_assigned.max(1);
                    let probe_index = worker + usize::try_from(turn)? * concurrency;
                    let probe_id = probe_ids
                        .get(probe_index)
                        .context("probe index out of range")?;
                    // Seq 1 was the warm-up; each later round over the worker's probes adds one.
                    let seq = iteration / n_assigned.max(1) + 2;
                    client.record(probe_id, seq).await.map(|_n_applied| ())
                }
            },
        )
        .await
    };
    client.close().await;
    measured
}

type PendingReplies = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// A request body the size of an entity request's frame (envelope and `Record`).
fn raw_body() -> anyhow::Result<Vec<u8>> {
    let envelope = Envelope::new(
        EntityKind::Probe.address("load-00000000-0")?,
        NodeId::new("load-client-000000000000")?,
        probe::encode(&ProbeRequest::Record { seq: 1 })?,
    )
    .with_timeout(ENTITY_REQUEST_POLICY.total_timeout);
    Ok(encode_envelope(&envelope, &FrameLimits::default())?)
}

/// Publishes the reply to a raw request, waits for its confirm, then acknowledges the request.
async fn respond(reply_channel: &Channel, request: LapinDelivery) -> anyhow::Result<()> {
    let reply_to = request
        .properties
        .reply_to()
        .clone()
        .context("request without reply_to")?;
    let correlation_id = request
        .properties
        .correlation_id()
        .clone()
        .context("request without correlation_id")?;
    let confirm = publish_mandatory(
        reply_channel,
        "",
        reply_to.as_str(),
        &request.data,
        BasicProperties::default()
            .with_delivery_mode(TRANSIENT)
            .with_correlation_id(correlation_id),
    )
    .await?;
    ensure_acked(confirm.await)?;
    request.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Raw lapin request/reply on the broker of `settings`: the baseline of entity round trips.
pub(crate) async fn raw_round(
    settings: &EntityBenchSettings,
) -> anyhow::Result<LatencyMeasurement> {
    let connect = || Connection::connect(&settings.amqp_url, ConnectionProperties::default());
    let request_queue = unique_queue_name("request-reply");

    // The responder, on a connection of its own like a node.
    let responder_connection = connect().await.context("connecting the raw responder")?;
    let request_channel = responder_connection.create_channel().await?;
    declare_quorum_queue(&request_channel, &request_queue).await?;
    let responder_prefetch = u16::try_from(settings.concurrency).unwrap_or(u16::MAX);
    let mut requests = consume_with_prefetch(
        &request_channel,
        &request_queue,
        "responder",
        responder_prefetch,
    )
    .await?;
    let reply_channel = confirm_channel(&responder_connection).await?;
    let responding = tokio::spawn(async move {
        while let Some(Ok(request)) = requests.next().await {
            let reply_channel = reply_channel.clone();
            tokio::spawn(async move {
                if let Err(error) = respond(&reply_channel, request).await {
                    tracing::warn!(error = %format!("{error:#}"), "raw responder failed");
                }
            });
        }
    });

    // The requester: confirmed publishes, and an exclusive reply queue.
    let requester_connection = connect().await.context("connecting the raw requester")?;
    let publish_channel = confirm_channel(&requester_connection).await?;
    let reply_consume_channel = requester_connection.create_channel().await?;
    let reply_queue = reply_consume_channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .name()
        .as_str()
        .to_owned();
    let mut replies = consume_with_prefetch(
        &reply_consume_channel,
        &reply_queue,
        "requester",
        RAW_REPLY_PREFETCH,
    )
    .await?;
    let pending: PendingReplies = Arc::default();
    let dispatching = {
        let pending = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(Ok(reply)) = replies.next().await {
                let waiting_opt = reply.properties.correlation_id().as_ref().and_then(|id| {
                    pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(id.as_str())
                });
                if let Some(waiting) = waiting_opt {
                    let _ = waiting.send(());
                }
                if reply.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
            }
        })
    };

    let body = Arc::new(raw_body()?);
    let measured = {
        let publish_channel = publish_channel.clone();
        let request_queue = request_queue.clone();
        let reply_queue = reply_queue.clone();
        let pending = Arc::clone(&pending);
        drive(
            "raw lapin request/reply",
            settings.concurrency,
            &stop_rule(settings),
            move |_worker, _iteration| {
                let publish_channel = publish_channel.clone();
                let request_queue = request_queue.clone();
                let reply_queue = reply_queue.clone();
                let pending = Arc::clone(&pending);
                let body = Arc::clone(&body);
                async move {
                    let correlation_id = uuid::Uuid::now_v7().to_string();
                    let (reply_sender, reply_receiver) = oneshot::channel();
                    pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(correlation_id.clone(), reply_sender);
                    let confirm = publish_mandatory(
                        &publish_channel,
                        "",
                        &request_queue,
                        &body,
                        BasicProperties::default()
                            .with_delivery_mode(PERSISTENT)
                            .with_reply_to(reply_queue.as_str().into())
                            .with_correlation_id(correlation_id.as_str().into()),
                    )
                    .await?;
                    ensure_acked(confirm.await)?;
                    let replied = tokio::time::timeout(RAW_REPLY_TIMEOUT, reply_receiver).await;
                    pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&correlation_id);
                    replied
                        .context("no raw reply in time")?
                        .context("raw reply dispatcher stopped")?;
                    Ok(())
                }
            },
        )
        .await
    };

    // Close channels rather than dropping consumers (a dropped lapin consumer sends its own
    // basic.cancel, which races the queue deletion).
    request_channel.close(200, "done".into()).await?;
    responding.await?;
    reply_consume_channel.close(200, "done".into()).await?;
    dispatching.await?;
    publish_channel
        .queue_delete(request_queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    requester_connection.close(200, "done".into()).await?;
    responder_connection.close(200, "done".into()).await?;
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_split_the_probes_without_sharing() {
        for (n_probes, concurrency) in [(10, 3), (9, 3), (3, 3), (1000, 64)] {
            let total: usize = (0..concurrency)
                .map(|worker| n_probes_of_worker(n_probes, concurrency, worker))
                .sum();
            assert_eq!(total, n_probes, "{n_probes} probes over {concurrency}");
        }
        assert_eq!(n_probes_of_worker(10, 3, 0), 4);
        assert_eq!(n_probes_of_worker(10, 3, 2), 3);
    }

    #[test]
    fn a_request_budget_is_claimed_exactly() {
        let budget = Budget::new(&StopRule {
            n_requests_opt: Some(3),
            duration: Duration::ZERO,
        });
        let n_claimed = (0..10).filter(|_| budget.claim()).count();
        assert_eq!(n_claimed, 3);
    }
}
