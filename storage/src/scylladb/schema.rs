//! The ScyllaDB schema (ops/scylla/schema.cql, embedded) and applying it at start.

use scylla::client::session::Session;
use scylla::statement::Statement;

use crate::config::ScyllaConfig;
use crate::error::StoreError;
use crate::scylladb::scylla_error;

/// The schema file, with `{{keyspace}}`, `{{replication_factor}}` and `{{sample_ttl_seconds}}`
/// placeholders.
pub(crate) const SCHEMA_CQL: &str = include_str!("../../../ops/scylla/schema.cql");

/// Seconds of presence-sample retention configured by `storage.scylla.sample_ttl_days`.
pub(crate) fn sample_ttl_seconds(config: &ScyllaConfig) -> i32 {
    i32::try_from(i64::from(config.sample_ttl_days) * 86_400).unwrap_or(i32::MAX)
}

/// The schema's statements with the placeholders filled from `config`, comments removed.
pub(crate) fn render_schema(config: &ScyllaConfig) -> Vec<String> {
    let without_comments: String = SCHEMA_CQL
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .replace("{{keyspace}}", &config.keyspace)
        .replace(
            "{{replication_factor}}",
            &config.replication_factor.to_string(),
        )
        .replace(
            "{{sample_ttl_seconds}}",
            &sample_ttl_seconds(config).to_string(),
        )
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Creates the keyspace and tables if missing, then waits for schema agreement.
pub(crate) async fn apply_schema(
    session: &Session,
    config: &ScyllaConfig,
) -> Result<(), StoreError> {
    for text in render_schema(config) {
        let mut statement = Statement::new(text);
        statement.set_is_idempotent(true);
        session
            .query_unpaged(statement, ())
            .await
            .map_err(scylla_error("apply schema"))?;
    }
    session
        .await_schema_agreement()
        .await
        .map_err(scylla_error("await schema agreement"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_renders_every_statement_without_placeholders() {
        let config = ScyllaConfig {
            keyspace: "lanmesh_test".to_owned(),
            replication_factor: 1,
            sample_ttl_days: 2,
            ..ScyllaConfig::default()
        };
        let statements = render_schema(&config);
        assert_eq!(statements.len(), 9, "{statements:#?}");
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS lanmesh_test"));
        assert!(statements[0].contains("'replication_factor': 1}"));
        for statement in &statements[1..] {
            assert!(
                statement.starts_with("CREATE TABLE IF NOT EXISTS lanmesh_test."),
                "{statement}"
            );
        }
        assert!(
            statements
                .iter()
                .any(|s| s.contains("default_time_to_live = 172800"))
        );
        for statement in &statements {
            assert!(!statement.contains("{{"), "{statement}");
            assert!(!statement.contains("--"), "{statement}");
        }
    }
}
