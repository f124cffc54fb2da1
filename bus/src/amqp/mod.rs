//! The RabbitMQ transport (lapin), designed for RabbitMQ 3.10 semantics.
//!
//! - Publishing: persistent for shard queues, transient for node inboxes and broadcasts, always
//!   mandatory, on a channel with publisher confirms; each publish awaits its own confirm, so
//!   many publishes can be in flight at once (the confirms arrive asynchronously and may be
//!   batched by the broker). A `basic.return` (no queue bound; for a broadcast: no node
//!   listening) becomes [`TransportError::Unroutable`]; a `basic.nack` becomes
//!   [`TransportError::Refused`]. When the connection drops before the confirm, the publish is
//!   retried on the next connection with the same frame (same `msg_id`), so a message can arrive
//!   twice but a confirmed message is never lost; receivers de-duplicate by `msg_id`.
//! - Consuming: see [`consumer`].
//! - Connection: see [`link`].

mod consumer;
pub mod link;
pub mod topology;

use crate::address::NodeId;
use crate::codec::{FrameLimits, encode_envelope};
use crate::envelope::Envelope;
use crate::transport::{
    DeliveryHandler, Destination, PublishOptions, Source, Subscription, Transport, TransportError,
    TransportStats,
};
use async_trait::async_trait;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use link::{Link, LinkHandle, LinkSettings, LinkWaitError, ReconnectPolicy};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use topology::Topology;

/// AMQP delivery mode of messages that must survive a broker restart.
const PERSISTENT: u8 = 2;
/// AMQP delivery mode of messages that need not (pushes to node inboxes and broadcasts, whose
/// queues are transient).
const TRANSIENT: u8 = 1;

/// Settings of the RabbitMQ transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// Broker URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Prefix of every exchange and queue name.
    pub cluster_name: String,
    /// This node (names the connection; the inbox is subscribed separately).
    pub node_id: NodeId,
    /// Number of shard queues.
    pub n_shards: u16,
    /// Deliveries the broker may send ahead of acknowledgements, per subscription.
    pub prefetch: u16,
    /// Unacknowledged deliveries allowed before a message is dead-lettered.
    pub delivery_limit: u32,
    /// Frame size cap.
    pub frame_limits: FrameLimits,
    /// Reconnection backoff.
    pub reconnect: ReconnectPolicy,
}

impl AmqpConfig {
    /// Settings with defaults for everything but the URL, cluster and node.
    pub fn new(url: impl Into<String>, cluster_name: impl Into<String>, node_id: NodeId) -> Self {
        Self {
            url: url.into(),
            cluster_name: cluster_name.into(),
            node_id,
            n_shards: crate::shard_map::DEFAULT_N_SHARDS,
            prefetch: 64,
            delivery_limit: 20,
            frame_limits: FrameLimits::default(),
            reconnect: ReconnectPolicy::default(),
        }
    }

    /// The topology these settings declare.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.cluster_name, self.n_shards, self.delivery_limit)
    }
}

/// The RabbitMQ transport. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct AmqpTransport {
    shared: Arc<Shared>,
}

struct Shared {
    config: AmqpConfig,
    topology: Topology,
    link: Arc<LinkHandle>,
    stats: Arc<TransportStats>,
    /// Node inboxes and broadcast queues subscribed through this transport.
    claimed_sources: Arc<Mutex<HashSet<Source>>>,
}

impl AmqpTransport {
    /// Starts the connection supervisor and returns at once; the transport becomes ready when
    /// the broker answers (see [`Transport::is_ready`], [`AmqpTransport::wait_until_ready`]).
    pub fn start(config: AmqpConfig) -> Self {
        let topology = config.topology();
        let link = LinkHandle::new();
        let stats = Arc::new(TransportStats::default());
        let settings = LinkSettings {
            url: config.url.clone(),
            connection_name: format!("lanmesh {} {}", config.cluster_name, config.node_id),
            topology: topology.clone(),
            reconnect: config.reconnect,
        };
        tokio::spawn(link::supervise(
            Arc::clone(&link),
            settings,
            Arc::clone(&stats),
        ));
        Self {
            shared: Arc::new(Shared {
                config,
                topology,
                link,
                stats,
                claimed_sources: Arc::default(),
            }),
        }
    }

