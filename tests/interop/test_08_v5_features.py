"""MQTT 5.0 features around PUBLISH and the session: Message Expiry, Topic Aliases, the
properties a server forwards unaltered, the client's Maximum Packet Size, Request Problem
Information, Request Response Information, Subscription Identifiers and the Session Expiry
Interval of CONNECT and DISCONNECT (MQTT 5.0 sections 3.1.2.11, 3.3.2.3, 3.8.2.1 and 3.14)."""

from __future__ import annotations

from paho.mqtt.subscribeoptions import SubscribeOptions

import mqtt_raw
from mqtt_raw import DISCONNECT, PUBACK, PUBCOMP, PUBLISH, SUBACK, UNSUBACK, V5, RawClient
from support import (Clients, Names, PahoClient, connect_properties, mosquitto_deviation,
                     publish_properties, subscribe_properties)

EXPIRY = 300
TOPIC_ALIAS_INVALID = 0x94
PROTOCOL_ERROR = 0x82


def publisher(clients: Clients, names: Names) -> PahoClient:
    return clients.connected(names.client("pub"), version=V5)


def persistent(clients: Clients, client_id: str) -> PahoClient:
    client = clients.paho(client_id, version=V5, clean=False)
    client.connect(properties=connect_properties(SessionExpiryInterval=EXPIRY))
    return client


def raw_v5(clients: Clients, client_id: str, properties: dict | None = None) -> RawClient:
    return clients.raw_connected(client_id, version=V5, properties=properties or None)


def raw_subscribe(raw: RawClient, topic_filter: str, qos: int = 1, packet_id: int = 1,
                  properties: dict | None = None) -> None:
    raw.send(mqtt_raw.subscribe(packet_id, topic_filter, qos=qos, version=V5,
                                properties=properties))
    ack = mqtt_raw.parse_ack(raw.expect_packet(SUBACK), V5)
    assert ack.codes == [qos], ack


def next_publish(raw: RawClient) -> mqtt_raw.Publish:
    pub = mqtt_raw.parse_publish(raw.expect_packet(PUBLISH), V5)
    if pub.qos == 1:
        raw.send(mqtt_raw.puback(pub.packet_id, version=V5))
    return pub


def expect_disconnect(raw: RawClient, reason: int) -> mqtt_raw.Disconnect:
    packets = raw.expect_closed()
    assert [p.type for p in packets] == [DISCONNECT], (
        f"expected DISCONNECT 0x{reason:02x} and a close, got {packets}")
    disconnect = mqtt_raw.parse_disconnect(packets[0])
    assert disconnect.reason == reason, f"DISCONNECT 0x{disconnect.reason:02x}"
    assert mqtt_raw.SESSION_EXPIRY_INTERVAL not in disconnect.properties  # MQTT-3.14.2-2
    return disconnect


# ---------------------------------------------------------------------------
# Message Expiry Interval
# ---------------------------------------------------------------------------

def test_v5_mqtt_3_3_2_6_expiry_forwarded_minus_time_waiting(clients, names):
    topic, client_id = names.topic(), names.client("sub")
    live = clients.subscriber(names.client("live"), topic, qos=1)
    away = persistent(clients, client_id)
    away.subscribe(topic, qos=1)
    away.disconnect()
    publisher(clients, names).publish(topic, b"expiring", qos=1,
                                      properties=publish_properties(MessageExpiryInterval=60))
    now = live.expect_message().properties.MessageExpiryInterval
    assert 58 <= now <= 60, f"forwarded at once with Message Expiry Interval {now}"
    clients.elapse_on_broker(2)
    later = persistent(clients, client_id).expect_message()
    remaining = later.properties.MessageExpiryInterval
    assert later.payload == b"expiring" and 50 <= remaining <= 58, (
        f"after waiting 2 s or more the interval is {remaining}, not at most 58")


