//! A cluster of real `lanmesh-node` processes on this machine: every node in one directory
//! (its working directory, its log file, and one SQLite file they all share, which is how nodes
//! share storage on one machine), configured through `LANMESH__…` variables, watched through
//! its `/metrics`. `lanmesh-load entities --spawn-nodes` runs one; the integration suite builds
//! its `TestCluster` on it.

use crate::load::http_client::http_get;
use crate::load::metrics_text::{METRIC_CLUSTER_NODES, METRIC_SHARDS_OWNED, metric_value};
use crate::load::node_process::NodeProcess;
use anyhow::{Context, bail};
use lanmesh_bus::NodeId;
use lanmesh_bus::amqp::AmqpConfig;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// How often cluster conditions are polled.
const CLUSTER_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of each node's log shown when the cluster misbehaves.
const N_LOG_LINES_ON_ERROR: usize = 30;
/// Lines of a node's log shown when that node misbehaves.
const N_LOG_LINES_OF_FAILED_NODE: usize = 40;

/// How the nodes are configured. `None` leaves the node's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// `cluster.n_shards`.
    pub n_shards: u16,
    /// `cluster.heartbeat_interval_ms` (node default 1000).
    pub heartbeat_interval_ms_opt: Option<u64>,
    /// `cluster.missed_heartbeats` (node default 3).
    pub missed_heartbeats_opt: Option<u32>,
    /// `cluster.handoff_timeout_ms` (node default 10000).
    pub handoff_timeout_ms_opt: Option<u64>,
    /// `host.passivate_after_idle_ms` (node default 300000).
    pub passivate_after_idle_ms_opt: Option<u64>,
    /// `log.filter` (node default `info`).
    pub log_filter_opt: Option<String>,
    /// More `LANMESH__…` variables for every node (e.g. `LANMESH__AUTH__KEY_TTL_MS`), set after
    /// the ones above, so they override them.
    pub extra_env: Vec<(String, String)>,
}

impl ClusterSpec {
    /// `n_shards` shards and the nodes' own defaults for everything else.
    pub fn new(n_shards: u16) -> Self {
        Self {
            n_shards,
            heartbeat_interval_ms_opt: None,
            missed_heartbeats_opt: None,
            handoff_timeout_ms_opt: None,
            passivate_after_idle_ms_opt: None,
            log_filter_opt: None,
            extra_env: Vec::new(),
        }
    }

    /// The `LANMESH__…` variables this spec sets.
    fn node_env(&self) -> Vec<(&str, String)> {
        let optional = [
            (
                "LANMESH__CLUSTER__HEARTBEAT_INTERVAL_MS",
                self.heartbeat_interval_ms_opt
                    .map(|value| value.to_string()),
            ),
            (
                "LANMESH__CLUSTER__MISSED_HEARTBEATS",
                self.missed_heartbeats_opt.map(|value| value.to_string()),
            ),
            (
                "LANMESH__CLUSTER__HANDOFF_TIMEOUT_MS",
                self.handoff_timeout_ms_opt.map(|value| value.to_string()),
            ),
            (
                "LANMESH__HOST__PASSIVATE_AFTER_IDLE_MS",
                self.passivate_after_idle_ms_opt
                    .map(|value| value.to_string()),
            ),
            ("LANMESH__LOG__FILTER", self.log_filter_opt.clone()),
        ];
        let mut env = vec![("LANMESH__CLUSTER__N_SHARDS", self.n_shards.to_string())];
        env.extend(
            optional
                .into_iter()
                .filter_map(|(key, value_opt)| Some((key, value_opt?))),
        );
        env.extend(
            self.extra_env
                .iter()
                .map(|(key, value)| (key.as_str(), value.clone())),
        );
        env
    }
}

