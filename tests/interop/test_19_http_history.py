"""Mailbox history, replay and reset, and mailboxes' own limits, driven as devices drive them
with the reference client (examples/http_device.py): `[[history]]` keeps a topic's last
messages across a `kill -9`; a subscription replays the last N; a reset goes to the latest,
the last N, a sequence number or a time; a mailbox keeps QoS 0 messages, and a full one
(the limits of its client class) drops its oldest QoS 0 first, then refuses, logging it;
another key cannot reset the mailbox.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from http_support import Fleet, Response, error_code, ok
from support import BROKER_KIND, Names

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")

OPTIONS = {
    "history": [{"filter": "hist/#", "max_messages": 5, "max_age_secs": 3600}],
    "http": {"mailbox_class": [
        {"clients": "tiny-", "queued_count_max": 2, "queued_bytes_max": 65536}]},
}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Keeps `hist/#`; keys `dev1`, `tiny-1` (a class of small mailboxes) and an app key."""
    fleet = Fleet(tmp_path, {"d:dev1": (), "d:tiny-1": (), "a:fleet": ()}, OPTIONS)
    yield fleet
    fleet.close()


def payloads(response: Response) -> list[str]:
    return [m["payload"] for m in ok(response)["messages"]]


def test_history_survives_kill_9_and_a_subscription_replays_the_last_n(fleet: Fleet,
                                                                        names: Names):
    topic = f"hist/{names.tag}/t"
    fleet.publish(names, topic, *(f"m{i}".encode() for i in range(1, 8)))
    fleet.broker.kill()
    fleet.start()
    dev = fleet.device()
    answer = ok(dev.subscribe(topic, replay=3))
    assert answer == {"filter": topic, "qos": 1, "replayed": 3}
    assert payloads(dev.poll()) == ["m5", "m6", "m7"]
    # Only five were kept: asking for ten gives those five.
    reset = ok(dev.reset(replay=10))
    assert reset == {"completed": 3, "queued": 5}
    replayed = ok(dev.poll(limit=10))["messages"]
    assert [m["payload"] for m in replayed] == ["m3", "m4", "m5", "m6", "m7"]
    # To a sequence number: what is below it is complete, the rest handed out again at once.
    assert ok(dev.reset(seq=replayed[3]["seq"]))["completed"] == 3
    assert payloads(dev.poll()) == ["m6", "m7"]
    # To the latest: nothing left.
    assert ok(dev.reset(latest=True))["completed"] == 2
    assert ok(dev.poll())["messages"] == []
    # To a time: an hour ago, all five kept; in the future, none.
    now = int(time.time())
    assert ok(dev.reset(since=now - 3600)) == {"completed": 0, "queued": 5}
    assert ok(dev.reset(since=now + 600)) == {"completed": 5, "queued": 0}
    # A topic without history replays nothing.
    other = f"nohist/{names.tag}"
    fleet.publish(names, other, b"x")
    assert ok(dev.subscribe(other, replay=5))["replayed"] == 0


def test_a_reset_names_one_target_and_belongs_to_the_mailbox_owner(fleet: Fleet, names: Names):
    dev = fleet.device()
    ok(dev.subscribe(f"hist/{names.tag}/#"))
    both = dev.request("POST", "/v1/mbox/reset", b'{"to": "latest", "replay": 2}')
    assert (both.status, error_code(both)) == (400, "bad_request")
    too_many = dev.reset(replay=100_000)
    assert (too_many.status, error_code(too_many)) == (400, "bad_request")
    # The app key speaking for the same client identifier is another identity.
    app = fleet.device("a:fleet", client="dev1")
    denied = app.reset(latest=True)
    assert (denied.status, error_code(denied)) == (403, "access_denied")
    fleet.publish(names, f"hist/{names.tag}/t", b"kept")
    assert payloads(dev.poll()) == ["kept"]


def test_a_mailbox_keeps_qos0_and_when_full_drops_the_oldest_qos0_first(fleet: Fleet,
                                                                        names: Names):
    tiny = fleet.device("d:tiny-1")
    topic = f"mb/{names.tag}/t"
    ok(tiny.subscribe(f"mb/{names.tag}/#", qos=2))
    fleet.broker.mark()
    fleet.publish(names, topic, b"q0-a", b"q0-b", qos=0)
    # Full (2, its class's limit): each QoS 1 message takes the place of the oldest QoS 0.
    fleet.publish(names, topic, b"q1-c", b"q1-d", qos=1)
    fleet.broker.wait_for_output(r'message for "tiny-1" dropped: its mailbox is full')
    # Full of QoS 1: a new message is refused.
    fleet.publish(names, topic, b"q0-e", qos=0)
    polled = ok(tiny.poll())
    assert [(m["payload"], m["qos"]) for m in polled["messages"]] == [("q1-c", 1), ("q1-d", 1)]
    # Room again: QoS 0 messages wait in the mailbox, handed out as QoS 0.
    ok(tiny.settle(ack=polled["next_ack"]))
    fleet.publish(names, topic, b"q0-f", qos=0)
    assert [(m["payload"], m["qos"]) for m in ok(tiny.poll())["messages"]] == [("q0-f", 0)]
