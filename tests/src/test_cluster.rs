//! [`TestCluster`]: a [`LocalCluster`] of real `lanmesh-node` processes with what tests add to
//! it: a unique cluster name and a temporary directory per test, nodes ready before the test
//! goes on, nodes added on demand, waiting for the rendezvous balance, and the end of every
//! node's log (and the deletion of the broker topology) when a test fails.

use crate::{node_binary, unique_cluster_name};
use anyhow::{Context, anyhow};
use lanmesh::load::local_cluster::{
    ClusterSpec, ClusterView, LocalCluster, LocalClusterSettings, delete_cluster_topology,
};
use lanmesh::load::probe_client::{ProbeClient, ProbeClientSettings};
use lanmesh_bus::NodeId;
use lanmesh_bus::rendezvous;
use lanmesh_bus::request_reply::RequestPolicy;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::time::Duration;

/// Shards of a test cluster. Smaller than the production default (256) so a cluster declares
/// its quorum queues, takes its leases and rebalances quickly; the rules are the same.
pub const TEST_N_SHARDS: u16 = 64;

/// Request policy of probe clients: a reply may take a takeover's worth of time.
pub const PROBE_REQUEST_POLICY: RequestPolicy = RequestPolicy {
    attempt_timeout: Duration::from_secs(2),
    total_timeout: Duration::from_secs(60),
};

/// How long a node may take to start and answer `/readyz`.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`TestCluster::shutdown`] lets each node take to stop.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long tearing down a cluster's topology may take.
const TOPOLOGY_DELETE_TIMEOUT: Duration = Duration::from_secs(20);

/// Real `lanmesh-node` processes forming one cluster on the test broker: a unique cluster name,
/// one SQLite file in a temporary directory shared by every node (how several nodes share
/// storage on one machine), each node's log in that directory. Everything a [`LocalCluster`]
/// does (scraping, waiting for a condition, killing or terminating a node) it does too.
///
/// Dropping it kills the nodes that still run and deletes the cluster's broker topology; when
/// the test is failing, it prints the end of every node's log first.
pub struct TestCluster {
    cluster: LocalCluster,
    /// Removed after `cluster` is dropped (fields drop in order), so after the nodes died.
    directory: tempfile::TempDir,
    topology_deleted: bool,
}

impl Deref for TestCluster {
    type Target = LocalCluster;

    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.cluster
    }
}

impl TestCluster {
    /// Starts `n_nodes` nodes configured by `spec` and waits until each answers `/readyz`
    /// (connected to the broker). It does not wait for the cluster to settle: see
    /// [`LocalCluster::wait_settled`] and [`TestCluster::wait_balanced`].
    pub async fn start(
        url: &str,
        test_name: &str,
        spec: ClusterSpec,
        n_nodes: usize,
    ) -> anyhow::Result<Self> {
        let directory = tempfile::tempdir().context("creating the cluster directory")?;
        let settings = LocalClusterSettings {
            amqp_url: url.to_owned(),
            cluster_name: unique_cluster_name(test_name),
            node_binary: node_binary()?,
            directory: directory.path().to_path_buf(),
            node_id_prefix: "node".to_owned(),
            spec,
        };
        // No node yet: from here on, dropping `cluster` deletes whatever topology nodes made.
        let mut cluster = Self {
            cluster: LocalCluster::start(settings, 0)?,
            directory,
            topology_deleted: false,
        };
        for _ in 0..n_nodes {
            cluster.spawn_node()?;
        }
        for index in 0..n_nodes {
            cluster.wait_ready(index, NODE_READY_TIMEOUT).await?;
        }
        Ok(cluster)
    }

    /// The default spec of a test cluster: [`TEST_N_SHARDS`] shards, the nodes' own heartbeat,
    /// handoff and passivation defaults (so failure detection and takeover figures are the
    /// production ones), `info` logs.
    pub fn default_spec() -> ClusterSpec {
        ClusterSpec {
            log_filter_opt: Some("info".to_owned()),
            ..ClusterSpec::new(TEST_N_SHARDS)
        }
    }

