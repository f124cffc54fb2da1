//! The node: composes storage, the bus, membership, the entity host and the HTTP listener,
//! and runs them until SIGTERM.
//!
//! Start-up order: data directory and node id → storage → bus (in-process, or RabbitMQ when
//! `bus.amqp_url` is set) → the client edge → this node's inbox (replies, and pushes for the
//! edge's sessions) → membership (heartbeats) → entity host and
//! shard ownership → HTTP. The node serves `/healthz` as soon as it listens; `/readyz` answers
//! 200 only while the bus is connected. It owns shards once membership has settled (one
//! failure timeout after start). Shutdown (SIGTERM or SIGINT) runs the steps backwards: stop
//! accepting HTTP, announce leaving, hand every shard off, stop heartbeating, finish the
//! inbox delivery in hand, close the bus connection.

use crate::config::ValidatedConfig;
use crate::edge::auth::PasswordCost;
use crate::edge::certification_sweep::SweepDependencies;
use crate::edge::client_address::TrustedProxies;
use crate::edge::metrics::EdgeMetrics;
use crate::edge::sessions::SessionTiming;
use crate::edge::share_ops::ShareSettings;
use crate::edge::{Edge, EdgeDependencies, EdgeLimits, PartnerServices};
use crate::partner::breaker::BreakerPolicy;
use crate::partner::client::{PartnerClient, PartnerClientSettings};
use crate::partner::secret_box::SecretBox;
use anyhow::Context;
use lanmesh_actors::entities::campaign::CampaignEntity;
use lanmesh_actors::entities::campaign_directory::CampaignDirectoryEntity;
use lanmesh_actors::entities::certification_policy::CertificationPolicyEntity;
use lanmesh_actors::entities::claim_book::ClaimBookEntity;
use lanmesh_actors::entities::gateway::GatewayEntity;
use lanmesh_actors::entities::ledger::LedgerEntity;
use lanmesh_actors::entities::offer_cell::OfferCellEntity;
use lanmesh_actors::entities::partner::PartnerEntity;
use lanmesh_actors::entities::probe::ProbeEntity;
use lanmesh_actors::entities::segment::SegmentEntity;
use lanmesh_actors::entities::segment_directory::SegmentDirectoryEntity;
use lanmesh_actors::entities::share::ShareEntity;
use lanmesh_actors::entities::user::UserEntity;
use lanmesh_actors::host::clock::DomainClock;
use lanmesh_actors::host::entity_host::{EntityHost, HostConfig, HostDependencies, HostedKinds};
use lanmesh_actors::host::lease::LeaseStore;
use lanmesh_actors::host::metrics::HostMetrics;
use lanmesh_actors::host::ownership::{self, OwnershipConfig, OwnershipDependencies};
use lanmesh_actors::model::user::LoginLimit;
use lanmesh_bus::amqp::{AmqpConfig, AmqpTransport};
use lanmesh_bus::codec::FrameLimits;
use lanmesh_bus::in_process::{InProcessConfig, InProcessTransport};
use lanmesh_bus::membership::{Membership, MembershipConfig};
use lanmesh_bus::request_reply::Requester;
use lanmesh_bus::shard_map::ShardMap;
use lanmesh_bus::{Delivery, NodeId, Source, Transport, handler_fn};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often shard ownership re-checks leases it is waiting for.
const LEASE_RECHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Name of the file in `node.data_dir` that keeps a generated node id across restarts.
const NODE_ID_FILE: &str = "node-id";

