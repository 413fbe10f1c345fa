//! A node's lease, and what happens when another node's lease lapses.
//!
//! Each node renews `n.<node>` in `TERN_NODES` (whose values live `lease_secs`) a few times per
//! term, and keeps `m.<node>` in the sessions bucket, which does not expire: the members the
//! cluster has had. A member without a lease is dead; its sessions (listed by their index keys,
//! `o.<node>.<session key>`) are adopted by the live nodes, each by the one that comes first for
//! it by rendezvous hash, or, should that one not, by any after a further lease.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tern_codec::MqttString;
use tern_core::{ClusterInput, NodeStatus};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::sessions::{lease_key, Job, Sessions, SESSIONS_BUCKET};

/// Wait before renewing the lease again after a renewal failed: soon, as the lease runs out
/// meanwhile.
const RENEWAL_RETRY: Duration = Duration::from_millis(100);

/// The member key of `node` in the sessions bucket.
fn member_key(node: &str) -> String {
    format!("m.{node}")
}

/// The index key of the session `key` held by `node`.
pub(crate) fn index_key(node: &str, key: &str) -> String {
    format!("o.{node}.{key}")
}

/// The subject of a key of the sessions bucket.
pub(crate) fn bucket_subject(key: &str) -> String {
    format!("$KV.{SESSIONS_BUCKET}.{key}")
}

/// The node that comes first for session `key` among `nodes` (rendezvous hashing): every node
/// with the same view of who is alive picks the same one, and a node's death moves only its
/// own sessions.
pub(crate) fn rendezvous<'a>(key: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes
        .iter()
        .max_by_key(|node| {
            let mut bytes = Vec::with_capacity(node.len() + key.len() + 1);
            bytes.extend_from_slice(node.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(key.as_bytes());
            xxhash_rust::xxh3::xxh3_64(&bytes)
        })
        .map(String::as_str)
}

/// A lease's value: the node's boot identity, then its connections and sessions.
fn lease_value(boot: u64, (connections, sessions): (u64, u64)) -> Bytes {
    let mut value = Vec::with_capacity(24);
    for part in [boot, connections, sessions] {
        value.extend_from_slice(&part.to_be_bytes());
    }
    Bytes::from(value)
}

/// The connections and sessions a lease's value says, if it says them.
fn lease_load(value: &[u8]) -> Option<(u64, u64)> {
    let part = |at: usize| Some(u64::from_be_bytes(value.get(at..at + 8)?.try_into().ok()?));
    Some((part(8)?, part(16)?))
}

