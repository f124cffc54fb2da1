//! The node's typed configuration: built-in defaults, then an optional TOML file, then
//! `LANMESH__*` environment variables, then validation with errors a person can act on.
//!
//! Keys (environment form in brackets; `__` separates levels):
//! - `node.id` [LANMESH__NODE__ID]: default generated once and kept in `node.data_dir`
//! - `node.data_dir` [LANMESH__NODE__DATA_DIR]: default `./data`
//! - `cluster.name` [LANMESH__CLUSTER__NAME]: default `lanmesh`; prefixes every queue/exchange
//! - `cluster.n_shards` [LANMESH__CLUSTER__N_SHARDS]: default 256; fixed for a cluster's life
//! - `http.listen` [LANMESH__HTTP__LISTEN]: default `127.0.0.1:7070`
//! - `bus.amqp_url` [LANMESH__BUS__AMQP_URL]: unset = in-process bus (single node)
//! - `bus.prefetch`, `bus.delivery_limit`, `bus.max_frame_bytes`
//! - `storage.sqlite.path` [LANMESH__STORAGE__SQLITE__PATH]: default `./data/lanmesh.db`;
//!   `storage.scylla.*` selects ScyllaDB (see `lanmesh_storage::StorageConfig`)
//! - `edge.*`: the client WebSocket `/ws` — `max_frame_bytes`, `idle_timeout_ms`,
//!   `ping_interval_ms`, `requests_per_second`, `request_burst`, `max_in_flight`,
//!   `presence_coalesce_ms`, `resume_grace_ms`, `request_timeout_ms`, `max_message_bytes`,
//!   `max_shared_friends`, `max_friend_requests_per_batch`, `trusted_proxies`
//! - `auth.*`: `key_ttl_ms`, `max_failed_logins`, `failed_login_window_ms`,
//!   `logins_per_minute_per_address`, `argon2_memory_kib`, `argon2_iterations`
//! - `partners.*`: partner-site login — `secrets_key` (64 hex digits, secret),
//!   `request_timeout_ms`, `max_answer_bytes`, `breaker_failures`, `breaker_open_ms`
//! - `venues.*`: `min_ipv4_prefix_len`, `min_ipv6_prefix_len` (largest segment a venue may
//!   register), `index_refresh_ms` (how often a node polls the segment directory),
//!   `certification_sweep_ms` (how often a node looks for its gateways' ended windows)
//! - `campaigns.*`: `notice_refresh_ms` (how often a node polls the campaign directory, and
//!   so how soon a publication reaches its connections), `allocation_wait_ms` (how long
//!   `gateway.allocate` waits for the accounts' claims before answering `reserved`)
//! - `share.*`: traffic sharing (S4) — `range_m` (how far a requester may be from an offer),
//!   `cell_precision` (geohash characters of the offer cells; fixed for a cluster's life),
//!   `max_results`, `unit_bytes` (the rating unit), `slice_bytes` (granted at a time),
//!   `min_amount_bytes`, `max_amount_bytes`, `max_price_minor_per_unit`, `min_validity_ms`,
//!   `max_validity_ms`, `max_password_attempts`, `reminders` (a list of `{percent, notify}`
//!   with `notify` naming `sharer` and/or `requester`), and the per-account daily caps
//!   `max_offered_bytes_per_day`, `max_requested_bytes_per_day`, `max_shares_per_day`
//! - `clock.allow_simulation` [LANMESH__CLOCK__ALLOW_SIMULATION]: default false; true lets
//!   operators advance this node's domain clock (rehearsal and test clusters only)
//! - `operator.token` [LANMESH__OPERATOR__TOKEN]: bearer token of the operator API (secret)
//! - `log.format` (`human` | `json`), `log.filter` (tracing directives, default `info`)

use crate::env_vars::CONFIG_ENV_PREFIX;
use lanmesh_actors::model::share::{AmountLimits, Party, ReminderRule, ShareTerms};
use lanmesh_actors::model::share_allowance::DailyShareCaps;
use lanmesh_bus::NodeId;
use lanmesh_bus::address::validate_node_id;
use lanmesh_storage::StorageConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Everything a node is configured with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// `node.*`
    pub node: NodeSection,
    /// `cluster.*`
    pub cluster: ClusterSection,
    /// `host.*`
    pub host: HostSection,
    /// `http.*`
    pub http: HttpSection,
    /// `bus.*`
    pub bus: BusSection,
    /// `edge.*`
    pub edge: EdgeSection,
    /// `auth.*`
    pub auth: AuthSection,
    /// `storage.*`
    pub storage: StorageConfig,
    /// `partners.*`
    pub partners: PartnersSection,
    /// `venues.*`
    pub venues: VenuesSection,
    /// `campaigns.*`
    pub campaigns: CampaignsSection,
    /// `share.*`
    pub share: ShareSection,
    /// `clock.*`
    pub clock: ClockSection,
    /// `operator.*`
    pub operator: OperatorSection,
    /// `log.*`
    pub log: LogSection,
}

