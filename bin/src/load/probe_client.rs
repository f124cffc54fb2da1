//! A client of a cluster's probe entities (`lanmesh_actors::entities::probe`): a bus participant
//! with its own inbox, not a cluster member. Each request goes to the probe's shard queue; a
//! retry reuses the `msg_id`, so the probe applies it once. `lanmesh-load entities` and the
//! integration suite both talk to probes through it.

use crate::load::local_cluster::client_amqp_config;
use anyhow::{Context, bail};
use lanmesh_actors::entities::probe::{self, ProbeReply, ProbeReport, ProbeRequest};
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_bus::amqp::AmqpTransport;
use lanmesh_bus::request_reply::{RequestPolicy, Requester};
use lanmesh_bus::shard_map::ShardMap;
use lanmesh_bus::{
    Delivery, Destination, Envelope, HandlerOutcome, NodeId, Source, Subscription, Transport,
    handler_fn,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long the client may take to connect to the broker.
pub const PROBE_CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whom to connect to, and how.
#[derive(Debug, Clone)]
pub struct ProbeClientSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// The cluster whose probes to talk to.
    pub cluster_name: String,
    /// Shards of the cluster (must be the nodes' `cluster.n_shards`).
    pub n_shards: u16,
    /// The client's node id is `{client_id_prefix}-` and 12 random hex digits.
    pub client_id_prefix: String,
    /// Deadlines of each request.
    pub request_policy: RequestPolicy,
}

/// A client of a cluster's probe entities.
pub struct ProbeClient {
    client_id: NodeId,
    transport: AmqpTransport,
    requester: Arc<Requester>,
    shard_map: ShardMap,
    policy: RequestPolicy,
    inbox: Mutex<Option<Subscription>>,
}

impl ProbeClient {
    /// Connects (waiting at most [`PROBE_CLIENT_CONNECT_TIMEOUT`]) and subscribes the inbox.
    pub async fn connect(settings: &ProbeClientSettings) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let client_id = NodeId::new(format!(
            "{}-{}",
            settings.client_id_prefix,
            suffix.get(..12).unwrap_or(&suffix)
        ))?;
        let shard_map = ShardMap::new(settings.n_shards).context("n_shards must be positive")?;
        let transport = AmqpTransport::start(client_amqp_config(
            &settings.amqp_url,
            &settings.cluster_name,
            settings.n_shards,
            client_id.clone(),
        ));
        transport
            .wait_until_ready(PROBE_CLIENT_CONNECT_TIMEOUT)
            .await
            .context("connecting the probe client")?;
        let requester = Requester::new(client_id.clone(), Arc::new(transport.clone()));
        let pushes = handler_fn(|_delivery: Delivery| async { HandlerOutcome::Ack });
        let inbox = transport
            .subscribe(
                Source::NodeInbox(client_id.clone()),
                requester.inbox_handler(pushes),
            )
            .await
            .context("subscribing the probe client's inbox")?;
        Ok(Self {
            client_id,
            transport,
            requester,
            shard_map,
            policy: settings.request_policy,
            inbox: Mutex::new(Some(inbox)),
        })
    }

    /// Sends `request` to probe `probe_id` and decodes its reply.
    pub async fn request(
        &self,
        probe_id: &str,
        request: &ProbeRequest,
    ) -> anyhow::Result<ProbeReply> {
        let address = EntityKind::Probe.address(probe_id)?;
        let destination = Destination::Shard(self.shard_map.shard_for(&address));
        let envelope = Envelope::new(address, self.client_id.clone(), probe::encode(request)?);
        let reply = self
            .requester
            .request(&destination, envelope, &self.policy)
            .await
            .with_context(|| format!("probe {probe_id}: {request:?} to {destination}"))?;
        probe::decode::<ProbeReply>(&reply.payload)
            .with_context(|| format!("probe {probe_id}: undecodable reply to {request:?}"))
    }

    /// Sends `Record { seq }`; returns the probe's `n_applied`.
    pub async fn record(&self, probe_id: &str, seq: u64) -> anyhow::Result<u64> {
        match self
            .request(probe_id, &ProbeRequest::Record { seq })
            .await?
        {
            ProbeReply::Recorded { n_applied } => Ok(n_applied),
            other => bail!("probe {probe_id}: Record {{ seq: {seq} }} answered {other:?}"),
        }
    }

    /// Asks probe `probe_id` to send one bump to probe `target_id`.
    pub async fn relay(&self, probe_id: &str, target_id: &str) -> anyhow::Result<()> {
        let request = ProbeRequest::Relay {
            target_id: target_id.to_owned(),
        };
        match self.request(probe_id, &request).await? {
            ProbeReply::Relayed => Ok(()),
            other => bail!("probe {probe_id}: {request:?} answered {other:?}"),
        }
    }

    /// What probe `probe_id` recorded.
    pub async fn inspect(&self, probe_id: &str) -> anyhow::Result<ProbeReport> {
        match self.request(probe_id, &ProbeRequest::Inspect).await? {
            ProbeReply::Report(report) => Ok(report),
            other => bail!("probe {probe_id}: Inspect answered {other:?}"),
        }
    }

    /// Cancels the inbox subscription and closes the connection.
    pub async fn close(&self) {
        let inbox_opt = self
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(inbox) = inbox_opt {
            inbox.cancel().await;
        }
        self.transport.close().await;
    }
}