    /// Waits until connected and the topology is declared, at most `timeout`.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), TransportError> {
        self.shared
            .link
            .wait_for_link(Some(Instant::now() + timeout))
            .await
            .map(|_| ())
            .map_err(|error| wait_error(error, "broker", timeout))
    }

    /// Deletes this cluster's queues and exchanges (tests, decommissioning).
    pub async fn delete_topology(&self) -> Result<(), TransportError> {
        let link = self.shared.link.current().ok_or(TransportError::Closed)?;
        self.shared.topology.delete(&link.connection).await
    }

    async fn publish_once(
        &self,
        link: &Link,
        exchange: &str,
        routing_key: &str,
        frame: &[u8],
        properties: BasicProperties,
    ) -> Result<Confirmation, lapin::Error> {
        link.publish_channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                frame,
                properties,
            )
            .await?
            .await
    }
}

fn wait_error(error: LinkWaitError, destination: &str, waited: Duration) -> TransportError {
    match error {
        LinkWaitError::Closed => TransportError::Closed,
        LinkWaitError::TimedOut => TransportError::Timeout {
            destination: destination.to_owned(),
            waited,
        },
    }
}

#[async_trait]
impl Transport for AmqpTransport {
    async fn publish(
        &self,
        destination: &Destination,
        envelope: Envelope,
        options: &PublishOptions,
    ) -> Result<(), TransportError> {
        let result = self
            .publish_confirmed(destination, &envelope, options)
            .await;
        let counter = match &result {
            Ok(()) => &self.shared.stats.published,
            Err(_) => &self.shared.stats.publish_failures,
        };
        TransportStats::bump(counter);
        result
    }

    async fn subscribe(
        &self,
        source: Source,
        handler: Arc<dyn DeliveryHandler>,
    ) -> Result<Subscription, TransportError> {
        consumer::subscribe(
            Arc::clone(&self.shared.link),
            consumer::ConsumerSettings {
                topology: self.shared.topology.clone(),
                source,
                prefetch: self.shared.config.prefetch,
                frame_limits: self.shared.config.frame_limits,
                stats: Arc::clone(&self.shared.stats),
                claimed_sources: Arc::clone(&self.shared.claimed_sources),
            },
            handler,
        )
        .await
    }

    fn is_ready(&self) -> bool {
        self.shared
            .link
            .current()
            .is_some_and(|link| link.connection.status().connected())
    }

    fn stats(&self) -> Arc<TransportStats> {
        Arc::clone(&self.shared.stats)
    }

    async fn close(&self) {
        self.shared.link.close();
        // Wait for the supervisor to close the connection, so nothing outlives the transport.
        self.shared.link.wait_closed().await;
    }
}

impl AmqpTransport {
    async fn publish_confirmed(
        &self,
        destination: &Destination,
        envelope: &Envelope,
        options: &PublishOptions,
    ) -> Result<(), TransportError> {
        let frame = encode_envelope(envelope, &self.shared.config.frame_limits)?;
        let (exchange, routing_key) = self.shared.topology.route(destination);
        let delivery_mode = match destination {
            Destination::Shard(_) => PERSISTENT,
            Destination::Node(_) | Destination::Broadcast => TRANSIENT,
        };
        let mut properties = BasicProperties::default()
            .with_delivery_mode(delivery_mode)
            .with_content_type("application/msgpack".into())
            .with_message_id(envelope.msg_id.to_string().into());
        if let Some(expiration) = options.expiration_opt {
            properties = properties.with_expiration(expiration.as_millis().to_string().into());
        }
        let deadline = Instant::now() + options.timeout;
        let timed_out = || TransportError::Timeout {
            destination: destination.to_string(),
            waited: options.timeout,
        };
        loop {
            let link = self
                .shared
                .link
                .wait_for_link(Some(deadline))
                .await
                .map_err(|error| wait_error(error, &destination.to_string(), options.timeout))?;
            let attempt = tokio::time::timeout_at(
                deadline,
                self.publish_once(&link, &exchange, &routing_key, &frame, properties.clone()),
            )
            .await
            .map_err(|_| timed_out())?;
            match attempt {
                Ok(Confirmation::Ack(None)) => return Ok(()),
                Ok(Confirmation::Ack(Some(_returned))) => {
                    return Err(TransportError::Unroutable {
                        destination: destination.to_string(),
                    });
                }
                Ok(Confirmation::Nack(_)) => {
                    return Err(TransportError::Refused {
                        destination: destination.to_string(),
                    });
                }
                Ok(Confirmation::NotRequested) => {
                    // Confirms are always selected on the publish channel; this link is not
                    // the one we built, so replace it.
                    self.shared.link.report_broken(&link);
                }
                Err(error) => {
                    tracing::debug!(error = %error, %destination, "publish failed, retrying on the next link");
                    self.shared.link.report_broken(&link);
                    // Let the supervisor take the broken link down before we look again.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}