def test_v5_mqtt_3_3_2_5_expired_copy_not_delivered(clients, names):
    topic, client_id = names.topic(), names.client("sub")
    away = persistent(clients, client_id)
    away.subscribe(topic, qos=1)
    away.disconnect()
    sender = publisher(clients, names)
    sender.publish(topic, b"expires", qos=1,
                   properties=publish_properties(MessageExpiryInterval=1))
    sender.publish(topic, b"lasts", qos=1)
    clients.elapse_on_broker(2)
    back = persistent(clients, client_id)
    assert back.expect_message().payload == b"lasts"
    back.expect_no_message()


# ---------------------------------------------------------------------------
# Topic Aliases
# ---------------------------------------------------------------------------

def test_v5_mqtt_3_3_2_12_topic_aliases_up_to_maximum_accepted(clients, names):
    one, two = names.topic("one"), names.topic("two")
    watcher = clients.subscriber(names.client("sub"), names.topic("+"), qos=1)
    raw = raw_v5(clients, names.client())
    maximum = raw.connack.properties.get(mqtt_raw.TOPIC_ALIAS_MAXIMUM, 0)
    assert maximum >= 1, f"the server accepts no topic aliases ({maximum})"
    sends = [(one, 1, b"set 1"), ("", 1, b"use 1"), (two, maximum, b"set max"),
             ("", maximum, b"use max"), (two, 1, b"remap 1"), ("", 1, b"use 1 again")]
    for packet_id, (topic, alias, payload) in enumerate(sends, start=1):
        raw.send(mqtt_raw.publish(topic, payload, qos=1, packet_id=packet_id, version=V5,
                                  properties={mqtt_raw.TOPIC_ALIAS: alias}))
        assert mqtt_raw.parse_ack(raw.expect_packet(PUBACK), V5).reason < 0x80
    got = [(m.topic, m.payload) for m in (watcher.expect_message() for _ in sends)]
    assert got == [(one, b"set 1"), (one, b"use 1"), (two, b"set max"), (two, b"use max"),
                   (two, b"remap 1"), (two, b"use 1 again")], got


def check_bad_alias(clients: Clients, names: Names, alias_of_maximum: int) -> None:
    topic = names.topic()
    watcher = clients.subscriber(names.client("sub"), topic, qos=1)
    raw = raw_v5(clients, names.client())
    maximum = raw.connack.properties.get(mqtt_raw.TOPIC_ALIAS_MAXIMUM, 0)
    alias = maximum + alias_of_maximum if alias_of_maximum else 0
    raw.send(mqtt_raw.publish(topic, b"bad alias", qos=1, packet_id=1, version=V5,
                              properties={mqtt_raw.TOPIC_ALIAS: alias}))
    expect_disconnect(raw, TOPIC_ALIAS_INVALID)
    watcher.expect_no_message()


def test_v5_mqtt_3_3_2_12_alias_above_maximum_disconnect_0x94(clients, names):
    check_bad_alias(clients, names, 1)


@mosquitto_deviation("answers Topic Alias 0 with DISCONNECT 0x81 (Malformed Packet), not 0x94")
def test_v5_mqtt_3_3_2_8_alias_0_disconnect_0x94(clients, names):
    """Section 3.3.4: a Topic Alias of 0 or above the maximum is answered with DISCONNECT
    0x94 (Topic Alias invalid)."""
    check_bad_alias(clients, names, 0)


def test_v5_mqtt_3_3_2_7_alias_mapping_not_carried_to_new_connection(clients, names):
    topic, client_id = names.topic(), names.client()
    watcher = clients.subscriber(names.client("sub"), topic, qos=1)
    first = raw_v5(clients, client_id)
    first.send(mqtt_raw.publish(topic, b"set", qos=1, packet_id=1, version=V5,
                                properties={mqtt_raw.TOPIC_ALIAS: 1}))
    first.expect_packet(PUBACK)
    assert watcher.expect_message().payload == b"set"
    first.send(mqtt_raw.disconnect(version=V5))
    first.expect_closed()
    second = raw_v5(clients, client_id)
    second.send(mqtt_raw.publish("", b"stale alias", qos=1, packet_id=2, version=V5,
                                 properties={mqtt_raw.TOPIC_ALIAS: 1}))
    expect_disconnect(second, PROTOCOL_ERROR)
    watcher.expect_no_message()


