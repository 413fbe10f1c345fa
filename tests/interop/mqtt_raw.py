"""A small, hand-written MQTT 3.1.1 / 5.0 packet builder and parser for raw-socket tests.

paho-mqtt only ever sends well-formed packets and hides most of what the server sends back.
The tests that check exact bytes, malformed input, or protocol violations use this module
instead: the builders return plain ``bytes`` (so a test can corrupt or concatenate them),
and ``RawClient`` reads whole packets off a socket with a deadline.

Protocol version numbers follow the CONNECT Protocol Level byte: 4 is MQTT 3.1.1, 5 is MQTT 5.0.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

V311 = 4
V5 = 5

# Control packet types (fixed header, high nibble).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

PACKET_NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK",
    PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}

# MQTT 5.0 property identifiers used by the tests, with their wire types.
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES = {
    PAYLOAD_FORMAT_INDICATOR: _BYTE, MESSAGE_EXPIRY_INTERVAL: _U32, CONTENT_TYPE: _STR,
    RESPONSE_TOPIC: _STR, CORRELATION_DATA: _BIN, SUBSCRIPTION_IDENTIFIER: _VARINT,
    SESSION_EXPIRY_INTERVAL: _U32, ASSIGNED_CLIENT_IDENTIFIER: _STR, SERVER_KEEP_ALIVE: _U16,
    AUTHENTICATION_METHOD: _STR, AUTHENTICATION_DATA: _BIN, REQUEST_PROBLEM_INFORMATION: _BYTE,
    WILL_DELAY_INTERVAL: _U32, REQUEST_RESPONSE_INFORMATION: _BYTE, RESPONSE_INFORMATION: _STR,
    SERVER_REFERENCE: _STR, REASON_STRING: _STR, RECEIVE_MAXIMUM: _U16, TOPIC_ALIAS_MAXIMUM: _U16,
    TOPIC_ALIAS: _U16, MAXIMUM_QOS: _BYTE, RETAIN_AVAILABLE: _BYTE, USER_PROPERTY: _PAIR,
    MAXIMUM_PACKET_SIZE: _U32, WILDCARD_SUBSCRIPTION_AVAILABLE: _BYTE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE: _BYTE, SHARED_SUBSCRIPTION_AVAILABLE: _BYTE,
}
# Properties that may appear more than once; they decode to a list.
REPEATABLE = {USER_PROPERTY, SUBSCRIPTION_IDENTIFIER}

PropertyValue = Union[int, str, bytes, tuple]
Properties = Union[Mapping[int, PropertyValue], Sequence[tuple]]


class MalformedPacket(ValueError):
    """The server sent bytes that do not decode as the expected packet."""


# ---------------------------------------------------------------------------
# Primitive encodings
# ---------------------------------------------------------------------------

def varint(value: int) -> bytes:
    """Encode a Variable Byte Integer (remaining length, property length, ...)."""
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        digit, value = value % 128, value // 128
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_varint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode a Variable Byte Integer at ``pos``; return (value, position after it)."""
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= len(data):
            raise MalformedPacket("truncated variable byte integer")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise MalformedPacket("variable byte integer longer than 4 bytes")


