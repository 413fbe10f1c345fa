"""Broker processes for the interop suite.

``TERN_TEST_BROKER`` picks the broker: ``tern`` (default) or ``mosquitto`` (the reference the
tests are validated against). Every test module shares one broker process; a test that needs
a particular configuration gets a broker of its own, started from the ``broker_config``
fixture (set it with ``@pytest.mark.broker_config({...})`` or override the fixture).

Tern is started as::

    $TERN_BIN serve --bind 127.0.0.1 --port 0 --data-dir WORKDIR/tern-data [--config FILE.toml]

(``TERN_BIN`` defaults to ``target/debug/tern`` in the repository) in a scratch working
directory, and is ready once it prints a line matching ``LISTENING`` on stdout or stderr.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from support import BROKER_KIND, Clients, Names

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening for MQTT on (?P<host>\S+):(?P<port>\d+)")
MOSQUITTO_RUNNING = re.compile(r"mosquitto version \S+ running")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
OUTPUT_LINES = 200  # how much broker output to keep for failure messages

# Options the tests use, in Tern's configuration layout (table.key, see tern.example.toml),
# and how each is said to mosquitto. An option missing here has no mosquitto equivalent: a test
# using it is skipped on mosquitto.
MOSQUITTO_EQUIVALENTS: dict[str, Callable[[Any], str]] = {
    "limits.qos_max": lambda v: f"max_qos {int(v)}",
    "limits.retain_available": lambda v: f"retain_available {'true' if v else 'false'}",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "broker_config(options): run the test on a broker of its own, started with these "
        "options (a dict in Tern's TOML layout)")


def pytest_report_header(config: pytest.Config) -> str:
    return f"interop broker: {BROKER_KIND}"


# ---------------------------------------------------------------------------
# Configuration files
# ---------------------------------------------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. in a list: acl = [{topic = "a/#"}]
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as a TOML value")


def to_toml(options: dict[str, Any]) -> str:
    """Write a (nested) dict as TOML: plain keys first, then one table per nested dict."""
    lines: list[str] = []

    def table(prefix: str, values: dict[str, Any]) -> None:
        plain = {k: v for k, v in values.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in values.items() if isinstance(v, dict)}
        if prefix and plain:
            lines.append(f"[{prefix}]")
        for key, value in plain.items():
            lines.append(f"{key} = {_toml_value(value)}")
        if plain:
            lines.append("")
        for key, value in nested.items():
            table(f"{prefix}.{key}" if prefix else key, value)

    table("", options)
    return "\n".join(lines)


def write_toml(options: dict[str, Any], path: Path) -> Path:
    path.write_text(to_toml(options), encoding="utf-8")
    return path


def flatten(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"limits": {"qos_max": 1}} -> {"limits.qos_max": 1}"""
    flat: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def mosquitto_lines(options: Optional[dict[str, Any]]) -> list[str]:
    """Translate test options to mosquitto.conf lines, or skip the test if one has no equal."""
    lines = []
    for key, value in flatten(options or {}).items():
        translate = MOSQUITTO_EQUIVALENTS.get(key)
        if translate is None:
            pytest.skip(f"mosquitto: no equivalent of {key} = {value!r}")
        lines.append(translate(value))
    return lines


