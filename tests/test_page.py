"""The web page (debian/www/) as a person meets it: served by the package's
nginx on a test host (trixie amd64), opened in Debian's headless chromium,
driven by Debian's chromium-driver through Selenium, at 127.0.0.1 on the
host's forwarded port, as `http://localhost:8080/` is after `vagrant up`.

Screenshots at desktop and phone widths are kept in target/screenshots/ (CI's
artifacts). The browser console must stay free of errors and of Content
Security Policy violations through every step.
"""

import base64
import json
import random
import re
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from clusters import host_with_package
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

SCREENSHOTS = Path(__file__).resolve().parent.parent / "target" / "screenshots"
DESKTOP = (1280, 900)
PHONE = (390, 844)
# What chromium sends when it opens a page.
BROWSER_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                  "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")


@pytest.fixture(scope="module")
def base_url(debs):
    with host_with_package("page", "10.231.0.41", debs[1]) as (_, port):
        yield f"http://127.0.0.1:{port}"


def open_browser(profile: Path, insecure_certs: bool = False) -> webdriver.Chrome:
    """Debian's chromium, headless, through Debian's chromedriver: nothing
    downloaded (Selenium Manager is not asked, as both paths are given).
    `insecure_certs`: accept a certificate from a CA the browser does not
    know (a test's own)."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    options.accept_insecure_certs = insecure_certs
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-extensions",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = open_browser(tmp_path_factory.mktemp("chromium"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, base_url):
    """The page, freshly loaded at desktop width, its console read empty."""
    browser.set_window_size(*DESKTOP)
    browser.get(base_url + "/")
    WebDriverWait(browser, 10).until(lambda b: b.execute_script("return document.readyState") == "complete")
    yield browser
    assert console_problems(browser) == []


# Chromium logs each 4xx answer as a failed resource; a 4xx from the API's
# POST is the answer an error test asks for, not a fault of the page.
API_REFUSAL = re.compile(r"/\?order=(asc|desc) - Failed to load resource: the server responded with a status of 4\d\d ")


def console_problems(browser) -> list[str]:
    """Console errors, warnings and CSP violations since the last call."""
    return [entry["message"] for entry in browser.get_log("browser")
            if (entry["level"] in ("SEVERE", "WARNING") or "Content Security Policy" in entry["message"])
            and not API_REFUSAL.search(entry["message"])]


def check_page_sorts(url: str, profile: Path, insecure_certs: bool = False) -> None:
    """Opens the page at `url` in a browser of its own, sorts with the
    keyboard, descending, and asserts the result and a clean console: the
    page works wherever it is served (a load balancer, TLS)."""
    driver = open_browser(profile, insecure_certs)
    try:
        driver.get(url)
        assert driver.title == "sortd: sort numbers"
        sort_with_keyboard(driver, "5, 3, 99999999999999999999999, 9", descending=True)
        assert outcome(driver) == "result", text_of(driver, "error-message")
        assert sorted_numbers(driver) == ["99999999999999999999999", "9", "5", "3"]
        assert console_problems(driver) == []
    finally:
        driver.quit()


def screenshot(browser, name: str) -> Path:
    """The whole page, beyond the window's height, into target/screenshots/."""
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def http(url: str, method: str = "GET", accept: str | None = None, data: bytes | None = None):
    request = urllib.request.Request(url, method=method, data=data)
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, answer.headers, answer.read().decode()


def sort_with_keyboard(browser, text: str, descending: bool = False) -> None:
    """On a page just loaded, types `text` and sorts with the keyboard only:
    Tab into the box (the first control), select all, type, then either Enter
    there or Tab to the order, an arrow key to change it, Tab to the button
    and Enter."""
    webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "numbers"
    box = browser.switch_to.active_element
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    # Shift+Enter makes a new line in the box; it does not sort.
    lines = text.split("\n")
    for number, line in enumerate(lines):
        box.send_keys(line)
        if number < len(lines) - 1:
            box.send_keys(Keys.SHIFT, Keys.ENTER)
    if not descending:
        box.send_keys(Keys.ENTER)
        return
    webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
    radio = browser.switch_to.active_element
    assert radio.get_attribute("value") == "asc"
    webdriver.ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    assert browser.switch_to.active_element.get_attribute("value") == "desc"
    webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "sort"
    webdriver.ActionChains(browser).send_keys(Keys.ENTER).perform()