/// `node.*`: this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// `node.id`; generated and kept in the data directory when unset.
    pub id: Option<String>,
    /// `node.data_dir`: where the node keeps its files.
    pub data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: None,
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// `cluster.*`: shared by every node of one cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// `cluster.name`: prefix of every exchange and queue.
    pub name: String,
    /// `cluster.n_shards`: number of shards; never change it on a running cluster.
    pub n_shards: u16,
    /// `cluster.heartbeat_interval_ms`: how often each node announces itself.
    pub heartbeat_interval_ms: u64,
    /// `cluster.missed_heartbeats`: silent intervals after which a node is declared failed.
    pub missed_heartbeats: u32,
    /// `cluster.handoff_timeout_ms`: how long a new owner waits for a live owner's handoff.
    pub handoff_timeout_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            name: "lanmesh".to_owned(),
            n_shards: lanmesh_bus::shard_map::DEFAULT_N_SHARDS,
            heartbeat_interval_ms: 1000,
            missed_heartbeats: 3,
            handoff_timeout_ms: 10_000,
        }
    }
}

/// `host.*`: the entity actors of this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSection {
    /// `host.passivate_after_idle_ms`: an entity idle this long is stopped.
    pub passivate_after_idle_ms: u64,
    /// `host.max_live_entities`: most entity actors alive at once.
    pub max_live_entities: usize,
}

impl Default for HostSection {
    fn default() -> Self {
        Self {
            passivate_after_idle_ms: 300_000,
            max_live_entities: 100_000,
        }
    }
}

/// `http.*`: the HTTP and WebSocket listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// `http.listen`: `host:port`.
    pub listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".to_owned(),
        }
    }
}

/// `bus.*`: how nodes talk.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSection {
    /// `bus.amqp_url`: RabbitMQ; unset runs the in-process bus.
    pub amqp_url: Option<String>,
    /// `bus.prefetch`: deliveries in flight per subscription.
    pub prefetch: u16,
    /// `bus.delivery_limit`: failed deliveries before a message is dead-lettered.
    pub delivery_limit: u32,
    /// `bus.max_frame_bytes`: largest message accepted.
    pub max_frame_bytes: usize,
}

impl Default for BusSection {
    fn default() -> Self {
        Self {
            amqp_url: None,
            prefetch: 64,
            delivery_limit: 20,
            max_frame_bytes: lanmesh_bus::codec::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// `edge.*`: the client WebSocket endpoint `/ws`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeSection {
    /// `edge.max_frame_bytes`: largest client frame; a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// `edge.idle_timeout_ms`: a connection silent this long is closed.
    pub idle_timeout_ms: u64,
    /// `edge.ping_interval_ms`: how often the server pings.
    pub ping_interval_ms: u64,
    /// `edge.requests_per_second`: sustained requests per connection.
    pub requests_per_second: u32,
    /// `edge.request_burst`: requests a connection may send at once above the rate.
    pub request_burst: u32,
    /// `edge.max_in_flight`: requests of one connection handled at once.
    pub max_in_flight: usize,
    /// `edge.presence_coalesce_ms`: presence changes of one contact within this window reach
    /// a session as one push (the latest).
    pub presence_coalesce_ms: u64,
    /// `edge.resume_grace_ms`: a session without connections counts as offline after this.
    pub resume_grace_ms: u64,
    /// `edge.request_timeout_ms`: how long a request to an entity may take.
    pub request_timeout_ms: u64,
    /// `edge.max_message_bytes`: largest message text.
    pub max_message_bytes: usize,
    /// `edge.max_shared_friends`: most friends one share may suggest.
    pub max_shared_friends: usize,
    /// `edge.max_friend_requests_per_batch`: most accounts in one combined add-friend request.
    pub max_friend_requests_per_batch: usize,
    /// `edge.trusted_proxies`: addresses and CIDR blocks of the proxies whose
    /// `X-Forwarded-For` gives the client's address (comma separated in the environment).
    /// Empty: the socket peer is the client, and forwarded headers are ignored.
    pub trusted_proxies: Vec<String>,
}

impl Default for EdgeSection {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            idle_timeout_ms: 90_000,
            ping_interval_ms: 30_000,
            requests_per_second: 50,
            request_burst: 200,
            max_in_flight: 16,
            presence_coalesce_ms: 50,
            resume_grace_ms: 10_000,
            request_timeout_ms: 10_000,
            max_message_bytes: 4096,
            max_shared_friends: 100,
            max_friend_requests_per_batch: 100,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `auth.*`: passwords, keys and login limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// `auth.key_ttl_ms`: lifetime of an auth key.
    pub key_ttl_ms: u64,
    /// `auth.max_failed_logins`: failed logins per account within the window before lock-out.
    pub max_failed_logins: u32,
    /// `auth.failed_login_window_ms`: the window of `auth.max_failed_logins`.
    pub failed_login_window_ms: u64,
    /// `auth.logins_per_minute_per_address`: login attempts per client address per minute.
    pub logins_per_minute_per_address: u32,
    /// `auth.argon2_memory_kib`: argon2id memory cost of new password hashes.
    pub argon2_memory_kib: u32,
    /// `auth.argon2_iterations`: argon2id time cost of new password hashes.
    pub argon2_iterations: u32,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            key_ttl_ms: 7 * 24 * 3_600_000,
            max_failed_logins: 5,
            failed_login_window_ms: 15 * 60_000,
            logins_per_minute_per_address: 60,
            // OWASP's first argon2id recommendation: 19 MiB, two passes.
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
        }
    }
}

