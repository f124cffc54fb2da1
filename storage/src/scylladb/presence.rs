//! Presence samples on ScyllaDB: batched appends per `(segment, day)` partition, paged reads.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt, stream};
use scylla::value::CqlTimestamp;

use crate::error::StoreError;
use crate::presence::{PresenceEvent, PresenceSample, PresenceSampleStore, check_presence_window};
use crate::scylladb::time_bucket::{day_bucket, day_buckets};
use crate::scylladb::{
    MAX_CONCURRENT_REQUESTS, ScyllaStore, into_single_partition_batches, scylla_error,
};

/// Bound values of one sample insert.
type SampleRow = (String, i32, CqlTimestamp, IpAddr, String, i8, i32);

impl ScyllaStore {
    async fn samples_of_day(
        &self,
        segment: &str,
        day: i32,
        from_unix_ms: i64,
        to_unix_ms: i64,
    ) -> Result<Vec<PresenceSample>, StoreError> {
        let mut rows = self
            .session
            .execute_iter(
                self.statements.select_samples.clone(),
                (
                    segment,
                    day,
                    CqlTimestamp(from_unix_ms),
                    CqlTimestamp(to_unix_ms),
                ),
            )
            .await
            .map_err(scylla_error("read presence samples"))?
            .rows_stream::<(IpAddr, String, i8, CqlTimestamp)>()
            .map_err(scylla_error("read presence samples"))?;
        let mut samples = Vec::new();
        while let Some(row) = rows.next().await {
            let (address, account, event_code, at) =
                row.map_err(scylla_error("read presence samples"))?;
            let event =
                PresenceEvent::from_code(event_code).ok_or_else(|| StoreError::InvalidRow {
                    table: "presence_sample",
                    reason: format!("unknown event code {event_code}"),
                })?;
            samples.push(PresenceSample {
                segment: segment.to_owned(),
                address,
                account,
                event,
                at_unix_ms: at.0,
            });
        }
        Ok(samples)
    }
}

#[async_trait]
impl PresenceSampleStore for ScyllaStore {
    async fn append(&self, samples: Vec<PresenceSample>) -> Result<(), StoreError> {
        let mut partitions: BTreeMap<(String, i32), Vec<SampleRow>> = BTreeMap::new();
        for sample in samples {
            let day = day_bucket(sample.at_unix_ms);
            partitions
                .entry((sample.segment.clone(), day))
                .or_default()
                .push((
                    sample.segment,
                    day,
                    CqlTimestamp(sample.at_unix_ms),
                    sample.address,
                    sample.account,
                    sample.event.code(),
                    self.sample_ttl_seconds,
                ));
        }
        self.run_batches(
            &self.statements.insert_sample,
            into_single_partition_batches(partitions),
            "append presence samples",
        )
        .await
    }

    async fn samples_in_window(
        &self,
        segment: &str,
        from_unix_ms: i64,
        to_unix_ms: i64,
    ) -> Result<Vec<PresenceSample>, StoreError> {
        check_presence_window(from_unix_ms, to_unix_ms)?;
        let per_day: Vec<Vec<PresenceSample>> = stream::iter(day_buckets(from_unix_ms, to_unix_ms))
            .map(|day| self.samples_of_day(segment, day, from_unix_ms, to_unix_ms))
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        Ok(per_day.into_iter().flatten().collect())
    }
}
