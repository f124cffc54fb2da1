//! The entity host: routes each shard delivery to its entity's actor, spawning the actor on
//! the first message, and stops actors that sat idle or that exceed the cap on live entities.
//!
//! Per-entity order: a shard's deliveries reach [`EntityHost::deliver`] one at a time, and an
//! entity lives in exactly one shard, so its messages are applied in queue order. A message
//! for an entity whose actor is stopping waits until it has stopped, then goes to a fresh
//! actor that restores the state from storage.
//!
//! Effects are carried out after the state is durable and before the delivery is
//! acknowledged: audit events, presence samples and journal entries are appended and messages to
//! other entities sent (a failure of any hands the delivery back, and the redelivery repeats
//! them with their first ids), then
//! pushes to client sessions and the reply go out (best effort: a session re-syncs when it
//! resumes, an asker retries).

use crate::host::behavior::{EntityBehavior, OwnerStamp, Push};
use crate::host::clock::DomainClock;
use crate::host::entity_actor::{Applied, Apply, ApplyError, EntityActor, Passivate};
use crate::host::metrics::HostMetrics;
use crate::host::push::{SESSION_PUSHES_ID, SessionPushes};
use crate::model::entity_kind::EntityKind;
use actix::{Actor, ArbiterHandle, Recipient};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use lanmesh_bus::codec::{FrameLimits, encode_message};
use lanmesh_bus::request_reply::{build_reply, reply_options};
use lanmesh_bus::shard_map::ShardMap;
use lanmesh_bus::{
    Delivery, Destination, EntityAddress, Envelope, HandlerOutcome, NodeId, PublishOptions,
    ShardId, Transport,
};
use lanmesh_storage::{
    AuditEvent, AuditStore, EntityKey, EntityStateStore, JournalRecord, LedgerJournalStore,
    MAX_JOURNAL_BATCH_RECORDS, PresenceSampleStore,
};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Pause before handing back a message this node may no longer apply (fenced), so the broker
/// does not spin it while ownership moves.
const FENCED_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// A push not consumed within this long is stale (the session re-syncs on resume).
const PUSH_EXPIRATION: Duration = Duration::from_secs(30);
/// The idle sweep runs at least this often.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Limits of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostConfig {
    /// An entity with no message for this long is stopped (its state is already durable).
    pub passivate_after_idle: Duration,
    /// Most entity actors alive at once; beyond it the least recently used idle ones stop.
    pub max_live_entities: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            passivate_after_idle: Duration::from_secs(300),
            max_live_entities: 100_000,
        }
    }
}

/// The two messages the host sends an entity actor, whatever its behaviour.
struct EntityHandles {
    apply: Recipient<Apply>,
    passivate: Recipient<Passivate>,
}

/// Starts actors of one behaviour.
trait KindRuntime: Send + Sync {
    fn spawn(
        &self,
        address: &EntityAddress,
        store: Arc<dyn EntityStateStore>,
        arbiter: &ArbiterHandle,
    ) -> EntityHandles;
}

struct BehaviorRuntime<B>(PhantomData<fn() -> B>);

impl<B: EntityBehavior> KindRuntime for BehaviorRuntime<B> {
    fn spawn(
        &self,
        address: &EntityAddress,
        store: Arc<dyn EntityStateStore>,
        arbiter: &ArbiterHandle,
    ) -> EntityHandles {
        let address = address.clone();
        let actor =
            EntityActor::<B>::start_in_arbiter(arbiter, move |_| EntityActor::new(&address, store));
        EntityHandles {
            apply: actor.clone().recipient(),
            passivate: actor.recipient(),
        }
    }
}

/// The entity kinds a host runs.
#[derive(Default)]
pub struct HostedKinds {
    runtimes: HashMap<&'static str, Arc<dyn KindRuntime>>,
}

impl HostedKinds {
    /// Adds behaviour `B` for its kind.
    pub fn with<B: EntityBehavior>(mut self) -> Self {
        self.runtimes.insert(
            B::KIND.as_str(),
            Arc::new(BehaviorRuntime::<B>(PhantomData)),
        );
        self
    }
}

