//! Campaigns (S0 steps 6, 9 and 13) as a pure state machine: an operator's definition of a
//! resource (an activity, a promotion or a special grant) with its eligibility rules, budget and
//! scoring; the enrolment of venues that qualify; and the ranking that picks the winners when the
//! campaign closes.
//!
//! # Life cycle
//!
//! A campaign is created as a draft, published (its notice then goes out), and closed (its
//! results are then fixed). Every transition is idempotent, so a retried request never does
//! anything twice: creating with the same definition, publishing again, enrolling a venue that
//! is enrolled already and closing again all answer what the first call did, with `false` for
//! "nothing new".
//!
//! # Enrolment
//!
//! A venue enrols while the campaign is published and its enrolment window is open
//! (`enrol_opens_at_ms <= now < enrol_closes_at_ms`), if it is eligible *now* (S0 step 9: the
//! caller measures the venue's current figures over the campaign's `activity_days`), and if the
//! budget still holds one more venue quota. Each enrolled venue's ledger is credited with
//! `venue_quota` units; the campaign never grants more than `total_units` in all.
//!
//! # Ranking
//!
//! [`rank`] scores every account served and every venue with the campaign's [`ScoringRules`]
//! and ranks them (see its documentation); at the close, the first `top_users` accounts and
//! `top_venues` venues with a score above zero win.

use crate::model::campaign_directory::CampaignListing;
use crate::model::certification::{
    Condition, MAX_WINDOW_DAYS, MIN_WINDOW_DAYS, PolicyError, WindowFigures,
    validate_condition_tree,
};
use crate::model::reward::MAX_REWARD_TEXT_CHARS;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Longest campaign id, in characters (`a-z`, `0-9`, `_`, `-`).
pub const MAX_CAMPAIGN_ID_CHARS: usize = 64;
/// Longest campaign title, in characters.
pub const MAX_TITLE_CHARS: usize = 128;
/// Longest campaign text, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Largest budget of one campaign, in units.
pub const MAX_TOTAL_UNITS: u64 = 1_000_000_000_000;
/// Largest number of points one scoring rule awards per unit or per user.
pub const MAX_POINTS: u64 = 1_000_000;
/// Most winners of one kind (users or venues) one campaign names.
pub const MAX_WINNERS: u32 = 1_000;
/// Longest gateway id, in bytes (the longest entity id the bus carries).
pub const MAX_GATEWAY_ID_BYTES: usize = 256;

/// Checks a campaign id: 1 to [`MAX_CAMPAIGN_ID_CHARS`] characters of `a-z 0-9 _ -`.
pub fn validate_campaign_id(id: &str) -> Result<(), CampaignError> {
    let acceptable = !id.is_empty()
        && id.chars().count() <= MAX_CAMPAIGN_ID_CHARS
        && id
            .chars()
            .all(|character| matches!(character, 'a'..='z' | '0'..='9' | '_' | '-'));
    if acceptable {
        Ok(())
    } else {
        Err(CampaignError::InvalidId {
            campaign_id: id.chars().take(MAX_CAMPAIGN_ID_CHARS + 16).collect(),
        })
    }
}

/// What a campaign distributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    /// A campaign or activity.
    Activity,
    /// A promotion.
    Promotion,
    /// A special grant, e.g. access to a game's closed test.
    SpecialGrant,
}

impl CampaignKind {
    /// The kind's name in definitions (`activity`, `promotion`, `special_grant`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activity => "activity",
            Self::Promotion => "promotion",
            Self::SpecialGrant => "special_grant",
        }
    }
}

/// Which venues may enrol: checked again on every enrolment against the venue's current tier and
/// figures (see [`check_eligibility`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eligibility {
    /// The lowest certification tier that may enrol; any certified venue when left out (an
    /// uncertified venue never may).
    #[serde(default, rename = "min_tier")]
    pub min_tier_opt: Option<String>,
    /// The venue's figures are measured over the last this many days up to the request,
    /// [`MIN_WINDOW_DAYS`] to [`MAX_WINDOW_DAYS`].
    pub activity_days: u32,
    /// What the figures must meet, e.g. 150–200 client logins:
    /// `{"all": [{"at_least": {"metric": "client_logins", "value": 150}},
    /// {"below": {"metric": "client_logins", "value": 201}}]}`; nothing when left out.
    #[serde(default, rename = "activity")]
    pub activity_opt: Option<Condition>,
}

