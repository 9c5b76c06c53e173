"""The load benchmark (BENCHMARKS.md): CCProxy against a bare pass-through hop, in one run.

    python benchmarks/run_load.py                 # full run, ~4 minutes; table + JSON
    python benchmarks/run_load.py --clients all   # upstream HTTP client comparison (docs/benchmarks.md)
    python benchmarks/run_load.py --quick         # short smoke run
    python benchmarks/run_load.py --backends      # Redis / PostgreSQL vs the embedded state
    python benchmarks/run_load.py --baseline DIR  # this code vs another checkout's, same run
    python benchmarks/run_load.py --servers       # the proxy app on Granian ASGI / RSGI and uvicorn
    python benchmarks/run_load.py --spin ...      # keep both cores awake (steadier c=1 figures)

Layout: the proxy (and the floor) pinned to core 0 with one worker; the mock upstream, wrk and
this script on core 1. Every figure is compared with references measured in the same run:
``direct`` (wrk → mock) and the floors (wrk → benchmarks/floor.py → mock, on Granian RSGI and
ASGI and on uvicorn). Medians of --reps repetitions. Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "claude-code" / "sonnet-thinking-write-turn2.json"
PROXY_CORE, LOAD_CORE = "0", "1"
SLOW_MARK = "SLOW-READER-STREAM"


SPIN = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True:\n    pass\n"


@contextlib.contextmanager
def spinning(enabled: bool):
    """With ``enabled``: a busy loop at SCHED_IDLE priority on each core, so that neither core
    halts between the hops of a c=1 request. On a VM, waking a halted vCPU costs 0.1 to 1 ms at
    random, which swamped the c=1 figures; the loops only get a core no one else wants."""
    procs = []
    try:
        if enabled:
            for core in (PROXY_CORE, LOAD_CORE):
                proc = subprocess.Popen([sys.executable, "-c", SPIN])
                os.sched_setaffinity(proc.pid, {int(core)})
                procs.append(proc)
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def bodies() -> dict[str, bytes]:
    """Anthropic request bodies: ~1 KB, and a ~100 KB Claude Code request (tools, history)."""
    small = {
        "model": "claude-sonnet-5",
        "max_tokens": 1024,
        "system": "You are a helpful assistant.",
        "messages": [{"role": "user", "content": "Summarize the following text. " + "lorem ipsum dolor " * 50}],
    }
    large = json.loads(FIXTURE.read_text())["body"]
    out = {}
    for name, body in (("small", small), ("large", large)):
        out[name] = compact({**body, "stream": False})
        out[f"{name}-stream"] = compact({**body, "stream": True})
    out["slow"] = compact({**small, "stream": True, "messages": [{"role": "user", "content": SLOW_MARK}]})
    return out


@dataclass
class Service:
    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    extra: dict = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The process and all its descendants (Granian's workers)."""
        found = [self.proc.pid]
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parts = stat.read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(parts[1]), []).append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                continue
        i = 0
        while i < len(found):
            found += children.get(found[i], [])
            i += 1
        return found

    def rss_kb(self, field_name: str = "VmRSS") -> int:
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
            total += int(m.group(1)) if m else 0
        return total

    def reset_peak(self) -> None:
        """Restart VmHWM from the current RSS (Linux: clear_refs 5)."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not ready")


def start(name: str, cmd: list[str], port: int, core: str, env: dict | None = None, path: str = "") -> Service:
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    proc = subprocess.Popen(
        ["taskset", "-c", core, *cmd],
        env={**os.environ, **(env or {})},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    wait_port(port, proc, log)
    return Service(name, f"http://127.0.0.1:{port}{path}", proc, log)


def start_mock(chunks: int) -> Service:
    port = free_port()
    cmd = [sys.executable, "benchmarks/mock_openai.py", "--port", str(port), "--chunks", str(chunks)]
    return start("mock", cmd, port, LOAD_CORE, path="/v1/chat/completions")


def uvicorn_cmd(port: int, target: str) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", "--workers", "1", "--loop", "uvloop", "--http", "httptools"]
    return [*cmd, "--port", str(port), "--no-access-log", "--log-level", "warning", target]


FLOOR_NAMES = {"rsgi": "floor", "asgi": "floor_asgi", "uvicorn": "floor_uvicorn"}


def floor_cmd(port: int, interface: str) -> list[str]:
    """benchmarks/floor.py on Granian (``rsgi``, ``asgi``) or on uvicorn (``uvicorn``)."""
    if interface == "uvicorn":
        return uvicorn_cmd(port, "benchmarks.floor:asgi_app")
    target = "benchmarks.floor:app" if interface == "rsgi" else "benchmarks.floor:asgi_app"
    cmd = [sys.executable, "-m", "granian", "--interface", interface, "--workers", "1", "--loop", "uvloop"]
    return [*cmd, "--port", str(port), "--no-ws", target]


def start_floor(mock: Service, interface: str = "rsgi") -> Service:
    """The floor on Granian (``rsgi``, ``asgi``) or on uvicorn (``uvicorn``: the same ASGI hop on
    the server a Python pass-through would most often run on; the independent check's floor)."""
    port = free_port()
    cmd = floor_cmd(port, interface)
    return start(FLOOR_NAMES[interface], cmd, port, PROXY_CORE, {"FLOOR_UPSTREAM": mock.url}, path="/v1/messages")


def proxy_env(mock: Service, port: int, client: str | None = None, extra_env: dict | None = None) -> dict:
    return {
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": mock.url.rsplit("/chat/completions", 1)[0],
        "BIG_MODEL_NAME": "bench-model",
        "SMALL_MODEL_NAME": "bench-model-small",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "CCPROXY_DATA_DIR": tempfile.mkdtemp(prefix="bench-ccproxy-"),
        "LOG_LEVEL": "WARNING",
        **({"CCPROXY_HTTP_CLIENT": client} if client else {}),
        **(extra_env or {}),
    }


def start_proxy(mock: Service, client: str | None = None, extra_env: dict | None = None) -> Service:
    port = free_port()
    env = proxy_env(mock, port, client, extra_env)
    service = start(
        f"proxy-{client or 'default'}", [sys.executable, "-m", "ccproxy"], port, PROXY_CORE, env, path="/v1/messages"
    )
    # The request log's writer is a process of its own (src/ccproxy/store.py): on a real host the
    # OS runs it beside the worker, so it goes to the load core here, not onto the worker's.
    for pid in Path(f"/proc/{service.proc.pid}/task/{service.proc.pid}/children").read_text().split():
        if b"ccproxy.store" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.sched_setaffinity(int(pid), {int(LOAD_CORE)})
    return service


# --- load generation ---------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "sk-ant-bench"
wrk.headers["anthropic-version"] = "2023-06-01"
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
"""


def _seconds(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def wrk(url: str, body: bytes, connections: int, duration: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as bf:
        bf.write(body)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as sf:
        sf.write(WRK_SCRIPT)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            sf.name,
            url,
        ],
        env={**os.environ, "BENCH_BODY": bf.name},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(bf.name)
    os.unlink(sf.name)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "p50_ms": _seconds(lat.get("50", "nan")) * 1e3,
        "p99_ms": _seconds(lat.get("99", "nan")) * 1e3,
        "rps": rps,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


async def _exchange(reader, writer, request: bytes, marker: bytes) -> tuple[float, bytes]:
    """One keep-alive request; returns (seconds to the first content byte, whole body)."""
    t0 = time.perf_counter()
    writer.write(request)
    buf = b""
    first = None
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed")
        buf += data
        if first is None and marker in buf:
            first = time.perf_counter() - t0
        if buf.endswith(b"0\r\n\r\n") or (b"content-length:" in buf.lower() and _complete(buf)):
            return (first if first is not None else time.perf_counter() - t0), buf


def _complete(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    return bool(sep and m and len(body) >= int(m.group(1)))


def _request(url: str, body: bytes) -> bytes:
    path = "/" + url.split("/", 3)[3]
    host = url.split("/")[2]
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


def ttfb(url: str, body: bytes, marker: bytes, n: int) -> dict:
    """Time to the first content delta of a streamed answer, c=1, sequential keep-alive requests."""

    async def run() -> dict:
        host, port = url.split("/")[2].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request = _request(url, body)
        times = []
        events = 0
        for i in range(n + 20):
            t, whole = await _exchange(reader, writer, request, marker)
            if i >= 20:  # warm-up
                times.append(t)
            events = whole.count(b"\n\n") - 1  # SSE events (minus the header separator)
        writer.close()
        times.sort()
        return {
            "p50_ms": times[len(times) // 2] * 1e3,
            "p99_ms": times[int(len(times) * 0.99)] * 1e3,
            "events_per_stream": events,
        }

    return asyncio.run(run())


def slow_reader(service: Service, body: bytes, seconds: float, rate: int) -> dict:
    """One client reading a very long stream at ``rate`` bytes/s; the proxy's RSS is sampled."""

    async def run() -> dict:
        host, port = service.url.split("/")[2].split(":")
        reader, writer = await asyncio.open_connection(host, int(port), limit=16384)
        writer.transport.set_write_buffer_limits(0)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        writer.write(_request(service.url, body))
        samples = []
        read = 0
        start_rss = service.rss_kb()
        t0 = time.monotonic()
        next_sample = t0
        while time.monotonic() - t0 < seconds:
            data = await reader.read(rate // 20)
            if not data:
                break
            read += len(data)
            await asyncio.sleep(0.05)
            if time.monotonic() >= next_sample:
                samples.append(service.rss_kb())
                next_sample += 0.5
        writer.close()
        return {
            "read_bytes": read,
            "rss_start_mb": start_rss / 1024,
            "rss_max_mb": max(samples) / 1024,
            "rss_end_mb": samples[-1] / 1024,
            "growth_mb": (max(samples) - start_rss) / 1024,
        }

    return asyncio.run(run())


# --- the runs ----------------------------------------------------------------------------------


def median_of(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: statistics.median(run[k] for run in runs) for k in keys}


def measure(targets: dict[str, Service], body: bytes, connections: int, duration: float, reps: int) -> dict:
    results: dict[str, list[dict]] = {name: [] for name in targets}
    order = list(targets.items())
    for rep in range(reps):
        # interleaved, so drift hits every target alike; the order reverses every other
        # repetition (ABBA) so that no target always runs right after the same neighbour
        for name, service in order if rep % 2 == 0 else order[::-1]:
            results[name].append(wrk(service.url, body, connections, duration))
    return {name: median_of(runs) for name, runs in results.items()}


def full_run(args: argparse.Namespace) -> dict:
    b = bodies()
    mock = start_mock(args.chunks)
    floor = start_floor(mock)
    floor_asgi = start_floor(mock, "asgi")
    floor_uvicorn = start_floor(mock, "uvicorn")
    proxy = start_proxy(mock, args.client, {"CCPROXY_INTERFACE": args.interface} if args.interface else None)
    services = [mock, floor, floor_asgi, floor_uvicorn, proxy]
    floors = ("floor", "floor_asgi", "floor_uvicorn")
    report: dict = {
        "config": {
            "reps": args.reps,
            "chunks": args.chunks,
            "client": args.client or "default",
            "small_bytes": len(b["small"]),
            "large_bytes": len(b["large"]),
        }
    }
    try:
        targets = {
            "direct": mock,
            "floor": floor,
            "floor_asgi": floor_asgi,
            "floor_uvicorn": floor_uvicorn,
            "proxy": proxy,
        }
        for name in ("small", "large", "small-stream"):
            measure(targets, b[name], 8, 1.0, 1)  # warm-up
        for size in ("small", "large"):
            lat = measure(targets, b[size], 1, args.latency_seconds, args.reps)
            thr = measure(targets, b[size], 32, args.throughput_seconds, args.reps)
            direct = lat["direct"]
            report[f"latency_{size}"] = {
                name: {
                    **lat[name],
                    "added_p50_ms": lat[name]["p50_ms"] - direct["p50_ms"],
                    "added_p99_ms": lat[name]["p99_ms"] - direct["p99_ms"],
                }
                for name in (*floors, "proxy")
            } | {"direct": direct}
            report[f"throughput_{size}"] = {name: thr[name] for name in targets} | {
                f"ratio_proxy_{name}": thr["proxy"]["rps"] / thr[name]["rps"] for name in floors
            }
        # streaming: time to the first content delta at c=1, and events/s at c=32
        marks = {
            "direct": b'"content":"tok',
            "floor": b'"content":"tok',
            "floor_asgi": b'"content":"tok',
            "floor_uvicorn": b'"content":"tok',
            "proxy": b"text_delta",
        }
        tt = {name: [] for name in targets}
        for _ in range(args.reps):
            for name, service in targets.items():
                tt[name].append(ttfb(service.url, b["small-stream"], marks[name], args.ttfb_requests))
        ttfb_m = {name: median_of(runs) for name, runs in tt.items()}
        report["stream_ttfb"] = ttfb_m | {"added_vs_floor_ms": ttfb_m["proxy"]["p50_ms"] - ttfb_m["floor"]["p50_ms"]}
        sthr = measure(targets, b["small-stream"], 32, args.throughput_seconds, args.reps)
        report["stream_throughput"] = {
            name: {**sthr[name], "events_per_s": sthr[name]["rps"] * ttfb_m[name]["events_per_stream"]}
            for name in targets
        }
        # the Claude Code turn: a ~115 KB recorded request with stream: true, answered by the
        # mock's stream (--chunks), at c=32: what Claude Code really sends, all day
        turn = measure(targets, b["large-stream"], 32, args.throughput_seconds, args.reps)
        report["turn_throughput"] = {name: turn[name] for name in targets} | {
            f"ratio_proxy_{name}": turn["proxy"]["rps"] / turn[name]["rps"] for name in floors
        }
        # a slow reader first, from a settled heap, then peak RSS under c=256 per workload
        report["slow_reader"] = {
            name: slow_reader(s, b["slow"], args.slow_seconds, 64 * 1024)
            for name, s in targets.items()
            if name != "direct"
        }
        report["memory"] = {}
        for workload in ("small", "small-stream", "large"):
            peaks = {}
            for name in (*floors, "proxy"):
                service = targets[name]
                service.reset_peak()
                wrk(service.url, b[workload], 256, args.throughput_seconds)
                peaks[name] = service.rss_kb("VmHWM") / 1024
            report["memory"][f"c256_{workload}_peak_rss_mb"] = peaks
    finally:
        for s in services:
            s.stop()
    return report


def client_run(args: argparse.Namespace) -> dict:
    from ccproxy.upstream.client import CLIENTS

    kinds = CLIENTS if args.clients == "all" else args.clients.split(",")
    b = bodies()
    mock = start_mock(args.chunks)
    floor = start_floor(mock)
    report: dict = {"config": {"reps": args.reps}, "clients": {}}
    try:
        proxies = {kind: start_proxy(mock, kind) for kind in kinds}
        targets = {"direct": mock, "floor": floor, **proxies}
        measure(targets, b["small"], 8, 1.0, 1)
        for conns in (1, 32, 64):
            for size in ("small", "small-stream"):
                res = measure(targets, b[size], conns, args.throughput_seconds, args.reps)
                report["clients"][f"{size} c={conns}"] = res
        for s in proxies.values():
            s.stop()
    finally:
        mock.stop()
        floor.stop()
    return report


def compare(args: argparse.Namespace, mock: Service, services: dict[str, Service], variants: dict) -> dict:
    """End-to-end throughput of ``services`` at c=32, same run; ratios are against the last one
    (the reference), ``ratio`` is the first one's; before that, what each adds to the mock's own
    p50 at c=1 (``added``), the mock measured in the same interleaved rounds. Stops the services
    and the mock."""
    b = bodies()
    *others, reference = services
    report: dict = {"config": {"reps": args.reps, "variants": variants}, "ab": {}, "added": {}}
    try:
        for workload in ("small", "large"):
            measure(services, b[workload], 8, 1.0, 1)  # (warm-up)
        for workload in ("small", "large"):  # first: a c=1 run right after a c=32 one reads slow
            lat = measure({"direct": mock, **services}, b[workload], 1, args.latency_seconds, args.reps)
            added = {name: lat[name]["p50_ms"] - lat["direct"]["p50_ms"] for name in services}
            report["added"][workload] = {
                "direct_p50_ms": lat["direct"]["p50_ms"],
                "added_p50_ms": added,
                "ratios": {name: added[name] / added[reference] for name in others},
            }
        for workload in ("small", "large", "small-stream", "large-stream"):
            res = measure(services, b[workload], 32, args.throughput_seconds, args.reps)
            ratios = {name: res[name]["rps"] / res[reference]["rps"] for name in others}
            report["ab"][workload] = {**res, "ratio": ratios[others[0]], "ratios": ratios}
    finally:
        for s in (mock, *services.values()):
            s.stop()
    return report


def ab_run(args: argparse.Namespace, variants: dict[str, dict[str, str]]) -> dict:
    """Proxy configurations (environments) compared with ``compare``."""
    mock = start_mock(args.chunks)
    proxies = {name: start_proxy(mock, args.client, env) for name, env in variants.items()}
    return compare(args, mock, proxies, variants)


def start_proxy_uvicorn(mock: Service, extra_env: dict) -> Service:
    """The proxy's ASGI app served by uvicorn (a diagnostic for ``--servers``, not a way to run it:
    no writer process, so only with the request log off)."""
    port = free_port()
    cmd = uvicorn_cmd(port, "ccproxy.app:create_app_from_env")
    cmd.insert(-1, "--factory")
    return start("proxy-uvicorn", cmd, port, PROXY_CORE, proxy_env(mock, port, None, extra_env), path="/v1/messages")


def servers_run(args: argparse.Namespace) -> dict:
    """What the server costs: the same proxy app (request log off) on Granian's ASGI and RSGI
    interfaces and on uvicorn, against the uvicorn floor, same run."""
    off = {"CCPROXY_DB_PATH": "off", "LOG_FILE_PATH": "off"}
    mock = start_mock(args.chunks)
    services = {
        "granian_asgi": start_proxy(mock, None, off),
        "granian_rsgi": start_proxy(mock, None, {**off, "CCPROXY_INTERFACE": "rsgi"}),
        "uvicorn": start_proxy_uvicorn(mock, off),
        "floor_uvicorn": start_floor(mock, "uvicorn"),
    }
    return compare(args, mock, services, {name: {} for name in services})


def backends_run(args: argparse.Namespace) -> dict:
    """Shared backends vs the embedded ones: Redis (rate windows, circuits) and PostgreSQL (the
    request log), each server started here on the load core. The rate limiter is on in every
    variant (a limit never reached) so that the Redis variant does its per-request work."""
    sys.path.insert(0, str(ROOT))
    from tests.support.servers import PostgresServer, RedisServer

    redis, postgres = RedisServer(), PostgresServer()
    try:
        for pid in (redis.proc.pid, postgres.proc.pid):  # (postgres' children inherit it)
            os.sched_setaffinity(pid, {int(LOAD_CORE)})
        limit = {"CCPROXY_RPM": "100000000", **({"CCPROXY_CACHE": "on"} if args.cache else {})}
        variants = {
            "redis": {**limit, "REDIS_URL": redis.url},
            "postgres": {**limit, "DATABASE_URL": postgres.new_database()},
            "embedded": limit,
        }
        report = ab_run(args, variants)
        report["config"]["variants"]["postgres"]["DATABASE_URL"] = "postgresql://…"
        return report
    finally:
        redis.stop()
        postgres.stop()


NATIVE_VARIANTS = {"cython": {"CCPROXY_ENABLE_CYTHON": "true"}, "python": {"CCPROXY_ENABLE_CYTHON": "false"}}
# The request log on (SQLite store + JSON-lines file, the defaults) vs off.
LOGGING_VARIANTS = {"logging_on": {}, "logging_off": {"CCPROXY_DB_PATH": "off", "LOG_FILE_PATH": "off"}}


def print_ab(report: dict) -> None:
    names = list(report["config"]["variants"])
    *others, reference = names
    header = " ".join(f"{n:>12s}" for n in names)
    print(f"req/s at c=32   {header}   " + " ".join(f"{n}/{reference}" for n in others))
    for workload, res in report["ab"].items():
        row = " ".join(f"{res[n]['rps']:12.0f}" for n in names)
        print(f"  {workload:14s}{row}   " + " ".join(f"{res['ratios'][n]:.2f}x" for n in others))
    print(f"added p50 c=1 µs{header}   " + " ".join(f"{n}/{reference}" for n in others))
    for workload, res in report.get("added", {}).items():
        row = " ".join(f"{1000 * res['added_p50_ms'][n]:12.0f}" for n in names)
        print(f"  {workload:14s}{row}   " + " ".join(f"{res['ratios'][n]:.2f}x" for n in others))


def print_full(report: dict) -> None:
    rows = []
    for size in ("small", "large"):
        lat, thr = report[f"latency_{size}"], report[f"throughput_{size}"]
        f_add, p_add = lat["floor"]["added_p50_ms"], lat["proxy"]["added_p50_ms"]
        rows.append(
            (
                f"added p50, c=1, {size}",
                f"{p_add:.3f} ms",
                f"floor {f_add:.3f} ms",
                f"{p_add / f_add:.2f}x floor",
                "<= 1.5x",
            )
        )
        rows.append(
            (
                f"added p99, c=1, {size}",
                f"{lat['proxy']['added_p99_ms']:.3f} ms",
                f"floor {lat['floor']['added_p99_ms']:.3f} ms",
                "",
                "<= 2 ms",
            )
        )
        rows.append(
            (
                f"req/s, c=32, {size}",
                f"{thr['proxy']['rps']:.0f}",
                f"floor {thr['floor']['rps']:.0f}",
                f"{thr['ratio_proxy_floor']:.2f}x floor",
                ">= 0.6x",
            )
        )
        for name, label in (("floor_asgi", "ASGI"), ("floor_uvicorn", "uvicorn")):
            a_add = lat[name]["added_p50_ms"]
            rows.append(
                (
                    f"  vs {label} floor, {size}",
                    "",
                    f"added {a_add:.3f} ms, {thr[name]['rps']:.0f} req/s",
                    f"{p_add / a_add:.2f}x / {thr[f'ratio_proxy_{name}']:.2f}x",
                    "",
                )
            )
    st, sthr = report["stream_ttfb"], report["stream_throughput"]
    rows.append(
        (
            "stream TTFB (first delta), c=1",
            f"{st['proxy']['p50_ms']:.3f} ms",
            f"floor {st['floor']['p50_ms']:.3f} ms",
            f"+{st['added_vs_floor_ms']:.3f} ms",
            "<= +1 ms",
        )
    )
    rows.append(
        (
            "stream events/s, c=32",
            f"{sthr['proxy']['events_per_s']:.0f}",
            f"floor {sthr['floor']['events_per_s']:.0f}",
            f"{sthr['proxy']['rps']:.0f} streams/s",
            ">= 100k",
        )
    )
    rows.append(
        (
            "  vs uvicorn floor",
            "",
            f"{sthr['floor_uvicorn']['events_per_s']:.0f}",
            f"{sthr['proxy']['events_per_s'] / sthr['floor_uvicorn']['events_per_s']:.2f}x",
            "",
        )
    )
    turn = report["turn_throughput"]
    rows.append(
        (
            "Claude Code turns/s, c=32",
            f"{turn['proxy']['rps']:.0f}",
            f"floor {turn['floor']['rps']:.0f}",
            f"{turn['ratio_proxy_floor']:.2f}x floor",
            ">= 1.0x",
        )
    )
    rows.append(
        (
            "  vs uvicorn floor",
            "",
            f"{turn['floor_uvicorn']['rps']:.0f}",
            f"{turn['ratio_proxy_floor_uvicorn']:.2f}x",
            "",
        )
    )
    mem, slow = report["memory"], report["slow_reader"]
    for workload in ("small", "small-stream", "large"):
        peaks = mem[f"c256_{workload}_peak_rss_mb"]
        rows.append(
            (
                f"peak RSS, c=256, {workload}",
                f"{peaks['proxy']:.1f} MB",
                f"floor {peaks['floor']:.1f} / asgi {peaks['floor_asgi']:.1f}"
                f" / uvicorn {peaks['floor_uvicorn']:.1f} MB",
                "",
                "<= 150 MB",
            )
        )
    rows.append(
        (
            "RSS growth, slow reader",
            f"{slow['proxy']['growth_mb']:.1f} MB",
            f"floor {slow['floor']['growth_mb']:.1f} / asgi {slow['floor_asgi']['growth_mb']:.1f}"
            f" / uvicorn {slow['floor_uvicorn']['growth_mb']:.1f} MB",
            f"read {slow['proxy']['read_bytes'] / 1e6:.1f} MB",
            "flat",
        )
    )
    rows.append(("direct (mock) req/s, c=32, small", f"{report['throughput_small']['direct']['rps']:.0f}", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    header = ("figure", "proxy", "reference", "ratio", "goal")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def print_clients(report: dict) -> None:
    for workload, res in report["clients"].items():
        print(f"\n{workload}")
        for name, r in res.items():
            print(f"  {name:12s} {r['rps']:9.0f} req/s   p50 {r['p50_ms']:7.3f} ms   p99 {r['p99_ms']:7.3f} ms")


def run(args: argparse.Namespace) -> dict:
    if args.backends:
        return backends_run(args)
    if args.servers:
        return servers_run(args)
    if args.baseline:
        baseline = {"PYTHONPATH": str(args.baseline.resolve())}  # (imported ahead of the installed package)
        return ab_run(args, {"this": {}, "baseline": baseline})
    if args.native or args.logging:
        return ab_run(args, NATIVE_VARIANTS if args.native else LOGGING_VARIANTS)
    return client_run(args) if args.clients else full_run(args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=200, help="content chunks per mock stream")
    parser.add_argument("--latency-seconds", type=float, default=2.0)
    parser.add_argument("--throughput-seconds", type=float, default=3.0)
    parser.add_argument("--ttfb-requests", type=int, default=200)
    parser.add_argument("--slow-seconds", type=float, default=6.0)
    parser.add_argument("--client", help="CCPROXY_HTTP_CLIENT for the proxy (default: the proxy's default)")
    parser.add_argument("--interface", choices=("asgi", "rsgi"), help="CCPROXY_INTERFACE for the proxy")
    parser.add_argument("--clients", help="compare upstream clients instead: 'all' or a comma list")
    parser.add_argument("--native", action="store_true", help="compare CCPROXY_ENABLE_CYTHON true vs false")
    parser.add_argument("--logging", action="store_true", help="compare the request log (SQLite + file) on vs off")
    parser.add_argument(
        "--backends", action="store_true", help="compare Redis and PostgreSQL (started here) with the embedded state"
    )
    parser.add_argument(
        "--cache", action="store_true", help="with --backends: the response cache on (identical bodies: all hits)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="compare this code with another version: a directory holding the ccproxy package, e.g. from"
        " `pip install --no-deps --target DIR <checkout of the previous commit>` (native modules built)",
    )
    parser.add_argument(
        "--servers", action="store_true", help="the proxy app on Granian ASGI / RSGI and uvicorn vs the uvicorn floor"
    )
    parser.add_argument("--quick", action="store_true", help="one short repetition of everything")
    parser.add_argument(
        "--spin", action="store_true", help="idle-priority busy loops keep both cores awake (steadier c=1 figures)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load-latest.json")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.latency_seconds, args.throughput_seconds = 1, 1.5, 2.0
        args.ttfb_requests, args.slow_seconds = 60, 3.0
    if shutil.which("wrk") is None:
        print("wrk is required (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    started = time.time()
    with spinning(args.spin):
        report = run(args)
    report["config"]["spin"] = args.spin
    report["seconds"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    ab = args.native or args.logging or args.backends or args.baseline or args.servers
    (print_ab if ab else print_clients if args.clients else print_full)(report)
    print(f"\n{report['seconds']} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
