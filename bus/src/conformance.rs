//! The transport conformance suite: one set of behavioural checks every [`Transport`] passes.
//!
//! Each check is a plain async function taking a [`ConformanceHarness`]; the
//! [`transport_conformance_suite!`](crate::transport_conformance_suite) macro turns them into one
//! test each for a given harness. The bus runs it against the in-process transport; the
//! integration suite runs it against RabbitMQ.
//!
//! Harnesses must configure [`CONFORMANCE_N_SHARDS`] shards and a delivery limit of
//! [`CONFORMANCE_DELIVERY_LIMIT`].
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "this module is test code shipped for reuse"
)]

use crate::address::{EntityAddress, NodeId, ShardId};
use crate::envelope::Envelope;
use crate::request_reply::{RequestPolicy, Requester, build_reply, reply_options};
use crate::transport::{
    DEAD_LETTER_DELIVERY_LIMIT, DEAD_LETTER_REJECTED, Delivery, Destination, HandlerOutcome,
    PublishOptions, Source, Subscription, Transport, TransportError, handler_fn,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Shards a conformance harness must configure.
pub const CONFORMANCE_N_SHARDS: u16 = 2;
/// Delivery limit a conformance harness must configure.
pub const CONFORMANCE_DELIVERY_LIMIT: u32 = 2;

/// How long any single expected event may take.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Gives the suite access to one fresh bus (an isolated cluster on a broker, or a fresh
/// in-process transport).
#[async_trait]
pub trait ConformanceHarness: Send + Sync {
    /// Another handle to the same bus; for a broker, a new connection (so handles fail
    /// independently, like separate nodes).
    async fn connect(&self) -> Arc<dyn Transport>;

    /// Removes whatever the test left on the broker.
    async fn cleanup(&self);
}

/// Generates one `#[tokio::test]` per conformance check. `$make_harness` is an async function
/// taking the test name and returning `Option<impl ConformanceHarness>`; `None` means the test
/// is skipped (the function prints why).
#[macro_export]
macro_rules! transport_conformance_suite {
    ($make_harness:path) => {
        $crate::transport_conformance_suite!(@cases $make_harness;
            published_messages_are_consumed_in_order_and_acked,
            retry_redelivers_with_a_raised_count,
            delivery_limit_dead_letters,
            reject_dead_letters_at_once,
            single_active_consumer_fails_over,
            abort_redelivers_to_the_next_consumer,
            cancel_finishes_the_delivery_in_hand,
            node_inbox_receives_pushes_and_is_exclusive,
            broadcast_reaches_every_subscribed_node_once,
            request_reply_retries_with_the_same_msg_id,
            closed_transport_refuses_work
        );
    };
    (@cases $make_harness:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(harness) = $make_harness(stringify!($case)).await else {
                    return;
                };
                $crate::conformance::$case(&harness).await;
                $crate::conformance::ConformanceHarness::cleanup(&harness).await;
            }
        )*
    };
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

fn message(label: &str) -> Envelope {
    Envelope::new(
        EntityAddress::new("probe", label).expect("valid address"),
        node("conformance"),
        label.as_bytes().to_vec(),
    )
}

fn label(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.envelope.payload).into_owned()
}

async fn publish(transport: &dyn Transport, destination: &Destination, envelope: Envelope) {
    transport
        .publish(destination, envelope, &PublishOptions::default())
        .await
        .expect("publish confirmed");
}

