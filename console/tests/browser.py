#!/usr/bin/env python3
"""The web console in a real browser: Debian's Chromium driven by Playwright's sync API.

Run by cli/tests/console_browser.rs (through charts/tests/run_in_venv.py with
console/tests/requirements-browser.txt) against a running site with the console, a second site
linked to it, and a TCP service served at the second site and reached through the first:

    browser.py --url https://127.0.0.1:PORT/ --password PW --service backend:PORT \\
        --traffic 127.0.0.2:PORT --client-site west --server-site east --screenshots DIR

Steps: log in (a wrong password first), the topology, a live connection (this script makes the
traffic), the service's page, the sites pages and the browser's history, and no JavaScript
errors. Checks are on the DOM (roles, labels, text), never on pixels; the screenshots
(topology.png, connections.png, service.png, failure.png when a step fails) are for people.
Prints one line per step and "all steps passed", or which step failed, what it expected and what
was there, and exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from typing import Callable, TypeVar
from urllib.parse import quote

try:
    from playwright.sync_api import Locator, Page, expect, sync_playwright
except ImportError as missing:  # run_in_venv.py installs it: a missing one is a failure.
    print(f"missing Python package: {missing}; run through charts/tests/run_in_venv.py "
          "--requirements console/tests/requirements-browser.txt", file=sys.stderr)
    sys.exit(2)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The whole script; the Rust test waits longer only to let run_in_venv.py install Playwright.
DEADLINE_S = 90
# What the console learns from the routers' records (sites, links, services, series).
LEARN_MS = 20_000
# Live figures: the page refreshes on each server-sent update, once a second.
LIVE_MS = 2_000
BODY_LEN = 4096  # what the test's server answers to any GET but /stream
T = TypeVar("T")


class Failure(Exception):
    """A check failed; the message says what was expected and what was there."""


def eventually(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout_ms: int) -> T:
    """Calls get until ok says yes to what it returned; fails after timeout_ms, showing the last."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        seen = get()
        if ok(seen):
            return seen
        if time.monotonic() >= deadline:
            raise Failure(f"expected {what} within {timeout_ms / 1000:g} s; found {seen!r}")
        time.sleep(0.1)


UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_bytes(text: str) -> float | None:
    """The number of bytes in the page's format ("512 B", "12.5 KiB"); None for "–"."""
    m = re.fullmatch(r"\s*([\d.,]+)\s*(B|KiB|MiB|GiB|TiB)\s*", text)
    return float(m.group(1).replace(",", "")) * UNITS[m.group(2)] if m else None


class Stream:
    """A long-lived connection through the client site: GET /stream, read in a thread."""

    def __init__(self, addr: str):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        ip, lport = self.sock.getsockname()[:2]
        self.client = f"{ip}:{lport}"
        self.received = 0
        self.first_byte = threading.Event()
        self.sock.sendall(b"GET /stream HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)
            self.first_byte.set()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Console:
    """The page and what the steps share."""

    def __init__(self, page: Page, args: argparse.Namespace):
        self.page = page
        self.args = args
        self.base = args.url.rstrip("/")
        self.service = args.service
        self.service_path = "/services/" + quote(args.service, safe="")
        self.stream: Stream | None = None
        self.logged_in = False

    def heading(self) -> Locator:
        return self.page.locator("main h1")

    def nav(self, name: str) -> None:
        main_nav = self.page.get_by_role("navigation", name="Main")
        main_nav.get_by_role("link", name=name, exact=True).click()

    def at(self, path: str, heading: str) -> None:
        """The URL's path (and query) is `path` and the page's heading is `heading`."""
        expect(self.page, f"URL {self.base}{path}").to_have_url(self.base + path)
        expect(self.heading(), f"heading {heading!r} at {path}").to_have_text(heading)

    def table(self, caption: str) -> Locator:
        """The table region labelled `caption` (the page's tables are regions named so)."""
        return self.page.locator("main").get_by_role("region", name=caption, exact=True)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=os.path.join(self.args.screenshots, name), full_page=True)


def column(region: Locator, label: str) -> int:
    """The index of the column whose header starts with `label`."""
    heads = region.locator("thead th").all_inner_texts()
    for i, h in enumerate(heads):
        if h.strip().startswith(label):
            return i
    raise Failure(f"expected a column {label!r}; found columns {heads}")


def rows(region: Locator) -> list[list[str]]:
    """The texts of the cells of each row of the table in `region`."""
    return region.locator("tbody tr").evaluate_all(
        "trs => trs.map(tr => [...tr.cells].map(td => td.innerText.trim()))")


