//! `lanmesh-node` as a real process: embedded default, configuration errors, RabbitMQ mode,
//! graceful shutdown.

use crate::amqp_conformance::delete_cluster;
use lanmesh::load::http_client::http_get;
use lanmesh::load::node_process::{NodeProcess, free_port};
use lanmesh_tests::start_node;
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A node started with `env` in a temporary directory of its own, once `path` answers 200;
/// with the directory and that answer's body.
async fn start_answering(
    env: &[(&str, &str)],
    path: &str,
) -> (tempfile::TempDir, NodeProcess, String) {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut node = start_node(directory.path(), env).expect("spawn");
    let body = node
        .wait_for_status(path, 200, START_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{path} answers 200: {error:#}"));
    (directory, node, body)
}

/// `GET path` on `node`: `(status, body)`.
async fn get(node: &NodeProcess, path: &str) -> (u16, String) {
    http_get(&node.http_address, path)
        .await
        .unwrap_or_else(|error| panic!("GET {path}: {error:#}"))
}

/// Stops `node` with SIGTERM, asserts that it exits 0 in time, and returns what it logged.
async fn stop_cleanly(node: &mut NodeProcess) -> String {
    let status = node
        .terminate(STOP_TIMEOUT)
        .await
        .expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
    node.stderr()
}

#[tokio::test]
async fn starts_with_no_configuration_and_stops_on_sigterm() {
    let (directory, mut node, health) = start_answering(&[], "/healthz").await;
    assert_eq!(health, "ok\n");
    let (status, body) = get(&node, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, metrics) = get(&node, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("lanmesh_bus_connected 1"), "{metrics}");
    assert!(metrics.contains("lanmesh_build_info{version="), "{metrics}");
    let (status, _) = get(&node, "/nope").await;
    assert_eq!(status, 404);

    let node_id =
        std::fs::read_to_string(directory.path().join("data/node-id")).expect("node id kept");
    assert!(node_id.trim().starts_with("node-"), "{node_id:?}");
    assert!(
        directory.path().join("data/lanmesh.db").exists(),
        "sqlite file under ./data"
    );

    let log = stop_cleanly(&mut node).await;
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
}

async fn refused(env: &[(&str, &str)], expected_fragments: &[&str]) {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut node = start_node(directory.path(), env).expect("spawn");
    let status = node.wait_exit(STOP_TIMEOUT).await.expect("exits by itself");
    assert_eq!(status.code(), Some(78), "{env:?}: exit status {status}");
    let message = node.stderr();
    for fragment in expected_fragments {
        assert!(
            message.contains(fragment),
            "{env:?}: {message:?} lacks {fragment:?}"
        );
    }
}

#[tokio::test]
async fn bad_configuration_exits_naming_key_and_problem() {
    refused(
        &[("LANMESH__HTTP__LISTEN", "not-an-address")],
        &["http.listen", "not a socket address"],
    )
    .await;
    refused(
        &[("LANMESH__BUS__AMQP_URL", "http://user:secret@broker")],
        &["bus.amqp_url", "not an AMQP URL"],
    )
    .await;
    refused(
        &[("LANMESH__CLUSTER__N_SHARDS", "0")],
        &["cluster.n_shards"],
    )
    .await;
    refused(
        &[("LANMESH__BUS__PREFETH", "5")],
        &["unknown field `prefeth`"],
    )
    .await;
    refused(
        &[("LANMESH__STORAGE__SQLITE__PATH", "")],
        &["storage.sqlite.path"],
    )
    .await;
}

#[tokio::test]
async fn bad_configuration_file_is_refused() {
    let directory = tempfile::tempdir().expect("tempdir");
    let file = directory.path().join("node.toml");
    std::fs::write(&file, "[http]\nlisten = 7070\n[bogus]\n").expect("write");
    let mut command = std::process::Command::new(lanmesh_tests::node_binary().expect("binary"));
    let output = command
        .current_dir(directory.path())
        .arg("--config")
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(78));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("cannot load configuration"), "{message}");
}

#[tokio::test]
async fn joins_rabbitmq_and_is_ready_while_connected() {
    let test_name = "joins_rabbitmq_and_is_ready_while_connected";
    let Some(url) = lanmesh_tests::broker_url_or_skip(test_name) else {
        return;
    };
    let cluster_name = lanmesh_tests::unique_cluster_name(test_name);
    let env = [
        ("LANMESH__BUS__AMQP_URL", url.as_str()),
        ("LANMESH__CLUSTER__NAME", cluster_name.as_str()),
        ("LANMESH__CLUSTER__N_SHARDS", "4"),
        ("LANMESH__NODE__ID", "it-node-1"),
    ];
    // Ready once connected.
    let (_directory, mut node, _) = start_answering(&env, "/readyz").await;
    let (_, metrics) = get(&node, "/metrics").await;
    assert!(metrics.contains("lanmesh_bus_connected 1"), "{metrics}");
    let log = stop_cleanly(&mut node).await;
    assert!(
        !log.contains("guest:guest"),
        "the broker password must not be logged: {log}"
    );
    delete_cluster(&url, &cluster_name, 4).await;
}

#[tokio::test]
async fn unreachable_broker_keeps_node_alive_but_not_ready() {
    let port = free_port().expect("port");
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let env = [
        ("LANMESH__BUS__AMQP_URL", url.as_str()),
        ("LANMESH__CLUSTER__N_SHARDS", "2"),
    ];
    // Alive, though not connected.
    let (_directory, mut node, _) = start_answering(&env, "/healthz").await;
    let (status, body) = get(&node, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: message bus not connected\n")
    );
    stop_cleanly(&mut node).await;
}
