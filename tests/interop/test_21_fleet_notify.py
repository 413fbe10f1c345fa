"""Actionable notifications with paho-mqtt clients acting as THiNX firmware: a device raises
notifications on its status channel (`{"notification":{"body","response_type",...}}`), an
operator or the owner answers them through the operator API (`/v1/fleet/notifications`) or
over MQTT, and each answer reaches the device once, at QoS 2, on `/<owner>/<udid>` with its
own id: three pending answered out of order; an answer queued while the device sleeps (and
the broker is killed with `kill -9`) delivered when it reconnects; the same over the HTTP
mailbox of a device with a key; expiry; an operator asking a device and seeing it
acknowledged. As an attacker: owner B's token cannot list, answer or stream owner A's, nor can
owner B's MQTT console answer them.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from http_support import Device, operator_call
from support import BROKER_KIND, TIMEOUT, PahoClient, publish_properties
from test_20_fleet import Fleet

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the device fleet is Tern's")

NOTIFICATIONS = "/v1/fleet/notifications"


class NotifyFleet(Fleet):
    """The fleet of test_20_fleet, with tokens of its owners: `acme` and `globex`, each for its
    own fleet's topics (read, write, events). Device keys (signed HTTP requests, not fleet
    identities) may use device k1's channel and status."""

    ACL = [*Fleet.ACL, {"topic": "/acme/k1/#", "method": ["http"]}]

    def __init__(self, workdir: Path):
        self.data = workdir / "tern-data"
        self.owner_tokens = {
            owner: self.run("token", "add", f"{owner}-ops", "--data-dir", str(self.data),
                            "--scope", "read", "--scope", "write", "--scope", "events",
                            "--topic", f"/{owner}/#").strip()
            for owner in ("acme", "globex")
        }
        super().__init__(workdir)

    def call(self, method: str, path: str, body: Any = None,
             owner: Optional[str] = None) -> tuple[int, Any]:
        """One operator request, with the root token or an owner's."""
        token = self.owner_tokens[owner] if owner else self.token
        return operator_call(self.broker.http_url, token, method, path, body)

    def listed(self, owner: Optional[str] = None, **query: str) -> list[dict]:
        status, body = self.call("GET", NOTIFICATIONS + "?" + urllib.parse.urlencode(query),
                                 owner=owner)
        assert status == 200, body
        return body["notifications"]

    def answer(self, nid: str, response: Any, owner: Optional[str] = None,
               udid: Optional[str] = None) -> tuple[int, Any]:
        body: dict[str, Any] = {"response": response}
        if udid:
            body["udid"] = udid
        path = f"{NOTIFICATIONS}/{urllib.parse.quote(nid, safe='')}/answer"
        return self.call("POST", path, body, owner=owner)

    def sleeper(self, owner: str, udid: str) -> PahoClient:
        """THiNX firmware that keeps its session while it sleeps (clean session off), on its
        own channel at QoS 2."""
        client = self.firmware(owner, udid, clean=False)
        client.subscribe(f"/{owner}/{udid}", qos=2)
        return client


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[NotifyFleet]:
    fleet = NotifyFleet(tmp_path)
    yield fleet
    fleet.clients.close_all()
    fleet.broker.stop()


def raise_on(device: PahoClient, udid: str, **notification: Any) -> None:
    payload = json.dumps({"notification": notification}).encode()
    device.publish(f"/acme/{udid}/status", payload, qos=1)


def changes(console: PahoClient, count: int) -> list[tuple[str, str]]:
    """The next `count` notification events the owner's console gets: (nid, change)."""
    got = []
    for _ in range(count):
        event = json.loads(console.expect_message().payload)
        got.append((event["nid"], event["change"]))
    return got


def answers(device: PahoClient, count: int) -> list[dict]:
    """The next `count` answers the device gets, each checked to come at QoS 2."""
    got = []
    for _ in range(count):
        message = device.expect_message()
        assert message.qos == 2, message
        got.append(json.loads(message.payload)["notification"])
    return got


