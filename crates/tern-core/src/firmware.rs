//! The device fleet's registrations and firmware catalogue. A device registers by publishing
//! THiNX's `{"registration":{mac, firmware, version, commit, alias, platform, ...}}` on its
//! status channel; the broker records it and answers on the device's channel with
//! `{"registration":{"status":"OK"|"UPDATE_AVAILABLE", ..., "timestamp": N}}`, offering the
//! newest release of the catalogue above the device's version (semantic version order) for
//! its platform, owner and tags, within the release's rollout. Pure data and decisions: the
//! broker thread does the publishing (`broker/fleet_register.rs`).

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::fleet::Device;

/// What a device said of itself when it last registered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    /// Its MAC address, as it gave it.
    pub mac: String,
    /// Its firmware's name (THiNX: `thinx-firmware-esp8266-1.7.24:2017-07-25`).
    pub firmware: String,
    /// Its firmware's version (`1.7.24`): what offers compare.
    pub version: String,
    /// The commit its firmware was built from.
    pub commit: String,
    /// When it registered (Unix seconds).
    pub registered_unix: u64,
}

/// The registration message as firmware sends it (unknown fields are ignored: THiNX's
/// firmware also sends its owner, for instance).
#[derive(Debug, Deserialize)]
struct RegistrationMessage {
    registration: RegistrationFields,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RegistrationFields {
    mac: String,
    firmware: String,
    version: String,
    commit: String,
    alias: String,
    platform: String,
}

/// A registration read from a status message: what it records and what it changes in the
/// device's entry (an alias or platform it gave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registering {
    /// The record.
    pub registration: Registration,
    /// The alias it gave, if any.
    pub alias: Option<String>,
    /// The platform it gave, if any.
    pub platform: Option<String>,
}

/// Reads a registration from a status message's payload; `None` for any other message (a
/// status, a notification, or JSON that is not a registration).
pub fn parse_registration(payload: &[u8], registered_unix: u64) -> Option<Registering> {
    // Cheap test first: most status messages are `{"status":...}`.
    if !payload.windows(14).any(|w| w == b"\"registration\"") {
        return None;
    }
    let message: RegistrationMessage = serde_json::from_slice(payload).ok()?;
    let fields = message.registration;
    let given = |text: String| (!text.is_empty()).then_some(text);
    Some(Registering {
        registration: Registration {
            mac: fields.mac,
            firmware: fields.firmware,
            version: fields.version,
            commit: fields.commit,
            registered_unix,
        },
        alias: given(fields.alias),
        platform: given(fields.platform),
    })
}

/// One firmware release in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its identifier (a single topic level's worth of text: letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// The platform it is for (`esp32`, `platformio`): a device's registered platform.
    pub platform: String,
    /// Its semantic version (`1.7.25`).
    pub version: String,
    /// Where devices download it from: an external URL, or the broker's
    /// `/v1/fleet/firmware/{id}`.
    pub url: String,
    /// The SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// The size of the file in bytes.
    pub size: u64,
    /// The owner whose devices it is for; `None`: every owner's.
    pub owner: Option<String>,
    /// Only devices with every one of these tags (none: any device).
    pub tags: Vec<String>,
    /// The share of matching devices offered it, 0 to 100 (by [`rollout_bucket`]).
    pub rollout_percent: u8,
    /// When it was added (Unix seconds).
    pub created_unix: u64,
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The identifier is empty or holds other characters than letters, digits, `-`, `_`, `.`.
    #[error("release id {0:?} must be 1 to 64 letters, digits, '-', '_' or '.'")]
    BadId(String),
    /// The version is not a semantic version.
    #[error("version {0:?} is not a semantic version (MAJOR.MINOR.PATCH)")]
    BadVersion(String),
    /// The digest is not 64 hex digits.
    #[error("sha256 must be 64 hex digits")]
    BadDigest,
    /// The rollout is above 100.
    #[error("rollout_percent must be 0 to 100")]
    BadRollout,
    /// The platform is empty.
    #[error("a release names its platform")]
    NoPlatform,
    /// The identifier is taken.
    #[error("release {0:?} exists already")]
    Exists(String),
    /// No such release.
    #[error("no release {0:?}")]
    NoRelease(String),
}

