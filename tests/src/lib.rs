//! The integration harness: finding the broker, naming things uniquely per test, finding and
//! starting the `lanmesh-node` binary, and running a whole cluster of nodes
//! ([`TestCluster`]). Driving nodes from outside (processes, HTTP, `/metrics`, probe clients)
//! is shared with `lanmesh-load` and lives in `lanmesh::load`.
//!
//! Environment (all optional):
//! - `LANMESH_TEST_AMQP_URL`: the RabbitMQ to test against. Unset: broker tests print why they
//!   skip and pass, unless `LANMESH_TEST_REQUIRE_BROKER=1` (set by CI) makes that a failure.
//! - `LANMESH_NODE_BIN`, `LANMESH_CLI_BIN`: paths of the `lanmesh-node` and `lanmesh`
//!   binaries; by default they are looked up next to the test binary in the cargo target
//!   directory.

mod test_cluster;

pub use test_cluster::{PROBE_REQUEST_POLICY, TEST_N_SHARDS, TestCluster};

use anyhow::{Context, bail};
use lanmesh::load::node_process::NodeProcess;
use std::path::{Path, PathBuf};

/// Variable naming the broker under test.
pub const AMQP_URL_VAR: &str = "LANMESH_TEST_AMQP_URL";
/// Variable that turns a missing broker into a failure.
pub const REQUIRE_BROKER_VAR: &str = "LANMESH_TEST_REQUIRE_BROKER";
/// Variable overriding the node binary's path.
pub const NODE_BIN_VAR: &str = "LANMESH_NODE_BIN";
/// Variable overriding the `lanmesh` CLI binary's path.
pub const CLI_BIN_VAR: &str = "LANMESH_CLI_BIN";

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
    workspace_binary("lanmesh-node", NODE_BIN_VAR)
}

/// The `lanmesh` command-line binary (operator tools, the reference partner site).
pub fn cli_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("lanmesh", CLI_BIN_VAR)
}

/// The binary `name` of this workspace: `override_var` when set, else the one built next to
/// this test binary.
fn workspace_binary(name: &str, override_var: &str) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(override_var) {
        return Ok(PathBuf::from(path));
    }
    let test_binary = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/it-<hash> → target/<profile>/<name>
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target directory")?;
    let candidate = profile_dir.join(name);
    if !candidate.exists() {
        bail!(
            "{} not found: build it first (`cargo build -p lanmesh --bins`; the README's test command does) or set {override_var}",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// Starts [`node_binary`] in `working_dir` with `LANMESH__…` variables from `env`, its output
/// in pipes: see [`NodeProcess::start`].
pub fn start_node(working_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<NodeProcess> {
    NodeProcess::start(&node_binary()?, working_dir, env)
}
