"""The customer's connect page (issue 14) in a real headless browser: Debian's ``chromium`` driven by Selenium
through ``chromedriver``, against a real ``sigproxy run`` (SQLite store, ``[admin] token``, ``[onboarding]
principal`` = moto's IAM user) and moto's IAM and STS with trust-policy checks on.

The browser reads the ExternalId and the trust policy off the page, the role is created in moto with exactly
that policy, its ARN typed into the form; success shows the assumed identity and the connection then signs an
S3 call through the proxy. A wrong ExternalId shows STS's AccessDenied and leaves the connection pending. A
used, a revoked and an unknown token are refused. Plain HTTP requests check the security headers and the CSRF
and Origin refusals.

One ``sigproxy run`` and one browser serve the module. Screenshots (empty, error, success at 1280x900, and the
error at 390x844) go to a temp directory, or to ``docs/`` with ``SIGPROXY_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ROOT, Proxy
from tests.integration.test_admin_api import customer_role, start, tenant
from tests.integration.test_credentials import platform
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto

TOKEN = "admin-" + uuid.uuid4().hex
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROLE_PATH = "/sigproxy-assumable/"
PRODUCT = "Example Platform"
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
LOGO = """<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40" viewBox="0 0 40 40">
<rect width="40" height="40" rx="8" fill="#1749b8"/>
<path fill-rule="evenodd" fill="#fff" d="M9 28V12h11v3h-7.5v3.5h6.5v3h-6.5V25H20v3z
M22.5 28V12h6.25a4.75 4.75 0 0 1 0 9.5H26V28z M26 15v3.5h2.5a1.75 1.75 0 0 0 0-3.5z"/></svg>
"""
TEMPLATE_URL = "https://sigproxy-example.s3.amazonaws.com/sigproxy-role.json"  # the operator's hosted copy
DESKTOP = (1280, 900)
PHONE = (390, 844)


@dataclass
class Reply:
    status: int
    headers: Any
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def http(method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    """One plain request (no cookie jar, no redirects followed)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, response.headers, response.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read().decode())


@dataclass
class Site:
    proxy: Proxy
    moto: Moto

    @property
    def admin(self) -> str:
        assert self.proxy.admin is not None
        return self.proxy.admin

    def api(self, method: str, path: str, body: Any = None) -> Reply:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return http(method, self.admin + path, body=None if body is None else json.dumps(body).encode(),
                    headers=headers)

    def pending(self, prefix: str) -> str:
        """A new pending connection (its role assumed with the platform's keys); its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        r = self.api("POST", "/v1/connections", tenant(self.moto, name))
        assert r.status == 201, r.text
        assert r.json()["state"] == "pending"
        return name

    def session(self, connection: str, **extra: Any) -> dict[str, Any]:
        """A connect session for ``connection``: ``{"id", "url", "expires_at"}``, ``url`` made absolute."""
        r = self.api("POST", "/v1/connect-sessions", {"connection": connection, **extra})
        assert r.status == 201, r.text
        made: dict[str, Any] = r.json()
        if made["url"].startswith("/"):
            made["url"] = self.admin + made["url"]
        assert re.search(r"/connect/[A-Za-z0-9_-]{16,}$", made["url"]), made["url"]
        return made

    def state(self, connection: str) -> str:
        r = self.api("GET", f"/v1/connections/{connection}")
        assert r.status == 200, r.text
        state: str = r.json()["state"]
        return state


@pytest.fixture(scope="module")
def site(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("connect-page")
    (tmp / "logo.svg").write_text(LOGO)
    proxy = start(tmp, f"""
[proxy]
auth_failures = 1000

[admin]
token = "{TOKEN}"

[onboarding]
principal = "{moto.user_arn}"
require_role_path = "{ROLE_PATH}"