/// Where and what to run.
#[derive(Debug, Clone)]
pub struct LocalClusterSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// `cluster.name` of every node.
    pub cluster_name: String,
    /// The `lanmesh-node` executable.
    pub node_binary: PathBuf,
    /// An existing directory for the nodes' working directories, logs and SQLite file; the
    /// caller owns it (and removes it).
    pub directory: PathBuf,
    /// Node `i` (from 1) is `{node_id_prefix}-{i}`.
    pub node_id_prefix: String,
    /// How every node is configured.
    pub spec: ClusterSpec,
}

/// One node of a [`LocalCluster`].
pub struct ClusterNode {
    /// Its `node.id`.
    pub node_id: String,
    /// Its HTTP address.
    pub http_address: String,
    process: NodeProcess,
    running: bool,
}

impl ClusterNode {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// What one running node reports about the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The node's index in the [`LocalCluster`].
    pub index: usize,
    /// Its `node.id`.
    pub node_id: String,
    /// `lanmesh_shards_owned`, when it answered.
    pub shards_owned_opt: Option<f64>,
    /// `lanmesh_cluster_nodes`, when it answered.
    pub cluster_nodes_opt: Option<f64>,
    /// Why `/metrics` could not be read, when it could not.
    pub scrape_error_opt: Option<String>,
}

/// One scrape of every running node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// The running nodes, by index.
    pub nodes: Vec<NodeView>,
}

impl ClusterView {
    /// Shards owned, added up over the running nodes.
    pub fn n_shards_owned(&self) -> f64 {
        self.nodes
            .iter()
            .filter_map(|node| node.shards_owned_opt)
            .sum()
    }

    /// The view of node `index`, if it is running.
    pub fn node(&self, index: usize) -> Option<&NodeView> {
        self.nodes.iter().find(|node| node.index == index)
    }

    /// Settled: every running node sees exactly the running nodes alive, and together they own
    /// each of the `n_shards` shards.
    pub fn is_settled(&self, n_shards: u16) -> bool {
        let n_running = self.nodes.len() as f64;
        !self.nodes.is_empty()
            && self.nodes.iter().all(|node| {
                node.shards_owned_opt.is_some() && node.cluster_nodes_opt == Some(n_running)
            })
            && self.n_shards_owned() == f64::from(n_shards)
    }
}

impl std::fmt::Display for ClusterView {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show =
            |value_opt: Option<f64>| value_opt.map_or("?".to_owned(), |value| value.to_string());
        for node in &self.nodes {
            write!(
                formatter,
                "[#{} {}: shards_owned={} cluster_nodes={}",
                node.index,
                node.node_id,
                show(node.shards_owned_opt),
                show(node.cluster_nodes_opt)
            )?;
            if let Some(error) = &node.scrape_error_opt {
                write!(formatter, " scrape error: {error}")?;
            }
            formatter.write_str("] ")?;
        }
        write!(
            formatter,
            "(shards owned in all: {})",
            self.n_shards_owned()
        )
    }
}

/// Real `lanmesh-node` processes forming one cluster. Dropping it kills the nodes that still
/// run; [`LocalCluster::stop`] stops them gracefully and deletes the cluster's broker topology.
pub struct LocalCluster {
    settings: LocalClusterSettings,
    nodes: Vec<ClusterNode>,
}

impl LocalCluster {
    /// Starts `n_nodes` nodes without waiting for them; see [`LocalCluster::wait_ready`] and
    /// [`LocalCluster::wait_settled`].
    pub fn start(settings: LocalClusterSettings, n_nodes: usize) -> anyhow::Result<Self> {
        let mut cluster = Self {
            settings,
            nodes: Vec::new(),
        };
        for _ in 0..n_nodes {
            cluster.spawn_node()?;
        }
        Ok(cluster)
    }

