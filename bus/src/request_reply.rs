//! Request/reply over any transport, with deadlines and idempotent retries.
//!
//! A request carries `reply_to` (the asking node) and a deadline. The [`Requester`] publishes
//! it, waits `attempt_timeout` for the reply, and re-publishes the *same* envelope (same
//! `msg_id`) until the deadline, so the receiving entity can recognise the retry and re-send its
//! cached reply instead of applying the request twice. Replies arrive in the asking node's inbox
//! with `correlation_id` = the request's `msg_id`; [`Requester::inbox_handler`] completes the
//! waiting call and passes every other inbox message (pushes) to the node's own handler.

use crate::address::{EntityAddress, NodeId};
use crate::envelope::{Envelope, now_unix_ms};
use crate::transport::{
    Delivery, DeliveryHandler, Destination, HandlerOutcome, PublishOptions, Transport,
    TransportError,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

/// Entity kind used as the target of replies: the asking node itself.
pub const NODE_KIND: &str = "node";

/// How long a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Wait this long for a reply before sending the request again.
    pub attempt_timeout: Duration,
    /// Give up after this long in all.
    pub total_timeout: Duration,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a request got no reply.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The request could not be published.
    #[error("request not sent: {0}")]
    Transport(#[from] TransportError),
    /// No reply arrived before the deadline.
    #[error("no reply within {waited:?} after {n_attempts} attempts")]
    DeadlineExceeded {
        /// How many times the request was sent.
        n_attempts: u32,
        /// The total timeout.
        waited: Duration,
    },
}

type PendingReplies = HashMap<Uuid, oneshot::Sender<Arc<Envelope>>>;

/// Sends requests from one node and matches the replies that come back to its inbox.
pub struct Requester {
    node_id: NodeId,
    transport: Arc<dyn Transport>,
    pending: Mutex<PendingReplies>,
}

/// Removes a pending request when its caller stops waiting, however it stops.
struct PendingGuard<'a> {
    requester: &'a Requester,
    msg_id: Uuid,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.requester.pending().remove(&self.msg_id);
    }
}

impl Requester {
    /// A requester for `node_id`, whose inbox must route replies to [`Requester::inbox_handler`].
    pub fn new(node_id: NodeId, transport: Arc<dyn Transport>) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            transport,
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn pending(&self) -> MutexGuard<'_, PendingReplies> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `request` to `destination` and waits for its reply.
    pub async fn request(
        &self,
        destination: &Destination,
        mut request: Envelope,
        policy: &RequestPolicy,
    ) -> Result<Envelope, RequestError> {
        let deadline = Instant::now() + policy.total_timeout;
        request = request.with_timeout(policy.total_timeout);
        request.reply_to_opt = Some(self.node_id.clone());
        let (reply_sender, mut reply_receiver) = oneshot::channel();
        self.pending().insert(request.msg_id, reply_sender);
        let _guard = PendingGuard {
            requester: self,
            msg_id: request.msg_id,
        };
        let mut n_attempts = 0_u32;
        loop {
            n_attempts += 1;
            let options = PublishOptions {
                expiration_opt: None,
                timeout: deadline.saturating_duration_since(Instant::now()),
            };
            match self
                .transport
                .publish(destination, request.clone(), &options)
                .await
            {
                Ok(()) => {}
                Err(TransportError::Timeout { .. }) => {
                    return Err(RequestError::DeadlineExceeded {
                        n_attempts,
                        waited: policy.total_timeout,
                    });
                }
                Err(error) => return Err(error.into()),
            }
            let attempt_deadline = (Instant::now() + policy.attempt_timeout).min(deadline);
            tokio::select! {
                reply = &mut reply_receiver => {
                    if let Ok(reply) = reply {
                        return Ok(Arc::unwrap_or_clone(reply));
                    }
                }
                () = tokio::time::sleep_until(attempt_deadline) => {}
            }
            if Instant::now() >= deadline {
                return Err(RequestError::DeadlineExceeded {
                    n_attempts,
                    waited: policy.total_timeout,
                });
            }
            tracing::debug!(msg_id = %request.msg_id, n_attempts, "no reply yet, sending the request again");
        }
    }

    /// Completes the waiting request if `envelope` is a reply; returns it otherwise.
    pub fn accept(&self, envelope: Arc<Envelope>) -> Option<Arc<Envelope>> {
        let Some(correlation_id) = envelope.correlation_id_opt else {
            return Some(envelope);
        };
        match self.pending().remove(&correlation_id) {
            Some(waiting) => {
                // The caller may have given up in the meantime; nothing to do then.
                let _ = waiting.send(envelope);
            }
            None => {
                tracing::debug!(%correlation_id, "dropping reply nobody waits for (late or duplicate)");
            }
        }
        None
    }

    /// The handler for this node's inbox: replies complete requests, everything else goes to
    /// `pushes`.
    pub fn inbox_handler(
        self: &Arc<Self>,
        pushes: Arc<dyn DeliveryHandler>,
    ) -> Arc<dyn DeliveryHandler> {
        Arc::new(InboxHandler {
            requester: Arc::clone(self),
            pushes,
        })
    }
}

struct InboxHandler {
    requester: Arc<Requester>,
    pushes: Arc<dyn DeliveryHandler>,
}

#[async_trait]
impl DeliveryHandler for InboxHandler {
    async fn handle(&self, delivery: Delivery) -> HandlerOutcome {
        let Delivery {
            envelope,
            delivery_count,
            dead_letter_reason_opt,
        } = delivery;
        match self.requester.accept(envelope) {
            None => HandlerOutcome::Ack,
            Some(envelope) => {
                self.pushes
                    .handle(Delivery {
                        envelope,
                        delivery_count,
                        dead_letter_reason_opt,
                    })
                    .await
            }
        }
    }
}

/// Builds the reply to `request` from node `sender`, and where to send it; `None` when the
/// request asked for no reply.
pub fn build_reply(
    request: &Envelope,
    sender: NodeId,
    payload: Vec<u8>,
) -> Option<(Destination, Envelope)> {
    let reply_to = request.reply_to_opt.clone()?;
    let target = EntityAddress {
        kind: NODE_KIND.to_owned(),
        id: reply_to.to_string(),
    };
    let mut reply = Envelope::new(target, sender, payload);
    reply.sender_entity_opt = Some(request.target.clone());
    reply.correlation_id_opt = Some(request.msg_id);
    reply.deadline_unix_ms_opt = request.deadline_unix_ms_opt;
    reply.trace_opt = request
        .trace_opt
        .as_ref()
        .map(crate::envelope::TraceContext::child);
    Some((Destination::Node(reply_to), reply))
}

/// Publish options for a reply: it expires when the asker stops waiting.
pub fn reply_options(reply: &Envelope) -> PublishOptions {
    let remaining_ms = reply
        .deadline_unix_ms_opt
        .map(|deadline| deadline.saturating_sub(now_unix_ms()).max(1));
    PublishOptions {
        expiration_opt: remaining_ms.map(Duration::from_millis),
        ..PublishOptions::default()
    }
}
