//! What happens to damage found while opening and loading the store: by default each problem
//! is the error that stops the broker; when recovering (`tern serve --recover`), it is
//! repaired, logged as a warning with what it cost, and summed up once the store is loaded.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use fjall::{Batch, PartitionHandle};
use tracing::{info, warn};

use crate::StoreError;

/// Damage found so far, and whether to repair it.
#[derive(Debug)]
pub(crate) struct Salvage {
    path: PathBuf,
    recover: bool,
    /// Each problem repaired, with what the repair did.
    repaired: Vec<String>,
    /// Records that did not decode and were dropped: per partition, how many and the first
    /// reason.
    dropped: BTreeMap<&'static str, (u64, String)>,
    /// Records left by sessions no longer stored, dropped at the load.
    orphans: u64,
}

impl Salvage {
    pub(crate) fn new(path: &Path, recover: bool) -> Self {
        Self {
            path: path.to_owned(),
            recover,
            repaired: Vec::new(),
            dropped: BTreeMap::new(),
            orphans: 0,
        }
    }

    /// The store is damaged (`problem`): an error, or when recovering, `repair` runs and
    /// what it says it did is logged.
    pub(crate) fn damaged(
        &mut self,
        problem: String,
        repair: impl FnOnce() -> io::Result<String>,
    ) -> Result<(), StoreError> {
        let refusal = StoreError::Damaged {
            path: self.path.clone(),
            problem: problem.clone(),
        };
        self.handle(problem, refusal, repair)
    }

    /// A `partition` record is corrupt: an error, or when recovering, `repair` runs.
    pub(crate) fn corrupt(
        &mut self,
        partition: &'static str,
        reason: &str,
        repair: impl FnOnce() -> io::Result<String>,
    ) -> Result<(), StoreError> {
        let refusal = StoreError::Corrupt {
            path: self.path.clone(),
            partition,
            reason: reason.to_owned(),
        };
        self.handle(format!("{partition}: {reason}"), refusal, repair)
    }

    fn handle(
        &mut self,
        problem: String,
        refusal: StoreError,
        repair: impl FnOnce() -> io::Result<String>,
    ) -> Result<(), StoreError> {
        if !self.recover {
            return Err(refusal);
        }
        let done = repair().map_err(|source| StoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        warn!(
            "recovering the store in {}: {problem}: {done}",
            self.path.display()
        );
        self.repaired.push(format!("{problem}: {done}"));
        Ok(())
    }

    /// A record that does not decode (`error`, a [`StoreError::Corrupt`]): returned, or when
    /// recovering, counted; the caller then drops the record.
    pub(crate) fn undecodable(&mut self, error: StoreError) -> Result<(), StoreError> {
        let StoreError::Corrupt {
            partition, reason, ..
        } = &error
        else {
            return Err(error);
        };
        if !self.recover {
            return Err(error);
        }
        self.dropped
            .entry(partition)
            .or_insert_with(|| (0, reason.clone()))
            .0 += 1;
        Ok(())
    }

    /// Records `count` records of sessions no longer stored as dropped. Removing a session
    /// can leave a few, but after damage they tell what else went with a lost session.
    pub(crate) fn orphans(&mut self, count: u64) {
        self.orphans += count;
    }

    /// Logs what the recovery cost, once the store is loaded.
    pub(crate) fn report(&self) {
        if !self.recover {
            return;
        }
        let mut lost: Vec<String> = self.repaired.clone();
        lost.extend(self.dropped.iter().map(|(partition, (count, first))| {
            format!("{count} {partition} records could not be decoded and were dropped (the first: {first})")
        }));
        if !lost.is_empty() && self.orphans > 0 {
            lost.push(format!(
                "{} records of sessions no longer stored were dropped",
                self.orphans
            ));
        }
        if lost.is_empty() {
            info!("the store in {} needed no recovery", self.path.display());
        } else {
            warn!(
                "recovered the store in {}: {}",
                self.path.display(),
                lost.join("; ")
            );
        }
    }
}

/// Counts records while loading and logs a line now and then, so a large recovery is visibly
/// moving.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) count: u64,
}

impl Progress {
    pub(crate) fn tick(&mut self) {
        self.count += 1;
        if self.count % crate::PROGRESS_EVERY == 0 {
            info!("recovering the store: {} records loaded", self.count);
        }
    }
}

/// A record that does not decode (`error`): returned, or when recovering, counted and
/// deleted from `partition` with the `dropped` batch.
pub(crate) fn drop_record(
    salvage: &mut Salvage,
    dropped: &mut Batch,
    partition: &PartitionHandle,
    key: fjall::Slice,
    error: StoreError,
) -> Result<(), StoreError> {
    salvage.undecodable(error)?;
    dropped.remove(partition, key);
    Ok(())
}
