//! lanmesh-bus: how lanmesh nodes and entities talk, with no knowledge of the domain.
//!
//! - [`envelope`] and [`codec`]: every message is an [`Envelope`] encoded as named-field
//!   MessagePack, with a frame size cap and total (never panicking) decoding.
//! - [`transport`]: the [`Transport`] contract — durable shard queues with single active
//!   consumer, node inboxes, transient broadcasts to every listening node, acknowledgements,
//!   redelivery with a delivery limit, dead letters. Two implementations: [`amqp`] (RabbitMQ
//!   through lapin) and [`in_process`]; both pass [`conformance`].
//! - [`request_reply`]: requests with deadlines whose retries reuse the `msg_id`.
//! - [`shard_map`]: the stable mapping of entity addresses to shards.
//! - [`membership`]: heartbeats on the broadcast destination and the resulting view of the
//!   cluster (alive, assignable and failed nodes; whether this node is settled).
//! - [`rendezvous`]: which node owns which shard, by rendezvous hashing over the assignable
//!   nodes.
//!
//! Invariants: a publish returns `Ok` only when the message is held at its destination
//! (durably for shard queues; inbox pushes and broadcasts are transient by design); a
//! delivery is acknowledged only after its handler said so; a frame the codec refuses never
//! reaches a handler.

pub mod address;
pub mod amqp;
pub mod codec;
pub mod conformance;
pub mod envelope;
pub mod in_process;
pub mod membership;
pub mod rendezvous;
pub mod request_reply;
pub mod shard_map;
pub mod transport;

pub use address::{EntityAddress, NodeId, ShardId};
pub use envelope::{Envelope, TraceContext};
pub use transport::{
    Delivery, DeliveryHandler, Destination, HandlerOutcome, PublishOptions, Source, Subscription,
    Transport, TransportError, TransportStats, handler_fn,
};
