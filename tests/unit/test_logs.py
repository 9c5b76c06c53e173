"""The JSON-lines writers behind the request and error logs: bounded on disk, secrets redacted."""

from __future__ import annotations

import json
import time

from ccproxy.logs import BACKUPS, JsonLinesWriter
from tests.support.apps import make_app


def test_files_rotate_and_stay_bounded(tmp_path):
    path = tmp_path / "error.jsonl"
    writer = JsonLinesWriter(path, max_bytes=2048)
    for i in range(2000):
        writer.write({"n": i, "message": "x" * 40})
        if i % 100 == 0:
            time.sleep(0.12)  # let the writer thread flush in several batches
    writer.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["error.jsonl", *(f"error.jsonl.{i}" for i in range(1, BACKUPS + 1))]
    # each file holds whole lines; the newest record is in the live file
    for f in files:
        for line in f.read_text().splitlines():
            json.loads(line)
    assert json.loads(path.read_text().splitlines()[-1])["n"] == 1999
    assert sum(f.stat().st_size for f in files) < (BACKUPS + 1) * (2048 + 8 * 1024)


def test_error_log_redacts_keys(tmp_path):
    recorder = make_app(api_key="sk-configured-upstream-key-123").recorder
    recorder.error_log = JsonLinesWriter(tmp_path / "error.jsonl", 10**6)
    recorder.error(
        "req_1",
        "/v1/messages",
        "authentication_error",
        "upstream said: bad key sk-configured-upstream-key-123; Authorization: Bearer abcdefghijklmnop; "
        "x-api-key=sk-ant-api03-secretsecret",
    )
    recorder.error_log.close()
    text = (tmp_path / "error.jsonl").read_text()
    record = json.loads(text)
    assert record["error_type"] == "authentication_error" and record["request_id"] == "req_1"
    for secret in ("sk-configured-upstream-key-123", "abcdefghijklmnop", "sk-ant-api03-secretsecret"):
        assert secret not in text
    assert "[REDACTED]" in record["message"]
