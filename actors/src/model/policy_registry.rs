//! The certification policy in force (S0 step 4), as operators set it: each replacement must
//! be valid and carry a greater version than the one it replaces, so every certification
//! result names exactly the policy that decided it. The last replaced policies are kept.

use crate::model::certification::{CertificationPolicy, PolicyError};
use serde::{Deserialize, Serialize};

/// Replaced policies kept for reference.
pub const POLICIES_KEPT: usize = 16;

/// The policy in force and the ones before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRegistry {
    /// The policy in force.
    pub current_opt: Option<CertificationPolicy>,
    /// Earlier policies, oldest first.
    pub earlier: Vec<CertificationPolicy>,
}

/// Why a policy was not put in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyChangeError {
    /// The policy does not validate.
    Invalid(PolicyError),
    /// The version is not greater than the one in force.
    VersionNotNewer {
        /// The version in force.
        current: u64,
        /// The version given.
        given: u64,
    },
}

impl PolicyRegistry {
    /// Puts `policy` in force.
    pub fn replace(&mut self, policy: CertificationPolicy) -> Result<(), PolicyChangeError> {
        policy.validate().map_err(PolicyChangeError::Invalid)?;
        if let Some(current) = &self.current_opt
            && policy.version <= current.version
        {
            return Err(PolicyChangeError::VersionNotNewer {
                current: current.version,
                given: policy.version,
            });
        }
        if let Some(replaced) = self.current_opt.replace(policy) {
            self.earlier.push(replaced);
            if self.earlier.len() > POLICIES_KEPT {
                self.earlier.remove(0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::certification::{Condition, Metric, Tier};

    fn policy(version: u64, window_days: u32) -> CertificationPolicy {
        CertificationPolicy {
            version,
            window_days,
            pass: Condition::at_least(Metric::ClientLogins, 1),
            tiers: vec![Tier {
                name: "bronze".to_owned(),
                condition: Condition::at_least(Metric::ClientLogins, 1),
                permissions: Default::default(),
            }],
        }
    }

    #[test]
    fn versions_only_grow_and_invalid_policies_are_refused() {
        let mut registry = PolicyRegistry::default();
        registry.replace(policy(1, 7)).unwrap();
        assert_eq!(
            registry.replace(policy(1, 7)),
            Err(PolicyChangeError::VersionNotNewer {
                current: 1,
                given: 1
            })
        );
        assert!(matches!(
            registry.replace(policy(2, 0)),
            Err(PolicyChangeError::Invalid(_))
        ));
        registry.replace(policy(5, 14)).unwrap();
        assert_eq!(registry.current_opt.as_ref().map(|p| p.version), Some(5));
        assert_eq!(registry.earlier, vec![policy(1, 7)]);
    }
}
