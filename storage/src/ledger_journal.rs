//! Ledger journal area: the append-only journal of each quota ledger, entries numbered per
//! ledger by a sequence 1, 2, 3…, each an opaque body the storage layer never decodes.

use async_trait::async_trait;

use crate::error::StoreError;

/// Longest ledger id, in bytes of UTF-8.
pub const MAX_LEDGER_ID_BYTES: usize = 256;

/// Largest body of one journal record, in bytes.
pub const MAX_JOURNAL_BODY_BYTES: usize = 64 * 1024;

/// Most records one append may carry.
pub const MAX_JOURNAL_BATCH_RECORDS: usize = 1024;

/// Most records one read may ask for.
pub const MAX_JOURNAL_READ_LIMIT: u32 = 10_000;

/// One entry of a ledger's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// Position of the entry in its ledger's journal, `1..=i64::MAX` (both backends store it as
    /// a signed 64-bit integer). The ledger numbers its entries 1, 2, 3… without gaps; the store
    /// keeps whatever it is given in sequence order and names each sequence's entry forever.
    pub sequence: u64,
    /// When the entry was made, milliseconds since the Unix epoch (UTC).
    pub at_unix_ms: i64,
    /// The entry, encoded by the ledger (MessagePack), at most [`MAX_JOURNAL_BODY_BYTES`].
    pub body: Vec<u8>,
}

/// The journals of quota ledgers, one per ledger id, each read in sequence order.
///
/// The store knows nothing of ledgers: it keeps opaque records by `(ledger_id, sequence)` and
/// guarantees that a sequence, once stored, names the same record forever. Numbering the
/// entries without gaps is the ledger's job (one writer per ledger); the store refuses a batch
/// that is not strictly increasing but does not require it to follow the last stored sequence.
#[async_trait]
pub trait LedgerJournalStore: Send + Sync {
    /// Stores `records` (possibly none) in the journal of `ledger_id`; durable when this
    /// returns `Ok`.
    ///
    /// Idempotent for retries: a record whose sequence is already stored with the same
    /// `at_unix_ms` and `body` stores nothing new. A sequence already stored with a different
    /// time or body fails the whole call with [`StoreError::JournalConflict`] (naming the lowest
    /// such sequence the store found) and no record of the batch is written.
    ///
    /// Refused with [`StoreError::InvalidValue`] before any I/O: an empty ledger id or one over
    /// [`MAX_LEDGER_ID_BYTES`], a sequence of 0 or above `i64::MAX`, a body over
    /// [`MAX_JOURNAL_BODY_BYTES`], more than [`MAX_JOURNAL_BATCH_RECORDS`] records, or records
    /// whose sequences are not strictly increasing.
    ///
    /// SQLite checks and writes the batch in one transaction committed with
    /// `synchronous=FULL`. ScyllaDB writes it as conditional batches (`INSERT ... IF NOT
    /// EXISTS`, one lightweight transaction per batch of up to 100 records and 96 KiB of bodies
    /// on the ledger's single partition), each all-or-nothing, in sequence order; a larger
    /// append first reads its sequences, so a conflict with what is already stored refuses it
    /// before anything is written. Only a different record written concurrently under the same
    /// sequences (two writers of one ledger, which the ledger's ownership rules out) can leave
    /// a prefix of a refused append stored on ScyllaDB; retrying the same append then fails the
    /// same way, and the stored prefix is exactly what the append asked for.
    ///
    /// After any other error (a timeout, an unavailable cluster, a full disk) the caller cannot
    /// know what was stored (on ScyllaDB, possibly the first conditional batches of the
    /// append): retrying the same append converges to the whole of it stored once.
    async fn append(&self, ledger_id: &str, records: &[JournalRecord]) -> Result<(), StoreError>;