def cell_text(row: Locator, index: int) -> str:
    return row.locator("th, td").nth(index).inner_text(timeout=1000).strip()


# ---------- steps ----------

def step_login(c: Console) -> None:
    page = c.page
    page.goto(c.args.url)
    form = page.locator("#login-form")
    expect(form, "the login form").to_be_visible()
    expect(page.locator("#top"), "no app header before login").to_be_hidden()
    page.get_by_label("Username", exact=True).fill("admin")
    page.get_by_label("Password", exact=True).fill(c.args.password + "-wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-err"), "the refusal of a wrong password").to_have_text(
        "Wrong username or password.")
    expect(form, "the login form after a wrong password").to_be_visible()
    expect(page.locator("#main"), "no app after a wrong password").to_be_hidden()
    page.get_by_label("Password", exact=True).fill(c.args.password)
    page.get_by_role("button", name="Log in").click()
    expect(form, "the login form gone after the right password").to_be_hidden()
    c.logged_in = True
    c.at("/topology", "Topology")
    expect(page.locator("#user"), "the user in the header").to_have_text("admin · internal")


def step_topology(c: Console) -> None:
    page, a = c.page, c.args
    graph = page.get_by_role("group", name="Sites and router links")
    expect(graph, "the topology graph").to_be_visible(timeout=LEARN_MS)
    for site in (a.client_site, a.server_site):
        node = graph.get_by_role("link", name=re.compile(rf"^Site {re.escape(site)}, up, "))
        expect(node, f"a node for site {site}, up").to_have_count(1, timeout=LEARN_MS)
    # East made the link to west: one edge drawn from east to west, up.
    want = f"{a.server_site} to {a.client_site}: up"
    eventually(f"a link edge titled {want!r}, of class up",
               lambda: graph.locator("g.edge.link").evaluate_all(
                   "gs => gs.map(g => [g.querySelector('title')?.textContent,"
                   " g.getAttribute('class')])"),
               lambda edges: any(t.startswith(want) and "up" in cls.split() for t, cls in edges),
               LEARN_MS)
    links = c.table("Router links between sites")
    eventually(f"the links table's row {a.server_site} → {a.client_site}, up",
               lambda: rows(links),
               lambda r: [a.server_site, a.client_site, "up"] in [x[:3] for x in r], LEARN_MS)
    select = page.get_by_label("Traffic for service")
    eventually(f"service {c.service} in the service filter",
               lambda: select.locator("option").evaluate_all("os => os.map(o => o.value)"),
               lambda values: c.service in values, LEARN_MS)
    # Services are named by routing key: no second entry for the bare service name.
    bare = c.service.rsplit(":", 1)[0]
    values = select.locator("option").evaluate_all("os => os.map(o => o.value)")
    if bare in values:
        raise Failure(f"the service filter lists {bare!r} beside {c.service!r}: {values}")
    expect(page.locator("#live-text"), "live updates on").to_contain_text("Live")
    c.shot("topology.png")
    # Choosing the service shows its traffic.
    select.select_option(c.service)
    expect(page, "the traffic view for the service").to_have_url(
        f"{c.base}/topology?address={quote(c.service, safe='')}&show=traffic")
    expect(page.get_by_role("group", name="Sites and traffic between them"),
           "the traffic graph").to_be_visible()


def short_gets(c: Console, n: int) -> None:
    for i in range(n):
        url = f"http://{c.args.traffic}/hello-{i}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read()
        if r.status != 200 or len(body) != BODY_LEN:
            raise Failure(f"expected GET {url} to answer 200 with {BODY_LEN} bytes; "
                          f"found {r.status} with {len(body)} bytes")