def check_outgoing_aliases(clients: Clients, names: Names, client_maximum: int | None) -> None:
    topic = names.topic()
    props = {} if client_maximum is None else {mqtt_raw.TOPIC_ALIAS_MAXIMUM: client_maximum}
    raw = raw_v5(clients, names.client(), props)
    raw_subscribe(raw, names.topic("+"))
    sender = publisher(clients, names)
    for index in range(6):
        sender.publish(f"{topic}{index % 2}", b"%d" % index, qos=1)
    mapping: dict[int, str] = {}
    for index in range(6):
        pub = next_publish(raw)
        alias = pub.properties.get(mqtt_raw.TOPIC_ALIAS)
        if alias is not None:
            assert client_maximum and 1 <= alias <= client_maximum, (
                f"Topic Alias {alias} sent to a client whose maximum is {client_maximum}")
            if pub.topic:
                mapping[alias] = pub.topic
            assert alias in mapping, f"alias {alias} used before it was set"
        resolved = pub.topic or mapping[alias]
        assert (resolved, pub.payload) == (f"{topic}{index % 2}", b"%d" % index), pub


def test_v5_mqtt_3_1_2_27_no_topic_alias_without_client_maximum(clients, names):
    check_outgoing_aliases(clients, names, None)


def test_v5_mqtt_3_1_2_26_topic_alias_within_client_maximum(clients, names):
    check_outgoing_aliases(clients, names, 1)


def test_v5_mqtt_3_3_2_11_server_alias_not_above_connect_maximum(clients, names):
    check_outgoing_aliases(clients, names, 1)


# ---------------------------------------------------------------------------
# Properties forwarded unaltered
# ---------------------------------------------------------------------------

USER_PROPERTIES = [("b", "1"), ("a", "2"), ("b", "3"), ("\u00e9t\u00e9", ""), ("a", "1")]


def check_properties_forwarded(clients: Clients, names: Names) -> None:
    topic = names.topic()
    live = clients.subscriber(names.client("live"), topic, qos=1)
    props = publish_properties(PayloadFormatIndicator=1, ContentType="text/plain; x=\u00fc",
                               ResponseTopic=names.topic("reply"),
                               CorrelationData=b"\x00\x01corr\xff",
                               UserProperty=USER_PROPERTIES)
    publisher(clients, names).publish(topic, "h\u00e9llo".encode(), qos=1, retain=True,
                                      properties=props)
    late = clients.subscriber(names.client("late"), topic, qos=1)  # via the retained copy
    for subscriber in (live, late):
        message = subscriber.expect_message()
        got = message.properties
        assert got.PayloadFormatIndicator == 1
        assert got.ContentType == "text/plain; x=\u00fc"
        assert got.ResponseTopic == names.topic("reply")
        assert got.CorrelationData == b"\x00\x01corr\xff"
        assert message.user_properties == USER_PROPERTIES, message.user_properties


def test_v5_mqtt_3_3_2_4_payload_format_indicator_forwarded(clients, names):
    check_properties_forwarded(clients, names)


def test_v5_mqtt_3_3_2_15_response_topic_forwarded(clients, names):
    check_properties_forwarded(clients, names)


def test_v5_mqtt_3_3_2_16_correlation_data_forwarded(clients, names):
    check_properties_forwarded(clients, names)


def test_v5_mqtt_3_3_2_17_user_properties_forwarded(clients, names):
    check_properties_forwarded(clients, names)


def test_v5_mqtt_3_3_2_18_user_property_order_kept(clients, names):
    check_properties_forwarded(clients, names)


def test_v5_mqtt_3_3_2_20_content_type_forwarded(clients, names):
    check_properties_forwarded(clients, names)


# ---------------------------------------------------------------------------
# The client's Maximum Packet Size
# ---------------------------------------------------------------------------

