//! Unit and property tests of gateway certification: evaluation tables, validation, JSON.

use super::Metric::{
    ClientLogins, ClientOnlineHours, DistinctAccounts, GatewayDaysOnline, GatewayOnlineHours,
    PeakConcurrentClients,
};
use super::*;
use proptest::prelude::*;

const HOUR_MS: u64 = 3_600_000;

const BRONZE_PERMISSIONS: &[&str] = &["campaign.view"];
const SILVER_PERMISSIONS: &[&str] = &["campaign.enrol", "campaign.view"];
const GOLD_PERMISSIONS: &[&str] = &["campaign.enrol", "campaign.view", "grant.closed_test"];

/// The example policy exactly as an operator would PUT it.
const EXAMPLE_POLICY_JSON: &str = r#"{
  "version": 1,
  "window_days": 7,
  "pass": {
    "any": [
      { "at_least": { "metric": "client_logins", "value": 50 } },
      { "at_least": { "metric": "client_online_hours", "value": 200 } },
      { "at_least": { "metric": "gateway_online_hours", "value": 100 } }
    ]
  },
  "tiers": [
    {
      "name": "bronze",
      "condition": { "at_least": { "metric": "client_logins", "value": 50 } },
      "permissions": ["campaign.view"]
    },
    {
      "name": "silver",
      "condition": { "at_least": { "metric": "client_logins", "value": 100 } },
      "permissions": ["campaign.enrol", "campaign.view"]
    },
    {
      "name": "gold",
      "condition": { "at_least": { "metric": "client_logins", "value": 150 } },
      "permissions": ["campaign.enrol", "campaign.view", "grant.closed_test"]
    }
  ]
}"#;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn permissions(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn tier(name: &str, condition: Condition, granted: &[&str]) -> Tier {
    Tier {
        name: name.to_owned(),
        condition,
        permissions: permissions(granted),
    }
}

/// Bronze from 50 logins, silver from 100, gold from 150; passing needs 50 logins, 200 client
/// hours or 100 gateway hours.
fn example_policy() -> CertificationPolicy {
    CertificationPolicy {
        version: 1,
        window_days: 7,
        pass: Condition::Any(vec![
            Condition::at_least(ClientLogins, 50),
            Condition::at_least(ClientOnlineHours, 200),
            Condition::at_least(GatewayOnlineHours, 100),
        ]),
        tiers: vec![
            tier(
                "bronze",
                Condition::at_least(ClientLogins, 50),
                BRONZE_PERMISSIONS,
            ),
            tier(
                "silver",
                Condition::at_least(ClientLogins, 100),
                SILVER_PERMISSIONS,
            ),
            tier(
                "gold",
                Condition::at_least(ClientLogins, 150),
                GOLD_PERMISSIONS,
            ),
        ],
    }
}

/// `low <= client_logins < high`.
fn logins_range(low: u64, high: u64) -> Condition {
    Condition::All(vec![
        Condition::at_least(ClientLogins, low),
        Condition::below(ClientLogins, high),
    ])
}

/// The example policy with gold capped: 150–200 logins.
fn capped_gold_policy() -> CertificationPolicy {
    let mut policy = example_policy();
    policy.tiers[2].condition = logins_range(150, 200);
    policy
}

/// The example policy with every tier a range: 50–100, 100–150, 150–200 logins.
fn range_tiers_policy() -> CertificationPolicy {
    let mut policy = example_policy();
    policy.tiers = vec![
        tier("bronze", logins_range(50, 100), BRONZE_PERMISSIONS),
        tier("silver", logins_range(100, 150), SILVER_PERMISSIONS),
        tier("gold", logins_range(150, 200), GOLD_PERMISSIONS),
    ];
    policy
}

/// Passing needs the gateway online 5 days, 3 clients at once, and 10 accounts or 200 client
/// hours; the one tier needs 50 logins or 100 gateway hours.
fn venue_policy() -> CertificationPolicy {
    CertificationPolicy {
        version: 4,
        window_days: 7,
        pass: Condition::All(vec![
            Condition::at_least(GatewayDaysOnline, 5),
            Condition::at_least(PeakConcurrentClients, 3),
            Condition::Any(vec![
                Condition::at_least(DistinctAccounts, 10),
                Condition::at_least(ClientOnlineHours, 200),
            ]),
        ]),
        tiers: vec![tier(
            "listed",
            Condition::Any(vec![
                Condition::at_least(ClientLogins, 50),
                Condition::at_least(GatewayOnlineHours, 100),
            ]),
            BRONZE_PERMISSIONS,
        )],
    }
}

