//! Ledger journals on ScyllaDB: one partition per ledger, records clustered by sequence,
//! appended with conditional batches (`INSERT ... IF NOT EXISTS`) that are each one lightweight
//! transaction, and not-applied or ambiguous outcomes settled by reading the sequences back.
//!
//! # Atomicity
//!
//! A conditional batch on one partition is all-or-nothing: either every record of it is
//! inserted or none is, and a concurrent append of the same sequences is ordered before or
//! after it. An append is cut into such batches of at most [`MAX_BATCH_STATEMENTS`] records and
//! [`MAX_LWT_BATCH_BODY_BYTES`] of bodies, written in sequence order:
//!
//! * an append that fits one batch is atomic;
//! * a larger append first reads every sequence it carries and is refused with
//!   `JournalConflict` before anything is written when one is stored with other content; only
//!   a different record written under the same sequences between that read and the batches
//!   (two concurrent writers of one ledger) can leave the batches before the conflicting one
//!   stored;
//! * a batch failing with a driver error (timeout, unavailable) leaves the batches before it
//!   stored and the call's outcome unknown to the caller, who retries.
//!
//! # Retries converge
//!
//! A batch that was not applied is settled with a serial read of its sequences, which completes
//! any in-flight transaction on the partition: records stored with the same time and body count
//! as written, one stored with another is a `JournalConflict`, and the rest are written again
//! in a smaller batch. A batch whose outcome is unknown (timeout) is read back the same way; when
//! some of its records are still missing the driver's error is returned, and the caller's retry
//! converges (a proposal accepted but not yet committed can still complete, with the very same
//! content). So a retried or concurrently repeated append stores each record once.
//!
//! # Durability
//!
//! ScyllaDB writes lightweight-transaction mutations with a synchronous commit log (synced
//! before the reply) whatever `commitlog_sync` says, on a quorum of replicas.
//!
//! # Growth
//!
//! The whole journal of a ledger is one partition, with no TTL. That suits ledgers of up to a
//! few hundred thousand entries (tens of MiB); a far longer ledger would need its partition
//! split into sequence buckets (e.g. `((ledger_id, sequence / 100000), sequence)`) or
//! snapshots that let old entries go.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::value::{CqlTimestamp, CqlValue, Row};

use crate::error::StoreError;
use crate::ledger_journal::{
    JournalReadQuery, JournalRecord, LedgerJournalStore, check_append, check_ledger_id,
    same_or_conflict, sequence_from_stored, stored_sequence,
};
use crate::scylladb::{MAX_BATCH_STATEMENTS, ScyllaStore, scylla_error};

/// The table, as named in errors about its rows.
const TABLE: &str = "ledger_journal";

/// Largest total of bodies in one conditional batch, below ScyllaDB's default
/// `batch_size_warn_threshold_in_kb` (128 KiB; batches over `batch_size_fail_threshold_in_kb`,
/// 1 MiB, are refused). A batch always holds at least one record.
const MAX_LWT_BATCH_BODY_BYTES: usize = 96 * 1024;

/// Bound values of one journal insert.
type JournalRow<'record> = (&'record str, i64, CqlTimestamp, &'record [u8]);

/// Columns read back from the journal.
type StoredRow = (i64, CqlTimestamp, Vec<u8>);

