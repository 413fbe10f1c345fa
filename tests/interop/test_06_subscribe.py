"""SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK; topic matching; overlapping, replaced and
shared subscriptions; the No Local and Retain As Published options (MQTT 3.1.1 sections 3.3.5,
3.8-3.11 and 4.7; MQTT 5.0 sections 3.3.4, 3.8-3.11, 4.7 and 4.8)."""

from __future__ import annotations

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

import mqtt_raw
from mqtt_raw import PUBLISH, PUBREL, SUBACK, UNSUBACK, V5, V311, RawClient
from support import (TIMEOUT, Clients, Message, Names, PahoClient, drain,
                     expect_no_message, merge_messages, mosquitto_deviation, next_from,
                     subscribe_properties)

NO_SUBSCRIPTION_EXISTED = 0x11


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def publisher(clients: Clients, names: Names, version: int) -> PahoClient:
    return clients.connected(names.client("pub"), version=version)


def raw_subscribe(raw: RawClient, packet_id: int, filters: list[tuple[str, int]],
                  version: int) -> list[int]:
    raw.send(mqtt_raw.subscribe(packet_id, filters, version=version))
    ack = mqtt_raw.parse_ack(raw.expect_packet(SUBACK), version)
    assert ack.packet_id == packet_id, f"SUBACK {ack} does not echo identifier {packet_id}"
    return ack.codes


def raw_unsubscribe(raw: RawClient, packet_id: int, filters: list[str],
                    version: int) -> list[int]:
    raw.send(mqtt_raw.unsubscribe(packet_id, filters, version=version))
    ack = mqtt_raw.parse_ack(raw.expect_packet(UNSUBACK), version)
    assert ack.packet_id == packet_id, f"UNSUBACK {ack} does not echo identifier {packet_id}"
    return ack.codes


def payloads(raw: RawClient, count: int, version: int) -> list[bytes]:
    """The payloads of the next ``count`` PUBLISH packets (their QoS flows completed)."""
    return [p.payload for p in mqtt_raw.receive_publishes(raw, count, version)]


def quiet_everywhere(*subscribers: PahoClient) -> None:
    """After one QUIET wait, none of ``subscribers`` has anything more."""
    expect_no_message(subscribers[0].messages)
    for other in subscribers[1:]:
        assert other.messages.empty(), f"{other.client_id}: {other.messages.get()!r}"


# ---------------------------------------------------------------------------
# Topic matching
# ---------------------------------------------------------------------------

# Topic suffixes below interop/<tag>, and which of them each filter (below the same base)
# matches. "" is the base itself; "a/" ends in an empty level, "a//c" has one inside.
TOPICS = ["", "a", "a/b", "a/b/c", "b/b", "a/", "a//c"]
MATCHES = {
    "/#": ["", "a", "a/b", "a/b/c", "b/b", "a/", "a//c"],
    "/+": ["a"],
    "/a/#": ["a", "a/b", "a/b/c", "a/", "a//c"],
    "/+/b": ["a/b", "b/b"],
    "/a/+": ["a/b", "a/"],
    "/a/+/c": ["a/b/c", "a//c"],
    "/a/b": ["a/b"],
    "/+/+/+": ["a/b/c", "a//c"],
}


def full(base: str, suffix: str) -> str:
    return f"{base}/{suffix}" if suffix else base


def check_wildcard_matching(clients: Clients, names: Names, version: int) -> None:
    base = names.topic("m")
    subscribers = {}
    for index, suffix in enumerate(MATCHES):
        subscribers[suffix] = clients.subscriber(names.client(f"s{index}"), base + suffix,
                                                 qos=1, version=version)
    # A leading "+" matches the first level of an ordinary topic.
    leading = clients.subscriber(names.client("lead"), "+" + base[base.index("/"):] + "/a",
                                 qos=1, version=version)
    sender = publisher(clients, names, version)
    for suffix in TOPICS:
        sender.publish(full(base, suffix), suffix.encode() or b"base", qos=1)
    for suffix, expected in MATCHES.items():
        got = sorted(subscribers[suffix].expect_message().topic for _ in expected)
        assert got == sorted(full(base, t) for t in expected), f"filter {base + suffix}: {got}"
    assert leading.expect_message().topic == full(base, "a")
    quiet_everywhere(leading, *subscribers.values())


