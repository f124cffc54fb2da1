//! Pure domain types: no I/O, no async, no clocks (callers pass `now`).

pub mod certification;
pub mod entity_kind;
pub mod gateway;
pub mod partner;
pub mod policy_registry;
pub mod probe;
pub mod segment;
pub mod segment_directory;
pub mod user;
