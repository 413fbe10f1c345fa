//! QoS 2 exactly once across nodes, in the KV bucket `TERN_QOS2`.
//!
//! - Inbound (`i.<session key>.<packet id>`): each packet identifier in flight is remembered
//!   with the identity (`Nats-Msg-Id`) its message was stored under, written before the
//!   message goes to the stream. A client whose node died before its PUBREC came sends the
//!   PUBLISH again (DUP) to another node, which finds the identity and stores the message
//!   under it: the stream keeps one copy (its duplicate window). A PUBREL forgets the
//!   identifier before its PUBCOMP goes out.
//! - Outbound (`o.<session key>.<packet id>`): where each QoS 2 delivery to a session stands,
//!   as `<stream sequence> s|r|c` (sent, released, completed), written before its PUBLISH or
//!   PUBREL goes out, and after its PUBCOMP. A node resuming the session without its holder's
//!   hand-over reads them with the session's messages from the stream, so the client gets the
//!   same packet identifier again or the PUBREL, not a new message, and nothing completed
//!   comes again though the session's cursor (written every few seconds) lags. Once a write
//!   of the session's record puts its cursor past a record's message, the record is purged
//!   (up to the revision noted, so a later record under the same packet identifier stays): a
//!   resume reads only the records of what is in flight. A record of a session that leaves
//!   the node before lasts until its packet identifier is used again (the core hands
//!   identifiers out in turn, so after 65,535 more deliveries to the session) or the
//!   bucket's `max_age`.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::{Future, IntoFuture};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;
use tern_core::{ClusterOp, ClusterPublish, OutboundQos2, OutboundStage};
use tracing::{debug, warn};

use crate::sessions::{session_key, Sessions};

/// An outbound record as written or read: its key, its message's place in the stream, and
/// the bucket's revision of it.
pub(crate) struct OutboundKey {
    key: String,
    seq: u64,
    revision: u64,
}

/// The outbound records this node wrote or read, by session key, by record key: the place of
/// their message in the stream and their revision.
pub(crate) type OutboundKeys = HashMap<String, HashMap<String, (u64, u64)>>;

/// The bucket of inbound QoS 2 identifiers.
pub(crate) const QOS2_BUCKET: &str = "TERN_QOS2";
/// Wait before trying a write again that NATS did not take (unreachable).
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// What one operation of a batch does with one inbound identifier.
enum Step {
    /// A QoS 2 message (the first part of what its PUBLISH became) gets its identity: the one
    /// recorded for a resend of the same message, else a fresh one, recorded.
    Receive {
        index: usize,
        dup: bool,
        hash: u64,
        fresh: String,
    },
    /// A further part of the same PUBLISH: the first part's identity, numbered.
    Part { index: usize, part: u32 },
    /// PUBREL: the identifier is forgotten.
    Release,
    /// An outbound delivery's stage is recorded (its message stored at the sequence given).
    Record(Bytes, u64),
}

/// The node's record of inbound QoS 2 identifiers.
pub(crate) struct Inbound {
    kv: kv::Store,
    boot: u64,
    counter: u64,
}

impl Inbound {
    pub(crate) fn new(kv: kv::Store, boot: u64) -> Self {
        Self {
            kv,
            boot,
            counter: 0,
        }
    }

    /// Whether a batch has anything for this record (most have not).
    pub(crate) fn concerns(ops: &[ClusterOp]) -> bool {
        ops.iter().any(|op| match op {
            ClusterOp::Publish(publish) => publish.exactly_once.is_some(),
            ClusterOp::Released { .. } | ClusterOp::Outbound { .. } => true,
            _ => false,
        })
    }