/// A full 7-day window with these logins and online hours, other figures zero.
fn figures(
    client_logins: u64,
    client_online_hours: u64,
    gateway_online_hours: u64,
) -> WindowFigures {
    WindowFigures {
        client_logins,
        client_online_ms: client_online_hours * HOUR_MS,
        gateway_online_ms: gateway_online_hours * HOUR_MS,
        window_days: 7,
        ..WindowFigures::default()
    }
}

fn logins(client_logins: u64) -> WindowFigures {
    figures(client_logins, 0, 0)
}

/// Figures that just meet every part of the venue policy (via accounts and logins).
fn venue_figures() -> WindowFigures {
    WindowFigures {
        client_logins: 50,
        distinct_accounts: 10,
        peak_concurrent_clients: 3,
        gateway_days_online: 5,
        window_days: 7,
        ..WindowFigures::default()
    }
}

fn at_least(metric: Metric, required: u64, measured: u64) -> Shortfall {
    Shortfall {
        metric,
        comparison: Comparison::AtLeast,
        required,
        measured,
    }
}

fn below(metric: Metric, required: u64, measured: u64) -> Shortfall {
    Shortfall {
        metric,
        comparison: Comparison::Below,
        required,
        measured,
    }
}

/// The shortfalls of the example policy's `pass` for these figures.
fn example_pass_shortfalls(
    client_logins: u64,
    client_online_hours: u64,
    gateway_online_hours: u64,
) -> Vec<Shortfall> {
    vec![
        at_least(ClientLogins, 50, client_logins),
        at_least(ClientOnlineHours, 200, client_online_hours),
        at_least(GatewayOnlineHours, 100, gateway_online_hours),
    ]
}

fn certified(tier: &str, granted: &[&str], policy_version: u64) -> CertificationOutcome {
    CertificationOutcome::Certified {
        tier: tier.to_owned(),
        permissions: permissions(granted),
        policy_version,
    }
}

fn rejected(reasons: Vec<Shortfall>, policy_version: u64) -> CertificationOutcome {
    CertificationOutcome::Rejected {
        reasons,
        policy_version,
    }
}