def test_v311_mqtt_3_3_2_3_delivered_topic_matches_filter(clients, names):
    check_wildcard_matching(clients, names, V311)


def test_v311_mqtt_4_5_0_1_message_added_to_every_matching_subscriber(clients, names):
    check_wildcard_matching(clients, names, V311)


def test_v5_mqtt_3_3_2_3_delivered_topic_matches_filter(clients, names):
    check_wildcard_matching(clients, names, V5)


def test_v5_mqtt_4_5_0_1_message_added_to_every_matching_subscriber(clients, names):
    check_wildcard_matching(clients, names, V5)


def check_dollar_topics(clients: Clients, names: Names, version: int) -> None:
    """Filters starting with a wildcard do not match topics starting with "$"; filters that
    start with the same "$" level do."""
    tag = names.tag
    dollar = f"$interop/{tag}/x"
    everything = clients.subscriber(names.client("all"), "#", qos=1, version=version)
    plus = clients.subscriber(names.client("plus"), f"+/{tag}/x", qos=1, version=version)
    plus_hash = clients.subscriber(names.client("ph"), "+/#", qos=1, version=version)
    explicit = clients.subscriber(names.client("exp"), f"$interop/{tag}/#", qos=1,
                                  version=version)
    explicit_plus = clients.subscriber(names.client("exq"), "$interop/+/x", qos=1,
                                       version=version)
    sender = publisher(clients, names, version)
    sender.publish(dollar, b"dollar", qos=1)
    sender.publish(f"interop/{tag}/x", b"plain", qos=1)
    assert explicit.expect_message().topic == dollar
    assert explicit_plus.expect_message().topic == dollar
    assert plus.expect_message().payload == b"plain"
    for wide in (everything, plus_hash):  # they also see other tests' retained messages
        got = [m for m in drain(wide.messages) if tag in m.topic]
        assert [m.payload for m in got] == [b"plain"], f"{wide.client_id}: {got}"
    quiet_everywhere(plus, explicit, explicit_plus)


def test_v311_mqtt_4_7_2_1_leading_wildcard_never_matches_dollar_topic(clients, names):
    check_dollar_topics(clients, names, V311)


def test_v5_mqtt_4_7_2_1_leading_wildcard_never_matches_dollar_topic(clients, names):
    check_dollar_topics(clients, names, V5)


def check_no_normalisation(clients: Clients, names: Names, version: int) -> None:
    base = names.topic("n")
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    watched = [f"{base}/Case", f"{base}/{composed}", f"{base}/a/b", f"{base}/ x"]
    others = [f"{base}/case", f"{base}/{decomposed}", f"{base}/a//b", f"{base}/a/b/",
              f"{base}/x", f"{base}/ x "]
    subscribers = [clients.subscriber(names.client(f"s{i}"), topic, qos=1, version=version)
                   for i, topic in enumerate(watched)]
    sender = publisher(clients, names, version)
    for topic in others + watched:
        sender.publish(topic, topic.encode(), qos=1)
    for subscriber, topic in zip(subscribers, watched):
        assert subscriber.expect_message().topic == topic
    quiet_everywhere(*subscribers)


def test_v311_mqtt_4_7_3_4_no_normalisation_when_matching(clients, names):
    check_no_normalisation(clients, names, V311)


def test_v5_mqtt_4_7_3_4_no_normalisation_when_matching(clients, names):
    check_no_normalisation(clients, names, V5)


# ---------------------------------------------------------------------------
# SUBACK
# ---------------------------------------------------------------------------

def check_suback_per_filter(clients: Clients, names: Names, version: int) -> None:
    """One SUBSCRIBE with several filters: one SUBACK echoing its identifier, one code per
    filter in filter order, and each subscription in force at its own QoS."""
    base = names.topic()
    raw = clients.raw_connected(names.client(), version=version)
    requested = [("f2", 2), ("f0", 0), ("f1", 1), ("g2", 2), ("g0", 0)]
    codes = raw_subscribe(raw, 0x1234, [(f"{base}/{f}", q) for f, q in requested], version)
    assert codes == [q for _, q in requested], codes
    sender = publisher(clients, names, version)
    for suffix, _ in requested:
        sender.publish(f"{base}/{suffix}", suffix.encode(), qos=2)
    got = {p.payload.decode(): p.qos
           for p in mqtt_raw.receive_publishes(raw, len(requested), version)}
    assert got == dict(requested), got


