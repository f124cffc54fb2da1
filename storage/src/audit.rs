//! Audit trail area: one immutable event per state change, paged queries by entity and time.

use async_trait::async_trait;
use uuid::Uuid;

use crate::entity_state::EntityKey;
use crate::error::StoreError;

/// Largest page a query may ask for.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// One state-changing event: who did what to which entity, when, and because of which message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unique id of the event (UUID v7, so ids also sort by creation time). Appending the same
    /// id again stores nothing new: a retried append must carry the same event.
    pub event_id: Uuid,
    /// Who caused the change (an account, an operator, a node, ...).
    pub actor: String,
    /// The entity whose state changed.
    pub entity: EntityKey,
    /// What happened, e.g. `quota.claimed`.
    pub action: String,
    /// Details of the change, encoded by the caller (e.g. MessagePack or JSON).
    pub detail: Vec<u8>,
    /// When it happened, milliseconds since the Unix epoch (UTC).
    pub at_unix_ms: i64,
    /// The message that caused the change, when there was one.
    pub msg_id_opt: Option<Uuid>,
}

/// Opaque position in a paged result; pass it back to get the next page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageCursor(String);

impl PageCursor {
    /// Wraps a cursor received from a client (it is checked when used).
    pub fn from_string(cursor: String) -> Self {
        Self(cursor)
    }

    /// The cursor as text, to hand to a client.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which page of a result to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Largest number of items to return, `1..=MAX_PAGE_LIMIT`.
    pub limit: u32,
    /// Where to continue: the `next_cursor_opt` of the previous page, or `None` to start.
    pub cursor_opt: Option<PageCursor>,
}

impl PageRequest {
    /// The first page with at most `limit` items.
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor_opt: None,
        }
    }
}

/// One page of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page, in result order.
    pub items: Vec<T>,
    /// Cursor of the next page; `None` when this page is the last one.
    pub next_cursor_opt: Option<PageCursor>,
}

/// Prefix of audit cursors, versioned so the encoding can change.
const AUDIT_CURSOR_PREFIX: &str = "a1.";

/// Position of an audit query: strictly after the event `(at_unix_ms, event_id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuditPosition {
    pub(crate) at_unix_ms: i64,
    pub(crate) event_id: Uuid,
}

impl AuditPosition {
    pub(crate) fn of(event: &AuditEvent) -> Self {
        Self {
            at_unix_ms: event.at_unix_ms,
            event_id: event.event_id,
        }
    }

    pub(crate) fn to_cursor(self) -> PageCursor {
        PageCursor(format!(
            "{AUDIT_CURSOR_PREFIX}{}.{}",
            self.at_unix_ms,
            self.event_id.simple()
        ))
    }

    pub(crate) fn from_cursor(cursor: &PageCursor) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidCursor {
            cursor: cursor.0.clone(),
        };
        let rest = cursor
            .0
            .strip_prefix(AUDIT_CURSOR_PREFIX)
            .ok_or_else(invalid)?;
        let (at_text, event_id_text) = rest.split_once('.').ok_or_else(invalid)?;
        let at_unix_ms = at_text.parse::<i64>().map_err(|_| invalid())?;
        let event_id = Uuid::try_parse(event_id_text).map_err(|_| invalid())?;
        Ok(Self {
            at_unix_ms,
            event_id,
        })
    }
}

/// A validated audit query, shared by the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuditQuery {
    pub(crate) from_unix_ms: i64,
    pub(crate) to_unix_ms: i64,
    pub(crate) after_opt: Option<AuditPosition>,
    pub(crate) limit: u32,
}

impl AuditQuery {
    /// Validates the window, limit and cursor of a query.
    pub(crate) fn new(
        from_unix_ms: i64,
        to_unix_ms: i64,
        page: &PageRequest,
    ) -> Result<Self, StoreError> {
        crate::presence::check_window(from_unix_ms, to_unix_ms)?;
        if page.limit == 0 || page.limit > MAX_PAGE_LIMIT {
            return Err(StoreError::InvalidPageLimit {
                limit: page.limit,
                max: MAX_PAGE_LIMIT,
            });
        }
        let after_opt = page
            .cursor_opt
            .as_ref()
            .map(AuditPosition::from_cursor)
            .transpose()?;
        Ok(Self {
            from_unix_ms,
            to_unix_ms,
            after_opt,
            limit: page.limit,
        })
    }

    /// Turns up to `limit + 1` fetched events (in result order) into a page: the extra event,
    /// when present, proves there is a next page.
    pub(crate) fn into_page(self, mut events: Vec<AuditEvent>) -> Page<AuditEvent> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let has_more = events.len() > limit;
        events.truncate(limit);
        let next_cursor_opt = if has_more {
            events
                .last()
                .map(|last| AuditPosition::of(last).to_cursor())
        } else {
            None
        };
        Page {
            items: events,
            next_cursor_opt,
        }
    }
}

/// Append-only audit trail.
///
/// A query returns the events of one entity with `from_unix_ms <= at_unix_ms < to_unix_ms`,
/// ordered by time ascending and, for events of the same millisecond, by `event_id` (bytewise),
/// so paging is stable: following `next_cursor_opt` visits every matching event exactly once.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends events; durable when this returns `Ok`. Events whose id is already stored are
    /// skipped, so retrying an append never duplicates an event.
    async fn append(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;

    /// Returns one page of the events of `entity` in `[from_unix_ms, to_unix_ms)`.
    async fn query(
        &self,
        entity: &EntityKey,
        from_unix_ms: i64,
        to_unix_ms: i64,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let position = AuditPosition {
            at_unix_ms: -42,
            event_id: Uuid::now_v7(),
        };
        assert_eq!(
            AuditPosition::from_cursor(&position.to_cursor()).unwrap(),
            position
        );
    }

    #[test]
    fn malformed_cursors_are_typed_errors() {
        for text in [
            "",
            "a1.",
            "a1.12",
            "a1.x.0",
            "b1.1.00000000000000000000000000000000",
            "a1.1.zz",
        ] {
            let cursor = PageCursor::from_string(text.to_owned());
            assert!(
                matches!(
                    AuditPosition::from_cursor(&cursor),
                    Err(StoreError::InvalidCursor { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(matches!(
            AuditQuery::new(0, 10, &PageRequest::first(0)),
            Err(StoreError::InvalidPageLimit { limit: 0, .. })
        ));
        assert!(matches!(
            AuditQuery::new(0, 10, &PageRequest::first(MAX_PAGE_LIMIT + 1)),
            Err(StoreError::InvalidPageLimit { .. })
        ));
        assert!(AuditQuery::new(0, 10, &PageRequest::first(MAX_PAGE_LIMIT)).is_ok());
        assert!(matches!(
            AuditQuery::new(10, 0, &PageRequest::first(1)),
            Err(StoreError::InvalidWindow { .. })
        ));
    }
}
