//! Consuming a queue over AMQP: prefetch, ack after the handler, re-subscription on new links.
//!
//! Each subscription has its own channel with `basic.qos(prefetch)`. Deliveries are handed to
//! the handler one at a time in queue order and acknowledged according to its outcome: `Ack`
//! → `basic.ack`; `Retry` → `basic.nack` with requeue (the quorum queue raises
//! `x-delivery-count` and dead-letters past `x-delivery-limit`); `Reject` → `basic.reject`
//! without requeue (dead-lettered). A frame that does not decode is dead-lettered at once: it
//! can never succeed, and requeueing it would loop.
//!
//! Node inboxes and broadcast queues are exclusive: the broker refuses a second connection
//! (`RESOURCE_LOCKED`), and a set of claimed sources refuses a second subscriber on the same
//! connection, which the broker would allow. The claim is released when the subscription ends.
//!
//! When the channel or connection fails, unacknowledged deliveries return to the queue on the
//! broker's side, and the loop opens a new channel on the next link and consumes again.

use crate::amqp::link::{Link, LinkHandle};
use crate::amqp::topology::{Topology, close_quietly};
use crate::codec::{FrameLimits, decode_envelope};
use crate::transport::{
    Delivery, DeliveryHandler, HandlerOutcome, Source, StopSignal, Subscription, TransportError,
    TransportStats,
};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pause before trying again to consume after a failure on a link that still looks healthy.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(500);

pub(crate) struct ConsumerSettings {
    pub(crate) topology: Topology,
    pub(crate) source: Source,
    pub(crate) prefetch: u16,
    pub(crate) frame_limits: FrameLimits,
    pub(crate) stats: Arc<TransportStats>,
    /// Exclusive sources subscribed through this transport (shared by all its subscriptions).
    pub(crate) claimed_sources: Arc<Mutex<HashSet<Source>>>,
}

/// Holds an exclusive source for one subscription; dropping it releases the source.
struct ExclusiveClaim {
    claimed_sources: Arc<Mutex<HashSet<Source>>>,
    source: Source,
}

impl ExclusiveClaim {
    /// Claims `source` if it is exclusive; `Ok(None)` for a shared source.
    fn claim(
        claimed_sources: &Arc<Mutex<HashSet<Source>>>,
        source: &Source,
    ) -> Result<Option<Self>, TransportError> {
        match source {
            Source::NodeInbox(_) | Source::Broadcast(_) => {}
            Source::Shard(_) | Source::DeadLetters => return Ok(None),
        }
        if !lock_claims(claimed_sources).insert(source.clone()) {
            return Err(TransportError::AlreadySubscribed {
                source_name: source.to_string(),
            });
        }
        Ok(Some(Self {
            claimed_sources: Arc::clone(claimed_sources),
            source: source.clone(),
        }))
    }
}

impl Drop for ExclusiveClaim {
    fn drop(&mut self) {
        lock_claims(&self.claimed_sources).remove(&self.source);
    }
}

fn lock_claims(
    claimed_sources: &Mutex<HashSet<Source>>,
) -> std::sync::MutexGuard<'_, HashSet<Source>> {
    // A set of names stays consistent whatever panicked while holding it.
    claimed_sources
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Session {
    channel: Channel,
    consumer: Consumer,
}

enum SessionEnd {
    /// The subscription was cancelled or aborted.
    Stopped,
    /// The channel or connection failed; consume again on the next link.
    Lost,
}

struct AmqpConsumer {
    link: Arc<LinkHandle>,
    settings: ConsumerSettings,
    handler: Arc<dyn DeliveryHandler>,
    consumer_tag: String,
    /// Released when the consumer (and so its task) ends.
    _claim_opt: Option<ExclusiveClaim>,
}

/// Subscribes now if the broker is reachable (so errors such as an inbox already taken are
/// returned here), else as soon as it is.
pub(crate) async fn subscribe(
    link: Arc<LinkHandle>,
    settings: ConsumerSettings,
    handler: Arc<dyn DeliveryHandler>,
) -> Result<Subscription, TransportError> {
    let claim_opt = ExclusiveClaim::claim(&settings.claimed_sources, &settings.source)?;
    let consumer = AmqpConsumer {
        link,
        settings,
        handler,
        consumer_tag: format!("lanmesh-{}", uuid::Uuid::new_v4().simple()),
        _claim_opt: claim_opt,
    };
    let first_session_opt = match consumer.link.current() {
        Some(link) => Some(consumer.open_session(&link).await?),
        None => None,
    };
    let (stop_sender, stop_signal) = StopSignal::pair();
    let task = tokio::spawn(consumer.run(first_session_opt, stop_signal));
    Ok(Subscription::new(stop_sender, task))
}

fn header<'a>(headers: &'a Option<FieldTable>, name: &str) -> Option<&'a AMQPValue> {
    headers.as_ref()?.inner().get(name)
}

fn header_count(value: &AMQPValue) -> Option<u32> {
    let count = match value {
        AMQPValue::ShortShortInt(count) => i64::from(*count),
        AMQPValue::ShortShortUInt(count) => i64::from(*count),
        AMQPValue::ShortInt(count) => i64::from(*count),
        AMQPValue::ShortUInt(count) => i64::from(*count),
        AMQPValue::LongInt(count) => i64::from(*count),
        AMQPValue::LongUInt(count) => i64::from(*count),
        AMQPValue::LongLongInt(count) => *count,
        _ => return None,
    };
    u32::try_from(count).ok()
}

fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

impl AmqpConsumer {
    fn queue_name(&self) -> String {
        match &self.settings.source {
            Source::Shard(shard) => self.settings.topology.shard_queue(*shard),
            Source::NodeInbox(node) => self.settings.topology.node_inbox(node),
            Source::DeadLetters => self.settings.topology.dead_letter_queue(),
            Source::Broadcast(node) => self.settings.topology.broadcast_queue(node),
        }
    }

    async fn open_session(&self, link: &Link) -> Result<Session, TransportError> {
        let broker = |operation: &'static str| {
            move |error: lapin::Error| TransportError::Broker {
                operation,
                reason: error.to_string(),
            }
        };
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(broker("channel.open"))?;
        let opened = async {
            channel
                .basic_qos(self.settings.prefetch, BasicQosOptions::default())
                .await
                .map_err(broker("basic.qos"))?;
            let queue = match &self.settings.source {
                Source::NodeInbox(node) => {
                    self.settings
                        .topology
                        .declare_node_inbox(&channel, node)
                        .await?
                }
                Source::Broadcast(node) => {
                    self.settings
                        .topology
                        .declare_broadcast_queue(&channel, node)
                        .await?
                }
                Source::Shard(_) | Source::DeadLetters => self.queue_name(),
            };
            channel
                .basic_consume(
                    queue.as_str().into(),
                    self.consumer_tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker("basic.consume"))
        }
        .await;
        match opened {
            Ok(consumer) => Ok(Session { channel, consumer }),
            Err(error) => {
                close_quietly(&channel).await;
                Err(error)
            }
        }
    }

    async fn run(self, mut first_session_opt: Option<Session>, mut stop_signal: StopSignal) {
        loop {
            let session = match first_session_opt.take() {
                Some(session) => session,
                None => {
                    let link = tokio::select! {
                        biased;
                        _ = stop_signal.stopped() => return,
                        link = self.link.wait_for_link(None) => match link {
                            Ok(link) => link,
                            Err(_) => return,
                        },
                    };
                    match self.open_session(&link).await {
                        Ok(session) => session,
                        Err(error) => {
                            tracing::warn!(source = %self.settings.source, error = %error, "cannot consume, retrying");
                            tokio::select! {
                                biased;
                                _ = stop_signal.stopped() => return,
                                () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => continue,
                            }
                        }
                    }
                }
            };
            match self.consume(session, &mut stop_signal).await {
                SessionEnd::Stopped => return,
                SessionEnd::Lost => {
                    tracing::info!(source = %self.settings.source, "consumer lost its channel, resubscribing");
                }
            }
        }
    }

    async fn consume(&self, session: Session, stop_signal: &mut StopSignal) -> SessionEnd {
        let Session {
            channel,
            mut consumer,
        } = session;
        let stats = &self.settings.stats;
        loop {
            let next = tokio::select! {
                biased;
                _ = stop_signal.stopped() => {
                    // Closing the channel returns prefetched, unhandled deliveries to the queue.
                    close_quietly(&channel).await;
                    return SessionEnd::Stopped;
                }
                next = consumer.next() => next,
            };
            let amqp_delivery = match next {
                Some(Ok(amqp_delivery)) => amqp_delivery,
                Some(Err(error)) => {
                    tracing::debug!(error = %error, "consumer stream failed");
                    return SessionEnd::Lost;
                }
                None => return SessionEnd::Lost,
            };
            let envelope = match decode_envelope(&amqp_delivery.data, &self.settings.frame_limits) {
                Ok(envelope) => envelope,
                Err(error) => {
                    TransportStats::bump(&stats.undecodable);
                    TransportStats::bump(&stats.dead_lettered);
                    tracing::warn!(queue = %self.queue_name(), error = %error, "dead-lettering undecodable frame");
                    let rejected = amqp_delivery
                        .reject(BasicRejectOptions { requeue: false })
                        .await;
                    if rejected.is_err() {
                        return SessionEnd::Lost;
                    }
                    continue;
                }
            };
            let headers = amqp_delivery.properties.headers();
            let delivery = Delivery {
                envelope: Arc::new(envelope),
                delivery_count: header(headers, "x-delivery-count")
                    .and_then(header_count)
                    .unwrap_or(u32::from(amqp_delivery.redelivered)),
                dead_letter_reason_opt: header(headers, "x-first-death-reason")
                    .and_then(header_text),
            };
            let outcome = tokio::select! {
                // The handler first: one that finishes at once never waits on the stop signal.
                biased;
                outcome = self.handler.handle(delivery) => Some(outcome),
                () = stop_signal.aborted() => None,
            };
            let settled = match outcome {
                None => {
                    close_quietly(&channel).await;
                    return SessionEnd::Stopped;
                }
                Some(HandlerOutcome::Ack) => {
                    TransportStats::bump(&stats.acked);
                    amqp_delivery.ack(BasicAckOptions::default()).await
                }
                Some(HandlerOutcome::Retry) => {
                    TransportStats::bump(&stats.retried);
                    amqp_delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        })
                        .await
                }
                Some(HandlerOutcome::Reject) => {
                    TransportStats::bump(&stats.dead_lettered);
                    amqp_delivery
                        .reject(BasicRejectOptions { requeue: false })
                        .await
                }
            };
            if let Err(error) = settled {
                tracing::debug!(error = %error, "acknowledgement failed; the broker will redeliver");
                return SessionEnd::Lost;
            }
        }
    }
}
