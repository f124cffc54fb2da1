//! The integration harness: finding the broker, naming things uniquely per test, running real
//! `lanmesh-node` processes and talking HTTP to them.
//!
//! Environment (all optional):
//! - `LANMESH_TEST_AMQP_URL`: the RabbitMQ to test against. Unset: broker tests print why they
//!   skip and pass, unless `LANMESH_TEST_REQUIRE_BROKER=1` (set by CI) makes that a failure.
//! - `LANMESH_NODE_BIN`: path of the `lanmesh-node` binary; by default it is looked up next to
//!   the test binary in the cargo target directory.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
}

impl NodeProcess {
    /// Starts `lanmesh-node` in `working_dir` with `LANMESH__…` variables from `env` (and
    /// `http.listen` on a free port unless `env` sets it), capturing its output.
    pub fn start(working_dir: &std::path::Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let http_address = match env.iter().find(|(key, _)| *key == "LANMESH__HTTP__LISTEN") {
            Some((_, address)) => (*address).to_owned(),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let mut command = Command::new(node_binary()?);
        command
            .current_dir(working_dir)
            .env("LANMESH__HTTP__LISTEN", &http_address)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().context("spawning lanmesh-node")?;
        Ok(Self {
            child,
            http_address,
        })
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
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        self.wait_exit(timeout).await
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
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

    /// Everything the process wrote to stderr (call after it exited).
    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(stderr) = self.child.stderr.as_mut() {
            let _ = std::io::Read::read_to_string(stderr, &mut text);
        }
        text
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
