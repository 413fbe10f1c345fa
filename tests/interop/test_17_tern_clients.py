"""`tern pub` and `tern sub` with Debian's mosquitto_sub and mosquitto_pub, both directions, in
MQTT 3.1.1 and 5.0, at every QoS; JSON output with properties; retained messages; TLS,
WebSocket and mosquitto's TLS flags (--capath, --insecure, --cert/--key, --tls-version,
-L mqtts://).

Every process is bounded: `tern sub` and mosquitto_sub run with -C count and -W timeout.
`tern sub -d` reports "subscribed" on stderr, and mosquitto_sub -d prints "received SUBACK";
nothing is published before that line is read.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from support import TIMEOUT, Names

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_sub") and shutil.which("mosquitto_pub")
         and shutil.which("stdbuf")),
    reason="mosquitto_sub / mosquitto_pub (or stdbuf) not installed: run "
           "scripts/setup-test-deps.sh")

REPO_ROOT = Path(__file__).resolve().parents[2]
TERN = str(Path(os.environ.get("TERN_BIN", REPO_ROOT / "target/debug/tern")))
WAIT_SECS = 10
MOSQ_VERSIONS = {"311": "mqttv311", "5": "mqttv5"}


def pump_lines(stream, lines: "queue.Queue[str | None]") -> None:
    """Feeds the stream's lines (without their newline) to `lines`, then None. A test that
    collects the process's output with communicate() closes the stream under this thread: that
    ends the pumping too."""
    try:
        for line in stream:
            lines.put(line.rstrip("\n"))
    except ValueError:
        pass
    lines.put(None)


class Proc:
    """A subscriber process whose stderr (or merged output) is read line by line."""

    def __init__(self, command: list[str], ready: str, merged: bool = False) -> None:
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        stream = self.proc.stdout if merged else self.proc.stderr
        threading.Thread(target=pump_lines, args=(stream, self.lines), daemon=True).start()
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            assert line is not None, f"{command[0]} ended before subscribing"
            if ready in line:
                break


    def finish(self) -> tuple[int, list[str]]:
        code = self.proc.wait(timeout=WAIT_SECS + 5)
        out: list[str] = []
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            if line is None:
                break
            out.append(line)
        return code, out


def tern_sub(broker, version: str, topic: str, count: int, *extra: str) -> subprocess.Popen:
    # stdout is read after exit; stderr carries the readiness line.
    return subscribed([TERN, "sub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                       "-t", topic, "-C", str(count), "-W", str(WAIT_SECS), "-d", *extra])


def subscribed(command: list[str]) -> subprocess.Popen:
    """Starts a `tern sub ... -d` and returns once it reports its subscription."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: "queue.Queue[str | None]" = queue.Queue()
    threading.Thread(target=pump_lines, args=(proc.stderr, lines), daemon=True).start()
    while True:
        line = lines.get(timeout=TIMEOUT)
        assert line is not None, "tern sub ended before subscribing"
        if line.startswith("subscribed"):
            return proc


def mosquitto_sub(broker, version: str, topic: str, count: int, *extra: str) -> Proc:
    return Proc(["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
                 "-V", MOSQ_VERSIONS[version], "-t", topic, "-C", str(count),
                 "-W", str(WAIT_SECS), "-d", "-F", "MSG|%t|%q|%r|%p", *extra],
                ready="received SUBACK", merged=True)


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT_SECS + 5)


@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_tern_pub_to_mosquitto_sub(broker, version: str, qos: int) -> None:
    topic = Names().topic("tp")
    sub = mosquitto_sub(broker, version, topic, 2, "-q", "2")
    for payload in ("first", "second"):
        done = run([TERN, "pub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                    "-t", topic, "-m", payload, "-q", str(qos)])
        assert done.returncode == 0, done.stderr
    code, out = sub.finish()
    assert code == 0, out
    messages = [line for line in out if line.startswith("MSG|")]
    assert messages == [f"MSG|{topic}|{qos}|0|first", f"MSG|{topic}|{qos}|0|second"]


@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_pub_to_tern_sub(broker, version: str, qos: int) -> None:
    topic = Names().topic("ts")
    sub = tern_sub(broker, version, topic + "/#", 2, "-q", "2", "-v")
    for payload in ("one", "two"):
        done = run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                    "-V", MOSQ_VERSIONS[version], "-t", f"{topic}/x", "-m", payload,
                    "-q", str(qos)])
        assert done.returncode == 0, done.stderr
    out, err = sub.communicate(timeout=WAIT_SECS + 5)
    assert sub.returncode == 0, err
    assert out.splitlines() == [f"{topic}/x one", f"{topic}/x two"]


