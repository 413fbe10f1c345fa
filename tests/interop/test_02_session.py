"""Sessions: Clean Session / Clean Start, Session Present, session state, session expiry and
session takeover (MQTT 3.1.1 and 5.0 sections 3.1.2, 3.1.3, 3.1.4 and 4.1)."""

from __future__ import annotations

import mqtt_raw
from mqtt_raw import PINGRESP, PUBLISH, SUBACK, V5, V311
from support import Clients, Names, PahoClient, connect_properties, mosquitto_deviation

EXPIRY = 300  # Session Expiry Interval (s) for 5.0 sessions that must outlive a connection


def persistent(clients: Clients, client_id: str, version: int, *, expiry: int = EXPIRY,
               expect_present: bool | None = None) -> PahoClient:
    """A connected paho client with Clean Session / Clean Start 0 (and an expiry for 5.0)."""
    client = clients.paho(client_id, version=version, clean=False)
    props = connect_properties(SessionExpiryInterval=expiry) if version == V5 else None
    result = client.connect(properties=props)
    if expect_present is not None:
        assert result.session_present is expect_present, (
            f"Session Present {result.session_present}, expected {expect_present}")
    return client


def leave_subscribed_session(clients: Clients, client_id: str, topic: str,
                             version: int) -> None:
    """Create a stored session for ``client_id`` subscribed to ``topic`` at QoS 2."""
    client = persistent(clients, client_id, version, expect_present=False)
    client.subscribe(topic, qos=2)
    client.disconnect()


def publish_all(clients: Clients, names: Names, topic: str, qos_payloads: list[tuple[int, bytes]],
                version: int) -> None:
    publisher = clients.connected(names.client("pub"), version=version)
    for qos, payload in qos_payloads:
        publisher.publish(topic, payload, qos=qos)
    publisher.disconnect()


def received_above_qos0(client: PahoClient, count: int) -> list[tuple[bytes, int]]:
    """The next ``count`` QoS 1/2 messages (a server may or may not queue QoS 0 ones)."""
    got: list[tuple[bytes, int]] = []
    while len(got) < count:
        message = client.expect_message()
        if message.qos > 0:
            got.append((message.payload, message.qos))
    return got


# ---------------------------------------------------------------------------
# Resuming a session
# ---------------------------------------------------------------------------

def check_session_resumed(clients: Clients, names: Names, version: int) -> None:
    client_id, topic = names.client(), names.topic()
    leave_subscribed_session(clients, client_id, topic, version)
    client = persistent(clients, client_id, version, expect_present=True)
    # The subscription is part of the resumed session: no new SUBSCRIBE is needed.
    publish_all(clients, names, topic, [(1, b"after resume")], version)
    assert received_above_qos0(client, 1) == [(b"after resume", 1)]
    client.disconnect()
    # ... and the session is stored again after this connection.
    persistent(clients, client_id, version, expect_present=True).disconnect()


def test_v311_mqtt_3_1_2_4_clean_session_0_resumes_and_keeps_session(clients, names):
    check_session_resumed(clients, names, V311)


def test_v5_mqtt_3_1_2_5_clean_start_0_resumes_session(clients, names):
    check_session_resumed(clients, names, V5)


def check_messages_queued(clients: Clients, names: Names, version: int) -> None:
    client_id, topic = names.client(), names.topic()
    leave_subscribed_session(clients, client_id, topic, version)
    publish_all(clients, names, topic,
                [(1, b"one"), (0, b"zero"), (2, b"two"), (1, b"three")], version)
    client = persistent(clients, client_id, version, expect_present=True)
    got = received_above_qos0(client, 3)
    # Order is only promised per topic and QoS (MQTT-4.6.0-6), so compare per QoS.
    assert [p for p, q in got if q == 1] == [b"one", b"three"], got
    assert [p for p, q in got if q == 2] == [b"two"], got


def test_v311_mqtt_3_1_2_5_qos1_qos2_queued_while_disconnected(clients, names):
    check_messages_queued(clients, names, V311)