/// A configured secret: read like any string, never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("\"<redacted>\"")
    }
}

/// `venues.*`: venue gateways and their LAN segments (S0).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VenuesSection {
    /// `venues.min_ipv4_prefix_len`: the largest IPv4 segment a venue may register (16: a /16).
    pub min_ipv4_prefix_len: u8,
    /// `venues.min_ipv6_prefix_len`: the largest IPv6 segment (48: a /48).
    pub min_ipv6_prefix_len: u8,
    /// `venues.index_refresh_ms`: how often a node polls the segment directory for changes.
    pub index_refresh_ms: u64,
    /// `venues.certification_sweep_ms`: how often a node certifies the gateways it hosts whose
    /// monitoring window has ended.
    pub certification_sweep_ms: u64,
}

impl Default for VenuesSection {
    fn default() -> Self {
        let limits = lanmesh_actors::model::segment::SegmentLimits::default();
        Self {
            min_ipv4_prefix_len: limits.min_ipv4_prefix_len,
            min_ipv6_prefix_len: limits.min_ipv6_prefix_len,
            index_refresh_ms: 1_000,
            certification_sweep_ms: 60_000,
        }
    }
}

impl VenuesSection {
    /// The segment limits these settings give.
    pub fn segment_limits(&self) -> lanmesh_actors::model::segment::SegmentLimits {
        lanmesh_actors::model::segment::SegmentLimits {
            min_ipv4_prefix_len: self.min_ipv4_prefix_len,
            min_ipv6_prefix_len: self.min_ipv6_prefix_len,
        }
    }
}

/// `campaigns.*`: campaign notices and allocations (S0 steps 7–11).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignsSection {
    /// `campaigns.notice_refresh_ms`: how often a node polls the campaign directory; a
    /// publication reaches every node's connections within this long.
    pub notice_refresh_ms: u64,
    /// `campaigns.allocation_wait_ms`: how long `gateway.allocate` waits for the accounts'
    /// claim books before answering with what is still `reserved`.
    pub allocation_wait_ms: u64,
}

impl Default for CampaignsSection {
    fn default() -> Self {
        Self {
            notice_refresh_ms: 1_000,
            allocation_wait_ms: 2_000,
        }
    }
}

/// `share.*`: mobile data-traffic sharing (S4).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShareSection {
    /// `share.range_m`: the farthest a requester may be from an offer, in meters.
    pub range_m: u64,
    /// `share.cell_precision`: geohash characters of the cells offers are listed in (4 to 7);
    /// fixed for a cluster's life, like the number of shards.
    pub cell_precision: u8,
    /// `share.max_results`: most offers `share.find` returns.
    pub max_results: usize,
    /// `share.unit_bytes`: bytes per rating unit (prices are per unit).
    pub unit_bytes: u64,
    /// `share.slice_bytes`: bytes granted at a time.
    pub slice_bytes: u64,
    /// `share.min_amount_bytes`: smallest amount offered or asked for.
    pub min_amount_bytes: u64,
    /// `share.max_amount_bytes`: largest amount offered or asked for.
    pub max_amount_bytes: u64,
    /// `share.max_price_minor_per_unit`: highest price per unit, in minor currency units.
    pub max_price_minor_per_unit: u64,
    /// `share.min_validity_ms`: shortest validity of an offer.
    pub min_validity_ms: u64,
    /// `share.max_validity_ms`: longest validity of an offer.
    pub max_validity_ms: u64,
    /// `share.max_password_attempts`: wrong passwords before a share is blocked.
    pub max_password_attempts: u32,
    /// `share.reminders`: usage thresholds and whom each reminds.
    pub reminders: Vec<ReminderRule>,
    /// `share.max_offered_bytes_per_day`: per account and UTC day.
    pub max_offered_bytes_per_day: u64,
    /// `share.max_requested_bytes_per_day`: per account and UTC day.
    pub max_requested_bytes_per_day: u64,
    /// `share.max_shares_per_day`: offers and requests per account and UTC day.
    pub max_shares_per_day: u32,
}

const MIB: u64 = 1 << 20;