def check_maximum_packet_size(clients: Clients, names: Names, receive_maximum: int) -> None:
    topic = names.topic()
    small_client = raw_v5(clients, names.client("small"), {
        mqtt_raw.MAXIMUM_PACKET_SIZE: 128, mqtt_raw.RECEIVE_MAXIMUM: receive_maximum})
    raw_subscribe(small_client, topic)
    big_client = clients.subscriber(names.client("big"), topic, qos=1)
    sender = publisher(clients, names)
    sender.publish(topic, b"B" * 300, qos=1)
    sender.publish(topic, b"small", qos=1)
    pub = mqtt_raw.parse_publish(small_client.expect_packet(PUBLISH), V5)
    assert pub.payload == b"small", f"a {len(pub.payload)} byte payload was sent"
    small_client.send(mqtt_raw.puback(pub.packet_id, version=V5))
    small_client.expect_no_packet()  # nor is the large one sent later
    # A client without the limit gets both.
    assert [big_client.expect_message().payload for _ in range(2)] == [b"B" * 300, b"small"]


def test_v5_mqtt_3_1_2_24_no_packet_above_client_maximum_packet_size(clients, names):
    check_maximum_packet_size(clients, names, 10)


@mosquitto_deviation("an undeliverable oversize QoS 1 message keeps the client's only "
                     "Receive Maximum slot, so later messages are never sent")
def test_v5_mqtt_3_1_2_25_oversize_message_discarded_as_if_sent(clients, names):
    """With Receive Maximum 1, the discarded message must not hold the only slot."""
    check_maximum_packet_size(clients, names, 1)


# ---------------------------------------------------------------------------
# Request Problem Information / Request Response Information
# ---------------------------------------------------------------------------

def test_v5_mqtt_3_1_2_29_no_reason_string_when_problem_information_0(clients, names):
    raw = raw_v5(clients, names.client(), {mqtt_raw.REQUEST_PROBLEM_INFORMATION: 0})
    # Acknowledgements that report problems: an UNSUBSCRIBE of nothing (0x11), a PUBREL for
    # an unknown packet identifier (0x92 or 0), a QoS 1 publish nobody subscribes to (0x10 or 0).
    raw.send(mqtt_raw.unsubscribe(1, names.topic("none"), version=V5))
    acks = [mqtt_raw.parse_ack(raw.expect_packet(UNSUBACK), V5)]
    raw.send(mqtt_raw.pubrel(4242, version=V5))
    acks.append(mqtt_raw.parse_ack(raw.expect_packet(PUBCOMP), V5))
    raw.send(mqtt_raw.publish(names.topic("nobody"), b"x", qos=1, packet_id=5, version=V5))
    acks.append(mqtt_raw.parse_ack(raw.expect_packet(PUBACK), V5))
    for ack in acks:
        assert mqtt_raw.REASON_STRING not in ack.properties, ack
        assert mqtt_raw.USER_PROPERTY not in ack.properties, ack


def test_v5_mqtt_3_1_2_28_no_response_information_when_not_requested(clients, names):
    for request in (None, 0):
        props = {} if request is None else {mqtt_raw.REQUEST_RESPONSE_INFORMATION: request}
        raw = raw_v5(clients, names.client(f"r{request}"), props)
        assert mqtt_raw.RESPONSE_INFORMATION not in raw.connack.properties, raw.connack


# ---------------------------------------------------------------------------
# Subscription Identifiers
# ---------------------------------------------------------------------------

def test_v5_mqtt_3_3_4_3_subscription_identifier_sent_with_message(clients, names):
    topic, other = names.topic(), names.topic("other")
    raw = raw_v5(clients, names.client())
    raw_subscribe(raw, topic, properties={mqtt_raw.SUBSCRIPTION_IDENTIFIER: 42})
    raw_subscribe(raw, other, packet_id=2)  # no identifier
    sender = publisher(clients, names)
    sender.publish(topic, b"with", qos=1, retain=True)
    sender.publish(other, b"without", qos=1)
    got = {p.payload: p for p in (next_publish(raw) for _ in range(2))}
    assert got[b"with"].properties.get(mqtt_raw.SUBSCRIPTION_IDENTIFIER) == [42], got
    assert mqtt_raw.SUBSCRIPTION_IDENTIFIER not in got[b"without"].properties, got
    # Replacing the subscription replaces its identifier; retained copies carry it too.
    raw_subscribe(raw, topic, packet_id=3,
                  properties={mqtt_raw.SUBSCRIPTION_IDENTIFIER: 268435455})
    retained = next_publish(raw)
    assert retained.retain and retained.properties.get(
        mqtt_raw.SUBSCRIPTION_IDENTIFIER) == [268435455], retained
    sender.publish(topic, b"", qos=1, retain=True)
    cleared = next_publish(raw)
    assert cleared.properties.get(mqtt_raw.SUBSCRIPTION_IDENTIFIER) == [268435455], cleared