fn check(policy: &CertificationPolicy, figures: WindowFigures, expected: &CertificationOutcome) {
    assert_eq!(
        &evaluate(policy, &figures),
        expected,
        "figures: {figures:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

#[test]
fn example_policy_tier_boundaries() {
    let policy = example_policy();
    let bronze = certified("bronze", BRONZE_PERMISSIONS, 1);
    let silver = certified("silver", SILVER_PERMISSIONS, 1);
    let gold = certified("gold", GOLD_PERMISSIONS, 1);
    let cases = [
        (logins(49), rejected(example_pass_shortfalls(49, 0, 0), 1)),
        (logins(50), bronze.clone()),
        (logins(99), bronze),
        (logins(100), silver.clone()),
        (logins(149), silver),
        (logins(150), gold.clone()),
        (logins(199), gold.clone()),
        (logins(200), gold.clone()),
        (logins(u64::MAX), gold),
    ];
    for (figures, expected) in cases {
        check(&policy, figures, &expected);
    }
}

#[test]
fn capped_gold_falls_back_to_silver_from_200_logins() {
    let policy = capped_gold_policy();
    let silver = certified("silver", SILVER_PERMISSIONS, 1);
    let gold = certified("gold", GOLD_PERMISSIONS, 1);
    let cases = [
        (logins(149), silver.clone()),
        (logins(150), gold.clone()),
        (logins(199), gold),
        (logins(200), silver.clone()),
        (logins(201), silver),
    ];
    for (figures, expected) in cases {
        check(&policy, figures, &expected);
    }
}

#[test]
fn range_tiers_boundaries_name_only_the_failing_end_of_the_range() {
    let policy = range_tiers_policy();
    let bronze = certified("bronze", BRONZE_PERMISSIONS, 1);
    let silver = certified("silver", SILVER_PERMISSIONS, 1);
    let gold = certified("gold", GOLD_PERMISSIONS, 1);
    let cases = [
        (logins(49), rejected(example_pass_shortfalls(49, 0, 0), 1)),
        // Passes through client hours but is below bronze's range: only its lower end fails.
        (
            figures(49, 200, 0),
            rejected(vec![at_least(ClientLogins, 50, 49)], 1),
        ),
        (logins(50), bronze.clone()),
        (logins(99), bronze),
        (logins(100), silver.clone()),
        (logins(149), silver),
        (logins(150), gold.clone()),
        (logins(199), gold),
        // Above every range: the lowest tier's upper end is the one failing member.
        (
            logins(200),
            rejected(vec![below(ClientLogins, 100, 200)], 1),
        ),
    ];
    for (figures, expected) in cases {
        check(&policy, figures, &expected);
    }
}

#[test]
fn pass_holds_through_each_alternative_of_any() {
    let policy = example_policy();
    // Rejections that name bronze's shortfall, not pass's, show that pass held.
    let below_bronze = rejected(vec![at_least(ClientLogins, 50, 10)], 1);
    let cases = [
        (logins(50), certified("bronze", BRONZE_PERMISSIONS, 1)),
        (figures(10, 200, 0), below_bronze.clone()),
        (figures(10, 0, 100), below_bronze),
        (
            figures(10, 199, 99),
            rejected(example_pass_shortfalls(10, 199, 99), 1),
        ),
    ];
    for (figures, expected) in cases {
        check(&policy, figures, &expected);
    }
}

#[test]
fn all_names_only_its_failing_members_and_any_names_every_alternative() {
    let policy = venue_policy();
    let listed = certified("listed", BRONZE_PERMISSIONS, 4);
    let base = venue_figures();
    let cases = [
        (base, listed.clone()),
        (
            WindowFigures {
                gateway_days_online: 4,
                ..base
            },
            rejected(vec![at_least(GatewayDaysOnline, 5, 4)], 4),
        ),
        (
            WindowFigures {
                gateway_days_online: 4,
                peak_concurrent_clients: 2,
                ..base
            },
            rejected(
                vec![
                    at_least(GatewayDaysOnline, 5, 4),
                    at_least(PeakConcurrentClients, 3, 2),
                ],
                4,
            ),
        ),
        // The nested any fails: both of its alternatives are named.
        (
            WindowFigures {
                distinct_accounts: 9,
                ..base
            },
            rejected(
                vec![
                    at_least(DistinctAccounts, 10, 9),
                    at_least(ClientOnlineHours, 200, 0),
                ],
                4,
            ),
        ),
        // The nested any holds through its second alternative.
        (
            WindowFigures {
                distinct_accounts: 9,
                client_online_ms: 200 * HOUR_MS,
                ..base
            },
            listed.clone(),
        ),
        (
            WindowFigures {
                gateway_days_online: 4,
                distinct_accounts: 9,
                ..base
            },
            rejected(
                vec![
                    at_least(GatewayDaysOnline, 5, 4),
                    at_least(DistinctAccounts, 10, 9),
                    at_least(ClientOnlineHours, 200, 0),
                ],
                4,
            ),
        ),
        // Pass holds, the tier's any fails: both alternatives are named.
        (
            WindowFigures {
                client_logins: 49,
                ..base
            },
            rejected(
                vec![
                    at_least(ClientLogins, 50, 49),
                    at_least(GatewayOnlineHours, 100, 0),
                ],
                4,
            ),
        ),
        (
            WindowFigures {
                client_logins: 49,
                gateway_online_ms: 100 * HOUR_MS,
                ..base
            },
            listed,
        ),
    ];
    for (figures, expected) in cases {
        check(&policy, figures, &expected);
    }
}

#[test]
fn an_empty_window_is_rejected_with_every_shortfall_of_pass() {
    let empty = WindowFigures::default();
    check(
        &example_policy(),
        empty,
        &rejected(example_pass_shortfalls(0, 0, 0), 1),
    );
    check(
        &venue_policy(),
        empty,
        &rejected(
            vec![
                at_least(GatewayDaysOnline, 5, 0),
                at_least(PeakConcurrentClients, 3, 0),
                at_least(DistinctAccounts, 10, 0),
                at_least(ClientOnlineHours, 200, 0),
            ],
            4,
        ),
    );
}

#[test]
fn passing_without_reaching_a_tier_is_rejected_with_the_lowest_tier_shortfalls() {
    let outcome = evaluate(&example_policy(), &figures(10, 200, 0));
    assert_eq!(outcome, rejected(vec![at_least(ClientLogins, 50, 10)], 1));
    assert_eq!(
        outcome.reasons_text(),
        ["client_logins: measured 10, at least 50 required"]
    );
}

#[test]
fn online_time_is_floored_to_whole_hours() {
    let almost = WindowFigures {
        client_online_ms: 200 * HOUR_MS - 1,
        gateway_online_ms: 100 * HOUR_MS - 1,
        ..WindowFigures::default()
    };
    assert_eq!(almost.measured(ClientOnlineHours), 199);
    assert_eq!(almost.measured(GatewayOnlineHours), 99);
    check(
        &example_policy(),
        almost,
        &rejected(example_pass_shortfalls(0, 199, 99), 1),
    );
    let exact = WindowFigures {
        client_online_ms: 200 * HOUR_MS,
        ..almost
    };
    check(
        &example_policy(),
        exact,
        &rejected(vec![at_least(ClientLogins, 50, 0)], 1),
    );
}

#[test]
fn repeated_shortfalls_are_listed_once() {
    let condition = Condition::All(vec![
        Condition::at_least(ClientLogins, 50),
        Condition::Any(vec![
            Condition::at_least(ClientLogins, 50),
            Condition::at_least(ClientOnlineHours, 200),
        ]),
    ]);
    assert_eq!(
        condition.assess(&logins(10)),
        Err(vec![
            at_least(ClientLogins, 50, 10),
            at_least(ClientOnlineHours, 200, 0),
        ])
    );
    assert!(!condition.holds(&logins(10)));
    assert_eq!(condition.assess(&figures(50, 0, 0)), Ok(()));
    assert!(condition.holds(&figures(50, 0, 0)));
}

#[test]
fn empty_combinations_behave_like_empty_and_and_or() {
    let empty_window = WindowFigures::default();
    assert_eq!(Condition::All(Vec::new()).assess(&empty_window), Ok(()));
    assert_eq!(
        Condition::Any(Vec::new()).assess(&empty_window),
        Err(Vec::new())
    );
}

#[test]
fn a_policy_without_tiers_rejects_a_passing_gateway_without_reasons() {
    let mut policy = example_policy();
    policy.tiers.clear();
    check(&policy, logins(500), &rejected(Vec::new(), 1));
}

#[test]
fn reasons_read_as_sentences() {
    let outcome = rejected(
        vec![
            at_least(ClientLogins, 50, 42),
            below(ClientLogins, 200, 230),
            at_least(GatewayDaysOnline, 7, 6),
        ],
        3,
    );
    assert_eq!(
        outcome.reasons_text(),
        [
            "client_logins: measured 42, at least 50 required",
            "client_logins: measured 230, below 200 required",
            "gateway_days_online: measured 6, at least 7 required",
        ]
    );
    assert_eq!(outcome.policy_version(), 3);
    let certified = certified("gold", GOLD_PERMISSIONS, 2);
    assert!(certified.reasons_text().is_empty());
    assert_eq!(certified.policy_version(), 2);
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn check_validation(policy: &CertificationPolicy, expected: Result<(), &str>) {
    assert_eq!(
        policy.validate().map_err(|error| error.to_string()),
        expected.map_err(str::to_owned),
        "policy: {policy:?}"
    );
}

/// The example policy, changed.
fn changed(change: impl FnOnce(&mut CertificationPolicy)) -> CertificationPolicy {
    let mut policy = example_policy();
    change(&mut policy);
    policy
}

/// A comparison wrapped in `all`s until it is `depth` deep.
fn nested(depth: usize) -> Condition {
    let mut condition = Condition::at_least(ClientLogins, 50);
    for _ in 1..depth {
        condition = Condition::All(vec![condition]);
    }
    condition
}

fn comparisons(n_comparisons: u64) -> Vec<Condition> {
    (0..n_comparisons)
        .map(|value| Condition::at_least(ClientLogins, value))
        .collect()
}

fn numbered_tiers(n_tiers: u64) -> Vec<Tier> {
    (0..n_tiers)
        .map(|index| {
            tier(
                &format!("tier{index}"),
                Condition::at_least(ClientLogins, index),
                &[],
            )
        })
        .collect()
}

fn numbered_permissions(n_permissions: usize) -> BTreeSet<String> {
    (0..n_permissions)
        .map(|index| format!("permission.{index}"))
        .collect()
}

#[test]
fn validation_accepts_every_limit() {
    let cases = [
        example_policy(),
        changed(|policy| policy.window_days = 1),
        changed(|policy| policy.window_days = 31),
        changed(|policy| policy.tiers = numbered_tiers(1)),
        changed(|policy| policy.tiers = numbered_tiers(16)),
        changed(|policy| policy.tiers[0].name = "a".repeat(32)),
        changed(|policy| policy.tiers[0].name = "tier_2-b".to_owned()),
        changed(|policy| policy.tiers[0].permissions = permissions(&[&"p".repeat(64)])),
        changed(|policy| policy.tiers[0].permissions = permissions(&["a-b_c.9"])),
        changed(|policy| policy.tiers[0].permissions = numbered_permissions(32)),
        changed(|policy| policy.tiers[0].permissions.clear()),
        changed(|policy| policy.pass = nested(8)),
        changed(|policy| policy.pass = Condition::Any(comparisons(64))),
        changed(|policy| policy.pass = Condition::below(ClientLogins, MAX_THRESHOLD)),
    ];
    for policy in &cases {
        check_validation(policy, Ok(()));
    }
}

#[test]
fn validation_names_the_window_and_tier_count() {
    let cases = [
        (
            changed(|policy| policy.window_days = 0),
            "window_days: 0 is not within 1 to 31",
        ),
        (
            changed(|policy| policy.window_days = 32),
            "window_days: 32 is not within 1 to 31",
        ),
        (
            changed(|policy| policy.tiers.clear()),
            "tiers: 0 tiers, must be 1 to 16",
        ),
        (
            changed(|policy| policy.tiers = numbered_tiers(17)),
            "tiers: 17 tiers, must be 1 to 16",
        ),
    ];
    for (policy, expected) in &cases {
        check_validation(policy, Err(expected));
    }
}

#[test]
fn validation_names_the_offending_tier_name_or_permission() {
    let long_name = "a".repeat(33);
    let long_permission = "p".repeat(65);
    let cases = [
        (
            changed(|policy| policy.tiers[1].name = String::new()),
            r#"tiers[1].name: "" must be 1 to 32 characters of a-z, 0-9, _ and -"#.to_owned(),
        ),
        (
            changed(|policy| policy.tiers[1].name.clone_from(&long_name)),
            format!(r#"tiers[1].name: "{long_name}" must be 1 to 32 characters of a-z, 0-9, _ and -"#),
        ),
        (
            changed(|policy| policy.tiers[2].name = "Gold".to_owned()),
            r#"tiers[2].name: "Gold" must be 1 to 32 characters of a-z, 0-9, _ and -"#.to_owned(),
        ),
        (
            changed(|policy| policy.tiers[2].name = "gold.tier".to_owned()),
            r#"tiers[2].name: "gold.tier" must be 1 to 32 characters of a-z, 0-9, _ and -"#
                .to_owned(),
        ),
        (
            changed(|policy| policy.tiers[2].name = "bronze".to_owned()),
            r#"tiers[2].name: "bronze" is already the name of tiers[0]"#.to_owned(),
        ),
        (
            changed(|policy| policy.tiers[0].permissions = numbered_permissions(33)),
            "tiers[0].permissions: 33 permissions, at most 32".to_owned(),
        ),
        (
            changed(|policy| policy.tiers[1].permissions = permissions(&[""])),
            r#"tiers[1].permissions: "" must be 1 to 64 characters of a-z, 0-9, ., _ and -"#
                .to_owned(),
        ),
        (
            changed(|policy| policy.tiers[1].permissions = permissions(&[&long_permission])),
            format!(
                r#"tiers[1].permissions: "{long_permission}" must be 1 to 64 characters of a-z, 0-9, ., _ and -"#
            ),
        ),
        (
            changed(|policy| policy.tiers[1].permissions = permissions(&["Campaign.view"])),
            r#"tiers[1].permissions: "Campaign.view" must be 1 to 64 characters of a-z, 0-9, ., _ and -"#
                .to_owned(),
        ),
        (
            changed(|policy| policy.tiers[1].permissions = permissions(&["campaign/view"])),
            r#"tiers[1].permissions: "campaign/view" must be 1 to 64 characters of a-z, 0-9, ., _ and -"#
                .to_owned(),
        ),
    ];
    for (policy, expected) in &cases {
        check_validation(policy, Err(expected));
    }
}

#[test]
fn validation_names_the_offending_condition() {
    let ninth_level = ".all[0]".repeat(8);
    let cases = [
        (
            changed(|policy| policy.pass = nested(9)),
            format!("pass{ninth_level}: conditions nest more than 8 deep"),
        ),
        (
            changed(|policy| policy.tiers[1].condition = nested(9)),
            format!("tiers[1].condition{ninth_level}: conditions nest more than 8 deep"),
        ),
        (
            changed(|policy| policy.pass = Condition::Any(comparisons(65))),
            "pass: 65 comparisons, at most 64".to_owned(),
        ),
        // Comparisons count over every nesting level.
        (
            changed(|policy| {
                policy.tiers[0].condition = Condition::All(vec![
                    Condition::Any(comparisons(32)),
                    Condition::Any(comparisons(33)),
                ]);
            }),
            "tiers[0].condition: 65 comparisons, at most 64".to_owned(),
        ),
        (
            changed(|policy| policy.pass = Condition::All(Vec::new())),
            "pass.all: must list at least one condition".to_owned(),
        ),
        (
            changed(|policy| {
                policy.tiers[1].condition = Condition::All(vec![
                    Condition::at_least(ClientLogins, 100),
                    Condition::Any(Vec::new()),
                ]);
            }),
            "tiers[1].condition.all[1].any: must list at least one condition".to_owned(),
        ),
        (
            changed(|policy| {
                policy.pass = Condition::Any(vec![
                    Condition::at_least(ClientLogins, 50),
                    Condition::at_least(ClientOnlineHours, MAX_THRESHOLD + 1),
                ]);
            }),
            "pass.any[1].at_least.value: 1000000000001 is above the largest threshold 1000000000000"
                .to_owned(),
        ),
        (
            changed(|policy| policy.tiers[2].condition = logins_range(150, MAX_THRESHOLD + 1)),
            "tiers[2].condition.all[1].below.value: 1000000000001 is above the largest threshold \
             1000000000000"
                .to_owned(),
        ),
    ];
    for (policy, expected) in &cases {
        check_validation(policy, Err(expected));
    }
}

// ---------------------------------------------------------------------------------------------
// JSON and MessagePack
// ---------------------------------------------------------------------------------------------

#[test]
fn the_example_policy_serializes_to_the_operator_json_and_back() {
    let policy = example_policy();
    let written: serde_json::Value = serde_json::from_str(EXAMPLE_POLICY_JSON).unwrap();
    assert_eq!(serde_json::to_value(&policy).unwrap(), written);
    let json = serde_json::to_string(&policy).unwrap();
    assert_eq!(
        serde_json::from_str::<CertificationPolicy>(&json).unwrap(),
        policy
    );
    let packed = rmp_serde::to_vec_named(&policy).unwrap();
    assert_eq!(
        rmp_serde::from_slice::<CertificationPolicy>(&packed).unwrap(),
        policy
    );
}

#[test]
fn an_operator_policy_parses_validates_and_evaluates() {
    let policy: CertificationPolicy = serde_json::from_str(EXAMPLE_POLICY_JSON).unwrap();
    assert_eq!(policy, example_policy());
    assert_eq!(policy.validate(), Ok(()));
    check(
        &policy,
        logins(120),
        &certified("silver", SILVER_PERMISSIONS, 1),
    );
    check(
        &policy,
        figures(10, 200, 0),
        &rejected(vec![at_least(ClientLogins, 50, 10)], 1),
    );
}

#[test]
fn a_tier_without_permissions_grants_none() {
    let json = r#"{"version": 2, "window_days": 3,
        "pass": {"at_least": {"metric": "gateway_days_online", "value": 3}},
        "tiers": [{"name": "basic", "condition": {"all": [
            {"at_least": {"metric": "peak_concurrent_clients", "value": 5}},
            {"at_least": {"metric": "distinct_accounts", "value": 20}}]}}]}"#;
    let policy: CertificationPolicy = serde_json::from_str(json).unwrap();
    assert_eq!(policy.validate(), Ok(()));
    assert!(policy.tiers[0].permissions.is_empty());
}

#[test]
fn operator_typos_are_refused() {
    let cases = [
        (
            EXAMPLE_POLICY_JSON.replace(
                r#""permissions": ["campaign.view"]"#,
                r#""permisions": ["campaign.view"]"#,
            ),
            "unknown field `permisions`",
        ),
        (
            EXAMPLE_POLICY_JSON.replace(r#""window_days""#, r#""window""#),
            "unknown field `window`",
        ),
        (
            EXAMPLE_POLICY_JSON.replace(r#""value": 200"#, r#""value": 200, "unit": "h""#),
            "unknown field `unit`",
        ),
        (
            EXAMPLE_POLICY_JSON.replace(r#""client_online_hours""#, r#""client_online_ms""#),
            "unknown variant `client_online_ms`",
        ),
        (
            EXAMPLE_POLICY_JSON.replace(r#""any""#, r#""either""#),
            "unknown variant `either`",
        ),
        (
            EXAMPLE_POLICY_JSON.replace(r#""value": 50"#, r#""value": -50"#),
            "invalid value: integer `-50`",
        ),
    ];
    for (json, expected) in &cases {
        let error = serde_json::from_str::<CertificationPolicy>(json).unwrap_err();
        assert!(
            error.to_string().contains(expected),
            "{error} should contain {expected}"
        );
    }
}

#[test]
fn outcomes_have_a_readable_json_form() {
    let cases = [
        (
            certified("silver", SILVER_PERMISSIONS, 1),
            r#"{"certified":{"tier":"silver","permissions":["campaign.enrol","campaign.view"],"policy_version":1}}"#,
        ),
        (
            rejected(vec![at_least(ClientLogins, 50, 10)], 1),
            r#"{"rejected":{"reasons":[{"metric":"client_logins","comparison":"at_least","required":50,"measured":10}],"policy_version":1}}"#,
        ),
    ];
    for (outcome, expected) in &cases {
        assert_eq!(&serde_json::to_string(outcome).unwrap(), expected);
        let packed = rmp_serde::to_vec_named(outcome).unwrap();
        assert_eq!(
            &rmp_serde::from_slice::<CertificationOutcome>(&packed).unwrap(),
            outcome
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn arbitrary_metric() -> impl Strategy<Value = Metric> {
    prop::sample::select(Metric::ALL.to_vec())
}

/// Conditions with thresholds up to 600; `below` comparisons only when `with_below`.
fn arbitrary_condition(with_below: bool) -> BoxedStrategy<Condition> {
    let at_least = (arbitrary_metric(), 0..=600_u64)
        .prop_map(|(metric, value)| Condition::at_least(metric, value));
    let comparison = if with_below {
        prop_oneof![
            at_least,
            (arbitrary_metric(), 0..=600_u64)
                .prop_map(|(metric, value)| Condition::below(metric, value)),
        ]
        .boxed()
    } else {
        at_least.boxed()
    };
    comparison
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(Condition::All),
                prop::collection::vec(inner, 1..4).prop_map(Condition::Any),
            ]
        })
        .boxed()
}

fn arbitrary_policy(with_below: bool) -> impl Strategy<Value = CertificationPolicy> {
    (
        any::<u64>(),
        MIN_WINDOW_DAYS..=MAX_WINDOW_DAYS,
        arbitrary_condition(with_below),
        prop::collection::vec(arbitrary_condition(with_below), 1..=5),
    )
        .prop_map(
            |(version, window_days, pass, tier_conditions)| CertificationPolicy {
                version,
                window_days,
                pass,
                tiers: tier_conditions
                    .into_iter()
                    .enumerate()
                    .map(|(index, condition)| {
                        tier(
                            &format!("tier{index}"),
                            condition,
                            &[&format!("perm.{index}")],
                        )
                    })
                    .collect(),
            },
        )
}

/// Figures whose counts and hours go up to `max_count`.
fn arbitrary_figures(max_count: u64) -> impl Strategy<Value = WindowFigures> {
    (
        (0..=max_count, 0..=max_count, 0..=max_count),
        (0..=max_count * HOUR_MS, 0..=max_count * HOUR_MS),
        (0..=31_u32, 0..=31_u32),
    )
        .prop_map(
            |(
                (client_logins, distinct_accounts, peak_concurrent_clients),
                (client_online_ms, gateway_online_ms),
                (gateway_days_online, window_days),
            )| WindowFigures {
                client_logins,
                distinct_accounts,
                peak_concurrent_clients,
                client_online_ms,
                gateway_online_ms,
                gateway_days_online,
                window_days,
            },
        )
}

fn raised(figures: WindowFigures, raise: WindowFigures) -> WindowFigures {
    WindowFigures {
        client_logins: figures.client_logins.saturating_add(raise.client_logins),
        distinct_accounts: figures
            .distinct_accounts
            .saturating_add(raise.distinct_accounts),
        peak_concurrent_clients: figures
            .peak_concurrent_clients
            .saturating_add(raise.peak_concurrent_clients),
        client_online_ms: figures
            .client_online_ms
            .saturating_add(raise.client_online_ms),
        gateway_online_ms: figures
            .gateway_online_ms
            .saturating_add(raise.gateway_online_ms),
        gateway_days_online: figures
            .gateway_days_online
            .saturating_add(raise.gateway_days_online),
        window_days: figures.window_days.saturating_add(raise.window_days),
    }
}

/// 0 when rejected, else the tier's position counted from 1.
fn tier_rank(policy: &CertificationPolicy, outcome: &CertificationOutcome) -> usize {
    match outcome {
        CertificationOutcome::Rejected { .. } => 0,
        CertificationOutcome::Certified { tier, .. } => {
            policy
                .tiers
                .iter()
                .position(|candidate| &candidate.name == tier)
                .unwrap()
                + 1
        }
    }
}

proptest! {
    #[test]
    fn raising_figures_never_lowers_the_tier_of_an_at_least_policy(
        policy in arbitrary_policy(false),
        figures in arbitrary_figures(700),
        raise in arbitrary_figures(200),
    ) {
        let before = evaluate(&policy, &figures);
        let after = evaluate(&policy, &raised(figures, raise));
        prop_assert!(
            tier_rank(&policy, &after) >= tier_rank(&policy, &before),
            "before: {:?}, after: {:?}", before, after
        );
    }

    #[test]
    fn outcomes_agree_with_the_conditions(
        policy in arbitrary_policy(true),
        figures in arbitrary_figures(700),
    ) {
        let outcome = evaluate(&policy, &figures);
        prop_assert_eq!(outcome.policy_version(), policy.version);
        match &outcome {
            CertificationOutcome::Certified { tier, permissions, .. } => {
                let rank = tier_rank(&policy, &outcome);
                prop_assert!(policy.pass.holds(&figures));
                prop_assert!(policy.tiers[rank - 1].condition.holds(&figures));
                prop_assert_eq!(permissions, &policy.tiers[rank - 1].permissions);
                prop_assert_eq!(tier, &policy.tiers[rank - 1].name);
                prop_assert!(policy.tiers[rank..].iter().all(|higher| !higher.condition.holds(&figures)));
            }
            CertificationOutcome::Rejected { reasons, .. } => {
                prop_assert!(!reasons.is_empty());
                prop_assert_eq!(reasons.iter().collect::<BTreeSet<_>>().len(), reasons.len());
                for reason in reasons {
                    prop_assert_eq!(reason.measured, figures.measured(reason.metric));
                    prop_assert!(!reason.comparison.holds(reason.measured, reason.required));
                }
            }
        }
    }

    #[test]
    fn policies_round_trip_through_json_and_messagepack(policy in arbitrary_policy(true)) {
        let json = serde_json::to_string(&policy).unwrap();
        prop_assert_eq!(&serde_json::from_str::<CertificationPolicy>(&json).unwrap(), &policy);
        let packed = rmp_serde::to_vec_named(&policy).unwrap();
        prop_assert_eq!(&rmp_serde::from_slice::<CertificationPolicy>(&packed).unwrap(), &policy);
    }
}
