//! One entity as an actix actor: restores its state on first use, applies messages through its
//! [`EntityBehavior`], persists with compare-and-set on (epoch, version), and remembers recent
//! message ids so a redelivered message gets its first answer instead of being applied again.
//!
//! The persisted record holds the behaviour's state and the last [`DEDUPE_WINDOW`] processed
//! messages (id, reply, outgoing messages with their ids, audit events, journal entries), saved in the same write as the state
//! change they produced — so "applied" and "remembered as applied" can never disagree.

use crate::host::behavior::{EntityBehavior, IncomingMessage, JournalNote, OwnerStamp, Push};
use actix::{Actor, ActorFutureExt, AtomicResponse, Context, Handler, Message, WrapFuture};
use lanmesh_bus::{EntityAddress, Envelope};
use lanmesh_storage::{
    EntityKey, EntityStateStore, PresenceSample, StateVersion, StoreError, StoredEntityState,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use thiserror::Error;
use uuid::Uuid;

/// How many processed message ids an entity remembers for de-duplication. Redeliveries arrive
/// within the few messages in flight at a crash or handoff, and request retries within a
/// request's deadline, so a window of this size covers them with room to spare.
pub const DEDUPE_WINDOW: usize = 128;

/// Compare-and-set attempts per message before giving the message back for redelivery.
const MAX_SAVE_ATTEMPTS: u32 = 3;

/// A message an entity sent, as remembered for re-sending after a redelivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    /// The id it was first sent with (re-sent with the same id, so the receiver de-duplicates).
    pub msg_id: Uuid,
    /// The receiving entity.
    pub target: EntityAddress,
    /// The domain message.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// An audit event an entity produced, as remembered for re-appending after a redelivery
/// (the audit store keeps one event per id, so re-appending stores nothing twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedAudit {
    /// The event's id.
    pub event_id: Uuid,
    /// What happened.
    pub action: String,
    /// Details.
    pub detail: String,
    /// When, in Unix milliseconds.
    pub at_unix_ms: u64,
}

/// One processed message, remembered with the state it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessedMessage {
    msg_id: Uuid,
    #[serde(default, with = "serde_bytes")]
    reply_opt: Option<Vec<u8>>,
    #[serde(default)]
    sent: Vec<SentMessage>,
    #[serde(default)]
    audit: Vec<RecordedAudit>,
    #[serde(default)]
    journal: Vec<JournalNote>,
}

/// What is persisted for an entity.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PersistedEntity<State> {
    state: State,
    recent: VecDeque<ProcessedMessage>,
}

struct Restored<State> {
    record: PersistedEntity<State>,
    version_opt: Option<StateVersion>,
}

/// What applying one message produced, for the host to send before acknowledging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The message had been applied before; these are the effects of that first time.
    pub duplicate: bool,
    /// The reply payload, if the message produced one.
    pub reply_opt: Option<Vec<u8>>,
    /// Messages to other entities.
    pub sent: Vec<SentMessage>,
    /// Audit events to append.
    pub audit: Vec<RecordedAudit>,
    /// Pushes to client sessions (empty for a duplicate: pushes are best effort).
    pub pushes: Vec<Push>,
    /// Presence samples to append (idempotent; computed again on a redelivery).
    pub samples: Vec<PresenceSample>,
    /// Journal entries to append (the first ones again for a duplicate).
    pub journal: Vec<JournalNote>,
}

/// Why a message was not applied.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// The entity kind refused the message; it can never be applied.
    #[error("{0}")]
    Refused(#[from] crate::host::behavior::HandleError),
    /// A newer owner has written this entity: this node no longer owns its shard.
    #[error("fenced: stored epoch {stored_epoch} is newer than this owner's epoch {own_epoch}")]
    Fenced {
        /// The epoch in storage.
        stored_epoch: u64,
        /// This node's epoch of the shard.
        own_epoch: u64,
    },
    /// Storage failed; the message can be retried.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// The stored state does not decode as this kind's state.
    #[error("stored state of {key} does not decode: {reason}")]
    CorruptState {
        /// The entity.
        key: EntityKey,
        /// What the decoder said.
        reason: String,
    },
    /// Every save attempt met a concurrent write.
    #[error("state kept changing under {n_attempts} save attempts")]
    Contended {
        /// Attempts made.
        n_attempts: u32,
    },
}