def test_three_pending_answered_out_of_order_each_reach_the_device_once_at_qos_2(
        fleet: NotifyFleet):
    console = fleet.console("acme", "acme-console")
    console.subscribe("$events/acme/+/notification", qos=1)
    device = fleet.firmware("acme", "d1")
    device.subscribe("/acme/d1", qos=2)
    raise_on(device, "d1", body="Door open 3 h: close it?", response_type="bool", nid="door")
    raise_on(device, "d1", body="Which mode?", response_type="choice", choices=["eco", "boost"])
    raise_on(device, "d1", body="Name the room", response_type="string")
    assert changes(console, 3) == [("door", "raised"), ("n1", "raised"), ("n2", "raised")]
    pending = fleet.listed(state="pending", udid="d1")
    assert [n["nid"] for n in pending] == ["door", "n1", "n2"]
    assert pending[1]["choices"] == ["eco", "boost"] and pending[0]["direction"] == "from_device"
    # A wrong answer is refused and changes nothing.
    status, body = fleet.answer("door", "maybe")
    assert (status, body["error"]["code"]) == (400, "response_invalid")
    for nid, response in [("n2", "porch"), ("door", True), ("n1", "boost")]:
        status, body = fleet.answer(nid, response)
        assert status == 200 and body["state"] == "answered", body
    assert answers(device, 3) == [
        {"nid": "n2", "response": "porch"},
        {"nid": "door", "response": True},
        {"nid": "n1", "response": "boost"},
    ]
    device.expect_no_message()
    # Each answer is answered, then delivered (the device's PUBCOMP), once.
    got = changes(console, 6)
    for nid in ["door", "n1", "n2"]:
        assert [c for n, c in got if n == nid] == ["answered", "delivered"], got
    assert all(n["delivered"] for n in fleet.listed(udid="d1"))
    # A second answer is refused, and the device gets nothing more.
    status, body = fleet.answer("door", False)
    assert (status, body["error"]["code"]) == (409, "notification_closed")
    device.expect_no_message()


def test_an_answer_queued_while_the_device_sleeps_reaches_it_after_kill_9(fleet: NotifyFleet):
    device = fleet.sleeper("acme", "d1")
    raise_on(device, "d1", body="Door open: close it?", nid="door")
    device.disconnect()
    status, body = fleet.answer("door", True)
    assert status == 200 and "delivered" not in body, body
    # The answer is durable once answered: the broker is killed, and comes back.
    fleet.broker.kill()
    fleet.start()
    [answered] = fleet.listed(udid="d1")
    assert answered["state"] == "answered" and "delivered" not in answered
    device = fleet.firmware("acme", "d1", clean=False)
    assert answers(device, 1) == [{"nid": "door", "response": True}]
    device.expect_no_message()
    # Answered once: a second answer after the restart is refused too.
    status, body = fleet.answer("door", False)
    assert status == 409, body


def test_an_answer_reaches_a_device_over_its_http_mailbox(fleet: NotifyFleet):
    # Added with its key `d:k1`, which acts as the device: its channel and status are its own.
    status, added = fleet.call("POST", "/v1/admin/devices",
                               {"owner": "acme", "udid": "k1", "credential": "key"})
    assert status == 200, added
    http = Device(fleet.broker.http_url, "d:k1", added["key"]["secret"])
    assert http.subscribe("/acme/k1", qos=2).status == 200
    raise_ = {"notification": {"body": "Refill the tank?", "nid": "tank"}}
    assert http.publish("/acme/k1/status", json.dumps(raise_).encode()).status == 200
    [pending] = fleet.listed(udid="k1")
    assert pending["state"] == "pending"
    status, body = fleet.answer("tank", True)
    assert status == 200, body
    polled = http.poll().json()
    [message] = polled["messages"]
    assert message["topic"] == "/acme/k1" and message["qos"] == 2
    assert json.loads(message["payload"]) == {"notification": {"nid": "tank", "response": True}}
    assert http.settle(ack=polled["next_ack"]).status == 200
    [done] = fleet.listed(udid="k1")
    assert done["delivered"], done


def test_a_device_without_a_mailbox_raises_one_over_http(fleet: NotifyFleet):
    console = fleet.console("acme", "acme-console")
    console.subscribe("$events/acme/+/notification", qos=1)
    status, added = fleet.call("POST", "/v1/admin/devices",
                               {"owner": "acme", "udid": "k2", "credential": "key"})
    assert status == 200, added
    http = Device(fleet.broker.http_url, "d:k2", added["key"]["secret"])
    raise_ = {"notification": {"body": "Water the plants?", "nid": "water"}}
    assert http.publish("/acme/k2/status", json.dumps(raise_).encode()).status == 200
    assert changes(console, 1) == [("water", "raised")]
    [pending] = fleet.listed(udid="k2")
    assert (pending["nid"], pending["state"], pending["direction"]) == (
        "water", "pending", "from_device")


def test_an_unanswered_notification_expires(fleet: NotifyFleet):
    console = fleet.console("acme", "acme-console")
    console.subscribe("$events/acme/+/notification", qos=1)
    device = fleet.firmware("acme", "d1")
    device.subscribe("/acme/d1", qos=2)
    raise_on(device, "d1", body="Still there?", nid="ping", ttl=1)
    assert changes(console, 1) == [("ping", "raised")]
    # The broker's own clock runs it out.
    assert changes(console, 1) == [("ping", "expired")]
    status, body = fleet.answer("ping", True)
    assert (status, body["error"]["code"]) == (409, "notification_closed")
    assert fleet.listed(state="expired")[0]["nid"] == "ping"
    device.expect_no_message()


