//! The claim-book entity of one (campaign, account): the wire messages and the behaviour that
//! runs the [claim book model](crate::model::claim_book) and sends its answers back to the
//! ledger that asked. Its id is [`claim_id`], so every venue's ledger asks the same book.

use crate::entities::ledger::LedgerRequest;
use crate::entities::{decode_request, encode};
use crate::host::behavior::{Effects, EntityBehavior, HandleError, IncomingMessage, Outgoing};
use crate::model::claim_book::{ClaimBook, ClaimBookError, ClaimMessage, ClaimState, claim_id};
use crate::model::entity_kind::EntityKind;
use crate::model::ledger::ledger_id;
use serde::{Deserialize, Serialize};

/// A request to a claim-book entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimBookRequest {
    /// A ledger's message about one of its transfers.
    Ledger(ClaimMessage),
    /// Where the claim stands (for operators and tests).
    Inspect,
}

/// A claim-book entity's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimBookEntityReply {
    /// Handled (the answer, if any, went to the ledger).
    Done,
    /// Where the claim stands.
    State(ClaimState),
    /// The message belongs to another book.
    Refused(ClaimBookError),
}

/// The claim-book behaviour; its state is `None` until a ledger first writes to it.
#[derive(Debug)]
pub struct ClaimBookEntity;

impl EntityBehavior for ClaimBookEntity {
    const KIND: EntityKind = EntityKind::ClaimBook;
    type State = Option<ClaimBook>;

    fn handle(
        state: &mut Option<ClaimBook>,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: ClaimBookRequest = decode_request(message)?;
        let mut effects = Effects::default();
        let reply = match request {
            ClaimBookRequest::Inspect => ClaimBookEntityReply::State(
                state
                    .as_ref()
                    .map_or(ClaimState::Free, |book| book.state().clone()),
            ),
            ClaimBookRequest::Ledger(claim_message) => {
                let transfer = claim_message.transfer().clone();
                let book_claim_id = claim_id(&transfer.campaign_id, &transfer.account_id);
                if book_claim_id != message.entity_id {
                    ClaimBookEntityReply::Refused(ClaimBookError::WrongClaim {
                        claim_id: message.entity_id.to_owned(),
                        message_claim_id: book_claim_id,
                    })
                } else {
                    let book = state.get_or_insert_with(|| {
                        ClaimBook::new(transfer.campaign_id.clone(), transfer.account_id.clone())
                    });
                    let before = book.clone();
                    match book.handle(&claim_message, message.now_unix_ms) {
                        Ok(answer_opt) => {
                            effects.state_changed = *book != before;
                            if let Some(answer) = answer_opt {
                                let ledger = ledger_id(&transfer.campaign_id, &transfer.gateway_id);
                                let target =
                                    EntityKind::Ledger.address(ledger).map_err(|error| {
                                        HandleError::Malformed {
                                            reason: error.to_string(),
                                        }
                                    })?;
                                effects.outgoing.push(Outgoing {
                                    target,
                                    payload: encode(&LedgerRequest::ClaimAnswer(answer))?,
                                });
                            }
                            ClaimBookEntityReply::Done
                        }
                        Err(error) => ClaimBookEntityReply::Refused(error),
                    }
                }
            }
        };
        if let ClaimBookEntityReply::Refused(error) = &reply {
            tracing::warn!(claim_book = message.entity_id, error = %error, "ledger message for another claim book");
        }
        effects.reply_opt = Some(encode(&reply)?);
        Ok(effects)
    }
}

#[cfg(test)]
mod tests;