def outcome(browser, timeout: float = 10) -> str:
    """Waits for the result or the error; returns which."""
    def shown(b):
        for section in ("result", "error"):
            if b.find_element(By.ID, section).is_displayed() and not b.find_element(By.ID, "sort").get_attribute("disabled"):
                return section
        return False
    return WebDriverWait(browser, timeout).until(shown)


def text_of(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def sorted_numbers(browser) -> list[str]:
    shown = text_of(browser, "sorted")
    assert shown.startswith("[") and shown.endswith("]"), shown
    return [n.strip() for n in shown[1:-1].split(",") if n.strip()]


def test_get_slash_is_the_page_for_browsers_and_json_for_api_clients(base_url):
    # A browser, under any spelling of its Accept header or of the path.
    for accept in (BROWSER_ACCEPT, "text/html", "TEXT/HTML;q=0.9"):
        for path in ("/", "//", "/?order=desc", "/index.html"):
            status, headers, body = http(base_url + path, accept=accept)
            assert status == 200 and headers["Content-Type"].startswith("text/html"), (accept, path)
            assert '<script src="sortd.js" defer></script>' in body
            policy = headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert "default-src 'none'" in policy
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["X-Request-ID"]
    status, headers, body = http(base_url + "/", method="HEAD", accept="text/html")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and body == ""
    # API clients: what they got before the page existed.
    for accept in (None, "*/*", "application/json", "application/json, text/plain"):
        status, headers, body = http(base_url + "/", accept=accept)
        assert status == 200 and headers["Content-Type"].startswith("application/json"), accept
        assert "limits" in json.loads(body)
        assert headers["Vary"] == "Accept"
        assert headers["X-Request-ID"]
    # POST / is the API whatever the client accepts.
    for accept in (None, "text/html", BROWSER_ACCEPT):
        status, headers, body = http(base_url + "/", method="POST", accept=accept, data=b'{"x1": "[5,3,9]"}')
        assert (status, body) == (200, '{"sorted_list":[3,5,9]}'), accept
    # The page's files, each with its type and the page's headers; nothing
    # they name comes from another host.
    for name, kind in (("sortd.js", "javascript"), ("sortd.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        status, headers, body = http(f"{base_url}/{name}", accept="*/*")
        assert status == 200 and kind in headers["Content-Type"], name
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "//" not in body.replace("http://www.w3.org/2000/svg", "").replace("// ", "").replace("//\n", ""), name


def test_typing_and_sorting_with_the_keyboard_shows_the_sorted_list(page):
    sort_with_keyboard(page, "5, 3, 9, -2.5, 99999999999999999999999,\n1e3, 1_000")
    assert outcome(page) == "result"
    assert sorted_numbers(page) == ["-2.5", "3", "5", "9", "1000.0", "1000", "99999999999999999999999"]
    summary = text_of(page, "summary")
    assert summary.startswith("7 numbers, sorted in ") and summary.endswith(" ms (round trip).")
    screenshot(page, "page-desktop.png")


def test_descending_order_through_the_order_buttons(page):
    sort_with_keyboard(page, "[1, 99999999999999999999999, -2.5, 7]", descending=True)
    assert outcome(page) == "result"
    assert sorted_numbers(page) == ["99999999999999999999999", "7", "1", "-2.5"]


@pytest.mark.parametrize("typed, expected", [
    ("5", ["5"]),
    ("[5,3,9]", ["3", "5", "9"]),
    ("[11,14,5,]", ["5", "11", "14"]),
    ('{"x1": "5", "x2": "7"}', ["5", "7"]),
    ('{"a": " -3 ", "b": "+7", "c": "2.5", "d": "1e3"}', ["-3", "2.5", "7", "1000.0"]),
    ('{"x1": 5, "x2": [3, 1]}', ["1", "3", "5"]),
    ("[9007199254740993, 9007199254740992.0]", ["9007199254740992.0", "9007199254740993"]),
    ("[]", []),
])
def test_every_form_the_api_takes(page, typed, expected):
    sort_with_keyboard(page, typed)
    assert outcome(page) == "result", text_of(page, "error-message")
    assert sorted_numbers(page) == expected
    assert text_of(page, "summary").startswith(f"{len(expected)} number")


@pytest.mark.parametrize("typed, marked, message", [
    # A plain list: the brackets the page adds are not counted.
    ("5, 3, abc", "a", "expected a number, found 'a'"),
    ("[5, 3, 9", "\u23ce end", "found the end of the value"),
    # In a JSON object's string value, past an escape that is one character.
    ('{"x1": "[5]", "x2": "[1, \\u00e9, x]"}', "\\u00e9", "found '\u00e9'"),
    ('{"x1": "5", "x1": "[1, 2, zz]"}', "z", 'value of key "x1", position 7'),
    # A native value and a top-level list.
    ('{"n": [1, 2, "3"]}', '"', "found '\"'"),
    ('  [1, 2, "x"]', '"', "position 7"),
    # Not JSON: the line and column serde_json names.
    ('{"x1": "5",\n "x2": 7,}', "}", "line 2 column 10"),
    # Characters beyond the Basic Multilingual Plane count as one.
    ("1, \U0001F600, 2", "\U0001F600", "expected a number"),
])
def test_an_error_shows_the_apis_message_and_highlights_its_position(page, typed, marked, message):
    if "\n" in typed or "\U0001F600" in typed:
        # chromedriver types no character outside the BMP; newlines go in as Shift+Enter.
        page.execute_script("document.getElementById('numbers').value = arguments[0];", typed)
        page.find_element(By.ID, "sort").click()
    else:
        sort_with_keyboard(page, typed)
    assert outcome(page) == "error"
    assert message in text_of(page, "error-message")
    assert page.find_element(By.CSS_SELECTOR, "#error-input mark").text == marked
    # The same character is selected in the box, which has the focus, for the keyboard.
    start, end, focused = page.execute_script(
        "const box = document.getElementById('numbers');"
        "return [box.selectionStart, box.selectionEnd, document.activeElement === box];")
    assert focused
    if marked != "\u23ce end":
        assert typed.encode("utf-16-le")[2 * start:2 * end].decode("utf-16-le") == marked
    if typed == "5, 3, abc":
        screenshot(page, "page-error-desktop.png")


def copy_result(page, base_url) -> str:
    """Presses the copy button; returns what the clipboard then holds."""
    page.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": base_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    page.find_element(By.ID, "copy").click()
    WebDriverWait(page, 5).until(lambda b: text_of(b, "copied") == "Copied.")
    return page.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.clipboard.readText().then(done, (e) => done('error: ' + e));")


def test_the_copy_button_copies_the_result(page, base_url):
    sort_with_keyboard(page, "3, 1, 2")
    assert outcome(page) == "result"
    assert copy_result(page, base_url) == "[1, 2, 3]"


def test_a_hundred_thousand_numbers_sort_without_freezing_the_tab(page, base_url):
    rng = random.Random(15)
    numbers = [rng.randint(-10**30, 10**30) for _ in range(50_000)] + \
        [round(rng.uniform(-1e6, 1e6), 3) for _ in range(50_000)]
    rng.shuffle(numbers)
    typed = ", ".join(str(n) for n in numbers)
    # A ticker measures the longest the page's main thread was busy: once
    # while the browser lays out the pasted text (its own work), then while
    # the sort was on its way and its result was shown (the page's).
    page.execute_script("""
        document.getElementById('numbers').value = arguments[0];
        window.longestGap = 0;
        let last = performance.now();
        window.ticker = setInterval(() => {
            const now = performance.now();
            window.longestGap = Math.max(window.longestGap, now - last);
            last = now;
        }, 20);
    """, typed)
    time.sleep(1)
    pasting = page.execute_script("const gap = window.longestGap; window.longestGap = 0; return gap;")
    started = time.monotonic()
    page.find_element(By.ID, "sort").click()
    assert outcome(page, timeout=60) == "result"
    waited = time.monotonic() - started
    time.sleep(0.2)
    longest = page.execute_script("clearInterval(window.ticker); return window.longestGap;")
    assert text_of(page, "summary").startswith("100,000 numbers")
    # The page shows both ends; the copy button copies every number, exact.
    shown = text_of(page, "sorted")
    assert "\u2026 95,000 more (Copy copies them all) \u2026" in shown
    copied = copy_result(page, base_url)
    assert copied.startswith(shown.split(",\n")[0])
    assert copied.endswith(shown.split("\n")[-1])
    expected = sorted(numbers, key=Decimal)
    assert [Decimal(n) for n in copied[1:-1].split(", ")] == [Decimal(str(n)) for n in expected]
    print(f"1e5 numbers ({len(typed):,} characters) from the page: result shown after {waited:.2f} s; "
          f"longest the tab was busy: {longest:.0f} ms ({pasting:.0f} ms when the text was put in the box); copied {len(copied):,} characters")
    # A frozen tab would be seconds; a busy frame is tens of milliseconds.
    assert longest < 1000


def test_phone_width_reads_without_scrolling_sideways(page):
    page.set_window_size(*PHONE)
    sort_with_keyboard(page, "[5, 3, 9, 12345678901234567890123456789, 0.000001, -42]")
    assert outcome(page) == "result"
    layout = page.execute_script("""
        const root = document.documentElement;
        const button = document.getElementById('sort').getBoundingClientRect();
        return {scroll: root.scrollWidth, width: root.clientWidth,
                font: parseFloat(getComputedStyle(root).fontSize), button: button.height};
    """)
    assert layout["scroll"] <= layout["width"], layout
    assert layout["font"] >= 16 and layout["button"] >= 44, layout
    screenshot(page, "page-phone.png")


def test_controls_are_labelled_and_text_has_enough_contrast(page):
    sort_with_keyboard(page, "1, x")
    assert outcome(page) == "error"
    unlabelled = page.execute_script("""
        return [...document.querySelectorAll('input, textarea, button, select')]
            .filter(el => !(el.labels && el.labels.length) && !el.textContent.trim() && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML);
    """)
    assert unlabelled == []
    # WCAG's contrast ratio of each kind of text against what is behind it.
    ratios = page.execute_script("""
        const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
        const luminance = ([r, g, b]) => [r, g, b].map(v => {
            v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
        }).reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
        const background = (el) => {
            for (; el; el = el.parentElement) {
                const c = rgb(getComputedStyle(el).backgroundColor);
                if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
            }
            return [255, 255, 255];
        };
        const ratio = (el) => {
            const a = luminance(rgb(getComputedStyle(el).color)), b = luminance(background(el));
            return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        };
        const out = {};
        for (const selector of ['h1', '.intro', 'label[for=numbers]', '#numbers', '.help', 'legend',
                                'fieldset label', '#sort', '#error-title', '#error-message', '#error-input mark',
                                'footer p'])
            out[selector] = ratio(document.querySelector(selector));
        return out;
    """)
    print("contrast ratios: " + ", ".join(f"{k} {v:.1f}" for k, v in ratios.items()))
    assert all(value >= 4.5 for value in ratios.values()), ratios


def test_the_policy_blocks_an_injected_inline_script(browser, base_url):
    """The attack the policy is for: script put into the page (as an XSS
    would) does not run, and the browser reports the violation."""
    browser.get(base_url + "/")
    browser.get_log("browser")
    ran = browser.execute_script("""
        const script = document.createElement('script');
        script.textContent = 'window.injected = true';
        document.body.append(script);
        return window.injected === true;
    """)
    assert ran is False
    assert any("Content Security Policy" in entry["message"] for entry in browser.get_log("browser"))
