"""HTTP mailboxes, driven as devices drive them with the reference client
(examples/http_device.py): a device subscribes its mailbox (its MQTT persistent session); an
MQTT publisher's messages wait in it across a broker restart and a `kill -9`; a long poll is
answered when a message arrives; messages are acknowledged cumulatively (piggybacked on the
next poll), leased and handed out again when not acknowledged, given back, rejected into the
dead letters and queued again; another key cannot read the mailbox.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any, Iterator

import pytest

import mqtt_raw
from http_support import Fleet, error_code, ok
from support import BROKER_KIND, TIMEOUT, Names

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Keys `dev1` (a device), `fleet` (an app key) and `pub-only`."""
    fleet = Fleet(tmp_path, {"d:dev1": (), "a:fleet": (), "d:pub-only": ("--publish", "mb/#")})
    yield fleet
    fleet.close()


def payloads(messages: list[dict[str, Any]]) -> list[str]:
    return [m["payload"] for m in messages]


@pytest.mark.parametrize("stop", ["restart", "kill -9"])
def test_messages_wait_in_the_mailbox_across_a_restart_and_are_acknowledged_cumulatively(
        fleet: Fleet, names: Names, stop: str):
    topic = f"mb/{names.tag}/cmd"
    dev = fleet.device()
    assert ok(dev.subscribe(f"mb/{names.tag}/#")) == {"filter": f"mb/{names.tag}/#", "qos": 1}
    fleet.publish(names, topic, b"one", b"two", b"three")
    if stop == "restart":
        fleet.broker.stop()
    else:
        fleet.broker.kill()
    fleet.start()
    dev.url = fleet.broker.http_url

    first = ok(dev.poll(limit=2))
    assert payloads(first["messages"]) == ["one", "two"]
    seqs = [m["seq"] for m in first["messages"]]
    assert seqs == sorted(seqs) and first["next_ack"] == seqs[-1]
    assert (first["waiting"], first["leased"]) == (1, 2)
    # The acknowledgement rides on the next poll: both completed, the third handed out.
    second = ok(dev.poll(ack=first["next_ack"]))
    assert payloads(second["messages"]) == ["three"]
    assert second["messages"][0]["seq"] > seqs[-1]
    assert second["leased"] == 1
    ok(dev.settle(ack=second["next_ack"]))
    # Completed for good: nothing comes back after another restart.
    fleet.broker.kill()
    fleet.start()
    dev.url = fleet.broker.http_url
    empty = ok(dev.poll())
    assert (empty["messages"], empty["leased"], empty["waiting"]) == ([], 0, 0)
    # Numbering goes on after the restart, though the mailbox was empty.
    fleet.publish(names, topic, b"four")
    assert ok(dev.poll())["messages"][0]["seq"] > second["next_ack"]


