"""Secure and WebSocket listeners with real clients: mosquitto_pub/mosquitto_sub over TLS (with
``--cafile``, and with client certificates for mutual TLS), paho-mqtt over WebSocket and secure
WebSocket, the WebSocket rules of section 6 with a hand-made WebSocket client, handshakes cut
at the CONNECT deadline, the certificate reloaded on SIGHUP, and admission limits.

Certificates are made for each run by the openssl command-line tool; no key is committed.
Tern-only: the listener layout is Tern's configuration.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

import mqtt_raw
from conftest import REPO_ROOT, Broker, BrokerError
from support import BROKER_KIND, TIMEOUT, Names, PahoClient

pytestmark = [
    pytest.mark.skipif(BROKER_KIND != "tern", reason="Tern's listener configuration"),
    pytest.mark.skipif(not shutil.which("openssl"), reason="openssl command-line tool missing"),
]

LISTENING = re.compile(r"listening for MQTT on (?P<host>\S+):(?P<port>\d+) \((?P<scheme>\w+)")
HAVE_MOSQUITTO = bool(shutil.which("mosquitto_sub") and shutil.which("mosquitto_pub"))
needs_mosquitto = pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto clients missing")


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", cwd=directory)


def make_cert(directory: Path, name: str, ca: str, subject: str,
              san: Optional[str] = None) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory)
    # Extensions make it an X.509 v3 certificate, the only version WebPKI verification takes.
    extensions = ["extendedKeyUsage=" + ("serverAuth" if san else "clientAuth")]
    if san:
        extensions.append(f"subjectAltName={san}")
    (directory / f"{name}.ext").write_text("\n".join(extensions) + "\n", encoding="utf-8")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate it signed
    (CN device-42), and a client certificate from another CA that the broker does not trust."""
    directory = tmp_path_factory.mktemp("certs")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_cert(directory, "server", "ca", "/CN=localhost", "DNS:localhost,IP:127.0.0.1")
    make_cert(directory, "client", "ca", "/CN=device-42")
    make_cert(directory, "stranger", "other-ca", "/CN=device-42")
    return directory


# ---------------------------------------------------------------------------
# A broker with several listeners
# ---------------------------------------------------------------------------

class ListenerBroker(Broker):
    """``tern serve --config`` with the file's own listeners; ``ports`` maps each listener's
    name (given in configuration order) to its port."""

    def __init__(self, workdir: Path, config: str, names: list[str]) -> None:
        super().__init__("tern", workdir, None)
        self.config = config
        self.names = names
        self.ports: dict[str, int] = {}

    def _tern_command(self) -> list[str]:
        command = super()._tern_command()
        path = self.workdir / "tern.toml"
        path.write_text(self.config, encoding="utf-8")
        return [command[0], "serve", "--config", str(path)]

    def start(self) -> None:
        super().start()  # waits for the first listening line (a plain listener)
        self.ports = {self.names[0]: self.port}
        for name in self.names[1:]:
            self.ports[name] = int(self._wait_for_line(LISTENING).group("port"))

    def wait_log(self, pattern: str) -> re.Match[str]:
        """The next log line matching ``pattern`` (lines are consumed in order)."""
        return self._wait_for_line(re.compile(pattern))


def start_broker(workdir: Path, config: str, names: list[str]) -> ListenerBroker:
    broker = ListenerBroker(workdir, config, names)
    try:
        broker.start()
    except BrokerError as err:
        pytest.fail(f"could not start tern:\n{err}", pytrace=False)
    return broker


def listeners_config(certs: Path, extra: str = "") -> str:
    tls = f'cert = "{certs / "server.pem"}"\nkey = "{certs / "server.key"}"\n'
    return (
        f"{extra}\n"
        '[[listener]]\nbind = "127.0.0.1:0"\n\n'
        f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "mqtts"\n{tls}\n'
        f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "mqtts"\n{tls}'
        f'client_ca = "{certs / "ca.pem"}"\nuse_identity_as_username = true\n\n'
        '[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "ws"\n\n'
        f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "wss"\npath = "/mqtt"\n{tls}\n'
    )