def utf8(text: Union[str, bytes]) -> bytes:
    """Encode a length-prefixed UTF-8 string (bytes are taken as already encoded)."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return struct.pack("!H", len(raw)) + raw


binary = utf8  # Binary Data has the same two-byte length prefix.


def encode_properties(props: Properties | None) -> bytes:
    """Encode an MQTT 5.0 property block, length prefix included.

    ``props`` is a mapping of property id to value, or a sequence of (id, value) pairs when
    order or repetition matters. A USER_PROPERTY value is a (name, value) pair; in a mapping it
    may also be a list of pairs.
    """
    if props is None:
        return varint(0)
    items = list(props.items()) if isinstance(props, Mapping) else list(props)
    out = bytearray()
    for ident, value in items:
        values = value if ident in REPEATABLE and isinstance(value, list) else [value]
        for one in values:
            out += varint(ident) + _encode_property_value(ident, one)
    return varint(len(out)) + bytes(out)


def _encode_property_value(ident: int, value: PropertyValue) -> bytes:
    kind = PROPERTY_TYPES[ident]
    if kind == _BYTE:
        return struct.pack("!B", value)
    if kind == _U16:
        return struct.pack("!H", value)
    if kind == _U32:
        return struct.pack("!I", value)
    if kind == _VARINT:
        return varint(int(value))
    if kind == _STR:
        return utf8(value)  # type: ignore[arg-type]
    if kind == _BIN:
        return binary(value)  # type: ignore[arg-type]
    name, val = value  # type: ignore[misc]
    return utf8(name) + utf8(val)


def decode_properties(data: bytes, pos: int) -> tuple[dict[int, PropertyValue], int]:
    """Decode a property block at ``pos``; return (properties, position after the block).

    Repeatable properties (User Property, Subscription Identifier) decode to lists, in order.
    """
    length, pos = decode_varint(data, pos)
    end = pos + length
    if end > len(data):
        raise MalformedPacket("property block runs past the packet")
    props: dict[int, PropertyValue] = {}
    while pos < end:
        ident, pos = decode_varint(data, pos)
        kind = PROPERTY_TYPES.get(ident)
        if kind is None:
            raise MalformedPacket(f"unknown property 0x{ident:02x}")
        value: PropertyValue
        if kind == _BYTE:
            value, pos = data[pos], pos + 1
        elif kind == _U16:
            value, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif kind == _U32:
            value, pos = struct.unpack_from("!I", data, pos)[0], pos + 4
        elif kind == _VARINT:
            value, pos = decode_varint(data, pos)
        elif kind in (_STR, _BIN):
            raw, pos = _read_field(data, pos)
            value = raw.decode("utf-8") if kind == _STR else raw
        else:
            name, pos = _read_field(data, pos)
            val, pos = _read_field(data, pos)
            value = (name.decode("utf-8"), val.decode("utf-8"))
        if ident in REPEATABLE:
            props.setdefault(ident, [])  # type: ignore[arg-type]
            props[ident].append(value)  # type: ignore[union-attr]
        elif ident in props:
            raise MalformedPacket(f"property 0x{ident:02x} appears twice")
        else:
            props[ident] = value
    if pos != end:
        raise MalformedPacket("property block length mismatch")
    return props, pos


def _read_field(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(data):
        raise MalformedPacket("truncated length-prefixed field")
    (length,) = struct.unpack_from("!H", data, pos)
    if pos + 2 + length > len(data):
        raise MalformedPacket("length-prefixed field runs past the packet")
    return bytes(data[pos + 2:pos + 2 + length]), pos + 2 + length


# ---------------------------------------------------------------------------
# Packet builders
# ---------------------------------------------------------------------------

def packet(ptype: int, flags: int = 0, body: bytes = b"") -> bytes:
    """Frame an arbitrary body: fixed header byte, remaining length, body."""
    return bytes([(ptype << 4) | (flags & 0x0F)]) + varint(len(body)) + body


@dataclass
class Will:
    """A Will Message for ``connect``."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties | None = None  # MQTT 5.0 only (Will Delay Interval, ...)


def connect(
    client_id: str | bytes,
    *,
    version: int = V311,
    clean: bool = True,
    keep_alive: int = 60,
    will: Will | None = None,
    username: str | None = None,
    password: bytes | None = None,
    properties: Properties | None = None,
    protocol_name: str | bytes = "MQTT",
    protocol_level: int | None = None,
    reserved_flag: bool = False,
) -> bytes:
    """Build a CONNECT packet.

    ``version`` selects the layout (properties present for 5); ``protocol_level`` overrides the
    level byte alone, which is how an unsupported version is sent with an otherwise valid layout.
    """
    flags = 0
    if reserved_flag:
        flags |= 0x01
    if clean:
        flags |= 0x02
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    level = version if protocol_level is None else protocol_level
    body = utf8(protocol_name) + bytes([level, flags]) + struct.pack("!H", keep_alive)
    if version == V5:
        body += encode_properties(properties)
    body += utf8(client_id)
    if will is not None:
        if version == V5:
            body += encode_properties(will.properties)
        body += utf8(will.topic) + binary(will.payload)
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += binary(password)
    return packet(CONNECT, 0, body)


