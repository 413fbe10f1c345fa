//! Registrations and firmware offers on the broker thread. A registered device that publishes
//! THiNX's `{"registration":{...}}` on its own status channel is recorded (firmware version,
//! platform, alias, MAC, commit, when: kept by the store) and answered on its channel,
//! `<prefix><owner>/<udid>`, with `{"registration":{"status":"OK"|"UPDATE_AVAILABLE",...}}`
//! (`crate::firmware`): published by the broker itself at the request's QoS, so the answer
//! reaches the device's session like any message, queued while it sleeps. With MQTT 5, a
//! request's Correlation Data comes back with the answer, and a Response Topic the device may
//! subscribe to gets the answer too. The catalogue's releases are added and deleted here.

use tern_codec::PublishProperties;

use super::request::RequestClient;
use super::Broker;
use crate::authz::Access;
use crate::firmware::{
    parse_registration, registration_answer, Catalogue, Registering, Registration, Release,
    ReleaseError,
};
use crate::store::StoreOp;
use crate::types::{SessionKey, SharedMessage, Time};

/// Why a registration over a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterRefusal {
    /// The request is not a registered device's own (another key, an app, an operator).
    #[error("only a registered device registers, with its own key")]
    NotADevice,
    /// The device is disabled, or its client identifier banned.
    #[error("the device is disabled or banned")]
    Banned,
    /// The body is not `{"registration":{...}}`.
    #[error("the body is not a {{\"registration\":{{...}}}} message")]
    NotARegistration,
}

impl Broker {
    /// The firmware catalogue.
    pub fn firmware(&self) -> &Catalogue {
        &self.fleet.catalogue
    }

    /// Adds a release to the catalogue (checked: its id, semantic version, digest, rollout).
    pub fn firmware_add(&mut self, release: Release) -> Result<(), ReleaseError> {
        self.fleet.catalogue.add(release.clone())?;
        self.persist(StoreOp::FirmwareSet(release));
        Ok(())
    }

    /// Deletes a release from the catalogue.
    pub fn firmware_delete(&mut self, id: &str) -> Result<Release, ReleaseError> {
        let release = self.fleet.catalogue.remove(id)?;
        self.persist(StoreOp::FirmwareRemove(release.id.clone()));
        Ok(release)
    }

    /// Loads the registrations and the catalogue a store kept (after the registry).
    pub(super) fn firmware_restore(
        &mut self,
        registrations: Vec<(String, Registration)>,
        releases: Vec<Release>,
    ) {
        for (udid, registration) in registrations {
            self.fleet.set_registration(&udid, registration);
        }
        self.fleet.catalogue = Catalogue::from_releases(releases);
    }

    /// A registration over a request (the HTTP bridge's `POST /v1/fleet/register`): only a
    /// registered device acting with its own key registers, and not while it is disabled or
    /// banned. Recorded as one over MQTT is; the answer is returned, not published.
    pub fn fleet_register_for(
        &mut self,
        client: &RequestClient,
        payload: &[u8],
        now: Time,
    ) -> Result<String, RegisterRefusal> {
        let udid = self
            .request_device(client)
            .ok_or(RegisterRefusal::NotADevice)?;
        if client.banned {
            return Err(RegisterRefusal::Banned);
        }
        let timestamp = self.wall_unix(now);
        let registering =
            parse_registration(payload, timestamp).ok_or(RegisterRefusal::NotARegistration)?;
        let answer = self.fleet_register(udid, registering, timestamp);
        // Told on the device's channel too, as over MQTT: its session, if it has one, and
        // its owner's clients see it.
        if let Some(device) = self.fleet.device(udid) {
            let channel = self.config.fleet.device(&device.owner, &device.udid);
            let payload = bytes::Bytes::from(answer.clone());
            self.fleet_publish(&channel, payload, false, now);
        }
        Ok(answer)
    }

