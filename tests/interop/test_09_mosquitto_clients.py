"""Debian's mosquitto_pub and mosquitto_sub command-line clients against the broker, in MQTT
3.1.1 and 5.0: publish/subscribe at every QoS, retained messages, wills, shared subscriptions
and session resumption.

Every process is bounded: mosquitto_sub runs with ``-C count`` and ``-W timeout`` and
mosquitto_pub finishes by itself. mosquitto_sub runs with ``-d`` under ``stdbuf -oL`` so that
its "received SUBACK" line is read from the pipe as soon as it is printed; nothing is
published to it before that line.
"""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Optional

import pytest

from support import QUIET, TIMEOUT, Names

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_sub") and shutil.which("mosquitto_pub")
         and shutil.which("stdbuf")),
    reason="mosquitto_sub / mosquitto_pub (or stdbuf) not installed: run "
           "scripts/setup-test-deps.sh")

VERSIONS = {"v311": "mqttv311", "v5": "mqttv5"}
FORMAT = "MSG|%t|%q|%r|%p"  # -F output of mosquitto_sub: topic, QoS, retain, payload
WAIT_SECS = 10  # -W: the longest any mosquitto_sub here may run
EXPIRY = 300


@dataclass(frozen=True)
class Received:
    topic: str
    qos: int
    retain: bool
    payload: str


