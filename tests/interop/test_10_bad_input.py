"""Bad input on raw sockets: garbage, a packet cut off by the close of the connection, packets
above the server's Maximum Packet Size, invalid fixed-header flags, ill-formed UTF-8 and
wildcards in a PUBLISH Topic Name (MQTT 3.1.1 sections 1.5.3, 2.2.2, 3.3.2 and 4.8; MQTT 5.0
sections 1.5.4, 2.1.3, 3.3.2 and 4.13).

Each time the offending connection must be closed (5.0: after a DISCONNECT with the right
Reason Code), and a well-behaved paho publisher and subscriber on the same broker must go on
exchanging QoS 1 messages, none lost, while it happens and afterwards.
"""

from __future__ import annotations

import queue
import threading
from typing import Optional

import pytest

import mqtt_raw
from mqtt_raw import CONNACK, DISCONNECT, SUBSCRIBE, V5, V311, Will
from support import TIMEOUT, Clients, Names, mosquitto_deviation

MALFORMED, PROTOCOL_ERROR, TOPIC_NAME_INVALID, PACKET_TOO_LARGE = 0x81, 0x82, 0x90, 0x95
PACKET_SIZE_MAX = 1024
SMALL_PACKETS = pytest.mark.broker_config({"limits": {"packet_size_max_bytes": PACKET_SIZE_MAX}})
VERSION_IDS = {V311: "v311", V5: "v5"}
PROGRESS = 20  # exchanges the bystander must complete after the bad input
EXCHANGES_MAX = 20000  # a bound on the bystander's loop


class Bystander:
    """A paho publisher and subscriber exchanging numbered QoS 1 messages in a thread: each
    message is published, then awaited at the subscriber before the next one is sent, so any
    loss or reordering is noticed at once."""

    def __init__(self, clients: Clients, names: Names, version: int) -> None:
        self.topic = names.topic("bystander")
        self.subscriber = clients.subscriber(names.client("bsub"), self.topic, qos=1,
                                             version=version)
        self.publisher = clients.connected(names.client("bpub"), version=version)
        self.done = 0
        self.error: Optional[str] = None
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="bystander", daemon=True)

    def _exchange(self) -> None:
        payload = b"%06d" % self.done
        self.publisher.publish(self.topic, payload, qos=1)
        try:
            message = self.subscriber.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"message {payload!r} lost (none arrived in {TIMEOUT} s)")
        assert (message.payload, message.qos) == (payload, 1), (
            f"expected {payload!r} at QoS 1, got {message}")
        with self._progress:
            self.done += 1
            self._progress.notify_all()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self.done < EXCHANGES_MAX:
                self._exchange()
        except BaseException as err:  # reported by finish()
            self.error = f"{type(err).__name__}: {err}"
            with self._progress:
                self._progress.notify_all()

    def start(self) -> "Bystander":
        self._thread.start()
        self.wait_for(1)  # it is exchanging before the bad input starts
        return self

    def wait_for(self, count: int) -> None:
        with self._progress:
            reached = self._progress.wait_for(
                lambda: self.done >= count or self.error is not None
                or not self._thread.is_alive(), timeout=TIMEOUT * 2)
        assert self.error is None, f"the well-behaved clients failed: {self.error}"
        assert reached and self.done >= count, (
            f"the well-behaved clients completed {self.done} of {count} exchanges")

    def finish(self) -> None:
        """Let it make progress after the bad input, stop it, and exchange a few more."""
        self.wait_for(self.done + PROGRESS)
        self._stop.set()
        self._thread.join(TIMEOUT * 2)
        assert not self._thread.is_alive(), "the bystander thread did not stop"
        assert self.error is None, f"the well-behaved clients failed: {self.error}"
        for _ in range(3):  # a duplicate or stray message would show up here
            self._exchange()


@pytest.fixture
def bystander(request, clients, names):
    """Started on demand: ``bystander(version)``; finished (and checked) by the test."""
    started: list[Bystander] = []

    def start(version: int) -> Bystander:
        one = Bystander(clients, names, version).start()
        started.append(one)
        return one

    yield start
    for one in started:  # if the test failed early, still stop the thread
        one._stop.set()
        one._thread.join(TIMEOUT)


def describe(packets: list[mqtt_raw.Packet], version: int) -> list[str]:
    out = []
    for pkt in packets:
        if pkt.type == DISCONNECT:
            out.append(f"DISCONNECT 0x{mqtt_raw.parse_disconnect(pkt).reason:02x}")
        elif pkt.type == CONNACK:
            out.append(f"CONNACK 0x{mqtt_raw.parse_connack(pkt, version).code:02x}")
        else:
            out.append(repr(pkt))
    return out


