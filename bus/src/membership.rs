//! Cluster membership: heartbeats on the broadcast destination, and the view of the cluster they
//! give each node.
//!
//! Every node publishes a [`Heartbeat`] to [`Destination::Broadcast`] every heartbeat interval
//! and listens on its own [`Source::Broadcast`], so it hears every node, itself included. A node
//! not heard for the failure timeout (interval × missed heartbeats) is declared failed.
//!
//! A node is *settled* once its own heartbeats come back through the bus and it has listened
//! for a full failure timeout since: by then it has heard every live node at least once, so its
//! view is complete. It says so in its heartbeats, and only nodes whose heartbeats say settled
//! (and not leaving) are candidates for shard assignment ([`ClusterView::assignable`]). A node
//! that stops hearing its own heartbeats for a failure timeout (its broker link is down, say)
//! is no longer settled and must settle again.
//!
//! [`MembershipTracker`] is the pure core: no I/O, time passed in. [`Membership`] is the shell
//! that subscribes, publishes heartbeats and publishes the view on a watch channel.

use crate::address::{EntityAddress, NameError, NodeId, validate_node_id};
use crate::codec::{CodecError, FrameLimits, decode_message, encode_message};
use crate::envelope::Envelope;
use crate::transport::{
    Delivery, DeliveryHandler, Destination, HandlerOutcome, PublishOptions, Source, Subscription,
    Transport, TransportError,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Entity kind of the envelopes that carry heartbeats; reserved by the bus, like the `node`
/// kind of replies.
pub const MEMBERSHIP_KIND: &str = "cluster";
/// Entity id of the envelopes that carry heartbeats.
pub const MEMBERSHIP_ENTITY_ID: &str = "membership";
/// A failed node stays in [`ClusterView::failed`] for this many failure timeouts after it was
/// last heard, then is forgotten.
pub const FAILED_RETENTION_FACTOR: u32 = 10;
/// Shortest period of the service's timers (a zero heartbeat interval would stop them).
const MIN_TIMER_PERIOD: Duration = Duration::from_millis(1);

/// What a node says about itself every heartbeat interval (the wire type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node that beats; must be the envelope's sender.
    pub node_id: NodeId,
    /// The node is shutting down: assign it no more shards, but honour its leases.
    pub leaving: bool,
    /// The node is settled (see the module documentation) and not leaving.
    pub settled: bool,
}

/// Why a broadcast addressed to membership is not a usable heartbeat.
#[derive(Debug, Error)]
pub enum HeartbeatError {
    /// The payload does not decode as a heartbeat.
    #[error("heartbeat does not decode: {0}")]
    Codec(#[from] CodecError),
    /// The node id in the heartbeat is not a valid node id.
    #[error("heartbeat node id is invalid: {0}")]
    NodeId(#[from] NameError),
    /// The heartbeat speaks for another node than the one that sent it.
    #[error("heartbeat for node {node_id} was sent by node {sender}")]
    SenderMismatch {
        /// The node the heartbeat names.
        node_id: NodeId,
        /// The envelope's sender.
        sender: NodeId,
    },
}

impl Heartbeat {
    /// The address heartbeats are sent to.
    pub fn target() -> EntityAddress {
        EntityAddress {
            kind: MEMBERSHIP_KIND.to_owned(),
            id: MEMBERSHIP_ENTITY_ID.to_owned(),
        }
    }

    /// Wraps this heartbeat in an envelope from its node, ready for [`Destination::Broadcast`].
    pub fn to_envelope(&self) -> Result<Envelope, CodecError> {
        let payload = encode_message(self, &FrameLimits::default())?;
        Ok(Envelope::new(Self::target(), self.node_id.clone(), payload))
    }

    /// The heartbeat in `envelope`; `Ok(None)` when the envelope is addressed to something else.
    pub fn from_envelope(envelope: &Envelope) -> Result<Option<Self>, HeartbeatError> {
        if envelope.target != Self::target() {
            return Ok(None);
        }
        let heartbeat: Self = decode_message(&envelope.payload, &FrameLimits::default())?;
        // `NodeId` deserializes without its checks; apply them here.
        validate_node_id(heartbeat.node_id.as_str())?;
        if heartbeat.node_id != envelope.sender {
            return Err(HeartbeatError::SenderMismatch {
                node_id: heartbeat.node_id,
                sender: envelope.sender.clone(),
            });
        }
        Ok(Some(heartbeat))
    }
}

/// Timing of heartbeats and failure detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How often each node publishes a heartbeat.
    pub heartbeat_interval: Duration,
    /// How many heartbeat intervals may pass without a heartbeat before a node is failed.
    pub missed_heartbeats: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            missed_heartbeats: 3,
        }
    }
}

