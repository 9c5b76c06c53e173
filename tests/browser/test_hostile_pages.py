"""A hostile web page in a real browser (Chromium) against a proxy on 127.0.0.1 (issue 16, items
1, 3, 4): it cannot spend the user's key with simple cross-site requests, cannot read the request
log through DNS rebinding, and the dashboard still works under its Content-Security-Policy.

Rebinding is reproduced with Chromium's own resolver rules: ``evil.test`` resolves to 127.0.0.1,
exactly what an attacker's DNS answers after the switch."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.support.browser import CHROMIUM_ARGS, chromium_path
from tests.support.chat_answers import completion
from tests.support.proxies import start_proxy, stop_proxy
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ATTACK_PAGE = """<!doctype html><html><body><script>
const target = "http://127.0.0.1:%(port)d";
const body = JSON.stringify({model: "claude-sonnet-5", max_tokens: 5,
                             messages: [{role: "user", content: "%(key)s"}]});
window.results = {};
async function attempt(name, url, options) {
  try { const r = await fetch(url, options); window.results[name] = "status " + r.status + " " + r.type; }
  catch (e) { window.results[name] = "failed: " + e; }
}
(async () => {
  await attempt("no-cors text/plain", target + "/v1/messages",
                {method: "POST", mode: "no-cors", body, headers: {"content-type": "text/plain"}});
  await attempt("no-cors untyped blob", target + "/v1/messages",
                {method: "POST", mode: "no-cors", body: new Blob([body])});
  await attempt("cors json", target + "/v1/messages",
                {method: "POST", body, headers: {"content-type": "application/json"}});
  await attempt("read the log", target + "/api/requests", {});
  await attempt("clear the cache", target + "/v1/cache/clear", {method: "POST", mode: "no-cors"});
  const form = document.createElement("form");
  form.method = "POST"; form.action = target + "/v1/messages"; form.enctype = "text/plain";
  form.target = "sink";
  const field = document.createElement("input");
  field.name = body.slice(0, -2); field.value = body.slice(-2);
  form.append(field);
  const sink = document.createElement("iframe"); sink.name = "sink"; document.body.append(sink);
  document.body.append(form); form.submit();
  window.done = true;
})();
</script></body></html>"""


class _Page(http.server.BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rebinding_browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(
            executable_path=chromium_path(),
            args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.test 127.0.0.1"],
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def proxy(mock_upstream, tmp_path):
    running = start_proxy(mock_upstream.base, tmp_path, CCPROXY_CACHE="on")
    yield running
    stop_proxy(running)


def test_a_cross_site_page_cannot_spend_the_key(rebinding_browser, proxy, mock_upstream):
    key = mock_upstream.script({"json": completion("spent")})
    port = free_port()
    handler = type("Page", (_Page,), {"html": (ATTACK_PAGE % {"port": proxy.port, "key": key}).encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = rebinding_browser.new_page()
        page.goto(f"http://evil.test:{port}/")
        page.wait_for_function("() => window.done === true", timeout=15_000)
        page.wait_for_timeout(1000)  # the form's navigation lands in its frame
        results = page.evaluate("() => window.results")
        page.close()
    finally:
        server.shutdown()
    assert mock_upstream.requests(key) == [], results  # nothing reached the upstream
    assert results["read the log"].startswith("failed"), results  # and nothing was readable


def test_dns_rebinding_reads_nothing(rebinding_browser, proxy, mock_upstream):
    key = mock_upstream.script({"json": completion("logged")})
    page = rebinding_browser.new_page()
    for path in ("/api/requests", "/api/requests/summary", "/dashboard", "/api/conversations", "/v1/models"):
        response = page.goto(f"http://evil.test:{proxy.port}{path}")
        assert response is not None and response.status == 403, path
        assert "permission_error" in page.content()
    page.close()
    assert mock_upstream.requests(key) == []


def test_the_dashboard_works_under_its_content_security_policy(rebinding_browser, proxy, mock_upstream):
    import httpx

    key = mock_upstream.script({"json": completion("shown")})
    httpx.post(
        f"{proxy.base}/v1/messages",
        json={"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": key}]},
        timeout=30,
    ).raise_for_status()
    page = rebinding_browser.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda msg: (
            problems.append(f"{msg.text} {msg.location.get('url')}")
            if msg.type == "error" and not str(msg.location.get("url", "")).endswith("/favicon.ico")
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    response = page.goto(f"{proxy.base}/dashboard")
    assert response is not None and "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page.locator("[data-testid=request-rows] tr").first.wait_for(timeout=10_000)
    page.locator("[data-card=requests] b").wait_for(timeout=10_000)
    page.click("button[data-tab=usage]")
    page.locator("[data-testid=chart-daily] svg rect").last.wait_for(timeout=10_000)
    page.close()
    assert not problems, problems
