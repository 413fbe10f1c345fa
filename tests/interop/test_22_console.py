"""The web console in a real browser: Playwright (from PyPI) drives Debian's Chromium against
`tern serve` started with no operator token, as on a first start. The test logs in with the
one-time link the broker logs; watches a paho device of the fleet come online and go offline
without a reload; publishes from the console and receives it with `mosquitto_sub`; approves an
HTTP access request and sees the device's signed request succeed; browses the topic tree; and
checks that a logged-out browser, a change from another origin and a request without the cookie
are refused. It waits on the page's state (Playwright's `expect`), never on the clock, and
takes the screenshots shown in the README: into `target/console-screenshots/`, and into
`docs/console/` (the committed ones) only with `TERN_UPDATE_SCREENSHOTS=1`, so a run leaves the
checkout as it was.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from conftest import REPO_ROOT, BrokerError
from http_support import Device, HttpBroker, add_key, error_code, tern
from support import BROKER_KIND, TIMEOUT, Clients, Names
from test_09_mosquitto_clients import Sub
from test_19_http import https_broker

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect

pytestmark = pytest.mark.skipif(BROKER_KIND != "tern", reason="the web console is Tern's")

CHROMIUM = "/usr/bin/chromium"
# Chromium on a machine with no network but loopback: nothing of its own goes out.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
LOGIN_LINK = re.compile(r"log in once at (?P<link>\S+)")
# The committed screenshots are rewritten only when asked.
SCREENSHOTS = (REPO_ROOT / "docs" / "console"
               if os.environ.get("TERN_UPDATE_SCREENSHOTS") == "1"
               else REPO_ROOT / "target" / "console-screenshots")
WAIT_MS = TIMEOUT * 1000


class Console:
    """`tern serve` on a fresh data directory (so it makes the admin token and logs the login
    link), with an app key `a:fleet` whose devices need approval, and a browser."""

    def __init__(self, workdir: Path, browser: Any, options: Optional[dict[str, Any]] = None):
        self.data = workdir / "tern-data"
        self.fleet_secret = add_key(self.data, "a:fleet", "--approve")
        self.broker = HttpBroker("tern", workdir, options)
        try:
            self.broker.start()
        except BrokerError as err:
            pytest.fail(f"could not start the broker:\n{err}", pytrace=False)
        self.clients = Clients(self.broker)
        self.link = self._login_link()
        self.token = (self.data / "console-admin.token").read_text().strip()
        self.context = browser(workdir / "chromium")
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        # What the page must never do: fail, or ask anything of another origin.
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", self._local_only)
        expect.set_options(timeout=WAIT_MS)

    def _local_only(self, request: Any) -> None:
        if not request.url.startswith(self.broker.http_url + "/"):
            self.errors.append(f"a request elsewhere: {request.url}")

    def _login_link(self) -> str:
        for line in self.broker.output:
            match = LOGIN_LINK.search(line)
            if match:
                return match.group("link")
        raise AssertionError(f"no login link logged:\n{self.broker.output_tail()}")

    def login(self) -> None:
        self.page.goto(self.link)
        expect(self.page.get_by_role("navigation", name="Pages")).to_be_visible()
        # From here on the page's event stream misses nothing.
        expect(self.page.get_by_test_id("events-state")).to_have_text("live")

    def login_with_new_token(self, name: str, *args: str) -> None:
        """Makes the token `name` (`tern token add NAME ARGS`), waits for the broker to read it,
        and logs in with it from the login form."""
        self.broker.mark()
        token = tern("token", "add", name, *args, "--data-dir", str(self.data))
        self.broker.wait_for_output(r"operator tokens reloaded")
        self.page.goto(self.broker.http_url + "/")
        self.page.get_by_label("Operator token").fill(token.strip())
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.get_by_role("banner")).to_contain_text(name)

    def go(self, page: str) -> None:
        self.page.get_by_role("link", name=page, exact=True).click()

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def tern_device(self, *args: str, stdin: str = "") -> None:
        binary = Path(tern_bin())
        done = subprocess.run([str(binary), "device", "--url", self.broker.http_url, "--token",
                               self.token, *args], input=stdin, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr

    def call(self, method: str, path: str, headers: dict[str, str],
             body: Optional[dict] = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.broker.http_url + path, data=data, method=method,
                                         headers={"content-type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def close(self) -> None:
        errors = list(self.errors)
        self.context.close()
        self.clients.close_all()
        self.broker.stop()
        assert errors == [], errors


def tern_bin() -> str:
    binary = Path(os.environ.get("TERN_BIN", "target/debug/tern"))
    return str(binary if binary.is_absolute() else REPO_ROOT / binary)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup-test-deps.sh installs it")
    with playwright.sync_playwright() as driver:
        def launch(user_data_dir: Path) -> Any:
            return driver.chromium.launch_persistent_context(
                str(user_data_dir), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1100, "height": 760})
        yield launch


@pytest.fixture
def console(tmp_path: Path, chromium: Any) -> Iterator[Console]:
    console = Console(tmp_path, chromium)
    yield console
    console.close()


def test_a_device_comes_online_and_goes_offline_live_and_a_client_is_kicked(console: Console,
                                                                           names: Names):
    console.tern_device("add", "acme", "d1", "--password", "--platform", "esp32",
                        "--firmware", "1.7.24", stdin="d1-pw\n")
    console.tern_device("add", "acme", "d2", "--password", "--platform", "esp8266",
                        stdin="d2-pw\n")
    console.login()
    page = console.page
    expect(page.get_by_test_id("connections")).to_have_text(re.compile(r"^\d+$"))
    console.go("Fleet")
    row = page.locator("tr[data-udid='d1']")
    expect(row.get_by_test_id("state")).to_have_text("offline")
    device = console.clients.paho("d1", version=4)
    device.client.username_pw_set("acme", "d1-pw")
    device.connect()
    # The event stream changes the row: no reload.
    expect(row.get_by_test_id("state")).to_have_text("online")
    # The filters are the server's: a platform, then the connected ones, then a search.
    page.get_by_label("Platform").fill("esp32")
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_label("Platform").fill("")
    page.get_by_label("State").select_option("online")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr[data-udid='d1']")).to_have_count(1)
    page.get_by_label("State").select_option("all")
    page.get_by_label("Search").fill("D2")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr[data-udid='d2']")).to_have_count(1)
    page.get_by_label("Search").fill("")
    expect(page.locator("tbody tr")).to_have_count(2)
    console.screenshot("fleet")
    device.publish("/acme/d1/status", b'{"status":"ok"}', qos=1)
    device.disconnect()
    expect(row.get_by_test_id("state")).to_have_text("offline")
    # A device's page: its registration, its status history, messages and session, and its
    # state live there too.
    row.get_by_role("link", name="d1").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("d1")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("acme")
    expect(facts).to_contain_text("1.7.24")
    expect(page.get_by_test_id("messages")).to_have_text("1 in, 0 out")
    expect(page.get_by_test_id("last-seen")).not_to_have_text("never")
    history = page.get_by_test_id("history").locator("li")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("offline")
    expect(page.get_by_test_id("session")).to_have_text("none")
    device = console.clients.paho("d1", version=4)
    device.client.username_pw_set("acme", "d1-pw")
    device.connect()
    expect(page.get_by_test_id("state")).to_have_text("online")
    device.disconnect()
    expect(page.get_by_test_id("state")).to_have_text("offline")
    # Disabled from its page, the device is refused; enabled again, it is let in.
    page.get_by_role("button", name="Disable").click()
    expect(page.locator("dl.facts")).to_contain_text("yes")
    refused = console.clients.paho("d1", version=4)
    refused.client.username_pw_set("acme", "d1-pw")
    refused.connect(expect_code=0x87)
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("button", name="Disable")).to_be_visible()

    # Sessions: a connected client is kicked from the console (its session stays).
    device = console.clients.paho("d1", version=4, clean=False)
    device.client.username_pw_set("acme", "d1-pw")
    device.connect()
    console.go("Sessions")
    session = page.locator("tr[data-client='d1']")
    expect(session.get_by_text("connected")).to_be_visible()
    session.get_by_role("button", name="Inspect").click()
    expect(page.get_by_role("region", name="Session d1")).to_contain_text("Queued (0)")
    console.screenshot("sessions")
    page.once("dialog", lambda dialog: dialog.accept())
    session.get_by_role("button", name="Kick").click()
    device.expect_disconnected()
    expect(session.get_by_text("away")).to_be_visible()
    # ...and its session deleted: gone from the list (and from the broker).
    page.once("dialog", lambda dialog: dialog.accept())
    session.get_by_role("button", name="Delete").click()
    expect(session).to_have_count(0)
    status, _ = console.call("GET", "/v1/admin/sessions/d1",
                             {"authorization": f"Bearer {console.token}"})
    assert status == 404
    # A session to count on the overview.
    keeper = console.clients.paho("d2", version=4, clean=False)
    keeper.client.username_pw_set("acme", "d2-pw")
    keeper.connect()
    keeper.disconnect()
    console.go("Overview")
    expect(page.get_by_test_id("sessions")).to_have_text("1")
    # A refused connection is listed with its reason.
    intruder = console.clients.paho("d2", version=4)
    intruder.client.username_pw_set("acme", "wrong")
    intruder.connect(expect_code=0x86)
    expect(page.locator("ul.refused")).to_contain_text("BadUserNameOrPassword")
    # Traffic between two scrapes shows as a rate (and a point of the chart).
    publisher = console.clients.connected(names.client("p"))
    for n in range(50):
        publisher.publish("site/load", str(n).encode(), qos=1)
    expect(page.get_by_test_id("rate-in")).not_to_have_text("0.0")
    # The MQTT listener counts the publisher, the one client still connected; the process's
    # memory is shown.
    listener = page.get_by_role("table", name="Listeners").get_by_role(
        "row", name=f"mqtt {console.broker.host}:{console.broker.port}")
    expect(listener.get_by_role("cell").nth(2)).to_have_text("1")
    expect(page.get_by_test_id("resident")).to_have_text(re.compile(r"^\d+\.\d MiB$"))
    console.screenshot("overview")
    # At a phone's width nothing is wider than the screen (tables scroll in their own box).
    page.set_viewport_size({"width": 390, "height": 844})
    for name in ("Overview", "Fleet", "Sessions"):
        console.go(name)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        wider = page.evaluate("[...document.querySelectorAll('body *')]"
                              ".filter(e => e.getBoundingClientRect().right > 390"
                              " && !e.closest('.scroll')).map(e => e.tagName)")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, (name, wider)
    console.go("Overview")
    expect(page.get_by_test_id("connections")).to_have_text(re.compile(r"^\d+$"))
    console.screenshot("overview-phone")


def test_devices_added_changed_and_deleted_elsewhere_change_the_list_live(console: Console):
    console.tern_device("add", "acme", "d1", "--password", stdin="d1-pw\n")
    console.login()
    page = console.page
    console.go("Fleet")
    expect(page.get_by_test_id("fleet-count")).to_have_text("1 device(s)")
    # Added by the command line, while the list is shown: it appears.
    console.tern_device("add", "acme", "d2", "--password", "--platform", "esp32",
                        stdin="d2-pw\n")
    row = page.locator("tr[data-udid='d2']")
    expect(row).to_contain_text("esp32")
    expect(page.get_by_test_id("fleet-count")).to_have_text("2 device(s)")
    # Disabled through the API: the row says so.
    bearer = {"authorization": f"Bearer {console.token}"}
    assert console.call("PATCH", "/v1/admin/devices/d2", bearer, {"disabled": True})[0] == 200
    expect(row.get_by_test_id("state")).to_have_text("disabled")
    # Deleted: it is gone from the list.
    assert console.call("DELETE", "/v1/admin/devices/d2", bearer)[0] == 200
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("fleet-count")).to_have_text("1 device(s)")
    # The list still follows the filters: a device that does not pass them is not shown.
    page.get_by_label("Platform").fill("esp32")
    expect(page.get_by_test_id("fleet-count")).to_have_text("0 device(s)")
    console.tern_device("add", "acme", "d3", "--password", "--platform", "esp8266",
                        stdin="d3-pw\n")
    console.tern_device("add", "acme", "d4", "--password", "--platform", "esp32",
                        stdin="d4-pw\n")
    expect(page.locator("tr[data-udid='d4']")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(1)


def test_a_message_published_from_the_console_reaches_mosquitto_sub(console: Console,
                                                                    names: Names):
    retained = console.clients.connected(names.client("p"))
    retained.publish("site/a/temp", b'{"t": 21.5, "unit": "C"}', qos=1, retain=True)
    retained.publish("site/a/rh", b"40", qos=1, retain=True)
    retained.close()
    # Nothing is published before mosquitto_sub reports its SUBACK.
    sub = Sub(console.broker, "v5", "console/t", "-C", "1", "-q", "1").wait_subscribed()
    try:
        console.login()
        page = console.page
        console.go("Topics")
        # The tree holds the retained messages sent before the page opened.
        # From the keyboard: the tree is buttons, in the tab order.
        page.get_by_role("button", name="Expand site").focus()
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        expect(page.get_by_role("button", name="Expand site/a")).to_be_focused()
        page.keyboard.press("Enter")
        page.locator("button[data-topic='site/a/temp']").click()
        expect(page.get_by_test_id("topic-value")).to_have_text(
            '{\n  "t": 21.5,\n  "unit": "C"\n}')
        # A retained message deleted from the console is gone from the broker.
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete retained message").click()
        expect(page.get_by_text("The retained message was deleted.")).to_be_visible()
        bearer = {"authorization": f"Bearer {console.token}"}
        status, body = console.call("GET", "/v1/admin/retained/site/a/%23", bearer)
        assert (status, [m["topic"] for m in body["retained"]]) == (200, ["site/a/rh"])
        # Live traffic: a new topic appears in the open branch, numbers make a sparkline.
        expect(page.locator("section[data-live='true']")).to_have_count(1)
        live = console.clients.connected(names.client("l"))
        for value in (b"41", b"39", b"44"):
            live.publish("site/a/rh", value, qos=1)
        live.publish("site/b/door", b"open", qos=1)
        expect(page.locator("button[data-topic='site/b']")).to_be_visible()
        page.locator("button[data-topic='site/a/rh']").click()
        expect(page.get_by_test_id("topic-value")).to_have_text("44")
        expect(page.get_by_role("img", name="Last 4 values, from 39 to 44")).to_be_visible()
        console.screenshot("topics")

        # Watch a filter: the console's own publish shows there too.
        page.get_by_role("textbox", name="Filter").fill("console/#")
        page.get_by_role("button", name="Watch").click()
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        page.get_by_label("Topic", exact=True).fill("console/t")
        page.get_by_label("QoS").select_option("1")
        page.get_by_label("Payload").fill("hello from the console")
        page.get_by_role("button", name="Publish").click()
        expect(page.get_by_test_id("publish-status")).to_contain_text("1 subscription(s)")
        expect(page.get_by_test_id("watched")).to_contain_text("hello from the console")
        [received] = sub.expect(1)
        assert (received.topic, received.qos, received.payload) == \
            ("console/t", 1, "hello from the console")
        assert sub.wait_exit() == 0
    finally:
        sub.stop()


def test_an_access_request_approved_in_the_console_lets_the_device_in(console: Console):
    device = Device(console.broker.http_url, "a:fleet", console.fleet_secret, client="M-0042")
    refused = device.publish("meters/M-0042/kwh", b"1.5")
    assert (refused.status, error_code(refused)) == (403, "access_pending")
    console.login()
    console.go("Access requests")
    card = console.page.locator("li[data-client='M-0042']")
    expect(card.get_by_text("pending")).to_be_visible()
    card.get_by_label("May publish to").fill("meters/%c/#")
    console.screenshot("access")
    card.get_by_role("button", name="Approve").click()
    expect(card).to_have_count(0)
    assert device.publish("meters/M-0042/kwh", b"1.5").status == 200
    assert error_code(device.publish("meters/other/kwh", b"1")) == "acl_denied"


def test_a_notification_is_answered_live_and_the_device_gets_the_answer_at_qos_2(
        console: Console):
    console.tern_device("add", "acme", "d1", "--password", stdin="d1-pw\n")
    console.login()
    page = console.page
    console.go("Notifications")
    expect(page.get_by_test_id("pending-count")).to_have_text("0 pending")
    # THiNX firmware: on its own channel at QoS 2, raising notifications on its status channel.
    device = console.clients.paho("d1", version=4)
    device.client.username_pw_set("acme", "d1-pw")
    device.connect()
    device.subscribe("/acme/d1", qos=2)

    def raise_(**notification: Any) -> None:
        device.publish("/acme/d1/status", json.dumps({"notification": notification}).encode(),
                       qos=1)

    def answer() -> dict:
        message = device.expect_message()
        assert (message.topic, message.qos) == ("/acme/d1", 2)
        return json.loads(message.payload)["notification"]

    raise_(body="Door open 3 h: close it?", nid="door")
    raise_(body="Which mode?", response_type="choice", choices=["eco", "boost"], nid="mode")
    # Both appear without a reload, from the event stream.
    door = page.locator("li[data-nid='door']")
    expect(door).to_contain_text("Door open 3 h: close it?")
    expect(page.get_by_test_id("pending-count")).to_have_text("2 pending")
    console.screenshot("notifications")
    # Answered from the keyboard: the device gets it at QoS 2 with its id, and the console
    # shows it delivered once the device's PUBCOMP is in.
    door.get_by_role("button", name="Yes").focus()
    page.keyboard.press("Enter")
    assert answer() == {"nid": "door", "response": True}
    expect(door).to_have_count(0)
    page.get_by_label("Show").select_option("answered")
    expect(door.get_by_test_id("response")).to_have_text("yes")
    expect(door.get_by_test_id("delivery")).to_contain_text("Answer delivered")
    # The device's page holds its pending one; a choice answered there.
    console.go("Fleet")
    page.locator("tr[data-udid='d1']").get_by_role("link", name="d1").click()
    mode = page.locator("li[data-nid='mode']")
    mode.get_by_label("Answer", exact=True).select_option("boost")
    mode.get_by_role("button", name="Send").click()
    assert answer() == {"nid": "mode", "response": "boost"}
    expect(mode).to_have_count(0)
    page.get_by_label("Show").select_option("all")
    expect(mode.get_by_test_id("delivery")).to_contain_text("Answer delivered")
    # An operator asks the device: the question reaches it at QoS 2, is shown delivered, and
    # the device's answer on its status channel shows live.
    page.get_by_label("Question").fill("Reboot now?")
    page.get_by_role("button", name="Ask").click()
    asked = answer()
    assert (asked["body"], asked["response_type"]) == ("Reboot now?", "bool")
    question = page.locator(f"li[data-nid='{asked['nid']}']")
    expect(question.get_by_test_id("delivery")).to_contain_text("Question delivered")
    raise_(nid=asked["nid"], response=False)
    expect(question.get_by_test_id("notification-state")).to_have_text("answered")
    expect(question.get_by_test_id("response")).to_have_text("no")
    console.screenshot("device")
    # At a phone's width nothing is wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    for name in ("Notifications", "Fleet"):
        console.go(name)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
    bearer = {"authorization": f"Bearer {console.token}"}
    status, body = console.call("GET", "/v1/fleet/notifications?udid=d1", bearer)
    assert status == 200
    assert {n["nid"]: n["state"] for n in body["notifications"]} == \
        {"door": "answered", "mode": "answered", asked["nid"]: "answered"}
    # The device's session names its fleet identity readably, in the API and the console.
    status, body = console.call("GET", "/v1/admin/sessions/d1", bearer)
    assert status == 200
    assert (body["owner"], body["identity"]) == \
        ("fleet-device:acme/d1", {"method": "fleet-device", "owner": "acme", "name": "d1"})
    console.go("Sessions")
    expect(page.locator("tr[data-client='d1']").get_by_test_id("owner")).to_have_text(
        "fleet-device:acme/d1")


def test_without_a_session_or_from_another_origin_nothing_is_done(console: Console,
                                                                 names: Names):
    page = console.page
    # A browser that never logged in sees the login form and gets nothing from the API.
    page.goto(console.broker.http_url + "/")
    expect(page.get_by_label("Operator token")).to_be_visible()
    status = page.evaluate("fetch('/v1/admin/sessions').then(r => r.status)")
    assert status == 401
    # A wrong token is refused in the form.
    page.get_by_label("Operator token").fill("tot1.console-admin." + "0" * 64)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    # The one-time link is spent: the token itself logs in (from the keyboard).
    page.get_by_label("Operator token").fill(console.token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("navigation", name="Pages")).to_be_visible()
    [cookie] = [c for c in console.context.cookies() if c["name"] == "tern_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    with_cookie = {"cookie": f"tern_session={cookie['value']}"}
    client = console.clients.connected(names.client("c"))
    path = f"/v1/admin/clients/{client.client_id}"
    # A change with the cookie from another origin's page, or with no origin: refused.
    for origin in ({"origin": "http://evil.example"}, {}):
        status, body = console.call("DELETE", path, {**with_cookie, **origin})
        assert (status, body["error"]["code"]) == (403, "origin_denied")
    assert client.is_connected()
    # Without the cookie: no token.
    status, body = console.call("DELETE", path, {"origin": console.broker.http_url})
    assert (status, body["error"]["code"]) == (401, "token_missing")
    # From the console's own origin the same request is done.
    status, _ = console.call("DELETE", path, {**with_cookie, "origin": console.broker.http_url})
    assert status == 200
    client.expect_disconnected()
    # Logged out, the page is back at the form and the cookie is nothing.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Operator token")).to_be_visible()
    status, _ = console.call("GET", "/v1/admin/sessions", with_cookie)
    assert status == 401
    assert tern("token", "list", "--data-dir", str(console.data)).count("console-admin") == 1


def test_load_times_with_ten_thousand_devices(tmp_path: Path, chromium: Any):
    """The figures BENCHMARKS.md records ("The web console"): how long the overview and the
    fleet page take to show with 10,000 registered devices (printed; not a pass mark)."""
    console = Console(tmp_path, chromium)
    try:
        bearer = {"authorization": f"Bearer {console.token}"}

        def register(n: int) -> int:
            device = {"owner": f"o{n % 50}", "udid": f"dev{n:05}", "platform": "esp32",
                      "firmware": f"1.{n % 7}.0", "tags": ["load"], "credential": "cert-cn",
                      "cn": f"dev{n:05}"}
            return console.call("POST", "/v1/admin/devices", bearer, device)[0]

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(register, range(10_000))) == {200}
        page = console.page
        started = time.monotonic()
        console.login()
        expect(page.get_by_test_id("connections")).to_have_text(re.compile(r"^\d+$"))
        overview = time.monotonic() - started
        started = time.monotonic()
        console.go("Fleet")
        expect(page.get_by_test_id("fleet-count")).to_have_text("100 device(s), more to list")
        expect(page.locator("tbody tr")).to_have_count(100)
        fleet = time.monotonic() - started
        # "More" brings the next page, after the first.
        page.get_by_role("button", name="More").click()
        expect(page.locator("tbody tr")).to_have_count(200)
        expect(page.locator("tbody tr").nth(100)).to_have_attribute("data-udid", "dev00100")
        started = time.monotonic()
        page.get_by_label("Search").fill("dev09999")
        expect(page.locator("tbody tr")).to_have_count(1)
        filtered = time.monotonic() - started
        listed = json.dumps(console.call("GET", "/v1/fleet/devices", bearer)[1],
                            separators=(",", ":"))
        print(f"\nconsole with 10,000 devices: overview {overview * 1000:.0f} ms (login link to "
              f"figures shown), fleet page {fleet * 1000:.0f} ms, search {filtered * 1000:.0f} ms; "
              f"a page of the device list is {len(listed) / 1e3:.1f} kB")
    finally:
        console.close()


def test_over_https_the_cookie_is_secure_and_the_origin_is_https(tmp_path: Path):
    import ssl
    broker, cert = https_broker(tmp_path)
    try:
        [link] = [m.group("link") for line in broker.output if (m := LOGIN_LINK.search(line))]
        assert link.startswith(broker.http_url + "/#login=")
        context = ssl.create_default_context(cafile=str(cert))

        def login(origin: str) -> tuple[int, str]:
            body = json.dumps({"code": link.split("#login=")[1]}).encode()
            request = urllib.request.Request(
                broker.http_url + "/v1/console/login", data=body, method="POST",
                headers={"content-type": "application/json", "origin": origin})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as answer:
                    return answer.status, answer.headers.get("set-cookie", "")
            except urllib.error.HTTPError as error:
                return error.code, ""

        # The page's origin is https://HOST: the same address over plain HTTP is another.
        assert login(broker.http_url.replace("https://", "http://"))[0] == 403
        status, cookie = login(broker.http_url)
        assert status == 200
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        broker.stop()


def test_the_inbox_is_read_a_page_at_a_time_newest_first(console: Console):
    """52 pending notifications: the API pages them newest first by its cursor, each once;
    the inbox shows the newest 50, and the older ones when asked."""
    console.tern_device("add", "acme", "d1", "--password", stdin="d1-pw\n")
    device = console.clients.paho("d1", version=4)
    device.client.username_pw_set("acme", "d1-pw")
    device.connect()
    raised = [f"q{i:02}" for i in range(52)]
    for nid in raised:
        device.publish("/acme/d1/status", json.dumps(
            {"notification": {"body": f"Question {nid}", "nid": nid}}).encode(), qos=1)
    bearer = {"authorization": f"Bearer {console.token}"}
    listing = "/v1/fleet/notifications?order=newest&limit=50&state=pending"
    status, first = console.call("GET", listing, bearer)
    assert status == 200 and first["next"], first
    status, rest = console.call(
        "GET", f"{listing}&cursor={urllib.parse.quote(first['next'], safe='')}", bearer)
    assert status == 200 and rest["next"] is None, rest
    listed = [n["nid"] for n in first["notifications"] + rest["notifications"]]
    assert listed == raised[::-1]
    assert console.call("GET", "/v1/fleet/notifications?limit=0", bearer)[0] == 400
    console.login()
    page = console.page
    console.go("Notifications")
    expect(page.get_by_test_id("inbox-count")).to_have_text("50 shown, more older ones")
    expect(page.locator("li[data-nid='q51']")).to_be_visible()
    expect(page.locator("li[data-nid='q01']")).to_have_count(0)
    page.get_by_role("button", name="Older notifications").click()
    expect(page.get_by_test_id("inbox-count")).to_have_text("52 shown")
    expect(page.locator("ul.cards > li").last).to_have_attribute("data-nid", "q00")
    expect(page.get_by_role("button", name="Older notifications")).to_have_count(0)
    expect(page.get_by_test_id("pending-count")).to_have_text("52 pending")


def test_the_overview_opens_with_the_brokers_history(tmp_path: Path, chromium: Any,
                                                    names: Names):
    """The chart opens with the samples the broker took before the page was opened (one a
    second here), not only with the points of the tab from then on."""
    console = Console(tmp_path, chromium, {"http": {"metrics_history_secs": 1}})
    try:
        publisher = console.clients.connected(names.client("p"))
        publisher.publish("history/t", b"1", qos=1)
        console.broker.wait_for_output(r"overview history: first sample taken")
        bearer = {"authorization": f"Bearer {console.token}"}
        status, history = console.call("GET", "/metrics/history", bearer)
        assert status == 200 and history["every_secs"] == 1, history
        first = history["samples"][0]
        assert set(first) == {"at", "in", "out"}
        assert console.call("GET", "/metrics/history", {})[0] == 401
        console.login()
        expect(console.page.get_by_test_id("rate-chart")).to_have_attribute(
            "data-from", str(first["at"]))
    finally:
        console.close()


def test_a_narrower_token_sees_and_does_only_what_it_may(console: Console, names: Names):
    publisher = console.clients.connected(names.client("p"))
    publisher.publish("acme/x/t", b"1", qos=1, retain=True)
    publisher.publish("other/y", b"2", qos=1, retain=True)
    publisher.close()
    for client_id in ("acme-1", "zzz-2"):
        client = console.clients.paho(client_id, version=4, clean=False)
        client.connect()
        client.disconnect()
    console.login_with_new_token("acme-ro", "--scope", "read", "--scope", "events",
                                 "--clients", "acme-", "--topic", "acme/#")
    page = console.page
    # No metrics scope: the overview says so rather than show nothing.
    expect(page.get_by_role("alert")).to_contain_text("lacks the metrics scope")
    console.go("Topics")
    expect(page.locator("button[data-topic='acme']")).to_be_visible()
    expect(page.locator("button[data-topic='other']")).to_have_count(0)
    # No write scope: a publish is refused.
    page.get_by_label("Topic", exact=True).fill("acme/x/t")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_test_id("publish-status")).to_contain_text("Refused")
    console.go("Sessions")
    expect(page.locator("tr[data-client='acme-1']")).to_be_visible()
    expect(page.locator("tr[data-client='zzz-2']")).to_have_count(0)


def test_an_owner_sees_only_its_own_fleet(console: Console):
    """An owner logs in with its owner-bound token as with any token; the other owner's
    device, its page, its notifications and its API are refused or absent from there."""
    console.tern_device("add", "acme", "d1", "--password", stdin="d1-pw\n")
    console.tern_device("add", "globex", "g1", "--password", stdin="g1-pw\n")
    # A notification of globex's device, pending.
    other = console.clients.paho("g1", version=4)
    other.client.username_pw_set("globex", "g1-pw")
    other.connect()
    other.publish("/globex/g1/status",
                  json.dumps({"notification": {"body": "Globex only", "nid": "secret"}}).encode(),
                  qos=1)
    bearer = {"authorization": f"Bearer {console.token}"}

    def pending_of_globex() -> list[str]:
        status, body = console.call("GET", "/v1/fleet/notifications?udid=g1", bearer)
        assert status == 200
        return [n["nid"] for n in body["notifications"]]

    # The publish is acknowledged: the notification is held.
    assert pending_of_globex() == ["secret"]
    # The same login as any token's.
    page = console.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(urllib.parse.urlsplit(request.url).path))
    console.login_with_new_token("acme-console", "--owner", "acme", "--scope", "read",
                                 "--scope", "write", "--scope", "events")
    expect(page.get_by_role("banner").get_by_test_id("owner")).to_have_text("acme")
    # The stream itself says when it is watching: `live` with no metrics scope, and no scrape.
    expect(page.get_by_test_id("events-state")).to_have_text("live")
    console.go("Fleet")
    row = page.locator("tr[data-udid='d1']")
    expect(row.get_by_test_id("state")).to_have_text("offline")
    expect(page.get_by_test_id("fleet-count")).to_have_text("1 device(s)")
    expect(page.locator("tr[data-udid='g1']")).to_have_count(0)
    # Its device comes online: the owner sees it without a reload.
    device = console.clients.paho("d1", version=4)
    device.client.username_pw_set("acme", "d1-pw")
    device.connect()
    expect(row.get_by_test_id("state")).to_have_text("online")
    assert "/metrics" not in requested, requested
    # An owner filters by no other owner: the filter is not offered.
    expect(page.get_by_label("Owner")).to_have_count(0)
    console.screenshot("fleet-owner")
    # The other owner's device page, by its URL: absent.
    page.goto(console.broker.http_url + "/#/fleet/g1")
    expect(page.get_by_role("heading", level=1)).to_contain_text("g1")
    expect(page.get_by_role("main").get_by_role("status")).to_contain_text('no device "g1"')
    expect(page.locator("dl.facts")).to_have_count(0)
    # Its notifications: none listed, in any state.
    console.go("Notifications")
    page.get_by_label("Show").select_option("all")
    expect(page.get_by_test_id("pending-count")).to_have_text("0 pending")
    expect(page.locator("li[data-nid='secret']")).to_have_count(0)
    # A fetch from the page itself, with the session's cookie: refused.
    fetched = page.evaluate("""async () => {
        const of = async (path) => (await fetch(path, {credentials: 'same-origin'})).status;
        return [await of('/v1/fleet/devices/g1'), await of('/v1/fleet/devices?owner=globex'),
                await of('/v1/fleet/notifications?udid=g1'), await of('/v1/fleet/devices/d1')];
    }""")
    assert fetched[:2] == [404, 403] and fetched[3] == 200, fetched
    listed = page.evaluate("""async () => {
        const r = await fetch('/v1/fleet/notifications?udid=g1');
        return [r.status, r.ok ? (await r.json()).notifications.length : -1];
    }""")
    assert listed[0] in (403, 404) or listed == [200, 0], listed
