//! The broker link: one supervised AMQP connection that reconnects by itself.
//!
//! A supervisor task owns the connection. It connects, declares the topology, opens the
//! publishing channel (publisher confirms on) and publishes the live [`Link`] on a watch
//! channel. When the connection reports an error, or a user of the link reports it broken, the
//! supervisor withdraws the link, reconnects with exponential backoff and jitter, and publishes
//! the new one. Publishers and consumers wait on the watch channel; consumers re-subscribe on
//! each new link.
//!
//! We supervise the connection ourselves instead of using lapin's `enable_auto_recover`, so the
//! rules are ours and tested: after a reconnect the exclusive node inbox is declared again, the
//! topology is re-declared (the broker may have lost non-durable parts) and in-flight publishes
//! are retried with the same `msg_id`.

use crate::amqp::topology::Topology;
use crate::transport::{TransportError, TransportStats};
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// A live connection with its publishing channel.
pub(crate) struct Link {
    /// Increases by one with every successful connection.
    pub(crate) generation: u64,
    pub(crate) connection: Connection,
    pub(crate) publish_channel: Channel,
}

/// What the supervisor offers right now.
#[derive(Clone)]
pub(crate) enum LinkState {
    /// Connecting or reconnecting.
    Down,
    /// Usable.
    Up(Arc<Link>),
    /// The transport was closed; no link will come.
    Closed,
}

/// Reconnection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// First wait after a failed attempt.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// The shared handle to the supervised link.
pub(crate) struct LinkHandle {
    state: watch::Sender<LinkState>,
    broken_generation: AtomicU64,
    broken: Notify,
    closing: Notify,
}

impl LinkHandle {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: watch::Sender::new(LinkState::Down),
            broken_generation: AtomicU64::new(0),
            broken: Notify::new(),
            closing: Notify::new(),
        })
    }

    /// The link now, if up.
    pub(crate) fn current(&self) -> Option<Arc<Link>> {
        match &*self.state.borrow() {
            LinkState::Up(link) => Some(Arc::clone(link)),
            LinkState::Down | LinkState::Closed => None,
        }
    }

    /// Waits for a usable link until `deadline_opt` (forever when `None`).
    pub(crate) async fn wait_for_link(
        &self,
        deadline_opt: Option<Instant>,
    ) -> Result<Arc<Link>, LinkWaitError> {
        let mut receiver = self.state.subscribe();
        loop {
            match &*receiver.borrow_and_update() {
                LinkState::Up(link) => return Ok(Arc::clone(link)),
                LinkState::Closed => return Err(LinkWaitError::Closed),
                LinkState::Down => {}
            }
            let changed = receiver.changed();
            let outcome = match deadline_opt {
                Some(deadline) => tokio::time::timeout_at(deadline, changed)
                    .await
                    .map_err(|_| LinkWaitError::TimedOut)?,
                None => changed.await,
            };
            if outcome.is_err() {
                return Err(LinkWaitError::Closed);
            }
        }
    }

    /// Reports that `link` failed in a way its connection may not notice (a closed channel):
    /// the supervisor replaces it.
    pub(crate) fn report_broken(&self, link: &Link) {
        self.broken_generation
            .fetch_max(link.generation, Ordering::AcqRel);
        self.broken.notify_one();
    }

    /// Asks the supervisor to close the connection and stop.
    pub(crate) fn close(&self) {
        self.closing.notify_one();
    }

    /// Waits until the supervisor has closed the connection and stopped.
    pub(crate) async fn wait_closed(&self) {
        let mut receiver = self.state.subscribe();
        loop {
            if matches!(&*receiver.borrow_and_update(), LinkState::Closed) {
                return;
            }
            if receiver.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Why waiting for a link ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkWaitError {
    TimedOut,
    Closed,
}

/// What the supervisor needs to (re)build a link.
pub(crate) struct LinkSettings {
    pub(crate) url: String,
    pub(crate) connection_name: String,
    pub(crate) topology: Topology,
    pub(crate) reconnect: ReconnectPolicy,
}

async fn connect(settings: &LinkSettings, generation: u64) -> Result<Link, TransportError> {
    let broker = |operation: &'static str| {
        move |error: lapin::Error| TransportError::Broker {
            operation,
            reason: error.to_string(),
        }
    };
    let properties = ConnectionProperties::default()
        .with_connection_name(settings.connection_name.as_str().into());
    let connection = Connection::connect(&settings.url, properties)
        .await
        .map_err(broker("connect"))?;
    settings.topology.declare(&connection).await?;
    let publish_channel = connection
        .create_channel()
        .await
        .map_err(broker("channel.open"))?;
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker("confirm.select"))?;
    Ok(Link {
        generation,
        connection,
        publish_channel,
    })
}

fn jittered(backoff: Duration) -> Duration {
    let jitter_ms = rand::rng().random_range(0..=backoff.as_millis().max(1) as u64 / 2);
    backoff + Duration::from_millis(jitter_ms)
}

/// Runs until [`LinkHandle::close`]: keeps one link up, replacing it whenever it fails.
pub(crate) async fn supervise(
    handle: Arc<LinkHandle>,
    settings: LinkSettings,
    stats: Arc<TransportStats>,
) {
    let mut generation = 0_u64;
    let mut backoff = settings.reconnect.initial_backoff;
    loop {
        let attempt = tokio::select! {
            biased;
            () = handle.closing.notified() => break,
            attempt = connect(&settings, generation + 1) => attempt,
        };
        match attempt {
            Ok(link) => {
                generation += 1;
                if generation > 1 {
                    TransportStats::bump(&stats.reconnects);
                }
                backoff = settings.reconnect.initial_backoff;
                let mut events = link.connection.events_listener();
                let link = Arc::new(link);
                handle.state.send_replace(LinkState::Up(Arc::clone(&link)));
                tracing::info!(generation, "connected to broker");
                let closing = loop {
                    tokio::select! {
                        biased;
                        () = handle.closing.notified() => break true,
                        () = handle.broken.notified() => {
                            if handle.broken_generation.load(Ordering::Acquire) >= generation {
                                tracing::warn!(generation, "broker link reported broken, reconnecting");
                                break false;
                            }
                        }
                        event = events.next() => match event {
                            Some(Event::Error(error)) => {
                                tracing::warn!(generation, error = %error, "broker connection lost, reconnecting");
                                break false;
                            }
                            Some(event) => tracing::debug!(?event, "broker connection event"),
                            None => {
                                tracing::warn!(generation, "broker connection ended, reconnecting");
                                break false;
                            }
                        },
                    }
                };
                handle.state.send_replace(LinkState::Down);
                if let Err(error) = link.connection.close(200, "closing".into()).await {
                    tracing::debug!(error = %error, "connection close after failure");
                }
                if closing {
                    break;
                }
            }
            Err(error) => {
                let wait = jittered(backoff);
                tracing::warn!(error = %error, retry_in_ms = wait.as_millis() as u64, "cannot connect to broker or declare topology");
                tokio::select! {
                    biased;
                    () = handle.closing.notified() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                backoff = (backoff * 2).min(settings.reconnect.max_backoff);
            }
        }
    }
    handle.state.send_replace(LinkState::Closed);
    tracing::info!("broker link closed");
}
