"""Retained messages: storing, replacing and clearing them, the RETAIN flag on delivery,
Retain Handling, expiry and the QoS they are delivered at (MQTT 3.1.1 section 3.3.1.3;
MQTT 5.0 sections 3.3.1.3, 3.3.2.3.3 and 3.8.3.1)."""

from __future__ import annotations

from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_raw import V5, V311
from support import Clients, Names, PahoClient, publish_properties


def publisher(clients: Clients, names: Names, version: int) -> PahoClient:
    return clients.connected(names.client("pub"), version=version)


def late_subscriber(clients: Clients, names: Names, topic_filter: str, version: int, *,
                    qos: int = 2, suffix: str = "late") -> PahoClient:
    return clients.subscriber(names.client(suffix), topic_filter, qos=qos, version=version)


def expect_retained(subscriber: PahoClient, payload: bytes, qos: int | None = None) -> None:
    message = subscriber.expect_message()
    assert (message.payload, message.retain) == (payload, True), message
    if qos is not None:
        assert message.qos == qos, f"retained message delivered at QoS {message.qos}, not {qos}"


# ---------------------------------------------------------------------------
# Storing, replacing, clearing
# ---------------------------------------------------------------------------

def check_stored_with_qos(clients: Clients, names: Names, version: int) -> None:
    base = names.topic()
    sender = publisher(clients, names, version)
    for qos in (0, 1, 2):
        sender.publish(f"{base}/q{qos}", b"kept at %d" % qos, qos=qos, retain=True)
    for qos in (0, 1, 2):
        expect_retained(late_subscriber(clients, names, f"{base}/q{qos}", version,
                                        suffix=f"l{qos}"), b"kept at %d" % qos, qos)


def test_v311_mqtt_3_3_1_5_retained_message_stored_with_its_qos(clients, names):
    check_stored_with_qos(clients, names, V311)


def test_v5_mqtt_3_3_1_5_retained_message_stored(clients, names):
    check_stored_with_qos(clients, names, V5)


def check_wildcard_gets_each_topic(clients: Clients, names: Names, version: int) -> None:
    base = names.topic()
    sender = publisher(clients, names, version)
    for suffix in ("a", "a/b", "c"):
        sender.publish(f"{base}/{suffix}", b"old " + suffix.encode(), qos=1, retain=True)
        sender.publish(f"{base}/{suffix}", suffix.encode(), qos=1, retain=True)
    sender.publish(f"{base}/d", b"not retained", qos=1)
    subscriber = late_subscriber(clients, names, f"{base}/#", version)
    got = sorted((m.topic, m.payload, m.retain) for m in
                 (subscriber.expect_message() for _ in range(3)))
    assert got == [(f"{base}/{s}", s.encode(), True) for s in ("a", "a/b", "c")], got
    subscriber.expect_no_message()  # only the last message of each topic


def test_v311_mqtt_3_3_1_6_new_subscription_gets_last_retained_per_topic(clients, names):
    check_wildcard_gets_each_topic(clients, names, V311)


def test_v5_mqtt_3_3_1_9_retain_handling_0_sends_matching_retained(clients, names):
    check_wildcard_gets_each_topic(clients, names, V5)


def check_replaced(clients: Clients, names: Names, version: int, qos: int) -> None:
    topic = names.topic()
    sender = publisher(clients, names, version)
    sender.publish(topic, b"first", qos=2, retain=True)
    sender.publish(topic, b"second", qos=qos, retain=True)
    subscriber = late_subscriber(clients, names, topic, version)
    expect_retained(subscriber, b"second", qos)
    subscriber.expect_no_message()


def test_v311_mqtt_3_3_1_7_retained_qos0_replaces_previous(clients, names):
    check_replaced(clients, names, V311, 0)


def test_v5_mqtt_3_3_1_5_retained_message_replaced(clients, names):
    check_replaced(clients, names, V5, 1)


