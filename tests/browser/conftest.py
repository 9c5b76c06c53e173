"""Headless Chromium (Debian's package) driven by playwright, for the dashboard page test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import mock_upstream  # noqa: F401  (the scripted upstream fixture)

ARTIFACTS = Path(os.environ.get("CCPROXY_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
# Without these, Chromium keeps trying to reach Google's services and the closed network refuses.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is not installed (Debian package 'chromium'; scripts/test installs it)", pytrace=False)
    return found


# Module scope: playwright's sync API keeps an event loop running in this thread while it is
# open, which would break asyncio.run() in the tests collected after these.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
