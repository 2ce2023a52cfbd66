"""The web console in headless chromium against real cronfleet processes: a job defined
through the form (refused first, with the API's message at the field), listed, run now
with its output appearing live, paused and resumed; an auto-paused job in the attention
banner and on the Alerts page, acknowledged there; sign-in with a token; pages that read without JavaScript and by keyboard."""

import json
import re
import urllib.request

from playwright.sync_api import expect

from conftest import TOKEN, screenshot


def api(base: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}/api/v1{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read() or b"{}")


def test_a_job_is_defined_run_paused_and_resumed_in_the_browser(page, console):
    page.goto(f"{console}/jobs/new")
    page.fill("#name", "browser-report")
    page.fill("#handler", "shell")
    page.check("input[name=kind][value=cron]")
    expect(page.locator("#every")).to_be_hidden()
    page.fill("#cron", "61 * * * *")
    page.fill("#tz", "Europe/Berlin")
    page.fill("#args", '{"script": "echo hello from the browser; sleep 2; echo done"}')
    # The live preview already says what is wrong with the schedule.
    expect(page.locator("#preview .field-error")).to_contain_text("invalid cron expression")
    page.click("button:has-text('Create job')")

    error = page.locator("#cron-error")
    expect(error).to_contain_text('cron: invalid cron expression "61 * * * *"')
    expect(page.locator("#cron")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".error-summary")).to_contain_text("Nothing was saved")
    screenshot(page, "job-form-error")
    # The API refuses the same input with the same words.
    try:
        api(console, "POST", "/jobs", {"name": "browser-report", "handler": "shell", "cron": "61 * * * *", "tz": "Europe/Berlin"})
        raise AssertionError("the API accepted a bad cron")
    except urllib.error.HTTPError as refused:
        message = json.loads(refused.read())["error"]["message"]
    expect(error).to_have_text(message)

    page.fill("#cron", "*/30 * * * *")
    expect(page.locator("#preview li")).to_have_count(10)
    expect(page.locator("#preview")).to_contain_text("+01:00")
    page.click("button:has-text('Create job')")
    expect(page).to_have_url(re.compile(r"/jobs/browser-report$"))
    expect(page.locator("h1")).to_contain_text("browser-report")

    page.goto(f"{console}/jobs?q=browser")
    expect(page.locator("table.list a[href='/jobs/browser-report']")).to_be_visible()

    page.goto(f"{console}/jobs/browser-report")
    page.click("button:has-text('Run now')")
    expect(page).to_have_url(re.compile(r"/runs/\d+$"))
    # The output streams in while the run runs, and the page shows the end once it ends.
    expect(page.locator("#output")).to_contain_text("hello from the browser", timeout=20_000)
    expect(page.locator("#run-state")).to_have_text("succeeded", timeout=20_000)
    expect(page.locator("#output")).to_contain_text("done")
    expect(page.locator("dl.fields")).to_contain_text("manual")
    screenshot(page, "run")

    page.goto(f"{console}/jobs/browser-report")
    page.fill("#pause-note", "maintenance window")
    page.click("button:has-text('Pause')")
    expect(page.locator("h1 .badge")).to_have_text("paused")
    expect(page.locator(".note-box")).to_have_text("maintenance window")
    page.click("button:has-text('Resume')")
    expect(page.locator("h1 .badge")).to_have_text("active")


def test_an_auto_paused_job_is_in_the_attention_banner(page, console):
    api(console, "POST", "/jobs", {"name": "always-fails", "handler": "shell", "every": "1s", "args": {"script": "echo broken >&2; exit 3"}})
    for name, every in [("nightly-backup", "1d"), ("stock-forecast", "6h"), ("payment-reminders", "1h")]:
        api(console, "POST", "/jobs", {"name": name, "handler": "shell", "every": every, "start": "2030-01-01T00:00:00Z", "args": {"script": "echo ok"}})
    page.goto(f"{console}/jobs")
    banner = page.locator(".attention")
    for _ in range(60):
        if "paused automatically" in (banner.text_content() if banner.count() else ""):
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(banner).to_contain_text("1 job was paused automatically")
    screenshot(page, "jobs")
    page.click(".attention a:has-text('paused automatically')")
    expect(page).to_have_url(re.compile(r"status=auto_paused"))
    row = page.locator("tr", has=page.locator("a[href='/jobs/always-fails']"))
    expect(row.locator(".badge").first).to_have_text("auto-paused")
    expect(row).to_contain_text(re.compile(r"paused automatically: \d+ consecutive failures"))

    # The same alerts on the Alerts page: acknowledged there, they leave the banner.
    page.click("nav a:has-text('Alerts')")
    paused = page.locator("tr", has=page.locator("td:text-is('auto_paused')"))
    expect(paused).to_contain_text("job always-fails paused automatically: ")
    expect(paused.locator(".badge")).to_have_text("firing")
    failed = page.locator("tr", has=page.locator("td:text-is('failed')"))
    expect(failed).to_contain_text("of job always-fails ended failed: exit status 3")
    screenshot(page, "alerts")
    paused.locator("input[name=by]").fill("dana")
    paused.locator("button:has-text('Acknowledge')").click()
    expect(page).to_have_url(re.compile(r"/alerts$"))
    expect(paused).to_contain_text("by dana")
    expect(page.locator(".attention")).not_to_contain_text("paused automatically")
    expect(page.locator(".attention")).to_contain_text("1 job is failing")


def test_signing_in_with_a_token(page, guarded_console):
    page.goto(f"{guarded_console}/jobs?status=active")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    screenshot(page, "login")
    page.fill("#token", "not-the-token")
    page.click("button:has-text('Sign in')")
    expect(page.locator("#token-error")).to_contain_text("not one of this coordinator's API tokens")
    page.fill("#token", TOKEN)
    page.click("button:has-text('Sign in')")
    expect(page).to_have_url(re.compile(r"/jobs\?status=active$"))
    expect(page.locator("h1")).to_have_text("Jobs")
    page.click("button:has-text('Sign out')")
    expect(page).to_have_url(re.compile(r"/login"))


def test_pages_read_without_javascript_and_by_keyboard(browser, console):
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{console}/cluster")
    expect(page.locator("table.list").last).to_contain_text("w1")
    expect(page.locator("table.list").last).to_contain_text("noop, shell")
    screenshot(page, "cluster")
    page.goto(f"{console}/jobs/new")
    # Without the script every schedule field is shown.
    expect(page.locator("#every")).to_be_visible()
    expect(page.locator("#cron")).to_be_visible()
    context.close()

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{console}/jobs")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert "New job" in reached, reached
    context.close()


def test_the_dark_theme_follows_the_system(browser, console):
    context = browser.new_context(color_scheme="dark", viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{console}/jobs")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(20, 23, 28)", background
    screenshot(page, "jobs-dark")
    context.close()


def test_a_worker_is_drained_and_resumed(page, console):
    page.goto(f"{console}/cluster")
    row = page.locator("tr", has=page.locator("td", has_text="w1"))
    row.locator("button:has-text('Drain')").click()
    expect(page).to_have_url(re.compile(r"/cluster$"))
    expect(row.locator(".badge")).to_have_text("draining")
    row.locator("button:has-text('Resume')").click()
    expect(row.locator(".badge")).to_have_text("connected")
