//! A throwaway cluster of `lanmesh-node` processes started by `lanmesh-load` itself
//! (`--spawn-nodes`): one temporary directory, one SQLite file shared by every node (how nodes
//! share storage on one machine), a unique cluster name, and just enough HTTP to read each
//! node's `/metrics` and see that the cluster settled.

use anyhow::{Context, bail};
use lanmesh_bus::NodeId;
use lanmesh_bus::amqp::AmqpConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How long a node may take to stop after SIGTERM.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the cluster's state is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalClusterSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// `cluster.name` of every node.
    pub cluster_name: String,
    /// `cluster.n_shards` of every node.
    pub n_shards: u16,
    /// How many nodes.
    pub n_nodes: usize,
    /// The `lanmesh-node` executable.
    pub node_binary: PathBuf,
}

struct LocalNode {
    node_id: String,
    http_address: String,
    child: Child,
    log_path: PathBuf,
}

/// Running node processes; dropping it kills those still running.
pub struct LocalCluster {
    settings: LocalClusterSettings,
    directory: PathBuf,
    nodes: Vec<LocalNode>,
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

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding port 0")?;
    Ok(listener.local_addr()?.port())
}

impl LocalCluster {
    /// Starts the nodes (each logging to a file in a new temporary directory) without waiting
    /// for them; see [`LocalCluster::wait_settled`].
    pub fn start(settings: LocalClusterSettings) -> anyhow::Result<Self> {
        let directory =
            std::env::temp_dir().join(format!("lanmesh-load-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let mut cluster = Self {
            settings,
            directory,
            nodes: Vec::new(),
        };
        for index in 0..cluster.settings.n_nodes {
            cluster.spawn_node(index)?;
        }
        Ok(cluster)
    }

    fn spawn_node(&mut self, index: usize) -> anyhow::Result<()> {
        let node_id = format!("load-node-{}", index + 1);
        let working_dir = self.directory.join(&node_id);
        std::fs::create_dir_all(&working_dir)
            .with_context(|| format!("creating {}", working_dir.display()))?;
        let http_address = format!("127.0.0.1:{}", free_port()?);
        let log_path = self.directory.join(format!("{node_id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let settings = &self.settings;
        let child = Command::new(&settings.node_binary)
            .current_dir(&working_dir)
            .env("LANMESH__NODE__ID", &node_id)
            .env("LANMESH__NODE__DATA_DIR", working_dir.join("data"))
            .env("LANMESH__CLUSTER__NAME", &settings.cluster_name)
            .env("LANMESH__CLUSTER__N_SHARDS", settings.n_shards.to_string())
            .env("LANMESH__HTTP__LISTEN", &http_address)
            .env("LANMESH__BUS__AMQP_URL", &settings.amqp_url)
            .env(
                "LANMESH__STORAGE__SQLITE__PATH",
                self.directory.join("cluster.db"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", settings.node_binary.display()))?;
        tracing::info!(node = %node_id, http = %http_address, pid = child.id(), "node started");
        self.nodes.push(LocalNode {
            node_id,
            http_address,
            child,
            log_path,
        });
        Ok(())
    }

    /// The directory holding the nodes' logs and the SQLite file.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Waits until every node sees all the nodes alive and together they own every shard.
    pub async fn wait_settled(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let n_nodes = self.nodes.len() as f64;
        let n_shards = f64::from(self.settings.n_shards);
        loop {
            let mut last_seen = Vec::new();
            let mut n_shards_owned = 0.0;
            let mut all_see_all = true;
            for node in &mut self.nodes {
                if let Some(status) = node.child.try_wait()? {
                    bail!(
                        "{} exited with {status}; see {}",
                        node.node_id,
                        node.log_path.display()
                    );
                }
                let (shards_opt, seen_opt) = match http_get(&node.http_address, "/metrics").await {
                    Ok((200, text)) => (
                        metric_value(&text, "lanmesh_shards_owned"),
                        metric_value(&text, "lanmesh_cluster_nodes"),
                    ),
                    _ => (None, None),
                };
                n_shards_owned += shards_opt.unwrap_or(0.0);
                all_see_all &= shards_opt.is_some() && seen_opt == Some(n_nodes);
                last_seen.push(format!(
                    "{}: shards_owned={shards_opt:?} cluster_nodes={seen_opt:?}",
                    node.node_id
                ));
            }
            if all_see_all && n_shards_owned == n_shards {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "cluster not settled within {timeout:?} (last seen: {}); logs in {}",
                    last_seen.join(", "),
                    self.directory.display()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops every node with SIGTERM, deletes the cluster's broker topology and, when
    /// `keep_logs` is false and all went well, the temporary directory.
    pub async fn stop(mut self, keep_logs: bool) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for node in &mut self.nodes {
            if let Err(error) = terminate(&mut node.child, NODE_STOP_TIMEOUT).await {
                problems.push(format!("{}: {error:#}", node.node_id));
            }
        }
        let settings = &self.settings;
        let topology = AmqpConfig {
            n_shards: settings.n_shards,
            ..AmqpConfig::new(
                &settings.amqp_url,
                &settings.cluster_name,
                NodeId::generate(),
            )
        }
        .topology();
        let connection =
            lapin::Connection::connect(&settings.amqp_url, lapin::ConnectionProperties::default())
                .await
                .context("connecting to delete the topology")?;
        let deleted = topology.delete(&connection).await;
        let _ = connection.close(200, "done".into()).await;
        deleted.context("deleting the spawned cluster's topology")?;
        if !problems.is_empty() {
            bail!(
                "nodes did not stop cleanly: {}; logs in {}",
                problems.join("; "),
                self.directory.display()
            );
        }
        if keep_logs {
            tracing::info!(directory = %self.directory.display(), "node logs kept");
        } else {
            std::fs::remove_dir_all(&self.directory)
                .with_context(|| format!("removing {}", self.directory.display()))?;
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if matches!(node.child.try_wait(), Ok(None)) {
                let _ = node.child.kill();
                let _ = node.child.wait();
            }
        }
    }
}

/// Sends SIGTERM and waits for a zero exit status, at most `timeout` (then SIGKILL).
async fn terminate(child: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    if let Some(status) = child.try_wait()? {
        bail!("had already exited with {status}");
    }
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
    anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "exited with {status}");
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running {timeout:?} after SIGTERM; killed");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: `(status, body)`.
async fn http_get(address: &str, path: &str) -> anyhow::Result<(u16, String)> {
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

/// The value of the sample named exactly `name` in OpenMetrics text, summed over its label
/// sets; `None` when there is none. Label values holding `}` or spaces are not expected here.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (sample_name, rest) = match line.split_once('{') {
                Some((sample_name, labels_and_value)) => {
                    (sample_name, labels_and_value.split_once('}')?.1)
                }
                None => line.split_once(' ')?,
            };
            (sample_name == name)
                .then(|| rest.split_whitespace().next()?.parse::<f64>().ok())
                .flatten()
        })
        .reduce(|total, value| total + value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_read_by_exact_name() {
        let text = "# TYPE lanmesh_shards_owned gauge\nlanmesh_shards_owned 21\n\
                    lanmesh_shards_owned_x 5\nm{a=\"1\"} 2 1700000000\nm{a=\"2\"} 3\n# EOF\n";
        assert_eq!(metric_value(text, "lanmesh_shards_owned"), Some(21.0));
        assert_eq!(metric_value(text, "m"), Some(5.0));
        assert_eq!(metric_value(text, "lanmesh_cluster_nodes"), None);
    }
}