impl Sessions {
    /// Holds this node's lease, renewing it a few times per term, and after each renewal looks
    /// for members whose lease lapsed. A renewal that comes after this node's own lease lapsed
    /// (the process was paused, or NATS out of reach) checks every record this node holds
    /// before anything else: another node may have taken or adopted sessions meanwhile.
    pub(crate) async fn hold_lease(self: Arc<Self>) {
        let key = lease_key(&self.node_id);
        let value = Bytes::copy_from_slice(&self.boot.to_be_bytes());
        let member = member_key(&self.node_id);
        let mut stale_since: HashMap<String, Instant> = HashMap::new();
        loop {
            let lease = lease_value(self.boot, self.counters.load());
            let renewal = async {
                tokio::join!(
                    self.nodes.put(&key, lease),
                    self.kv.put(&member, value.clone())
                )
            };
            // A renewal sent into a connection not yet known dead (its server stopped) would
            // wait out JetStream's 5 s timeout, and the next come a third of the lease later:
            // the lease could run out while another server was there all along.
            let renewed = tokio::time::timeout(self.renewal_timeout(), renewal).await;
            let pause = match renewed {
                Ok((Ok(_), Ok(_))) => {
                    let gap = {
                        let mut last = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
                        let gap = last.elapsed();
                        *last = Instant::now();
                        gap
                    };
                    if gap > self.lease {
                        warn!(
                            "this node's lease lapsed ({:.1} s without renewal): checking which \
                             sessions are still its own",
                            gap.as_secs_f64()
                        );
                        self.check_all();
                    } else {
                        self.reap(&mut stale_since).await;
                    }
                    // The cursors of connected sessions are written as often as the lease.
                    let _ = self.inputs.send(ClusterInput::Checkpoint).await;
                    self.lease / 3
                }
                Ok((Err(error), _) | (_, Err(error))) => {
                    debug!("lease not renewed: {error}; trying again");
                    RENEWAL_RETRY
                }
                Err(_) => {
                    let timeout = self.renewal_timeout();
                    debug!("lease not renewed within {timeout:?}; trying again");
                    RENEWAL_RETRY
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// How long one renewal may take: a sixth of the lease, so that a few may fail before it
    /// runs out, but not less than a second on a loaded machine.
    fn renewal_timeout(&self) -> Duration {
        (self.lease / 6).max(Duration::from_secs(1))
    }

    /// Checks every record this node holds.
    fn check_all(self: &Arc<Self>) {
        let owned: Vec<(String, MqttString)> = self
            .state()
            .owned
            .iter()
            .map(|(key, owned)| (key.clone(), owned.client_id.clone()))
            .collect();
        for (key, client_id) in owned {
            self.enqueue(key, Job::Check(client_id));
        }
    }

    /// Whether this node renewed its lease within the term: a node that did not may be the one
    /// the others count as dead, and adopts nothing.
    fn lease_current(&self) -> bool {
        let last = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        last.elapsed() < self.lease
    }

    /// Finds the members without a lease and queues the adoption of their sessions: those this
    /// node comes first for at once, the others once they have waited a further lease.
    async fn reap(self: &Arc<Self>, stale_since: &mut HashMap<String, Instant>) {
        let Ok(members) = self.listed("m.*").await else {
            return;
        };
        let mut live = Vec::new();
        let mut dead = Vec::new();
        let mut view = Vec::new();
        for member in members {
            let Some(node) = member.strip_prefix("m.") else {
                continue;
            };
            let lease = match self.nodes.get(lease_key(node)).await {
                Ok(lease) => lease,
                Err(error) => {
                    debug!("cannot read the lease of {node}: {error}");
                    return;
                }
            };
            view.push(NodeStatus {
                id: node.to_owned(),
                alive: lease.is_some(),
                load: lease.as_deref().and_then(lease_load),
            });
            match lease {
                Some(_) => live.push(node.to_owned()),
                None => dead.push(node.to_owned()),
            }
        }
        let _ = self.inputs.send(ClusterInput::Nodes(view)).await;
        let seen: HashSet<String> = dead.iter().cloned().collect();
        stale_since.retain(|key, _| seen.contains(key.split('.').nth(1).unwrap_or_default()));
        for node in dead {
            let Ok(keys) = self.listed(&format!("o.{node}.>")).await else {
                continue;
            };
            if keys.is_empty() {
                // Nothing of it is left to adopt: it is no longer a member.
                let subject = bucket_subject(&member_key(&node));
                if self.lease_current() && self.bucket_stream.purge().filter(subject).await.is_ok()
                {
                    info!("node {node} is gone and none of its sessions is left to adopt");
                }
                continue;
            }
            for index in keys {
                let Some(key) = index.strip_prefix(&format!("o.{node}.")) else {
                    continue;
                };
                let first = rendezvous(key, &live) == Some(self.node_id.as_str());
                let waited = stale_since
                    .entry(index.clone())
                    .or_insert_with(Instant::now)
                    .elapsed()
                    > self.lease;
                if !(first || waited) || !self.lease_current() {
                    continue;
                }
                if self.state().adopting.insert(key.to_owned()) {
                    self.enqueue(key.to_owned(), Job::Adopt(node.clone()));
                }
            }
        }
    }

    /// The keys of the sessions bucket under `pattern` (a subject pattern of keys), as the
    /// bucket's stream lists its subjects.
    pub(crate) async fn listed(&self, pattern: &str) -> Result<Vec<String>, ()> {
        let prefix = bucket_subject("");
        let info = self
            .bucket_stream
            .info_with_subjects(bucket_subject(pattern));
        let mut subjects = match info.await {
            Ok(subjects) => subjects,
            Err(error) => {
                warn!("cannot list {pattern} in {SESSIONS_BUCKET}: {error}");
                return Err(());
            }
        };
        let mut keys = Vec::new();
        while let Some(listed) = subjects.next().await {
            match listed {
                Ok((subject, _)) => {
                    if let Some(key) = subject.strip_prefix(&prefix) {
                        keys.push(key.to_owned());
                    }
                }
                Err(error) => {
                    warn!("cannot list {pattern} in {SESSIONS_BUCKET}: {error}");
                    return Err(());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_carries_its_nodes_load() {
        let value = lease_value(7, (3, 12));
        assert_eq!(lease_load(&value), Some((3, 12)));
        // A lease of a node of an earlier release holds its boot identity only.
        assert_eq!(lease_load(&7u64.to_be_bytes()), None);
    }

    #[test]
    fn rendezvous_moves_only_the_sessions_of_the_node_that_left() {
        let three: Vec<String> = ["n1", "n2", "n3"].map(str::to_owned).to_vec();
        let two: Vec<String> = ["n1", "n3"].map(str::to_owned).to_vec();
        let mut counts = HashMap::new();
        for n in 0..300 {
            let key = format!("s.c{n}");
            let before = rendezvous(&key, &three).unwrap();
            let after = rendezvous(&key, &two).unwrap();
            if before != "n2" {
                assert_eq!(before, after, "{key} moved though its node stayed");
            }
            *counts.entry(after).or_insert(0) += 1;
        }
        // Spread over both survivors, not all on one.
        assert!(counts.values().all(|&count| count > 100), "{counts:?}");
    }
}