def publish(
    topic: str,
    payload: bytes = b"",
    *,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
    version: int = V311,
    properties: Properties | None = None,
) -> bytes:
    """Build a PUBLISH packet (``packet_id`` is required for QoS 1 and 2)."""
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic)
    if qos > 0:
        if packet_id is None:
            raise ValueError("QoS > 0 PUBLISH needs a packet identifier")
        body += struct.pack("!H", packet_id)
    if version == V5:
        body += encode_properties(properties)
    return packet(PUBLISH, flags, body + payload)


def subscribe(
    packet_id: int,
    filters: Iterable[tuple[str, int]] | str,
    *,
    qos: int = 0,
    version: int = V311,
    properties: Properties | None = None,
) -> bytes:
    """Build a SUBSCRIBE; ``filters`` is one filter string or (filter, options byte) pairs."""
    if isinstance(filters, str):
        filters = [(filters, qos)]
    body = struct.pack("!H", packet_id)
    if version == V5:
        body += encode_properties(properties)
    for topic_filter, options in filters:
        body += utf8(topic_filter) + bytes([options])
    return packet(SUBSCRIBE, 0x02, body)


def _ack(ptype: int, flags: int, packet_id: int, version: int, reason: int | None,
         properties: Properties | None) -> bytes:
    body = struct.pack("!H", packet_id)
    if version == V5 and (reason is not None or properties is not None):
        body += bytes([reason or 0])
        if properties is not None:
            body += encode_properties(properties)
    return packet(ptype, flags, body)


def puback(packet_id: int, *, version: int = V311, reason: int | None = None,
           properties: Properties | None = None) -> bytes:
    return _ack(PUBACK, 0, packet_id, version, reason, properties)


def pubrec(packet_id: int, *, version: int = V311, reason: int | None = None,
           properties: Properties | None = None) -> bytes:
    return _ack(PUBREC, 0, packet_id, version, reason, properties)


def pubrel(packet_id: int, *, version: int = V311, reason: int | None = None,
           properties: Properties | None = None) -> bytes:
    return _ack(PUBREL, 0x02, packet_id, version, reason, properties)


def pubcomp(packet_id: int, *, version: int = V311, reason: int | None = None,
            properties: Properties | None = None) -> bytes:
    return _ack(PUBCOMP, 0, packet_id, version, reason, properties)


def disconnect(*, version: int = V311, reason: int | None = None,
               properties: Properties | None = None, flags: int = 0) -> bytes:
    """Build a DISCONNECT; for 5.0 the reason code and properties are optional."""
    body = b""
    if version == V5 and (reason is not None or properties is not None):
        body = bytes([reason or 0])
        if properties is not None:
            body += encode_properties(properties)
    return packet(DISCONNECT, flags, body)


def pingreq() -> bytes:
    return packet(PINGREQ)


# ---------------------------------------------------------------------------
# Parsed packets
# ---------------------------------------------------------------------------

@dataclass
class Packet:
    """One control packet as read off the wire."""

    type: int
    flags: int
    body: bytes

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"type {self.type}")

    def __repr__(self) -> str:
        return f"<{self.name} flags=0x{self.flags:x} body={self.body.hex()}>"


@dataclass
class ConnAck:
    session_present: bool
    code: int  # 3.1.1 return code or 5.0 reason code
    ack_flags: int
    properties: dict[int, PropertyValue] = field(default_factory=dict)


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    properties: dict[int, PropertyValue] = field(default_factory=dict)


@dataclass
class Disconnect:
    reason: int
    properties: dict[int, PropertyValue] = field(default_factory=dict)


def parse_connack(pkt: Packet, version: int = V311) -> ConnAck:
    """Decode a CONNACK (``version`` is the protocol the client asked for)."""
    if pkt.type != CONNACK:
        raise MalformedPacket(f"expected CONNACK, got {pkt!r}")
    if len(pkt.body) < 2:
        raise MalformedPacket(f"CONNACK too short: {pkt!r}")
    ack_flags, code = pkt.body[0], pkt.body[1]
    props: dict[int, PropertyValue] = {}
    if version == V5 and len(pkt.body) > 2:
        props, end = decode_properties(pkt.body, 2)
        if end != len(pkt.body):
            raise MalformedPacket(f"trailing bytes in CONNACK: {pkt!r}")
    elif version != V5 and len(pkt.body) != 2:
        raise MalformedPacket(f"3.1.1 CONNACK must have 2 body bytes: {pkt!r}")
    return ConnAck(bool(ack_flags & 0x01), code, ack_flags, props)


