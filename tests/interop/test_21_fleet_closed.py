"""The device fleet's namespaces are closed to everyone outside the fleet: on a broker with a
registered fleet and no ACL rules at all, a password user (paho, as an attacker) gets nothing
of `/<owner>/...` or `$events/<owner>/...` through any filter (`#`, `+/#`, `/+/+/status`,
`$share/g/#`, `$events/#`, `$tree/#`), retained or live, is refused filters inside a namespace,
and writes nothing there: no publish, no retained message, no will. What lies outside the
fleet stays open to it. A rule an operator configured grants the fleet to a monitoring client,
whose persistent session keeps the fleet's messages while it is away.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from http_support import operator_call
from support import BROKER_KIND, TIMEOUT, PahoClient
from test_20_fleet import CONNECTED, DISCONNECTED, NOT_AUTHORIZED, Fleet, refused

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the device fleet is Tern's")


@pytest.fixture
def open_fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, acl=[], users=("eve",))
    yield fleet
    fleet.clients.close_all()
    fleet.broker.stop()


def user(fleet: Fleet, name: str, client_id: str, *, version: int = 5) -> PahoClient:
    client = fleet.clients.paho(client_id, version=version)
    client.client.username_pw_set(name, name)
    client.connect()
    return client


def publish_marker(fleet: Fleet) -> None:
    """Publishes a message outside the fleet: once a subscriber has it, whatever the broker
    routed to that subscriber before it has arrived too (one broker thread, in order)."""
    marker = user(fleet, "eve", "marker")
    marker.publish("news/mark", b"mark", qos=1)
    marker.close()


def test_wildcards_outside_the_fleet_get_nothing_of_it_retained_or_live(open_fleet: Fleet):
    fleet = open_fleet
    d1 = fleet.firmware("acme", "d1")
    d1.publish("/acme/d1/status", CONNECTED, qos=1, retain=True)
    eve = user(fleet, "eve", "eve")
    for topic in ["#", "+/#", "/+/+/status", "$share/g/#", "$events/#"]:
        eve.subscribe(topic, qos=1)
    tree = user(fleet, "eve", "eve-tree")
    tree.subscribe("$tree/#", qos=1)
    # The snapshot leaves the fleet out (nothing else is retained yet).
    snapshot = tree.expect_message()
    assert snapshot.topic == "$tree/**" and b"acme" not in snapshot.payload, snapshot
    # Live: the device's status, its will, another device's online event and status.
    d1.publish("/acme/d1/status", CONNECTED, qos=1, retain=True)
    d1.stop()
    fleet.firmware("acme", "d2", will=False)
    publish_marker(fleet)
    # One delivery for the overlapping # and +/#, one for $share/g/#: the marker, no more.
    assert [eve.expect_message().topic for _ in range(2)] == ["news/mark"] * 2
    # The tree view's deltas up to the one with the marker: nothing of the fleet.
    while True:
        delta = tree.expect_message()
        assert b"acme" not in delta.payload, delta
        if b"mark" in delta.payload:
            break
    eve.expect_no_message()
    # The device's owner saw it all: the namespace is closed to eve, not empty.
    console = fleet.console("acme", "acme-console")
    console.subscribe("/acme/+/status", qos=1)
    got = {console.expect_message().topic for _ in range(2)}
    assert got == {"/acme/d1/status", "/acme/d2/status"}


def test_filters_inside_the_fleet_publishes_retained_writes_and_wills_are_refused(
        open_fleet: Fleet):
    fleet = open_fleet
    d1 = fleet.firmware("acme", "d1")
    d1.publish("/acme/d1/status", CONNECTED, qos=1, retain=True)
    d1.subscribe("/acme/d1", qos=1)
    eve = user(fleet, "eve", "eve")
    for topic in ["/acme/d1/status", "/acme/#", "$share/g//acme/#", "$events/acme/#",
                  "$tree//acme/#"]:
        assert refused(eve, topic), topic
    eve.publish("/acme/d1", b"take over", qos=1)
    eve.publish("/acme/d1/status", DISCONNECTED, qos=1, retain=True)
    eve.publish("/acme/shared/firmware", b"evil", qos=1)
    eve.publish("$events/acme/d1/offline", b"{}", qos=1)
    # A will into the fleet refuses the CONNECT, with 3.1.1 as with 5.
    for version in [4, 5]:
        mallory = fleet.clients.paho(f"mallory-{version}", version=version)
        mallory.client.username_pw_set("eve", "eve")
        mallory.will_set("/acme/d1/status", DISCONNECTED, retain=True)
        mallory.connect(expect_code=NOT_AUTHORIZED)
    # Nothing reached the device, and its retained status is its own.
    d1.expect_no_message()
    console = fleet.console("acme", "acme-console")
    console.subscribe("/acme/d1/status", qos=1)
    assert console.expect_message().payload == CONNECTED
    # Outside the fleet eve is free; a topic whose owner level names no owner is no one's.
    eve.subscribe("/nobody/#", qos=1)
    eve.publish("/nobody/x", b"free", qos=1)
    assert eve.expect_message().topic == "/nobody/x"


def test_a_rule_grants_the_fleet_to_a_monitoring_client(tmp_path: Path):
    rules = [{"topic": "/#", "user": "monitor"},
             {"topic": "$events/#", "user": "monitor", "access": "subscribe"},
             {"topic": "#", "user": "eve"}]
    fleet = Fleet(tmp_path, acl=rules, users=("monitor", "eve"))
    try:
        monitor = user(fleet, "monitor", "monitor")
        monitor.subscribe("/+/+/status", qos=1)
        monitor.subscribe("$events/#", qos=1)
        fleet.firmware("acme", "d1", will=False)
        got = {monitor.expect_message().topic for _ in range(2)}
        assert got == {"/acme/d1/status", "$events/acme/d1/online"}
    finally:
        fleet.clients.close_all()
        fleet.broker.stop()


def wait_offline(fleet: Fleet, client_id: str) -> None:
    """Waits (bounded) until the broker says the session of `client_id` has no connection:
    the client's side of a DISCONNECT is no sign of it."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status, body = operator_call(fleet.broker.http_url, fleet.token, "GET",
                                     "/v1/admin/sessions")
        assert status == 200, body
        sessions = {s["client_id"]: s for s in body["sessions"]}
        if client_id in sessions and not sessions[client_id]["connected"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{client_id} is still connected")


def test_a_monitors_session_keeps_the_fleets_messages_while_it_is_away(tmp_path: Path):
    fleet = Fleet(tmp_path, acl=[{"topic": "/#", "user": "monitor"}], users=("monitor",))
    try:
        monitor = fleet.clients.paho("monitor", version=4, clean=False)
        monitor.client.username_pw_set("monitor", "monitor")
        monitor.connect()
        monitor.subscribe("/acme/+/status", qos=1)
        monitor.disconnect()
        wait_offline(fleet, "monitor")
        d1 = fleet.firmware("acme", "d1", will=False)
        d1.publish("/acme/d1/status", b'{"status":"busy"}', qos=1)
        monitor = fleet.clients.paho("monitor", version=4, clean=False)
        monitor.client.username_pw_set("monitor", "monitor")
        monitor.connect()
        got = [monitor.expect_message() for _ in range(2)]
        assert [(m.topic, m.payload) for m in got] == [
            ("/acme/d1/status", CONNECTED), ("/acme/d1/status", b'{"status":"busy"}')]
    finally:
        fleet.clients.close_all()
        fleet.broker.stop()
