#!/usr/bin/env python3
"""Loads one page in headless Chromium (Debian's, driven by Playwright) and reports what happened.

The browser harness of the end-to-end tests (tests/support/browser.rs runs it): it never
downloads a browser (`playwright install` is not needed), starts Chromium with a fresh profile
and without any background networking, and talks only to the URL it is given.

Input: one JSON object on stdin:
    {"url": "http://myapp.localhost:8989/",
     "expect": [{"selector": "#data", "text": "data: ok"}, ...],   # wait until each holds
     "screenshot": "/path/to/shot.png",                            # optional
     "timeout_ms": 15000}
Output: one JSON object on stdout:
    {"url", "loaded": bool, "texts": {selector: text}, "missing": [selectors never matched],
     "requests": [url...], "failed_requests": [{"url", "error"}],
     "bad_responses": [{"url", "status"}], "console_errors": [...], "page_errors": [...],
     "websockets": [{"url", "received": [...], "closed": bool, "error": str|None}],
     "screenshot": path|None, "error": str|None}
Exit status 0 whenever a report was written (the caller judges it), 2 on bad input.

Environment: TUNNEL_CHROMIUM overrides the browser (default /usr/bin/chromium).
"""

import json
import os
import sys
import tempfile
import time

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main():
    try:
        spec = json.load(sys.stdin)
        url = spec["url"]
    except (ValueError, KeyError) as e:
        print(f"bad input: {e}", file=sys.stderr)
        return 2
    expect = spec.get("expect", [])
    timeout_ms = int(spec.get("timeout_ms", 15000))
    shot = spec.get("screenshot")
    report = {
        "url": url, "loaded": False, "texts": {}, "missing": [], "requests": [],
        "failed_requests": [], "bad_responses": [], "console_errors": [], "page_errors": [],
        "websockets": [], "screenshot": None, "error": None,
    }
    from playwright.sync_api import sync_playwright, Error as PlaywrightError

    executable = os.environ.get("TUNNEL_CHROMIUM", "/usr/bin/chromium")
    with tempfile.TemporaryDirectory(prefix="tunnel-browser-") as profile, sync_playwright() as p:
        # A persistent context is how Playwright takes a user data directory of our own (it
        # refuses --user-data-dir in args): a fresh, empty one each run.
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            ignore_https_errors=False,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            watch(page, report)
            try:
                page.goto(url, wait_until="load", timeout=timeout_ms)
                report["loaded"] = True
            except PlaywrightError as e:
                report["error"] = f"navigation: {e}"
            deadline = time.monotonic() + timeout_ms / 1000
            for want in expect:
                sel, text = want["selector"], want.get("text", "")
                left = max(0, int((deadline - time.monotonic()) * 1000))
                try:
                    page.wait_for_function(
                        "([s, t]) => { const e = document.querySelector(s);"
                        " return !!e && e.textContent.includes(t); }",
                        arg=[sel, text], timeout=max(left, 1),
                    )
                except PlaywrightError:
                    report["missing"].append(sel)
                el = page.query_selector(sel)
                report["texts"][sel] = el.text_content() if el else None
            # Let in-flight requests settle so that late failures are reported too.
            try:
                page.wait_for_load_state("networkidle", timeout=3000)
            except PlaywrightError:
                pass
            if shot:
                os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
                page.screenshot(path=shot, full_page=True)
                report["screenshot"] = shot
        finally:
            context.close()
    json.dump(report, sys.stdout)
    print()
    return 0


def watch(page, report):
    page.on("request", lambda r: report["requests"].append(r.url))
    page.on("requestfailed", lambda r: report["failed_requests"].append(
        {"url": r.url, "error": r.failure}))
    page.on("response", lambda r: r.status >= 400 and report["bad_responses"].append(
        {"url": r.url, "status": r.status}))
    page.on("console", lambda m: m.type == "error" and report["console_errors"].append(m.text))
    page.on("pageerror", lambda e: report["page_errors"].append(str(e)))

    def on_ws(ws):
        entry = {"url": ws.url, "received": [], "closed": False, "error": None}
        report["websockets"].append(entry)
        ws.on("framereceived", lambda payload: entry["received"].append(
            payload if isinstance(payload, str) else f"<{len(payload)} bytes>"))
        ws.on("close", lambda _ws: entry.__setitem__("closed", True))
        ws.on("socketerror", lambda err: entry.__setitem__("error", str(err)))

    page.on("websocket", on_ws)


if __name__ == "__main__":
    sys.exit(main())