/// Reads the node id kept in `data_dir`, or generates and keeps a new one.
pub fn load_or_create_node_id(data_dir: &Path) -> anyhow::Result<NodeId> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::new(text.trim())
            .with_context(|| format!("{} holds an invalid node id", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let node_id = NodeId::generate();
            std::fs::write(&path, format!("{node_id}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(node_id)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn start_transport(config: &ValidatedConfig, node_id: &NodeId) -> Arc<dyn Transport> {
    let raw = &config.raw;
    match &raw.bus.amqp_url {
        Some(url) => {
            let mut amqp = AmqpConfig::new(url, &raw.cluster.name, node_id.clone());
            amqp.n_shards = raw.cluster.n_shards;
            amqp.prefetch = raw.bus.prefetch;
            amqp.delivery_limit = raw.bus.delivery_limit;
            amqp.frame_limits = FrameLimits {
                max_frame_bytes: raw.bus.max_frame_bytes,
            };
            tracing::info!(broker = %crate::telemetry::redact_url(url), cluster = %raw.cluster.name, "using rabbitmq bus");
            Arc::new(AmqpTransport::start(amqp))
        }
        None => {
            tracing::info!("using in-process bus (single node)");
            Arc::new(InProcessTransport::new(InProcessConfig {
                n_shards: raw.cluster.n_shards,
                delivery_limit: raw.bus.delivery_limit,
            }))
        }
    }
}

/// The edge's limits from `edge.*` and `auth.*`.
fn partner_services(raw: &crate::config::NodeConfig) -> anyhow::Result<PartnerServices> {
    let partners = &raw.partners;
    let request_timeout = Duration::from_millis(partners.request_timeout_ms);
    let client = PartnerClient::new(PartnerClientSettings {
        request_timeout,
        max_answer_bytes: partners.max_answer_bytes,
        breaker: BreakerPolicy {
            failure_threshold: partners.breaker_failures,
            open_for: Duration::from_millis(partners.breaker_open_ms),
            trial_timeout: request_timeout,
        },
    })
    .context("cannot build the partner-site client")?;
    let secret_box_opt = match &partners.secrets_key {
        Some(key) => Some(SecretBox::from_hex(&key.0).context("partners.secrets_key")?),
        None => None,
    };
    Ok(PartnerServices {
        client: Arc::new(client),
        secret_box_opt,
    })
}

fn edge_limits(raw: &crate::config::NodeConfig) -> EdgeLimits {
    let edge = &raw.edge;
    let auth = &raw.auth;
    EdgeLimits {
        max_frame_bytes: edge.max_frame_bytes,
        idle_timeout: Duration::from_millis(edge.idle_timeout_ms),
        ping_interval: Duration::from_millis(edge.ping_interval_ms),
        requests_per_second: edge.requests_per_second,
        request_burst: edge.request_burst,
        max_in_flight: edge.max_in_flight,
        session_timing: SessionTiming {
            presence_coalesce: Duration::from_millis(edge.presence_coalesce_ms),
            resume_grace: Duration::from_millis(edge.resume_grace_ms),
        },
        logins_per_minute_per_address: auth.logins_per_minute_per_address,
        login_limit: LoginLimit {
            max_failures: auth.max_failed_logins,
            window_ms: auth.failed_login_window_ms,
        },
        key_ttl: Duration::from_millis(auth.key_ttl_ms),
        password_cost: PasswordCost {
            memory_kib: auth.argon2_memory_kib,
            iterations: auth.argon2_iterations,
        },
        max_shared_friends: edge.max_shared_friends,
        max_friend_requests_per_batch: edge.max_friend_requests_per_batch,
        max_message_bytes: edge.max_message_bytes,
        segment_limits: raw.venues.segment_limits(),
        request_timeout: Duration::from_millis(edge.request_timeout_ms),
        allocation_wait: Duration::from_millis(raw.campaigns.allocation_wait_ms),
        share: ShareSettings {
            terms: raw.share.terms(),
            limits: raw.share.amount_limits(),
            caps: raw.share.daily_caps(),
            max_results: raw.share.max_results,
        },
    }
}

/// Waits for SIGTERM or SIGINT; says which.
pub async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// Runs the node until a shutdown signal, then stops it gracefully.
pub async fn run(config: ValidatedConfig) -> anyhow::Result<()> {
    let raw = &config.raw;
    std::fs::create_dir_all(&raw.node.data_dir).with_context(|| {
        format!(
            "cannot create node.data_dir {}",
            raw.node.data_dir.display()
        )
    })?;
    let node_id = match &config.node_id_opt {
        Some(node_id) => node_id.clone(),
        None => load_or_create_node_id(&raw.node.data_dir)?,
    };
    tracing::info!(node = %node_id, version = env!("CARGO_PKG_VERSION"), "starting lanmesh node");

    let stores = lanmesh_storage::open(&raw.storage)
        .await
        .context("cannot open storage")?;

    let clock = DomainClock::system();
    if raw.clock.allow_simulation {
        tracing::warn!("clock.allow_simulation is on: operators may advance this node's clock");
    }
    let transport = start_transport(&config, &node_id);
    let requester = Requester::new(node_id.clone(), Arc::clone(&transport));
    let shard_map = ShardMap::new(raw.cluster.n_shards).context("cluster.n_shards is zero")?;
    let edge_metrics = EdgeMetrics::default();
    let edge = Edge::new(
        EdgeDependencies {
            node_id: node_id.clone(),
            requester: Arc::clone(&requester),
            transport: Arc::clone(&transport),
            shard_map,
            messages: Arc::clone(&stores.messages),
            metrics: edge_metrics.clone(),
            partners: partner_services(raw)?,
            trusted_proxies: TrustedProxies::parse(&raw.edge.trusted_proxies)
                .context("edge.trusted_proxies")?,
            clock: clock.clone(),
            presence: Arc::clone(&stores.presence),
        },
        edge_limits(raw),
    )
    .await
    .context("cannot start the client edge")?;
    crate::edge::venues::spawn_refresh(&edge, Duration::from_millis(raw.venues.index_refresh_ms));
    crate::edge::campaign_notices::spawn_refresh(
        &edge,
        Duration::from_millis(raw.campaigns.notice_refresh_ms),
    );
    let pushes = {
        let edge = Arc::clone(&edge);
        handler_fn(move |delivery: Delivery| {
            let edge = Arc::clone(&edge);
            async move { edge.route_push(delivery).await }
        })
    };
    let inbox = transport
        .subscribe(
            Source::NodeInbox(node_id.clone()),
            requester.inbox_handler(pushes),
        )
        .await
        .context("cannot subscribe to this node's inbox")?;

    let membership_config = MembershipConfig {
        heartbeat_interval: Duration::from_millis(raw.cluster.heartbeat_interval_ms),
        missed_heartbeats: raw.cluster.missed_heartbeats,
    };
    let membership = Membership::start(node_id.clone(), Arc::clone(&transport), membership_config)
        .await
        .context("cannot start cluster membership")?;

    crate::edge::certification_sweep::spawn(
        &edge,
        SweepDependencies {
            presence: Arc::clone(&stores.presence),
            view: membership.view(),
            interval: Duration::from_millis(raw.venues.certification_sweep_ms),
        },
    );

    let host_metrics = HostMetrics::default();
    // One actor thread per core; entities are spread over them by address.
    let n_arbiters = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let arbiters: Vec<actix::Arbiter> = (0..n_arbiters).map(|_| actix::Arbiter::new()).collect();
    let (fenced_sender, fenced_receiver) = tokio::sync::mpsc::unbounded_channel();
    let host = EntityHost::new(
        HostDependencies {
            node_id: node_id.clone(),
            transport: Arc::clone(&transport),
            store: Arc::clone(&stores.entity_state),
            audit: Arc::clone(&stores.audit),
            presence: Arc::clone(&stores.presence),
            journal: Arc::clone(&stores.ledger_journal),
            shard_map,
            arbiters: arbiters.iter().map(actix::Arbiter::handle).collect(),
            metrics: host_metrics.clone(),
            fenced_shards: fenced_sender,
            clock,
        },
        HostedKinds::default()
            .with::<ProbeEntity>()
            .with::<UserEntity>()
            .with::<PartnerEntity>()
            .with::<GatewayEntity>()
            .with::<SegmentEntity>()
            .with::<SegmentDirectoryEntity>()
            .with::<CertificationPolicyEntity>()
            .with::<CampaignEntity>()
            .with::<CampaignDirectoryEntity>()
            .with::<LedgerEntity>()
            .with::<ClaimBookEntity>()
            .with::<ShareEntity>()
            .with::<OfferCellEntity>(),
        HostConfig {
            passivate_after_idle: Duration::from_millis(raw.host.passivate_after_idle_ms),
            max_live_entities: raw.host.max_live_entities,
        },
    );
    let idle_sweep = actix_web::rt::spawn(Arc::clone(&host).run_idle_sweep());
    let ownership = ownership::start(
        OwnershipDependencies {
            node_id: node_id.clone(),
            transport: Arc::clone(&transport),
            leases: LeaseStore::new(Arc::clone(&stores.entity_state), &raw.cluster.name),
            host,
            view: membership.view(),
            fenced_shards: fenced_receiver,
            metrics: host_metrics.clone(),
        },
        OwnershipConfig {
            n_shards: raw.cluster.n_shards,
            handoff_timeout: Duration::from_millis(raw.cluster.handoff_timeout_ms),
            recheck_interval: LEASE_RECHECK_INTERVAL,
        },
    );

    let readiness: crate::http::ReadinessCheck = {
        let transport = Arc::clone(&transport);
        Arc::new(move || {
            if transport.is_ready() {
                Ok(())
            } else {
                Err("message bus not connected".to_owned())
            }
        })
    };
    let registry = {
        let transport_for_gauge = Arc::clone(&transport);
        let mut registry = crate::metrics::node_registry(
            transport.stats(),
            move || transport_for_gauge.is_ready(),
            &host_metrics,
            &edge_metrics,
        );
        edge.partners().client.register_metrics(&mut registry);
        registry
    };
    let (server_handle, server) = crate::http::serve(
        config.http_listen,
        registry,
        readiness,
        Arc::clone(&edge),
        crate::operator::OperatorAuth::new(raw.operator.token.as_ref()),
        &stores,
        crate::operator::clock::ClockSimulation {
            allowed: raw.clock.allow_simulation,
        },
    )
    .with_context(|| format!("cannot listen on http.listen = {}", config.http_listen))?;
    let server_task = actix_web::rt::spawn(server);
    tracing::info!(listen = %config.http_listen, "serving http");

    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal = signal?, "shutting down");
        }
        ended = server_task => {
            tracing::error!(outcome = ?ended, "http server stopped unexpectedly");
        }
    }
    edge.close_connections();
    server_handle.stop(true).await;
    membership.announce_leaving().await;
    ownership.release_all().await;
    idle_sweep.abort();
    membership.stop().await;
    inbox.cancel().await;
    transport.close().await;
    for arbiter in arbiters {
        arbiter.stop();
        if arbiter.join().is_err() {
            tracing::warn!("an actor thread ended abnormally");
        }
    }
    tracing::info!(node = %node_id, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_generated_once_and_kept() {
        let directory = tempfile::tempdir().unwrap();
        let first = load_or_create_node_id(directory.path()).unwrap();
        let second = load_or_create_node_id(directory.path()).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn corrupt_node_id_file_is_reported() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join(NODE_ID_FILE), "not a valid id!\n").unwrap();
        let error = load_or_create_node_id(directory.path()).unwrap_err();
        assert!(
            format!("{error:#}").contains("holds an invalid node id"),
            "{error:#}"
        );
    }
}
