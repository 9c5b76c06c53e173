"""Conversations read from Claude Code's project logs (CLAUDE_PROJECTS_DIR, ~/.claude/projects).

Layout: one directory per project (its path with every non-alphanumeric character replaced by
"-"), one ``<session id>.jsonl`` per conversation, one JSON object per line (``type`` user,
assistant, summary, …; ``message``, ``timestamp``, ``cwd``, ``sessionId``). The files belong to
another program and change under us, so parsing is defensive: unreadable files and lines are
skipped, unknown shapes are ignored, and nothing here raises for bad content. Summaries are
cached per file by (size, mtime).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .errors import ProxyError, invalid_request

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_FILE_BYTES = 64 * 1024 * 1024  # larger logs are read up to here
FIRST_MESSAGE_CHARS = 200


@dataclass(slots=True)
class Summary:
    id: str
    project_dir: str
    project_path: str
    request_count: int
    start: str | None
    last: str | None
    duration_ms: int
    first_message: str
    model: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "requestCount": self.request_count,
            "startTime": self.start,
            "lastActivity": self.last,
            "duration": self.duration_ms,
            "firstMessage": self.first_message,
            "projectPath": self.project_path,
            "projectName": Path(self.project_path).name or self.project_dir,
            "projectDir": self.project_dir,
            "model": self.model,
        }


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES)
    except OSError:
        return []
    out = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _millis(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def summarize(path: Path, project_dir: str) -> Summary:
    entries = _entries(path)
    stamps = [s for s in (e.get("timestamp") for e in entries) if isinstance(s, str) and _millis(s) is not None]
    first, model, cwd, count = "", None, None, 0
    for entry in entries:
        kind = entry.get("type")
        message = entry.get("message")
        if kind in ("user", "assistant") and isinstance(message, dict):
            count += 1
            if kind == "user" and not first and not entry.get("isMeta"):
                first = _text(message.get("content")).strip()[:FIRST_MESSAGE_CHARS]
            if kind == "assistant" and isinstance(message.get("model"), str):
                model = message["model"]
        if cwd is None and isinstance(entry.get("cwd"), str):
            cwd = entry["cwd"]
    start_ms = _millis(stamps[0]) if stamps else None
    last_ms = _millis(stamps[-1]) if stamps else None
    return Summary(
        id=path.stem,
        project_dir=project_dir,
        project_path=cwd or project_dir,
        request_count=count,
        start=stamps[0] if stamps else None,
        last=stamps[-1] if stamps else None,
        duration_ms=int(last_ms - start_ms) if start_ms is not None and last_ms is not None else 0,
        first_message=first,
        model=model,
    )


class Conversations:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[tuple[int, float], Summary]] = {}
        self._lock = threading.Lock()

    def _summary(self, path: Path, project_dir: str) -> Summary | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_size, stat.st_mtime)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        summary = summarize(path, project_dir)
        with self._lock:
            self._cache[path] = (key, summary)
        return summary

    def _project_dirs(self) -> list[Path]:
        try:
            return [p for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return []

    def _all(self, dirs: list[Path]) -> list[Summary]:
        out = []
        for folder in dirs:
            try:
                files = [f for f in folder.iterdir() if f.suffix == ".jsonl" and f.is_file()]
            except OSError:
                continue
            for file in files:
                summary = self._summary(file, folder.name)
                if summary is not None and summary.request_count:
                    out.append(summary)
        out.sort(key=lambda s: s.last or "", reverse=True)
        return out

    def list(self, model: str, page: int, limit: int) -> dict[str, Any]:
        items = self._all(self._project_dirs())
        if model and model != "all":
            items = [s for s in items if s.model and model.lower() in s.model.lower()]
        chunk = items[(page - 1) * limit : page * limit]
        return {
            "conversations": [s.to_json() for s in chunk],
            "hasMore": page * limit < len(items),
            "total": len(items),
            "page": page,
            "limit": limit,
        }

    def resolve_project(self, project: str | None) -> Path:
        """A project given as its directory name or as its path (what ``cwd`` says)."""
        if not project:
            raise invalid_request("project: required (the project's path or its directory name)")
        if _SAFE_NAME.match(project) and project not in (".", "..") and (self.root / project).is_dir():
            return self.root / project
        encoded = re.sub(r"[^A-Za-z0-9]", "-", project)
        if (self.root / encoded).is_dir():
            return self.root / encoded
        for folder in self._project_dirs():
            for summary in self._all([folder])[:1]:
                if summary.project_path == project:
                    return folder
        raise ProxyError(404, f"project {project!r} has no conversations", "not_found_error")

    def by_project(self, project: str | None) -> dict[str, Any]:
        folder = self.resolve_project(project)
        items = self._all([folder])
        return {
            "project": project,
            "projectDir": folder.name,
            "conversations": [s.to_json() for s in items],
            "total": len(items),
        }

    def get(self, session_id: str, project: str | None) -> dict[str, Any]:
        if not _SAFE_NAME.match(session_id) or session_id in (".", ".."):
            raise invalid_request(f"id: not a session id: {session_id!r}")
        folder = self.resolve_project(project)
        path = folder / f"{session_id}.jsonl"
        if not path.is_file():
            raise ProxyError(404, f"conversation {session_id!r} not found in {folder.name}", "not_found_error")
        summary = self._summary(path, folder.name)
        messages = []
        for entry in _entries(path):
            message = entry.get("message")
            if entry.get("type") in ("user", "assistant") and isinstance(message, dict):
                messages.append(
                    {
                        "type": entry.get("type"),
                        "uuid": entry.get("uuid"),
                        "parentUuid": entry.get("parentUuid"),
                        "timestamp": entry.get("timestamp"),
                        "message": message,
                    }
                )
        return {"sessionId": session_id, **(summary.to_json() if summary else {}), "messages": messages}
