//! The node's Prometheus metrics, rendered on `/metrics` in the OpenMetrics text format.
//!
//! Bus counters live in the transport as atomics; a collector reads them at scrape time, so
//! the bus crate does not depend on a metrics library.

use lanmesh_actors::host::metrics::HostMetrics;
use lanmesh_bus::transport::TransportStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Reads a transport's counters and readiness at scrape time.
struct BusCollector {
    stats: Arc<TransportStats>,
    is_ready: Box<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for BusCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("BusCollector")
    }
}

fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counter: &AtomicU64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(TransportStats::read(counter));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for BusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let connected = ConstGauge::new(i64::from((self.is_ready)()));
        connected.encode(encoder.encode_descriptor(
            "lanmesh_bus_connected",
            "1 when the bus can publish and consume",
            None,
            connected.metric_type(),
        )?)?;
        let stats = &self.stats;
        let counters: [(&str, &str, &AtomicU64); 7] = [
            (
                "lanmesh_bus_published",
                "Messages published and confirmed",
                &stats.published,
            ),
            (
                "lanmesh_bus_publish_failures",
                "Publishes that ended in an error",
                &stats.publish_failures,
            ),
            (
                "lanmesh_bus_acked",
                "Deliveries acknowledged after their handler succeeded",
                &stats.acked,
            ),
            (
                "lanmesh_bus_retried",
                "Deliveries handed back for redelivery",
                &stats.retried,
            ),
            (
                "lanmesh_bus_dead_lettered",
                "Messages dead-lettered (rejected or over the delivery limit)",
                &stats.dead_lettered,
            ),
            (
                "lanmesh_bus_undecodable",
                "Deliveries whose frame did not decode",
                &stats.undecodable,
            ),
            (
                "lanmesh_bus_reconnects",
                "Broker connections re-established",
                &stats.reconnects,
            ),
        ];
        for (name, help, counter) in counters {
            encode_counter(&mut encoder, name, help, counter)?;
        }
        Ok(())
    }
}

/// Builds the node's registry: build info, the bus counters and the entity layer's metrics.
pub fn node_registry(
    stats: Arc<TransportStats>,
    is_ready: impl Fn() -> bool + Send + Sync + 'static,
    host_metrics: &HostMetrics,
    edge_metrics: &crate::edge::metrics::EdgeMetrics,
) -> Registry {
    let mut registry = Registry::default();
    registry
        .sub_registry_with_label(("version".into(), env!("CARGO_PKG_VERSION").into()))
        .register(
            "lanmesh_build_info",
            "Always 1; the build's version is its label",
            ConstGauge::new(1_i64),
        );
    registry.register_collector(Box::new(BusCollector {
        stats,
        is_ready: Box::new(is_ready),
    }));
    host_metrics.register(&mut registry);
    edge_metrics.register(&mut registry);
    registry
}

/// Renders the registry as OpenMetrics text.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_readiness_are_rendered() {
        let stats = Arc::new(TransportStats::default());
        TransportStats::bump(&stats.published);
        TransportStats::bump(&stats.published);
        TransportStats::bump(&stats.reconnects);
        let host_metrics = HostMetrics::default();
        host_metrics.shards_owned.set(12);
        host_metrics.duplicates_dropped.inc();
        host_metrics.takeover_seconds.observe(3.2);
        let registry = node_registry(
            Arc::clone(&stats),
            || true,
            &host_metrics,
            &crate::edge::metrics::EdgeMetrics::default(),
        );
        let text = render(&registry).unwrap();
        assert!(text.contains("lanmesh_bus_published_total 2"), "{text}");
        assert!(text.contains("lanmesh_bus_reconnects_total 1"), "{text}");
        assert!(text.contains("lanmesh_bus_connected 1"), "{text}");
        assert!(text.contains("# HELP lanmesh_bus_acked"), "{text}");
        assert!(text.contains("lanmesh_build_info{version=\""), "{text}");
        assert!(text.contains("lanmesh_shards_owned 12"), "{text}");
        assert!(
            text.contains("lanmesh_duplicates_dropped_total 1"),
            "{text}"
        );
        assert!(text.contains("lanmesh_takeover_seconds_count 1"), "{text}");
        assert!(
            text.contains("lanmesh_takeover_seconds_bucket{le=\"4.0\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
