//! The `meta` partition, read at open: the format version (refused if another, converted if
//! older, written in a new store) and the commit counter, compared with the commit marker.

use std::path::Path;

use crate::commit::{self, Marker};
use crate::layout::Found;
use crate::salvage::Salvage;
use crate::{StoreError, FORMAT_VERSION, FORMAT_VERSION_OLDEST, META_PARTITION};

/// What the format version read from `meta` calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// This build's: nothing.
    Current,
    /// None, in a new store, or when recovering one whose version is missing or unreadable:
    /// this build's is written.
    Write,
    /// An older version this build converts.
    Older(u32),
}

/// Checks the format version read from `meta`.
pub(crate) fn check_format(
    path: &Path,
    format: Option<fjall::Slice>,
    is_empty: bool,
    salvage: &mut Salvage,
) -> Result<Format, StoreError> {
    let mut found = Format::Current;
    let mut set = || {
        found = Format::Write;
        Ok(format!("set to version {FORMAT_VERSION}"))
    };
    match format {
        Some(value) => match <[u8; 4]>::try_from(&value[..]).map(u32::from_be_bytes) {
            Ok(FORMAT_VERSION) => {}
            Ok(older @ FORMAT_VERSION_OLDEST..FORMAT_VERSION) => found = Format::Older(older),
            Ok(other) => {
                return Err(StoreError::UnknownVersion {
                    path: path.to_owned(),
                    found: other,
                })
            }
            Err(_) => salvage.corrupt("meta", "format version is not 4 bytes", &mut set)?,
        },
        // A new store, or one whose making was cut off: nothing to misread.
        None if is_empty => found = Format::Write,
        None => salvage.corrupt("meta", "records without a format version", &mut set)?,
    }
    Ok(found)
}

/// The commit counter read from `meta` (0 in a new store, or one made before the counter).
pub(crate) fn read_counter(
    value: Option<fjall::Slice>,
    salvage: &mut Salvage,
) -> Result<u64, StoreError> {
    let Some(value) = value else { return Ok(0) };
    match <[u8; 8]>::try_from(&value[..]) {
        Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
        Err(_) => {
            salvage.corrupt("meta", "commit counter is not 8 bytes", || {
                Ok("counting again from 0".to_owned())
            })?;
            Ok(0)
        }
    }
}

/// Compares the last batch the store reads back (`committed`) with the commit marker: fewer
/// means committed batches were lost (a journal emptied, deleted or cut short).
pub(crate) fn check_committed(
    path: &Path,
    found: &Found,
    committed: u64,
    salvage: &mut Salvage,
) -> Result<(), StoreError> {
    if found.lost_partitions.contains(&META_PARTITION) {
        // The counter went with `meta`; the loss is told as that partition's.
        return Ok(());
    }
    match found.marker {
        Marker::Committed(recorded) if recorded > committed => {
            let lost = recorded - committed;
            salvage.damaged(
                format!(
                    "batch {recorded} was committed, but the store reads back only to batch \
                     {committed}: {lost} committed batches are missing"
                ),
                || Ok(format!("{lost} committed batches lost")),
            )
        }
        Marker::Absent if committed > 0 && !found.fresh => salvage.damaged(
            format!(
                "the commit marker {} is missing",
                path.join(commit::FILE).display()
            ),
            || Ok("it is written anew".to_owned()),
        ),
        _ => Ok(()),
    }
}
