//! The offer-cell entity (S4 step 5): the open share offers listed in one geohash cell, kept
//! by their share entities (listed while offered, withdrawn otherwise) and asked by the edge for
//! the offers within range of a requester. Its id is the cell's geohash.

use crate::entities::{decode_request, encode};
use crate::host::behavior::{Effects, EntityBehavior, HandleError, IncomingMessage};
use crate::model::entity_kind::EntityKind;
use crate::model::offer_cell::{ListedOffer, OfferCell, OfferMatch, ProximityQuery};
use serde::{Deserialize, Serialize};

/// A request to an offer cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferCellRequest {
    /// List (or relist) an offer (sent by its share entity).
    List(ListedOffer),
    /// Withdraw an offer (sent by its share entity).
    Unlist {
        /// The share.
        share_id: String,
    },
    /// The offers in this cell matching the query, best first.
    Query(ProximityQuery),
}

/// An offer cell's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferCellReply {
    /// Done.
    Done,
    /// The offers found, best first.
    Offers(Vec<OfferMatch>),
    /// Refused (the cell is full).
    Refused {
        /// Why.
        reason: String,
    },
}

/// The offer-cell behaviour.
#[derive(Debug)]
pub struct OfferCellEntity;

impl EntityBehavior for OfferCellEntity {
    const KIND: EntityKind = EntityKind::OfferCell;
    type State = OfferCell;

    fn handle(
        state: &mut OfferCell,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: OfferCellRequest = decode_request(message)?;
        let now = message.now_unix_ms;
        let mut effects = Effects::default();
        let reply = match request {
            OfferCellRequest::List(offer) => {
                let n_expired = state.drop_expired(now);
                match state.list(offer, now) {
                    Ok(listed) => {
                        effects.state_changed = listed || n_expired > 0;
                        OfferCellReply::Done
                    }
                    Err(error) => {
                        effects.state_changed = n_expired > 0;
                        OfferCellReply::Refused {
                            reason: error.to_string(),
                        }
                    }
                }
            }
            OfferCellRequest::Unlist { share_id } => {
                let n_expired = state.drop_expired(now);
                effects.state_changed = state.unlist(&share_id) || n_expired > 0;
                OfferCellReply::Done
            }
            OfferCellRequest::Query(query) => OfferCellReply::Offers(state.query(&query, now)),
        };
        effects.reply_opt = Some(encode(&reply)?);
        Ok(effects)
    }
}
