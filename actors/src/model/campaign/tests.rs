//! Unit and property tests of campaigns: definition limits, eligibility, every transition and
//! refusal of the life cycle, and the ranking.

use super::*;
use crate::model::certification::Metric::ClientLogins;
use proptest::prelude::*;

/// A moment well after the epoch: enrolment opens then.
const OPENS: u64 = 1_700_000_000_000;
/// Enrolment closes a week later.
const CLOSES: u64 = OPENS + 7 * 86_400_000;
/// When the test campaigns are created.
const CREATED: u64 = OPENS - 86_400_000;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn tiers() -> Vec<String> {
    ["bronze", "silver", "gold"]
        .iter()
        .map(|name| (*name).to_owned())
        .collect()
}

/// 150 to 200 client logins.
fn logins_150_to_200() -> Condition {
    Condition::All(vec![
        Condition::at_least(ClientLogins, 150),
        Condition::below(ClientLogins, 201),
    ])
}

/// Silver or better with 150–200 logins; 100 units, 50 a venue, 5 an account; two user winners
/// and one venue winner.
fn definition() -> CampaignDefinition {
    CampaignDefinition {
        kind: CampaignKind::Promotion,
        title: "Spring promotion".to_owned(),
        text: "Free hours for regulars.\nOne per account.".to_owned(),
        enrol_opens_at_ms: OPENS,
        enrol_closes_at_ms: CLOSES,
        eligibility: Eligibility {
            min_tier_opt: Some("silver".to_owned()),
            activity_days: 7,
            activity_opt: Some(logins_150_to_200()),
        },
        total_units: 100,
        venue_quota: 50,
        user_limit: 5,
        scoring: ScoringRules {
            points_per_unit_allocated: 1,
            points_per_unit_used: 2,
            venue_points_per_user_served: 10,
        },
        winners: WinnerRule {
            top_users: 2,
            top_venues: 1,
            user_reward: "a month of free hours".to_owned(),
            venue_reward: "a new router".to_owned(),
        },
    }
}

fn figures(client_logins: u64) -> WindowFigures {
    WindowFigures {
        client_logins,
        window_days: 7,
        ..WindowFigures::default()
    }
}

fn standing(account_id: &str, gateway_id: &str, allocated: u64, used: u64) -> UserStanding {
    UserStanding {
        account_id: account_id.to_owned(),
        gateway_id: gateway_id.to_owned(),
        units_allocated: allocated,
        units_used: used,
    }
}

fn created() -> CampaignState {
    let mut state = CampaignState::default();
    assert_eq!(state.create(definition(), &tiers(), CREATED), Ok(true));
    state
}

fn published() -> CampaignState {
    let mut state = created();
    assert_eq!(
        state.publish(gateways(&["g1", "g2"]), CREATED + 1),
        Ok(true)
    );
    state
}

