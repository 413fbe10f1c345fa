"""The device fleet for consoles: owners log in to the operator API with tokens of their own
(`tern token add --owner`), and `/v1/fleet/devices` lists devices filtered and in pages, one
device with its live status, status history, message counts and session; devices seen over
HTTP count as seen; every change is an `event: fleet` on `GET /v1/events`; `tern device` speaks
to the operator API over HTTPS. As an attacker:
owner globex's token against every fleet route, session route and the event stream, for
owner acme's devices, sessions, topics and events.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import BrokerError
from http_support import Device, operator_call, tern
from support import BROKER_KIND
from test_19_http import ConfiguredBroker
from test_19_http_admin import code
from test_19_http_events import Stream
from test_15_transports import make_ca, make_cert
from test_20_fleet import Fleet, tern_bin

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the device fleet is Tern's")


class Consoles(Fleet):
    """The fleet of test_20 (acme/d1, acme/d2, globex/g1) with a token per owner (read, write,
    events) and one of the whole broker (`root`)."""

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.tokens: dict[str, str] = {}
        self.add_token("root", "root-ev", "--scope", "read", "--scope", "write", "--scope",
                       "events")
        for owner in ["acme", "globex"]:
            self.add_token(owner, f"{owner}-console", "--owner", owner, "--scope", "read",
                           "--scope", "write", "--scope", "events")

    def add_token(self, name: str, token_id: str, *args: str) -> str:
        """Adds a token to the running broker's file and waits until the broker has it."""
        self.broker.mark()
        self.tokens[name] = self.run("token", "add", token_id, "--data-dir", str(self.data),
                                     *args).strip()
        # The fixture's `root` token is there too.
        self.broker.wait_for_output(f"operator tokens reloaded: {len(self.tokens) + 1} token")
        return self.tokens[name]

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """One request; `token` names a token of `tokens`, or is the text."""
        text = self.tokens.get(token, token)
        return operator_call(self.broker.http_url, text, method, path, body)

    def run_failing(self, *args: str) -> str:
        done = subprocess.run([tern_bin(), *args], capture_output=True, text=True, timeout=30)
        assert done.returncode != 0, done.stdout
        return done.stderr

    def get(self, path: str, token: str) -> Any:
        status, body = self.call("GET", path, token)
        assert status == 200, (path, status, body)
        return body

    def udids(self, path: str, token: str) -> list[str]:
        return [d["udid"] for d in self.get(path, token)["devices"]]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Consoles]:
    fleet = Consoles(tmp_path)
    yield fleet
    fleet.clients.close_all()
    fleet.broker.stop()


def stream(fleet: Consoles, token: str, **query: object) -> Stream:
    opened = Stream(fleet, token, **query)  # type: ignore[arg-type]
    assert opened.status == 200, opened.response.read()
    assert opened.frame() == ("comment", "watching")
    assert opened.frame() == ("ready", "{}")
    return opened


def next_event(opened: Stream) -> tuple[str, dict]:
    """The next event of a stream, past keep-alive comments."""
    while True:
        frame = opened.frame()
        assert frame is not None, "the stream ended"
        if frame[0] != "comment":
            return frame[0], json.loads(frame[1])