def free_port() -> int:
    """An ephemeral port the kernel just handed out (only for mosquitto, which needs a number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------
# Broker processes
# ---------------------------------------------------------------------------

class BrokerError(Exception):
    """The broker could not be started, or died."""


class Broker:
    """One broker process under test: ``host``, ``port``, ``kind``; ``restart()`` and ``stop()``.

    Restarting keeps the working directory (and so anything the broker persisted there) but
    listens on a new ephemeral port: read ``port`` again after ``restart()``.
    """

    def __init__(self, kind: str, workdir: Path, options: Optional[dict[str, Any]] = None):
        self.kind = kind
        self.workdir = workdir
        self.options = options
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: Optional[subprocess.Popen[str]] = None
        self.output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._reader: Optional[threading.Thread] = None
        if kind == "mosquitto":
            self._extra_conf = mosquitto_lines(options)  # may skip the test

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        command = self._tern_command() if self.kind == "tern" else self._mosquitto_command()
        self.output.clear()
        self._lines = queue.Queue()
        try:
            self.proc = subprocess.Popen(
                command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
        except OSError as err:
            raise BrokerError(f"cannot run {shlex.join(command)}: {err}") from err
        self._reader = threading.Thread(target=self._read_output, args=(self.proc, self._lines),
                                        name=f"{self.kind}-output", daemon=True)
        self._reader.start()
        self._command = command
        if self.kind == "tern":
            match = self._wait_for_line(LISTENING)
            self.host = match.group("host").strip("[]")
            self.port = int(match.group("port"))
        else:
            self._wait_for_line(MOSQUITTO_RUNNING)
        self._check_accepting()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop the broker gracefully (SIGTERM) and start it again on the same data."""
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def output_tail(self, lines: int = 40) -> str:
        tail = list(self.output)[-lines:]
        return "\n".join(f"    | {line}" for line in tail) or "    (no output)"

    # -- commands -----------------------------------------------------------
    def _tern_command(self) -> list[str]:
        binary = Path(os.environ.get("TERN_BIN", "target/debug/tern"))
        if not binary.is_absolute():
            binary = REPO_ROOT / binary
        if not binary.is_file():
            raise BrokerError(
                f"tern binary not found at {binary}: build it with `cargo build -p tern` "
                f"or point TERN_BIN at it (TERN_TEST_BROKER=mosquitto runs the reference broker)")
        # Each broker keeps its durable state in its own directory, kept across restart().
        command = [str(binary), "serve", "--bind", "127.0.0.1", "--port", "0",
                   "--data-dir", str(self.workdir / "tern-data")]
        if self.options:
            command += ["--config", str(write_toml(self.options, self.workdir / "tern.toml"))]
        return command

    def _mosquitto_command(self) -> list[str]:
        binary = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else "mosquitto"
        self.port = free_port()
        lines = [
            f"listener {self.port} 127.0.0.1",
            *self._extra_conf,  # after `listener`: some options are per listener
            "allow_anonymous true",
            "max_queued_messages 10000",
            "max_inflight_messages 0",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",  # unbuffered, unlike stdout into a pipe
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to `mosquitto`, who cannot write here
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [binary, "-c", str(conf)]

    # -- readiness ----------------------------------------------------------
    def _read_output(self, proc: subprocess.Popen[str],
                     lines: "queue.Queue[Optional[str]]") -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            lines.put(line)
        lines.put(None)  # end of output: the process has exited (or closed its output)

    def _wait_for_line(self, pattern: re.Pattern[str]) -> re.Match[str]:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            timed_out = False
            try:
                line = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                timed_out = True
            if timed_out:
                self._abandon()
                raise BrokerError(
                    f"{self.kind} did not print a line matching {pattern.pattern!r} within "
                    f"{START_TIMEOUT} s\n  command: {shlex.join(self._command)}\n"
                    f"  output:\n{self.output_tail()}")
            if line is None:
                code = self._abandon()
                raise BrokerError(
                    f"{self.kind} exited (code {code}) before printing a line matching "
                    f"{pattern.pattern!r}\n  command: {shlex.join(self._command)}\n"
                    f"  output:\n{self.output_tail()}")
            match = pattern.search(line)
            if match:
                return match

    def _check_accepting(self) -> None:
        """Confirm the listener accepts TCP connections (bounded retry on refusal)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1.0).close()
                return
            except ConnectionRefusedError:
                assert self.proc is not None
                try:  # also notices the broker exiting
                    code = self.proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    code = None
                if code is not None or time.monotonic() > deadline:
                    self._abandon()
                    raise BrokerError(
                        f"{self.kind} does not accept connections on {self.host}:{self.port} "
                        f"(exit code {code})\n  output:\n{self.output_tail()}")

    def _abandon(self) -> Optional[int]:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None
        return code


def _start(kind: str, workdir: Path, options: Optional[dict[str, Any]]) -> Broker:
    broker = Broker(kind, workdir, options)
    try:
        broker.start()
        return broker
    except BrokerError as err:
        problem = str(err)
    pytest.fail(f"could not start the broker under test:\n{problem}", pytrace=False)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The broker shared by the tests of one module (default configuration)."""
    broker = _start(BROKER_KIND, tmp_path_factory.mktemp(f"{BROKER_KIND}-"), None)
    yield broker
    broker.stop()


@pytest.fixture
def broker_config(request: pytest.FixtureRequest) -> Optional[dict[str, Any]]:
    """Options for a dedicated broker (None: use the module's). Set by the marker or override."""
    marker = request.node.get_closest_marker("broker_config")
    return dict(marker.args[0]) if marker else None


@pytest.fixture
def broker(request: pytest.FixtureRequest, broker_config: Optional[dict[str, Any]],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The broker for this test: the module's, or a dedicated one when options are set."""
    if broker_config is not None:
        own = _start(BROKER_KIND, tmp_path_factory.mktemp(f"{BROKER_KIND}-cfg-"), broker_config)
        yield own
        died = not own.alive()
        code, tail = own.returncode(), own.output_tail()
        own.stop()
    else:
        shared: Broker = request.getfixturevalue("module_broker")
        if not shared.alive():  # a previous test killed it; that test already failed
            problem = None
            try:
                shared.start()
            except BrokerError as err:
                problem = str(err)
            if problem is not None:
                pytest.fail(f"could not restart the broker under test:\n{problem}",
                            pytrace=False)
        yield shared
        died = not shared.alive()
        code, tail = shared.returncode(), shared.output_tail()
    if died:
        pytest.fail(f"the broker exited during the test (code {code})\n  output:\n{tail}",
                    pytrace=False)


@pytest.fixture
def clients(broker: Broker) -> Iterator[Clients]:
    """Creates paho and raw clients for this test's broker, and closes them afterwards."""
    factory = Clients(broker)
    yield factory
    factory.close_all()


@pytest.fixture
def names() -> Names:
    """Client identifiers and topics that no other test uses."""
    return Names()


# More options with a mosquitto equivalent (see MOSQUITTO_EQUIVALENTS above).
MOSQUITTO_EQUIVALENTS.update({
    "limits.packet_size_max_bytes": lambda v: f"max_packet_size {int(v)}",
    "sys_interval_secs": lambda v: f"sys_interval {int(v)}",
})
