//! Gateway certification (S0 step 4) as pure model code: an operator's versioned policy of
//! conditions over what both monitors measured in one window, tiers that grant permissions, and
//! the evaluation that certifies a gateway at a tier or rejects it with the reasons.
//!
//! # Semantics
//!
//! * A [`Condition`] is a comparison of one [`Metric`] with a threshold (`at_least`: measured
//!   `>=` threshold; `below`: measured `<` threshold) or a combination of conditions (`all`,
//!   `any`). A range such as 150–200 logins is `all[at_least 150, below 200]`.
//! * When a condition does not hold, its [`Shortfall`]s say why: a comparison that fails is one
//!   shortfall; a failing `all` lists the shortfalls of its failing members only; a failing `any`
//!   lists the shortfalls of every alternative. Repeated shortfalls are listed once, in the order
//!   of first appearance.
//! * [`evaluate`]: the gateway passes if the policy's `pass` condition holds; it is certified at
//!   the highest tier (the last in the policy's list, which runs lowest to highest) whose
//!   condition holds. If `pass` fails it is rejected with the shortfalls of `pass`; if `pass`
//!   holds but no tier does, it is rejected with the shortfalls of the lowest tier.
//! * Figures are compared as they are: evaluating on demand before the window ends compares the
//!   figures so far with the same thresholds (nothing is scaled to the window's length).
//! * Versioning is the `version` field only; the registry that stores policies assigns it (and
//!   should refuse a replacement whose version is not greater). Every outcome carries the version
//!   of the policy that decided it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use thiserror::Error;

/// Shortest window a policy may ask for, in days.
pub const MIN_WINDOW_DAYS: u32 = 1;
/// Longest window a policy may ask for, in days.
pub const MAX_WINDOW_DAYS: u32 = 31;
/// Most tiers one policy defines (it defines at least one).
pub const MAX_TIERS: usize = 16;
/// Longest tier name, in characters (`a-z`, `0-9`, `_`, `-`).
pub const MAX_TIER_NAME_CHARS: usize = 32;
/// Longest permission name, in characters (`a-z`, `0-9`, `.`, `_`, `-`).
pub const MAX_PERMISSION_CHARS: usize = 64;
/// Most permissions one tier grants.
pub const MAX_PERMISSIONS_PER_TIER: usize = 32;
/// How deep one condition may nest: a comparison alone is 1 deep, each `all` or `any` around it
/// adds 1.
pub const MAX_CONDITION_DEPTH: usize = 8;
/// Most comparisons in one condition (`pass` or one tier's), counted over every nesting level.
pub const MAX_COMPARISONS_PER_CONDITION: usize = 64;
/// Largest threshold a comparison may name.
pub const MAX_THRESHOLD: u64 = 1_000_000_000_000;

/// Milliseconds in an hour: online times are compared in whole hours.
const MS_PER_HOUR: u64 = 3_600_000;

/// What both monitors measured over one window for one gateway.
///
/// The first monitor's figures are summed over the gateway's LAN segments by whoever fills this
/// in; a sum of per-segment `distinct_accounts` or `peak_concurrent_clients` counts an account
/// seen in two segments twice and peaks at different instants together, so it is an upper bound
/// unless the caller computes those over the union of the segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowFigures {
    /// Client logins from the gateway's segments (first monitor).
    pub client_logins: u64,
    /// Distinct accounts seen on the gateway's segments (first monitor).
    pub distinct_accounts: u64,
    /// Most clients online at one instant (first monitor).
    pub peak_concurrent_clients: u64,
    /// Summed online time of all clients, in milliseconds (first monitor).
    pub client_online_ms: u64,
    /// Time the gateway itself was online, in milliseconds (second monitor).
    pub gateway_online_ms: u64,
    /// Days with any gateway uptime (second monitor).
    pub gateway_days_online: u32,
    /// Days the figures cover (fewer than the policy's window when evaluated on demand).
    pub window_days: u32,
}

impl WindowFigures {
    /// The figure a policy compares for `metric`, in the metric's unit (online times floored to
    /// whole hours).
    pub fn measured(&self, metric: Metric) -> u64 {
        match metric {
            Metric::ClientLogins => self.client_logins,
            Metric::DistinctAccounts => self.distinct_accounts,
            Metric::PeakConcurrentClients => self.peak_concurrent_clients,
            Metric::ClientOnlineHours => self.client_online_ms / MS_PER_HOUR,
            Metric::GatewayOnlineHours => self.gateway_online_ms / MS_PER_HOUR,
            Metric::GatewayDaysOnline => u64::from(self.gateway_days_online),
        }
    }
}