def test_an_owners_token_reaches_nothing_of_another_owner_through_any_route(fleet: Consoles):
    victim = fleet.firmware("acme", "d1")
    victim.subscribe("/acme/d1", qos=1)
    victim.publish("/acme/d1/status", b'{"status":"connected"}', qos=1, retain=True)
    attacker = "globex"
    # The registry: its own devices only; acme's are absent, naming acme is refused.
    assert fleet.udids("/v1/admin/devices", attacker) == ["g1"]
    assert fleet.udids("/v1/fleet/devices", attacker) == ["g1"]
    for path in ["/v1/admin/devices?owner=acme", "/v1/fleet/devices?owner=acme"]:
        assert code(fleet.call("GET", path, attacker)) == (403, "realm_denied"), path
    for method, path, body in [
        ("GET", "/v1/admin/devices/d1", None),
        ("GET", "/v1/fleet/devices/d1", None),
        ("PATCH", "/v1/admin/devices/d1", {"disabled": True}),
        ("DELETE", "/v1/admin/devices/d1", None),
    ]:
        assert code(fleet.call(method, path, attacker, body)) == (404, "no_device"), path
    stolen = {"owner": "acme", "udid": "x1", "credential": "cert-cn", "cn": "x1"}
    assert code(fleet.call("POST", "/v1/admin/devices", attacker, stolen)) == \
        (403, "realm_denied")
    assert code(fleet.call("PUT", "/v1/admin/owners/acme", attacker, {})) == \
        (403, "realm_denied")
    # Sessions and connections: acme's device is not there to see or kick.
    for path in ["/v1/admin/clients", "/v1/admin/sessions"]:
        assert fleet.get(path, attacker)[path.rsplit("/", 1)[1]] == [], path
    assert fleet.get("/v1/admin/subscriptions?client=d1", attacker)["subscriptions"] == []
    assert code(fleet.call("GET", "/v1/admin/sessions/d1", attacker)) == (404, "no_session")
    assert code(fleet.call("DELETE", "/v1/admin/clients/d1", attacker)) == (404, "no_session")
    assert code(fleet.call("DELETE", "/v1/admin/sessions/d1", attacker)) == \
        (404, "no_session")
    # Topics: acme's retained status, and wildcards over every owner.
    for path in ["/v1/admin/retained//acme/d1/status", "/v1/admin/retained/%23",
                 "/v1/admin/retained//%2B/d1/status", "/v1/admin/retained//%23"]:
        assert code(fleet.call("GET", path, attacker)) == (403, "acl_denied"), path
    assert code(fleet.call("DELETE", "/v1/admin/retained//acme/d1/status", attacker)) == \
        (403, "acl_denied")
    # What is the whole broker's is not an owner's.
    assert code(fleet.call("GET", "/v1/admin/banned", attacker)) == (403, "realm_denied")
    assert code(fleet.call("POST", "/v1/admin/banned", attacker, {"client_id": "d1"})) == \
        (403, "realm_denied")
    assert fleet.get("/v1/admin/access-requests", attacker)["access_requests"] == []
    # Notifications: acme's device raises one; for globex it does not exist.
    victim.publish("/acme/d1/status", b'{"notification":{"body":"Door open?","nid":"door"}}',
                   qos=1)
    assert fleet.get("/v1/fleet/notifications", attacker)["notifications"] == []
    for path, body in [("/v1/fleet/notifications/door/answer", {"response": True}),
                       ("/v1/fleet/notifications/door/cancel", {})]:
        assert code(fleet.call("POST", path, attacker, body)) == (404, "no_notification"), path
    ask = {"udid": "d1", "body": "Reboot?"}
    assert code(fleet.call("POST", "/v1/fleet/notifications", attacker, ask)) == \
        (404, "no_device")
    pending = fleet.get("/v1/fleet/notifications?state=pending", "acme")["notifications"]
    assert [(n["udid"], n["nid"]) for n in pending] == [("d1", "door")]
    # Event streams over acme's topics are refused.
    for topic in ["/acme/#", "#", "/#", "/+/d1/status", "$events/acme/#", "$events/#"]:
        refused = Stream(fleet, attacker, filter=topic)  # type: ignore[arg-type]
        assert refused.status == 403, topic
    # The victim is untouched: connected, its status retained, and its own token sees it.
    victim.expect_no_message()
    assert fleet.udids("/v1/fleet/devices?online=1", "acme") == ["d1"]
    retained = fleet.get("/v1/admin/retained//acme/d1/status", "acme")["retained"]
    assert [r["payload"] for r in retained] == ['{"status":"connected"}']
    # And acme's token keeps to acme too: it kicks its own device, not globex's.
    assert code(fleet.call("DELETE", "/v1/admin/clients/g1", "acme")) == (404, "no_session")
    assert fleet.call("DELETE", "/v1/admin/clients/d1", "acme")[0] == 200
    victim.expect_disconnected()


