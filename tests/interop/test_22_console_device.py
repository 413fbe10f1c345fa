"""A device's page in the web console, in Chromium (as tests/interop/test_22_console.py drives
it): its HTTP key `d:<udid>` rotated (the new secret shown once, and a request signed with it
accepted) and revoked (a request signed with the old secret then refused)."""

from __future__ import annotations

import re
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


def test_a_devices_recent_messages_are_shown_when_its_view_has_them(console: Console):
    """The device's view gains `recent_messages` elsewhere; until then the page is given them
    by the browser, over the broker's own answer: shown newest first, JSON pretty-printed,
    bytes that are not text in base64; a view without them shows no such section."""
    console.tern_device("add", "acme", "d1", "--password", stdin="d1-pw\n")
    console.login()
    page = console.page
    page.goto(console.broker.http_url + "/#/fleet/d1")
    expect(page.get_by_test_id("firmware")).to_be_visible()
    expect(page.get_by_role("heading", name="Recent messages")).to_have_count(0)
    recent = [
        {"topic": "/acme/d1/status", "at": 1796680000, "qos": 1, "retain": True,
         "payload": '{"temp":21.5}', "payload_base64": "eyJ0ZW1wIjoyMS41fQ=="},
        {"topic": "/acme/d1/raw", "at": 1796680060, "qos": 0, "retain": False,
         "payload": None, "payload_base64": "/wA="},
    ]

    def with_recent(route: Any) -> None:
        answer = route.fetch()
        device = answer.json()
        device.setdefault("recent_messages", recent)
        route.fulfill(response=answer, json=device)

    page.route("**/v1/fleet/devices/d1", with_recent)
    page.reload()
    shown = page.get_by_test_id("recent-messages").locator("li")
    expect(shown).to_have_count(2)
    expect(shown.nth(0)).to_contain_text("/acme/d1/raw")
    expect(shown.nth(0).locator("pre")).to_have_text("base64:/wA=")
    expect(shown.nth(1)).to_contain_text("QoS 1 · retained")
    expect(shown.nth(1).locator("pre")).to_have_text('{\n  "temp": 21.5\n}')
