//! The transport conformance suite run against the in-process transport.

use async_trait::async_trait;
use lanmesh_bus::Transport;
use lanmesh_bus::conformance::{
    CONFORMANCE_DELIVERY_LIMIT, CONFORMANCE_N_SHARDS, ConformanceHarness,
};
use lanmesh_bus::in_process::{InProcessConfig, InProcessTransport};
use std::sync::Arc;

struct InProcessHarness {
    transport: InProcessTransport,
}

#[async_trait]
impl ConformanceHarness for InProcessHarness {
    async fn connect(&self) -> Arc<dyn Transport> {
        Arc::new(self.transport.clone())
    }

    async fn cleanup(&self) {}
}

async fn in_process_harness(_test_name: &str) -> Option<InProcessHarness> {
    Some(InProcessHarness {
        transport: InProcessTransport::new(InProcessConfig {
            n_shards: CONFORMANCE_N_SHARDS,
            delivery_limit: CONFORMANCE_DELIVERY_LIMIT,
        }),
    })
}

lanmesh_bus::transport_conformance_suite!(in_process_harness);
