"""CONNECT and CONNACK (MQTT 3.1.1 and 5.0 sections 3.1 and 3.2).

Each test is named after the normative statement it proves; ``v311`` and ``v5`` select the
specification (the same ID can mean different things in the two).
"""

from __future__ import annotations

import string

import pytest

import mqtt_raw
from mqtt_raw import CONNACK, PINGRESP, PUBLISH, SUBACK, V5, V311
from support import Clients, Names

ALPHANUMERIC = string.digits + string.ascii_lowercase + string.ascii_uppercase
# Protocol levels no MQTT version uses: 2 is below 3.1.1's 4, so a 3.1.1 server answers in
# 3.1.1 form; 7 is above 5.0's 5 (which form a server answers in is its choice).
UNSUPPORTED_LEVEL_V311 = 2
UNSUPPORTED_LEVEL_V5 = 7
UNKNOWN_AUTH_METHOD = "interop-unknown-method"


# ---------------------------------------------------------------------------
# Shared checks
# ---------------------------------------------------------------------------

def rejection_packets(packets: list[mqtt_raw.Packet], version: int) -> None:
    """What may precede the close of a refused or broken connection: nothing (3.1.1), or at
    most a CONNACK whose reason code is an error (5.0, MQTT-4.13.1-1), never a DISCONNECT
    (MQTT-3.14.0-1)."""
    if version == V311:
        assert packets == [], f"expected the connection closed without a packet, got {packets}"
        return
    assert len(packets) <= 1, f"expected at most one CONNACK before the close, got {packets}"
    for pkt in packets:
        assert pkt.type == CONNACK, f"only a CONNACK may precede the close, got {pkt!r}"
        ack = mqtt_raw.parse_connack(pkt, V5)
        assert ack.code >= 0x80, f"a refusing CONNACK needs a code >= 0x80, got 0x{ack.code:02x}"


def assert_not_retained(clients: Clients, names: Names, topic: str) -> None:
    """No retained message is stored for ``topic`` (a new subscriber receives nothing)."""
    observer = clients.subscriber(names.client("obs"), topic, qos=1)
    observer.expect_no_message()


def store_session(clients: Clients, client_id: str, topic: str, version: int) -> None:
    """Leave a stored session for ``client_id`` (with one subscription) on the server."""
    options = {"clean": False}
    if version == V5:
        options["properties"] = {mqtt_raw.SESSION_EXPIRY_INTERVAL: 300}
    raw = clients.raw_connected(client_id, version=version, **options)
    raw.send(mqtt_raw.subscribe(1, topic, qos=1, version=version))
    raw.expect_packet(SUBACK)
    raw.send(mqtt_raw.disconnect(version=version))
    raw.expect_closed()


def unsupported_level_connect(client_id: str, version: int, **options) -> bytes:
    level = UNSUPPORTED_LEVEL_V311 if version == V311 else UNSUPPORTED_LEVEL_V5
    return mqtt_raw.connect(client_id, version=version, protocol_level=level, **options)


# ---------------------------------------------------------------------------
# MQTT-3.1.0-1: the first packet must be CONNECT
# ---------------------------------------------------------------------------

