//! What the entity kinds' unit tests share: a message handled by a behaviour the way the host
//! hands it over (a fresh message id, owner `node-a` at epoch 1), and its reply decoded.

use crate::entities::{decode, encode};
use crate::host::behavior::{Effects, EntityBehavior, HandleError, IncomingMessage, OwnerStamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Has `B` handle the raw `payload` sent to entity `entity_id` at `now_unix_ms`.
pub fn handle_payload<B: EntityBehavior>(
    state: &mut B::State,
    entity_id: &str,
    payload: &[u8],
    now_unix_ms: u64,
) -> Result<Effects, HandleError> {
    let owner = OwnerStamp {
        node_id: "node-a".to_owned(),
        epoch: 1,
    };
    let message = IncomingMessage {
        entity_id,
        msg_id: Uuid::now_v7(),
        sender_entity_opt: None,
        payload,
        owner: &owner,
        now_unix_ms,
    };
    B::handle(state, &message)
}

/// The audit actions of `effects`, in order.
pub fn audit_actions(effects: &Effects) -> Vec<&str> {
    effects
        .audit
        .iter()
        .map(|note| note.action.as_str())
        .collect()
}

/// The pushes of `effects`, decoded, with the sessions they go to.
pub fn pushed<Pushed: DeserializeOwned>(effects: &Effects) -> Vec<(String, Pushed)> {
    effects
        .pushes
        .iter()
        .map(|push| {
            let decoded = decode(&push.payload).expect("the push decodes");
            (push.session_id.clone(), decoded)
        })
        .collect()
}

/// Has `B` handle `request`, which it must accept, and decodes its reply.
pub fn handle_request<B: EntityBehavior, Request: Serialize, Reply: DeserializeOwned>(
    state: &mut B::State,
    entity_id: &str,
    request: &Request,
    now_unix_ms: u64,
) -> (Reply, Effects) {
    let payload = encode(request).expect("the request encodes");
    let effects = handle_payload::<B>(state, entity_id, &payload, now_unix_ms)
        .expect("the behaviour handles the request");
    let reply = decode(effects.reply_opt.as_deref().expect("a reply")).expect("the reply decodes");
    (reply, effects)
}
