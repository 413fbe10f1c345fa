"""A device's page in the web console, in Chromium (as tests/interop/test_22_console.py drives
it): its HTTP key `d:<udid>` rotated (the new secret shown once, and a request signed with it
accepted) and revoked (a request signed with the old secret then refused)."""

from __future__ import annotations

import re

from http_support import Device, add_key, error_code
from test_22_console import Console, chromium, console, expect  # noqa: F401 (fixtures)


def test_a_devices_key_is_rotated_and_revoked_from_its_page(console: Console):
    console.tern_device("add", "acme", "d1", "--password", "--platform", "esp32",
                        stdin="d1-pw\n")
    console.broker.mark()
    old_secret = add_key(console.data, "d:d1", "--publish", "sensors/%c/#")
    console.broker.wait_for_output(r"HTTP keys reloaded")
    old = Device(console.broker.http_url, "d:d1", old_secret)
    assert old.publish("sensors/d1/t", b"1").status == 200
    console.login()
    page = console.page
    page.goto(console.broker.http_url + "/#/fleet/d1")
    secrets = page.get_by_test_id("key-secrets").locator("li")
    expect(secrets).to_have_count(1)
    page.get_by_role("button", name="Rotate key").click()
    shown = page.get_by_test_id("secret")
    expect(shown).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    expect(secrets).to_have_count(2)
    new_secret = shown.inner_text()
    # Both secrets are good until the old one is revoked.
    new = Device(console.broker.http_url, "d:d1", new_secret)
    assert new.publish("sensors/d1/t", b"2").status == 200
    assert old.publish("sensors/d1/t", b"3").status == 200
    console.screenshot("device-key")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke secret 1").click()
    expect(page.get_by_test_id("key-status")).to_have_text("Revoked secret 1 of d:d1.")
    expect(secrets).to_have_count(1)
    refused = old.publish("sensors/d1/t", b"4")
    assert (refused.status, error_code(refused)) == (401, "signature_invalid")
    assert new.publish("sensors/d1/t", b"5").status == 200
    # The whole key: the device's requests are refused, and the page says it has none.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_test_id("key-status")).to_have_text("Revoked the key d:d1.")
    expect(page.get_by_test_id("key-secrets")).to_have_count(0)
    assert error_code(new.publish("sensors/d1/t", b"6")) == "signature_invalid"