/// What the host needs from the rest of the node.
pub struct HostDependencies {
    /// This node.
    pub node_id: NodeId,
    /// For replies and messages between entities.
    pub transport: Arc<dyn Transport>,
    /// Where entity state lives.
    pub store: Arc<dyn EntityStateStore>,
    /// Where the entities' audit events go.
    pub audit: Arc<dyn AuditStore>,
    /// Where segment entities' presence samples go.
    pub presence: Arc<dyn PresenceSampleStore>,
    /// Where quota-ledger entities' journal entries go.
    pub journal: Arc<dyn LedgerJournalStore>,
    /// How addresses map to shards (the cluster's shard count).
    pub shard_map: ShardMap,
    /// Threads the actors run on (at least one).
    pub arbiters: Vec<ArbiterHandle>,
    /// Where the metrics go.
    pub metrics: HostMetrics,
    /// Told about shards in which a newer owner has written: this node should let them go.
    pub fenced_shards: mpsc::UnboundedSender<ShardId>,
    /// The time entities handle messages at.
    pub clock: DomainClock,
}

struct LiveEntity {
    handles: EntityHandles,
    shard: ShardId,
    last_used: Instant,
    n_in_flight: u32,
}

type Stopped = Shared<BoxFuture<'static, ()>>;

#[derive(Default)]
struct Entities {
    live: HashMap<EntityAddress, LiveEntity>,
    stopping: HashMap<EntityAddress, Stopped>,
}

/// Runs entity actors for the shards this node owns.
pub struct EntityHost {
    dependencies: HostDependencies,
    kinds: HostedKinds,
    config: HostConfig,
    entities: Mutex<Entities>,
}