def step_traffic(c: Console) -> None:
    page = c.page
    short_gets(c, 3)
    c.nav("Connections")
    c.at("/connections", "Connections")
    page.get_by_label("State", exact=True).select_option("active")
    c.at("/connections?state=active", "Connections")
    conns = c.table("Connections")
    expect(conns, "the connections table").to_be_visible()

    c.stream = s = Stream(c.args.traffic)
    if not s.first_byte.wait(10):
        raise Failure(f"expected bytes from GET /stream through {c.args.traffic} within 10 s; "
                      "found none")
    flowing = time.monotonic()
    row = conns.locator("tbody tr").filter(has_text=re.compile(rf"{re.escape(s.client)}(?!\d)"))
    try:
        expect(row).to_have_count(1, timeout=LIVE_MS)
    except AssertionError:
        raise Failure(f"expected the connection from {s.client} in the active connections "
                      f"within {LIVE_MS / 1000:g} s of data flowing; found rows "
                      f"{conns.locator('tbody tr').all_inner_texts()}") from None
    appeared = time.monotonic() - flowing
    print(f"     connection from {s.client} listed {appeared:.2f} s after data flowed")
    for label, want in (("Address", c.service), ("Source site", c.args.client_site),
                        ("Dest site", c.args.server_site), ("State", "active")):
        got = cell_text(row, column(conns, label))
        if got != want:
            raise Failure(f"expected {label} {want!r} for the connection; found {got!r}")

    i_in, i_out = column(conns, "Bytes in"), column(conns, "Bytes out")
    seen: list[tuple[str, str]] = []

    def figures() -> str:
        seen.append((cell_text(row, i_out), cell_text(row, i_in)))
        return (f"(bytes out, bytes in) over time: {sorted(set(seen), key=seen.index)}; "
                f"the client received {s.received} bytes")

    def grown(_: str) -> bool:
        first, last = parse_bytes(seen[0][1]), parse_bytes(seen[-1][1])
        return first is not None and last is not None and last > first

    eventually("the connection's bytes in to grow between refreshes", figures, grown, LIVE_MS)
    print(f"     bytes in grew: {seen[0][1]} → {seen[-1][1]}")
    c.shot("connections.png")


def step_service(c: Console) -> None:
    page, a = c.page, c.args
    # From the connection's row to its service.
    conns = c.table("Connections")
    conns.get_by_role("link", name=c.service, exact=True).first.click()
    c.at(c.service_path, c.service)
    served = c.table("Served by")
    expect(served.get_by_role("link", name=a.server_site, exact=True),
           f"site {a.server_site} serving {c.service}").to_have_count(1, timeout=LEARN_MS)
    reached = c.table("Reached from")
    expect(reached.get_by_role("link", name=a.client_site, exact=True),
           f"site {a.client_site} listening for {c.service}").to_have_count(1)
    expect(reached, f"the listener at {a.traffic}").to_contain_text(a.traffic)

    # Playwright 1.49 ends a name's pattern at an unescaped "/": write "\/".
    byte_rate = page.get_by_role("img", name=re.compile(
        r"^Byte rate, last 15 minutes\. Latest: out \S+ \S+\/s, in \S+ \S+\/s\.$"))
    expect(byte_rate, "the byte rate chart, labelled with its latest rates").to_have_count(1)
    conn_rate = page.get_by_role("img", name=re.compile(
        r"^Connection rate, last 15 minutes\. Latest: opened \S+\/s\.$"))
    expect(conn_rate, "the connection rate chart, labelled with its latest rate").to_have_count(1)
    for name, chart in (("byte rate", byte_rate), ("connection rate", conn_rate)):
        eventually(f"a drawn line in the {name} chart",
                   lambda chart=chart: chart.locator("path.series").evaluate_all(
                       "ps => ps.map(p => p.getAttribute('d') || '')"),
                   lambda ds: any(d.startswith("M") for d in ds), LEARN_MS)

    tab_open = page.get_by_role("tab", name="Open connections")
    expect(tab_open, "the open connections tab, selected").to_have_attribute(
        "aria-selected", "true")
    expect(page.get_by_role("tab", name="HTTP requests"), "no HTTP tab for TCP").to_be_hidden()
    panel = page.get_by_role("tabpanel")
    client = c.stream.client if c.stream else "?"
    expect(panel, f"the open connection from {client}").to_contain_text(client)
    c.shot("service.png")

    page.get_by_role("tab", name="Connection history").click()
    expect(page, "the history tab's URL").to_have_url(f"{c.base}{c.service_path}?tab=history")
    expect(page.get_by_role("tab", name="Connection history"),
           "the history tab, selected").to_have_attribute("aria-selected", "true")
    eventually("at least 3 terminated connections (the short GETs) in the history",
               lambda: rows(panel),
               lambda r: sum(x[:1] == ["terminated"] for x in r) >= 3, LEARN_MS)