def test_tern_sub_json_shows_properties_and_retain(broker) -> None:
    topic = Names().topic("json")
    done = run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5",
                "-t", topic, "-m", "kept", "-r", "-q", "1",
                "-D", "publish", "user-property", "site", "north",
                "-D", "publish", "content-type", "text/plain"])
    assert done.returncode == 0, done.stderr
    # The retained message arrives at subscription time, before "subscribed" may even print.
    done = run([TERN, "sub", "-h", broker.host, "-p", str(broker.port), "-t", topic,
                "-C", "1", "-W", str(WAIT_SECS), "--json", "-q", "1"])
    assert done.returncode == 0, done.stderr
    message = json.loads(done.stdout)
    assert message["topic"] == topic and message["payload"] == "kept"
    assert message["retain"] is True and message["qos"] == 1
    assert message["properties"]["user_properties"] == [["site", "north"]]
    assert message["properties"]["content_type"] == "text/plain"
    # -R leaves retained messages out: nothing arrives within the timeout, which -C turns
    # into a failure exit.
    done = run([TERN, "sub", "-h", broker.host, "-p", str(broker.port), "-t", topic,
                "-C", "1", "-W", "1", "-R"])
    assert done.returncode != 0 and "timed out" in done.stderr
    run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", topic, "-r", "-n"])


def test_tern_pub_reads_stdin_and_repeats(broker) -> None:
    topic = Names().topic("stdin")
    sub = mosquitto_sub(broker, "5", topic, 3, "-q", "1")
    done = subprocess.run([TERN, "pub", "-h", broker.host, "-p", str(broker.port), "-t", topic,
                           "-s", "--repeat", "3", "-q", "1"],
                          input="from stdin", capture_output=True, text=True, timeout=WAIT_SECS)
    assert done.returncode == 0, done.stderr
    code, out = sub.finish()
    assert code == 0, out
    assert [line for line in out if line.startswith("MSG|")] == \
        [f"MSG|{topic}|1|0|from stdin"] * 3


def test_tern_pub_reports_a_refused_connection(broker) -> None:
    # A bad protocol version is refused by the CLI itself; an unreachable port fails fast.
    done = run([TERN, "pub", "-h", "127.0.0.1", "-p", "1", "-t", "x", "-m", "y",
                "--connect-timeout", "2"])
    assert done.returncode != 0 and "cannot connect" in done.stderr