impl MembershipConfig {
    /// How long a node may stay silent before it is declared failed: interval × missed.
    pub fn failure_timeout(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.missed_heartbeats)
    }

    /// How long a failed node stays in [`ClusterView::failed`] after it was last heard.
    pub fn failed_retention(&self) -> Duration {
        self.failure_timeout()
            .saturating_mul(FAILED_RETENTION_FACTOR)
    }
}

/// One node's view of the cluster at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterView {
    /// Nodes heard within the failure timeout whose last heartbeat said settled and not
    /// leaving: the candidates for shard assignment. Contains this node only while
    /// `self_settled` (and not leaving).
    pub assignable: BTreeSet<NodeId>,
    /// Every node heard within the failure timeout, in any state (joining, settled, leaving),
    /// including this node when its own heartbeats come back. A lease held by one of these is
    /// honoured.
    pub alive: BTreeSet<NodeId>,
    /// Other nodes not heard for the failure timeout (whether or not they had said they were
    /// leaving), each with the instant it was last heard; kept for
    /// [`FAILED_RETENTION_FACTOR`] failure timeouts after that instant, so takeover time can be
    /// measured from it, then forgotten. A heartbeat brings a node back to `alive`.
    pub failed: BTreeMap<NodeId, Instant>,
    /// Whether this node is settled: its own heartbeats come back through the bus and it has
    /// been listening for at least one full failure timeout since (after it lost its own
    /// heartbeats for a failure timeout, it must settle again).
    pub self_settled: bool,
}

/// What was last heard from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerState {
    last_heard: Instant,
    leaving: bool,
    settled: bool,
}

/// The pure membership state machine of one node: feed it heartbeats and the time, read views.
#[derive(Debug, Clone)]
pub struct MembershipTracker {
    self_id: NodeId,
    config: MembershipConfig,
    started_at: Instant,
    leaving: bool,
    /// Since when this node's own heartbeats have come back without a gap of a failure timeout.
    self_heard_since_opt: Option<Instant>,
    /// Nodes heard and not yet moved to `failed` by [`MembershipTracker::expire`] (this node
    /// included); some may be silent past the failure timeout already.
    peers: BTreeMap<NodeId, PeerState>,
    /// Other nodes moved here by `expire`, with the instant they were last heard.
    failed: BTreeMap<NodeId, Instant>,
}

impl MembershipTracker {
    /// The tracker of node `self_id`, which starts listening at `now`.
    pub fn new(self_id: NodeId, config: MembershipConfig, now: Instant) -> Self {
        Self {
            self_id,
            config,
            started_at: now,
            leaving: false,
            self_heard_since_opt: None,
            peers: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// This node.
    pub fn self_id(&self) -> &NodeId {
        &self.self_id
    }

    fn is_alive(&self, last_heard: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_heard) < self.config.failure_timeout()
    }

    fn is_remembered(&self, last_heard: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_heard) < self.config.failed_retention()
    }

    /// Records `heartbeat`, received at `now`.
    pub fn observe(&mut self, heartbeat: &Heartbeat, now: Instant) {
        let previous_opt = self.peers.get(&heartbeat.node_id).copied();
        if heartbeat.node_id == self.self_id {
            let hearing_self = self.self_heard_since_opt.is_some()
                && previous_opt.is_some_and(|previous| self.is_alive(previous.last_heard, now));
            if !hearing_self {
                self.self_heard_since_opt = Some(now);
            }
        }
        let last_heard = previous_opt.map_or(now, |previous| previous.last_heard.max(now));
        self.failed.remove(&heartbeat.node_id);
        self.peers.insert(
            heartbeat.node_id.clone(),
            PeerState {
                last_heard,
                leaving: heartbeat.leaving,
                settled: heartbeat.settled,
            },
        );
    }

