"""The web console in a real browser (Debian's chromium and chromedriver, driven
by selenium): one server and one browser for the module.

After every test the browser's network log must name only the server (no
request leaves it) and its console must hold no JavaScript error.
Screenshots go to the module's temporary directory, or to
``$OBJVAULT_CONSOLE_SCREENSHOTS`` (``docs/`` for the README's pictures).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.apihelpers import admin_of, create_key, create_vault, SMALL_SEGMENTS
from tests.replhelpers import s3_target, wait_drained
from tests.server import Server, sha

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

# Debian's chromium and chromium-driver, installed by `make system-deps`: missing, these tests fail.
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

PHONE, DESKTOP = (390, 844), (1280, 900)
# Every page of the operator (vault pages aside).
PAGES = ("/console/", "/console/vaults", "/console/jobs", "/console/replication", "/console/audit")
# Servers a test started besides the module's: the browser may talk to them too.
OTHER_SERVERS: set[str] = set()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("console"), env=SMALL_SEGMENTS).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(2)
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def clean_browser(browser, srv):
    """Every test starts logged out at desktop width; after it, nothing left the
    server and no script failed."""
    browser.set_window_size(*DESKTOP)
    browser.delete_all_cookies()
    yield
    server = {urlsplit(srv.url).netloc} | OTHER_SERVERS
    urls = {json.loads(e["message"])["message"].get("params", {}).get("request", {}).get("url", "")
            for e in browser.get_log("performance")}
    outside = {u for u in urls if u and not u.startswith("data:") and urlsplit(u).netloc not in server}
    assert not outside, f"requests left the server: {outside}"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and not refused_page(e)]
    assert not errors, errors


def refused_page(entry: dict) -> bool:
    """A page answered with an error status on purpose (401, 403, 404, 429): the
    browser logs it, but it is no script error nor a missing asset."""
    return entry["source"] == "network" and "/console/static/" not in entry["message"]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("OBJVAULT_CONSOLE_SCREENSHOTS")
    return Path(target) if target else tmp_path_factory.mktemp("screenshots")


def press(browser, text: str) -> None:
    """Click the button labelled ``text`` and wait for the next page."""
    browser.execute_script("window.leaving = true")
    browser.find_element(By.XPATH, f"//button[text()='{text}']").click()
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda b: b.execute_script("return !window.leaving && document.readyState === 'complete'"))


def login(browser, srv: Server, secret: str) -> None:
    browser.get(srv.url + "/console/login")
    browser.find_element(By.ID, "secret").send_keys(secret)
    press(browser, "Log in")


def alert_text(browser) -> str:
    return browser.find_element(By.CSS_SELECTOR, "[role=alert]").text


def upload(srv: Server, vault: str, secret: str, name: str, data: bytes) -> None:
    c = srv.client(secret)
    assert c.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=data).status_code in (200, 201)
    assert c.put(f"/v1/vaults/{vault}/objects/{name}", json={"chunks": [sha(data)]}).status_code == 201


def test_login_page(browser, srv):
    browser.get(srv.url + "/console/")
    assert browser.current_url == srv.url + "/console/login"
    box = browser.find_element(By.ID, "secret")
    assert box.get_attribute("type") == "password"
    assert browser.find_element(By.CSS_SELECTOR, "label[for=secret]").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "input:not([type=hidden])")) == 1


def test_wrong_token_refused_then_throttled(browser, srv):
    for _ in range(4):  # the fourth failure blocks the address for a second
        login(browser, srv, "not-the-token")
        assert "not the admin token" in alert_text(browser)
    login(browser, srv, srv.admin_token)
    assert "Too many failed logins" in alert_text(browser)
    time.sleep(1.2)
    login(browser, srv, srv.admin_token)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"


def test_admin_overview(browser, srv):
    login(browser, srv, srv.admin_token)
    text = browser.find_element(By.TAG_NAME, "main").text
    for part in ("Stored", "Dedup ratio", "Readiness\nready", "Data directories", "Replication backlog",
                 "Last runs", "gc"):
        assert part in text


def test_create_vault_key_shown_once_and_revoke(browser, srv):
    login(browser, srv, srv.admin_token)
    browser.get(srv.url + "/console/vaults")
    browser.find_element(By.NAME, "name").send_keys("console-acme")
    press(browser, "Create vault")
    assert browser.find_element(By.TAG_NAME, "h1").text == "console-acme"
    browser.find_element(By.NAME, "label").send_keys("laptop")
    press(browser, "Create key")
    secret = browser.find_element(By.ID, "new-0").text
    assert secret.startswith("ovk_")
    assert browser.find_element(By.ID, "new-1").text.startswith("OVK")
    assert srv.client(secret).get("/v1/vaults/console-acme").status_code == 200
    browser.get(srv.url + "/console/vaults/console-acme")  # shown once: not on the next view
    assert secret not in browser.page_source and not browser.find_elements(By.ID, "new-key")
    assert "laptop" in browser.find_element(By.ID, "keys").text
    press(browser, "Revoke")
    assert "revoked" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert "laptop" not in browser.find_element(By.ID, "keys").text
    assert srv.client(secret).get("/v1/vaults/console-acme").status_code == 401


def test_quota_bar_and_usage_after_upload(browser, srv):
    create_vault(srv, "console-quota")
    key = create_key(srv, "console-quota")
    login(browser, srv, srv.admin_token)
    browser.get(srv.url + "/console/vaults/console-quota")
    quota = browser.find_element(By.NAME, "quota")
    quota.clear()
    quota.send_keys("2")
    browser.find_element(By.XPATH, "//select[@name='unit']/option[text()='MiB']").click()
    press(browser, "Save")
    meter = browser.find_element(By.CSS_SELECTOR, "#summary meter")
    assert meter.get_attribute("max") == str(2 << 20) and meter.get_attribute("value") == "0"
    upload(srv, "console-quota", key, "day1.tar", os.urandom(1 << 20))
    browser.refresh()
    meter = browser.find_element(By.CSS_SELECTOR, "#summary meter")
    assert int(meter.get_attribute("value")) >= 1 << 20
    assert "(50%)" in browser.find_element(By.ID, "summary").text
    browser.get(srv.url + "/console/vaults")
    row = browser.find_element(By.XPATH, "//table[@id='vaults']//tr[td//a[text()='console-quota']]")
    assert "of 2.0 MiB" in row.text and "today" in row.text


def test_weakening_a_lock_needs_confirmation(browser, srv):
    create_vault(srv, "console-locked", append_only=True)
    login(browser, srv, srv.admin_token)
    browser.get(srv.url + "/console/vaults/console-locked")
    browser.find_element(By.NAME, "append_only").click()
    press(browser, "Save")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Confirm weaker locks"
    assert admin_of(srv).get("/v1/vaults/console-locked").json()["append_only"] is True
    press(browser, "Weaken the locks")
    assert admin_of(srv).get("/v1/vaults/console-locked").json()["append_only"] is False
    # It lands in the audit log: on the vault's page and on the audit page.
    recent = browser.find_element(By.ID, "vault-audit").text
    assert "vault.lock_weakened" in recent and '"append_only": true' in recent
    browser.get(srv.url + "/console/audit?action=vault.lock_weakened")
    rows = browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows] == ["console-locked"]


def test_filter_and_sort_vaults(browser, srv):
    for name in ("console-zz", "console-aa"):
        create_vault(srv, name)
    login(browser, srv, srv.admin_token)
    browser.get(srv.url + "/console/vaults")
    browser.find_element(By.CSS_SELECTOR, "button[data-sort='0']").click()
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#vaults tbody td:first-child a")]
    assert names == sorted(names)
    browser.find_element(By.CSS_SELECTOR, "input[data-filter]").send_keys("console-z")
    shown = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#vaults tbody tr:not([hidden]) a")]
    assert shown == ["console-zz"]


def test_jobs_gc_dry_run_then_real(browser, srv):
    login(browser, srv, srv.admin_token)
    browser.get(srv.url + "/console/jobs")
    press(browser, "GC dry run")
    assert "dry_run: True" in browser.find_element(By.ID, "dry-run").text
    press(browser, "Run GC now")
    assert "GC pass done" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    press(browser, "Scrub now")
    assert "crub" in browser.find_element(By.CSS_SELECTOR, ".flash").text


def test_post_without_csrf_token_refused(srv):
    with httpx.Client(base_url=srv.url) as c:
        r = c.post("/console/login", data={"secret": srv.admin_token})
        assert r.status_code == 303 and "HttpOnly" in r.headers["set-cookie"]
        assert "SameSite=Strict" in r.headers["set-cookie"]
        r = c.post("/console/vaults", data={"name": "console-forged"})
        assert r.status_code == 403
        r = c.post("/console/vaults", data={"name": "console-forged", "csrf": "guess"})
        assert r.status_code == 403
    assert admin_of(srv).get("/v1/vaults/console-forged").status_code == 404


def test_tenant_sees_only_its_vault(browser, srv):
    create_vault(srv, "console-tenant")
    create_vault(srv, "console-other")
    key = create_key(srv, "console-tenant", role="read")
    login(browser, srv, key)
    assert browser.current_url == srv.url + "/console/vaults/console-tenant"
    nav = browser.find_element(By.TAG_NAME, "nav").text
    assert "Vaults" not in nav and "Jobs" not in nav
    assert not browser.find_elements(By.ID, "keys") and not browser.find_elements(By.NAME, "quota")
    browser.get(srv.url + "/console/vaults/console-other")
    assert "no such vault" in alert_text(browser)
    for page in ("/console/vaults", "/console/jobs", "/console/replication"):
        browser.get(srv.url + page)
        assert "operator" in alert_text(browser)
    admin_of(srv).delete(f"/v1/vaults/console-tenant/keys/{key[4:].split('_')[0]}")
    browser.get(srv.url + "/console/vaults/console-tenant")  # a revoked key's session is over
    assert browser.current_url == srv.url + "/console/login"


def test_keyboard_only_login_and_navigation(browser, srv):
    browser.get(srv.url + "/console/login")
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "secret"  # the field has the focus
    active.send_keys(srv.admin_token + Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: b.current_url == srv.url + "/console/")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    for _ in range(3):  # skip link, brand, Overview: then Vaults
        browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Vaults"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: b.current_url == srv.url + "/console/vaults")


def test_logout(browser, srv):
    login(browser, srv, srv.admin_token)
    press(browser, "Log out")
    assert browser.current_url == srv.url + "/console/login"
    browser.get(srv.url + "/console/vaults")
    assert browser.current_url == srv.url + "/console/login"


def test_phone_width_without_horizontal_scrolling(browser, srv):
    create_vault(srv, "console-phone", quota_bytes=10 << 30)
    login(browser, srv, srv.admin_token)
    browser.set_window_size(*PHONE)
    for page in PAGES + ("/console/vaults/console-phone", "/console/audit?vault=console-phone"):
        browser.get(srv.url + page)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth"), page


def test_screenshots(browser, srv, shots):
    """The overview and a vault page with some data, for the README."""
    create_vault(srv, "console-demo", quota_bytes=64 << 20)
    key = create_key(srv, "console-demo")
    time.sleep(1.1)  # the rates show from a second after the first sample
    for i in range(3):
        upload(srv, "console-demo", key, f"backup-{i}.tar", os.urandom(3 << 20))
    login(browser, srv, srv.admin_token)
    browser.get(srv.url + "/console/")
    assert re.search(r"Ingest\n[\d.]+ [KM]iB/s", browser.find_element(By.ID, "cards").text)
    browser.save_screenshot(str(shots / "console-overview.png"))
    browser.get(srv.url + "/console/vaults/console-demo")
    browser.save_screenshot(str(shots / "console-vault.png"))
    assert re.search(r"9\.0 MiB of 64\.0 MiB", browser.find_element(By.ID, "summary").text)


def page_errors(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and not refused_page(e)]


def test_every_page_without_script_errors(browser, srv):
    """Each page on its own: no JavaScript error and nothing fetched from elsewhere (the
    autouse check covers the whole test; this one names the page)."""
    create_vault(srv, "console-pages")
    login(browser, srv, srv.admin_token)
    browser.get_log("browser")
    for page in PAGES + ("/console/vaults/console-pages",):
        browser.get(srv.url + page)
        assert browser.find_element(By.TAG_NAME, "h1").text
        assert not page_errors(browser), page
        for button in browser.find_elements(By.CSS_SELECTOR, "button[data-sort]"):
            button.click()  # the page's script runs too
        assert not page_errors(browser), page


def test_overview_rates_follow_the_traffic(browser, srv):
    create_vault(srv, "console-rates")
    key = create_key(srv, "console-rates")
    login(browser, srv, srv.admin_token)
    time.sleep(1.1)  # a rate needs a sample at least a second old
    data = os.urandom(2 << 20)
    upload(srv, "console-rates", key, "rates.tar", data)
    assert srv.client(key).get(f"/v1/vaults/console-rates/chunks/{sha(data)}").content == data
    browser.get(srv.url + "/console/")
    cards = dict(zip([e.text for e in browser.find_elements(By.CSS_SELECTOR, "#cards dt")],
                     [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#cards dd")]))
    for name in ("Ingest", "Reads"):
        assert re.fullmatch(r"[\d.]+ (KiB|MiB)/s", cards[name]), cards
    assert re.fullmatch(r"0\.0/s \(0\.0 % of [\d.]+/s\)", cards["Server errors"]), cards


def test_audit_log_page_filters(browser, srv):
    login(browser, srv, srv.admin_token)
    browser.get(srv.url + "/console/vaults")
    browser.find_element(By.NAME, "name").send_keys("console-audited")
    press(browser, "Create vault")
    press(browser, "Create key")
    browser.get(srv.url + "/console/audit")
    browser.find_element(By.NAME, "vault").send_keys("console-audited")
    press(browser, "Filter")
    actions = [r.find_elements(By.TAG_NAME, "td")[2].text for r in browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")]
    assert actions == ["key.created", "vault.created"]
    assert browser.find_element(By.CSS_SELECTOR, "#audit tbody td:nth-child(2)").text == "admin"
    browser.find_element(By.XPATH, "//select[@name='action']/option[text()='vault']").click()
    press(browser, "Filter")
    assert "action=vault" in browser.current_url
    assert [r.find_elements(By.TAG_NAME, "td")[2].text
            for r in browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")] == ["vault.created"]
    browser.get(srv.url + "/console/audit?vault=console-audited&until=2001-01-01")
    assert browser.find_element(By.ID, "audit").text == "No audit lines."
    browser.get(srv.url + "/console/audit?since=soon")
    assert "since must be" in alert_text(browser)
    browser.get(srv.url + "/console/vaults/console-audited")
    assert "key.created" in browser.find_element(By.ID, "vault-audit").text


def test_a_stopped_target_shows_backlog_and_alerts(browser, srv, make_server, s3bucket):
    """A real S3 target (SeaweedFS) stops: the replication page shows the backlog,
    the error and the lag chart, and the overview the alerts."""
    alerts = "[alerts]\nreplication_backlog_seconds = 1\nevaluate_interval_seconds = 0.3\ndata_dir_min_free_bytes = 0\n"
    other = make_server("replicating", config=s3_target(s3bucket) + alerts, env=SMALL_SEGMENTS)
    OTHER_SERVERS.add(urlsplit(other.url).netloc)
    create_vault(other, "console-offsite")
    key = create_key(other, "console-offsite")
    wait_drained(other)  # the vault's and key's records shipped: the page shows no backlog yet
    login(browser, other, other.admin_token)
    browser.get(other.url + "/console/replication")
    assert browser.find_element(By.CSS_SELECTOR, "#targets tbody tr").text.split()[:3] == ["offsite", "s3", "0"]
    s3bucket.server.stop()
    upload(other, "console-offsite", key, "while-down.tar", os.urandom(1 << 20))
    deadline = time.monotonic() + 30
    while {a["kind"] for a in admin_of(other).get("/v1/admin/alerts").json()["open"]} < \
            {"replication_backlog", "target_failing"}:
        assert time.monotonic() < deadline, admin_of(other).get("/v1/admin/alerts").json()
        time.sleep(0.2)
    browser.get(other.url + "/console/replication")
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#targets tbody td")]
    assert cells[0] == "offsite" and int(cells[2]) >= 2  # the object and its chunk at least
    assert cells[3].endswith("MiB") and cells[4].endswith(" s")  # backlog bytes, lag
    assert cells[8] != "none"  # the last error
    caption = browser.find_element(By.CSS_SELECTOR, ".chart figcaption").text
    assert caption.startswith("Lag of offsite over the last") and "now " in caption
    browser.get(other.url + "/console/")
    open_alerts = browser.find_element(By.CSS_SELECTOR, "ul.alerts").text
    assert "replication_backlog: target 'offsite'" in open_alerts and "target_failing" in open_alerts
    assert "offsite" in browser.find_element(By.XPATH, "//h2[text()='Replication backlog']/following-sibling::div").text
    s3bucket.server.start(timeout=60)