/// How accounts and venues score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringRules {
    /// Points for each unit an account was allocated, 0 to [`MAX_POINTS`].
    pub points_per_unit_allocated: u64,
    /// Points for each unit an account used, 0 to [`MAX_POINTS`].
    pub points_per_unit_used: u64,
    /// Points a venue earns for each account it served, on top of its accounts' points, 0 to
    /// [`MAX_POINTS`].
    pub venue_points_per_user_served: u64,
}

/// Who wins and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WinnerRule {
    /// How many accounts win, 0 to [`MAX_WINNERS`].
    pub top_users: u32,
    /// How many venues win, 0 to [`MAX_WINNERS`].
    pub top_venues: u32,
    /// What a winning account receives (may be empty when `top_users` is 0).
    pub user_reward: String,
    /// What a winning venue receives (may be empty when `top_venues` is 0).
    pub venue_reward: String,
}

/// A campaign as an operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignDefinition {
    /// What it distributes.
    pub kind: CampaignKind,
    /// Its title, 1 to [`MAX_TITLE_CHARS`] characters, no control characters.
    pub title: String,
    /// Its description, 1 to [`MAX_TEXT_CHARS`] characters; newlines (`\n`) allowed, no other
    /// control characters.
    pub text: String,
    /// When venues may start enrolling, in Unix milliseconds (inclusive).
    pub enrol_opens_at_ms: u64,
    /// When enrolment ends, in Unix milliseconds (exclusive); after `enrol_opens_at_ms`.
    pub enrol_closes_at_ms: u64,
    /// Which venues may enrol.
    pub eligibility: Eligibility,
    /// The budget: units granted to all venues together, 1 to [`MAX_TOTAL_UNITS`].
    pub total_units: u64,
    /// The quota each enrolled venue's ledger is credited with, 1 to `total_units`.
    pub venue_quota: u64,
    /// The most units one account may receive, 1 to `venue_quota`.
    pub user_limit: u64,
    /// How accounts and venues score.
    pub scoring: ScoringRules,
    /// Who wins and what.
    pub winners: WinnerRule,
}

impl CampaignDefinition {
    /// Checks the definition's limits; `tier_names_lowest_first` are the tiers of the
    /// certification policy in force, which `eligibility.min_tier` must name. The error names
    /// the first offending field.
    pub fn validate(&self, tier_names_lowest_first: &[String]) -> Result<(), CampaignError> {
        check_text("title", &self.title, MAX_TITLE_CHARS, false)?;
        check_text("text", &self.text, MAX_TEXT_CHARS, true)?;
        if self.enrol_closes_at_ms <= self.enrol_opens_at_ms {
            return Err(invalid(
                "enrol_closes_at_ms",
                format!(
                    "{} is not after enrol_opens_at_ms {}",
                    self.enrol_closes_at_ms, self.enrol_opens_at_ms
                ),
            ));
        }
        self.validate_eligibility(tier_names_lowest_first)?;
        check_range("total_units", self.total_units, 1, MAX_TOTAL_UNITS)?;
        check_range("venue_quota", self.venue_quota, 1, self.total_units)?;
        check_range("user_limit", self.user_limit, 1, self.venue_quota)?;
        let scoring = &self.scoring;
        for (field, points) in [
            (
                "scoring.points_per_unit_allocated",
                scoring.points_per_unit_allocated,
            ),
            ("scoring.points_per_unit_used", scoring.points_per_unit_used),
            (
                "scoring.venue_points_per_user_served",
                scoring.venue_points_per_user_served,
            ),
        ] {
            check_range(field, points, 0, MAX_POINTS)?;
        }
        let winners = &self.winners;
        check_range(
            "winners.top_users",
            u64::from(winners.top_users),
            0,
            u64::from(MAX_WINNERS),
        )?;
        check_range(
            "winners.top_venues",
            u64::from(winners.top_venues),
            0,
            u64::from(MAX_WINNERS),
        )?;
        check_reward_text(
            "winners.user_reward",
            &winners.user_reward,
            "winners.top_users",
            winners.top_users,
        )?;
        check_reward_text(
            "winners.venue_reward",
            &winners.venue_reward,
            "winners.top_venues",
            winners.top_venues,
        )
    }