    /// Gives each QoS 2 message of the batch `ops` its identity in the stream, and forgets
    /// the identifiers it releases: in order for each identifier, different identifiers side
    /// by side, so a batch costs one round trip or two. Returns the identities by the index
    /// of their operation. Waits while NATS is out of reach: no PUBREC or PUBCOMP goes out
    /// before the record is written.
    /// The outbound records written come back too, for their purge (`Sessions::purge_outbound`).
    pub(crate) async fn settle(
        &mut self,
        ops: &[ClusterOp],
    ) -> (HashMap<usize, String>, Vec<OutboundKey>) {
        let mut keys: Vec<(String, Vec<Step>)> = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let (key, step) = match op {
                ClusterOp::Publish(publish) => {
                    let Some((key, step)) = self.receive_step(index, publish) else {
                        continue;
                    };
                    (key, step)
                }
                ClusterOp::Released {
                    client_id,
                    packet_id,
                    ..
                } => (
                    format!("i.{}.{packet_id}", session_key(client_id)),
                    Step::Release,
                ),
                ClusterOp::Outbound {
                    client_id, record, ..
                } => {
                    let key = format!("o.{}.{}", session_key(client_id), record.packet_id);
                    let stage = match record.stage {
                        OutboundStage::Sent => 's',
                        OutboundStage::Released => 'r',
                        OutboundStage::Completed => 'c',
                    };
                    let value = format!("{} {stage}", record.seq);
                    (key, Step::Record(value.into(), record.seq))
                }
                _ => continue,
            };
            match keys.iter_mut().find(|(known, _)| *known == key) {
                Some((_, steps)) => steps.push(step),
                None => keys.push((key, vec![step])),
            }
        }
        let settled = join_all(
            keys.into_iter()
                .map(|(key, steps)| settle_key(&self.kv, key, steps)),
        )
        .await;
        let mut identities = HashMap::new();
        let mut recorded = Vec::new();
        for (given, written) in settled {
            identities.extend(given);
            recorded.extend(written);
        }
        (identities, recorded)
    }

    fn receive_step(&mut self, index: usize, publish: &ClusterPublish) -> Option<(String, Step)> {
        let inbound = publish.exactly_once?;
        let client_id = publish.publisher.as_ref()?;
        let key = format!("i.{}.{}", session_key(client_id), inbound.packet_id);
        if inbound.part > 0 {
            let part = inbound.part;
            return Some((key, Step::Part { index, part }));
        }
        self.counter += 1;
        let message = &publish.message;
        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        hash.update(message.topic.as_bytes());
        hash.update(&[0]);
        hash.update(&message.payload);
        let step = Step::Receive {
            index,
            dup: inbound.dup,
            hash: hash.digest(),
            fresh: format!("{:016x}.q{}", self.boot, self.counter),
        };
        Some((key, step))
    }
}

/// Runs the steps of one identifier in order; returns the identities given and the outbound
/// record written last.
async fn settle_key(
    kv: &kv::Store,
    key: String,
    steps: Vec<Step>,
) -> (Vec<(usize, String)>, Option<OutboundKey>) {
    let mut given = Vec::new();
    let mut written = None;
    let mut current: Option<String> = None;
    for step in steps {
        match step {
            Step::Receive {
                index,
                dup,
                hash,
                fresh,
            } => {
                let id = receive(kv, &key, dup, hash, fresh).await;
                given.push((index, id.clone()));
                current = Some(id);
            }
            Step::Part { index, part } => {
                if let Some(base) = &current {
                    given.push((index, format!("{base}.{part}")));
                }
            }
            Step::Release => {
                retry(&key, || kv.delete(&key)).await;
                current = None;
            }
            Step::Record(value, seq) => {
                let revision = retry(&key, || kv.put(&key, value.clone())).await;
                let key = key.clone();
                written = Some(OutboundKey { key, seq, revision });
            }
        }
    }
    (given, written)
}

/// The identity of a received QoS 2 message: the one recorded under `key` if this is a
/// resend of the same message (DUP, same topic and payload), else `fresh`, recorded first.
async fn receive(kv: &kv::Store, key: &str, dup: bool, hash: u64, fresh: String) -> String {
    if dup {
        let recorded = retry(key, || kv.get(key)).await;
        if let Some(id) = recorded
            .as_deref()
            .and_then(|value| recorded_id(value, hash))
        {
            return id.to_owned();
        }
    }
    let value = Bytes::from(format!("{hash:016x} {fresh}"));
    retry(key, || kv.put(key, value.clone())).await;
    fresh
}

/// The identity in a recorded `value`, if it was recorded for a message of hash `hash`.
fn recorded_id(value: &[u8], hash: u64) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (recorded, id) = value.split_once(' ')?;
    (u64::from_str_radix(recorded, 16).ok()? == hash).then_some(id)
}

/// The QoS 2 deliveries recorded for the session of key `session` (see the module's
/// documentation), and their keys; none when they cannot be read (then its messages go out
/// as new).
pub(crate) async fn outbound_records(
    kv: &kv::Store,
    session: &str,
) -> (Vec<OutboundQos2>, Vec<OutboundKey>) {
    let pattern = format!("{}o.{session}.*", kv.prefix);
    let mut keys = Vec::new();
    match kv.stream.info_with_subjects(pattern.as_str()).await {
        Ok(mut subjects) => {
            while let Some(listed) = subjects.next().await {
                match listed {
                    Ok((subject, _)) => {
                        keys.extend(subject.strip_prefix(&kv.prefix).map(str::to_owned))
                    }
                    Err(error) => {
                        warn!("cannot list the QoS 2 deliveries of {session}: {error}");
                        return Default::default();
                    }
                }
            }
        }
        Err(error) => {
            warn!("cannot list the QoS 2 deliveries of {session}: {error}");
            return Default::default();
        }
    }
    let entries = join_all(keys.iter().map(|key| kv.entry(key.as_str()))).await;
    let mut records = Vec::new();
    let mut read = Vec::new();
    for (key, entry) in keys.into_iter().zip(entries) {
        let Some(entry) = entry.ok().flatten() else {
            continue;
        };
        let packet_id = key.rsplit('.').next().and_then(|id| id.parse().ok());
        let Some(record) = packet_id.and_then(|id| parse_outbound(id, &entry.value)) else {
            continue;
        };
        let (seq, revision) = (record.seq, entry.revision);
        records.push(record);
        read.push(OutboundKey { key, seq, revision });
    }
    records.sort_by_key(|record| record.seq);
    (records, read)
}

