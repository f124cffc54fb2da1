//! Chat messages on ScyllaDB: message ids claimed with lightweight transactions, conversations
//! in month-bucketed partitions newest first, a per-conversation index of months, and keyset
//! paging on `(sent_at, message_id)`.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt, stream};
use scylla::response::query_result::QueryResult;
use scylla::value::{CqlTimestamp, CqlValue, Row};
use uuid::Uuid;

use crate::audit::{Page, PageRequest};
use crate::error::StoreError;
use crate::messages::{
    ChatMessage, ConversationQuery, MessageStore, check_messages, conversation_key,
};
use crate::scylladb::time_bucket::month_bucket;
use crate::scylladb::{
    MAX_CONCURRENT_REQUESTS, ScyllaStore, into_single_partition_batches, scylla_error,
};

/// Bound values of one conversation message insert.
type ConversationRow = (String, i32, CqlTimestamp, Vec<u8>, String, String, String);

/// Bound values of one conversation month index insert.
type MonthRow = (String, i32);

/// Columns read from a conversation partition.
type StoredRow = (Vec<u8>, CqlTimestamp, String, String, String);

/// Reads the message a not-applied `INSERT ... IF NOT EXISTS` found (ScyllaDB returns the
/// existing row next to `[applied]`); `None` when the claim was applied.
fn parse_claim_outcome(
    message_id: Uuid,
    result: QueryResult,
) -> Result<Option<ChatMessage>, StoreError> {
    let rows = result
        .into_rows_result()
        .map_err(scylla_error("read message id claim result"))?;
    let specs = rows.column_specs();
    let index_of = |name: &str| specs.get_by_name(name).map(|(index, _)| index);
    let invalid = |reason: &str| StoreError::InvalidRow {
        table: "chat_message_by_id",
        reason: reason.to_owned(),
    };
    let applied_index =
        index_of("[applied]").ok_or_else(|| invalid("claim result has no [applied] column"))?;
    let sender_index_opt = index_of("sender");
    let recipient_index_opt = index_of("recipient");
    let text_index_opt = index_of("text");
    let sent_at_index_opt = index_of("sent_at");
    let row: Row = rows
        .first_row()
        .map_err(scylla_error("read message id claim result"))?;
    let column = |index_opt: Option<usize>| index_opt.and_then(|index| row.columns.get(index));
    if matches!(
        column(Some(applied_index)),
        Some(Some(CqlValue::Boolean(true)))
    ) {
        return Ok(None);
    }
    let text_of = |index_opt: Option<usize>| match column(index_opt) {
        Some(Some(CqlValue::Text(text))) => Some(text.clone()),
        _ => None,
    };
    match (
        text_of(sender_index_opt),
        text_of(recipient_index_opt),
        text_of(text_index_opt),
        column(sent_at_index_opt),
    ) {
        (Some(sender), Some(recipient), Some(text), Some(Some(CqlValue::Timestamp(sent_at)))) => {
            Ok(Some(ChatMessage {
                message_id,
                sender,
                recipient,
                text,
                sent_at_unix_ms: sent_at.0,
            }))
        }
        _ => Err(invalid(
            "claim not applied but the existing row is incomplete",
        )),
    }
}

/// `Ok` when the stored message is `message` itself (a retry), `MessageIdReused` otherwise.
fn same_or_reused(stored: &ChatMessage, message: &ChatMessage) -> Result<(), StoreError> {
    if stored == message {
        Ok(())
    } else {
        Err(StoreError::MessageIdReused {
            message_id: message.message_id,
        })
    }
}

impl ScyllaStore {
    /// Claims `message.message_id` for `message`: `Ok` when the claim applied or the id already
    /// holds this very message, `MessageIdReused` when it holds another one.
    async fn claim_message_id(&self, message: &ChatMessage) -> Result<(), StoreError> {
        let result = self
            .session
            .execute_unpaged(
                &self.statements.insert_message_by_id_if_absent,
                (
                    message.message_id,
                    &message.sender,
                    &message.recipient,
                    &message.text,
                    CqlTimestamp(message.sent_at_unix_ms),
                ),
            )
            .await;
        match result {
            Ok(result) => match parse_claim_outcome(message.message_id, result)? {
                None => Ok(()),
                Some(stored) => same_or_reused(&stored, message),
            },
            Err(error) => {
                // The claim may or may not have been applied (e.g. a timeout after the Paxos
                // accept). A serial read settles the row; decide from what it holds.
                tracing::warn!(
                    message_id = %message.message_id,
                    error = %error,
                    "message id claim outcome unknown, reading back"
                );
                match self.load_message_serial(message.message_id).await {
                    Ok(Some(stored)) => same_or_reused(&stored, message),
                    Ok(None) | Err(_) => Err(scylla_error("claim message id")(error)),
                }
            }
        }
    }

