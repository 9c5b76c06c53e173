"""Sanitized requests recorded from Claude Code (copied from the project's shared fixtures, see
tests/fixtures/claude-code/README.md), so a clone is self-contained."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude-code"
CLAUDE_CODE_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict:
    """The body Claude Code posted in one recorded request."""
    return json.loads((FIXTURES / f"{name}.json").read_text())["body"]