def check_cleared(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    sender = publisher(clients, names, version)
    sender.publish(topic, b"to be cleared", qos=1, retain=True)
    watcher = late_subscriber(clients, names, topic, version, suffix="w")
    expect_retained(watcher, b"to be cleared")
    sender.publish(topic, b"", qos=1, retain=True)
    # Processed normally: current subscribers receive the empty message ...
    message = watcher.expect_message()
    assert message.payload == b"", message
    # ... and it is not stored: later subscribers find nothing.
    late_subscriber(clients, names, topic, version).expect_no_message()


def test_v311_mqtt_3_3_1_10_empty_retained_delivered_and_clears(clients, names):
    check_cleared(clients, names, V311)


def test_v311_mqtt_3_3_1_11_empty_retained_not_stored(clients, names):
    check_cleared(clients, names, V311)


def test_v5_mqtt_3_3_1_6_empty_retained_delivered_and_clears(clients, names):
    check_cleared(clients, names, V5)


def test_v5_mqtt_3_3_1_7_empty_retained_not_stored(clients, names):
    check_cleared(clients, names, V5)


def check_retain_0_leaves_retained(clients: Clients, names: Names, version: int) -> None:
    topic, fresh = names.topic(), names.topic("fresh")
    sender = publisher(clients, names, version)
    sender.publish(topic, b"retained", qos=1, retain=True)
    sender.publish(topic, b"not retained", qos=1)
    sender.publish(topic, b"", qos=1)  # empty, but RETAIN 0: clears nothing
    sender.publish(fresh, b"never stored", qos=1)
    subscriber = late_subscriber(clients, names, topic, version)
    expect_retained(subscriber, b"retained")
    subscriber.expect_no_message()
    late_subscriber(clients, names, fresh, version, suffix="f").expect_no_message()


def test_v311_mqtt_3_3_1_12_retain_0_neither_stores_nor_replaces(clients, names):
    check_retain_0_leaves_retained(clients, names, V311)


def test_v5_mqtt_3_3_1_8_retain_0_neither_stores_nor_replaces(clients, names):
    check_retain_0_leaves_retained(clients, names, V5)


def test_v311_mqtt_3_1_2_7_retained_message_outlives_session(clients, names):
    topic = names.topic()
    sender = clients.paho(names.client("pub"), version=V311, clean=True)
    sender.connect()
    sender.publish(topic, b"outlives", qos=1, retain=True)
    sender.disconnect()  # the publisher's (clean) session ends here
    expect_retained(late_subscriber(clients, names, topic, V311), b"outlives")


# ---------------------------------------------------------------------------
# The RETAIN flag on delivery
# ---------------------------------------------------------------------------

def check_retain_flag_on_delivery(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    established = late_subscriber(clients, names, topic, version, suffix="est")
    sender = publisher(clients, names, version)
    sender.publish(topic, b"retained", qos=1, retain=True)
    message = established.expect_message()
    assert (message.payload, message.retain) == (b"retained", False), (
        f"established subscription: RETAIN must be 0: {message}")
    expect_retained(late_subscriber(clients, names, topic, version), b"retained")


def test_v311_mqtt_3_3_1_8_retain_1_when_sent_for_new_subscription(clients, names):
    check_retain_flag_on_delivery(clients, names, V311)


def test_v311_mqtt_3_3_1_9_retain_0_for_established_subscription(clients, names):
    check_retain_flag_on_delivery(clients, names, V311)


def test_v5_mqtt_3_3_1_12_retain_0_for_established_subscription(clients, names):
    check_retain_flag_on_delivery(clients, names, V5)


# ---------------------------------------------------------------------------
# Retain Handling (5.0)
# ---------------------------------------------------------------------------

def subscribe_handling(client: PahoClient, topic: str, handling: int) -> None:
    client.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=handling))


def retained_topic(clients: Clients, names: Names) -> str:
    topic = names.topic()
    publisher(clients, names, V5).publish(topic, b"retained", qos=1, retain=True)
    return topic


def test_v5_mqtt_3_3_1_9_retain_handling_0_sends_on_every_subscribe(clients, names):
    topic = retained_topic(clients, names)
    client = clients.connected(names.client(), version=V5)
    subscribe_handling(client, topic, 0)
    expect_retained(client, b"retained")
    subscribe_handling(client, topic, 0)  # existing subscription: sent again
    expect_retained(client, b"retained")
    client.expect_no_message()


def test_v5_mqtt_3_3_1_10_retain_handling_1_only_for_new_subscription(clients, names):
    topic = retained_topic(clients, names)
    client = clients.connected(names.client(), version=V5)
    subscribe_handling(client, topic, 1)
    expect_retained(client, b"retained")
    subscribe_handling(client, topic, 1)  # it exists now: nothing
    client.expect_no_message()


def test_v5_mqtt_3_3_1_11_retain_handling_2_sends_nothing(clients, names):
    topic = retained_topic(clients, names)
    client = clients.connected(names.client(), version=V5)
    subscribe_handling(client, topic, 2)
    client.expect_no_message()
    publisher(clients, names, V5).publish(topic, b"live", qos=1)
    assert client.expect_message().payload == b"live"  # the subscription itself works


# ---------------------------------------------------------------------------
# Expiry (5.0) and QoS
# ---------------------------------------------------------------------------

def test_v5_mqtt_3_3_2_5_expired_retained_message_not_delivered(clients, names):
    topic, lasting = names.topic(), names.topic("lasting")
    sender = publisher(clients, names, V5)
    sender.publish(topic, b"short-lived", qos=1, retain=True,
                   properties=publish_properties(MessageExpiryInterval=1))
    sender.publish(lasting, b"long-lived", qos=1, retain=True,
                   properties=publish_properties(MessageExpiryInterval=3600))
    fresh = late_subscriber(clients, names, topic, V5, suffix="fresh")
    message = fresh.expect_message()
    assert message.payload == b"short-lived" and message.retain, message
    remaining = getattr(message.properties, "MessageExpiryInterval", None)
    assert remaining is not None and remaining <= 1, f"Message Expiry Interval {remaining}"
    clients.elapse_on_broker(2)
    late_subscriber(clients, names, topic, V5).expect_no_message()
    survivor = late_subscriber(clients, names, lasting, V5, suffix="surv").expect_message()
    assert survivor.payload == b"long-lived"
    remaining = getattr(survivor.properties, "MessageExpiryInterval", None)
    assert remaining is not None and 3590 <= remaining < 3600, (
        f"a retained message's expiry counts down while it is stored: {remaining}")


def check_retained_qos_downgrade(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    publisher(clients, names, version).publish(topic, b"stored at 2", qos=2, retain=True)
    for granted in (0, 1, 2):
        subscriber = late_subscriber(clients, names, topic, version, qos=granted,
                                     suffix=f"g{granted}")
        expect_retained(subscriber, b"stored at 2", granted)


def test_v311_mqtt_3_8_4_6_retained_delivered_at_min_qos(clients, names):
    check_retained_qos_downgrade(clients, names, V311)


def test_v5_mqtt_3_8_4_8_retained_delivered_at_min_qos(clients, names):
    check_retained_qos_downgrade(clients, names, V5)