def test_an_owners_event_stream_carries_its_fleet_and_nothing_of_anothers(fleet: Consoles):
    acme = stream(fleet, "acme")
    globex = stream(fleet, "globex", filter="/globex/#")
    root = stream(fleet, "root")
    device = fleet.firmware("acme", "d1", will=False)
    assert next_event(acme) == ("fleet", {"owner": "acme", "udid": "d1", "change": "online"})
    name, data = next_event(acme)
    assert (name, data["client_id"]) == ("connected", "d1")
    device.disconnect()
    assert next_event(acme) == ("fleet", {"owner": "acme", "udid": "d1", "change": "offline"})
    assert next_event(acme)[0] == "disconnected"
    # Registry changes, by the operator of the whole broker.
    assert fleet.call("PATCH", "/v1/admin/devices/d2", "root", {"disabled": True})[0] == 200
    assert next_event(acme) == ("fleet", {"owner": "acme", "udid": "d2", "change": "changed"})
    # Globex's stream got none of it: what it gets first is all its own device's (the status
    # the broker keeps for g1 is a message on its topics).
    fleet.firmware("globex", "g1", will=False)
    got = sorted(next_event(globex) for _ in range(3))
    assert got[0] == ("connected", {"client_id": "g1", "protocol": 4, "session_present": False})
    assert got[1] == ("fleet", {"owner": "globex", "udid": "g1", "change": "online"})
    assert (got[2][0], got[2][1]["topic"]) == ("message", "/globex/g1/status")
    # The whole broker's stream saw all of it, in order.
    seen = [next_event(root) for _ in range(7)]
    fleet_changes = [(d["udid"], d["change"]) for n, d in seen if n == "fleet"]
    assert fleet_changes == [("d1", "online"), ("d1", "offline"), ("d2", "changed"),
                             ("g1", "online")]


def test_the_fleet_lists_filtered_in_pages_and_shows_a_device_in_detail(fleet: Consoles):
    for udid, firmware, alias in [("e1", "1.2.0", "Front door"), ("e2", "1.3.0", "Back door")]:
        fleet.device("add", "acme", udid, "--cert-cn", udid, "--platform", "esp8266",
                     "--firmware", firmware, "--tag", "door", "--alias", alias)
    fleet.device("add", "acme", "k1", "--cert-cn", "k1", "--tag", "meter")
    acme = "acme"
    assert fleet.udids("/v1/fleet/devices", acme) == ["d1", "d2", "e1", "e2", "k1"]
    assert fleet.udids("/v1/fleet/devices?platform=esp8266", acme) == ["e1", "e2"]
    assert fleet.udids("/v1/fleet/devices?firmware=1.2.0", acme) == ["e1"]
    assert fleet.udids("/v1/fleet/devices?tag=door", acme) == ["e1", "e2"]
    assert fleet.udids("/v1/fleet/devices?q=FRONT", acme) == ["e1"]
    assert fleet.udids("/v1/fleet/devices?q=k", acme) == ["e2", "k1"]
    assert fleet.udids("/v1/fleet/devices?owner=globex", "root") == ["g1"]
    device = fleet.firmware("acme", "d1", will=False)
    assert fleet.udids("/v1/fleet/devices?online=1", acme) == ["d1"]
    assert fleet.udids("/v1/fleet/devices?online=0&tag=door", acme) == ["e1", "e2"]
    # Pages in udid order: a device added behind the cursor comes in its place, none twice.
    page = fleet.get("/v1/fleet/devices?limit=2", "root")
    walked = [d["udid"] for d in page["devices"]]
    assert walked == ["d1", "d2"] and page["next"]
    fleet.device("add", "globex", "a0", "--cert-cn", "a0")
    fleet.device("add", "globex", "f0", "--cert-cn", "f0")
    while page["next"]:
        cursor = urllib.parse.quote(page["next"], safe="")
        page = fleet.get(f"/v1/fleet/devices?limit=2&cursor={cursor}", "root")
        walked += [d["udid"] for d in page["devices"]]
    assert walked == ["d1", "d2", "e1", "e2", "f0", "g1", "k1"]
    for bad in ["limit=0", "limit=1001", "online=maybe"]:
        assert code(fleet.call("GET", f"/v1/fleet/devices?{bad}", acme)) == \
            (400, "bad_request"), bad
    # One device: its status, message counts, session and last changes.
    device.subscribe("/acme/d1", qos=1)
    console = fleet.console("acme", "acme-console")
    console.subscribe("$events/acme/d1/offline", qos=1)
    console.publish("/acme/d1", b"cmd", qos=1)
    device.expect_message()
    device.publish("/acme/d1/status", b"up", qos=1)
    shown = fleet.get("/v1/fleet/devices/d1", acme)
    assert shown["owner"] == "acme" and shown["credential"] == "password"
    status = shown["status"]
    assert status["online"] and status["protocol"] == 4
    assert (status["messages_in"], status["messages_out"]) == (1, 1)
    assert shown["session"]["client_id"] == "d1" and shown["session"]["connected"]
    device.disconnect()
    # Offline once the broker says so (the client's side of a disconnect is no sign of it).
    assert console.expect_message().topic == "$events/acme/d1/offline"
    shown = fleet.get("/v1/fleet/devices/d1", acme)
    assert not shown["status"]["online"]
    assert [change["online"] for change in shown["history"]] == [True, False]
    never = fleet.get("/v1/fleet/devices/e1", acme)
    assert never["history"] == [] and never["session"] is None and "status" not in never
    # No [[history]]: no recent messages.
    assert fleet.get("/v1/fleet/devices/d1", acme)["recent_messages"] == []