    fn validate_eligibility(
        &self,
        tier_names_lowest_first: &[String],
    ) -> Result<(), CampaignError> {
        let eligibility = &self.eligibility;
        if let Some(min_tier) = &eligibility.min_tier_opt
            && !tier_names_lowest_first.contains(min_tier)
        {
            let reason = if tier_names_lowest_first.is_empty() {
                format!("{min_tier:?} names a tier, but no certification policy is in force")
            } else {
                format!(
                    "{min_tier:?} is not a tier of the certification policy in force ({})",
                    tier_names_lowest_first.join(", ")
                )
            };
            return Err(invalid("eligibility.min_tier", reason));
        }
        check_range(
            "eligibility.activity_days",
            u64::from(eligibility.activity_days),
            u64::from(MIN_WINDOW_DAYS),
            u64::from(MAX_WINDOW_DAYS),
        )?;
        if let Some(activity) = &eligibility.activity_opt {
            validate_condition_tree(activity, "eligibility.activity")
                .map_err(|problem| CampaignError::InvalidActivity { problem })?;
        }
        Ok(())
    }
}

fn invalid(field: &str, reason: String) -> CampaignError {
    CampaignError::Invalid {
        field: field.to_owned(),
        reason,
    }
}

/// Checks that `value` is `min` to `max`.
fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), CampaignError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} is not within {min} to {max}"),
        ))
    }
}

/// Checks a text an operator wrote: 1 to `max_chars` characters, not blank, no control
/// characters (but newlines when `newlines_allowed`).
fn check_text(
    field: &str,
    text: &str,
    max_chars: usize,
    newlines_allowed: bool,
) -> Result<(), CampaignError> {
    let n_chars = text.chars().count();
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be empty or blank".to_owned()));
    }
    if n_chars > max_chars {
        return Err(invalid(
            field,
            format!("{n_chars} characters, at most {max_chars}"),
        ));
    }
    check_no_control(field, text, newlines_allowed)
}

fn check_no_control(field: &str, text: &str, newlines_allowed: bool) -> Result<(), CampaignError> {
    match text
        .chars()
        .find(|character| character.is_control() && !(newlines_allowed && *character == '\n'))
    {
        Some(character) => Err(invalid(
            field,
            format!("contains the control character {character:?}"),
        )),
        None => Ok(()),
    }
}

/// Checks a reward text: required (see [`check_text`]) when `n_winners` is above 0, else it may
/// be empty, but is never too long and never holds control characters.
fn check_reward_text(
    field: &str,
    text: &str,
    winners_field: &str,
    n_winners: u32,
) -> Result<(), CampaignError> {
    if n_winners > 0 {
        if text.trim().is_empty() {
            return Err(invalid(
                field,
                format!("must not be empty or blank when {winners_field} is above 0"),
            ));
        }
        return check_text(field, text, MAX_REWARD_TEXT_CHARS, false);
    }
    let n_chars = text.chars().count();
    if n_chars > MAX_REWARD_TEXT_CHARS {
        return Err(invalid(
            field,
            format!("{n_chars} characters, at most {MAX_REWARD_TEXT_CHARS}"),
        ));
    }
    check_no_control(field, text, false)
}

/// Checks a gateway id: 1 to [`MAX_GATEWAY_ID_BYTES`] bytes, no control characters (what the bus
/// accepts as an entity id).
fn check_gateway_id(gateway_id: &str) -> Result<(), CampaignError> {
    if gateway_id.is_empty() || gateway_id.len() > MAX_GATEWAY_ID_BYTES {
        return Err(invalid(
            "gateway_id",
            format!(
                "{} bytes, must be 1 to {MAX_GATEWAY_ID_BYTES}",
                gateway_id.len()
            ),
        ));
    }
    check_no_control("gateway_id", gateway_id, false)
}

/// Where a campaign is in its life cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Created, not yet announced: nobody may enrol.
    #[default]
    Draft,
    /// Announced: venues enrol while the enrolment window is open.
    Published,
    /// Over: the results are fixed.
    Closed,
}

impl CampaignStatus {
    /// The status's name (`draft`, `published`, `closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
            Self::Closed => "closed",
        }
    }
}

/// One venue's enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenueEnrolment {
    /// The units its ledger is credited with.
    pub quota: u64,
    /// When it enrolled.
    pub enrolled_at_unix_ms: u64,
    /// Its certification tier then.
    pub tier: String,
    /// Its figures then, over the campaign's `activity_days`.
    pub figures: WindowFigures,
}

