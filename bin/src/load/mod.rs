//! Load scenarios and benchmarks run by `lanmesh-load`. Each reports its figures next to a
//! baseline measured in the same run.

pub mod bus;

use serde::Serialize;
use std::time::Duration;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Messages moved end to end.
    pub n_messages: u64,
    /// Wall time from the first publish to the last acknowledgement.
    pub elapsed_seconds: f64,
    /// `n_messages / elapsed_seconds`.
    pub messages_per_second: f64,
}

impl Measurement {
    /// A measurement of `n_messages` in `elapsed`.
    pub fn new(name: impl Into<String>, n_messages: u64, elapsed: Duration) -> Self {
        let elapsed_seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        Self {
            name: name.into(),
            n_messages,
            elapsed_seconds,
            messages_per_second: n_messages as f64 / elapsed_seconds,
        }
    }
}

/// The median of several measurements of the same thing, by throughput.
pub fn median(mut rounds: Vec<Measurement>) -> Option<Measurement> {
    rounds.sort_by(|left, right| {
        left.messages_per_second
            .total_cmp(&right.messages_per_second)
    });
    let middle = rounds.len() / 2;
    rounds.into_iter().nth(middle)
}