impl Default for ShareSection {
    fn default() -> Self {
        let remind = |percent: u8, notify: &[Party]| ReminderRule {
            percent,
            notify: notify.iter().copied().collect(),
        };
        Self {
            range_m: 500,
            cell_precision: 6,
            max_results: 20,
            unit_bytes: MIB,
            slice_bytes: 8 * MIB,
            min_amount_bytes: MIB,
            max_amount_bytes: 10 * 1024 * MIB,
            max_price_minor_per_unit: 100_000,
            min_validity_ms: 60_000,
            max_validity_ms: 24 * 3_600_000,
            max_password_attempts: 5,
            reminders: vec![
                remind(50, &[Party::Requester]),
                remind(80, &[Party::Requester, Party::Sharer]),
                remind(100, &[Party::Requester, Party::Sharer]),
            ],
            max_offered_bytes_per_day: 20 * 1024 * MIB,
            max_requested_bytes_per_day: 20 * 1024 * MIB,
            max_shares_per_day: 50,
        }
    }
}

impl ShareSection {
    /// The terms new shares are opened under.
    pub fn terms(&self) -> ShareTerms {
        ShareTerms {
            unit_bytes: self.unit_bytes,
            slice_bytes: self.slice_bytes,
            max_password_attempts: self.max_password_attempts,
            range_m: self.range_m,
            reminders: self.reminders.clone(),
            cell_precision: self.cell_precision,
        }
    }

    /// The bounds on offers and requests.
    pub fn amount_limits(&self) -> AmountLimits {
        AmountLimits {
            min_amount_bytes: self.min_amount_bytes,
            max_amount_bytes: self.max_amount_bytes,
            max_price_minor_per_unit: self.max_price_minor_per_unit,
            min_validity_ms: self.min_validity_ms,
            max_validity_ms: self.max_validity_ms,
        }
    }

    /// The per-account daily caps.
    pub fn daily_caps(&self) -> DailyShareCaps {
        DailyShareCaps {
            max_offered_bytes: self.max_offered_bytes_per_day,
            max_requested_bytes: self.max_requested_bytes_per_day,
            max_shares: self.max_shares_per_day,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_range("share.range_m", self.range_m, 1..=5_000)?;
        check_range(
            "share.cell_precision",
            u64::from(self.cell_precision),
            4..=7,
        )?;
        check_range(
            "share.max_results",
            u64::try_from(self.max_results).unwrap_or(u64::MAX),
            1..=100,
        )?;
        check_range("share.unit_bytes", self.unit_bytes, 1..=1 << 40)?;
        check_range("share.slice_bytes", self.slice_bytes, 1..=1 << 40)?;
        check_range("share.min_amount_bytes", self.min_amount_bytes, 1..=1 << 50)?;
        check_range(
            "share.max_amount_bytes",
            self.max_amount_bytes,
            self.min_amount_bytes..=1 << 50,
        )?;
        check_range(
            "share.max_price_minor_per_unit",
            self.max_price_minor_per_unit,
            0..=1_000_000_000,
        )?;
        check_range(
            "share.min_validity_ms",
            self.min_validity_ms,
            1_000..=86_400_000,
        )?;
        check_range(
            "share.max_validity_ms",
            self.max_validity_ms,
            self.min_validity_ms..=30 * 86_400_000,
        )?;
        check_range(
            "share.max_password_attempts",
            u64::from(self.max_password_attempts),
            1..=20,
        )?;
        check_range(
            "share.max_shares_per_day",
            u64::from(self.max_shares_per_day),
            1..=10_000,
        )?;
        self.terms()
            .validate()
            .map_err(|error| invalid("share.reminders", "", error.to_string()))?;
        // The most a share can cost must fit the bill.
        lanmesh_actors::model::share::rate(
            self.max_amount_bytes,
            self.max_price_minor_per_unit,
            self.unit_bytes,
        )
        .map_err(|error| invalid("share.max_price_minor_per_unit", "", error.to_string()))?;
        Ok(())
    }
}

/// `clock.*`: the domain clock (see `lanmesh_actors::host::clock`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockSection {
    /// `clock.allow_simulation`: operators may advance this node's clock through
    /// `POST /api/v1/clock/advance`. For rehearsal and test clusters: time only moves forward,
    /// and every node of a cluster must be advanced alike.
    pub allow_simulation: bool,
}

/// `partners.*`: login with a partner site's account (S2).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartnersSection {
    /// `partners.secrets_key`: 64 hex digits, the same on every node of the cluster; seals
    /// the secrets partner sites share with this server. Unset: no site can be registered or
    /// used.
    pub secrets_key: Option<SecretText>,
    /// `partners.request_timeout_ms`: how long one call to a site may take.
    pub request_timeout_ms: u64,
    /// `partners.max_answer_bytes`: largest answer accepted from a site.
    pub max_answer_bytes: usize,
    /// `partners.breaker_failures`: failed calls in a row that open a site's breaker.
    pub breaker_failures: u32,
    /// `partners.breaker_open_ms`: how long an open breaker refuses calls.
    pub breaker_open_ms: u64,
}