def test_v5_mqtt_3_3_4_5_identifier_of_each_client_own_subscription(clients, names):
    topic = names.topic()
    first = clients.connected(names.client("a"), version=V5)
    first.subscribe(topic, options=SubscribeOptions(qos=1),
                    properties=subscribe_properties(SubscriptionIdentifier=5))
    second = clients.connected(names.client("b"), version=V5)
    second.subscribe(topic, options=SubscribeOptions(qos=1),
                     properties=subscribe_properties(SubscriptionIdentifier=6))
    publisher(clients, names).publish(topic, b"x", qos=1)
    assert first.expect_message().properties.SubscriptionIdentifier == [5]
    assert second.expect_message().properties.SubscriptionIdentifier == [6]


# ---------------------------------------------------------------------------
# Session Expiry Interval in CONNECT and DISCONNECT
# ---------------------------------------------------------------------------

def session_with_subscription(clients: Clients, names: Names, client_id: str,
                              expiry: int) -> RawClient:
    raw = clients.raw_connected(client_id, version=V5, clean=False,
                                properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: expiry})
    raw_subscribe(raw, names.topic(), qos=1)
    return raw


def reconnect_present(clients: Clients, client_id: str) -> bool:
    raw = clients.raw_connected(client_id, version=V5, clean=False,
                                properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: EXPIRY})
    present = raw.connack.session_present
    raw.send(mqtt_raw.disconnect(version=V5))
    raw.expect_closed()
    return present


def test_v5_mqtt_3_1_2_23_connect_session_expiry_keeps_session(clients, names):
    client_id = names.client()
    raw = session_with_subscription(clients, names, client_id, EXPIRY)
    raw.send(mqtt_raw.disconnect(version=V5))  # no property: the CONNECT value holds
    raw.expect_closed()
    assert reconnect_present(clients, client_id)


def test_v5_mqtt_3_1_2_23_disconnect_session_expiry_0_ends_session(clients, names):
    client_id = names.client()
    raw = session_with_subscription(clients, names, client_id, EXPIRY)
    raw.send(mqtt_raw.disconnect(version=V5, reason=0,
                                 properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: 0}))
    raw.expect_closed()
    assert not reconnect_present(clients, client_id)


def test_v5_mqtt_4_1_0_2_disconnect_shortens_session_expiry(clients, names):
    client_id = names.client()
    raw = session_with_subscription(clients, names, client_id, EXPIRY)
    raw.send(mqtt_raw.disconnect(version=V5, reason=0,
                                 properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: 1}))
    raw.expect_closed()
    clients.elapse_on_broker(2)
    assert not reconnect_present(clients, client_id)


def test_v5_mqtt_3_1_2_23_disconnect_cannot_extend_zero_expiry(clients, names):
    """Session Expiry Interval 0 in CONNECT and non-zero in DISCONNECT is a Protocol Error:
    the session still ends with the connection."""
    client_id = names.client()
    raw = session_with_subscription(clients, names, client_id, 0)
    raw.send(mqtt_raw.disconnect(version=V5, reason=0,
                                 properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: EXPIRY}))
    for pkt in raw.expect_closed():
        assert pkt.type == DISCONNECT, pkt
        assert mqtt_raw.parse_disconnect(pkt).reason == PROTOCOL_ERROR, pkt
    assert not reconnect_present(clients, client_id)
