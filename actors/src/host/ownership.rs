//! Which shards this node consumes: the rendezvous assignment over the settled members of the
//! cluster, made safe by shard leases.
//!
//! On every membership change (and on a short timer) the node compares the shards assigned to
//! it with the shards it owns:
//! - a shard it owns but is no longer assigned is **handed off**: stop consuming (the delivery
//!   in hand finishes and is acknowledged; prefetched ones go back to the queue), stop the
//!   shard's entities, release the lease;
//! - a shard it is assigned but does not own is **acquired** once its lease is free: released,
//!   never taken, held by this node itself (a restart), or held by a node the membership
//!   declared failed (a **takeover**, timed from that node's last heartbeat). A lease held by a
//!   live node is waited for — it is handing off — up to the handoff timeout, after which it
//!   is taken anyway (the broker's single active consumer still keeps the two apart).
//!
//! A node that stops hearing its own heartbeats has lost the cluster: it lets every shard go.

use crate::host::entity_host::EntityHost;
use crate::host::lease::{HeldLease, Lease, LeaseError, LeaseStore};
use crate::host::metrics::HostMetrics;
use lanmesh_bus::membership::ClusterView;
use lanmesh_bus::rendezvous::shards_of;
use lanmesh_bus::{Delivery, NodeId, ShardId, Source, Subscription, Transport, handler_fn};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Settings of shard ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnershipConfig {
    /// Shards in the cluster.
    pub n_shards: u16,
    /// How long to wait for a live owner to hand a shard over before taking it.
    pub handoff_timeout: Duration,
    /// How often to re-check leases that are being waited for.
    pub recheck_interval: Duration,
}

/// What ownership works with.
pub struct OwnershipDependencies {
    /// This node.
    pub node_id: NodeId,
    /// Consumes the shard queues.
    pub transport: Arc<dyn Transport>,
    /// The shard leases.
    pub leases: LeaseStore,
    /// Runs the entities of owned shards.
    pub host: Arc<EntityHost>,
    /// The membership view.
    pub view: watch::Receiver<ClusterView>,
    /// Shards the host found fenced (a newer owner wrote them).
    pub fenced_shards: mpsc::UnboundedReceiver<ShardId>,
    /// Gauges and counters.
    pub metrics: HostMetrics,
}

struct OwnedShard {
    subscription: Subscription,
    lease: HeldLease,
}

/// The running ownership loop.
pub struct OwnershipHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl OwnershipHandle {
    /// Hands off every owned shard (stop consuming, stop entities, release leases) and stops.
    pub async fn release_all(self) {
        // The loop may have ended on its own (membership gone); it released everything then.
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::warn!(error = %error, "shard ownership task ended abnormally");
        }
    }
}

/// Starts the ownership loop.
pub fn start(dependencies: OwnershipDependencies, config: OwnershipConfig) -> OwnershipHandle {
    let (stop, stop_receiver) = oneshot::channel();
    let ownership = ShardOwnership {
        dependencies,
        config,
        owned: BTreeMap::new(),
        wanted_since: HashMap::new(),
    };
    OwnershipHandle {
        stop,
        task: tokio::spawn(ownership.run(stop_receiver)),
    }
}

struct ShardOwnership {
    dependencies: OwnershipDependencies,
    config: OwnershipConfig,
    owned: BTreeMap<ShardId, OwnedShard>,
    wanted_since: HashMap<ShardId, Instant>,
}

/// Why a shard is being let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Another node is assigned the shard.
    Rebalance,
    /// This node is shutting down.
    Shutdown,
    /// This node lost contact with the cluster; others will take the shard over.
    LostContact,
}

impl Release {
    /// Whether the next owner gets the shard from this node directly (not by takeover).
    fn is_handoff(self) -> bool {
        matches!(self, Self::Rebalance | Self::Shutdown)
    }
}