def check_first_packet_must_be_connect(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic("first")
    raw = clients.raw()
    raw.send(mqtt_raw.publish(topic, b"before connect", retain=True, version=version))
    rejection_packets(raw.expect_closed(), V311)  # no CONNACK, no DISCONNECT: nothing at all
    assert_not_retained(clients, names, topic)


def test_v311_mqtt_3_1_0_1_first_packet_not_connect_closes(clients, names):
    check_first_packet_must_be_connect(clients, names, V311)


def test_v5_mqtt_3_1_0_1_first_packet_not_connect_closes(clients, names):
    check_first_packet_must_be_connect(clients, names, V5)


# ---------------------------------------------------------------------------
# MQTT-3.1.0-2: a second CONNECT is a protocol violation
# ---------------------------------------------------------------------------

def check_second_connect_closes(clients: Clients, names: Names, version: int) -> None:
    raw = clients.raw_connected(names.client(), version=version)
    raw.send(mqtt_raw.connect(names.client("second"), version=version))
    packets = raw.expect_closed()
    assert all(p.type != CONNACK for p in packets), f"a second CONNACK was sent: {packets}"
    if version == V311:
        assert packets == [], f"expected a silent close, got {packets}"
    for pkt in packets:  # 5.0: the server may say why (0x82 Protocol Error) before closing
        assert pkt.type == mqtt_raw.DISCONNECT, f"unexpected {pkt!r}"
        assert mqtt_raw.parse_disconnect(pkt).reason >= 0x80


def test_v311_mqtt_3_1_0_2_second_connect_closes(clients, names):
    check_second_connect_closes(clients, names, V311)


def test_v5_mqtt_3_1_0_2_second_connect_closes(clients, names):
    check_second_connect_closes(clients, names, V5)


def test_v5_mqtt_3_2_0_2_at_most_one_connack(clients, names):
    check_second_connect_closes(clients, names, V5)


# ---------------------------------------------------------------------------
# MQTT-3.1.2-2: unsupported protocol level
# ---------------------------------------------------------------------------

def test_v311_mqtt_3_1_2_2_unsupported_level_connack_0x01_then_close(clients, names):
    raw = clients.raw()
    raw.send(unsupported_level_connect(names.client(), V311))
    ack = mqtt_raw.parse_connack(raw.expect_packet(CONNACK), V311)
    assert (ack.code, ack.session_present) == (0x01, False)
    assert raw.expect_closed() == []


def test_v5_mqtt_3_1_2_2_unsupported_version_optional_0x84_then_close(clients, names):
    raw = clients.raw()
    raw.send(unsupported_level_connect(names.client(), V5))
    packets = raw.expect_closed()
    assert len(packets) <= 1, f"expected at most a CONNACK before the close, got {packets}"
    for pkt in packets:
        assert pkt.type == CONNACK, f"unexpected {pkt!r}"
        # The server cannot know which layout a level-7 client reads: either form will do.
        assert pkt.body[:2] in (b"\x00\x84", b"\x00\x01"), f"CONNACK must carry 0x84: {pkt!r}"


# ---------------------------------------------------------------------------
# MQTT-3.1.2-3: the CONNECT reserved flag must be zero
# ---------------------------------------------------------------------------

def test_v311_mqtt_3_1_2_3_reserved_flag_set_closes(clients, names):
    raw = clients.raw()
    raw.send(mqtt_raw.connect(names.client(), version=V311, reserved_flag=True))
    rejection_packets(raw.expect_closed(), V311)


def test_v5_mqtt_3_1_2_3_reserved_flag_set_closes(clients, names):
    raw = clients.raw()
    raw.send(mqtt_raw.connect(names.client(), version=V5, reserved_flag=True))
    rejection_packets(raw.expect_closed(), V5)


# ---------------------------------------------------------------------------
# MQTT-3.1.3-5: 1 to 23 alphanumeric characters are always accepted
# ---------------------------------------------------------------------------

def check_alphanumeric_ids_accepted(clients: Clients, names: Names, version: int) -> None:
    tag = names.client("")
    candidates = [tag[-1], (tag + ALPHANUMERIC)[:23]]
    candidates += [ALPHANUMERIC[i:i + 23] for i in range(0, len(ALPHANUMERIC), 23)]
    for client_id in candidates:
        assert 1 <= len(client_id) <= 23
        raw = clients.raw_connected(client_id, version=version)
        raw.send(mqtt_raw.disconnect(version=version))
        raw.expect_closed()


def test_v311_mqtt_3_1_3_5_alphanumeric_client_ids_accepted(clients, names):
    check_alphanumeric_ids_accepted(clients, names, V311)


def test_v5_mqtt_3_1_3_5_alphanumeric_client_ids_accepted(clients, names):
    check_alphanumeric_ids_accepted(clients, names, V5)


# ---------------------------------------------------------------------------
# Empty client identifiers
# ---------------------------------------------------------------------------

def test_v311_mqtt_3_1_3_6_empty_client_id_gets_unique_id(clients, names):
    first, second = clients.raw(), clients.raw()
    ack = first.connect("", version=V311, clean=True)
    if ack.code == 0x02:  # the server does not allow empty identifiers (MQTT-3.1.3-9)
        assert first.expect_closed() == []
        return
    assert ack.code == 0x00
    assert second.connect("", version=V311, clean=True).code == 0x00
    # Had both been given the same identifier, the second would have taken over the first.
    for raw in (first, second):
        raw.send(mqtt_raw.pingreq())
        raw.expect_packet(PINGRESP)


def test_v311_mqtt_3_1_3_8_empty_client_id_with_clean_session_0_rejected(clients):
    raw = clients.raw()
    ack = raw.connect("", version=V311, clean=False)
    assert (ack.code, ack.session_present) == (0x02, False)
    assert raw.expect_closed() == []


def test_v311_mqtt_3_1_3_9_rejected_client_id_connack_0x02_then_close(clients):
    # An empty identifier with CleanSession 0 is one every server rejects (MQTT-3.1.3-8).
    raw = clients.raw()
    raw.send(mqtt_raw.connect("", version=V311, clean=False) + mqtt_raw.pingreq())
    ack = mqtt_raw.parse_connack(raw.expect_packet(CONNACK), V311)
    assert (ack.code, ack.session_present) == (0x02, False)
    assert raw.expect_closed() == [], "nothing may follow the refusing CONNACK"


def check_assigned_ids_unique(clients: Clients, names: Names) -> None:
    existing = names.client("held")
    clients.raw_connected(existing, version=V5)
    assigned = []
    for _ in range(2):
        raw = clients.raw()
        ack = raw.connect("", version=V5)
        if ack.code == 0x85:  # empty identifiers not allowed (MQTT-3.1.3-8)
            raw.expect_closed()
            return
        assert ack.code == 0x00
        ident = ack.properties.get(mqtt_raw.ASSIGNED_CLIENT_IDENTIFIER)
        assert isinstance(ident, str) and ident, f"no Assigned Client Identifier: {ack}"
        assigned.append((raw, ident))
    (first, first_id), (second, second_id) = assigned
    assert first_id != second_id
    assert existing not in (first_id, second_id)
    for raw in (first, second):
        raw.send(mqtt_raw.pingreq())
        raw.expect_packet(PINGRESP)


def test_v5_mqtt_3_1_3_6_empty_client_id_gets_unique_id(clients, names):
    check_assigned_ids_unique(clients, names)


def test_v5_mqtt_3_2_2_16_assigned_client_identifier_is_new(clients, names):
    check_assigned_ids_unique(clients, names)


def test_v5_mqtt_3_1_3_7_assigned_id_treated_as_supplied(clients, names):
    topic = names.topic("assigned")
    raw = clients.raw()
    ack = raw.connect("", version=V5, properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: 300})
    assert ack.code == 0x00
    assigned = ack.properties.get(mqtt_raw.ASSIGNED_CLIENT_IDENTIFIER)
    assert isinstance(assigned, str) and assigned, f"no Assigned Client Identifier: {ack}"
    raw.send(mqtt_raw.subscribe(1, topic, qos=1, version=V5))
    raw.expect_packet(SUBACK)
    raw.send(mqtt_raw.disconnect(version=V5))
    raw.expect_closed()
    # The session is stored under the assigned identifier: resuming it finds the subscription.
    again = clients.raw_connected(assigned, version=V5, clean=False,
                                  properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: 300})
    assert again.connack.session_present
    clients.connected(names.client("pub"), version=V5).publish(topic, b"to assigned", qos=1)
    message = mqtt_raw.parse_publish(again.expect_packet(PUBLISH), V5)
    assert (message.topic, message.payload) == (topic, b"to assigned")


