//! The `[auth.<name>]` profiles, `[[acl]]` rules and `acl_file` of the configuration file, and
//! how they become the broker's authenticator and authorizer.
//!
//! A listener names its profile with `auth = "<name>"`; a listener that names none uses
//! `[auth.default]`. Without any `[auth.*]` table every listener lets anonymous clients in.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Deserialize;
use tern_auth::{
    Acl, AuthService, ClientIds, DeviceKeys, FakeSaltKey, JwtVerifier, KeyLogins, PasswordFile,
    Profile, Rule,
};
use tern_net::AuthReload;

use crate::config;

/// The profile a listener without `auth = ...` uses.
pub(crate) const DEFAULT_PROFILE: &str = "default";

/// One `[auth.<name>]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthProfileConfig {
    /// Let clients without user name and password in (default: no).
    #[serde(default)]
    anonymous: bool,
    /// Password file written by `tern passwd`.
    password_file: Option<PathBuf>,
    /// MQTT 5 enhanced authentication with SCRAM-SHA-256 against the password file.
    #[serde(default)]
    scram: bool,
    jwt: Option<JwtConfig>,
    device_keys: Option<DeviceKeysConfig>,
    /// Which client identifiers clients may use: "any" (default) or "own" (their name, or
    /// their name followed by `-` and anything).
    #[serde(default)]
    client_ids: ClientIdsConfig,
    /// Users and their topics in Redis, in mosquitto-go-auth's layout.
    redis: Option<crate::auth_redis::RedisAuthConfig>,
}

/// `client_ids = "any" | "own"`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ClientIdsConfig {
    #[default]
    Any,
    Own,
}

/// `[auth.<name>.jwt]` (and the key part of `[http.operator_jwt]`)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtConfig {
    /// HS256, RS256 or ES256.
    pub(crate) algorithm: String,
    /// HS256 shared secret (or `secret_file`).
    pub(crate) secret: Option<String>,
    pub(crate) secret_file: Option<PathBuf>,
    /// RS256/ES256 public key, PEM.
    pub(crate) public_key_file: Option<PathBuf>,
    /// Claim naming the user (default `sub`).
    #[serde(default = "default_username_claim")]
    pub(crate) username_claim: String,
    /// Claim listing the topic filters the client is restricted to (optional).
    pub(crate) topics_claim: Option<String>,
    /// Clock difference tolerated on `exp`, in seconds (default 0).
    #[serde(default)]
    pub(crate) leeway_secs: u64,
}

fn default_username_claim() -> String {
    "sub".to_owned()
}

/// `[auth.<name>.device_keys]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceKeysConfig {
    /// How far a device's timestamp may be from the broker's clock, in seconds (default 300).
    #[serde(default = "default_window")]
    window_secs: u64,
    /// Secrets by owner, inline.
    #[serde(default)]
    owners: BTreeMap<String, String>,
    /// A TOML file of `owner = "secret"` lines, kept out of the main file.
    owners_file: Option<PathBuf>,
}

fn default_window() -> u64 {
    300
}

/// A file of `[[acl]]` rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    acl: Vec<Rule>,
}

/// What the configuration asks for, resolved: the authenticator, the authorizer, and each
/// profile's index by name.
#[derive(Debug)]
pub(crate) struct AuthSetup {
    pub(crate) service: AuthService,
    pub(crate) acl: Acl,
    pub(crate) profiles: HashMap<String, usize>,
}

impl AuthSetup {
    /// The profile index for a listener that names `name` (or none).
    pub(crate) fn profile_index(&self, name: Option<&str>) -> anyhow::Result<usize> {
        if self.profiles.is_empty() {
            if let Some(name) = name {
                bail!("listener names auth profile {name:?}, but there is no [auth.{name}]");
            }
            return Ok(0);
        }
        let name = name.unwrap_or(DEFAULT_PROFILE);
        self.profiles.get(name).copied().with_context(|| {
            format!("listener uses auth profile {name:?}, but there is no [auth.{name}]")
        })
    }
}

/// What SIGHUP does: reads the configuration file at `path` again and builds its
/// authentication profiles and ACL rules (password files, ACL file, keys) anew. The profiles
/// must be the ones the listeners were given at start-up, which fixed their indices: a file
/// that adds, removes or renames one is refused until a restart. Other settings are not
/// reloaded.
/// The new authenticator remembers no logins: the files it reads may have changed them.
pub(crate) fn reloader(
    path: PathBuf,
    base: PathBuf,
    profiles: HashMap<String, usize>,
    settings: ServiceSettings,
) -> AuthReload {
    AuthReload::new(move || {
        let file = config::load(&path).map_err(|error| format!("{error:#}"))?;
        let setup = build(&file.auth, &file.acl, file.acl_file.as_deref(), &base)
            .map_err(|error| format!("{error:#}"))?;
        let fleet = file.fleet.to_core().map_err(|error| format!("{error:#}"))?;
        let setup = AuthSetup {
            service: settings.apply(setup.service),
            acl: setup.acl.with_fleet_topics(fleet),
            ..setup
        };
        if setup.profiles != profiles {
            return Err("the [auth.*] profiles changed: restart to apply that".to_owned());
        }
        Ok((Box::new(setup.service), Box::new(setup.acl)))
    })
}