/// A figure a policy can compare, named and measured in units an operator writes naturally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Client logins in the window (a count).
    ClientLogins,
    /// Distinct client accounts in the window (a count).
    DistinctAccounts,
    /// Most clients online at one instant (a count).
    PeakConcurrentClients,
    /// Summed client online time, in whole hours (floored).
    ClientOnlineHours,
    /// Gateway online time, in whole hours (floored).
    GatewayOnlineHours,
    /// Days with any gateway uptime (a count of days).
    GatewayDaysOnline,
}

impl Metric {
    /// Every metric, in a fixed order.
    pub const ALL: [Self; 6] = [
        Self::ClientLogins,
        Self::DistinctAccounts,
        Self::PeakConcurrentClients,
        Self::ClientOnlineHours,
        Self::GatewayOnlineHours,
        Self::GatewayDaysOnline,
    ];

    /// The metric's name in policies and reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientLogins => "client_logins",
            Self::DistinctAccounts => "distinct_accounts",
            Self::PeakConcurrentClients => "peak_concurrent_clients",
            Self::ClientOnlineHours => "client_online_hours",
            Self::GatewayOnlineHours => "gateway_online_hours",
            Self::GatewayDaysOnline => "gateway_days_online",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// How a comparison relates the measured figure to its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Measured `>=` threshold.
    AtLeast,
    /// Measured `<` threshold.
    Below,
}

impl Comparison {
    /// Whether `measured` satisfies this comparison with `threshold`.
    pub fn holds(self, measured: u64, threshold: u64) -> bool {
        match self {
            Self::AtLeast => measured >= threshold,
            Self::Below => measured < threshold,
        }
    }

    /// The comparison's name in policies (`at_least`, `below`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtLeast => "at_least",
            Self::Below => "below",
        }
    }
}

/// The operand of a comparison: which figure, compared with what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The figure compared.
    pub metric: Metric,
    /// The threshold, in the metric's unit.
    pub value: u64,
}

/// A condition over one window's figures, as an operator writes it in JSON:
/// `{"at_least": {"metric": "client_logins", "value": 50}}`,
/// `{"below": {"metric": "client_logins", "value": 200}}`, `{"all": [...]}`, `{"any": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Holds when the figure is at least the threshold.
    AtLeast(Threshold),
    /// Holds when the figure is below the threshold.
    Below(Threshold),
    /// Holds when every member holds.
    All(Vec<Condition>),
    /// Holds when at least one alternative holds.
    Any(Vec<Condition>),
}

/// Why a condition did not hold: one comparison that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shortfall {
    /// The figure compared.
    pub metric: Metric,
    /// How it had to relate to `required`.
    pub comparison: Comparison,
    /// The threshold, in the metric's unit.
    pub required: u64,
    /// What was measured, in the metric's unit.
    pub measured: u64,
}

impl fmt::Display for Shortfall {
    /// A sentence for the gateway's admin, e.g. `client_logins: measured 42, at least 50
    /// required`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let relation = match self.comparison {
            Comparison::AtLeast => "at least",
            Comparison::Below => "below",
        };
        write!(
            formatter,
            "{}: measured {}, {relation} {} required",
            self.metric, self.measured, self.required
        )
    }
}

impl Condition {
    /// `metric` at least `value`.
    pub fn at_least(metric: Metric, value: u64) -> Self {
        Self::AtLeast(Threshold { metric, value })
    }

    /// `metric` below `value`.
    pub fn below(metric: Metric, value: u64) -> Self {
        Self::Below(Threshold { metric, value })
    }

    /// Whether the condition holds for these figures (an empty `all` holds, an empty `any` does
    /// not; a validated policy has neither).
    pub fn holds(&self, figures: &WindowFigures) -> bool {
        match self {
            Self::AtLeast(threshold) => {
                Comparison::AtLeast.holds(figures.measured(threshold.metric), threshold.value)
            }
            Self::Below(threshold) => {
                Comparison::Below.holds(figures.measured(threshold.metric), threshold.value)
            }
            Self::All(members) => members.iter().all(|member| member.holds(figures)),
            Self::Any(alternatives) => alternatives
                .iter()
                .any(|alternative| alternative.holds(figures)),
        }
    }

