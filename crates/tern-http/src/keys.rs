//! The key file in the data directory (`http-keys.json`, secrets sealed under `http.key`):
//! read at start, read again whenever it changes (`tern key` writes it while the broker runs,
//! by renaming a complete copy into place), and written by `tern key`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tern_auth::keyring::{KEYS_FILE, MASTER_KEY_FILE, SECRETS_PER_KEY_MAX};
use tern_auth::{Credential, KeyLogins, KeyRing, MasterKey};
use tracing::{info, warn};

/// The keys in force, shared by the HTTP tasks (and MQTT logins with keys).
#[derive(Debug)]
pub(crate) struct Keys {
    dir: PathBuf,
    /// How far a key login's time may be from the broker's clock.
    window_secs: u64,
    ring: RwLock<Arc<KeyRing>>,
    /// What unknown keys are answered with (see [`MasterKey::decoy`]).
    decoys: MasterKey,
    /// The key file's modification time and length when last read.
    stamp: RwLock<Option<(SystemTime, u64)>>,
}

impl Keys {
    /// Reads the keys in `dir` (none if there is no key file); key logins over MQTT are
    /// accepted within `window_secs` of the broker's clock.
    pub(crate) fn load(dir: &Path, window_secs: u64) -> Result<Self, String> {
        let stamp = stamp(dir);
        let (ring, master) = read(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            window_secs,
            ring: RwLock::new(Arc::new(ring)),
            decoys: master.unwrap_or_else(MasterKey::random),
            stamp: RwLock::new(stamp),
        })
    }

    /// The keys in force now.
    pub(crate) fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(ring) => Arc::clone(&ring),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The key a request names, if it is known, and the secrets to check or sign with:
    /// always [`SECRETS_PER_KEY_MAX`] of them, decoys standing in for an unknown key or a
    /// missing second secret, so neither the work done nor the answer tells keys apart.
    pub(crate) fn secrets(
        &self,
        key_id: &str,
        client: Option<&str>,
    ) -> (Option<Credential>, Vec<[u8; 32]>) {
        let credential = self.ring().lookup(key_id, client);
        let mut secrets = credential
            .as_ref()
            .map(|credential| credential.secrets.clone())
            .unwrap_or_default();
        while secrets.len() < SECRETS_PER_KEY_MAX {
            let label = format!("{key_id}\0{}", secrets.len());
            secrets.push(self.decoys.decoy(&label));
        }
        (credential, secrets)
    }

    /// Reads the key file again if it changed; a file that does not read leaves the keys in
    /// force (logged).
    pub(crate) fn reload_if_changed(&self) {
        if !stamp_changed(&self.stamp, &self.dir.join(KEYS_FILE)) {
            return;
        }
        match read(&self.dir) {
            Ok((ring, _)) => {
                let count = ring.keys().count();
                if let Ok(mut current) = self.ring.write() {
                    *current = Arc::new(ring);
                }
                info!("HTTP keys reloaded: {count} key(s)");
            }
            Err(error) => warn!("cannot reload the HTTP keys, keeping those in force: {error}"),
        }
    }
}

/// MQTT logins with the same keys (`tern_auth::key_login`).
impl KeyLogins for Keys {
    fn secrets(&self, key_id: &str, client_id: &str) -> (Option<Credential>, Vec<[u8; 32]>) {
        Self::secrets(self, key_id, Some(client_id))
    }

    fn window_secs(&self) -> u64 {
        self.window_secs
    }
}

fn stamp(dir: &Path) -> Option<(SystemTime, u64)> {
    file_stamp(&dir.join(KEYS_FILE))
}

/// A file's modification time and length, which say when it changed.
pub(crate) fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Whether `path` changed since `seen`, which is then brought up to date.
pub(crate) fn stamp_changed(seen: &RwLock<Option<(SystemTime, u64)>>, path: &Path) -> bool {
    let now = file_stamp(path);
    let changed = seen.read().map_or(true, |seen| *seen != now);
    if changed {
        if let Ok(mut seen) = seen.write() {
            *seen = now;
        }
    }
    changed
}

/// The key ring in `dir` and the master key (both absent in a directory without keys).
pub fn read(dir: &Path) -> Result<(KeyRing, Option<MasterKey>), String> {
    let path = dir.join(KEYS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((KeyRing::default(), master_key(dir, false)?));
        }
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let master = master_key(dir, false)?.ok_or_else(|| {
        format!(
            "{} has keys but {MASTER_KEY_FILE} is missing",
            path.display()
        )
    })?;
    let ring = KeyRing::parse(&text, &master).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((ring, Some(master)))
}

/// The master key in `dir`; with `create`, made (mode 0600) when missing.
pub fn master_key(dir: &Path, create: bool) -> Result<Option<MasterKey>, String> {
    let path = dir.join(MASTER_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                format!("{} holds {} bytes, not 32", path.display(), bytes.len())
            })?;
            Ok(Some(MasterKey::from_bytes(bytes)))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
            let master = MasterKey::random();
            write_private(dir, MASTER_KEY_FILE, &master.to_bytes())?;
            Ok(Some(master))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Writes the key ring to `dir` (sealed with `master`), replacing the file in one step.
pub fn write(dir: &Path, ring: &KeyRing, master: &MasterKey) -> Result<(), String> {
    write_private(dir, KEYS_FILE, ring.render(master).as_bytes())
}

/// Writes `name` in `dir` with mode 0600: a copy beside it, synced, renamed into place.
pub(crate) fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let partial = dir.join(format!("{name}.new"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| -> std::io::Result<()> {
        let mut file = options.open(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))
}
