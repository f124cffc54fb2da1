//! The SQLite writer: one thread per store owning the only writing connection of the process,
//! grouping every pending write request into one transaction.
//!
//! Callers send a [`WriteCommand`] and await its reply. The thread takes the first pending
//! request, drains whatever else is queued (up to [`MAX_GROUP_WEIGHT`] rows), runs them all in
//! one `BEGIN IMMEDIATE` transaction and replies to each only after `COMMIT` returned, so an
//! acknowledged write is on disk (`synchronous=FULL`). If anything in a group fails, the group
//! is rolled back and its requests are retried one per transaction, so each caller gets the
//! outcome of its own request and a bad request cannot fail its neighbours.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::audit::AuditEvent;
use crate::entity_state::{EntityKey, StateVersion, StoredEntityState};
use crate::error::StoreError;
use crate::ledger_journal::JournalRecord;
use crate::messages::{ChatMessage, conversation_key};
use crate::presence::PresenceSample;
use crate::sqlite::errors::{map_sqlite_error, sqlite_error};
use crate::sqlite::ledger_journal::insert_journal_records;

/// `PRAGMA synchronous` value of `FULL`: every commit syncs the WAL before it returns.
const SYNCHRONOUS_FULL: i64 = 2;
/// Requests waiting for the writer before senders have to wait.
const QUEUE_CAPACITY: usize = 1024;
/// Rows (samples, audit events, messages, journal records, saves) above which the writer stops adding requests
/// to a group.
const MAX_GROUP_WEIGHT: usize = 20_000;

/// One write, as sent to the writer thread.
#[derive(Debug)]
pub(crate) enum WriteCommand {
    /// Insert presence samples.
    AppendSamples(Vec<PresenceSample>),
    /// Insert audit events, skipping ids already stored.
    AppendAudit(Vec<AuditEvent>),
    /// Insert chat messages (validated, no repeated ids), skipping those already stored
    /// unchanged; refused as a whole if a stored id holds a different message.
    AppendMessages(Vec<ChatMessage>),
    /// Insert journal records of one ledger (validated, strictly increasing), skipping those
    /// already stored unchanged; refused as a whole if a stored sequence holds another record.
    AppendJournal {
        ledger_id: String,
        records: Vec<JournalRecord>,
    },
    /// Save entity state if the stored version is `expected_opt`.
    CompareAndSet {
        key: EntityKey,
        expected_opt: Option<StateVersion>,
        new: StoredEntityState,
    },
}

impl WriteCommand {
    fn weight(&self) -> usize {
        match self {
            Self::AppendSamples(samples) => samples.len(),
            Self::AppendAudit(events) => events.len(),
            Self::AppendMessages(messages) => messages.len(),
            Self::AppendJournal { records, .. } => records.len(),
            Self::CompareAndSet { .. } => 1,
        }
    }
}

struct WriteRequest {
    command: WriteCommand,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// What the writer thread receives.
enum WriterMessage {
    Write(WriteRequest),
    /// Finish the queued writes, close the connection, then acknowledge and stop.
    Close(oneshot::Sender<()>),
}

/// Counters of one writer since the store opened, e.g. for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Write requests the writer has taken from its queue.
    pub n_received_requests: u64,
    /// Write requests waiting in the queue.
    pub n_queued_requests: u64,
    /// Transactions committed.
    pub n_committed_transactions: u64,
    /// Write requests answered from a committed transaction (including lost compare-and-sets).
    pub n_committed_requests: u64,
    /// Rows (samples, audit events, messages, journal records, saves) committed.
    pub n_committed_rows: u64,
}

#[derive(Default)]
struct WriterCounters {
    n_received_requests: AtomicU64,
    n_committed_transactions: AtomicU64,
    n_committed_requests: AtomicU64,
    n_committed_rows: AtomicU64,
}

