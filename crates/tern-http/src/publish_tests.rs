#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use super::*;

fn query(raw: &str) -> Query {
    Query::parse(raw).unwrap()
}

#[test]
fn the_path_names_one_topic_and_the_query_may_name_it_instead() {
    let none = query("");
    assert_eq!(topic_of("/v1/pub/a/b%20c/d", &none).unwrap(), "a/b c/d");
    assert_eq!(
        topic_of("/v1/pub//o1/7F3A/status", &none).unwrap(),
        "/o1/7F3A/status"
    );
    assert_eq!(
        topic_of("/v1/pub/a%2Fb", &none).unwrap_err().code,
        "topic_invalid"
    );
    assert_eq!(topic_of("/v1/pub/x", &query("topic=a%2Fb")).unwrap(), "a/b");
}

#[test]
fn query_and_headers_become_mqtt_properties() {
    let headers: [(&str, &[u8]); 5] = [
        ("Content-Type", b"application/json"),
        ("Mqtt-Response-Topic", b"replies/dev1"),
        ("Mqtt-Correlation-Data", b"N0YzQToxMg"),
        ("Mqtt-User-Property", b"fw=1.7.24"),
        ("mqtt-user-property", b"unit=C"),
    ];
    let item = single(
        "s/t".into(),
        &query("qos=2&retain=1&ttl=600&age=60"),
        &headers,
        Bytes::from_static(b"{\"t\":21.5}"),
        1000,
    )
    .unwrap();
    let publish = item.publish.unwrap();
    assert_eq!(publish.qos, QoS::ExactlyOnce);
    assert!(publish.retain);
    let p = &publish.properties;
    assert_eq!(p.message_expiry_interval, Some(540));
    assert_eq!(p.payload_format_indicator, Some(PayloadFormat::Utf8));
    assert_eq!(
        p.content_type.as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(p.response_topic.as_ref().unwrap().as_str(), "replies/dev1");
    assert_eq!(p.correlation_data.as_deref(), Some(&b"7F3A:12"[..]));
    let pairs: Vec<(String, String)> = p
        .user_properties
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("fw".into(), "1.7.24".into()),
            ("unit".into(), "C".into()),
            ("tern-captured-at".into(), "940".into())
        ]
    );
    // Older than its lifetime: expired before it arrived.
    let stale = single(
        "s/t".into(),
        &query("ttl=60&age=60"),
        &[],
        Bytes::new(),
        1000,
    )
    .unwrap();
    assert!(stale.publish.is_none());
    // A JSON payload must be UTF-8; QoS must exist.
    let bad = single(
        "s/t".into(),
        &none_query(),
        &[("Content-Type", b"text/plain")],
        Bytes::from_static(&[0xff]),
        0,
    );
    assert_eq!(bad.unwrap_err().code, "payload_invalid");
    let bad = single("s/t".into(), &query("qos=3"), &[], Bytes::new(), 0);
    assert_eq!(bad.unwrap_err().code, "bad_request");
    let bad = single("s/+".into(), &none_query(), &[], Bytes::new(), 0);
    assert_eq!(bad.unwrap_err().code, "topic_invalid");
}

fn none_query() -> Query {
    query("")
}

#[test]
fn a_batch_takes_json_or_base64_payloads() {
    let body = br#"[{"topic":"a","payload":{"t":21.5},"qos":0,"ttl":10},
                    {"topic":"b","payload":"on","retain":true},
                    {"topic":"c","payload_b64":"AQID","user_properties":[["k","v"]]}]"#;
    let items = batch(body, 3, 0).unwrap();
    let payloads: Vec<&[u8]> = items
        .iter()
        .map(|i| &i.publish.as_ref().unwrap().payload[..])
        .collect();
    assert_eq!(payloads, [&b"{\"t\":21.5}"[..], b"on", &[1, 2, 3]]);
    assert_eq!(items[0].publish.as_ref().unwrap().qos, QoS::AtMostOnce);
    assert_eq!(items[1].publish.as_ref().unwrap().qos, QoS::AtLeastOnce);
    assert_eq!(batch(body, 2, 0).unwrap_err().code, "payload_too_large");
    assert_eq!(
        batch(b"[{\"topic\":1}]", 2, 0).unwrap_err().code,
        "payload_invalid"
    );
    assert_eq!(
        batch(br#"[{"topic":"a","nope":1}]"#, 2, 0)
            .unwrap_err()
            .code,
        "payload_invalid"
    );
}
