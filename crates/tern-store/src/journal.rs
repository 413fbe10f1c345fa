//! Reads fjall's journal files the way the engine replays them, without changing them, so that
//! damage inside a journal is found before the engine opens it: the engine stops at the first
//! entry it cannot read and cuts the file there, dropping every batch after it without a word.
//!
//! The layout read here is fjall 2.x's (`journal/marker.rs`; see docs/design/store-format.md).
//! A batch is a start entry, its items, then an end entry:
//! - start: `[1][item count u32][seqno u64][compression: 0 0]`;
//! - item: `[2][value type u8: 0..=2][partition len u8][partition][key len u16][key]`
//!   `[value len u32][value]`;
//! - end: `[3][checksum u64: XXH3 of the batch's item entries]["FJL" 2]`.
//!
//! Integers are big-endian. A new journal file is preallocated with zeros, so zeros after the
//! last batch are its normal end.

use std::io;
use std::path::{Path, PathBuf};

const START: u8 = 1;
const ITEM: u8 = 2;
const END: u8 = 3;
const TRAILER: &[u8] = b"FJL\x02";
/// Items of this partition are Tern's bookkeeping (format, commit counter), not records.
const META_PARTITION: &[u8] = b"meta";

/// One readable batch.
struct Batch {
    /// Where the byte after it is.
    end: usize,
    /// Its items outside the `meta` partition.
    records: u64,
}

/// Why a batch cannot be read.
type Unreadable = &'static str;

/// A position in the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Unreadable> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or("a batch cut short")?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Unreadable> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, Unreadable> {
        Ok(self.array::<1>()?[0])
    }
}

/// Reads the batch starting at `at`, checking its structure and checksum as the engine does.
fn batch(bytes: &[u8], at: usize) -> Result<Batch, Unreadable> {
    let mut cursor = Cursor { bytes, at };
    if cursor.u8()? != START {
        return Err("an entry that is not a batch start");
    }
    let count = u32::from_be_bytes(cursor.array()?);
    let _seqno = cursor.array::<8>()?;
    if cursor.array::<2>()? != [0, 0] {
        return Err("an unknown compression");
    }
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    let mut records = 0;
    for _ in 0..count {
        let item_start = cursor.at;
        if cursor.u8()? != ITEM {
            return Err("fewer items than the batch announces");
        }
        if cursor.u8()? > 2 {
            return Err("an unknown item type");
        }
        let partition_len = usize::from(cursor.u8()?);
        let partition = cursor.take(partition_len)?;
        if std::str::from_utf8(partition).is_err() {
            return Err("a partition name that is not UTF-8");
        }
        let key_len = usize::from(u16::from_be_bytes(cursor.array()?));
        cursor.take(key_len)?;
        let value_len = u32::from_be_bytes(cursor.array()?);
        cursor.take(usize::try_from(value_len).map_err(|_| "a value too long")?)?;
        checksum.update(&bytes[item_start..cursor.at]);
        if partition != META_PARTITION {
            records += 1;
        }
    }
    if cursor.u8()? != END {
        return Err("more items than the batch announces");
    }
    let expected = u64::from_be_bytes(cursor.array()?);
    if cursor.take(TRAILER.len())? != TRAILER {
        return Err("a damaged batch end");
    }
    if checksum.digest() != expected {
        return Err("a checksum mismatch");
    }
    Ok(Batch {
        end: cursor.at,
        records,
    })
}

/// How a journal file ends after its last readable batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Nothing, or zeros: the normal end.
    Clean,
    /// Bytes that do not read as a batch, with no readable batch after them: in the journal
    /// being written, a last write cut off by a crash (never acknowledged).
    Torn {
        /// Why they do not read.
        reason: Unreadable,
    },
    /// Bytes that do not read as a batch, with readable batches after them: damage, which
    /// the engine would silently cut off together with everything after it.
    Damaged {
        /// Why they do not read.
        reason: Unreadable,
        /// Readable batches after the damage.
        batches: u64,
        /// Their records (items outside `meta`).
        records: u64,
    },
}