def make_certificates(directory: Path, server_names: str) -> None:
    """ca.pem/ca.key, server.pem/server.key for `server_names` (a subjectAltName list) and
    client.pem/client.key, all made by openssl in `directory`."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=30)

    openssl("req", "-x509", *ec, "-days", "2", "-keyout", "ca.key", "-out", "ca.pem",
            "-subj", "/CN=test-ca")
    for name, usage, subject in [("server", "serverAuth", "/CN=localhost"),
                                 ("client", "clientAuth", "/CN=device-1")]:
        extensions = f"extendedKeyUsage={usage}\n"
        if name == "server":
            extensions += f"subjectAltName={server_names}\n"
        (directory / f"{name}.ext").write_text(extensions)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext")


def start_tern(config: Path, listeners: int) -> tuple[subprocess.Popen, dict[str, int]]:
    """`tern serve --config config`, and the port of each of its listeners by protocol."""
    server = subprocess.Popen([TERN, "serve", "--config", str(config)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    ports: dict[str, int] = {}
    listening = re.compile(r"listening for MQTT on \S+:(\d+) \((\w+)")
    lines: "queue.Queue[str | None]" = queue.Queue()
    threading.Thread(target=pump_lines, args=(server.stderr, lines), daemon=True).start()
    while len(ports) < listeners:
        line = lines.get(timeout=TIMEOUT)
        assert line is not None, "tern serve ended"
        match = listening.search(line)
        if match:
            ports[match.group(2)] = int(match.group(1))
    return server, ports


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl command-line tool missing")
def test_tern_clients_over_tls_websocket_and_secure_websocket(tmp_path: Path) -> None:
    """A broker of its own with mqtts, ws and wss listeners; certificates made by openssl."""
    from support import BROKER_KIND

    if BROKER_KIND != "tern":
        pytest.skip("Tern's listener configuration")
    make_certificates(tmp_path, "DNS:localhost,IP:127.0.0.1")
    tls = f'cert = "{tmp_path / "server.pem"}"\nkey = "{tmp_path / "server.key"}"\n'
    config = tmp_path / "tern.toml"
    config.write_text(
        f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "mqtts"\n{tls}'
        '[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "ws"\npath = "/mqtt"\n'
        f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "wss"\npath = "/mqtt"\n{tls}')
    server, ports = start_tern(config, 3)
    try:
        cafile = ["--cafile", str(tmp_path / "ca.pem")]
        routes = [
            (["-p", str(ports["ws"]), "--ws"],
             ["-p", str(ports["mqtts"]), *cafile]),
            (["-p", str(ports["mqtts"]), "--tls", *cafile],
             ["-p", str(ports["wss"]), "--ws", *cafile]),
        ]
        for index, (sub_args, pub_args) in enumerate(routes):
            topic = Names().topic(f"secure{index}")
            command = [TERN, "sub", "-h", "127.0.0.1", *sub_args, "-t", topic, "-C", "1",
                       "-W", str(WAIT_SECS), "-d", "-q", "1"]
            sub = subscribed(command)
            done = run([TERN, "pub", "-h", "127.0.0.1", *pub_args, "-t", topic,
                        "-m", f"via route {index}", "-q", "1"])
            assert done.returncode == 0, done.stderr
            out, err = sub.communicate(timeout=WAIT_SECS + 5)
            assert sub.returncode == 0, err
            assert out == f"via route {index}\n"
        # Without the CA the broker's certificate is refused.
        done = run([TERN, "pub", "-h", "127.0.0.1", "-p", str(ports["mqtts"]), "--tls",
                    "-t", "x", "-m", "y", "--connect-timeout", "3"])
        assert done.returncode != 0
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl command-line tool missing")
def test_tern_clients_tls_options(tmp_path: Path) -> None:
    """mosquitto's TLS flags: a listener that requires client certificates, with a server
    certificate naming only tern.test, so -h 127.0.0.1 needs --insecure (which still checks
    the chain); --capath, --tls-version, and -L mqtts://."""
    from support import BROKER_KIND

    if BROKER_KIND != "tern":
        pytest.skip("Tern's listener configuration")
    make_certificates(tmp_path, "DNS:tern.test")
    cas = tmp_path / "cas"
    cas.mkdir()
    shutil.copy(tmp_path / "ca.pem", cas / "test-ca.crt")
    config = tmp_path / "tern.toml"
    config.write_text(
        f'[[listener]]\nbind = "127.0.0.1:0"\nprotocol = "mqtts"\n'
        f'cert = "{tmp_path / "server.pem"}"\nkey = "{tmp_path / "server.key"}"\n'
        f'client_ca = "{tmp_path / "ca.pem"}"\nrequire_client_certificate = true\n')
    server, ports = start_tern(config, 1)
    port = str(ports["mqtts"])
    identity = ["--cert", str(tmp_path / "client.pem"), "--key", str(tmp_path / "client.key")]
    cafile = ["--cafile", str(tmp_path / "ca.pem")]
    try:
        topic = Names().topic("tlsopts")
        # The subscriber: -L mqtts:// (TLS), the CA from a directory, the chain checked but
        # not the name.
        command = [TERN, "sub", "-L", f"mqtts://127.0.0.1:{port}/{topic}", "--capath", str(cas),
                   "--insecure", *identity, "-C", "2", "-W", str(WAIT_SECS), "-d"]
        sub = subscribed(command)
        publish = [TERN, "pub", "-h", "127.0.0.1", "-p", port, "-t", topic, "--connect-timeout",
                   "1", *cafile]
        for refused in ([], ["--insecure"], identity):
            # The certificate names tern.test, not 127.0.0.1; or no client certificate.
            done = run([*publish, *refused, "-m", "refused"])
            assert done.returncode != 0, refused
        done = run([*publish, "--insecure", *identity, "--tls-version", "tlsv1.2", "-m", "one"])
        assert done.returncode == 0, done.stderr
        done = run([*publish, "--insecure", *identity, "--tls-version", "tlsv1.3", "-m", "two"])
        assert done.returncode == 0, done.stderr
        done = run([*publish, "--insecure", *identity, "--tls-version", "tlsv1.1", "-m", "x"])
        assert done.returncode != 0 and "tlsv1.1" in done.stderr
        out, err = sub.communicate(timeout=WAIT_SECS + 5)
        assert sub.returncode == 0, err
        assert out == "one\ntwo\n"
    finally:
        server.terminate()
        server.wait(timeout=10)