    /// The release `id` whose file a request may download: one the broker keeps the file of,
    /// for the owner of the registered device acting with its own key (not disabled, nor
    /// banned). `None` for anything else, alike.
    pub fn firmware_file_for(&self, client: &RequestClient, id: &str) -> Option<&Release> {
        let owner = client.identity.owner.as_deref()?;
        if self.request_device(client).is_none() || client.banned {
            return None;
        }
        self.fleet
            .catalogue
            .release(id)
            .filter(|release| release.file_kept() && release.is_for_owner(owner))
    }

    /// Records the registration of the device `udid` (what it says of itself in its entry,
    /// the registration kept) and words the answer: the offer of the catalogue, if any.
    fn fleet_register(&mut self, udid: &str, registering: Registering, timestamp: u64) -> String {
        let Some(device) = self.fleet.device(udid) else {
            return registration_answer(None, timestamp);
        };
        // The entry keeps what the device says of itself.
        let mut changed = device.clone();
        if let Some(alias) = registering.alias {
            changed.alias = alias;
        }
        if let Some(platform) = registering.platform {
            changed.platform = platform;
        }
        let registration = registering.registration;
        if !registration.version.is_empty() {
            changed.firmware = registration.version.clone();
        }
        let offer = self.fleet.catalogue.offer(&changed, &registration.version);
        let answer = registration_answer(offer, timestamp);
        if Some(&changed) != self.fleet.device(udid) {
            if let Ok(entry) = self.fleet.device_mut(udid) {
                *entry = changed.clone();
            }
            self.persist(StoreOp::FleetDeviceSet(changed));
        }
        self.fleet.set_registration(udid, registration.clone());
        self.persist(StoreOp::FleetRegistrationSet(udid.to_owned(), registration));
        answer
    }

    /// The wall clock's Unix seconds at `now`.
    fn wall_unix(&self, now: Time) -> u64 {
        self.config
            .wall_clock_epoch_ms
            .saturating_add(now.as_millis())
            / 1000
    }

    /// A message the session `origin` published, or `device` in a request with its own key:
    /// if it is a registered device's registration on its own status channel, records it and
    /// answers.
    pub(super) fn fleet_registration(
        &mut self,
        origin: Option<SessionKey>,
        device: Option<&str>,
        message: &SharedMessage,
        now: Time,
    ) {
        if self.fleet.is_empty() || !message.topic.as_str().ends_with("/status") {
            return;
        }
        let Some(client_id) = self.publisher_id(origin, device) else {
            return;
        };
        let connection = origin.and_then(|key| self.session(key).connection);
        let Some(device) = self.fleet.device(&client_id) else {
            return;
        };
        let topics = &self.config.fleet;
        if message.topic.as_str() != topics.status(&device.owner, &device.udid) {
            return;
        }
        let timestamp = self.wall_unix(now);
        let Some(registering) = parse_registration(&message.payload, timestamp) else {
            return;
        };
        let (udid, channel) = (
            device.udid.clone(),
            topics.device(&device.owner, &device.udid),
        );
        let answer = self.fleet_register(&udid, registering, timestamp);

        let request = &message.properties;
        let properties = PublishProperties {
            correlation_data: request.correlation_data.clone(),
            ..PublishProperties::default()
        };
        // A Response Topic the device may read is answered too: never one outside its
        // namespace, which the broker's own publish would otherwise reach for it.
        let response_topic = request
            .response_topic
            .as_ref()
            .map(|topic| topic.as_str().to_owned())
            .filter(|topic| *topic != channel)
            .filter(|topic| {
                connection.is_some_and(|id| self.authorize(id, Access::Subscribe, topic))
            });
        let qos = message.qos;
        let payload = bytes::Bytes::from(answer);
        if let Some(topic) = response_topic {
            self.fleet_publish_with(&topic, payload.clone(), qos, false, properties.clone(), now);
        }
        self.fleet_publish_with(&channel, payload, qos, false, properties, now);
    }
}
