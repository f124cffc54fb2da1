//! Chat message area: one-to-one text messages between accounts, read by conversation newest
//! first with keyset paging.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

use crate::audit::{MAX_PAGE_LIMIT, Page, PageCursor, PageRequest};
use crate::error::StoreError;

/// Longest message text, in bytes of UTF-8.
pub const MAX_MESSAGE_TEXT_BYTES: usize = 4096;

/// Joins the two account ids of a conversation key. Account ids never contain it (appends and
/// queries refuse ids that do), so two different pairs never share a key.
const CONVERSATION_KEY_SEPARATOR: char = '\u{1f}';

/// Prefix of message cursors, versioned so the encoding can change.
const MESSAGE_CURSOR_PREFIX: &str = "m1.";

/// One stored one-to-one text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Chosen by the sender's client (a UUID); unique across all messages. Appending the same
    /// id again with the same fields stores nothing new, with any other field it is refused.
    pub message_id: Uuid,
    /// Account id of the sender.
    pub sender: String,
    /// Account id of the recipient, never the sender.
    pub recipient: String,
    /// The text, at most [`MAX_MESSAGE_TEXT_BYTES`] bytes.
    pub text: String,
    /// When the sender sent it, milliseconds since the Unix epoch (UTC).
    pub sent_at_unix_ms: i64,
}

/// Stored one-to-one messages.
///
/// A conversation is every message between two accounts, in either direction, ordered newest
/// first: by `sent_at_unix_ms` descending and, for messages of the same millisecond, by
/// `message_id` descending (bytewise), so paging is stable: following `next_cursor_opt` visits
/// every message of the conversation exactly once.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores `messages` (possibly none); durable when this returns `Ok`.
    ///
    /// Idempotent for retries: a message whose id is already stored with the same fields
    /// stores nothing new. An id already stored (or used twice in the batch) with any different
    /// field fails the whole call with [`StoreError::MessageIdReused`], and no message of the
    /// batch becomes visible. A text over [`MAX_MESSAGE_TEXT_BYTES`], an empty account id, an
    /// account id containing U+001F, or a sender equal to its recipient is
    /// [`StoreError::InvalidValue`], refused before any I/O.
    ///
    /// SQLite checks and writes the batch in one transaction. ScyllaDB first claims each id
    /// with a lightweight transaction (`INSERT ... IF NOT EXISTS` on `chat_message_by_id`) and
    /// writes the conversation rows only when every claim succeeded or found the same message;
    /// when one is refused, the ids this call claimed stay reserved for their messages
    /// (appending those unchanged later succeeds, different content under them is refused).
    async fn append(&self, messages: Vec<ChatMessage>) -> Result<(), StoreError>;

    /// Returns one page of the conversation between `account_a` and `account_b` (in either
    /// order), newest first. The accounts follow the rules of [`MessageStore::append`] (two
    /// different, non-empty ids), or the call is [`StoreError::InvalidValue`].
    async fn conversation(
        &self,
        account_a: &str,
        account_b: &str,
        page: PageRequest,
    ) -> Result<Page<ChatMessage>, StoreError>;
}

/// The key of the conversation between two accounts, the same for both argument orders: the
/// two ids in sorted order joined by U+001F. Both backends store it.
pub(crate) fn conversation_key(account_a: &str, account_b: &str) -> String {
    let (first, second) = if account_a <= account_b {
        (account_a, account_b)
    } else {
        (account_b, account_a)
    };
    let mut key = String::with_capacity(first.len() + second.len() + 1);
    key.push_str(first);
    key.push(CONVERSATION_KEY_SEPARATOR);
    key.push_str(second);
    key
}

fn check_account_id(field: &'static str, account: &str) -> Result<(), StoreError> {
    if account.is_empty() {
        return Err(StoreError::InvalidValue {
            field,
            reason: "an account id must not be empty".to_owned(),
        });
    }
    if account.contains(CONVERSATION_KEY_SEPARATOR) {
        return Err(StoreError::InvalidValue {
            field,
            reason: format!("account id {account:?} contains U+001F, which account ids never do"),
        });
    }
    Ok(())
}

