"""Ban changes made at once all reach the bans file: after many concurrent bans and unbans,
the file (what a restart reads) lists exactly the bans in force.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import BROKER_KIND, Names
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
