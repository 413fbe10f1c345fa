#!/usr/bin/env python3
"""Measures the device fleet's registry at size on the real broker (see BENCHMARKS.md).

Starts `tern serve` with a fresh data directory, registers N devices (default 100,000: 1,000
owners of 100 each, `POST /v1/admin/devices` over several keep-alive connections, with
certificate-CN credentials so that no password is hashed), then restarts the broker and
reports: the registration rate, the start-up time with its store and fleet registry lines, the
broker's resident memory, the latency of every page of `GET /v1/fleet/devices` walked with the
cursor, of filtered pages (one owner, a text search: both pass over the whole fleet), and of one
device. Finally it registers 1,000 more, kills the broker with SIGKILL at once, starts it again
and checks that every device whose registration was answered is still registered.

    cargo build --release -p tern
    .venv/bin/python scripts/bench_fleet.py [N] [--binary target/debug/tern]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HTTP_LISTENING = re.compile(r"listening for HTTP on (?P<host>[\d.]+):(?P<port>\d+)")
OWNERS = 1000
CONNECTIONS = 16


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Broker:
    """`tern serve` on free ports over a data directory; its log lines are kept."""

    def __init__(self, binary: Path, data: Path):
        self.binary, self.data = binary, data
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.host, self.port = "", 0

    def start(self) -> float:
        """Starts the broker; the seconds until it serves HTTP."""
        self.lines = []
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--data-dir", str(self.data), "--bind", "127.0.0.1",
             "--port", "0", "--http-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            match = HTTP_LISTENING.search(line)
            if match:
                ready = time.monotonic() - started
                self.host, self.port = match.group("host"), int(match.group("port"))
                threading.Thread(target=self._drain, daemon=True).start()
                return ready
        raise RuntimeError("the broker did not start:\n" + "\n".join(self.lines[-20:]))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def stop(self, kill: bool = False) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(timeout=60)

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


class Api:
    """One keep-alive connection to the operator API."""

    def __init__(self, broker: Broker, token: str):
        self.connection = http.client.HTTPConnection(broker.host, broker.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        self.connection.request(method, path, body=data, headers=self.headers)
        answer = self.connection.getresponse()
        payload = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{method} {path}: {answer.status} {payload[:200]!r}")
        return json.loads(payload)


def udid(n: int) -> str:
    return f"dev{n:06d}"


def register(broker: Broker, token: str, count: int) -> float:
    """Registers `count` devices over CONNECTIONS connections; devices per second."""
    def worker(first: int) -> None:
        api = Api(broker, token)
        for n in range(first, count, CONNECTIONS):
            api.call("POST", "/v1/admin/devices", {
                "owner": f"owner{n % OWNERS:04d}", "udid": udid(n), "credential": "cert-cn",
                "cn": udid(n), "platform": "esp32" if n % 2 else "esp8266",
                "firmware": f"1.{n % 10}.0", "tags": ["door"] if n % 100 == 0 else []})

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count / (time.monotonic() - started)


def timed(api: Api, path: str) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = api.call("GET", path)
    return (time.perf_counter() - started) * 1000, answer


def walk(api: Api, query: str) -> tuple[list[float], int]:
    """Every page of a listing: each page's milliseconds, and the devices listed."""
    times, listed, cursor = [], 0, None
    while True:
        path = f"/v1/fleet/devices?limit=100{query}"
        if cursor:
            path += "&cursor=" + urllib.parse.quote(cursor, safe="")
        millis, page = timed(api, path)
        times.append(millis)
        listed += len(page["devices"])
        cursor = page["next"]
        if not cursor:
            return times, listed


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{len(times)} requests: p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms, "
            f"max {ordered[-1]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", nargs="?", type=int, default=100_000)
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "tern")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tern-fleet-bench-"))
    data = workdir / "tern-data"
    try:
        token = subprocess.run(
            [str(args.binary), "token", "add", "bench", "--data-dir", str(data), "--scope",
             "read", "--scope", "write"], capture_output=True, text=True, check=True
        ).stdout.strip()
        broker = Broker(args.binary, data)
        broker.start()
        rate = register(broker, token, args.count)
        print(f"registered {args.count} devices: {rate:,.0f} devices/s "
              f"({CONNECTIONS} connections)")
        print(f"broker RSS with the registry: {rss_mib(broker.proc.pid):.1f} MiB")  # type: ignore[union-attr]
        broker.stop()

        ready = broker.start()
        print(f"restart: serving HTTP {ready:.2f} s after the process started")
        for line in broker.lines_with("fleet registry") + broker.lines_with("fleet devices,"):
            print("  log:", line.split("  ")[-1])
        print(f"broker RSS after the restart: {rss_mib(broker.proc.pid):.1f} MiB")  # type: ignore[union-attr]
        api = Api(broker, token)
        times, listed = walk(api, "")
        assert listed == args.count, (listed, args.count)
        print(f"every page of 100 (cursor walk, {listed} devices): {summary(times)}")
        first = [timed(api, "/v1/fleet/devices?limit=100")[0] for _ in range(200)]
        print(f"first page of 100, again and again: {summary(first)}")
        owner = [timed(api, "/v1/fleet/devices?limit=100&owner=owner0999")[0] for _ in range(20)]
        print(f"one owner's 100 devices, spread over the fleet: {summary(owner)}")
        text = [timed(api, "/v1/fleet/devices?limit=100&q=dev09999")[0] for _ in range(20)]
        print(f"text search (passes over the fleet): {summary(text)}")
        shown = [timed(api, f"/v1/fleet/devices/{udid(n)}")[0] for n in range(0, 100_000, 500)
                 if n < args.count]
        print(f"one device: {summary(shown)}")

        # Devices whose registration was answered survive a crash: add some, kill -9 at once.
        more = 1000
        register_more = [(n, udid(n)) for n in range(args.count, args.count + more)]
        for n, name in register_more:
            api.call("POST", "/v1/admin/devices", {"owner": f"owner{n % OWNERS:04d}",
                                                   "udid": name, "credential": "cert-cn",
                                                   "cn": name})
        broker.stop(kill=True)
        broker.start()
        _, listed = walk(Api(broker, token), "")
        print(f"{more} more added, then kill -9 and a restart: {listed} of "
              f"{args.count + more} devices registered")
        assert listed == args.count + more
        broker.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