    /// Starts one more node, logging to `{node_id}.log` in the cluster's directory, without
    /// waiting for it; returns its index.
    pub fn spawn_node(&mut self) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let settings = &self.settings;
        let node_id = format!("{}-{}", settings.node_id_prefix, index + 1);
        let working_dir = settings.directory.join(&node_id);
        std::fs::create_dir_all(&working_dir)
            .with_context(|| format!("creating {}", working_dir.display()))?;
        let path_text = |path: PathBuf| path.to_string_lossy().into_owned();
        let mut env: Vec<(&str, String)> = vec![
            ("LANMESH__NODE__ID", node_id.clone()),
            (
                "LANMESH__NODE__DATA_DIR",
                path_text(working_dir.join("data")),
            ),
            ("LANMESH__CLUSTER__NAME", settings.cluster_name.clone()),
            ("LANMESH__BUS__AMQP_URL", settings.amqp_url.clone()),
            (
                "LANMESH__STORAGE__SQLITE__PATH",
                path_text(settings.directory.join("cluster.db")),
            ),
        ];
        env.extend(settings.spec.node_env());
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        let log_path = settings.directory.join(format!("{node_id}.log"));
        let process =
            NodeProcess::start_logging_to(&settings.node_binary, &working_dir, &env, &log_path)?;
        tracing::info!(node = %node_id, http = %process.http_address, pid = process.pid(), "node started");
        self.nodes.push(ClusterNode {
            node_id,
            http_address: process.http_address.clone(),
            process,
            running: true,
        });
        Ok(index)
    }

    /// Waits until node `index` answers `/readyz` (it is connected to the broker), at most
    /// `timeout`; the error carries the end of its log.
    pub async fn wait_ready(&mut self, index: usize, timeout: Duration) -> anyhow::Result<()> {
        let node = self.node_mut(index)?;
        let ready = node.process.wait_for_status("/readyz", 200, timeout).await;
        if let Err(error) = ready {
            let tail = node.process.log_tail(N_LOG_LINES_OF_FAILED_NODE);
            bail!("{} not ready: {error:#}\n{tail}", node.node_id);
        }
        Ok(())
    }

    /// The broker URL.
    pub fn url(&self) -> &str {
        &self.settings.amqp_url
    }

    /// The cluster's name (prefix of its queues and exchanges).
    pub fn cluster_name(&self) -> &str {
        &self.settings.cluster_name
    }

    /// The number of shards.
    pub fn n_shards(&self) -> u16 {
        self.settings.spec.n_shards
    }

    /// The directory holding the nodes' working directories, logs and SQLite file.
    pub fn directory(&self) -> &Path {
        &self.settings.directory
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> anyhow::Result<&ClusterNode> {
        self.nodes
            .get(index)
            .with_context(|| format!("no node #{index}"))
    }

    fn node_mut(&mut self, index: usize) -> anyhow::Result<&mut ClusterNode> {
        self.nodes
            .get_mut(index)
            .with_context(|| format!("no node #{index}"))
    }

    /// Indexes of the nodes not killed or terminated through this cluster.
    pub fn running_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|index| self.nodes.get(*index).is_some_and(|node| node.running))
            .collect()
    }

    /// Kills node `index` with SIGKILL: a crash, no handoff.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<ExitStatus> {
        let node = self.node_mut(index)?;
        node.running = false;
        node.process.kill()
    }

    /// Kills every node with SIGKILL, running or not.
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.running = false;
            let _ = node.process.kill();
        }
    }

    /// Sends SIGTERM to node `index` (a graceful leave) and waits for it to exit, at most
    /// `timeout`; kills it when it does not.
    pub async fn terminate(
        &mut self,
        index: usize,
        timeout: Duration,
    ) -> anyhow::Result<ExitStatus> {
        let node = self.node_mut(index)?;
        node.running = false;
        let exited = node.process.terminate(timeout).await;
        if exited.is_err() {
            let _ = node.process.kill();
        }
        exited
    }

    /// Node `index`'s `/metrics` text.
    pub async fn scrape(&self, index: usize) -> anyhow::Result<String> {
        let node = self.node(index)?;
        let (status, body) = http_get(&node.http_address, "/metrics")
            .await
            .with_context(|| format!("scraping {}", node.node_id))?;
        if status != 200 {
            bail!("{}: /metrics answered {status}", node.node_id);
        }
        Ok(body)
    }

    /// Metric `name` on node `index`; an error when the node does not export it.
    pub async fn metric(&self, index: usize, name: &str) -> anyhow::Result<f64> {
        let text = self.scrape(index).await?;
        metric_value(&text, name).with_context(|| {
            format!(
                "{} exports no {name}",
                self.node(index).map_or("?", |node| node.node_id.as_str())
            )
        })
    }

    /// Metric `name` added up over the running nodes; an error when one does not export it.
    pub async fn sum_over_running(&self, name: &str) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for index in self.running_nodes() {
            total += self.metric(index, name).await?;
        }
        Ok(total)
    }

    /// Scrapes every running node once. Fails at once if a running node has exited (with the
    /// end of its log).
    pub async fn view(&mut self) -> anyhow::Result<ClusterView> {
        let mut view = ClusterView::default();
        for index in self.running_nodes() {
            let node = self.node_mut(index)?;
            if let Some(status) = node.process.try_exit_status()? {
                let tail = node.process.log_tail(N_LOG_LINES_OF_FAILED_NODE);
                bail!("{} exited unexpectedly with {status}\n{tail}", node.node_id);
            }
            let scraped = http_get(&node.http_address, "/metrics").await;
            let mut node_view = NodeView {
                index,
                node_id: node.node_id.clone(),
                shards_owned_opt: None,
                cluster_nodes_opt: None,
                scrape_error_opt: None,
            };
            match scraped {
                Ok((200, text)) => {
                    node_view.shards_owned_opt = metric_value(&text, METRIC_SHARDS_OWNED);
                    node_view.cluster_nodes_opt = metric_value(&text, METRIC_CLUSTER_NODES);
                }
                Ok((status, _)) => node_view.scrape_error_opt = Some(format!("status {status}")),
                Err(error) => node_view.scrape_error_opt = Some(format!("{error:#}")),
            }
            view.nodes.push(node_view);
        }
        Ok(view)
    }

    /// Polls the running nodes until `condition` holds for a view of them; fails after
    /// `timeout` with the last view, what was awaited and the end of every node's log.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&ClusterView) -> bool,
    ) -> anyhow::Result<ClusterView> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.view().await?;
            if condition(&view) {
                return Ok(view);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{what}: not within {timeout:?}; last seen {view}; logs in {}\n{}",
                    self.directory().display(),
                    self.log_tails(N_LOG_LINES_ON_ERROR)
                );
            }
            tokio::time::sleep(CLUSTER_POLL_INTERVAL).await;
        }
    }

    /// Waits until the cluster is settled (see [`ClusterView::is_settled`]) over the running
    /// nodes.
    pub async fn wait_settled(&mut self, timeout: Duration) -> anyhow::Result<ClusterView> {
        let n_shards = self.n_shards();
        let n_running = self.running_nodes().len();
        self.wait_for(
            &format!("cluster settled with {n_running} nodes and {n_shards} shards"),
            timeout,
            |view| view.is_settled(n_shards),
        )
        .await
    }

    /// The last `n_lines` of every node's log, labelled.
    pub fn log_tails(&self, n_lines: usize) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "--- {} ---\n{}",
                    node.node_id,
                    node.process.log_tail(n_lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every running node with SIGTERM (each may take `timeout`) and deletes the
    /// cluster's broker topology. Fails when a node does not exit 0 in time (after the topology
    /// is deleted all the same).
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for index in self.running_nodes() {
            let node_id = self.node(index)?.node_id.clone();
            match self.terminate(index, timeout).await {
                Ok(status) if status.success() => {}
                Ok(status) => problems.push(format!("{node_id} exited with {status}")),
                Err(error) => problems.push(format!("{node_id}: {error:#}")),
            }
        }
        delete_cluster_topology(self.url(), self.cluster_name(), self.n_shards()).await?;
        if !problems.is_empty() {
            bail!(
                "nodes did not stop cleanly: {}; logs in {}",
                problems.join("; "),
                self.directory().display()
            );
        }
        Ok(())
    }
}

