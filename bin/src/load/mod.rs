//! Load scenarios and benchmarks run by `lanmesh-load`. Each reports its figures next to a
//! baseline measured in the same run.
//!
//! Besides the scenarios, the pieces that drive real nodes from outside: [`node_process`],
//! [`local_cluster`], [`probe_client`], [`http_client`] and [`metrics_text`]. The integration
//! suite (`lanmesh-tests`) is built on them too. [`ws_client`] speaks the client protocol on
//! a node's `/ws`.

pub mod bus;
pub mod campaigns;
pub mod entities;
pub mod http_client;
pub mod local_cluster;
pub mod metrics_text;
pub mod node_process;
pub mod presence;
pub mod probe_client;
pub mod raw_lapin;
pub mod shares;
pub mod venues;
pub mod ws_client;

use anyhow::Context;
use serde::Serialize;
use std::time::Duration;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Messages moved end to end.
    pub n_messages: u64,
    /// Wall time from the first publish to the last acknowledgement.
    pub elapsed_seconds: f64,
    /// `n_messages / elapsed_seconds`.
    pub messages_per_second: f64,
}

impl Measurement {
    /// A measurement of `n_messages` in `elapsed`.
    pub fn new(name: impl Into<String>, n_messages: u64, elapsed: Duration) -> Self {
        let elapsed_seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        Self {
            name: name.into(),
            n_messages,
            elapsed_seconds,
            messages_per_second: n_messages as f64 / elapsed_seconds,
        }
    }
}

/// The median of several measurements of the same thing, by throughput.
pub fn median(mut rounds: Vec<Measurement>) -> Option<Measurement> {
    rounds.sort_by(|left, right| {
        left.messages_per_second
            .total_cmp(&right.messages_per_second)
    });
    let middle = rounds.len() / 2;
    rounds.into_iter().nth(middle)
}

/// One measured request/reply figure: closed-loop workers, each with one request outstanding.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyMeasurement {
    /// What was measured.
    pub name: String,
    /// Requests answered.
    pub n_requests: u64,
    /// Requests that got no reply or failed (not in the figures below).
    pub n_errors: u64,
    /// Wall time from the first request to the last reply.
    pub elapsed_seconds: f64,
    /// `n_requests / elapsed_seconds`.
    pub requests_per_second: f64,
    /// Median latency, request sent to reply received, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Slowest request in milliseconds.
    pub max_ms: f64,
}

impl LatencyMeasurement {
    /// The figures of answered requests with `latencies`, `n_errors` failures, in `elapsed`.
    pub fn new(
        name: impl Into<String>,
        mut latencies: Vec<Duration>,
        n_errors: u64,
        elapsed: Duration,
    ) -> Self {
        latencies.sort_unstable();
        let elapsed_seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let n_requests = latencies.len() as u64;
        let milliseconds = |duration: Duration| duration.as_secs_f64() * 1_000.0;
        Self {
            name: name.into(),
            n_requests,
            n_errors,
            elapsed_seconds,
            requests_per_second: n_requests as f64 / elapsed_seconds,
            p50_ms: milliseconds(percentile(&latencies, 0.50)),
            p99_ms: milliseconds(percentile(&latencies, 0.99)),
            max_ms: milliseconds(latencies.last().copied().unwrap_or_default()),
        }
    }
}

