//! What a campaign's winner receives (S0 step 13): the same record goes to a winning user's
//! account and to a winning venue's gateway, which keep it and show it to their owner.

use serde::{Deserialize, Serialize};

/// Longest reward text an operator may write, in characters.
pub const MAX_REWARD_TEXT_CHARS: usize = 256;

/// Rewards an account or a gateway keeps, newest kept.
pub const REWARDS_KEPT: usize = 64;

/// One reward for one winner of one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    /// The campaign that granted it; a winner gets at most one reward per campaign, so a
    /// redelivered grant is recognised by this id.
    pub campaign_id: String,
    /// The campaign's title, for display.
    pub campaign_title: String,
    /// The winner's place in the campaign's ranking, from 1.
    pub rank: u32,
    /// The winner's score.
    pub score: u64,
    /// What is granted, as the operator wrote it.
    pub text: String,
    /// When the campaign closed.
    pub granted_at_unix_ms: u64,
}

/// Keeps `reward` in `rewards` (oldest first) unless one of its campaign is already there;
/// forgets the oldest beyond [`REWARDS_KEPT`]. Returns whether it was new.
pub fn keep_reward(rewards: &mut Vec<Reward>, reward: Reward) -> bool {
    if rewards
        .iter()
        .any(|kept| kept.campaign_id == reward.campaign_id)
    {
        return false;
    }
    rewards.push(reward);
    if rewards.len() > REWARDS_KEPT {
        let n_over = rewards.len() - REWARDS_KEPT;
        rewards.drain(..n_over);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reward(campaign_id: &str) -> Reward {
        Reward {
            campaign_id: campaign_id.to_owned(),
            campaign_title: "title".to_owned(),
            rank: 1,
            score: 10,
            text: "a prize".to_owned(),
            granted_at_unix_ms: 5,
        }
    }

    #[test]
    fn a_campaign_rewards_once_and_the_oldest_are_forgotten() {
        let mut rewards = Vec::new();
        assert!(keep_reward(&mut rewards, reward("c0")));
        assert!(!keep_reward(&mut rewards, reward("c0")));
        assert_eq!(rewards.len(), 1);
        for index in 1..=REWARDS_KEPT {
            assert!(keep_reward(&mut rewards, reward(&format!("c{index}"))));
        }
        assert_eq!(rewards.len(), REWARDS_KEPT);
        assert_eq!(
            rewards.first().map(|kept| kept.campaign_id.as_str()),
            Some("c1")
        );
    }
}
