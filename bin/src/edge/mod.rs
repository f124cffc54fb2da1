//! The client edge: the `/ws` WebSocket endpoint every node serves, the sessions it holds,
//! and the routing of pushes from user entities to those sessions.
//!
//! A connection speaks the protocol in [`protocol`] (docs/protocol.md). Each request is
//! checked (frame size, rate, protocol version, auth key) and becomes a request to the
//! account's user entity, wherever in the cluster that entity lives; the entity checks the
//! key again on every request, so revocation and expiry take effect everywhere at once.
//! Pushes come back through this node's inbox addressed to `session/ID` and go to the
//! session's actor ([`sessions`]), which writes them to every connection attached to it.

pub mod auth;
pub mod campaign_notices;
pub mod campaign_ops;
pub mod campaign_wire;
pub mod certification_sweep;
pub mod client_address;
pub mod connection;
pub mod gateway_ops;
pub mod metrics;
pub mod ops;
pub mod partner_ops;
pub mod protocol;
pub mod sessions;
pub mod share_ops;
pub mod share_wire;
pub mod venues;

use crate::edge::auth::{AddressLimiter, PasswordCost};
use crate::edge::client_address::TrustedProxies;
use crate::edge::metrics::EdgeMetrics;
use crate::edge::protocol::{ErrorBody, ErrorCode};
use crate::edge::sessions::{Deliver, DetachNotice, SessionRegistry, SessionTiming};
use crate::partner::client::PartnerClient;
use crate::partner::secret_box::SecretBox;
use lanmesh_actors::entities::user::{self, UserReply, UserRequest};
use lanmesh_actors::host::clock::DomainClock;
use lanmesh_actors::host::push::SessionPushes;
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_actors::model::gateway::GatewayPush;
use lanmesh_actors::model::segment::SegmentLimits;
use lanmesh_actors::model::user::{LoginLimit, SessionPush};
use lanmesh_bus::request_reply::{RequestPolicy, Requester};
use lanmesh_bus::shard_map::ShardMap;
use lanmesh_bus::{
    Delivery, Destination, Envelope, HandlerOutcome, NodeId, PublishOptions, Transport,
};
use lanmesh_storage::{MessageStore, PresenceSampleStore};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// The edge's limits and timings (from `edge.*` and `auth.*`).
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Largest frame accepted; a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// The server pings this often.
    pub ping_interval: Duration,
    /// Requests per second per connection (sustained).
    pub requests_per_second: u32,
    /// Requests a connection may burst above the rate.
    pub request_burst: u32,
    /// Requests of one connection handled at once.
    pub max_in_flight: usize,
    /// Session timings.
    pub session_timing: SessionTiming,
    /// Login attempts per client address per minute.
    pub logins_per_minute_per_address: u32,
    /// Per-account failed-login limit.
    pub login_limit: LoginLimit,
    /// Lifetime of an auth key.
    pub key_ttl: Duration,
    /// argon2id cost of new password hashes.
    pub password_cost: PasswordCost,
    /// Most friends one share may suggest.
    pub max_shared_friends: usize,
    /// Most accounts one combined add-friend request may name.
    pub max_friend_requests_per_batch: usize,
    /// Largest message text.
    pub max_message_bytes: usize,
    /// How long a request to an entity may take.
    pub request_timeout: Duration,
    /// How large a registered venue segment may be.
    pub segment_limits: SegmentLimits,
    /// How long `gateway.allocate` waits for allocations to become final.
    pub allocation_wait: Duration,
    /// Traffic sharing.
    pub share: share_ops::ShareSettings,
}

/// What the edge needs from the node.
pub struct EdgeDependencies {
    /// This node.
    pub node_id: NodeId,
    /// Requests to entities.
    pub requester: Arc<Requester>,
    /// One-way messages to entities.
    pub transport: Arc<dyn Transport>,
    /// How entities map to shards.
    pub shard_map: ShardMap,
    /// Stored messages.
    pub messages: Arc<dyn MessageStore>,
    /// The edge's metrics.
    pub metrics: EdgeMetrics,
    /// Partner-site login.
    pub partners: PartnerServices,
    /// The proxies whose `X-Forwarded-For` gives a client's address.
    pub trusted_proxies: TrustedProxies,
    /// The domain time (key expiry, presence sample times), shared with the entity host.
    pub clock: DomainClock,
    /// The presence samples (the first monitor's figures for campaign eligibility).
    pub presence: Arc<dyn PresenceSampleStore>,
}

/// What partner-site login needs on every node: the client of the sites and the key that
/// seals their secrets (`None` when `partners.secrets_key` is unset: partner login is off).
pub struct PartnerServices {
    /// Calls to partner sites (shared with the tasks that push posts after a login).
    pub client: Arc<PartnerClient>,
    /// Seals and opens the secrets sites share with this server.
    pub secret_box_opt: Option<SecretBox>,
}

