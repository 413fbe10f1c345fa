//! A flow scenario's subscriber: acknowledges what it is sent at once and records every
//! arrival in the run's ledger.

use std::rc::Rc;
use std::time::Instant;

use tern_codec::{Packet, QoS};

use super::State;
use crate::client::{ack, Conn};
use crate::payload;
use crate::BenchError;

/// Reads until the run ends. The broker closing the connection (a DISCONNECT, the end of the
/// stream or a reset) ends this subscriber, not the run: what it was still owed is then
/// counted as lost, and the report says how many subscribers were closed.
pub(super) async fn run(
    mut conn: Conn,
    receiver: usize,
    state: Rc<State>,
) -> Result<(), BenchError> {
    loop {
        let open = conn.read().await.is_ok() && take_batch(&mut conn, receiver, &state)?;
        state.progress.notify_waiters();
        if !open || conn.flush().await.is_err() {
            state
                .subscribers_closed
                .set(state.subscribers_closed.get() + 1);
            return Ok(());
        }
    }
}

/// Counts every message in the read buffer and queues the acknowledgements they need; returns
/// whether the connection is still open (false after a DISCONNECT from the broker).
fn take_batch(conn: &mut Conn, receiver: usize, state: &State) -> Result<bool, BenchError> {
    // One clock reading per read batch: cheaper than per message, and as precise as the read.
    let now = Instant::now();
    let in_window = now <= state.window_end;
    let now_nanos = state.nanos_since_epoch(now);
    let mut ledger = state.ledger.borrow_mut();
    let publishers = ledger.publishers();
    while let Some(packet) = conn.decode()? {
        let publish = match packet {
            Packet::Publish(publish) => publish,
            Packet::PubRel(rel) => {
                conn.send(&Packet::PubComp(ack(rel.packet_id)))?;
                continue;
            }
            Packet::PingResp => continue,
            Packet::Disconnect(_) => return Ok(false),
            other => {
                return Err(BenchError::Protocol(format!(
                    "subscriber got {:?}",
                    other.packet_type()
                )))
            }
        };
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => conn.send(&Packet::PubAck(ack(id)))?,
            (QoS::ExactlyOnce, Some(id)) => conn.send(&Packet::PubRec(ack(id)))?,
            _ => {}
        }
        let Some(stamp) =
            payload::read(&publish.payload).filter(|s| (s.publisher as usize) < publishers)
        else {
            ledger.foreign();
            continue;
        };
        if ledger.delivered(receiver, stamp.publisher as usize, stamp.seq, in_window) {
            ledger
                .totals
                .record_latency(now_nanos.saturating_sub(stamp.sent_nanos) / 1000);
        }
    }
    Ok(true)
}
