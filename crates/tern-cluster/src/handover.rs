//! Sessions handed over between nodes: the node that held a session sends it to the claimant's
//! reply subject in chunks (a session's queue may be larger than one NATS message), and the
//! claimant puts the chunks together for the claim waiting on them.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use tern_codec::MqttString;
use tern_core::store::StoredSession;
use tracing::{debug, info, warn};

use crate::handoff::{
    chunks, decode_handed_over, encode_handed_over, read_chunk, CHUNK_HEADER_LEN,
};
use crate::sessions::{session_key, Sessions};

impl Sessions {
    /// Hands a session over to the claimant whose notice the core answered with `token`.
    pub(crate) async fn hand_over(
        &self,
        token: u64,
        client_id: &MqttString,
        session: Option<&StoredSession>,
        resume_from: u64,
        max_payload: usize,
    ) {
        let key = session_key(client_id);
        {
            let mut state = self.state();
            state.owned.remove(&key);
            // Its will is the claimant's to cancel or the core's to have published by now.
            state.epochs.remove(&key);
        }
        self.unindex(&self.node_id, &key).await;
        let notice = self.handoffs.lock().ok().and_then(|mut h| h.take(token));
        let Some(notice) = notice else {
            return;
        };
        let bytes = match encode_handed_over(session, resume_from) {
            Ok(bytes) => bytes,
            Err(error) => {
                warn!("the session of {client_id:?} cannot be handed over: {error}");
                return;
            }
        };
        let room = max_payload.saturating_sub(1024).max(CHUNK_HEADER_LEN + 1);
        for chunk in chunks(notice.claim, &bytes, room) {
            if let Err(error) = self.client.publish(notice.reply.clone(), chunk).await {
                warn!(
                    "the session of {client_id:?} did not reach {}: {error}",
                    notice.claimant
                );
                return;
            }
        }
        info!(
            "session of {client_id:?} handed over to node {} ({} messages)",
            notice.claimant,
            session.map_or(0, |s| s.deliveries.len())
        );
    }

    /// Takes the hand-overs that come for this node's claims.
    pub(crate) async fn take_replies(self: Arc<Self>, mut replies: async_nats::Subscriber) {
        while let Some(message) = replies.next().await {
            let Ok((claim, index, count, part)) = read_chunk(message.payload) else {
                self.counters.count_undecodable();
                continue;
            };
            let mut state = self.state();
            let Some(waiting) = state.waiting.get_mut(&claim) else {
                debug!("a hand-over for claim {claim} came after it settled");
                continue;
            };
            if waiting.chunks.len() != count as usize {
                waiting.chunks = vec![None; count as usize];
            }
            waiting.chunks[index as usize] = Some(part);
            if waiting.chunks.iter().any(Option::is_none) {
                continue;
            }
            let Some(waiting) = state.waiting.remove(&claim) else {
                continue;
            };
            drop(state);
            let mut whole = BytesMut::new();
            for part in waiting.chunks.into_iter().flatten() {
                whole.extend_from_slice(&part);
            }
            match decode_handed_over(&waiting.client_id, whole.freeze()) {
                Ok(handed_over) => {
                    let _ = waiting.done.send(handed_over);
                }
                Err(error) => {
                    self.counters.count_undecodable();
                    warn!(
                        "the session of {:?} handed over does not read: {error}",
                        waiting.client_id
                    );
                }
            }
        }
    }
}
