//! Pure domain types: no I/O, no async, no clocks (callers pass `now`).

pub mod entity_kind;
pub mod partner;
pub mod probe;
pub mod user;
