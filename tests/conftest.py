import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "claude-code"
if not FIXTURES.is_dir():  # a checkout placed elsewhere: look beside the repository
    FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "claude-code"


def load_fixture(name: str) -> dict:
    """The body Claude Code posted in one recorded request (../shared/fixtures/claude-code)."""
    path = FIXTURES / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"Claude Code fixture missing: {path}")
    return json.loads(path.read_text())["body"]


@pytest.fixture
def claude_code_fixture():
    return load_fixture
