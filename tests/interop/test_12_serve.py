"""`tern serve` as a process: graceful shutdown on SIGTERM.

On SIGTERM the broker tells MQTT 5 clients it is going away (DISCONNECT 0x8B, Server shutting
down), closes every connection and exits with status 0.
"""

from __future__ import annotations

import signal

import pytest

from mqtt_raw import DISCONNECT, V5, V311
from support import mosquitto_deviation

STOP_TIMEOUT = 10.0


@pytest.mark.broker_config({})
@mosquitto_deviation("mosquitto 2.0.11 closes MQTT 5 clients on SIGTERM without DISCONNECT 0x8B")
def test_sigterm_disconnects_clients_with_0x8b_and_exits_cleanly(broker, clients, names):
    try:
        v5 = clients.raw_connected(names.client("v5"), version=V5)
        v311 = clients.raw_connected(names.client("v311"), version=V311)
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGTERM)

        before_close = v5.expect_closed(STOP_TIMEOUT)
        disconnects = [p for p in before_close if p.type == DISCONNECT]
        assert len(disconnects) == 1, f"MQTT 5 client got {before_close}"
        assert disconnects[0].body[:1] == b"\x8b", f"reason code of {disconnects[0]}"
        # A 3.1.1 client has no DISCONNECT from the server; its connection is simply closed.
        assert [p for p in v311.expect_closed(STOP_TIMEOUT) if p.type == DISCONNECT] == []
        assert broker.proc.wait(timeout=STOP_TIMEOUT) == 0
    finally:
        # The fixture checks the broker is still up after each test: start it again.
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.kill()
            broker.proc.wait(timeout=STOP_TIMEOUT)
        broker.proc = None
        broker.start()