[connect]
product_name = "{PRODUCT}"
logo_file = "{tmp / 'logo.svg'}"
template_url = "{TEMPLATE_URL}"
{platform(moto)}""")
    try:
        yield Site(proxy, moto)
    finally:
        output = proxy.stop()
        # Nothing sigproxy wrote names a connect session's token (the URL is the credential).
        tokens = re.findall(r"/connect/([A-Za-z0-9_-]{16,})", "\n".join(_SEEN))
        assert tokens, "no session was made"
        leaked = [t for t in tokens if t in output]
        assert not leaked, "a connect token is in sigproxy's output"


_SEEN: list[str] = []  # every session URL this module made, checked against sigproxy's output at the end


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are required: install them with scripts/sysdeps.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("SIGPROXY_UPDATE_SCREENSHOTS") == "1":
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        return docs
    return tmp_path_factory.mktemp("screenshots")


def viewport(driver: WebDriver, size: tuple[int, int]) -> None:
    """The page's viewport exactly ``size`` CSS pixels (device scale 1), a phone's when narrow."""
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def screenshot(driver: WebDriver, where: Path, name: str, size: tuple[int, int] = DESKTOP) -> None:
    viewport(driver, size)
    driver.execute_script("window.scrollTo(0, 0)")
    path = where / f"connect-page-{name}.png"
    assert driver.save_screenshot(str(path)), path
    viewport(driver, DESKTOP)


def open_page(driver: WebDriver, url: str) -> None:
    _SEEN.append(url)
    driver.get(url)
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.TAG_NAME, "main")))


def submit(driver: WebDriver, role_arn: str, region: str | None = None) -> Any:
    """Type into the form with the keyboard and send it; the ``#result`` element of the page that answers."""
    field = driver.find_element(By.NAME, "role_arn")
    field.clear()
    field.send_keys(role_arn)
    if region is not None:
        box = driver.find_element(By.NAME, "region")
        box.clear()
        box.send_keys(region)
    # Mark this document: the answer is a new one without the mark. (Chromedriver may throw a plain
    # WebDriverException, not StaleElementReference, while the old document goes: ignore those meanwhile.)
    driver.execute_script("document.documentElement.setAttribute('data-sent', '1')")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && !document.documentElement.hasAttribute('data-sent')"))
    return WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "result")))


def read_off_page(driver: WebDriver) -> tuple[str, dict[str, Any], str]:
    """What the customer copies: the ExternalId, the trust policy (parsed) and the required role path."""
    external_id = driver.find_element(By.ID, "external-id").text.strip()
    trust = json.loads(driver.find_element(By.ID, "trust-policy").text)
    role_path = driver.find_element(By.ID, "role-path").text.strip()
    return external_id, trust, role_path


def s3_through_proxy(site: Site, connection: str) -> Any:
    return curl(site.proxy, "-H", f"X-Sigproxy-Connection: {connection}", "-H", "X-Sigproxy-Service: s3",
                f"{site.moto.endpoint}/")


# ---------------------------------------------------------------------------------------------- the browser


def test_connect_in_the_browser_then_s3_through_the_proxy(site: Site, browser: WebDriver, shots: Path) -> None:
    moto = site.moto
    name = site.pending("acme")
    made = site.session(name, display_name="Acme Corp", region="us-east-1")
    open_page(browser, made["url"])
    assert PRODUCT in browser.find_element(By.TAG_NAME, "header").text
    logo = browser.find_element(By.CSS_SELECTOR, "header img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", logo) == 40
    assert "Acme Corp" in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.find_element(By.NAME, "region").get_attribute("value") == "us-east-1"  # the seed
    assert browser.find_elements(By.ID, "result") == []
    # Every field has a label; the copy buttons were shown by the script (CSP allowed it).
    for field in ("role_arn", "region"):
        assert browser.find_element(By.CSS_SELECTOR, f"label[for={field}]").text
    copy = browser.find_element(By.CSS_SELECTOR, "button[data-copy=external-id]")
    assert copy.is_displayed()
    assert browser.find_element(By.ID, "template-download").get_attribute("href").endswith("/cloudformation.json")
    assert "aws iam create-role" in browser.find_element(By.ID, "aws-cli").get_attribute("textContent")
    screenshot(browser, shots, "empty")

    external_id, trust, role_path = read_off_page(browser)
    assert role_path == ROLE_PATH
    quick = browser.find_element(By.ID, "quick-create").get_attribute("href")
    assert quick.startswith("https://console.aws.amazon.com/cloudformation/")
    assert external_id in quick
    statement = trust["Statement"][0]
    assert statement["Principal"] == {"AWS": moto.user_arn}
    assert statement["Condition"]["StringEquals"]["sts:ExternalId"] == external_id

    # Keyboard: the copy button takes focus and Enter copies (the status says so, or how to do it by hand).
    copy.send_keys("\n")
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "external-id-copied").text != "")

    role_arn = customer_role(moto, trust, role_path)
    result = submit(browser, role_arn)
    assert result.get_attribute("data-state") == "success", result.text
    role_name = role_arn.rsplit("/", 1)[1]
    assert f"assumed-role/{role_name}/" in result.text
    assert "ready" in result.text
    assert browser.find_elements(By.NAME, "role_arn") == []  # the form is gone
    screenshot(browser, shots, "success")

    assert site.state(name) == "active"
    session = site.api("GET", f"/v1/connect-sessions/{made['id']}")
    assert (session.status, session.json()["state"], session.json()["connection"]) == (200, "completed", name)

    deadline = time.monotonic() + 5  # store changes reach the proxy through the change feed
    while True:
        s3 = s3_through_proxy(site, name)
        if status_of(s3) == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status_of(s3) == 200, s3
    assert moto.bucket in s3.stdout

    # The token worked once: opening it again (or posting to it) is refused.
    open_page(browser, made["url"])
    assert browser.find_element(By.ID, "result").get_attribute("data-state") == "error"
    assert "new link" in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_elements(By.NAME, "role_arn") == []
    again = http("GET", made["url"])
    assert again.status == 410
    assert external_id not in again.text