fn gateways(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// Enrols `gateway_id` at silver with 150 logins at `now`.
fn enrol(
    state: &mut CampaignState,
    gateway_id: &str,
    now: u64,
) -> Result<(u64, bool), CampaignError> {
    state.enrol_venue(
        gateway_id,
        Some("silver".to_owned()),
        &tiers(),
        figures(150),
        now,
    )
}

/// Runs an op that must be refused with `expected`, and checks that it changed nothing.
#[track_caller]
fn check_refused<T: std::fmt::Debug>(
    state: &mut CampaignState,
    op: impl FnOnce(&mut CampaignState) -> Result<T, CampaignError>,
    expected: &CampaignError,
) {
    let before = state.clone();
    let result = op(state);
    assert_eq!(result.err().as_ref(), Some(expected));
    assert_eq!(*state, before, "a refusal changes nothing");
}

// ---------------------------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------------------------

#[test]
fn campaign_ids_are_short_lowercase_names() {
    #[track_caller]
    fn check(id: &str, acceptable: bool) {
        assert_eq!(validate_campaign_id(id).is_ok(), acceptable, "{id:?}");
    }
    check("spring-2025_a", true);
    check("a", true);
    check(&"a".repeat(MAX_CAMPAIGN_ID_CHARS), true);
    check(&"a".repeat(MAX_CAMPAIGN_ID_CHARS + 1), false);
    check("", false);
    check("Spring", false);
    check("spring 2025", false);
    check("spring/2025", false);
    check("été", false);
    assert_eq!(
        validate_campaign_id("A").unwrap_err().to_string(),
        "campaign id \"A\" must be 1 to 64 characters of a-z, 0-9, _ and -"
    );
}

// ---------------------------------------------------------------------------------------------
// Definition limits
// ---------------------------------------------------------------------------------------------

/// Validates the example definition changed by `edit` against the example tiers.
#[track_caller]
fn check_definition(edit: fn(&mut CampaignDefinition), expected: Result<(), &str>) {
    check_definition_with_tiers(&tiers(), edit, expected);
}

#[track_caller]
fn check_definition_with_tiers(
    tier_names: &[String],
    edit: fn(&mut CampaignDefinition),
    expected: Result<(), &str>,
) {
    let mut edited = definition();
    edit(&mut edited);
    assert_eq!(
        edited
            .validate(tier_names)
            .map_err(|error| error.to_string()),
        expected.map_err(str::to_owned)
    );
}

#[test]
fn the_example_definition_is_valid() {
    check_definition(|_| {}, Ok(()));
}

#[test]
fn titles_and_texts_are_bounded_and_printable() {
    check_definition(
        |edited| edited.title = String::new(),
        Err("title: must not be empty or blank"),
    );
    check_definition(
        |edited| edited.title = "   ".to_owned(),
        Err("title: must not be empty or blank"),
    );
    check_definition(|edited| edited.title = "t".repeat(MAX_TITLE_CHARS), Ok(()));
    check_definition(
        |edited| edited.title = "é".repeat(MAX_TITLE_CHARS + 1),
        Err("title: 129 characters, at most 128"),
    );
    check_definition(
        |edited| edited.title = "two\nlines".to_owned(),
        Err("title: contains the control character '\\n'"),
    );
    check_definition(
        |edited| edited.text = String::new(),
        Err("text: must not be empty or blank"),
    );
    check_definition(|edited| edited.text = "x".repeat(MAX_TEXT_CHARS), Ok(()));
    check_definition(
        |edited| edited.text = "x".repeat(MAX_TEXT_CHARS + 1),
        Err("text: 4097 characters, at most 4096"),
    );
    check_definition(|edited| edited.text = "a\nb\n".to_owned(), Ok(()));
    check_definition(
        |edited| edited.text = "a\tb".to_owned(),
        Err("text: contains the control character '\\t'"),
    );
    check_definition(
        |edited| edited.text = "a\r\nb".to_owned(),
        Err("text: contains the control character '\\r'"),
    );
}

#[test]
fn enrolment_closes_after_it_opens() {
    check_definition(
        |edited| edited.enrol_closes_at_ms = edited.enrol_opens_at_ms,
        Err("enrol_closes_at_ms: 1700000000000 is not after enrol_opens_at_ms 1700000000000"),
    );
    check_definition(
        |edited| edited.enrol_closes_at_ms = edited.enrol_opens_at_ms - 1,
        Err("enrol_closes_at_ms: 1699999999999 is not after enrol_opens_at_ms 1700000000000"),
    );
    check_definition(
        |edited| edited.enrol_closes_at_ms = edited.enrol_opens_at_ms + 1,
        Ok(()),
    );
}

#[test]
fn eligibility_names_a_tier_in_force_and_a_valid_activity() {
    check_definition(
        |edited| edited.eligibility.min_tier_opt = Some("bronze".to_owned()),
        Ok(()),
    );
    check_definition(
        |edited| edited.eligibility.min_tier_opt = Some("gold".to_owned()),
        Ok(()),
    );
    check_definition(|edited| edited.eligibility.min_tier_opt = None, Ok(()));
    check_definition(
        |edited| edited.eligibility.min_tier_opt = Some("platinum".to_owned()),
        Err(
            "eligibility.min_tier: \"platinum\" is not a tier of the certification policy in force \
             (bronze, silver, gold)",
        ),
    );
    check_definition_with_tiers(
        &[],
        |_| {},
        Err(
            "eligibility.min_tier: \"silver\" names a tier, but no certification policy is in force",
        ),
    );
    check_definition_with_tiers(&[], |edited| edited.eligibility.min_tier_opt = None, Ok(()));

    check_definition(
        |edited| edited.eligibility.activity_days = 0,
        Err("eligibility.activity_days: 0 is not within 1 to 31"),
    );
    check_definition(|edited| edited.eligibility.activity_days = 1, Ok(()));
    check_definition(|edited| edited.eligibility.activity_days = 31, Ok(()));
    check_definition(
        |edited| edited.eligibility.activity_days = 32,
        Err("eligibility.activity_days: 32 is not within 1 to 31"),
    );

    check_definition(|edited| edited.eligibility.activity_opt = None, Ok(()));
    check_definition(
        |edited| edited.eligibility.activity_opt = Some(Condition::Any(Vec::new())),
        Err("eligibility.activity.any: must list at least one condition"),
    );
    check_definition(
        |edited| {
            edited.eligibility.activity_opt = Some(Condition::All(vec![Condition::at_least(
                ClientLogins,
                1_000_000_000_001,
            )]));
        },
        Err(
            "eligibility.activity.all[0].at_least.value: 1000000000001 is above the largest \
             threshold 1000000000000",
        ),
    );
}

#[test]
fn units_are_bounded_by_each_other() {
    check_definition(
        |edited| edited.total_units = 0,
        Err("total_units: 0 is not within 1 to 1000000000000"),
    );
    check_definition(
        |edited| {
            edited.total_units = MAX_TOTAL_UNITS;
            edited.venue_quota = MAX_TOTAL_UNITS;
            edited.user_limit = MAX_TOTAL_UNITS;
        },
        Ok(()),
    );
    check_definition(
        |edited| edited.total_units = MAX_TOTAL_UNITS + 1,
        Err("total_units: 1000000000001 is not within 1 to 1000000000000"),
    );
    check_definition(
        |edited| edited.venue_quota = 0,
        Err("venue_quota: 0 is not within 1 to 100"),
    );
    check_definition(|edited| edited.venue_quota = 100, Ok(()));
    check_definition(
        |edited| edited.venue_quota = 101,
        Err("venue_quota: 101 is not within 1 to 100"),
    );
    check_definition(
        |edited| edited.user_limit = 0,
        Err("user_limit: 0 is not within 1 to 50"),
    );
    check_definition(|edited| edited.user_limit = 50, Ok(()));
    check_definition(
        |edited| edited.user_limit = 51,
        Err("user_limit: 51 is not within 1 to 50"),
    );
}

#[test]
fn scoring_rules_are_bounded() {
    check_definition(
        |edited| {
            edited.scoring = ScoringRules {
                points_per_unit_allocated: MAX_POINTS,
                points_per_unit_used: MAX_POINTS,
                venue_points_per_user_served: MAX_POINTS,
            };
        },
        Ok(()),
    );
    check_definition(
        |edited| {
            edited.scoring = ScoringRules {
                points_per_unit_allocated: 0,
                points_per_unit_used: 0,
                venue_points_per_user_served: 0,
            };
        },
        Ok(()),
    );
    check_definition(
        |edited| edited.scoring.points_per_unit_allocated = MAX_POINTS + 1,
        Err("scoring.points_per_unit_allocated: 1000001 is not within 0 to 1000000"),
    );
    check_definition(
        |edited| edited.scoring.points_per_unit_used = MAX_POINTS + 1,
        Err("scoring.points_per_unit_used: 1000001 is not within 0 to 1000000"),
    );
    check_definition(
        |edited| edited.scoring.venue_points_per_user_served = MAX_POINTS + 1,
        Err("scoring.venue_points_per_user_served: 1000001 is not within 0 to 1000000"),
    );
}

#[test]
fn winners_are_bounded_and_named_rewards_are_required() {
    check_definition(
        |edited| {
            edited.winners.top_users = MAX_WINNERS;
            edited.winners.top_venues = MAX_WINNERS;
        },
        Ok(()),
    );
    check_definition(
        |edited| edited.winners.top_users = MAX_WINNERS + 1,
        Err("winners.top_users: 1001 is not within 0 to 1000"),
    );
    check_definition(
        |edited| edited.winners.top_venues = MAX_WINNERS + 1,
        Err("winners.top_venues: 1001 is not within 0 to 1000"),
    );
    check_definition(
        |edited| edited.winners.user_reward = String::new(),
        Err("winners.user_reward: must not be empty or blank when winners.top_users is above 0"),
    );
    check_definition(
        |edited| edited.winners.venue_reward = " ".to_owned(),
        Err("winners.venue_reward: must not be empty or blank when winners.top_venues is above 0"),
    );
    check_definition(
        |edited| {
            edited.winners.top_users = 0;
            edited.winners.user_reward = String::new();
            edited.winners.top_venues = 0;
            edited.winners.venue_reward = String::new();
        },
        Ok(()),
    );
    check_definition(
        |edited| edited.winners.user_reward = "r".repeat(MAX_REWARD_TEXT_CHARS),
        Ok(()),
    );
    check_definition(
        |edited| edited.winners.user_reward = "r".repeat(MAX_REWARD_TEXT_CHARS + 1),
        Err("winners.user_reward: 257 characters, at most 256"),
    );
    check_definition(
        |edited| {
            edited.winners.top_venues = 0;
            edited.winners.venue_reward = "r".repeat(MAX_REWARD_TEXT_CHARS + 1);
        },
        Err("winners.venue_reward: 257 characters, at most 256"),
    );
    check_definition(
        |edited| {
            edited.winners.top_users = 0;
            edited.winners.user_reward = "a\u{7}".to_owned();
        },
        Err("winners.user_reward: contains the control character '\\u{7}'"),
    );
    check_definition(
        |edited| edited.winners.venue_reward = "two\nlines".to_owned(),
        Err("winners.venue_reward: contains the control character '\\n'"),
    );
}

#[test]
fn an_operators_json_definition_parses_and_unknown_fields_are_refused() {
    let json = r#"{
      "kind": "special_grant",
      "title": "Closed test",
      "text": "Access to the closed test of a new game.",
      "enrol_opens_at_ms": 1700000000000,
      "enrol_closes_at_ms": 1700604800000,
      "eligibility": {
        "min_tier": "gold",
        "activity_days": 7,
        "activity": { "all": [
          { "at_least": { "metric": "client_logins", "value": 150 } },
          { "below": { "metric": "client_logins", "value": 201 } }
        ] }
      },
      "total_units": 1000,
      "venue_quota": 100,
      "user_limit": 1,
      "scoring": { "points_per_unit_allocated": 1, "points_per_unit_used": 3,
                   "venue_points_per_user_served": 5 },
      "winners": { "top_users": 10, "top_venues": 3, "user_reward": "a skin",
                   "venue_reward": "a banner" }
    }"#;
    let parsed: CampaignDefinition = serde_json::from_str(json).unwrap();
    assert_eq!(parsed.kind, CampaignKind::SpecialGrant);
    assert_eq!(parsed.eligibility.min_tier_opt.as_deref(), Some("gold"));
    assert_eq!(parsed.eligibility.activity_opt, Some(logins_150_to_200()));
    assert_eq!(parsed.validate(&tiers()), Ok(()));

    let minimal_eligibility: Eligibility = serde_json::from_str(r#"{"activity_days": 3}"#).unwrap();
    assert_eq!(minimal_eligibility.min_tier_opt, None);
    assert_eq!(minimal_eligibility.activity_opt, None);
    assert!(
        serde_json::from_str::<Eligibility>(r#"{"activity_days": 3, "min_tier_opt": "gold"}"#)
            .is_err()
    );
    let with_typo = json.replace("\"user_limit\"", "\"user_limt\"");
    assert!(serde_json::from_str::<CampaignDefinition>(&with_typo).is_err());
}

// ---------------------------------------------------------------------------------------------
// Eligibility
// ---------------------------------------------------------------------------------------------

/// Checks a venue at `venue_tier_opt` with `client_logins` against the example eligibility
/// with `min_tier_opt`.
#[track_caller]
fn check_eligible(
    min_tier_opt: Option<&str>,
    venue_tier_opt: Option<&str>,
    client_logins: u64,
    expected: Result<(), &[&str]>,
) {
    let mut eligibility = definition().eligibility;
    eligibility.min_tier_opt = min_tier_opt.map(str::to_owned);
    let expected = expected.map_err(|reasons| {
        reasons
            .iter()
            .map(|reason| (*reason).to_owned())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        check_eligibility(
            &eligibility,
            &tiers(),
            venue_tier_opt,
            &figures(client_logins)
        ),
        expected
    );
}

#[test]
fn a_venue_must_be_certified_at_the_minimum_tier_or_above() {
    check_eligible(Some("silver"), Some("silver"), 150, Ok(()));
    check_eligible(Some("silver"), Some("gold"), 150, Ok(()));
    check_eligible(
        Some("silver"),
        Some("bronze"),
        150,
        Err(&["certification tier bronze, at least silver required"]),
    );
    check_eligible(
        Some("silver"),
        Some("diamond"),
        150,
        Err(&["certification tier diamond, at least silver required"]),
    );
    check_eligible(
        Some("bronze"),
        Some("diamond"),
        150,
        Err(&["certification tier diamond, at least bronze required"]),
    );
    check_eligible(
        Some("silver"),
        None,
        150,
        Err(&["the venue is not certified"]),
    );
    check_eligible(None, Some("bronze"), 150, Ok(()));
    check_eligible(None, Some("diamond"), 150, Ok(()));
    check_eligible(None, None, 150, Err(&["the venue is not certified"]));
    check_eligible(
        Some("platinum"),
        Some("gold"),
        150,
        Err(&[
            "the campaign's minimum tier platinum is not a tier of the certification policy in force",
        ]),
    );
}

#[test]
fn the_venue_activity_must_be_in_range() {
    check_eligible(
        Some("silver"),
        Some("silver"),
        149,
        Err(&["client_logins: measured 149, at least 150 required"]),
    );
    check_eligible(Some("silver"), Some("silver"), 150, Ok(()));
    check_eligible(Some("silver"), Some("silver"), 200, Ok(()));
    check_eligible(
        Some("silver"),
        Some("silver"),
        201,
        Err(&["client_logins: measured 201, below 201 required"]),
    );
}

#[test]
fn every_reason_is_collected() {
    check_eligible(
        Some("silver"),
        None,
        3,
        Err(&[
            "the venue is not certified",
            "client_logins: measured 3, at least 150 required",
        ]),
    );
    check_eligible(
        Some("gold"),
        Some("bronze"),
        500,
        Err(&[
            "certification tier bronze, at least gold required",
            "client_logins: measured 500, below 201 required",
        ]),
    );
}

#[test]
fn without_an_activity_condition_any_figures_do() {
    let eligibility = Eligibility {
        min_tier_opt: None,
        activity_days: 1,
        activity_opt: None,
    };
    assert_eq!(
        check_eligibility(&eligibility, &tiers(), Some("bronze"), &figures(0)),
        Ok(())
    );
}

// ---------------------------------------------------------------------------------------------
// Life cycle
// ---------------------------------------------------------------------------------------------

#[test]
fn nothing_can_be_done_to_a_campaign_never_created() {
    let mut state = CampaignState::default();
    let none = CampaignError::NoSuchCampaign;
    check_refused(
        &mut state,
        |state| state.publish(gateways(&["g1"]), OPENS),
        &none,
    );
    check_refused(&mut state, |state| enrol(state, "g1", OPENS), &none);
    check_refused(&mut state, |state| state.check_venue("g1"), &none);
    check_refused(&mut state, |state| state.close(&[], OPENS), &none);
    assert_eq!(state.definition(), Err(CampaignError::NoSuchCampaign));
    assert_eq!(state.listing("spring"), None);
    assert_eq!(state.revision(), 0);
}

#[test]
fn create_validates_and_is_idempotent_for_the_same_definition() {
    let mut state = CampaignState::default();
    let mut bad = definition();
    bad.total_units = 0;
    check_refused(
        &mut state,
        |state| state.create(bad, &tiers(), CREATED),
        &CampaignError::Invalid {
            field: "total_units".to_owned(),
            reason: "0 is not within 1 to 1000000000000".to_owned(),
        },
    );
    assert_eq!(state.create(definition(), &tiers(), CREATED), Ok(true));
    assert_eq!(state.status(), CampaignStatus::Draft);
    assert_eq!(state.created_at_unix_ms(), CREATED);
    assert_eq!(state.definition(), Ok(&definition()));
    assert_eq!(state.revision(), 1);

    // The same definition again, even later and with other tiers in force: nothing new.
    let before = state.clone();
    assert_eq!(state.create(definition(), &[], CREATED + 5), Ok(false));
    assert_eq!(state, before);

    let mut other = definition();
    other.title = "Another title".to_owned();
    check_refused(
        &mut state,
        |state| state.create(other, &tiers(), CREATED + 5),
        &CampaignError::AlreadyExists,
    );
}

#[test]
fn a_draft_cannot_enrol_serve_or_close() {
    let mut state = created();
    let not_published = CampaignError::NotPublished;
    check_refused(
        &mut state,
        |state| enrol(state, "g1", OPENS),
        &not_published,
    );
    check_refused(&mut state, |state| state.check_venue("g1"), &not_published);
    check_refused(&mut state, |state| state.close(&[], OPENS), &not_published);
}

#[test]
fn publish_is_idempotent_and_keeps_the_first_notice_set() {
    let mut state = created();
    assert_eq!(
        state.publish(gateways(&["g1", "g2"]), CREATED + 1),
        Ok(true)
    );
    assert_eq!(state.status(), CampaignStatus::Published);
    assert_eq!(state.published_at_unix_ms_opt(), Some(CREATED + 1));
    assert_eq!(state.notice_gateways(), &gateways(&["g1", "g2"]));
    assert_eq!(state.revision(), 2);

    let before = state.clone();
    assert_eq!(state.publish(gateways(&["g3"]), CREATED + 2), Ok(false));
    assert_eq!(state, before, "a second publish changes nothing");
}

#[test]
fn the_enrolment_window_opens_inclusive_and_closes_exclusive() {
    let mut state = published();
    let not_open = CampaignError::EnrolmentNotOpen {
        opens_at_unix_ms: OPENS,
        closes_at_unix_ms: CLOSES,
    };
    check_refused(&mut state, |state| enrol(state, "g1", OPENS - 1), &not_open);
    check_refused(&mut state, |state| enrol(state, "g1", CLOSES), &not_open);
    assert_eq!(enrol(&mut state, "g1", OPENS), Ok((50, true)));
    assert_eq!(enrol(&mut state, "g2", CLOSES - 1), Ok((50, true)));
}

#[test]
fn an_ineligible_venue_is_refused_with_every_reason() {
    let mut state = published();
    check_refused(
        &mut state,
        |state| {
            state.enrol_venue(
                "g1",
                Some("bronze".to_owned()),
                &tiers(),
                figures(149),
                OPENS,
            )
        },
        &CampaignError::NotEligible {
            reasons: vec![
                "certification tier bronze, at least silver required".to_owned(),
                "client_logins: measured 149, at least 150 required".to_owned(),
            ],
        },
    );
    check_refused(
        &mut state,
        |state| state.enrol_venue("g1", None, &tiers(), figures(150), OPENS),
        &CampaignError::NotEligible {
            reasons: vec!["the venue is not certified".to_owned()],
        },
    );
    check_refused(
        &mut state,
        |state| state.enrol_venue("", Some("gold".to_owned()), &tiers(), figures(150), OPENS),
        &CampaignError::Invalid {
            field: "gateway_id".to_owned(),
            reason: "0 bytes, must be 1 to 256".to_owned(),
        },
    );
}

#[test]
fn enrolment_records_the_venue_and_is_idempotent() {
    let mut state = published();
    let revision = state.revision();
    assert_eq!(
        state.enrol_venue(
            "g1",
            Some("gold".to_owned()),
            &tiers(),
            figures(180),
            OPENS + 7
        ),
        Ok((50, true))
    );
    assert_eq!(state.revision(), revision + 1);
    assert_eq!(state.units_granted(), 50);
    assert_eq!(
        state.venues().get("g1"),
        Some(&VenueEnrolment {
            quota: 50,
            enrolled_at_unix_ms: OPENS + 7,
            tier: "gold".to_owned(),
            figures: figures(180),
        })
    );
    // A retry gets the quota again with no check at all: outside the window, uncertified.
    let before = state.clone();
    assert_eq!(
        state.enrol_venue("g1", None, &[], figures(0), CLOSES + 1),
        Ok((50, false))
    );
    assert_eq!(state, before);
}

#[test]
fn the_budget_holds_exactly_its_venue_quotas() {
    let mut state = published();
    assert_eq!(enrol(&mut state, "g1", OPENS), Ok((50, true)));
    assert_eq!(enrol(&mut state, "g2", OPENS), Ok((50, true)));
    assert_eq!(state.units_granted(), 100, "exactly exhausted");
    check_refused(
        &mut state,
        |state| enrol(state, "g3", OPENS),
        &CampaignError::BudgetExhausted {
            remaining_units: 0,
            venue_quota: 50,
        },
    );

    // A budget that is not a multiple of the quota leaves a remainder no venue can take.
    let mut uneven = definition();
    uneven.total_units = 120;
    let mut state = CampaignState::default();
    assert_eq!(state.create(uneven, &tiers(), CREATED), Ok(true));
    assert_eq!(state.publish(BTreeSet::new(), CREATED), Ok(true));
    assert_eq!(enrol(&mut state, "g1", OPENS), Ok((50, true)));
    assert_eq!(enrol(&mut state, "g2", OPENS), Ok((50, true)));
    check_refused(
        &mut state,
        |state| enrol(state, "g3", OPENS),
        &CampaignError::BudgetExhausted {
            remaining_units: 20,
            venue_quota: 50,
        },
    );
}

#[test]
fn only_enrolled_venues_of_an_open_campaign_pass_the_venue_check() {
    let mut state = published();
    assert_eq!(enrol(&mut state, "g1", OPENS), Ok((50, true)));
    assert_eq!(state.check_venue("g1"), Ok(50));
    check_refused(
        &mut state,
        |state| state.check_venue("g2"),
        &CampaignError::NotEnrolled {
            gateway_id: "g2".to_owned(),
        },
    );
}

#[test]
fn close_ranks_picks_winners_and_is_idempotent() {
    let mut state = published();
    assert_eq!(enrol(&mut state, "g1", OPENS), Ok((50, true)));
    assert_eq!(enrol(&mut state, "g2", OPENS), Ok((50, true)));
    let standings = [
        standing("a1", "g1", 5, 3), // 5 + 6 = 11
        standing("a2", "g1", 5, 0), // 5
        standing("a3", "g2", 5, 3), // 11
        standing("a4", "g2", 0, 0), // 0
    ];
    let revision = state.revision();
    let (results, new) = state.close(&standings, CLOSES + 10).unwrap();
    assert!(new);
    assert_eq!(state.revision(), revision + 1);
    assert_eq!(state.status(), CampaignStatus::Closed);
    assert_eq!(state.closed_at_unix_ms_opt(), Some(CLOSES + 10));
    assert_eq!(state.results_opt(), Some(&results));
    assert_eq!(results.closed_at_unix_ms, CLOSES + 10);
    assert_eq!(results.n_users_ranked, 4);
    assert_eq!(results.n_venues_ranked, 2);
    let user_winners: Vec<(&str, &str, u64, u32)> = results
        .user_winners
        .iter()
        .map(|user| {
            (
                user.account_id.as_str(),
                user.gateway_id.as_str(),
                user.score,
                user.rank,
            )
        })
        .collect();
    assert_eq!(user_winners, vec![("a1", "g1", 11, 1), ("a3", "g2", 11, 1)]);
    // g1: 11 + 5 + 2 users * 10 = 36; g2: 11 + 0 + 2 users * 10 = 31.
    assert_eq!(
        results.venue_winners,
        vec![RankedVenue {
            gateway_id: "g1".to_owned(),
            users_served: 2,
            units_allocated: 10,
            units_used: 3,
            score: 36,
            rank: 1,
        }]
    );

    // Closing again answers the stored results, whatever it is told.
    let before = state.clone();
    assert_eq!(
        state.close(&[standing("a9", "g1", 50, 50)], CLOSES + 20),
        Ok((results, false))
    );
    assert_eq!(state, before);
}

#[test]
fn a_closed_campaign_refuses_everything_but_repeats() {
    let mut state = published();
    assert_eq!(enrol(&mut state, "g1", OPENS), Ok((50, true)));
    assert!(state.close(&[], CLOSES).is_ok());
    let closed = CampaignError::Closed;
    check_refused(
        &mut state,
        |state| state.publish(BTreeSet::new(), CLOSES),
        &closed,
    );
    check_refused(&mut state, |state| enrol(state, "g1", OPENS), &closed);
    check_refused(&mut state, |state| enrol(state, "g2", OPENS), &closed);
    check_refused(&mut state, |state| state.check_venue("g1"), &closed);
    let before = state.clone();
    assert_eq!(state.create(definition(), &tiers(), CLOSES), Ok(false));
    assert_eq!(state, before);
}

#[test]
fn only_scores_above_zero_win_and_the_cut_follows_the_ranking() {
    let rankings = rank(
        &definition().scoring,
        ["g1", "g2", "g3"],
        &[
            standing("a1", "g1", 1, 0),
            standing("a2", "g1", 1, 0),
            standing("a3", "g1", 0, 0),
        ],
    );
    let winners = WinnerRule {
        top_users: 10,
        top_venues: 10,
        user_reward: "u".to_owned(),
        venue_reward: "v".to_owned(),
    };
    let results = CampaignResults::from_rankings(rankings.clone(), &winners, 9);
    let names: Vec<&str> = results
        .user_winners
        .iter()
        .map(|user| user.account_id.as_str())
        .collect();
    assert_eq!(names, vec!["a1", "a2"], "a3 scored nothing");
    assert_eq!(results.venue_winners.len(), 1, "g2 and g3 scored nothing");
    assert_eq!((results.n_users_ranked, results.n_venues_ranked), (3, 3));

    let one_winner = WinnerRule {
        top_users: 1,
        top_venues: 0,
        ..winners
    };
    let results = CampaignResults::from_rankings(rankings, &one_winner, 9);
    let names: Vec<(&str, u32)> = results
        .user_winners
        .iter()
        .map(|user| (user.account_id.as_str(), user.rank))
        .collect();
    assert_eq!(names, vec![("a1", 1)], "a tie at the cut goes by id");
    assert!(results.venue_winners.is_empty());
}

#[test]
fn listings_follow_the_life_cycle() {
    let mut state = created();
    let listing = state.listing("spring").unwrap();
    assert_eq!(
        listing,
        CampaignListing {
            campaign_id: "spring".to_owned(),
            kind: CampaignKind::Promotion,
            title: "Spring promotion".to_owned(),
            text: definition().text,
            status: CampaignStatus::Draft,
            min_tier_opt: Some("silver".to_owned()),
            enrol_opens_at_ms: OPENS,
            enrol_closes_at_ms: CLOSES,
            notice_gateways: BTreeSet::new(),
            published_at_unix_ms_opt: None,
            campaign_revision: 1,
        }
    );
    assert_eq!(state.publish(gateways(&["g1"]), CREATED + 1), Ok(true));
    let listing = state.listing("spring").unwrap();
    assert_eq!(listing.status, CampaignStatus::Published);
    assert_eq!(listing.notice_gateways, gateways(&["g1"]));
    assert_eq!(listing.published_at_unix_ms_opt, Some(CREATED + 1));
    assert_eq!(listing.campaign_revision, 2);
    assert!(state.close(&[], CLOSES).is_ok());
    let listing = state.listing("spring").unwrap();
    assert_eq!(listing.status, CampaignStatus::Closed);
    assert_eq!(listing.campaign_revision, 3);
}

#[test]
fn the_state_round_trips_through_message_pack() {
    let mut state = published();
    assert_eq!(enrol(&mut state, "g1", OPENS), Ok((50, true)));
    assert!(state.close(&[standing("a1", "g1", 2, 1)], CLOSES).is_ok());
    let bytes = rmp_serde::to_vec_named(&state).unwrap();
    let restored: CampaignState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(restored, state);
}

#[test]
fn error_messages_are_lowercase_without_a_trailing_period() {
    let errors = [
        CampaignError::InvalidId {
            campaign_id: "X".to_owned(),
        },
        CampaignError::Invalid {
            field: "title".to_owned(),
            reason: "must not be empty or blank".to_owned(),
        },
        CampaignError::InvalidActivity {
            problem: PolicyError::EmptyCombination {
                place: "eligibility.activity.all".to_owned(),
            },
        },
        CampaignError::NoSuchCampaign,
        CampaignError::AlreadyExists,
        CampaignError::NotPublished,
        CampaignError::Closed,
        CampaignError::EnrolmentNotOpen {
            opens_at_unix_ms: 1,
            closes_at_unix_ms: 2,
        },
        CampaignError::NotEligible {
            reasons: vec!["the venue is not certified".to_owned(), "b".to_owned()],
        },
        CampaignError::BudgetExhausted {
            remaining_units: 3,
            venue_quota: 5,
        },
        CampaignError::NotEnrolled {
            gateway_id: "g1".to_owned(),
        },
    ];
    for error in errors {
        let message = error.to_string();
        let first = message.chars().next().unwrap();
        assert!(!first.is_uppercase(), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
    assert_eq!(
        CampaignError::NotEligible {
            reasons: vec!["the venue is not certified".to_owned(), "b".to_owned()],
        }
        .to_string(),
        "the venue is not eligible: the venue is not certified; b"
    );
}

// ---------------------------------------------------------------------------------------------
// Ranking
// ---------------------------------------------------------------------------------------------

#[test]
fn equal_scores_share_a_rank_and_the_next_skips() {
    let scoring = ScoringRules {
        points_per_unit_allocated: 1,
        points_per_unit_used: 0,
        venue_points_per_user_served: 0,
    };
    let rankings = rank(
        &scoring,
        ["g1"],
        &[
            standing("d", "g1", 3, 0),
            standing("c", "g1", 7, 0),
            standing("b", "g1", 7, 0),
            standing("a", "g1", 10, 0),
        ],
    );
    let places: Vec<(&str, u64, u32)> = rankings
        .users
        .iter()
        .map(|user| (user.account_id.as_str(), user.score, user.rank))
        .collect();
    assert_eq!(
        places,
        vec![("a", 10, 1), ("b", 7, 2), ("c", 7, 2), ("d", 3, 4)]
    );
}

#[test]
fn an_accounts_standings_are_merged_and_every_enrolled_venue_is_ranked() {
    let scoring = definition().scoring;
    let rankings = rank(
        &scoring,
        ["g1", "g2", "g3"],
        &[
            standing("a1", "g1", 2, 0),
            standing("a1", "g2", 3, 1),
            standing("a2", "g4", 1, 1),
        ],
    );
    assert_eq!(
        rankings.users,
        vec![
            RankedUser {
                account_id: "a1".to_owned(),
                gateway_id: "g2".to_owned(),
                units_allocated: 5,
                units_used: 1,
                score: 7,
                rank: 1,
            },
            RankedUser {
                account_id: "a2".to_owned(),
                gateway_id: "g4".to_owned(),
                units_allocated: 1,
                units_used: 1,
                score: 3,
                rank: 2,
            },
        ]
    );
    let venues: Vec<(&str, u64, u64, u32)> = rankings
        .venues
        .iter()
        .map(|venue| {
            (
                venue.gateway_id.as_str(),
                venue.users_served,
                venue.score,
                venue.rank,
            )
        })
        .collect();
    assert_eq!(
        venues,
        vec![
            ("g2", 1, 5 + 10, 1),
            ("g4", 1, 3 + 10, 2),
            ("g1", 1, 2 + 10, 3),
            ("g3", 0, 0, 4),
        ],
        "g4 is not enrolled but a standing names it"
    );
}

#[test]
fn an_account_served_equally_at_two_venues_is_shown_at_the_lower_id() {
    let rankings = rank(
        &definition().scoring,
        ["g1", "g2"],
        &[standing("a1", "g2", 2, 0), standing("a1", "g1", 2, 0)],
    );
    assert_eq!(
        rankings.users.first().map(|user| user.gateway_id.as_str()),
        Some("g1")
    );
}

#[test]
fn scores_saturate() {
    let scoring = ScoringRules {
        points_per_unit_allocated: MAX_POINTS,
        points_per_unit_used: MAX_POINTS,
        venue_points_per_user_served: MAX_POINTS,
    };
    let rankings = rank(
        &scoring,
        ["g1"],
        &[
            standing("a1", "g1", u64::MAX, 1),
            standing("a1", "g1", u64::MAX, 0),
        ],
    );
    assert_eq!(
        rankings.users.first().map(|user| user.score),
        Some(u64::MAX)
    );
    assert_eq!(
        rankings.users.first().map(|user| user.units_allocated),
        Some(u64::MAX)
    );
    assert_eq!(
        rankings.venues.first().map(|venue| venue.score),
        Some(u64::MAX)
    );
}

/// Standings over a few accounts and venues, so that accounts repeat and scores tie.
fn standings_strategy() -> impl Strategy<Value = Vec<UserStanding>> {
    proptest::collection::vec((0..6u8, 0..5u8, 0..20u64, 0..20u64), 0..16).prop_map(|rows| {
        rows.into_iter()
            .map(|(account, venue, allocated, used)| {
                standing(
                    &format!("a{account}"),
                    &format!("g{venue}"),
                    allocated,
                    used,
                )
            })
            .collect()
    })
}

fn scoring_strategy() -> impl Strategy<Value = ScoringRules> {
    (0..4u64, 0..4u64, 0..4u64).prop_map(|(allocated, used, served)| ScoringRules {
        points_per_unit_allocated: allocated,
        points_per_unit_used: used,
        venue_points_per_user_served: served,
    })
}

/// Checks that entries ordered best first carry competition ranks and a deterministic order.
fn check_competition_order<'a>(entries: impl Iterator<Item = (&'a str, u64, u32)>) {
    let entries: Vec<(&str, u64, u32)> = entries.collect();
    for (index, (id, score, rank)) in entries.iter().enumerate() {
        let n_better = entries.iter().filter(|(_, other, _)| other > score).count();
        assert_eq!(*rank as usize, n_better + 1, "{id}");
        if let Some((next_id, next_score, _)) = entries.get(index + 1) {
            assert!(
                score > next_score || (score == next_score && id < next_id),
                "{id} before {next_id}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rankings_are_competition_ranks_independent_of_input_order(
        scoring in scoring_strategy(),
        (standings, shuffled) in standings_strategy()
            .prop_flat_map(|standings| (Just(standings.clone()), Just(standings).prop_shuffle())),
        enrolled in proptest::collection::btree_set(0..5u8, 0..5),
    ) {
        let enrolled: Vec<String> = enrolled.iter().map(|venue| format!("g{venue}")).collect();
        let rankings = rank(&scoring, enrolled.iter().map(String::as_str), &standings);
        let reversed: Vec<&str> = enrolled.iter().rev().map(String::as_str).collect();
        prop_assert_eq!(&rank(&scoring, reversed, &shuffled), &rankings);

        check_competition_order(
            rankings.users.iter().map(|user| (user.account_id.as_str(), user.score, user.rank)),
        );
        check_competition_order(
            rankings.venues.iter().map(|venue| (venue.gateway_id.as_str(), venue.score, venue.rank)),
        );

        // Every account once, with its units summed over its standings.
        let accounts: BTreeSet<&str> =
            standings.iter().map(|standing| standing.account_id.as_str()).collect();
        prop_assert_eq!(rankings.users.len(), accounts.len());
        for user in &rankings.users {
            let own = standings.iter().filter(|standing| standing.account_id == user.account_id);
            let allocated: u64 = own.clone().map(|standing| standing.units_allocated).sum();
            let used: u64 = own.clone().map(|standing| standing.units_used).sum();
            prop_assert_eq!(user.units_allocated, allocated);
            prop_assert_eq!(user.units_used, used);
            prop_assert_eq!(
                user.score,
                allocated * scoring.points_per_unit_allocated + used * scoring.points_per_unit_used
            );
            prop_assert!(own.clone().any(|standing| standing.gateway_id == user.gateway_id));
        }

        // Every enrolled venue and every venue of a standing, once.
        let venue_ids: Vec<&str> =
            rankings.venues.iter().map(|venue| venue.gateway_id.as_str()).collect();
        let distinct: BTreeSet<&str> = venue_ids.iter().copied().collect();
        prop_assert_eq!(distinct.len(), venue_ids.len());
        let expected: BTreeSet<&str> = enrolled
            .iter()
            .map(String::as_str)
            .chain(standings.iter().map(|standing| standing.gateway_id.as_str()))
            .collect();
        prop_assert_eq!(distinct, expected);

        // A venue scores its standings plus the bonus for each distinct account served.
        for venue in &rankings.venues {
            let own: Vec<&UserStanding> = standings
                .iter()
                .filter(|standing| standing.gateway_id == venue.gateway_id)
                .collect();
            let served: BTreeSet<&str> =
                own.iter().map(|standing| standing.account_id.as_str()).collect();
            let standings_score: u64 = own
                .iter()
                .map(|standing| {
                    standing.units_allocated * scoring.points_per_unit_allocated
                        + standing.units_used * scoring.points_per_unit_used
                })
                .sum();
            prop_assert_eq!(venue.users_served, served.len() as u64);
            prop_assert_eq!(
                venue.score,
                standings_score + venue.users_served * scoring.venue_points_per_user_served
            );
        }
    }
}
