"""The dashboard's queries against a request log of N rows (default 1 000 000).

    python benchmarks/store_scale.py [--rows 1000000] [--out docs/results/store-scale.json]
    python benchmarks/store_scale.py --postgres   # the same on a throwaway PostgreSQL server

Builds the database with the store's own schema and write path (rows and per-minute roll-ups,
30 days of traffic over 6 models and 3 organizations), then times each dashboard API query
(``Dashboard`` methods, the code the HTTP handlers run) as the median of 5 runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ccproxy.dashboard import Dashboard  # noqa: E402
from ccproxy.store import connect, migrate, write_batch  # noqa: E402

MODELS = ["claude-sonnet-5", "claude-opus-4-8", "claude-haiku-4-5", "gpt-5", "qwen-coder", "deepseek-v4"]
ORGS = ["", "org-a", "org-b"]


def build(path: Path | str, rows: int) -> float:
    conn = connect(path)
    migrate(conn)
    rng = random.Random(1)
    now = time.time()
    started = time.perf_counter()
    batch: list[dict] = []
    step = 30 * 86400 / rows
    for i in range(rows):
        ts = now - 30 * 86400 + i * step + rng.random() * step  # arriving in time order, as they do
        batch.append(
            {
                "id": f"req_{int(ts * 1000):011x}{rng.getrandbits(36):09x}",  # the app's format
                "ts": ts,
                "endpoint": "/v1/messages",
                "model": MODELS[i % len(MODELS)],
                "routed_model": "gpt-big",
                "upstream": "default",
                "status": 529 if i % 50 == 0 else 200,
                "latency_ms": rng.randrange(200, 30000),
                "streaming": i % 3 != 0,
                "input_tokens": rng.randrange(1000, 100000),
                "output_tokens": rng.randrange(10, 4000),
                "cache_read_tokens": rng.randrange(0, 50000),
                "message_count": rng.randrange(1, 200),
                "conversation_hash": f"{i // 40:016x}",
                "organization_id": ORGS[i % len(ORGS)] or None,
            }
        )
        if len(batch) == 20000:
            _write(conn, batch)
            batch = []
    if batch:
        _write(conn, batch)
    if isinstance(path, Path):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        conn.execute("VACUUM ANALYZE")
    conn.close()
    return time.perf_counter() - started


def _write(conn, batch: list[dict]) -> None:
    write_batch(conn, batch)


def timed(fn, *args) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        fn(*args)
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


def run_queries(board: Dashboard) -> dict[str, float]:
    now = time.time()
    day, week = now - 86400, now - 7 * 86400
    some_id = board.requests(1, 1, "all")["requests"][0]["requestId"]
    queries = {
        "GET /api/requests (page 1, 10)": (board.requests, 1, 10, "all"),
        "GET /api/requests (page 5000, 10)": (board.requests, 5000, 10, "all"),
        "GET /api/requests?model=opus": (board.requests, 1, 10, "opus"),
        "GET /api/requests/summary (last day, 100)": (board.summary, "all", day, now, 0, 100),
        "GET /api/requests/summary?model=opus (all time, 100)": (board.summary, "opus", None, None, 0, 100),
        "GET /api/requests/summary?model=claude (3 models, all time, 100)": (
            board.summary,
            "claude",
            None,
            None,
            0,
            100,
        ),
        "GET /api/requests?model=claude (3 models)": (board.requests, 1, 10, "claude"),
        "GET /api/requests/latest-date": (board.latest_date,),
        "GET /api/requests/{id} (full)": (board.request, some_id),
        "GET /api/requests/{id} (short: 14 chars after req_)": (board.request, some_id[4:18]),
        "GET /api/stats (all time)": (board.stats, None, None, None, None),
        "GET /api/stats/dashboard (30 days)": (board.daily, None, None, None),
        "GET /api/stats/hourly (1 day, 60 min)": (board.hourly, day, now, 60, None),
        "GET /api/stats/models (7 days)": (board.models, week, now, None),
        "GET /api/stats/organizations": (board.organizations,),
    }
    return {name: timed(fn, *fargs) for name, (fn, *fargs) in queries.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--postgres", action="store_true", help="on PostgreSQL (a server started here)")
    args = parser.parse_args()
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        target: Path | str = Path(tmp) / "scale.db"
        if args.postgres:
            sys.path.insert(0, str(ROOT))
            from tests.support.servers import PostgresServer

            server = PostgresServer()
            target = server.new_database()
        try:
            build_seconds = build(target, args.rows)
            board = Dashboard(target)
            results = run_queries(board)
            if isinstance(target, Path):
                size = target.stat().st_size
            else:
                size = board._conn().execute("SELECT pg_database_size(current_database())").fetchone()[0]
        finally:
            if server is not None:
                server.stop()
    report = {
        "rows": args.rows,
        "engine": "postgresql" if args.postgres else "sqlite",
        "build_seconds": round(build_seconds, 1),
        "db_bytes": size,
        "median_ms": results,
    }
    width = max(len(k) for k in results)
    print(f"{args.rows:,} rows, built in {build_seconds:.1f} s, {size / 1e6:.0f} MB")
    for name, ms in results.items():
        print(f"  {name.ljust(width)}  {ms:8.2f} ms")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
