"""The device fleet with paho-mqtt clients acting as THiNX firmware: devices registered with
`tern device add` log in with their own credential (THiNX's owner id as user name, the udid as
client identifier), set their Last Will on `/<owner>/<udid>/status` and publish there; their
owner's console sees their fleet. As an attacker: a device of owner A can neither read nor
write anything of owner B (wildcards, shared subscriptions, `$tree/` views, wills, retained
messages), nor another device's of its own owner beyond `shared/#`; a password user named
like a device is not it. Disabling closes a device's connection at once and refuses it after;
deleting ends its session and clears its retained status; the registry survives `kill -9`.
The broker keeps each device's live status: events on `$events/<owner>/<udid>/online|offline`
and, for firmware that sets no will, the retained status it would have published itself, also
after `kill -9` of the broker.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Iterator, Optional

import pytest

from conftest import REPO_ROOT, BrokerError
from http_support import Device, HttpBroker
from support import BROKER_KIND, TIMEOUT, Clients, PahoClient

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the device fleet is Tern's")

DISCONNECTED = b'{"status":"disconnected"}'
CONNECTED = b'{"status":"connected"}'
# paho gives 3.1.1 return codes as the MQTT 5 reason codes they stand for.
BAD_CREDENTIALS = 0x86
NOT_AUTHORIZED = 0x87


def tern_bin() -> str:
    binary = Path(os.environ.get("TERN_BIN", "target/debug/tern"))
    return str(binary if binary.is_absolute() else REPO_ROOT / binary)


class Fleet:
    """A broker with an operator token, owners `acme` and `globex` with console passwords,
    devices acme/d1, acme/d2 and globex/g1 with MQTT passwords, and a password-file user `d1`
    (and any `users` given, their names as passwords); `acl` are its rules."""

    # Password users get their own corner; fleet identities are not ruled by it.
    ACL: list[dict] = [{"topic": "users/%u/#"}]
    # More of the broker's configuration, for a subclass.
    OPTIONS: dict = {}

    def __init__(self, workdir: Path, acl: Optional[list] = None, users: tuple = ()):
        self.data = workdir / "tern-data"
        self.token = self.run("token", "add", "root", "--data-dir", str(self.data),
                              "--scope", "read", "--scope", "write", "--scope", "keys").strip()
        for user, password in [("d1", "user-pw"), *((u, u) for u in users)]:
            done = subprocess.run([tern_bin(), "passwd", str(workdir / "passwd"), user],
                                  input=f"{password}\n", capture_output=True, text=True,
                                  timeout=30)
            assert done.returncode == 0, done.stderr
        options = {
            "auth": {"default": {"password_file": "passwd"}},
            "acl": self.ACL if acl is None else acl,
            "limits": {"login_failures_per_address_max": 0, "login_failures_per_user_max": 0},
        }
        options.update(self.OPTIONS)
        if not options["acl"]:
            del options["acl"]  # No rules at all: an open broker.
        self.broker = HttpBroker("tern", workdir, options)
        self.start()
        self.clients = Clients(self.broker)
        for owner, udid in [("acme", "d1"), ("acme", "d2"), ("globex", "g1")]:
            self.device("add", owner, udid, "--password", "--platform", "esp32",
                        stdin=f"{udid}-pw\n")
        for owner in ["acme", "globex"]:
            self.device("owner", owner, stdin=f"{owner}-console\n")

    def start(self) -> None:
        try:
            self.broker.start()
        except BrokerError as err:
            pytest.fail(f"could not start the broker:\n{err}", pytrace=False)

    def run(self, *args: str, stdin: str = "") -> str:
        done = subprocess.run([tern_bin(), *args], input=stdin, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def device(self, *args: str, stdin: str = "") -> dict:
        out = self.run("device", "--url", self.broker.http_url, "--token", self.token, *args,
                       stdin=stdin)
        return json.loads(out)

    def add_key_device(self, owner: str, udid: str) -> tuple[dict, dict]:
        """Adds a device with the HTTP bridge's key d:UDID: the device and its new key."""
        out = self.run("device", "--url", self.broker.http_url, "--token", self.token, "add",
                       owner, udid, "--key")
        decoder = json.JSONDecoder()
        device, end = decoder.raw_decode(out)
        key, _ = decoder.raw_decode(out[end:].lstrip())
        return device, key

    def firmware(self, owner: str, udid: str, *, password: Optional[str] = None,
                 version: int = 4, will: bool = True, expect_code: int = 0,
                 clean: bool = True) -> PahoClient:
        """A THiNX device: owner id as user name, udid as client identifier, retained will
        (with `clean` off, a session kept while it sleeps)."""
        client = self.clients.paho(udid, version=version, clean=clean)
        client.client.username_pw_set(owner, password if password is not None else f"{udid}-pw")
        if will:
            client.will_set(f"/{owner}/{udid}/status", DISCONNECTED, qos=0, retain=True)
        client.connect(expect_code=expect_code)
        return client

    def console(self, owner: str, client_id: str) -> PahoClient:
        client = self.clients.paho(client_id)
        client.client.username_pw_set(owner, f"{owner}-console")
        client.connect()
        return client


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    yield fleet
    fleet.clients.close_all()
    fleet.broker.stop()