impl ShardOwnership {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut ticker = tokio::time::interval(self.config.recheck_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(shard) = self.dependencies.fenced_shards.recv() => {
                    self.drop_fenced(shard).await;
                }
                changed = self.dependencies.view.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = ticker.tick() => {}
            }
            let view = self.dependencies.view.borrow_and_update().clone();
            self.reconcile(&view).await;
        }
        let all: Vec<ShardId> = self.owned.keys().copied().collect();
        self.release(all, Release::Shutdown).await;
    }

    fn node_id(&self) -> &NodeId {
        &self.dependencies.node_id
    }

    async fn reconcile(&mut self, view: &ClusterView) {
        let metrics = &self.dependencies.metrics;
        metrics
            .cluster_nodes
            .set(i64::try_from(view.alive.len()).unwrap_or(i64::MAX));
        if !view.alive.contains(self.node_id()) && !self.owned.is_empty() {
            tracing::warn!(
                n_shards = self.owned.len(),
                "this node no longer hears its own heartbeats; letting every shard go"
            );
            let all: Vec<ShardId> = self.owned.keys().copied().collect();
            self.release(all, Release::LostContact).await;
        }
        if !view.self_settled || !view.assignable.contains(self.node_id()) {
            self.wanted_since.clear();
            return;
        }
        let assigned = shards_of(self.node_id(), &view.assignable, self.config.n_shards);
        let handoffs: Vec<ShardId> = self
            .owned
            .keys()
            .filter(|shard| !assigned.contains(shard))
            .copied()
            .collect();
        self.release(handoffs, Release::Rebalance).await;
        self.acquire_missing(&assigned, view).await;
    }

    async fn acquire_missing(&mut self, assigned: &BTreeSet<ShardId>, view: &ClusterView) {
        let now = Instant::now();
        self.wanted_since
            .retain(|shard, _| assigned.contains(shard) && !self.owned.contains_key(shard));
        let missing: Vec<(ShardId, Instant)> = assigned
            .iter()
            .filter(|shard| !self.owned.contains_key(shard))
            .map(|shard| (*shard, *self.wanted_since.entry(*shard).or_insert(now)))
            .collect();
        let attempts = missing
            .into_iter()
            .map(|(shard, wanted_since)| self.try_acquire(shard, wanted_since, view));
        let acquired: Vec<Option<(ShardId, OwnedShard)>> =
            futures_util::future::join_all(attempts).await;
        for (shard, owned) in acquired.into_iter().flatten() {
            self.wanted_since.remove(&shard);
            self.owned.insert(shard, owned);
        }
        self.update_gauge();
    }

    fn update_gauge(&self) {
        self.dependencies
            .metrics
            .shards_owned
            .set(i64::try_from(self.owned.len()).unwrap_or(i64::MAX));
    }

    /// Takes `shard` if its lease is free; `None` when it must wait or the attempt failed.
    async fn try_acquire(
        &self,
        shard: ShardId,
        wanted_since: Instant,
        view: &ClusterView,
    ) -> Option<(ShardId, OwnedShard)> {
        let leases = &self.dependencies.leases;
        let lease = match leases.read(shard).await {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(shard = shard.0, error = %error, "cannot read shard lease");
                return None;
            }
        };
        let takeover_opt = self.may_take(shard, &lease, wanted_since, view)?;
        let held = match leases.take(shard, &lease, self.node_id()).await {
            Ok(held) => held,
            Err(LeaseError::Lost { .. }) => return None,
            Err(error) => {
                tracing::warn!(shard = shard.0, error = %error, "cannot take shard lease");
                return None;
            }
        };
        let host = Arc::clone(&self.dependencies.host);
        let epoch = held.epoch;
        let handler = handler_fn(move |delivery: Delivery| {
            let host = Arc::clone(&host);
            async move { host.deliver(delivery, shard, epoch).await }
        });
        let subscription = match self
            .dependencies
            .transport
            .subscribe(Source::Shard(shard), handler)
            .await
        {
            Ok(subscription) => subscription,
            Err(error) => {
                tracing::warn!(shard = shard.0, error = %error, "cannot consume shard; releasing its lease");
                if let Err(error) = leases.release(held).await {
                    tracing::warn!(shard = shard.0, error = %error, "cannot release shard lease");
                }
                return None;
            }
        };
        if let Some(since_last_heard) = takeover_opt {
            self.dependencies
                .metrics
                .takeover_seconds
                .observe(since_last_heard.as_secs_f64());
            tracing::info!(shard = shard.0, epoch, previous_owner = ?lease.owner_opt, seconds = since_last_heard.as_secs_f64(), "took over shard of a failed node");
        } else {
            tracing::debug!(shard = shard.0, epoch, "acquired shard");
        }
        Some((
            shard,
            OwnedShard {
                subscription,
                lease: held,
            },
        ))
    }

    /// Whether `lease` may be taken now: `None` = wait; `Some(Some(since_last_heard))` = take
    /// it over from a failed owner; `Some(None)` = take it (free, ours, or waited long enough).
    fn may_take(
        &self,
        shard: ShardId,
        lease: &Lease,
        wanted_since: Instant,
        view: &ClusterView,
    ) -> Option<Option<Duration>> {
        let Some(owner) = &lease.owner_opt else {
            return Some(None);
        };
        if owner == self.node_id().as_str() {
            return Some(None);
        }
        let owner_id = NodeId::new(owner.clone()).ok();
        let owner_alive = owner_id
            .as_ref()
            .is_some_and(|owner_id| view.alive.contains(owner_id));
        if !owner_alive {
            let since_last_heard = owner_id
                .as_ref()
                .and_then(|owner_id| view.failed.get(owner_id))
                .map_or(Duration::ZERO, |last_heard| last_heard.elapsed());
            return Some(Some(since_last_heard));
        }
        if wanted_since.elapsed() < self.config.handoff_timeout {
            return None;
        }
        tracing::warn!(shard = shard.0, owner = %owner, waited = ?self.config.handoff_timeout, "live owner did not hand the shard over in time; taking it");
        Some(None)
    }

    async fn release(&mut self, shards: Vec<ShardId>, reason: Release) {
        if shards.is_empty() {
            return;
        }
        let releases = shards.into_iter().filter_map(|shard| {
            let owned = self.owned.remove(&shard)?;
            let host = Arc::clone(&self.dependencies.host);
            let leases = self.dependencies.leases.clone();
            Some(async move {
                owned.subscription.cancel().await;
                host.stop_shard(shard).await;
                if let Err(error) = leases.release(owned.lease).await {
                    tracing::warn!(shard = shard.0, error = %error, "cannot release shard lease");
                }
            })
        });
        let n_released = futures_util::future::join_all(releases).await.len();
        if reason.is_handoff() {
            self.dependencies
                .metrics
                .handoffs
                .inc_by(u64::try_from(n_released).unwrap_or(u64::MAX));
        }
        tracing::info!(
            n_released,
            ?reason,
            n_owned = self.owned.len(),
            "released shards"
        );
        self.update_gauge();
    }

    /// A newer owner wrote an entity of `shard`: stop consuming it at once (the delivery in
    /// hand goes back to the queue) and leave the lease to that owner.
    async fn drop_fenced(&mut self, shard: ShardId) {
        let Some(owned) = self.owned.remove(&shard) else {
            return;
        };
        owned.subscription.abort().await;
        self.dependencies.host.stop_shard(shard).await;
        self.wanted_since.insert(shard, Instant::now());
        self.update_gauge();
        tracing::warn!(
            shard = shard.0,
            "stopped consuming a shard another node has taken"
        );
    }
}