def parse_publish(pkt: Packet, version: int = V311) -> Publish:
    if pkt.type != PUBLISH:
        raise MalformedPacket(f"expected PUBLISH, got {pkt!r}")
    qos = (pkt.flags >> 1) & 0x03
    raw_topic, pos = _read_field(pkt.body, 0)
    packet_id = None
    if qos > 0:
        (packet_id,) = struct.unpack_from("!H", pkt.body, pos)
        pos += 2
    props: dict[int, PropertyValue] = {}
    if version == V5:
        props, pos = decode_properties(pkt.body, pos)
    return Publish(raw_topic.decode("utf-8"), bytes(pkt.body[pos:]), qos,
                   bool(pkt.flags & 0x01), bool(pkt.flags & 0x08), packet_id, props)


def parse_disconnect(pkt: Packet, version: int = V5) -> Disconnect:
    if pkt.type != DISCONNECT:
        raise MalformedPacket(f"expected DISCONNECT, got {pkt!r}")
    if version != V5 or not pkt.body:
        return Disconnect(0)
    props: dict[int, PropertyValue] = {}
    if len(pkt.body) > 1:
        props, _ = decode_properties(pkt.body, 1)
    return Disconnect(pkt.body[0], props)


def packet_id_of(pkt: Packet) -> int:
    """The packet identifier of an acknowledgement (PUBACK, SUBACK, ...)."""
    return struct.unpack_from("!H", pkt.body, 0)[0]


# ---------------------------------------------------------------------------
# A socket speaking raw packets
# ---------------------------------------------------------------------------

class ConnectionClosed(Exception):
    """The server closed (or reset) the connection."""


