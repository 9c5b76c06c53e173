"""The web dashboard in headless Chromium: requests made through the proxy appear, filter, open,
and a header rule edited on the page takes effect on proxied traffic. Screenshots are saved in
test-artifacts/ (CCPROXY_TEST_ARTIFACTS)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.chat_answers import completion
from tests.support.proxies import ask, post, start_proxy, stop_proxy

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def proxy(mock_upstream, tmp_path):
    running = start_proxy(mock_upstream.base, tmp_path)
    yield running
    stop_proxy(running)


def test_dashboard_end_to_end(browser, artifacts, proxy, mock_upstream):
    key = mock_upstream.script({"json": completion("answer")})
    assert post(proxy, "/v1/messages", ask(key, model="claude-sonnet-5")).status_code == 200
    assert post(proxy, "/v1/messages", ask(key, model="claude-haiku-4-5")).status_code == 200
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{proxy.base}/dashboard")
    rows = page.locator("[data-testid=request-rows] tr")
    rows.nth(1).wait_for(timeout=10_000)
    assert rows.count() == 2
    page.locator("[data-card=requests] b").wait_for()
    page.screenshot(path=str(artifacts / "dashboard-requests.png"), full_page=True)

    # live: a request made now shows up without reloading (polling every 3 s)
    assert post(proxy, "/v1/messages", ask(key, model="claude-opus-4-8")).status_code == 200
    page.locator("[data-testid=request-rows] tr", has_text="claude-opus-4-8").wait_for(timeout=10_000)

    # filter
    page.fill("[data-testid=model-filter]", "haiku")
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('[data-testid=request-rows] tr');"
        " return r.length === 1 && r[0].textContent.includes('claude-haiku-4-5'); }",
        timeout=10_000,
    )

    # detail
    rows.first.click()
    detail = page.locator("[data-testid=detail]")
    detail.wait_for(state="visible")
    assert "claude-haiku-4-5" in detail.inner_text() and "gpt-small" in detail.inner_text()
    page.screenshot(path=str(artifacts / "dashboard-detail.png"), full_page=True)
    page.click("#detail-close")

    # usage charts
    page.click("button[data-tab=usage]")
    page.locator("[data-testid=chart-daily] svg rect").last.wait_for(timeout=10_000)  # today: the last day
    page.locator("[data-testid=chart-models] svg rect").first.wait_for(timeout=10_000)
    page.screenshot(path=str(artifacts / "dashboard-usage.png"), full_page=True)

    # settings: add a response header rule on the page, save, and see it on proxied traffic
    page.click("button[data-tab=settings]")
    page.click("[data-testid=add-response-rule]")
    rule = page.locator("[data-testid=rules-response] tr").last
    rule.locator("[data-field=header]").fill("x-from-dashboard")
    rule.locator("[data-field=action]").select_option("set")
    rule.locator("[data-field=value]").fill("yes")
    page.click("[data-testid=save-settings]")
    page.locator("[data-testid=settings-status]", has_text="saved").wait_for(timeout=10_000)
    page.screenshot(path=str(artifacts / "dashboard-settings.png"), full_page=True)
    resp = post(proxy, "/v1/messages", ask(key, model="claude-sonnet-5"))
    assert resp.status_code == 200 and resp.headers["x-from-dashboard"] == "yes"
    stored = httpx.get(f"{proxy.base}/api/settings").json()["responseHeaderRules"]
    assert stored == [{"header": "x-from-dashboard", "action": "set", "value": "yes", "find": "", "enabled": True}]
    assert not errors, errors
    page.close()