fn add(counter: &AtomicU64, amount: usize) {
    counter.fetch_add(u64::try_from(amount).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Sending side of the writer; cloning it is cheap. The thread stops when every handle is gone.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    path: Arc<PathBuf>,
    sender: mpsc::Sender<WriterMessage>,
    counters: Arc<WriterCounters>,
}

impl WriterHandle {
    /// Starts the writer thread on an already prepared connection, which must commit with
    /// `synchronous=FULL` (acknowledged writes, the ledger journal's above all, must survive a
    /// power loss); a connection that does not is refused.
    pub(crate) fn start(connection: Connection, path: &Path) -> Result<Self, StoreError> {
        let synchronous: i64 = connection
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .map_err(sqlite_error(path, "read synchronous"))?;
        if synchronous != SYNCHRONOUS_FULL {
            return Err(StoreError::CannotOpen {
                path: path.to_path_buf(),
                reason: format!(
                    "the writer connection has synchronous={synchronous}, but acknowledged \
                     writes need synchronous=FULL ({SYNCHRONOUS_FULL})"
                ),
            });
        }
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(WriterCounters::default());
        let thread = WriterThread {
            connection,
            path: path.to_path_buf(),
            address_buffer: String::new(),
            counters: Arc::clone(&counters),
        };
        std::thread::Builder::new()
            .name("lanmesh-sqlite-writer".to_owned())
            .spawn(move || thread.run(receiver))
            .map_err(|source| StoreError::CannotOpen {
                path: path.to_path_buf(),
                reason: format!("cannot start writer thread: {source}"),
            })?;
        Ok(Self {
            path: Arc::new(path.to_path_buf()),
            sender,
            counters,
        })
    }

    /// Current counters of the writer.
    pub(crate) fn stats(&self) -> WriterStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let n_queued_requests = self
            .sender
            .max_capacity()
            .saturating_sub(self.sender.capacity());
        WriterStats {
            n_received_requests: load(&self.counters.n_received_requests),
            n_queued_requests: u64::try_from(n_queued_requests).unwrap_or(u64::MAX),
            n_committed_transactions: load(&self.counters.n_committed_transactions),
            n_committed_requests: load(&self.counters.n_committed_requests),
            n_committed_rows: load(&self.counters.n_committed_rows),
        }
    }

    fn closed_error(&self) -> StoreError {
        StoreError::Closed {
            path: self.path.as_ref().clone(),
        }
    }

    /// Sends `command` and waits until it is committed (or failed).
    pub(crate) async fn write(&self, command: WriteCommand) -> Result<(), StoreError> {
        let (reply, reply_receiver) = oneshot::channel();
        self.sender
            .send(WriterMessage::Write(WriteRequest { command, reply }))
            .await
            .map_err(|_| self.closed_error())?;
        reply_receiver.await.map_err(|_| self.closed_error())?
    }

    /// Lets the writer commit what is queued, close its connection and stop; returns once the
    /// connection is closed. Later writes fail with [`StoreError::Closed`].
    pub(crate) async fn close(&self) {
        let (reply, reply_receiver) = oneshot::channel();
        if self.sender.send(WriterMessage::Close(reply)).await.is_ok() {
            let _ = reply_receiver.await;
        }
    }
}

/// The writer thread's state: the connection and what it reuses between groups.
struct WriterThread {
    connection: Connection,
    path: PathBuf,
    address_buffer: String,
    counters: Arc<WriterCounters>,
}

/// Why a group transaction failed.
enum GroupFailure {
    /// `BEGIN IMMEDIATE` failed: nothing ran, the same failure answers every request.
    Begin(rusqlite::Error),
    /// A statement or the commit failed: the transaction was rolled back.
    Execute(rusqlite::Error),
}

impl WriterThread {
    fn run(mut self, mut receiver: mpsc::Receiver<WriterMessage>) {
        let mut close_reply_opt = None;
        while close_reply_opt.is_none() {
            let Some(first) = receiver.blocking_recv() else {
                break;
            };
            let mut group = Vec::new();
            let mut weight = 0;
            let mut next_opt = Some(first);
            while let Some(message) = next_opt.take() {
                match message {
                    WriterMessage::Write(request) => {
                        weight += request.command.weight();
                        group.push(request);
                    }
                    WriterMessage::Close(reply) => {
                        close_reply_opt = Some(reply);
                        break;
                    }
                }
                if weight < MAX_GROUP_WEIGHT {
                    next_opt = receiver.try_recv().ok();
                }
            }
            if !group.is_empty() {
                add(&self.counters.n_received_requests, group.len());
                debug!(
                    n_requests = group.len(),
                    n_rows = weight,
                    "sqlite write group"
                );
                self.commit_group(group);
            }
        }
        // Refuse whatever is still queued, then close the connection before acknowledging.
        receiver.close();
        drop(receiver);
        let path = self.path;
        if let Err((_, error)) = self.connection.close() {
            warn!(path = %path.display(), error = %error, "closing the sqlite writer connection failed");
        }
        if let Some(reply) = close_reply_opt {
            let _ = reply.send(());
        }
        debug!(path = %path.display(), "sqlite writer stopped");
    }