/// The nearest-rank percentile of `sorted` (`fraction` in 0..=1); zero when it is empty.
pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// How long a spawned node may take to stop after SIGTERM.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `n_nodes` nodes of cluster `cluster_name` configured by `spec` in a new temporary
/// directory (logs and the shared SQLite file), without waiting for them.
pub fn spawn_local_cluster(
    amqp_url: &str,
    cluster_name: &str,
    spec: local_cluster::ClusterSpec,
    n_nodes: usize,
    node_binary_opt: Option<&std::path::Path>,
) -> anyhow::Result<local_cluster::LocalCluster> {
    let node_binary = match node_binary_opt {
        Some(path) => path.to_path_buf(),
        None => local_cluster::node_binary_beside_current_exe()?,
    };
    let directory =
        std::env::temp_dir().join(format!("lanmesh-load-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    local_cluster::LocalCluster::start(
        local_cluster::LocalClusterSettings {
            amqp_url: amqp_url.to_owned(),
            cluster_name: cluster_name.to_owned(),
            node_binary,
            directory,
            node_id_prefix: "load-node".to_owned(),
            spec,
        },
        n_nodes,
    )
}

/// Stops spawned nodes with SIGTERM and deletes the cluster's broker topology; removes the
/// temporary directory unless `keep_logs` (a failed run), in which case it says where it is.
pub async fn stop_spawned(
    mut cluster: local_cluster::LocalCluster,
    keep_logs: bool,
) -> anyhow::Result<()> {
    cluster.stop(NODE_STOP_TIMEOUT).await?;
    let directory = cluster.directory().to_path_buf();
    if keep_logs {
        tracing::error!(logs = %directory.display(), "run failed; node logs kept");
    } else {
        std::fs::remove_dir_all(&directory)
            .with_context(|| format!("removing {}", directory.display()))?;
    }
    Ok(())
}

/// Starts `n_nodes` nodes of cluster `cluster_name` as [`spawn_local_cluster`] does, runs
/// `measure` on them, then stops them as [`stop_spawned`] does, whether `measure` succeeded or
/// not (keeping the nodes' logs when it failed).
pub async fn measure_on_spawned<T>(
    amqp_url: &str,
    cluster_name: &str,
    spec: local_cluster::ClusterSpec,
    (n_nodes, node_binary_opt): (usize, Option<&std::path::Path>),
    measure: impl AsyncFnOnce(&mut local_cluster::LocalCluster) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut cluster = spawn_local_cluster(amqp_url, cluster_name, spec, n_nodes, node_binary_opt)?;
    let measured = measure(&mut cluster).await;
    stop_spawned(cluster, measured.is_err()).await?;
    measured
}

/// The node settings a load scenario starts from: cheap argon2id (only set-up hashes
/// passwords), edge limits high enough never to be what is measured, a long request timeout and
/// warnings-only logs. A scenario adds its own after these.
pub fn load_node_env() -> Vec<(String, String)> {
    [
        ("LANMESH__AUTH__ARGON2_MEMORY_KIB", "64"),
        ("LANMESH__AUTH__ARGON2_ITERATIONS", "1"),
        ("LANMESH__AUTH__LOGINS_PER_MINUTE_PER_ADDRESS", "1000000"),
        ("LANMESH__EDGE__REQUESTS_PER_SECOND", "100000"),
        ("LANMESH__EDGE__REQUEST_BURST", "100000"),
        ("LANMESH__EDGE__REQUEST_TIMEOUT_MS", "60000"),
        ("LANMESH__LOG__FILTER", "warn"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(latencies_ms: &[u64], fraction: f64, expected_ms: u64) {
        let sorted: Vec<Duration> = latencies_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        assert_eq!(
            percentile(&sorted, fraction),
            Duration::from_millis(expected_ms),
            "{fraction} of {latencies_ms:?}"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        check(&[], 0.5, 0);
        check(&[7], 0.5, 7);
        check(&[7], 0.99, 7);
        check(&[1, 2, 3, 4], 0.5, 2);
        check(&[1, 2, 3, 4], 0.99, 4);
        let hundred: Vec<u64> = (1..=100).collect();
        check(&hundred, 0.5, 50);
        check(&hundred, 0.99, 99);
        check(&hundred, 1.0, 100);
        check(&hundred, 0.0, 1);
    }

    #[test]
    fn latency_figures_sort_their_input() {
        let measurement = LatencyMeasurement::new(
            "x",
            vec![
                Duration::from_millis(30),
                Duration::from_millis(10),
                Duration::from_millis(20),
            ],
            1,
            Duration::from_secs(2),
        );
        assert_eq!(measurement.n_requests, 3);
        assert_eq!(measurement.n_errors, 1);
        assert!((measurement.requests_per_second - 1.5).abs() < 1e-9);
        assert!((measurement.p50_ms - 20.0).abs() < 1e-9);
        assert!((measurement.max_ms - 30.0).abs() < 1e-9);
    }
}
