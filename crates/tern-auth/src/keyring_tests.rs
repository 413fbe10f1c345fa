#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use super::*;
use tern_core::{Access, Permissions};

fn grant(access: RuleAccess, topic: &str) -> Grant {
    Grant {
        access,
        topic: topic.to_owned(),
    }
}

#[test]
fn a_key_file_keeps_no_secret_in_plain_text_and_reads_back_with_its_master_key() {
    let master = MasterKey::random();
    let mut ring = KeyRing::default();
    let secret = ring
        .add(
            "d:dev1",
            None,
            vec![grant(RuleAccess::Publish, "s/%c/#")],
            100,
        )
        .unwrap();
    let text = ring.render(&master);
    for form in [hex(&secret), B64.encode(secret)] {
        assert!(!text.contains(&form), "{text}");
    }
    let back = KeyRing::parse(&text, &master).unwrap();
    let credential = back.lookup("d:dev1", None).unwrap();
    assert_eq!(credential.secrets, [secret]);
    // Another master key, or a sealed secret moved to another key, does not unseal.
    assert!(KeyRing::parse(&text, &MasterKey::random()).is_err());
    let moved = text.replace("\"d:dev1\"", "\"d:dev2\"");
    assert!(matches!(
        KeyRing::parse(&moved, &master),
        Err(KeyError::File(_))
    ));
}

#[test]
fn rotation_keeps_two_secrets_and_revocation_retires_them() {
    let mut ring = KeyRing::default();
    let first = ring.add("d:dev1", None, Vec::new(), 1).unwrap();
    let (n, second) = ring.rotate("d:dev1", 2).unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        ring.lookup("d:dev1", None).unwrap().secrets,
        [first, second]
    );
    let (_, third) = ring.rotate("d:dev1", 3).unwrap();
    assert_eq!(
        ring.lookup("d:dev1", None).unwrap().secrets,
        [second, third]
    );
    ring.revoke("d:dev1", Some(2)).unwrap();
    assert_eq!(ring.lookup("d:dev1", None).unwrap().secrets, [third]);
    assert_eq!(
        ring.revoke("d:dev1", Some(2)),
        Err(KeyError::NoSecret("d:dev1".into(), 2))
    );
    ring.revoke("d:dev1", Some(3)).unwrap();
    assert!(ring.lookup("d:dev1", None).is_none(), "no secret left");
    ring.revoke("d:dev1", None).unwrap();
    assert_eq!(ring.keys().count(), 0);
    assert!(ring.add("d:bad/name", None, Vec::new(), 1).is_err());
    assert!(ring.add("x:dev", None, Vec::new(), 1).is_err());
}

#[test]
fn derived_devices_take_their_secret_from_the_longest_matching_group() {
    let mut ring = KeyRing::default();
    let all = ring
        .add("g:all", Some(String::new()), Vec::new(), 1)
        .unwrap();
    let esp = ring
        .add("g:esp", Some("ESP32-".into()), Vec::new(), 1)
        .unwrap();
    let own = ring.add("d:ESP32-OWN", None, Vec::new(), 1).unwrap();
    let device = ring.lookup("d:ESP32-7F3A", None).unwrap();
    assert_eq!(device.secrets, [derive_device_secret(&esp, "ESP32-7F3A")]);
    assert_ne!(device.secrets[0], derive_device_secret(&esp, "ESP32-7F3B"));
    assert_eq!(
        ring.lookup("d:pump-1", None).unwrap().secrets,
        [derive_device_secret(&all, "pump-1")]
    );
    assert_eq!(ring.lookup("d:ESP32-OWN", None).unwrap().secrets, [own]);
    // A group is not a key a request can be signed with.
    assert!(ring.lookup("g:esp", None).is_none());
    assert!(ring.add("g:none", None, Vec::new(), 1).is_err());
    assert!(ring.add("d:x", Some("x".into()), Vec::new(), 1).is_err());
}

#[test]
fn a_key_is_an_http_identity_limited_by_its_grants() {
    let mut ring = KeyRing::default();
    ring.add(
        "d:dev1",
        None,
        vec![
            grant(RuleAccess::Publish, "sensors/%c/#"),
            grant(RuleAccess::Subscribe, "cmd/%u"),
        ],
        1,
    )
    .unwrap();
    ring.add("a:app", None, vec![grant(RuleAccess::Both, "apps/%c/#")], 1)
        .unwrap();
    let dev = ring.lookup("d:dev1", None).unwrap();
    assert_eq!(dev.identity.method, Method::HttpKey);
    assert_eq!(dev.identity.username.as_deref(), Some("dev1"));
    let allowed = dev.restriction.unwrap();
    assert!(allowed.allows(Access::Publish, "sensors/dev1/t"));
    assert!(!allowed.allows(Access::Subscribe, "sensors/dev1/t"));
    assert!(allowed.allows(Access::Subscribe, "cmd/dev1"));
    assert!(!allowed.allows(Access::Publish, "sensors/dev2/t"));
    // A device key speaks only for its own client identifier.
    assert!(ring.lookup("d:dev1", Some("dev2")).is_none());
    // An app key's devices are named in Tern-Client, and are never the device of that name.
    let guid = ring.lookup("a:app", Some("dev1")).unwrap();
    assert_eq!(guid.client_id, "dev1");
    assert_ne!(guid.identity, dev.identity);
    assert_ne!(guid.identity.session_owner(), dev.identity.session_owner());
    assert!(guid
        .restriction
        .unwrap()
        .allows(Access::Publish, "apps/dev1/x"));
    assert!(ring.lookup("a:app", None).is_none());
    assert!(ring.lookup("a:app", Some("a/b")).is_none());
    assert!(ring.lookup("d:nobody", None).is_none());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