/// What one journal file holds.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Bytes of whole, readable batches from its start.
    pub(crate) readable: u64,
    /// What follows them.
    pub(crate) end: End,
}

/// Reads the journal file at `path` (the whole of it; it is read again by the engine next).
pub(crate) fn scan(path: &Path) -> io::Result<Scan> {
    let bytes = std::fs::read(path)?;
    let mut at = 0;
    let reason = loop {
        match batch(&bytes, at) {
            Ok(batch) => at = batch.end,
            Err(_) if bytes[at..].iter().all(|b| *b == 0) => {
                return Ok(Scan {
                    readable: at as u64,
                    end: End::Clean,
                });
            }
            Err(reason) => break reason,
        }
    };
    // Look for readable batches past the damage, byte by byte: they tell damage from a torn
    // last write.
    let (mut batches, mut records) = (0, 0);
    let mut next = at + 1;
    while next < bytes.len() {
        match bytes[next] {
            START => match batch(&bytes, next) {
                Ok(found) => {
                    batches += 1;
                    records += found.records;
                    next = found.end;
                }
                Err(_) => next += 1,
            },
            _ => next += 1,
        }
    }
    let end = if batches == 0 {
        End::Torn { reason }
    } else {
        End::Damaged {
            reason,
            batches,
            records,
        }
    };
    Ok(Scan {
        readable: at as u64,
        end,
    })
}

/// The journal files in `dir` with their numbers, oldest first (the engine writes to the
/// last); an entry that is not a journal is an error naming it, as the engine cannot open it.
pub(crate) fn files(dir: &Path) -> io::Result<Result<Vec<(u64, PathBuf)>, PathBuf>> {
    let mut journals = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Files the engine skips: macOS's folder metadata.
        if name == ".DS_Store" || name.starts_with("._") {
            continue;
        }
        let number = name.strip_suffix(".sealed").unwrap_or(&name).parse::<u64>();
        match number {
            Ok(number) if entry.file_type()?.is_file() => journals.push((number, entry.path())),
            _ => return Ok(Err(entry.path())),
        }
    }
    journals.sort();
    Ok(Ok(journals))
}