/// Whether a venue may enrol now: `Ok`, or every reason it may not, as sentences for the venue's
/// admin or a client.
///
/// * An uncertified venue (`venue_tier_opt` is `None`) never may: `the venue is not certified`.
/// * With a minimum tier, a venue below it may not: `certification tier bronze, at least silver
///   required`. A venue tier that is not in `tier_names_lowest_first` counts as below every
///   tier; a minimum tier that is not in it (the policy changed since the campaign was created)
///   admits no venue, and says so.
/// * The activity condition's shortfalls follow, one sentence each (`client_logins: measured 3,
///   at least 150 required`).
pub fn check_eligibility(
    eligibility: &Eligibility,
    tier_names_lowest_first: &[String],
    venue_tier_opt: Option<&str>,
    figures: &WindowFigures,
) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    let tier_position = |name: &str| tier_names_lowest_first.iter().position(|tier| tier == name);
    match (venue_tier_opt, &eligibility.min_tier_opt) {
        (None, _) => reasons.push("the venue is not certified".to_owned()),
        (Some(_), None) => {}
        (Some(venue_tier), Some(min_tier)) => match tier_position(min_tier) {
            None => reasons.push(format!(
                "the campaign's minimum tier {min_tier} is not a tier of the certification \
                 policy in force"
            )),
            Some(min_position) => {
                let reached = tier_position(venue_tier)
                    .is_some_and(|venue_position| venue_position >= min_position);
                if !reached {
                    reasons.push(format!(
                        "certification tier {venue_tier}, at least {min_tier} required"
                    ));
                }
            }
        },
    }
    if let Some(activity) = &eligibility.activity_opt
        && let Err(shortfalls) = activity.assess(figures)
    {
        reasons.extend(shortfalls.iter().map(ToString::to_string));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// What one account received and used at one venue (the node gathers one per account posted at
/// a venue, from the venues' ledgers and usage reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStanding {
    /// The account.
    pub account_id: String,
    /// The venue that allocated the units.
    pub gateway_id: String,
    /// Units posted to the account.
    pub units_allocated: u64,
    /// Units the account used.
    pub units_used: u64,
}

/// One account's place in a campaign's ranking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedUser {
    /// The account.
    pub account_id: String,
    /// The venue it was served at (see [`rank`] for an account served at several).
    pub gateway_id: String,
    /// Units posted to it, over every venue.
    pub units_allocated: u64,
    /// Units it used, over every venue.
    pub units_used: u64,
    /// Its score.
    pub score: u64,
    /// Its place, from 1; equal scores share a place ("1224").
    pub rank: u32,
}

/// One venue's place in a campaign's ranking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedVenue {
    /// The venue's gateway.
    pub gateway_id: String,
    /// Distinct accounts with a standing at the venue.
    pub users_served: u64,
    /// Units it allocated.
    pub units_allocated: u64,
    /// Units its accounts used.
    pub units_used: u64,
    /// Its score.
    pub score: u64,
    /// Its place, from 1; equal scores share a place ("1224").
    pub rank: u32,
}

/// A whole ranking, best first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rankings {
    /// Every account with a standing.
    pub users: Vec<RankedUser>,
    /// Every enrolled venue, and any other venue named by a standing.
    pub venues: Vec<RankedVenue>,
}

/// What one standing scores for its account.
fn standing_score(scoring: &ScoringRules, units_allocated: u64, units_used: u64) -> u64 {
    units_allocated
        .saturating_mul(scoring.points_per_unit_allocated)
        .saturating_add(units_used.saturating_mul(scoring.points_per_unit_used))
}

/// Competition ranks for entries already ordered best first: an entry's rank is 1 plus the
/// number of entries with a higher score.
fn competition_ranks(scores: impl Iterator<Item = u64>) -> Vec<u32> {
    let mut ranks = Vec::new();
    let mut previous_opt: Option<(u64, u32)> = None;
    for (index, score) in scores.enumerate() {
        let place = u32::try_from(index).unwrap_or(u32::MAX).saturating_add(1);
        let rank = match previous_opt {
            Some((previous_score, previous_rank)) if previous_score == score => previous_rank,
            _ => place,
        };
        ranks.push(rank);
        previous_opt = Some((score, rank));
    }
    ranks
}

