//! The commit marker: a small file beside the engine's, holding the number of the last batch
//! the store committed. Each batch also writes its number into the `meta` partition, so a
//! store that reads back an older number than the marker's has lost committed batches (a
//! journal emptied, deleted or cut short), which the engine alone would not notice.
//!
//! The marker is written after the batch is synced (or, with `durability = "os"`, handed to
//! the operating system; then at most once a millisecond), so it never runs ahead of the
//! journal; it is not synced itself on every batch: after a power loss it may lag, which only
//! narrows the check.

use std::fs::File;
use std::io;
use std::path::Path;

/// The marker's file name in the data directory.
pub(crate) const FILE: &str = "committed";
/// Its size: the batch number, then its bitwise complement, so damage to it is seen.
const SIZE: usize = 16;

/// What the marker file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// No marker: a store made before markers were kept, or one whose creation was cut off.
    Absent,
    /// The number of the last batch committed.
    Committed(u64),
    /// A marker that does not read.
    Damaged,
}

/// Reads the marker in `dir`.
pub(crate) fn read(dir: &Path) -> io::Result<Marker> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Marker::Absent),
        Err(e) => return Err(e),
    };
    let decoded = <[u8; SIZE]>::try_from(&bytes[..]).ok().and_then(|b| {
        let number = u64::from_be_bytes(b[..8].try_into().ok()?);
        let check = u64::from_be_bytes(b[8..].try_into().ok()?);
        (check == !number).then_some(number)
    });
    Ok(decoded.map_or(Marker::Damaged, Marker::Committed))
}

fn encode(number: u64) -> [u8; SIZE] {
    let mut bytes = [0; SIZE];
    bytes[..8].copy_from_slice(&number.to_be_bytes());
    bytes[8..].copy_from_slice(&(!number).to_be_bytes());
    bytes
}

/// The marker file, open for writing.
#[derive(Debug)]
pub(crate) struct MarkerFile {
    file: File,
}

impl MarkerFile {
    /// Writes `number` into the marker in `dir` (creating it) and syncs it and the directory.
    pub(crate) fn create(dir: &Path, number: u64) -> io::Result<Self> {
        let path = dir.join(FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let marker = Self { file };
        marker.record(number)?;
        marker.file.set_len(SIZE as u64)?;
        marker.file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(marker)
    }

    /// Records `number` as the last batch committed (one write, not synced).
    pub(crate) fn record(&self, number: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&encode(number), 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

    use super::*;

    #[test]
    fn a_marker_reads_back_and_damage_to_it_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Marker::Absent);
        let marker = MarkerFile::create(dir.path(), 41).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Marker::Committed(41));
        marker.record(42).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Marker::Committed(42));
        let mut bytes = std::fs::read(dir.path().join(FILE)).unwrap();
        bytes[7] ^= 1;
        std::fs::write(dir.path().join(FILE), &bytes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Marker::Damaged);
        std::fs::write(dir.path().join(FILE), b"").unwrap();
        assert_eq!(read(dir.path()).unwrap(), Marker::Damaged);
    }
}
