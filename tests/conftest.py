import json
from pathlib import Path

import pytest

# Sanitized requests recorded from Claude Code (copied from the project's shared fixtures, see
# tests/fixtures/claude-code/README.md), so a clone is self-contained.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude-code"
CLAUDE_CODE_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict:
    """The body Claude Code posted in one recorded request."""
    return json.loads((FIXTURES / f"{name}.json").read_text())["body"]


@pytest.fixture
def claude_code_fixture():
    return load_fixture


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on loopback (tests/support/servers.py), one per session."""
    from tests.support.servers import PostgresServer

    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server():
    """A real Redis server on loopback, one per test (tests may kill it)."""
    from tests.support.servers import RedisServer

    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
