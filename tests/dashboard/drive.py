"""Drive the ivm dashboard in headless Chromium (Playwright, system browser).

Loads the page, pastes the token, waits for message --message in the list,
plays it, keeps a screenshot, deletes it. Prints one JSON line of findings
(the Rust test asserts on them). Never downloads a browser.
Also used by the bench (--first-paint-only) to read the first paint time.
"""
import argparse
import json

from playwright.sync_api import sync_playwright

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--token", required=True)
parser.add_argument("--message", type=int)
parser.add_argument("--chromium", default="/usr/bin/chromium")
parser.add_argument("--screenshot")
parser.add_argument("--first-paint-only", action="store_true")
args = parser.parse_args()

report = {"console_errors": []}
with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=args.chromium,
        args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
    )
    page = browser.new_page()
    page.on("console", lambda m: m.type == "error" and report["console_errors"].append(m.text))
    page.on("pageerror", lambda e: report["console_errors"].append(str(e)))
    page.on("dialog", lambda d: d.accept())
    page.goto(args.url + "/", wait_until="load")
    report["first_paint_ms"] = page.evaluate(
        "(performance.getEntriesByName('first-contentful-paint')[0]"
        " || performance.getEntriesByName('first-paint')[0] || {startTime: -1}).startTime"
    )
    if args.first_paint_only:
        browser.close()
        print(json.dumps(report))
        raise SystemExit(0)
    page.fill("#token", args.token)
    page.click("#login button[type=submit]")
    row = page.locator(f'#messages tr[data-id="{args.message}"]')
    row.wait_for(timeout=15000)
    report["listed"] = True
    row.locator("button.play").click()
    page.wait_for_function(
        "() => { const a = document.querySelector('#player');"
        " return a.readyState >= 2 && a.buffered.length > 0; }",
        timeout=15000,
    )
    report["ready_state"] = page.evaluate("document.querySelector('#player').readyState")
    report["buffered"] = page.evaluate("document.querySelector('#player').buffered.length")
    # The waveform is drawn (some pixel painted) before the picture.
    page.wait_for_function(
        f"""() => {{ const c = document.querySelector('#messages tr[data-id="{args.message}"] canvas');
           if (!c) return false;
           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
           for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true;
           return false; }}""",
        timeout=15000,
    )
    report["waveform_drawn"] = True
    if args.screenshot:
        page.screenshot(path=args.screenshot, full_page=True)
    row.locator("button.delete").click()
    page.locator(f'#messages tr[data-id="{args.message}"]').wait_for(state="detached", timeout=15000)
    report["gone_from_list"] = True
    browser.close()
print(json.dumps(report))
