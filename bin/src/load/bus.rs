//! `lanmesh-load bus`: the bus against raw lapin on the same broker, in one run.
//!
//! Both sides move the same traffic through one durable quorum queue on one connection:
//! persistent, mandatory publishes with publisher confirms, at most `in_flight` unconfirmed at
//! a time; a consumer with the same prefetch acknowledges each message. The raw side sends the
//! bare body; the bus side wraps the same body in an envelope (encode on publish, decode and
//! validate on delivery) and goes through the transport's confirm, ack and routing logic.
//! The in-process transport is measured on a single-threaded runtime (one core).

use crate::load::raw_lapin::{
    PERSISTENT, confirm_channel, consume_with_prefetch, declare_quorum_queue, ensure_acked,
    publish_mandatory, unique_queue_name,
};
use crate::load::{Measurement, median};
use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lanmesh_bus::amqp::{AmqpConfig, AmqpTransport};
use lanmesh_bus::in_process::{InProcessConfig, InProcessTransport};
use lanmesh_bus::{
    Delivery, Destination, EntityAddress, Envelope, HandlerOutcome, NodeId, PublishOptions,
    ShardId, Source, Transport, handler_fn,
};
use lapin::options::{BasicAckOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BusBenchSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// Messages per broker round.
    pub n_messages: u64,
    /// Messages per in-process round.
    pub n_in_process_messages: u64,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Unconfirmed publishes allowed at once.
    pub in_flight: usize,
    /// Consumer prefetch.
    pub prefetch: u16,
    /// Rounds of each measurement (the median is reported).
    pub n_rounds: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BusBenchReport {
    /// Raw lapin publish → consume.
    pub raw_lapin: Measurement,
    /// The same traffic through envelope, codec and AMQP transport.
    pub bus_amqp: Measurement,
    /// `bus_amqp / raw_lapin` throughput.
    pub ratio: f64,
    /// The in-process transport on one core.
    pub bus_in_process: Measurement,
}

/// Counts acknowledged messages and wakes the waiter when all have arrived.
struct Arrivals {
    n_seen: AtomicU64,
    all_seen: Notify,
    n_expected: u64,
}

impl Arrivals {
    fn new(n_expected: u64) -> Arc<Self> {
        Arc::new(Self {
            n_seen: AtomicU64::new(0),
            all_seen: Notify::new(),
            n_expected,
        })
    }

    fn record(&self) {
        if self.n_seen.fetch_add(1, Ordering::AcqRel) + 1 == self.n_expected {
            self.all_seen.notify_one();
        }
    }

    async fn wait_all(&self, timeout: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(timeout, self.all_seen.notified())
            .await
            .with_context(|| {
                format!(
                    "only {} of {} messages consumed within {timeout:?}",
                    self.n_seen.load(Ordering::Acquire),
                    self.n_expected
                )
            })
    }
}

const ROUND_TIMEOUT: Duration = Duration::from_secs(300);

async fn raw_lapin_round(settings: &BusBenchSettings) -> anyhow::Result<Measurement> {
    let connection = Connection::connect(&settings.amqp_url, ConnectionProperties::default())
        .await
        .context("connecting raw lapin")?;
    let queue = unique_queue_name("raw");
    let publish_channel = confirm_channel(&connection).await?;
    declare_quorum_queue(&publish_channel, &queue).await?;
    let consume_channel = connection.create_channel().await?;
    let mut consumer =
        consume_with_prefetch(&consume_channel, &queue, "bench", settings.prefetch).await?;
    let arrivals = Arrivals::new(settings.n_messages);
    let consuming = {
        let arrivals = Arc::clone(&arrivals);
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                if delivery.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
                arrivals.record();
            }
        })
    };
    let body = vec![b'x'; settings.body_bytes];
    let started = Instant::now();
    let mut confirms = FuturesUnordered::new();
    for _ in 0..settings.n_messages {
        let confirm = publish_mandatory(
            &publish_channel,
            "",
            &queue,
            &body,
            BasicProperties::default().with_delivery_mode(PERSISTENT),
        )
        .await?;
        confirms.push(confirm);
        while confirms.len() >= settings.in_flight {
            if let Some(confirmation) = confirms.next().await {
                ensure_acked(confirmation)?;
            }
        }
    }
    while let Some(confirmation) = confirms.next().await {
        ensure_acked(confirmation)?;
    }
    arrivals.wait_all(ROUND_TIMEOUT).await?;
    let elapsed = started.elapsed();
    // Close the channel rather than dropping the consumer: a dropped lapin consumer sends its
    // own basic.cancel, which races the queue deletion below.
    consume_channel.close(200, "done".into()).await?;
    consuming.await?;
    publish_channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    connection.close(200, "done".into()).await?;
    Ok(Measurement::new("raw lapin", settings.n_messages, elapsed))
}

