"""JSON tree views (docs/trees.md), a Tern extension made of standard MQTT packets only: a
``$tree/<filter>`` subscription gets a snapshot of the matching retained messages as one JSON
object, then batched deltas; a PUBLISH to ``$tree/...`` is spread into one message per key.
Checked with paho-mqtt (3.1.1 and 5.0), raw packets and the mosquitto command-line clients.
The numbers in test names are the numbered points of docs/trees.md; `tern pub`/`tern sub` are
checked too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

import mqtt_raw
from mqtt_raw import V5, V311
from support import (BROKER_KIND, TIMEOUT, Clients, Message, Names, PahoClient,
                     subscribe_properties)

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="$tree/ views are a Tern extension")

VERSIONS = [V311, V5]


def tree_of(message: Message) -> dict:
    return json.loads(message.payload)


def kind_of(message: Message) -> str | None:
    return dict(message.user_properties).get("tree")


def retained_publisher(clients: Clients, names: Names, version: int,
                       values: dict[str, bytes]) -> PahoClient:
    sender = clients.connected(names.client("pub"), version=version)
    for topic, payload in values.items():
        sender.publish(topic, payload, qos=1, retain=True)
    return sender


# ---------------------------------------------------------------------------
# 1 and 3: subscribing to a tree, the snapshot after SUBACK
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_1_3_snapshot_is_keyed_by_wildcard_levels(clients, names, version):
    base = names.topic()
    retained_publisher(clients, names, version, {
        f"{base}/light/bedroom/is_on": b"1",
        f"{base}/light/livingroom/is_on": b"0",
        f"{base}/light/bedroom/brightness": b"55",
    })
    watcher = clients.connected(names.client("sub"), version=version)
    watcher.subscribe(f"$tree/{base}/light/+/is_on", qos=1)
    message = watcher.expect_message()
    assert message.topic == f"$tree/{base}/light/*/is_on"
    assert tree_of(message) == {"bedroom": 1, "livingroom": 0}
    assert message.retain, "the snapshot is flagged like a retained message"
    assert message.qos == 1
    if version == V5:
        assert kind_of(message) == "snapshot"
    watcher.subscribe(f"$tree/{base}/light/+/+", qos=0)
    assert tree_of(watcher.expect_message()) == {
        "bedroom": {"is_on": 1, "brightness": 55}, "livingroom": {"is_on": 0}}
    watcher.subscribe(f"$tree/{base}/#", qos=0)
    message = watcher.expect_message()
    assert message.topic == f"$tree/{base}/**"
    assert tree_of(message) == {"light": {
        "bedroom": {"is_on": 1, "brightness": 55}, "livingroom": {"is_on": 0}}}
    watcher.subscribe(f"$tree/{base}/light/bedroom/is_on", qos=0)
    assert tree_of(watcher.expect_message()) == {"is_on": 1}
    watcher.expect_no_message()


def test_1_v5_subscription_identifier_and_tree_property(clients, names):
    base = names.topic()
    sender = retained_publisher(clients, names, V5, {f"{base}/a": b"1"})
    watcher = clients.connected(names.client("sub"), version=V5)
    watcher.subscribe(f"$tree/{base}/+", qos=0,
                      properties=subscribe_properties(SubscriptionIdentifier=42))
    snapshot = watcher.expect_message()
    assert (snapshot.properties.SubscriptionIdentifier, kind_of(snapshot)) == ([42], "snapshot")
    sender.publish(f"{base}/b", b"2")
    delta = watcher.expect_message()
    assert (delta.properties.SubscriptionIdentifier, kind_of(delta)) == ([42], "delta")
    assert (tree_of(delta), delta.retain) == ({"b": 2}, False)


def test_3_v5_retain_handling(clients, names):
    base = names.topic()
    sender = retained_publisher(clients, names, V5, {f"{base}/a": b"1"})
    watcher = clients.connected(names.client("sub"), version=V5)
    watcher.subscribe(f"$tree/{base}/+", options=SubscribeOptions(qos=0, retainHandling=2))
    watcher.expect_no_message()
    # Retain Handling 1 on an existing subscription: no snapshot either.
    watcher.subscribe(f"$tree/{base}/+", options=SubscribeOptions(qos=0, retainHandling=1))
    watcher.expect_no_message()
    sender.publish(f"{base}/a", b"3", retain=True)
    assert tree_of(watcher.expect_message()) == {"a": 3}, "the subscription is live"
    fresh = clients.connected(names.client("new"), version=V5)
    fresh.subscribe(f"$tree/{base}/+", options=SubscribeOptions(qos=0, retainHandling=1))
    assert tree_of(fresh.expect_message()) == {"a": 3}


# ---------------------------------------------------------------------------
# 2: values, and null on clearing
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_2_values_and_null_on_clearing(clients, names, version):
    base = names.topic()
    sender = retained_publisher(clients, names, version, {
        f"{base}/json": b'{"x": [1, 2]}',
        f"{base}/text": b"on",
        f"{base}/bin": bytes([0xFF, 0x00, 0x80]),
    })
    watcher = clients.connected(names.client("sub"), version=version)
    watcher.subscribe(f"$tree/{base}/+", qos=0)
    assert tree_of(watcher.expect_message()) == {
        "json": {"x": [1, 2]}, "text": "on", "bin": {"$base64": "/wCA"}}
    sender.publish(f"{base}/text", b"", qos=1, retain=True)
    delta = watcher.expect_message()
    assert (tree_of(delta), delta.retain) == ({"text": None}, False)
    watcher.expect_no_message()


# ---------------------------------------------------------------------------
# 4: batched deltas
# ---------------------------------------------------------------------------

@pytest.mark.broker_config({"trees": {"window_millis": 200}})
@pytest.mark.parametrize("version", VERSIONS)
def test_4_changes_in_one_window_merge_into_one_delta(clients, names, broker, version):
    base = names.topic()
    watcher = clients.connected(names.client("sub"), version=version)
    watcher.subscribe(f"$tree/{base}/+/temp", qos=2)
    assert tree_of(watcher.expect_message()) == {}
    # One write holding five publishes: one read batch of the broker, well inside the window.
    raw = clients.raw_connected(names.client("raw"), version=version)
    burst = b"".join([
        mqtt_raw.publish(f"{base}/a/temp", b"20", version=version),
        mqtt_raw.publish(f"{base}/b/temp", b"18", qos=1, packet_id=1, version=version),
        mqtt_raw.publish(f"{base}/a/temp", b"21", version=version),
        mqtt_raw.publish(f"{base}/a/other", b"x", version=version),
        mqtt_raw.publish(f"{base}/a/temp", b"22", version=version),
    ])
    raw.send(burst)
    raw.expect_packet(mqtt_raw.PUBACK)
    delta = watcher.expect_message()
    assert tree_of(delta) == {"a": 22, "b": 18}, "one delta, last value per key"
    assert delta.qos == 1, "min(granted 2, highest merged 1)"
    watcher.expect_no_message()
    raw.send(mqtt_raw.publish(f"{base}/c/temp", b"5", version=version))
    delta = watcher.expect_message()
    assert (tree_of(delta), delta.qos) == ({"c": 5}, 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_4_non_retained_publishes_reach_the_tree_as_deltas(clients, names, version):
    base = names.topic()
    watcher = clients.connected(names.client("sub"), version=version)
    watcher.subscribe(f"$tree/{base}/+", qos=1)
    assert tree_of(watcher.expect_message()) == {}
    sender = clients.connected(names.client("pub"), version=version)
    sender.publish(f"{base}/k", b'"v"', qos=1)
    message = watcher.expect_message()
    assert (tree_of(message), message.retain, message.qos) == ({"k": "v"}, False, 1)


# ---------------------------------------------------------------------------
# 5: publishing a tree
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_5_tree_publish_is_spread_per_key(clients, names, version):
    base = names.topic()
    plain = clients.subscriber(names.client("plain"), f"{base}/#", qos=2, version=version)
    sender = clients.connected(names.client("pub"), version=version)
    sender.publish(f"$tree/{base}/light/bedroom/*",
                   b'{"is_on": 1, "brightness": 55, "color": "#FFFFFF"}', qos=1, retain=True)
    got = sorted((m.topic, m.payload, m.qos) for m in
                 (plain.expect_message() for _ in range(3)))
    assert got == [(f"{base}/light/bedroom/brightness", b"55", 1),
                   (f"{base}/light/bedroom/color", b"#FFFFFF", 1),
                   (f"{base}/light/bedroom/is_on", b"1", 1)]
    plain.expect_no_message()
    # Retained one by one; `**` spreads nested objects over several levels.
    sender.publish(f"$tree/{base}/**", b'{"site": {"a": {"temp": 20}}}', qos=0, retain=True)
    assert plain.expect_message().topic == f"{base}/site/a/temp"
    late = clients.subscriber(names.client("late"), f"{base}/#", qos=0, version=version)
    got = sorted((m.topic, m.payload, m.retain) for m in (late.expect_message() for _ in range(4)))
    assert [t for t, _, _ in got] == [f"{base}/light/bedroom/brightness",
                                      f"{base}/light/bedroom/color",
                                      f"{base}/light/bedroom/is_on", f"{base}/site/a/temp"]
    assert all(retain for _, _, retain in got)


def test_5_v5_bad_tree_payload_is_refused_with_0x99(clients, names):
    base = names.topic()
    plain = clients.subscriber(names.client("plain"), f"{base}/#", qos=0, version=V5)
    raw = clients.raw_connected(names.client("raw"), version=V5)
    for packet_id, (topic, payload) in enumerate([
            (f"$tree/{base}/*", b"[1, 2]"),
            (f"$tree/{base}/*", b"not json"),
            (f"$tree/{base}/*/*", b'{"ok": {"x": 1}, "bad": 2}'),
    ], start=1):
        raw.send(mqtt_raw.publish(topic, payload, qos=1, packet_id=packet_id, version=V5))
        ack = raw.expect_packet(mqtt_raw.PUBACK)
        assert ack.body[:3] == bytes([0, packet_id, 0x99]), (topic, payload, ack)
    raw.send(mqtt_raw.publish(f"$tree/{base}/*", b"7", qos=2, packet_id=9, version=V5))
    assert raw.expect_packet(mqtt_raw.PUBREC).body[:3] == bytes([0, 9, 0x99])
    plain.expect_no_message()


def test_5_v311_bad_tree_payload_is_dropped_and_logged(clients, names, broker):
    base = names.topic()
    plain = clients.subscriber(names.client("plain"), f"{base}/#", qos=0, version=V311)
    sender = clients.connected(names.client("pub"), version=V311)
    topic = f"$tree/{base}/*"
    sender.publish(topic, b"[1, 2]", qos=1)  # acknowledged as usual: 3.1.1 has no reason codes
    plain.expect_no_message()
    deadline = time.monotonic() + TIMEOUT
    while not any("refused" in line and topic in line for line in list(broker.output)):
        assert time.monotonic() < deadline, f"no log line for the refusal:\n{broker.output_tail()}"
        time.sleep(0.05)  # polling the log for a condition, with a deadline
    assert sender.is_connected()


# ---------------------------------------------------------------------------
# mosquitto_sub / mosquitto_pub
# ---------------------------------------------------------------------------

needs_mosquitto_clients = pytest.mark.skipif(
    not (shutil.which("mosquitto_sub") and shutil.which("mosquitto_pub")
         and shutil.which("stdbuf")),
    reason="mosquitto_sub / mosquitto_pub (or stdbuf) not installed: run "
           "scripts/setup-test-deps.sh")


@needs_mosquitto_clients
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_1_5_mosquitto_clients(broker, names, version):
    base = names.topic()
    host, port = broker.host, str(broker.port)
    subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-V", version, "-r", "-q", "1",
                    "-t", f"$tree/{base}/*", "-m", '{"a": 1, "b": "x"}'],
                   check=True, timeout=TIMEOUT)
    sub = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", host, "-p", port, "-V", version,
         "-t", f"$tree/{base}/+", "-C", "2", "-W", "10", "-F", "%t|%r|%p"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert sub.stdout is not None
    # Each read is bounded: mosquitto_sub exits after -W 10 seconds at the latest.
    first = sub.stdout.readline().rstrip("\n")
    try:
        topic, retain, payload = first.split("|", 2)
        assert (topic, retain, json.loads(payload)) == (f"$tree/{base}/*", "1",
                                                        {"a": 1, "b": "x"}), first
        subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-V", version,
                        "-t", f"{base}/b", "-m", "y"], check=True, timeout=TIMEOUT)
        second = sub.stdout.readline().rstrip("\n")
        topic, retain, payload = second.split("|", 2)
        assert (topic, retain, json.loads(payload)) == (f"$tree/{base}/*", "0", {"b": "y"})
        assert sub.wait(timeout=TIMEOUT) == 0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(timeout=TIMEOUT)


# ---------------------------------------------------------------------------
# 6: large snapshots are built in rounds; pending deltas are bounded
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_6_large_snapshot_converges_with_changes_made_while_it_is_built(clients, names, version):
    base = names.topic()
    count = 10_000  # several rounds of 2,048 topics
    raw = clients.raw_connected(names.client("raw"), version=version)
    raw.send(b"".join(mqtt_raw.publish(f"{base}/s{n:05}/temp", b"%d" % (n % 40), retain=True,
                                       version=version) for n in range(count)))
    raw.send(mqtt_raw.publish(f"{base}/loaded", b"", qos=1, packet_id=1, version=version))
    raw.expect_packet(mqtt_raw.PUBACK)  # everything before it has been handled
    watcher = clients.connected(names.client("sub"), version=version)
    watcher.subscribe(f"$tree/{base}/+/temp", qos=1)
    # Changes right behind the SUBSCRIBE, while the snapshot is still being laid out.
    raw.send(mqtt_raw.publish(f"{base}/s00000/temp", b"100", retain=True, version=version)
             + mqtt_raw.publish(f"{base}/s09999/temp", b"", retain=True, version=version)
             + mqtt_raw.publish(f"{base}/new/temp", b"7", retain=True, version=version))
    snapshot = watcher.expect_message()
    assert snapshot.retain and snapshot.topic == f"$tree/{base}/*/temp"
    state = tree_of(snapshot)
    assert len(state) >= count - 1, len(state)
    # Apply deltas until the three changes are all seen.
    want = {"s00000": 100, "s09999": None, "new": 7}
    while any(state.get(k, "absent") != v for k, v in want.items()):
        delta = watcher.expect_message()
        assert not delta.retain
        state.update(tree_of(delta))
    expected = {f"s{n:05}": n % 40 for n in range(count)} | want
    assert state == expected


@pytest.mark.broker_config({"trees": {"window_millis": 60_000},
                            "limits": {"queued_count_max": 3}})
def test_6_pending_delta_is_bounded(clients, names, broker):
    """With a one-minute window, a delta still goes out as soon as it holds the queue limit."""
    base = names.topic()
    watcher = clients.connected(names.client("sub"), version=V5)
    watcher.subscribe(f"$tree/{base}/+", qos=0)
    assert tree_of(watcher.expect_message()) == {}
    sender = clients.connected(names.client("pub"), version=V5)
    for n in range(4):
        sender.publish(f"{base}/k{n}", b"%d" % n, qos=1)
    assert tree_of(watcher.expect_message()) == {"k0": 0, "k1": 1, "k2": 2}
    watcher.expect_no_message()


# ---------------------------------------------------------------------------
# 5 with ACLs: every spread topic is checked; one denial refuses the whole publish
# ---------------------------------------------------------------------------

@pytest.mark.broker_config({"acl": [{"topic": "ok/#"}]})
@pytest.mark.parametrize("version", VERSIONS)
def test_5_acl_denial_inside_a_tree_publish_refuses_it_whole(clients, names, broker, version):
    tag = names.tag
    plain = clients.subscriber(names.client("plain"), f"ok/{tag}/#", qos=0, version=version)
    raw = clients.raw_connected(names.client("raw"), version=version)
    # Allowed: only the spread topics are checked, not the $tree/ topic itself.
    raw.send(mqtt_raw.publish(f"$tree/ok/{tag}/*", b'{"a": 1}', qos=1, packet_id=1,
                              version=version))
    assert raw.expect_packet(mqtt_raw.PUBACK).body[:2] == bytes([0, 1])
    message = plain.expect_message()
    assert (message.topic, message.payload) == (f"ok/{tag}/a", b"1")
    # One of two topics denied: neither is published.
    raw.send(mqtt_raw.publish(f"$tree/*/{tag}/x", b'{"ok": 1, "no": 2}', qos=1, packet_id=2,
                              version=version))
    ack = raw.expect_packet(mqtt_raw.PUBACK)
    if version == V5:
        assert ack.body[:3] == bytes([0, 2, 0x87]), ack
    else:
        assert ack.body == bytes([0, 2]), ack
    plain.expect_no_message()
    # A tree subscription is checked by its inner filter.
    raw.send(mqtt_raw.subscribe(3, f"$tree/no/{tag}/+", version=version))
    suback = raw.expect_packet(mqtt_raw.SUBACK)
    assert suback.body[-1] == (0x87 if version == V5 else 0x80), suback
    watcher = clients.connected(names.client("sub"), version=version)
    watcher.subscribe(f"$tree/ok/{tag}/+", qos=0)
    assert tree_of(watcher.expect_message()) == {}


@pytest.mark.parametrize("version", ["311", "5"])
def test_1_5_tern_clients(broker, names, version):
    """`tern pub` publishes a tree, `tern sub` receives its snapshot and a delta."""
    tern = str(Path(os.environ.get("TERN_BIN", Path(__file__).resolve().parents[2]
                                   / "target/debug/tern")))
    base = names.topic()
    connect = ["-h", broker.host, "-p", str(broker.port), "-V", version]
    subprocess.run([tern, "pub", *connect, "-r", "-q", "1", "-t", f"$tree/{base}/*",
                    "-m", '{"a": 1, "b": "x"}'], check=True, timeout=TIMEOUT)
    sub = subprocess.Popen([tern, "sub", *connect, "-t", f"$tree/{base}/+", "-v", "-C", "2",
                            "-W", "10"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    try:
        # Each read is bounded: tern sub exits after -W 10 seconds at the latest.
        topic, payload = sub.stdout.readline().rstrip("\n").split(" ", 1)
        assert (topic, json.loads(payload)) == (f"$tree/{base}/*", {"a": 1, "b": "x"})
        subprocess.run([tern, "pub", *connect, "-t", f"{base}/b", "-m", "y"], check=True,
                       timeout=TIMEOUT)
        topic, payload = sub.stdout.readline().rstrip("\n").split(" ", 1)
        assert (topic, json.loads(payload)) == (f"$tree/{base}/*", {"b": "y"})
        assert sub.wait(timeout=TIMEOUT) == 0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(timeout=TIMEOUT)
