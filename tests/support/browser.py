"""Debian's Chromium for the browser tests, and the switches it needs on a closed network."""

from __future__ import annotations

import os
import shutil

import pytest

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
