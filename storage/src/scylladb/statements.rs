//! Prepared statements of the ScyllaDB backend, each with its idempotence set explicitly.

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

use crate::error::StoreError;
use crate::scylladb::scylla_error;

/// Rows per page of paged reads.
const PAGE_SIZE: i32 = 5000;
/// Rows per page of reads returning journal bodies (up to 64 KiB each).
const JOURNAL_PAGE_SIZE: i32 = 256;

/// Every statement the backend runs, prepared once per store.
pub(crate) struct Statements {
    pub(crate) load_state: PreparedStatement,
    pub(crate) load_state_serial: PreparedStatement,
    pub(crate) insert_state_if_absent: PreparedStatement,
    pub(crate) update_state_if_version: PreparedStatement,
    pub(crate) insert_sample: PreparedStatement,
    pub(crate) select_samples: PreparedStatement,
    pub(crate) insert_audit_month: PreparedStatement,
    pub(crate) select_audit_months: PreparedStatement,
    pub(crate) insert_audit_event: PreparedStatement,
    pub(crate) select_audit_events_from: PreparedStatement,
    pub(crate) select_audit_events_after: PreparedStatement,
    pub(crate) insert_message_by_id_if_absent: PreparedStatement,
    pub(crate) load_message_by_id_serial: PreparedStatement,
    pub(crate) insert_conversation_month: PreparedStatement,
    pub(crate) select_conversation_months: PreparedStatement,
    pub(crate) insert_conversation_message: PreparedStatement,
    pub(crate) select_conversation_messages: PreparedStatement,
    pub(crate) select_conversation_messages_before: PreparedStatement,
    pub(crate) insert_journal_record_if_absent: PreparedStatement,
    pub(crate) select_journal_records_in: PreparedStatement,
    pub(crate) select_journal_records_in_serial: PreparedStatement,
    pub(crate) select_journal_records_after: PreparedStatement,
    pub(crate) select_journal_last_sequence: PreparedStatement,
}