    /// `Ok` when the condition holds, else the shortfalls that explain why not (see the module
    /// documentation), each listed once.
    pub fn assess(&self, figures: &WindowFigures) -> Result<(), Vec<Shortfall>> {
        let mut shortfalls = Vec::new();
        if self.collect_shortfalls(figures, &mut shortfalls) {
            return Ok(());
        }
        let mut seen = BTreeSet::new();
        shortfalls.retain(|shortfall| seen.insert(*shortfall));
        Err(shortfalls)
    }

    /// Whether the condition holds; when it does not, appends its shortfalls to `shortfalls`
    /// (when it holds, appends nothing).
    fn collect_shortfalls(&self, figures: &WindowFigures, shortfalls: &mut Vec<Shortfall>) -> bool {
        match self {
            Self::AtLeast(threshold) => {
                compare(Comparison::AtLeast, *threshold, figures, shortfalls)
            }
            Self::Below(threshold) => compare(Comparison::Below, *threshold, figures, shortfalls),
            Self::All(members) => {
                let mut holds = true;
                for member in members {
                    // Every member is assessed, so every failing one is named.
                    holds &= member.collect_shortfalls(figures, shortfalls);
                }
                holds
            }
            Self::Any(alternatives) => {
                let mut alternatives_shortfalls = Vec::new();
                for alternative in alternatives {
                    if alternative.collect_shortfalls(figures, &mut alternatives_shortfalls) {
                        return true;
                    }
                }
                shortfalls.extend(alternatives_shortfalls);
                false
            }
        }
    }
}

/// Compares one figure; appends the shortfall when the comparison fails.
fn compare(
    comparison: Comparison,
    threshold: Threshold,
    figures: &WindowFigures,
    shortfalls: &mut Vec<Shortfall>,
) -> bool {
    let measured = figures.measured(threshold.metric);
    let holds = comparison.holds(measured, threshold.value);
    if !holds {
        shortfalls.push(Shortfall {
            metric: threshold.metric,
            comparison,
            required: threshold.value,
            measured,
        });
    }
    holds
}

/// One level of certification and what it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The tier's name, unique in its policy (`a-z`, `0-9`, `_`, `-`).
    pub name: String,
    /// When a gateway reaches the tier (given that the policy's `pass` holds).
    pub condition: Condition,
    /// What a gateway certified at the tier may do (`a-z`, `0-9`, `.`, `_`, `-`); none if left
    /// out.
    #[serde(default)]
    pub permissions: BTreeSet<String>,
}

/// A certification policy as an operator writes it (see the module documentation for how it
/// is evaluated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificationPolicy {
    /// The policy's version, assigned by whoever stores it; outcomes name it.
    pub version: u64,
    /// How many days the monitors watch before the gateway is certified.
    pub window_days: u32,
    /// What every certified gateway must meet.
    pub pass: Condition,
    /// The tiers, lowest first.
    pub tiers: Vec<Tier>,
}

/// The decision about one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificationOutcome {
    /// The gateway is certified at a tier.
    Certified {
        /// The highest tier reached.
        tier: String,
        /// What the tier grants.
        permissions: BTreeSet<String>,
        /// The version of the policy that decided.
        policy_version: u64,
    },
    /// The gateway is not certified.
    Rejected {
        /// The shortfalls of `pass` when it failed, else those of the lowest tier.
        reasons: Vec<Shortfall>,
        /// The version of the policy that decided.
        policy_version: u64,
    },
}

impl CertificationOutcome {
    /// The version of the policy that decided.
    pub fn policy_version(&self) -> u64 {
        match self {
            Self::Certified { policy_version, .. } | Self::Rejected { policy_version, .. } => {
                *policy_version
            }
        }
    }

