#!/usr/bin/env python3
"""End-to-end measurement of a `$tree/` snapshot on the real broker (see BENCHMARKS.md).

Starts `tern serve` (release build), retains N topics `site/sNNNNNN/temp`, then subscribes to
`$tree/site/+/temp` while another client keeps a PINGREQ/PINGRESP exchange going, and reports:
the time from SUBSCRIBE to the whole snapshot received, its size, the broker's resident memory
before and after, the ping round trips seen during the snapshot (how long other clients wait
while it is built), and how long a single change takes to arrive as a delta (the window).

    cargo build --release -p tern
    .venv/bin/python scripts/bench_trees.py [N]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "interop"))

import mqtt_raw  # noqa: E402

LISTENING = re.compile(r"listening for MQTT on (?P<host>\S+):(?P<port>\d+)")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_broker() -> tuple[subprocess.Popen[str], str, int]:
    binary = ROOT / "target" / "release" / "tern"
    proc = subprocess.Popen([str(binary), "serve", "--bind", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = LISTENING.search(line)
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, match.group("host"), int(match.group("port"))
    proc.kill()
    raise RuntimeError("the broker did not start")


def connected(host: str, port: int, name: str) -> mqtt_raw.RawClient:
    client = mqtt_raw.RawClient(host, port)
    client.send(mqtt_raw.connect(name, version=mqtt_raw.V5))
    client.expect_packet(mqtt_raw.CONNACK)
    return client


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    proc, host, port = start_broker()
    try:
        base_rss = rss_kib(proc.pid)
        loader = connected(host, port, "loader")
        batch = 5_000
        for start in range(0, count, batch):
            loader.send(b"".join(
                mqtt_raw.publish(f"site/s{n:06}/temp", b"%d.%d" % (15 + n % 20, n % 10),
                                 retain=True, version=mqtt_raw.V5)
                for n in range(start, min(start + batch, count))))
        loader.send(mqtt_raw.publish("loaded", b"", qos=1, packet_id=1, version=mqtt_raw.V5))
        loader.expect_packet(mqtt_raw.PUBACK, timeout=120)
        loaded_rss = rss_kib(proc.pid)

        pinger = connected(host, port, "pinger")
        rtts: list[float] = []
        marks: dict[str, int] = {}
        stop = threading.Event()

        def ping() -> None:
            while not stop.is_set():
                sent = time.perf_counter()
                pinger.send(mqtt_raw.pingreq())
                pinger.expect_packet(mqtt_raw.PINGRESP, timeout=30)
                rtts.append(time.perf_counter() - sent)

        thread = threading.Thread(target=ping, daemon=True)
        thread.start()
        while len(rtts) < 200:  # a baseline before the snapshot
            time.sleep(0.01)
        watcher = connected(host, port, "watcher")
        marks["start"] = len(rtts)
        started = time.perf_counter()
        watcher.send(mqtt_raw.subscribe(1, "$tree/site/+/temp", version=mqtt_raw.V5))
        watcher.expect_packet(mqtt_raw.SUBACK, timeout=30)
        snapshot = watcher.expect_packet(mqtt_raw.PUBLISH, timeout=120)
        elapsed = time.perf_counter() - started
        marks["end"] = len(rtts)
        stop.set()
        thread.join(timeout=30)
        after_rss = rss_kib(proc.pid)

        baseline = rtts[:marks["start"]]
        during = rtts[marks["start"]:marks["end"]] or [float("nan")]
        print(f"retained topics: {count}")
        print(f"broker RSS: {base_rss / 1024:.1f} MiB at start, {loaded_rss / 1024:.1f} MiB "
              f"with the retained set, {after_rss / 1024:.1f} MiB after the snapshot")
        print(f"snapshot: {len(snapshot.body) / 1024 / 1024:.2f} MiB, SUBSCRIBE to last byte "
              f"{elapsed * 1000:.0f} ms")
        print(f"ping round trips of another client: baseline median "
              f"{statistics.median(baseline) * 1000:.2f} ms; during the snapshot "
              f"{len(during)} pings, median {statistics.median(during) * 1000:.2f} ms, "
              f"max {max(during) * 1000:.2f} ms")

        # The delta window on the real runtime: publish one change, time its delta.
        latency = connected(host, port, "latency")
        latency.send(mqtt_raw.subscribe(2, "$tree/lat/+", version=mqtt_raw.V5))
        latency.expect_packet(mqtt_raw.SUBACK)
        latency.expect_packet(mqtt_raw.PUBLISH)  # the (empty) snapshot
        delays = []
        for n in range(50):
            sent = time.perf_counter()
            loader.send(mqtt_raw.publish(f"lat/k{n}", b"1", version=mqtt_raw.V5))
            latency.expect_packet(mqtt_raw.PUBLISH)
            delays.append(time.perf_counter() - sent)
        print(f"publish to delta received, 10 ms window: median "
              f"{statistics.median(delays) * 1000:.1f} ms, min {min(delays) * 1000:.1f} ms, "
              f"max {max(delays) * 1000:.1f} ms ({len(delays)} changes)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
