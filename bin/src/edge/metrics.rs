//! The edge's metrics: open connections, frames, refused requests and push routing.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Metric handles of the edge; cloning shares the values.
#[derive(Debug, Clone, Default)]
pub struct EdgeMetrics {
    /// WebSocket connections open now.
    pub connections_open: Gauge,
    /// Request frames received.
    pub requests: Counter,
    /// Error replies sent (any code).
    pub error_replies: Counter,
    /// Requests refused by the per-connection rate limit.
    pub requests_rate_limited: Counter,
    /// Failed logins (wrong password, unknown account, locked out).
    pub login_failures: Counter,
    /// Pushes handed to a session on this node.
    pub pushes_routed: Counter,
    /// Pushes for sessions this node no longer holds.
    pub pushes_unclaimed: Counter,
    /// The segment-directory revision this node's segment index holds.
    pub venue_index_revision: Gauge,
    /// Segments in this node's segment index.
    pub venue_segments: Gauge,
    /// Gateways this node certified at a window's end.
    pub window_end_certified: Counter,
    /// Gateways this node rejected at a window's end.
    pub window_end_rejected: Counter,
    /// Campaign notices queued for this node's connections on publication.
    pub campaign_notices_pushed: Counter,
    /// Campaign notices not queued because a connection's queue was full or closed.
    pub campaign_notices_dropped: Counter,
    /// Allocations gateways asked this node for.
    pub allocations_requested: Counter,
    /// Allocations answered final (allocated or refused) within the wait.
    pub allocations_final: Counter,
}

impl EdgeMetrics {
    /// Registers every metric (names prefixed `lanmesh_edge_`).
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "lanmesh_edge_requests",
                "Request frames received",
                &self.requests,
            ),
            (
                "lanmesh_edge_error_replies",
                "Error replies sent",
                &self.error_replies,
            ),
            (
                "lanmesh_edge_requests_rate_limited",
                "Requests refused by the per-connection rate limit",
                &self.requests_rate_limited,
            ),
            (
                "lanmesh_edge_login_failures",
                "Failed logins: wrong password, unknown account, locked out or rate limited",
                &self.login_failures,
            ),
            (
                "lanmesh_edge_pushes_routed",
                "Pushes handed to a session on this node",
                &self.pushes_routed,
            ),
            (
                "lanmesh_edge_pushes_unclaimed",
                "Pushes for sessions this node no longer holds",
                &self.pushes_unclaimed,
            ),
            (
                "lanmesh_edge_window_end_certified",
                "Gateways this node certified at the end of their monitoring window",
                &self.window_end_certified,
            ),
            (
                "lanmesh_edge_window_end_rejected",
                "Gateways this node rejected at the end of their monitoring window",
                &self.window_end_rejected,
            ),
            (
                "lanmesh_edge_campaign_notices_pushed",
                "Campaign notices queued for this node's connections when the campaign was published",
                &self.campaign_notices_pushed,
            ),
            (
                "lanmesh_edge_campaign_notices_dropped",
                "Campaign notices not queued because a connection's queue was full or closed",
                &self.campaign_notices_dropped,
            ),
            (
                "lanmesh_edge_allocations_requested",
                "Allocations gateways asked this node for",
                &self.allocations_requested,
            ),
            (
                "lanmesh_edge_allocations_final",
                "Allocations this node answered with a final result (allocated or refused) within the wait",
                &self.allocations_final,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let gauges = [
            (
                "lanmesh_edge_connections_open",
                "WebSocket connections open now",
                &self.connections_open,
            ),
            (
                "lanmesh_edge_venue_index_revision",
                "The segment-directory revision this node's segment index holds",
                &self.venue_index_revision,
            ),
            (
                "lanmesh_edge_venue_segments",
                "Segments in this node's segment index",
                &self.venue_segments,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }
}