    /// The reasons of a rejection as sentences for the gateway's admin (none when certified).
    pub fn reasons_text(&self) -> Vec<String> {
        match self {
            Self::Certified { .. } => Vec::new(),
            Self::Rejected { reasons, .. } => reasons.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Certifies a gateway from one window's figures, or rejects it with the reasons (see the module
/// documentation). Meant for validated policies: one without tiers rejects every gateway that
/// passes, without reasons.
pub fn evaluate(policy: &CertificationPolicy, figures: &WindowFigures) -> CertificationOutcome {
    let policy_version = policy.version;
    if let Err(reasons) = policy.pass.assess(figures) {
        return CertificationOutcome::Rejected {
            reasons,
            policy_version,
        };
    }
    if let Some(tier) = policy
        .tiers
        .iter()
        .rev()
        .find(|tier| tier.condition.holds(figures))
    {
        return CertificationOutcome::Certified {
            tier: tier.name.clone(),
            permissions: tier.permissions.clone(),
            policy_version,
        };
    }
    let reasons = policy
        .tiers
        .first()
        .and_then(|lowest| lowest.condition.assess(figures).err())
        .unwrap_or_default();
    CertificationOutcome::Rejected {
        reasons,
        policy_version,
    }
}

/// Why a policy is refused. Each message starts with the place in the policy's JSON, e.g.
/// `tiers[1].condition.all[0].at_least.value`.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum PolicyError {
    /// The window is too short or too long.
    #[error("window_days: {window_days} is not within {MIN_WINDOW_DAYS} to {MAX_WINDOW_DAYS}")]
    WindowDays {
        /// The window asked for.
        window_days: u32,
    },
    /// No tiers, or too many.
    #[error("tiers: {n_tiers} tiers, must be 1 to {MAX_TIERS}")]
    TierCount {
        /// How many tiers the policy has.
        n_tiers: usize,
    },
    /// A tier name is empty, too long or has other characters.
    #[error("{place}: {name:?} must be 1 to {MAX_TIER_NAME_CHARS} characters of a-z, 0-9, _ and -")]
    TierName {
        /// Where the name is.
        place: String,
        /// The name.
        name: String,
    },
    /// Two tiers have the same name.
    #[error("{place}: {name:?} is already the name of {first_place}")]
    DuplicateTierName {
        /// Where the second use is.
        place: String,
        /// The name.
        name: String,
        /// The tier that has it first.
        first_place: String,
    },
    /// A tier grants too many permissions.
    #[error("{place}: {n_permissions} permissions, at most {MAX_PERMISSIONS_PER_TIER}")]
    TooManyPermissions {
        /// Where the permissions are.
        place: String,
        /// How many the tier grants.
        n_permissions: usize,
    },
    /// A permission name is empty, too long or has other characters.
    #[error(
        "{place}: {permission:?} must be 1 to {MAX_PERMISSION_CHARS} characters of a-z, 0-9, ., _ and -"
    )]
    PermissionName {
        /// Where the permission is.
        place: String,
        /// The permission.
        permission: String,
    },
    /// A condition nests too deep.
    #[error("{place}: conditions nest more than {MAX_CONDITION_DEPTH} deep")]
    TooDeep {
        /// The first condition beyond the limit.
        place: String,
    },
    /// A condition has too many comparisons.
    #[error("{place}: {n_comparisons} comparisons, at most {MAX_COMPARISONS_PER_CONDITION}")]
    TooManyComparisons {
        /// The condition (`pass` or a tier's).
        place: String,
        /// How many comparisons it has, over every nesting level.
        n_comparisons: usize,
    },
    /// An `all` or `any` lists no conditions.
    #[error("{place}: must list at least one condition")]
    EmptyCombination {
        /// The empty list.
        place: String,
    },
    /// A threshold is above [`MAX_THRESHOLD`].
    #[error("{place}: {value} is above the largest threshold {MAX_THRESHOLD}")]
    ThresholdTooLarge {
        /// Where the threshold is.
        place: String,
        /// The threshold.
        value: u64,
    },
}

