"""The web console's firmware page in Chromium (as tests/interop/test_22_console.py drives it):
the catalogue listed, a release added from the form and deleted, and a device's page telling
its firmware version against the newest release the broker offers it."""

from __future__ import annotations

from test_22_console import Console, chromium, console, expect  # noqa: F401 (fixtures)

SHA = "ab" * 32


def test_the_firmware_catalogue_is_listed_added_to_and_deleted_from(console: Console):
    console.tern_device("add", "acme", "d1", "--password", "--platform", "esp32",
                        "--firmware", "1.7.24", stdin="d1-pw\n")
    bearer = {"authorization": f"Bearer {console.token}"}
    status, _ = console.call("POST", "/v1/admin/firmware", bearer, {
        "id": "fw-1.8.0", "platform": "esp32", "version": "1.8.0",
        "url": "https://firmware.example/fw-1.8.0.bin", "sha256": SHA, "size": 412345,
        "tags": ["beta"]})
    assert status == 200
    console.login()
    page = console.page
    console.go("Firmware")
    listed = page.locator("tr[data-release='fw-1.8.0']")
    expect(listed).to_contain_text("esp32")
    expect(listed).to_contain_text("all")
    expect(listed).to_contain_text("beta")
    expect(listed).to_contain_text("412345")
    # d1 has no `beta` tag: that release is not for it.
    page.goto(console.broker.http_url + "/#/fleet/d1")
    expect(page.get_by_test_id("firmware")).to_contain_text("1.7.24")
    expect(page.get_by_test_id("firmware-offer")).to_have_text("no release for it")
    # One from the form, for acme's esp32 devices, to all of them.
    console.go("Firmware")
    for label, value in [("Id", "fw-1.9.0"), ("Platform", "esp32"), ("Version", "1.9.0"),
                         ("URL", "https://firmware.example/fw-1.9.0.bin"), ("SHA-256", SHA),
                         ("Size (bytes)", "500000"), ("Owner", "acme")]:
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Add release").click()
    expect(page.get_by_test_id("firmware-status")).to_have_text("Added fw-1.9.0.")
    added = page.locator("tr[data-release='fw-1.9.0']")
    expect(added).to_contain_text("acme")
    expect(added).to_contain_text("100%")
    status, body = console.call("GET", "/v1/admin/firmware/fw-1.9.0", bearer)
    assert status == 200
    assert (body["owner"], body["size"], body["tags"], body["rollout_percent"]) == \
        ("acme", 500000, [], 100)
    console.screenshot("firmware")
    page.goto(console.broker.http_url + "/#/fleet/d1")
    expect(page.get_by_test_id("firmware-offer")).to_have_text(
        "update available: 1.9.0 (fw-1.9.0)")
    # Deleted from the page: gone from the catalogue, and offered no more.
    console.go("Firmware")
    page.once("dialog", lambda dialog: dialog.accept())
    added.get_by_role("button", name="Delete fw-1.9.0").click()
    expect(added).to_have_count(0)
    expect(page.get_by_test_id("firmware-status")).to_have_text("Deleted fw-1.9.0.")
    status, _ = console.call("GET", "/v1/admin/firmware/fw-1.9.0", bearer)
    assert status == 404
    page.goto(console.broker.http_url + "/#/fleet/d1")
    expect(page.get_by_test_id("firmware-offer")).to_have_text("no release for it")