impl Statements {
    /// Prepares every statement against `keyspace` (a validated identifier).
    pub(crate) async fn prepare(session: &Session, keyspace: &str) -> Result<Self, StoreError> {
        let prepare = |text: String, is_idempotent: bool| async move {
            let mut statement = session
                .prepare(text)
                .await
                .map_err(scylla_error("prepare statement"))?;
            statement.set_is_idempotent(is_idempotent);
            statement.set_page_size(PAGE_SIZE);
            Ok::<_, StoreError>(statement)
        };

        let load_state = prepare(
            format!("SELECT epoch, version, state FROM {keyspace}.entity_state WHERE kind = ? AND id = ?"),
            true,
        )
        .await?;
        let mut load_state_serial = prepare(
            format!("SELECT epoch, version, state FROM {keyspace}.entity_state WHERE kind = ? AND id = ?"),
            true,
        )
        .await?;
        // A serial read completes any in-flight lightweight transaction on the row first.
        load_state_serial.set_consistency(Consistency::LocalSerial);

        // Conditional writes are not idempotent: a blind retry of an applied one would report
        // a conflict with itself. Ambiguous failures are resolved with a serial read instead.
        let insert_state_if_absent = prepare(
            format!(
                "INSERT INTO {keyspace}.entity_state (kind, id, epoch, version, state) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
            ),
            false,
        )
        .await?;
        let update_state_if_version = prepare(
            format!(
                "UPDATE {keyspace}.entity_state SET epoch = ?, version = ?, state = ? \
                 WHERE kind = ? AND id = ? IF epoch = ? AND version = ?"
            ),
            false,
        )
        .await?;

        let insert_sample = prepare(
            format!(
                "INSERT INTO {keyspace}.presence_sample (segment, day, at, address, account, event) \
                 VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"
            ),
            true,
        )
        .await?;
        let select_samples = prepare(
            format!(
                "SELECT address, account, event, at FROM {keyspace}.presence_sample \
                 WHERE segment = ? AND day = ? AND at >= ? AND at < ?"
            ),
            true,
        )
        .await?;

        let insert_audit_month = prepare(
            format!(
                "INSERT INTO {keyspace}.audit_month (entity_kind, entity_id, month) VALUES (?, ?, ?)"
            ),
            true,
        )
        .await?;
        let select_audit_months = prepare(
            format!(
                "SELECT month FROM {keyspace}.audit_month \
                 WHERE entity_kind = ? AND entity_id = ? AND month >= ? AND month <= ?"
            ),
            true,
        )
        .await?;
        let insert_audit_event = prepare(
            format!(
                "INSERT INTO {keyspace}.audit_event \
                 (entity_kind, entity_id, month, at, event_id, actor, action, detail, msg_id) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            true,
        )
        .await?;
        let select_audit_events_from = prepare(
            format!(
                "SELECT event_id, at, actor, action, detail, msg_id FROM {keyspace}.audit_event \
                 WHERE entity_kind = ? AND entity_id = ? AND month = ? AND at >= ? AND at < ? \
                 LIMIT ?"
            ),
            true,
        )
        .await?;
        let select_audit_events_after = prepare(
            format!(
                "SELECT event_id, at, actor, action, detail, msg_id FROM {keyspace}.audit_event \
                 WHERE entity_kind = ? AND entity_id = ? AND month = ? \
                 AND (at, event_id) > (?, ?) AND (at, event_id) <= (?, ?) LIMIT ?"
            ),
            true,
        )
        .await?;

        // Claiming a message id is conditional, hence not idempotent: a blind retry of an
        // applied claim would find its own row. Ambiguous failures are resolved with a serial
        // read instead.
        let insert_message_by_id_if_absent = prepare(
            format!(
                "INSERT INTO {keyspace}.chat_message_by_id \
                 (message_id, sender, recipient, text, sent_at) VALUES (?, ?, ?, ?, ?) \
                 IF NOT EXISTS"
            ),
            false,
        )
        .await?;
        let mut load_message_by_id_serial = prepare(
            format!(
                "SELECT sender, recipient, text, sent_at FROM {keyspace}.chat_message_by_id \
                 WHERE message_id = ?"
            ),
            true,
        )
        .await?;
        load_message_by_id_serial.set_consistency(Consistency::LocalSerial);
        let insert_conversation_month = prepare(
            format!(
                "INSERT INTO {keyspace}.chat_conversation_month (conversation, month) \
                 VALUES (?, ?)"
            ),
            true,
        )
        .await?;
        let select_conversation_months = prepare(
            format!(
                "SELECT month FROM {keyspace}.chat_conversation_month \
                 WHERE conversation = ? AND month <= ?"
            ),
            true,
        )
        .await?;
        let insert_conversation_message = prepare(
            format!(
                "INSERT INTO {keyspace}.chat_message_by_conversation \
                 (conversation, month, sent_at, message_id, sender, recipient, text) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            true,
        )
        .await?;
        let select_conversation_messages = prepare(
            format!(
                "SELECT message_id, sent_at, sender, recipient, text \
                 FROM {keyspace}.chat_message_by_conversation \
                 WHERE conversation = ? AND month = ? LIMIT ?"
            ),
            true,
        )
        .await?;
        let select_conversation_messages_before = prepare(
            format!(
                "SELECT message_id, sent_at, sender, recipient, text \
                 FROM {keyspace}.chat_message_by_conversation \
                 WHERE conversation = ? AND month = ? AND (sent_at, message_id) < (?, ?) LIMIT ?"
            ),
            true,
        )
        .await?;

        // Appending to a journal is conditional, hence not idempotent: a blind retry of an
        // applied batch would find its own rows. Not-applied and ambiguous outcomes are resolved
        // by reading the sequences back instead.
        let insert_journal_record_if_absent = prepare(
            format!(
                "INSERT INTO {keyspace}.ledger_journal (ledger_id, sequence, at, body) \
                 VALUES (?, ?, ?, ?) IF NOT EXISTS"
            ),
            false,
        )
        .await?;
        let select_journal_records_in_text = format!(
            "SELECT sequence, at, body FROM {keyspace}.ledger_journal \
             WHERE ledger_id = ? AND sequence IN ?"
        );
        let select_journal_records_in =
            prepare(select_journal_records_in_text.clone(), true).await?;
        let mut select_journal_records_in_serial =
            prepare(select_journal_records_in_text, true).await?;
        // A serial read completes any in-flight lightweight transaction on the partition first.
        select_journal_records_in_serial.set_consistency(Consistency::LocalSerial);
        let mut select_journal_records_after = prepare(
            format!(
                "SELECT sequence, at, body FROM {keyspace}.ledger_journal \
                 WHERE ledger_id = ? AND sequence > ? LIMIT ?"
            ),
            true,
        )
        .await?;
        select_journal_records_after.set_page_size(JOURNAL_PAGE_SIZE);
        let select_journal_last_sequence = prepare(
            format!(
                "SELECT sequence FROM {keyspace}.ledger_journal \
                 WHERE ledger_id = ? ORDER BY sequence DESC LIMIT 1"
            ),
            true,
        )
        .await?;

        Ok(Self {
            load_state,
            load_state_serial,
            insert_state_if_absent,
            update_state_if_version,
            insert_sample,
            select_samples,
            insert_audit_month,
            select_audit_months,
            insert_audit_event,
            select_audit_events_from,
            select_audit_events_after,
            insert_message_by_id_if_absent,
            load_message_by_id_serial,
            insert_conversation_month,
            select_conversation_months,
            insert_conversation_message,
            select_conversation_messages,
            select_conversation_messages_before,
            insert_journal_record_if_absent,
            select_journal_records_in,
            select_journal_records_in_serial,
            select_journal_records_after,
            select_journal_last_sequence,
        })
    }
}
