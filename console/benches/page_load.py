#!/usr/bin/env python3
"""Times the console's first page loads in Chromium over a console holding 100,000 connections.

    BENCH_SERVE=127.0.0.1:18090 cargo bench -p van-console --bench store -- --bench &
    python3 charts/tests/run_in_venv.py --requirements console/tests/requirements-browser.txt \\
        target/tmp/browser-venv console/benches/page_load.py http://127.0.0.1:18090

For each page, a fresh browser context (nothing cached) goes to the URL and waits until the
page shows its data (a table row, or the topology's site nodes); the time from navigation to
then is printed, five runs each, with the median.
"""

from __future__ import annotations

import statistics
import sys
import time

from playwright.sync_api import sync_playwright

PAGES = [
    ("topology", "/topology", "svg a.node"),
    ("connections", "/connections", "main table tbody tr"),
    ("requests", "/requests", "main table tbody tr"),
    ("services", "/services", "main table tbody tr"),
]
RUNS = 5


def main() -> int:
    base = sys.argv[1].rstrip("/")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        worst = 0.0
        for name, path, ready in PAGES:
            times = []
            for _ in range(RUNS):
                ctx = browser.new_context(viewport={"width": 1280, "height": 800})
                page = ctx.new_page()
                started = time.perf_counter()
                page.goto(base + path)
                page.wait_for_selector(ready, timeout=30_000)
                times.append(time.perf_counter() - started)
                ctx.close()
            med = statistics.median(times)
            worst = max(worst, max(times))
            print(f"{name:<12} median {med * 1000:6.0f} ms   runs "
                  + " ".join(f"{t * 1000:.0f}" for t in times))
        browser.close()
    print(f"slowest load {worst * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