def test_an_operator_asks_a_device_and_sees_it_acknowledged_and_answered(fleet: NotifyFleet):
    console = fleet.console("acme", "acme-console")
    console.subscribe("$events/acme/+/notification", qos=1)
    device = fleet.firmware("acme", "d1", version=5)
    device.subscribe("/acme/d1", qos=2)
    status, asked = fleet.call("POST", NOTIFICATIONS, {
        "udid": "d1", "body": "Reboot now?", "response_type": "choice",
        "choices": ["now", "tonight"]})
    assert status == 200 and asked["direction"] == "to_device", asked
    nid = asked["nid"]
    assert answers(device, 1) == [{"nid": nid, "body": "Reboot now?", "response_type": "choice",
                                   "choices": ["now", "tonight"]}]
    assert changes(console, 2) == [(nid, "asked"), (nid, "delivered")]
    # The device answers on its status channel.
    raise_on(device, "d1", nid=nid, response="tonight")
    assert changes(console, 1) == [(nid, "answered")]
    [done] = fleet.listed(udid="d1")
    assert done["state"] == "answered" and done["response"] == "tonight" and done["delivered"]


def test_under_mqtt_5_the_owner_answers_over_mqtt_with_the_correlation_data(fleet: NotifyFleet):
    device = fleet.firmware("acme", "d1", version=5)
    device.subscribe("/acme/d1", qos=2)
    payload = json.dumps({"notification": {"body": "Lock the door?"}}).encode()
    device.publish("/acme/d1/status", payload, qos=1,
                   properties=publish_properties(CorrelationData=b"req-42"))
    console = fleet.console("acme", "acme-console")
    answer = json.dumps({"notification": {"nid": "n1", "response": True}}).encode()
    console.publish("/acme/d1/answer", answer, qos=1)
    message = device.expect_message()
    assert message.qos == 2 and json.loads(message.payload)["notification"]["nid"] == "n1"
    assert message.properties.CorrelationData == b"req-42"


def test_owner_b_can_neither_list_nor_answer_nor_stream_owner_as(fleet: NotifyFleet):
    device = fleet.firmware("acme", "d1")
    device.subscribe("/acme/d1", qos=2)
    stream = EventStream(fleet, "globex")
    raise_on(device, "d1", body="Door open: close it?", nid="door")
    assert fleet.listed(owner="globex") == []
    assert [n["nid"] for n in fleet.listed(owner="acme")] == ["door"]
    status, body = fleet.answer("door", True, owner="globex")
    assert (status, body["error"]["code"]) == (404, "no_notification")
    status, body = fleet.answer("door", True, owner="globex", udid="d1")
    assert status == 404, body
    status, body = fleet.call("POST", NOTIFICATIONS, {"udid": "d1", "body": "hi"}, "globex")
    assert (status, body["error"]["code"]) == (404, "no_device")
    # Owner B's MQTT console cannot publish an answer into owner A's topics.
    other = fleet.console("globex", "globex-console")
    answer = json.dumps({"notification": {"nid": "door", "response": True}}).encode()
    other.publish("/acme/d1/answer", answer, qos=1)
    device.expect_no_message()
    assert fleet.listed(owner="acme")[0]["state"] == "pending"
    # Owner A's token answers; its event stream carries the change, owner B's does not.
    mine = EventStream(fleet, "acme")
    status, _ = fleet.answer("door", True, owner="acme")
    assert status == 200
    assert mine.next_notification() == ("door", "answered")
    assert answers(device, 1) == [{"nid": "door", "response": True}]
    assert mine.next_notification() == ("door", "delivered")
    stream.expect_no_notification()


class EventStream:
    """`GET /v1/events` with an owner's token, read line by line."""

    def __init__(self, fleet: NotifyFleet, owner: str):
        url = urllib.parse.urlsplit(fleet.broker.http_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
        self.connection.request("GET", "/v1/events?events=1", headers={
            "Authorization": f"Bearer {fleet.owner_tokens[owner]}"})
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        # The stream is open (nothing after this is missed) once it says so.
        assert self.response.readline() == b": watching\n"

    def next_notification(self) -> tuple[str, str]:
        """The next notification event: (nid, change); other events are passed over."""
        name = ""
        while True:
            line = self.response.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: ") and name == "notification":
                data = json.loads(line[len("data: "):])
                return data["nid"], data["change"]

    def expect_no_notification(self) -> None:
        """Ends the stream after a keep-alive round and checks it carried no notification:
        a stream of the broker's events is read up to what it holds now."""
        self.connection.sock.settimeout(0.5)
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                assert b"notification" not in line, line
        except TimeoutError:
            pass
        finally:
            self.connection.close()
