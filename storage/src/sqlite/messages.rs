//! Chat messages on SQLite: appends through the writer thread, conversation pages from the read
//! pool on the `chat_message_by_conversation_time` index.

use async_trait::async_trait;
use rusqlite::params;
use uuid::Uuid;

use crate::audit::{Page, PageRequest};
use crate::error::StoreError;
use crate::messages::{ChatMessage, ConversationQuery, MessageStore, check_messages};
use crate::sqlite::SqliteStore;
use crate::sqlite::errors::sqlite_error;
use crate::sqlite::writer::WriteCommand;

/// Sorts after every stored 16-byte id: with `<` it makes `(sent_at, id) < (t, AFTER_EVERY_ID)`
/// mean `sent_at <= t`.
const AFTER_EVERY_ID: [u8; 17] = [0xff; 17];

#[async_trait]
impl MessageStore for SqliteStore {
    async fn append(&self, messages: Vec<ChatMessage>) -> Result<(), StoreError> {
        let messages = check_messages(messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        self.writer
            .write(WriteCommand::AppendMessages(messages))
            .await
    }

    async fn conversation(
        &self,
        account_a: &str,
        account_b: &str,
        page: PageRequest,
    ) -> Result<Page<ChatMessage>, StoreError> {
        let query = ConversationQuery::new(account_a, account_b, &page)?;
        self.readers
            .read(move |connection, config| {
                // Without a cursor, start after the newest possible message.
                let (before_sent_at_unix_ms, before_message_id): (i64, Vec<u8>) =
                    match query.before_opt {
                        Some(before) => (
                            before.sent_at_unix_ms,
                            before.message_id.as_bytes().to_vec(),
                        ),
                        None => (i64::MAX, AFTER_EVERY_ID.to_vec()),
                    };
                let fetch_limit = i64::try_from(query.fetch_limit()).unwrap_or(i64::MAX);
                let rows = connection
                    .prepare_cached(
                        "SELECT message_id, sender, recipient, text, sent_at_unix_ms \
                         FROM chat_message \
                         WHERE conversation = ?1 AND (sent_at_unix_ms, message_id) < (?2, ?3) \
                         ORDER BY sent_at_unix_ms DESC, message_id DESC LIMIT ?4",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_map(
                                params![
                                    query.conversation_key,
                                    before_sent_at_unix_ms,
                                    before_message_id,
                                    fetch_limit,
                                ],
                                |row| {
                                    Ok((
                                        row.get::<_, Vec<u8>>(0)?,
                                        row.get::<_, String>(1)?,
                                        row.get::<_, String>(2)?,
                                        row.get::<_, String>(3)?,
                                        row.get::<_, i64>(4)?,
                                    ))
                                },
                            )?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(sqlite_error(&config.path, "read conversation"))?;
                let messages = rows
                    .into_iter()
                    .map(|(message_id, sender, recipient, text, sent_at_unix_ms)| {
                        Ok(ChatMessage {
                            message_id: parse_message_id(&message_id)?,
                            sender,
                            recipient,
                            text,
                            sent_at_unix_ms,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(query.into_page(messages))
            })
            .await
    }
}

fn parse_message_id(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::InvalidRow {
        table: "chat_message",
        reason: format!("message id of {} bytes is not a uuid", bytes.len()),
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::sqlite::schema::prepare_database;

    #[test]
    fn conversation_pages_read_the_index_in_order() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("plan.db");
        let mut connection = Connection::open(&path).unwrap();
        prepare_database(&mut connection, &path).unwrap();
        let plan: Vec<String> = connection
            .prepare(
                "EXPLAIN QUERY PLAN SELECT message_id, sender, recipient, text, sent_at_unix_ms \
                 FROM chat_message \
                 WHERE conversation = ?1 AND (sent_at_unix_ms, message_id) < (?2, ?3) \
                 ORDER BY sent_at_unix_ms DESC, message_id DESC LIMIT ?4",
            )
            .unwrap()
            .query_map(params!["a\u{1f}b", 0, AFTER_EVERY_ID.to_vec(), 10], |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX chat_message_by_conversation_time"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}
