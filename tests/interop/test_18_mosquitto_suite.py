"""Behaviours that Mosquitto's own broker tests (``test/broker`` in its repository) check on
the wire, one test per behaviour, each naming the Mosquitto test it corresponds to.

These are Tern's own tests of the same behaviours, written against the standard; where Tern
and Mosquitto are allowed to differ, ``docs/conformance.md`` says how and why ("Where Tern
differs from Mosquitto").
"""

from __future__ import annotations

import pytest

import mqtt_raw
from mqtt_raw import V5, V311, Will
from support import BROKER_KIND, Clients, Names, connect_properties, mosquitto_deviation


def raw_subscriber(clients: Clients, client_id: str, topic: str, *, version: int = V5,
                   qos: int = 0) -> mqtt_raw.RawClient:
    raw = clients.raw_connected(client_id, version=version)
    raw.send(mqtt_raw.subscribe(1, topic, qos=qos, version=version))
    raw.expect_packet(mqtt_raw.SUBACK)
    return raw


def property_block(pkt: mqtt_raw.Packet) -> bytes:
    """The property block of a QoS 0 MQTT 5 PUBLISH, length prefix left out."""
    topic_len = int.from_bytes(pkt.body[:2], "big")
    length, start = mqtt_raw.decode_varint(pkt.body, 2 + topic_len)
    return pkt.body[start:start + length]


def test_will_properties_are_forwarded_in_the_order_sent(clients: Clients, names: Names):
    """07-will-properties: the will arrives with its properties byte for byte as the client
    sent them, the Will Delay Interval left out (MQTT-3.1.3-10 asks this of user properties;
    Tern keeps the order of all of them)."""
    topic = names.topic("will")
    observer = raw_subscriber(clients, names.client("obs"), topic)
    sent = [
        (mqtt_raw.USER_PROPERTY, ("key1", "value1")),
        (mqtt_raw.RESPONSE_TOPIC, "response/topic"),
        (mqtt_raw.CORRELATION_DATA, b"data"),
        (mqtt_raw.WILL_DELAY_INTERVAL, 0),
        (mqtt_raw.PAYLOAD_FORMAT_INDICATOR, 1),
        (mqtt_raw.CONTENT_TYPE, "application/test"),
        (mqtt_raw.USER_PROPERTY, ("key2", "value2")),
    ]
    holder = clients.raw_connected(names.client(), version=V5,
                                   will=Will(topic, b"will payload", properties=sent))
    holder.abort()
    forwarded = [prop for prop in sent if prop[0] != mqtt_raw.WILL_DELAY_INTERVAL]
    expected = mqtt_raw.encode_properties(forwarded)
    _, start = mqtt_raw.decode_varint(expected, 0)
    will = observer.expect_packet(mqtt_raw.PUBLISH)
    assert property_block(will) == expected[start:], will


def test_v5_take_over_of_a_continued_session_does_not_publish_the_will(clients: Clients,
                                                                       names: Names):
    """07-will-takeover (MQTT 5, both sessions persistent): the connection taking over is a new
    connection to the session before the will's delay has passed, so the will of the one it
    replaces is not published (MQTT-3.1.2-8, MQTT-3.1.3-9). The taker's own message is the
    first the watcher sees: a will published at the take-over would have come before it."""
    topic = names.topic("will")
    client_id = names.client()
    observer = raw_subscriber(clients, names.client("obs"), topic)
    persistent = {mqtt_raw.SESSION_EXPIRY_INTERVAL: 60}
    clients.raw_connected(client_id, version=V5, clean=False, properties=persistent,
                          will=Will(topic, b"LWT"))
    taker = clients.raw_connected(client_id, version=V5, clean=False, properties=persistent)
    assert taker.connack.session_present
    taker.send(mqtt_raw.publish(topic, b"ready", version=V5))
    first = mqtt_raw.parse_publish(observer.expect_packet(mqtt_raw.PUBLISH), V5)
    assert first.payload == b"ready", first
    taker.send(mqtt_raw.disconnect(version=V5))


@mosquitto_deviation("sends 41-byte PUBLISH packets to a client whose Maximum Packet Size is 40 "
                     "(its check leaves out the fixed header's first byte)")
@pytest.mark.parametrize("qos", [1, 2])
def test_oversize_messages_are_dropped_and_the_next_that_fits_arrives(clients: Clients,
                                                                      names: Names, qos: int):
    """12-prop-maximum-packet-size-publish-qos1/-qos2: a client with a Maximum Packet Size of 40
    subscribes to its own topic. Its first two messages would reach it as 41-byte PUBLISH
    packets (the fixed header counts, MQTT-3.1.2-24) and are dropped for it (MQTT-3.1.2-25); the
    third, exactly 40 bytes, arrives. Each is acknowledged at once: at QoS 2 the PUBREC comes
    before the copy delivered back."""
    topic = names.topic("max/publish/test/t")[:30].ljust(30, "x")
    raw = clients.raw_connected(names.client(), version=V5,
                                properties={mqtt_raw.MAXIMUM_PACKET_SIZE: 40})
    raw.send(mqtt_raw.subscribe(1, topic, qos=qos, version=V5))
    raw.expect_packet(mqtt_raw.SUBACK)
    delivered = []

    def until(ptype: int) -> mqtt_raw.Packet:
        while (pkt := raw.recv_packet()).type == mqtt_raw.PUBLISH:
            delivered.append(pkt)
        assert pkt.type == ptype, pkt
        return pkt

    sent = [(b"1234", None), (b"56", {mqtt_raw.PAYLOAD_FORMAT_INDICATOR: 1}), (b"789", None)]
    for packet_id, (payload, properties) in enumerate(sent, start=1):
        raw.send(mqtt_raw.publish(topic, payload, qos=qos, packet_id=packet_id, version=V5,
                                  properties=properties))
        if qos == 1:
            assert mqtt_raw.packet_id_of(until(mqtt_raw.PUBACK)) == packet_id
        else:
            # The PUBREC comes first, before any copy (02-subpub-qos2).
            assert mqtt_raw.packet_id_of(raw.expect_packet(mqtt_raw.PUBREC)) == packet_id
            raw.send(mqtt_raw.pubrel(packet_id, version=V5))
            assert mqtt_raw.packet_id_of(until(mqtt_raw.PUBCOMP)) == packet_id
    if not delivered:
        delivered.append(raw.expect_packet(mqtt_raw.PUBLISH))
    assert [mqtt_raw.parse_publish(pkt, V5).payload for pkt in delivered] == [b"789"], delivered
    body = delivered[0].body
    assert 1 + len(mqtt_raw.varint(len(body))) + len(body) == 40, delivered
    raw.expect_no_packet()


