//! ScyllaDB backend: one shared session, prepared statements, token-aware routing (the driver's
//! default policy), single-partition unlogged batches, paged reads, explicit idempotence.
//!
//! * Entity state uses lightweight transactions (`IF NOT EXISTS`, `IF epoch = ? AND version =
//!   ?`): compare-and-set is rare and rarely contended, so Paxos is affordable. An ambiguous
//!   failure is resolved with a serial read rather than a blind retry.
//! * Presence samples live in `((segment, day), at DESC, ...)` partitions with time-window
//!   compaction and a TTL; audit events in `((entity kind, entity id, month), at, event_id)`;
//!   chat messages in `((conversation, month), sent_at DESC, message_id DESC)`, each id first
//!   claimed with `INSERT ... IF NOT EXISTS` in `chat_message_by_id` (rare conflicts, so the
//!   lightweight transaction per message is affordable); ledger journals in `((ledger_id),
//!   sequence)`, appended with conditional batches of `INSERT ... IF NOT EXISTS` (one
//!   lightweight transaction per batch of up to 100 records; see `ledger_journal.rs` for what is
//!   atomic and how retries converge).
//! * The schema is `ops/scylla/schema.cql`, applied at start when `apply_schema` is set.
//! * No counters (they are not idempotent).

mod audit;
mod entity_state;
mod ledger_journal;
mod messages;
mod presence;
mod schema;
mod statements;
mod time_bucket;

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;

use crate::config::ScyllaConfig;
use crate::error::StoreError;
use crate::scylladb::statements::Statements;

/// Statements of one partition grouped into one unlogged batch, at most this many.
const MAX_BATCH_STATEMENTS: usize = 100;
/// Requests (batches, partition reads) of one call in flight at once.
const MAX_CONCURRENT_REQUESTS: usize = 16;

/// The ScyllaDB implementation of every store trait. Cloning shares the session.
#[derive(Clone)]
pub struct ScyllaStore {
    session: Arc<Session>,
    statements: Arc<Statements>,
    sample_ttl_seconds: i32,
}

impl ScyllaStore {
    /// Connects to `config.nodes`, applies the schema if `config.apply_schema`, and prepares the
    /// statements.
    pub async fn open(config: &ScyllaConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .build()
            .await
            .map_err(|source| StoreError::ScyllaConnect {
                nodes: config.nodes.join(","),
                source: Box::new(source),
            })?;
        Self::with_session(Arc::new(session), config).await
    }

    /// Builds the store on an existing session (so one session can serve the whole process).
    pub async fn with_session(
        session: Arc<Session>,
        config: &ScyllaConfig,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        if config.apply_schema {
            schema::apply_schema(&session, config).await?;
        }
        let statements = Statements::prepare(&session, &config.keyspace).await?;
        tracing::info!(
            nodes = %config.nodes.join(","),
            keyspace = %config.keyspace,
            "scylladb storage opened"
        );
        Ok(Self {
            session,
            statements: Arc::new(statements),
            sample_ttl_seconds: schema::sample_ttl_seconds(config),
        })
    }

    /// The session this store uses.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Runs single-partition unlogged batches of `statement`, several at once.
    pub(crate) async fn run_batches<Values>(
        &self,
        statement: &PreparedStatement,
        batches: Vec<Vec<Values>>,
        operation: &'static str,
    ) -> Result<(), StoreError>
    where
        Values: SerializeRow + Send + Sync + 'static,
    {
        stream::iter(batches)
            .map(|rows| async move {
                let batch_statement = BatchStatement::PreparedStatement(statement.clone());
                let mut batch = Batch::new_with_statements(
                    BatchType::Unlogged,
                    vec![batch_statement; rows.len()],
                );
                batch.set_is_idempotent(true);
                self.session
                    .batch(&batch, &rows)
                    .await
                    .map_err(scylla_error(operation))
            })
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_for_each(|_| async { Ok(()) })
            .await
    }
}

/// Splits the rows of each partition into batches of at most [`MAX_BATCH_STATEMENTS`]; a batch
/// never mixes partitions.
pub(crate) fn into_single_partition_batches<Key, Values>(
    partitions: std::collections::BTreeMap<Key, Vec<Values>>,
) -> Vec<Vec<Values>> {
    let mut batches = Vec::new();
    for rows in partitions.into_values() {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            batches.push(rows.by_ref().take(MAX_BATCH_STATEMENTS).collect());
        }
    }
    batches
}

/// Wraps a driver error with what the store was doing.
pub(crate) fn scylla_error<E>(operation: &'static str) -> impl Fn(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| StoreError::Scylla {
        operation,
        source: Box::new(source),
    }
}