    /// Moves nodes silent for the failure timeout to `failed` and forgets failed nodes past
    /// their retention. [`MembershipTracker::view`] gives the same answer before and after; this
    /// only bounds memory.
    pub fn expire(&mut self, now: Instant) {
        let silent: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, peer)| !self.is_alive(peer.last_heard, now))
            .map(|(node, _)| node.clone())
            .collect();
        for node in silent {
            let Some(peer) = self.peers.remove(&node) else {
                continue;
            };
            if node == self.self_id {
                self.self_heard_since_opt = None;
            } else {
                self.failed.insert(node, peer.last_heard);
            }
        }
        let retention = self.config.failed_retention();
        self.failed
            .retain(|_, last_heard| now.saturating_duration_since(*last_heard) < retention);
    }

    /// From now on this node is leaving: it is no longer assignable, and its heartbeats say so.
    pub fn set_leaving(&mut self) {
        self.leaving = true;
    }

    /// Whether this node is settled at `now` (see [`ClusterView::self_settled`]).
    pub fn self_settled(&self, now: Instant) -> bool {
        let Some(heard_since) = self.self_heard_since_opt else {
            return false;
        };
        let hearing_self = self
            .peers
            .get(&self.self_id)
            .is_some_and(|own| self.is_alive(own.last_heard, now));
        let listening_since = heard_since.max(self.started_at);
        hearing_self
            && now.saturating_duration_since(listening_since) >= self.config.failure_timeout()
    }

    /// The heartbeat this node sends at `now`.
    pub fn heartbeat(&self, now: Instant) -> Heartbeat {
        Heartbeat {
            node_id: self.self_id.clone(),
            leaving: self.leaving,
            settled: self.self_settled(now) && !self.leaving,
        }
    }

    /// The view of the cluster at `now`.
    pub fn view(&self, now: Instant) -> ClusterView {
        let self_settled = self.self_settled(now);
        let mut view = ClusterView {
            self_settled,
            ..ClusterView::default()
        };
        for (node, peer) in &self.peers {
            let is_self = *node == self.self_id;
            if self.is_alive(peer.last_heard, now) {
                view.alive.insert(node.clone());
                // This node joins the candidates when its own heartbeat, as every other node
                // hears it, says settled; it drops out at once when it is no longer settled or
                // starts leaving.
                let assignable =
                    peer.settled && !peer.leaving && (!is_self || (self_settled && !self.leaving));
                if assignable {
                    view.assignable.insert(node.clone());
                }
            } else if !is_self && self.is_remembered(peer.last_heard, now) {
                view.failed.insert(node.clone(), peer.last_heard);
            }
        }
        for (node, last_heard) in &self.failed {
            if self.is_remembered(*last_heard, now) {
                view.failed.insert(node.clone(), *last_heard);
            }
        }
        view
    }
}

/// State shared by the membership service's tasks and its subscription handler.
struct Shared {
    node_id: NodeId,
    config: MembershipConfig,
    transport: Arc<dyn Transport>,
    tracker: Mutex<MembershipTracker>,
    view_sender: watch::Sender<ClusterView>,
    n_malformed_heartbeats: AtomicU64,
    n_failed_beats_in_a_row: AtomicU32,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, MembershipTracker> {
        // The tracker's maps stay consistent whatever panicked while holding the lock.
        self.tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-evaluates the view now and publishes it if it changed.
    fn refresh(&self) {
        let now = Instant::now();
        let mut tracker = self.tracker();
        tracker.expire(now);
        let view = tracker.view(now);
        // Sent under the tracker lock, so two refreshes cannot publish out of order.
        self.view_sender.send_if_modified(|current| {
            if *current == view {
                return false;
            }
            tracing::info!(
                node = %self.node_id,
                n_alive = view.alive.len(),
                n_assignable = view.assignable.len(),
                n_failed = view.failed.len(),
                self_settled = view.self_settled,
                "cluster view changed"
            );
            *current = view;
            true
        });
    }

    /// Publishes one heartbeat; a failure is logged and the next beat tries again.
    async fn beat(&self) {
        let heartbeat = self.tracker().heartbeat(Instant::now());
        let envelope = match heartbeat.to_envelope() {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(node = %self.node_id, error = %error, "cannot encode heartbeat");
                return;
            }
        };
        let options = PublishOptions {
            expiration_opt: Some(self.config.failure_timeout()),
            timeout: self.config.heartbeat_interval,
        };
        match self
            .transport
            .publish(&Destination::Broadcast, envelope, &options)
            .await
        {
            Ok(()) => {
                let n_failed = self.n_failed_beats_in_a_row.swap(0, Ordering::Relaxed);
                if n_failed > 0 {
                    tracing::info!(node = %self.node_id, n_failed, "heartbeats published again");
                }
            }
            Err(error) => {
                let n_failed = self
                    .n_failed_beats_in_a_row
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if n_failed == 1 {
                    tracing::warn!(node = %self.node_id, error = %error, "heartbeat not published, retrying next beat");
                } else {
                    tracing::debug!(node = %self.node_id, n_failed, error = %error, "heartbeat not published, retrying next beat");
                }
            }
        }
    }