impl Default for PartnersSection {
    fn default() -> Self {
        Self {
            secrets_key: None,
            request_timeout_ms: 3_000,
            max_answer_bytes: 256 * 1024,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
        }
    }
}

/// `operator.*`: the operator HTTP API (`/api/v1/...`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorSection {
    /// `operator.token`: the bearer token operators present, at least 32 characters. Unset:
    /// the operator API answers 503.
    pub token: Option<SecretText>,
}

/// Log output style.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `log.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `log.format`: `human` or `json`.
    pub format: String,
    /// `log.filter`: tracing directives such as `info,lanmesh_bus=debug`.
    pub filter: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: "human".to_owned(),
            filter: "info".to_owned(),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file or the environment could not be read or parsed (unknown key, wrong type, ...).
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is present but unusable.
    #[error("invalid configuration: {key} = {value:?}: {problem}")]
    Invalid {
        /// The key, in file form (`http.listen`).
        key: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong and what would be right.
        problem: String,
    },
    /// The storage section is unusable.
    #[error("invalid configuration: {0}")]
    Storage(String),
}

fn invalid(key: &'static str, value: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.into(),
        problem: problem.into(),
    }
}

fn check_range(
    key: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            value.to_string(),
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

/// A configuration that passed validation, with its values parsed.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// The raw configuration.
    pub raw: NodeConfig,
    /// `http.listen`, parsed.
    pub http_listen: SocketAddr,
    /// `node.id`, when set explicitly.
    pub node_id_opt: Option<NodeId>,
    /// `log.format`, parsed.
    pub log_format: LogFormat,
}

impl NodeConfig {
    /// Loads defaults, then `file_opt`, then `LANMESH__*` variables from `environment`.
    pub fn load(
        file_opt: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file_opt {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let variables: config::Map<String, String> = environment
            .into_iter()
            .filter(|(name, _)| name.starts_with(&format!("{CONFIG_ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(CONFIG_ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("edge.trusted_proxies")
                .source(Some(variables)),
        );
        Ok(builder.build()?.try_deserialize()?)
    }

    /// Checks every value; the error names the key and says what is wrong.
    pub fn validate(self) -> Result<ValidatedConfig, ConfigError> {
        let http_listen: SocketAddr = self.http.listen.parse().map_err(|_| {
            invalid(
                "http.listen",
                &self.http.listen,
                "not a socket address; expected host:port such as 127.0.0.1:7070",
            )
        })?;
        let node_id_opt = match &self.node.id {
            Some(id) => Some(
                NodeId::new(id.clone())
                    .map_err(|error| invalid("node.id", id, error.to_string()))?,
            ),
            None => None,
        };
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "", "must not be empty"));
        }
        validate_node_id(&self.cluster.name).map_err(|error| {
            invalid(
                "cluster.name",
                &self.cluster.name,
                error.to_string().replace("node id", "cluster name"),
            )
        })?;
        if self.cluster.n_shards == 0 {
            return Err(invalid(
                "cluster.n_shards",
                "0",
                "must be between 1 and 65535",
            ));
        }
        let cluster = &self.cluster;
        check_range(
            "cluster.heartbeat_interval_ms",
            cluster.heartbeat_interval_ms,
            10..=60_000,
        )?;
        check_range(
            "cluster.missed_heartbeats",
            u64::from(cluster.missed_heartbeats),
            2..=100,
        )?;
        check_range(
            "cluster.handoff_timeout_ms",
            cluster.handoff_timeout_ms,
            100..=600_000,
        )?;
        check_range(
            "host.passivate_after_idle_ms",
            self.host.passivate_after_idle_ms,
            10..=86_400_000,
        )?;
        check_range(
            "host.max_live_entities",
            u64::try_from(self.host.max_live_entities).unwrap_or(u64::MAX),
            1..=100_000_000,
        )?;
        if let Some(url) = &self.bus.amqp_url {
            url.parse::<lapin::uri::AMQPUri>().map_err(|problem| {
                invalid(
                    "bus.amqp_url",
                    crate::telemetry::redact_url(url),
                    format!(
                        "not an AMQP URL ({problem}); expected amqp://user:password@host:5672/vhost"
                    ),
                )
            })?;
        }
        if self.bus.prefetch == 0 {
            return Err(invalid("bus.prefetch", "0", "must be between 1 and 65535"));
        }
        if self.bus.delivery_limit == 0 {
            return Err(invalid("bus.delivery_limit", "0", "must be at least 1"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.bus.max_frame_bytes) {
            return Err(invalid(
                "bus.max_frame_bytes",
                self.bus.max_frame_bytes.to_string(),
                "must be between 1024 and 67108864",
            ));
        }
        self.validate_edge()?;
        self.validate_partners()?;
        self.venues.segment_limits().validate().map_err(|error| {
            invalid(
                "venues.min_ipv4_prefix_len / venues.min_ipv6_prefix_len",
                "",
                error.to_string(),
            )
        })?;
        check_range(
            "venues.index_refresh_ms",
            self.venues.index_refresh_ms,
            50..=60_000,
        )?;
        check_range(
            "venues.certification_sweep_ms",
            self.venues.certification_sweep_ms,
            100..=3_600_000,
        )?;
        check_range(
            "campaigns.notice_refresh_ms",
            self.campaigns.notice_refresh_ms,
            50..=60_000,
        )?;
        check_range(
            "campaigns.allocation_wait_ms",
            self.campaigns.allocation_wait_ms,
            0..=30_000,
        )?;
        self.share.validate()?;
        let log_format = match self.log.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => return Err(invalid("log.format", other, "must be human or json")),
        };
        tracing_subscriber::EnvFilter::try_new(&self.log.filter).map_err(|error| {
            invalid(
                "log.filter",
                &self.log.filter,
                format!("not a tracing filter: {error}"),
            )
        })?;
        self.storage
            .validate()
            .map_err(|error| ConfigError::Storage(error.to_string()))?;
        Ok(ValidatedConfig {
            raw: self,
            http_listen,
            node_id_opt,
            log_format,
        })
    }
}

impl NodeConfig {
    fn validate_partners(&self) -> Result<(), ConfigError> {
        let partners = &self.partners;
        if let Some(key) = &partners.secrets_key {
            crate::partner::secret_box::SecretBox::from_hex(&key.0).map_err(|error| {
                invalid("partners.secrets_key", "<redacted>", error.to_string())
            })?;
        }
        check_range(
            "partners.request_timeout_ms",
            partners.request_timeout_ms,
            50..=60_000,
        )?;
        check_range(
            "partners.max_answer_bytes",
            u64::try_from(partners.max_answer_bytes).unwrap_or(u64::MAX),
            1024..=16 * 1024 * 1024,
        )?;
        check_range(
            "partners.breaker_failures",
            u64::from(partners.breaker_failures),
            1..=1000,
        )?;
        check_range(
            "partners.breaker_open_ms",
            partners.breaker_open_ms,
            100..=3_600_000,
        )?;
        if let Some(token) = &self.operator.token
            && token.0.chars().count() < 32
        {
            return Err(invalid(
                "operator.token",
                "<redacted>",
                "must be at least 32 characters; generate one with `openssl rand -hex 32`",
            ));
        }
        Ok(())
    }

