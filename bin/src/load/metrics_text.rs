//! Reading a node's `/metrics` (OpenMetrics or Prometheus text) from outside the process: the
//! names of the metrics that tell how a cluster is doing, and [`metric_value`], a small sample
//! parser.

/// Gauge: shards this node owns.
pub const METRIC_SHARDS_OWNED: &str = "lanmesh_shards_owned";
/// Gauge: nodes this node sees alive, itself included.
pub const METRIC_CLUSTER_NODES: &str = "lanmesh_cluster_nodes";
/// Gauge: entity actors alive on this node.
pub const METRIC_ENTITIES_LIVE: &str = "lanmesh_entities_live";
/// Counter: shards this node released gracefully.
pub const METRIC_HANDOFFS: &str = "lanmesh_handoffs_total";
/// Histogram count: shards taken over from a node declared failed.
pub const METRIC_TAKEOVER_COUNT: &str = "lanmesh_takeover_seconds_count";
/// Histogram sum: seconds from the failed node's last heartbeat to each takeover, added up.
pub const METRIC_TAKEOVER_SUM: &str = "lanmesh_takeover_seconds_sum";
/// Counter: shard deliveries that were redeliveries.
pub const METRIC_REDELIVERIES: &str = "lanmesh_redeliveries_total";
/// Counter: messages recognised by `msg_id` as already applied (their cached reply re-sent).
pub const METRIC_DUPLICATES_DROPPED: &str = "lanmesh_duplicates_dropped_total";

/// The value of metric `name` in OpenMetrics (or Prometheus) text: the sample named exactly
/// `name`, or the sum over all its label sets when it has several. `None` when no sample has
/// that name. A histogram's parts are separate names (`…_count`, `…_sum`); summing `…_bucket`
/// over its `le` labels means nothing, so read buckets some other way.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(parse_sample)
        .filter(|sample| sample.name == name)
        .map(|sample| sample.value)
        .reduce(|total, value| total + value)
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    value: f64,
}

/// Parses a sample line; `None` for comments, blank lines and anything malformed.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|character: char| character == '{' || character.is_whitespace())?;
    let (name, rest) = line.split_at(name_end);
    let rest = match rest.strip_prefix('{') {
        Some(labels_and_rest) => {
            let labels_end = closing_brace(labels_and_rest)?;
            labels_and_rest.get(labels_end + 1..)?
        }
        None => rest,
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, value })
}

/// Where the label set that `text` starts inside ends: the first `}` outside a quoted value.
fn closing_brace(text: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (position, character) in text.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(position),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, name: &str, expected: Option<f64>) {
        assert_eq!(metric_value(text, name), expected, "{name} in {text:?}");
    }

    const SCRAPE: &str = r#"# HELP lanmesh_shards_owned Shards this node owns.
# TYPE lanmesh_shards_owned gauge
lanmesh_shards_owned 21
lanmesh_shards_owned_x 5
# TYPE lanmesh_handoffs counter
lanmesh_handoffs_total 3
lanmesh_handoffs_created 1.7e9
# TYPE lanmesh_takeover_seconds histogram
lanmesh_takeover_seconds_sum 7.25
lanmesh_takeover_seconds_count 3
lanmesh_takeover_seconds_bucket{le="1.0"} 0
lanmesh_takeover_seconds_bucket{le="+Inf"} 3
lanmesh_build_info{version="0.1.0 {beta} \"x\""} 1
lanmesh_bus_acked_total{queue="a"} 2 1700000000
lanmesh_bus_acked_total{queue="b"} 5
lanmesh_weird NaN
# EOF
"#;

    #[test]
    fn metric_values_are_read_by_exact_name() {
        check(SCRAPE, "lanmesh_shards_owned", Some(21.0));
        check(SCRAPE, "lanmesh_shards_owned_x", Some(5.0));
        check(SCRAPE, "lanmesh_handoffs_total", Some(3.0));
        check(SCRAPE, "lanmesh_handoffs", None);
        check(SCRAPE, "lanmesh_takeover_seconds_sum", Some(7.25));
        check(SCRAPE, "lanmesh_takeover_seconds_count", Some(3.0));
        check(SCRAPE, "lanmesh_takeover_seconds", None);
        check(SCRAPE, "lanmesh_build_info", Some(1.0));
        check(SCRAPE, "lanmesh_missing", None);
        check(SCRAPE, "lanmesh_cluster_nodes", None);
        check("", "lanmesh_shards_owned", None);
        check("lanmesh_shards_owned\n", "lanmesh_shards_owned", None);
    }

    #[test]
    fn label_sets_are_summed_and_quoted_braces_ignored() {
        check(SCRAPE, "lanmesh_bus_acked_total", Some(7.0));
        check(SCRAPE, "lanmesh_takeover_seconds_bucket", Some(3.0));
        check("m{a=\"1\"} 2 1700000000\nm{a=\"2\"} 3\n", "m", Some(5.0));
        assert_eq!(
            parse_sample(r#"m{a="}",b="\"}"} 4"#),
            Some(Sample {
                name: "m",
                value: 4.0
            })
        );
        assert_eq!(parse_sample(r#"m{a="unclosed} 4"#), None);
    }

    #[test]
    fn special_values_parse() {
        assert!(metric_value(SCRAPE, "lanmesh_weird").is_some_and(f64::is_nan));
        check("m +Inf\n", "m", Some(f64::INFINITY));
    }
}
