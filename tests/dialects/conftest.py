from tests.integration.conftest import mock_upstream  # noqa: F401  (the replay upstream fixture)