def test_wrong_external_id_shows_access_denied_and_stays_pending(site: Site, browser: WebDriver,
                                                                  shots: Path) -> None:
    moto = site.moto
    name = site.pending("wrong")
    made = site.session(name)
    open_page(browser, made["url"])
    external_id, trust, role_path = read_off_page(browser)

    # A malformed ARN: the error sits next to the field, announced, and the field is marked invalid.
    result = submit(browser, "not-an-arn")
    assert result.get_attribute("data-state") == "error"
    assert result.get_attribute("role") == "alert"
    field = browser.find_element(By.NAME, "role_arn")
    assert field.get_attribute("aria-invalid") == "true"
    described = field.get_attribute("aria-describedby").split()
    assert "role_arn-error" in described
    assert browser.find_element(By.ID, "role_arn-error").text
    assert field.get_attribute("value") == "not-an-arn"  # what was typed is kept

    # The customer's trust policy names another tenant's ExternalId: STS refuses.
    trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] = "someone-elses-id"
    wrong_arn = customer_role(moto, trust, role_path)
    result = submit(browser, wrong_arn)
    assert result.get_attribute("data-state") == "error", result.text
    assert "AccessDenied" in result.text
    assert result.get_attribute("role") == "alert"
    assert browser.find_element(By.NAME, "role_arn").get_attribute("value") == wrong_arn
    screenshot(browser, shots, "error")
    screenshot(browser, shots, "phone", PHONE)

    assert site.state(name) == "pending"
    session = site.api("GET", f"/v1/connect-sessions/{made['id']}").json()
    assert session["state"] == "open"
    assert status_of(s3_through_proxy(site, name)) != 200
    # The same ExternalId is still shown: the customer can fix the role and try again.
    assert browser.find_element(By.ID, "external-id").text.strip() == external_id


def test_revoked_and_unknown_tokens_are_refused(site: Site, browser: WebDriver) -> None:
    name = site.pending("revoked")
    made = site.session(name)
    assert http("GET", made["url"]).status == 200
    assert site.api("DELETE", f"/v1/connect-sessions/{made['id']}").status in (200, 204)
    open_page(browser, made["url"])
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "cancelled" in main
    assert "new link" in main
    assert browser.find_elements(By.ID, "external-id") == []
    assert http("GET", made["url"]).status == 410

    unknown = made["url"].rsplit("/", 1)[0] + "/" + "A" * 43
    r = http("GET", unknown)
    assert r.status == 404
    assert "not valid" in r.text
    assert http("GET", made["url"].rsplit("/", 1)[0] + "/short").status == 404
    assert site.state(name) == "pending"


# ---------------------------------------------------------------------------------------------- plain HTTP


def _form(page: Reply) -> tuple[str, str]:
    """The CSRF cookie (``name=value``) set by a page and the hidden field's value."""
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    field = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert field is not None
    return cookie, field.group(1)


def _post(url: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> Reply:
    body = urllib.parse.urlencode(fields).encode()
    return http("POST", url, body=body, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                 **(headers or {})})