/// What the authenticator keeps beyond the `[auth.*]` profiles, the same at start-up and at
/// every reload.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSettings {
    /// `limits.login_cache_entries_max`.
    pub(crate) login_cache_entries_max: usize,
    /// The secret SCRAM salts of unknown users are made from, when a profile enables SCRAM.
    pub(crate) fake_salt_key: Option<FakeSaltKey>,
    /// The HTTP bridge's keys, which log in over MQTT too while it runs.
    pub(crate) http_keys: Option<Arc<dyn KeyLogins>>,
}

impl ServiceSettings {
    pub(crate) fn apply(&self, service: AuthService) -> AuthService {
        let mut service = service.with_login_cache(self.login_cache_entries_max);
        if let Some(keys) = &self.http_keys {
            service = service.with_http_keys(Arc::clone(keys));
        }
        match &self.fake_salt_key {
            Some(key) => service.with_fake_salt_key(key.clone()),
            None => service,
        }
    }
}

/// Whether any profile enables SCRAM.
pub(crate) fn uses_scram(profiles: &BTreeMap<String, AuthProfileConfig>) -> bool {
    profiles.values().any(|profile| profile.scram)
}

/// The file in the data directory that keeps the secret SCRAM salts of unknown users are made
/// from, so they stay the same across restarts (as known users' salts do). The store leaves it
/// alone (`tern_store::BESIDE_THE_STORE`).
pub(crate) const FAKE_SALT_KEY_FILE: &str = "auth.key";

