//! The integration harness: finding the broker, naming things uniquely per test, running real
//! `lanmesh-node` processes and talking HTTP to them, reading their `/metrics`, running a
//! whole cluster of nodes ([`TestCluster`]) and talking to its probe entities ([`ProbeClient`]).
//!
//! Environment (all optional):
//! - `LANMESH_TEST_AMQP_URL`: the RabbitMQ to test against. Unset: broker tests print why they
//!   skip and pass, unless `LANMESH_TEST_REQUIRE_BROKER=1` (set by CI) makes that a failure.
//! - `LANMESH_NODE_BIN`: path of the `lanmesh-node` binary; by default it is looked up next to
//!   the test binary in the cargo target directory.

use anyhow::{Context, bail};
use lanmesh_actors::entities::probe::{self, ProbeReply, ProbeReport, ProbeRequest};
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_bus::amqp::{AmqpConfig, AmqpTransport};
use lanmesh_bus::rendezvous;
use lanmesh_bus::request_reply::{RequestPolicy, Requester};
use lanmesh_bus::shard_map::ShardMap;
use lanmesh_bus::{
    Delivery, Destination, Envelope, HandlerOutcome, NodeId, Source, Subscription, Transport,
    handler_fn,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Variable naming the broker under test.
pub const AMQP_URL_VAR: &str = "LANMESH_TEST_AMQP_URL";
/// Variable that turns a missing broker into a failure.
pub const REQUIRE_BROKER_VAR: &str = "LANMESH_TEST_REQUIRE_BROKER";
/// Variable overriding the node binary's path.
pub const NODE_BIN_VAR: &str = "LANMESH_NODE_BIN";

/// The broker URL for this test run, or `None` after printing why the test is skipped.
///
/// # Panics
/// When no broker is configured and `LANMESH_TEST_REQUIRE_BROKER=1`.
pub fn broker_url_or_skip(test_name: &str) -> Option<String> {
    if let Ok(url) = std::env::var(AMQP_URL_VAR)
        && !url.is_empty()
    {
        return Some(url);
    }
    let required = std::env::var(REQUIRE_BROKER_VAR).is_ok_and(|value| value == "1");
    assert!(
        !required,
        "{test_name}: {AMQP_URL_VAR} is not set but {REQUIRE_BROKER_VAR}=1 requires a broker"
    );
    eprintln!(
        "skipped {test_name}: {AMQP_URL_VAR} is not set (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)"
    );
    None
}

/// A cluster name no other test uses, so queues and exchanges never collide.
pub fn unique_cluster_name(test_name: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let readable: String = test_name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("t-{readable}-{}", suffix.get(..8).unwrap_or(&suffix))
}

/// The `lanmesh-node` binary built alongside this test binary.
pub fn node_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(NODE_BIN_VAR) {
        return Ok(PathBuf::from(path));
    }
    let test_binary = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/it-<hash> → target/<profile>/lanmesh-node
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target directory")?;
    let candidate = profile_dir.join("lanmesh-node");
    if !candidate.exists() {
        bail!(
            "{} not found: build it first (`cargo build -p lanmesh --bin lanmesh-node`; the README's test command does) or set {NODE_BIN_VAR}",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests on one machine).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding port 0")?;
    Ok(listener.local_addr()?.port())
}

/// A `lanmesh-node` child process, killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// The node's HTTP address.
    pub http_address: String,
    /// Where stdout and stderr go when they go to a file rather than to pipes.
    log_path_opt: Option<PathBuf>,
}

impl NodeProcess {
    /// Starts `lanmesh-node` in `working_dir` with `LANMESH__…` variables from `env` (and
    /// `http.listen` on a free port unless `env` sets it), capturing its output in pipes.
    ///
    /// Nothing reads the pipes until [`NodeProcess::stderr`]: use this for short runs only. A
    /// node that logs more than a pipe holds blocks; see [`NodeProcess::start_logging_to`].
    pub fn start(working_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn(working_dir, env, None)
    }

    /// Like [`NodeProcess::start`], but stdout and stderr are appended to `log_path`, so a
    /// long-running node never blocks on a full pipe.
    pub fn start_logging_to(
        working_dir: &Path,
        env: &[(&str, &str)],
        log_path: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn(working_dir, env, Some(log_path))
    }

