//! The transport conformance suite run against RabbitMQ, one isolated cluster per test.

use async_trait::async_trait;
use lanmesh_bus::amqp::link::ReconnectPolicy;
use lanmesh_bus::amqp::topology::Topology;
use lanmesh_bus::amqp::{AmqpConfig, AmqpTransport};
use lanmesh_bus::conformance::{
    CONFORMANCE_DELIVERY_LIMIT, CONFORMANCE_N_SHARDS, ConformanceHarness,
};
use lanmesh_bus::{NodeId, Transport};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Builds the transport settings every broker test uses: small topology, fast reconnects.
pub fn test_config(url: &str, cluster_name: &str) -> AmqpConfig {
    let mut config = AmqpConfig::new(url, cluster_name, NodeId::generate());
    config.n_shards = CONFORMANCE_N_SHARDS;
    config.delivery_limit = CONFORMANCE_DELIVERY_LIMIT;
    config.prefetch = 16;
    config.reconnect = ReconnectPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    };
    config
}

/// Starts a transport and waits until it is connected.
pub async fn connected_transport(url: &str, cluster_name: &str) -> AmqpTransport {
    let transport = AmqpTransport::start(test_config(url, cluster_name));
    transport
        .wait_until_ready(Duration::from_secs(20))
        .await
        .expect("broker reachable");
    transport
}

/// Deletes a test cluster's queues and exchanges (whatever queue arguments they were declared
/// with) over a plain connection.
pub async fn delete_cluster(url: &str, cluster_name: &str, n_shards: u16) {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("broker reachable");
    Topology::new(cluster_name, n_shards, CONFORMANCE_DELIVERY_LIMIT)
        .delete(&connection)
        .await
        .expect("delete topology");
    let _ = connection.close(200, "done".into()).await;
}

struct AmqpHarness {
    url: String,
    cluster_name: String,
    transports: Mutex<Vec<AmqpTransport>>,
}

#[async_trait]
impl ConformanceHarness for AmqpHarness {
    async fn connect(&self) -> Arc<dyn Transport> {
        let transport = connected_transport(&self.url, &self.cluster_name).await;
        self.transports
            .lock()
            .expect("lock")
            .push(transport.clone());
        Arc::new(transport)
    }

    async fn cleanup(&self) {
        let transports: Vec<_> = self.transports.lock().expect("lock").drain(..).collect();
        for transport in transports {
            transport.close().await;
        }
        delete_cluster(&self.url, &self.cluster_name, CONFORMANCE_N_SHARDS).await;
    }
}

async fn amqp_harness(test_name: &str) -> Option<AmqpHarness> {
    let url = lanmesh_tests::broker_url_or_skip(test_name)?;
    Some(AmqpHarness {
        url,
        cluster_name: lanmesh_tests::unique_cluster_name(test_name),
        transports: Mutex::new(Vec::new()),
    })
}

lanmesh_bus::transport_conformance_suite!(amqp_harness);