    /// The message holding `message_id`, read at serial consistency.
    async fn load_message_serial(
        &self,
        message_id: Uuid,
    ) -> Result<Option<ChatMessage>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.statements.load_message_by_id_serial, (message_id,))
            .await
            .map_err(scylla_error("load message by id"))?;
        let rows = result
            .into_rows_result()
            .map_err(scylla_error("load message by id"))?;
        let row_opt = rows
            .maybe_first_row::<(String, String, String, CqlTimestamp)>()
            .map_err(scylla_error("load message by id"))?;
        Ok(
            row_opt.map(|(sender, recipient, text, sent_at)| ChatMessage {
                message_id,
                sender,
                recipient,
                text,
                sent_at_unix_ms: sent_at.0,
            }),
        )
    }

    /// Months of a conversation holding messages, up to `last_month`, newest first.
    async fn conversation_months(
        &self,
        conversation: &str,
        last_month: i32,
    ) -> Result<Vec<i32>, StoreError> {
        self.session
            .execute_iter(
                self.statements.select_conversation_months.clone(),
                (conversation, last_month),
            )
            .await
            .map_err(scylla_error("read conversation months"))?
            .rows_stream::<(i32,)>()
            .map_err(scylla_error("read conversation months"))?
            .map_ok(|(month,)| month)
            .try_collect()
            .await
            .map_err(scylla_error("read conversation months"))
    }
}

#[async_trait]
impl MessageStore for ScyllaStore {
    async fn append(&self, messages: Vec<ChatMessage>) -> Result<(), StoreError> {
        let messages = check_messages(messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        // Every id is claimed before any conversation row is written, so a batch with a reused
        // id shows nothing of itself in any conversation.
        let claims: Vec<_> = messages
            .iter()
            .map(|message| self.claim_message_id(message))
            .collect();
        stream::iter(claims)
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_for_each(|()| async { Ok(()) })
            .await?;

        // The month index is written before the messages: a message is never stored in a month
        // the index does not list, so paging cannot miss it.
        let mut months_by_conversation: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        let mut message_partitions: BTreeMap<(String, i32), Vec<ConversationRow>> = BTreeMap::new();
        for message in messages {
            let conversation = conversation_key(&message.sender, &message.recipient);
            let month = month_bucket(message.sent_at_unix_ms);
            months_by_conversation
                .entry(conversation.clone())
                .or_default()
                .insert(month);
            message_partitions
                .entry((conversation.clone(), month))
                .or_default()
                .push((
                    conversation,
                    month,
                    CqlTimestamp(message.sent_at_unix_ms),
                    message.message_id.as_bytes().to_vec(),
                    message.sender,
                    message.recipient,
                    message.text,
                ));
        }
        let month_partitions: BTreeMap<String, Vec<MonthRow>> = months_by_conversation
            .into_iter()
            .map(|(conversation, months)| {
                let rows = months
                    .into_iter()
                    .map(|month| (conversation.clone(), month))
                    .collect();
                (conversation, rows)
            })
            .collect();
        self.run_batches(
            &self.statements.insert_conversation_month,
            into_single_partition_batches(month_partitions),
            "append conversation month index",
        )
        .await?;
        self.run_batches(
            &self.statements.insert_conversation_message,
            into_single_partition_batches(message_partitions),
            "append conversation messages",
        )
        .await
    }

    async fn conversation(
        &self,
        account_a: &str,
        account_b: &str,
        page: PageRequest,
    ) -> Result<Page<ChatMessage>, StoreError> {
        let query = ConversationQuery::new(account_a, account_b, &page)?;
        let wanted = query.fetch_limit();
        let last_month = query
            .before_opt
            .map_or(i32::MAX, |before| month_bucket(before.sent_at_unix_ms));
        let months = self
            .conversation_months(&query.conversation_key, last_month)
            .await?;
        let mut messages: Vec<ChatMessage> = Vec::new();
        for month in months {
            let remaining = i32::try_from(wanted - messages.len()).unwrap_or(i32::MAX);
            let pager = match query.before_opt {
                Some(before) => {
                    self.session
                        .execute_iter(
                            self.statements.select_conversation_messages_before.clone(),
                            (
                                &query.conversation_key,
                                month,
                                CqlTimestamp(before.sent_at_unix_ms),
                                before.message_id.as_bytes().as_slice(),
                                remaining,
                            ),
                        )
                        .await
                }
                None => {
                    self.session
                        .execute_iter(
                            self.statements.select_conversation_messages.clone(),
                            (&query.conversation_key, month, remaining),
                        )
                        .await
                }
            }
            .map_err(scylla_error("read conversation"))?;
            let mut rows = pager
                .rows_stream::<StoredRow>()
                .map_err(scylla_error("read conversation"))?;
            while messages.len() < wanted {
                let Some(row) = rows.next().await else {
                    break;
                };
                let (message_id, sent_at, sender, recipient, text) =
                    row.map_err(scylla_error("read conversation"))?;
                let message_id =
                    Uuid::from_slice(&message_id).map_err(|_| StoreError::InvalidRow {
                        table: "chat_message_by_conversation",
                        reason: format!("message id of {} bytes is not a uuid", message_id.len()),
                    })?;
                messages.push(ChatMessage {
                    message_id,
                    sender,
                    recipient,
                    text,
                    sent_at_unix_ms: sent_at.0,
                });
            }
            if messages.len() >= wanted {
                break;
            }
        }
        Ok(query.into_page(messages))
    }
}
