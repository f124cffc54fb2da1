//! One `lanmesh-node` child process, configured through `LANMESH__…` variables, with its HTTP
//! address, its output (in pipes or a log file) and the ways it can end: SIGTERM (a graceful
//! leave), SIGKILL (a crash), or by itself. `lanmesh-load --spawn-nodes` and the integration
//! suite both start nodes through it.

use crate::load::http_client::http_get;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The variable that sets a node's `http.listen`.
const HTTP_LISTEN_VAR: &str = "LANMESH__HTTP__LISTEN";
/// How often [`NodeProcess::wait_for_status`] asks again.
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often [`NodeProcess::wait_exit`] looks whether the process exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A free TCP port on 127.0.0.1 (bound and released; good enough for nodes on one machine).
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
    /// Starts `binary` in `working_dir` with `LANMESH__…` variables from `env` (and
    /// `http.listen` on a free port unless `env` sets it), capturing its output in pipes.
    ///
    /// Nothing reads the pipes until [`NodeProcess::stderr`]: use this for short runs only. A
    /// node that logs more than a pipe holds blocks; see [`NodeProcess::start_logging_to`].
    pub fn start(binary: &Path, working_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn(binary, working_dir, env, None)
    }

    /// Like [`NodeProcess::start`], but stdout and stderr are appended to `log_path`, so a
    /// long-running node never blocks on a full pipe.
    pub fn start_logging_to(
        binary: &Path,
        working_dir: &Path,
        env: &[(&str, &str)],
        log_path: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn(binary, working_dir, env, Some(log_path))
    }

    fn spawn(
        binary: &Path,
        working_dir: &Path,
        env: &[(&str, &str)],
        log_path_opt: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let http_address = match env.iter().find(|(key, _)| *key == HTTP_LISTEN_VAR) {
            Some((_, address)) => (*address).to_owned(),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let mut command = Command::new(binary);
        command
            .current_dir(working_dir)
            .env(HTTP_LISTEN_VAR, &http_address)
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
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
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
            tokio::time::sleep(STATUS_POLL_INTERVAL).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status, at most `timeout`; the status at once if
    /// the process had already exited.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
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
            tokio::time::sleep(EXIT_POLL_INTERVAL).await;
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

    /// The last `n_lines` lines of the log file (empty for a node whose output is piped).
    pub fn log_tail(&self, n_lines: usize) -> String {
        let Some(text) = self
            .log_path()
            .and_then(|path| std::fs::read_to_string(path).ok())
        else {
            return String::new();
        };
        let lines: Vec<&str> = text.lines().collect();
        let first = lines.len().saturating_sub(n_lines);
        lines.get(first..).unwrap_or_default().join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
