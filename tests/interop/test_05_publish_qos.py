"""PUBLISH and its QoS 0, 1 and 2 flows in both directions, redelivery after reconnect,
message ordering and Receive Maximum (MQTT 3.1.1 sections 2.3.1, 3.3, 4.3, 4.4 and 4.6;
MQTT 5.0 sections 2.2.1, 3.3, 4.3, 4.4, 4.6 and 4.9).

The side whose behaviour is under test speaks through a raw socket, so that every packet
identifier, DUP flag and acknowledgement is seen (or withheld) exactly; paho-mqtt clients
provide the other end where its details do not matter.
"""

from __future__ import annotations

import pytest

import mqtt_raw
from mqtt_raw import (PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK, V5, V311,
                      RawClient)
from support import Clients, Names, PahoClient, mosquitto_deviation, publish_properties

EXPIRY = 300  # Session Expiry Interval (s) of the 5.0 sessions that must survive a reconnect


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def raw_client(clients: Clients, client_id: str, version: int, *, clean: bool = True,
               properties: dict | None = None, expect_present: bool | None = None) -> RawClient:
    """A raw connection; Clean Session / Clean Start 0 also asks for a lasting 5.0 session."""
    props = dict(properties or {})
    if version == V5 and not clean:
        props.setdefault(mqtt_raw.SESSION_EXPIRY_INTERVAL, EXPIRY)
    raw = clients.raw_connected(client_id, version=version, clean=clean,
                                properties=props or None)
    if expect_present is not None:
        assert raw.connack.session_present is expect_present, raw.connack
    return raw


def raw_subscriber(clients: Clients, client_id: str, topic: str, qos: int, version: int, *,
                   clean: bool = True, properties: dict | None = None) -> RawClient:
    raw = raw_client(clients, client_id, version, clean=clean, properties=properties)
    raw.send(mqtt_raw.subscribe(1, topic, qos=qos, version=version))
    ack = mqtt_raw.parse_ack(raw.expect_packet(SUBACK), version)
    assert (ack.packet_id, ack.codes) == (1, [qos]), ack
    return raw


def next_publish(raw: RawClient, version: int) -> mqtt_raw.Publish:
    return mqtt_raw.parse_publish(raw.expect_packet(PUBLISH), version)


def expect_ack(raw: RawClient, ptype: int, packet_id: int, version: int) -> mqtt_raw.Ack:
    ack = mqtt_raw.parse_ack(raw.expect_packet(ptype), version)
    assert ack.packet_id == packet_id, f"{ack} does not echo packet identifier {packet_id}"
    return ack


def expect_pubrel(raw: RawClient, packet_id: int, version: int) -> None:
    pkt = raw.expect_packet(PUBREL)
    assert pkt.flags == 0x02, f"PUBREL fixed-header flags must be 0010: {pkt!r}"
    assert mqtt_raw.packet_id_of(pkt) == packet_id, f"{pkt!r} does not echo {packet_id}"


def ping_is_next(raw: RawClient) -> None:
    """PINGREQ, and PINGRESP is the very next packet: nothing else was waiting before it."""
    raw.send(mqtt_raw.pingreq())
    raw.expect_packet(PINGRESP)


def publisher(clients: Clients, names: Names, version: int) -> PahoClient:
    return clients.connected(names.client("pub"), version=version)


# ---------------------------------------------------------------------------
# End to end with paho, every QoS
# ---------------------------------------------------------------------------