    fn validate_edge(&self) -> Result<(), ConfigError> {
        let edge = &self.edge;
        let as_u64 = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
        check_range(
            "edge.max_frame_bytes",
            as_u64(edge.max_frame_bytes),
            1024..=16 * 1024 * 1024,
        )?;
        check_range(
            "edge.idle_timeout_ms",
            edge.idle_timeout_ms,
            1000..=3_600_000,
        )?;
        check_range(
            "edge.ping_interval_ms",
            edge.ping_interval_ms,
            100..=edge.idle_timeout_ms.max(100),
        )?;
        check_range(
            "edge.requests_per_second",
            u64::from(edge.requests_per_second),
            1..=100_000,
        )?;
        check_range(
            "edge.request_burst",
            u64::from(edge.request_burst),
            1..=1_000_000,
        )?;
        check_range("edge.max_in_flight", as_u64(edge.max_in_flight), 1..=1024)?;
        check_range(
            "edge.presence_coalesce_ms",
            edge.presence_coalesce_ms,
            0..=10_000,
        )?;
        check_range("edge.resume_grace_ms", edge.resume_grace_ms, 0..=3_600_000)?;
        check_range(
            "edge.request_timeout_ms",
            edge.request_timeout_ms,
            100..=120_000,
        )?;
        check_range(
            "edge.max_message_bytes",
            as_u64(edge.max_message_bytes),
            1..=as_u64(lanmesh_storage::MAX_MESSAGE_TEXT_BYTES),
        )?;
        check_range(
            "edge.max_shared_friends",
            as_u64(edge.max_shared_friends),
            1..=10_000,
        )?;
        check_range(
            "edge.max_friend_requests_per_batch",
            as_u64(edge.max_friend_requests_per_batch),
            1..=10_000,
        )?;
        crate::edge::client_address::TrustedProxies::parse(&edge.trusted_proxies).map_err(
            |error| {
                invalid(
                    "edge.trusted_proxies",
                    edge.trusted_proxies.join(","),
                    error.to_string(),
                )
            },
        )?;
        let auth = &self.auth;
        check_range(
            "auth.key_ttl_ms",
            auth.key_ttl_ms,
            1000..=365 * 24 * 3_600_000,
        )?;
        check_range(
            "auth.max_failed_logins",
            u64::from(auth.max_failed_logins),
            1..=1000,
        )?;
        check_range(
            "auth.failed_login_window_ms",
            auth.failed_login_window_ms,
            1000..=86_400_000,
        )?;
        check_range(
            "auth.logins_per_minute_per_address",
            u64::from(auth.logins_per_minute_per_address),
            1..=1_000_000,
        )?;
        check_range(
            "auth.argon2_memory_kib",
            u64::from(auth.argon2_memory_kib),
            8..=4 * 1024 * 1024,
        )?;
        check_range(
            "auth.argon2_iterations",
            u64::from(auth.argon2_iterations),
            1..=100,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_env(variables: &[(&str, &str)]) -> Result<ValidatedConfig, ConfigError> {
        let environment = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()));
        NodeConfig::load(None, environment)?.validate()
    }