def mqtt31_connect(clients: Clients, client_id: str, *, clean: bool) -> mqtt_raw.RawClient:
    """A raw MQTT 3.1 connection ("MQIsdp", level 3; otherwise laid out as 3.1.1)."""
    raw = clients.raw()
    raw.send(mqtt_raw.connect(client_id, version=V311, clean=clean, protocol_name="MQIsdp",
                              protocol_level=3))
    connack = raw.expect_packet(mqtt_raw.CONNACK)
    # 3.1 has no Session Present flag: the whole CONNACK is "accepted", resumed session or not.
    assert connack.body == b"\x00\x00", connack
    return raw


def test_mqtt31_qos2_publish_survives_reconnections(clients: Clients, names: Names):
    """03-publish-c2b-disconnect-qos2 at level 3: an MQTT 3.1 client with a persistent session
    resends its QoS 2 PUBLISH (DUP) and then its PUBREL (DUP set, as 3.1 retries do) across
    reconnections; the message is delivered once."""
    topic, client_id = names.topic(), names.client()
    watcher = clients.subscriber(names.client("sub"), topic, qos=2, version=4)
    raw = mqtt31_connect(clients, client_id, clean=False)
    raw.send(mqtt_raw.publish(topic, b"disconnect-message", qos=2, packet_id=1))
    raw.expect_packet(mqtt_raw.PUBREC)
    raw.abort()
    raw = mqtt31_connect(clients, client_id, clean=False)
    raw.send(mqtt_raw.publish(topic, b"disconnect-message", qos=2, packet_id=1, dup=True))
    raw.expect_packet(mqtt_raw.PUBREC)
    raw.send(mqtt_raw.pubrel(1))
    raw.expect_packet(mqtt_raw.PUBCOMP)
    raw.abort()
    raw = mqtt31_connect(clients, client_id, clean=False)
    raw.send(mqtt_raw.packet(mqtt_raw.PUBREL, 0x0A, b"\x00\x01"))  # DUP 1, QoS 1
    assert mqtt_raw.packet_id_of(raw.expect_packet(mqtt_raw.PUBCOMP)) == 1
    assert watcher.expect_message().payload == b"disconnect-message"
    watcher.expect_no_message()
    raw.send(mqtt_raw.disconnect())
    mqtt31_connect(clients, client_id, clean=True).send(mqtt_raw.disconnect())


@pytest.mark.skipif(BROKER_KIND != "tern",
                    reason="aliases towards clients are optional; mosquitto 2.0.11 sends none")
def test_topic_aliases_towards_a_paho_client(clients: Clients, names: Names):
    """02-subpub-b2c-topic-alias, with Tern's own rules: a client that gives a Topic Alias
    Maximum in CONNECT gets the first PUBLISH on a topic with the topic and an alias set, and
    the later ones with the alias alone. paho-mqtt 2.2 hands the alias to the application
    without resolving it, as a client that asks for aliases must (3.3.2.3.4); resolved, every
    message has its topic."""
    topic = names.topic("sensors/livingroom/temperature")
    receiver = clients.connected(names.client("paho"), version=5,
                                 properties=connect_properties(TopicAliasMaximum=10))
    receiver.subscribe(topic, qos=1)
    wire = clients.raw_connected(names.client("raw"), version=V5,
                                 properties={mqtt_raw.TOPIC_ALIAS_MAXIMUM: 10})
    wire.send(mqtt_raw.subscribe(1, topic, qos=0, version=V5))
    wire.expect_packet(mqtt_raw.SUBACK)
    sender = clients.connected(names.client("pub"), version=4)
    for index in range(3):
        sender.publish(topic, b"%d" % index, qos=1)
    aliases: dict[int, str] = {}
    for index in range(3):
        message = receiver.expect_message()
        alias = getattr(message.properties, "TopicAlias", None)
        assert alias is not None and 1 <= alias <= 10, message
        if message.topic:
            aliases[alias] = message.topic
        assert (aliases[alias], message.payload) == (topic, b"%d" % index), message
    on_wire = [mqtt_raw.parse_publish(wire.expect_packet(mqtt_raw.PUBLISH), V5)
               for _ in range(3)]
    assert [(p.topic, p.properties.get(mqtt_raw.TOPIC_ALIAS)) for p in on_wire] == [
        (topic, 1), ("", 1), ("", 1)], on_wire
