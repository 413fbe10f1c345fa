"""Will Messages (MQTT 3.1.1 section 3.1.2.5-3.1.2.7 and 3.14; MQTT 5.0 sections 3.1.2.5,
3.1.3.2 and 3.14).

The connection holding a will is a raw socket, so that the tests decide exactly how it ends:
DISCONNECT, an abrupt close, a protocol violation or silence past its Keep Alive.
"""

from __future__ import annotations

import queue
import time

import pytest

import mqtt_raw
from mqtt_raw import V5, V311, Will
from support import QUIET, Clients, Names, PahoClient, mosquitto_deviation

EXPIRY = 300
SECOND_CONNECT_DROPS_WILL = mosquitto_deviation(
    "closes a connection that sends a second CONNECT without publishing its will")


def hold_will(clients: Clients, client_id: str, will: Will, version: int, *,
              clean: bool = True, expiry: int | None = None,
              keep_alive: int = 60) -> mqtt_raw.RawClient:
    """A raw connection whose CONNECT carries ``will``."""
    props = {mqtt_raw.SESSION_EXPIRY_INTERVAL: expiry} if expiry is not None else None
    return clients.raw_connected(client_id, version=version, clean=clean, will=will,
                                 keep_alive=keep_alive, properties=props)


def watch(clients: Clients, names: Names, topic: str, version: int) -> PahoClient:
    return clients.subscriber(names.client("obs"), topic, qos=2, version=version)


def assert_will(observer: PahoClient, topic: str, payload: bytes, *, qos: int | None = None):
    message = observer.expect_message()
    assert (message.topic, message.payload) == (topic, payload), message
    if qos is not None:
        assert message.qos == qos, f"will delivered at QoS {message.qos}, expected {qos}"
    return message


def assert_retained(clients: Clients, names: Names, topic: str, payload: bytes | None,
                    version: int) -> None:
    """A new subscriber finds ``payload`` retained on ``topic`` (None: nothing retained)."""
    late = clients.subscriber(names.client("late"), topic, qos=1, version=version)
    if payload is None:
        late.expect_no_message()
        return
    message = late.expect_message()
    assert (message.payload, message.retain) == (payload, True), message


# ---------------------------------------------------------------------------
# When the will is published
# ---------------------------------------------------------------------------

