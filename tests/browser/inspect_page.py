#!/usr/bin/env python3
"""Drives the client's traffic inspector page in headless Chromium (Debian's, via Playwright),
as a person would, while traffic goes through the tunnel (tests/inspect_browser.rs runs it).

Input, one JSON object on stdin:
    {"inspector": "http://127.0.0.1:PORT", "public_url": "http://localhost:PORT/name/",
     "screenshot": "/path/to/shot.png", "websocket_screenshot": "/path/to/ws.png",
     "phone_screenshot": "/path/to/phone.png",
     "timeout_ms": 15000}
Steps (each recorded in the report's "steps" as it passes; the first failure stops the run):
    live       the page connected to its event stream
    appeared   a JSON POST sent through the tunnel shows up in the list, without a reload
    pretty     opening it shows the body pretty-printed (indented JSON)
    replayed   the Replay button reports the local service's answer, and a second entry
               for the same path appears
    keyboard   `k` moves the selection up to the replay
    websocket  a WebSocket session opened through the tunnel (from another tab) lists the
               messages sent and echoed, both ways, as they flow
    phone      at a phone's width, nothing overflows sideways
Output, one JSON object on stdout: {"steps": [names], "error": str|None, "screenshot",
"phone_screenshot", "console_errors": [...]}. Exit status 0 whenever a report was written.
"""

import json
import os
import sys
import tempfile
import time
import urllib.request

from check_page import CHROMIUM_ARGS

BODY = {"event": "push", "repository": {"name": "tunnel", "stars": 3}, "commits": [1, 2]}
WS_TEXT = "hello from the browser"


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        resp.read()


def wait_until(page, js, timeout_ms, arg=None):
    """Polls `js` (a function of `arg`) until it is true, or fails at the deadline. Not
    `wait_for_function`: that evaluates strings in the page, which its CSP forbids."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(js, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"never true: {js}")
        page.wait_for_timeout(50)


def scenario(page, context, spec, steps):
    timeout = int(spec.get("timeout_ms", 15000))
    inspector, public = spec["inspector"], spec["public_url"]
    # The page's first list load is read before the request below is made and held until
    # the request's live event has shown it: the list landing late must not drop it (a race
    # a slow machine hit by chance, made certain here).
    held = []

    def hold_first_list(route):
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))

    def first_list(url):
        return "/api/requests/http?limit=500" in url

    page.route(first_list, hold_first_list)
    page.goto(inspector + "/", wait_until="load", timeout=timeout)
    wait_until(page, "() => document.getElementById('live').textContent === 'live'", timeout)
    page.evaluate("window.__not_reloaded = true")
    deadline = time.monotonic() + timeout / 1000
    while not held:  # the handler runs while this thread is in a Playwright call
        assert time.monotonic() < deadline, "the page never asked for its list"
        page.wait_for_timeout(20)
    steps.append("live")

    post_json(public + "hook?delivery=1", BODY)
    row = page.locator("#list button", has_text="/hook?delivery=1")
    row.first.wait_for(timeout=timeout)
    route, stale = held[0]
    route.fulfill(response=stale)
    wait_until(page, "() => document.getElementById('list').dataset.loads === '1'", timeout)
    page.unroute(first_list, hold_first_list)
    assert row.count() == 1, "the list that landed late dropped the request"
    assert page.evaluate("window.__not_reloaded === true"), "the page reloaded"
    steps.append("appeared")

    row.first.click()
    pre = page.locator("#req-body pre.json")
    pre.wait_for(timeout=timeout)
    text = pre.text_content()
    assert '\n  "event": "push"' in text and '\n    "name": "tunnel"' in text, text
    steps.append("pretty")

    page.click("#replay")
    wait_until(page, "() => document.getElementById('notice').textContent.includes('answered 200')",
               timeout)
    wait_until(page, "() => [...document.querySelectorAll('#list .path')]"
               ".filter(e => e.textContent === '/hook?delivery=1').length === 2", timeout)
    steps.append("replayed")
    shot = spec.get("screenshot")
    if shot:
        os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
        page.screenshot(path=shot, full_page=False)

    selected = page.get_attribute("#list button[aria-selected=true]", "data-id")
    page.locator("#list button[aria-selected=true]").focus()
    page.keyboard.press("k")  # up: the opened entry is the older one, the replay is above it
    wait_until(page, "(before) => { const b = document.querySelector('#list button[aria-selected=true]');"
               " return !!b && b.dataset.id !== before; }", timeout, selected)
    steps.append("keyboard")

    # A WebSocket session from another tab, on the tunnel's own origin (as the app's page
    # would open it), through the tunnel to the echo service.
    ws_url = "ws" + public[len("http"):] + "ws"
    other = context.new_page()
    other.goto(public + "app", wait_until="load", timeout=timeout)
    other.evaluate(
        """([url, text]) => new Promise((done, fail) => {
            const ws = new WebSocket(url);
            let n = 0;
            ws.onmessage = () => { n += 1; if (n === 1) ws.send(text); if (n === 2) done(); };
            ws.onerror = () => fail(new Error('websocket failed'));
        })""",
        [ws_url, WS_TEXT])
    ws_row = page.locator("#list button", has=page.locator(".method", has_text="WS"))
    ws_row.first.wait_for(timeout=timeout)
    ws_row.first.click()
    wait_until(page, "(text) => [...document.querySelectorAll('#messages tr')]"
               ".filter(r => r.textContent.includes(text)).length >= 2", timeout, WS_TEXT)
    dirs = page.eval_on_selector_all("#messages td:first-child", "els => els.map(e => e.className)")
    assert "in" in dirs and "out" in dirs, dirs
    other.close()
    steps.append("websocket")
    ws_shot = spec.get("websocket_screenshot")
    if ws_shot:
        page.screenshot(path=ws_shot, full_page=False)

    page.set_viewport_size({"width": 390, "height": 844})
    page.click("#back")
    page.locator("#list").wait_for(timeout=timeout)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow}px wider than a phone"
    phone = spec.get("phone_screenshot")
    if phone:
        page.screenshot(path=phone, full_page=False)
    steps.append("phone")


def main():
    try:
        spec = json.load(sys.stdin)
        spec["inspector"], spec["public_url"]
    except (ValueError, KeyError) as e:
        print(f"bad input: {e}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    report = {"steps": [], "error": None, "console_errors": [],
              "screenshot": spec.get("screenshot"), "phone_screenshot": spec.get("phone_screenshot")}
    executable = os.environ.get("TUNNEL_CHROMIUM", "/usr/bin/chromium")
    with tempfile.TemporaryDirectory(prefix="tunnel-browser-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: m.type == "error" and report["console_errors"].append(m.text))
            page.on("pageerror", lambda e: report["console_errors"].append(str(e)))
            try:
                scenario(page, context, spec, report["steps"])
            except Exception as e:  # any failure is the report's, with the steps so far
                report["error"] = f"{type(e).__name__}: {e}"
                shot = spec.get("screenshot")
                if shot:
                    os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
                    page.screenshot(path=shot, full_page=True)
        finally:
            context.close()
    json.dump(report, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