async fn next(receiver: &mut mpsc::UnboundedReceiver<Delivery>, waiting_for: &str) -> Delivery {
    tokio::time::timeout(EVENT_TIMEOUT, receiver.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {waiting_for}"))
        .expect("subscription alive")
}

/// Subscribes with a handler that records every delivery and answers with `outcome`.
async fn recording_subscription(
    transport: &dyn Transport,
    source: Source,
    outcome: fn(&Delivery) -> HandlerOutcome,
) -> (Subscription, mpsc::UnboundedReceiver<Delivery>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let handler = handler_fn(move |delivery: Delivery| {
        let decided = outcome(&delivery);
        let _ = sender.send(delivery);
        async move { decided }
    });
    let subscription = transport
        .subscribe(source, handler)
        .await
        .expect("subscribe");
    (subscription, receiver)
}

const SHARD_0: Destination = Destination::Shard(ShardId(0));

/// Messages published before anyone listens are kept, delivered in order, and gone once acked.
pub async fn published_messages_are_consumed_in_order_and_acked(harness: &dyn ConformanceHarness) {
    let transport = harness.connect().await;
    let labels: Vec<String> = (0..20).map(|index| format!("m{index}")).collect();
    for label in &labels {
        publish(&*transport, &SHARD_0, message(label)).await;
    }
    let (subscription, mut received) =
        recording_subscription(&*transport, Source::Shard(ShardId(0)), |_| {
            HandlerOutcome::Ack
        })
        .await;
    for expected in &labels {
        let delivery = next(&mut received, expected).await;
        assert_eq!(&label(&delivery), expected, "queue order");
        assert_eq!(delivery.delivery_count, 0);
        assert!(!delivery.is_redelivery());
    }
    subscription.cancel().await;
    publish(&*transport, &SHARD_0, message("sentinel")).await;
    let (subscription, mut received) =
        recording_subscription(&*transport, Source::Shard(ShardId(0)), |_| {
            HandlerOutcome::Ack
        })
        .await;
    assert_eq!(
        label(&next(&mut received, "sentinel").await),
        "sentinel",
        "acked messages must not come back"
    );
    subscription.cancel().await;
}

/// `Retry` hands the message back; it returns with its delivery count raised.
pub async fn retry_redelivers_with_a_raised_count(harness: &dyn ConformanceHarness) {
    let transport = harness.connect().await;
    publish(&*transport, &SHARD_0, message("flaky")).await;
    let (subscription, mut received) =
        recording_subscription(&*transport, Source::Shard(ShardId(0)), |delivery| {
            if delivery.is_redelivery() {
                HandlerOutcome::Ack
            } else {
                HandlerOutcome::Retry
            }
        })
        .await;
    let first = next(&mut received, "first delivery").await;
    let second = next(&mut received, "redelivery").await;
    assert_eq!(first.envelope.msg_id, second.envelope.msg_id);
    assert_eq!((first.delivery_count, second.delivery_count), (0, 1));
    subscription.cancel().await;
}

/// A message retried past the delivery limit lands in the dead letters, marked as such.
pub async fn delivery_limit_dead_letters(harness: &dyn ConformanceHarness) {
    let transport = harness.connect().await;
    let (dead_subscription, mut dead_letters) =
        recording_subscription(&*transport, Source::DeadLetters, |_| HandlerOutcome::Ack).await;
    let poison = message("poison");
    let poison_id = poison.msg_id;
    publish(&*transport, &SHARD_0, poison).await;
    let (subscription, mut received) =
        recording_subscription(&*transport, Source::Shard(ShardId(0)), |_| {
            HandlerOutcome::Retry
        })
        .await;
    let dead = next(&mut dead_letters, "dead letter").await;
    assert_eq!(dead.envelope.msg_id, poison_id);
    assert_eq!(
        dead.dead_letter_reason_opt.as_deref(),
        Some(DEAD_LETTER_DELIVERY_LIMIT)
    );
    let mut n_attempts = 0;
    while let Ok(attempt) = received.try_recv() {
        assert_eq!(attempt.envelope.msg_id, poison_id);
        n_attempts += 1;
    }
    assert_eq!(
        n_attempts,
        CONFORMANCE_DELIVERY_LIMIT + 1,
        "one delivery plus the limit"
    );
    subscription.cancel().await;
    dead_subscription.cancel().await;
}

/// `Reject` dead-letters at once, without redelivery.
pub async fn reject_dead_letters_at_once(harness: &dyn ConformanceHarness) {
    let transport = harness.connect().await;
    let (dead_subscription, mut dead_letters) =
        recording_subscription(&*transport, Source::DeadLetters, |_| HandlerOutcome::Ack).await;
    let (subscription, mut received) =
        recording_subscription(&*transport, Source::Shard(ShardId(1)), |delivery| {
            if label(delivery) == "bad" {
                HandlerOutcome::Reject
            } else {
                HandlerOutcome::Ack
            }
        })
        .await;
    let shard_1 = Destination::Shard(ShardId(1));
    publish(&*transport, &shard_1, message("bad")).await;
    publish(&*transport, &shard_1, message("good")).await;
    assert_eq!(label(&next(&mut received, "bad").await), "bad");
    assert_eq!(
        label(&next(&mut received, "good").await),
        "good",
        "a rejected message is not redelivered"
    );
    let dead = next(&mut dead_letters, "dead letter").await;
    assert_eq!(label(&dead), "bad");
    assert_eq!(
        dead.dead_letter_reason_opt.as_deref(),
        Some(DEAD_LETTER_REJECTED)
    );
    subscription.cancel().await;
    dead_subscription.cancel().await;
}

/// Of two subscribers to a shard only the first receives; the second takes over when the first
/// leaves, and no message reaches both.
pub async fn single_active_consumer_fails_over(harness: &dyn ConformanceHarness) {
    let first_transport = harness.connect().await;
    let second_transport = harness.connect().await;
    let (first, mut first_received) =
        recording_subscription(&*first_transport, Source::Shard(ShardId(0)), |_| {
            HandlerOutcome::Ack
        })
        .await;
    let (second, mut second_received) =
        recording_subscription(&*second_transport, Source::Shard(ShardId(0)), |_| {
            HandlerOutcome::Ack
        })
        .await;
    for index in 0..5 {
        publish(&*first_transport, &SHARD_0, message(&format!("a{index}"))).await;
    }
    for index in 0..5 {
        assert_eq!(
            label(&next(&mut first_received, "active consumer").await),
            format!("a{index}")
        );
    }
    first.cancel().await;
    for index in 0..5 {
        publish(&*first_transport, &SHARD_0, message(&format!("b{index}"))).await;
    }
    for index in 0..5 {
        assert_eq!(
            label(&next(&mut second_received, "standby consumer").await),
            format!("b{index}")
        );
    }
    assert!(
        first_received.try_recv().is_err(),
        "the cancelled consumer got more"
    );
    second.cancel().await;
}

/// A consumer that dies holding a message gets it redelivered to the next consumer, marked as a
/// redelivery.
pub async fn abort_redelivers_to_the_next_consumer(harness: &dyn ConformanceHarness) {
    let first_transport = harness.connect().await;
    let second_transport = harness.connect().await;
    let (taken_sender, taken_receiver) = oneshot::channel::<()>();
    let taken_sender = Mutex::new(Some(taken_sender));
    let stuck_handler = handler_fn(move |_delivery: Delivery| {
        if let Some(sender) = taken_sender.lock().expect("lock").take() {
            let _ = sender.send(());
        }
        std::future::pending::<HandlerOutcome>()
    });
    let stuck = first_transport
        .subscribe(Source::Shard(ShardId(0)), stuck_handler)
        .await
        .expect("subscribe");
    let (standby, mut standby_received) =
        recording_subscription(&*second_transport, Source::Shard(ShardId(0)), |_| {
            HandlerOutcome::Ack
        })
        .await;
    publish(&*first_transport, &SHARD_0, message("orphan")).await;
    tokio::time::timeout(EVENT_TIMEOUT, taken_receiver)
        .await
        .expect("first consumer received the message")
        .expect("signal");
    stuck.abort().await;
    let redelivered = next(&mut standby_received, "redelivery to the standby").await;
    assert_eq!(label(&redelivered), "orphan");
    assert!(redelivered.is_redelivery());
    standby.cancel().await;
}

/// Cancelling lets the delivery in hand finish and be acknowledged; the rest go to the next
/// subscriber.
pub async fn cancel_finishes_the_delivery_in_hand(harness: &dyn ConformanceHarness) {
    let transport = harness.connect().await;
    let (in_hand_sender, in_hand_receiver) = oneshot::channel::<()>();
    let (release_sender, release_receiver) = oneshot::channel::<()>();
    let gates = Arc::new(Mutex::new((Some(in_hand_sender), Some(release_receiver))));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let handled = Arc::clone(&handled);
        handler_fn(move |delivery: Delivery| {
            let gates = Arc::clone(&gates);
            let handled = Arc::clone(&handled);
            async move {
                let (in_hand, release) = {
                    let mut gates = gates.lock().expect("lock");
                    (gates.0.take(), gates.1.take())
                };
                if let (Some(in_hand), Some(release)) = (in_hand, release) {
                    let _ = in_hand.send(());
                    let _ = release.await;
                }
                handled.lock().expect("lock").push(label(&delivery));
                HandlerOutcome::Ack
            }
        })
    };
    let subscription = transport
        .subscribe(Source::Shard(ShardId(0)), handler)
        .await
        .expect("subscribe");
    publish(&*transport, &SHARD_0, message("first")).await;
    publish(&*transport, &SHARD_0, message("second")).await;
    tokio::time::timeout(EVENT_TIMEOUT, in_hand_receiver)
        .await
        .expect("first in hand")
        .expect("signal");
    let cancelling = tokio::spawn(subscription.cancel());
    let _ = release_sender.send(());
    tokio::time::timeout(EVENT_TIMEOUT, cancelling)
        .await
        .expect("cancel completes")
        .expect("cancel task");
    assert_eq!(*handled.lock().expect("lock"), vec!["first".to_owned()]);
    let (next_subscription, mut received) =
        recording_subscription(&*transport, Source::Shard(ShardId(0)), |_| {
            HandlerOutcome::Ack
        })
        .await;
    assert_eq!(
        label(&next(&mut received, "the message not yet handled").await),
        "second",
        "the handled message was acknowledged before the cancel returned"
    );
    next_subscription.cancel().await;
}