    fn commit_group(&mut self, group: Vec<WriteRequest>) {
        match self.run_group(&group) {
            Ok((outcomes, weight)) => {
                add(&self.counters.n_committed_transactions, 1);
                add(&self.counters.n_committed_requests, group.len());
                add(&self.counters.n_committed_rows, weight);
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            Err(GroupFailure::Begin(error)) => {
                let error = Arc::new(error);
                warn!(path = %self.path.display(), error = %error, "sqlite write transaction did not start");
                for request in group {
                    let _ = request.reply.send(Err(map_sqlite_error(
                        &self.path,
                        "begin write",
                        &error,
                    )));
                }
            }
            Err(GroupFailure::Execute(error)) if group.len() > 1 => {
                debug!(error = %error, n_requests = group.len(), "write group failed, retrying one by one");
                for request in group {
                    self.commit_group(vec![request]);
                }
            }
            Err(GroupFailure::Execute(error)) => {
                let error = Arc::new(error);
                warn!(path = %self.path.display(), error = %error, "sqlite write failed");
                for request in group {
                    let _ = request
                        .reply
                        .send(Err(map_sqlite_error(&self.path, "write", &error)));
                }
            }
        }
    }

    /// Runs the group in one transaction; returns each request's outcome and the rows written.
    fn run_group(
        &mut self,
        group: &[WriteRequest],
    ) -> Result<(Vec<Result<(), StoreError>>, usize), GroupFailure> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(GroupFailure::Begin)?;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut weight = 0;
        for request in group {
            let outcome = execute_command(&transaction, &request.command, &mut self.address_buffer)
                .map_err(GroupFailure::Execute)?;
            if outcome.is_ok() {
                weight += request.command.weight();
            }
            outcomes.push(outcome);
        }
        transaction.commit().map_err(GroupFailure::Execute)?;
        Ok((outcomes, weight))
    }
}

/// Runs one command inside the open transaction. The outer error is a SQLite failure (the
/// transaction must be abandoned); the inner result is the command's own outcome (a lost
/// compare-and-set is a normal outcome, not a failure of the group).
fn execute_command(
    connection: &Connection,
    command: &WriteCommand,
    address_buffer: &mut String,
) -> Result<Result<(), StoreError>, rusqlite::Error> {
    match command {
        WriteCommand::AppendSamples(samples) => {
            insert_samples(connection, samples, address_buffer)?;
            Ok(Ok(()))
        }
        WriteCommand::AppendAudit(events) => {
            insert_audit_events(connection, events)?;
            Ok(Ok(()))
        }
        WriteCommand::AppendMessages(messages) => insert_messages(connection, messages),
        WriteCommand::AppendJournal { ledger_id, records } => {
            insert_journal_records(connection, ledger_id, records)
        }
        WriteCommand::CompareAndSet {
            key,
            expected_opt,
            new,
        } => compare_and_set(connection, key, *expected_opt, new),
    }
}

/// SQL inserting one presence sample.
const INSERT_SAMPLE_SQL: &str = "INSERT INTO presence_sample \
     (segment, at_unix_ms, address, account, event) VALUES (?1, ?2, ?3, ?4, ?5)";

fn insert_samples(
    connection: &Connection,
    samples: &[PresenceSample],
    address_buffer: &mut String,
) -> Result<(), rusqlite::Error> {
    let mut statement = connection.prepare_cached(INSERT_SAMPLE_SQL)?;
    for sample in samples {
        address_buffer.clear();
        let _ = write!(address_buffer, "{}", sample.address);
        statement.execute(params![
            sample.segment,
            sample.at_unix_ms,
            address_buffer.as_str(),
            sample.account,
            sample.event.code(),
        ])?;
    }
    Ok(())
}

