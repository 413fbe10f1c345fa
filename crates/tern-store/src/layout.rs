//! The data directory as found, before the engine opens it.
//!
//! fjall 2.x keeps a store as: `version` (its format marker, the bytes `FJL` 2), `journals/`
//! (numbered journal files, the highest being written) and `partitions/NAME/` (one LSM tree
//! each, with a `manifest`). Beside them Tern keeps its commit marker. The engine treats
//! missing pieces as new: without `version` it creates a store over whatever is there (its
//! first journal overwritten), without a journal it starts an empty one, a partition folder
//! missing is created empty (the journal's entries for it skipped) and one without a manifest
//! is deleted; at the first journal entry it cannot read it cuts the journal, dropping what
//! follows. So all of it is checked here first, and refused, or repaired when recovering.

use std::io;
use std::path::Path;

use tracing::info;

use crate::commit::{self, Marker};
use crate::journal::{self, End};
use crate::salvage::Salvage;
use crate::StoreError;

const ENGINE_VERSION: &str = "version";
/// The content of `version` for the fjall release this build uses.
const ENGINE_VERSION_BYTES: &[u8] = b"FJL\x02";
const JOURNALS: &str = "journals";
const PARTITIONS: &str = "partitions";
const MANIFEST: &str = "manifest";
/// What `mkfs` leaves at the root of a file system: a data directory that is a mount point
/// holds it from the start.
const LOST_AND_FOUND: &str = "lost+found";
/// Files the broker keeps in the data directory beside the store: the secret SCRAM salts of
/// unknown users are made from (docs/design/auth.md), the HTTP bridge's keys and the master key
/// that seals them, its operator tokens and bans (docs/http.md), and their copies being
/// written. They are not the store's,
/// and not a sign of a directory that belongs to something else.
pub const BESIDE_THE_STORE: &[&str] = &[
    "auth.key",
    "auth.key.new",
    "http.key",
    "http.key.new",
    "http-keys.json",
    "http-keys.json.new",
    "http-tokens.json",
    "http-tokens.json.new",
    "http-bans.json",
    "http-bans.json.new",
];