    fn receive(&self, envelope: &Envelope) {
        match Heartbeat::from_envelope(envelope) {
            Ok(Some(heartbeat)) => {
                self.tracker().observe(&heartbeat, Instant::now());
                self.refresh();
            }
            Ok(None) => {
                tracing::debug!(target_address = %envelope.target, sender = %envelope.sender, "ignoring broadcast that is not a heartbeat");
            }
            Err(error) => {
                self.n_malformed_heartbeats.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sender = %envelope.sender, msg_id = %envelope.msg_id, error = %error, "ignoring malformed heartbeat");
            }
        }
    }
}

/// Takes this node's broadcasts; everything is acknowledged (heartbeats are never redelivered).
struct HeartbeatHandler(Arc<Shared>);

#[async_trait]
impl DeliveryHandler for HeartbeatHandler {
    async fn handle(&self, delivery: Delivery) -> HandlerOutcome {
        self.0.receive(&delivery.envelope);
        HandlerOutcome::Ack
    }
}

/// The membership service of one node: heartbeats out, the cluster view in.
pub struct Membership {
    shared: Arc<Shared>,
    subscription: Subscription,
    /// Dropping it (with the service) also stops the tasks.
    stop_sender: watch::Sender<bool>,
    heartbeat_task: JoinHandle<()>,
    refresh_task: JoinHandle<()>,
}

impl Membership {
    /// Subscribes [`Source::Broadcast`] of `node_id`, starts heartbeating every interval
    /// (publishing to [`Destination::Broadcast`] with expiration = failure timeout and publish
    /// timeout = interval; a failed publish is logged and retried next beat, never fatal), and
    /// keeps the view. Fails only when the subscription fails (for instance
    /// [`TransportError::AlreadySubscribed`] when the node id is taken in this process).
    pub async fn start(
        node_id: NodeId,
        transport: Arc<dyn Transport>,
        config: MembershipConfig,
    ) -> Result<Self, TransportError> {
        let tracker = MembershipTracker::new(node_id.clone(), config, Instant::now());
        let shared = Arc::new(Shared {
            node_id: node_id.clone(),
            config,
            transport: Arc::clone(&transport),
            tracker: Mutex::new(tracker),
            view_sender: watch::Sender::new(ClusterView::default()),
            n_malformed_heartbeats: AtomicU64::new(0),
            n_failed_beats_in_a_row: AtomicU32::new(0),
        });
        let subscription = transport
            .subscribe(
                Source::Broadcast(node_id),
                Arc::new(HeartbeatHandler(Arc::clone(&shared))),
            )
            .await?;
        let (stop_sender, stop_receiver) = watch::channel(false);
        let heartbeat_task =
            tokio::spawn(heartbeat_loop(Arc::clone(&shared), stop_receiver.clone()));
        let refresh_task = tokio::spawn(refresh_loop(Arc::clone(&shared), stop_receiver));
        Ok(Self {
            shared,
            subscription,
            stop_sender,
            heartbeat_task,
            refresh_task,
        })
    }

    /// This node.
    pub fn node_id(&self) -> &NodeId {
        &self.shared.node_id
    }

    /// The current view; it changes whenever the view changes (re-evaluated on every heartbeat
    /// received and every quarter interval, so an expiry is noticed promptly).
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.shared.view_sender.subscribe()
    }

    /// Broadcasts received for membership that were not valid heartbeats.
    pub fn n_malformed_heartbeats(&self) -> u64 {
        self.shared.n_malformed_heartbeats.load(Ordering::Relaxed)
    }

    /// From now on heartbeats say leaving (one is sent at once); others stop assigning shards
    /// to this node but keep honouring its leases. This node's own view drops it from
    /// `assignable` before this returns.
    pub async fn announce_leaving(&self) {
        self.shared.tracker().set_leaving();
        self.shared.refresh();
        self.shared.beat().await;
    }

    /// Stops heartbeating and unsubscribes (others declare this node failed after the failure
    /// timeout, unless it starts again).
    pub async fn stop(self) {
        let Self {
            shared,
            subscription,
            stop_sender,
            heartbeat_task,
            refresh_task,
        } = self;
        stop_sender.send_replace(true);
        for task in [heartbeat_task, refresh_task] {
            if let Err(error) = task.await {
                tracing::warn!(node = %shared.node_id, error = %error, "membership task ended abnormally");
            }
        }
        subscription.cancel().await;
    }
}

/// Completes when a stop is requested or the service is dropped.
async fn stop_requested(stop_receiver: &mut watch::Receiver<bool>) {
    // An error means the sender is gone with the service: stop as well.
    let _ = stop_receiver.wait_for(|stop| *stop).await;
}

async fn heartbeat_loop(shared: Arc<Shared>, mut stop_receiver: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(shared.config.heartbeat_interval.max(MIN_TIMER_PERIOD));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop_requested(&mut stop_receiver) => return,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            biased;
            () = stop_requested(&mut stop_receiver) => return,
            () = shared.beat() => {}
        }
    }
}