/// The transport settings of a client of cluster `cluster_name`: a bus participant with its
/// own inbox, not a cluster member.
pub fn client_amqp_config(
    url: &str,
    cluster_name: &str,
    n_shards: u16,
    node_id: NodeId,
) -> AmqpConfig {
    AmqpConfig {
        n_shards,
        ..AmqpConfig::new(url, cluster_name, node_id)
    }
}

/// Deletes every queue and exchange of cluster `cluster_name` over a plain connection.
pub async fn delete_cluster_topology(
    url: &str,
    cluster_name: &str,
    n_shards: u16,
) -> anyhow::Result<()> {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to delete the topology")?;
    let topology = client_amqp_config(url, cluster_name, n_shards, NodeId::generate()).topology();
    let deleted = topology.delete(&connection).await;
    let _ = connection.close(200, "done".into()).await;
    deleted.with_context(|| format!("deleting the topology of cluster {cluster_name}"))
}

/// The `lanmesh-node` executable next to the running one.
pub fn node_binary_beside_current_exe() -> anyhow::Result<PathBuf> {
    let current = std::env::current_exe().context("locating the current executable")?;
    let binary = current
        .parent()
        .context("the current executable has no directory")?
        .join("lanmesh-node");
    if !binary.exists() {
        bail!(
            "{} not found: build it (`cargo build --release --bin lanmesh-node`) or pass --node-bin",
            binary.display()
        );
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_means_all_seen_and_all_owned() {
        let node = |index: usize, shards: f64, seen: f64| NodeView {
            index,
            node_id: format!("node-{index}"),
            shards_owned_opt: Some(shards),
            cluster_nodes_opt: Some(seen),
            scrape_error_opt: None,
        };
        let view = |nodes: Vec<NodeView>| ClusterView { nodes };
        assert!(view(vec![node(0, 30.0, 2.0), node(1, 34.0, 2.0)]).is_settled(64));
        assert!(!view(vec![node(0, 30.0, 2.0), node(1, 33.0, 2.0)]).is_settled(64));
        assert!(!view(vec![node(0, 30.0, 3.0), node(1, 34.0, 2.0)]).is_settled(64));
        assert!(!view(Vec::new()).is_settled(64));
        let mut silent = node(1, 34.0, 2.0);
        silent.shards_owned_opt = None;
        assert!(!view(vec![node(0, 64.0, 2.0), silent]).is_settled(64));
    }

    #[test]
    fn a_spec_sets_only_what_it_overrides() {
        let check = |spec: &ClusterSpec, expected: &[(&str, &str)]| {
            let env = spec.node_env();
            let env: Vec<(&str, &str)> = env
                .iter()
                .map(|(key, value)| (*key, value.as_str()))
                .collect();
            assert_eq!(env, expected, "{spec:?}");
        };
        check(
            &ClusterSpec::new(16),
            &[("LANMESH__CLUSTER__N_SHARDS", "16")],
        );
        check(
            &ClusterSpec {
                missed_heartbeats_opt: Some(5),
                log_filter_opt: Some("debug".to_owned()),
                ..ClusterSpec::new(64)
            },
            &[
                ("LANMESH__CLUSTER__N_SHARDS", "64"),
                ("LANMESH__CLUSTER__MISSED_HEARTBEATS", "5"),
                ("LANMESH__LOG__FILTER", "debug"),
            ],
        );
        check(
            &ClusterSpec {
                extra_env: vec![("LANMESH__AUTH__KEY_TTL_MS".to_owned(), "1500".to_owned())],
                ..ClusterSpec::new(8)
            },
            &[
                ("LANMESH__CLUSTER__N_SHARDS", "8"),
                ("LANMESH__AUTH__KEY_TTL_MS", "1500"),
            ],
        );
    }
}
