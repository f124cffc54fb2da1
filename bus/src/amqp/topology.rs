//! The RabbitMQ topology of one cluster: names, queue arguments, idempotent declaration.
//!
//! Everything is prefixed with the cluster name, so several clusters (and parallel tests) can
//! share one broker:
//! - `{cluster}.shards`: direct exchange, routing key = shard number, bound to one durable
//!   quorum queue per shard, `{cluster}.shard.{n}`, with single active consumer, a delivery
//!   limit and at-least-once dead-lettering;
//! - `{cluster}.edge`: direct exchange, routing key = node id, bound to each node's exclusive
//!   inbox `{cluster}.inbox.{node}` while that node runs;
//! - `{cluster}.dead-letter`: fanout exchange feeding the quorum queue `{cluster}.dead-letters`;
//! - `{cluster}.broadcast`: fanout exchange (cluster membership heartbeats), bound to each node's
//!   exclusive, auto-delete classic queue `{cluster}.broadcast.{node}` while that node listens.
//!
//! Declaration runs on every (re)connection. Re-declaring with the same arguments is a no-op;
//! different arguments are refused by the broker (PRECONDITION_FAILED), which surfaces as a
//! typed error: change queue settings of a running cluster with a broker policy instead.

use crate::address::{NodeId, ShardId};
use crate::transport::{Destination, Source, TransportError};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

/// How many channels declare shard queues in parallel.
const N_DECLARE_CHANNELS: usize = 8;

/// The names and queue settings of one cluster's topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    cluster_name: String,
    n_shards: u16,
    delivery_limit: u32,
}

fn broker_error(operation: &'static str) -> impl Fn(lapin::Error) -> TransportError {
    move |error| TransportError::Broker {
        operation,
        reason: error.to_string(),
    }
}