async fn refresh_loop(shared: Arc<Shared>, mut stop_receiver: watch::Receiver<bool>) {
    let period = (shared.config.heartbeat_interval / 4).max(MIN_TIMER_PERIOD);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop_requested(&mut stop_receiver) => return,
            _ = ticker.tick() => shared.refresh(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_process::{InProcessConfig, InProcessTransport};

    const SELF: &str = "me";

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn nodes(names: &[&str]) -> BTreeSet<NodeId> {
        names.iter().map(|name| node(name)).collect()
    }

    /// Heartbeat every second, missed after three: failure timeout 3 s.
    fn config() -> MembershipConfig {
        MembershipConfig::default()
    }

    /// One step of a tracker scenario, at a time in milliseconds since the tracker started.
    #[derive(Debug, Clone)]
    enum Step {
        Beat {
            at_ms: u64,
            node: &'static str,
            leaving: bool,
            settled: bool,
        },
        SetLeaving,
        Expect {
            at_ms: u64,
            assignable: &'static [&'static str],
            alive: &'static [&'static str],
            /// Failed nodes with the time they were last heard.
            failed: &'static [(&'static str, u64)],
            self_settled: bool,
        },
    }

    fn settled(at_ms: u64, node: &'static str) -> Step {
        Step::Beat {
            at_ms,
            node,
            leaving: false,
            settled: true,
        }
    }

    fn joining(at_ms: u64, node: &'static str) -> Step {
        Step::Beat {
            at_ms,
            node,
            leaving: false,
            settled: false,
        }
    }

    fn leaving(at_ms: u64, node: &'static str) -> Step {
        Step::Beat {
            at_ms,
            node,
            leaving: true,
            settled: false,
        }
    }

    /// This node's own heartbeats every second from `from_s` to `to_s` inclusive, saying
    /// settled from 3 s after `first_echo_s` on, as the service would.
    fn own_beats(from_s: u64, to_s: u64, first_echo_s: u64) -> Vec<Step> {
        (from_s..=to_s)
            .map(|second| Step::Beat {
                at_ms: second * 1000,
                node: SELF,
                leaving: false,
                settled: second >= first_echo_s + 3,
            })
            .collect()
    }

    /// A peer settled all along, beating every second from `from_s` to `to_s` inclusive.
    fn peer_beats(node: &'static str, from_s: u64, to_s: u64) -> Vec<Step> {
        (from_s..=to_s)
            .map(|second| settled(second * 1000, node))
            .collect()
    }

    fn expect(
        at_ms: u64,
        assignable: &'static [&'static str],
        alive: &'static [&'static str],
        failed: &'static [(&'static str, u64)],
        self_settled: bool,
    ) -> Step {
        Step::Expect {
            at_ms,
            assignable,
            alive,
            failed,
            self_settled,
        }
    }

    /// Runs the steps in time order (a beat and an expectation at the same instant: the beat
    /// first) and checks every expectation, both before and after `expire`.
    fn check(mut steps: Vec<Step>) {
        let at = |step: &Step| match step {
            Step::Beat { at_ms, .. } => (*at_ms, 0),
            Step::SetLeaving => (0, 1),
            Step::Expect { at_ms, .. } => (*at_ms, 2),
        };
        // `SetLeaving` stays where it was written: sort only runs between such markers.
        let mut ordered = Vec::new();
        for segment in steps.split_mut(|step| matches!(step, Step::SetLeaving)) {
            segment.sort_by_key(at);
            ordered.push(segment.to_vec());
        }
        let start = Instant::now();
        let instant = |at_ms: u64| start + Duration::from_millis(at_ms);
        let mut tracker = MembershipTracker::new(node(SELF), config(), start);
        for (index, segment) in ordered.into_iter().enumerate() {
            if index > 0 {
                tracker.set_leaving();
            }
            for step in segment {
                match step {
                    Step::Beat {
                        at_ms,
                        node: name,
                        leaving,
                        settled,
                    } => tracker.observe(
                        &Heartbeat {
                            node_id: node(name),
                            leaving,
                            settled,
                        },
                        instant(at_ms),
                    ),
                    Step::SetLeaving => unreachable!("split out"),
                    Step::Expect {
                        at_ms,
                        assignable,
                        alive,
                        failed,
                        self_settled,
                    } => {
                        let expected = ClusterView {
                            assignable: nodes(assignable),
                            alive: nodes(alive),
                            failed: failed
                                .iter()
                                .map(|(name, last_ms)| (node(name), instant(*last_ms)))
                                .collect(),
                            self_settled,
                        };
                        let now = instant(at_ms);
                        assert_eq!(tracker.view(now), expected, "view at {at_ms} ms");
                        let mut expired = tracker.clone();
                        expired.expire(now);
                        assert_eq!(
                            expired.view(now),
                            expected,
                            "view at {at_ms} ms after expire"
                        );
                        tracker = expired;
                    }
                }
            }
        }
    }

    fn steps(parts: Vec<Vec<Step>>) -> Vec<Step> {
        parts.into_iter().flatten().collect()
    }

    #[test]
    fn nothing_heard_yet() {
        check(vec![expect(0, &[], &[], &[], false)]);
    }

    #[test]
    fn a_joining_peer_is_alive_but_not_assignable() {
        check(vec![
            joining(0, SELF),
            joining(0, "p"),
            expect(0, &[], &["me", "p"], &[], false),
        ]);
    }

    #[test]
    fn settled_peers_are_assignable_unsettled_ones_are_not() {
        check(vec![
            joining(0, SELF),
            settled(0, "settled"),
            joining(0, "joining"),
            expect(0, &["settled"], &["joining", "me", "settled"], &[], false),
            settled(500, "joining"),
            expect(
                500,
                &["joining", "settled"],
                &["joining", "me", "settled"],
                &[],
                false,
            ),
        ]);
    }

    #[test]
    fn this_node_settles_a_failure_timeout_after_its_heartbeats_come_back() {
        check(steps(vec![
            own_beats(1, 3, 1),
            vec![
                // Listening since 0, but its own heartbeats came back only at 1 s.
                expect(3999, &[], &["me"], &[], false),
                // Settled, but not assignable until its heartbeat says so.
                expect(4000, &[], &["me"], &[], true),
                settled(4500, SELF),
                expect(4500, &["me"], &["me"], &[], true),
            ],
        ]));
    }

    #[test]
    fn a_silent_peer_fails_after_the_failure_timeout() {
        check(steps(vec![
            own_beats(0, 6, 0),
            vec![settled(0, "p"), settled(1000, "p")],
            vec![
                expect(3999, &["me", "p"], &["me", "p"], &[], true),
                expect(4000, &["me"], &["me"], &[("p", 1000)], true),
                expect(6000, &["me"], &["me"], &[("p", 1000)], true),
            ],
        ]));
    }

    #[test]
    fn a_failed_peer_is_forgotten_after_the_retention() {
        check(steps(vec![
            own_beats(0, 40, 0),
            vec![settled(0, "p")],
            vec![
                expect(29_999, &["me"], &["me"], &[("p", 0)], true),
                expect(30_000, &["me"], &["me"], &[], true),
            ],
        ]));
    }

    #[test]
    fn a_failed_peer_that_beats_again_comes_back() {
        check(steps(vec![
            own_beats(0, 8, 0),
            vec![
                settled(0, "p"),
                expect(3000, &["me"], &["me"], &[("p", 0)], true),
                joining(5000, "p"),
                expect(5000, &["me"], &["me", "p"], &[], true),
                settled(6000, "p"),
                expect(6000, &["me", "p"], &["me", "p"], &[], true),
            ],
        ]));
    }

    #[test]
    fn a_leaving_peer_stays_alive_but_not_assignable_then_drops_out() {
        check(steps(vec![
            own_beats(0, 10, 0),
            vec![
                settled(0, "p"),
                expect(500, &["p"], &["me", "p"], &[], false),
                leaving(1000, "p"),
                leaving(2000, "p"),
                expect(2000, &[], &["me", "p"], &[], false),
                expect(4000, &["me"], &["me", "p"], &[], true),
                expect(5000, &["me"], &["me"], &[("p", 2000)], true),
            ],
        ]));
    }

    #[test]
    fn this_node_unsettles_when_its_heartbeats_stop_coming_back_and_settles_again_later() {
        check(steps(vec![
            own_beats(0, 3, 0),
            peer_beats("p", 0, 12),
            vec![
                expect(3000, &["me", "p"], &["me", "p"], &[], true),
                // Last heard itself at 3 s.
                expect(5999, &["me", "p"], &["me", "p"], &[], true),
                expect(6000, &["p"], &["p"], &[], false),
                joining(7000, SELF),
                expect(7000, &["p"], &["me", "p"], &[], false),
                joining(8000, SELF),
                joining(9000, SELF),
                expect(9999, &["p"], &["me", "p"], &[], false),
                expect(10_000, &["p"], &["me", "p"], &[], true),
                settled(10_500, SELF),
                expect(10_500, &["me", "p"], &["me", "p"], &[], true),
            ],
        ]));
    }

    #[test]
    fn this_node_leaving_drops_out_of_assignable_at_once() {
        let mut scenario = steps(vec![
            own_beats(0, 4, 0),
            vec![expect(4000, &["me"], &["me"], &[], true)],
        ]);
        scenario.push(Step::SetLeaving);
        scenario.extend([
            // Its last heartbeat still said settled; the tracker knows better.
            expect(4000, &[], &["me"], &[], true),
            leaving(5000, SELF),
            expect(5000, &[], &["me"], &[], true),
        ]);
        check(scenario);
    }

    #[test]
    fn heartbeats_say_settled_only_when_settled_and_not_leaving() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut tracker = MembershipTracker::new(node(SELF), config(), start);
        let expected = |leaving, settled| Heartbeat {
            node_id: node(SELF),
            leaving,
            settled,
        };
        assert_eq!(tracker.heartbeat(at(0)), expected(false, false));
        for second in 0..=3 {
            let heartbeat = tracker.heartbeat(at(second));
            tracker.observe(&heartbeat, at(second));
        }
        assert_eq!(tracker.heartbeat(at(3)), expected(false, true));
        tracker.set_leaving();
        assert_eq!(tracker.heartbeat(at(3)), expected(true, false));
    }

    #[test]
    fn config_defaults_and_failure_timeout() {
        let config = MembershipConfig::default();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(config.missed_heartbeats, 3);
        assert_eq!(config.failure_timeout(), Duration::from_secs(3));
        assert_eq!(config.failed_retention(), Duration::from_secs(30));
        let huge = MembershipConfig {
            heartbeat_interval: Duration::MAX,
            missed_heartbeats: 2,
        };
        assert_eq!(huge.failure_timeout(), Duration::MAX);
    }

    fn check_decoding(envelope: &Envelope, expected: Result<Option<Heartbeat>, &str>) {
        match (Heartbeat::from_envelope(envelope), expected) {
            (Ok(heartbeat_opt), Ok(expected_opt)) => assert_eq!(heartbeat_opt, expected_opt),
            (Err(error), Err(expected_start)) => assert!(
                error.to_string().starts_with(expected_start),
                "{error} does not start with {expected_start:?}"
            ),
            (result, expected) => panic!("got {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn heartbeat_envelopes() {
        let heartbeat = Heartbeat {
            node_id: node("node-1"),
            leaving: false,
            settled: true,
        };
        let envelope = heartbeat.to_envelope().unwrap();
        assert_eq!(envelope.sender, node("node-1"));
        assert_eq!(
            (envelope.target.kind.as_str(), envelope.target.id.as_str()),
            ("cluster", "membership")
        );
        check_decoding(&envelope, Ok(Some(heartbeat)));

        let other_target = Envelope::new(
            EntityAddress::new("user", "42").unwrap(),
            node("node-1"),
            envelope.payload.clone(),
        );
        check_decoding(&other_target, Ok(None));

        let garbage = Envelope::new(Heartbeat::target(), node("node-1"), vec![0xc1]);
        check_decoding(&garbage, Err("heartbeat does not decode"));

        let mut forged = envelope;
        forged.sender = node("node-2");
        check_decoding(
            &forged,
            Err("heartbeat for node node-1 was sent by node node-2"),
        );

        #[derive(Serialize)]
        struct RawHeartbeat<'a> {
            node_id: &'a str,
            leaving: bool,
            settled: bool,
        }
        let bad_id_payload = encode_message(
            &RawHeartbeat {
                node_id: "not a node",
                leaving: false,
                settled: false,
            },
            &FrameLimits::default(),
        )
        .unwrap();
        let bad_id = Envelope::new(Heartbeat::target(), node("node-1"), bad_id_payload);
        check_decoding(&bad_id, Err("heartbeat node id is invalid"));
    }

    // The service, on the in-process transport, in paused time.

    const INTERVAL: Duration = Duration::from_millis(100);

    fn service_config() -> MembershipConfig {
        MembershipConfig {
            heartbeat_interval: INTERVAL,
            missed_heartbeats: 3,
        }
    }

    fn in_process() -> Arc<dyn Transport> {
        Arc::new(InProcessTransport::new(InProcessConfig::default()))
    }

    async fn start(name: &str, transport: &Arc<dyn Transport>) -> Membership {
        Membership::start(node(name), Arc::clone(transport), service_config())
            .await
            .unwrap()
    }

    /// Waits (in paused time, so at no cost) until the view satisfies `predicate`.
    async fn wait_for_view(
        membership: &Membership,
        what: &str,
        predicate: impl FnMut(&ClusterView) -> bool,
    ) -> ClusterView {
        let mut view = membership.view();
        let outcome = tokio::time::timeout(Duration::from_secs(60), view.wait_for(predicate))
            .await
            .map(|seen| seen.map(|seen| seen.clone()));
        match outcome {
            Ok(Ok(seen)) => seen,
            Ok(Err(_)) => panic!("membership of {} stopped", membership.node_id()),
            Err(_) => panic!(
                "{} never saw {what}; last view: {:?}",
                membership.node_id(),
                *membership.view().borrow()
            ),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_nodes_settle_then_one_leaves_one_stops_and_one_comes_back() {
        let transport = in_process();
        let started_at = Instant::now();
        let alpha = start("alpha", &transport).await;
        let beta = start("beta", &transport).await;
        let gamma = start("gamma", &transport).await;
        let everyone = nodes(&["alpha", "beta", "gamma"]);
        for membership in [&alpha, &beta, &gamma] {
            wait_for_view(membership, "everyone settled", |view| {
                view.self_settled
                    && view.assignable == everyone
                    && view.alive == everyone
                    && view.failed.is_empty()
            })
            .await;
        }
        // Own heartbeat back at once, settled one failure timeout later, assignable with the
        // next heartbeat.
        let failure_timeout = service_config().failure_timeout();
        assert!(
            started_at.elapsed() <= failure_timeout + INTERVAL,
            "settling took {:?}",
            started_at.elapsed()
        );

        gamma.announce_leaving().await;
        let gamma_view = gamma.view().borrow().clone();
        assert!(!gamma_view.assignable.contains(&node("gamma")));
        assert_eq!(gamma_view.alive, everyone);
        wait_for_view(&alpha, "gamma leaving", |view| {
            view.assignable == nodes(&["alpha", "beta"]) && view.alive == everyone
        })
        .await;

        let stopped_at = Instant::now();
        beta.stop().await;
        let view = wait_for_view(&alpha, "beta failed", |view| {
            view.failed.contains_key(&node("beta"))
        })
        .await;
        let detected_at = Instant::now();
        assert_eq!(view.alive, nodes(&["alpha", "gamma"]));
        assert_eq!(view.assignable, nodes(&["alpha"]));
        assert!(view.self_settled);
        let last_heard = view.failed[&node("beta")];
        assert!(last_heard <= stopped_at);
        assert!(
            detected_at >= last_heard + failure_timeout,
            "declared failed too early"
        );
        assert!(
            detected_at <= last_heard + failure_timeout + INTERVAL / 4,
            "declared failed {:?} after it was last heard",
            detected_at - last_heard
        );

        let beta_again = start("beta", &transport).await;
        wait_for_view(&alpha, "beta back", |view| {
            view.alive == everyone
                && view.failed.is_empty()
                && view.assignable == nodes(&["alpha", "beta"])
        })
        .await;
        for membership in [alpha, beta_again, gamma] {
            membership.stop().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn other_broadcasts_are_ignored_and_malformed_heartbeats_counted() {
        let transport = in_process();
        let alpha = start("alpha", &transport).await;
        let broadcast = |envelope: Envelope| {
            let transport = Arc::clone(&transport);
            async move {
                transport
                    .publish(
                        &Destination::Broadcast,
                        envelope,
                        &PublishOptions::default(),
                    )
                    .await
                    .unwrap();
            }
        };
        broadcast(Envelope::new(
            EntityAddress::new("user", "42").unwrap(),
            node("stranger"),
            vec![1, 2, 3],
        ))
        .await;
        broadcast(Envelope::new(
            Heartbeat::target(),
            node("stranger"),
            vec![0xc1],
        ))
        .await;
        let probe = Heartbeat {
            node_id: node("probe"),
            leaving: false,
            settled: true,
        };
        broadcast(probe.to_envelope().unwrap()).await;
        // Deliveries are handled in order: once the probe is seen, the others were handled.
        let view = wait_for_view(&alpha, "the probe", |view| {
            view.alive.contains(&node("probe"))
        })
        .await;
        assert!(!view.alive.contains(&node("stranger")));
        assert_eq!(alpha.n_malformed_heartbeats(), 1);
        alpha.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_id_listens_once_per_transport() {
        let transport = in_process();
        let alpha = start("alpha", &transport).await;
        let second =
            Membership::start(node("alpha"), Arc::clone(&transport), service_config()).await;
        assert!(
            matches!(second, Err(TransportError::AlreadySubscribed { .. })),
            "second membership of one node: {:?}",
            second.as_ref().map(|_| ())
        );
        alpha.stop().await;
        let again = start("alpha", &transport).await;
        again.stop().await;
    }
}