    fn check_error(variables: &[(&str, &str)], expected_fragments: &[&str]) {
        let message = load_env(variables).unwrap_err().to_string();
        for fragment in expected_fragments {
            assert!(
                message.contains(fragment),
                "{variables:?}: {message:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn share_settings_are_checked() {
        let defaults = load_env(&[]).unwrap();
        assert_eq!(defaults.raw.share.terms().reminders.len(), 3);
        check_error(
            &[("LANMESH__SHARE__CELL_PRECISION", "9")],
            &["share.cell_precision", "between 4 and 7"],
        );
        check_error(
            &[("LANMESH__SHARE__RANGE_M", "0")],
            &["share.range_m", "between 1 and 5000"],
        );
        check_error(
            &[
                ("LANMESH__SHARE__MIN_AMOUNT_BYTES", "2048"),
                ("LANMESH__SHARE__MAX_AMOUNT_BYTES", "1024"),
            ],
            &["share.max_amount_bytes", "between 2048"],
        );
        check_error(
            &[("LANMESH__SHARE__MAX_PASSWORD_ATTEMPTS", "0")],
            &["share.max_password_attempts"],
        );
        check_error(
            &[("LANMESH__SHARE__MAX_SHARES_PER_DAY", "abc")],
            &["share.max_shares_per_day"],
        );
    }

    #[test]
    fn defaults_are_the_embedded_node() {
        let config = load_env(&[]).unwrap();
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:7070");
        assert!(config.raw.bus.amqp_url.is_none());
        assert_eq!(config.raw.cluster.name, "lanmesh");
        assert_eq!(config.raw.cluster.n_shards, 256);
        assert_eq!(
            config.raw.storage.sqlite.path,
            PathBuf::from("./data/lanmesh.db")
        );
        assert!(config.node_id_opt.is_none());
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let config = load_env(&[
            ("LANMESH__HTTP__LISTEN", "0.0.0.0:8080"),
            (
                "LANMESH__BUS__AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
            ("LANMESH__CLUSTER__N_SHARDS", "8"),
            ("LANMESH__NODE__ID", "node-7"),
            ("LANMESH__STORAGE__SQLITE__PATH", "/tmp/x.db"),
            ("LANMESH_TEST_AMQP_URL", "ignored: not a config variable"),
        ])
        .unwrap();
        assert_eq!(config.http_listen.port(), 8080);
        assert_eq!(config.raw.cluster.n_shards, 8);
        assert_eq!(config.node_id_opt.unwrap().as_str(), "node-7");
        assert_eq!(config.raw.storage.sqlite.path, PathBuf::from("/tmp/x.db"));
    }

    #[test]
    fn file_then_environment() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("node.toml");
        std::fs::write(
            &file,
            "[http]\nlisten = \"127.0.0.1:9000\"\n[cluster]\nname = \"blue\"\n",
        )
        .unwrap();
        let environment = [("LANMESH__CLUSTER__NAME".to_owned(), "green".to_owned())];
        let config = NodeConfig::load(Some(&file), environment)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.http_listen.port(), 9000);
        assert_eq!(config.raw.cluster.name, "green");
    }

    #[test]
    fn bad_values_name_key_and_problem() {
        check_error(
            &[("LANMESH__HTTP__LISTEN", "localhost")],
            &["http.listen", "\"localhost\"", "not a socket address"],
        );
        check_error(
            &[("LANMESH__BUS__AMQP_URL", "http://broker")],
            &["bus.amqp_url", "not an AMQP URL"],
        );
        check_error(
            &[("LANMESH__NODE__ID", "node one")],
            &["node.id", "contains ' '"],
        );
        check_error(
            &[("LANMESH__CLUSTER__NAME", "a/b")],
            &["cluster.name", "cluster name contains '/'"],
        );
        check_error(
            &[("LANMESH__CLUSTER__N_SHARDS", "0")],
            &["cluster.n_shards"],
        );
        check_error(
            &[("LANMESH__CLUSTER__N_SHARDS", "70000")],
            &["cluster.n_shards"],
        );
        check_error(&[("LANMESH__BUS__PREFETCH", "0")], &["bus.prefetch"]);
        check_error(
            &[("LANMESH__CLUSTER__MISSED_HEARTBEATS", "1")],
            &[
                "cluster.missed_heartbeats = \"1\"",
                "must be between 2 and 100",
            ],
        );
        check_error(
            &[("LANMESH__CLUSTER__HEARTBEAT_INTERVAL_MS", "5")],
            &["cluster.heartbeat_interval_ms", "between 10 and 60000"],
        );
        check_error(
            &[("LANMESH__HOST__MAX_LIVE_ENTITIES", "0")],
            &["host.max_live_entities"],
        );
        check_error(
            &[("LANMESH__LOG__FORMAT", "xml")],
            &["log.format = \"xml\"", "must be human or json"],
        );
        check_error(&[("LANMESH__HTTP__LISTN", "x")], &["unknown field `listn`"]);
        check_error(
            &[("LANMESH__EDGE__MAX_FRAME_BYTES", "100")],
            &[
                "edge.max_frame_bytes = \"100\"",
                "between 1024 and 16777216",
            ],
        );
        check_error(
            &[("LANMESH__EDGE__MAX_MESSAGE_BYTES", "5000")],
            &["edge.max_message_bytes", "between 1 and 4096"],
        );
        check_error(
            &[
                ("LANMESH__EDGE__IDLE_TIMEOUT_MS", "5000"),
                ("LANMESH__EDGE__PING_INTERVAL_MS", "6000"),
            ],
            &["edge.ping_interval_ms", "between 100 and 5000"],
        );
        check_error(
            &[("LANMESH__AUTH__ARGON2_ITERATIONS", "0")],
            &["auth.argon2_iterations"],
        );
        check_error(
            &[("LANMESH__AUTH__MAX_FAILED_LOGINS", "0")],
            &["auth.max_failed_logins"],
        );
    }

    #[test]
    fn secrets_in_urls_are_not_echoed() {
        let message = load_env(&[("LANMESH__BUS__AMQP_URL", "ftp://user:hunter2@host")])
            .unwrap_err()
            .to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("bus.amqp_url"), "{message}");
    }