    /// Returns the records of `ledger_id` with a sequence above `after_sequence`, ascending, at
    /// most `limit` of them; fewer only when no more are stored. Replay a journal by starting
    /// at 0 and passing the last sequence returned until a page comes back shorter than
    /// `limit`. A `limit` of 0 or over [`MAX_JOURNAL_READ_LIMIT`] is
    /// [`StoreError::InvalidPageLimit`]; the ledger id follows the rules of
    /// [`LedgerJournalStore::append`].
    async fn read(
        &self,
        ledger_id: &str,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<JournalRecord>, StoreError>;

    /// The highest sequence stored for `ledger_id`, or 0 when its journal is empty. The ledger
    /// id follows the rules of [`LedgerJournalStore::append`].
    async fn last_sequence(&self, ledger_id: &str) -> Result<u64, StoreError>;
}

/// Checks a ledger id: not empty, at most [`MAX_LEDGER_ID_BYTES`].
pub(crate) fn check_ledger_id(ledger_id: &str) -> Result<(), StoreError> {
    if ledger_id.is_empty() {
        return Err(StoreError::InvalidValue {
            field: "ledger_id",
            reason: "a ledger id must not be empty".to_owned(),
        });
    }
    if ledger_id.len() > MAX_LEDGER_ID_BYTES {
        return Err(StoreError::InvalidValue {
            field: "ledger_id",
            reason: format!(
                "ledger id has {} bytes, more than the {MAX_LEDGER_ID_BYTES} allowed",
                ledger_id.len()
            ),
        });
    }
    Ok(())
}

/// The sequence as both backends store it (a signed 64-bit integer); 0 and values above
/// `i64::MAX` are refused.
pub(crate) fn stored_sequence(sequence: u64) -> Result<i64, StoreError> {
    match i64::try_from(sequence) {
        Ok(stored) if stored > 0 => Ok(stored),
        _ => Err(StoreError::InvalidValue {
            field: "record.sequence",
            reason: format!("sequence {sequence} is outside 1..={}", i64::MAX),
        }),
    }
}

/// Decodes a stored sequence; a stored value below 1 is a damaged row of `table`.
pub(crate) fn sequence_from_stored(stored: i64, table: &'static str) -> Result<u64, StoreError> {
    u64::try_from(stored)
        .ok()
        .filter(|&sequence| sequence > 0)
        .ok_or_else(|| StoreError::InvalidRow {
            table,
            reason: format!("journal sequence {stored} is not positive"),
        })
}

/// Validates an append before any I/O (see [`LedgerJournalStore::append`]).
pub(crate) fn check_append(ledger_id: &str, records: &[JournalRecord]) -> Result<(), StoreError> {
    check_ledger_id(ledger_id)?;
    if records.len() > MAX_JOURNAL_BATCH_RECORDS {
        return Err(StoreError::InvalidValue {
            field: "records",
            reason: format!(
                "batch has {} records, more than the {MAX_JOURNAL_BATCH_RECORDS} allowed",
                records.len()
            ),
        });
    }
    let mut previous_sequence_opt: Option<u64> = None;
    for record in records {
        stored_sequence(record.sequence)?;
        if record.body.len() > MAX_JOURNAL_BODY_BYTES {
            return Err(StoreError::InvalidValue {
                field: "record.body",
                reason: format!(
                    "body of sequence {} has {} bytes, more than the {MAX_JOURNAL_BODY_BYTES} \
                     allowed",
                    record.sequence,
                    record.body.len()
                ),
            });
        }
        if let Some(previous_sequence) = previous_sequence_opt
            && record.sequence <= previous_sequence
        {
            return Err(StoreError::InvalidValue {
                field: "records",
                reason: format!(
                    "sequence {} follows sequence {previous_sequence}; a batch must be strictly \
                     increasing",
                    record.sequence
                ),
            });
        }
        previous_sequence_opt = Some(record.sequence);
    }
    Ok(())
}

/// A validated read, shared by the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JournalReadQuery {
    /// Return records with a stored sequence above this one; `None` when no stored sequence
    /// can be (`after_sequence` is `i64::MAX` or more).
    pub(crate) after_stored_sequence_opt: Option<i64>,
    /// Most records to return, `1..=MAX_JOURNAL_READ_LIMIT`.
    pub(crate) limit: u32,
}