impl Sessions {
    /// Notes outbound records written or read, to purge them once the cursor passes them.
    pub(crate) fn note_outbound(&self, records: Vec<OutboundKey>) {
        let mut state = self.state();
        for record in records {
            let Some(session) = record
                .key
                .strip_prefix("o.")
                .and_then(|rest| rest.rsplit_once('.'))
                .map(|(session, _)| session.to_owned())
            else {
                continue;
            };
            let noted = (record.seq, record.revision);
            state
                .outbound
                .entry(session)
                .or_default()
                .insert(record.key, noted);
        }
    }

    /// Purges the outbound records of session `key` whose message lies before `cursor`, the
    /// cursor its record now says: a resume reads from the cursor on, and needs none of them.
    pub(crate) async fn purge_outbound(&self, key: &str, cursor: u64) {
        let passed: Vec<(String, u64)> = {
            let mut state = self.state();
            let Some(records) = state.outbound.get_mut(key) else {
                return;
            };
            let passed = records
                .iter()
                .filter(|(_, (seq, _))| *seq < cursor)
                .map(|(record, (_, revision))| (record.clone(), *revision))
                .collect();
            records.retain(|_, (seq, _)| *seq >= cursor);
            if records.is_empty() {
                state.outbound.remove(key);
            }
            passed
        };
        let purges = passed.iter().map(|(record, revision)| {
            let subject = format!("{}{record}", self.qos2.prefix);
            // Up to the revision noted: a record written since under the identifier stays.
            let purge = self.qos2.stream.purge().filter(subject);
            purge.sequence(revision + 1).into_future()
        });
        for (purged, (record, _)) in join_all(purges).await.into_iter().zip(&passed) {
            if let Err(error) = purged {
                debug!("the QoS 2 record {record} stays: {error}");
            }
        }
    }

    /// Forgets the outbound records of session `key` (it left this node).
    pub(crate) fn forget_outbound(&self, key: &str) {
        self.state().outbound.remove(key);
    }
}

/// An outbound record's value, `<stream sequence> s|r|c`.
fn parse_outbound(packet_id: u16, value: &[u8]) -> Option<OutboundQos2> {
    let (seq, stage) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    let stage = match stage {
        "s" => OutboundStage::Sent,
        "r" => OutboundStage::Released,
        "c" => OutboundStage::Completed,
        _ => return None,
    };
    Some(OutboundQos2 {
        packet_id,
        seq: seq.parse().ok()?,
        stage,
    })
}

/// Runs `op` until NATS takes it.
async fn retry<T, E: Display, F: Future<Output = Result<T, E>>>(
    key: &str,
    mut op: impl FnMut() -> F,
) -> T {
    loop {
        match op().await {
            Ok(done) => return done,
            Err(error) => {
                warn!("inbound QoS 2 record {key} not written ({error}); trying again");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_records_read_back_as_written() {
        let sent = parse_outbound(7, b"42 s").unwrap();
        assert_eq!(
            (sent.packet_id, sent.seq, sent.stage),
            (7, 42, OutboundStage::Sent)
        );
        assert_eq!(
            parse_outbound(7, b"42 r").unwrap().stage,
            OutboundStage::Released
        );
        let completed = parse_outbound(7, b"42 c").unwrap();
        assert_eq!(completed.stage, OutboundStage::Completed);
        assert_eq!(parse_outbound(7, b"42 x"), None);
        assert_eq!(parse_outbound(7, b""), None);
    }

    #[test]
    fn a_recorded_identity_is_found_only_for_the_same_message() {
        let value = format!("{:016x} 00ab.q7", 42u64);
        assert_eq!(recorded_id(value.as_bytes(), 42), Some("00ab.q7"));
        assert_eq!(recorded_id(value.as_bytes(), 43), None);
        assert_eq!(recorded_id(b"garbage", 42), None);
    }
}