# ---------------------------------------------------------------------------
# MQTT-3.1.4-1: malformed CONNECT
# ---------------------------------------------------------------------------

def malformed_connect(version: int) -> bytes:
    """A CONNECT whose client identifier claims 16 bytes but carries 2."""
    body = mqtt_raw.utf8("MQTT") + bytes([version, 0x02, 0, 60])
    if version == V5:
        body += mqtt_raw.varint(0)
    return mqtt_raw.packet(mqtt_raw.CONNECT, 0, body + b"\x00\x10ab")


def test_v311_mqtt_3_1_4_1_malformed_connect_closed_without_connack(clients):
    raw = clients.raw()
    raw.send(malformed_connect(V311))
    rejection_packets(raw.expect_closed(), V311)


def test_v311_mqtt_3_2_2_6_no_applicable_code_closes_without_connack(clients):
    raw = clients.raw()
    raw.send(malformed_connect(V311))
    rejection_packets(raw.expect_closed(), V311)


def test_v5_mqtt_3_1_4_1_malformed_connect_closed(clients):
    raw = clients.raw()
    raw.send(malformed_connect(V5))
    rejection_packets(raw.expect_closed(), V5)


# ---------------------------------------------------------------------------
# Successful CONNACK
# ---------------------------------------------------------------------------

