"""The HTTP bridge, driven as devices drive it: the reference client (examples/http_device.py)
and curl publish single messages and batches at QoS 0/1/2 with retain, TTL and properties, and
an MQTT subscriber (paho) receives them; then every attack the signing scheme exists for is
tried, each getting its documented error: a bad signature, a signed request altered in its
method, path, query, body or a signed header, a replayed nonce, a stale time, a counter going
backwards, an unknown key, revoked and rotated secrets, ACL denials, an oversized body and a
slowloris client.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from conftest import Broker, BrokerError
from http_support import Device, HttpBroker, add_key, error_code, tern
from support import BROKER_KIND, TIMEOUT, Names

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")

BODY_MAX = 4096
HEADER_TIMEOUT = 1


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HttpBroker, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("tern-http-")
    data = workdir / "tern-data"
    secrets = {
        "d:dev1": add_key(data, "d:dev1"),
        "d:pub-only": add_key(data, "d:pub-only", "--publish", "http/%c/#"),
        "a:fleet": add_key(data, "a:fleet", "--both", "http/fleet/%c/#"),
    }
    options = {"http": {"body_max_bytes": BODY_MAX, "header_timeout_secs": HEADER_TIMEOUT}}
    broker = HttpBroker("tern", workdir, options)
    try:
        broker.start()
    except BrokerError as err:
        pytest.fail(f"could not start the broker:\n{err}", pytrace=False)
    yield broker, secrets
    broker.stop()


@pytest.fixture
def broker(bridge: tuple[HttpBroker, dict[str, str]]) -> HttpBroker:
    return bridge[0]


def device(bridge: tuple[HttpBroker, dict[str, str]], key: str = "d:dev1",
           **options: Any) -> Device:
    broker, secrets = bridge
    return Device(broker.http_url, key, secrets[key], **options)


# -- publishing -------------------------------------------------------------------------------

@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_single_publish_reaches_an_mqtt_subscriber_with_its_properties(bridge, clients,
                                                                       names: Names, qos: int):
    topic = f"http/{names.tag}/t"
    subscriber = clients.subscriber(names.client("s"), topic, qos=2)
    dev = device(bridge)
    response = dev.publish(topic, b'{"t": 21.5}', qos=qos, ttl=600, age=60,
                           content_type="application/json", response_topic="replies/dev1",
                           correlation_data=b"7F3A:12", user_properties=[("fw", "1.7.24")])
    assert response.status == 200, response.body
    assert response.json() == {"qos": qos, "matched": 1}
    message = subscriber.expect_message()
    assert (message.topic, message.payload, message.qos) == (topic, b'{"t": 21.5}', qos)
    props = message.properties
    assert props.ContentType == "application/json"
    assert props.PayloadFormatIndicator == 1
    assert props.ResponseTopic == "replies/dev1"
    assert props.CorrelationData == b"7F3A:12"
    assert 0 < props.MessageExpiryInterval <= 540
    pairs = dict(message.user_properties)
    assert pairs["fw"] == "1.7.24"
    assert abs(int(pairs["tern-captured-at"]) - (time.time() - 60)) < 30


def test_zero_matches_is_an_answer_and_retained_messages_wait_for_subscribers(bridge, clients,
                                                                            names: Names):
    topic = f"http/{names.tag}/config"
    dev = device(bridge)
    response = dev.publish(topic, b"interval=60", qos=1, retain=True)
    assert (response.status, response.json()) == (200, {"qos": 1, "matched": 0})
    late = clients.subscriber(names.client("late"), topic, qos=1)
    message = late.expect_message()
    assert (message.payload, message.retain) == (b"interval=60", True)


def test_a_batch_publishes_each_message_or_with_atomic_all_or_none(bridge, clients, names: Names):
    base = f"http/{names.tag}"
    subscriber = clients.subscriber(names.client("s"), f"{base}/#", qos=2)
    dev = device(bridge)
    response = dev.publish_batch([
        {"topic": f"{base}/a", "payload": {"t": 21.5}, "qos": 0},
        {"topic": f"{base}/b", "payload_b64": "AQID", "qos": 2, "retain": True,
         "user_properties": [["unit", "C"]]},
    ])
    assert response.status == 200, response.body
    assert [r["matched"] for r in response.json()["results"]] == [1, 1]
    got = sorted((m.topic, m.payload) for m in
                 (subscriber.expect_message(), subscriber.expect_message()))
    assert got == [(f"{base}/a", b'{"t":21.5}'), (f"{base}/b", b"\x01\x02\x03")]

    # The publish-only key may not write outside http/pub-only/: with atomic=1 nothing goes.
    limited = device(bridge, "d:pub-only")
    own = f"http/pub-only/{names.tag}"
    watch = clients.subscriber(names.client("w"), own, qos=1)
    items = [{"topic": own, "payload": "1"}, {"topic": f"{base}/x", "payload": "2"}]
    response = limited.publish_batch(items, atomic=True)
    assert response.status == 403 and error_code(response) == "acl_denied", response.body
    assert [r["ok"] for r in response.json()["results"]] == [False, False]
    watch.expect_no_message()
    subscriber.expect_no_message()
    response = limited.publish_batch(items)
    assert response.status == 207, response.body
    assert [r["ok"] for r in response.json()["results"]] == [True, False]
    assert watch.expect_message().topic == own
    subscriber.expect_no_message()


def test_qos2_sent_again_is_answered_again_and_never_published_twice(bridge, clients,
                                                                  names: Names):
    topic = f"http/{names.tag}/once"
    subscriber = clients.subscriber(names.client("s"), topic, qos=2)
    dev = device(bridge)
    path = f"/v1/pub/{topic}?qos=2"
    headers = dev.signed_headers("POST", path, b"once")
    first = dev.send("POST", path, headers, b"once")
    again = dev.send("POST", path, headers, b"once")
    assert first.status == again.status == 200
    assert again.body == first.body and again.replayed and not first.replayed
    # The answer again is signed anew, still bound to the request.
    dev.check(again, dict(headers)["Tern-Signature"][3:])
    assert subscriber.expect_message().payload == b"once"
    subscriber.expect_no_message()
    # The same nonce on another request is refused.
    other = dev.signed_headers("POST", path, b"twice", nonce=dict(headers)["Tern-Nonce"])
    reused = dev.send("POST", path, other, b"twice")
    assert (reused.status, error_code(reused)) == (409, "nonce_reused")


def test_an_app_key_speaks_for_the_client_it_names(bridge, clients, names: Names):
    guid = f"g{names.tag}"
    subscriber = clients.subscriber(names.client("s"), f"http/fleet/{guid}/#", qos=1)
    app = device(bridge, "a:fleet", client=guid)
    response = app.publish(f"http/fleet/{guid}/t", b"1")
    assert (response.status, response.json()["matched"]) == (200, 1)
    assert subscriber.expect_message().payload == b"1"
    # Its grants follow the client it names: another device's topics are not its own.
    response = app.publish(f"http/fleet/other/t", b"1")
    assert (response.status, error_code(response)) == (403, "acl_denied")


def test_curl_with_headers_from_tern_http_sign(bridge, clients, names: Names, tmp_path: Path):
    broker, secrets = bridge
    topic = f"http/{names.tag}/curl"
    subscriber = clients.subscriber(names.client("s"), topic, qos=1)
    body = tmp_path / "body"
    body.write_bytes(b"from curl")
    path = f"/v1/pub/{topic}?qos=1"
    headers = tern("http", "sign", "POST", path, "--key", "d:dev1",
                   "--secret", secrets["d:dev1"], "--body", str(body)).splitlines()
    command = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST",
               "--data-binary", f"@{body}"]
    for header in headers:
        command += ["-H", header]
    out = subprocess.run(command + [broker.http_url + path], capture_output=True, text=True,
                         timeout=30).stdout
    answer, status = out.rsplit("\n", 1)
    assert status == "200", out
    assert '"matched":1' in answer
    assert subscriber.expect_message().payload == b"from curl"


def test_the_time_endpoint_answers_the_challenge_signed(bridge):
    dev = device(bridge)
    assert abs(dev.broker_time() - time.time()) < 30
    # An unknown key gets an answer that looks the same (two signatures), which it cannot check.
    stranger = Device(bridge[0].http_url, "d:nobody", "00" * 32)
    response = stranger.send("GET", "/v1/time?challenge=" + "ab" * 8, [("Tern-Key", "d:nobody")])
    assert response.status == 200
    assert len(response.headers["tern-response-signature"].split(",")) == 2


# -- attacks ------------------------------------------------------------------------------------

def refused(dev: Device, method: str, path: str, headers: list[tuple[str, str]],
            body: bytes = b"") -> tuple[int, Optional[str]]:
    response = dev.send(method, path, headers, body)
    return response.status, error_code(response)


def test_a_bad_signature_and_an_unknown_key_get_the_same_answer(bridge, names: Names):
    dev = device(bridge)
    path = f"/v1/pub/http/{names.tag}/x?qos=1"
    headers = dev.signed_headers("POST", path, b"x")
    name, value = headers[-1]
    flipped = value[:-1] + ("0" if value[-1] != "0" else "1")
    bad = dev.send("POST", path, headers[:-1] + [(name, flipped)], b"x")
    stranger = Device(dev.url, "d:nobody", "11" * 32)
    unknown = stranger.send("POST", path, stranger.signed_headers("POST", path, b"x"), b"x")
    assert bad.status == unknown.status == 401
    assert bad.body == unknown.body
    assert error_code(bad) == "signature_invalid"
    missing = dev.send("POST", path, headers[:2], b"x")
    assert (missing.status, error_code(missing)) == (401, "signature_missing")


@pytest.mark.parametrize("change", ["method", "path", "query", "body", "header"])
def test_a_signed_request_altered_in_transit_is_refused(bridge, names: Names, change: str):
    dev = device(bridge)
    path = f"/v1/pub/http/{names.tag}/x?qos=1"
    extra = [("Mqtt-User-Property", "a=1")]
    # Signed as a GET (a harmless read, once routes have one), sent as the POST it is not.
    signed_as = "GET" if change == "method" else "POST"
    headers = dev.signed_headers(signed_as, path, b"x", extra)
    method, body = "POST", b"x"
    if change == "method":
        pass
    elif change == "path":
        path = path.replace("/x?", "/y?")
    elif change == "query":
        path = path.replace("qos=1", "qos=0")
    elif change == "body":
        body = b"y"
    else:
        headers = [(n, "a=2" if n == "Mqtt-User-Property" else v) for n, v in headers]
    assert refused(dev, method, path, headers, body) == (401, "signature_invalid")


def test_replays_stale_times_and_counters_going_back_are_refused(bridge, names: Names):
    dev = device(bridge)
    path = f"/v1/pub/http/{names.tag}/x?qos=1"
    headers = dev.signed_headers("POST", path, b"x")
    assert dev.send("POST", path, headers, b"x").status == 200
    assert refused(dev, "POST", path, headers, b"x") == (401, "nonce_replayed")
    stale = dev.signed_headers("POST", path, b"x", when=str(int(time.time()) - 3600))
    assert refused(dev, "POST", path, stale, b"x") == (401, "time_skew")
    clockless = device(bridge, counter=0x100, clock=False)
    assert clockless.publish(f"http/{names.tag}/x", b"x").status == 200
    back = clockless.signed_headers("POST", path, b"x", nonce="c:ff")
    assert refused(clockless, "POST", path, back, b"x") == (401, "nonce_replayed")
    assert clockless.publish(f"http/{names.tag}/x", b"x").status == 200
    no_clock = dev.signed_headers("POST", path, b"x", when="-")
    assert refused(dev, "POST", path, no_clock, b"x") == (400, "bad_request")


def test_rotated_secrets_both_work_until_the_old_one_is_revoked(bridge, names: Names):
    broker, secrets = bridge
    data = broker.workdir / "tern-data"
    key = f"d:rot{names.tag}"
    broker.mark()
    old = add_key(data, key)
    broker.wait_for_output(r"HTTP keys reloaded")
    topic = f"http/{names.tag}/r"
    assert Device(broker.http_url, key, old).publish(topic, b"1").status == 200
    broker.mark()
    new = tern("key", "rotate", key, "--data-dir", str(data)).split()[-1]
    broker.wait_for_output(r"HTTP keys reloaded")
    for secret in (old, new):
        assert Device(broker.http_url, key, secret).publish(topic, b"1").status == 200
    broker.mark()
    tern("key", "revoke", key, "--secret", "1", "--data-dir", str(data))
    broker.wait_for_output(r"HTTP keys reloaded")
    stale = Device(broker.http_url, key, old, verify_responses=False).publish(topic, b"1")
    assert (stale.status, error_code(stale)) == (401, "signature_invalid")
    assert Device(broker.http_url, key, new).publish(topic, b"1").status == 200
    broker.mark()
    tern("key", "revoke", key, "--data-dir", str(data))
    broker.wait_for_output(r"HTTP keys reloaded")
    gone = Device(broker.http_url, key, new, verify_responses=False).publish(topic, b"1")
    assert (gone.status, error_code(gone)) == (401, "signature_invalid")


def test_acl_denials_and_reserved_topics(bridge, names: Names):
    limited = device(bridge, "d:pub-only")
    response = limited.publish(f"http/{names.tag}/elsewhere", b"x")
    assert (response.status, error_code(response)) == (403, "acl_denied")
    response = device(bridge).publish("$SYS/broker/uptime", b"0")
    assert (response.status, error_code(response)) == (400, "topic_invalid")


def test_an_oversized_body_is_refused_before_it_is_sent(bridge):
    broker, _ = bridge
    host, port = broker.http_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        # Only the headers: the answer comes without a byte of the declared body.
        sock.sendall(b"POST /v1/pub/http/big HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n" % (BODY_MAX * 100))
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b'"payload_too_large"' in answer


def test_a_slowloris_client_is_cut_off(bridge):
    broker, _ = bridge
    host, port = broker.http_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v1/pub/http/slow HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        # The broker closes it (an empty read, or a reset) once the header time-out passes;
        # TIMEOUT bounds the wait.
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        waited = time.monotonic() - started
    assert waited < TIMEOUT, f"still open after {waited:.1f} s"


def test_refused_requests_are_logged_with_their_reason(bridge):
    broker, _ = bridge
    stranger = Device(broker.http_url, "d:nobody", "22" * 32, verify_responses=False)
    broker.mark()
    stranger.publish("http/x", b"x")
    broker.wait_for_output(r"HTTP request refused: signature_invalid \(401\) POST /v1/pub/http/x")


class ConfiguredBroker(HttpBroker):
    """A broker whose listeners all come from its configuration file (no listener flags)."""

    def _tern_command(self) -> list[str]:
        command = Broker._tern_command(self)
        at = command.index("--bind")
        return command[:at] + command[at + 4:]


def https_broker(tmp_path: Path) -> tuple[ConfiguredBroker, Path]:
    """A broker with an MQTT listener and an HTTPS one (a self-signed certificate for
    127.0.0.1, returned for clients to trust), started."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    options = {"listener": [
        {"bind": "127.0.0.1:0"},
        {"bind": "127.0.0.1:0", "protocol": "https", "cert": str(cert), "key": str(key)},
    ]}
    broker = ConfiguredBroker("tern", tmp_path, options)
    try:
        broker.start()
    except BrokerError as err:
        pytest.fail(f"could not start the broker:\n{err}", pytrace=False)
    return broker, cert


def test_https_serves_the_bridge_with_the_tls_settings_of_mqtts(tmp_path: Path, clients,
                                                               names: Names):
    import ssl
    secret = add_key(tmp_path / "tern-data", "d:tls1")
    broker, cert = https_broker(tmp_path)
    try:
        assert broker.http_url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        dev = Device(broker.http_url, "d:tls1", secret, ssl_context=context)
        clients.broker = broker
        topic = f"http/{names.tag}/tls"
        subscriber = clients.subscriber(names.client("s"), topic, qos=1)
        assert dev.publish(topic, b"secure").json() == {"qos": 1, "matched": 1}
        assert subscriber.expect_message().payload == b"secure"
    finally:
        broker.stop()
