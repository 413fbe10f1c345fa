"""The C device client (clients/c), built as a microcontroller project would build it (gcc,
warnings as errors) over the host's libcrypto: its signing reproduces docs/http.md's worked
example, and the example device, over a plain socket, publishes to an MQTT subscriber,
subscribes its mailbox and receives an MQTT publisher's message with a long poll,
acknowledging it on the next poll, every answer's signature checked; a wrong secret is
refused.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from conftest import REPO_ROOT
from http_support import Fleet
from support import BROKER_KIND, TIMEOUT, Names

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")

SOURCES = REPO_ROOT / "clients" / "c"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client's programs, compiled with warnings as errors."""
    out = tmp_path_factory.mktemp("tern-c-")
    done = subprocess.run(["make", "-C", str(SOURCES), f"OUT={out}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, {"d:c-dev": ()})
    yield fleet
    fleet.close()


def run_device(built: Path, fleet: Fleet, counter: Path, *commands: str,
               secret: str = "") -> subprocess.CompletedProcess[str]:
    url = urlsplit(fleet.broker.http_url)
    return subprocess.run(
        [str(built / "tern_device"), str(url.hostname), str(url.port), "d:c-dev",
         secret or fleet.secrets["d:c-dev"], str(counter), *commands],
        capture_output=True, text=True, timeout=TIMEOUT + 30)


def test_signing_reproduces_the_worked_example(built: Path):
    done = subprocess.run([str(built / "test_signing")], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all signing checks passed" in done.stdout


def test_the_c_device_publishes_and_receives_from_its_mailbox(
        built: Path, fleet: Fleet, names: Names, tmp_path: Path):
    counter = tmp_path / "counter"
    subscriber = fleet.clients.subscriber(names.client("s"), f"c/{names.tag}/up", qos=1)
    done = run_device(built, fleet, counter, "pub", f"c/{names.tag}/up", "21.5",
                      "sub", f"c/{names.tag}/down")
    assert done.returncode == 0, done.stdout + done.stderr
    published, subscribed = done.stdout.splitlines()
    assert published.startswith('200 {"qos":1,"matched":1')
    assert subscribed.startswith("200 ")
    message = subscriber.expect_message()
    assert (message.topic, message.payload) == (f"c/{names.tag}/up", b"21.5")

    fleet.publish(names, f"c/{names.tag}/down", b"led on")
    # A second run of the device, as after a wake: the counter goes on from the file.
    done = run_device(built, fleet, counter, "poll", "20", "poll", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("200 ") and '"payload":"led on"' in first
    # The second poll acknowledged the first's message: nothing is left.
    assert second.startswith("200 ") and '"messages":[]' in second and '"leased":0' in second, done.stdout
    assert int(counter.read_text()) == 4


def test_a_wrong_secret_is_refused_and_its_answer_is_not_signed(
        built: Path, fleet: Fleet, names: Names, tmp_path: Path):
    done = run_device(built, fleet, tmp_path / "counter", "pub", f"c/{names.tag}/up", "x",
                      secret="00" * 32)
    assert done.returncode == 1
    assert done.stdout.startswith("401 ") and "signature_invalid" in done.stdout
    assert "does not verify" in done.stderr