def test_v311_mqtt_3_8_4_1_subscribe_answered_with_suback(clients, names):
    check_suback_per_filter(clients, names, V311)


def test_v311_mqtt_3_8_4_2_suback_echoes_packet_id(clients, names):
    check_suback_per_filter(clients, names, V311)


def test_v311_mqtt_2_3_1_7_suback_echoes_packet_id(clients, names):
    check_suback_per_filter(clients, names, V311)


def test_v311_mqtt_3_8_4_4_multi_filter_subscribe_one_suback(clients, names):
    check_suback_per_filter(clients, names, V311)


def test_v311_mqtt_3_8_4_5_return_code_per_filter(clients, names):
    check_suback_per_filter(clients, names, V311)


def test_v311_mqtt_3_9_3_1_return_codes_in_filter_order(clients, names):
    check_suback_per_filter(clients, names, V311)


def test_v5_mqtt_3_8_4_1_subscribe_answered_with_suback(clients, names):
    check_suback_per_filter(clients, names, V5)


def test_v5_mqtt_3_8_4_2_suback_echoes_packet_id(clients, names):
    check_suback_per_filter(clients, names, V5)


def test_v5_mqtt_2_2_1_6_suback_echoes_packet_id(clients, names):
    check_suback_per_filter(clients, names, V5)


def test_v5_mqtt_3_8_4_5_multi_filter_subscribe_one_suback(clients, names):
    check_suback_per_filter(clients, names, V5)


def test_v5_mqtt_3_8_4_6_reason_code_per_filter(clients, names):
    check_suback_per_filter(clients, names, V5)


def test_v5_mqtt_3_9_3_1_reason_codes_in_filter_order(clients, names):
    check_suback_per_filter(clients, names, V5)