/// Reads the SCRAM salt secret from `dir`, or makes one there (mode 0600) the first time.
pub(crate) fn fake_salt_key(dir: &Path) -> anyhow::Result<FakeSaltKey> {
    let path = dir.join(FAKE_SALT_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                anyhow::anyhow!(
                    "{} holds {} bytes, not 32: remove it to make a new one",
                    path.display(),
                    bytes.len()
                )
            })?;
            return Ok(FakeSaltKey::from_bytes(bytes));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let key = FakeSaltKey::random();
    // Written aside and renamed into place, so a crash never leaves a short key behind.
    let partial = dir.join(format!("{FAKE_SALT_KEY_FILE}.new"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write = |options: &std::fs::OpenOptions| -> std::io::Result<()> {
        let mut file = options.open(&partial)?;
        std::io::Write::write_all(&mut file, &key.to_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)
    };
    write(&options).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// Builds the authenticator and authorizer; relative paths are taken from `base` (the
/// directory of the configuration file).
pub(crate) fn build(
    profiles: &BTreeMap<String, AuthProfileConfig>,
    rules: &[Rule],
    acl_file: Option<&Path>,
    base: &Path,
) -> anyhow::Result<AuthSetup> {
    let mut built = Vec::new();
    let mut index = HashMap::new();
    let mut password_files: HashMap<PathBuf, Arc<PasswordFile>> = HashMap::new();
    for (name, config) in profiles {
        let mut profile = Profile {
            anonymous: config.anonymous,
            scram: config.scram,
            client_ids: match config.client_ids {
                ClientIdsConfig::Any => ClientIds::Any,
                ClientIdsConfig::Own => ClientIds::Own,
            },
            ..Profile::default()
        };
        if let Some(path) = &config.password_file {
            let path = base.join(path);
            let file = match password_files.get(&path) {
                Some(file) => Arc::clone(file),
                None => {
                    let file = Arc::new(PasswordFile::load(&path)?);
                    password_files.insert(path.clone(), Arc::clone(&file));
                    file
                }
            };
            profile.passwords = Some(file);
        } else if config.scram {
            bail!("[auth.{name}] scram = true needs a password_file");
        }
        if let Some(jwt) = &config.jwt {
            profile.jwt = Some(Arc::new(jwt_verifier(
                &format!("auth.{name}.jwt"),
                jwt,
                base,
            )?));
        }
        if let Some(devices) = &config.device_keys {
            profile.devices = Some(Arc::new(device_keys(name, devices, base)?));
        }
        if let Some(redis) = &config.redis {
            profile.directory = Some(crate::auth_redis::directory(name, redis)?);
        }
        index.insert(name.clone(), built.len());
        built.push(profile);
    }
    if built.is_empty() {
        built.push(Profile::open());
    }
    let mut all_rules = rules.to_vec();
    if let Some(path) = acl_file {
        let path = base.join(path);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let file: AclFile = toml::from_str(&text)
            .with_context(|| format!("invalid ACL file {}", path.display()))?;
        all_rules.extend(file.acl);
    }
    let acl = if rules.is_empty() && acl_file.is_none() {
        Acl::allow_all()
    } else {
        Acl::new(all_rules)?
    };
    Ok(AuthSetup {
        service: AuthService::new(built),
        acl,
        profiles: index,
    })
}

/// The verifier of a JWT table (`table`: its name, for errors).
pub(crate) fn jwt_verifier(
    table: &str,
    jwt: &JwtConfig,
    base: &Path,
) -> anyhow::Result<JwtVerifier> {
    let read = |path: &PathBuf| {
        let path = base.join(path);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let key = match (&jwt.secret, &jwt.secret_file, &jwt.public_key_file) {
        (Some(secret), None, None) => secret.as_bytes().to_vec(),
        (None, Some(path), None) => {
            let mut key = read(path)?;
            // A trailing newline from an editor is not part of the secret.
            while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
                key.pop();
            }
            key
        }
        (None, None, Some(path)) => read(path)?,
        _ => bail!("[{table}] needs exactly one of secret, secret_file, public_key_file"),
    };
    let verifier = JwtVerifier::new(
        &jwt.algorithm,
        &key,
        &jwt.username_claim,
        jwt.topics_claim.as_deref(),
        jwt.leeway_secs,
    )
    .with_context(|| format!("[{table}]"))?;
    Ok(verifier)
}

fn device_keys(name: &str, config: &DeviceKeysConfig, base: &Path) -> anyhow::Result<DeviceKeys> {
    let mut owners = config.owners.clone();
    if let Some(path) = &config.owners_file {
        let path = base.join(path);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let more: BTreeMap<String, String> = toml::from_str(&text)
            .with_context(|| format!("invalid owners file {}", path.display()))?;
        owners.extend(more);
    }
    if owners.is_empty() {
        bail!("[auth.{name}.device_keys] has no owners");
    }
    if let Some(bad) = owners.keys().find(|o| o.is_empty() || o.contains(':')) {
        bail!("[auth.{name}.device_keys] owner {bad:?}: names must be non-empty, without ':'");
    }
    let secrets = owners
        .into_iter()
        .map(|(owner, secret)| (owner, secret.into_bytes()))
        .collect();
    Ok(DeviceKeys::new(secrets, config.window_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(text: &str) -> BTreeMap<String, AuthProfileConfig> {
        #[derive(Deserialize)]
        struct File {
            auth: BTreeMap<String, AuthProfileConfig>,
        }
        toml::from_str::<File>(text)
            .map(|f| f.auth)
            .unwrap_or_default()
    }

    #[test]
    fn listeners_find_their_profiles() {
        let setup = build(
            &profiles("[auth.default]\nanonymous = true\n[auth.local]\nanonymous = true\n"),
            &[],
            None,
            Path::new("."),
        )
        .map_err(|e| e.to_string());
        let Ok(setup) = setup else {
            panic!("{setup:?}");
        };
        let default = setup.profile_index(None).ok();
        let local = setup.profile_index(Some("local")).ok();
        assert!(default.is_some() && local.is_some() && default != local);
        assert!(setup.profile_index(Some("missing")).is_err());
        // Without any profile, only unnamed listeners are valid (everyone is let in).
        let open = build(&BTreeMap::new(), &[], None, Path::new(".")).map_err(|e| e.to_string());
        let Ok(open) = open else { panic!("{open:?}") };
        assert_eq!(open.profile_index(None).ok(), Some(0));
        assert!(open.profile_index(Some("default")).is_err());
    }

    #[test]
    fn inconsistent_profiles_are_refused() {
        let cases = [
            "[auth.a]\nscram = true\n",
            "[auth.a.jwt]\nalgorithm = \"HS256\"\n",
            "[auth.a.jwt]\nalgorithm = \"none\"\nsecret = \"x\"\n",
            "[auth.a.device_keys]\nowners = { \"a:b\" = \"s\" }\n",
            "[auth.a.device_keys]\n",
        ];
        for case in cases {
            let parsed = profiles(case);
            assert!(!parsed.is_empty(), "{case} parses");
            assert!(build(&parsed, &[], None, Path::new(".")).is_err(), "{case}");
        }
    }

    #[test]
    fn the_scram_salt_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else { panic!("{dir:?}") };
        let data = dir.path().join("data");
        let made = fake_salt_key(&data).map_err(|e| e.to_string());
        let again = fake_salt_key(&data).map_err(|e| e.to_string());
        assert!(made.is_ok() && made == again, "{made:?} {again:?}");
        let path = data.join(FAKE_SALT_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
        assert!(std::fs::write(&path, b"short").is_ok());
        assert!(fake_salt_key(&data).is_err());
    }

    /// The store takes a data directory that holds only the secret (made at a start without a
    /// store, `durability = "none"`) for a new one, and opens with the secret beside it.
    #[test]
    fn the_store_opens_beside_the_scram_salt_secret() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else { panic!("{dir:?}") };
        let made = fake_salt_key(dir.path()).map_err(|e| e.to_string());
        assert!(made.is_ok(), "{made:?}");
        assert!(tern_store::BESIDE_THE_STORE.contains(&FAKE_SALT_KEY_FILE));
        let clock = tern_store::WallClock { epoch_unix_ms: 0 };
        let store = tern_store::DiskStore::open(dir.path(), tern_store::Durability::Os, clock)
            .map_err(|e| e.to_string());
        assert!(store.is_ok(), "{store:?}");
        drop(store);
        assert_eq!(fake_salt_key(dir.path()).map_err(|e| e.to_string()), made);
    }
}
