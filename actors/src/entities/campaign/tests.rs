//! Tests of the campaign entity: replies, what it sends the directory and the winners, and
//! what it persists, driven through `handle` as the host would.

use super::*;
use crate::entities::decode;
use crate::entities::test_support::{audit_actions, handle_payload, handle_request};
use crate::model::campaign::CampaignKind;
use crate::model::campaign::{Eligibility, RankedUser, ScoringRules, WinnerRule};
use crate::model::campaign_directory::CampaignListing;
use crate::model::certification::{Condition, Metric};
use lanmesh_bus::EntityAddress;

const CAMPAIGN: &str = "spring";
const OPENS: u64 = 1_700_000_000_000;
const CLOSES: u64 = OPENS + 7 * 86_400_000;

fn tier_names() -> Vec<String> {
    vec!["bronze".to_owned(), "silver".to_owned(), "gold".to_owned()]
}

fn definition() -> CampaignDefinition {
    CampaignDefinition {
        kind: CampaignKind::Activity,
        title: "Spring activity".to_owned(),
        text: "Play more, win more.".to_owned(),
        enrol_opens_at_ms: OPENS,
        enrol_closes_at_ms: CLOSES,
        eligibility: Eligibility {
            min_tier_opt: Some("silver".to_owned()),
            activity_days: 7,
            activity_opt: Some(Condition::at_least(Metric::ClientLogins, 150)),
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
            top_users: 1,
            top_venues: 1,
            user_reward: "a month of free hours".to_owned(),
            venue_reward: "a new router".to_owned(),
        },
    }
}

fn handle_as(
    state: &mut CampaignState,
    entity_id: &str,
    request: &CampaignRequest,
    now_unix_ms: u64,
) -> (CampaignReply, Effects) {
    handle_request::<CampaignEntity, _, _>(state, entity_id, request, now_unix_ms)
}

fn handle(
    state: &mut CampaignState,
    request: &CampaignRequest,
    now_unix_ms: u64,
) -> (CampaignReply, Effects) {
    handle_as(state, CAMPAIGN, request, now_unix_ms)
}

fn create() -> CampaignRequest {
    CampaignRequest::Create {
        definition: definition(),
        tier_names: tier_names(),
    }
}

fn publish() -> CampaignRequest {
    CampaignRequest::Publish {
        notice_gateways: BTreeSet::from(["g1".to_owned(), "g2".to_owned()]),
    }
}

fn enrol(gateway_id: &str, tier: &str, client_logins: u64) -> CampaignRequest {
    CampaignRequest::EnrolVenue {
        gateway_id: gateway_id.to_owned(),
        tier_opt: Some(tier.to_owned()),
        tier_names: tier_names(),
        figures: WindowFigures {
            client_logins,
            window_days: 7,
            ..WindowFigures::default()
        },
    }
}

fn close() -> CampaignRequest {
    CampaignRequest::Close {
        standings: vec![
            UserStanding {
                account_id: "alice".to_owned(),
                gateway_id: "g1".to_owned(),
                units_allocated: 5,
                units_used: 4,
            },
            UserStanding {
                account_id: "bob".to_owned(),
                gateway_id: "g2".to_owned(),
                units_allocated: 5,
                units_used: 0,
            },
        ],
    }
}

fn directory() -> EntityAddress {
    EntityKind::CampaignDirectory
        .address(CAMPAIGN_DIRECTORY_ID)
        .unwrap()
}

/// The one listing sent to the directory.
#[track_caller]
fn announced(effects: &Effects) -> CampaignListing {
    let [outgoing] = effects.outgoing.as_slice() else {
        panic!("one message to the directory: {:?}", effects.outgoing);
    };
    assert_eq!(outgoing.target, directory());
    match decode(&outgoing.payload).unwrap() {
        CampaignDirectoryRequest::Upsert(listing) => listing,
        other => panic!("not an upsert: {other:?}"),
    }
}

#[track_caller]
fn view_of(reply: CampaignReply) -> CampaignView {
    match reply {
        CampaignReply::View(view) => view,
        other => panic!("not a view: {other:?}"),
    }
}

/// Sends `request` again and checks that nothing new comes of it.
#[track_caller]
fn check_repeat(state: &mut CampaignState, request: &CampaignRequest, expected: &CampaignReply) {
    let before = state.clone();
    let (reply, effects) = handle(state, request, CLOSES + 100);
    assert_eq!(&reply, expected);
    assert!(!effects.state_changed);
    assert!(effects.outgoing.is_empty(), "{:?}", effects.outgoing);
    assert!(effects.audit.is_empty(), "{:?}", effects.audit);
    assert_eq!(*state, before);
}