def test_v5_mqtt_3_1_2_23_session_kept_after_close_with_expiry(clients, names):
    check_messages_queued(clients, names, V5)


def test_v5_mqtt_3_1_2_23_session_kept_after_abnormal_close(clients, names):
    client_id, topic = names.client(), names.topic()
    raw = clients.raw_connected(client_id, version=V5, clean=False,
                                properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: EXPIRY})
    raw.send(mqtt_raw.subscribe(1, topic, qos=1, version=V5))
    raw.expect_packet(SUBACK)
    raw.abort()
    publish_all(clients, names, topic, [(1, b"while away")], V5)
    client = persistent(clients, client_id, V5, expect_present=True)
    assert received_above_qos0(client, 1) == [(b"while away", 1)]


def test_v5_mqtt_3_1_2_6_clean_start_0_without_session_creates_one(clients, names):
    client_id = names.client()
    first = persistent(clients, client_id, V5, expect_present=False)
    first.disconnect()
    persistent(clients, client_id, V5, expect_present=True)


# ---------------------------------------------------------------------------
# Discarding a session
# ---------------------------------------------------------------------------

def check_clean_discards(clients: Clients, names: Names, version: int) -> None:
    client_id, topic = names.client(), names.topic()
    leave_subscribed_session(clients, client_id, topic, version)
    publish_all(clients, names, topic, [(1, b"queued for the old session")], version)
    client = clients.paho(client_id, version=version, clean=True)
    props = connect_properties(SessionExpiryInterval=EXPIRY) if version == V5 else None
    assert client.connect(properties=props).session_present is False
    # Neither the queued message nor the subscription survived.
    publish_all(clients, names, topic, [(1, b"after clean start")], version)
    client.expect_no_message()
    client.disconnect()
    if version == V311:
        # The CleanSession 1 session ended with its connection; nothing of it is reused.
        persistent(clients, client_id, version, expect_present=False)


def test_v311_mqtt_3_1_2_6_clean_session_1_discards_session(clients, names):
    check_clean_discards(clients, names, V311)


def test_v311_mqtt_3_1_4_3_clean_session_processed_on_connect(clients, names):
    check_clean_discards(clients, names, V311)


def test_v5_mqtt_3_1_2_4_clean_start_1_discards_session(clients, names):
    check_clean_discards(clients, names, V5)


def test_v5_mqtt_3_1_4_4_clean_start_processed_on_connect(clients, names):
    check_clean_discards(clients, names, V5)


def test_v5_mqtt_4_1_0_2_session_expiry_0_ends_with_connection(clients, names):
    client_id, topic = names.client(), names.topic()
    client = persistent(clients, client_id, V5, expiry=0, expect_present=False)
    client.subscribe(topic, qos=1)
    client.disconnect()
    again = persistent(clients, client_id, V5, expiry=0, expect_present=False)
    publish_all(clients, names, topic, [(1, b"no session")], V5)
    again.expect_no_message()


def test_v5_mqtt_4_1_0_2_session_discarded_after_expiry(clients, names):
    client_id, topic = names.client(), names.topic()
    client = persistent(clients, client_id, V5, expiry=1, expect_present=False)
    client.subscribe(topic, qos=1)
    client.disconnect()
    clients.elapse_on_broker(2)
    again = persistent(clients, client_id, V5, expect_present=False)
    publish_all(clients, names, topic, [(1, b"no session")], V5)
    again.expect_no_message()


# ---------------------------------------------------------------------------
# State held for the whole session
# ---------------------------------------------------------------------------

