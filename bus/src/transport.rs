//! The `Transport` contract shared by the RabbitMQ and in-process implementations.
//!
//! Semantics both implementations keep (and `crate::conformance` checks):
//! - a publish returns only once the message is durable at its destination (for AMQP: the
//!   broker's publisher confirm), or with a typed error; a destination with no queue behind it
//!   is `Unroutable`, never a silent drop;
//! - shard queues are durable and single-active-consumer: of several subscribers one receives,
//!   the others stand by and take over when it leaves;
//! - a delivery is acknowledged only after the handler returns [`HandlerOutcome::Ack`];
//!   [`HandlerOutcome::Retry`] puts it back at the head of its queue with its delivery count
//!   raised, and once that count passes the delivery limit the message is dead-lettered;
//!   [`HandlerOutcome::Reject`] dead-letters it at once;
//! - messages of one queue reach the handler one at a time, in queue order;
//! - a node inbox exists only while its node is subscribed to it, and pushes to it may expire;
//! - a broadcast reaches every node subscribed to its broadcast source at the time of the
//!   publish, once each; it is transient and may expire; a broadcast with no node subscribed is
//!   `Unroutable`. Each node's broadcast source admits one subscriber and exists only while
//!   subscribed.

use crate::address::{NodeId, ShardId};
use crate::codec::CodecError;
use crate::envelope::Envelope;
use async_trait::async_trait;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a message is published to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The durable queue of one shard (entity messages).
    Shard(ShardId),
    /// The inbox of one node (replies and pushes to that node's sessions).
    Node(NodeId),
    /// Every node subscribed to its [`Source::Broadcast`] right now, one copy each (cluster
    /// membership). Transient: not persisted, lost by a node that is not listening.
    Broadcast,
}

impl fmt::Display for Destination {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shard(shard) => write!(formatter, "shard {shard}"),
            Self::Node(node) => write!(formatter, "node {node}"),
            Self::Broadcast => formatter.write_str("broadcast"),
        }
    }
}

/// What a subscription consumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// One shard queue.
    Shard(ShardId),
    /// This node's inbox; exclusive to one subscriber, gone when it stops.
    NodeInbox(NodeId),
    /// Messages that were rejected or exceeded the delivery limit.
    DeadLetters,
    /// This node's copy of every [`Destination::Broadcast`]; exclusive to one subscriber, gone
    /// when it stops.
    Broadcast(NodeId),
}

impl fmt::Display for Source {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shard(shard) => write!(formatter, "shard {shard}"),
            Self::NodeInbox(node) => write!(formatter, "inbox of node {node}"),
            Self::DeadLetters => formatter.write_str("dead letters"),
            Self::Broadcast(node) => write!(formatter, "broadcasts to node {node}"),
        }
    }
}

/// How one publish behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Drop the message if not delivered within this time (used for pushes to node inboxes and
    /// for broadcasts).
    pub expiration_opt: Option<Duration>,
    /// How long to keep trying (across reconnections) before giving up with `Timeout`.
    pub timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            expiration_opt: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Reason recorded on a message dead-lettered because its handler rejected it.
pub const DEAD_LETTER_REJECTED: &str = "rejected";
/// Reason recorded on a message dead-lettered after too many deliveries.
pub const DEAD_LETTER_DELIVERY_LIMIT: &str = "delivery_limit";

/// One message handed to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message (shared: a transport may keep it for redelivery while the handler runs).
    pub envelope: Arc<Envelope>,
    /// How many times it was delivered before without being acknowledged.
    pub delivery_count: u32,
    /// For a dead letter: why it was dead-lettered (`rejected`, `delivery_limit`, ...).
    pub dead_letter_reason_opt: Option<String>,
}

impl Delivery {
    /// Whether an earlier delivery of this message was not acknowledged.
    pub fn is_redelivery(&self) -> bool {
        self.delivery_count > 0
    }
}

/// What the handler decided about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerOutcome {
    /// Handled and its effects are durable: remove it from the queue.
    Ack,
    /// Could not handle it now: deliver it again (up to the delivery limit).
    Retry,
    /// Can never be handled: dead-letter it.
    Reject,
}

/// Handles deliveries of one subscription, one at a time.
#[async_trait]
pub trait DeliveryHandler: Send + Sync + 'static {
    /// Handles one delivery; the transport acts on the outcome.
    async fn handle(&self, delivery: Delivery) -> HandlerOutcome;
}

struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> DeliveryHandler for FnHandler<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerOutcome> + Send + 'static,
{
    async fn handle(&self, delivery: Delivery) -> HandlerOutcome {
        (self.0)(delivery).await
    }
}

/// Wraps an async closure as a handler.
pub fn handler_fn<F, Fut>(handler: F) -> Arc<dyn DeliveryHandler>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerOutcome> + Send + 'static,
{
    Arc::new(FnHandler(handler))
}