impl EntityHost {
    /// A host for `kinds`; call [`EntityHost::run_idle_sweep`] to passivate idle entities.
    pub fn new(
        dependencies: HostDependencies,
        kinds: HostedKinds,
        config: HostConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            dependencies,
            kinds,
            config,
            entities: Mutex::new(Entities::default()),
        })
    }

    fn entities(&self) -> MutexGuard<'_, Entities> {
        self.entities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Entity actors alive now.
    pub fn n_live(&self) -> usize {
        self.entities().live.len()
    }

    /// Handles one delivery of `shard`, owned by this node at `epoch`.
    pub async fn deliver(&self, delivery: Delivery, shard: ShardId, epoch: u64) -> HandlerOutcome {
        let metrics = &self.dependencies.metrics;
        if delivery.is_redelivery() {
            metrics.redeliveries.inc();
        }
        let envelope = delivery.envelope;
        let Some(apply) = self.checkout(&envelope.target, shard).await else {
            tracing::warn!(target = %envelope.target, "dead-lettering message for an entity kind this node does not host");
            return HandlerOutcome::Reject;
        };
        let owner = OwnerStamp {
            node_id: self.dependencies.node_id.to_string(),
            epoch,
        };
        let outcome = apply
            .send(Apply {
                envelope: Arc::clone(&envelope),
                owner,
                now_unix_ms: self.dependencies.clock.now_unix_ms(),
            })
            .await;
        self.check_in(&envelope.target);
        match outcome {
            Ok(Ok(applied)) => self.send_effects(&envelope, applied).await,
            Ok(Err(ApplyError::Refused(refusal))) => {
                tracing::warn!(target = %envelope.target, msg_id = %envelope.msg_id, error = %refusal, "dead-lettering message the entity refused");
                HandlerOutcome::Reject
            }
            Ok(Err(error @ ApplyError::Fenced { .. })) => {
                tracing::warn!(target = %envelope.target, shard = shard.0, error = %error, "a newer owner wrote this entity; giving the shard up");
                self.forget(&envelope.target);
                // The ownership loop lets the shard go; if it is gone already nobody listens.
                let _ = self.dependencies.fenced_shards.send(shard);
                tokio::time::sleep(FENCED_RETRY_PAUSE).await;
                HandlerOutcome::Retry
            }
            Ok(Err(error)) => {
                tracing::warn!(target = %envelope.target, msg_id = %envelope.msg_id, error = %error, "message not applied, handing it back");
                HandlerOutcome::Retry
            }
            Err(error) => {
                tracing::warn!(target = %envelope.target, error = %error, "entity actor unavailable, handing the message back");
                self.forget(&envelope.target);
                HandlerOutcome::Retry
            }
        }
    }

    async fn send_effects(&self, request: &Envelope, applied: Applied) -> HandlerOutcome {
        let dependencies = &self.dependencies;
        if applied.duplicate {
            dependencies.metrics.duplicates_dropped.inc();
            tracing::debug!(target = %request.target, msg_id = %request.msg_id, "duplicate message: re-sending its first effects");
        }
        if !applied.audit.is_empty() {
            let entity = EntityKey::new(request.target.kind.clone(), request.target.id.clone());
            let actor = request
                .sender_entity_opt
                .as_ref()
                .map_or_else(|| request.sender.to_string(), ToString::to_string);
            let events: Vec<AuditEvent> = applied
                .audit
                .into_iter()
                .map(|recorded| AuditEvent {
                    event_id: recorded.event_id,
                    actor: actor.clone(),
                    entity: entity.clone(),
                    action: recorded.action,
                    detail: recorded.detail.into_bytes(),
                    at_unix_ms: i64::try_from(recorded.at_unix_ms).unwrap_or(i64::MAX),
                    msg_id_opt: Some(request.msg_id),
                })
                .collect();
            if let Err(error) = dependencies.audit.append(events).await {
                tracing::warn!(entity = %request.target, error = %error, "audit events not stored; handing the delivery back");
                return HandlerOutcome::Retry;
            }
        }
        if !applied.samples.is_empty()
            && let Err(error) = dependencies.presence.append(applied.samples).await
        {
            tracing::warn!(entity = %request.target, error = %error, "presence samples not stored; handing the delivery back");
            return HandlerOutcome::Retry;
        }
        if !applied.journal.is_empty() {
            let records: Vec<JournalRecord> = applied
                .journal
                .into_iter()
                .map(|note| JournalRecord {
                    sequence: note.sequence,
                    at_unix_ms: i64::try_from(note.at_unix_ms).unwrap_or(i64::MAX),
                    body: note.body,
                })
                .collect();
            for chunk in records.chunks(MAX_JOURNAL_BATCH_RECORDS) {
                if let Err(error) = dependencies.journal.append(&request.target.id, chunk).await {
                    tracing::warn!(entity = %request.target, error = %error, "journal entries not stored; handing the delivery back");
                    return HandlerOutcome::Retry;
                }
            }
        }
        for sent in applied.sent {
            let shard = dependencies.shard_map.shard_for(&sent.target);
            let mut message =
                Envelope::new(sent.target, dependencies.node_id.clone(), sent.payload);
            message.msg_id = sent.msg_id;
            message.sender_entity_opt = Some(request.target.clone());
            message.trace_opt = request
                .trace_opt
                .as_ref()
                .map(lanmesh_bus::TraceContext::child);
            let published = dependencies
                .transport
                .publish(
                    &Destination::Shard(shard),
                    message,
                    &PublishOptions::default(),
                )
                .await;
            if let Err(error) = published {
                tracing::warn!(from = %request.target, error = %error, "message to another entity not sent; handing the delivery back");
                return HandlerOutcome::Retry;
            }
        }
        if !applied.pushes.is_empty() {
            self.push_to_sessions(request, applied.pushes).await;
        }
        if let Some(payload) = applied.reply_opt
            && let Some((destination, reply)) =
                build_reply(request, dependencies.node_id.clone(), payload)
        {
            let options = reply_options(&reply);
            if let Err(error) = dependencies
                .transport
                .publish(&destination, reply, &options)
                .await
            {
                // The asker retries with the same msg_id and gets the cached reply then.
                tracing::debug!(to = %destination, error = %error, "reply not delivered");
            }
        }
        HandlerOutcome::Ack
    }

    /// Sends pushes to the nodes holding their sessions, one message per node and content,
    /// all at once; a node that is gone drops them.
    async fn push_to_sessions(&self, request: &Envelope, pushes: Vec<Push>) {
        let mut groups: BTreeMap<(String, Vec<u8>), Vec<String>> = BTreeMap::new();
        for push in pushes {
            groups
                .entry((push.node_id, push.payload))
                .or_default()
                .push(push.session_id);
        }
        let sends = groups.into_iter().map(|((node_id, push), session_ids)| {
            self.push_group(request, node_id, push, session_ids)
        });
        futures_util::future::join_all(sends).await;
    }

    async fn push_group(
        &self,
        request: &Envelope,
        node_id: String,
        push: Vec<u8>,
        session_ids: Vec<String>,
    ) {
        let dependencies = &self.dependencies;
        let n_sessions = session_ids.len() as u64;
        let built = NodeId::new(node_id).ok().and_then(|node_id| {
            let target =
                EntityAddress::new(EntityKind::Session.as_str(), SESSION_PUSHES_ID).ok()?;
            let batch = SessionPushes { session_ids, push };
            let payload = encode_message(&batch, &FrameLimits::default()).ok()?;
            Some((node_id, target, payload))
        });
        let Some((node_id, target, payload)) = built else {
            dependencies.metrics.pushes_dropped.inc_by(n_sessions);
            tracing::warn!(from = %request.target, "push cannot be addressed or encoded; dropped");
            return;
        };
        let mut message = Envelope::new(target, dependencies.node_id.clone(), payload);
        message.sender_entity_opt = Some(request.target.clone());
        message.trace_opt = request
            .trace_opt
            .as_ref()
            .map(lanmesh_bus::TraceContext::child);
        let options = PublishOptions {
            expiration_opt: Some(PUSH_EXPIRATION),
            ..PublishOptions::default()
        };
        if let Err(error) = dependencies
            .transport
            .publish(&Destination::Node(node_id), message, &options)
            .await
        {
            dependencies.metrics.pushes_dropped.inc_by(n_sessions);
            tracing::debug!(from = %request.target, error = %error, "push to sessions not delivered");
        }
    }

    /// Finds or spawns the actor for `address` and marks it busy; `None` for an unknown kind.
    async fn checkout(&self, address: &EntityAddress, shard: ShardId) -> Option<Recipient<Apply>> {
        let runtime = Arc::clone(self.kinds.runtimes.get(address.kind.as_str())?);
        loop {
            let stopping = {
                let mut entities = self.entities();
                if let Some(entity) = entities.live.get_mut(address) {
                    entity.n_in_flight += 1;
                    entity.last_used = Instant::now();
                    return Some(entity.handles.apply.clone());
                }
                match entities.stopping.remove(address) {
                    Some(stopped) if stopped.peek().is_none() => {
                        entities.stopping.insert(address.clone(), stopped.clone());
                        stopped
                    }
                    _ => return Some(self.spawn(&mut entities, runtime.as_ref(), address, shard)),
                }
            };
            // The previous actor of this entity is stopping: wait, then start a fresh one.
            stopping.await;
        }
    }

    fn spawn(
        &self,
        entities: &mut Entities,
        runtime: &dyn KindRuntime,
        address: &EntityAddress,
        shard: ShardId,
    ) -> Recipient<Apply> {
        let arbiters = &self.dependencies.arbiters;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        address.hash(&mut hasher);
        let n_arbiters = u64::try_from(arbiters.len()).unwrap_or(1).max(1);
        let index = usize::try_from(hasher.finish() % n_arbiters).unwrap_or(0);
        let arbiter = arbiters
            .get(index)
            .cloned()
            .unwrap_or_else(actix::Arbiter::current);
        let handles = runtime.spawn(address, Arc::clone(&self.dependencies.store), &arbiter);
        let apply = handles.apply.clone();
        entities.live.insert(
            address.clone(),
            LiveEntity {
                handles,
                shard,
                last_used: Instant::now(),
                n_in_flight: 1,
            },
        );
        self.evict_over_cap(entities);
        self.update_live_gauge(entities);
        apply
    }

    fn check_in(&self, address: &EntityAddress) {
        if let Some(entity) = self.entities().live.get_mut(address) {
            entity.n_in_flight = entity.n_in_flight.saturating_sub(1);
            entity.last_used = Instant::now();
        }
    }

    /// Drops the actor of `address` without waiting (after a failure its cached state is
    /// not trusted; the next message restores from storage).
    fn forget(&self, address: &EntityAddress) {
        let mut entities = self.entities();
        if let Some(entity) = entities.live.remove(address) {
            entity.handles.passivate.do_send(Passivate);
        }
        self.update_live_gauge(&entities);
    }

    fn update_live_gauge(&self, entities: &Entities) {
        self.dependencies
            .metrics
            .entities_live
            .set(i64::try_from(entities.live.len()).unwrap_or(i64::MAX));
    }

    /// Starts stopping the actor of `address` (which must be idle) and returns when it stops.
    fn passivate(entities: &mut Entities, address: &EntityAddress) -> Option<Stopped> {
        let entity = entities.live.remove(address)?;
        let request = entity.handles.passivate.send(Passivate);
        let stopped = async move {
            // An actor that is already gone is as stopped as it gets.
            let _ = request.await;
        }
        .boxed()
        .shared();
        entities.stopping.insert(address.clone(), stopped.clone());
        Some(stopped)
    }

    fn evict_over_cap(&self, entities: &mut Entities) {
        let cap = self.config.max_live_entities.max(1);
        if entities.live.len() <= cap {
            return;
        }
        // Evict down to 90 % of the cap at once, so the sort is paid once per many spawns.
        let target = cap - cap / 10;
        let mut idle: Vec<(Instant, EntityAddress)> = entities
            .live
            .iter()
            .filter(|(_, entity)| entity.n_in_flight == 0)
            .map(|(address, entity)| (entity.last_used, address.clone()))
            .collect();
        let n_to_evict = entities.live.len().saturating_sub(target).min(idle.len());
        if n_to_evict == 0 {
            return;
        }
        idle.select_nth_unstable_by_key(n_to_evict - 1, |(last_used, _)| *last_used);
        for (_, address) in idle.into_iter().take(n_to_evict) {
            Self::passivate(entities, &address);
        }
        tracing::debug!(
            n_evicted = n_to_evict,
            cap,
            "passivated least recently used entities over the cap"
        );
    }

    /// Stops every entity of `shard` (after its subscription stopped) and waits for them.
    pub async fn stop_shard(&self, shard: ShardId) {
        let stopped: Vec<Stopped> = {
            let mut entities = self.entities();
            let addresses: Vec<EntityAddress> = entities
                .live
                .iter()
                .filter(|(_, entity)| entity.shard == shard)
                .map(|(address, _)| address.clone())
                .collect();
            let stopped = addresses
                .iter()
                .filter_map(|address| Self::passivate(&mut entities, address))
                .collect();
            self.update_live_gauge(&entities);
            stopped
        };
        futures_util::future::join_all(stopped).await;
    }

    /// Passivates entities idle for longer than the configured time, until the process ends.
    pub async fn run_idle_sweep(self: Arc<Self>) {
        let idle_after = self.config.passivate_after_idle;
        let interval = (idle_after / 4).clamp(Duration::from_millis(10), MAX_SWEEP_INTERVAL);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.passivate_idle(Instant::now(), idle_after);
        }
    }

    fn passivate_idle(&self, now: Instant, idle_after: Duration) {
        let mut entities = self.entities();
        entities
            .stopping
            .retain(|_, stopped| stopped.peek().is_none());
        let idle: Vec<EntityAddress> = entities
            .live
            .iter()
            .filter(|(_, entity)| {
                entity.n_in_flight == 0 && now.duration_since(entity.last_used) >= idle_after
            })
            .map(|(address, _)| address.clone())
            .collect();
        for address in &idle {
            Self::passivate(&mut entities, address);
        }
        self.update_live_gauge(&entities);
        if !idle.is_empty() {
            tracing::debug!(n_passivated = idle.len(), "passivated idle entities");
        }
    }
}