/// The URL of a release whose file the broker keeps: its own `GET /v1/fleet/firmware/{id}`,
/// a path a device resolves against the broker's HTTP address.
pub fn kept_file_url(id: &str) -> String {
    format!("/v1/fleet/firmware/{id}")
}

impl Release {
    /// Whether the broker keeps its file (and serves it at [`kept_file_url`]).
    pub fn file_kept(&self) -> bool {
        self.url == kept_file_url(&self.id)
    }

    /// Whether it is for the devices of `owner` (its own, or every owner's).
    pub fn is_for_owner(&self, owner: &str) -> bool {
        self.owner.as_deref().is_none_or(|own| own == owner)
    }

    /// Checks the release's fields.
    pub fn check(&self) -> Result<(), ReleaseError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(ReleaseError::BadId(self.id.clone()));
        }
        if self.platform.is_empty() {
            return Err(ReleaseError::NoPlatform);
        }
        if semver::Version::parse(&self.version).is_err() {
            return Err(ReleaseError::BadVersion(self.version.clone()));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReleaseError::BadDigest);
        }
        if self.rollout_percent > 100 {
            return Err(ReleaseError::BadRollout);
        }
        Ok(())
    }
}

/// Where a device falls in a release's rollout, 0 to 99: the first four bytes of
/// SHA-256(`udid` `/` `release id`) as a big-endian number, modulo 100. A release with
/// `rollout_percent` P is offered to the devices whose bucket is below P: the same devices
/// every time, and a different share for each release.
pub fn rollout_bucket(udid: &str, release_id: &str) -> u8 {
    let digest = Sha256::new()
        .chain_update(udid.as_bytes())
        .chain_update(b"/")
        .chain_update(release_id.as_bytes())
        .finalize();
    let number = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    // Below 100: fits.
    (number % 100) as u8
}

/// The firmware releases, by identifier.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    releases: BTreeMap<String, Release>,
}

impl Catalogue {
    /// The catalogue of these releases (from a store).
    pub fn from_releases(releases: Vec<Release>) -> Self {
        Self {
            releases: releases.into_iter().map(|r| (r.id.clone(), r)).collect(),
        }
    }

    /// Every release, by identifier.
    pub fn releases(&self) -> impl Iterator<Item = &Release> {
        self.releases.values()
    }

    /// The release of this identifier.
    pub fn release(&self, id: &str) -> Option<&Release> {
        self.releases.get(id)
    }

    /// Adds a release, checking it.
    pub(crate) fn add(&mut self, release: Release) -> Result<(), ReleaseError> {
        release.check()?;
        if self.releases.contains_key(&release.id) {
            return Err(ReleaseError::Exists(release.id));
        }
        self.releases.insert(release.id.clone(), release);
        Ok(())
    }

    /// Removes a release.
    pub(crate) fn remove(&mut self, id: &str) -> Result<Release, ReleaseError> {
        self.releases
            .remove(id)
            .ok_or_else(|| ReleaseError::NoRelease(id.to_owned()))
    }

    /// The newest release (semantic version order) for `device`: for its platform, for its
    /// owner or every owner, whose tags it has and whose rollout takes it in.
    fn newest_for(&self, device: &Device) -> Option<(semver::Version, &Release)> {
        self.releases
            .values()
            .filter(|r| r.platform == device.platform)
            .filter(|r| r.is_for_owner(&device.owner))
            .filter(|r| r.tags.iter().all(|tag| device.tags.contains(tag)))
            .filter(|r| rollout_bucket(&device.udid, &r.id) < r.rollout_percent)
            .filter_map(|r| Some((semver::Version::parse(&r.version).ok()?, r)))
            .max_by(|(a, _), (b, _)| a.cmp(b))
    }