NAMES = ["mqtt", "mqtts", "mtls", "ws", "wss"]


@pytest.fixture(scope="module")
def tern(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerBroker]:
    broker = start_broker(tmp_path_factory.mktemp("tern-listeners"),
                          listeners_config(certs, "[limits]\nconnect_timeout_secs = 1\n"), NAMES)
    yield broker
    broker.stop()


@pytest.fixture
def live(tern: ListenerBroker) -> Iterator[ListenerBroker]:
    yield tern
    assert tern.alive(), f"tern exited:\n{tern.output_tail()}"


# ---------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub over TLS
# ---------------------------------------------------------------------------

def mosquitto(tool: str, port: int, *args: str) -> list[str]:
    return [tool, "-h", "localhost", "-p", str(port), *args]


def round_trip(port: int, tls_args: list[str], names: Names, version: str) -> None:
    """mosquitto_sub receives what mosquitto_pub sends, both over ``tls_args``."""
    topic = names.topic(version)
    sub = subprocess.Popen(
        ["stdbuf", "-oL", *mosquitto("mosquitto_sub", port, *tls_args, "-V", version,
                                     "-t", topic, "-q", "1", "-C", "1", "-W", "10", "-d",
                                     "-F", "MSG|%t|%p")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert sub.stdout is not None
        for line in sub.stdout:
            if "received SUBACK" in line:
                break
        else:
            pytest.fail("mosquitto_sub ended before its SUBACK")
        pub = subprocess.run(mosquitto("mosquitto_pub", port, *tls_args, "-V", version, "-t",
                                       topic, "-q", "1", "-m", "over-tls"),
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert pub.returncode == 0, pub.stderr
        rest = sub.stdout.read()
        assert sub.wait(timeout=TIMEOUT) == 0, rest
        assert f"MSG|{topic}|over-tls" in rest
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


@needs_mosquitto
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_clients_over_tls_with_cafile(live, certs, names, version):
    round_trip(live.ports["mqtts"], ["--cafile", str(certs / "ca.pem")], names, version)


@needs_mosquitto
def test_mosquitto_clients_over_mutual_tls(live, certs, names):
    client = ["--cafile", str(certs / "ca.pem"), "--cert", str(certs / "client.pem"),
              "--key", str(certs / "client.key")]
    round_trip(live.ports["mtls"], client, names, "mqttv5")


@needs_mosquitto
@pytest.mark.parametrize("who", ["no certificate", "untrusted certificate"])
def test_mutual_tls_refuses_clients_without_a_trusted_certificate(live, certs, names, who):
    args = ["--cafile", str(certs / "ca.pem")]
    if who == "untrusted certificate":
        args += ["--cert", str(certs / "stranger.pem"), "--key", str(certs / "stranger.key")]
    pub = subprocess.run(mosquitto("mosquitto_pub", live.ports["mtls"], *args, "-V", "mqttv5",
                                   "-t", names.topic(), "-m", "x"),
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert pub.returncode != 0, "published without a trusted client certificate"
    live.wait_log(r"refused connection from 127\.0\.0\.1:\d+ on .*TLS handshake failed")


@needs_mosquitto
def test_tls_client_refuses_a_server_it_cannot_verify(live, certs, names):
    pub = subprocess.run(mosquitto("mosquitto_pub", live.ports["mqtts"], "--cafile",
                                   str(certs / "other-ca.pem"), "-t", names.topic(), "-m", "x"),
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert pub.returncode != 0


@needs_mosquitto
def test_certificate_identity_as_user_name_needs_a_certificate(certs, tmp_path_factory, names):
    """With client certificates optional and ``use_identity_as_username``, a client with a
    verified certificate is let in, and one without gets CONNACK "not authorized" (3.1.1
    return code 5) from the broker core, since it has no identity to take as user name."""
    config = (f'[[listener]]\nbind = "127.0.0.1:0"\n\n'
              f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "mqtts"\n'
              f'cert = "{certs / "server.pem"}"\nkey = "{certs / "server.key"}"\n'
              f'client_ca = "{certs / "ca.pem"}"\nrequire_client_certificate = false\n'
              f'use_identity_as_username = true\n')
    broker = start_broker(tmp_path_factory.mktemp("tern-identity"), config, ["mqtt", "mqtts"])
    try:
        port = broker.ports["mqtts"]
        base = ["--cafile", str(certs / "ca.pem"), "-V", "mqttv311", "-t", names.topic(),
                "-m", "x"]
        with_cert = base + ["--cert", str(certs / "client.pem"), "--key",
                            str(certs / "client.key")]
        ok = subprocess.run(mosquitto("mosquitto_pub", port, *with_cert), capture_output=True,
                            text=True, timeout=TIMEOUT)
        assert ok.returncode == 0, ok.stderr
        refused = subprocess.run(mosquitto("mosquitto_pub", port, *base), capture_output=True,
                                 text=True, timeout=TIMEOUT)
        assert refused.returncode != 0
        assert "not authorised" in (refused.stderr + refused.stdout).lower()
        broker.wait_log(r"connection refused: CONNECT refused with NotAuthorized")
    finally:
        broker.stop()


# ---------------------------------------------------------------------------
# paho-mqtt over WebSocket and secure WebSocket
# ---------------------------------------------------------------------------

def ws_client(broker: ListenerBroker, listener: str, client_id: str, version: int,
              certs: Optional[Path] = None, path: str = "/mqtt") -> PahoClient:
    client = PahoClient("localhost", broker.ports[listener], client_id, version=version,
                        transport="websockets")
    client.client.ws_set_options(path=path)
    if certs is not None:
        client.client.tls_set(ca_certs=str(certs / "ca.pem"))
    return client


@pytest.mark.parametrize("listener", ["ws", "wss"])
@pytest.mark.parametrize("version", [4, 5])
def test_paho_over_websocket(live, certs, names, listener, version):
    secure = certs if listener == "wss" else None
    sub = ws_client(live, listener, names.client("s"), version, secure)
    pub = ws_client(live, listener, names.client("p"), version, secure)
    try:
        sub.connect()
        sub.subscribe(names.topic(), qos=1)
        pub.connect()
        for n in range(20):
            pub.publish(names.topic(), f"m{n}".encode(), qos=1)
        got = [sub.expect_message().payload for _ in range(20)]
        assert got == [f"m{n}".encode() for n in range(20)]
    finally:
        sub.close()
        pub.close()


def test_websocket_and_tcp_clients_share_one_broker(live, certs, names):
    sub = ws_client(live, "wss", names.client("s"), 5, certs)
    tcp = PahoClient(live.host, live.ports["mqtt"], names.client("p"))
    try:
        sub.connect()
        sub.subscribe(names.topic(), qos=1)
        tcp.connect()
        tcp.publish(names.topic(), b"from tcp", qos=1)
        assert sub.expect_message().payload == b"from tcp"
    finally:
        sub.close()
        tcp.close()


def test_websocket_on_another_path_is_refused(live, names):
    client = ws_client(live, "ws", names.client(), 5, path="/elsewhere")
    try:
        with pytest.raises(Exception):
            client.connect()
    finally:
        client.close()
    live.wait_log(r"refused connection .*WebSocket path \"/elsewhere\" is not \"/mqtt\"")


# ---------------------------------------------------------------------------
# Section 6 with a hand-made WebSocket client
# ---------------------------------------------------------------------------

class RawWebSocket:
    """A minimal client side of RFC 6455: upgrade, masked frames out, frames in."""

    def __init__(self, port: int, path: str = "/mqtt", protocol: Optional[str] = "mqtt"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n")
        if protocol:
            request += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        self.sock.sendall((request + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0] else 0
        self.headers = {k.strip().lower(): v.strip()
                        for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        self.buffer = b""

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise mqtt_raw.ConnectionClosed("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def recv_mqtt(self) -> bytes:
        """The payload of the next binary frame."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x2:
                return payload
            assert opcode in (0x9, 0xA), f"unexpected frame opcode {opcode:#x}"

    def expect_closed(self) -> None:
        """The server ends the connection: a close frame or end of stream."""
        try:
            while True:
                opcode, _ = self.recv_frame()
                if opcode == 0x8:
                    return
        except (mqtt_raw.ConnectionClosed, ConnectionResetError):
            return

    def close(self) -> None:
        self.sock.close()


def test_server_selects_the_mqtt_subprotocol(live):
    """MQTT-6.0.0-4: the server's handshake answer names "mqtt"."""
    ws = RawWebSocket(live.ports["ws"], protocol="wamp, mqtt")
    try:
        assert ws.status == 101
        assert ws.headers.get("sec-websocket-protocol") == "mqtt"
    finally:
        ws.close()


def test_upgrade_without_the_mqtt_subprotocol_is_refused(live):
    ws = RawWebSocket(live.ports["ws"], protocol=None)
    try:
        assert ws.status == 400
    finally:
        ws.close()
    live.wait_log(r"refused connection .*did not offer the \"mqtt\" subprotocol")


def test_packets_need_not_align_with_frames(live, names):
    """MQTT-6.0.0-2: a CONNECT split over three frames, then two packets in one frame."""
    ws = RawWebSocket(live.ports["ws"])
    try:
        connect = mqtt_raw.connect(names.client(), version=mqtt_raw.V311)
        for part in (connect[:3], connect[3:7], connect[7:]):
            ws.send_frame(0x2, part)
        assert ws.recv_mqtt() == bytes([0x20, 0x02, 0x00, 0x00])  # CONNACK, accepted
        ws.send_frame(0x2, mqtt_raw.pingreq() + mqtt_raw.pingreq())
        responses = ws.recv_mqtt()
        while len(responses) < 4:
            responses += ws.recv_mqtt()
        assert responses == bytes([0xD0, 0x00, 0xD0, 0x00])  # two PINGRESP
    finally:
        ws.close()


def test_text_frame_closes_the_connection(live, names):
    """MQTT-6.0.0-1: MQTT travels in binary frames only; a text frame closes the connection."""
    ws = RawWebSocket(live.ports["ws"])
    try:
        ws.send_frame(0x2, mqtt_raw.connect(names.client(), version=mqtt_raw.V311))
        assert ws.recv_mqtt()[0] == 0x20
        ws.send_frame(0x1, b"hello")
        ws.expect_closed()
    finally:
        ws.close()


# ---------------------------------------------------------------------------
# Handshakes that never finish, limits
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("listener", ["mqtts", "ws", "wss"])
def test_handshake_that_never_finishes_is_cut(live, listener):
    """A client that opens the socket and stays silent is closed at the CONNECT deadline (1 s
    here) before any TLS or WebSocket handshake."""
    sock = socket.create_connection(("127.0.0.1", live.ports[listener]), timeout=TIMEOUT)
    try:
        # End of stream from the server, well before the test's own timeout.
        assert sock.recv(1024) == b""
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    live.wait_log(r"refused connection .*not finished within")


def test_connection_limits_refuse_at_accept(certs, tmp_path_factory, names):
    config = ("[limits]\nconnections_per_address_max = 3\n"
              "connection_rate_per_address_max = 1000\n\n"
              '[[listener]]\nbind = "127.0.0.1:0"\n')
    broker = start_broker(tmp_path_factory.mktemp("tern-limits"), config, ["mqtt"])
    held: list[mqtt_raw.RawClient] = []
    try:
        # The start-up probe connection may still be counted until the broker sees it close.
        for n in range(3):
            raw = mqtt_raw.RawClient(broker.host, broker.port)
            held.append(raw)
            raw.connect(names.client(str(n)))
        extra = mqtt_raw.RawClient(broker.host, broker.port)
        held.append(extra)
        assert extra.expect_closed() == []
        broker.wait_log(r"refused connection from 127\.0\.0\.1:\d+ .*too many connections "
                        r"from this address")
        held.pop().close()
        held.pop(0).close()
        # A slot is free again once the broker has seen a connection end: poll for it.
        deadline = time.monotonic() + TIMEOUT
        while True:
            again = mqtt_raw.RawClient(broker.host, broker.port)
            held.append(again)
            again.send(mqtt_raw.connect(names.client("again"), version=mqtt_raw.V311))
            try:
                if again.recv_packet().type == mqtt_raw.CONNACK:
                    break
            except mqtt_raw.ConnectionClosed:
                held.pop().close()
            assert time.monotonic() < deadline, "a freed slot was not reusable"
    finally:
        for raw in held:
            raw.close()
        broker.stop()


def test_connection_rate_per_address(tmp_path_factory):
    config = ("[limits]\nconnection_rate_per_address_max = 5\n\n"
              '[[listener]]\nbind = "127.0.0.1:0"\n')
    broker = start_broker(tmp_path_factory.mktemp("tern-rate"), config, ["mqtt"])
    try:
        refused = 0
        for _ in range(12):
            with mqtt_raw.RawClient(broker.host, broker.port) as raw:
                raw.send(mqtt_raw.connect("rate", version=mqtt_raw.V311))
                try:
                    assert raw.recv_packet().type == mqtt_raw.CONNACK
                except mqtt_raw.ConnectionClosed:
                    refused += 1
        assert refused >= 1, "12 connections in a burst were all accepted"
        broker.wait_log(r"refused connection .*connection rate from this address above 5")
    finally:
        broker.stop()


def test_publish_rate_above_the_limit_disconnects_with_0x96(tmp_path_factory, names):
    """A client publishing faster than publish_rate_per_client_max is disconnected, an MQTT 5
    client with DISCONNECT 0x96 Message rate too high; messages within the limit got through."""
    config = ('[limits]\npublish_rate_per_client_max = 5\n\n'
              '[[listener]]\nbind = "127.0.0.1:0"\n')
    broker = start_broker(tmp_path_factory.mktemp("tern-publish-rate"), config, ["mqtt"])
    watcher = PahoClient(broker.host, broker.port, names.client("w"))
    fast = PahoClient(broker.host, broker.port, names.client("f"))
    try:
        watcher.connect()
        watcher.subscribe(names.topic(), qos=0)
        fast.connect()
        for n in range(20):  # well over 5 within one second
            fast.client.publish(names.topic(), f"{n}".encode(), qos=0)
        gone = fast.expect_disconnected()
        assert gone.from_server and gone.reason == 0x96, gone
        first = [watcher.expect_message().payload for _ in range(5)]
        assert first == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        watcher.close()
        fast.close()
        broker.stop()


# ---------------------------------------------------------------------------
# Certificate reload on SIGHUP
# ---------------------------------------------------------------------------

def server_certificate_cn(port: int, ca: Path) -> str:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
            return subject["commonName"]


def test_sighup_reloads_the_certificate_without_dropping_connections(certs, tmp_path_factory,
                                                                     names):
    workdir = tmp_path_factory.mktemp("tern-reload")
    for name in ("ca.pem", "ca.key"):
        shutil.copy(certs / name, workdir / name)
    make_cert(workdir, "server", "ca", "/CN=localhost", "DNS:localhost,IP:127.0.0.1")
    config = ('[[listener]]\nbind = "127.0.0.1:0"\n\n'
              '[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "mqtts"\n'
              'cert = "server.pem"\nkey = "server.key"\n')
    broker = start_broker(workdir, config, ["mqtt", "mqtts"])
    port = broker.ports["mqtts"]
    ca = workdir / "ca.pem"
    client = PahoClient("localhost", port, names.client("kept"))
    client.client.tls_set(ca_certs=str(ca))
    try:
        assert server_certificate_cn(port, ca) == "localhost"
        client.connect()
        client.subscribe(names.topic(), qos=1)
        # A new certificate (new key, another name) replaces the files, then SIGHUP.
        make_cert(workdir, "server", "ca", "/CN=renewed.localhost",
                  "DNS:localhost,IP:127.0.0.1")
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        broker.wait_log(r"reloaded the TLS certificate of 127\.0\.0\.1:" + str(port))
        assert server_certificate_cn(port, ca) == "renewed.localhost"
        # The connection made before the reload is still up and still receives.
        client.publish(names.topic(), b"after reload", qos=1)
        assert client.expect_message().payload == b"after reload"
        # A broken key file is refused; the previous certificate stays in force.
        (workdir / "server.key").write_text("not a key\n", encoding="utf-8")
        broker.proc.send_signal(signal.SIGHUP)
        broker.wait_log(r"cannot reload the TLS certificate of .*keeping the previous one")
        assert server_certificate_cn(port, ca) == "renewed.localhost"
        assert client.is_connected()
    finally:
        client.close()
        broker.stop()


# ---------------------------------------------------------------------------
# The README's minimal secure configuration: TLS, client certificates, a password file, ACL
# ---------------------------------------------------------------------------

def tern_passwd(file: Path, user: str, password: str) -> None:
    binary = Path(os.environ.get("TERN_BIN", "target/debug/tern"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    done = subprocess.run([str(binary), "passwd", str(file), user], input=password + "\n",
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@needs_mosquitto
def test_secure_configuration_from_the_readme(certs, tmp_path_factory, names):
    """Devices authenticate with their certificate, which names them in ACL rules (%u); people
    log in with a password over secure WebSocket; wrong passwords and other devices' topics
    are refused."""
    workdir = tmp_path_factory.mktemp("tern-secure")
    tern_passwd(workdir / "passwd", "alice", "alice-secret")
    tls = f'cert = "{certs / "server.pem"}"\nkey = "{certs / "server.key"}"\n'
    config = (
        '[[listener]]\nbind = "127.0.0.1:0"\nauth = "default"\n\n'
        f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "mqtts"\n{tls}'
        f'client_ca = "{certs / "ca.pem"}"\nuse_identity_as_username = true\n'
        'auth = "devices"\n\n'
        f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "wss"\n{tls}\n'
        '[auth.devices]\nanonymous = true\n\n'
        '[auth.default]\npassword_file = "passwd"\n\n'
        '[[acl]]\ntopic = "devices/%u/#"\nmethod = "certificate"\n'
        '[[acl]]\nuser = "alice"\ntopic = "devices/#"\n'
    )
    broker = start_broker(workdir, config, ["mqtt", "devices", "wss"])
    alice = ws_client(broker, "wss", names.client("alice"), 5, certs)
    intruder = ws_client(broker, "wss", names.client("bad"), 5, certs)
    try:
        alice.client.username_pw_set("alice", "alice-secret")
        alice.connect()
        alice.subscribe("devices/#", qos=1)
        intruder.client.username_pw_set("alice", "wrong")
        assert intruder.connect(expect_code=None).code == 0x86  # bad user name or password

        device = ["--cafile", str(certs / "ca.pem"), "--cert", str(certs / "client.pem"),
                  "--key", str(certs / "client.key"), "-V", "mqttv311"]
        # Its own subtree is granted, another device's is refused (SUBACK 0x80 in 3.1.1).
        sub = subprocess.run(
            mosquitto("mosquitto_sub", broker.ports["devices"], *device, "-t",
                      "devices/device-42/#", "-t", "devices/device-7/#", "-q", "1", "-d",
                      "-W", "1"),
            capture_output=True, text=True, timeout=TIMEOUT)
        granted = re.search(r"Subscribed \(mid: \d+\): (\d+), (\d+)", sub.stdout)
        assert granted is not None, sub.stdout + sub.stderr
        assert granted.groups() == ("1", "128")
        # What the device publishes in its subtree reaches alice.
        pub = subprocess.run(mosquitto("mosquitto_pub", broker.ports["devices"], *device, "-t",
                                       "devices/device-42/temp", "-q", "1", "-m", "21.5"),
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert pub.returncode == 0, pub.stderr
        message = alice.expect_message()
        assert (message.topic, message.payload) == ("devices/device-42/temp", b"21.5")
    finally:
        alice.close()
        intruder.close()
        broker.stop()
