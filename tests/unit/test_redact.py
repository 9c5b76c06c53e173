"""Redaction of secret-shaped text (issue 16, item 13). The examples are the documented sample
formats of each provider (AWS's AKIAIOSFODNN7EXAMPLE, GitHub's and Slack's token layouts), not
real credentials."""

from __future__ import annotations

import json

import pytest

from ccproxy.redact import Redactor, find_secrets, mask
from tests.support.fixtures import FIXTURES

SECRETS = [
    ("aws access key id", "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws secret", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    ("github classic", "remote: ghp_16C7e42F292c6912E7710c838347Ae178B4a ok", "ghp_16C7e42F"),
    ("github oauth", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7"),
    ("github fine-grained", "token github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzAB", "github_pat_11"),
    ("gitlab", "glpat-xxxxxxxxxxxxxxxxxxxx1234", "glpat-xxxx"),
    ("slack bot", "SLACK=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-1234"),
    ("slack app", "xapp-1-A0123456789-1234567890123-abcdef0123456789", "xapp-1-A0123"),
    ("openai", "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx", "sk-proj-abcdefgh"),
    ("anthropic", "x-api-key: sk-ant-api03-abcdefghijklmnop", "sk-ant-api03"),
    ("stripe", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("hugging face", "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "hf_abcdefgh"),
    ("google", "key=AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "eyJhbGci"),
    ("password pair", "login with password=hunter2024 now", "hunter2024"),
    ("passwd in yaml", "db:\n  passwd: 'correct-horse'\n", "correct-horse"),
    ("env password", "DB_PASSWORD=s3cr3tvalue", "s3cr3tvalue"),
    ("json password", '{"password": "s3cr3t!x"}', "s3cr3t!x"),
    ("escaped json", '{\\"api_key\\": \\"abcdef123456\\"}', "abcdef123456"),
    ("client secret", "client_secret=0a1b2c3d4e5f", "0a1b2c3d4e5f"),
    ("token pair", "GITHUB_TOKEN=abcdefgh12", "abcdefgh12"),
    ("basic header", "Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("bearer header", "authorization: bearer abc.def-ghi123", "abc.def-ghi123"),
    ("url credentials", "postgres://alice:pa55word@db.example.com/app", "pa55word"),
    ("private key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "MIIEow"),
]


@pytest.mark.parametrize(("name", "text", "secret"), SECRETS, ids=[s[0] for s in SECRETS])
def test_secret_shapes_are_masked(name, text, secret):
    out = Redactor()(text)
    assert secret not in out and "[REDACTED]" in out


def test_keys_of_pairs_and_the_rest_of_the_text_stay():
    assert mask("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG") == "aws_secret_access_key = [REDACTED]"
    assert mask('{"password": "s3cr3t!x", "user": "bob"}') == '{"password": "[REDACTED]", "user": "bob"}'
    assert mask("https://alice:pa55word@db.example.com/x") == "https://[REDACTED]@db.example.com/x"


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=100000",
        "the token is in the file",
        "bearer of bad news and basic configuration",
        "ask-for-help-now-please and task-runner-xyz",
        "a password: none",
        "monkey=bananas",
        "https://example.com/path?q=1",
        "AKIAIOSFODNN7EXAMPLEXYZ",  # too long for an AWS key id
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert mask(text) == text


def test_configured_secrets_go_first_whatever_their_shape():
    redact = Redactor(["plain-looking-secret"])
    assert redact("value plain-looking-secret here") == "value [REDACTED] here"


def test_real_claude_code_requests_are_not_mangled():
    """Stored bodies (CCPROXY_LOG_BODIES) are Claude Code's requests: 24 tool schemas, long
    system prompts. Nothing in the recorded ones is a secret, so nothing may be masked."""
    for path in sorted(FIXTURES.glob("*.json")):
        body = json.dumps(json.loads(path.read_text())["body"])
        assert find_secrets(body) == [], path.name