/// Applies one delivered message under the given owner.
#[derive(Debug, Message)]
#[rtype(result = "Result<Applied, ApplyError>")]
pub struct Apply {
    /// The message.
    pub envelope: Arc<Envelope>,
    /// Who applies it.
    pub owner: OwnerStamp,
    /// The domain time of the delivery, in Unix milliseconds (see [`crate::host::clock`]).
    pub now_unix_ms: u64,
}

/// Stops the actor (its state is already durable).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Passivate;

/// The actor hosting one entity of behaviour `B`.
pub struct EntityActor<B: EntityBehavior> {
    key: EntityKey,
    store: Arc<dyn EntityStateStore>,
    restored_opt: Option<Restored<B::State>>,
    behavior: PhantomData<fn() -> B>,
}

impl<B: EntityBehavior> EntityActor<B> {
    /// An actor for entity `address`, restoring from and saving to `store`.
    pub fn new(address: &EntityAddress, store: Arc<dyn EntityStateStore>) -> Self {
        Self {
            key: EntityKey::new(address.kind.clone(), address.id.clone()),
            store,
            restored_opt: None,
            behavior: PhantomData,
        }
    }
}

impl<B: EntityBehavior> Actor for EntityActor<B> {
    type Context = Context<Self>;
}

impl<B: EntityBehavior> Handler<Passivate> for EntityActor<B> {
    type Result = ();

    fn handle(&mut self, _: Passivate, context: &mut Context<Self>) {
        use actix::ActorContext;
        context.stop();
    }
}

impl<B: EntityBehavior> Handler<Apply> for EntityActor<B> {
    type Result = AtomicResponse<Self, Result<Applied, ApplyError>>;

    fn handle(&mut self, apply: Apply, _: &mut Context<Self>) -> Self::Result {
        // The restored state moves into the future and comes back with the outcome; the
        // atomic response keeps every other message waiting meanwhile.
        let restored_opt = self.restored_opt.take();
        let key = self.key.clone();
        let store = Arc::clone(&self.store);
        let work = apply_message::<B>(key, store, restored_opt, apply);
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |(outcome, restored_opt), actor, _| {
                actor.restored_opt = restored_opt;
                outcome
            },
        )))
    }
}

type Outcome<State> = (Result<Applied, ApplyError>, Option<Restored<State>>);

async fn restore<State: serde::de::DeserializeOwned + Default>(
    store: &dyn EntityStateStore,
    key: &EntityKey,
) -> Result<Restored<State>, ApplyError> {
    match store.load(key).await? {
        None => Ok(Restored {
            record: PersistedEntity::default(),
            version_opt: None,
        }),
        Some(stored) => {
            let record =
                rmp_serde::from_slice(&stored.state).map_err(|error| ApplyError::CorruptState {
                    key: key.clone(),
                    reason: error.to_string(),
                })?;
            Ok(Restored {
                record,
                version_opt: Some(stored.version),
            })
        }
    }
}

/// The version a save by `epoch` after `stored_opt` gets: the next counter within the same
/// epoch, or the first of a newer epoch.
fn next_version(stored_opt: Option<StateVersion>, epoch: u64) -> StateVersion {
    match stored_opt {
        Some(stored) if stored.epoch == epoch => {
            StateVersion::new(epoch, stored.version.saturating_add(1))
        }
        _ => StateVersion::new(epoch, 1),
    }
}

