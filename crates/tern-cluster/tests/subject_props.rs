//! Topic ↔ subject encoding, property-tested: every topic comes back from its subject, and a
//! filter's subjects match a topic's subject exactly when the MQTT filter matches the topic.

use proptest::prelude::*;
use tern_cluster::subject::{
    filter_subjects, subject_topic, topic_subject, TopicSubject, SUBJECT_LEN_MAX,
};

const PREFIX: &str = "tern.d";

/// One level of a topic: any characters but `/`, `+`, `#` and U+0000, with the ones NATS
/// treats specially, `$`, spaces and multi-byte characters often.
fn level() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        ".", "*", ">", "=", " ", "$", "\t", "é", "€", "😀", "a", "Z", "0", "_", "-", "=2E",
    ]);
    prop_oneof![
        prop::collection::vec(special, 0..6).prop_map(|parts| parts.concat()),
        "[^/+#\u{0}]{0,8}",
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..6).prop_map(|levels| levels.join("/"))
}

/// A filter made from a topic's levels, some replaced by `+`, perhaps ending in `#`.
fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+".to_owned())], 0..5),
        any::<bool>(),
    )
        .prop_filter_map("a filter has a level", |(mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            (!levels.is_empty()).then(|| levels.join("/"))
        })
}

/// MQTT matching, written the plain way as the reference.
fn mqtt_matches(filter: &str, topic: &str) -> bool {
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    if topic[0].starts_with('$') && (filter[0] == "+" || filter[0] == "#") {
        return false;
    }
    let mut index = 0;
    for (position, level) in filter.iter().enumerate() {
        match *level {
            "#" => return position == filter.len() - 1,
            "+" if index < topic.len() => index += 1,
            literal if index < topic.len() && topic[index] == literal => index += 1,
            _ => return false,
        }
    }
    index == topic.len()
}

/// NATS subject matching: `*` one token, `>` one or more at the end.
fn nats_matches(pattern: &str, subject: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let subject: Vec<&str> = subject.split('.').collect();
    for (index, token) in pattern.iter().enumerate() {
        match *token {
            ">" => return subject.len() > index,
            "*" if index < subject.len() => {}
            literal if index < subject.len() && subject[index] == literal => {}
            _ => return false,
        }
    }
    pattern.len() == subject.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_topic_comes_back_from_its_subject(topic in topic()) {
        let subject = topic_subject(PREFIX, &topic);
        prop_assert!(subject.as_str().len() <= SUBJECT_LEN_MAX);
        prop_assert!(subject
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._=-".contains(&b)));
        match subject {
            TopicSubject::Exact(subject) => {
                prop_assert_eq!(subject_topic(PREFIX, &subject), Ok(Some(topic)));
            }
            TopicSubject::Overflow(subject) => {
                prop_assert_eq!(subject_topic(PREFIX, &subject), Ok(None));
            }
        }
    }

    #[test]
    fn subjects_never_collide(a in topic(), b in topic()) {
        prop_assume!(a != b);
        let (a, b) = (topic_subject(PREFIX, &a), topic_subject(PREFIX, &b));
        if let (TopicSubject::Exact(a), TopicSubject::Exact(b)) = (a, b) {
            prop_assert_ne!(a, b);
        }
    }

    #[test]
    fn a_filter_matches_on_nats_as_it_does_in_mqtt(
        filter in filter(),
        topic in topic(),
        reuse in any::<bool>(),
    ) {
        // Half the time the topic is built from the filter, so that matches are common.
        let topic = if reuse {
            filter
                .split('/')
                .map(|level| match level {
                    "+" => "any".to_owned(),
                    "#" => topic.clone(),
                    literal => literal.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("/")
        } else {
            topic
        };
        let TopicSubject::Exact(subject) = topic_subject(PREFIX, &topic) else {
            return Ok(());
        };
        let on_nats = filter_subjects(PREFIX, &filter)
            .iter()
            .any(|pattern| nats_matches(pattern, &subject));
        prop_assert_eq!(on_nats, mqtt_matches(&filter, &topic), "{} {}", filter, topic);
    }
}

#[test]
fn a_filter_that_overflows_hears_the_overflow_subject_of_every_topic_it_matches() {
    let long = "é".repeat(800);
    let topic = format!("{long}/b");
    assert_eq!(
        topic_subject(PREFIX, &topic),
        TopicSubject::Overflow("tern.d.x".to_owned())
    );
    for filter in [
        format!("{long}/b"),
        format!("{long}/+"),
        format!("{long}/#"),
    ] {
        assert!(filter_subjects(PREFIX, &filter).contains(&"tern.d.x".to_owned()));
    }
}
