"""Key/value over retained messages, driven as a device drives it with the reference client
(examples/http_device.py): an entry is a retained message (what a PUT sets, MQTT subscribers
get, and what MQTT retains, a GET reads); ETags, `If-Match` compare-and-set (412),
`If-None-Match: *` create-only; a listing of a subtree, and of what changed since an ETag,
deletions included, across a `kill -9`; a missing key is 404 or, asked, 204; a key outside
the key's permissions is refused; a precondition cannot be stripped on the way (it is signed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from http_support import Fleet, error_code, ok
from support import BROKER_KIND, Names

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Keys `dev1` and `dev2`, each limited to `kv/<its client>/#`."""
    fleet = Fleet(tmp_path, {"d:dev1": ("--both", "kv/%c/#"), "d:dev2": ("--both", "kv/%c/#")})
    yield fleet
    fleet.close()


def test_entries_are_retained_messages_with_etags_and_compare_and_set(fleet: Fleet,
                                                                    names: Names):
    dev = fleet.device()
    key = f"kv/dev1/{names.tag}/interval"
    created = dev.kv_put(key, b"60", create_only=True, content_type="text/plain")
    etag = ok(created)["etag"]
    assert created.headers["etag"] == f'"{etag}"'
    # An MQTT subscriber gets it as the topic's retained message.
    late = fleet.clients.subscriber(names.client("late"), key, qos=1)
    message = late.expect_message()
    assert (message.payload, message.retain) == (b"60", True)
    # Created once only; replaced only from the ETag it has.
    again = dev.kv_put(key, b"45", create_only=True)
    assert (again.status, error_code(again), again.json()["etag"]) == (
        412, "precondition_failed", etag)
    newer = ok(dev.kv_put(key, b"30", if_match=etag, content_type="text/plain"))["etag"]
    stale = dev.kv_put(key, b"15", if_match=etag)
    assert (stale.status, stale.json()["etag"]) == (412, newer)
    assert late.expect_message().payload == b"30"
    entry = ok(dev.kv_get(key))
    assert (entry["payload"], entry["etag"], entry["content_type"]) == ("30", newer, "text/plain")
    # What MQTT retains is an entry.
    fleet.clients.connected(names.client("m")).publish(
        f"kv/dev1/{names.tag}/mode", b"\xff\x01", qos=1, retain=True)
    assert ok(dev.kv_get(f"kv/dev1/{names.tag}/mode"))["payload_b64"] == "/wE="
    # Missing: 404, or 204 for one-branch code; deleting twice finds nothing the second time.
    missing = dev.kv_get(f"kv/dev1/{names.tag}/none")
    assert (missing.status, error_code(missing)) == (404, "not_found")
    assert dev.kv_get(f"kv/dev1/{names.tag}/none", missing_204=True).status == 204
    deleted = ok(dev.kv_delete(key, if_match=newer))
    assert deleted["deleted"] is True and deleted["etag"] != newer
    assert dev.kv_delete(key).status == 404
    assert dev.kv_get(key).status == 404


def test_a_listing_gives_what_changed_since_an_etag_across_kill_9(fleet: Fleet, names: Names):
    dev = fleet.device()
    base = f"kv/dev1/{names.tag}"
    ok(dev.kv_put(f"{base}/a", b"1"))
    ok(dev.kv_put(f"{base}/b", b"2"))
    listing = ok(dev.kv_list(base))
    assert listing["full"] is True
    assert [(e["key"], e["payload"]) for e in listing["changed"]] == [
        (f"{base}/a", "1"), (f"{base}/b", "2")]
    ok(dev.kv_put(f"{base}/a", b"10"))
    fleet.clients.connected(names.client("m")).publish(f"{base}/b", b"", qos=1, retain=True)
    fleet.broker.kill()
    fleet.start()
    dev.url = fleet.broker.http_url
    changes = ok(dev.kv_list(base, since=listing["etag"]))
    assert [(e["key"], e["payload"]) for e in changes["changed"]] == [(f"{base}/a", "10")]
    assert [d["key"] for d in changes["deleted"]] == [f"{base}/b"]
    assert changes["full"] is False
    # Nothing since the last listing: nothing.
    quiet = ok(dev.kv_list(base, since=changes["etag"]))
    assert (quiet["changed"], quiet["deleted"]) == ([], [])


def test_a_key_outside_the_keys_permissions_is_refused(fleet: Fleet, names: Names):
    owner = fleet.device()
    key = f"kv/dev1/{names.tag}/secret"
    ok(owner.kv_put(key, b"s3cret"))
    other = fleet.device("d:dev2")
    for response in (other.kv_get(key), other.kv_put(key, b"mine"), other.kv_delete(key),
                     other.kv_list(f"kv/dev1/{names.tag}")):
        assert (response.status, error_code(response)) == (403, "acl_denied"), response.body
    assert ok(owner.kv_get(key))["payload"] == "s3cret"


def test_a_precondition_cannot_be_stripped_on_the_way(fleet: Fleet, names: Names):
    dev = fleet.device()
    key = f"kv/dev1/{names.tag}/x"
    etag = ok(dev.kv_put(key, b"1"))["etag"]
    path = dev._key_path(key)
    headers = dev.signed_headers("PUT", path, b"2", [("If-Match", f'"{etag}"')])
    stripped = [(name, value) for name, value in headers if name != "If-Match"]
    forged = dev.send("PUT", path, stripped, b"2")
    assert (forged.status, error_code(forged)) == (401, "signature_invalid")
    assert ok(dev.kv_get(key))["payload"] == "1"
