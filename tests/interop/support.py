"""Shared pieces of the interop suite: the broker under test, deviation markers, unique names,
and a paho-mqtt client wrapper whose every wait is on a queue or event with a timeout.

Nothing here sleeps to synchronise. Waiting for something to happen means waiting on a queue
filled by paho's callbacks; proving that something does *not* happen is a short bounded wait
on such a queue (``expect_no_message``).
"""

from __future__ import annotations

import os
import queue
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

import mqtt_raw

BROKER_KIND = os.environ.get("TERN_TEST_BROKER", "tern").strip().lower() or "tern"
if BROKER_KIND not in ("tern", "mosquitto"):
    raise RuntimeError(f"TERN_TEST_BROKER must be 'tern' or 'mosquitto', not {BROKER_KIND!r}")

TIMEOUT = 5.0  # how long to wait for something that must happen
QUIET = 0.5  # how long to watch for something that must not happen


def mosquitto_deviation(reason: str) -> pytest.MarkDecorator:
    """Mark a test whose scenario mosquitto 2.0.11 gets wrong (strict xfail on mosquitto only).

    The test still checks the standard; against Tern it must pass.
    """
    return pytest.mark.xfail(
        condition=BROKER_KIND == "mosquitto",
        reason=f"mosquitto 2.0.11: {reason}",
        strict=True,
    )


class Names:
    """Client identifiers and topics unique to one test (brokers are shared by a module)."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(5)

    def client(self, suffix: str = "c") -> str:
        """An identifier of at most 23 alphanumeric characters (always allowed: MQTT-3.1.3-5)."""
        ident = f"t{self.tag}{suffix}"
        assert ident.isalnum() and len(ident) <= 23, ident
        return ident

    def topic(self, suffix: str = "t") -> str:
        return f"interop/{self.tag}/{suffix}"


# ---------------------------------------------------------------------------
# paho-mqtt clients
# ---------------------------------------------------------------------------

@dataclass
class ConnectResult:
    code: int  # CONNACK return code (3.1.1) or reason code (5.0)
    session_present: bool
    properties: Any = None  # paho Properties (5.0) or None


@dataclass
class Message:
    """A received application message, copied out of paho's MQTTMessage."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    properties: Any = None

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        return list(getattr(self.properties, "UserProperty", []) or [])


@dataclass
class Disconnected:
    reason: int
    from_server: bool  # True when the server sent a DISCONNECT packet (5.0)


def connect_properties(**values: Any) -> Properties:
    """paho CONNECT properties, e.g. ``connect_properties(SessionExpiryInterval=10)``."""
    props = Properties(PacketTypes.CONNECT)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def will_properties(**values: Any) -> Properties:
    props = Properties(PacketTypes.WILLMESSAGE)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def publish_properties(**values: Any) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