/// Scores and ranks a campaign's accounts and venues.
///
/// * An account scores `units_allocated * points_per_unit_allocated + units_used *
///   points_per_unit_used`. Its standings are merged first: units are summed over every venue
///   (the claim book lets an account claim at one venue only, so this is a safeguard), and it is
///   shown at the venue of its standing with the most units allocated (the lowest gateway id
///   among equals).
/// * A venue scores the sum of the scores of its standings plus `users_served *
///   venue_points_per_user_served`, where `users_served` counts the distinct accounts with a
///   standing there. Every venue of `enrolled_venues` is ranked, with 0 if it served nobody, and
///   so is any venue named by a standing.
/// * Arithmetic saturates at `u64::MAX`.
/// * Both lists are ordered by score, highest first, then by id; equal scores share a rank and
///   the next rank skips ("1224"). The result does not depend on the order of the inputs.
pub fn rank<'a>(
    scoring: &ScoringRules,
    enrolled_venues: impl IntoIterator<Item = &'a str>,
    standings: &[UserStanding],
) -> Rankings {
    /// An account's merged standings: totals and units allocated per venue.
    #[derive(Default)]
    struct AccountTotals<'s> {
        units_allocated: u64,
        units_used: u64,
        allocated_by_venue: BTreeMap<&'s str, u64>,
    }
    /// A venue's totals.
    #[derive(Default)]
    struct VenueTotals<'s> {
        accounts: BTreeSet<&'s str>,
        units_allocated: u64,
        units_used: u64,
        standings_score: u64,
    }

    let mut accounts: BTreeMap<&str, AccountTotals<'_>> = BTreeMap::new();
    let mut venues: BTreeMap<String, VenueTotals<'_>> = enrolled_venues
        .into_iter()
        .map(|gateway_id| (gateway_id.to_owned(), VenueTotals::default()))
        .collect();
    for standing in standings {
        let account = accounts.entry(standing.account_id.as_str()).or_default();
        account.units_allocated = account
            .units_allocated
            .saturating_add(standing.units_allocated);
        account.units_used = account.units_used.saturating_add(standing.units_used);
        let at_venue = account
            .allocated_by_venue
            .entry(standing.gateway_id.as_str())
            .or_default();
        *at_venue = at_venue.saturating_add(standing.units_allocated);

        let venue = venues.entry(standing.gateway_id.clone()).or_default();
        venue.accounts.insert(standing.account_id.as_str());
        venue.units_allocated = venue
            .units_allocated
            .saturating_add(standing.units_allocated);
        venue.units_used = venue.units_used.saturating_add(standing.units_used);
        venue.standings_score = venue.standings_score.saturating_add(standing_score(
            scoring,
            standing.units_allocated,
            standing.units_used,
        ));
    }

    let mut users: Vec<RankedUser> = accounts
        .into_iter()
        .map(|(account_id, totals)| {
            let gateway_id = totals
                .allocated_by_venue
                .iter()
                // The most units; among equals the first (lowest) id, hence `rev` before
                // `max_by_key`, which keeps the last of equal maxima.
                .rev()
                .max_by_key(|(_, units)| **units)
                .map(|(gateway_id, _)| (*gateway_id).to_owned())
                .unwrap_or_default();
            RankedUser {
                account_id: account_id.to_owned(),
                gateway_id,
                units_allocated: totals.units_allocated,
                units_used: totals.units_used,
                score: standing_score(scoring, totals.units_allocated, totals.units_used),
                rank: 0,
            }
        })
        .collect();
    users.sort_by(|left, right| {
        right
            .score
            .cmp(&left.score)
            .then_with(|| left.account_id.cmp(&right.account_id))
    });
    let user_ranks = competition_ranks(users.iter().map(|user| user.score));
    for (user, rank) in users.iter_mut().zip(user_ranks) {
        user.rank = rank;
    }

    let mut ranked_venues: Vec<RankedVenue> = venues
        .into_iter()
        .map(|(gateway_id, totals)| {
            let users_served = u64::try_from(totals.accounts.len()).unwrap_or(u64::MAX);
            RankedVenue {
                gateway_id,
                users_served,
                units_allocated: totals.units_allocated,
                units_used: totals.units_used,
                score: totals.standings_score.saturating_add(
                    users_served.saturating_mul(scoring.venue_points_per_user_served),
                ),
                rank: 0,
            }
        })
        .collect();
    ranked_venues.sort_by(|left, right| {
        right
            .score
            .cmp(&left.score)
            .then_with(|| left.gateway_id.cmp(&right.gateway_id))
    });
    let venue_ranks = competition_ranks(ranked_venues.iter().map(|venue| venue.score));
    for (venue, rank) in ranked_venues.iter_mut().zip(venue_ranks) {
        venue.rank = rank;
    }
    Rankings {
        users,
        venues: ranked_venues,
    }
}

