//! Every environment variable the lanmesh binaries read, in one place.
//!
//! Configuration keys are read as `LANMESH__SECTION__KEY` (see [`crate::config`]); the test
//! suite's own variables (`LANMESH_TEST_*`, single underscore) are listed in `lanmesh_tests`.

/// Prefix of configuration variables: `LANMESH__HTTP__LISTEN` sets `http.listen`.
pub const CONFIG_ENV_PREFIX: &str = "LANMESH";

/// Standard tracing filter; when set it replaces `log.filter`.
pub const RUST_LOG: &str = "RUST_LOG";

/// `lanmesh partner-demo`: the variable holding the reference site's shared secret, by
/// default (`--secret-env` names another), so the secret never appears in a command line.
pub const PARTNER_DEMO_SECRET: &str = "LANMESH_PARTNER_SECRET";
