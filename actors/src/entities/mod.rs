//! Entity kinds: wire messages and behaviours that translate them into model calls.

pub mod probe;
pub mod user;