def assert_refused(packets: list[mqtt_raw.Packet], version: int, reasons: set[int]) -> None:
    """3.1.1: closed with nothing sent. 5.0: one DISCONNECT with one of ``reasons``, then
    closed (MQTT-4.13.1-1; the Reason Code is sent as 4.13.1 asks)."""
    got = describe(packets, version)
    if version == V311:
        assert got == [], f"3.1.1 has no way to say why; expected a silent close, got {got}"
        return
    wanted = " or ".join(f"0x{r:02x}" for r in sorted(reasons))
    assert len(packets) == 1 and packets[0].type == DISCONNECT, (
        f"expected DISCONNECT {wanted} before the close, got {got}")
    reason = mqtt_raw.parse_disconnect(packets[0]).reason
    assert reason in reasons, f"DISCONNECT 0x{reason:02x}, expected {wanted}"


def send_bad(clients: Clients, names: Names, version: int, data: bytes, *,
             connect: bool = True) -> list[mqtt_raw.Packet]:
    raw = clients.raw_connected(names.client("bad"), version=version) if connect \
        else clients.raw()
    raw.send(data)
    return raw.expect_closed()


def cases_for(version: int, cases: list[tuple],
              deviations: dict[tuple[str, int], str] | None = None) -> list:
    """pytest parameters (name, *data) for ``version``, with the mosquitto deviations of
    that version marked (keyed by (name, version))."""
    params = []
    for name, *rest in cases:
        reason = (deviations or {}).get((name, version))
        marks = [mosquitto_deviation(reason)] if reason else []
        params.append(pytest.param(name, *rest, marks=marks, id=name))
    return params


# ---------------------------------------------------------------------------
# Garbage
# ---------------------------------------------------------------------------

