"""`pip install .` compiles the native modules, and still succeeds with the fallbacks when told not
to build them or when the compiler fails. Builds real wheels, so it runs once in CI (the native
pass, CCPROXY_REQUIRE_NATIVE=1) rather than in every local run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.proxies import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("CCPROXY_REQUIRE_NATIVE") != "1", reason="wheel builds run in CI's native pass"),
]


def build_wheel(tmp_path: Path, **env: str) -> list[str]:
    # A clean copy of the source, as a new user's clone: no modules left by an editable build.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            "*.so",
            "*.c",
            "build",
            "dist",
            ".venv",
            "*.egg-info",
            ".git",
            "__pycache__",
            ".pytest_cache",
            ".ruff_cache",
            ".hypothesis",
            ".benchmarks",
            "results",
        ),
    )
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(out), str(source)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=600,
    )
    [wheel] = out.glob("ccproxy-*.whl")
    return zipfile.ZipFile(wheel).namelist()


@pytest.mark.parametrize(
    ("env", "compiled"),
    [({}, True), ({"CCPROXY_BUILD_CYTHON": "0"}, False), ({"CC": "/bin/false"}, False)],
    ids=["default", "build-disabled", "compiler-fails"],
)
def test_wheel_builds(tmp_path, env, compiled):
    names = build_wheel(tmp_path, **env)
    native = [n for n in names if n.startswith("ccproxy/_native/") and n.endswith(".so")]
    assert "ccproxy/data/cl100k_base.tiktoken" in names
    assert {f"ccproxy/_native/{p}_py.py" for p in ("sse", "jsonsize", "lru", "cachekey")} <= set(names)
    assert len(native) == (4 if compiled else 0), native