/// The edge of one node, shared by its connections.
pub struct Edge {
    deps: EdgeDependencies,
    limits: EdgeLimits,
    registry: SessionRegistry,
    address_limiter: AddressLimiter,
    /// A hash no password matches, verified for unknown accounts.
    dummy_hash: String,
    next_connection_id: AtomicU64,
    on_detached: DetachNotice,
    /// Set once the node is stopping: every connection closes.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Which venue segment a client address belongs to.
    venues: venues::VenueIndex,
    /// The campaigns in force and the connections their notices go to.
    campaigns: campaign_notices::CampaignNotices,
    /// This edge, for work that outlives the request that started it.
    myself: std::sync::Weak<Self>,
}

impl Edge {
    /// Builds the edge (hashes its timing-equaliser password once).
    pub async fn new(deps: EdgeDependencies, limits: EdgeLimits) -> anyhow::Result<Arc<Self>> {
        let dummy_hash = auth::dummy_hash(limits.password_cost).await?;
        Ok(Arc::new_cyclic(|myself: &std::sync::Weak<Self>| {
            let weak = myself.clone();
            let on_detached: DetachNotice = Arc::new(move |account: &str, session_id: &str| {
                if let Some(edge) = weak.upgrade() {
                    let request = UserRequest::SessionDetached {
                        session_id: session_id.to_owned(),
                        node_id: edge.deps.node_id.to_string(),
                    };
                    let account = account.to_owned();
                    actix_web::rt::spawn(async move {
                        edge.tell_user(&account, &request).await;
                    });
                }
            });
            Self {
                address_limiter: AddressLimiter::new(limits.logins_per_minute_per_address),
                deps,
                limits,
                registry: SessionRegistry::default(),
                dummy_hash,
                next_connection_id: AtomicU64::new(1),
                on_detached,
                stopping: tokio::sync::watch::Sender::new(false),
                venues: venues::VenueIndex::default(),
                campaigns: campaign_notices::CampaignNotices::default(),
                myself: myself.clone(),
            }
        }))
    }

    /// Closes every connection (the node is stopping); clients reconnect to another node and
    /// resume their sessions there.
    pub fn close_connections(&self) {
        self.stopping.send_replace(true);
    }

    fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// This edge, shared, while the node runs.
    pub fn myself(&self) -> Option<Arc<Self>> {
        self.myself.upgrade()
    }

    /// The domain clock.
    pub fn clock(&self) -> &DomainClock {
        &self.deps.clock
    }

    /// When a key issued now expires.
    fn key_expiry_unix_ms(&self) -> u64 {
        let ttl_ms = u64::try_from(self.limits.key_ttl.as_millis()).unwrap_or(u64::MAX);
        self.deps.clock.now_unix_ms().saturating_add(ttl_ms)
    }

    /// The partner-site services.
    pub fn partners(&self) -> &PartnerServices {
        &self.deps.partners
    }

    /// `request` as an envelope to entity `id` of `kind`, and the shard it goes to.
    fn entity_envelope<R: Serialize>(
        &self,
        kind: EntityKind,
        id: &str,
        request: &R,
    ) -> Result<(Destination, Envelope), ErrorBody> {
        let target = kind
            .address(id)
            .map_err(|error| ErrorBody::new(ErrorCode::BadRequest, error.to_string()))?;
        let payload = lanmesh_actors::entities::encode(request).map_err(|error| {
            ErrorBody::new(ErrorCode::BadRequest, format!("request too large: {error}"))
        })?;
        let destination = Destination::Shard(self.deps.shard_map.shard_for(&target));
        Ok((
            destination,
            Envelope::new(target, self.deps.node_id.clone(), payload),
        ))
    }