    /// Starts one more node and waits until it answers `/readyz`; returns its index.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let index = self.spawn_node()?;
        self.wait_ready(index, NODE_READY_TIMEOUT).await?;
        Ok(index)
    }

    /// A client of this cluster's probes, with [`PROBE_REQUEST_POLICY`].
    pub async fn probe_client(&self) -> anyhow::Result<ProbeClient> {
        ProbeClient::connect(&ProbeClientSettings {
            amqp_url: self.url().to_owned(),
            cluster_name: self.cluster_name().to_owned(),
            n_shards: self.n_shards(),
            client_id_prefix: "client".to_owned(),
            request_policy: PROBE_REQUEST_POLICY,
        })
        .await
    }

    /// How many shards each running node owns when the running nodes share them out by
    /// rendezvous hashing (`lanmesh_bus::rendezvous`), by node index.
    pub fn rendezvous_shares(&self) -> anyhow::Result<BTreeMap<usize, f64>> {
        let mut candidates = BTreeSet::new();
        for index in self.running_nodes() {
            candidates.insert(NodeId::new(self.node(index)?.node_id.as_str())?);
        }
        let mut shares = BTreeMap::new();
        for index in self.running_nodes() {
            let node_id = NodeId::new(self.node(index)?.node_id.as_str())?;
            let n_owned = rendezvous::shards_of(&node_id, &candidates, self.n_shards()).len();
            shares.insert(index, n_owned as f64);
        }
        Ok(shares)
    }

    /// Waits until the cluster is settled and every running node owns exactly its rendezvous
    /// share: the moves that the last join or leave called for are all done.
    pub async fn wait_balanced(&mut self, timeout: Duration) -> anyhow::Result<ClusterView> {
        let n_shards = self.n_shards();
        let shares = self.rendezvous_shares()?;
        self.wait_for(
            &format!("cluster balanced: settled, and shards owned by node index = {shares:?}"),
            timeout,
            |view| {
                view.is_settled(n_shards)
                    && view.nodes.iter().all(|node| {
                        node.shards_owned_opt.is_some()
                            && node.shards_owned_opt == shares.get(&node.index).copied()
                    })
            },
        )
        .await
    }

    /// SIGKILLs node `index` and waits until the survivors own every shard; returns how long
    /// that took from the kill.
    pub async fn kill_and_await_takeover(
        &mut self,
        index: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let killed_at = tokio::time::Instant::now();
        self.kill(index)?;
        let n_shards = f64::from(self.n_shards());
        self.wait_for(
            "the survivors own every shard after the kill",
            timeout,
            |view| view.n_shards_owned() == n_shards,
        )
        .await?;
        Ok(killed_at.elapsed())
    }

    /// Stops every running node with SIGTERM and deletes the cluster's broker topology.
    /// Fails when a node does not exit 0 in time (after the topology is deleted all the same).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let stopped = self.cluster.stop(NODE_STOP_TIMEOUT).await;
        self.topology_deleted = true;
        stopped.map_err(|error| anyhow!("cluster shutdown: {error:#}\n{}", self.log_tails(30)))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "cluster {} (directory {}), end of each node's log:\n{}",
                self.cluster_name(),
                self.directory.path().display(),
                self.log_tails(40)
            );
        }
        self.cluster.kill_all();
        if self.topology_deleted {
            return;
        }
        // Drop cannot await, and may run inside a runtime: delete from a thread of its own.
        let url = self.url().to_owned();
        let cluster_name = self.cluster_name().to_owned();
        let n_shards = self.n_shards();
        let deleting = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let _ = tokio::time::timeout(
                    TOPOLOGY_DELETE_TIMEOUT,
                    delete_cluster_topology(&url, &cluster_name, n_shards),
                )
                .await;
            });
        });
        let _ = deleting.join();
    }
}
