"""Access requests: a correctly signed request from a device of an app key with approval
(`tern key add a:APP --approve`) that no operator approved makes a pending access request
(answered `access_pending`, signed), listed in `/v1/admin/access-requests`; an operator
approves it with grants (the device's next request works, as the grants allow, across a
restart), rejects it (`access_rejected`) or forgets it (the device may ask again); each
change is an `access_request` event. Driven with the Python reference client, urllib and
curl; and as an attacker: no token, no write scope, another tenant's request, a grant
outside the token's topics, a wrong secret (no request made).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from http_support import Device, add_key, error_code
from support import BROKER_KIND, TIMEOUT, Names
from test_19_http_events import EventOps, Stream

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


class AccessOps(EventOps):
    """`EventOps` with an app key `a:fleet` whose devices need approval."""

    def start(self) -> None:
        if not hasattr(self, "fleet_secret"):
            self.fleet_secret = add_key(self.data, "a:fleet", "--approve")
        super().start()

    def device(self, client_id: str, secret: str = "") -> Device:
        return Device(self.broker.http_url, "a:fleet", secret or self.fleet_secret,
                      client=client_id)

    def requests(self, token: str = "root") -> list[dict]:
        status, body = self.call("GET", "/v1/admin/access-requests", token)
        assert status == 200, body
        return body["access_requests"]


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[AccessOps]:
    ops = AccessOps(tmp_path)
    yield ops
    ops.clients.close_all()
    ops.broker.stop()


def test_an_access_request_approved_then_used(ops: AccessOps, names: Names):
    stream = Stream(ops, "watcher").opened()
    client_id = "acme-" + names.client("dev")
    device = ops.device(client_id)
    topic = f"acme/{client_id}/t"
    # The answer is signed (the client checks it): the device knows it is the broker's.
    refused = device.publish(topic, b"1")
    assert (refused.status, error_code(refused)) == (403, "access_pending")
    assert device.publish(topic, b"1").status == 403
    [request] = ops.requests()
    assert (request["key"], request["client_id"], request["state"], request["requests"]) == \
        ("a:fleet", client_id, "pending", 2)
    assert request["id"] in refused.json()["error"]["message"]
    assert stream.expect("access_request") == {"id": request["id"], "key": "a:fleet",
                                               "client_id": client_id, "state": "pending"}
    status, body = ops.call("POST", f"/v1/admin/access-requests/{request['id']}/approve",
                            body={"publish": ["acme/%c/#"]})
    assert (status, body) == (200, {"id": request["id"], "client_id": client_id,
                                    "approved": True})
    assert stream.expect("access_request")["state"] == "approved"
    assert ops.requests() == []
    subscriber = ops.clients.subscriber(names.client("s"), topic, qos=1)
    assert device.publish(topic, b"approved", qos=1).status == 200
    assert subscriber.expect_message().payload == b"approved"
    # Publish-only, as approved.
    assert error_code(device.subscribe(f"acme/{client_id}/#")) == "acl_denied"
    assert error_code(device.publish("acme/other/t", b"x")) == "acl_denied"
    stream.close()
    ops.broker.stop()
    ops.start()
    device.url = ops.broker.http_url
    assert device.publish(topic, b"after a restart").status == 200


def test_curl_rejects_and_forgets_a_request(ops: AccessOps, names: Names):
    device = ops.device(names.client("dev"))
    assert error_code(device.publish("t", b"1")) == "access_pending"
    [request] = ops.requests()
    url = f"{ops.broker.http_url}/v1/admin/access-requests/{request['id']}"
    auth = f"Authorization: Bearer {ops.tokens['root']}"

    def curl(*args: str) -> dict:
        done = subprocess.run(["curl", "-sS", "-H", auth, *args], capture_output=True,
                              text=True, timeout=TIMEOUT, check=True)
        return json.loads(done.stdout)

    assert curl("-X", "POST", url + "/reject")["rejected"] is True
    assert error_code(device.publish("t", b"1")) == "access_rejected"
    assert ops.requests()[0]["state"] == "rejected"
    assert curl("-X", "DELETE", url)["forgotten"] is True
    assert error_code(device.publish("t", b"1")) == "access_pending"
    [again] = ops.requests()
    assert again["id"] != request["id"] and again["state"] == "pending"


def test_attackers_cannot_list_approve_or_make_requests(ops: AccessOps, names: Names):
    other = ops.device(names.client("other"))
    mine = ops.device("acme-" + names.client("mine"))
    for device in (other, mine):
        assert error_code(device.publish("t", b"1")) == "access_pending"
    by_client = {r["client_id"]: r["id"] for r in ops.requests()}
    other_id, mine_id = by_client[other.client], by_client[mine.client]
    approve = "/v1/admin/access-requests/{}/approve"

    def code(answer: tuple[int, dict]) -> tuple[int, str]:
        return answer[0], answer[1]["error"]["code"]

    assert code(ops.call("GET", "/v1/admin/access-requests", None)) == (401, "token_missing")
    assert code(ops.call("POST", approve.format(mine_id), "reader", {})) == \
        (403, "scope_denied")
    # Another tenant's request does not exist for the token; its own do.
    assert [r["client_id"] for r in ops.requests("acme")] == [mine.client]
    assert code(ops.call("POST", approve.format(other_id), "acme", {})) == \
        (404, "no_access_request")
    assert code(ops.call("DELETE", f"/v1/admin/access-requests/{other_id}", "acme")) == \
        (404, "no_access_request")
    # A token grants no more than its topics.
    assert code(ops.call("POST", approve.format(mine_id), "acme",
                         {"both": ["other/#"]})) == (403, "acl_denied")
    assert code(ops.call("POST", approve.format(mine_id), "acme", {"subscribe": ["#"]})) == \
        (403, "acl_denied")
    assert error_code(mine.publish("acme/x", b"1")) == "access_pending"
    # A wrong secret makes no request.
    forger = ops.device(names.client("forger"), "00" * 32)
    assert error_code(forger.publish("t", b"1")) == "signature_invalid"
    assert len(ops.requests()) == 2
    assert ops.call("POST", approve.format(mine_id), "acme",
                    {"publish": ["acme/%c/#"]})[0] == 200
    assert mine.publish(f"acme/{mine.client}/t", b"1").status == 200
