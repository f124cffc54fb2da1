//! The entity host: actix actors per entity, and the shards this node owns.

pub mod behavior;
pub mod clock;
pub mod entity_actor;
pub mod entity_host;
pub mod lease;
pub mod metrics;
pub mod ownership;
pub mod push;

#[cfg(test)]
mod tests;
