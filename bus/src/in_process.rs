//! The in-process transport: the same queues and acknowledgement rules as the RabbitMQ
//! topology, held in memory, for the embedded single-machine node and fast deterministic tests.
//!
//! Node inboxes and per-node broadcast queues are exclusive queues: created when their node
//! subscribes, removed when that subscription stops. A broadcast puts one copy (sharing one
//! envelope) into each broadcast queue that exists at the moment of the publish.
//!
//! Envelopes are moved, not encoded: the codec is exercised by the AMQP transport and its own
//! tests, and the embedded node should not pay for serialization it does not need.

use crate::envelope::{Envelope, now_unix_ms};
use crate::transport::{
    DEAD_LETTER_DELIVERY_LIMIT, DEAD_LETTER_REJECTED, Delivery, DeliveryHandler, Destination,
    HandlerOutcome, PublishOptions, Source, StopMode, StopSignal, Subscription, Transport,
    TransportError, TransportStats,
};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Settings of an in-process transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InProcessConfig {
    /// Number of shard queues.
    pub n_shards: u16,
    /// Unacknowledged deliveries allowed before a message is dead-lettered.
    pub delivery_limit: u32,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        Self {
            n_shards: crate::shard_map::DEFAULT_N_SHARDS,
            delivery_limit: 20,
        }
    }
}

struct StoredMessage {
    envelope: Arc<Envelope>,
    delivery_count: u32,
    expires_at_unix_ms_opt: Option<u64>,
    dead_letter_reason_opt: Option<String>,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<StoredMessage>,
    /// Subscribers in arrival order; the first is the single active consumer.
    consumer_ids: VecDeque<u64>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Notify,
    /// Consumers parked on `changed`. A publisher wakes them only when this is non-zero: a
    /// consumer counts itself (and registers with `changed`) before it looks at the queue
    /// under the lock, and a publisher reads it after pushing under the same lock, so a
    /// consumer that saw the queue empty is always seen here.
    n_parked: std::sync::atomic::AtomicUsize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A poisoned lock only means a panic elsewhere mid-update of a VecDeque push/pop, which
        // leaves the deque consistent; keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push_back(&self, message: StoredMessage) {
        self.lock().ready.push_back(message);
        if self.n_parked.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }
}

struct Shared {
    config: InProcessConfig,
    shard_queues: Vec<Arc<Queue>>,
    /// Node inboxes and broadcast queues, keyed by the exclusive source that created them.
    exclusive_queues: Mutex<HashMap<Source, Arc<Queue>>>,
    dead_letters: Arc<Queue>,
    stats: Arc<TransportStats>,
    closed: AtomicBool,
    next_consumer_id: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn exclusive_queues(&self) -> MutexGuard<'_, HashMap<Source, Arc<Queue>>> {
        self.exclusive_queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shard_queue(&self, shard: crate::address::ShardId) -> Option<&Arc<Queue>> {
        self.shard_queues.get(usize::from(shard.0))
    }

    fn dead_letter(&self, mut message: StoredMessage, reason: &str) {
        TransportStats::bump(&self.stats.dead_lettered);
        message.dead_letter_reason_opt = Some(reason.to_owned());
        message.delivery_count = 0;
        self.dead_letters.push_back(message);
    }

    /// Puts an unacknowledged message back at the head of its queue, or dead-letters it when it
    /// has been delivered more often than the limit allows.
    fn requeue(&self, queue: &Queue, mut message: StoredMessage) {
        message.delivery_count = message.delivery_count.saturating_add(1);
        if message.delivery_count > self.config.delivery_limit {
            self.dead_letter(message, DEAD_LETTER_DELIVERY_LIMIT);
            return;
        }
        TransportStats::bump(&self.stats.retried);
        queue.lock().ready.push_front(message);
        queue.changed.notify_waiters();
    }
}

/// The in-memory transport.
#[derive(Clone)]
pub struct InProcessTransport {
    shared: Arc<Shared>,
}

