//! Raw lapin pieces the baselines share: the broker operations lanmesh's AMQP transport makes
//! (durable quorum queues, persistent mandatory publishes, publisher confirms), without lanmesh.

use anyhow::Context;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer, PublisherConfirm};

/// AMQP delivery mode of messages that survive a broker restart.
pub const PERSISTENT: u8 = 2;
/// AMQP delivery mode of messages that need not (lanmesh's replies to node inboxes).
pub const TRANSIENT: u8 = 1;

/// A queue name no other run uses.
pub fn unique_queue_name(purpose: &str) -> String {
    format!("lanmesh-bench-{purpose}-{}", uuid::Uuid::new_v4().simple())
}

/// Declares a durable quorum queue, like lanmesh's shard queues.
pub async fn declare_quorum_queue(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .with_context(|| format!("declaring quorum queue {queue}"))?;
    Ok(())
}

/// A new channel with publisher confirms selected.
pub async fn confirm_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("selecting publisher confirms")?;
    Ok(channel)
}

/// Sets `channel`'s prefetch to `prefetch`, then consumes `queue` on it as `consumer_tag`
/// (explicit acknowledgements).
pub async fn consume_with_prefetch(
    channel: &Channel,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
) -> anyhow::Result<Consumer> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .context("setting the prefetch")?;
    channel
        .basic_consume(
            queue.into(),
            consumer_tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))
}

/// Publishes `body` with the mandatory flag; the returned future resolves to the broker's
/// confirm (check it with [`ensure_acked`]).
pub async fn publish_mandatory(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<PublisherConfirm> {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
        .context("raw publish")
}

/// Fails unless the broker confirmed the message and did not return it.
pub fn ensure_acked(confirmation: Result<Confirmation, lapin::Error>) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(confirmation?, Confirmation::Ack(None)),
        "raw publish not acked"
    );
    Ok(())
}