/// A closed campaign's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignResults {
    /// When the campaign closed.
    pub closed_at_unix_ms: u64,
    /// Accounts ranked.
    pub n_users_ranked: u64,
    /// Venues ranked.
    pub n_venues_ranked: u64,
    /// The first `top_users` accounts of the ranking with a score above zero, best first.
    pub user_winners: Vec<RankedUser>,
    /// The first `top_venues` venues of the ranking with a score above zero, best first.
    pub venue_winners: Vec<RankedVenue>,
}

impl CampaignResults {
    /// Picks the winners of `rankings` by `winners` (ties at the cut are decided by id, the
    /// ranking's order).
    pub fn from_rankings(rankings: Rankings, winners: &WinnerRule, closed_at_unix_ms: u64) -> Self {
        let n_users_ranked = u64::try_from(rankings.users.len()).unwrap_or(u64::MAX);
        let n_venues_ranked = u64::try_from(rankings.venues.len()).unwrap_or(u64::MAX);
        let top_users = usize::try_from(winners.top_users).unwrap_or(usize::MAX);
        let top_venues = usize::try_from(winners.top_venues).unwrap_or(usize::MAX);
        Self {
            closed_at_unix_ms,
            n_users_ranked,
            n_venues_ranked,
            user_winners: rankings
                .users
                .into_iter()
                .filter(|user| user.score > 0)
                .take(top_users)
                .collect(),
            venue_winners: rankings
                .venues
                .into_iter()
                .filter(|venue| venue.score > 0)
                .take(top_venues)
                .collect(),
        }
    }
}

/// Why a campaign request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum CampaignError {
    /// The campaign id is not acceptable.
    #[error(
        "campaign id {campaign_id:?} must be 1 to {MAX_CAMPAIGN_ID_CHARS} characters of a-z, 0-9, _ and -"
    )]
    InvalidId {
        /// The id (its first characters).
        campaign_id: String,
    },
    /// A field of a definition or request is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as a path in the definition's JSON (e.g. `winners.user_reward`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The eligibility's activity condition breaks the limits of certification conditions.
    #[error("{problem}")]
    InvalidActivity {
        /// What is wrong; its message starts with the place, `eligibility.activity…`.
        problem: PolicyError,
    },
    /// No campaign was created under this id.
    #[error("no such campaign")]
    NoSuchCampaign,
    /// The campaign exists with another definition.
    #[error("the campaign already exists with another definition")]
    AlreadyExists,
    /// The campaign is still a draft.
    #[error("the campaign is not published")]
    NotPublished,
    /// The campaign is closed.
    #[error("the campaign is closed")]
    Closed,
    /// The request came outside the enrolment window.
    #[error(
        "enrolment is open from {opens_at_unix_ms} (inclusive) to {closes_at_unix_ms} (exclusive), unix ms"
    )]
    EnrolmentNotOpen {
        /// When enrolment opens.
        opens_at_unix_ms: u64,
        /// When it closes.
        closes_at_unix_ms: u64,
    },
    /// The venue does not qualify now.
    #[error("the venue is not eligible: {}", reasons.join("; "))]
    NotEligible {
        /// Every reason, as sentences (see [`check_eligibility`]).
        reasons: Vec<String>,
    },
    /// The budget cannot hold one more venue quota.
    #[error(
        "{remaining_units} units remain of the campaign's budget, a venue's quota is {venue_quota}"
    )]
    BudgetExhausted {
        /// Units not yet granted.
        remaining_units: u64,
        /// The quota a venue would receive.
        venue_quota: u64,
    },
    /// The venue is not enrolled in the campaign.
    #[error("gateway {gateway_id:?} is not enrolled in the campaign")]
    NotEnrolled {
        /// The venue's gateway.
        gateway_id: String,
    },
}

