"""Headless Chromium (Debian's package) driven by playwright, for the dashboard page test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM_ARGS, chromium_path

ARTIFACTS = Path(os.environ.get("CCPROXY_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


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