class PahoClient:
    """A paho-mqtt client running its network loop in a thread, with blocking, bounded waits.

    ``version`` is the CONNECT protocol level: 4 (MQTT 3.1.1) or 5 (MQTT 5.0). The client never
    reconnects by itself, so a connection the server closes stays closed.
    """

    def __init__(self, host: str, port: int, client_id: str, *, version: int = 5,
                 clean: bool = True, transport: str = "tcp") -> None:
        self.host, self.port, self.version = host, port, version
        self.client_id = client_id
        self.clean = clean
        kwargs: dict[str, Any] = {}
        if version == 4:
            kwargs["clean_session"] = clean
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if version == 5 else paho.MQTTv311,
            reconnect_on_failure=False,
            transport=transport,
            **kwargs,
        )
        self.messages: "queue.Queue[Message]" = queue.Queue()
        self._connacks: "queue.Queue[ConnectResult]" = queue.Queue()
        self._subacks: dict[int, "queue.Queue[list[int]]"] = {}
        self._disconnects: "queue.Queue[Disconnected]" = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self._loop_running = False

    # -- callbacks (paho's network thread) ----------------------------------
    def _on_connect(self, _c, _u, flags, reason_code, properties) -> None:
        self._connacks.put(ConnectResult(int(reason_code.value), bool(flags.session_present),
                                         properties))

    def _on_message(self, _c, _u, msg) -> None:
        self.messages.put(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                                  bool(msg.dup), getattr(msg, "properties", None)))

    def _on_subscribe(self, _c, _u, mid, reason_codes, _properties) -> None:
        self._subacks.setdefault(mid, queue.Queue()).put([int(rc.value) for rc in reason_codes])

    def _on_disconnect(self, _c, _u, flags, reason_code, _properties) -> None:
        self._disconnects.put(Disconnected(int(reason_code.value),
                                           bool(flags.is_disconnect_packet_from_server)))

    # -- connection ---------------------------------------------------------
    def will_set(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                 properties: Optional[Properties] = None) -> None:
        self.client.will_set(topic, payload, qos, retain, properties)

    def connect(self, *, keep_alive: int = 60, properties: Optional[Properties] = None,
                expect_code: Optional[int] = 0, timeout: float = TIMEOUT) -> ConnectResult:
        """Connect and wait for CONNACK; assert its code unless ``expect_code`` is None."""
        extra: dict[str, Any] = {}
        if self.version == 5:
            extra["clean_start"] = self.clean
            extra["properties"] = properties
        self.client.connect(self.host, self.port, keep_alive, **extra)
        self.client.loop_start()
        self._loop_running = True
        try:
            result = self._connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no CONNACK for {self.client_id!r} within {timeout} s")
        if expect_code is not None:
            assert result.code == expect_code, (
                f"CONNACK code 0x{result.code:02x} for {self.client_id!r}, "
                f"expected 0x{expect_code:02x}")
        return result

    def disconnect(self, reason: Optional[int] = None, properties: Optional[Properties] = None,
                   timeout: float = TIMEOUT) -> None:
        """Send DISCONNECT (optionally with a 5.0 reason code) and wait for the loop to end."""
        rc = None
        if reason is not None:
            rc = paho.ReasonCode(PacketTypes.DISCONNECT, identifier=reason)
        self.client.disconnect(rc, properties)
        self.expect_disconnected(timeout)
        self.stop()

    def expect_disconnected(self, timeout: float = TIMEOUT) -> Disconnected:
        """Wait until the connection has ended (for whatever reason)."""
        try:
            return self._disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r} still connected after {timeout} s")

    def close(self) -> None:
        """End the client: DISCONNECT if still connected, then stop the network loop."""
        if self._loop_running and self.client.is_connected():
            self.client.disconnect()
            try:
                self._disconnects.get(timeout=TIMEOUT)
            except queue.Empty:
                pass
        self.stop()

    def stop(self) -> None:
        """Stop the network loop and drop the socket (no DISCONNECT if still connected)."""
        if self._loop_running:
            self._loop_running = False
            self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # -- pub/sub ------------------------------------------------------------
    def subscribe(self, topic: str, qos: int = 0, *, options: Optional[SubscribeOptions] = None,
                  properties: Optional[Properties] = None,
                  timeout: float = TIMEOUT) -> list[int]:
        """Subscribe and wait for SUBACK; return its return/reason codes and check success."""
        if self.version == 5:
            opts = options or SubscribeOptions(qos=qos)
            result, mid = self.client.subscribe(topic, options=opts, properties=properties)
        else:
            result, mid = self.client.subscribe(topic, qos)
        assert result == paho.MQTT_ERR_SUCCESS, f"subscribe failed locally: {result}"
        try:
            codes = self._subacks.setdefault(mid, queue.Queue()).get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no SUBACK for {topic!r} within {timeout} s")
        assert all(code < 0x80 for code in codes), f"subscription to {topic!r} refused: {codes}"
        return codes

    def publish(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                properties: Optional[Properties] = None, timeout: float = TIMEOUT) -> None:
        """Publish and wait until the QoS flow is complete (written out, for QoS 0)."""
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic!r} not completed within {timeout} s"

    def expect_message(self, timeout: float = TIMEOUT) -> Message:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r} received no message within {timeout} s")

    def expect_no_message(self, timeout: float = QUIET) -> None:
        expect_no_message(self.messages, timeout)

    def is_connected(self) -> bool:
        return self.client.is_connected()


def expect_no_message(messages: "queue.Queue[Any]", timeout: float = QUIET) -> None:
    """Assert that nothing arrives on ``messages`` for ``timeout`` seconds (keep it short)."""
    try:
        item = messages.get(timeout=timeout)
    except queue.Empty:
        return
    raise AssertionError(f"unexpected message: {item!r}")


# ---------------------------------------------------------------------------
# Client factory, handed to tests by the ``clients`` fixture
# ---------------------------------------------------------------------------