/// A node inbox exists only while subscribed, takes pushes, and admits one subscriber.
pub async fn node_inbox_receives_pushes_and_is_exclusive(harness: &dyn ConformanceHarness) {
    let transport = harness.connect().await;
    let other_transport = harness.connect().await;
    let inbox_node = node("inbox-node");
    let to_inbox = Destination::Node(inbox_node.clone());
    let before = transport
        .publish(&to_inbox, message("early"), &PublishOptions::default())
        .await;
    assert!(
        matches!(before, Err(TransportError::Unroutable { .. })),
        "push to an absent node: {before:?}"
    );
    let (subscription, mut received) =
        recording_subscription(&*transport, Source::NodeInbox(inbox_node.clone()), |_| {
            HandlerOutcome::Ack
        })
        .await;
    let second = other_transport
        .subscribe(
            Source::NodeInbox(inbox_node.clone()),
            handler_fn(|_| async { HandlerOutcome::Ack }),
        )
        .await;
    assert!(
        matches!(second, Err(TransportError::AlreadySubscribed { .. })),
        "second inbox subscriber: {second:?}"
    );
    let push_options = PublishOptions {
        expiration_opt: Some(Duration::from_secs(30)),
        ..PublishOptions::default()
    };
    other_transport
        .publish(&to_inbox, message("push"), &push_options)
        .await
        .expect("push");
    assert_eq!(label(&next(&mut received, "push").await), "push");
    subscription.cancel().await;
    wait_until_unroutable(&*transport, &to_inbox).await;
}