fn insert_audit_events(
    connection: &Connection,
    events: &[AuditEvent],
) -> Result<(), rusqlite::Error> {
    let mut statement = connection.prepare_cached(
        "INSERT INTO audit_event \
         (event_id, entity_kind, entity_id, at_unix_ms, actor, action, detail, msg_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (event_id) DO NOTHING",
    )?;
    for event in events {
        statement.execute(params![
            event.event_id.as_bytes().as_slice(),
            event.entity.kind,
            event.entity.id,
            event.at_unix_ms,
            event.actor,
            event.action,
            event.detail,
            event
                .msg_id_opt
                .as_ref()
                .map(|msg_id| msg_id.as_bytes().as_slice()),
        ])?;
    }
    Ok(())
}

/// Inserts a batch of chat messages: first checks every id against the stored messages, so a
/// reused id refuses the batch before anything of it is written, then inserts the new ones.
fn insert_messages(
    connection: &Connection,
    messages: &[ChatMessage],
) -> Result<Result<(), StoreError>, rusqlite::Error> {
    let mut select = connection.prepare_cached(
        "SELECT sender, recipient, text, sent_at_unix_ms FROM chat_message \
         WHERE message_id = ?1",
    )?;
    for message in messages {
        let stored_opt = select
            .query_row(params![message.message_id.as_bytes().as_slice()], |row| {
                Ok(ChatMessage {
                    message_id: message.message_id,
                    sender: row.get(0)?,
                    recipient: row.get(1)?,
                    text: row.get(2)?,
                    sent_at_unix_ms: row.get(3)?,
                })
            })
            .optional()?;
        if stored_opt.is_some_and(|stored| stored != *message) {
            return Ok(Err(StoreError::MessageIdReused {
                message_id: message.message_id,
            }));
        }
    }
    let mut insert = connection.prepare_cached(
        "INSERT INTO chat_message \
         (message_id, conversation, sender, recipient, text, sent_at_unix_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (message_id) DO NOTHING",
    )?;
    for message in messages {
        insert.execute(params![
            message.message_id.as_bytes().as_slice(),
            conversation_key(&message.sender, &message.recipient),
            message.sender,
            message.recipient,
            message.text,
            message.sent_at_unix_ms,
        ])?;
    }
    Ok(Ok(()))
}

fn compare_and_set(
    connection: &Connection,
    key: &EntityKey,
    expected_opt: Option<StateVersion>,
    new: &StoredEntityState,
) -> Result<Result<(), StoreError>, rusqlite::Error> {
    let current_opt = connection
        .prepare_cached("SELECT epoch, version FROM entity_state WHERE kind = ?1 AND id = ?2")?
        .query_row(params![key.kind, key.id], |row| {
            Ok(StateVersion {
                epoch: row.get::<_, i64>(0)?.cast_unsigned(),
                version: row.get::<_, i64>(1)?.cast_unsigned(),
            })
        })
        .optional()?;
    if current_opt != expected_opt {
        return Ok(Err(StoreError::Conflict {
            key: key.clone(),
            expected_opt,
            current_opt,
        }));
    }
    connection
        .prepare_cached(
            "INSERT INTO entity_state (kind, id, epoch, version, state) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (kind, id) DO UPDATE SET \
             epoch = excluded.epoch, version = excluded.version, state = excluded.state",
        )?
        .execute(params![
            key.kind,
            key.id,
            new.version.epoch.cast_signed(),
            new.version.version.cast_signed(),
            new.state,
        ])?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SqliteConfig;
    use crate::sqlite::connection::{ConnectionRole, open_connection};

    #[tokio::test]
    async fn writer_commits_with_synchronous_full_and_refuses_less() {
        let directory = tempfile::tempdir().unwrap();
        let config = SqliteConfig {
            path: directory.path().join("sync.db"),
            ..SqliteConfig::default()
        };
        let connection = open_connection(&config, ConnectionRole::Writer).unwrap();
        let synchronous: i64 = connection
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(synchronous, SYNCHRONOUS_FULL);
        let writer = WriterHandle::start(connection, &config.path).unwrap();
        writer.close().await;

        let relaxed = open_connection(&config, ConnectionRole::Writer).unwrap();
        relaxed
            .pragma_update(None, "synchronous", "NORMAL")
            .unwrap();
        match WriterHandle::start(relaxed, &config.path) {
            Err(StoreError::CannotOpen { reason, .. }) => {
                assert!(reason.contains("synchronous=FULL"), "{reason}");
            }
            Err(other) => panic!("expected cannot open, got {other:?}"),
            Ok(_) => panic!("a writer without synchronous=FULL was started"),
        }
    }
}
