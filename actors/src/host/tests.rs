//! The entity host against a real SQLite file and the in-process bus: exactly-once application
//! with cached replies, passivation and restore, the live-entity cap, fencing, and messages
//! between entities.

use crate::entities::probe::{self, ProbeEntity, ProbeReply, ProbeReport, ProbeRequest};
use crate::host::entity_host::{EntityHost, HostConfig, HostDependencies, HostedKinds};
use crate::host::metrics::HostMetrics;
use crate::model::entity_kind::EntityKind;
use lanmesh_bus::in_process::{InProcessConfig, InProcessTransport};
use lanmesh_bus::shard_map::ShardMap;
use lanmesh_bus::{
    Delivery, Envelope, HandlerOutcome, NodeId, ShardId, Source, Subscription, Transport,
    handler_fn,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const N_SHARDS: u16 = 8;

struct Fixture {
    _directory: tempfile::TempDir,
    host: Arc<EntityHost>,
    metrics: HostMetrics,
    transport: Arc<dyn Transport>,
    client: NodeId,
    replies: mpsc::UnboundedReceiver<Arc<Envelope>>,
    fenced: mpsc::UnboundedReceiver<ShardId>,
    _inbox: Subscription,
    shard_map: ShardMap,
}

async fn fixture(config: HostConfig) -> Fixture {
    let directory = tempfile::tempdir().unwrap();
    let storage = lanmesh_storage::StorageConfig {
        sqlite: lanmesh_storage::SqliteConfig {
            path: directory.path().join("host.db"),
            ..lanmesh_storage::SqliteConfig::default()
        },
        scylla: None,
    };
    let stores = lanmesh_storage::open(&storage).await.unwrap();
    let transport: Arc<dyn Transport> = Arc::new(InProcessTransport::new(InProcessConfig {
        n_shards: N_SHARDS,
        delivery_limit: 5,
    }));
    let client = NodeId::new("client").unwrap();
    let (reply_sender, replies) = mpsc::unbounded_channel();
    let inbox = transport
        .subscribe(
            Source::NodeInbox(client.clone()),
            handler_fn(move |delivery: Delivery| {
                let reply_sender = reply_sender.clone();
                async move {
                    let _ = reply_sender.send(delivery.envelope);
                    HandlerOutcome::Ack
                }
            }),
        )
        .await
        .unwrap();
    let metrics = HostMetrics::default();
    let (fenced_sender, fenced) = mpsc::unbounded_channel();
    let shard_map = ShardMap::new(N_SHARDS).unwrap();
    let host = EntityHost::new(
        HostDependencies {
            node_id: NodeId::new("host-node").unwrap(),
            transport: Arc::clone(&transport),
            store: stores.entity_state,
            audit: stores.audit,
            presence: stores.presence,
            journal: stores.ledger_journal,
            shard_map,
            arbiters: vec![actix::Arbiter::current()],
            metrics: metrics.clone(),
            fenced_shards: fenced_sender,
            clock: crate::host::clock::DomainClock::system(),
        },
        HostedKinds::default().with::<ProbeEntity>(),
        config,
    );
    Fixture {
        _directory: directory,
        host,
        metrics,
        transport,
        client,
        replies,
        fenced,
        _inbox: inbox,
        shard_map,
    }
}

impl Fixture {
    fn request(&self, probe_id: &str, request: &ProbeRequest) -> Envelope {
        let address = EntityKind::Probe.address(probe_id).unwrap();
        let mut envelope = Envelope::new(
            address,
            self.client.clone(),
            probe::encode(request).unwrap(),
        )
        .with_timeout(Duration::from_secs(30));
        envelope.reply_to_opt = Some(self.client.clone());
        envelope
    }

    async fn deliver(&self, envelope: &Envelope, epoch: u64) -> HandlerOutcome {
        let shard = self.shard_map.shard_for(&envelope.target);
        let delivery = Delivery {
            envelope: Arc::new(envelope.clone()),
            delivery_count: 0,
            dead_letter_reason_opt: None,
        };
        self.host.deliver(delivery, shard, epoch).await
    }

    async fn next_reply(&mut self) -> (Arc<Envelope>, ProbeReply) {
        let envelope = tokio::time::timeout(Duration::from_secs(5), self.replies.recv())
            .await
            .expect("a reply within 5 s")
            .expect("inbox open");
        let reply = probe::decode(&envelope.payload).unwrap();
        (envelope, reply)
    }

    async fn inspect(&mut self, probe_id: &str, epoch: u64) -> ProbeReport {
        let request = self.request(probe_id, &ProbeRequest::Inspect);
        assert_eq!(self.deliver(&request, epoch).await, HandlerOutcome::Ack);
        match self.next_reply().await.1 {
            ProbeReply::Report(report) => report,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    async fn wait_until_live(&self, expected: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.host.n_live() != expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "live entities stayed at {} instead of {expected}",
                self.host.n_live()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[actix::test]
async fn a_redelivered_message_is_applied_once_and_gets_its_first_reply_again() {
    let mut fixture = fixture(HostConfig::default()).await;
    let first = fixture.request("p1", &ProbeRequest::Record { seq: 1 });
    assert_eq!(fixture.deliver(&first, 1).await, HandlerOutcome::Ack);
    let (reply, decoded) = fixture.next_reply().await;
    assert_eq!(reply.correlation_id_opt, Some(first.msg_id));
    assert_eq!(decoded, ProbeReply::Recorded { n_applied: 1 });

    let second = fixture.request("p1", &ProbeRequest::Record { seq: 2 });
    assert_eq!(fixture.deliver(&second, 1).await, HandlerOutcome::Ack);
    assert_eq!(
        fixture.next_reply().await.1,
        ProbeReply::Recorded { n_applied: 2 }
    );

    // The first message again (a crash before its ack): its first reply, nothing applied.
    assert_eq!(fixture.deliver(&first, 1).await, HandlerOutcome::Ack);
    let (reply, decoded) = fixture.next_reply().await;
    assert_eq!(reply.correlation_id_opt, Some(first.msg_id));
    assert_eq!(decoded, ProbeReply::Recorded { n_applied: 1 });
    assert_eq!(fixture.metrics.duplicates_dropped.get(), 1);

    let report = fixture.inspect("p1", 1).await;
    assert_eq!((report.n_applied, report.last_seq), (2, 2));
    assert!(report.gaps.is_empty());
}

#[actix::test]
async fn idle_entities_stop_and_come_back_with_their_state() {
    let mut fixture = fixture(HostConfig {
        passivate_after_idle: Duration::from_millis(50),
        max_live_entities: 100,
    })
    .await;
    actix::spawn(Arc::clone(&fixture.host).run_idle_sweep());
    let first = fixture.request("p2", &ProbeRequest::Record { seq: 1 });
    assert_eq!(fixture.deliver(&first, 1).await, HandlerOutcome::Ack);
    fixture.next_reply().await;
    fixture.wait_until_live(0).await;
    assert_eq!(fixture.metrics.entities_live.get(), 0);

    // Restored from storage, including what it has already applied.
    assert_eq!(fixture.deliver(&first, 1).await, HandlerOutcome::Ack);
    assert_eq!(
        fixture.next_reply().await.1,
        ProbeReply::Recorded { n_applied: 1 }
    );
    let second = fixture.request("p2", &ProbeRequest::Record { seq: 2 });
    assert_eq!(fixture.deliver(&second, 1).await, HandlerOutcome::Ack);
    assert_eq!(
        fixture.next_reply().await.1,
        ProbeReply::Recorded { n_applied: 2 }
    );
}

#[actix::test]
async fn live_entities_stay_under_the_cap_and_lose_nothing() {
    let mut fixture = fixture(HostConfig {
        passivate_after_idle: Duration::from_secs(3600),
        max_live_entities: 10,
    })
    .await;
    for round in 1..=2 {
        for index in 0..30 {
            let request = fixture.request(
                &format!("capped-{index}"),
                &ProbeRequest::Record { seq: round },
            );
            assert_eq!(fixture.deliver(&request, 1).await, HandlerOutcome::Ack);
            fixture.next_reply().await;
            assert!(fixture.host.n_live() <= 10, "{}", fixture.host.n_live());
        }
    }
    for index in 0..30 {
        let report = fixture.inspect(&format!("capped-{index}"), 1).await;
        assert_eq!(
            (report.n_applied, report.last_seq),
            (2, 2),
            "capped-{index}"
        );
    }
}

#[actix::test]
async fn an_owner_with_an_older_epoch_is_fenced() {
    let mut fixture = fixture(HostConfig::default()).await;
    let newer = fixture.request("p3", &ProbeRequest::Record { seq: 1 });
    assert_eq!(fixture.deliver(&newer, 5).await, HandlerOutcome::Ack);
    fixture.next_reply().await;

    let stale = fixture.request("p3", &ProbeRequest::Record { seq: 2 });
    assert_eq!(fixture.deliver(&stale, 4).await, HandlerOutcome::Retry);
    let shard = fixture.shard_map.shard_for(&stale.target);
    assert_eq!(fixture.fenced.recv().await, Some(shard));

    let report = fixture.inspect("p3", 5).await;
    assert_eq!(report.n_applied, 1);
    assert_eq!(report.owners.len(), 1);
    assert_eq!(report.owners.first().map(|span| span.epoch), Some(5));
}

#[actix::test]
async fn a_relay_sends_one_bump_even_when_redelivered() {
    let mut fixture = fixture(HostConfig::default()).await;
    let target = EntityKind::Probe.address("relay-target").unwrap();
    let (bump_sender, mut bumps) = mpsc::unbounded_channel();
    let _target_shard = fixture
        .transport
        .subscribe(
            Source::Shard(fixture.shard_map.shard_for(&target)),
            handler_fn(move |delivery: Delivery| {
                let bump_sender = bump_sender.clone();
                async move {
                    let _ = bump_sender.send(delivery.envelope);
                    HandlerOutcome::Ack
                }
            }),
        )
        .await
        .unwrap();
    let relay = fixture.request(
        "relay-source",
        &ProbeRequest::Relay {
            target_id: "relay-target".into(),
        },
    );
    assert_eq!(fixture.deliver(&relay, 1).await, HandlerOutcome::Ack);
    assert_eq!(fixture.next_reply().await.1, ProbeReply::Relayed);
    assert_eq!(fixture.deliver(&relay, 1).await, HandlerOutcome::Ack);
    assert_eq!(fixture.next_reply().await.1, ProbeReply::Relayed);

    let first = bumps.recv().await.unwrap();
    let second = bumps.recv().await.unwrap();
    assert_eq!(first.target, target);
    assert_eq!(
        first.sender_entity_opt,
        Some(EntityKind::Probe.address("relay-source").unwrap())
    );
    // Sent again with the same id, so the target applies it once.
    assert_eq!(first.msg_id, second.msg_id);
    assert_eq!(
        probe::decode::<ProbeRequest>(&first.payload).unwrap(),
        ProbeRequest::Bump
    );
}

#[actix::test]
async fn a_message_that_is_not_a_probe_message_is_dead_lettered() {
    let fixture = fixture(HostConfig::default()).await;
    let mut garbage = fixture.request("p4", &ProbeRequest::Inspect);
    garbage.payload = vec![0xc1];
    assert_eq!(fixture.deliver(&garbage, 1).await, HandlerOutcome::Reject);
    let mut unknown_kind = garbage.clone();
    unknown_kind.target = lanmesh_bus::EntityAddress::new("nobody", "x").unwrap();
    assert_eq!(
        fixture.deliver(&unknown_kind, 1).await,
        HandlerOutcome::Reject
    );
}