/// Publishes to `destination` until it is unroutable (its queues go away asynchronously on a
/// broker), failing after [`EVENT_TIMEOUT`].
async fn wait_until_unroutable(transport: &dyn Transport, destination: &Destination) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let after = transport
            .publish(destination, message("late"), &PublishOptions::default())
            .await;
        if matches!(after, Err(TransportError::Unroutable { .. })) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{destination} still routable after its subscribers left: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A broadcast reaches every subscribed node exactly once and in order; with nobody subscribed
/// it is unroutable; each node's broadcast source admits one subscriber; a stopped subscription
/// receives no more.
pub async fn broadcast_reaches_every_subscribed_node_once(harness: &dyn ConformanceHarness) {
    let first_transport = harness.connect().await;
    let second_transport = harness.connect().await;
    let publisher = harness.connect().await;
    let broadcast_options = PublishOptions {
        expiration_opt: Some(Duration::from_secs(30)),
        ..PublishOptions::default()
    };
    let before = publisher
        .publish(
            &Destination::Broadcast,
            message("early"),
            &broadcast_options,
        )
        .await;
    assert!(
        matches!(before, Err(TransportError::Unroutable { .. })),
        "broadcast with nobody listening: {before:?}"
    );
    let first_node = node("broadcast-first");
    let second_node = node("broadcast-second");
    let (first, mut first_received) = recording_subscription(
        &*first_transport,
        Source::Broadcast(first_node.clone()),
        |_| HandlerOutcome::Ack,
    )
    .await;
    let (second, mut second_received) = recording_subscription(
        &*second_transport,
        Source::Broadcast(second_node.clone()),
        |_| HandlerOutcome::Ack,
    )
    .await;
    for (transport, what) in [
        (&publisher, "from another connection"),
        (&first_transport, "from the same connection"),
    ] {
        let duplicate = transport
            .subscribe(
                Source::Broadcast(first_node.clone()),
                handler_fn(|_| async { HandlerOutcome::Ack }),
            )
            .await;
        assert!(
            matches!(duplicate, Err(TransportError::AlreadySubscribed { .. })),
            "second broadcast subscriber {what}: {duplicate:?}"
        );
    }
    let labels: Vec<String> = (0..5).map(|index| format!("b{index}")).collect();
    for label in labels.iter().chain(std::iter::once(&"sentinel".to_owned())) {
        publisher
            .publish(&Destination::Broadcast, message(label), &broadcast_options)
            .await
            .expect("broadcast confirmed");
    }
    for (received, who) in [
        (&mut first_received, "first node"),
        (&mut second_received, "second node"),
    ] {
        for expected in labels.iter().chain(std::iter::once(&"sentinel".to_owned())) {
            let delivery = next(received, &format!("{expected} at the {who}")).await;
            assert_eq!(&label(&delivery), expected, "broadcast order at the {who}");
            assert!(!delivery.is_redelivery());
        }
        assert!(
            received.try_recv().is_err(),
            "the {who} received a broadcast twice"
        );
    }
    first.cancel().await;
    publisher
        .publish(
            &Destination::Broadcast,
            message("after"),
            &broadcast_options,
        )
        .await
        .expect("broadcast with one node left");
    assert_eq!(
        label(&next(&mut second_received, "after at the second node").await),
        "after"
    );
    assert!(
        first_received.try_recv().is_err(),
        "a stopped broadcast subscription received"
    );
    second.cancel().await;
    wait_until_unroutable(&*publisher, &Destination::Broadcast).await;
}