/// Why a transport operation failed.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The envelope could not be encoded.
    #[error("cannot encode envelope: {0}")]
    Codec(#[from] CodecError),
    /// No queue is behind the destination (for a node: it is not running or not subscribed; for
    /// a broadcast: no node is subscribed).
    #[error("no queue is bound for {destination}")]
    Unroutable {
        /// Where the message was going.
        destination: String,
    },
    /// The broker refused the message.
    #[error("broker refused the message for {destination}")]
    Refused {
        /// Where the message was going.
        destination: String,
    },
    /// The message could not be published in time (broker unreachable or slow).
    #[error("publish to {destination} not confirmed within {waited:?}")]
    Timeout {
        /// Where the message was going.
        destination: String,
        /// How long we tried.
        waited: Duration,
    },
    /// Someone already consumes this exclusive source.
    #[error("{source_name} already has a subscriber")]
    AlreadySubscribed {
        /// The source.
        source_name: String,
    },
    /// The broker answered with an error.
    #[error("broker error during {operation}: {reason}")]
    Broker {
        /// What we were doing.
        operation: &'static str,
        /// What the broker or client library said.
        reason: String,
    },
    /// The transport was closed.
    #[error("transport is closed")]
    Closed,
}

/// Counters kept by a transport; read by the node's `/metrics`.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Messages published and confirmed.
    pub published: AtomicU64,
    /// Publishes that ended in an error.
    pub publish_failures: AtomicU64,
    /// Deliveries acknowledged.
    pub acked: AtomicU64,
    /// Deliveries handed back for redelivery.
    pub retried: AtomicU64,
    /// Messages dead-lettered (rejected or over the delivery limit).
    pub dead_lettered: AtomicU64,
    /// Deliveries whose frame could not be decoded (dead-lettered).
    pub undecodable: AtomicU64,
    /// Connections (re-)established after the first.
    pub reconnects: AtomicU64,
}

impl TransportStats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A message transport: publish to shards, node inboxes and every node (broadcast), consume
/// with acknowledgements.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes `envelope`; returns once it is durable at `destination` (for a broadcast: queued
    /// for every subscribed node).
    async fn publish(
        &self,
        destination: &Destination,
        envelope: Envelope,
        options: &PublishOptions,
    ) -> Result<(), TransportError>;

    /// Starts consuming `source` with `handler`.
    async fn subscribe(
        &self,
        source: Source,
        handler: Arc<dyn DeliveryHandler>,
    ) -> Result<Subscription, TransportError>;

    /// Whether the transport can publish and consume right now (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// The transport's counters.
    fn stats(&self) -> Arc<TransportStats>;

    /// Closes the transport; later publishes fail with [`TransportError::Closed`] and running
    /// subscriptions stop after their current delivery.
    async fn close(&self);
}

/// How a subscription is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
    Running,
    /// Finish and acknowledge the delivery in hand, then stop.
    Cancel,
    /// Stop at once, as a crash would: the delivery in hand is not acknowledged.
    Abort,
}

/// A running subscription. Dropping it cancels it in the background.
#[derive(Debug)]
pub struct Subscription {
    stop_sender: watch::Sender<StopMode>,
    task: JoinHandle<()>,
}

impl Subscription {
    pub(crate) fn new(stop_sender: watch::Sender<StopMode>, task: JoinHandle<()>) -> Self {
        Self { stop_sender, task }
    }

    /// Requests a stop at once and returns a future that completes when the subscription has
    /// stopped: the delivery in hand is handled and acknowledged first; messages not yet handed
    /// to the handler go back to the queue for the next subscriber.
    pub fn cancel(self) -> impl Future<Output = ()> + Send + 'static {
        self.stop(StopMode::Cancel)
    }

    /// Requests a stop like a crash and returns a future that completes when it has stopped:
    /// the delivery in hand is not acknowledged and will be delivered again (to the next
    /// subscriber) with its delivery count raised.
    pub fn abort(self) -> impl Future<Output = ()> + Send + 'static {
        self.stop(StopMode::Abort)
    }

    fn stop(self, mode: StopMode) -> impl Future<Output = ()> + Send + 'static {
        let Self { stop_sender, task } = self;
        stop_sender.send_replace(mode);
        async move {
            if let Err(error) = task.await {
                tracing::warn!(error = %error, "subscription task ended abnormally");
            }
            drop(stop_sender);
        }
    }
}

/// The receiving side of a subscription's stop signal, used by the consume loops.
pub(crate) struct StopSignal(watch::Receiver<StopMode>);

impl StopSignal {
    pub(crate) fn pair() -> (watch::Sender<StopMode>, Self) {
        let (sender, receiver) = watch::channel(StopMode::Running);
        (sender, Self(receiver))
    }

    /// The mode now; a dropped [`Subscription`] counts as cancelled.
    pub(crate) fn mode(&self) -> StopMode {
        if self.0.has_changed().is_err() {
            return StopMode::Cancel;
        }
        *self.0.borrow()
    }

    /// Waits until a stop is requested, returning its mode.
    pub(crate) async fn stopped(&mut self) -> StopMode {
        loop {
            let mode = *self.0.borrow_and_update();
            if mode != StopMode::Running {
                return mode;
            }
            if self.0.changed().await.is_err() {
                return StopMode::Cancel;
            }
        }
    }

    /// Waits until an abort is requested (a cancel lets the delivery in hand finish).
    pub(crate) async fn aborted(&mut self) {
        loop {
            if *self.0.borrow_and_update() == StopMode::Abort {
                return;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
