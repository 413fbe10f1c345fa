"""A device's page in the web console, in Chromium (as tests/interop/test_22_console.py drives
it): its HTTP key `d:<udid>` rotated (the new secret shown once, and a request signed with it
accepted) and revoked (a request signed with the old secret then refused); its MQTT password
changed; its recent messages shown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def test_a_devices_mqtt_password_is_changed_from_its_page(console: Console):
    console.tern_device("add", "acme", "d1", "--password", stdin="d1-pw\n")
    console.tern_device("add", "acme", "k1", "--key")
    console.login()
    page = console.page
    page.goto(console.broker.http_url + "/#/fleet/d1")
    # No [[history]] here: the device's recent messages are none.
    expect(page.get_by_role("heading", name="Recent messages")).to_be_visible()
    expect(page.get_by_text("None kept.")).to_be_visible()
    page.get_by_label("New password").fill("d1-new")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_test_id("password-status")).to_have_text(
        "Password changed: the device needs it at its next connection.")
    old = console.clients.paho("d1", version=4)
    old.client.username_pw_set("acme", "d1-pw")
    assert old.connect(expect_code=None).code == 0x86  # bad user name or password
    new = console.clients.paho("d1", version=4)
    new.client.username_pw_set("acme", "d1-new")
    new.connect()
    # A key device has no password to change: the page offers none, the API refuses it.
    page.goto(console.broker.http_url + "/#/fleet/k1")
    expect(page.get_by_test_id("credential")).to_have_text("key")
    expect(page.get_by_label("New password")).to_have_count(0)
    status, body = console.call("PATCH", "/v1/admin/devices/k1",
                                {"authorization": f"Bearer {console.token}"}, {"password": "x"})
    assert (status, body["error"]["code"]) == (409, "no_password")


def test_a_devices_recent_messages_are_shown_from_the_history(tmp_path: Path, chromium: Any):
    """With a `[[history]]` of acme's topics, the device's page shows what it published: newest
    first, JSON pretty-printed, bytes that are not text in base64."""
    console = Console(tmp_path, chromium, {"history": [
        {"filter": "/acme/#", "max_messages": 20, "max_age_secs": 3600}]})
    try:
        console.tern_device("add", "acme", "d1", "--password", stdin="d1-pw\n")
        device = console.clients.paho("d1", version=4)
        device.client.username_pw_set("acme", "d1-pw")
        device.connect()
        # What a device may publish: its status (the broker's own `connected` is there first).
        device.publish("/acme/d1/status", b'{"temp":21.5}', qos=1, retain=True)
        device.publish("/acme/d1/status", b"\xff\x00", qos=1)
        console.login()
        page = console.page
        page.goto(console.broker.http_url + "/#/fleet/d1")
        shown = page.get_by_test_id("recent-messages").locator("li")
        expect(shown).to_have_count(3)
        expect(shown.nth(0).locator("pre")).to_have_text("base64:/wA=")
        expect(shown.nth(1)).to_contain_text("/acme/d1/status")
        expect(shown.nth(1)).to_contain_text("QoS 1 · retained")
        expect(shown.nth(1).locator("pre")).to_have_text('{\n  "temp": 21.5\n}')
        expect(shown.nth(2).locator("pre")).to_have_text('{\n  "status": "connected"\n}')
    finally:
        console.close()