impl JournalReadQuery {
    /// Validates the ledger id and limit of a read.
    pub(crate) fn new(
        ledger_id: &str,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Self, StoreError> {
        check_ledger_id(ledger_id)?;
        if limit == 0 || limit > MAX_JOURNAL_READ_LIMIT {
            return Err(StoreError::InvalidPageLimit {
                limit,
                max: MAX_JOURNAL_READ_LIMIT,
            });
        }
        let after_stored_sequence_opt = i64::try_from(after_sequence)
            .ok()
            .filter(|&after| after < i64::MAX);
        Ok(Self {
            after_stored_sequence_opt,
            limit,
        })
    }
}

/// Whether `stored` is `record` itself (a retry), or [`StoreError::JournalConflict`].
pub(crate) fn same_or_conflict(
    ledger_id: &str,
    record: &JournalRecord,
    stored_at_unix_ms: i64,
    stored_body: &[u8],
) -> Result<(), StoreError> {
    if stored_at_unix_ms == record.at_unix_ms && stored_body == record.body.as_slice() {
        Ok(())
    } else {
        Err(StoreError::JournalConflict {
            ledger_id: ledger_id.to_owned(),
            sequence: record.sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(sequence: u64, body: &[u8]) -> JournalRecord {
        JournalRecord {
            sequence,
            at_unix_ms: 1,
            body: body.to_vec(),
        }
    }

    fn invalid_field(result: Result<(), StoreError>) -> &'static str {
        match result {
            Err(StoreError::InvalidValue { field, .. }) => field,
            other => panic!("expected an invalid value, got {other:?}"),
        }
    }

    #[test]
    fn invalid_appends_name_their_field() {
        let check = |ledger_id: &str, records: &[JournalRecord], expected_field: &str| {
            assert_eq!(
                invalid_field(check_append(ledger_id, records)),
                expected_field,
                "{ledger_id:?} {records:?}"
            );
        };
        check("", &[], "ledger_id");
        check(&"l".repeat(MAX_LEDGER_ID_BYTES + 1), &[], "ledger_id");
        check("l", &[record(0, b"")], "record.sequence");
        check("l", &[record(1 << 63, b"")], "record.sequence");
        check("l", &[record(u64::MAX, b"")], "record.sequence");
        check(
            "l",
            &[record(1, &vec![0; MAX_JOURNAL_BODY_BYTES + 1])],
            "record.body",
        );
        check("l", &[record(2, b""), record(2, b"")], "records");
        check("l", &[record(2, b""), record(1, b"")], "records");
        let too_many: Vec<JournalRecord> =
            (1..=1025).map(|sequence| record(sequence, b"")).collect();
        check("l", &too_many, "records");

        let longest_id = "é".repeat(MAX_LEDGER_ID_BYTES / 2);
        let most: Vec<JournalRecord> = (1..=1024).map(|sequence| record(sequence, b"")).collect();
        check_append(&longest_id, &most).unwrap();
        check_append(
            "l",
            &[
                record(1, &vec![0; MAX_JOURNAL_BODY_BYTES]),
                record(7, b""),
                record(i64::MAX as u64, b""),
            ],
        )
        .unwrap();
        check_append("l", &[]).unwrap();
    }

    #[test]
    fn reads_check_the_ledger_id_and_limit() {
        assert!(matches!(
            JournalReadQuery::new("l", 0, 0),
            Err(StoreError::InvalidPageLimit {
                limit: 0,
                max: MAX_JOURNAL_READ_LIMIT
            })
        ));
        assert!(matches!(
            JournalReadQuery::new("l", 0, MAX_JOURNAL_READ_LIMIT + 1),
            Err(StoreError::InvalidPageLimit { .. })
        ));
        assert!(matches!(
            JournalReadQuery::new("", 0, 1),
            Err(StoreError::InvalidValue {
                field: "ledger_id",
                ..
            })
        ));
        let check = |after_sequence: u64, expected_opt: Option<i64>| {
            let query = JournalReadQuery::new("l", after_sequence, MAX_JOURNAL_READ_LIMIT).unwrap();
            assert_eq!(
                query.after_stored_sequence_opt, expected_opt,
                "{after_sequence}"
            );
        };
        check(0, Some(0));
        check(41, Some(41));
        check(i64::MAX as u64 - 1, Some(i64::MAX - 1));
        check(i64::MAX as u64, None);
        check(u64::MAX, None);
    }

    #[test]
    fn stored_sequences_round_trip_and_damaged_ones_are_refused() {
        for sequence in [1, 2, i64::MAX as u64] {
            let stored = stored_sequence(sequence).unwrap();
            assert_eq!(sequence_from_stored(stored, "t").unwrap(), sequence);
        }
        for stored in [0, -1, i64::MIN] {
            assert!(matches!(
                sequence_from_stored(stored, "t"),
                Err(StoreError::InvalidRow { table: "t", .. })
            ));
        }
    }

    #[test]
    fn a_retry_is_same_and_any_difference_conflicts() {
        let stored = record(3, b"body");
        same_or_conflict("l", &stored, 1, b"body").unwrap();
        assert!(matches!(
            same_or_conflict("l", &stored, 2, b"body"),
            Err(StoreError::JournalConflict { sequence: 3, .. })
        ));
        assert!(matches!(
            same_or_conflict("l", &stored, 1, b"other"),
            Err(StoreError::JournalConflict { ref ledger_id, sequence: 3 }) if ledger_id == "l"
        ));
    }

    proptest! {
        #[test]
        fn a_batch_is_accepted_exactly_when_strictly_increasing_and_in_range(
            sequences in proptest::collection::vec(
                prop_oneof![0_u64..20, Just(i64::MAX as u64), Just(u64::MAX)],
                0..8,
            ),
        ) {
            let records: Vec<JournalRecord> =
                sequences.iter().map(|&sequence| record(sequence, b"x")).collect();
            let in_range = sequences.iter().all(|&sequence| (1..=i64::MAX as u64).contains(&sequence));
            let increasing = sequences.windows(2).all(|pair| pair[0] < pair[1]);
            prop_assert_eq!(check_append("l", &records).is_ok(), in_range && increasing);
        }
    }
}
