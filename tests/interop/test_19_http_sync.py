"""`POST /v1/sync`, driven as a device drives it with the reference client
(examples/http_device.py): one request per wake acknowledges, publishes, reads what changed
in its key/value subtree and receives, in that order; the same bytes sent again (a device that
lost its answer) get the same answer with `Tern-Replayed: 1` and no second effect, across a
restart and a `kill -9` too; a sync that waits for messages has already taken effect, and a
retry meanwhile is told it is in progress; another key cannot acknowledge or receive from the
mailbox, and nothing of its sync is applied.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any, Iterator

import pytest

from http_support import Fleet, error_code, ok
from support import BROKER_KIND, TIMEOUT, Names

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Keys `dev1` and `dev2` (devices) and `fleet` (an app key)."""
    fleet = Fleet(tmp_path, {"d:dev1": (), "d:dev2": (), "a:fleet": ()})
    yield fleet
    fleet.close()


def payloads(body: dict[str, Any]) -> list[str]:
    return [m["payload"] for m in body["messages"]]


def test_a_sync_does_a_whole_wake_in_one_request(fleet: Fleet, names: Names):
    base = f"sy/{names.tag}"
    dev = fleet.device()
    ok(dev.subscribe(f"{base}/cmd/#"))
    fleet.publish(names, f"{base}/cmd/led", b"on", b"off")
    watcher = fleet.clients.subscriber(names.client("w"), f"{base}/data/#", qos=1)
    fleet.clients.connected(names.client("cfg")).publish(
        f"{base}/cfg/interval", b"60", qos=1, retain=True)
    ok(dev.kv_put(f"{base}/cfg/mode", b"eco"))

    first = ok(dev.sync(publish=[{"topic": f"{base}/data/t", "payload": 21.5, "qos": 1}],
                        kv_prefix=f"{base}/cfg/", receive={"limit": 10}, next_wake=900))
    assert first["published"] == [{"i": 0, "ok": True, "qos": 1, "matched": 1}]
    assert watcher.expect_message().payload == b"21.5"
    kv = first["kv"]
    assert kv["full"] is True and kv["deleted"] == []
    assert {e["key"]: e["payload"] for e in kv["changed"]} == {
        f"{base}/cfg/interval": "60", f"{base}/cfg/mode": "eco"}
    assert payloads(first) == ["on", "off"] and first["next_ack"] == dev.owed_ack
    assert abs(first["time"] - int(__import__("time").time())) < 60

    # Meanwhile the console changes one setting and removes the other.
    console = fleet.clients.connected(names.client("console"))
    console.publish(f"{base}/cfg/interval", b"30", qos=1, retain=True)
    console.publish(f"{base}/cfg/mode", b"", qos=1, retain=True)
    # The next wake acknowledges what the last one received and reads only what changed.
    second = ok(dev.sync(kv_prefix=f"{base}/cfg/", kv_since=kv["etag"], receive={}))
    assert [(e["key"], e["payload"]) for e in second["kv"]["changed"]] == [
        (f"{base}/cfg/interval", "30")]
    assert [d["key"] for d in second["kv"]["deleted"]] == [f"{base}/cfg/mode"]
    assert second["kv"]["full"] is False
    assert (second["messages"], second["leased"], second["waiting"]) == ([], 0, 0)


@pytest.mark.parametrize("stop", ["none", "restart", "kill -9"])
def test_a_sync_sent_again_is_answered_again_and_never_applied_twice(fleet: Fleet,
                                                                    names: Names, stop: str):
    topic = f"sy/{names.tag}/data"
    counter = fleet.device("d:dev2")
    ok(counter.subscribe(topic))
    dev = fleet.device()
    answer = dev.sync(publish=[{"topic": topic, "payload": "once", "qos": 1}])
    assert ok(answer)["published"][0]["ok"] and not answer.replayed
    sent = (dev.last_body, dict(dev.last or {}))
    if stop == "restart":
        fleet.broker.stop()
    elif stop == "kill -9":
        fleet.broker.kill()
    if stop != "none":
        fleet.start()
        dev.url = counter.url = fleet.broker.http_url
    again = dev.resend("POST", "/v1/sync", sent[0])
    assert (again.status, again.body, again.replayed) == (200, answer.body, True)
    assert payloads(ok(counter.poll())) == ["once"], "published once"
    # Another request under the same nonce is not the same request.
    other = dev.signed_headers("POST", "/v1/sync", b"{}", nonce=sent[1]["Tern-Nonce"],
                               when=sent[1]["Tern-Time"])
    reused = dev.send("POST", "/v1/sync", other, b"{}")
    assert (reused.status, error_code(reused)) == (409, "nonce_reused")


def test_a_waiting_sync_has_taken_effect_and_its_retry_meanwhile_is_in_progress(
        fleet: Fleet, names: Names):
    base = f"sy/{names.tag}"
    dev = fleet.device()
    ok(dev.subscribe(f"{base}/cmd/#"))
    watcher = fleet.clients.subscriber(names.client("w"), f"{base}/data/#", qos=1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(dev.sync, publish=[{"topic": f"{base}/data/t", "payload": "up"}],
                              receive={"wait": 30})
        # Published before it waits: the exchange has begun.
        assert watcher.expect_message().payload == b"up"
        retry = dev.resend("POST", "/v1/sync", dev.last_body)
        assert (retry.status, error_code(retry)) == (409, "request_in_progress")
        fleet.publish(names, f"{base}/cmd/led", b"blink")
        answer = waiting.result(timeout=TIMEOUT)
    body = ok(answer)
    assert payloads(body) == ["blink"]
    assert body["published"][0]["ok"] is True
    again = dev.resend("POST", "/v1/sync", dev.last_body)
    assert (again.status, again.body, again.replayed) == (200, answer.body, True)
    watcher.expect_no_message()


def test_another_key_cannot_use_the_mailbox_and_nothing_of_its_sync_is_applied(
        fleet: Fleet, names: Names):
    base = f"sy/{names.tag}"
    dev = fleet.device()
    ok(dev.subscribe(f"{base}/#"))
    fleet.publish(names, f"{base}/cmd", b"private")
    # The app key speaking for the same client identifier is another identity.
    app = fleet.device("a:fleet", client="dev1")
    denied = app.sync(publish=[{"topic": f"{base}/data", "payload": "forged"}],
                      receive={"limit": 10}, ack=1_000_000)
    assert (denied.status, error_code(denied)) == (403, "access_denied")
    # Its publish was not made, and the device's message was neither acknowledged nor leased.
    assert payloads(ok(dev.poll())) == ["private"]
    # A device without a mailbox that asks to receive is refused before anything happens.
    loner = fleet.device("d:dev2")
    refused = loner.sync(publish=[{"topic": f"{base}/data", "payload": "lost"}],
                         receive={"limit": 1})
    assert (refused.status, error_code(refused)) == (404, "no_mailbox")
    assert ok(dev.poll())["messages"] == [], "nothing new arrived in the device's mailbox"