    fn spawn(
        working_dir: &Path,
        env: &[(&str, &str)],
        log_path_opt: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let http_address = match env.iter().find(|(key, _)| *key == "LANMESH__HTTP__LISTEN") {
            Some((_, address)) => (*address).to_owned(),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let mut command = Command::new(node_binary()?);
        command
            .current_dir(working_dir)
            .env("LANMESH__HTTP__LISTEN", &http_address)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        match log_path_opt {
            Some(log_path) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log_path)
                    .with_context(|| format!("opening {}", log_path.display()))?;
                command.stdout(log.try_clone()?).stderr(log);
            }
            None => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let child = command.spawn().context("spawning lanmesh-node")?;
        Ok(Self {
            child,
            http_address,
            log_path_opt: log_path_opt.map(Path::to_path_buf),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Kills the process with SIGKILL (a crash: no shutdown code runs) and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill().context("sending SIGKILL")?;
        Ok(self.child.wait()?)
    }

    /// Waits until `path` answers `expected_status`, failing after `timeout` (or if the process
    /// exits first).
    pub async fn wait_for_status(
        &mut self,
        path: &str,
        expected_status: u16,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("lanmesh-node exited early with {status}");
            }
            if let Ok((status, body)) = http_get(&self.http_address, path).await
                && status == expected_status
            {
                return Ok(body);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{path} did not answer {expected_status} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status, at most `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        self.wait_exit(timeout).await
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("lanmesh-node still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything the process wrote to stderr (call after it exited); with
    /// [`NodeProcess::start_logging_to`], the whole log file (stdout and stderr).
    pub fn stderr(&mut self) -> String {
        if let Some(log_path) = &self.log_path_opt {
            return std::fs::read_to_string(log_path).unwrap_or_default();
        }
        let mut text = String::new();
        if let Some(stderr) = self.child.stderr.as_mut() {
            let _ = std::io::Read::read_to_string(stderr, &mut text);
        }
        text
    }

    /// The log file, when the output goes to one.
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path_opt.as_deref()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: `(status, body)`.
pub async fn http_get(address: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("response without a status code")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

// ---------------------------------------------------------------------------------------------
// Reading `/metrics`
// ---------------------------------------------------------------------------------------------

/// Gauge: shards this node owns.
pub const METRIC_SHARDS_OWNED: &str = "lanmesh_shards_owned";
/// Gauge: nodes this node sees alive, itself included.
pub const METRIC_CLUSTER_NODES: &str = "lanmesh_cluster_nodes";
/// Gauge: entity actors alive on this node.
pub const METRIC_ENTITIES_LIVE: &str = "lanmesh_entities_live";
/// Counter: shards this node released gracefully.
pub const METRIC_HANDOFFS: &str = "lanmesh_handoffs_total";
/// Histogram count: shards taken over from a node declared failed.
pub const METRIC_TAKEOVER_COUNT: &str = "lanmesh_takeover_seconds_count";
/// Histogram sum: seconds from the failed node's last heartbeat to each takeover, added up.
pub const METRIC_TAKEOVER_SUM: &str = "lanmesh_takeover_seconds_sum";
/// Counter: shard deliveries that were redeliveries.
pub const METRIC_REDELIVERIES: &str = "lanmesh_redeliveries_total";
/// Counter: messages recognised by `msg_id` as already applied (their cached reply re-sent).
pub const METRIC_DUPLICATES_DROPPED: &str = "lanmesh_duplicates_dropped_total";

/// The value of metric `name` in OpenMetrics (or Prometheus) text: the sample named exactly
/// `name`, or the sum over all its label sets when it has several. `None` when no sample has
/// that name. A histogram's parts are separate names (`…_count`, `…_sum`); summing `…_bucket`
/// over its `le` labels means nothing, so read buckets some other way.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(parse_sample)
        .filter(|sample| sample.name == name)
        .map(|sample| sample.value)
        .reduce(|total, value| total + value)
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    value: f64,
}

/// Parses a sample line; `None` for comments, blank lines and anything malformed.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|character: char| character == '{' || character.is_whitespace())?;
    let (name, rest) = line.split_at(name_end);
    let rest = match rest.strip_prefix('{') {
        Some(labels_and_rest) => {
            let labels_end = closing_brace(labels_and_rest)?;
            labels_and_rest.get(labels_end + 1..)?
        }
        None => rest,
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, value })
}

/// Where the label set that `text` starts inside ends: the first `}` outside a quoted value.
fn closing_brace(text: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (position, character) in text.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(position),
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// A cluster of real nodes
// ---------------------------------------------------------------------------------------------

/// Shards of a test cluster. Smaller than the production default (256) so a cluster declares
/// its quorum queues, takes its leases and rebalances quickly; the rules are the same.
pub const TEST_N_SHARDS: u16 = 64;

/// How long a node may take to start and answer `/readyz`.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`TestCluster::shutdown`] lets each node take to stop.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often cluster conditions are polled.
const CLUSTER_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long tearing down a cluster's topology may take.
const TOPOLOGY_DELETE_TIMEOUT: Duration = Duration::from_secs(20);

/// How the nodes of a [`TestCluster`] are configured. `None` leaves the node's default.
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
    /// `log.filter` of every node.
    pub log_filter: String,
}

impl Default for ClusterSpec {
    /// [`TEST_N_SHARDS`] shards, the nodes' own heartbeat, handoff and passivation defaults
    /// (so failure detection and takeover figures are the production ones), `info` logs.
    fn default() -> Self {
        Self {
            n_shards: TEST_N_SHARDS,
            heartbeat_interval_ms_opt: None,
            missed_heartbeats_opt: None,
            handoff_timeout_ms_opt: None,
            passivate_after_idle_ms_opt: None,
            log_filter: "info".to_owned(),
        }
    }
}

/// One node of a [`TestCluster`].
pub struct ClusterNode {
    /// Its `node.id`.
    pub node_id: String,
    /// Its HTTP address.
    pub http_address: String,
    process: NodeProcess,
    running: bool,
}

/// What one running node reports about the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The node's index in the [`TestCluster`].
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

/// Real `lanmesh-node` processes forming one cluster on the test broker: a unique cluster name,
/// one SQLite file in a temporary directory shared by every node (how several nodes share
/// storage on one machine), each node's log in that directory.
///
/// Dropping it kills the nodes that still run and deletes the cluster's broker topology; when
/// the test is failing, it prints the end of every node's log first.
pub struct TestCluster {
    url: String,
    cluster_name: String,
    spec: ClusterSpec,
    directory: tempfile::TempDir,
    nodes: Vec<ClusterNode>,
    topology_deleted: bool,
}

impl TestCluster {
    /// Starts `n_nodes` nodes and waits until each answers `/readyz` (connected to the broker).
    /// It does not wait for the cluster to settle: see [`TestCluster::wait_settled`].
    pub async fn start(
        url: &str,
        test_name: &str,
        spec: ClusterSpec,
        n_nodes: usize,
    ) -> anyhow::Result<Self> {
        let mut cluster = Self {
            url: url.to_owned(),
            cluster_name: unique_cluster_name(test_name),
            spec,
            directory: tempfile::tempdir().context("creating the cluster directory")?,
            nodes: Vec::new(),
            topology_deleted: false,
        };
        for _ in 0..n_nodes {
            cluster.spawn_node()?;
        }
        for index in 0..cluster.nodes.len() {
            cluster.wait_ready(index).await?;
        }
        Ok(cluster)
    }

    /// Starts one more node and waits until it answers `/readyz`; returns its index.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let index = self.spawn_node()?;
        self.wait_ready(index).await?;
        Ok(index)
    }

    fn spawn_node(&mut self) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let node_id = format!("node-{}", index + 1);
        let working_dir = self.directory.path().join(&node_id);
        std::fs::create_dir_all(&working_dir)
            .with_context(|| format!("creating {}", working_dir.display()))?;
        let path_text = |path: PathBuf| path.to_string_lossy().into_owned();
        let mut env: Vec<(&str, String)> = vec![
            ("LANMESH__NODE__ID", node_id.clone()),
            (
                "LANMESH__NODE__DATA_DIR",
                path_text(working_dir.join("data")),
            ),
            ("LANMESH__CLUSTER__NAME", self.cluster_name.clone()),
            ("LANMESH__CLUSTER__N_SHARDS", self.spec.n_shards.to_string()),
            ("LANMESH__BUS__AMQP_URL", self.url.clone()),
            (
                "LANMESH__STORAGE__SQLITE__PATH",
                path_text(self.directory.path().join("cluster.db")),
            ),
            ("LANMESH__LOG__FILTER", self.spec.log_filter.clone()),
        ];
        let optional = [
            (
                "LANMESH__CLUSTER__HEARTBEAT_INTERVAL_MS",
                self.spec.heartbeat_interval_ms_opt,
            ),
            (
                "LANMESH__CLUSTER__MISSED_HEARTBEATS",
                self.spec.missed_heartbeats_opt.map(u64::from),
            ),
            (
                "LANMESH__CLUSTER__HANDOFF_TIMEOUT_MS",
                self.spec.handoff_timeout_ms_opt,
            ),
            (
                "LANMESH__HOST__PASSIVATE_AFTER_IDLE_MS",
                self.spec.passivate_after_idle_ms_opt,
            ),
        ];
        for (key, value_opt) in optional {
            if let Some(value) = value_opt {
                env.push((key, value.to_string()));
            }
        }
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        let log_path = self.directory.path().join(format!("{node_id}.log"));
        let process = NodeProcess::start_logging_to(&working_dir, &env, &log_path)?;
        self.nodes.push(ClusterNode {
            node_id,
            http_address: process.http_address.clone(),
            process,
            running: true,
        });
        Ok(index)
    }

    async fn wait_ready(&mut self, index: usize) -> anyhow::Result<()> {
        let node = self.node_mut(index)?;
        let ready = node
            .process
            .wait_for_status("/readyz", 200, NODE_READY_TIMEOUT)
            .await;
        if let Err(error) = ready {
            let tail = log_tail(&node.process, 40);
            bail!("{} not ready: {error:#}\n{tail}", node.node_id);
        }
        Ok(())
    }

    /// The broker URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's name (prefix of its queues and exchanges).
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The number of shards.
    pub fn n_shards(&self) -> u16 {
        self.spec.n_shards
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

    /// Indexes of the nodes not killed or terminated by the test.
    pub fn running_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|index| self.nodes.get(*index).is_some_and(|node| node.running))
            .collect()
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

    /// Scrapes every running node once. Fails at once if a node the test did not stop has
    /// exited (with the end of its log).
    pub async fn view(&mut self) -> anyhow::Result<ClusterView> {
        let mut view = ClusterView::default();
        for index in self.running_nodes() {
            let node = self.node_mut(index)?;
            if let Some(status) = node.process.try_exit_status()? {
                let tail = log_tail(&node.process, 40);
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
                    "{what}: not within {timeout:?}; last seen {view}\n{}",
                    self.log_tails(30)
                );
            }
            tokio::time::sleep(CLUSTER_POLL_INTERVAL).await;
        }
    }

    /// Waits until the cluster is settled (see [`ClusterView::is_settled`]) over the running
    /// nodes.
    pub async fn wait_settled(&mut self, timeout: Duration) -> anyhow::Result<ClusterView> {
        let n_shards = self.spec.n_shards;
        let n_running = self.running_nodes().len();
        self.wait_for(
            &format!("cluster settled with {n_running} nodes and {n_shards} shards"),
            timeout,
            |view| view.is_settled(n_shards),
        )
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
            let n_owned = rendezvous::shards_of(&node_id, &candidates, self.spec.n_shards).len();
            shares.insert(index, n_owned as f64);
        }
        Ok(shares)
    }

    /// Waits until the cluster is settled and every running node owns exactly its rendezvous
    /// share: the moves that the last join or leave called for are all done.
    pub async fn wait_balanced(&mut self, timeout: Duration) -> anyhow::Result<ClusterView> {
        let n_shards = self.spec.n_shards;
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

    /// Kills node `index` with SIGKILL: a crash, no handoff.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<ExitStatus> {
        let node = self.node_mut(index)?;
        node.running = false;
        node.process.kill()
    }

    /// Sends SIGTERM to node `index` (a graceful leave) and waits for it to exit, at most
    /// `timeout`.
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

    /// The last `n_lines` of every node's log, labelled.
    pub fn log_tails(&self, n_lines: usize) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "--- {} ---\n{}",
                    node.node_id,
                    log_tail(&node.process, n_lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every running node with SIGTERM and deletes the cluster's broker topology.
    /// Fails when a node does not exit 0 in time (after the topology is deleted all the same).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for index in self.running_nodes() {
            match self.terminate(index, NODE_STOP_TIMEOUT).await {
                Ok(status) if status.success() => {}
                Ok(status) => problems.push(format!("node #{index} exited with {status}")),
                Err(error) => problems.push(format!("node #{index}: {error:#}")),
            }
        }
        let deleted =
            delete_cluster_topology(&self.url, &self.cluster_name, self.spec.n_shards).await;
        self.topology_deleted = true;
        deleted?;
        if !problems.is_empty() {
            bail!(
                "cluster shutdown: {}\n{}",
                problems.join("; "),
                self.log_tails(30)
            );
        }
        Ok(())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "cluster {} (directory {}), end of each node's log:\n{}",
                self.cluster_name,
                self.directory.path().display(),
                self.log_tails(40)
            );
        }
        for node in &mut self.nodes {
            let _ = node.process.kill();
        }
        if self.topology_deleted {
            return;
        }
        // Drop cannot await, and may run inside a runtime: delete from a thread of its own.
        let url = self.url.clone();
        let cluster_name = self.cluster_name.clone();
        let n_shards = self.spec.n_shards;
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

/// The last `n_lines` lines of a node's log file (empty for a node whose output is piped).
fn log_tail(process: &NodeProcess, n_lines: usize) -> String {
    let Some(text) = process
        .log_path()
        .and_then(|path| std::fs::read_to_string(path).ok())
    else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.len().saturating_sub(n_lines);
    lines.get(first..).unwrap_or_default().join("\n")
}

/// The transport settings of a test client of cluster `cluster_name` (not a cluster member).
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

// ---------------------------------------------------------------------------------------------
// Talking to probe entities
// ---------------------------------------------------------------------------------------------

/// Request policy of probe clients: a reply may take a takeover's worth of time.
pub const PROBE_REQUEST_POLICY: RequestPolicy = RequestPolicy {
    attempt_timeout: Duration::from_secs(2),
    total_timeout: Duration::from_secs(60),
};

/// A client of a cluster's probe entities: a bus participant with its own inbox, not a cluster
/// member. Each request goes to the probe's shard queue; a retry reuses the `msg_id`, so the
/// probe applies it once.
pub struct ProbeClient {
    client_id: NodeId,
    transport: AmqpTransport,
    requester: Arc<Requester>,
    shard_map: ShardMap,
    policy: RequestPolicy,
    inbox: std::sync::Mutex<Option<Subscription>>,
}

impl ProbeClient {
    /// Connects to cluster `cluster_name` with [`PROBE_REQUEST_POLICY`] and subscribes its inbox.
    pub async fn connect(url: &str, cluster_name: &str, n_shards: u16) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let client_id = NodeId::new(format!("client-{}", suffix.get(..12).unwrap_or(&suffix)))?;
        let shard_map = ShardMap::new(n_shards).context("n_shards must be positive")?;
        let transport = AmqpTransport::start(client_amqp_config(
            url,
            cluster_name,
            n_shards,
            client_id.clone(),
        ));
        transport
            .wait_until_ready(NODE_READY_TIMEOUT)
            .await
            .context("probe client connecting")?;
        let requester = Requester::new(client_id.clone(), Arc::new(transport.clone()));
        let pushes = handler_fn(|_delivery: Delivery| async { HandlerOutcome::Ack });
        let inbox = transport
            .subscribe(
                Source::NodeInbox(client_id.clone()),
                requester.inbox_handler(pushes),
            )
            .await
            .context("subscribing the probe client's inbox")?;
        Ok(Self {
            client_id,
            transport,
            requester,
            shard_map,
            policy: PROBE_REQUEST_POLICY,
            inbox: std::sync::Mutex::new(Some(inbox)),
        })
    }

    /// Sends `request` to probe `probe_id` and decodes its reply.
    pub async fn request(
        &self,
        probe_id: &str,
        request: &ProbeRequest,
    ) -> anyhow::Result<ProbeReply> {
        let address = EntityKind::Probe.address(probe_id)?;
        let destination = Destination::Shard(self.shard_map.shard_for(&address));
        let envelope = Envelope::new(address, self.client_id.clone(), probe::encode(request)?);
        let reply = self
            .requester
            .request(&destination, envelope, &self.policy)
            .await
            .with_context(|| format!("probe {probe_id}: {request:?} to {destination}"))?;
        probe::decode::<ProbeReply>(&reply.payload)
            .with_context(|| format!("probe {probe_id}: undecodable reply to {request:?}"))
    }

    /// Sends `Record { seq }`; returns the probe's `n_applied`.
    pub async fn record(&self, probe_id: &str, seq: u64) -> anyhow::Result<u64> {
        match self
            .request(probe_id, &ProbeRequest::Record { seq })
            .await?
        {
            ProbeReply::Recorded { n_applied } => Ok(n_applied),
            other => bail!("probe {probe_id}: Record {{ seq: {seq} }} answered {other:?}"),
        }
    }

    /// Asks probe `probe_id` to send one bump to probe `target_id`.
    pub async fn relay(&self, probe_id: &str, target_id: &str) -> anyhow::Result<()> {
        let request = ProbeRequest::Relay {
            target_id: target_id.to_owned(),
        };
        match self.request(probe_id, &request).await? {
            ProbeReply::Relayed => Ok(()),
            other => bail!("probe {probe_id}: {request:?} answered {other:?}"),
        }
    }

    /// What probe `probe_id` recorded.
    pub async fn inspect(&self, probe_id: &str) -> anyhow::Result<ProbeReport> {
        match self.request(probe_id, &ProbeRequest::Inspect).await? {
            ProbeReply::Report(report) => Ok(report),
            other => bail!("probe {probe_id}: Inspect answered {other:?}"),
        }
    }

    /// Cancels the inbox subscription and closes the connection.
    pub async fn close(&self) {
        let inbox_opt = self
            .inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(inbox) = inbox_opt {
            inbox.cancel().await;
        }
        self.transport.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, name: &str, expected: Option<f64>) {
        assert_eq!(metric_value(text, name), expected, "{name} in {text:?}");
    }

    const SCRAPE: &str = r#"# HELP lanmesh_shards_owned Shards this node owns.
# TYPE lanmesh_shards_owned gauge
lanmesh_shards_owned 21
# TYPE lanmesh_handoffs counter
lanmesh_handoffs_total 3
lanmesh_handoffs_created 1.7e9
# TYPE lanmesh_takeover_seconds histogram
lanmesh_takeover_seconds_sum 7.25
lanmesh_takeover_seconds_count 3
lanmesh_takeover_seconds_bucket{le="1.0"} 0
lanmesh_takeover_seconds_bucket{le="+Inf"} 3
lanmesh_build_info{version="0.1.0 {beta} \"x\""} 1
lanmesh_bus_acked_total{queue="a"} 2 1700000000
lanmesh_bus_acked_total{queue="b"} 5
lanmesh_weird NaN
# EOF
"#;

    #[test]
    fn metric_values_are_read_by_exact_name() {
        check(SCRAPE, "lanmesh_shards_owned", Some(21.0));
        check(SCRAPE, "lanmesh_handoffs_total", Some(3.0));
        check(SCRAPE, "lanmesh_handoffs", None);
        check(SCRAPE, "lanmesh_takeover_seconds_sum", Some(7.25));
        check(SCRAPE, "lanmesh_takeover_seconds_count", Some(3.0));
        check(SCRAPE, "lanmesh_takeover_seconds", None);
        check(SCRAPE, "lanmesh_build_info", Some(1.0));
        check(SCRAPE, "lanmesh_missing", None);
        check("", "lanmesh_shards_owned", None);
        check("lanmesh_shards_owned\n", "lanmesh_shards_owned", None);
    }

    #[test]
    fn label_sets_are_summed_and_quoted_braces_ignored() {
        check(SCRAPE, "lanmesh_bus_acked_total", Some(7.0));
        check(SCRAPE, "lanmesh_takeover_seconds_bucket", Some(3.0));
        assert_eq!(
            parse_sample(r#"m{a="}",b="\"}"} 4"#),
            Some(Sample {
                name: "m",
                value: 4.0
            })
        );
        assert_eq!(parse_sample(r#"m{a="unclosed} 4"#), None);
    }

    #[test]
    fn special_values_parse() {
        assert!(metric_value(SCRAPE, "lanmesh_weird").is_some_and(f64::is_nan));
        check("m +Inf\n", "m", Some(f64::INFINITY));
    }

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
}