def test_security_headers_on_every_connect_answer(site: Site) -> None:
    made = site.session(site.pending("headers"))
    _SEEN.append(made["url"])
    base = made["url"].rsplit("/", 1)[0]
    answers = {
        "page": http("GET", made["url"]),
        "css": http("GET", base + "/static/connect.css"),
        "js": http("GET", base + "/static/copy.js"),
        "logo": http("GET", base + "/static/logo"),
        "template": http("GET", made["url"] + "/cloudformation.json"),
        "unknown token": http("GET", base + "/" + "B" * 43),
        "unknown file": http("GET", base + "/static/nope.css"),
        "csrf refusal": _post(made["url"], {"role_arn": "arn:aws:iam::123456789012:role/x"}),
    }
    for what, r in answers.items():
        assert r.headers["Content-Security-Policy"] == CSP, what
        assert r.headers["X-Frame-Options"] == "DENY", what
        assert r.headers["Referrer-Policy"] == "no-referrer", what
        assert r.headers["Cache-Control"] == "no-store", what
        assert r.headers["X-Content-Type-Options"] == "nosniff", what
    assert [answers[k].status for k in answers] == [200, 200, 200, 200, 200, 404, 404, 403]
    assert answers["logo"].headers["Content-Type"] == "image/svg+xml"
    assert answers["logo"].text == LOGO
    assert answers["css"].headers["Content-Type"].startswith("text/css")
    assert answers["js"].headers["Content-Type"].startswith("text/javascript")

    page = answers["page"]
    assert page.headers["Content-Type"].startswith("text/html")
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/connect/" in cookie
    assert "<script>" not in page.text  # no inline script (CSP)
    assert "style=" not in page.text  # no inline style
    loaded = re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]+)"', page.text)
    assert loaded
    assert all(u.startswith("/connect/static/") for u in loaded), loaded  # nothing from another origin

    template = answers["template"]
    assert template.headers["Content-Disposition"].startswith("attachment;")
    role = template.json()["Resources"]["Role"]["Properties"]
    assert role["Path"] == ROLE_PATH
    condition = role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
    assert condition["sts:ExternalId"] in page.text

    # The /v1 API still wants its token; /connect never does.
    assert http("GET", site.admin + "/v1/connections").status == 401


def test_csrf_and_origin_refusals(site: Site) -> None:
    name = site.pending("csrf")
    made = site.session(name)
    url = made["url"]
    _SEEN.append(url)
    cookie, field = _form(http("GET", url))
    arn = "arn:aws:iam::123456789012:role/sigproxy-assumable/x"
    refused = {
        "no cookie, no field": _post(url, {"role_arn": arn}),
        "field without cookie": _post(url, {"role_arn": arn, "csrf": field}),
        "cookie without field": _post(url, {"role_arn": arn}, {"Cookie": cookie}),
        "wrong field": _post(url, {"role_arn": arn, "csrf": field[:-2] + "xx"}, {"Cookie": cookie}),
        "another origin": _post(url, {"role_arn": arn, "csrf": field},
                                {"Cookie": cookie, "Origin": "https://evil.example"}),
        "another site": _post(url, {"role_arn": arn, "csrf": field},
                              {"Cookie": cookie, "Sec-Fetch-Site": "cross-site"}),
        "not a form": http("POST", url, body=json.dumps({"role_arn": arn, "csrf": field}).encode(),
                           headers={"Cookie": cookie, "Content-Type": "application/json"}),
    }
    for what, r in refused.items():
        assert r.status == 403, (what, r.status)
        assert "reload" in r.text.lower() or "another site" in r.text.lower(), what
    too_big = _post(url, {"role_arn": "x" * 20_000, "csrf": field}, {"Cookie": cookie})
    assert too_big.status == 413

    # Cookie and field together, from this page's origin, pass the check: an empty ARN is a field error
    # (422, the field marked), and nothing was submitted.
    origin = re.match(r"^https?://[^/]+", url)
    assert origin is not None
    ok = _post(url, {"role_arn": "", "region": "", "csrf": field}, {"Cookie": cookie, "Origin": origin.group(0)})
    assert ok.status == 422
    assert 'aria-invalid="true"' in ok.text
    assert 'id="role_arn-error"' in ok.text
    assert site.state(name) == "pending"
    assert site.api("GET", f"/v1/connect-sessions/{made['id']}").json()["state"] == "open"