class HistoryConsoles(Consoles):
    """The consoles' fleet, with a history of acme's topics."""

    OPTIONS = {"history": [{"filter": "/acme/#", "max_messages": 50, "max_age_secs": 3600}]}


def test_a_devices_view_shows_the_recent_messages_of_its_own_topics(tmp_path: Path):
    fleet = HistoryConsoles(tmp_path)
    try:
        device = fleet.firmware("acme", "d1")
        device.subscribe("/acme/d1", qos=1)
        for n in range(20):
            device.publish("/acme/d1/status", f'{{"n":{n}}}'.encode(), qos=1)
        console = fleet.console("acme", "acme-console")
        console.publish("/acme/d1", b"\xff\x00", qos=1, retain=True)
        assert device.expect_message().payload == b"\xff\x00"
        # Not its own: another device's status, the owner's shared topics.
        console.publish("/acme/d2/status", b"other", qos=1)
        console.publish("/acme/shared/all", b"everyone", qos=1)
        shown = fleet.get("/v1/fleet/devices/d1", "acme")["recent_messages"]
        assert len(shown) == 20
        assert all(set(m) == {"topic", "at", "qos", "retain", "payload", "payload_base64"}
                   for m in shown), shown
        # Newest last: the first status fell out of the 20.
        assert [m["payload"] for m in shown[:2]] == ['{"n":1}', '{"n":2}']
        first = shown[0]
        assert (first["topic"], first["qos"], first["retain"]) == ("/acme/d1/status", 1, False)
        assert first["payload_base64"] == "eyJuIjoxfQ=="
        assert abs(first["at"] - time.time()) < 60
        last = shown[-1]
        assert (last["topic"], last["payload"], last["payload_base64"], last["retain"]) == (
            "/acme/d1", None, "/wA=", True)
        # Named with its owner, the same device; with another owner, none.
        assert fleet.get("/v1/fleet/devices/acme/d1", "acme")["recent_messages"] == shown
        assert code(fleet.call("GET", "/v1/fleet/devices/globex/d1", "root")) == \
            (404, "no_device")
        # Another owner's token: no such device. A token whose topics are the statuses only
        # sees those.
        assert code(fleet.call("GET", "/v1/fleet/devices/d1", "globex")) == (404, "no_device")
        fleet.add_token("statuses", "acme-statuses", "--owner", "acme", "--scope", "read",
                        "--topic", "/acme/+/status")
        shown = fleet.get("/v1/fleet/devices/d1", "statuses")["recent_messages"]
        assert {m["topic"] for m in shown} == {"/acme/d1/status"} and len(shown) == 19
    finally:
        fleet.clients.close_all()
        fleet.broker.stop()