GARBAGE_FIRST = [
    # An HTTP request (its first byte reads as a PUBACK header), made long enough to be a
    # complete packet under any reading.
    ("http", b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n" + bytes(120)),
    ("all-byte-values", bytes(range(256))),
]


@pytest.mark.parametrize("name,data", GARBAGE_FIRST, ids=[c[0] for c in GARBAGE_FIRST])
def test_v311_mqtt_4_8_0_1_garbage_instead_of_connect_closes(clients, names, bystander, name,
                                                             data):
    watch = bystander(V311)
    assert_refused(send_bad(clients, names, V311, data, connect=False), V311, set())
    watch.finish()


@pytest.mark.parametrize("name,data", GARBAGE_FIRST, ids=[c[0] for c in GARBAGE_FIRST])
def test_v5_mqtt_3_14_0_1_garbage_instead_of_connect_closes_without_disconnect(
        clients, names, bystander, name, data):
    watch = bystander(V5)
    packets = send_bad(clients, names, V5, data, connect=False)
    # No DISCONNECT before a successful CONNACK: silence (or an error CONNACK), then close.
    assert all(p.type == CONNACK for p in packets), describe(packets, V5)
    assert all(mqtt_raw.parse_connack(p, V5).code >= 0x80 for p in packets)
    watch.finish()


GARBAGE_AFTER_CONNECT = [
    ("reserved-type-0", b"\x00\x00", {MALFORMED, PROTOCOL_ERROR}),
    ("five-byte-remaining-length", b"\x30\xff\xff\xff\xff\x7f" + bytes(16), {MALFORMED}),
]


GARBAGE_DEVIATIONS = {
    ("five-byte-remaining-length", V5): "closes without sending DISCONNECT 0x81"}


@pytest.mark.parametrize("name,data,reasons",
                         cases_for(V311, GARBAGE_AFTER_CONNECT, GARBAGE_DEVIATIONS))
def test_v311_mqtt_4_8_0_1_garbage_after_connect_closes(clients, names, bystander, name, data,
                                                        reasons):
    watch = bystander(V311)
    assert_refused(send_bad(clients, names, V311, data), V311, set())
    watch.finish()


@pytest.mark.parametrize("name,data,reasons",
                         cases_for(V5, GARBAGE_AFTER_CONNECT, GARBAGE_DEVIATIONS))
def test_v5_mqtt_4_13_1_1_garbage_after_connect_disconnect_and_close(clients, names, bystander,
                                                                     name, data, reasons):
    watch = bystander(V5)
    assert_refused(send_bad(clients, names, V5, data), V5, reasons)
    watch.finish()


# ---------------------------------------------------------------------------
# A packet cut off by the end of the connection
# ---------------------------------------------------------------------------

def check_truncated_then_closed(clients: Clients, names: Names, bystander, version: int,
                                cut: int) -> None:
    topic, will_topic = names.topic("cut/publish"), names.topic("cut/will")
    watch = bystander(version)
    observer = clients.subscriber(names.client("obs"), names.topic("cut/+"), qos=1,
                                  version=version)
    raw = clients.raw_connected(names.client("bad"), version=version,
                                will=Will(will_topic, b"dropped", qos=1))
    whole = mqtt_raw.publish(topic, b"never complete" * 10, qos=1, packet_id=1, retain=True,
                             version=version)
    raw.send(whole[:cut])
    raw.abort()
    # The connection ended without DISCONNECT: the will is published; the partial
    # PUBLISH is neither delivered nor retained.
    message = observer.expect_message()
    assert (message.topic, message.payload) == (will_topic, b"dropped"), message
    observer.expect_no_message()
    clients.subscriber(names.client("late"), topic, qos=1, version=version).expect_no_message()
    watch.finish()


@pytest.mark.parametrize("cut", [1, 2, 40], ids=["header-byte", "header", "body"])
def test_v311_mqtt_3_1_2_8_truncated_packet_then_close_only_will(clients, names, bystander,
                                                                  cut):
    check_truncated_then_closed(clients, names, bystander, V311, cut)


@pytest.mark.parametrize("cut", [1, 2, 40], ids=["header-byte", "header", "body"])
def test_v5_mqtt_3_1_2_8_truncated_packet_then_close_only_will(clients, names, bystander, cut):
    check_truncated_then_closed(clients, names, bystander, V5, cut)


# ---------------------------------------------------------------------------
# Packets above the server's Maximum Packet Size
# ---------------------------------------------------------------------------

def oversized_publish_start(topic: str, version: int) -> bytes:
    """The start of a PUBLISH declaring a remaining length 100 times the maximum; the rest
    is never sent (the server must judge it by its header)."""
    body = mqtt_raw.utf8(topic) + (mqtt_raw.encode_properties(None) if version == V5 else b"")
    return (bytes([mqtt_raw.PUBLISH << 4]) + mqtt_raw.varint(PACKET_SIZE_MAX * 100) + body
            + b"x" * 64)


def check_oversized_publish(clients: Clients, names: Names, bystander, version: int) -> None:
    topic = names.topic("big")
    watch = bystander(version)
    raw = clients.raw_connected(names.client("bad"), version=version)
    if version == V5:
        advertised = raw.connack.properties.get(mqtt_raw.MAXIMUM_PACKET_SIZE)
        assert advertised == PACKET_SIZE_MAX, f"CONNACK Maximum Packet Size {advertised}"
    raw.send(oversized_publish_start(topic, version))
    assert_refused(raw.expect_closed(), version, {PACKET_TOO_LARGE})
    watch.finish()


@SMALL_PACKETS
def test_v311_mqtt_4_8_0_1_oversized_packet_closes(clients, names, bystander):
    check_oversized_publish(clients, names, bystander, V311)


@SMALL_PACKETS
def test_v5_mqtt_4_13_1_1_oversized_packet_disconnect_0x95(clients, names, bystander):
    check_oversized_publish(clients, names, bystander, V5)


def oversized_connect(names: Names, version: int) -> bytes:
    return mqtt_raw.connect(names.client("big"), version=version,
                            will=Will(names.topic("will"), b"w" * (PACKET_SIZE_MAX * 2)))


@SMALL_PACKETS
def test_v311_mqtt_3_2_2_6_oversized_connect_closed_without_connack(clients, names,
                                                                     bystander):
    """No 3.1.1 CONNACK return code means "too large": close without CONNACK."""
    watch = bystander(V311)
    packets = send_bad(clients, names, V311, oversized_connect(names, V311), connect=False)
    assert packets == [], describe(packets, V311)
    watch.finish()


@SMALL_PACKETS
@mosquitto_deviation("closes on a CONNECT above max_packet_size without CONNACK 0x95")
def test_v5_mqtt_4_13_1_1_oversized_connect_connack_0x95(clients, names, bystander):
    watch = bystander(V5)
    packets = send_bad(clients, names, V5, oversized_connect(names, V5), connect=False)
    assert describe(packets, V5) == ["CONNACK 0x95"], (
        f"expected CONNACK 0x95 (Packet too large) then a close, got {describe(packets, V5)}")
    watch.finish()


# ---------------------------------------------------------------------------
# Invalid fixed-header flags
# ---------------------------------------------------------------------------

def bad_flags_cases() -> list[tuple]:
    def subscribe_body(version: int) -> bytes:
        props = b"\x00" if version == V5 else b""
        return b"\x00\x01" + props + mqtt_raw.utf8("interop/flags") + b"\x01"

    return [
        ("subscribe-0000", lambda v: mqtt_raw.packet(SUBSCRIBE, 0x0, subscribe_body(v))),
        ("unsubscribe-0000", lambda v: mqtt_raw.packet(
            mqtt_raw.UNSUBSCRIBE, 0x0, b"\x00\x01" + (b"\x00" if v == V5 else b"")
            + mqtt_raw.utf8("interop/flags"))),
        ("pubrel-0000", lambda v: mqtt_raw.packet(mqtt_raw.PUBREL, 0x0, b"\x00\x01")),
        ("pingreq-0001", lambda v: mqtt_raw.packet(mqtt_raw.PINGREQ, 0x1)),
    ]


FLAG_DEVIATIONS = {
    ("pingreq-0001", V311): "answers a PINGREQ with reserved flags set instead of closing",
    ("pingreq-0001", V5): "answers a PINGREQ with reserved flags set instead of closing",
    ("pubrel-0000", V5): "closes on a PUBREL with flags 0000 without sending DISCONNECT 0x81",
}


@pytest.mark.parametrize("name,build", cases_for(V311, bad_flags_cases(), FLAG_DEVIATIONS))
def test_v311_mqtt_2_2_2_2_invalid_flags_close(clients, names, bystander, name, build):
    watch = bystander(V311)
    assert_refused(send_bad(clients, names, V311, build(V311)), V311, set())
    watch.finish()


@pytest.mark.parametrize("name,build", cases_for(V5, bad_flags_cases(), FLAG_DEVIATIONS))
def test_v5_mqtt_2_1_3_1_invalid_flags_disconnect_0x81(clients, names, bystander, name, build):
    """Flags other than the listed values make a Malformed Packet (DISCONNECT 0x81)."""
    watch = bystander(V5)
    assert_refused(send_bad(clients, names, V5, build(V5)), V5, {MALFORMED})
    watch.finish()


# ---------------------------------------------------------------------------
# Ill-formed UTF-8 and wildcards in a Topic Name
# ---------------------------------------------------------------------------

UTF8_CASES = [
    ("ill-formed", b"interop/\xc3\x28"),
    ("surrogate", b"interop/\xed\xa0\x80"),
    ("overlong", b"interop/\xc0\xaf"),
]
NUL_TOPIC = b"interop/a\x00b"


def check_bad_topic(clients: Clients, names: Names, bystander, version: int, topic: bytes,
                    reasons: set[int]) -> None:
    watch = bystander(version)
    raw = clients.raw_connected(names.client("bad"), version=version)
    raw.send(mqtt_raw.publish(topic, b"bad topic", qos=1, packet_id=1, version=version))
    packets = raw.expect_closed()
    assert all(p.type != mqtt_raw.PUBACK for p in packets), describe(packets, version)
    assert_refused(packets, version, reasons)
    watch.finish()


@pytest.mark.parametrize("name,topic", UTF8_CASES, ids=[c[0] for c in UTF8_CASES])
def test_v311_mqtt_1_5_3_1_ill_formed_utf8_topic_closes(clients, names, bystander, name,
                                                        topic):
    check_bad_topic(clients, names, bystander, V311, topic, set())


@pytest.mark.parametrize("name,topic", UTF8_CASES, ids=[c[0] for c in UTF8_CASES])
def test_v5_mqtt_1_5_4_1_ill_formed_utf8_topic_disconnect_0x81(clients, names, bystander,
                                                               name, topic):
    check_bad_topic(clients, names, bystander, V5, topic, {MALFORMED})


def test_v311_mqtt_1_5_3_2_nul_in_topic_closes(clients, names, bystander):
    check_bad_topic(clients, names, bystander, V311, NUL_TOPIC, set())


def test_v5_mqtt_1_5_4_2_nul_in_topic_disconnect_0x81(clients, names, bystander):
    check_bad_topic(clients, names, bystander, V5, NUL_TOPIC, {MALFORMED})


def test_v5_mqtt_1_5_4_1_ill_formed_utf8_filter_disconnect_0x81(clients, names, bystander):
    watch = bystander(V5)
    packets = send_bad(clients, names, V5, mqtt_raw.subscribe(1, [(b"interop/\xc3\x28", 1)],
                                                              version=V5))
    assert_refused(packets, V5, {MALFORMED})
    watch.finish()


WILDCARD_TOPICS = ["interop/+/x", "interop/#", "+", "interop/a+b"]


@pytest.mark.parametrize("topic", WILDCARD_TOPICS)
def test_v311_mqtt_3_3_2_2_wildcard_in_publish_topic_closes(clients, names, bystander, topic):
    check_bad_topic(clients, names, bystander, V311, topic.encode(), set())


@mosquitto_deviation("answers a wildcard in a PUBLISH Topic Name with DISCONNECT 0x82 "
                     "(Protocol Error), not 0x90 (Topic Name invalid)")
@pytest.mark.parametrize("topic", WILDCARD_TOPICS)
def test_v5_mqtt_3_3_2_2_wildcard_in_publish_topic_disconnect_0x90(clients, names, bystander,
                                                                    topic):
    check_bad_topic(clients, names, bystander, V5, topic.encode(), {TOPIC_NAME_INVALID})