    /// Asks entity `id` of `kind` and waits for its answer. `msg_id_opt` makes a retried
    /// request the same message (the entity answers it once).
    pub async fn ask_entity<R: Serialize, A: DeserializeOwned>(
        &self,
        kind: EntityKind,
        id: &str,
        request: &R,
        msg_id_opt: Option<Uuid>,
    ) -> Result<A, ErrorBody> {
        let (destination, mut envelope) = self.entity_envelope(kind, id, request)?;
        if let Some(msg_id) = msg_id_opt {
            envelope.msg_id = msg_id;
        }
        let policy = RequestPolicy {
            attempt_timeout: (self.limits.request_timeout / 4).max(Duration::from_millis(500)),
            total_timeout: self.limits.request_timeout,
        };
        let reply = self
            .deps
            .requester
            .request(&destination, envelope, &policy)
            .await
            .map_err(|error| {
                tracing::warn!(%kind, id, error = %error, "entity did not answer");
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    "the service did not answer in time; retrying is safe",
                )
            })?;
        lanmesh_actors::entities::decode(&reply.payload).map_err(|error| {
            tracing::error!(%kind, id, error = %error, "undecodable reply from an entity");
            ErrorBody::new(ErrorCode::Unavailable, "unexpected answer from the service")
        })
    }

    /// Asks an account's entity and waits for its answer.
    pub async fn ask_user(
        &self,
        account: &str,
        request: &UserRequest,
        msg_id_opt: Option<Uuid>,
    ) -> Result<UserReply, ErrorBody> {
        self.ask_entity(EntityKind::User, account, request, msg_id_opt)
            .await
    }

    /// Sends a one-way request to an account's entity (best effort, logged on failure).
    pub async fn tell_user(&self, account: &str, request: &UserRequest) {
        self.tell_entity(EntityKind::User, account, request).await;
    }

    /// Sends a one-way request to entity `id` of `kind` (best effort, logged on failure).
    pub async fn tell_entity<R: Serialize>(&self, kind: EntityKind, id: &str, request: &R) {
        let (destination, envelope) = match self.entity_envelope(kind, id, request) {
            Ok(addressed) => addressed,
            Err(error) => {
                tracing::warn!(%kind, id, error = %error.message, "cannot tell an entity");
                return;
            }
        };
        if let Err(error) = self
            .deps
            .transport
            .publish(&destination, envelope, &PublishOptions::default())
            .await
        {
            tracing::warn!(%kind, id, error = %error, "cannot tell an entity");
        }
    }

    /// Routes a batch of pushes from this node's inbox to the sessions it names.
    pub async fn route_push(&self, delivery: Delivery) -> HandlerOutcome {
        let envelope = delivery.envelope;
        if envelope.target.kind != EntityKind::Session.as_str() {
            tracing::debug!(target = %envelope.target, "inbox message for no session dropped");
            return HandlerOutcome::Ack;
        }
        let batch = match user::decode::<SessionPushes>(&envelope.payload) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(target = %envelope.target, error = %error, "undecodable push dropped");
                return HandlerOutcome::Ack;
            }
        };
        // A push is a user entity's `SessionPush` or a gateway entity's `GatewayPush`.
        let push = match user::decode::<SessionPush>(&batch.push) {
            Ok(push) => push,
            Err(_) => {
                self.route_gateway_push(&batch);
                return HandlerOutcome::Ack;
            }
        };
        let session_ids = batch.session_ids;
        for session_id in session_ids {
            match self.registry.get(&session_id) {
                Some(session) => {
                    self.deps.metrics.pushes_routed.inc();
                    session.do_send(Deliver(push.clone()));
                }
                None => {
                    self.deps.metrics.pushes_unclaimed.inc();
                    // A watched account pushing to a session that is gone: stop its pushes.
                    if matches!(push, SessionPush::Presence { .. })
                        && let Some(sender) = &envelope.sender_entity_opt
                    {
                        let request = UserRequest::DropWatcher { session_id };
                        self.tell_user(&sender.id, &request).await;
                    }
                }
            }
        }
        HandlerOutcome::Ack
    }
}

impl Edge {
    /// Routes a gateway entity's push (a certification result, a reward, a client's unit
    /// request) to the gateway's connection.
    fn route_gateway_push(&self, batch: &SessionPushes) {
        let frame_opt = match lanmesh_actors::entities::decode::<GatewayPush>(&batch.push) {
            Ok(GatewayPush::Certification(record)) => sessions::encode_push(
                "gateway.certification",
                &gateway_ops::wire_certification(&record),
            ),
            Ok(GatewayPush::Reward(reward)) => {
                sessions::encode_push("gateway.reward", &sessions::wire_reward(&reward))
            }
            Ok(GatewayPush::UnitRequest(record)) => sessions::encode_push(
                "gateway.unit_request",
                &sessions::wire_unit_request(&record),
            ),
            Err(error) => {
                tracing::warn!(error = %error, "undecodable push dropped");
                None
            }
        };
        let Some(frame) = frame_opt else { return };
        for session_id in &batch.session_ids {
            match self.registry.get(session_id) {
                Some(session) => {
                    self.deps.metrics.pushes_routed.inc();
                    session.do_send(sessions::SendFrame(frame.clone()));
                }
                None => {
                    self.deps.metrics.pushes_unclaimed.inc();
                }
            }
        }
    }
}

/// Runs `tick` on `edge` every `interval` (the first at once) until the edge is dropped.
pub fn spawn_periodic<Tick, Ticked>(edge: &Arc<Edge>, interval: Duration, tick: Tick)
where
    Tick: Fn(Arc<Edge>) -> Ticked + 'static,
    Ticked: Future<Output = ()> + 'static,
{
    let weak = Arc::downgrade(edge);
    actix_web::rt::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(edge) = weak.upgrade() else { return };
            tick(edge).await;
        }
    });
}

impl ErrorBody {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            accounts: Vec::new(),
            retry_after_ms: None,
            reasons: Vec::new(),
        }
    }
}