def check_will_on_abnormal_close(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic("will")
    observer = watch(clients, names, topic, version)
    holder = hold_will(clients, names.client(), Will(topic, b"gone", qos=1), version)
    holder.abort()
    assert_will(observer, topic, b"gone")
    observer.expect_no_message()  # published once, not repeatedly


def test_v311_mqtt_3_1_2_8_will_published_on_abnormal_close(clients, names):
    check_will_on_abnormal_close(clients, names, V311)


def test_v5_mqtt_3_1_2_7_will_stored_and_published_on_abnormal_close(clients, names):
    check_will_on_abnormal_close(clients, names, V5)


def check_will_on_server_close(clients: Clients, names: Names, version: int, how: str) -> None:
    """The server ends the connection: Keep Alive expiry, a malformed packet, or a second
    CONNECT. None of these is a DISCONNECT from the client, so the will is published."""
    topic = names.topic("will")
    observer = watch(clients, names, topic, version)
    keep_alive = 1 if how == "keepalive" else 60
    holder = hold_will(clients, names.client(), Will(topic, b"closed by server"), version,
                       keep_alive=keep_alive)
    if how == "malformed":  # SUBSCRIBE must have fixed-header flags 0b0010
        holder.send(mqtt_raw.packet(mqtt_raw.SUBSCRIBE, 0,
                                    b"\x00\x01" + mqtt_raw.utf8(topic) + b"\x00"))
    elif how == "second connect":
        holder.send(mqtt_raw.connect(names.client("again"), version=version))
    # Timing of the Keep Alive close is checked in test_04; here it only has to happen.
    holder.expect_closed(timeout=10)
    assert_will(observer, topic, b"closed by server")


def test_v311_mqtt_3_1_2_8_will_published_on_keep_alive_timeout(clients, names):
    check_will_on_server_close(clients, names, V311, "keepalive")


def test_v5_mqtt_3_1_2_8_will_published_on_keep_alive_timeout(clients, names):
    check_will_on_server_close(clients, names, V5, "keepalive")


def test_v311_mqtt_3_1_2_8_will_published_on_protocol_violation(clients, names):
    check_will_on_server_close(clients, names, V311, "malformed")


def test_v5_mqtt_3_1_2_8_will_published_on_malformed_packet(clients, names):
    check_will_on_server_close(clients, names, V5, "malformed")


@SECOND_CONNECT_DROPS_WILL
def test_v311_mqtt_3_1_2_8_will_published_after_second_connect(clients, names):
    check_will_on_server_close(clients, names, V311, "second connect")


@SECOND_CONNECT_DROPS_WILL
def test_v5_mqtt_3_1_2_8_will_published_after_second_connect(clients, names):
    check_will_on_server_close(clients, names, V5, "second connect")


def test_v5_mqtt_3_1_2_8_disconnect_0x04_publishes_will(clients, names):
    topic = names.topic("will")
    observer = watch(clients, names, topic, V5)
    holder = hold_will(clients, names.client(), Will(topic, b"asked for"), V5)
    holder.send(mqtt_raw.disconnect(version=V5, reason=0x04))
    holder.expect_closed()
    assert_will(observer, topic, b"asked for")


def test_v5_mqtt_3_1_2_8_will_published_after_delay(clients, names):
    topic = names.topic("will")
    observer = watch(clients, names, topic, V5)
    will = Will(topic, b"late", properties={mqtt_raw.WILL_DELAY_INTERVAL: 2})
    holder = hold_will(clients, names.client(), will, V5, expiry=EXPIRY)
    started = time.monotonic()
    holder.abort()
    assert_will(observer, topic, b"late")
    elapsed = time.monotonic() - started
    assert elapsed >= 1.5, f"will with a 2 s delay published after {elapsed:.2f} s"


def test_v5_mqtt_3_1_2_8_will_published_when_session_ends_first(clients, names):
    topic = names.topic("will")
    observer = watch(clients, names, topic, V5)
    will = Will(topic, b"session over", properties={mqtt_raw.WILL_DELAY_INTERVAL: 3600})
    holder = hold_will(clients, names.client(), will, V5, expiry=1)
    holder.abort()
    # The session expires after 1 s, long before the will's delay of an hour.
    assert_will(observer, topic, b"session over")


# ---------------------------------------------------------------------------
# Will QoS and Will Retain
# ---------------------------------------------------------------------------

def check_will_qos(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic("will")
    observer = watch(clients, names, topic, version)  # subscribed at QoS 2
    for qos in (0, 1, 2):
        payload = f"qos {qos}".encode()
        hold_will(clients, names.client(f"q{qos}"), Will(topic, payload, qos=qos),
                  version).abort()
        assert_will(observer, topic, payload, qos=qos)


def test_v311_mqtt_3_1_2_9_will_qos_is_used(clients, names):
    check_will_qos(clients, names, V311)


def test_v5_mqtt_3_1_2_7_will_qos_is_used(clients, names):
    check_will_qos(clients, names, V5)


def check_will_retain(clients: Clients, names: Names, version: int, retain: bool) -> None:
    topic = names.topic("will")
    observer = watch(clients, names, topic, version)
    hold_will(clients, names.client(), Will(topic, b"retain?", qos=1, retain=retain),
              version).abort()
    assert_will(observer, topic, b"retain?")
    assert_retained(clients, names, topic, b"retain?" if retain else None, version)


def test_v311_mqtt_3_1_2_16_will_retain_0_published_not_retained(clients, names):
    check_will_retain(clients, names, V311, retain=False)


def test_v311_mqtt_3_1_2_17_will_retain_1_published_retained(clients, names):
    check_will_retain(clients, names, V311, retain=True)


def test_v5_mqtt_3_1_2_14_will_retain_0_published_not_retained(clients, names):
    check_will_retain(clients, names, V5, retain=False)


def test_v5_mqtt_3_1_2_15_will_retain_1_published_retained(clients, names):
    check_will_retain(clients, names, V5, retain=True)


# ---------------------------------------------------------------------------
# When the will is not published
# ---------------------------------------------------------------------------

def check_disconnect_discards_will(clients: Clients, names: Names, version: int) -> None:
    topic = names.topic("will")
    observer = watch(clients, names, topic, version)
    holder = hold_will(clients, names.client(), Will(topic, b"must not appear"), version)
    holder.send(mqtt_raw.disconnect(version=version, reason=0x00 if version == V5 else None))
    holder.expect_closed()
    observer.expect_no_message()


def test_v311_mqtt_3_14_4_3_disconnect_discards_will(clients, names):
    check_disconnect_discards_will(clients, names, V311)


def test_v5_mqtt_3_14_4_3_disconnect_0x00_discards_will(clients, names):
    check_disconnect_discards_will(clients, names, V5)


def check_will_removed(clients: Clients, names: Names, version: int, first_end: str) -> None:
    """A will is forgotten once published or after DISCONNECT, even though the session lives
    on: a later connection of the same session, without a will, leaves nothing behind."""
    client_id, topic = names.client(), names.topic("will")
    observer = watch(clients, names, topic, version)
    expiry = EXPIRY if version == V5 else None
    holder = hold_will(clients, client_id, Will(topic, b"once"), version, clean=False,
                       expiry=expiry)
    if first_end == "published":
        holder.abort()
        assert_will(observer, topic, b"once")
    else:
        holder.send(mqtt_raw.disconnect(version=version))
        holder.expect_closed()
    props = {mqtt_raw.SESSION_EXPIRY_INTERVAL: EXPIRY} if version == V5 else None
    again = clients.raw_connected(client_id, version=version, clean=False, properties=props)
    assert again.connack.session_present
    again.abort()
    observer.expect_no_message()


def test_v311_mqtt_3_1_2_10_will_removed_once_published(clients, names):
    check_will_removed(clients, names, V311, "published")


def test_v311_mqtt_3_1_2_10_will_removed_after_disconnect(clients, names):
    check_will_removed(clients, names, V311, "disconnect")


def test_v5_mqtt_3_1_2_10_will_removed_once_published(clients, names):
    check_will_removed(clients, names, V5, "published")


def test_v5_mqtt_3_1_2_10_will_removed_after_disconnect_0x00(clients, names):
    check_will_removed(clients, names, V5, "disconnect")


def test_v311_mqtt_3_1_2_12_no_will_flag_nothing_published(clients, names):
    everything = clients.subscriber(names.client("all"), "#", qos=0, version=V311)
    clients.raw_connected(names.client(), version=V311).abort()
    # Retained messages of earlier tests are replayed to a new '#' subscriber (RETAIN 1);
    # anything else would have been published because of the abrupt close.
    deadline = time.monotonic() + 2 * QUIET
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = everything.messages.get(timeout=left)
        except queue.Empty:
            break
        assert message.retain, f"published although the connection had no will: {message}"


def test_v5_mqtt_3_1_3_9_reconnect_within_delay_suppresses_will(clients, names):
    client_id, topic = names.client(), names.topic("will")
    observer = watch(clients, names, topic, V5)
    will = Will(topic, b"suppressed", properties={mqtt_raw.WILL_DELAY_INTERVAL: 2})
    hold_will(clients, client_id, will, V5, clean=False, expiry=EXPIRY).abort()
    back = clients.raw_connected(client_id, version=V5, clean=False,
                                 properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: EXPIRY})
    assert back.connack.session_present
    clients.elapse_on_broker(3)  # past the will's delay
    observer.expect_no_message()


def test_v5_mqtt_3_1_3_10_will_user_properties_keep_order(clients, names):
    topic = names.topic("will")
    observer = watch(clients, names, topic, V5)
    pairs = [("k", "1"), ("a", "2"), ("k", "3"), ("z", ""), ("a", "0")]
    will = Will(topic, b"props", properties=[(mqtt_raw.USER_PROPERTY, p) for p in pairs])
    hold_will(clients, names.client(), will, V5).abort()
    message = assert_will(observer, topic, b"props")
    assert message.user_properties == pairs


# ---------------------------------------------------------------------------
# Wills the server cannot honour (dedicated brokers)
# ---------------------------------------------------------------------------

def check_will_refused(clients: Clients, names: Names, will: Will) -> None:
    raw = clients.raw()
    raw.send(mqtt_raw.connect(names.client(), version=V5, will=will))
    packets = raw.expect_closed()
    assert len(packets) <= 1 and all(p.type == mqtt_raw.CONNACK for p in packets), packets
    for pkt in packets:
        ack = mqtt_raw.parse_connack(pkt, V5)
        assert ack.code >= 0x80 and not ack.session_present, ack


@pytest.mark.broker_config({"limits": {"qos_max": 1}})
def test_v5_mqtt_3_2_2_12_will_qos_above_maximum_rejected(clients, names):
    check_will_refused(clients, names, Will(names.topic("will"), b"x", qos=2))


@pytest.mark.broker_config({"limits": {"retain_available": False}})
def test_v5_mqtt_3_2_2_13_will_retain_without_retain_support_rejected(clients, names):
    check_will_refused(clients, names, Will(names.topic("will"), b"x", retain=True))

