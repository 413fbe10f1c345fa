"""`GET /v1/events`: live messages by filter and broker events (connected, disconnected,
refused) as Server-Sent Events, read with curl and with a plain socket reader; keep-alive
comments; a reader that falls behind is dropped while its publisher goes on. And as an
attacker: no token, a token without the `events` scope, filters outside the token's topics
(wildcards, `$share/`, `$tree/`, `$SYS`), and another tenant's clients' events.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

import pytest

import mqtt_raw
from support import BROKER_KIND, TIMEOUT, Names
from test_19_http_admin import Ops, code

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


class EventOps(Ops):
    """`Ops` with two more tokens: `watcher` (events only, the whole broker) and `acme-ev`
    (events for clients `acme-*` and topics `acme/#`)."""

    def start(self) -> None:
        if "watcher" not in self.tokens:
            self.tokens["watcher"] = self.token("watcher", "events")
            self.tokens["acme-ev"] = self.token("acme-ev", "events", "--clients", "acme-",
                                                "--topic", "acme/#")
        super().start()


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[EventOps]:
    ops = EventOps(tmp_path)
    yield ops
    ops.clients.close_all()
    ops.broker.stop()


class Stream:
    """An open event stream, read frame by frame with a deadline."""

    def __init__(self, ops: Ops, token: str, **query: object):
        url = urllib.parse.urlsplit(ops.broker.http_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
        params = [(k, v) for k, vs in query.items()
                  for v in (vs if isinstance(vs, list) else [vs])]
        path = "/v1/events?" + urllib.parse.urlencode(params)
        self.connection.request("GET", path, headers={
            "Authorization": f"Bearer {ops.tokens.get(token, token)}"})
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def frame(self) -> Optional[tuple[str, str]]:
        """The next frame: (event name, data), or ("comment", text); None at the end."""
        name, data = "", ""
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if line == "":
                if name or data:
                    return name, data
                continue
            if line.startswith(":"):
                return "comment", line[1:].strip()
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data = value

    def expect(self, name: str) -> dict:
        """Reads up to the next frame named `name` (skipping keep-alive comments), bounded."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            frame = self.frame()
            assert frame is not None, f"the stream ended before an {name!r} event"
            if frame[0] == name:
                return json.loads(frame[1])
            assert frame[0] == "comment", f"expected {name!r}, got {frame}"
        raise AssertionError(f"no {name!r} event in time")

    def opened(self) -> "Stream":
        assert self.status == 200, self.response.read()
        assert self.response.getheader("content-type") == "text/event-stream"
        assert self.frame() == ("comment", "watching")
        # The same as an event, for a browser's EventSource (which shows no comments).
        assert self.frame() == ("ready", "{}")
        return self

    def close(self) -> None:
        self.connection.close()


def test_messages_and_broker_events_stream_live(ops: EventOps, names: Names):
    topic = f"ev/{names.tag}"
    stream = Stream(ops, "watcher", filter=f"{topic}/#").opened()
    client_id = names.client("e")
    client = ops.clients.connected(client_id)
    assert stream.expect("connected") == {"client_id": client_id, "protocol": 5,
                                          "session_present": False}
    client.publish(f"other/{names.tag}", b"not watched", qos=1)
    client.publish(f"{topic}/a", b"watched", qos=1)
    message = stream.expect("message")
    assert (message["topic"], message["payload"], message["qos"]) == \
        (f"{topic}/a", "watched", 1)
    assert "seq" not in message
    client.disconnect()
    disconnected = stream.expect("disconnected")
    assert disconnected["client_id"] == client_id
    assert disconnected["reason"] == "client sent DISCONNECT"
    # A refused connection, with its reason.
    banned = names.client("banned")
    assert ops.call("POST", "/v1/admin/banned", body={"client_id": banned})[0] == 200
    ops.clients.raw_connected(banned, version=mqtt_raw.V5, expect_code=0x8A)
    assert "Banned" in stream.expect("refused")["reason"]
    stream.close()


