//! `lanmesh-node` as a real process: embedded default, configuration errors, RabbitMQ mode,
//! graceful shutdown.

use crate::amqp_conformance::delete_cluster;
use lanmesh_tests::{NodeProcess, http_get};
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn starts_with_no_configuration_and_stops_on_sigterm() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut node = NodeProcess::start(directory.path(), &[]).expect("spawn");
    assert_eq!(
        node.wait_for_status("/healthz", 200, START_TIMEOUT)
            .await
            .expect("healthz"),
        "ok\n"
    );
    let (status, body) = http_get(&node.http_address, "/readyz")
        .await
        .expect("readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, metrics) = http_get(&node.http_address, "/metrics")
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("lanmesh_bus_connected 1"), "{metrics}");
    assert!(metrics.contains("lanmesh_build_info{version="), "{metrics}");
    let (status, _) = http_get(&node.http_address, "/nope").await.expect("404");
    assert_eq!(status, 404);

    let node_id =
        std::fs::read_to_string(directory.path().join("data/node-id")).expect("node id kept");
    assert!(node_id.trim().starts_with("node-"), "{node_id:?}");
    assert!(
        directory.path().join("data/lanmesh.db").exists(),
        "sqlite file under ./data"
    );

    let status = node
        .terminate(STOP_TIMEOUT)
        .await
        .expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
    let log = node.stderr();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
}

async fn refused(env: &[(&str, &str)], expected_fragments: &[&str]) {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut node = NodeProcess::start(directory.path(), env).expect("spawn");
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
    let directory = tempfile::tempdir().expect("tempdir");
    let mut node = NodeProcess::start(
        directory.path(),
        &[
            ("LANMESH__BUS__AMQP_URL", url.as_str()),
            ("LANMESH__CLUSTER__NAME", cluster_name.as_str()),
            ("LANMESH__CLUSTER__N_SHARDS", "4"),
            ("LANMESH__NODE__ID", "it-node-1"),
        ],
    )
    .expect("spawn");
    node.wait_for_status("/readyz", 200, START_TIMEOUT)
        .await
        .expect("ready once connected");
    let (_, metrics) = http_get(&node.http_address, "/metrics")
        .await
        .expect("metrics");
    assert!(metrics.contains("lanmesh_bus_connected 1"), "{metrics}");
    let status = node
        .terminate(STOP_TIMEOUT)
        .await
        .expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
    let log = node.stderr();
    assert!(
        !log.contains("guest:guest"),
        "the broker password must not be logged: {log}"
    );
    delete_cluster(&url, &cluster_name, 4).await;
}

#[tokio::test]
async fn unreachable_broker_keeps_node_alive_but_not_ready() {
    let directory = tempfile::tempdir().expect("tempdir");
    let port = lanmesh_tests::free_port().expect("port");
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let mut node = NodeProcess::start(
        directory.path(),
        &[
            ("LANMESH__BUS__AMQP_URL", url.as_str()),
            ("LANMESH__CLUSTER__N_SHARDS", "2"),
        ],
    )
    .expect("spawn");
    node.wait_for_status("/healthz", 200, START_TIMEOUT)
        .await
        .expect("alive");
    let (status, body) = http_get(&node.http_address, "/readyz")
        .await
        .expect("readyz");
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: message bus not connected\n")
    );
    let status = node
        .terminate(STOP_TIMEOUT)
        .await
        .expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
}
