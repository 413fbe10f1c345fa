"""Schemathesis (PyPI) against the served OpenAPI document (`/v1/openapi.json`), with a token
of every scope: generated requests to every route but `/v1/events` (a stream that does not
end) get no 5xx, no status the document does not list, no body that contradicts its schema
and no other content type. Signed device routes can only be refused here (the generator
cannot sign), which checks their refusals. Bounded by example count and a time budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import BROKER_KIND
from test_19_http_admin import Ops, ops  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the HTTP bridge is Tern's")

# A fixed seed keeps the run the same from one suite run to the next; change it (or run
# `schemathesis run` by hand with more examples) to explore further.
SEED = "20261207"


@pytest.mark.timeout(240)
def test_generated_requests_get_no_5xx_and_nothing_the_document_does_not_say(
        ops: Ops, tmp_path: Path):
    # The venv's schemathesis (scripts/setup-test-deps.sh installs it), as a module.
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", ops.broker.http_url + "/v1/openapi.json",
         "-H", f"Authorization: Bearer {ops.tokens['root']}",
         "--exclude-path", "/v1/events",
         "--checks", "not_a_server_error,status_code_conformance,"
                     "response_schema_conformance,content_type_conformance",
         "--max-examples", "30", "--max-time", "60", "--seed", SEED,
         "--request-timeout", "10", "--no-color"],
        capture_output=True, text=True, timeout=200, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert " passed" in summary and "failures" not in summary, summary