fn check_account_pair(
    first_field: &'static str,
    first: &str,
    second_field: &'static str,
    second: &str,
) -> Result<(), StoreError> {
    check_account_id(first_field, first)?;
    check_account_id(second_field, second)?;
    if first == second {
        return Err(StoreError::InvalidValue {
            field: second_field,
            reason: format!(
                "{second:?} is also the {first_field}; a conversation needs two accounts"
            ),
        });
    }
    Ok(())
}

/// Checks one message's fields.
fn check_message(message: &ChatMessage) -> Result<(), StoreError> {
    check_account_pair(
        "message.sender",
        &message.sender,
        "message.recipient",
        &message.recipient,
    )?;
    if message.text.len() > MAX_MESSAGE_TEXT_BYTES {
        return Err(StoreError::InvalidValue {
            field: "message.text",
            reason: format!(
                "text of message {} has {} bytes, more than the {MAX_MESSAGE_TEXT_BYTES} allowed",
                message.message_id,
                message.text.len()
            ),
        });
    }
    Ok(())
}

/// Validates a batch before any I/O: every message's fields, and no id used twice for
/// different messages. Returns the batch with exact repeats removed, in first-seen order.
pub(crate) fn check_messages(messages: Vec<ChatMessage>) -> Result<Vec<ChatMessage>, StoreError> {
    let mut index_by_id: HashMap<Uuid, usize> = HashMap::with_capacity(messages.len());
    let mut unique = Vec::with_capacity(messages.len());
    for message in messages {
        check_message(&message)?;
        match index_by_id.get(&message.message_id) {
            Some(&index) => {
                if unique.get(index) != Some(&message) {
                    return Err(StoreError::MessageIdReused {
                        message_id: message.message_id,
                    });
                }
            }
            None => {
                index_by_id.insert(message.message_id, unique.len());
                unique.push(message);
            }
        }
    }
    Ok(unique)
}

/// Position in a conversation: strictly older than the message `(sent_at_unix_ms, message_id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessagePosition {
    pub(crate) sent_at_unix_ms: i64,
    pub(crate) message_id: Uuid,
}

impl MessagePosition {
    pub(crate) fn of(message: &ChatMessage) -> Self {
        Self {
            sent_at_unix_ms: message.sent_at_unix_ms,
            message_id: message.message_id,
        }
    }

    pub(crate) fn to_cursor(self) -> PageCursor {
        PageCursor::from_string(format!(
            "{MESSAGE_CURSOR_PREFIX}{}.{}",
            self.sent_at_unix_ms,
            self.message_id.simple()
        ))
    }

    pub(crate) fn from_cursor(cursor: &PageCursor) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidCursor {
            cursor: cursor.as_str().to_owned(),
        };
        let rest = cursor
            .as_str()
            .strip_prefix(MESSAGE_CURSOR_PREFIX)
            .ok_or_else(invalid)?;
        let (sent_at_text, message_id_text) = rest.split_once('.').ok_or_else(invalid)?;
        let sent_at_unix_ms = sent_at_text.parse::<i64>().map_err(|_| invalid())?;
        let message_id = Uuid::try_parse(message_id_text).map_err(|_| invalid())?;
        Ok(Self {
            sent_at_unix_ms,
            message_id,
        })
    }
}

/// A validated conversation query, shared by the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConversationQuery {
    /// [`conversation_key`] of the two accounts.
    pub(crate) conversation_key: String,
    /// Return only messages older than this position (the cursor), or from the newest.
    pub(crate) before_opt: Option<MessagePosition>,
    pub(crate) limit: u32,
}

impl ConversationQuery {
    /// Validates the accounts, limit and cursor of a query.
    pub(crate) fn new(
        account_a: &str,
        account_b: &str,
        page: &PageRequest,
    ) -> Result<Self, StoreError> {
        check_account_pair("account_a", account_a, "account_b", account_b)?;
        if page.limit == 0 || page.limit > MAX_PAGE_LIMIT {
            return Err(StoreError::InvalidPageLimit {
                limit: page.limit,
                max: MAX_PAGE_LIMIT,
            });
        }
        let before_opt = page
            .cursor_opt
            .as_ref()
            .map(MessagePosition::from_cursor)
            .transpose()?;
        Ok(Self {
            conversation_key: conversation_key(account_a, account_b),
            before_opt,
            limit: page.limit,
        })
    }

