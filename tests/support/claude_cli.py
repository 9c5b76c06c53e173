"""The real Claude Code CLI (from npm), headless, in a throwaway HOME, pointed at a proxy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


class Claude:
    """The real CLI, headless, in a throwaway HOME, pointed at the proxy."""

    def __init__(self, binary: Path, base_url: str, home: Path, workdir: Path) -> None:
        self.binary = binary
        self.base_url = base_url
        self.home = home
        self.workdir = workdir

    def run(self, prompt: str, *args: str, timeout: float = 120) -> tuple[int, dict, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-e2e-client-key-0123456789",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }
        proc = subprocess.run(
            [str(self.binary), "-p", prompt, "--output-format", "json", "--max-turns", "6", *args],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        except json.JSONDecodeError:
            result = {}
        return proc.returncode, result, proc.stdout + proc.stderr