def check_paho_round_trip(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    subscriber = clients.subscriber(names.client("sub"), topic, qos=2, version=version)
    sender = publisher(clients, names, version)
    for qos in (0, 1, 2):
        sender.publish(topic, f"qos {qos}".encode(), qos=qos)
    got = sorted((m.payload, m.qos, m.topic, m.dup, m.retain)
                 for m in (subscriber.expect_message() for _ in range(3)))
    assert got == [(f"qos {q}".encode(), q, topic, False, False) for q in (0, 1, 2)], got
    subscriber.expect_no_message()


def test_v311_mqtt_4_5_0_1_messages_at_every_qos_reach_subscriber(clients, names):
    check_paho_round_trip(clients, names, V311)


def test_v5_mqtt_4_5_0_1_messages_at_every_qos_reach_subscriber(clients, names):
    check_paho_round_trip(clients, names, V5)


# ---------------------------------------------------------------------------
# The server as receiver
# ---------------------------------------------------------------------------

def check_answer_per_qos(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    raw = raw_client(clients, names.client(), version)
    raw.send(mqtt_raw.publish(topic, b"q0", qos=0, version=version))
    ping_is_next(raw)  # QoS 0: no answer at all
    raw.send(mqtt_raw.publish(topic, b"q1", qos=1, packet_id=11, version=version))
    expect_ack(raw, PUBACK, 11, version)
    raw.send(mqtt_raw.publish(topic, b"q2", qos=2, packet_id=12, version=version))
    expect_ack(raw, PUBREC, 12, version)
    raw.send(mqtt_raw.pubrel(12, version=version))
    expect_ack(raw, PUBCOMP, 12, version)
    ping_is_next(raw)


def test_v311_mqtt_3_3_4_1_publish_answered_as_its_qos_requires(clients, names):
    check_answer_per_qos(clients, names, V311)


def test_v5_mqtt_3_3_4_1_publish_answered_as_its_qos_requires(clients, names):
    check_answer_per_qos(clients, names, V5)


def check_acks_echo_ids(clients: Clients, names: Names, version: int) -> None:
    """Pipelined QoS 1 and 2 publishes with scattered identifiers: each acknowledgement
    carries the identifier of its own PUBLISH."""
    topic = names.topic()
    raw = raw_client(clients, names.client(), version)
    qos1_ids, qos2_ids = [1, 65535, 300, 2], [7, 40000, 8]
    raw.send(b"".join(mqtt_raw.publish(topic, b"x", qos=1, packet_id=i, version=version)
                      for i in qos1_ids))
    got = [mqtt_raw.parse_ack(raw.expect_packet(PUBACK), version).packet_id for _ in qos1_ids]
    assert sorted(got) == sorted(qos1_ids), got
    raw.send(b"".join(mqtt_raw.publish(topic, b"y", qos=2, packet_id=i, version=version)
                      for i in qos2_ids))
    got = [mqtt_raw.parse_ack(raw.expect_packet(PUBREC), version).packet_id for _ in qos2_ids]
    assert sorted(got) == sorted(qos2_ids), got
    raw.send(b"".join(mqtt_raw.pubrel(i, version=version) for i in qos2_ids))
    got = [mqtt_raw.parse_ack(raw.expect_packet(PUBCOMP), version).packet_id for _ in qos2_ids]
    assert sorted(got) == sorted(qos2_ids), got


def test_v311_mqtt_2_3_1_6_acknowledgements_echo_packet_id(clients, names):
    check_acks_echo_ids(clients, names, V311)


def test_v5_mqtt_2_2_1_5_acknowledgements_echo_packet_id(clients, names):
    check_acks_echo_ids(clients, names, V5)


def check_qos1_id_reuse_is_new_message(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    subscriber = clients.subscriber(names.client("sub"), topic, qos=1, version=version)
    raw = raw_client(clients, names.client(), version)
    raw.send(mqtt_raw.publish(topic, b"first", qos=1, packet_id=7, version=version))
    expect_ack(raw, PUBACK, 7, version)
    assert subscriber.expect_message().payload == b"first"
    # The same identifier after PUBACK, even with DUP 1, is a new application message.
    raw.send(mqtt_raw.publish(topic, b"second", qos=1, packet_id=7, dup=True, version=version))
    expect_ack(raw, PUBACK, 7, version)
    assert subscriber.expect_message().payload == b"second"


def test_v311_mqtt_4_3_2_2_qos1_puback_then_same_id_is_new_message(clients, names):
    check_qos1_id_reuse_is_new_message(clients, names, V311)


def test_v5_mqtt_4_3_2_4_qos1_puback_carries_publish_id(clients, names):
    check_qos1_id_reuse_is_new_message(clients, names, V5)


def test_v5_mqtt_4_3_2_5_qos1_same_id_after_puback_is_new_message(clients, names):
    check_qos1_id_reuse_is_new_message(clients, names, V5)


def check_qos2_receiver(clients: Clients, names: Names, version: int) -> None:
    """PUBREC for the PUBLISH and for its repeat before PUBREL, one onward delivery, PUBCOMP
    for PUBREL; after PUBCOMP the identifier starts a new message."""
    topic = names.topic()
    subscriber = clients.subscriber(names.client("sub"), topic, qos=2, version=version)
    raw = raw_client(clients, names.client(), version)
    raw.send(mqtt_raw.publish(topic, b"once", qos=2, packet_id=9, version=version))
    expect_ack(raw, PUBREC, 9, version)
    raw.send(mqtt_raw.publish(topic, b"once", qos=2, packet_id=9, dup=True, version=version))
    expect_ack(raw, PUBREC, 9, version)
    raw.send(mqtt_raw.pubrel(9, version=version))
    expect_ack(raw, PUBCOMP, 9, version)
    message = subscriber.expect_message()
    assert (message.payload, message.qos) == (b"once", 2), message
    subscriber.expect_no_message()  # the repeated PUBLISH was not delivered again
    raw.send(mqtt_raw.publish(topic, b"again", qos=2, packet_id=9, version=version))
    expect_ack(raw, PUBREC, 9, version)
    raw.send(mqtt_raw.pubrel(9, version=version))
    expect_ack(raw, PUBCOMP, 9, version)
    assert subscriber.expect_message().payload == b"again"


def test_v311_mqtt_4_3_3_2_qos2_receiver_delivers_once(clients, names):
    check_qos2_receiver(clients, names, V311)


def test_v5_mqtt_4_3_3_8_qos2_pubrec_carries_publish_id(clients, names):
    check_qos2_receiver(clients, names, V5)


def test_v5_mqtt_4_3_3_10_qos2_repeat_before_pubrel_delivered_once(clients, names):
    check_qos2_receiver(clients, names, V5)


def test_v5_mqtt_4_3_3_11_pubrel_answered_with_pubcomp(clients, names):
    check_qos2_receiver(clients, names, V5)


def test_v5_mqtt_4_3_3_12_same_id_after_pubcomp_is_new_message(clients, names):
    check_qos2_receiver(clients, names, V5)


def check_qos2_exactly_once_across_reconnect(clients: Clients, names: Names, version: int,
                                             *, pubrel_sent: bool) -> None:
    """The publisher loses its connection in the middle of a QoS 2 flow, reconnects to its
    session and resends what was unacknowledged: the message is delivered once."""
    topic, client_id = names.topic(), names.client()
    subscriber = clients.subscriber(names.client("sub"), topic, qos=2, version=version)
    raw = raw_client(clients, client_id, version, clean=False)
    raw.send(mqtt_raw.publish(topic, b"exactly once", qos=2, packet_id=5, version=version))
    expect_ack(raw, PUBREC, 5, version)
    if pubrel_sent:
        raw.send(mqtt_raw.pubrel(5, version=version))
        expect_ack(raw, PUBCOMP, 5, version)  # PUBCOMP lost on the way, as far as we care
    raw.abort()
    again = raw_client(clients, client_id, version, clean=False, expect_present=True)
    if not pubrel_sent:
        again.send(mqtt_raw.publish(topic, b"exactly once", qos=2, packet_id=5, dup=True,
                                    version=version))
        expect_ack(again, PUBREC, 5, version)
    again.send(mqtt_raw.pubrel(5, version=version))
    expect_ack(again, PUBCOMP, 5, version)
    assert subscriber.expect_message().payload == b"exactly once"
    subscriber.expect_no_message()


def test_v311_mqtt_4_4_0_1_qos2_publish_resent_after_reconnect_delivered_once(clients, names):
    check_qos2_exactly_once_across_reconnect(clients, names, V311, pubrel_sent=False)


def test_v311_mqtt_4_4_0_1_qos2_pubrel_resent_after_reconnect_completed(clients, names):
    check_qos2_exactly_once_across_reconnect(clients, names, V311, pubrel_sent=True)


def test_v5_mqtt_4_4_0_1_qos2_publish_resent_after_reconnect_delivered_once(clients, names):
    check_qos2_exactly_once_across_reconnect(clients, names, V5, pubrel_sent=False)


def test_v5_mqtt_4_4_0_1_qos2_pubrel_resent_after_reconnect_completed(clients, names):
    check_qos2_exactly_once_across_reconnect(clients, names, V5, pubrel_sent=True)


# ---------------------------------------------------------------------------
# The server as sender
# ---------------------------------------------------------------------------

def check_server_qos1_sender(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic()
    raw = raw_subscriber(clients, names.client(), topic, 1, version)
    sender = publisher(clients, names, version)
    for index in range(3):
        sender.publish(topic, b"m%d" % index, qos=1)
    got = [next_publish(raw, version) for _ in range(3)]
    assert [p.payload for p in got] == [b"m0", b"m1", b"m2"], got
    for pub in got:
        assert (pub.qos, pub.dup) == (1, False), pub
        assert pub.packet_id, f"QoS 1 PUBLISH with packet identifier 0: {pub}"
    ids = [p.packet_id for p in got]
    assert len(set(ids)) == 3, f"unacknowledged PUBLISH packets share identifiers: {ids}"
    raw.send(b"".join(mqtt_raw.puback(i, version=version) for i in ids))
    ping_is_next(raw)


def test_v311_mqtt_2_3_1_4_server_publish_ids_nonzero_and_unused(clients, names):
    check_server_qos1_sender(clients, names, V311)


def test_v311_mqtt_4_3_2_1_server_qos1_publish_new_id_dup0(clients, names):
    check_server_qos1_sender(clients, names, V311)


def test_v5_mqtt_2_2_1_4_server_publish_ids_nonzero_and_unused(clients, names):
    check_server_qos1_sender(clients, names, V5)


def test_v5_mqtt_4_3_2_2_server_qos1_publish_id_qos1_dup0(clients, names):
    check_server_qos1_sender(clients, names, V5)


def check_server_qos2_sender(clients: Clients, names: Names, version: int) -> None:
    """PUBLISH (QoS 2, DUP 0) until PUBREC, then PUBREL with the same identifier."""
    topic = names.topic()
    raw = raw_subscriber(clients, names.client(), topic, 2, version)
    # The incoming PUBLISH has DUP 1; the outgoing one is not a retransmission.
    source = raw_client(clients, names.client("src"), version)
    source.send(mqtt_raw.publish(topic, b"two", qos=2, packet_id=3, dup=True, version=version))
    expect_ack(source, PUBREC, 3, version)
    source.send(mqtt_raw.pubrel(3, version=version))
    expect_ack(source, PUBCOMP, 3, version)
    pub = next_publish(raw, version)
    assert (pub.payload, pub.qos, pub.dup) == (b"two", 2, False), pub
    assert pub.packet_id
    ping_is_next(raw)  # no PUBREL before PUBREC
    raw.send(mqtt_raw.pubrec(pub.packet_id, version=version))
    expect_pubrel(raw, pub.packet_id, version)
    raw.send(mqtt_raw.pubcomp(pub.packet_id, version=version))
    ping_is_next(raw)


def test_v311_mqtt_4_3_3_1_server_qos2_publish_then_pubrel(clients, names):
    check_server_qos2_sender(clients, names, V311)


def test_v311_mqtt_3_3_1_3_outgoing_dup_not_copied_from_incoming(clients, names):
    check_server_qos2_sender(clients, names, V311)


def test_v5_mqtt_4_3_3_2_server_qos2_publish_id_qos2_dup0(clients, names):
    check_server_qos2_sender(clients, names, V5)


def test_v5_mqtt_4_3_3_4_server_pubrel_after_pubrec_same_id(clients, names):
    check_server_qos2_sender(clients, names, V5)


def test_v5_mqtt_3_3_1_3_outgoing_dup_not_copied_from_incoming(clients, names):
    check_server_qos2_sender(clients, names, V5)


def check_publish_redelivered(clients: Clients, names: Names, version: int, qos: int) -> None:
    """An unacknowledged PUBLISH is sent again, DUP 1 and same identifier, on reconnect."""
    topic, client_id = names.topic(), names.client()
    raw = raw_subscriber(clients, client_id, topic, qos, version, clean=False)
    publisher(clients, names, version).publish(topic, b"unacknowledged", qos=qos)
    first = next_publish(raw, version)
    assert (first.payload, first.qos, first.dup) == (b"unacknowledged", qos, False), first
    raw.abort()
    again = raw_client(clients, client_id, version, clean=False, expect_present=True)
    resent = next_publish(again, version)
    assert (resent.payload, resent.qos, resent.packet_id) == (
        b"unacknowledged", qos, first.packet_id), resent
    assert resent.dup, f"a redelivered PUBLISH must carry DUP 1: {resent}"
    if qos == 1:
        again.send(mqtt_raw.puback(resent.packet_id, version=version))
    else:
        again.send(mqtt_raw.pubrec(resent.packet_id, version=version))
        expect_pubrel(again, resent.packet_id, version)
        again.send(mqtt_raw.pubcomp(resent.packet_id, version=version))
    ping_is_next(again)


@pytest.mark.parametrize("qos", [1, 2])
def test_v311_mqtt_3_3_1_1_redelivered_publish_has_dup_1(clients, names, qos):
    check_publish_redelivered(clients, names, V311, qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_v5_mqtt_3_3_1_1_redelivered_publish_has_dup_1(clients, names, qos):
    check_publish_redelivered(clients, names, V5, qos)


def test_v5_mqtt_4_3_2_3_qos1_unacknowledged_until_puback(clients, names):
    check_publish_redelivered(clients, names, V5, 1)


def test_v5_mqtt_4_3_3_3_qos2_unacknowledged_until_pubrec(clients, names):
    check_publish_redelivered(clients, names, V5, 2)


def check_pubrel_redelivered(clients: Clients, names: Names, version: int) -> None:
    """After PUBREC the server owes a PUBREL: on reconnect it resends the PUBREL (same
    identifier) and never the PUBLISH again."""
    topic, client_id = names.topic(), names.client()
    raw = raw_subscriber(clients, client_id, topic, 2, version, clean=False)
    publisher(clients, names, version).publish(topic, b"released", qos=2)
    pub = next_publish(raw, version)
    raw.send(mqtt_raw.pubrec(pub.packet_id, version=version))
    expect_pubrel(raw, pub.packet_id, version)
    raw.abort()  # no PUBCOMP
    again = raw_client(clients, client_id, version, clean=False, expect_present=True)
    expect_pubrel(again, pub.packet_id, version)
    again.send(mqtt_raw.pubcomp(pub.packet_id, version=version))
    ping_is_next(again)


def test_v311_mqtt_4_4_0_1_pubrel_resent_on_reconnect(clients, names):
    check_pubrel_redelivered(clients, names, V311)


def test_v5_mqtt_4_4_0_1_pubrel_resent_on_reconnect(clients, names):
    check_pubrel_redelivered(clients, names, V5)


def test_v5_mqtt_4_3_3_5_pubrel_unacknowledged_until_pubcomp(clients, names):
    check_pubrel_redelivered(clients, names, V5)


def test_v5_mqtt_4_3_3_6_publish_not_resent_after_pubrel(clients, names):
    check_pubrel_redelivered(clients, names, V5)


@pytest.mark.parametrize("qos", [1, 2])
def test_v5_mqtt_4_4_0_2_failure_ack_never_retransmitted(clients, names, qos):
    topic, client_id = names.topic(), names.client()
    raw = raw_subscriber(clients, client_id, topic, qos, V5, clean=False)
    publisher(clients, names, V5).publish(topic, b"refused", qos=qos)
    pub = next_publish(raw, V5)
    refuse = mqtt_raw.puback if qos == 1 else mqtt_raw.pubrec
    raw.send(refuse(pub.packet_id, version=V5, reason=0x80))  # Unspecified error
    ping_is_next(raw)  # QoS 2: no PUBREL after a failing PUBREC either
    raw.abort()
    again = raw_client(clients, client_id, V5, clean=False, expect_present=True)
    ping_is_next(again)
    again.expect_no_packet()


@mosquitto_deviation("drops an in-flight QoS 2 PUBLISH whose Message Expiry Interval passed "
                     "while the client was away instead of resending it on reconnect")
def test_v5_mqtt_4_3_3_7_sent_qos2_publish_does_not_expire(clients, names):
    topic, client_id = names.topic(), names.client()
    raw = raw_subscriber(clients, client_id, topic, 2, V5, clean=False)
    publisher(clients, names, V5).publish(
        topic, b"in flight", qos=2, properties=publish_properties(MessageExpiryInterval=1))
    first = next_publish(raw, V5)
    raw.abort()
    clients.elapse_on_broker(2)  # past the message's expiry
    again = raw_client(clients, client_id, V5, clean=False, expect_present=True)
    resent = next_publish(again, V5)
    assert (resent.payload, resent.packet_id, resent.dup) == (b"in flight", first.packet_id,
                                                             True), resent
    again.send(mqtt_raw.pubrec(resent.packet_id, version=V5))
    expect_pubrel(again, resent.packet_id, V5)
    again.send(mqtt_raw.pubcomp(resent.packet_id, version=V5))


# ---------------------------------------------------------------------------
# Ordering
# ---------------------------------------------------------------------------

ORDERED_COUNT = 30


def check_order(clients: Clients, names: Names, version: int, qos: int) -> None:
    """Pipelined publishes from one client reach a subscriber in the order they were sent."""
    topic = names.topic()
    subscriber = clients.subscriber(names.client("sub"), topic, qos=2, version=version)
    raw = raw_client(clients, names.client(), version)
    ids = range(1, ORDERED_COUNT + 1)
    raw.send(b"".join(mqtt_raw.publish(topic, b"%03d" % i, qos=qos,
                                       packet_id=i if qos else None, version=version)
                      for i in ids))
    if qos == 1:
        for _ in ids:
            raw.expect_packet(PUBACK)
    elif qos == 2:
        for _ in ids:
            raw.expect_packet(PUBREC)
        raw.send(b"".join(mqtt_raw.pubrel(i, version=version) for i in ids))
        for _ in ids:
            raw.expect_packet(PUBCOMP)
    got = [subscriber.expect_message() for _ in ids]
    assert [m.payload for m in got] == [b"%03d" % i for i in ids], [m.payload for m in got]
    assert {m.qos for m in got} == {qos}


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_v311_mqtt_4_6_0_5_topics_ordered_by_default(clients, names, qos):
    check_order(clients, names, V311, qos)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_v311_mqtt_4_6_0_6_forwarded_in_order_received(clients, names, qos):
    check_order(clients, names, V311, qos)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_v5_mqtt_4_6_0_5_forwarded_in_order_received(clients, names, qos):
    check_order(clients, names, V5, qos)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_v5_mqtt_4_6_0_6_topics_ordered_by_default(clients, names, qos):
    check_order(clients, names, V5, qos)


# ---------------------------------------------------------------------------
# Receive Maximum (5.0)
# ---------------------------------------------------------------------------

def quota_subscriber(clients: Clients, names: Names, topic: str, qos: int,
                     receive_maximum: int) -> RawClient:
    return raw_subscriber(clients, names.client("sub"), topic, qos, V5,
                          properties={mqtt_raw.RECEIVE_MAXIMUM: receive_maximum})


@mosquitto_deviation("after one PUBACK with Receive Maximum 2 sends two more QoS 1 PUBLISH "
                     "packets, leaving three unacknowledged")
def test_v5_mqtt_3_3_4_9_at_most_receive_maximum_unacknowledged_qos1(clients, names):
    topic = names.topic()
    raw = quota_subscriber(clients, names, topic, 1, 2)
    sender = publisher(clients, names, V5)
    for index in range(5):
        sender.publish(topic, b"%d" % index, qos=1)
    window = [next_publish(raw, V5) for _ in range(2)]
    ping_is_next(raw)
    raw.expect_no_packet()  # two unacknowledged: the quota is used up
    raw.send(mqtt_raw.puback(window[0].packet_id, version=V5))
    window.append(next_publish(raw, V5))
    raw.expect_no_packet()  # one acknowledgement frees exactly one slot
    raw.send(b"".join(mqtt_raw.puback(p.packet_id, version=V5) for p in window[1:]))
    window += [next_publish(raw, V5) for _ in range(2)]
    assert [p.payload for p in window] == [b"0", b"1", b"2", b"3", b"4"], window
    raw.send(b"".join(mqtt_raw.puback(p.packet_id, version=V5) for p in window[3:]))
    ping_is_next(raw)


def test_v5_mqtt_4_9_0_2_no_qos2_publish_at_zero_send_quota(clients, names):
    """QoS 2: the quota slot comes back with PUBCOMP, not with PUBREC."""
    topic = names.topic()
    raw = quota_subscriber(clients, names, topic, 2, 1)
    sender = publisher(clients, names, V5)
    sender.publish(topic, b"a", qos=2)
    sender.publish(topic, b"b", qos=2)
    first = next_publish(raw, V5)
    assert first.payload == b"a"
    raw.send(mqtt_raw.pubrec(first.packet_id, version=V5))
    expect_pubrel(raw, first.packet_id, V5)
    raw.expect_no_packet()  # PUBREL still unacknowledged: no new PUBLISH
    raw.send(mqtt_raw.pubcomp(first.packet_id, version=V5))
    second = next_publish(raw, V5)
    assert second.payload == b"b"
    raw.send(mqtt_raw.pubrec(second.packet_id, version=V5))
    expect_pubrel(raw, second.packet_id, V5)
    raw.send(mqtt_raw.pubcomp(second.packet_id, version=V5))


def check_not_delayed_at_zero_quota(clients: Clients, names: Names) -> None:
    topic = names.topic()
    raw = quota_subscriber(clients, names, topic, 1, 1)
    sender = publisher(clients, names, V5)
    sender.publish(topic, b"a", qos=1)
    sender.publish(topic, b"b", qos=1)
    first = next_publish(raw, V5)
    # The quota is zero; PINGREQ, SUBSCRIBE and the client's own QoS 1 PUBLISH are still
    # answered at once.
    ping_is_next(raw)
    raw.send(mqtt_raw.subscribe(2, names.topic("other"), qos=1, version=V5))
    expect_ack(raw, SUBACK, 2, V5)
    raw.send(mqtt_raw.publish(names.topic("own"), b"own", qos=1, packet_id=9, version=V5))
    expect_ack(raw, PUBACK, 9, V5)
    raw.send(mqtt_raw.puback(first.packet_id, version=V5))
    assert next_publish(raw, V5).payload == b"b"


def test_v5_mqtt_3_3_4_10_other_packets_not_delayed_at_zero_quota(clients, names):
    check_not_delayed_at_zero_quota(clients, names)


def test_v5_mqtt_4_9_0_3_packets_processed_at_zero_quota(clients, names):
    check_not_delayed_at_zero_quota(clients, names)


def test_v5_mqtt_4_9_0_1_initial_quota_nonzero_within_receive_maximum(clients, names):
    topic = names.topic()
    raw = quota_subscriber(clients, names, topic, 1, 3)
    sender = publisher(clients, names, V5)
    for index in range(4):
        sender.publish(topic, b"%d" % index, qos=1)
    window = [next_publish(raw, V5) for _ in range(3)]  # non-zero: the first ones do come
    raw.expect_no_packet()  # ... and no more than Receive Maximum
    raw.send(b"".join(mqtt_raw.puback(p.packet_id, version=V5) for p in window))
    last = next_publish(raw, V5)
    raw.send(mqtt_raw.puback(last.packet_id, version=V5))