/// Everything a campaign entity keeps (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignState {
    definition_opt: Option<CampaignDefinition>,
    status: CampaignStatus,
    created_at_unix_ms: u64,
    published_at_unix_ms_opt: Option<u64>,
    closed_at_unix_ms_opt: Option<u64>,
    notice_gateways: BTreeSet<String>,
    venues: BTreeMap<String, VenueEnrolment>,
    units_granted: u64,
    results_opt: Option<CampaignResults>,
    revision: u64,
}

impl CampaignState {
    /// Creates the campaign as a draft, after validating `definition` against the tiers of the
    /// certification policy in force. Returns whether it is new: the same definition again is
    /// `Ok(false)` whatever the status; another one is [`CampaignError::AlreadyExists`].
    pub fn create(
        &mut self,
        definition: CampaignDefinition,
        tier_names_lowest_first: &[String],
        now_unix_ms: u64,
    ) -> Result<bool, CampaignError> {
        if let Some(existing) = &self.definition_opt {
            return if *existing == definition {
                Ok(false)
            } else {
                Err(CampaignError::AlreadyExists)
            };
        }
        definition.validate(tier_names_lowest_first)?;
        self.definition_opt = Some(definition);
        self.status = CampaignStatus::Draft;
        self.created_at_unix_ms = now_unix_ms;
        self.bump();
        Ok(true)
    }

    /// Publishes the draft; its notice goes to `notice_gateways` (the certified venues the
    /// caller found eligible to hear of it). Returns whether it is new: publishing again is
    /// `Ok(false)` and keeps the first notice set.
    pub fn publish(
        &mut self,
        notice_gateways: BTreeSet<String>,
        now_unix_ms: u64,
    ) -> Result<bool, CampaignError> {
        self.definition()?;
        match self.status {
            CampaignStatus::Draft => {
                self.status = CampaignStatus::Published;
                self.published_at_unix_ms_opt = Some(now_unix_ms);
                self.notice_gateways = notice_gateways;
                self.bump();
                Ok(true)
            }
            CampaignStatus::Published => Ok(false),
            CampaignStatus::Closed => Err(CampaignError::Closed),
        }
    }

    /// Enrols a venue at its current tier (`tier_opt`, `None` when uncertified) and figures
    /// over the campaign's `activity_days`; returns its quota and whether the enrolment is new.
    /// A venue enrolled already gets its quota again without any check (a retry). Otherwise the
    /// campaign must be published, the window open, the venue eligible and the budget able to
    /// hold one more quota, checked in that order.
    pub fn enrol_venue(
        &mut self,
        gateway_id: &str,
        tier_opt: Option<String>,
        tier_names_lowest_first: &[String],
        figures: WindowFigures,
        now_unix_ms: u64,
    ) -> Result<(u64, bool), CampaignError> {
        self.require_published()?;
        if let Some(enrolment) = self.venues.get(gateway_id) {
            return Ok((enrolment.quota, false));
        }
        check_gateway_id(gateway_id)?;
        let definition = self.definition()?;
        if !(definition.enrol_opens_at_ms..definition.enrol_closes_at_ms).contains(&now_unix_ms) {
            return Err(CampaignError::EnrolmentNotOpen {
                opens_at_unix_ms: definition.enrol_opens_at_ms,
                closes_at_unix_ms: definition.enrol_closes_at_ms,
            });
        }
        check_eligibility(
            &definition.eligibility,
            tier_names_lowest_first,
            tier_opt.as_deref(),
            &figures,
        )
        .map_err(|reasons| CampaignError::NotEligible { reasons })?;
        let quota = definition.venue_quota;
        let remaining_units = definition.total_units.saturating_sub(self.units_granted);
        if quota > remaining_units {
            return Err(CampaignError::BudgetExhausted {
                remaining_units,
                venue_quota: quota,
            });
        }
        self.units_granted = self.units_granted.saturating_add(quota);
        self.venues.insert(
            gateway_id.to_owned(),
            VenueEnrolment {
                quota,
                enrolled_at_unix_ms: now_unix_ms,
                // Eligible, so certified: the tier is there.
                tier: tier_opt.unwrap_or_default(),
                figures,
            },
        );
        self.bump();
        Ok((quota, true))
    }

