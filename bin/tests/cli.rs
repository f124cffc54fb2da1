//! The binaries' command lines. (Having integration tests here also makes cargo build the real
//! executables, which the workspace integration suite starts as processes.)
#![allow(
    clippy::expect_used,
    reason = "a binary that does not run fails the test"
)]

use std::process::Command;

fn run(binary: &str, arguments: &[&str]) -> (bool, String) {
    let output = Command::new(binary)
        .args(arguments)
        .output()
        .expect("binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn node_reports_its_version_and_options() {
    let (ok, text) = run(env!("CARGO_BIN_EXE_lanmesh-node"), &["--version"]);
    assert!(ok);
    assert_eq!(
        text.trim(),
        format!("lanmesh-node {}", env!("CARGO_PKG_VERSION"))
    );
    let (ok, text) = run(env!("CARGO_BIN_EXE_lanmesh-node"), &["--help"]);
    assert!(ok);
    assert!(text.contains("--config <FILE>"), "{text}");
    let (ok, text) = run(env!("CARGO_BIN_EXE_lanmesh-node"), &["--no-such-flag"]);
    assert!(!ok);
    assert!(text.contains("--no-such-flag"), "{text}");
}

#[test]
fn load_lists_its_scenarios() {
    let (ok, text) = run(env!("CARGO_BIN_EXE_lanmesh-load"), &["--help"]);
    assert!(ok);
    assert!(text.contains("bus"), "{text}");
}