def test_curl_reads_the_stream_with_keep_alive_comments(ops: EventOps, names: Names):
    topic = f"curl/{names.tag}"
    url = (ops.broker.http_url + "/v1/events?events=0&keepalive=1&filter="
           + urllib.parse.quote(f"{topic}/#", safe=""))
    curl = subprocess.Popen(
        ["curl", "-sSN", "-H", f"Authorization: Bearer {ops.tokens['watcher']}", url],
        stdout=subprocess.PIPE, text=True)
    try:
        assert curl.stdout is not None
        assert curl.stdout.readline() == ": watching\n"
        assert curl.stdout.readline() == "\n"
        assert [curl.stdout.readline() for _ in range(3)] == ["event: ready\n", "data: {}\n",
                                                               "\n"]
        # Nothing happens for a second: a keep-alive comment comes.
        assert curl.stdout.readline() == ": keep-alive\n"
        assert curl.stdout.readline() == "\n"
        ops.clients.connected(names.client("p")).publish(f"{topic}/x", b"hello", qos=0)
        lines = []
        while (line := curl.stdout.readline()) != "\n":
            lines.append(line)
        lines = [l for l in lines if not l.startswith(":")] or lines
        assert lines[0] == "event: message\n"
        assert json.loads(lines[1].removeprefix("data: "))["payload"] == "hello"
    finally:
        curl.kill()
        curl.wait(timeout=TIMEOUT)


def test_a_reader_that_falls_behind_is_dropped_and_never_holds_the_publisher(
        ops: EventOps, names: Names):
    topic = f"slow/{names.tag}"
    stream = Stream(ops, "watcher", filter=topic, events=0).opened()
    # The reader reads nothing more while 24 MB go by: more than the sockets' buffers and
    # its queue hold.
    publisher = ops.clients.connected(names.client("p"))
    payload = b"x" * 60_000
    ops.broker.mark()
    for _ in range(400):
        # Each publish is acknowledged whatever the reader does.
        publisher.publish(topic, payload, qos=1)
    ops.broker.wait_for_output("event stream dropped: its reader fell behind")
    # What was queued for it still arrives, then the stream ends.
    frames = 0
    while (frame := stream.frame()) is not None:
        frames += frame[0] == "message"
    assert 0 < frames < 400
    assert metric(ops, "tern_http_event_streams_dropped_total") == 1
    stream.close()


def metric(ops: Ops, name: str) -> float:
    request = urllib.request.Request(ops.broker.http_url + "/metrics",
                                     headers={"Authorization": f"Bearer {ops.tokens['root']}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_attackers_get_no_stream(ops: EventOps, names: Names):
    url = urllib.parse.urlsplit(ops.broker.http_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    connection.request("GET", "/v1/events")
    answer = connection.getresponse()
    assert (answer.status, json.loads(answer.read())["error"]["code"]) == (401, "token_missing")
    connection.close()
    assert Stream(ops, "tot1.x.y").status == 401

    def refused(token: str, **query: object) -> tuple[int, Optional[str]]:
        stream = Stream(ops, token, **query)
        body = json.loads(stream.response.read())
        stream.close()
        return stream.status, body["error"]["code"]

    assert refused("reader") == (403, "scope_denied")
    for outside in ["other/#", "#", "+/x", "$SYS/#"]:
        assert refused("acme-ev", filter=outside) == (403, "acl_denied"), outside
    assert refused("acme-ev", filter="$share/g/acme/#") == (400, "filter_invalid")
    assert refused("acme-ev", filter="$tree/acme/#") == (400, "filter_invalid")
    assert refused("watcher", filter="a/#/b") == (400, "filter_invalid")

    # A tenant's stream: its own clients' events only, its own topics only.
    stream = Stream(ops, "acme-ev", filter="acme/#").opened()
    other = ops.clients.connected(names.client("other"))
    other.publish("acme/x", b"from outside the realm, on a topic inside it", qos=1)
    mine = ops.clients.connected("acme-" + names.client("mine"))
    mine.publish(f"other/{names.tag}", b"outside the topics", qos=1)
    mine.publish("acme/y", b"inside", qos=1)
    first = stream.frame()
    assert first is not None and first[0] == "message", first
    assert json.loads(first[1])["topic"] == "acme/x"
    assert stream.expect("connected")["client_id"].startswith("acme-")
    assert stream.expect("message")["topic"] == "acme/y"
    stream.close()
    assert code(ops.call("GET", "/v1/admin/clients", "acme-ev")) == (403, "scope_denied")
