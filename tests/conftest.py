from collections.abc import Iterator

import anthropic
import pytest

from tests.support.fixtures import load_fixture
from tests.support.proxies import MockUpstream, Proxy, start_mock, start_proxy, stop_proxy


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


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockUpstream]:
    """The scripted mock upstream (tests/support/mock_upstream.py), one process per session."""
    mock = start_mock()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture(scope="session")
def proxy(mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """ccproxy under Granian in front of the mock, one per session (tests that change settings
    start their own with start_proxy)."""
    running = start_proxy(mock_upstream.base, tmp_path_factory.mktemp("ccproxy-data"), CCPROXY_PING_INTERVAL="0.3")
    try:
        yield running
    finally:
        stop_proxy(running)


@pytest.fixture
def client(proxy: Proxy) -> anthropic.Anthropic:
    return proxy.client()
