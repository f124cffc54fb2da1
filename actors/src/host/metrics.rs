//! The entity layer's metrics: shard ownership, membership, live entities, handoffs,
//! takeovers, redeliveries, duplicates and undeliverable pushes. The node registers them on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the takeover histogram: around the failure detector's ~3 s.
const TAKEOVER_BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0];

/// Metric handles shared by the host and the shard ownership; cloning shares the values.
#[derive(Debug, Clone)]
pub struct HostMetrics {
    /// Shards this node consumes now.
    pub shards_owned: Gauge,
    /// Nodes this node sees alive, itself included.
    pub cluster_nodes: Gauge,
    /// Entity actors running on this node.
    pub entities_live: Gauge,
    /// Shards this node released gracefully to another owner.
    pub handoffs: Counter,
    /// Seconds from a failed owner's last heartbeat to this node consuming its shard.
    pub takeover_seconds: Histogram,
    /// Shard deliveries that had been delivered before.
    pub redeliveries: Counter,
    /// Messages recognised as already applied (their first reply was re-sent).
    pub duplicates_dropped: Counter,
    /// Pushes to client sessions the bus could not deliver (the session's node is gone).
    pub pushes_dropped: Counter,
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self {
            shards_owned: Gauge::default(),
            cluster_nodes: Gauge::default(),
            entities_live: Gauge::default(),
            handoffs: Counter::default(),
            takeover_seconds: Histogram::new(TAKEOVER_BUCKETS),
            redeliveries: Counter::default(),
            duplicates_dropped: Counter::default(),
            pushes_dropped: Counter::default(),
        }
    }
}

impl HostMetrics {
    /// Registers every metric (names prefixed `lanmesh_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "lanmesh_shards_owned",
            "Shards this node consumes now",
            self.shards_owned.clone(),
        );
        registry.register(
            "lanmesh_cluster_nodes",
            "Nodes this node sees alive, itself included",
            self.cluster_nodes.clone(),
        );
        registry.register(
            "lanmesh_entities_live",
            "Entity actors running on this node",
            self.entities_live.clone(),
        );
        registry.register(
            "lanmesh_handoffs",
            "Shards this node released gracefully to another owner",
            self.handoffs.clone(),
        );
        registry.register(
            "lanmesh_takeover_seconds",
            "Seconds from a failed owner's last heartbeat to this node consuming its shard",
            self.takeover_seconds.clone(),
        );
        registry.register(
            "lanmesh_redeliveries",
            "Shard deliveries that had been delivered before",
            self.redeliveries.clone(),
        );
        registry.register(
            "lanmesh_duplicates_dropped",
            "Messages recognised by id as already applied; their first reply was sent again",
            self.duplicates_dropped.clone(),
        );
        registry.register(
            "lanmesh_pushes_dropped",
            "Pushes to client sessions the bus could not deliver",
            self.pushes_dropped.clone(),
        );
    }
}
