"""The operator API (`/v1/admin/...`) with bearer tokens made by `tern token add`, driven with
curl and with urllib: clients listed and kicked, sessions inspected (queue, subscriptions) and
deleted, retained messages browsed and deleted, bans that close and refuse a client (kept
across a restart), keys added, rotated and revoked (a new secret works for a device at once).
And as an attacker: no token, a wrong one, a revoked or expired one, a scope the token lacks,
and another tenant's clients, sessions, retained messages and keys through every route.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from conftest import BrokerError
import mqtt_raw
from http_support import Device, HttpBroker, add_key, operator_call, tern
from support import BROKER_KIND, TIMEOUT, Clients, Names, connect_properties

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


class Ops:
    """A broker with tokens: `root` (every scope, the whole broker), `reader` (read only),
    `acme` (read, write and keys for clients `acme-*` and topics `acme/#`), `old` (expired)."""

    def __init__(self, workdir: Path):
        self.data = workdir / "tern-data"
        self.tokens = {
            "root": self.token("root", "read", "write", "keys", "events", "metrics"),
            "reader": self.token("reader", "read"),
            "acme": self.token("acme", "read", "write", "keys", "--clients", "acme-",
                               "--topic", "acme/#"),
        }
        self.device_secret = add_key(self.data, "d:acme-1")
        self.broker = HttpBroker("tern", workdir)
        self.start()
        self.clients = Clients(self.broker)

    def token(self, token_id: str, *args: str) -> str:
        scopes = [a for a in args if not a.startswith("-") and a in
                  ("read", "write", "keys", "events", "metrics")]
        rest = [a for a in args if a not in scopes]
        flags = [f for s in scopes for f in ("--scope", s)]
        return tern("token", "add", token_id, "--data-dir", str(self.data), *flags,
                    *rest).strip()

    def start(self) -> None:
        try:
            self.broker.start()
        except BrokerError as err:
            pytest.fail(f"could not start the broker:\n{err}", pytrace=False)

    def call(self, method: str, path: str, token: Optional[str] = "root",
             body: Any = None) -> tuple[int, Any]:
        """One request with urllib; `token` names a token of `tokens`, or is the text."""
        text = None if token is None else self.tokens.get(token, token)
        return operator_call(self.broker.http_url, text, method, path, body)


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    ops = Ops(tmp_path)
    yield ops
    ops.clients.close_all()
    ops.broker.stop()


def code(answer: tuple[int, Any]) -> tuple[int, Optional[str]]:
    status, body = answer
    return status, (body or {}).get("error", {}).get("code")


def test_curl_lists_clients_and_kicks_one(ops: Ops, names: Names):
    client_id = names.client("k")
    client = ops.clients.connected(client_id)
    url = ops.broker.http_url + "/v1/admin/clients"
    auth = f"Authorization: Bearer {ops.tokens['reader']}"
    listed = subprocess.run(["curl", "-sS", "-H", auth, url], capture_output=True, text=True,
                            timeout=TIMEOUT, check=True)
    ids = [c["client_id"] for c in json.loads(listed.stdout)["clients"]]
    assert client_id in ids
    # Kicking needs the write scope.
    assert code(ops.call("DELETE", f"/v1/admin/clients/{client_id}", "reader")) == \
        (403, "scope_denied")
    kicked = subprocess.run(
        ["curl", "-sS", "-X", "DELETE", "-H", f"Authorization: Bearer {ops.tokens['root']}",
         "-w", "\n%{http_code}", f"{url}/{client_id}"],
        capture_output=True, text=True, timeout=TIMEOUT, check=True)
    body, status = kicked.stdout.rsplit("\n", 1)
    assert status == "200" and json.loads(body)["client_id"] == client_id
    client.expect_disconnected()
    status, body = ops.call("GET", "/v1/admin/clients", "reader")
    assert client_id not in [c["client_id"] for c in body["clients"]]


def test_a_session_is_inspected_and_deleted(ops: Ops, names: Names):
    client_id = names.client("s")
    topic = f"q/{names.tag}"
    sub = ops.clients.connected(client_id, clean=False,
                               properties=connect_properties(SessionExpiryInterval=3600))
    sub.subscribe(topic, qos=1)
    sub.close()
    publisher = ops.clients.connected(names.client("p"))
    publisher.publish(topic, b"waiting", qos=1)
    status, session = ops.call("GET", f"/v1/admin/sessions/{client_id}?limit=5", "reader")
    assert status == 200, session
    assert session["connected"] is False and session["queued"] == 1
    assert session["subscription_list"] == [{"client_id": client_id, "filter": topic, "qos": 1}]
    assert [m["payload"] for m in session["queue"]] == ["waiting"]
    status, subs = ops.call("GET", f"/v1/admin/subscriptions?client={client_id}", "reader")
    assert subs["subscriptions"] == session["subscription_list"]
    assert ops.call("DELETE", f"/v1/admin/sessions/{client_id}")[0] == 200
    assert code(ops.call("GET", f"/v1/admin/sessions/{client_id}")) == (404, "no_session")


def test_retained_messages_are_browsed_and_deleted(ops: Ops, names: Names):
    publisher = ops.clients.connected(names.client("p"))
    for topic in (f"acme/{names.tag}/a", f"acme/{names.tag}/b", f"other/{names.tag}"):
        publisher.publish(topic, b"kept", qos=1, retain=True)
    status, body = ops.call("GET", f"/v1/admin/retained/acme/{names.tag}/%23", "acme")
    assert status == 200, body
    assert [m["topic"] for m in body["retained"]] == [f"acme/{names.tag}/a",
                                                      f"acme/{names.tag}/b"]
    assert ops.call("DELETE", f"/v1/admin/retained/acme/{names.tag}/a", "acme")[0] == 200
    status, body = ops.call("GET", f"/v1/admin/retained/acme/{names.tag}/%23", "acme")
    assert [m["topic"] for m in body["retained"]] == [f"acme/{names.tag}/b"]
    assert code(ops.call("DELETE", f"/v1/admin/retained/acme/{names.tag}/a")) == \
        (404, "no_retained")


def test_a_ban_closes_and_refuses_a_client_and_outlasts_a_restart(ops: Ops, names: Names):
    client_id = names.client("b")
    client = ops.clients.connected(client_id)
    assert ops.call("POST", "/v1/admin/banned", body={"client_id": client_id})[0] == 200
    client.expect_disconnected()
    ops.broker.stop()
    ops.start()
    status, body = ops.call("GET", "/v1/admin/banned", "reader")
    assert body["banned"] == [{"client_id": client_id}]
    ops.clients.raw_connected(client_id, version=mqtt_raw.V5, expect_code=0x8A)
    assert ops.call("DELETE", f"/v1/admin/banned/{client_id}")[0] == 200
    ops.clients.connected(client_id).close()


def test_keys_are_added_rotated_and_revoked_and_a_new_secret_is_shown_once(ops: Ops,
                                                                          names: Names):
    key = f"d:dev-{names.tag}"
    status, made = ops.call("POST", "/v1/admin/keys", body={"id": key, "both": ["k/#"]})
    assert status == 200, made
    dev = Device(ops.broker.http_url, key, made["secret"])
    assert dev.publish(f"k/{names.tag}", b"x", qos=1).status == 200
    status, keys = ops.call("GET", "/v1/admin/keys")
    listed = [k for k in keys["keys"] if k["id"] == key]
    assert listed == [{"id": key, "grants": [["both", "k/#"]], "secrets": listed[0]["secrets"]}]
    assert made["secret"] not in json.dumps(keys)
    status, rotated = ops.call("POST", f"/v1/admin/keys/{key}/rotate")
    assert rotated["n"] == 2
    assert ops.call("DELETE", f"/v1/admin/keys/{key}?secret=1")[0] == 200
    assert dev.publish(f"k/{names.tag}", b"x", qos=1).status == 401
    new = Device(ops.broker.http_url, key, rotated["secret"])
    assert new.publish(f"k/{names.tag}", b"x", qos=1).status == 200
    assert ops.call("DELETE", f"/v1/admin/keys/{key}")[0] == 200
    assert code(ops.call("DELETE", f"/v1/admin/keys/{key}")) == (404, "no_key")


ROUTES = [
    ("GET", "/v1/admin/clients"), ("GET", "/v1/admin/sessions"),
    ("GET", "/v1/admin/sessions/x"), ("DELETE", "/v1/admin/sessions/x"),
    ("DELETE", "/v1/admin/clients/x"), ("GET", "/v1/admin/subscriptions"),
    ("GET", "/v1/admin/retained/%23"), ("DELETE", "/v1/admin/retained/a"),
    ("GET", "/v1/admin/banned"), ("POST", "/v1/admin/banned"),
    ("DELETE", "/v1/admin/banned/x"), ("GET", "/v1/admin/keys"), ("POST", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys/d:x/rotate"), ("DELETE", "/v1/admin/keys/d:x"),
]


def test_no_token_a_bad_one_a_revoked_or_expired_one_are_refused_and_logged(ops: Ops):
    revoked = ops.token("gone", "read")
    expired = tern("token", "add", "old", "--scope", "read", "--valid-secs", "0",
                   "--data-dir", str(ops.data)).strip()
    tern("token", "revoke", "gone", "--data-dir", str(ops.data))
    ops.broker.mark()
    ops.broker.wait_for_output(r"operator tokens reloaded")
    ops.broker.mark()
    assert code(ops.call("GET", "/v1/admin/clients", expired)) == (401, "token_invalid")
    ops.broker.wait_for_output(r"HTTP request refused: token_invalid \(401\) GET "
                               r"/v1/admin/clients .*the token expired")
    forged = ops.tokens["root"][:-1] + ("0" if ops.tokens["root"][-1] != "0" else "1")
    for method, path in ROUTES:
        assert code(ops.call(method, path, None)) == (401, "token_missing"), path
        for bad in (forged, revoked, expired, "tot1.root.zz"):
            assert code(ops.call(method, path, bad)) == (401, "token_invalid"), (path, bad)


def test_another_tenants_data_is_out_of_reach_through_every_route(ops: Ops, names: Names):
    other = names.client("other")
    ops.clients.connected(other, clean=False,
                          properties=connect_properties(SessionExpiryInterval=3600))
    ops.clients.connected("acme-1")
    publisher = ops.clients.connected(names.client("p"))
    publisher.publish(f"other/{names.tag}", b"theirs", qos=1, retain=True)
    # Lists hold only the realm's clients.
    for path, key in (("/v1/admin/clients", "clients"), ("/v1/admin/sessions", "sessions")):
        status, body = ops.call("GET", path, "acme")
        assert status == 200 and {c["client_id"] for c in body[key]} == {"acme-1"}, body
    status, body = ops.call("GET", "/v1/admin/subscriptions", "acme")
    assert all(s["client_id"].startswith("acme-") for s in body["subscriptions"])
    # Another tenant's session is not there for the token, whatever the route.
    for method in ("GET", "DELETE"):
        assert code(ops.call(method, f"/v1/admin/sessions/{other}", "acme")) == \
            (404, "no_session")
    assert code(ops.call("DELETE", f"/v1/admin/clients/{other}", "acme")) == \
        (404, "no_session")
    assert ops.call("GET", f"/v1/admin/sessions/{other}")[0] == 200, "it is still there"
    # Topics outside the realm, wildcards and $ topics included.
    for path in (f"other/{names.tag}", "%23", "%2B/x", "$SYS/%23", "$share/g/acme/%23",
                 "acme/%23/x"):
        status, error = code(ops.call("GET", f"/v1/admin/retained/{path}", "acme"))
        assert status in (400, 403) and error in ("acl_denied", "topic_invalid"), path
    assert code(ops.call("DELETE", f"/v1/admin/retained/other/{names.tag}", "acme")) == \
        (403, "acl_denied")
    # Keys and bans of others.
    status, body = ops.call("GET", "/v1/admin/keys", "acme")
    assert [k["id"] for k in body["keys"]] == ["d:acme-1"]
    assert code(ops.call("POST", "/v1/admin/keys", "acme", {"id": "d:x-1"})) == \
        (403, "realm_denied")
    assert code(ops.call("POST", "/v1/admin/keys", "acme", {"id": "a:app"})) == \
        (403, "realm_denied")
    assert code(ops.call("POST", "/v1/admin/keys/d:x-1/rotate", "acme")) == (404, "no_key")
    assert code(ops.call("POST", "/v1/admin/banned", "acme", {"client_id": other})) == \
        (403, "realm_denied")
