"""The operator API's files: ban changes made at once all reach the bans file (after many
concurrent bans and unbans it lists exactly the bans in force, what a restart reads), and
operator tokens given by their hashes in the configuration file work beside those of
`tern token add`.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO_ROOT, BrokerError
from http_support import HttpBroker, tern
from support import BROKER_KIND, TIMEOUT, Names
from test_19_http_admin import Ops, ops  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")


def test_concurrent_ban_changes_leave_the_latest_list_on_disk(ops: Ops, names: Names):
    ids = [names.client(f"b{n}") for n in range(40)]

    def ban(client_id: str) -> int:
        return ops.call("POST", "/v1/admin/banned", body={"client_id": client_id})[0]

    def unban(client_id: str) -> int:
        return ops.call("DELETE", f"/v1/admin/banned/{client_id}")[0]

    for _ in range(15):
        with ThreadPoolExecutor(max_workers=20) as pool:
            assert set(pool.map(ban, ids)) == {200}
        with ThreadPoolExecutor(max_workers=20) as pool:
            assert set(pool.map(unban, ids[::2])) == {200}
        status, body = ops.call("GET", "/v1/admin/banned", "reader")
        assert status == 200
        in_force = sorted(b["client_id"] for b in body["banned"])
        assert in_force == sorted(ids[1::2])
        kept = json.loads((ops.data / "http-bans.json").read_text())
        assert sorted(b["client_id"] for b in kept["banned"]) == in_force
        with ThreadPoolExecutor(max_workers=20) as pool:
            assert set(pool.map(unban, ids[1::2])) == {200}


class ConfiguredBroker(HttpBroker):
    """A broker started with `--config FILE` (written by the test)."""

    config_file: Path

    def _tern_command(self) -> list[str]:
        return super()._tern_command() + ["--config", str(self.config_file)]


def test_a_token_given_by_its_hash_in_the_configuration_file_works(tmp_path: Path):
    binary = Path(os.environ.get("TERN_BIN", "target/debug/tern"))
    done = subprocess.run(
        [str(REPO_ROOT / binary), "token", "add", "prom", "--scope", "metrics", "--config",
         "--data-dir", str(tmp_path / "unused")],
        capture_output=True, text=True, timeout=TIMEOUT, check=True)
    token = done.stdout.strip()
    entry = done.stderr.split("\n\n", 1)[1]
    assert token.rsplit(".", 1)[1] not in entry, "the entry holds the hash, not the token"
    assert not (tmp_path / "unused" / "http-tokens.json").exists(), "--config writes nothing"
    file_token = tern("token", "add", "reader", "--scope", "read", "--data-dir",
                      str(tmp_path / "tern-data")).strip()
    broker = ConfiguredBroker("tern", tmp_path)
    broker.config_file = tmp_path / "tern-config.toml"
    broker.config_file.write_text(entry)
    try:
        broker.start()
    except BrokerError as err:
        pytest.fail(f"could not start the broker:\n{err}", pytrace=False)
    try:
        def status(path: str, bearer: str) -> int:
            request = urllib.request.Request(broker.http_url + path,
                                             headers={"Authorization": f"Bearer {bearer}"})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                    return answer.status
            except urllib.error.HTTPError as error:
                return error.code

        assert status("/metrics", token) == 200
        assert status("/v1/admin/sessions", token) == 403, "its scopes, no more"
        assert status("/v1/admin/sessions", file_token) == 200, "the file's tokens too"
        assert status("/metrics", token[:-1] + ("1" if token[-1] == "0" else "0")) == 401
    finally:
        broker.stop()