/// Cuts validated records into the conditional batches they are written in: at most
/// [`MAX_BATCH_STATEMENTS`] records and [`MAX_LWT_BATCH_BODY_BYTES`] of bodies each (a single
/// larger body goes alone), in order.
fn into_lwt_batches(records: &[JournalRecord]) -> Vec<Vec<&JournalRecord>> {
    let mut batches: Vec<Vec<&JournalRecord>> = Vec::new();
    let mut current: Vec<&JournalRecord> = Vec::new();
    let mut current_body_bytes = 0;
    for record in records {
        let full = current.len() >= MAX_BATCH_STATEMENTS
            || current_body_bytes + record.body.len() > MAX_LWT_BATCH_BODY_BYTES;
        if full && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            current_body_bytes = 0;
        }
        current_body_bytes += record.body.len();
        current.push(record);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Whether a conditional statement or batch was applied (its result's `[applied]` column).
fn was_applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result
        .into_rows_result()
        .map_err(scylla_error("read journal append result"))?;
    let (applied_index, _) = rows
        .column_specs()
        .get_by_name("[applied]")
        .ok_or_else(|| StoreError::InvalidRow {
            table: TABLE,
            reason: "conditional batch result has no [applied] column".to_owned(),
        })?;
    let row: Row = rows
        .first_row()
        .map_err(scylla_error("read journal append result"))?;
    Ok(matches!(
        row.columns.get(applied_index),
        Some(Some(CqlValue::Boolean(true)))
    ))
}

impl ScyllaStore {
    /// Reads which of `records` (at most [`MAX_BATCH_STATEMENTS`], one ledger) are stored and
    /// compares them: `JournalConflict` for the first stored with another time or body,
    /// otherwise the records not stored yet, in order. A `serial` read first completes any
    /// in-flight lightweight transaction on the partition.
    async fn unstored_journal_records<'record>(
        &self,
        ledger_id: &str,
        records: &[&'record JournalRecord],
        serial: bool,
    ) -> Result<Vec<&'record JournalRecord>, StoreError> {
        let statement = if serial {
            &self.statements.select_journal_records_in_serial
        } else {
            &self.statements.select_journal_records_in
        };
        let sequences = records
            .iter()
            .map(|record| stored_sequence(record.sequence))
            .collect::<Result<Vec<i64>, _>>()?;
        // Unpaged (serial reads are not paged): at most MAX_BATCH_STATEMENTS rows.
        let result = self
            .session
            .execute_unpaged(statement, (ledger_id, sequences.as_slice()))
            .await
            .map_err(scylla_error("read journal sequences"))?;
        let stored: BTreeMap<i64, (CqlTimestamp, Vec<u8>)> = result
            .into_rows_result()
            .map_err(scylla_error("read journal sequences"))?
            .rows::<StoredRow>()
            .map_err(scylla_error("read journal sequences"))?
            .map(|row| row.map(|(sequence, at, body)| (sequence, (at, body))))
            .collect::<Result<_, _>>()
            .map_err(scylla_error("read journal sequences"))?;
        let mut unstored = Vec::with_capacity(records.len());
        for (record, sequence) in records.iter().zip(&sequences) {
            match stored.get(sequence) {
                Some((stored_at, stored_body)) => {
                    same_or_conflict(ledger_id, record, stored_at.0, stored_body)?;
                }
                None => unstored.push(*record),
            }
        }
        Ok(unstored)
    }

    /// Inserts `records` (one ledger) in one conditional batch; `Ok(true)` when it was applied,
    /// `Ok(false)` when one of the sequences was already stored (nothing was inserted).
    async fn insert_journal_batch_if_absent(
        &self,
        ledger_id: &str,
        records: &[&JournalRecord],
    ) -> Result<bool, StoreError> {
        let values = records
            .iter()
            .map(|record| {
                Ok((
                    ledger_id,
                    stored_sequence(record.sequence)?,
                    CqlTimestamp(record.at_unix_ms),
                    record.body.as_slice(),
                ))
            })
            .collect::<Result<Vec<JournalRow<'_>>, StoreError>>()?;
        let statement = BatchStatement::PreparedStatement(
            self.statements.insert_journal_record_if_absent.clone(),
        );
        let mut batch =
            Batch::new_with_statements(BatchType::Logged, vec![statement; values.len()]);
        batch.set_is_idempotent(false);
        let result = self
            .session
            .batch(&batch, &values)
            .await
            .map_err(scylla_error("append ledger journal"))?;
        was_applied(result)
    }

    /// Writes one conditional batch's worth of records, settling not-applied and ambiguous
    /// outcomes with serial reads (see the module documentation).
    async fn append_journal_lwt_batch(
        &self,
        ledger_id: &str,
        records: Vec<&JournalRecord>,
    ) -> Result<(), StoreError> {
        let mut pending = records;
        while !pending.is_empty() {
            match self
                .insert_journal_batch_if_absent(ledger_id, &pending)
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    // Some sequence was stored when the batch ran: keep what is not stored yet,
                    // or stop at a conflict.
                    let unstored = self
                        .unstored_journal_records(ledger_id, &pending, true)
                        .await?;
                    if unstored.len() == pending.len() {
                        return Err(StoreError::InvalidRow {
                            table: TABLE,
                            reason: format!(
                                "conditional append to ledger {ledger_id:?} was not applied, yet \
                                 none of its sequences is stored"
                            ),
                        });
                    }
                    pending = unstored;
                }
                Err(error) => {
                    // The batch may or may not have been applied (e.g. a timeout after the
                    // Paxos accept). A serial read settles the partition; decide from it.
                    tracing::warn!(
                        ledger_id = %ledger_id,
                        error = %error,
                        "journal append outcome unknown, reading back"
                    );
                    return match self
                        .unstored_journal_records(ledger_id, &pending, true)
                        .await
                    {
                        Ok(unstored) if unstored.is_empty() => Ok(()),
                        Err(conflict @ StoreError::JournalConflict { .. }) => Err(conflict),
                        Ok(_) | Err(_) => Err(error),
                    };
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LedgerJournalStore for ScyllaStore {
    async fn append(&self, ledger_id: &str, records: &[JournalRecord]) -> Result<(), StoreError> {
        check_append(ledger_id, records)?;
        let mut batches = into_lwt_batches(records);
        if batches.len() > 1 {
            // Refuse a conflict with what is stored before writing anything, and skip what is
            // stored already (a retry of a large append).
            let mut unstored_batches = Vec::with_capacity(batches.len());
            for batch in &batches {
                let unstored = self
                    .unstored_journal_records(ledger_id, batch, false)
                    .await?;
                if !unstored.is_empty() {
                    unstored_batches.push(unstored);
                }
            }
            batches = unstored_batches;
        }
        for batch in batches {
            self.append_journal_lwt_batch(ledger_id, batch).await?;
        }
        Ok(())
    }

    async fn read(
        &self,
        ledger_id: &str,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<JournalRecord>, StoreError> {
        let query = JournalReadQuery::new(ledger_id, after_sequence, limit)?;
        let Some(after_stored_sequence) = query.after_stored_sequence_opt else {
            return Ok(Vec::new());
        };
        let limit = i32::try_from(query.limit).unwrap_or(i32::MAX);
        let rows: Vec<StoredRow> = self
            .session
            .execute_iter(
                self.statements.select_journal_records_after.clone(),
                (ledger_id, after_stored_sequence, limit),
            )
            .await
            .map_err(scylla_error("read ledger journal"))?
            .rows_stream::<StoredRow>()
            .map_err(scylla_error("read ledger journal"))?
            .try_collect()
            .await
            .map_err(scylla_error("read ledger journal"))?;
        rows.into_iter()
            .map(|(sequence, at, body)| {
                Ok(JournalRecord {
                    sequence: sequence_from_stored(sequence, TABLE)?,
                    at_unix_ms: at.0,
                    body,
                })
            })
            .collect()
    }

    async fn last_sequence(&self, ledger_id: &str) -> Result<u64, StoreError> {
        check_ledger_id(ledger_id)?;
        let result = self
            .session
            .execute_unpaged(&self.statements.select_journal_last_sequence, (ledger_id,))
            .await
            .map_err(scylla_error("read last journal sequence"))?;
        let rows = result
            .into_rows_result()
            .map_err(scylla_error("read last journal sequence"))?;
        let last_opt = rows
            .maybe_first_row::<(i64,)>()
            .map_err(scylla_error("read last journal sequence"))?;
        last_opt.map_or(Ok(0), |(last,)| sequence_from_stored(last, TABLE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64, n_body_bytes: usize) -> JournalRecord {
        JournalRecord {
            sequence,
            at_unix_ms: 0,
            body: vec![0; n_body_bytes],
        }
    }

    fn batch_sizes(records: &[JournalRecord]) -> Vec<usize> {
        into_lwt_batches(records).iter().map(Vec::len).collect()
    }

    #[test]
    fn batches_respect_the_statement_and_byte_caps_in_order() {
        assert_eq!(batch_sizes(&[]), Vec::<usize>::new());
        let small: Vec<JournalRecord> = (1..=250).map(|sequence| record(sequence, 10)).collect();
        assert_eq!(batch_sizes(&small), vec![100, 100, 50]);
        let flattened: Vec<u64> = into_lwt_batches(&small)
            .into_iter()
            .flatten()
            .map(|record| record.sequence)
            .collect();
        assert_eq!(flattened, (1..=250).collect::<Vec<_>>());

        // 64 KiB bodies: one per batch (two would pass the byte cap).
        let large: Vec<JournalRecord> = (1..=3)
            .map(|sequence| record(sequence, 64 * 1024))
            .collect();
        assert_eq!(batch_sizes(&large), vec![1, 1, 1]);
        // Bodies that exactly fill the cap share a batch; one more byte starts the next.
        let exact = [
            record(1, MAX_LWT_BATCH_BODY_BYTES / 2),
            record(2, MAX_LWT_BATCH_BODY_BYTES / 2),
            record(3, 1),
        ];
        assert_eq!(batch_sizes(&exact), vec![2, 1]);
    }
}