/// Sends `request`, expects it refused with `expected`, and checks that nothing changed.
#[track_caller]
fn check_refused(state: &mut CampaignState, request: &CampaignRequest, expected: CampaignError) {
    let before = state.clone();
    let (reply, effects) = handle(state, request, OPENS);
    assert_eq!(reply, CampaignReply::Refused(expected));
    assert_eq!(
        effects,
        Effects {
            reply_opt: effects.reply_opt.clone(),
            ..Effects::default()
        }
    );
    assert_eq!(*state, before);
}

#[test]
fn a_campaign_is_created_published_enrolled_and_closed_and_its_winners_rewarded() {
    let mut state = CampaignState::default();

    let (reply, effects) = handle(&mut state, &create(), OPENS - 10);
    let view = view_of(reply);
    assert_eq!(view.campaign_id, CAMPAIGN);
    assert_eq!(view.definition, definition());
    assert_eq!(view.status, CampaignStatus::Draft);
    assert_eq!(view.created_at_unix_ms, OPENS - 10);
    assert!(effects.state_changed);
    let listing = announced(&effects);
    assert_eq!(
        (
            listing.campaign_id.as_str(),
            listing.status,
            listing.campaign_revision
        ),
        (CAMPAIGN, CampaignStatus::Draft, 1)
    );
    assert_eq!(audit_actions(&effects), ["campaign.created"]);
    assert_eq!(
        effects.audit.first().map(|note| note.detail.as_str()),
        Some("kind=activity total_units=100 venue_quota=50")
    );

    let (reply, effects) = handle(&mut state, &publish(), OPENS - 5);
    let view = view_of(reply);
    assert_eq!(view.status, CampaignStatus::Published);
    assert_eq!(view.published_at_unix_ms_opt, Some(OPENS - 5));
    assert!(effects.state_changed);
    let listing = announced(&effects);
    assert_eq!(listing.status, CampaignStatus::Published);
    assert_eq!(
        listing.notice_gateways,
        BTreeSet::from(["g1".to_owned(), "g2".to_owned()])
    );
    assert_eq!(audit_actions(&effects), ["campaign.published"]);

    for gateway_id in ["g1", "g2"] {
        let (reply, effects) = handle(&mut state, &enrol(gateway_id, "gold", 160), OPENS);
        assert_eq!(reply, CampaignReply::VenueEnrolled { quota: 50 });
        assert!(effects.state_changed);
        assert!(effects.outgoing.is_empty(), "enrolment announces nothing");
        assert_eq!(audit_actions(&effects), ["campaign.venue_enrolled"]);
        assert_eq!(
            effects.audit.first().map(|note| note.detail.clone()),
            Some(format!("gateway={gateway_id} quota=50 tier=gold"))
        );
    }

    let (reply, effects) = handle(
        &mut state,
        &CampaignRequest::CheckVenue {
            gateway_id: "g1".to_owned(),
        },
        OPENS + 1,
    );
    assert_eq!(
        reply,
        CampaignReply::VenueChecked {
            quota: 50,
            eligibility: definition().eligibility,
            user_limit: definition().user_limit,
        }
    );
    assert!(!effects.state_changed);

    let (reply, effects) = handle(&mut state, &CampaignRequest::Inspect, OPENS + 2);
    let view = view_of(reply);
    assert_eq!(view.units_granted, 100);
    assert_eq!(view.venues.keys().collect::<Vec<_>>(), ["g1", "g2"]);
    assert!(!effects.state_changed);

    // alice: 5 + 4 * 2 = 13; bob: 5. g1: 13 + 10 = 23; g2: 5 + 10 = 15.
    let (reply, effects) = handle(&mut state, &close(), CLOSES + 1);
    let CampaignReply::Closed(results) = reply else {
        panic!("not closed: {reply:?}");
    };
    assert_eq!(results.closed_at_unix_ms, CLOSES + 1);
    assert_eq!(
        results.user_winners,
        vec![RankedUser {
            account_id: "alice".to_owned(),
            gateway_id: "g1".to_owned(),
            units_allocated: 5,
            units_used: 4,
            score: 13,
            rank: 1,
        }]
    );
    assert!(effects.state_changed);
    assert_eq!(audit_actions(&effects), ["campaign.closed"]);
    let [to_directory, to_user, to_gateway] = effects.outgoing.as_slice() else {
        panic!("directory, user and gateway: {:?}", effects.outgoing);
    };
    assert_eq!(to_directory.target, directory());
    let CampaignDirectoryRequest::Upsert(listing) = decode(&to_directory.payload).unwrap() else {
        panic!("not an upsert");
    };
    assert_eq!(listing.status, CampaignStatus::Closed);

    assert_eq!(to_user.target, EntityKind::User.address("alice").unwrap());
    let expected_user_reward = Reward {
        campaign_id: CAMPAIGN.to_owned(),
        campaign_title: "Spring activity".to_owned(),
        rank: 1,
        score: 13,
        text: "a month of free hours".to_owned(),
        granted_at_unix_ms: CLOSES + 1,
    };
    match decode(&to_user.payload).unwrap() {
        UserRequest::GrantReward { reward } => assert_eq!(reward, expected_user_reward),
        other => panic!("not a reward: {other:?}"),
    }

    assert_eq!(
        to_gateway.target,
        EntityKind::Gateway.address("g1").unwrap()
    );
    let expected_venue_reward = Reward {
        score: 23,
        text: "a new router".to_owned(),
        ..expected_user_reward
    };
    match decode(&to_gateway.payload).unwrap() {
        GatewayRequest::GrantReward { reward } => assert_eq!(reward, expected_venue_reward),
        other => panic!("not a reward: {other:?}"),
    }

    // The persisted state answers the same after a round trip.
    let bytes = rmp_serde::to_vec_named(&state).unwrap();
    let mut restored: CampaignState = rmp_serde::from_slice(&bytes).unwrap();
    let (reply, _) = handle(&mut restored, &CampaignRequest::Inspect, CLOSES + 2);
    assert_eq!(view_of(reply).results_opt, Some(results));
}

