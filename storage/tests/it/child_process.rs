//! Re-running this test binary as a child process in a given role, so tests can kill or
//! de-privilege a writer without a separate binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Selects the child role of a test (unset in the parent).
pub const CHILD_ROLE_VAR: &str = "LANMESH_STORAGE_TEST_CHILD_ROLE";
/// The database path the child works on.
pub const CHILD_DB_VAR: &str = "LANMESH_STORAGE_TEST_CHILD_DB";

/// The database of this process when it runs as a child in `role`, `None` otherwise.
///
/// In a child, it also ends the test harness's "test name ..." line, so that every line the
/// child prints afterwards starts cleanly.
pub fn child_role(role: &str) -> Option<PathBuf> {
    match (
        std::env::var(CHILD_ROLE_VAR),
        std::env::var_os(CHILD_DB_VAR),
    ) {
        (Ok(found), Some(path)) if found == role => {
            println!();
            Some(PathBuf::from(path))
        }
        _ => None,
    }
}

/// Arguments making the test harness run exactly `test_name`, printing straight to stdout.
pub fn exact_test_args(test_name: &str) -> [&str; 4] {
    ["--exact", test_name, "--nocapture", "--test-threads=1"]
}

/// A command re-running this test binary for exactly `test_name` in `role` on `database`.
pub fn child_command(test_name: &str, role: &str, database: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current test binary"));
    command
        .args(exact_test_args(test_name))
        .env(CHILD_ROLE_VAR, role)
        .env(CHILD_DB_VAR, database)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// Lines a child prints, read on a separate thread so the parent can wait with a deadline.
pub struct ChildLines {
    receiver: Receiver<String>,
    deadline: Instant,
}

/// What waiting for the next line produced.
pub enum NextLine {
    Line(String),
    /// The child closed its stdout (it exited or was killed).
    End,
    /// The deadline passed first.
    TimedOut,
}

impl ChildLines {
    /// Starts reading `child`'s stdout; every wait ends at most `timeout` from now.
    pub fn start(child: &mut Child, timeout: Duration) -> Self {
        let stdout = child.stdout.take().expect("child stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            receiver,
            deadline: Instant::now() + timeout,
        }
    }

    /// Waits for the next line, the end of output, or the deadline.
    pub fn next(&self) -> NextLine {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        match self.receiver.recv_timeout(remaining) {
            Ok(line) => NextLine::Line(line),
            Err(RecvTimeoutError::Disconnected) => NextLine::End,
            Err(RecvTimeoutError::Timeout) => NextLine::TimedOut,
        }
    }
}