def test_a_device_seen_over_http_counts_as_seen(fleet: Consoles):
    _, key = fleet.add_key_device("acme", "k1")
    before = fleet.get("/v1/fleet/devices/k1", "acme")
    assert "status" not in before
    http = Device(fleet.broker.http_url, "d:k1", key["secret"])
    # Seen whether or not it may publish there (its key makes it the device, whose namespace
    # is its own channel and status): a signed request that verified is the device, alive.
    refused = http.publish("/acme/d1/status", b'{"t":1}')
    assert (refused.status, refused.json()["error"]["code"]) == (403, "acl_denied")
    assert http.publish("/acme/k1/status", b'{"t":1}').status == 200
    status = fleet.get("/v1/fleet/devices/k1", "acme")["status"]
    assert status["last_seen_http"] >= before["created"]
    assert status["last_seen"] == status["last_seen_http"] and not status["online"]
    # Its messages over HTTP are counted: the publish that went through, and what its
    # mailbox hands out to it.
    assert (status["http_messages_in"], status["http_messages_out"]) == (1, 0)
    assert http.subscribe("/acme/k1", qos=1).status == 200
    fleet.console("acme", "acme-console").publish("/acme/k1", b"cmd", qos=1)
    polled = http.poll(wait=10).json()
    assert [m["payload"] for m in polled["messages"]] == ["cmd"]
    status = fleet.get("/v1/fleet/devices/k1", "acme")["status"]
    assert (status["http_messages_in"], status["http_messages_out"]) == (1, 1)
    assert (status["messages_in"], status["messages_out"]) == (0, 0)


def test_a_token_of_an_owner_is_for_its_fleet_only(fleet: Consoles):
    for args in [("--owner", "acme", "--scope", "keys"), ("--owner", "acme", "--scope", "metrics"),
                 ("--owner", "acme", "--scope", "read", "--clients", "acme-"),
                 ("--owner", "a/b", "--scope", "read")]:
        assert fleet.run_failing("token", "add", "bad", "--data-dir", str(fleet.data), *args)
    listed = fleet.run("token", "list", "--data-dir", str(fleet.data))
    assert "acme-console" in listed and "owner: acme" in listed and "bad" not in listed
    # A token of a client prefix holds none of the fleet.
    prefix = fleet.add_token("prefixed", "prefixed", "--scope", "read", "--clients", "d")
    assert code(fleet.call("GET", "/v1/fleet/devices", prefix)) == (403, "realm_denied")


