"""`GET /metrics` (scope `metrics`): the Prometheus text format with messages in and out by QoS,
bytes, queue depths, each listener's open connections, the process's memory, the store's
commit time histogram and HTTP requests by route and status, read with curl and urllib; no
token, and a token without the scope, get nothing.
"""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import time
import urllib.request

import pytest

from http_support import Device, error_code, ok
from support import BROKER_KIND, TIMEOUT, Names, connect_properties
from test_19_http_admin import Ops, code, ops  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


def scrape(ops: Ops, token: str = "root") -> dict[str, float]:
    request = urllib.request.Request(ops.broker.http_url + "/metrics",
                                     headers={"Authorization": f"Bearer {ops.tokens[token]}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = re.fullmatch(r"(\S+) (\S+)", line)
        assert match, line
        samples[match.group(1)] = float(match.group(2))
    return samples


def test_messages_bytes_queues_commits_and_requests_are_counted(ops: Ops, names: Names):
    before = scrape(ops)
    topic = f"m/{names.tag}"
    subscriber = ops.clients.connected(names.client("s"), clean=False,
                                       properties=connect_properties(SessionExpiryInterval=600))
    subscriber.subscribe(topic, qos=2)
    publisher = ops.clients.connected(names.client("p"))
    for qos in (0, 1, 2):
        publisher.publish(topic, b"live", qos=qos)
        subscriber.expect_message()
    subscriber.disconnect()
    for _ in range(2):
        publisher.publish(topic, b"queued", qos=1)
    assert code(ops.call("GET", "/v1/no-such-route")) == (404, "not_found")
    after = scrape(ops)

    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert [delta(f'tern_messages_received_total{{qos="{q}"}}') for q in (0, 1, 2)] == [1, 3, 1]
    assert [delta(f'tern_messages_sent_total{{qos="{q}"}}') for q in (0, 1, 2)] == [1, 1, 1]
    assert delta("tern_bytes_received_total") > 0 and delta("tern_bytes_sent_total") > 0
    assert after['tern_queue_messages{state="queued"}'] == 2
    assert after["tern_sessions"] == 2 and after["tern_connections"] == 1
    # The subscription and the session were made durable: group commits were timed.
    assert delta("tern_store_commit_seconds_count") > 0
    assert after['tern_store_commit_seconds_bucket{le="+Inf"}'] == \
        after["tern_store_commit_seconds_count"]
    assert after['tern_http_requests_total{route="unmatched",method="GET",status="404"}'] == 1
    assert after['tern_http_requests_total{route="/metrics",method="GET",status="200"}'] == 1
    assert after['tern_http_refused_total{code="not_found"}'] == 1


def test_mailbox_polls_are_counted_by_route_and_status_like_every_request(ops: Ops,
                                                                        names: Names):
    """A long poll is served off the router's path (it waits as a small entry, not as the
    router's futures); it is counted and its refusals logged all the same."""
    before = scrape(ops)
    dev = Device(ops.broker.http_url, "d:acme-1", ops.device_secret)
    assert error_code(dev.poll()) == "no_mailbox"
    ok(dev.subscribe(f"acme/{names.tag}/#"))
    assert ok(dev.poll())["messages"] == []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        # The later of two long polls takes the earlier's place (answered 409 at once): once
        # one answer is in, the other is waiting. One client object each (nonces).
        polls = [pool.submit(Device(ops.broker.http_url, "d:acme-1", ops.device_secret).poll,
                             wait=30) for _ in range(2)]
        done, waiting = concurrent.futures.wait(
            polls, timeout=TIMEOUT, return_when=concurrent.futures.FIRST_COMPLETED)
        assert error_code(done.pop().result()) == "poll_superseded"
        publisher = ops.clients.connected(names.client("p"))
        publisher.publish(f"acme/{names.tag}/x", b"woken", qos=1)
        polled = ok(waiting.pop().result(timeout=TIMEOUT))
    assert [m["payload"] for m in polled["messages"]] == ["woken"]
    after = scrape(ops)

    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert delta('tern_http_requests_total{route="/v1/mbox",method="GET",status="200"}') == 2
    assert delta('tern_http_requests_total{route="/v1/mbox",method="GET",status="404"}') == 1
    assert delta('tern_http_requests_total{route="/v1/mbox",method="GET",status="409"}') == 1
    assert delta('tern_http_refused_total{code="no_mailbox"}') == 1
    assert delta('tern_http_refused_total{code="poll_superseded"}') == 1


def test_curl_scrapes_and_attackers_get_nothing(ops: Ops):
    url = ops.broker.http_url + "/metrics"
    scraped = subprocess.run(
        ["curl", "-sS", "-H", f"Authorization: Bearer {ops.tokens['root']}", url],
        capture_output=True, text=True, timeout=TIMEOUT, check=True)
    assert "# TYPE tern_store_commit_seconds histogram" in scraped.stdout
    assert code(ops.call("GET", "/metrics", None)) == (401, "token_missing")
    assert code(ops.call("GET", "/metrics", "reader")) == (403, "scope_denied")
    assert code(ops.call("GET", "/metrics", "tot1.x." + "0" * 64)) == (401, "token_invalid")


def test_each_listener_counts_its_open_connections_and_the_process_its_memory(ops: Ops,
                                                                             names: Names):
    broker = ops.broker
    series = f'tern_listener_connections{{protocol="mqtt",address="{broker.host}:{broker.port}"}}'
    before = scrape(ops)
    client = ops.clients.connected(names.client("l"))
    during = scrape(ops)
    assert during[series] == before[series] + 1
    client.disconnect()
    # The count falls once the broker's connection task has ended, soon after the DISCONNECT:
    # scraped again until then (each scrape a round trip to the broker thread).
    deadline = time.monotonic() + TIMEOUT
    while scrape(ops)[series] != before[series]:
        assert time.monotonic() < deadline, f"{series} still counts the closed connection"
    # Any running broker holds megabytes: a zero or a few bytes would be a misread.
    assert during["process_resident_memory_bytes"] > 1024 * 1024
