//! Integration suite of lanmesh-storage: one binary, a module per area, real database files.
//!
//! The ScyllaDB half of the conformance suite runs when `LANMESH_TEST_SCYLLA_URI` is set;
//! otherwise it prints why it skipped (and fails instead when `LANMESH_TEST_REQUIRE_SCYLLA=1`).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a failed expectation in the integration suite is a test failure"
)]

mod bad_input;
mod child_process;
mod conformance;
mod crash_safety;
mod harness;
mod multi_process;
mod sqlite_journal;
mod sqlite_writer;