def test_v311_mqtt_3_1_4_4_accepted_connect_gets_connack_0(clients, names):
    raw = clients.raw()
    raw.send(mqtt_raw.connect(names.client(), version=V311))
    pkt = raw.expect_packet(CONNACK)
    assert (pkt.flags, pkt.body) == (0, b"\x00\x00"), f"CONNACK bytes: {pkt!r}"


def test_v5_mqtt_3_1_4_5_accepted_connect_gets_connack_success(clients, names):
    raw = clients.raw()
    raw.send(mqtt_raw.connect(names.client(), version=V5))
    pkt = raw.expect_packet(CONNACK)
    ack = mqtt_raw.parse_connack(pkt, V5)
    assert (pkt.flags, ack.ack_flags, ack.code) == (0, 0, 0x00), f"CONNACK: {pkt!r}"


# ---------------------------------------------------------------------------
# Nothing after a refused CONNECT is processed
# ---------------------------------------------------------------------------

def test_v311_mqtt_3_1_4_5_data_after_rejected_connect_ignored(clients, names):
    topic = names.topic("ignored")
    raw = clients.raw()
    raw.send(mqtt_raw.connect("", version=V311, clean=False)
             + mqtt_raw.publish(topic, b"must be ignored", retain=True))
    ack = mqtt_raw.parse_connack(raw.expect_packet(CONNACK), V311)
    assert ack.code == 0x02
    assert raw.expect_closed() == []
    assert_not_retained(clients, names, topic)


def test_v5_mqtt_3_1_4_6_data_after_rejected_connect_ignored(clients, names):
    topic = names.topic("ignored")
    raw = clients.raw()
    raw.send(mqtt_raw.connect(names.client(), version=V5,
                              properties={mqtt_raw.AUTHENTICATION_METHOD: UNKNOWN_AUTH_METHOD})
             + mqtt_raw.publish(topic, b"must be ignored", retain=True, version=V5))
    rejection_packets(raw.expect_closed(), V5)
    assert_not_retained(clients, names, topic)


# ---------------------------------------------------------------------------
# MQTT-3.2.0-1: CONNACK is the server's first packet
# ---------------------------------------------------------------------------

def check_connack_comes_first(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic("first")
    clients.connected(names.client("pub"), version=version).publish(
        topic, b"retained", qos=1, retain=True)
    raw = clients.raw()
    # CONNECT, SUBSCRIBE and PINGREQ in one write: the answers to the last two must wait.
    raw.send(mqtt_raw.connect(names.client(), version=version)
             + mqtt_raw.subscribe(1, topic, qos=1, version=version) + mqtt_raw.pingreq())
    first = raw.recv_packet()
    assert first.type == CONNACK, f"first packet from the server was {first!r}"
    assert mqtt_raw.parse_connack(first, version).code == 0x00
    seen = {raw.recv_packet().type for _ in range(3)}
    assert seen == {SUBACK, PUBLISH, PINGRESP}
    raw.expect_no_packet()


def test_v311_mqtt_3_2_0_1_connack_is_first_packet(clients, names):
    check_connack_comes_first(clients, names, V311)


def test_v5_mqtt_3_2_0_1_success_connack_before_other_packets(clients, names):
    check_connack_comes_first(clients, names, V5)


# ---------------------------------------------------------------------------
# Session Present
# ---------------------------------------------------------------------------

def test_v311_mqtt_3_2_2_1_clean_session_1_session_present_0(clients, names):
    client_id = names.client()
    store_session(clients, client_id, names.topic(), V311)
    raw = clients.raw_connected(client_id, version=V311, clean=True)
    assert raw.connack.session_present is False


def test_v311_mqtt_3_2_2_2_stored_session_present_1(clients, names):
    client_id = names.client()
    store_session(clients, client_id, names.topic(), V311)
    raw = clients.raw_connected(client_id, version=V311, clean=False)
    assert raw.connack.session_present is True


def test_v311_mqtt_3_2_2_3_no_stored_session_present_0(clients, names):
    raw = clients.raw_connected(names.client(), version=V311, clean=False)
    assert raw.connack.session_present is False


def test_v5_mqtt_3_2_2_2_clean_start_1_session_present_0(clients, names):
    client_id = names.client()
    store_session(clients, client_id, names.topic(), V5)
    raw = clients.raw_connected(client_id, version=V5, clean=True)
    assert raw.connack.session_present is False


def test_v5_mqtt_3_2_2_3_session_present_tells_whether_state_existed(clients, names):
    client_id = names.client()
    fresh = clients.raw_connected(client_id, version=V5, clean=False,
                                  properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: 300})
    assert fresh.connack.session_present is False
    fresh.send(mqtt_raw.disconnect(version=V5))
    fresh.expect_closed()
    resumed = clients.raw_connected(client_id, version=V5, clean=False,
                                    properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: 300})
    assert resumed.connack.session_present is True