def test_v311_mqtt_4_1_0_1_unacknowledged_publish_kept_in_session(clients, names):
    client_id, topic = names.client(), names.topic()
    raw = clients.raw_connected(client_id, version=V311, clean=False)
    raw.send(mqtt_raw.subscribe(1, topic, qos=1))
    raw.expect_packet(SUBACK)
    publish_all(clients, names, topic, [(1, b"unacknowledged")], V311)
    first = mqtt_raw.parse_publish(raw.expect_packet(PUBLISH))
    assert (first.payload, first.qos, first.dup) == (b"unacknowledged", 1, False)
    raw.abort()  # no PUBACK: the delivery stays in flight in the session
    again = clients.raw_connected(client_id, version=V311, clean=False)
    assert again.connack.session_present is True
    resent = mqtt_raw.parse_publish(again.expect_packet(PUBLISH))
    assert (resent.payload, resent.qos, resent.packet_id) == (b"unacknowledged", 1,
                                                              first.packet_id)
    assert resent.dup, "a redelivered PUBLISH carries DUP 1"
    again.send(mqtt_raw.puback(resent.packet_id))
    again.expect_no_packet()


def test_v311_mqtt_4_1_0_2_session_lasts_while_connected(clients, names):
    topic = names.topic()
    client = clients.connected(names.client(), version=V311, clean=True)
    client.subscribe(topic, qos=1)
    # Other clients come and go, with and without sessions of their own.
    for index, clean in enumerate((True, False, True)):
        other = clients.paho(names.client(f"o{index}"), version=V311, clean=clean)
        other.connect()
        other.disconnect()
    publish_all(clients, names, topic, [(1, b"still subscribed")], V311)
    assert client.expect_message().payload == b"still subscribed"


def test_v5_mqtt_4_1_0_1_session_kept_while_connection_open(clients, names):
    topic = names.topic()
    client = persistent(clients, names.client(), V5, expiry=1, expect_present=False)
    client.subscribe(topic, qos=1)
    clients.elapse_on_broker(2)  # longer than the Session Expiry Interval
    assert client.is_connected()
    publish_all(clients, names, topic, [(1, b"still subscribed")], V5)
    assert client.expect_message().payload == b"still subscribed"


# ---------------------------------------------------------------------------
# The client identifier keys the session
# ---------------------------------------------------------------------------

def check_client_id_keys_session(clients: Clients, names: Names, version: int) -> None:
    owner, stranger, topic = names.client("a"), names.client("b"), names.topic()
    leave_subscribed_session(clients, owner, topic, version)
    other = persistent(clients, stranger, version, expect_present=False)
    publish_all(clients, names, topic, [(1, b"for a only")], version)
    other.expect_no_message()
    other.disconnect()
    client = persistent(clients, owner, version, expect_present=True)
    assert received_above_qos0(client, 1) == [(b"for a only", 1)]


def test_v311_mqtt_3_1_3_2_client_id_identifies_session(clients, names):
    check_client_id_keys_session(clients, names, V311)


def test_v5_mqtt_3_1_3_2_client_id_identifies_session(clients, names):
    check_client_id_keys_session(clients, names, V5)


# ---------------------------------------------------------------------------
# Session takeover
# ---------------------------------------------------------------------------

def take_over(clients: Clients, names: Names, version: int) -> tuple[list, mqtt_raw.RawClient]:
    """Connect the same client identifier twice; return what the first connection got before
    it was closed, and the second connection."""
    client_id = names.client()
    old = clients.raw_connected(client_id, version=version)
    new = clients.raw_connected(client_id, version=version)
    packets = old.expect_closed()
    new.send(mqtt_raw.pingreq())
    new.expect_packet(PINGRESP)
    return packets, new


def test_v311_mqtt_3_1_4_2_existing_client_disconnected(clients, names):
    packets, _ = take_over(clients, names, V311)
    assert packets == [], f"3.1.1 has no server DISCONNECT; got {packets}"


def test_v5_mqtt_3_1_4_3_takeover_closes_old_connection(clients, names):
    packets, _ = take_over(clients, names, V5)
    assert all(p.type == mqtt_raw.DISCONNECT for p in packets), f"got {packets}"


@mosquitto_deviation("closes the taken-over connection without sending DISCONNECT 0x8E")
def test_v5_mqtt_3_1_4_3_takeover_sends_disconnect_0x8e(clients, names):
    packets, _ = take_over(clients, names, V5)
    assert [p.type for p in packets] == [mqtt_raw.DISCONNECT], f"got {packets}"
    assert mqtt_raw.parse_disconnect(packets[0]).reason == 0x8E