def refused(client: PahoClient, topic: str) -> bool:
    """Whether SUBSCRIBE to `topic` is refused (every code 0x80 or above)."""
    try:
        client.subscribe(topic, qos=1)
    except AssertionError as error:
        if "refused" in str(error):
            return True
        raise
    return False


def test_thinx_firmware_status_reaches_its_owner_and_the_will_on_a_lost_connection(fleet: Fleet):
    console = fleet.console("acme", "acme-console")
    console.subscribe("/acme/+/status", qos=1)
    device = fleet.firmware("acme", "d1")
    device.publish("/acme/d1/status", CONNECTED, qos=1, retain=True)
    message = console.expect_message()
    assert (message.topic, message.payload) == ("/acme/d1/status", CONNECTED)
    # The connection is lost (no DISCONNECT): the will says so.
    device.stop()
    message = console.expect_message()
    assert (message.topic, message.payload) == ("/acme/d1/status", DISCONNECTED)
    # The console of the owner also writes to its devices.
    device = fleet.firmware("acme", "d1")
    device.subscribe("/acme/d1", qos=1)
    console.publish("/acme/d1", b'{"notification":{"nid":"n1","response":true}}', qos=1)
    assert device.expect_message().payload.startswith(b'{"notification"')


def test_a_device_of_one_owner_gets_nothing_of_another(fleet: Fleet):
    victim = fleet.firmware("acme", "d1")
    victim.publish("/acme/d1/status", CONNECTED, qos=1, retain=True)
    victim.subscribe("/acme/d1", qos=1)
    attacker = fleet.firmware("globex", "g1", version=5, will=False)
    for topic in ["#", "/#", "/acme/#", "/+/d1/status", "/acme/d1/status", "/acme/shared/#",
                  "$share/x//acme/d1/status", "$share/x/#", "$tree//acme/#", "$tree/#",
                  "+/+/+"]:
        assert refused(attacker, topic), topic
    attacker.expect_no_message()
    # Its own namespace is its own.
    attacker.subscribe("/globex/g1", qos=1)
    attacker.subscribe("/globex/shared/#", qos=1)
    # Writing into owner acme's topics is refused (MQTT 5: PUBACK 0x87) and reaches no one.
    info = attacker.client.publish("/acme/d1", b"take over", qos=1)
    info.wait_for_publish(TIMEOUT)
    info = attacker.client.publish("/acme/d1/status", DISCONNECTED, qos=1, retain=True)
    info.wait_for_publish(TIMEOUT)
    victim.expect_no_message()
    # A will into another owner's topics refuses the CONNECT.
    attacker.close()
    client = fleet.clients.paho("g1", version=5)
    client.client.username_pw_set("globex", "g1-pw")
    client.will_set("/acme/d1/status", DISCONNECTED, retain=True)
    client.connect(expect_code=NOT_AUTHORIZED)
    # The retained status is still the victim's own.
    console = fleet.console("acme", "acme-console")
    console.subscribe("/acme/d1/status", qos=1)
    assert console.expect_message().payload == CONNECTED
    # The other owner's console sees nothing of acme either.
    other = fleet.console("globex", "globex-console")
    assert refused(other, "/acme/#")
    assert refused(other, "$events/acme/#")
    assert refused(other, "#")


def test_a_device_sees_its_owners_shared_channel_but_not_its_siblings(fleet: Fleet):
    d1 = fleet.firmware("acme", "d1")
    d2 = fleet.firmware("acme", "d2", version=5)
    for topic in ["/acme/d1", "/acme/d1/status", "/acme/+/status", "/acme/#"]:
        assert refused(d2, topic), topic
    d2.subscribe("/acme/shared/#", qos=1)
    d1.publish("/acme/shared/firmware", b"1.2.4", qos=1)
    assert d2.expect_message().payload == b"1.2.4"


