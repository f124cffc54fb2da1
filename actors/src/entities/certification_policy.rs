//! The certification-policy entity: operators put a new policy in force through it, and every
//! certification reads the policy in force from it.

use crate::entities::{decode_request, encode};
use crate::host::behavior::{AuditNote, Effects, EntityBehavior, HandleError, IncomingMessage};
use crate::model::certification::CertificationPolicy;
use crate::model::entity_kind::EntityKind;
use crate::model::policy_registry::{PolicyChangeError, PolicyRegistry};
use serde::{Deserialize, Serialize};

/// A request to the certification-policy entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyRequest {
    /// Put this policy in force.
    Replace(CertificationPolicy),
    /// The policy in force.
    Current,
}

/// Its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyReply {
    /// The policy in force, if any.
    Current(Option<CertificationPolicy>),
    /// Refused.
    Refused(PolicyChangeError),
}

/// The certification-policy behaviour.
#[derive(Debug)]
pub struct CertificationPolicyEntity;

impl EntityBehavior for CertificationPolicyEntity {
    const KIND: EntityKind = EntityKind::CertificationPolicy;
    type State = PolicyRegistry;

    fn handle(
        state: &mut PolicyRegistry,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: PolicyRequest = decode_request(message)?;
        let mut effects = Effects::default();
        let reply = match request {
            PolicyRequest::Replace(policy) => {
                let version = policy.version;
                match state.replace(policy) {
                    Ok(()) => {
                        effects.state_changed = true;
                        effects.audit.push(AuditNote {
                            action: "certification.policy_replaced".to_owned(),
                            detail: format!("version={version}"),
                        });
                        PolicyReply::Current(state.current_opt.clone())
                    }
                    Err(error) => PolicyReply::Refused(error),
                }
            }
            PolicyRequest::Current => PolicyReply::Current(state.current_opt.clone()),
        };
        effects.reply_opt = Some(encode(&reply)?);
        Ok(effects)
    }
}
