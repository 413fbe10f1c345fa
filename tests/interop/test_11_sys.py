"""The $SYS/broker/... statistics topics, published every second (``sys_interval_secs = 1``;
mosquitto: ``sys_interval 1``).

$SYS topics are a convention, not part of either MQTT specification, except that wildcard
filters do not match them (MQTT-4.7.2-1). The tests check only topics that Tern and mosquitto
both publish, with the same meaning: version, uptime ("N seconds"), clients/connected,
clients/total, messages/received, messages/sent, retained messages/count,
subscriptions/count, bytes/received and bytes/sent.
"""

from __future__ import annotations

import queue
import re
import time
from typing import Callable

import pytest

from mqtt_raw import V5, V311
from support import Clients, Names, PahoClient

SYS = pytest.mark.broker_config({"sys_interval_secs": 1})
COMMON = ["version", "uptime", "clients/connected", "clients/total", "messages/received",
          "messages/sent", "retained messages/count", "subscriptions/count", "bytes/received",
          "bytes/sent"]
NUMERIC = COMMON[2:]
UPTIME = re.compile(r"^(\d+) seconds$")
UPDATE_WAIT = 6.0  # several 1 s intervals


class SysWatcher:
    """A subscriber to $SYS/broker/#, keeping the latest value of every topic."""

    def __init__(self, clients: Clients, names: Names, version: int = V5) -> None:
        self.client: PahoClient = clients.subscriber(names.client("sys"), "$SYS/broker/#",
                                                     qos=0, version=version)
        self.latest: dict[str, str] = {}

    def _take(self, timeout: float) -> tuple[str, str]:
        message = self.client.messages.get(timeout=timeout)
        name = message.topic[len("$SYS/broker/"):]
        value = message.payload.decode("utf-8", "replace")
        self.latest[name] = value
        return name, value

    def wait_for(self, name: str, accept: Callable[[str], bool] = lambda _: True,
                 timeout: float = UPDATE_WAIT) -> str:
        """The latest value of $SYS/broker/<name> if ``accept`` takes it, else the first one
        to arrive that it takes (mosquitto publishes a counter only when it changed)."""
        if name in self.latest and accept(self.latest[name]):
            return self.latest[name]
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                got, value = self._take(max(remaining, 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"no acceptable $SYS/broker/{name} within {timeout} s "
                    f"(last: {self.latest.get(name)!r})") from None
            if got == name and accept(value):
                return value

    def current(self, name: str) -> str:
        """The value already seen, or the next one to arrive."""
        return self.latest[name] if name in self.latest else self.wait_for(name)

    def number(self, name: str) -> int:
        value = self.current(name)
        assert value.strip().isdigit(), f"$SYS/broker/{name} = {value!r} is not a count"
        return int(value)


def uptime_of(value: str) -> int:
    match = UPTIME.match(value)
    assert match, f"$SYS/broker/uptime = {value!r}, expected 'N seconds'"
    return int(match.group(1))


@SYS
def test_sys_common_statistics_published_retained(clients, names):
    watcher = SysWatcher(clients, names)
    for name in COMMON:
        watcher.current(name)
    assert watcher.latest["version"].strip(), "empty $SYS/broker/version"
    uptime_of(watcher.latest["uptime"])
    for name in NUMERIC:
        watcher.number(name)
    # Published retained: a new subscriber gets every one at once, RETAIN 1.
    late = clients.subscriber(names.client("late"), "$SYS/broker/#", qos=0)
    seen: dict[str, bool] = {}
    while not all(name in seen for name in COMMON):
        message = late.expect_message()
        seen.setdefault(message.topic[len("$SYS/broker/"):], message.retain)
    assert all(seen[name] for name in COMMON), (
        f"not retained: {[name for name in COMMON if not seen[name]]}")


@SYS
def test_sys_uptime_updates(clients, names):
    watcher = SysWatcher(clients, names)
    first = uptime_of(watcher.current("uptime"))
    later = watcher.wait_for("uptime", lambda v: uptime_of(v) > first)
    assert uptime_of(later) <= first + 10, f"uptime jumped from {first} to {later}"


@SYS
def test_sys_clients_connected_follows_connections(clients, names):
    watcher = SysWatcher(clients, names)
    # Wait for a value published after the watcher itself connected.
    before = int(watcher.wait_for("clients/connected", lambda v: int(v) >= 1))
    extra = [clients.connected(names.client(f"x{i}"), version=V311) for i in range(3)]
    watcher.wait_for("clients/connected", lambda v: int(v) >= before + 3)
    for client in extra:
        client.disconnect()
    watcher.wait_for("clients/connected", lambda v: int(v) <= before)


@SYS
def test_sys_message_and_byte_counters_grow(clients, names):
    watcher = SysWatcher(clients, names)
    start = {name: watcher.number(name) for name in
             ("messages/received", "messages/sent", "bytes/received", "bytes/sent")}
    topic = names.topic()
    subscriber = clients.subscriber(names.client("sub"), topic, qos=1)
    publisher = clients.connected(names.client("pub"))
    for index in range(10):
        publisher.publish(topic, b"x" * 100, qos=1)
    for _ in range(10):
        subscriber.expect_message()
    watcher.wait_for("messages/received", lambda v: int(v) >= start["messages/received"] + 10)
    watcher.wait_for("messages/sent", lambda v: int(v) >= start["messages/sent"] + 10)
    watcher.wait_for("bytes/received", lambda v: int(v) >= start["bytes/received"] + 1000)
    watcher.wait_for("bytes/sent", lambda v: int(v) >= start["bytes/sent"] + 1000)


@SYS
def test_sys_retained_and_subscription_counts_follow(clients, names):
    watcher = SysWatcher(clients, names)
    retained = watcher.number("retained messages/count")
    subscriptions = watcher.number("subscriptions/count")
    base = names.topic()
    publisher = clients.connected(names.client("pub"))
    for index in range(3):
        publisher.publish(f"{base}/{index}", b"kept", qos=1, retain=True)
    holder = clients.connected(names.client("hold"))
    for index in range(4):
        holder.subscribe(f"{base}/s{index}", qos=0)
    watcher.wait_for("retained messages/count", lambda v: int(v) >= retained + 3)
    watcher.wait_for("subscriptions/count", lambda v: int(v) >= subscriptions + 4)


def check_wildcards_skip_sys(clients: Clients, names: Names, version: int) -> None:
    everything = clients.subscriber(names.client("all"), "#", qos=0, version=version)
    plus = clients.subscriber(names.client("plus"), "+/broker/uptime", qos=0, version=version)
    watcher = SysWatcher(clients, names, version)
    first = uptime_of(watcher.current("uptime"))
    watcher.wait_for("uptime", lambda v: uptime_of(v) > first)  # a publication cycle passed
    everything.expect_no_message()
    assert plus.messages.empty(), f"+/broker/uptime matched {plus.messages.get().topic!r}"


@SYS
def test_v311_mqtt_4_7_2_1_wildcards_do_not_match_sys_topics(clients, names):
    check_wildcards_skip_sys(clients, names, V311)


@SYS
def test_v5_mqtt_4_7_2_1_wildcards_do_not_match_sys_topics(clients, names):
    check_wildcards_skip_sys(clients, names, V5)
