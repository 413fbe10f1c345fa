"""What the HTTP bridge's interop tests share: a Tern broker that also serves HTTP, `tern`
commands (keys), and reading an error's code."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from conftest import REPO_ROOT, STOP_TIMEOUT, Broker, BrokerError
from support import TIMEOUT

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


def error_code(response: Response) -> Optional[str]:
    body = response.json() or {}
    return (body.get("error") or {}).get("code")
