//! A flow scenario's publisher: sends for the measured window, closed-loop (at most `--window`
//! messages ahead of delivery), open-loop at a fixed `--rate`, or open-loop bounded only by its
//! in-flight window of unacknowledged QoS 1/2 publishes (`--open-loop`), and records what the
//! broker acknowledged.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tern_codec::{Packet, QoS};

use super::State;
use crate::client::{ack, next_packet_id, packet_id, Conn, PublishTemplate};
use crate::inflight::{Answer, Inflight};
use crate::pace::Pacer;
use crate::payload::Stamp;
use crate::BenchError;

/// Messages one publisher encodes before it writes them out.
const PUBLISH_BATCH_MAX: u64 = 256;

pub(super) async fn run(
    mut conn: Conn,
    template: PublishTemplate,
    index: usize,
    state: Rc<State>,
) -> Result<(), BenchError> {
    let qos = state.qos;
    // Packet identifiers must not wrap onto one still in flight.
    let mut inflight_max = u64::from(conn.receive_maximum.min(u16::MAX / 2));
    if state.open_loop {
        inflight_max = inflight_max.min(state.inflight_max);
    }
    state.note_inflight_max(inflight_max);
    let mut inflight = Inflight::new();
    let mut next_id: u16 = 0;
    let sent = &state.sent[index];
    let window = state.window * state.fanout;
    let pacer = Pacer::new();
    loop {
        // Answers first: whatever came back makes room in the window for this round.
        let before = inflight.count();
        take_answers(&mut conn, &mut inflight, index, &state)?;
        state
            .acks_pending
            .set(state.acks_pending.get() - (before - inflight.count()));
        let now = Instant::now();
        let stopped = now >= state.window_end;
        let mut allowed = if stopped {
            0
        } else if state.open_loop {
            u64::MAX
        } else {
            let owed = sent.get() * state.fanout;
            let delivered = state.ledger.borrow().delivered_from(index);
            window.saturating_sub(owed - delivered.min(owed)) / state.fanout
        };
        if qos != QoS::AtMostOnce {
            allowed = allowed.min(inflight_max.saturating_sub(inflight.count()));
        }
        let mut next_due = None;
        if state.rate > 0.0 && allowed > 0 {
            let elapsed = now.duration_since(state.start).as_secs_f64();
            let due = (elapsed * state.rate) as u64 + 1;
            allowed = allowed.min(due.saturating_sub(sent.get()));
            let next = (sent.get() + allowed) as f64 / state.rate;
            next_due = Some(state.start + Duration::from_secs_f64(next));
        }
        let allowed = allowed.min(PUBLISH_BATCH_MAX);
        if allowed > 0 {
            let stamp_nanos = state.nanos_since_epoch(now);
            for _ in 0..allowed {
                let seq = sent.get();
                let id = if qos == QoS::AtMostOnce {
                    None
                } else {
                    next_id = next_packet_id(next_id);
                    inflight.sent(next_id, seq);
                    Some(packet_id(next_id))
                };
                let stamp = Stamp {
                    publisher: index as u32,
                    seq,
                    sent_nanos: stamp_nanos,
                };
                template.put(&mut conn.wbuf, id, stamp);
                sent.set(seq + 1);
            }
            if qos != QoS::AtMostOnce {
                state.acks_pending.set(state.acks_pending.get() + allowed);
            }
        }
        // The batch, and any PUBREL the answers called for.
        conn.flush().await?;
        if allowed == 0 {
            if stopped && inflight.count() == 0 {
                return Ok(());
            }
            let wake_at = match next_due {
                Some(due) if !stopped => due.min(state.window_end),
                _ if !stopped => state.window_end,
                _ => Instant::now() + Duration::from_secs(1),
            };
            tokio::select! {
                ready = conn.stream.readable() => ready.map_err(|e| BenchError::io("waiting", e))?,
                () = state.progress.notified(), if !state.open_loop => {}
                () = pacer.sleep_until(wake_at) => {}
            }
        }
    }
}

/// Reads whatever answers have arrived, without waiting for them, and records them.
fn take_answers(
    conn: &mut Conn,
    inflight: &mut Inflight,
    index: usize,
    state: &State,
) -> Result<(), BenchError> {
    loop {
        if conn.rbuf.capacity() - conn.rbuf.len() < 1024 {
            conn.rbuf.reserve(16 * 1024);
        }
        match conn.stream.try_read_buf(&mut conn.rbuf) {
            Ok(0) => return Err(BenchError::Protocol("broker closed a publisher".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(BenchError::io("reading acknowledgements", e)),
        }
    }
    if conn.rbuf.is_empty() {
        return Ok(());
    }
    let in_window = Instant::now() <= state.window_end;
    let mut ledger = state.ledger.borrow_mut();
    while let Some(packet) = conn.decode()? {
        let answer = match packet {
            Packet::PubAck(a) => inflight.puback(a.packet_id.get(), a.reason_code),
            Packet::PubRec(rec) => {
                let answer = inflight.pubrec(rec.packet_id.get(), rec.reason_code);
                if matches!(answer, Answer::Acknowledged(_) | Answer::Repeated) {
                    conn.send(&Packet::PubRel(ack(rec.packet_id)))?;
                }
                answer
            }
            Packet::PubComp(comp) => {
                inflight.pubcomp(comp.packet_id.get());
                continue;
            }
            Packet::PingResp => continue,
            other => {
                return Err(BenchError::Protocol(format!(
                    "publisher got {:?}",
                    other.packet_type()
                )))
            }
        };
        match answer {
            Answer::Acknowledged(seq) => ledger.acknowledged(index, seq, in_window),
            Answer::Refused(_) => ledger.refused(index),
            Answer::Repeated | Answer::Unknown => {}
        }
    }
    Ok(())
}
