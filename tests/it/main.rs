//! The lanmesh integration suite: one test binary, a module per area, real RabbitMQ and real
//! `lanmesh-node` processes. See `lanmesh_tests` for the environment it reads.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "a failed expectation in the integration suite is a test failure"
)]

mod amqp_conformance;
mod amqp_recovery;
mod campaign_fire;
mod campaigns;
mod cluster;
mod im;
mod node_process;
mod partner;
mod share_fire;
mod shares;
mod venues;