def test_a_long_poll_is_answered_when_a_message_arrives(fleet: Fleet, names: Names):
    dev = fleet.device()
    ok(dev.subscribe(f"mb/{names.tag}/#"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        # Two long polls of one mailbox: the later takes the place of the earlier, which is
        # answered at once, so once one answer is in, the other is known to be waiting.
        # (One client object each: a client remembers the request it last signed.)
        polls = [pool.submit(fleet.device().poll, wait=30) for _ in range(2)]
        done, waiting = concurrent.futures.wait(
            polls, timeout=TIMEOUT, return_when=concurrent.futures.FIRST_COMPLETED)
        assert len(done) == 1 and len(waiting) == 1, "one poll takes the other's place"
        superseded = done.pop().result()
        assert (superseded.status, error_code(superseded)) == (409, "poll_superseded")
        # A poll that does not wait, meanwhile, finds nothing and leaves the long poll waiting.
        assert ok(dev.poll())["messages"] == []
        fleet.publish(names, f"mb/{names.tag}/cmd", b"wake up")
        answer = waiting.pop().result(timeout=TIMEOUT)
    assert payloads(ok(answer)["messages"]) == ["wake up"]
    # A long poll that finds nothing is answered empty at its deadline.
    empty = ok(dev.poll(wait=1, ack=answer.json()["next_ack"]))
    assert empty["messages"] == []


def test_unacknowledged_messages_are_handed_out_again_after_their_lease(fleet: Fleet,
                                                                       names: Names):
    dev = fleet.device()
    ok(dev.subscribe(f"mb/{names.tag}/#"))
    fleet.publish(names, f"mb/{names.tag}/cmd", b"do it")
    first = ok(dev.poll(lease=1))
    assert [m["deliveries"] for m in first["messages"]] == [1]
    # Leased: not handed out again at once...
    assert ok(dev.poll())["messages"] == []
    # ...but once the lease ends, to a poll that waits for it.
    again = ok(dev.poll(wait=20))
    assert payloads(again["messages"]) == ["do it"]
    assert again["messages"][0]["seq"] == first["messages"][0]["seq"]
    assert again["messages"][0]["deliveries"] == 2


def test_nack_reject_and_the_dead_letters(fleet: Fleet, names: Names):
    dev = fleet.device()
    ok(dev.subscribe(f"mb/{names.tag}/#"))
    fleet.publish(names, f"mb/{names.tag}/cmd", b"again", b"poison")
    handed = ok(dev.poll())["messages"]
    again, poison = (m["seq"] for m in handed)
    assert ok(dev.settle(nack=[again], reject=[poison])) == {
        "acked": 0, "nacked": 1, "rejected": 1}
    assert payloads(ok(dev.poll())["messages"]) == ["again"]
    dead = ok(dev.dead_letters())["messages"]
    assert [(m["seq"], m["payload"]) for m in dead] == [(poison, "poison")]
    assert ok(dev.requeue()) == {"requeued": 1}
    assert ok(dev.dead_letters())["messages"] == []
    back = ok(dev.poll())["messages"]
    assert payloads(back) == ["poison"] and back[0]["seq"] > poison


def test_subscriptions_are_listed_and_removed(fleet: Fleet, names: Names):
    dev = fleet.device()
    base = f"mb/{names.tag}"
    ok(dev.subscribe(f"{base}/+/status", qos=2))
    ok(dev.subscribe(f"{base}/cmd/#"))
    assert ok(dev.subscriptions())["subscriptions"] == [
        {"filter": f"{base}/+/status", "qos": 2}, {"filter": f"{base}/cmd/#", "qos": 1}]
    one = dev.request("GET", dev._filter_path(f"{base}/cmd/#"))
    assert ok(one) == {"filter": f"{base}/cmd/#", "qos": 1}
    assert ok(dev.unsubscribe(f"{base}/cmd/#")) == {"filter": f"{base}/cmd/#", "removed": True}
    missing = dev.request("GET", dev._filter_path(f"{base}/cmd/#"))
    assert (missing.status, error_code(missing)) == (404, "not_subscribed")
    fleet.publish(names, f"{base}/cmd/x", b"not for me")
    fleet.publish(names, f"{base}/d1/status", b"for me")
    assert payloads(ok(dev.poll())["messages"]) == ["for me"]


def test_another_key_cannot_read_the_mailbox(fleet: Fleet, names: Names):
    dev = fleet.device()
    ok(dev.subscribe(f"mb/{names.tag}/#"))
    fleet.publish(names, f"mb/{names.tag}/cmd", b"private")
    # The app key speaking for the same client identifier is another identity.
    app = fleet.device("a:fleet", client="dev1")
    for response in (app.poll(), app.subscriptions(), app.dead_letters()):
        assert (response.status, error_code(response)) == (403, "access_denied")
    # A key that may only publish may not subscribe; without a mailbox there is nothing to poll.
    limited = fleet.device("d:pub-only")
    denied = limited.subscribe(f"mb/{names.tag}/#")
    assert (denied.status, error_code(denied)) == (403, "acl_denied")
    nothing = limited.poll()
    assert (nothing.status, error_code(nothing)) == (404, "no_mailbox")
    assert payloads(ok(dev.poll())["messages"]) == ["private"]


def test_the_same_client_alternating_mqtt_and_http_sees_one_queue(fleet: Fleet, names: Names):
    dev = fleet.device()
    topic = f"mb/{names.tag}/cmd"
    ok(dev.subscribe(f"mb/{names.tag}/#"))
    fleet.publish(names, topic, b"a")

    def over_mqtt(acknowledge: bool) -> bytes:
        """Connects as the device's key (the same identity: its session is the mailbox), takes
        the message waiting, acknowledges it or not, and leaves (the broker has handled all of
        it once the connection is closed)."""
        mqtt = fleet.clients.raw()
        ack = mqtt.connect("dev1", version=mqtt_raw.V5, clean=False,
                           username="d:dev1", password=dev.mqtt_password().encode(),
                           properties={mqtt_raw.SESSION_EXPIRY_INTERVAL: 3600})
        assert (ack.code, ack.session_present) == (0, True)
        busy = dev.poll()
        assert (busy.status, error_code(busy)) == (409, "mailbox_in_use")
        message = mqtt_raw.parse_publish(mqtt.expect_packet(mqtt_raw.PUBLISH), mqtt_raw.V5)
        if acknowledge:
            mqtt.send(mqtt_raw.puback(message.packet_id, version=mqtt_raw.V5))
        mqtt.send(mqtt_raw.disconnect(version=mqtt_raw.V5))
        mqtt.expect_closed()
        return message.payload

    # Over MQTT, the subscription made over HTTP delivers, and MQTT's acknowledgement completes.
    assert over_mqtt(acknowledge=True) == b"a"
    fleet.publish(names, topic, b"b")
    # Over HTTP: only what MQTT did not acknowledge.
    assert payloads(ok(dev.poll(lease=1))["messages"]) == ["b"]
    # Left unacknowledged there, it is the MQTT client's when it comes back...
    assert over_mqtt(acknowledge=False) == b"b"
    # ...and the poller's again once its lease ends (a lease is the mailbox's, whichever way
    # the device came since), until someone acknowledges it.
    again = ok(dev.poll(wait=20))
    assert payloads(again["messages"]) == ["b"]
    ok(dev.settle(ack=again["next_ack"]))
    assert ok(dev.poll())["leased"] == 0
    # A wrong key password is refused as any bad credential.
    stranger = fleet.clients.raw()
    refused = stranger.connect("dev1", version=mqtt_raw.V5, username="d:dev1",
                               password=b"hk1:0:" + b"00" * 32)
    assert refused.code == 0x86
