"""The HTTP bridge's replay guard survives the broker: captured requests sent again after a
restart (SIGTERM) or a crash (`kill -9`), against the real binary with its default durability,
get what they got before the broker stopped. A counter-mode request and a random-nonce request
are refused (`nonce_replayed`); a QoS 2 publish is answered again from the stored record (the
same answer, `Tern-Replayed: 1`) and not published a second time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import BrokerError
from http_support import Device, HttpBroker, add_key, error_code
from support import BROKER_KIND, Clients, Names

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


@pytest.mark.parametrize("stop", ["restart", "kill -9"])
def test_captured_requests_stay_spent_across_a_restart(tmp_path: Path, names: Names, stop: str):
    secret = add_key(tmp_path / "tern-data", "d:dev1")
    broker = HttpBroker("tern", tmp_path)
    try:
        broker.start()
    except BrokerError as err:
        pytest.fail(f"could not start the broker:\n{err}", pytrace=False)
    clients = Clients(broker)
    try:
        topic = f"http/{names.tag}/t"
        path = f"/v1/pub/{topic}?qos=1"
        clockless = Device(broker.http_url, "d:dev1", secret, counter=0x40, clock=False)
        counted = clockless.signed_headers("POST", path, b"counted")
        assert clockless.send("POST", path, counted, b"counted").status == 200
        timed = Device(broker.http_url, "d:dev1", secret)
        random = timed.signed_headers("POST", path, b"random")
        assert timed.send("POST", path, random, b"random").status == 200
        once_path = f"/v1/pub/{topic}?qos=2"
        once = timed.signed_headers("POST", once_path, b"once")
        first = timed.send("POST", once_path, once, b"once")
        assert first.status == 200 and not first.replayed, first.body

        if stop == "restart":
            broker.stop()
        else:
            broker.kill()
        broker.start()
        for dev in (clockless, timed):
            dev.url = broker.http_url
        subscriber = clients.subscriber(names.client("s"), topic, qos=2)

        for headers, body in ((counted, b"counted"), (random, b"random")):
            again = timed.send("POST", path, headers, body)
            assert (again.status, error_code(again)) == (401, "nonce_replayed"), again.body
        again = timed.send("POST", once_path, once, b"once")
        assert again.status == 200 and again.replayed, again.body
        assert again.body == first.body
        timed.check(again, dict(once)["Tern-Signature"][3:])
        # Nothing was published again: the next message the subscriber gets is a new one.
        assert clockless.publish(topic, b"next").status == 200
        assert subscriber.expect_message().payload == b"next"
    finally:
        clients.close_all()
        broker.stop()