impl Topology {
    /// The topology of cluster `cluster_name`.
    pub fn new(cluster_name: impl Into<String>, n_shards: u16, delivery_limit: u32) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            n_shards,
            delivery_limit,
        }
    }

    /// Direct exchange for entity messages.
    pub fn shards_exchange(&self) -> String {
        format!("{}.shards", self.cluster_name)
    }

    /// Direct exchange for node inboxes.
    pub fn edge_exchange(&self) -> String {
        format!("{}.edge", self.cluster_name)
    }

    /// Fanout exchange that receives dead letters.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.cluster_name)
    }

    /// Fanout exchange reaching every node's broadcast queue.
    pub fn broadcast_exchange(&self) -> String {
        format!("{}.broadcast", self.cluster_name)
    }

    /// Queue holding dead letters.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.cluster_name)
    }

    /// Queue of one shard.
    pub fn shard_queue(&self, shard: ShardId) -> String {
        format!("{}.shard.{}", self.cluster_name, shard.0)
    }

    /// Inbox queue of one node.
    pub fn node_inbox(&self, node: &NodeId) -> String {
        format!("{}.inbox.{}", self.cluster_name, node)
    }

    /// Broadcast queue of one node.
    pub fn broadcast_queue(&self, node: &NodeId) -> String {
        format!("{}.broadcast.{}", self.cluster_name, node)
    }

    /// Exchange and routing key that reach `destination`.
    pub fn route(&self, destination: &Destination) -> (String, String) {
        match destination {
            Destination::Shard(shard) => (self.shards_exchange(), shard.0.to_string()),
            Destination::Node(node) => (self.edge_exchange(), node.to_string()),
            Destination::Broadcast => (self.broadcast_exchange(), String::new()),
        }
    }

    fn shard_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        let text = |value: &str| AMQPValue::LongString(LongString::from(value));
        arguments.insert("x-queue-type".into(), text("quorum"));
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            text(&self.dead_letter_exchange()),
        );
        arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        arguments.insert("x-overflow".into(), text("reject-publish"));
        arguments
    }

    fn dead_letter_queue_arguments() -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        arguments
    }

    async fn declare_exchange(
        channel: &Channel,
        name: String,
        kind: ExchangeKind,
    ) -> Result<(), TransportError> {
        channel
            .exchange_declare(
                name.into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(broker_error("exchange.declare"))
    }

    async fn declare_durable_queue(
        channel: &Channel,
        name: &str,
        arguments: FieldTable,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), TransportError> {
        channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .map_err(broker_error("queue.declare"))?;
        channel
            .queue_bind(
                name.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker_error("queue.bind"))
    }

    /// Declares the exchanges, the dead-letter queue and every shard queue.
    pub async fn declare(&self, connection: &Connection) -> Result<(), TransportError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(broker_error("channel.open"))?;
        Self::declare_exchange(&channel, self.shards_exchange(), ExchangeKind::Direct).await?;
        Self::declare_exchange(&channel, self.edge_exchange(), ExchangeKind::Direct).await?;
        Self::declare_exchange(&channel, self.dead_letter_exchange(), ExchangeKind::Fanout).await?;
        Self::declare_exchange(&channel, self.broadcast_exchange(), ExchangeKind::Fanout).await?;
        Self::declare_durable_queue(
            &channel,
            &self.dead_letter_queue(),
            Self::dead_letter_queue_arguments(),
            &self.dead_letter_exchange(),
            "",
        )
        .await?;
        close_quietly(&channel).await;

        let declare_group = |first_shard: usize| async move {
            let channel = connection
                .create_channel()
                .await
                .map_err(broker_error("channel.open"))?;
            let shards_exchange = self.shards_exchange();
            for shard in (first_shard..usize::from(self.n_shards)).step_by(N_DECLARE_CHANNELS) {
                let shard = ShardId(u16::try_from(shard).unwrap_or(u16::MAX));
                Self::declare_durable_queue(
                    &channel,
                    &self.shard_queue(shard),
                    self.shard_queue_arguments(),
                    &shards_exchange,
                    &shard.0.to_string(),
                )
                .await?;
            }
            close_quietly(&channel).await;
            Ok::<(), TransportError>(())
        };
        futures_util::future::try_join_all((0..N_DECLARE_CHANNELS).map(declare_group)).await?;
        Ok(())
    }

    /// Deletes every queue and exchange of this cluster (tests and decommissioning).
    pub async fn delete(&self, connection: &Connection) -> Result<(), TransportError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(broker_error("channel.open"))?;
        let queues = (0..self.n_shards)
            .map(|shard| self.shard_queue(ShardId(shard)))
            .chain(std::iter::once(self.dead_letter_queue()));
        for queue in queues {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await
                .map_err(broker_error("queue.delete"))?;
        }
        for exchange in [
            self.shards_exchange(),
            self.edge_exchange(),
            self.dead_letter_exchange(),
            self.broadcast_exchange(),
        ] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await
                .map_err(broker_error("exchange.delete"))?;
        }
        close_quietly(&channel).await;
        Ok(())
    }

    /// Declares and binds `node`'s exclusive inbox on `channel` (it disappears with the
    /// connection, so it is declared again after every reconnection).
    pub(crate) async fn declare_node_inbox(
        &self,
        channel: &Channel,
        node: &NodeId,
    ) -> Result<String, TransportError> {
        let source = Source::NodeInbox(node.clone());
        let name = self.node_inbox(node);
        Self::declare_exclusive_queue(channel, &source, name, &self.edge_exchange(), node.as_str())
            .await
    }

    /// Declares `node`'s exclusive broadcast queue on `channel` and binds it to the broadcast
    /// exchange (like the inbox, it is declared again after every reconnection).
    pub(crate) async fn declare_broadcast_queue(
        &self,
        channel: &Channel,
        node: &NodeId,
    ) -> Result<String, TransportError> {
        let source = Source::Broadcast(node.clone());
        let name = self.broadcast_queue(node);
        Self::declare_exclusive_queue(channel, &source, name, &self.broadcast_exchange(), "").await
    }

    /// Declares an exclusive, auto-delete classic queue for `source` and binds it; a queue held
    /// by another connection is [`TransportError::AlreadySubscribed`].
    async fn declare_exclusive_queue(
        channel: &Channel,
        source: &Source,
        name: String,
        exchange: &str,
        routing_key: &str,
    ) -> Result<String, TransportError> {
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| match error.to_string() {
                reason if reason.contains("RESOURCE_LOCKED") => TransportError::AlreadySubscribed {
                    source_name: source.to_string(),
                },
                reason => TransportError::Broker {
                    operation: "queue.declare",
                    reason,
                },
            })?;
        channel
            .queue_bind(
                name.as_str().into(),
                exchange.into(),
                ShortString::from(routing_key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker_error("queue.bind"))?;
        Ok(name)
    }
}

/// Closes a channel, ignoring errors (it may already be gone with its connection).
pub(crate) async fn close_quietly(channel: &Channel) {
    if let Err(error) = channel.close(200, "done".into()).await {
        tracing::debug!(error = %error, "channel close failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_with_the_cluster() {
        let topology = Topology::new("blue", 4, 5);
        assert_eq!(topology.shard_queue(ShardId(3)), "blue.shard.3");
        assert_eq!(
            topology.node_inbox(&NodeId::new("n1").unwrap()),
            "blue.inbox.n1"
        );
        assert_eq!(
            topology.route(&Destination::Shard(ShardId(2))),
            ("blue.shards".to_owned(), "2".to_owned())
        );
        assert_eq!(
            topology.route(&Destination::Node(NodeId::new("n1").unwrap())),
            ("blue.edge".to_owned(), "n1".to_owned())
        );
        assert_eq!(topology.dead_letter_queue(), "blue.dead-letters");
        assert_eq!(
            topology.broadcast_queue(&NodeId::new("n1").unwrap()),
            "blue.broadcast.n1"
        );
        assert_eq!(
            topology.route(&Destination::Broadcast),
            ("blue.broadcast".to_owned(), String::new())
        );
    }
}
