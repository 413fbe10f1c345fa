"""What the HTTP bridge's interop tests share: a Tern broker that also serves HTTP, `tern`
commands (keys), and reading an error's code."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

from conftest import REPO_ROOT, STOP_TIMEOUT, Broker, BrokerError
from support import TIMEOUT, Clients, Names

sys.path.insert(0, str(REPO_ROOT / "examples"))
from http_device import Device, Response  # noqa: E402,F401

HTTP_LISTENING = re.compile(
    r"listening for HTTP on (?P<host>\S+):(?P<port>\d+) \((?P<scheme>https?)\)")


class HttpBroker(Broker):
    """A Tern broker that also serves HTTP on a free port (``http_url``)."""

    http_url = ""

    def _tern_command(self) -> list[str]:
        return super()._tern_command() + ["--http-port", "0"]

    def start(self) -> None:
        super().start()
        for line in self.output:
            match = HTTP_LISTENING.search(line)
            if match:
                scheme = match.group("scheme")
                self.http_url = f"{scheme}://{match.group('host')}:{match.group('port')}"
                return
        raise BrokerError(f"no HTTP listening line:\n{self.output_tail()}")

    def kill(self) -> None:
        """Kills the broker with SIGKILL (no chance to write anything more), and waits."""
        proc, self.proc = self.proc, None
        assert proc is not None and proc.poll() is None, "the broker is not running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT)

    def mark(self) -> None:
        """Forgets the output so far: `wait_for_output` then looks only at what follows."""
        while True:
            try:
                self._lines.get_nowait()
            except queue.Empty:
                return

    def wait_for_output(self, pattern: str) -> None:
        """Waits (bounded) for a log line matching `pattern` printed since `mark()`."""
        deadline = time.monotonic() + TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is not None and re.search(pattern, line):
                return
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.output_tail()}")


def tern(*args: str) -> str:
    binary = Path(os.environ.get("TERN_BIN", "target/debug/tern"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def add_key(data_dir: Path, key: str, *grants: str) -> str:
    """Adds a key with `tern key add` and returns its secret."""
    out = tern("key", "add", key, "--data-dir", str(data_dir), *grants)
    return out.split()[-1]


def operator_call(url: str, token: Optional[str], method: str, path: str,
                  body: Any = None) -> tuple[int, Any]:
    """One operator API request with urllib and a bearer token (none: without one): the
    status and the JSON answer."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def error_code(response: Response) -> Optional[str]:
    body = response.json() or {}
    return (body.get("error") or {}).get("code")


def ok(response: Response) -> Any:
    """The JSON body of a 200 answer (anything else fails the test, showing the answer)."""
    assert response.status == 200, (response.status, response.body)
    return response.json()


class Fleet:
    """A broker of its own (with `options`) serving HTTP, and keys made before it starts:
    `keys` maps each key id to its grants (`tern key add` options)."""

    def __init__(self, workdir: Path, keys: dict[str, tuple[str, ...]],
                 options: Optional[dict[str, Any]] = None):
        data = workdir / "tern-data"
        self.secrets = {key: add_key(data, key, *grants) for key, grants in keys.items()}
        self.broker = HttpBroker("tern", workdir, options)
        self.start()
        self.clients = Clients(self.broker)

    def start(self) -> None:
        try:
            self.broker.start()
        except BrokerError as err:
            pytest.fail(f"could not start the broker:\n{err}", pytrace=False)

    def device(self, key: str = "d:dev1", **options: Any) -> Device:
        return Device(self.broker.http_url, key, self.secrets[key], **options)

    def publish(self, names: Names, topic: str, *payloads: bytes, qos: int = 1) -> None:
        """Publishes each payload from one MQTT client, then a QoS 1 message elsewhere: its
        PUBACK says the broker has handled all of them (QoS 0 ones too)."""
        publisher = self.clients.connected(names.client("p"))
        for payload in payloads:
            publisher.publish(topic, payload, qos=qos)
        publisher.publish(f"elsewhere/{names.tag}", b"", qos=1)
        publisher.close()

    def close(self) -> None:
        self.clients.close_all()
        self.broker.stop()
