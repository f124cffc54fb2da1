//! Pure domain types: no I/O, no async, no clocks (callers pass `now`).

pub mod campaign;
pub mod campaign_directory;
pub mod certification;
pub mod claim_book;
pub mod entity_kind;
pub mod gateway;
pub mod geo;
pub mod ledger;
pub mod offer_cell;
pub mod partner;
pub mod policy_registry;
pub mod probe;
pub mod reward;
pub mod segment;
pub mod segment_directory;
pub mod share;
pub mod share_allowance;
pub mod user;