class RawClient:
    """A TCP connection to the broker that sends bytes and reads whole packets."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.closed = False

    # -- sending ------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Send raw bytes (one or more packets, or anything else)."""
        self.sock.settimeout(5.0)
        self.sock.sendall(data)

    # -- receiving ----------------------------------------------------------
    def _frame(self) -> Packet | None:
        """Split one complete packet off the buffer, if there is one."""
        if len(self._buf) < 2:
            return None
        try:
            length, pos = decode_varint(self._buf, 1)
        except MalformedPacket:
            if len(self._buf) >= 5:
                raise
            return None
        if len(self._buf) < pos + length:
            return None
        first = self._buf[0]
        body = bytes(self._buf[pos:pos + length])
        del self._buf[:pos + length]
        return Packet(first >> 4, first & 0x0F, body)

    def recv_packet(self, timeout: float = 5.0) -> Packet:
        """Return the next packet; raise ``TimeoutError`` or ``ConnectionClosed``."""
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._frame()
            if pkt is not None:
                return pkt
            if self.closed:
                raise ConnectionClosed(
                    f"connection closed{' mid-packet' if self._buf else ''}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no packet from the server within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
            self._buf += chunk

    def expect_packet(self, ptype: int, timeout: float = 5.0) -> Packet:
        """Read the next packet and assert its type."""
        try:
            pkt = self.recv_packet(timeout)
        except ConnectionClosed:
            raise AssertionError(f"expected {PACKET_NAMES[ptype]}, but the connection closed")
        except TimeoutError:
            raise AssertionError(f"expected {PACKET_NAMES[ptype]} within {timeout} s, got nothing")
        assert pkt.type == ptype, f"expected {PACKET_NAMES[ptype]}, got {pkt!r}"
        return pkt

    def expect_no_packet(self, timeout: float = 0.5) -> None:
        """Assert that nothing arrives and the connection stays open for ``timeout`` s."""
        try:
            pkt = self.recv_packet(timeout)
        except TimeoutError:
            return
        except ConnectionClosed:
            raise AssertionError("the server closed the connection unexpectedly")
        raise AssertionError(f"unexpected packet from the server: {pkt!r}")

    def expect_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Assert the server closes the connection within ``timeout`` seconds.

        Returns the packets received before the close (for example a 5.0 DISCONNECT).
        """
        received: list[Packet] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                received.append(self.recv_packet(max(remaining, 0.0)))
            except ConnectionClosed:
                return received
            except TimeoutError:
                raise AssertionError(
                    f"the server did not close the connection within {timeout} s "
                    f"(received {received!r})")

    # -- conveniences -------------------------------------------------------
    def connect(self, client_id: str | bytes, *, version: int = V311, timeout: float = 5.0,
                **options) -> ConnAck:
        """Send CONNECT and return the decoded CONNACK (whatever its code)."""
        self.send(connect(client_id, version=version, **options))
        return parse_connack(self.expect_packet(CONNACK, timeout), version)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (an abnormal close as the server sees it)."""
        if not self.closed:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------
# More builders and parsers (UNSUBSCRIBE, acknowledgements with reason codes)
# ---------------------------------------------------------------------------

def unsubscribe(packet_id: int, filters: Iterable[str] | str, *, version: int = V311,
                properties: Properties | None = None) -> bytes:
    """Build an UNSUBSCRIBE for one filter or several."""
    if isinstance(filters, str):
        filters = [filters]
    body = struct.pack("!H", packet_id)
    if version == V5:
        body += encode_properties(properties)
    for topic_filter in filters:
        body += utf8(topic_filter)
    return packet(UNSUBSCRIBE, 0x02, body)


@dataclass
class Ack:
    """A PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK or UNSUBACK.

    ``codes`` holds the single reason code of a publish acknowledgement (0 when the 5.0
    packet omits it, and always for 3.1.1) or the per-filter codes of SUBACK / UNSUBACK
    (empty for a 3.1.1 UNSUBACK).
    """

    type: int
    packet_id: int
    codes: list[int]
    properties: dict[int, PropertyValue] = field(default_factory=dict)

    @property
    def reason(self) -> int:
        return self.codes[0] if self.codes else 0


def parse_ack(pkt: Packet, version: int = V311) -> Ack:
    """Decode any acknowledgement that starts with a packet identifier."""
    if pkt.type not in (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK):
        raise MalformedPacket(f"expected an acknowledgement, got {pkt!r}")
    if len(pkt.body) < 2:
        raise MalformedPacket(f"acknowledgement too short: {pkt!r}")
    packet_id = packet_id_of(pkt)
    pos = 2
    props: dict[int, PropertyValue] = {}
    if pkt.type in (SUBACK, UNSUBACK):
        if version == V5:
            props, pos = decode_properties(pkt.body, pos)
        return Ack(pkt.type, packet_id, list(pkt.body[pos:]), props)
    codes = [0]
    if version == V5 and len(pkt.body) > 2:
        codes = [pkt.body[2]]
        if len(pkt.body) > 3:
            props, end = decode_properties(pkt.body, 3)
            if end != len(pkt.body):
                raise MalformedPacket(f"trailing bytes in {pkt!r}")
    elif len(pkt.body) != 2:
        raise MalformedPacket(f"3.1.1 {pkt.name} must have 2 body bytes: {pkt!r}")
    return Ack(pkt.type, packet_id, codes, props)


def receive_publishes(raw: RawClient, count: int, version: int = V311,
                      timeout: float = 5.0) -> list[Publish]:
    """Read ``count`` PUBLISH packets, completing each QoS flow as a well-behaved client
    (PUBACK; PUBREC, then PUBCOMP for the PUBREL), and return them in arrival order.
    Returns once every QoS 2 flow it started has been completed."""
    got: list[Publish] = []
    open_flows: set[int] = set()
    while len(got) < count or open_flows:
        pkt = raw.recv_packet(timeout)
        if pkt.type == PUBREL:
            packet_id = packet_id_of(pkt)
            open_flows.discard(packet_id)
            raw.send(pubcomp(packet_id, version=version))
            continue
        pub = parse_publish(pkt, version)
        got.append(pub)
        if pub.qos == 1:
            raw.send(puback(pub.packet_id, version=version))
        elif pub.qos == 2:
            open_flows.add(pub.packet_id)
            raw.send(pubrec(pub.packet_id, version=version))
    return got