async fn apply_message<B: EntityBehavior>(
    key: EntityKey,
    store: Arc<dyn EntityStateStore>,
    restored_opt: Option<Restored<B::State>>,
    apply: Apply,
) -> Outcome<B::State> {
    let mut restored = match restored_opt {
        Some(restored) => restored,
        None => match restore(store.as_ref(), &key).await {
            Ok(restored) => restored,
            Err(error) => return (Err(error), None),
        },
    };
    let Apply {
        envelope,
        owner,
        now_unix_ms: now,
    } = apply;
    for _ in 0..MAX_SAVE_ATTEMPTS {
        if let Some(stored) = restored.version_opt
            && stored.epoch > owner.epoch
        {
            let fenced = ApplyError::Fenced {
                stored_epoch: stored.epoch,
                own_epoch: owner.epoch,
            };
            return (Err(fenced), None);
        }
        if let Some(first) = restored
            .record
            .recent
            .iter()
            .find(|processed| processed.msg_id == envelope.msg_id)
        {
            let applied = Applied {
                duplicate: true,
                reply_opt: first.reply_opt.clone(),
                sent: first.sent.clone(),
                audit: first.audit.clone(),
                pushes: Vec::new(),
                samples: Vec::new(),
                journal: first.journal.clone(),
            };
            return (Ok(applied), Some(restored));
        }
        let incoming = IncomingMessage {
            entity_id: &key.id,
            msg_id: envelope.msg_id,
            sender_entity_opt: envelope.sender_entity_opt.as_ref(),
            payload: &envelope.payload,
            owner: &owner,
            now_unix_ms: now,
        };
        let effects = match B::handle(&mut restored.record.state, &incoming) {
            Ok(effects) => effects,
            // The behaviour may have half-changed the state: forget it, restore next time.
            Err(refusal) => return (Err(refusal.into()), None),
        };
        let sent: Vec<SentMessage> = effects
            .outgoing
            .into_iter()
            .map(|outgoing| SentMessage {
                msg_id: Uuid::now_v7(),
                target: outgoing.target,
                payload: outgoing.payload,
            })
            .collect();
        let audit: Vec<RecordedAudit> = effects
            .audit
            .into_iter()
            .map(|note| RecordedAudit {
                event_id: Uuid::now_v7(),
                action: note.action,
                detail: note.detail,
                at_unix_ms: now,
            })
            .collect();
        let applied = Applied {
            duplicate: false,
            reply_opt: effects.reply_opt,
            sent,
            audit,
            pushes: effects.pushes,
            samples: effects.samples,
            journal: effects.journal,
        };
        if !effects.state_changed
            && applied.sent.is_empty()
            && applied.audit.is_empty()
            && applied.journal.is_empty()
        {
            // Nothing to make durable; a redelivery simply runs it again.
            return (Ok(applied), Some(restored));
        }
        restored.record.recent.push_back(ProcessedMessage {
            msg_id: envelope.msg_id,
            reply_opt: applied.reply_opt.clone(),
            sent: applied.sent.clone(),
            audit: applied.audit.clone(),
            journal: applied.journal.clone(),
        });
        while restored.record.recent.len() > DEDUPE_WINDOW {
            restored.record.recent.pop_front();
        }
        let new_version = next_version(restored.version_opt, owner.epoch);
        let bytes = match rmp_serde::to_vec_named(&restored.record) {
            Ok(bytes) => bytes,
            Err(error) => {
                let corrupt = ApplyError::CorruptState {
                    key: key.clone(),
                    reason: error.to_string(),
                };
                return (Err(corrupt), None);
            }
        };
        let saved = store
            .compare_and_set(
                &key,
                restored.version_opt,
                StoredEntityState {
                    version: new_version,
                    state: bytes,
                },
            )
            .await;
        match saved {
            Ok(()) => {
                restored.version_opt = Some(new_version);
                return (Ok(applied), Some(restored));
            }
            Err(StoreError::Conflict { .. }) => {
                // Someone else saved in between (a previous owner finishing its last message):
                // start again from what is stored; the message may turn out to be a duplicate.
                tracing::debug!(entity = %key, "state changed under us, restoring and applying again");
                restored = match restore(store.as_ref(), &key).await {
                    Ok(restored) => restored,
                    Err(error) => return (Err(error), None),
                };
            }
            Err(error) => return (Err(error.into()), None),
        }
    }
    let contended = ApplyError::Contended {
        n_attempts: MAX_SAVE_ATTEMPTS,
    };
    (Err(contended), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_within_an_epoch_and_restart_in_a_newer_one() {
        assert_eq!(next_version(None, 4), StateVersion::new(4, 1));
        assert_eq!(
            next_version(Some(StateVersion::new(4, 7)), 4),
            StateVersion::new(4, 8)
        );
        assert_eq!(
            next_version(Some(StateVersion::new(3, 7)), 4),
            StateVersion::new(4, 1)
        );
    }
}