@dataclass
class Clients:
    """Creates clients against the broker of the current test and closes them afterwards."""

    broker: Any
    _open: list[Any] = field(default_factory=list)

    def paho(self, client_id: str, *, version: int = 5, clean: bool = True) -> PahoClient:
        client = PahoClient(self.broker.host, self.broker.port, client_id, version=version,
                            clean=clean)
        self._open.append(client)
        return client

    def connected(self, client_id: str, *, version: int = 5, clean: bool = True,
                  **connect_options: Any) -> PahoClient:
        """A paho client that is already connected (CONNACK success asserted)."""
        client = self.paho(client_id, version=version, clean=clean)
        client.connect(**connect_options)
        return client

    def subscriber(self, client_id: str, topic: str, *, qos: int = 2,
                   version: int = 5) -> PahoClient:
        """A connected paho client subscribed to ``topic``."""
        client = self.connected(client_id, version=version)
        client.subscribe(topic, qos)
        return client

    def raw(self) -> mqtt_raw.RawClient:
        client = mqtt_raw.RawClient(self.broker.host, self.broker.port)
        self._open.append(client)
        return client

    def raw_connected(self, client_id: str, *, version: int = mqtt_raw.V311,
                      expect_code: int = 0, **options: Any) -> mqtt_raw.RawClient:
        """A raw connection that has sent CONNECT and received a CONNACK with ``expect_code``."""
        client = self.raw()
        ack = client.connect(client_id, version=version, **options)
        assert ack.code == expect_code, (
            f"CONNACK code 0x{ack.code:02x} for {client_id!r}, expected 0x{expect_code:02x}")
        client.connack = ack  # type: ignore[attr-defined]
        return client

    def elapse_on_broker(self, seconds: int) -> None:
        """Return once ``seconds`` have passed on the broker's own clock.

        The broker is asked to keep time itself: an MQTT 5.0 connection with a Will Delay
        Interval of ``seconds`` is dropped, and the call returns when that will arrives.
        Used where the standard speaks of time passing (session expiry, will delay).
        """
        tag = secrets.token_hex(5)
        topic = f"interop/clock/{tag}"
        observer = self.subscriber(f"clk{tag}o", topic, qos=0)
        holder = self.raw_connected(
            f"clk{tag}w", version=mqtt_raw.V5,
            properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: seconds + 60},
            will=mqtt_raw.Will(topic, b"tick",
                               properties={mqtt_raw.WILL_DELAY_INTERVAL: seconds}))
        holder.abort()
        try:
            observer.messages.get(timeout=seconds + TIMEOUT)
        except queue.Empty:
            raise AssertionError(
                f"the broker's clock did not tick: a will delayed {seconds} s never arrived")

    def close_all(self) -> None:
        for client in reversed(self._open):
            if isinstance(client, PahoClient):
                client.close()
            else:
                client.close()
        self._open.clear()


# ---------------------------------------------------------------------------
# More paho conveniences
# ---------------------------------------------------------------------------

def subscribe_properties(**values: Any) -> Properties:
    """paho SUBSCRIBE properties, e.g. ``subscribe_properties(SubscriptionIdentifier=7)``."""
    props = Properties(PacketTypes.SUBSCRIBE)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def drain(messages: "queue.Queue[Any]", timeout: float = QUIET) -> list[Any]:
    """Everything that arrives on ``messages`` until it has been quiet for ``timeout`` s."""
    got: list[Any] = []
    while True:
        try:
            got.append(messages.get(timeout=timeout))
        except queue.Empty:
            return got


class _TaggingQueue:
    """Stands in for a PahoClient's message queue, forwarding (client id, message) pairs."""

    def __init__(self, target: "queue.Queue[tuple[str, Message]]", tag: str) -> None:
        self.target, self.tag = target, tag

    def put(self, item: Message) -> None:
        self.target.put((self.tag, item))


def merge_messages(*members: PahoClient) -> "queue.Queue[tuple[str, Message]]":
    """One queue receiving (client id, message) for every message of every member, from now
    on (for checks spanning several clients, such as a shared subscription's members)."""
    merged: "queue.Queue[tuple[str, Message]]" = queue.Queue()
    for member in members:
        member.messages = _TaggingQueue(merged, member.client_id)  # type: ignore[assignment]
    return merged


def next_from(messages: "queue.Queue[Any]", timeout: float = TIMEOUT) -> Any:
    """The next item of a queue, or an AssertionError after ``timeout`` s."""
    try:
        return messages.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"nothing arrived within {timeout} s")
