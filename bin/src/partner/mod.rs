//! Login with a partner website's account (S2): the signed partner protocol, the node's
//! client of partner sites, and the reference partner site behind `lanmesh partner-demo`.

pub mod breaker;
pub mod client;
pub mod demo;
pub mod identity;
pub mod secret_box;
pub mod signing;
pub mod wire;
