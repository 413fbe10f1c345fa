"""Two Tern nodes joined through one nats-server with JetStream, driven by paho: QoS 2
publishers (MQTT 5 and 3.1.1) on one node, a QoS 2 subscriber on the other, every message once
and in order; a `$share` group with a member on each node, each message to one of them.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Broker, _start, free_port
from support import (BROKER_KIND, TIMEOUT, Clients, Names, expect_no_message, merge_messages,
                     next_from)

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="cluster mode is Tern's")

NATS_READY = "Server is ready"


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nats-server with JetStream on a free loopback port, ready."""
    binary = shutil.which("nats-server")
    assert binary, "nats-server is installed (scripts/setup-test-deps.sh)"
    store = tmp_path_factory.mktemp("nats-")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # ends when the server exits
        seen.append(line)
        if NATS_READY in line:
            break
    else:
        pytest.fail("nats-server did not start:\n" + "".join(seen))
    # Its further output is read and dropped, so a full pipe never stops it.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    yield f"nats://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=TIMEOUT)


def node(nats_url: str, node_id: str, workdir: Path) -> Broker:
    return _start("tern", workdir, {"cluster": {"nats": [nats_url], "node_id": node_id}})


@pytest.fixture(scope="module")
def nodes(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Broker]]:
    started = [node(nats_url, f"n{n}", tmp_path_factory.mktemp(f"n{n}-")) for n in (1, 2)]
    yield started
    for broker in started:
        broker.stop()


@pytest.mark.parametrize("version", [5, 4])
def test_qos2_publishes_reach_a_subscriber_on_another_node_once_in_order(
        nodes: list[Broker], names: Names, version: int) -> None:
    n1, n2 = nodes
    topic = names.topic("q2")
    subscriber = Clients(n2).connected(names.client("sub"))
    publisher = Clients(n1).connected(names.client("pub"), version=version)
    try:
        assert subscriber.subscribe(topic, 2) == [2]
        for n in range(20):
            # Returns once PUBCOMP came: the whole QoS 2 exchange, across NATS.
            publisher.publish(topic, str(n).encode(), qos=2)
        got = [subscriber.expect_message() for _ in range(20)]
        assert [m.payload for m in got] == [str(n).encode() for n in range(20)]
        assert all(m.qos == 2 for m in got)
        # Nothing came twice: a marker published after them is next.
        publisher.publish(topic, b"end", qos=2)
        assert subscriber.expect_message().payload == b"end"
    finally:
        subscriber.close()
        publisher.close()


@pytest.mark.parametrize("version", [5, 4])
def test_a_shared_group_spread_over_two_nodes_gets_each_message_once(
        nodes: list[Broker], names: Names, version: int) -> None:
    n1, n2 = nodes
    topic = names.topic("shared")
    group = f"$share/{names.client('g')}/{topic}"
    members = [Clients(n).connected(names.client(f"m{i}"), version=version)
               for i, n in enumerate(nodes)]
    publisher = Clients(n1).connected(names.client("pub"))
    try:
        for member in members:
            assert member.subscribe(group, 1) == [1]
        merged = merge_messages(*members)
        for n in range(40):
            publisher.publish(topic, str(n).encode(), qos=1)
        got = [next_from(merged) for _ in range(40)]
        expect_no_message(merged)
        assert sorted(int(m.payload) for _, m in got) == list(range(40))
        by_member = {member.client_id: 0 for member in members}
        for member_id, _ in got:
            by_member[member_id] += 1
        # NATS picks one node per message at random: both get some.
        assert all(count > 0 for count in by_member.values()), by_member
    finally:
        for member in members:
            member.close()