impl InProcessTransport {
    /// A transport with `config.n_shards` empty shard queues.
    pub fn new(config: InProcessConfig) -> Self {
        let shard_queues = (0..config.n_shards)
            .map(|_| Arc::new(Queue::default()))
            .collect();
        Self {
            shared: Arc::new(Shared {
                config,
                shard_queues,
                exclusive_queues: Mutex::new(HashMap::new()),
                dead_letters: Arc::new(Queue::default()),
                stats: Arc::new(TransportStats::default()),
                closed: AtomicBool::new(false),
                next_consumer_id: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }

    fn ensure_open(&self) -> Result<(), TransportError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        Ok(())
    }
}

#[async_trait]
impl Transport for InProcessTransport {
    async fn publish(
        &self,
        destination: &Destination,
        envelope: Envelope,
        options: &PublishOptions,
    ) -> Result<(), TransportError> {
        self.ensure_open()?;
        let queues: Vec<Arc<Queue>> = match destination {
            Destination::Shard(shard) => self
                .shared
                .shard_queue(*shard)
                .cloned()
                .into_iter()
                .collect(),
            Destination::Node(node) => self
                .shared
                .exclusive_queues()
                .get(&Source::NodeInbox(node.clone()))
                .cloned()
                .into_iter()
                .collect(),
            Destination::Broadcast => self
                .shared
                .exclusive_queues()
                .iter()
                .filter(|(source, _)| matches!(source, Source::Broadcast(_)))
                .map(|(_, queue)| Arc::clone(queue))
                .collect(),
        };
        if queues.is_empty() {
            TransportStats::bump(&self.shared.stats.publish_failures);
            return Err(TransportError::Unroutable {
                destination: destination.to_string(),
            });
        }
        let expires_at_unix_ms_opt = options.expiration_opt.map(|expiration| {
            let expiration_ms = u64::try_from(expiration.as_millis()).unwrap_or(u64::MAX);
            now_unix_ms().saturating_add(expiration_ms)
        });
        let shared_envelope = Arc::new(envelope);
        for queue in queues {
            queue.push_back(StoredMessage {
                envelope: Arc::clone(&shared_envelope),
                delivery_count: 0,
                expires_at_unix_ms_opt,
                dead_letter_reason_opt: None,
            });
        }
        TransportStats::bump(&self.shared.stats.published);
        Ok(())
    }

    async fn subscribe(
        &self,
        source: Source,
        handler: Arc<dyn DeliveryHandler>,
    ) -> Result<Subscription, TransportError> {
        self.ensure_open()?;
        let (queue, exclusive_opt) = match &source {
            Source::Shard(shard) => {
                let queue = self.shared.shard_queue(*shard).cloned().ok_or_else(|| {
                    TransportError::Unroutable {
                        destination: source.to_string(),
                    }
                })?;
                (queue, None)
            }
            Source::NodeInbox(_) | Source::Broadcast(_) => {
                let mut exclusive_queues = self.shared.exclusive_queues();
                if exclusive_queues.contains_key(&source) {
                    return Err(TransportError::AlreadySubscribed {
                        source_name: source.to_string(),
                    });
                }
                let queue = Arc::new(Queue::default());
                exclusive_queues.insert(source.clone(), Arc::clone(&queue));
                (queue, Some(source.clone()))
            }
            Source::DeadLetters => (Arc::clone(&self.shared.dead_letters), None),
        };
        let consumer_id = self.shared.next_consumer_id.fetch_add(1, Ordering::Relaxed);
        queue.lock().consumer_ids.push_back(consumer_id);
        let (stop_sender, stop_signal) = StopSignal::pair();
        let consumer = Consumer {
            shared: Arc::clone(&self.shared),
            queue,
            consumer_id,
            exclusive_opt,
            handler,
        };
        let task = tokio::spawn(consumer.run(stop_signal));
        Ok(Subscription::new(stop_sender, task))
    }

    fn is_ready(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
    }

    fn stats(&self) -> Arc<TransportStats> {
        Arc::clone(&self.shared.stats)
    }

    async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let exclusive_queues: Vec<_> = self.shared.exclusive_queues().values().cloned().collect();
        let all_queues = self
            .shared
            .shard_queues
            .iter()
            .chain(exclusive_queues.iter())
            .chain(std::iter::once(&self.shared.dead_letters));
        for queue in all_queues {
            queue.changed.notify_waiters();
        }
    }
}

/// Counts a consumer in [`Queue::n_parked`] while it waits.
struct ParkedGuard<'a>(&'a Queue);