class Sub:
    """A running mosquitto_sub; its messages and its other output lines on two queues."""

    def __init__(self, broker, version: str, topic: str, *args: str) -> None:
        command = ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
                   "-V", VERSIONS[version], "-t", topic, "-d", "-W", str(WAIT_SECS),
                   "-F", FORMAT, *args]
        self.command = command
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace")
        self.messages: "queue.Queue[Received]" = queue.Queue()
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.output: list[str] = []
        self.sink: Optional["queue.Queue[tuple[Sub, Received]]"] = None  # see forward_to
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            if line.startswith("MSG|"):
                _, topic, qos, retain, payload = line.split("|", 4)
                received = Received(topic, int(qos), retain == "1", payload)
                sink = self.sink
                if sink is not None:
                    sink.put((self, received))
                else:
                    self.messages.put(received)
            else:
                self.lines.put(line)
        self.lines.put(None)

    def forward_to(self, sink: "queue.Queue[tuple[Sub, Received]]") -> None:
        """From now on, put (self, message) on ``sink`` instead of ``messages``."""
        self.sink = sink

    def describe(self) -> str:
        return " ".join(self.command) + "\n" + "\n".join(f"    | {l}" for l in self.output[-30:])

    def wait_subscribed(self, timeout: float = TIMEOUT) -> "Sub":
        """Return once mosquitto_sub reports the SUBACK (fail if it exits first)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no SUBACK within {timeout} s:\n{self.describe()}")
            if line is None:
                raise AssertionError(f"mosquitto_sub exited before its SUBACK:\n"
                                     f"{self.describe()}")
            if "received SUBACK" in line:
                return self

    def expect(self, count: int, timeout: float = TIMEOUT) -> list[Received]:
        got = []
        for _ in range(count):
            try:
                got.append(self.messages.get(timeout=timeout))
            except queue.Empty:
                raise AssertionError(f"received {len(got)} of {count} messages: {got}\n"
                                     f"{self.describe()}")
        return got

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mosquitto_sub still running after {timeout} s:\n"
                                 f"{self.describe()}")
        self._reader.join(timeout)
        return code

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=TIMEOUT)


@pytest.fixture
def subs(broker):
    """Starts mosquitto_sub processes for this test and ends any still running."""
    started: list[Sub] = []

    def start(version: str, topic: str, *args: str, subscribed: bool = True) -> Sub:
        sub = Sub(broker, version, topic, *args)
        started.append(sub)
        return sub.wait_subscribed() if subscribed else sub

    yield start
    for sub in started:
        sub.stop(signal.SIGKILL)


@pytest.fixture
def pub(broker):
    """Runs mosquitto_pub to completion: ``pub(version, topic, *args, lines=None)``."""

    def run(version: str, topic: str, *args: str, lines: Optional[list[str]] = None) -> None:
        command = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                   "-V", VERSIONS[version], "-t", topic, *args]
        if lines is not None:
            command.append("-l")
        done = subprocess.run(command, input="".join(f"{l}\n" for l in lines or []),
                              capture_output=True, text=True, timeout=WAIT_SECS)
        assert done.returncode == 0, (f"{' '.join(command)} failed ({done.returncode}):\n"
                                      f"{done.stdout}{done.stderr}")

    return run


def ended_normally(sub: Sub) -> None:
    code = sub.wait_exit()
    assert code == 0, f"mosquitto_sub exited with {code}:\n{sub.describe()}"


QOS = pytest.mark.parametrize("qos", [0, 1, 2])


# ---------------------------------------------------------------------------
# Publish / subscribe
# ---------------------------------------------------------------------------

def check_pub_sub(subs, pub, names: Names, version: str, qos: int,
                  pub_version: Optional[str] = None) -> None:
    topic = names.topic()
    sub = subs(version, topic, "-q", str(qos), "-C", "3")
    pub(pub_version or version, topic, "-q", str(qos), lines=["one", "two", "three"])
    got = sub.expect(3)
    assert got == [Received(topic, qos, False, p) for p in ("one", "two", "three")], got
    ended_normally(sub)


@QOS
def test_v311_mqtt_4_5_0_1_mosquitto_clients_publish_subscribe(subs, pub, names, qos):
    check_pub_sub(subs, pub, names, "v311", qos)


@QOS
def test_v5_mqtt_4_5_0_1_mosquitto_clients_publish_subscribe(subs, pub, names, qos):
    check_pub_sub(subs, pub, names, "v5", qos)


@QOS
def test_v5_mqtt_4_5_0_1_mosquitto_clients_v311_publisher_v5_subscriber(subs, pub, names, qos):
    check_pub_sub(subs, pub, names, "v5", qos, pub_version="v311")


def check_downgrade(subs, pub, names: Names, version: str) -> None:
    topic = names.topic()
    sub = subs(version, topic, "-q", "1", "-C", "3")
    for qos in (0, 1, 2):
        pub(version, topic, "-q", str(qos), "-m", f"at {qos}")
    got = sub.expect(3)
    assert got == [Received(topic, min(q, 1), False, f"at {q}") for q in (0, 1, 2)], got
    ended_normally(sub)


def test_v311_mqtt_3_8_4_6_mosquitto_clients_min_qos(subs, pub, names):
    check_downgrade(subs, pub, names, "v311")


def test_v5_mqtt_3_8_4_8_mosquitto_clients_min_qos(subs, pub, names):
    check_downgrade(subs, pub, names, "v5")


# ---------------------------------------------------------------------------
# Retained messages
# ---------------------------------------------------------------------------

def check_retained(subs, pub, names: Names, version: str, qos: int) -> None:
    topic = names.topic()
    pub(version, topic, "-q", str(qos), "-r", "-m", "kept")
    first = subs(version, topic, "-q", "2", "-C", "1")
    assert first.expect(1) == [Received(topic, qos, True, "kept")]
    ended_normally(first)
    # An empty retained message clears it: the next subscriber's first message is a probe.
    pub(version, topic, "-q", str(qos), "-r", "-n")
    second = subs(version, topic, "-q", "2", "-C", "1")
    pub(version, topic, "-q", str(qos), "-m", "probe")
    assert second.expect(1) == [Received(topic, qos, False, "probe")]
    ended_normally(second)


@QOS
def test_v311_mqtt_3_3_1_5_mosquitto_clients_retained(subs, pub, names, qos):
    check_retained(subs, pub, names, "v311", qos)


@QOS
def test_v5_mqtt_3_3_1_5_mosquitto_clients_retained(subs, pub, names, qos):
    check_retained(subs, pub, names, "v5", qos)


# ---------------------------------------------------------------------------
# Wills
# ---------------------------------------------------------------------------

def check_will(subs, names: Names, version: str, qos: int) -> None:
    will_topic = names.topic("will")
    watcher = subs(version, will_topic, "-q", "2", "-C", "1")
    holder = subs(version, names.topic("idle"), "-k", "60", "--will-topic", will_topic,
                  "--will-payload", "killed", "--will-qos", str(qos))
    holder.stop(signal.SIGKILL)  # no DISCONNECT: the connection just drops
    assert watcher.expect(1) == [Received(will_topic, qos, False, "killed")]
    ended_normally(watcher)


@QOS
def test_v311_mqtt_3_1_2_8_mosquitto_clients_will_on_sigkill(subs, names, qos):
    check_will(subs, names, "v311", qos)


@QOS
def test_v5_mqtt_3_1_2_8_mosquitto_clients_will_on_sigkill(subs, names, qos):
    check_will(subs, names, "v5", qos)


def check_no_will_after_disconnect(subs, pub, names: Names, version: str) -> None:
    will_topic = names.topic("will")
    watcher = subs(version, will_topic, "-q", "1", "-C", "1")
    holder = subs(version, names.topic("idle"), "-C", "1", "--will-topic", will_topic,
                  "--will-payload", "should not appear", "--will-qos", "1")
    pub(version, names.topic("idle"), "-m", "stop")  # holder exits with a DISCONNECT
    ended_normally(holder)
    pub(version, will_topic, "-q", "1", "-m", "probe")
    assert watcher.expect(1) == [Received(will_topic, 1, False, "probe")]
    ended_normally(watcher)


def test_v311_mqtt_3_14_4_3_mosquitto_clients_no_will_after_disconnect(subs, pub, names):
    check_no_will_after_disconnect(subs, pub, names, "v311")


def test_v5_mqtt_3_14_4_3_mosquitto_clients_no_will_after_disconnect(subs, pub, names):
    check_no_will_after_disconnect(subs, pub, names, "v5")


# ---------------------------------------------------------------------------
# Shared subscriptions (5.0)
# ---------------------------------------------------------------------------

@QOS
def test_v5_mqtt_4_8_2_3_mosquitto_clients_shared_subscription(subs, pub, names, qos):
    topic, count = names.topic(), 12
    shared = f"$share/{names.tag}/{topic}"
    members = [subs("v5", shared, "-q", str(qos), "-C", str(count)) for _ in range(2)]
    merged: "queue.Queue[tuple[Sub, Received]]" = queue.Queue()
    for member in members:
        member.forward_to(merged)
    pub("v5", topic, "-q", str(qos), lines=[f"m{i:02d}" for i in range(count)])
    got = []
    for _ in range(count):
        try:
            got.append(merged.get(timeout=TIMEOUT))
        except queue.Empty:
            raise AssertionError(f"{len(got)} of {count} shared messages arrived: {got}")
    try:
        extra = merged.get(timeout=QUIET)
    except queue.Empty:
        extra = None
    assert extra is None, f"more messages than were published: {extra}"
    assert sorted(r.payload for _, r in got) == [f"m{i:02d}" for i in range(count)], got
    assert {r.qos for _, r in got} == {qos}
    assert {id(m) for m, _ in got} == {id(m) for m in members}, (
        "every message went to the same member")
    for member in members:
        member.stop()


# ---------------------------------------------------------------------------
# Session resumption
# ---------------------------------------------------------------------------

def check_session_resumed(subs, pub, names: Names, version: str, qos: int) -> None:
    topic, client_id = names.topic(), names.client()
    session = ["-c", "-i", client_id, "-q", str(qos)]
    if version == "v5":
        session += ["-x", str(EXPIRY)]
    first = subs(version, topic, *session, "-C", "1")
    pub(version, topic, "-q", str(qos), "-m", "while connected")
    assert [r.payload for r in first.expect(1)] == ["while connected"]
    ended_normally(first)  # -C 1: it disconnects, leaving its session behind
    pub(version, topic, "-q", str(qos), lines=["away 1", "away 2", "away 3"])
    second = subs(version, topic, *session, "-C", "3", subscribed=False)
    got = second.expect(3)
    assert got == [Received(topic, qos, False, f"away {i}") for i in (1, 2, 3)], got
    ended_normally(second)
    assert any("received CONNACK (0)" in line for line in second.output), second.describe()


@pytest.mark.parametrize("qos", [1, 2])
def test_v311_mqtt_3_1_2_5_mosquitto_clients_session_resumed(subs, pub, names, qos):
    check_session_resumed(subs, pub, names, "v311", qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_v5_mqtt_3_1_2_23_mosquitto_clients_session_resumed(subs, pub, names, qos):
    check_session_resumed(subs, pub, names, "v5", qos)
