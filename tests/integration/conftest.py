"""The integration tests' real processes come from tests/support/proxies.py; the fixtures over
them (mock_upstream, proxy, client) are in tests/conftest.py, shared with the other suites."""