    /// Messages to fetch: one more than the limit, to learn whether a next page exists.
    pub(crate) fn fetch_limit(&self) -> usize {
        usize::try_from(self.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    }

    /// Turns up to `limit + 1` fetched messages (newest first) into a page: the extra message,
    /// when present, proves there is a next page.
    pub(crate) fn into_page(self, mut messages: Vec<ChatMessage>) -> Page<ChatMessage> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        let next_cursor_opt = if has_more {
            messages
                .last()
                .map(|last| MessagePosition::of(last).to_cursor())
        } else {
            None
        };
        Page {
            items: messages,
            next_cursor_opt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sender: &str, recipient: &str, text: &str) -> ChatMessage {
        ChatMessage {
            message_id: Uuid::now_v7(),
            sender: sender.to_owned(),
            recipient: recipient.to_owned(),
            text: text.to_owned(),
            sent_at_unix_ms: 1,
        }
    }

    #[test]
    fn conversation_key_ignores_argument_order_and_cannot_collide() {
        assert_eq!(conversation_key("bob", "alice"), "alice\u{1f}bob");
        assert_eq!(conversation_key("alice", "bob"), "alice\u{1f}bob");
        assert_ne!(conversation_key("a", "bc"), conversation_key("ab", "c"));
    }

    #[test]
    fn cursor_round_trips() {
        let position = MessagePosition {
            sent_at_unix_ms: -42,
            message_id: Uuid::now_v7(),
        };
        assert_eq!(
            MessagePosition::from_cursor(&position.to_cursor()).unwrap(),
            position
        );
    }

    #[test]
    fn malformed_cursors_are_typed_errors() {
        for text in [
            "",
            "m1.",
            "m1.12",
            "m1.x.0",
            "a1.1.00000000000000000000000000000000",
            "m1.1.zz",
        ] {
            let cursor = PageCursor::from_string(text.to_owned());
            assert!(
                matches!(
                    MessagePosition::from_cursor(&cursor),
                    Err(StoreError::InvalidCursor { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn invalid_messages_name_their_field() {
        let check = |message: ChatMessage, expected_field: &str| match check_messages(vec![message])
        {
            Err(StoreError::InvalidValue { field, .. }) => assert_eq!(field, expected_field),
            other => panic!("expected invalid {expected_field}, got {other:?}"),
        };
        check(message("", "bob", "hi"), "message.sender");
        check(message("alice", "", "hi"), "message.recipient");
        check(message("al\u{1f}ice", "bob", "hi"), "message.sender");
        check(message("alice", "alice", "hi"), "message.recipient");
        check(
            message("alice", "bob", &"é".repeat(MAX_MESSAGE_TEXT_BYTES / 2 + 1)),
            "message.text",
        );
        let longest = message("alice", "bob", &"x".repeat(MAX_MESSAGE_TEXT_BYTES));
        assert_eq!(
            check_messages(vec![longest.clone()]).unwrap(),
            vec![longest]
        );
    }

    #[test]
    fn repeats_in_a_batch_are_merged_and_reuses_refused() {
        let first = message("alice", "bob", "hi");
        let second = message("bob", "alice", "hello");
        assert_eq!(
            check_messages(vec![first.clone(), second.clone(), first.clone()]).unwrap(),
            vec![first.clone(), second]
        );
        let reused = ChatMessage {
            text: "changed".to_owned(),
            ..first.clone()
        };
        assert!(matches!(
            check_messages(vec![first.clone(), reused]),
            Err(StoreError::MessageIdReused { message_id }) if message_id == first.message_id
        ));
    }

    #[test]
    fn queries_check_accounts_and_limits() {
        assert!(matches!(
            ConversationQuery::new("alice", "bob", &PageRequest::first(0)),
            Err(StoreError::InvalidPageLimit { limit: 0, .. })
        ));
        assert!(matches!(
            ConversationQuery::new("alice", "bob", &PageRequest::first(MAX_PAGE_LIMIT + 1)),
            Err(StoreError::InvalidPageLimit { .. })
        ));
        assert!(matches!(
            ConversationQuery::new("alice", "alice", &PageRequest::first(1)),
            Err(StoreError::InvalidValue { .. })
        ));
        let query =
            ConversationQuery::new("bob", "alice", &PageRequest::first(MAX_PAGE_LIMIT)).unwrap();
        assert_eq!(query.conversation_key, conversation_key("alice", "bob"));
        assert_eq!(query.fetch_limit(), MAX_PAGE_LIMIT as usize + 1);
    }
}