def step_navigation(c: Console) -> None:
    page, a = c.page, c.args
    c.nav("Sites")
    c.at("/sites", "Sites")
    sites = c.table("Sites")
    for site in (a.client_site, a.server_site):
        row = sites.locator("tbody tr").filter(
            has=page.get_by_role("link", name=site, exact=True))
        expect(row, f"a row for site {site}").to_have_count(1)
        expect(row.locator(".badge").first, f"site {site} up").to_have_text("up")
    sites.get_by_role("link", name=a.client_site, exact=True).click()
    expect(page, f"the page of site {a.client_site}").to_have_url(re.compile(r"/sites/[^/]+$"))
    site_url = page.url
    expect(c.heading(), f"heading {a.client_site!r}").to_have_text(a.client_site)
    expect(c.table("Routers").locator("tbody tr .badge"),
           "the site's router, up").to_have_text(["up"])
    links = c.table("Links").locator("tbody tr")
    expect(links.filter(has=page.locator(".badge.up")),
           "a link of the site, up").not_to_have_count(0)
    consumed = page.locator("main section").filter(
        has=page.get_by_role("heading", name="Services consumed"))
    expect(consumed.get_by_role("link", name=c.service, exact=True),
           f"service {c.service} among those the site consumes").to_have_count(1)

    page.go_back()
    c.at("/sites", "Sites")
    page.go_forward()
    expect(page, "forward to the site page again").to_have_url(site_url)
    expect(c.heading(), f"heading {a.client_site!r} after going forward").to_have_text(
        a.client_site)

    c.nav("Services")
    c.at("/services", "Services")
    c.table("Services").get_by_role("link", name=c.service, exact=True).click()
    c.at(c.service_path, c.service)
    page.go_back()
    c.at("/services", "Services")


STEPS: list[tuple[str, Callable[[Console], None]]] = [
    ("login", step_login),
    ("topology", step_topology),
    ("live connection", step_traffic),
    ("service page", step_service),
    ("sites and history", step_navigation),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the console, https://HOST:PORT/")
    ap.add_argument("--password", required=True, help="user admin's password")
    ap.add_argument("--service", required=True, help="the service's address, backend:PORT")
    ap.add_argument("--traffic", required=True, help="HOST:PORT of the service's listener")
    ap.add_argument("--client-site", required=True, help="the site with the listener (and console)")
    ap.add_argument("--server-site", required=True, help="the site serving the service")
    ap.add_argument("--screenshots", required=True, help="directory for the screenshots")
    args = ap.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)

    def out_of_time(*_: object) -> None:
        signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
        signal.alarm(15)  # if closing the browser hangs too
        raise Failure(f"the script ran out of its {DEADLINE_S} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(DEADLINE_S)

    js_errors: list[str] = []
    ignored: list[str] = []
    failed = False
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        expect.set_options(timeout=5_000)
        c = Console(page, args)

        def on_console(msg) -> None:  # type: ignore[no-untyped-def]
            if msg.type != "error":
                return
            where = msg.location.get("url", "")
            text = f"console error at {where}: {msg.text}"
            # Before logging in, Chromium reports the 401s the login form is made of.
            if (not c.logged_in and "status of 401" in msg.text
                    and where.endswith(("/api/v1/user", "/api/v1/login"))):
                ignored.append(text)
            else:
                js_errors.append(text)

        page.on("console", on_console)
        page.on("pageerror", lambda e: js_errors.append(f"uncaught exception: {e}"))

        try:
            for i, (title, run) in enumerate(STEPS, 1):
                started = time.monotonic()
                try:
                    run(c)
                except Exception as e:  # noqa: BLE001 - Failure, a Playwright assertion or error
                    failed = True
                    print(f"FAIL step {i} ({title}) at {page.url}:\n  {str(e).strip()}")
                    try:
                        c.shot("failure.png")
                        print(f"  screenshot: {os.path.join(args.screenshots, 'failure.png')}")
                    except Exception as shot_error:  # noqa: BLE001 - the failure matters more
                        print(f"  (no screenshot: {shot_error})")
                    break
                print(f"ok   step {i} ({title}) in {time.monotonic() - started:.1f} s")
            n = len(STEPS) + 1
            for t in ignored:
                print(f"     ignored (login): {t}")
            if js_errors:
                failed = True
                print(f"FAIL step {n} (no JavaScript errors): expected none; found "
                      f"{len(js_errors)}:")
                for e in js_errors:
                    print(f"  {e}")
            else:
                print(f"ok   step {n} (no JavaScript errors)")
        finally:
            if c.stream:
                c.stream.close()
            ctx.close()
            browser.close()
    signal.alarm(0)
    if failed:
        return 1
    print("all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
