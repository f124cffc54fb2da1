//! Entity state on ScyllaDB: loads, and compare-and-set with lightweight transactions.

use async_trait::async_trait;
use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};

use crate::entity_state::{
    EntityKey, EntityStateStore, StateVersion, StoredEntityState, check_version_increases,
};
use crate::error::StoreError;
use crate::scylladb::{ScyllaStore, scylla_error};

/// Outcome of a conditional write as reported by ScyllaDB.
struct LwtOutcome {
    applied: bool,
    /// The row's version before the statement (ScyllaDB always returns the old row).
    previous_opt: Option<StateVersion>,
}

fn parse_lwt_outcome(result: QueryResult) -> Result<LwtOutcome, StoreError> {
    let rows = result
        .into_rows_result()
        .map_err(scylla_error("read compare-and-set result"))?;
    let specs = rows.column_specs();
    let index_of = |name: &str| specs.get_by_name(name).map(|(index, _)| index);
    let applied_index = index_of("[applied]").ok_or_else(|| StoreError::InvalidRow {
        table: "entity_state",
        reason: "conditional write result has no [applied] column".to_owned(),
    })?;
    let epoch_index_opt = index_of("epoch");
    let version_index_opt = index_of("version");
    let row: Row = rows
        .first_row()
        .map_err(scylla_error("read compare-and-set result"))?;
    let column = |index_opt: Option<usize>| index_opt.and_then(|index| row.columns.get(index));
    let applied = matches!(
        column(Some(applied_index)),
        Some(Some(CqlValue::Boolean(true)))
    );
    let previous_opt = match (column(epoch_index_opt), column(version_index_opt)) {
        (Some(Some(CqlValue::BigInt(epoch))), Some(Some(CqlValue::BigInt(version)))) => {
            Some(StateVersion {
                epoch: epoch.cast_unsigned(),
                version: version.cast_unsigned(),
            })
        }
        _ => None,
    };
    Ok(LwtOutcome {
        applied,
        previous_opt,
    })
}

impl ScyllaStore {
    async fn load_with(
        &self,
        key: &EntityKey,
        serial: bool,
    ) -> Result<Option<StoredEntityState>, StoreError> {
        let statement = if serial {
            &self.statements.load_state_serial
        } else {
            &self.statements.load_state
        };
        let result = self
            .session
            .execute_unpaged(statement, (&key.kind, &key.id))
            .await
            .map_err(scylla_error("load entity state"))?;
        let rows = result
            .into_rows_result()
            .map_err(scylla_error("load entity state"))?;
        let row_opt = rows
            .maybe_first_row::<(i64, i64, Vec<u8>)>()
            .map_err(scylla_error("load entity state"))?;
        Ok(row_opt.map(|(epoch, version, state)| StoredEntityState {
            version: StateVersion {
                epoch: epoch.cast_unsigned(),
                version: version.cast_unsigned(),
            },
            state,
        }))
    }
}

#[async_trait]
impl EntityStateStore for ScyllaStore {
    async fn load(&self, key: &EntityKey) -> Result<Option<StoredEntityState>, StoreError> {
        self.load_with(key, false).await
    }

    async fn compare_and_set(
        &self,
        key: &EntityKey,
        expected_opt: Option<StateVersion>,
        new: StoredEntityState,
    ) -> Result<(), StoreError> {
        check_version_increases(key, expected_opt, new.version)?;
        let new_epoch = new.version.epoch.cast_signed();
        let new_version = new.version.version.cast_signed();
        let result = match expected_opt {
            None => {
                self.session
                    .execute_unpaged(
                        &self.statements.insert_state_if_absent,
                        (&key.kind, &key.id, new_epoch, new_version, &new.state),
                    )
                    .await
            }
            Some(expected) => {
                self.session
                    .execute_unpaged(
                        &self.statements.update_state_if_version,
                        (
                            new_epoch,
                            new_version,
                            &new.state,
                            &key.kind,
                            &key.id,
                            expected.epoch.cast_signed(),
                            expected.version.cast_signed(),
                        ),
                    )
                    .await
            }
        };
        let outcome = match result {
            Ok(result) => parse_lwt_outcome(result)?,
            Err(error) => {
                // The write may or may not have been applied (e.g. a timeout after the Paxos
                // accept). A serial read settles the row; decide from what it holds.
                tracing::warn!(key = %key, error = %error, "compare-and-set outcome unknown, reading back");
                let stored_opt = match self.load_with(key, true).await {
                    Ok(stored_opt) => stored_opt,
                    Err(_) => return Err(scylla_error("compare-and-set")(error)),
                };
                return match stored_opt {
                    Some(stored) if stored == new => Ok(()),
                    stored_opt if stored_opt.as_ref().map(|s| s.version) == expected_opt => {
                        Err(scylla_error("compare-and-set")(error))
                    }
                    stored_opt => Err(StoreError::Conflict {
                        key: key.clone(),
                        expected_opt,
                        current_opt: stored_opt.map(|stored| stored.version),
                    }),
                };
            }
        };
        if outcome.applied {
            return Ok(());
        }
        // Not applied: the returned previous row is the current one. For an update of a
        // missing row there is no row, hence no version.
        Err(StoreError::Conflict {
            key: key.clone(),
            expected_opt,
            current_opt: outcome.previous_opt,
        })
    }
}