#[test]
fn repeated_requests_change_nothing_and_send_nothing() {
    let mut state = CampaignState::default();
    handle(&mut state, &create(), OPENS - 10);
    let (reply, _) = handle(&mut state, &CampaignRequest::Inspect, OPENS - 9);
    check_repeat(&mut state, &create(), &reply);

    let (reply, _) = handle(&mut state, &publish(), OPENS - 5);
    let other_notice = CampaignRequest::Publish {
        notice_gateways: BTreeSet::new(),
    };
    check_repeat(&mut state, &other_notice, &reply);

    let (reply, _) = handle(&mut state, &enrol("g1", "silver", 150), OPENS);
    assert_eq!(reply, CampaignReply::VenueEnrolled { quota: 50 });
    // Even outside the window and no longer eligible: the enrolment stands.
    check_repeat(&mut state, &enrol("g1", "bronze", 0), &reply);

    let (reply, _) = handle(&mut state, &close(), CLOSES + 1);
    check_repeat(
        &mut state,
        &CampaignRequest::Close {
            standings: Vec::new(),
        },
        &reply,
    );
}

#[test]
fn refusals_change_nothing_and_send_nothing() {
    let mut state = CampaignState::default();
    check_refused(
        &mut state,
        &CampaignRequest::Inspect,
        CampaignError::NoSuchCampaign,
    );
    let before = state.clone();
    let (reply, effects) = handle_as(&mut state, "Spring 2025", &create(), OPENS);
    assert_eq!(
        reply,
        CampaignReply::Refused(CampaignError::InvalidId {
            campaign_id: "Spring 2025".to_owned(),
        })
    );
    assert!(!effects.state_changed && effects.outgoing.is_empty());
    assert_eq!(state, before);

    handle(&mut state, &create(), OPENS - 10);
    check_refused(
        &mut state,
        &enrol("g1", "gold", 150),
        CampaignError::NotPublished,
    );
    let mut other = definition();
    other.total_units = 200;
    check_refused(
        &mut state,
        &CampaignRequest::Create {
            definition: other,
            tier_names: tier_names(),
        },
        CampaignError::AlreadyExists,
    );

    handle(&mut state, &publish(), OPENS - 5);
    check_refused(
        &mut state,
        &enrol("g1", "bronze", 100),
        CampaignError::NotEligible {
            reasons: vec![
                "certification tier bronze, at least silver required".to_owned(),
                "client_logins: measured 100, at least 150 required".to_owned(),
            ],
        },
    );
    check_refused(
        &mut state,
        &CampaignRequest::CheckVenue {
            gateway_id: "g1".to_owned(),
        },
        CampaignError::NotEnrolled {
            gateway_id: "g1".to_owned(),
        },
    );
}

#[test]
fn a_payload_that_is_not_a_campaign_request_is_malformed() {
    let mut state = CampaignState::default();
    assert!(matches!(
        handle_payload::<CampaignEntity>(&mut state, CAMPAIGN, b"not msgpack", OPENS),
        Err(HandleError::Malformed { .. })
    ));
}
