//! Certification at a window's end (S0 step 4): every `venues.certification_sweep_ms` a node
//! looks at the gateways whose shard it owns and certifies each one whose monitoring window
//! has ended, under the policy in force, from both monitors' figures over that window.
//!
//! Reading the first monitor's figures is I/O (the presence store), so this runs on the node
//! rather than in the gateway entity; the entity keeps the decision safe: it certifies a
//! window only while it is the gateway's current one and over, so two nodes sweeping the same
//! gateway during an ownership change, or a retried request, decide nothing twice. A node
//! remembers when each gateway is next due and asks it nothing before then.

use crate::edge::Edge;
use crate::edge::gateway_ops::inspect_gateway;
use lanmesh_actors::entities::certification_policy::{PolicyReply, PolicyRequest};
use lanmesh_actors::entities::gateway::{GatewayReply, GatewayRequest};
use lanmesh_actors::model::certification::{CertificationOutcome, CertificationPolicy};
use lanmesh_actors::model::entity_kind::{CERTIFICATION_POLICY_ID, EntityKind};
use lanmesh_actors::model::gateway::{ClientFigures, GatewayError, window_due_unix_ms};
use lanmesh_actors::model::segment::Segment;
use lanmesh_bus::membership::ClusterView;
use lanmesh_bus::rendezvous::owner_of;
use lanmesh_bus::{EntityAddress, NodeId};
use lanmesh_storage::{PresenceSampleStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How long a rejected gateway is left alone before it is looked at again (an amendment starts
/// a new window, which the next look finds).
const REJECTED_RECHECK_MS: u64 = 3_600_000;

/// The first monitor's figures over `[from, to)`, summed over `segments`.
pub async fn client_figures(
    presence: &dyn PresenceSampleStore,
    segments: &[Segment],
    from_ms: u64,
    to_ms: u64,
) -> Result<ClientFigures, StoreError> {
    let as_i64 = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
    let mut total = ClientFigures::default();
    for segment in segments {
        let figures = presence
            .window_figures(&segment.to_string(), as_i64(from_ms), as_i64(to_ms))
            .await?;
        total.logins += figures.n_logins;
        total.distinct_accounts += figures.n_distinct_accounts;
        total.peak_concurrent += figures.peak_concurrent;
        total.online_ms += figures.online_ms;
    }
    Ok(total)
}

/// What the sweep needs besides the edge.
pub struct SweepDependencies {
    /// Where the first monitor's samples are.
    pub presence: Arc<dyn PresenceSampleStore>,
    /// The membership view: which shards this node owns.
    pub view: watch::Receiver<ClusterView>,
    /// How often to sweep.
    pub interval: Duration,
}

/// One node's sweep: when each of its gateways is next due, under one policy version.
struct Sweep {
    edge: Weak<Edge>,
    dependencies: SweepDependencies,
    policy_version: u64,
    next_look_unix_ms: HashMap<String, u64>,
}

/// Sweeps every `dependencies.interval` until the edge is dropped.
pub fn spawn(edge: &Arc<Edge>, dependencies: SweepDependencies) {
    let mut sweep = Sweep {
        edge: Arc::downgrade(edge),
        dependencies,
        policy_version: 0,
        next_look_unix_ms: HashMap::new(),
    };
    actix_web::rt::spawn(async move {
        let mut ticker = tokio::time::interval(sweep.dependencies.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(edge) = sweep.edge.upgrade() else {
                return;
            };
            sweep.run_once(&edge).await;
        }
    });
}

/// Whether `node` owns the shard of gateway `gateway_id` among `view`'s assignable nodes.
fn owns_gateway(edge: &Edge, view: &ClusterView, node: &NodeId, gateway_id: &str) -> bool {
    let Ok(address) = EntityAddress::new(EntityKind::Gateway.as_str(), gateway_id) else {
        return false;
    };
    let shard = edge.deps.shard_map.shard_for(&address);
    owner_of(shard, &view.assignable) == Some(node)
}

impl Sweep {
    async fn run_once(&mut self, edge: &Edge) {
        let view = self.dependencies.view.borrow().clone();
        if !view.self_settled {
            // Not a shard owner yet (or any more): nothing here to sweep.
            return;
        }
        let policy = match edge
            .ask_entity(
                EntityKind::CertificationPolicy,
                CERTIFICATION_POLICY_ID,
                &PolicyRequest::Current,
                None,
            )
            .await
        {
            Ok(PolicyReply::Current(Some(policy))) => policy,
            // No policy yet: nothing can be certified.
            Ok(PolicyReply::Current(None)) => return,
            Ok(other) => {
                tracing::error!(reply = ?other, "unexpected answer from the certification policy");
                return;
            }
            Err(error) => {
                tracing::debug!(error = %error.message, "certification policy not reachable; sweep skipped");
                return;
            }
        };
        if policy.version != self.policy_version {
            // Another window length may move every due time.
            self.policy_version = policy.version;
            self.next_look_unix_ms.clear();
        }
        let gateway_ids = edge.venues.gateway_ids();
        self.next_look_unix_ms
            .retain(|gateway_id, _| gateway_ids.contains(gateway_id));
        let node_id = edge.deps.node_id.clone();
        for gateway_id in gateway_ids {
            let now = edge.clock().now_unix_ms();
            if !owns_gateway(edge, &view, &node_id, &gateway_id)
                || self
                    .next_look_unix_ms
                    .get(&gateway_id)
                    .is_some_and(|next| *next > now)
            {
                continue;
            }
            match self.look_at(edge, &policy, &gateway_id, now).await {
                Ok(next_look) => {
                    self.next_look_unix_ms.insert(gateway_id, next_look);
                }
                Err(reason) => {
                    tracing::warn!(gateway = %gateway_id, reason = %reason, "gateway not swept; retried next sweep");
                }
            }
        }
    }

    /// Certifies `gateway_id` if its window has ended; returns when to look at it next.
    async fn look_at(
        &self,
        edge: &Edge,
        policy: &CertificationPolicy,
        gateway_id: &str,
        now: u64,
    ) -> Result<u64, String> {
        let view = match inspect_gateway(edge, gateway_id).await {
            Ok(Ok(view)) => view,
            Ok(Err(refusal)) => return Err(format!("refused: {refusal:?}")),
            Err(error) => return Err(error.message),
        };
        let window_start = view.window_start_unix_ms;
        let Some(due) = window_due_unix_ms(view.status, window_start, policy.window_days) else {
            return Ok(now + REJECTED_RECHECK_MS);
        };
        if now < due {
            return Ok(due);
        }
        let client = client_figures(
            self.dependencies.presence.as_ref(),
            &view.registration.segments,
            window_start,
            due,
        )
        .await
        .map_err(|error| format!("segment figures not readable: {error}"))?;
        let request = GatewayRequest::CertifyWindowEnd {
            policy: policy.clone(),
            client,
            window_start_unix_ms: window_start,
        };
        match edge
            .ask_entity(EntityKind::Gateway, gateway_id, &request, None)
            .await
        {
            Ok(GatewayReply::Certified(record)) => {
                let metrics = &edge.deps.metrics;
                match &record.outcome {
                    CertificationOutcome::Certified { tier, .. } => {
                        metrics.window_end_certified.inc();
                        tracing::info!(gateway = %gateway_id, tier = %tier, window_start, "gateway certified at its window's end");
                    }
                    CertificationOutcome::Rejected { reasons, .. } => {
                        metrics.window_end_rejected.inc();
                        tracing::info!(gateway = %gateway_id, n_reasons = reasons.len(), window_start, "gateway rejected at its window's end");
                    }
                }
                // The next window may be over too (a node was down for days): look again.
                Ok(now)
            }
            // Another node decided this window meanwhile: look again.
            Ok(GatewayReply::Refused(GatewayError::WindowNotDue { .. })) => Ok(now),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(error) => Err(error.message),
        }
    }
}
