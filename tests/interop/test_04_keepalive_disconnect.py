"""Keep Alive, PINGREQ / PINGRESP and DISCONNECT (MQTT 3.1.1 sections 3.1.2.10, 3.12, 3.14;
MQTT 5.0 sections 3.1.2.10, 3.2.2.3.14, 3.12, 3.14).

Keep Alive tests use a Keep Alive of 1 s, so the server must close a silent connection within
1.5 s; ``SLACK`` absorbs scheduling and measurement noise. Waiting for the close is waiting
for the socket to reach end-of-file, bounded by that limit.
"""

from __future__ import annotations

import time

import pytest

import mqtt_raw
from mqtt_raw import CONNACK, DISCONNECT, PINGRESP, V5, V311
from support import Clients, Names, mosquitto_deviation

KEEP_ALIVE = 1
SLACK = 1.0
IDLE = 0.6  # a gap well inside the Keep Alive, repeated past 1.5 x Keep Alive

# A broker of its own: timers are measured against a broker with nothing else going on.
QUIET_BROKER = pytest.mark.broker_config({})
LATE_KEEP_ALIVE = mosquitto_deviation(
    "checks Keep Alive only every 5-6 s, so a silent client is closed up to ~6 s after "
    "1.5 x Keep Alive instead of at it")


def connect_silent(clients: Clients, names: Names, version: int,
                   keep_alive: int = KEEP_ALIVE) -> tuple[mqtt_raw.RawClient, int, float]:
    """Connect with ``keep_alive``; return the connection, the Keep Alive the server uses
    (Server Keep Alive if it sent one), and when the CONNECT was sent."""
    raw = clients.raw()
    sent = time.monotonic()
    ack = raw.connect(names.client(), version=version, keep_alive=keep_alive)
    assert ack.code == 0x00
    effective = int(ack.properties.get(mqtt_raw.SERVER_KEEP_ALIVE, keep_alive))
    return raw, effective, sent


def check_silent_client_closed(raw: mqtt_raw.RawClient, keep_alive: int, sent: float,
                               version: int) -> None:
    assert keep_alive > 0, "the server turned Keep Alive off"
    limit = 1.5 * keep_alive + SLACK
    deadline = sent + limit
    packets = raw.expect_closed(timeout=max(deadline - time.monotonic(), 0.0))
    if version == V311:
        assert packets == [], f"3.1.1 closes without a packet, got {packets}"
    else:  # optionally DISCONNECT 0x8D (Keep Alive timeout) first
        assert all(p.type == DISCONNECT for p in packets), packets
        for pkt in packets:
            assert mqtt_raw.parse_disconnect(pkt).reason >= 0x80, pkt


@QUIET_BROKER
@LATE_KEEP_ALIVE
def test_v311_mqtt_3_1_2_24_silent_client_closed_after_1_5_keep_alive(clients, names):
    raw, keep_alive, sent = connect_silent(clients, names, V311)
    check_silent_client_closed(raw, keep_alive, sent, V311)


@QUIET_BROKER
@LATE_KEEP_ALIVE
def test_v5_mqtt_3_1_2_22_silent_client_closed_after_1_5_keep_alive(clients, names):
    raw, keep_alive, sent = connect_silent(clients, names, V5)
    check_silent_client_closed(raw, keep_alive, sent, V5)


@QUIET_BROKER
@LATE_KEEP_ALIVE
def test_v5_mqtt_3_2_2_22_client_keep_alive_used_without_server_keep_alive(clients, names):
    raw, keep_alive, sent = connect_silent(clients, names, V5)
    if keep_alive != KEEP_ALIVE:
        pytest.skip("the server sent a Server Keep Alive, so MQTT-3.2.2-22 does not apply")
    check_silent_client_closed(raw, KEEP_ALIVE, sent, V5)


def check_traffic_keeps_connection(clients: Clients, names: Names, version: int,
                                   packet: bytes, answer: int | None) -> None:
    """A client that sends a packet every ``IDLE`` s (inside its Keep Alive) stays connected
    well past 1.5 x Keep Alive."""
    raw, keep_alive, _ = connect_silent(clients, names, version)
    rounds = int(1.5 * keep_alive / IDLE) + 3
    for _ in range(rounds):
        raw.send(packet)
        if answer is not None:
            raw.expect_packet(answer)
        raw.expect_no_packet(IDLE)  # still open, nothing unexpected


def test_v311_mqtt_3_1_2_24_pingreq_keeps_connection_open(clients, names):
    check_traffic_keeps_connection(clients, names, V311, mqtt_raw.pingreq(), PINGRESP)


def test_v5_mqtt_3_1_2_22_pingreq_keeps_connection_open(clients, names):
    check_traffic_keeps_connection(clients, names, V5, mqtt_raw.pingreq(), PINGRESP)


def test_v311_mqtt_3_1_2_24_any_control_packet_resets_keep_alive(clients, names):
    publish = mqtt_raw.publish(names.topic("unwatched"), b"tick")
    check_traffic_keeps_connection(clients, names, V311, publish, None)


def test_v5_mqtt_3_1_2_22_any_control_packet_resets_keep_alive(clients, names):
    publish = mqtt_raw.publish(names.topic("unwatched"), b"tick", version=V5)
    check_traffic_keeps_connection(clients, names, V5, publish, None)


# ---------------------------------------------------------------------------
# MQTT-3.12.4-1: PINGREQ is answered with PINGRESP
# ---------------------------------------------------------------------------