/// A request whose first reply is lost is sent again with the same `msg_id` and answered.
pub async fn request_reply_retries_with_the_same_msg_id(harness: &dyn ConformanceHarness) {
    let server_transport = harness.connect().await;
    let client_transport = harness.connect().await;
    let client_node = node("client-node");
    let seen: Arc<Mutex<HashMap<uuid::Uuid, u32>>> = Arc::default();
    let server = {
        let seen = Arc::clone(&seen);
        let transport = Arc::clone(&server_transport);
        handler_fn(move |delivery: Delivery| {
            let seen = Arc::clone(&seen);
            let transport = Arc::clone(&transport);
            async move {
                let request = delivery.envelope;
                let n_seen = {
                    let mut seen = seen.lock().expect("lock");
                    let count = seen.entry(request.msg_id).or_default();
                    *count += 1;
                    *count
                };
                if n_seen == 1 {
                    // Lose the first reply, as if the node died before sending it.
                    return HandlerOutcome::Ack;
                }
                let mut payload = b"re:".to_vec();
                payload.extend_from_slice(&request.payload);
                let (destination, reply) =
                    build_reply(&request, node("server-node"), payload).expect("reply_to set");
                let options = reply_options(&reply);
                match transport.publish(&destination, reply, &options).await {
                    Ok(()) => HandlerOutcome::Ack,
                    Err(_) => HandlerOutcome::Retry,
                }
            }
        })
    };
    let server_subscription = server_transport
        .subscribe(Source::Shard(ShardId(1)), server)
        .await
        .expect("server subscribe");
    let requester = Requester::new(client_node.clone(), Arc::clone(&client_transport));
    let inbox = client_transport
        .subscribe(
            Source::NodeInbox(client_node),
            requester.inbox_handler(handler_fn(|_| async { HandlerOutcome::Ack })),
        )
        .await
        .expect("inbox subscribe");
    let policy = RequestPolicy {
        attempt_timeout: Duration::from_millis(300),
        total_timeout: EVENT_TIMEOUT,
    };
    let request = message("ping");
    let request_id = request.msg_id;
    let reply = requester
        .request(&Destination::Shard(ShardId(1)), request, &policy)
        .await
        .expect("reply");
    assert_eq!(reply.payload, b"re:ping");
    assert_eq!(reply.correlation_id_opt, Some(request_id));
    assert_eq!(seen.lock().expect("lock").get(&request_id), Some(&2));
    server_subscription.cancel().await;
    inbox.cancel().await;
}

/// After `close`, publishing and subscribing fail with `Closed` and the transport is not ready.
pub async fn closed_transport_refuses_work(harness: &dyn ConformanceHarness) {
    let transport = harness.connect().await;
    transport.close().await;
    assert!(!transport.is_ready());
    let result = transport
        .publish(&SHARD_0, message("after close"), &PublishOptions::default())
        .await;
    assert!(
        matches!(result, Err(TransportError::Closed)),
        "publish after close: {result:?}"
    );
}