impl<'a> ParkedGuard<'a> {
    fn park(queue: &'a Queue) -> Self {
        queue.n_parked.fetch_add(1, Ordering::SeqCst);
        Self(queue)
    }
}

impl Drop for ParkedGuard<'_> {
    fn drop(&mut self) {
        self.0.n_parked.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Consumer {
    shared: Arc<Shared>,
    queue: Arc<Queue>,
    consumer_id: u64,
    /// The inbox or broadcast queue this consumer created; removed when it leaves.
    exclusive_opt: Option<Source>,
    handler: Arc<dyn DeliveryHandler>,
}

impl Consumer {
    async fn run(self, mut stop_signal: StopSignal) {
        while let Some(message) = self.next_message(&mut stop_signal).await {
            let delivery = Delivery {
                envelope: Arc::clone(&message.envelope),
                delivery_count: message.delivery_count,
                dead_letter_reason_opt: message.dead_letter_reason_opt.clone(),
            };
            let outcome = tokio::select! {
                // The handler first: one that finishes at once never waits on the stop signal.
                biased;
                outcome = self.handler.handle(delivery) => Some(outcome),
                () = stop_signal.aborted() => None,
            };
            match outcome {
                Some(HandlerOutcome::Ack) => TransportStats::bump(&self.shared.stats.acked),
                Some(HandlerOutcome::Retry) => self.shared.requeue(&self.queue, message),
                Some(HandlerOutcome::Reject) => {
                    self.shared.dead_letter(message, DEAD_LETTER_REJECTED);
                }
                None => {
                    self.shared.requeue(&self.queue, message);
                    break;
                }
            }
        }
        self.leave();
    }

    /// Waits until this consumer is the active one and a message is ready; `None` once the
    /// subscription is stopped or the transport closed.
    async fn next_message(&self, stop_signal: &mut StopSignal) -> Option<StoredMessage> {
        loop {
            if self.is_stopping(stop_signal) {
                return None;
            }
            if let Some(message) = self.try_pop() {
                return Some(message);
            }
            // Nothing ready: register for a wake-up, count as parked, then look once more so a
            // publish between the first look and the registration is not missed.
            let changed = self.queue.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let _parked = ParkedGuard::park(&self.queue);
            if self.is_stopping(stop_signal) {
                return None;
            }
            if let Some(message) = self.try_pop() {
                return Some(message);
            }
            tokio::select! {
                () = &mut changed => {}
                _ = stop_signal.stopped() => return None,
            }
        }
    }

    fn is_stopping(&self, stop_signal: &StopSignal) -> bool {
        stop_signal.mode() != StopMode::Running || self.shared.closed.load(Ordering::Acquire)
    }

    /// Takes the next unexpired message if this consumer is the active one.
    fn try_pop(&self) -> Option<StoredMessage> {
        let mut state = self.queue.lock();
        if state.consumer_ids.front() != Some(&self.consumer_id) {
            return None;
        }
        while let Some(message) = state.ready.pop_front() {
            let expired = message
                .expires_at_unix_ms_opt
                .is_some_and(|expires_at| expires_at < now_unix_ms());
            if !expired {
                return Some(message);
            }
        }
        None
    }

    fn leave(&self) {
        self.queue
            .lock()
            .consumer_ids
            .retain(|consumer_id| *consumer_id != self.consumer_id);
        self.queue.changed.notify_waiters();
        if let Some(source) = &self.exclusive_opt {
            self.shared.exclusive_queues().remove(source);
        }
    }
}