def check_pingresp(clients: Clients, names: Names, version: int) -> None:
    raw = clients.raw_connected(names.client(), version=version)
    for _ in range(3):
        raw.send(mqtt_raw.pingreq())
        pkt = raw.expect_packet(PINGRESP)
        assert (pkt.flags, pkt.body) == (0, b""), f"PINGRESP is exactly D0 00: {pkt!r}"
    raw.expect_no_packet()


def test_v311_mqtt_3_12_4_1_pingreq_answered_with_pingresp(clients, names):
    check_pingresp(clients, names, V311)


def test_v5_mqtt_3_12_4_1_pingreq_answered_with_pingresp(clients, names):
    check_pingresp(clients, names, V5)


# ---------------------------------------------------------------------------
# DISCONNECT
# ---------------------------------------------------------------------------

def test_v311_mqtt_3_14_1_1_disconnect_reserved_bits_close(clients, names):
    raw = clients.raw_connected(names.client(), version=V311)
    raw.send(mqtt_raw.disconnect(flags=0x01))
    assert raw.expect_closed() == []


def disconnect_with_reserved_bits(clients: Clients, names: Names) -> list[mqtt_raw.Packet]:
    raw = clients.raw_connected(names.client(), version=V5)
    raw.send(mqtt_raw.disconnect(version=V5, flags=0x01))
    return raw.expect_closed()


def test_v5_mqtt_3_14_1_1_disconnect_reserved_bits_close(clients, names):
    packets = disconnect_with_reserved_bits(clients, names)
    assert all(p.type == DISCONNECT for p in packets), packets


@mosquitto_deviation("closes on a DISCONNECT with reserved bits set without sending "
                     "DISCONNECT 0x81 (Malformed Packet)")
def test_v5_mqtt_3_14_1_1_disconnect_reserved_bits_answered_0x81(clients, names):
    packets = disconnect_with_reserved_bits(clients, names)
    assert [p.type for p in packets] == [DISCONNECT], packets
    assert mqtt_raw.parse_disconnect(packets[0]).reason == 0x81


def refused_openings(client_id: str) -> dict[str, bytes]:
    """Ways a 5.0 connection can fail before any successful CONNACK."""
    return {
        "PUBLISH before CONNECT": mqtt_raw.publish("interop/early", b"x", version=V5),
        "unsupported version": mqtt_raw.connect(client_id, version=V5, protocol_level=7),
        "reserved flag": mqtt_raw.connect(client_id, version=V5, reserved_flag=True),
        "unknown authentication method": mqtt_raw.connect(
            client_id, version=V5,
            properties={mqtt_raw.AUTHENTICATION_METHOD: "interop-unknown-method"}),
        "truncated CONNECT": mqtt_raw.connect(client_id, version=V5)[:-3],
    }


def test_v5_mqtt_3_14_0_1_no_disconnect_before_successful_connack(clients, names):
    for case, opening in refused_openings(names.client()).items():
        raw = clients.raw()
        # The truncated CONNECT is completed by garbage so the server has a whole packet.
        raw.send(opening + (b"\xff\xff\xff" if case == "truncated CONNECT" else b""))
        packets = raw.expect_closed()
        for pkt in packets:
            assert pkt.type != DISCONNECT, f"{case}: DISCONNECT before a successful CONNACK"
            assert pkt.type == CONNACK, f"{case}: unexpected {pkt!r}"
            # (a level-7 CONNECT may get 3.1.1's CONNACK 0x01, read here as a 5.0 CONNACK)
            assert mqtt_raw.parse_connack(pkt, V5).code != 0x00, f"{case}: accepted? {pkt!r}"


def server_disconnect(clients: Clients, names: Names) -> list[mqtt_raw.Packet]:
    """Make the server end a 5.0 connection that has a session expiry: a malformed SUBSCRIBE
    (fixed-header flags 0), pipelined with a PINGREQ that must go unanswered."""
    raw = clients.raw_connected(names.client(), version=V5, clean=False,
                                properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: 300})
    bad_subscribe = mqtt_raw.packet(mqtt_raw.SUBSCRIBE, 0,
                                    b"\x00\x01\x00" + mqtt_raw.utf8(names.topic()) + b"\x00")
    raw.send(bad_subscribe + mqtt_raw.pingreq())
    return raw.expect_closed()


def test_v5_mqtt_3_14_2_2_server_disconnect_has_no_session_expiry(clients, names):
    packets = server_disconnect(clients, names)
    for pkt in packets:
        if pkt.type == DISCONNECT:
            props = mqtt_raw.parse_disconnect(pkt).properties
            assert mqtt_raw.SESSION_EXPIRY_INTERVAL not in props, pkt


def test_v5_mqtt_3_14_4_1_nothing_sent_after_disconnect(clients, names):
    packets = server_disconnect(clients, names)
    kinds = [p.type for p in packets]
    if DISCONNECT in kinds:
        assert kinds.index(DISCONNECT) == len(kinds) - 1, f"packets after DISCONNECT: {packets}"
    assert PINGRESP not in kinds, f"PINGREQ after the malformed packet was answered: {packets}"


def test_v5_mqtt_3_14_4_2_connection_closed_after_server_disconnect(clients, names):
    started = time.monotonic()
    server_disconnect(clients, names)  # asserts the close
    assert time.monotonic() - started < 5.0