/// Cuts the journal file at `path` to `len` bytes, durably.
pub(crate) fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = std::fs::File::options().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

    use super::*;

    /// A batch as fjall writes it: `items` as (partition, key, value).
    fn encode(items: &[(&str, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = vec![START];
        out.extend_from_slice(&(items.len() as u32).to_be_bytes());
        out.extend_from_slice(&7u64.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for (partition, key, value) in items {
            let mut item = vec![ITEM, 0, partition.len() as u8];
            item.extend_from_slice(partition.as_bytes());
            item.extend_from_slice(&(key.len() as u16).to_be_bytes());
            item.extend_from_slice(key);
            item.extend_from_slice(&(value.len() as u32).to_be_bytes());
            item.extend_from_slice(value);
            hasher.update(&item);
            out.extend_from_slice(&item);
        }
        out.push(END);
        out.extend_from_slice(&hasher.digest().to_be_bytes());
        out.extend_from_slice(TRAILER);
        out
    }

    fn scan_bytes(bytes: &[u8]) -> Scan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0");
        std::fs::write(&path, bytes).unwrap();
        scan(&path).unwrap()
    }

    fn three_batches() -> (Vec<u8>, [usize; 3]) {
        let a = encode(&[("sessions", b"a", b"1"), ("meta", b"commit", b"1")]);
        let b = encode(&[("deliveries", b"b", b"22"), ("deliveries", b"c", b"333")]);
        let c = encode(&[("retained", b"t", b"4")]);
        let lens = [a.len(), b.len(), c.len()];
        ([a, b, c].concat(), lens)
    }

    #[test]
    fn whole_batches_then_zeros_or_nothing_are_a_clean_end() {
        let (mut bytes, _) = three_batches();
        let written = bytes.len() as u64;
        assert_eq!(scan_bytes(&bytes).end, End::Clean);
        assert_eq!(scan_bytes(&bytes).readable, written);
        bytes.resize(bytes.len() + 4096, 0);
        let scan = scan_bytes(&bytes);
        assert_eq!((scan.readable, scan.end), (written, End::Clean));
        assert_eq!(scan_bytes(&[]).end, End::Clean);
    }

    #[test]
    fn a_last_batch_cut_short_is_a_torn_write() {
        let (mut bytes, [a, b, c]) = three_batches();
        bytes.truncate(a + b + c / 2);
        bytes.resize(bytes.len() + 100, 0);
        let scan = scan_bytes(&bytes);
        assert_eq!(scan.readable, (a + b) as u64);
        assert!(matches!(scan.end, End::Torn { .. }), "{:?}", scan.end);
    }

    #[test]
    fn damage_with_readable_batches_after_it_is_found_and_counted() {
        let (bytes, [a, b, _]) = three_batches();
        // A flipped byte in the first batch's value: a checksum mismatch.
        let mut flipped = bytes.clone();
        flipped[a - 20] ^= 0xFF;
        let scan = scan_bytes(&flipped);
        assert_eq!(scan.readable, 0);
        assert_eq!(
            scan.end,
            End::Damaged {
                reason: "a checksum mismatch",
                batches: 2,
                records: 3
            }
        );
        // Flipped bytes over a batch start: the engine would stop there, without an error.
        let mut flipped = bytes.clone();
        for byte in &mut flipped[a..a + 5] {
            *byte ^= 0xFF;
        }
        let scan = scan_bytes(&flipped);
        assert_eq!(scan.readable, a as u64);
        assert!(
            matches!(
                scan.end,
                End::Damaged {
                    batches: 1,
                    records: 1,
                    ..
                }
            ),
            "{:?}",
            scan.end
        );
        // An item length made larger than the file.
        let mut flipped = bytes;
        flipped[a + b - 30] = 0xFF;
        let scan = scan_bytes(&flipped);
        assert!(
            scan.readable == a as u64 && matches!(scan.end, End::Damaged { batches: 1, .. }),
            "{scan:?}"
        );
    }

    #[test]
    fn journals_written_by_the_engine_read_clean() {
        let dir = tempfile::tempdir().unwrap();
        {
            let keyspace = fjall::Config::new(dir.path()).open().unwrap();
            let sessions = keyspace
                .open_partition("sessions", fjall::PartitionCreateOptions::default())
                .unwrap();
            let meta = keyspace
                .open_partition("meta", fjall::PartitionCreateOptions::default())
                .unwrap();
            for n in 0u32..50 {
                let mut batch = keyspace.batch();
                batch.insert(&sessions, n.to_be_bytes(), vec![n as u8; n as usize]);
                batch.remove(&sessions, (n + 1000).to_be_bytes());
                batch.insert(&meta, "commit", u64::from(n).to_be_bytes());
                batch.commit().unwrap();
            }
            keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let journals = files(&dir.path().join("journals")).unwrap().unwrap();
        assert_eq!(journals.len(), 1);
        let scan = scan(&journals[0].1).unwrap();
        assert_eq!(scan.end, End::Clean);
        assert!(scan.readable > 50 * 40, "{scan:?}");
        // Flip a byte in the middle: found, with the batches after it counted.
        let mut bytes = std::fs::read(&journals[0].1).unwrap();
        let middle = scan.readable as usize / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&journals[0].1, &bytes).unwrap();
        let damaged = super::scan(&journals[0].1).unwrap();
        assert!(damaged.readable < middle as u64);
        match damaged.end {
            End::Damaged {
                batches, records, ..
            } => {
                assert!((20..=26).contains(&batches), "{batches}");
                assert_eq!(
                    records,
                    2 * batches,
                    "two records a batch, meta not counted"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_entry_that_is_not_a_journal_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("3"), b"").unwrap();
        std::fs::write(dir.path().join("1"), b"").unwrap();
        let found = files(dir.path()).unwrap().unwrap();
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 3]);
        std::fs::write(dir.path().join("notes"), b"").unwrap();
        assert_eq!(
            files(dir.path()).unwrap().unwrap_err(),
            dir.path().join("notes")
        );
    }
}
