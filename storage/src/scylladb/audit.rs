//! Audit trail on ScyllaDB: month-bucketed partitions per entity, a per-entity index of months,
//! and keyset paging on `(at, event_id)`.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use crate::audit::{AuditEvent, AuditQuery, AuditStore, Page, PageRequest};
use crate::entity_state::EntityKey;
use crate::error::StoreError;
use crate::scylladb::time_bucket::month_bucket;
use crate::scylladb::{ScyllaStore, into_single_partition_batches, scylla_error};

/// Largest id in bytewise order: with `<=` it makes `(at, event_id) <= (t, MAX)` mean `at <= t`.
const MAX_EVENT_ID: [u8; 16] = [0xff; 16];

/// Bound values of one audit event insert.
type AuditRow = (
    String,
    String,
    i32,
    CqlTimestamp,
    Vec<u8>,
    String,
    String,
    Vec<u8>,
    Option<Uuid>,
);

/// Bound values of one audit month index insert.
type MonthRow = (String, String, i32);

impl ScyllaStore {
    /// Months of `entity` holding events, within `[first_month, last_month]`, ascending.
    async fn audit_months(
        &self,
        entity: &EntityKey,
        first_month: i32,
        last_month: i32,
    ) -> Result<Vec<i32>, StoreError> {
        self.session
            .execute_iter(
                self.statements.select_audit_months.clone(),
                (&entity.kind, &entity.id, first_month, last_month),
            )
            .await
            .map_err(scylla_error("read audit months"))?
            .rows_stream::<(i32,)>()
            .map_err(scylla_error("read audit months"))?
            .map_ok(|(month,)| month)
            .try_collect()
            .await
            .map_err(scylla_error("read audit months"))
    }
}

#[async_trait]
impl AuditStore for ScyllaStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        // The month index is written first: an event is never stored in a month the index does
        // not list, so queries cannot miss it.
        let mut month_rows: BTreeMap<(String, String), BTreeSet<i32>> = BTreeMap::new();
        for event in &events {
            month_rows
                .entry((event.entity.kind.clone(), event.entity.id.clone()))
                .or_default()
                .insert(month_bucket(event.at_unix_ms));
        }
        let month_partitions: BTreeMap<(String, String), Vec<MonthRow>> = month_rows
            .into_iter()
            .map(|((kind, id), months)| {
                let rows = months
                    .into_iter()
                    .map(|month| (kind.clone(), id.clone(), month))
                    .collect();
                ((kind, id), rows)
            })
            .collect();
        self.run_batches(
            &self.statements.insert_audit_month,
            into_single_partition_batches(month_partitions),
            "append audit month index",
        )
        .await?;

        let mut event_partitions: BTreeMap<(String, String, i32), Vec<AuditRow>> = BTreeMap::new();
        for event in events {
            let month = month_bucket(event.at_unix_ms);
            event_partitions
                .entry((event.entity.kind.clone(), event.entity.id.clone(), month))
                .or_default()
                .push((
                    event.entity.kind,
                    event.entity.id,
                    month,
                    CqlTimestamp(event.at_unix_ms),
                    event.event_id.as_bytes().to_vec(),
                    event.actor,
                    event.action,
                    event.detail,
                    event.msg_id_opt,
                ));
        }
        self.run_batches(
            &self.statements.insert_audit_event,
            into_single_partition_batches(event_partitions),
            "append audit events",
        )
        .await
    }

    async fn query(
        &self,
        entity: &EntityKey,
        from_unix_ms: i64,
        to_unix_ms: i64,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let query = AuditQuery::new(from_unix_ms, to_unix_ms, &page)?;
        if query.to_unix_ms <= query.from_unix_ms {
            return Ok(query.into_page(Vec::new()));
        }
        // Resume strictly after the cursor when it lies inside the window.
        let after_opt = query
            .after_opt
            .filter(|after| after.at_unix_ms >= query.from_unix_ms);
        let first_at_unix_ms = after_opt.map_or(query.from_unix_ms, |after| after.at_unix_ms);
        let last_at_unix_ms = query.to_unix_ms - 1;
        if first_at_unix_ms > last_at_unix_ms {
            // A cursor at or past the end of the window: nothing left.
            return Ok(query.into_page(Vec::new()));
        }
        let wanted = usize::try_from(query.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1);

        let months = self
            .audit_months(
                entity,
                month_bucket(first_at_unix_ms),
                month_bucket(last_at_unix_ms),
            )
            .await?;
        let mut events: Vec<AuditEvent> = Vec::new();
        for month in months {
            let remaining = i32::try_from(wanted - events.len()).unwrap_or(i32::MAX);
            let pager = match after_opt {
                Some(after) => {
                    self.session
                        .execute_iter(
                            self.statements.select_audit_events_after.clone(),
                            (
                                &entity.kind,
                                &entity.id,
                                month,
                                CqlTimestamp(after.at_unix_ms),
                                after.event_id.as_bytes().as_slice(),
                                CqlTimestamp(last_at_unix_ms),
                                MAX_EVENT_ID.as_slice(),
                                remaining,
                            ),
                        )
                        .await
                }
                None => {
                    self.session
                        .execute_iter(
                            self.statements.select_audit_events_from.clone(),
                            (
                                &entity.kind,
                                &entity.id,
                                month,
                                CqlTimestamp(query.from_unix_ms),
                                CqlTimestamp(query.to_unix_ms),
                                remaining,
                            ),
                        )
                        .await
                }
            }
            .map_err(scylla_error("query audit events"))?;
            let mut rows = pager
                .rows_stream::<(Vec<u8>, CqlTimestamp, String, String, Vec<u8>, Option<Uuid>)>()
                .map_err(scylla_error("query audit events"))?;
            while events.len() < wanted {
                let Some(row) = rows.next().await else {
                    break;
                };
                let (event_id, at, actor, action, detail, msg_id_opt) =
                    row.map_err(scylla_error("query audit events"))?;
                let event_id = Uuid::from_slice(&event_id).map_err(|_| StoreError::InvalidRow {
                    table: "audit_event",
                    reason: format!("id of {} bytes is not a uuid", event_id.len()),
                })?;
                events.push(AuditEvent {
                    event_id,
                    actor,
                    entity: entity.clone(),
                    action,
                    detail,
                    at_unix_ms: at.0,
                    msg_id_opt,
                });
            }
            if events.len() >= wanted {
                break;
            }
        }
        Ok(query.into_page(events))
    }
}