def check_granted_qos_downgrade(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    at0 = clients.subscriber(names.client("s0"), topic, qos=0, version=version)
    at1 = clients.subscriber(names.client("s1"), topic, qos=1, version=version)
    sender = publisher(clients, names, version)
    for qos in (0, 1, 2):
        sender.publish(topic, b"%d" % qos, qos=qos)
    for subscriber, granted in ((at0, 0), (at1, 1)):
        got = sorted((m.payload, m.qos) for m in (subscriber.expect_message()
                                                   for _ in range(3)))
        assert got == [(b"%d" % q, min(q, granted)) for q in (0, 1, 2)], got


def test_v311_mqtt_3_8_4_6_delivered_at_min_of_published_and_granted_qos(clients, names):
    check_granted_qos_downgrade(clients, names, V311)


def test_v5_mqtt_3_8_4_8_delivered_at_min_of_published_and_granted_qos(clients, names):
    check_granted_qos_downgrade(clients, names, V5)


def check_server_maximum_qos(clients: Clients, names: Names, version: int) -> None:
    """A server limited to QoS 1 grants at most 1 to a QoS 2 request and delivers at it."""
    topic = names.topic()
    raw = clients.raw_connected(names.client(), version=version)
    assert raw_subscribe(raw, 3, [(topic, 2)], version) == [1]
    publisher(clients, names, version).publish(topic, b"capped", qos=1)
    pub = mqtt_raw.parse_publish(raw.expect_packet(PUBLISH), version)
    assert (pub.payload, pub.qos) == (b"capped", 1), pub


@pytest.mark.broker_config({"limits": {"qos_max": 1}})
def test_v311_mqtt_3_8_4_5_granted_qos_may_be_lower_than_requested(clients, names):
    check_server_maximum_qos(clients, names, V311)


@pytest.mark.broker_config({"limits": {"qos_max": 1}})
def test_v5_mqtt_3_8_4_7_reason_code_shows_granted_qos(clients, names):
    check_server_maximum_qos(clients, names, V5)


@pytest.mark.broker_config({"limits": {"qos_max": 1}})
def test_v5_mqtt_3_2_2_10_qos2_subscribe_accepted_when_qos2_unsupported(clients, names):
    check_server_maximum_qos(clients, names, V5)


# ---------------------------------------------------------------------------
# Overlapping subscriptions
# ---------------------------------------------------------------------------

def check_overlap_max_qos(clients: Clients, names: Names, version: int) -> list[Message]:
    base = names.topic()
    subscriber = clients.connected(names.client("sub"), version=version)
    if version == V5:
        subscriber.subscribe(f"{base}/#", options=SubscribeOptions(qos=0),
                             properties=subscribe_properties(SubscriptionIdentifier=1))
        subscriber.subscribe(f"{base}/+", options=SubscribeOptions(qos=2),
                             properties=subscribe_properties(SubscriptionIdentifier=2))
    else:
        subscriber.subscribe(f"{base}/#", qos=0)
        subscriber.subscribe(f"{base}/+", qos=2)
    publisher(clients, names, version).publish(f"{base}/x", b"overlap", qos=2)
    copies = [subscriber.expect_message()] + drain(subscriber.messages)
    assert all(c.payload == b"overlap" for c in copies), copies
    assert max(c.qos for c in copies) == 2, (
        f"no copy at the highest matching QoS 2: {[(c.qos, c.dup) for c in copies]}")
    return copies


def sub_ids(message: Message) -> list[int]:
    return sorted(getattr(message.properties, "SubscriptionIdentifier", []) or [])


def test_v311_mqtt_3_3_5_1_overlapping_subscriptions_highest_qos(clients, names):
    check_overlap_max_qos(clients, names, V311)


def test_v5_mqtt_3_3_4_2_overlapping_subscriptions_highest_qos(clients, names):
    copies = check_overlap_max_qos(clients, names, V5)
    assert len(copies) <= 2, copies


def test_v5_mqtt_3_3_4_3_overlapping_subscription_identifiers_all_sent(clients, names):
    copies = check_overlap_max_qos(clients, names, V5)
    assert sorted(i for c in copies for i in sub_ids(c)) == [1, 2], copies


def test_v5_mqtt_3_3_4_4_single_copy_carries_every_identifier(clients, names):
    copies = check_overlap_max_qos(clients, names, V5)
    if len(copies) > 1:
        pytest.skip("the server sends one copy per subscription (MQTT-3.3.4-5 applies)")
    assert sub_ids(copies[0]) == [1, 2], copies


def test_v5_mqtt_3_3_4_5_each_copy_carries_its_identifier(clients, names):
    copies = check_overlap_max_qos(clients, names, V5)
    if len(copies) == 1:
        assert sub_ids(copies[0]) == [1, 2], copies
    else:
        assert sorted(tuple(sub_ids(c)) for c in copies) == [(1,), (2,)], copies


# ---------------------------------------------------------------------------
# Replacing a subscription
# ---------------------------------------------------------------------------

def check_replace_subscription(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    sender = publisher(clients, names, version)
    sender.publish(topic, b"retained", qos=1, retain=True)
    subscriber = clients.connected(names.client("sub"), version=version)
    subscriber.subscribe(topic, qos=0)
    first = subscriber.expect_message()
    assert (first.payload, first.retain) == (b"retained", True), first
    # Publishes in flight while the subscription is replaced three times: none is lost.
    infos = [sender.client.publish(topic, b"%03d" % i, qos=1) for i in range(40)]
    for _ in range(3):
        subscriber.subscribe(topic, qos=2)
    for info in infos:
        info.wait_for_publish(TIMEOUT)
    got = drain(subscriber.messages)
    resent = [m for m in got if m.payload == b"retained"]
    live = [m.payload for m in got if m.payload != b"retained"]
    assert len(resent) == 3 and all(m.retain for m in resent), (
        f"each identical SUBSCRIBE re-sends the retained message: {resent}")
    assert live == [b"%03d" % i for i in range(40)], f"lost or repeated: {live}"
    # One subscription (not four), now at QoS 2.
    sender.publish(topic, b"after", qos=2)
    message = subscriber.expect_message()
    assert (message.payload, message.qos) == (b"after", 2), message
    subscriber.expect_no_message()


def test_v311_mqtt_3_8_4_3_identical_filter_replaces_subscription(clients, names):
    check_replace_subscription(clients, names, V311)


def test_v5_mqtt_3_8_4_3_identical_filter_replaces_subscription(clients, names):
    check_replace_subscription(clients, names, V5)


def test_v5_mqtt_3_8_4_4_replacing_resends_retained_and_loses_nothing(clients, names):
    check_replace_subscription(clients, names, V5)


# ---------------------------------------------------------------------------
# UNSUBSCRIBE
# ---------------------------------------------------------------------------

def check_unsubscribe(clients: Clients, names: Names, version: int) -> None:
    base = names.topic()
    raw = clients.raw_connected(names.client(), version=version)
    assert raw_subscribe(raw, 1, [(f"{base}/a/+", 1), (f"{base}/a/b", 1), (f"{base}/c", 1)],
                         version) == [1, 1, 1]
    # Exact, character-by-character comparison: "A" is not "a", "+" is not "b"; the
    # filter list holds one that exists, one that does not, and one more that does.
    codes = raw_unsubscribe(raw, 0x4321, [f"{base}/a/b", f"{base}/A/+", f"{base}/c"], version)
    if version == V5:
        assert codes == [0x00, NO_SUBSCRIPTION_EXISTED, 0x00], codes
    else:
        assert codes == [], codes
    sender = publisher(clients, names, version)
    sender.publish(f"{base}/c", b"gone", qos=1)
    sender.publish(f"{base}/a/b", b"via a/+", qos=1)
    assert payloads(raw, 1, version) == [b"via a/+"]  # once: the a/b subscription is gone
    # Nothing was subscribed: still an UNSUBACK with the identifier.
    codes = raw_unsubscribe(raw, 7, [f"{base}/never"], version)
    assert codes == ([NO_SUBSCRIPTION_EXISTED] if version == V5 else []), codes
    raw.send(mqtt_raw.pingreq())
    raw.expect_packet(mqtt_raw.PINGRESP)


def test_v311_mqtt_3_10_4_1_unsubscribe_compares_filters_exactly(clients, names):
    check_unsubscribe(clients, names, V311)


def test_v311_mqtt_3_10_4_2_no_messages_after_unsubscribe(clients, names):
    check_unsubscribe(clients, names, V311)


def test_v311_mqtt_3_10_4_4_unsuback_echoes_packet_id(clients, names):
    check_unsubscribe(clients, names, V311)


def test_v311_mqtt_3_10_4_5_unsuback_even_without_subscription(clients, names):
    check_unsubscribe(clients, names, V311)


def test_v311_mqtt_3_10_4_6_multi_filter_unsubscribe_one_unsuback(clients, names):
    check_unsubscribe(clients, names, V311)


def test_v5_mqtt_3_10_4_1_unsubscribe_compares_filters_exactly(clients, names):
    check_unsubscribe(clients, names, V5)


def test_v5_mqtt_3_10_4_2_no_messages_after_unsubscribe(clients, names):
    check_unsubscribe(clients, names, V5)


def test_v5_mqtt_3_10_4_4_unsubscribe_answered_with_unsuback(clients, names):
    check_unsubscribe(clients, names, V5)


def test_v5_mqtt_3_10_4_5_unsuback_0x11_when_nothing_deleted(clients, names):
    check_unsubscribe(clients, names, V5)


def test_v5_mqtt_3_10_4_6_multi_filter_unsubscribe_one_unsuback(clients, names):
    check_unsubscribe(clients, names, V5)


def test_v5_mqtt_3_11_3_1_unsuback_codes_in_filter_order(clients, names):
    check_unsubscribe(clients, names, V5)


def check_unsubscribe_completes_inflight(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    raw = clients.raw_connected(names.client(), version=version)
    assert raw_subscribe(raw, 1, [(topic, 2)], version) == [2]
    publisher(clients, names, version).publish(topic, b"started", qos=2)
    pub = mqtt_raw.parse_publish(raw.expect_packet(PUBLISH), version)
    raw_unsubscribe(raw, 2, [topic], version)
    raw.send(mqtt_raw.pubrec(pub.packet_id, version=version))
    assert mqtt_raw.packet_id_of(raw.expect_packet(PUBREL)) == pub.packet_id
    raw.send(mqtt_raw.pubcomp(pub.packet_id, version=version))
    raw.send(mqtt_raw.pingreq())
    raw.expect_packet(mqtt_raw.PINGRESP)


def test_v311_mqtt_3_10_4_3_started_qos2_delivery_completed(clients, names):
    check_unsubscribe_completes_inflight(clients, names, V311)


def test_v5_mqtt_3_10_4_3_started_qos2_delivery_completed(clients, names):
    check_unsubscribe_completes_inflight(clients, names, V5)


# ---------------------------------------------------------------------------
# Subscription options (5.0)
# ---------------------------------------------------------------------------

def test_v5_mqtt_3_8_3_3_no_local_not_sent_back_to_publisher(clients, names):
    topic = names.topic()
    own = clients.connected(names.client("own"), version=V5)
    own.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
    plain = clients.subscriber(names.client("plain"), topic, qos=1)
    own.publish(topic, b"from own", qos=1)
    assert plain.expect_message().payload == b"from own"
    publisher(clients, names, V5).publish(topic, b"from other", qos=1)
    assert own.expect_message().payload == b"from other"
    assert plain.expect_message().payload == b"from other"
    quiet_everywhere(own, plain)


def check_retain_as_published(clients: Clients, names: Names, rap: bool) -> None:
    topic = names.topic()
    subscriber = clients.connected(names.client("sub"), version=V5)
    subscriber.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=rap))
    sender = publisher(clients, names, V5)
    sender.publish(topic, b"retained", qos=1, retain=True)
    sender.publish(topic, b"plain", qos=1, retain=False)
    got = [(m.payload, m.retain) for m in (subscriber.expect_message() for _ in range(2))]
    assert got == [(b"retained", rap), (b"plain", False)], got
    sender.publish(topic, b"", qos=1, retain=True)  # clear it


def test_v5_mqtt_3_3_1_12_retain_as_published_0_forwards_retain_0(clients, names):
    check_retain_as_published(clients, names, False)


def test_v5_mqtt_3_3_1_13_retain_as_published_1_keeps_retain_flag(clients, names):
    check_retain_as_published(clients, names, True)


# ---------------------------------------------------------------------------
# Shared subscriptions (5.0)
# ---------------------------------------------------------------------------

SHARED_COUNT = 20


def test_v5_mqtt_4_8_2_3_shared_message_to_one_member_at_its_granted_qos(clients, names):
    topic = names.topic()
    shared = f"$share/{names.tag}/{topic}"
    member1 = clients.subscriber(names.client("m1"), shared, qos=1)
    member2 = clients.subscriber(names.client("m2"), shared, qos=2)
    merged = merge_messages(member1, member2)
    sender = publisher(clients, names, V5)
    for index in range(SHARED_COUNT):
        sender.publish(topic, b"%02d" % index, qos=2)
    got = [next_from(merged) for _ in range(SHARED_COUNT)]
    expect_no_message(merged)
    assert sorted(m.payload for _, m in got) == [b"%02d" % i for i in range(SHARED_COUNT)], (
        "every message goes to exactly one member")
    by_member = {member.client_id: [m for who, m in got if who == member.client_id]
                 for member in (member1, member2)}
    assert all(by_member.values()), (
        f"all messages went to one member: { {k: len(v) for k, v in by_member.items()} }")
    assert {m.qos for m in by_member[member1.client_id]} == {1}
    assert {m.qos for m in by_member[member2.client_id]} == {2}


def test_v5_mqtt_4_8_2_3_groups_and_plain_subscriptions_each_get_a_copy(clients, names):
    topic = names.topic()
    group1 = [clients.subscriber(names.client(f"a{i}"), f"$share/a{names.tag}/{topic}",
                                 qos=1) for i in range(2)]
    group2 = clients.subscriber(names.client("b"), f"$share/b{names.tag}/{topic}", qos=1)
    plain = clients.subscriber(names.client("p"), topic, qos=1)
    merged1 = merge_messages(*group1)
    publisher(clients, names, V5).publish(topic, b"fan out", qos=1)
    assert next_from(merged1)[1].payload == b"fan out"
    assert group2.expect_message().payload == b"fan out"
    assert plain.expect_message().payload == b"fan out"
    expect_no_message(merged1)
    assert group2.messages.empty() and plain.messages.empty()


@mosquitto_deviation("sends the retained message to a new shared subscription")
def test_v5_mqtt_4_8_2_no_retained_message_for_new_shared_subscription(clients, names):
    """Section 4.8.2: retained messages are not sent to the Session when it establishes a
    new Shared Subscription."""
    topic = names.topic()
    sender = publisher(clients, names, V5)
    sender.publish(topic, b"retained", qos=1, retain=True)
    plain = clients.subscriber(names.client("p"), topic, qos=1)
    assert plain.expect_message().retain  # the retained message is there
    member = clients.subscriber(names.client("m"), f"$share/{names.tag}/{topic}", qos=1)
    member.expect_no_message()
    sender.publish(topic, b"live", qos=1)
    assert member.expect_message().payload == b"live"
    sender.publish(topic, b"", qos=1, retain=True)