/// What the directory holds.
#[derive(Debug)]
pub(crate) struct Found {
    /// Nothing yet: a new store is made.
    pub(crate) fresh: bool,
    /// The commit marker.
    pub(crate) marker: Marker,
    /// The partitions whose folders were missing or incomplete (recovering: the engine makes
    /// them anew, empty).
    pub(crate) lost_partitions: Vec<&'static str>,
    /// Partitions of a newer format than the oldest this build converts that were not there
    /// (with their folder's state): damage only if the store is of this build's format.
    pub(crate) newer_missing: Vec<(&'static str, String)>,
}

impl Found {
    fn fresh() -> Self {
        Self {
            fresh: true,
            marker: Marker::Absent,
            lost_partitions: Vec::new(),
            newer_missing: Vec::new(),
        }
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `file` in `dir` and syncs both.
fn write_synced(dir: &Path, file: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, bytes)?;
    std::fs::File::open(&path)?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Whether `dir` holds only the empty beginnings the engine makes before its `version` file:
/// `journals/` with zero-filled journals and an empty `partitions/` (a creation cut off).
fn unfinished_creation(dir: &Path, entries: &[String]) -> io::Result<bool> {
    if !entries.iter().all(|e| e == JOURNALS || e == PARTITIONS) {
        return Ok(false);
    }
    let partitions = dir.join(PARTITIONS);
    if partitions.is_dir() && std::fs::read_dir(&partitions)?.next().is_some() {
        return Ok(false);
    }
    let journals = dir.join(JOURNALS);
    if journals.is_dir() {
        for entry in std::fs::read_dir(&journals)? {
            let path = entry?.path();
            if !path.is_file() || std::fs::read(&path)?.iter().any(|b| *b != 0) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Looks at `dir` before the engine opens it: `partitions` are the store's partitions, of which
/// `newer` are absent from a store of an older format.
pub(crate) fn inspect(
    dir: &Path,
    partitions: &[&'static str],
    newer: &[&'static str],
    salvage: &mut Salvage,
) -> Result<Found, StoreError> {
    let io = io_error(dir);
    let entries: Vec<String> = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::fresh()),
        Err(e) => return Err(io(e)),
        Ok(read) => read
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|name| {
                !matches!(name, Ok(name) if name == LOST_AND_FOUND
                    || BESIDE_THE_STORE.contains(&name.as_str()))
            })
            .collect::<io::Result<_>>()
            .map_err(&io)?,
    };
    let has = |name: &str| entries.iter().any(|e| e == name);
    let marker = commit::read(dir).map_err(&io)?;
    if entries.is_empty() {
        return Ok(Found::fresh());
    }
    if !has(ENGINE_VERSION) && marker == Marker::Absent {
        if !has(JOURNALS) && !has(PARTITIONS) {
            return Err(StoreError::Unusable {
                path: dir.to_owned(),
                problem: "it is not empty but holds no Tern store (no `version` file, \
                          `journals` or `partitions`): give a new or an empty directory"
                    .to_owned(),
            });
        }
        if unfinished_creation(dir, &entries).map_err(&io)? {
            return Ok(Found::fresh());
        }
    }
    let rewrite_version = || {
        write_synced(dir, ENGINE_VERSION, ENGINE_VERSION_BYTES)?;
        Ok("rewrote it (nothing else is lost with it)".to_owned())
    };
    match std::fs::read(dir.join(ENGINE_VERSION)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => salvage.damaged(
            "the engine's `version` file is missing".to_owned(),
            rewrite_version,
        )?,
        Err(e) => return Err(io(e)),
        // Another fjall format is the engine's to refuse; only a file that is not one at all
        // is damage.
        Ok(bytes) if !bytes.starts_with(b"FJL") => salvage.damaged(
            "the engine's `version` file is damaged".to_owned(),
            rewrite_version,
        )?,
        Ok(_) => {}
    }
    if marker == Marker::Damaged {
        salvage.damaged(
            format!("the commit marker {} is damaged", commit::FILE),
            || Ok("it is written anew after loading".to_owned()),
        )?;
    }
    check_journals(dir, salvage)?;
    let (lost_partitions, newer_missing) =
        check_partitions(dir, partitions, newer, marker, salvage)?;
    Ok(Found {
        fresh: false,
        marker,
        lost_partitions,
        newer_missing,
    })
}

/// The partitions of the newer formats that a store of its version must have had (`made`)
/// must be there (recovering: the engine made them anew, empty).
pub(crate) fn check_newer_partitions(
    found: &Found,
    made: &[&str],
    salvage: &mut Salvage,
) -> Result<(), StoreError> {
    let missing = found
        .newer_missing
        .iter()
        .filter(|(name, _)| made.contains(name));
    for (name, state) in missing {
        salvage.damaged(format!("partition `{name}` {state}"), || {
            Ok(format!(
                "partition `{name}` recreated empty; its records are lost"
            ))
        })?;
    }
    Ok(())
}

/// Whether the engine's `folder` is there: missing, it is damage (recovering, made empty).
fn engine_folder(folder: &Path, salvage: &mut Salvage) -> Result<bool, StoreError> {
    if folder.is_dir() {
        return Ok(true);
    }
    salvage.damaged(format!("{} is missing", folder.display()), || {
        std::fs::create_dir_all(folder)?;
        Ok("made it empty".to_owned())
    })?;
    Ok(false)
}

/// The journals must be there and read to their end.
fn check_journals(dir: &Path, salvage: &mut Salvage) -> Result<(), StoreError> {
    let io = io_error(dir);
    let folder = dir.join(JOURNALS);
    if !engine_folder(&folder, salvage)? {
        return Ok(());
    }
    let journals = journal::files(&folder)
        .map_err(&io)?
        .map_err(|stray| StoreError::Unusable {
            path: dir.to_owned(),
            problem: format!(
                "{} is not a journal file, and the engine cannot open the store with it \
                 there: move it away",
                stray.display()
            ),
        })?;
    if journals.is_empty() {
        salvage.damaged(format!("`{JOURNALS}` holds no journal"), || {
            Ok("the engine starts a new one".to_owned())
        })?;
    }
    let last = journals.len().saturating_sub(1);
    for (index, (_, path)) in journals.iter().enumerate() {
        let scan = journal::scan(path).map_err(&io)?;
        let at = scan.readable;
        let cut = || {
            journal::truncate(path, at)?;
            Ok::<_, io::Error>(())
        };
        match scan.end {
            End::Clean => {}
            // The journal being written may end in a write a crash cut off: never
            // acknowledged (the commit marker tells if it was), and cut off by the engine too.
            End::Torn { reason } if index == last => {
                info!(
                    "journal {}: dropping an unfinished last write at byte {at} ({reason})",
                    path.display()
                );
                cut().map_err(&io)?;
            }
            End::Torn { reason } => salvage.damaged(
                format!(
                    "journal {} is damaged at byte {at} ({reason})",
                    path.display()
                ),
                || {
                    cut()?;
                    Ok("cut it there".to_owned())
                },
            )?,
            End::Damaged {
                reason,
                batches,
                records,
            } => salvage.damaged(
                format!(
                    "journal {} is damaged at byte {at} ({reason}); {batches} batches \
                     ({records} records) after it cannot be read back",
                    path.display()
                ),
                || {
                    cut()?;
                    Ok("dropped them".to_owned())
                },
            )?,
        }
    }
    Ok(())
}

/// What `check_partitions` found missing: partitions lost, and partitions of a newer format
/// absent (with their folder's state).
type Missing = (Vec<&'static str>, Vec<(&'static str, String)>);

/// Once the store is made (its commit marker written, or in a store older than the marker,
/// its `meta` partition made, which is made last), every partition must be there whole; those
/// of a newer format (`newer`) are looked at once the format is known.
fn check_partitions(
    dir: &Path,
    partitions: &[&'static str],
    newer: &[&'static str],
    marker: Marker,
    salvage: &mut Salvage,
) -> Result<Missing, StoreError> {
    let folder = dir.join(PARTITIONS);
    engine_folder(&folder, salvage)?;
    let whole = |name: &str| folder.join(name).join(MANIFEST).is_file();
    if marker == Marker::Absent && !whole(crate::META_PARTITION) {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut lost = Vec::new();
    let mut newer_missing = Vec::new();
    for name in partitions {
        if whole(name) {
            continue;
        }
        let state = if folder.join(name).is_dir() {
            "has no manifest"
        } else {
            "is missing"
        };
        if newer.contains(name) {
            newer_missing.push((*name, format!("{state} ({})", folder.join(name).display())));
            continue;
        }
        salvage.damaged(
            format!(
                "partition `{name}` {state} ({})",
                folder.join(name).display()
            ),
            || {
                Ok(format!(
                    "partition `{name}` recreated empty; its records are lost"
                ))
            },
        )?;
        lost.push(*name);
    }
    Ok((lost, newer_missing))
}
