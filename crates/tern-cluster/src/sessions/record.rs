//! Writes of a session's record by the node that holds it, each expecting the revision it last
//! wrote: a refused write means another node holds the session now (fencing).

use async_nats::jetstream::kv::UpdateErrorKind;
use tern_codec::MqttString;
use tern_core::store::SessionRecord;
use tern_core::ClusterInput;
use tracing::{debug, warn};

use super::{Sessions, WRITE_RETRY_DELAY};

impl Sessions {
    /// Writes a record this node holds, expecting the revision it last wrote; a record another
    /// node has written since is not overwritten, and the core is told it lost the session.
    /// Returns the cursor written, if it was.
    pub(super) async fn write(
        &self,
        key: &str,
        record: &SessionRecord,
        cursor: Option<u64>,
        resume_from: u64,
    ) -> Option<u64> {
        let client_id = &record.client_id;
        let (epoch, last_cursor) = self
            .state()
            .owned
            .get(key)
            .map_or((0, 0), |owned| (owned.epoch, owned.cursor));
        let entry = self.entry(
            client_id,
            Some(record.clone()),
            epoch,
            cursor.unwrap_or(last_cursor),
            resume_from,
        );
        let value = match entry.encode() {
            Ok(value) => value,
            Err(error) => {
                warn!("the record of {client_id:?} cannot be written: {error}");
                return None;
            }
        };
        loop {
            let known = self.state().owned.get(key).map(|owned| owned.revision);
            let expected = match known {
                Some(revision) => revision,
                // A session this node had before the record knew it (restored from its store).
                None => match self.read(key).await {
                    Ok((None, revision)) => revision,
                    Ok((Some(entry), revision)) if entry.node == self.node_id => revision,
                    Ok((Some(entry), _)) => {
                        self.fenced(key, client_id, &entry.node).await;
                        return None;
                    }
                    Err(error) => {
                        debug!("cannot read the record of {client_id:?}: {error}");
                        tokio::time::sleep(WRITE_RETRY_DELAY).await;
                        continue;
                    }
                },
            };
            match self.kv.update(key, value.clone(), expected).await {
                Ok(written) => {
                    self.now_owns(key, &entry, written);
                    return Some(entry.cursor);
                }
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                    let holder = match self.read(key).await {
                        Ok((Some(entry), _)) => entry.node,
                        _ => "another node".to_owned(),
                    };
                    self.fenced(key, client_id, &holder).await;
                    return None;
                }
                Err(error) => {
                    warn!("the record of {client_id:?} is not written yet ({error}); trying again");
                    tokio::time::sleep(WRITE_RETRY_DELAY).await;
                }
            }
        }
    }

    /// This node lost the session of `client_id`: its write was refused, nothing of it is
    /// written again, and the core closes the connection.
    pub(super) async fn fenced(&self, key: &str, client_id: &MqttString, holder: &str) {
        self.state().owned.remove(key);
        self.unindex(&self.node_id, key).await;
        self.counters.count_fenced();
        warn!(
            "the session of {client_id:?} belongs to {holder} now: this node's write of its \
             record was refused (fenced), and its connection here is closed"
        );
        let input = ClusterInput::TakenOver {
            client_id: client_id.clone(),
            clean_start: false,
            token: None,
        };
        let _ = self.inputs.send(input).await;
    }

    /// Removes the record of a session that ended here, unless another node holds it now.
    pub(super) async fn remove(&self, key: &str, client_id: &MqttString) {
        self.state().epochs.remove(key);
        self.forget_outbound(key);
        let known = self.state().owned.remove(key).map(|owned| owned.revision);
        let expected = match known {
            Some(revision) => revision,
            None => match self.read(key).await {
                Ok((Some(entry), revision)) if entry.node == self.node_id => revision,
                _ => return,
            },
        };
        match self.kv.delete_expect_revision(key, Some(expected)).await {
            Ok(()) => self.unindex(&self.node_id, key).await,
            Err(error) => debug!("the record of {client_id:?} stays: {error}"),
        }
    }

    /// Checks that a record this node holds is still as it wrote it.
    pub(super) async fn check(&self, key: &str, client_id: &MqttString) {
        let Some(written) = self.state().owned.get(key).map(|owned| owned.revision) else {
            return;
        };
        match self.read(key).await {
            Ok((_, revision)) if revision == written => {}
            Ok((Some(entry), _)) if entry.node == self.node_id => {}
            Ok((entry, _)) => {
                let holder = entry.map_or_else(|| "nobody".to_owned(), |entry| entry.node);
                self.fenced(key, client_id, &holder).await;
            }
            Err(error) => debug!("cannot check the record of {client_id:?}: {error}"),
        }
    }
}