def test_tern_device_speaks_to_the_operator_api_over_https(tmp_path: Path):
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", "/CN=localhost", "DNS:localhost,IP:127.0.0.1")
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    data = tmp_path / "tern-data"
    token = tern("token", "add", "root", "--data-dir", str(data), "--scope", "read", "--scope",
                 "write").strip()
    broker = ConfiguredBroker("tern", tmp_path, {"listener": [
        {"bind": "127.0.0.1:0"},
        {"bind": "127.0.0.1:0", "protocol": "https", "cert": str(cert), "key": str(key)},
    ]})
    try:
        broker.start()
    except BrokerError as err:
        pytest.fail(f"could not start the broker:\n{err}", pytrace=False)
    try:
        url = broker.http_url
        assert url.startswith("https://127.0.0.1:")

        def device(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([tern_bin(), "device", "--token", token, *args],
                                  capture_output=True, text=True, timeout=30)
            assert (done.returncode == 0) == ok, (args, done.stdout, done.stderr)
            return done

        added = json.loads(device("--url", url, "--cafile", str(ca), "add", "acme", "c1",
                                  "--cert-cn", "c1").stdout)
        assert (added["owner"], added["udid"]) == ("acme", "c1")
        listed = json.loads(device("--url", url, "--cafile", str(ca), "list").stdout)
        assert [d["udid"] for d in listed["devices"]] == ["c1"]
        # A certificate it was not told to trust is refused, and so is plain HTTP to TLS.
        assert "TLS" in device("--url", url, "list", ok=False).stderr
        device("--url", url.replace("https://", "http://"), "list", ok=False)
        assert "--cafile" in device("--url", url.replace("https://", "http://"), "--cafile",
                                    str(ca), "list", ok=False).stderr
    finally:
        broker.stop()


def test_an_owners_token_keeps_the_keys_of_its_own_devices_and_no_others(fleet: Consoles):
    # `tern device add --key` under an owner's token: the device and its key in one go.
    out = fleet.run("device", "--url", fleet.broker.http_url, "--token", fleet.tokens["acme"],
                    "add", "acme", "k1", "--key")
    decoder = json.JSONDecoder()
    device, end = decoder.raw_decode(out)
    key, _ = decoder.raw_decode(out[end:].lstrip())
    assert (device["owner"], device["udid"], device["credential"]) == ("acme", "k1", "key")
    assert key["id"] == "d:k1" and len(key["secret"]) == 64
    signed = Device(fleet.broker.http_url, "d:k1", key["secret"])
    assert signed.publish("/acme/k1/status", b'{"t":1}').status == 200
    # The owner rotates its device's key; the new secret signs too.
    status, rotated = fleet.call("POST", "/v1/admin/keys/d:k1/rotate", "acme")
    assert status == 200 and rotated["n"] == 2, rotated
    fresh = Device(fleet.broker.http_url, "d:k1", rotated["secret"])
    assert fresh.publish("/acme/k1/status", b'{"t":2}').status == 200
    listed = fleet.get("/v1/admin/keys", "acme")["keys"]
    assert [k["id"] for k in listed] == ["d:k1"]
    # Owner globex: acme's device keys are absent, through every key route.
    assert fleet.get("/v1/admin/keys", "globex")["keys"] == []
    assert code(fleet.call("POST", "/v1/admin/keys/d:k1/rotate", "globex")) == (404, "no_key")
    assert code(fleet.call("DELETE", "/v1/admin/keys/d:k1", "globex")) == (404, "no_key")
    # A key for acme's password device d1, or a udid registered to nobody, is not globex's.
    for udid in ["d1", "nobody"]:
        assert code(fleet.call("POST", "/v1/admin/keys", "globex", {"id": f"d:{udid}"})) == \
            (403, "realm_denied"), udid
    # Group and app keys are the whole broker's.
    for body in [{"id": "g:acme", "prefix": "k"}, {"id": "a:console"}]:
        assert code(fleet.call("POST", "/v1/admin/keys", "acme", body)) == \
            (403, "realm_denied"), body
    # A key of its own device, but with grants beyond the fleet's rule.
    assert code(fleet.call("POST", "/v1/admin/keys", "acme",
                           {"id": "d:d2", "publish": ["#"]})) == (403, "realm_denied")
    # globex adding a key device of acme's: neither the device nor a key is made.
    stolen = {"owner": "acme", "udid": "x1", "credential": "key"}
    assert code(fleet.call("POST", "/v1/admin/devices", "globex", stolen)) == \
        (403, "realm_denied")
    assert code(fleet.call("GET", "/v1/admin/devices/x1", "acme")) == (404, "no_device")
    assert [k["id"] for k in fleet.get("/v1/admin/keys", "acme")["keys"]] == ["d:k1"]
    # Both secrets still work after every refusal; the owner revokes, and the key is gone.
    assert fresh.publish("/acme/k1/status", b'{"t":3}').status == 200
    status, _ = fleet.call("DELETE", "/v1/admin/keys/d:k1", "acme")
    assert status == 200
    gone = fresh.publish("/acme/k1/status", b'{"t":4}')
    assert (gone.status, gone.json()["error"]["code"]) == (401, "signature_invalid")


def test_a_key_device_is_added_whole_or_not_at_all(fleet: Consoles):
    # A key d:k2 is left from before (no device): adding the device refuses, and adds nothing,
    # under a token of the whole broker as under an owner's.
    fleet.broker.mark()
    fleet.run("key", "add", "d:k2", "--data-dir", str(fleet.data))
    fleet.broker.wait_for_output("HTTP keys reloaded")
    for token in [fleet.token, fleet.tokens["acme"]]:
        failed = fleet.run_failing("device", "--url", fleet.broker.http_url, "--token", token,
                                   "add", "acme", "k2", "--key")
        assert "409: the key d:k2 exists" in failed
        assert code(fleet.call("GET", "/v1/admin/devices/k2", "acme")) == (404, "no_device")