def test_a_password_user_named_like_a_device_is_not_it(fleet: Fleet):
    # The password user d1 cannot use the device's udid as client identifier...
    impostor = fleet.clients.paho("d1", version=4)
    impostor.client.username_pw_set("d1", "user-pw")
    impostor.connect(expect_code=BAD_CREDENTIALS)
    # ...and under another one it has its own corner, nothing of the device's namespace.
    user = fleet.clients.paho("laptop", version=5)
    user.client.username_pw_set("d1", "user-pw")
    user.connect()
    user.subscribe("users/d1/#", qos=1)
    for topic in ["/acme/d1", "/acme/d1/status", "/acme/shared/#"]:
        assert refused(user, topic), topic


def test_disabling_closes_the_connection_at_once_and_refuses_it_after(fleet: Fleet):
    device = fleet.firmware("acme", "d1")
    shown = fleet.device("show", "d1")
    assert shown["connected"] and shown["owner"] == "acme" and shown["credential"] == "password"
    assert fleet.device("disable", "d1")["disabled"] is True
    device.expect_disconnected(timeout=1.0)
    fleet.firmware("acme", "d1", expect_code=NOT_AUTHORIZED)
    assert fleet.device("enable", "d1")["disabled"] is False
    fleet.firmware("acme", "d1")


def test_deleting_ends_the_session_and_clears_the_retained_status(fleet: Fleet):
    device = fleet.firmware("acme", "d1")
    device.publish("/acme/d1/status", CONNECTED, qos=1, retain=True)
    deleted = fleet.device("delete", "d1")
    assert deleted["udid"] == "d1"
    device.expect_disconnected()
    listed = [d["udid"] for d in fleet.device("list", "--owner", "acme")["devices"]]
    assert listed == ["d2"]
    console = fleet.console("acme", "acme-console")
    console.subscribe("/acme/#", qos=1)
    # Its will went out when it was closed; then the retained status was cleared.
    console.expect_no_message()
    # The udid is free again: it is no device now, so the device's password is no credential.
    fleet.firmware("acme", "d1", expect_code=BAD_CREDENTIALS)


def test_the_registry_survives_kill_9(fleet: Fleet):
    fleet.device("disable", "d2")
    fleet.broker.kill()
    fleet.start()
    devices = {d["udid"]: d for d in fleet.device("list")["devices"]}
    assert sorted(devices) == ["d1", "d2", "g1"]
    assert devices["d2"]["disabled"] and not devices["d1"]["disabled"]
    fleet.firmware("acme", "d1")
    fleet.firmware("acme", "d2", expect_code=NOT_AUTHORIZED)
    fleet.console("acme", "acme-console")


def test_the_broker_keeps_the_status_of_a_device_without_a_will(fleet: Fleet):
    console = fleet.console("acme", "acme-console")
    console.subscribe("$events/acme/#", qos=1)
    console.subscribe("/acme/d1/status", qos=1)
    device = fleet.firmware("acme", "d1", will=False)
    got = {m.topic: m.payload for m in [console.expect_message() for _ in range(2)]}
    assert sorted(got) == ["$events/acme/d1/online", "/acme/d1/status"]
    assert got["/acme/d1/status"] == CONNECTED
    status = fleet.device("show", "d1")["status"]
    assert status["online"] and status["protocol"] == 4 and status["address"] == "127.0.0.1"
    # A clean disconnect: offline too.
    device.disconnect()
    got = {m.topic: m.payload for m in [console.expect_message() for _ in range(2)]}
    assert sorted(got) == ["$events/acme/d1/offline", "/acme/d1/status"]
    assert got["/acme/d1/status"] == DISCONNECTED
    assert json.loads(got["$events/acme/d1/offline"]) == {"owner": "acme", "udid": "d1"}
    assert not fleet.device("show", "d1")["status"]["online"]
    # Connected when the broker is killed: after the restart the status says disconnected.
    fleet.firmware("acme", "d1", will=False)
    fleet.broker.kill()
    fleet.start()
    console = fleet.console("acme", "acme-console-2")
    console.subscribe("/acme/d1/status", qos=1)
    assert console.expect_message().payload == DISCONNECTED


def test_a_device_with_a_key_of_the_http_bridge_logs_in_over_mqtt_with_it(fleet: Fleet):
    device, key = fleet.add_key_device("acme", "k1")
    assert device["credential"] == "key" and key["id"] == "d:k1"
    http = Device(fleet.broker.http_url, "d:k1", key["secret"])
    client = fleet.clients.paho("k1", version=5)
    client.client.username_pw_set("d:k1", http.mqtt_password())
    client.connect()
    client.subscribe("/acme/shared/#", qos=1)
    assert refused(client, "/acme/d1/status")
    # Another key's password is not this device's credential.
    other = fleet.clients.paho("k1", version=5)
    other.client.username_pw_set("d:k1", "hk1:0:" + "00" * 32)
    other.connect(expect_code=BAD_CREDENTIALS)
