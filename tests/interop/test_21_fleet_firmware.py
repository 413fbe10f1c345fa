"""Registrations and firmware offers with paho-mqtt clients acting as THiNX firmware (its
topics and payloads unchanged): a registration on `/<owner>/<udid>/status` is answered on
`/<owner>/<udid>` with OK, and with UPDATE_AVAILABLE naming the newest release of the
catalogue (`tern firmware add`) above the device's version, for its platform, within the
release's rollout: of two devices, the one whose bucket (computed here from the documented
formula) is below a 50 % rollout is offered the release, the other is not, and the device's view
on `GET /v1/fleet/devices/{udid}` says so before it registers. MQTT 5 Correlation
Data comes back with the answer; the registry shows what the device said of itself. Over
HTTP, a device signs `POST /v1/fleet/register` with its own key and reads the same answer in
the response; another key, and a disabled device, are refused. A release's file uploaded with
`tern firmware add --file` is kept by the broker and offered at its own URL: the device
downloads it in two ranges and checks its SHA-256; another owner's device is refused as for an
unknown id; deleting the release deletes the file. An upload over
`http.firmware_file_max_bytes` is refused (413) and logged, whether its length is declared or
it is sent in chunks, and leaves no file behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Union

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from http_support import Device, operator_call
from support import BROKER_KIND, PahoClient
from test_20_fleet import Fleet, fleet, tern_bin  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the device fleet is Tern's")

SHA = "0f" * 32


def registration(version: str) -> bytes:
    """What THiNX firmware sends (the wiki's example, with its version)."""
    return json.dumps({"registration": {
        "mac": "5CCF7FE4631D", "firmware": f"thinx-firmware-esp8266-{version}:2017-07-25",
        "version": version, "commit": "24e715f7fb5dc3ebe228165dae45fa933fade1bd",
        "owner": "acme", "alias": "robotdyn-mega+wifi", "platform": "esp32"}}).encode()


def bucket(udid: str, release_id: str) -> int:
    """docs/fleet.md: the first four bytes of SHA-256(udid "/" id), big-endian, modulo 100."""
    digest = hashlib.sha256(f"{udid}/{release_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def firmware(fleet: Fleet, *args: str) -> dict:
    out = fleet.run("firmware", "--url", fleet.broker.http_url, "--token", fleet.token, *args)
    return json.loads(out)


def add_release(fleet: Fleet, release_id: str, version: str, rollout: int = 100) -> dict:
    return firmware(fleet, "add", release_id, "--platform", "esp32", "--version", version,
                    "--download-url", f"https://firmware.example/{release_id}.bin",
                    "--sha256", SHA, "--size", "412345", "--rollout", str(rollout))


def register(device: PahoClient, udid: str, version: str = "1.7.24") -> dict:
    device.publish(f"/acme/{udid}/status", registration(version), qos=1)
    answer = device.expect_message()
    assert answer.topic == f"/acme/{udid}"
    assert answer.payload.endswith(b"}}"), answer.payload
    return json.loads(answer.payload)["registration"]


def test_a_registration_is_answered_ok_then_offered_the_newest_release(fleet: Fleet):
    device = fleet.firmware("acme", "d1")
    device.subscribe("/acme/d1", qos=1)
    answer = register(device, "d1")
    assert answer["status"] == "OK"
    assert abs(answer["timestamp"] - time.time()) < 60
    shown = fleet.device("show", "d1")
    assert (shown["firmware"], shown["platform"], shown["alias"]) == (
        "1.7.24", "esp32", "robotdyn-mega+wifi")
    add_release(fleet, "fw-1.8.0", "1.8.0")
    add_release(fleet, "fw-1.10.0", "1.10.0")
    add_release(fleet, "fw-1.7.0", "1.7.0")
    answer = register(device, "d1")
    assert answer["status"] == "UPDATE_AVAILABLE"
    assert answer["update"] == {"id": "fw-1.10.0", "version": "1.10.0", "size": 412345,
                                "url": "https://firmware.example/fw-1.10.0.bin", "sha256": SHA}
    # Up to date: OK again.
    assert register(device, "d1", "1.10.0")["status"] == "OK"
    # A release deleted is offered no more.
    assert firmware(fleet, "delete", "fw-1.10.0")["id"] == "fw-1.10.0"
    listed = [r["id"] for r in firmware(fleet, "list")["releases"]]
    assert listed == ["fw-1.7.0", "fw-1.8.0"]
    assert register(device, "d1")["update"]["id"] == "fw-1.8.0"


def test_a_rollout_offers_a_release_to_the_devices_inside_it(fleet: Fleet):
    candidates = [f"r{n}" for n in range(100)]
    inside = next(u for u in candidates if bucket(u, "half") < 50)
    outside = next(u for u in candidates if bucket(u, "half") >= 50)
    add_release(fleet, "half", "2.0.0", rollout=50)
    for udid in [inside, outside]:
        fleet.device("add", "acme", udid, "--password", stdin=f"{udid}-pw\n")
    offers = {}
    for udid in [inside, outside]:
        device = fleet.firmware("acme", udid)
        device.subscribe(f"/acme/{udid}", qos=1)
        offers[udid] = register(device, udid)["status"]
    assert offers == {inside: "UPDATE_AVAILABLE", outside: "OK"}


def test_a_devices_view_names_the_release_the_broker_would_offer_it(fleet: Fleet):
    """`GET /v1/fleet/devices/{udid}`: `offer` is what its registration would be answered
    with now (the same rule, rollout included), `offer_status` why there is none."""
    candidates = [f"v{n}" for n in range(100)]
    inside = [u for u in candidates if bucket(u, "half") < 50][:2]
    outside = next(u for u in candidates if bucket(u, "half") >= 50)
    add_release(fleet, "half", "2.0.0", rollout=50)
    versions = {inside[0]: "1.7.24", inside[1]: "2.0.0", outside: "1.7.24", "bad": "nightly"}
    for udid, version in versions.items():
        fleet.device("add", "acme", udid, "--password", "--platform", "esp32",
                     "--firmware", version, stdin=f"{udid}-pw\n")
    seen = {}
    for udid in versions:
        status, shown = operator_call(fleet.broker.http_url, fleet.token, "GET",
                                      f"/v1/fleet/devices/{udid}")
        assert status == 200, shown
        seen[udid] = (shown["offer_status"], shown["offer"])
    assert seen == {
        inside[0]: ("update_available", {
            "id": "half", "version": "2.0.0", "url": "https://firmware.example/half.bin",
            "sha256": SHA, "size": 412345}),
        inside[1]: ("up_to_date", None),
        outside: ("no_release", None),
        "bad": ("unversioned", None),
    }
    # The registration is answered alike.
    device = fleet.firmware("acme", inside[0])
    device.subscribe(f"/acme/{inside[0]}", qos=1)
    assert register(device, inside[0])["update"]["id"] == "half"


def test_mqtt5_correlation_data_comes_back_with_the_answer(fleet: Fleet):
    device = fleet.firmware("acme", "d1", version=5)
    device.subscribe("/acme/d1", qos=1)
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = "/acme/d1"
    properties.CorrelationData = b"boot-42"
    device.publish("/acme/d1/status", registration("1.7.24"), qos=1, properties=properties)
    answer = device.expect_message()
    assert answer.topic == "/acme/d1"
    assert answer.properties.CorrelationData == b"boot-42"
    assert json.loads(answer.payload)["registration"]["status"] == "OK"
    device.expect_no_message()


def test_the_walk_through_with_mosquitto_rr(fleet: Fleet):
    """docs/fleet.md: `mosquitto_rr` as the device reads its answer on its own connection."""
    add_release(fleet, "fw-1.8.0", "1.8.0")
    done = subprocess.run(
        ["mosquitto_rr", "-h", fleet.broker.host, "-p", str(fleet.broker.port), "-i", "d2",
         "-u", "acme", "-P", "d2-pw", "-q", "1", "-t", "/acme/d2/status", "-e", "/acme/d2",
         "-W", "10", "-m",
         '{"registration":{"mac":"5CCF7FE4631D","version":"1.7.24","platform":"esp32"}}'],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)["registration"]
    assert answer["status"] == "UPDATE_AVAILABLE" and answer["update"]["id"] == "fw-1.8.0"
    assert fleet.device("show", "d2")["firmware"] == "1.7.24"


def test_a_device_registers_over_http_with_its_own_key(fleet: Fleet):
    add_release(fleet, "fw-1.8.0", "1.8.0")
    _, key = fleet.add_key_device("acme", "k1")
    # The owner's MQTT console sees the answer on the device's channel, as over MQTT.
    console = fleet.console("acme", "acme-console")
    console.subscribe("/acme/#", qos=1)
    device = Device(fleet.broker.http_url, "d:k1", key["secret"])
    answered = device.request("POST", "/v1/fleet/register", registration("1.7.24"))
    assert answered.status == 200, answered.body
    assert answered.body.endswith(b"}}"), answered.body
    published = console.expect_message()
    assert (published.topic, published.payload) == ("/acme/k1", answered.body)
    answer = answered.json()["registration"]
    assert answer["status"] == "UPDATE_AVAILABLE"
    assert answer["update"] == {"id": "fw-1.8.0", "version": "1.8.0", "size": 412345,
                                "url": "https://firmware.example/fw-1.8.0.bin", "sha256": SHA}
    assert abs(answer["timestamp"] - time.time()) < 60
    shown = fleet.device("show", "k1")
    assert (shown["firmware"], shown["platform"], shown["alias"]) == (
        "1.7.24", "esp32", "robotdyn-mega+wifi")
    up_to_date = device.request("POST", "/v1/fleet/register", registration("1.8.0"))
    assert up_to_date.json()["registration"]["status"] == "OK"
    assert console.expect_message().payload == up_to_date.body
    # Published on its status channel (`POST /v1/pub`), without a mailbox, as over MQTT.
    published = device.publish("/acme/k1/status", registration("1.7.24"))
    assert published.status == 200, published.body
    seen = [console.expect_message() for _ in range(2)]
    assert [m.topic for m in seen] == ["/acme/k1/status", "/acme/k1"]
    assert json.loads(seen[1].payload)["registration"]["status"] == "UPDATE_AVAILABLE"
    assert fleet.device("show", "k1")["firmware"] == "1.7.24"
    # Not a registration.
    wrong = device.request("POST", "/v1/fleet/register", b'{"status":"connected"}')
    assert (wrong.status, wrong.json()["error"]["code"]) == (400, "payload_invalid")
    # A key of the bridge that is no fleet device's registers nothing.
    status, made = operator_call(fleet.broker.http_url, fleet.token, "POST", "/v1/admin/keys",
                                 {"id": "d:eve", "both": ["eve/#"]})
    assert status == 200, made
    eve = Device(fleet.broker.http_url, "d:eve", made["secret"])
    refused = eve.request("POST", "/v1/fleet/register", registration("1.7.24"))
    assert (refused.status, refused.json()["error"]["code"]) == (403, "access_denied")
    # Disabled, the device is refused.
    fleet.device("disable", "k1")
    refused = device.request("POST", "/v1/fleet/register", registration("1.0.0"))
    assert (refused.status, refused.json()["error"]["code"]) == (403, "banned")
    assert fleet.device("show", "k1")["firmware"] == "1.7.24"


def test_a_device_downloads_its_offered_firmware_in_two_ranges(fleet: Fleet, tmp_path):
    image = bytes(range(256)) * 21 + b"end"
    size, sha = len(image), hashlib.sha256(image).hexdigest()
    path = tmp_path / "fw-2.0.0.bin"
    path.write_bytes(image)
    # Given digests are checked against the file's.
    failed = subprocess.run(
        [*fleet_command(fleet), "add", "bad", "--platform", "esp32", "--version", "2.0.0",
         "--file", str(path), "--sha256", "00" * 32], capture_output=True, text=True,
        timeout=30)
    assert failed.returncode != 0 and "sha256" in failed.stderr, failed.stderr
    added = firmware(fleet, "add", "fw-2.0.0", "--platform", "esp32", "--version", "2.0.0",
                     "--owner", "acme", "--file", str(path), "--size", str(size))
    assert (added["url"], added["sha256"], added["size"]) == (
        "/v1/fleet/firmware/fw-2.0.0", sha, size)
    kept = fleet.data / "firmware" / f"fw-2.0.0-{sha}.bin"
    assert kept.read_bytes() == image
    assert [p.name for p in (fleet.data / "firmware").iterdir()] == [kept.name]

    _, key = fleet.add_key_device("acme", "k1")
    device = Device(fleet.broker.http_url, "d:k1", key["secret"])
    answer = device.request("POST", "/v1/fleet/register", registration("1.7.24")).json()
    offer = answer["registration"]["update"]
    assert (offer["url"], offer["sha256"], offer["size"]) == (added["url"], sha, size)
    half = size // 2
    first = device.request("GET", offer["url"], extra=[("Range", f"bytes=0-{half - 1}")])
    assert first.status == 206, first.body
    assert first.headers["content-range"] == f"bytes 0-{half - 1}/{size}"
    second = device.request("GET", offer["url"], extra=[("Range", f"bytes={half}-")])
    assert second.status == 206, second.body
    assert second.headers["content-range"] == f"bytes {half}-{size - 1}/{size}"
    assert hashlib.sha256(first.body + second.body).hexdigest() == offer["sha256"]
    whole = device.request("GET", offer["url"])
    assert (whole.status, whole.body) == (200, image)
    past = device.request("GET", offer["url"], extra=[("Range", f"bytes={size}-")])
    assert (past.status, past.json()["error"]["code"]) == (416, "range_not_satisfiable")
    assert past.headers["content-range"] == f"bytes */{size}"

    # Another owner's device is refused as for an id that does not exist.
    _, other_key = fleet.add_key_device("globex", "g9")
    other = Device(fleet.broker.http_url, "d:g9", other_key["secret"])
    for url in [offer["url"], "/v1/fleet/firmware/nothing"]:
        refused = other.request("GET", url)
        assert (refused.status, refused.json()["error"]["code"]) == (404, "no_release"), url
    # An operator of the whole broker reads it too.
    request = urllib.request.Request(fleet.broker.http_url + offer["url"], headers={
        "Authorization": f"Bearer {fleet.token}", "Range": "bytes=-3"})
    with urllib.request.urlopen(request, timeout=10) as answered:
        assert (answered.status, answered.read()) == (206, b"end")

    # Deleting the release deletes its file.
    assert firmware(fleet, "delete", "fw-2.0.0")["id"] == "fw-2.0.0"
    assert not kept.exists()
    gone = device.request("GET", offer["url"])
    assert (gone.status, gone.json()["error"]["code"]) == (404, "no_release")


def fleet_command(fleet: Fleet) -> list[str]:
    """`tern firmware` against the fleet's broker, with its token."""
    return [tern_bin(), "firmware", "--url", fleet.broker.http_url, "--token", fleet.token]


class SmallFiles(Fleet):
    """A fleet whose firmware uploads may carry 4096 bytes at most."""

    OPTIONS = {"http": {"firmware_file_max_bytes": 4096}}


def upload(fleet: Fleet, release_id: str, body: Union[bytes, Iterable[bytes]]) -> tuple[int, dict]:
    """PUT /v1/admin/firmware/{id}/file: `body` as is (Content-Length), or in chunks."""
    url = urllib.parse.urlsplit(fleet.broker.http_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        chunked = not isinstance(body, bytes)
        connection.request(
            "PUT", f"/v1/admin/firmware/{release_id}/file?platform=esp32&version=3.0.0",
            body=body, headers={"Authorization": f"Bearer {fleet.token}"},
            encode_chunked=chunked)
        answered = connection.getresponse()
        return answered.status, json.loads(answered.read())
    finally:
        connection.close()


def test_an_upload_past_the_configured_size_is_refused_and_leaves_nothing(tmp_path: Path):
    fleet = SmallFiles(tmp_path)
    try:
        firmware_dir = fleet.data / "firmware"
        status, added = upload(fleet, "fw-small", b"x" * 4096)
        assert status == 200, added
        assert added["size"] == 4096
        kept = sorted(p.name for p in firmware_dir.iterdir())
        fleet.broker.mark()
        status, refused = upload(fleet, "fw-big", b"x" * 4097)
        assert (status, refused["error"]["code"]) == (413, "payload_too_large")
        fleet.broker.wait_for_output(
            re.escape("payload_too_large (413) PUT /v1/admin/firmware/fw-big/file"))
        # Sent in chunks, without a length: refused once past the limit.
        status, refused = upload(fleet, "fw-chunked", iter([b"y" * 3000, b"y" * 3000]))
        assert (status, refused["error"]["code"]) == (413, "payload_too_large")
        assert sorted(p.name for p in firmware_dir.iterdir()) == kept
        assert [r["id"] for r in firmware(fleet, "list")["releases"]] == ["fw-small"]
    finally:
        fleet.clients.close_all()
        fleet.broker.stop()