impl CertificationPolicy {
    /// Checks the policy's limits; the error names the first offending place.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(MIN_WINDOW_DAYS..=MAX_WINDOW_DAYS).contains(&self.window_days) {
            return Err(PolicyError::WindowDays {
                window_days: self.window_days,
            });
        }
        if self.tiers.is_empty() || self.tiers.len() > MAX_TIERS {
            return Err(PolicyError::TierCount {
                n_tiers: self.tiers.len(),
            });
        }
        validate_condition_tree(&self.pass, "pass")?;
        for (index, tier) in self.tiers.iter().enumerate() {
            let tier_place = format!("tiers[{index}]");
            if !is_name(
                &tier.name,
                MAX_TIER_NAME_CHARS,
                |character| matches!(character, 'a'..='z' | '0'..='9' | '_' | '-'),
            ) {
                return Err(PolicyError::TierName {
                    place: format!("{tier_place}.name"),
                    name: tier.name.clone(),
                });
            }
            if let Some(first_index) = self
                .tiers
                .iter()
                .take(index)
                .position(|earlier| earlier.name == tier.name)
            {
                return Err(PolicyError::DuplicateTierName {
                    place: format!("{tier_place}.name"),
                    name: tier.name.clone(),
                    first_place: format!("tiers[{first_index}]"),
                });
            }
            let permissions_place = format!("{tier_place}.permissions");
            if tier.permissions.len() > MAX_PERMISSIONS_PER_TIER {
                return Err(PolicyError::TooManyPermissions {
                    place: permissions_place,
                    n_permissions: tier.permissions.len(),
                });
            }
            if let Some(permission) = tier.permissions.iter().find(|permission| {
                !is_name(
                    permission,
                    MAX_PERMISSION_CHARS,
                    |character| matches!(character, 'a'..='z' | '0'..='9' | '.' | '_' | '-'),
                )
            }) {
                return Err(PolicyError::PermissionName {
                    place: permissions_place,
                    permission: permission.clone(),
                });
            }
            validate_condition_tree(&tier.condition, &format!("{tier_place}.condition"))?;
        }
        Ok(())
    }
}

/// Whether `name` is 1 to `max_chars` characters, each allowed.
fn is_name(name: &str, max_chars: usize, allowed: impl Fn(char) -> bool) -> bool {
    !name.is_empty() && name.chars().count() <= max_chars && name.chars().all(allowed)
}

/// Checks one whole condition at `place` (the path in its JSON, which every error message
/// starts with): `pass` or a tier's here, a campaign's eligibility elsewhere, with the same limits.
pub fn validate_condition_tree(condition: &Condition, place: &str) -> Result<(), PolicyError> {
    let mut n_comparisons = 0;
    validate_condition(condition, place, 1, &mut n_comparisons)?;
    if n_comparisons > MAX_COMPARISONS_PER_CONDITION {
        return Err(PolicyError::TooManyComparisons {
            place: place.to_owned(),
            n_comparisons,
        });
    }
    Ok(())
}

/// Checks the condition at `place`, `depth` deep, counting its comparisons.
fn validate_condition(
    condition: &Condition,
    place: &str,
    depth: usize,
    n_comparisons: &mut usize,
) -> Result<(), PolicyError> {
    if depth > MAX_CONDITION_DEPTH {
        return Err(PolicyError::TooDeep {
            place: place.to_owned(),
        });
    }
    match condition {
        Condition::AtLeast(threshold) => {
            validate_comparison(Comparison::AtLeast, threshold, place, n_comparisons)
        }
        Condition::Below(threshold) => {
            validate_comparison(Comparison::Below, threshold, place, n_comparisons)
        }
        Condition::All(members) => {
            validate_combination("all", members, place, depth, n_comparisons)
        }
        Condition::Any(alternatives) => {
            validate_combination("any", alternatives, place, depth, n_comparisons)
        }
    }
}

/// Checks one comparison's threshold and counts it.
fn validate_comparison(
    comparison: Comparison,
    threshold: &Threshold,
    place: &str,
    n_comparisons: &mut usize,
) -> Result<(), PolicyError> {
    *n_comparisons = n_comparisons.saturating_add(1);
    if threshold.value > MAX_THRESHOLD {
        return Err(PolicyError::ThresholdTooLarge {
            place: format!("{place}.{}.value", comparison.as_str()),
            value: threshold.value,
        });
    }
    Ok(())
}

/// Checks an `all` or `any` (named by `key`) and its members.
fn validate_combination(
    key: &str,
    members: &[Condition],
    place: &str,
    depth: usize,
    n_comparisons: &mut usize,
) -> Result<(), PolicyError> {
    if members.is_empty() {
        return Err(PolicyError::EmptyCombination {
            place: format!("{place}.{key}"),
        });
    }
    for (index, member) in members.iter().enumerate() {
        validate_condition(
            member,
            &format!("{place}.{key}[{index}]"),
            depth + 1,
            n_comparisons,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