    /// The quota of an enrolled venue of a published campaign, checked before a client enrols
    /// through the venue, asks it for units, or is allocated units. `now` does not change the
    /// answer: an enrolled venue may serve its clients until the campaign is closed.
    pub fn check_venue(&self, gateway_id: &str) -> Result<u64, CampaignError> {
        self.require_published()?;
        self.venues
            .get(gateway_id)
            .map(|enrolment| enrolment.quota)
            .ok_or_else(|| CampaignError::NotEnrolled {
                gateway_id: gateway_id.to_owned(),
            })
    }

    /// Closes the published campaign and fixes its results from `standings` (see [`rank`]);
    /// returns them and whether the close is new. Closing again answers the stored results,
    /// whatever the standings.
    pub fn close(
        &mut self,
        standings: &[UserStanding],
        now_unix_ms: u64,
    ) -> Result<(CampaignResults, bool), CampaignError> {
        let definition = self.definition()?;
        match self.status {
            CampaignStatus::Draft => Err(CampaignError::NotPublished),
            CampaignStatus::Closed => self
                .results_opt
                .clone()
                .map(|results| (results, false))
                .ok_or(CampaignError::Closed),
            CampaignStatus::Published => {
                let rankings = rank(
                    &definition.scoring,
                    self.venues.keys().map(String::as_str),
                    standings,
                );
                let results =
                    CampaignResults::from_rankings(rankings, &definition.winners, now_unix_ms);
                self.status = CampaignStatus::Closed;
                self.closed_at_unix_ms_opt = Some(now_unix_ms);
                self.results_opt = Some(results.clone());
                self.bump();
                Ok((results, true))
            }
        }
    }

    /// The campaign's entry in the campaign directory, once created.
    pub fn listing(&self, campaign_id: &str) -> Option<CampaignListing> {
        let definition = self.definition_opt.as_ref()?;
        Some(CampaignListing {
            campaign_id: campaign_id.to_owned(),
            kind: definition.kind,
            title: definition.title.clone(),
            text: definition.text.clone(),
            status: self.status,
            min_tier_opt: definition.eligibility.min_tier_opt.clone(),
            enrol_opens_at_ms: definition.enrol_opens_at_ms,
            enrol_closes_at_ms: definition.enrol_closes_at_ms,
            notice_gateways: self.notice_gateways.clone(),
            published_at_unix_ms_opt: self.published_at_unix_ms_opt,
            campaign_revision: self.revision,
        })
    }

    /// The definition, or [`CampaignError::NoSuchCampaign`] before the campaign is created.
    pub fn definition(&self) -> Result<&CampaignDefinition, CampaignError> {
        self.definition_opt
            .as_ref()
            .ok_or(CampaignError::NoSuchCampaign)
    }

    /// Where the campaign is in its life cycle (`Draft` before it is created).
    pub fn status(&self) -> CampaignStatus {
        self.status
    }

    /// When it was created (0 before).
    pub fn created_at_unix_ms(&self) -> u64 {
        self.created_at_unix_ms
    }

    /// When it was published, if it was.
    pub fn published_at_unix_ms_opt(&self) -> Option<u64> {
        self.published_at_unix_ms_opt
    }

    /// When it was closed, if it was.
    pub fn closed_at_unix_ms_opt(&self) -> Option<u64> {
        self.closed_at_unix_ms_opt
    }

    /// The venues its notice went to.
    pub fn notice_gateways(&self) -> &BTreeSet<String> {
        &self.notice_gateways
    }

    /// The enrolled venues, by gateway id.
    pub fn venues(&self) -> &BTreeMap<String, VenueEnrolment> {
        &self.venues
    }

    /// Units granted to enrolled venues, in all.
    pub fn units_granted(&self) -> u64 {
        self.units_granted
    }

    /// The results, once closed.
    pub fn results_opt(&self) -> Option<&CampaignResults> {
        self.results_opt.as_ref()
    }

    /// Bumped by every change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// `Ok` when the campaign is published (and so not closed).
    fn require_published(&self) -> Result<(), CampaignError> {
        self.definition()?;
        match self.status {
            CampaignStatus::Draft => Err(CampaignError::NotPublished),
            CampaignStatus::Published => Ok(()),
            CampaignStatus::Closed => Err(CampaignError::Closed),
        }
    }

    fn bump(&mut self) {
        self.revision = self.revision.saturating_add(1);
    }
}

#[cfg(test)]
mod tests;