fn bench_envelope(sender: &NodeId, body: &[u8]) -> anyhow::Result<Envelope> {
    Ok(Envelope::new(
        EntityAddress::new("bench", "entity-1")?,
        sender.clone(),
        body.to_vec(),
    ))
}

/// Publishes `n_messages` to shard 0 with at most `in_flight` awaiting confirmation, and waits
/// until the subscriber has acknowledged them all.
async fn drive_transport(
    transport: Arc<dyn Transport>,
    n_messages: u64,
    in_flight: usize,
    body_bytes: usize,
) -> anyhow::Result<Duration> {
    let arrivals = Arrivals::new(n_messages);
    let subscription = {
        let arrivals = Arc::clone(&arrivals);
        transport
            .subscribe(
                Source::Shard(ShardId(0)),
                handler_fn(move |_delivery: Delivery| {
                    arrivals.record();
                    async { HandlerOutcome::Ack }
                }),
            )
            .await?
    };
    let sender = NodeId::new("bench")?;
    let body = vec![b'x'; body_bytes];
    let options = PublishOptions::default();
    let destination = Destination::Shard(ShardId(0));
    let started = Instant::now();
    let mut publishes = FuturesUnordered::new();
    for _ in 0..n_messages {
        let envelope = bench_envelope(&sender, &body)?;
        let transport = Arc::clone(&transport);
        let destination = &destination;
        let options = &options;
        publishes.push(async move { transport.publish(destination, envelope, options).await });
        while publishes.len() >= in_flight {
            if let Some(result) = publishes.next().await {
                result?;
            }
        }
    }
    while let Some(result) = publishes.next().await {
        result?;
    }
    arrivals.wait_all(ROUND_TIMEOUT).await?;
    let elapsed = started.elapsed();
    subscription.cancel().await;
    Ok(elapsed)
}

async fn bus_amqp_round(settings: &BusBenchSettings) -> anyhow::Result<Measurement> {
    let cluster = format!("lanmesh-bench-{}", uuid::Uuid::new_v4().simple());
    let mut config = AmqpConfig::new(&settings.amqp_url, cluster, NodeId::generate());
    config.n_shards = 1;
    config.prefetch = settings.prefetch;
    let transport = AmqpTransport::start(config);
    transport.wait_until_ready(Duration::from_secs(30)).await?;
    let elapsed = drive_transport(
        Arc::new(transport.clone()),
        settings.n_messages,
        settings.in_flight,
        settings.body_bytes,
    )
    .await?;
    transport.delete_topology().await?;
    transport.close().await;
    Ok(Measurement::new(
        "bus over rabbitmq",
        settings.n_messages,
        elapsed,
    ))
}

fn in_process_round(settings: &BusBenchSettings) -> anyhow::Result<Measurement> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let elapsed = runtime.block_on(drive_transport(
        Arc::new(InProcessTransport::new(InProcessConfig {
            n_shards: 1,
            delivery_limit: 20,
        })),
        settings.n_in_process_messages,
        settings.in_flight,
        settings.body_bytes,
    ))?;
    Ok(Measurement::new(
        "bus in-process (1 core)",
        settings.n_in_process_messages,
        elapsed,
    ))
}

/// Runs every measurement `n_rounds` times, raw and bus alternating, and reports medians.
pub async fn run(settings: &BusBenchSettings) -> anyhow::Result<BusBenchReport> {
    let mut raw_rounds = Vec::new();
    let mut bus_rounds = Vec::new();
    for round in 0..settings.n_rounds {
        raw_rounds.push(raw_lapin_round(settings).await?);
        bus_rounds.push(bus_amqp_round(settings).await?);
        tracing::info!(round, "round done");
    }
    let in_process_settings = settings.clone();
    let in_process_rounds = tokio::task::spawn_blocking(move || {
        (0..in_process_settings.n_rounds)
            .map(|_| in_process_round(&in_process_settings))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    let raw_lapin = median(raw_rounds).context("no rounds")?;
    let bus_amqp = median(bus_rounds).context("no rounds")?;
    let bus_in_process = median(in_process_rounds).context("no rounds")?;
    Ok(BusBenchReport {
        ratio: bus_amqp.messages_per_second / raw_lapin.messages_per_second,
        raw_lapin,
        bus_amqp,
        bus_in_process,
    })
}
