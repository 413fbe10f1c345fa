"""The web console's logins besides a token, in Chromium (as tests/interop/test_22_console.py
drives it): operator users of a password file (`tern passwd`) with the scopes of their
`[http.operator.USER]` tables, and JWTs of an identity provider (HS256 here) whose claims name
the scopes and the owner. A wrong password, an expired JWT and one signed with another key are
refused, each logged with its reason; an operator confined to an owner sees only its fleet."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import BrokerError
from http_support import HttpBroker, tern
from support import TIMEOUT
from test_22_console import CHROMIUM, WAIT_MS, chromium, expect, tern_bin  # noqa: F401

IDP_SECRET = b"the identity provider's secret"


def jwt(claims: dict[str, Any], secret: bytes = IDP_SECRET) -> str:
    """An HS256 JWT of `claims`."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = part(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(signature)}"


class Operators:
    """`tern serve` with operator users (alice: every scope; acme-ops: acme's fleet) and a JWT
    login, the devices acme/d1 and globex/g1, and a browser."""

    def __init__(self, workdir: Path, browser: Any):
        self.data = workdir / "tern-data"
        admin = tern("token", "add", "admin", "--scope", "read", "--scope", "write",
                     "--data-dir", str(self.data)).strip()
        for user, password in (("alice", "alice-pw"), ("acme-ops", "acme-pw")):
            done = subprocess.run([tern_bin(), "passwd", str(workdir / "operators"), user],
                                  input=f"{password}\n", capture_output=True, text=True,
                                  timeout=TIMEOUT)
            assert done.returncode == 0, done.stderr
        (workdir / "idp.secret").write_bytes(IDP_SECRET + b"\n")
        every = ["read", "write", "keys", "events", "metrics"]
        self.broker = HttpBroker("tern", workdir, {"http": {
            "operators_file": "operators",
            "operator": {"alice": {"scopes": every},
                         "acme-ops": {"scopes": ["read", "events"], "owner": "acme"}},
            "operator_jwt": {"algorithm": "HS256", "secret_file": "idp.secret"},
        }})
        try:
            self.broker.start()
        except BrokerError as err:
            pytest.fail(f"could not start the broker:\n{err}", pytrace=False)
        for owner, udid in (("acme", "d1"), ("globex", "g1")):
            done = subprocess.run([tern_bin(), "device", "--url", self.broker.http_url,
                                   "--token", admin, "add", owner, udid, "--password"],
                                  input=f"{udid}-pw\n", capture_output=True, text=True,
                                  timeout=TIMEOUT)
            assert done.returncode == 0, done.stderr
        self.context = browser(workdir / "chromium")
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        expect.set_options(timeout=WAIT_MS)

    def log_in(self, way: str, **fields: str) -> None:
        self.page.goto(self.broker.http_url + "/")
        self.page.get_by_label("Log in with").select_option(label=way)
        for label, value in fields.items():
            self.page.get_by_label(label, exact=True).fill(value)
        self.broker.mark()
        self.page.get_by_role("button", name="Log in").click()

    def refused(self, reason: str) -> None:
        """The page says so, and the log says why."""
        expect(self.page.get_by_role("alert")).to_contain_text("not valid")
        self.broker.wait_for_output(reason)

    def logged_in_as(self, name: str) -> None:
        banner = self.page.get_by_role("banner")
        expect(banner).to_contain_text(name)
        expect(self.page.get_by_test_id("events-state")).to_have_text("live")

    def log_out(self) -> None:
        self.page.get_by_role("button", name="Log out").click()
        expect(self.page.get_by_label("Log in with")).to_be_visible()

    def fleet(self) -> list[str]:
        """The udids the fleet page lists, once it has listed them."""
        self.page.get_by_role("link", name="Fleet", exact=True).click()
        expect(self.page.get_by_test_id("fleet-count")).to_contain_text("device(s)")
        return sorted(self.page.locator("tbody tr").evaluate_all(
            "rows => rows.map(row => row.dataset.udid)"))

    def close(self) -> None:
        errors = list(self.errors)
        self.context.close()
        self.broker.stop()
        assert errors == [], errors


@pytest.fixture
def operators(tmp_path: Path, chromium: Any) -> Iterator[Operators]:
    operators = Operators(tmp_path, chromium)
    yield operators
    operators.close()


def test_an_operator_user_logs_in_with_a_password(operators: Operators):
    operators.log_in("User and password", User="alice", Password="wrong")
    operators.refused(r"login_invalid.*a wrong password for operator user \"alice\"")
    operators.log_in("User and password", User="nobody", Password="alice-pw")
    operators.refused(r"no operator user \"nobody\"")
    operators.log_in("User and password", User="alice", Password="alice-pw")
    operators.logged_in_as("user:alice")
    # Every scope of its table: the overview's figures, and every owner's devices.
    expect(operators.page.get_by_test_id("connections")).to_have_text(
        re.compile(r"^\d+$"))
    assert operators.fleet() == ["d1", "g1"]
    operators.log_out()
    # An owner's operator sees its fleet only.
    operators.log_in("User and password", User="acme-ops", Password="acme-pw")
    operators.logged_in_as("user:acme-ops")
    expect(operators.page.get_by_role("banner").get_by_test_id("owner")).to_have_text("acme")
    assert operators.fleet() == ["d1"]


def test_an_identity_providers_jwt_logs_in_with_the_scopes_and_owner_it_claims(
        operators: Operators):
    now = int(time.time())
    expired = jwt({"sub": "carol", "scope": "read events", "exp": now - 60})
    operators.log_in("JWT of an identity provider", JWT=expired)
    operators.refused(r"login_invalid.*a JWT not accepted: ExpiredSignature")
    forged = jwt({"sub": "carol", "scope": "read events", "exp": now + 600}, b"another key")
    operators.log_in("JWT of an identity provider", JWT=forged)
    operators.refused(r"login_invalid.*a JWT not accepted: InvalidSignature")
    # Scopes OAuth's way (names separated by spaces; `openid` is none of Tern's), an owner.
    good = jwt({"sub": "carol", "scope": "openid read events", "owner": "globex",
                "exp": now + 600})
    operators.log_in("JWT of an identity provider", JWT=good)
    operators.logged_in_as("jwt:carol")
    expect(operators.page.get_by_role("banner").get_by_test_id("owner")).to_have_text("globex")
    # No metrics scope claimed: the overview says so.
    expect(operators.page.get_by_role("alert")).to_contain_text("lacks the metrics scope")
    assert operators.fleet() == ["g1"]
