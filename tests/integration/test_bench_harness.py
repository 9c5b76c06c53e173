"""The load benchmark's parts return what they should (the timing runs are not part of CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from benchmarks import run_load

from ccproxy._native import SSEDecoder
from tests.support.proxies import ROOT, free_port, start_proxy, stop_proxy
from tests.support.sse import assemble, parse_sse

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench_mock():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "benchmarks/mock_openai.py", "--port", str(port), "--chunks", "25", "--big-chunks", "50"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        wait_http_post(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def wait_http_post(url: str, proc: subprocess.Popen) -> None:
    for _ in range(200):
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read() if proc.stdout else "mock exited") from None
            time.sleep(0.05)
    raise TimeoutError(url)


def chunks_of(raw: bytes) -> list[bytes]:
    return [data for _, data in SSEDecoder().feed(raw)]


def test_mock_answers_json_and_n_chunk_streams(bench_mock):
    plain = httpx.post(bench_mock, content=b'{"model":"m"}').json()
    assert plain["object"] == "chat.completion" and plain["choices"][0]["finish_reason"] == "stop"
    raw = httpx.post(bench_mock, content=b'{"model":"m","stream":true}').content
    data = chunks_of(raw)
    assert data[-1] == b"[DONE]"
    parsed = [json.loads(d) for d in data[:-1]]
    assert sum(1 for c in parsed if c["choices"] and c["choices"][0]["delta"].get("content")) == 25
    assert parsed[-1]["usage"]["completion_tokens"] == 25
    big = chunks_of(httpx.post(bench_mock, content=b'{"stream":true,"x":"SLOW-READER-STREAM"}').content)
    assert len(big) == 50 + 4 and len(big[10]) > 1000


@pytest.mark.parametrize("interface", ["rsgi", "asgi", "uvicorn"])
def test_floor_relays_bytes_unchanged(bench_mock, interface):
    port = free_port()
    proc = subprocess.Popen(
        run_load.floor_cmd(port, interface),  # the command the benchmark runs
        cwd=ROOT,
        env={**os.environ, "FLOOR_UPSTREAM": bench_mock},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_http_post(f"http://127.0.0.1:{port}/v1/messages", proc)
        for body in (b'{"model":"m"}', b'{"model":"m","stream":true}'):
            direct = httpx.post(bench_mock, content=body)
            relayed = httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=body)
            assert relayed.status_code == 200
            assert relayed.headers["content-type"] == direct.headers["content-type"]
            assert relayed.content == direct.content
    finally:
        proc.terminate()
        proc.wait(10)


def test_proxy_translates_the_bench_stream(bench_mock, tmp_path):
    proxy = start_proxy(bench_mock.rsplit("/chat/completions", 1)[0], tmp_path)
    try:
        bodies = run_load.bodies()
        json_type = {"content-type": "application/json"}  # (as wrk sends them, run_load.py)
        events = parse_sse(
            httpx.post(f"{proxy.base}/v1/messages", content=bodies["small-stream"], headers=json_type).content
        )
        message = assemble(events)
        assert message["content"][0]["text"] == "tok " * 25 and message["stop_reason"] == "end_turn"
        large = httpx.post(f"{proxy.base}/v1/messages", content=bodies["large"], headers=json_type, timeout=30).json()
        assert large["type"] == "message" and large["content"][0]["type"] == "text"
    finally:
        stop_proxy(proxy)


def test_bodies_have_the_documented_sizes():
    bodies = run_load.bodies()
    assert 800 <= len(bodies["small"]) <= 1500  # ~1 KB
    assert 90_000 <= len(bodies["large"]) <= 130_000  # a Claude Code request, ~100 KB
    assert json.loads(bodies["large-stream"])["stream"] is True


def test_wrk_duration_parsing():
    assert run_load._seconds("850.00us") == pytest.approx(0.00085)
    assert run_load._seconds("1.25ms") == pytest.approx(0.00125)
    assert run_load._seconds("2.00s") == 2.0


def test_ab_report_prints_throughput_and_added_latency(capsys):
    def run(rps: float) -> dict:
        return {"p50_ms": 1.0, "p99_ms": 2.0, "rps": rps, "non_2xx": 0}

    report = {
        "config": {"reps": 1, "variants": {"app": {}, "floor": {}}},
        "ab": {"large": {"app": run(800.0), "floor": run(1000.0), "ratio": 0.8, "ratios": {"app": 0.8}}},
        "added": {"large": {"direct_p50_ms": 0.2, "added_p50_ms": {"app": 0.6, "floor": 0.4}, "ratios": {"app": 1.5}}},
    }
    run_load.print_ab(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["large", "800", "1000", "0.80x"]
    assert lines[3].split() == ["large", "600", "400", "1.50x"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the load benchmark's layout needs two cores")
def test_spinners_run_at_idle_priority_on_both_cores_and_stop():
    with run_load.spinning(True) as procs:
        assert len(procs) == 2
        deadline = time.monotonic() + 10
        while any(os.sched_getscheduler(p.pid) != os.SCHED_IDLE for p in procs):
            assert time.monotonic() < deadline, "the busy loops never lowered their priority"
            time.sleep(0.05)
        assert sorted(os.sched_getaffinity(p.pid) for p in procs) == [{0}, {1}]
    assert all(p.poll() is not None for p in procs)
    with run_load.spinning(False) as none:
        assert none == []