    #[test]
    fn partner_and_operator_secrets_are_checked_and_never_echoed() {
        let key = "ab".repeat(32);
        let config = load_env(&[
            ("LANMESH__PARTNERS__SECRETS_KEY", key.as_str()),
            (
                "LANMESH__OPERATOR__TOKEN",
                "operator-token-that-is-long-enough-0",
            ),
            ("LANMESH__PARTNERS__REQUEST_TIMEOUT_MS", "500"),
        ])
        .unwrap();
        assert_eq!(config.raw.partners.request_timeout_ms, 500);
        let printed = format!("{config:?}");
        assert!(!printed.contains(&key), "{printed}");
        assert!(!printed.contains("operator-token"), "{printed}");
        for (variables, key_name) in [
            (
                [("LANMESH__PARTNERS__SECRETS_KEY", "not-hex-secret-value")],
                "partners.secrets_key",
            ),
            (
                [("LANMESH__OPERATOR__TOKEN", "short-secret-value")],
                "operator.token",
            ),
        ] {
            let message = load_env(&variables).unwrap_err().to_string();
            assert!(message.contains(key_name), "{message}");
            assert!(!message.contains("secret-value"), "{message}");
        }
        check_error(
            &[("LANMESH__PARTNERS__BREAKER_FAILURES", "0")],
            &["partners.breaker_failures", "between 1 and 1000"],
        );
        check_error(
            &[("LANMESH__PARTNERS__MAX_ANSWER_BYTES", "10")],
            &["partners.max_answer_bytes"],
        );
    }

    #[test]
    fn trusted_proxies_are_a_comma_separated_list_of_addresses_and_blocks() {
        let config =
            load_env(&[("LANMESH__EDGE__TRUSTED_PROXIES", "10.0.0.5, 192.168.0.0/16")]).unwrap();
        assert_eq!(
            config.raw.edge.trusted_proxies,
            ["10.0.0.5", " 192.168.0.0/16"]
        );
        check_error(
            &[("LANMESH__EDGE__TRUSTED_PROXIES", "10.0.0.5,nonsense")],
            &["edge.trusted_proxies", "entry 2"],
        );
        check_error(
            &[("LANMESH__EDGE__TRUSTED_PROXIES", "0.0.0.0/0")],
            &["edge.trusted_proxies", "unspecified"],
        );
    }

    #[test]
    fn shipped_example_is_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/config/node.example.toml");
        let config = NodeConfig::load(Some(&example), [])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.node_id_opt.unwrap().as_str(), "node-1");
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.raw.bus.amqp_url.is_some());
    }

    #[test]
    fn missing_file_is_an_error() {
        let error = NodeConfig::load(Some(Path::new("/nonexistent/node.toml")), []).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/node.toml"),
            "{error}"
        );
    }
}
