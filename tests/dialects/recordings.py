"""The recorded answers of real providers (recordings/, sources in SOURCES.md), loaded as the
HTTP responses the replay upstream serves byte for byte.

Three shapes, as the public sources keep them:

* ``*.chunks.txt``: one stream chunk (a ``data:`` payload) per line, as the Vercel AI SDK keeps its
  live-recorded fixtures. Served as ``data: <line>\\n\\n`` for each line, then ``data: [DONE]\\n\\n``
  (the framing every one of these providers uses, and the one the AI SDK's loader rebuilds).
* ``*.json``: a whole JSON answer, served as recorded.
* ``*.yaml``: the ``response`` of a VCR cassette (pydantic-ai's): its status and content type,
  and its ``body.string`` (raw bytes, SSE included) or its ``parsed_body`` (served as JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent / "recordings"


@dataclass(frozen=True)
class Recording:
    name: str
    status: int
    content_type: str
    body: bytes

    @property
    def stream(self) -> bool:
        return self.content_type.startswith("text/event-stream")


def load(name: str) -> Recording:
    path = HERE / name
    raw = path.read_bytes()
    if name.endswith(".chunks.txt"):
        lines = [line for line in raw.decode().split("\n") if line.strip()]
        body = "".join(f"data: {line}\n\n" for line in lines) + "data: [DONE]\n\n"
        return Recording(name, 200, "text/event-stream", body.encode())
    if name.endswith(".json"):
        return Recording(name, 200, "application/json", raw)
    response = yaml.safe_load(raw)["response"]
    content_type = response.get("headers", {}).get("content-type", ["application/json"])[0]
    if "body" in response:
        body = response["body"]["string"].encode()
    else:
        body = json.dumps(response["parsed_body"], ensure_ascii=False).encode()
    return Recording(name, response["status"]["code"], content_type, body)


def names() -> list[str]:
    return sorted(p.name for p in HERE.iterdir() if p.suffix in (".txt", ".json", ".yaml"))