def test_v311_mqtt_3_2_2_4_refusing_connack_session_present_0(clients, names):
    client_id = names.client()
    store_session(clients, client_id, names.topic(), V311)
    raw = clients.raw()
    raw.send(unsupported_level_connect(client_id, V311, clean=False))
    ack = mqtt_raw.parse_connack(raw.expect_packet(CONNACK), V311)
    assert ack.code != 0x00
    assert ack.ack_flags == 0, f"Session Present must be 0: {ack}"


def test_v311_mqtt_3_2_2_5_refusing_connack_then_close(clients):
    raw = clients.raw()
    ack = raw.connect("", version=V311, clean=False)
    assert ack.code != 0x00
    assert raw.expect_closed() == []


def refuse_with_stored_session(clients: Clients, names: Names) -> list[mqtt_raw.Packet]:
    """A 5.0 CONNECT refused (unknown authentication method) for a client with a session."""
    client_id = names.client()
    store_session(clients, client_id, names.topic(), V5)
    raw = clients.raw()
    raw.send(mqtt_raw.connect(client_id, version=V5, clean=False, properties={
        mqtt_raw.SESSION_EXPIRY_INTERVAL: 300,
        mqtt_raw.AUTHENTICATION_METHOD: UNKNOWN_AUTH_METHOD}))
    packets = raw.expect_closed()
    rejection_packets(packets, V5)
    return packets


def test_v5_mqtt_3_2_2_6_refusing_connack_session_present_0(clients, names):
    for pkt in refuse_with_stored_session(clients, names):
        assert mqtt_raw.parse_connack(pkt, V5).ack_flags == 0, f"Session Present set: {pkt!r}"


def test_v5_mqtt_3_2_2_7_error_connack_then_close(clients, names):
    refuse_with_stored_session(clients, names)


def test_v5_mqtt_3_1_4_2_failed_connect_check_closes(clients, names):
    refuse_with_stored_session(clients, names)



# ---------------------------------------------------------------------------
# A server limited to QoS 1 (dedicated broker)
# ---------------------------------------------------------------------------

@pytest.mark.broker_config({"limits": {"qos_max": 1}})
def test_v5_mqtt_3_2_2_9_maximum_qos_advertised(clients, names):
    raw = clients.raw_connected(names.client(), version=V5)
    assert raw.connack.properties.get(mqtt_raw.MAXIMUM_QOS) == 1, raw.connack


@pytest.mark.broker_config({"limits": {"qos_max": 1}})
def test_v5_mqtt_3_2_2_10_subscribe_accepted_at_any_requested_qos(clients, names):
    raw = clients.raw_connected(names.client(), version=V5)
    for packet_id, qos in enumerate((0, 1, 2), start=1):
        raw.send(mqtt_raw.subscribe(packet_id, names.topic(f"q{qos}"), qos=qos, version=V5))
        suback = raw.expect_packet(SUBACK)
        assert mqtt_raw.packet_id_of(suback) == packet_id
        _, end = mqtt_raw.decode_properties(suback.body, 2)
        codes = list(suback.body[end:])
        assert len(codes) == 1 and codes[0] <= qos, f"QoS {qos} subscription refused: {codes}"