    /// Where `device`, which runs `version`, stands against the catalogue: offered the
    /// newest release for it when that is above its version.
    pub fn standing(&self, device: &Device, version: &str) -> Standing<'_> {
        let Ok(current) = semver::Version::parse(version.trim_start_matches('v')) else {
            return Standing::Unversioned;
        };
        match self.newest_for(device) {
            None => Standing::NoRelease,
            Some((newest, release)) if newest > current => Standing::Offer(release),
            Some((_, release)) => Standing::UpToDate(release),
        }
    }

    /// The release to offer `device`, which runs `version`: the newest of the releases for
    /// it (its platform, owner, tags and rollout) when above its version. A device whose
    /// version is not a semantic version is offered nothing.
    pub fn offer(&self, device: &Device, version: &str) -> Option<&Release> {
        match self.standing(device, version) {
            Standing::Offer(release) => Some(release),
            _ => None,
        }
    }
}

/// Where a device stands against the catalogue ([`Catalogue::standing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing<'a> {
    /// The newest release for it is above its version: it is offered that.
    Offer(&'a Release),
    /// It runs the newest release for it, or a later version.
    UpToDate(&'a Release),
    /// No release is for it (platform, owner, tags, rollout).
    NoRelease,
    /// Its version is not a semantic version: it is offered nothing.
    Unversioned,
}

/// The answer to a registration: `{"registration":{"status":"OK","timestamp":N}}`, or with an
/// offer `{"registration":{"status":"UPDATE_AVAILABLE","update":{"id","version","url",
/// "sha256","size"},"timestamp":N}}` (`timestamp` last: THiNX's device library looks for the
/// answer's end).
pub fn registration_answer(offer: Option<&Release>, timestamp_unix: u64) -> String {
    let mut out = String::from("{\"registration\":{");
    match offer {
        None => out.push_str("\"status\":\"OK\""),
        Some(release) => {
            out.push_str("\"status\":\"UPDATE_AVAILABLE\",\"update\":{");
            let fields = [
                ("id", release.id.as_str()),
                ("version", release.version.as_str()),
                ("url", release.url.as_str()),
                ("sha256", release.sha256.as_str()),
            ];
            for (name, value) in fields {
                out.push_str(&format!("\"{name}\":{},", json_string(value)));
            }
            out.push_str(&format!("\"size\":{}}}", release.size));
        }
    }
    out.push_str(&format!(",\"timestamp\":{timestamp_unix}}}}}"));
    out
}

/// A JSON string.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::DeviceCredential;

    fn device(platform: &str, tags: &[&str]) -> Device {
        Device {
            owner: "acme".into(),
            udid: "d1".into(),
            alias: String::new(),
            platform: platform.into(),
            firmware: String::new(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            created_unix: 0,
            disabled: false,
            credential: DeviceCredential::HttpKey,
        }
    }

    fn release(id: &str, version: &str) -> Release {
        Release {
            id: id.into(),
            platform: "esp32".into(),
            version: version.into(),
            url: format!("https://example.com/{id}.bin"),
            sha256: "ab".repeat(32),
            size: 1000,
            owner: None,
            tags: Vec::new(),
            rollout_percent: 100,
            created_unix: 0,
        }
    }

    #[test]
    fn registrations_are_read_from_thinx_payloads_and_nothing_else() {
        let payload = br#"{"registration":{"mac":"5CCF7FE4631D","firmware":"thinx-1.7.24","version":"1.7.24","commit":"24e7","owner":"cedc","alias":"robot","platform":"platformio"}}"#;
        let read = parse_registration(payload, 5).expect("a registration");
        assert_eq!(read.registration.version, "1.7.24");
        assert_eq!(read.registration.mac, "5CCF7FE4631D");
        assert_eq!(read.alias.as_deref(), Some("robot"));
        assert_eq!(read.platform.as_deref(), Some("platformio"));
        assert!(parse_registration(br#"{"status":"connected"}"#, 0).is_none());
        assert!(parse_registration(br#"{"registration":"#, 0).is_none());
    }

    #[test]
    fn the_offer_is_the_newest_matching_release_above_the_device() {
        let mut catalogue = Catalogue::default();
        for (id, version) in [("a", "1.7.25"), ("b", "1.10.0"), ("c", "1.9.0")] {
            catalogue.add(release(id, version)).expect("added");
        }
        let mut other = release("other-platform", "9.0.0");
        other.platform = "esp8266".into();
        catalogue.add(other).expect("added");
        let mut tagged = release("tagged", "8.0.0");
        tagged.tags = vec!["beta".into()];
        catalogue.add(tagged).expect("added");
        let mut globex = release("globex", "7.0.0");
        globex.owner = Some("globex".into());
        catalogue.add(globex).expect("added");
        let d = device("esp32", &[]);
        // 1.10.0 above 1.9.0: semantic order, not text.
        assert_eq!(
            catalogue.offer(&d, "1.7.24").map(|r| r.id.as_str()),
            Some("b")
        );
        assert!(catalogue.offer(&d, "1.10.0").is_none());
        assert!(catalogue.offer(&d, "not a version").is_none());
        let beta = device("esp32", &["beta"]);
        assert_eq!(
            catalogue.offer(&beta, "1.0.0").map(|r| r.id.as_str()),
            Some("tagged")
        );
        assert!(catalogue.add(release("a", "2.0.0")).is_err());
        assert!(catalogue.add(release("x", "2.0")).is_err());
    }

    #[test]
    fn a_rollout_takes_in_the_devices_below_its_percentage() {
        let mut catalogue = Catalogue::default();
        let mut half = release("half", "2.0.0");
        half.rollout_percent = 50;
        catalogue.add(half).expect("added");
        let mut offered = 0;
        for n in 0..200 {
            let mut d = device("esp32", &[]);
            d.udid = format!("dev-{n}");
            let inside = rollout_bucket(&d.udid, "half") < 50;
            assert_eq!(catalogue.offer(&d, "1.0.0").is_some(), inside);
            offered += usize::from(inside);
        }
        assert!((60..140).contains(&offered), "{offered} of 200");
    }

    #[test]
    fn a_device_stands_offered_up_to_date_without_release_or_unversioned() {
        let mut catalogue = Catalogue::default();
        catalogue.add(release("a", "1.8.0")).expect("added");
        let d = device("esp32", &[]);
        assert_eq!(
            catalogue.standing(&d, "1.7.24"),
            Standing::Offer(catalogue.release("a").expect("a"))
        );
        assert!(matches!(catalogue.standing(&d, "1.8.0"), Standing::UpToDate(r) if r.id == "a"));
        assert!(matches!(
            catalogue.standing(&d, "v2.0.0"),
            Standing::UpToDate(_)
        ));
        assert_eq!(catalogue.standing(&d, "nightly"), Standing::Unversioned);
        let other = device("esp8266", &[]);
        assert_eq!(catalogue.standing(&other, "1.0.0"), Standing::NoRelease);
    }

    #[test]
    fn answers_keep_thinx_shape_with_the_timestamp_last() {
        assert_eq!(
            registration_answer(None, 1_767_225_600),
            r#"{"registration":{"status":"OK","timestamp":1767225600}}"#
        );
        let answer = registration_answer(Some(&release("a", "1.7.25")), 7);
        let parsed: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(parsed["registration"]["status"], "UPDATE_AVAILABLE");
        assert_eq!(parsed["registration"]["update"]["version"], "1.7.25");
        assert!(answer.ends_with(",\"timestamp\":7}}"), "{answer}");
    }
}
