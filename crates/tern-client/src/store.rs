//! On-disk persistence of queued and in-flight QoS 1/2 publishes, so that they survive a restart
//! of the client process.
//!
//! One file per message, named by its sequence number (`{seq:016x}.msg`), written to a temporary
//! name and renamed into place so that a crash leaves either the old or the new version:
//!
//! ```text
//! "TCM1"  magic and format version
//! u8      state: 0 queued, 1 sent (awaiting PUBACK/PUBREC), 2 released (PUBREL sent)
//! ...     the PUBLISH packet, MQTT 5 encoding, full topic, with its packet identifier
//! ```
//!
//! A queued message is written with packet identifier 1 as a placeholder (QoS 1/2 PUBLISH must
//! carry one); it is given its real identifier when it enters flight, and the file is rewritten
//! before the packet is sent, so a restarted client resends it under the identifier the broker
//! knows.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use tern_codec::{Decoder, Packet, PacketId, ProtocolVersion, PACKET_SIZE_MAX};

use crate::error::StoreError;
use crate::session::Outgoing;

const MAGIC: &[u8; 4] = b"TCM1";
const STATE_QUEUED: u8 = 0;
const STATE_SENT: u8 = 1;
const STATE_RELEASED: u8 = 2;

/// A directory of message files.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    sync: bool,
}

impl Store {
    /// Opens (creating if needed) the directory.
    pub(crate) fn open(dir: &Path, sync: bool) -> Result<Self, StoreError> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            sync,
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016x}.msg"))
    }

    /// Writes (or rewrites) a message's file.
    pub(crate) fn save(&self, outgoing: &Outgoing) -> Result<(), StoreError> {
        let state = match (outgoing.publish.packet_id.is_some(), outgoing.released) {
            (_, true) => STATE_RELEASED,
            (true, false) => STATE_SENT,
            (false, false) => STATE_QUEUED,
        };
        let mut publish = outgoing.publish.clone();
        if publish.packet_id.is_none() {
            publish.packet_id = PacketId::new(1);
        }
        publish.dup = false;
        let mut buf = BytesMut::with_capacity(publish.payload.len() + 64);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&[state]);
        Packet::Publish(publish)
            .encode(ProtocolVersion::V5, &mut buf)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = self.path(outgoing.seq);
        let temp = path.with_extension("tmp");
        let mut file = fs::File::create(&temp)?;
        file.write_all(&buf)?;
        if self.sync {
            file.sync_all()?;
        }
        fs::rename(&temp, &path)?;
        Ok(())
    }

    /// Deletes a completed message's file.
    pub(crate) fn remove(&self, seq: u64) -> Result<(), StoreError> {
        match fs::remove_file(self.path(seq)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads every stored message, in sequence order.
    pub(crate) fn load(&self) -> Result<Vec<Outgoing>, StoreError> {
        let mut messages = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".msg"))
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            messages.push(decode(seq, &fs::read(&path)?, &path)?);
        }
        messages.sort_by_key(|m| m.seq);
        Ok(messages)
    }
}

fn decode(seq: u64, bytes: &[u8], path: &Path) -> Result<Outgoing, StoreError> {
    let corrupt = || StoreError::Corrupt(path.display().to_string());
    if bytes.len() < 5 || &bytes[..4] != MAGIC {
        return Err(corrupt());
    }
    let state = bytes[4];
    let mut buf = BytesMut::from(&bytes[5..]);
    let mut decoder = Decoder::new(ProtocolVersion::V5, PACKET_SIZE_MAX);
    let Ok(Some(Packet::Publish(mut publish))) = decoder.decode(&mut buf) else {
        return Err(corrupt());
    };
    let released = match state {
        STATE_QUEUED => {
            publish.packet_id = None;
            false
        }
        STATE_SENT => false,
        STATE_RELEASED => true,
        _ => return Err(corrupt()),
    };
    Ok(Outgoing {
        seq,
        publish,
        released,
        done: None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tern_codec::{MqttString, Publish, QoS, TopicName};

    #[test]
    fn messages_round_trip_with_state_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let topic = TopicName::new(MqttString::new("a/b").unwrap()).unwrap();
        let mut publish = Publish::new(topic, Bytes::from_static(b"payload"));
        publish.qos = QoS::ExactlyOnce;
        let queued = Outgoing {
            seq: 20,
            publish: publish.clone(),
            released: false,
            done: None,
        };
        publish.packet_id = PacketId::new(7);
        let released = Outgoing {
            seq: 3,
            publish,
            released: true,
            done: None,
        };
        store.save(&queued).unwrap();
        store.save(&released).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!((loaded[0].seq, loaded[0].released), (3, true));
        assert_eq!(loaded[0].publish.packet_id, PacketId::new(7));
        assert_eq!(loaded[1].publish.packet_id, None);
        assert_eq!(loaded[1].publish.payload, Bytes::from_static(b"payload"));
        store.remove(3).unwrap();
        assert_eq!(store.load().unwrap().len(), 1);
    }

    #[test]
    fn a_foreign_file_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("0000000000000001.msg"), b"nonsense").unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
    }
}
