"""Parse the Anthropic SSE wire format and check its grammar strictly (PROTOCOL.md §1)."""

from __future__ import annotations

import json


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    assert raw.endswith(b"\n\n") or not raw, "stream must end at an event boundary"
    events = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ") and len(lines) == 2, block
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name, f"event line {name!r} != data.type {data['type']!r}"
        events.append((name, data))
    return events


def assemble(events: list[tuple[str, dict]]) -> dict:
    """Replay events into the final message, asserting the grammar on the way.

    Raises AssertionError for any violation; returns the message with ``error`` set when the
    stream ended in an error event.
    """
    events = [e for e in events if e[0] != "ping"]
    assert events and events[0][0] == "message_start", "first event must be message_start"
    message = events[0][1]["message"]
    assert message["content"] == [] and message["stop_reason"] is None
    assert message["id"].startswith("msg_")
    open_index = None
    buffers: dict[int, str] = {}
    state = "blocks"
    for name, data in events[1:]:
        assert state != "stopped", f"event {name} after message_stop"
        if name == "error":
            message["error"] = data["error"]
            assert data is events[-1][1], "error must be the last event"
            return message
        if name == "content_block_start":
            assert state == "blocks" and open_index is None, "a block is already open"
            assert data["index"] == len(message["content"]), "indexes must be sequential"
            block = dict(data["content_block"])
            message["content"].append(block)
            open_index = data["index"]
            buffers[open_index] = ""
        elif name == "content_block_delta":
            assert data["index"] == open_index, "delta for a block that is not open"
            block, delta = message["content"][open_index], data["delta"]
            kinds = {
                "text_delta": ("text",),
                "input_json_delta": ("tool_use", "server_tool_use"),
                "thinking_delta": ("thinking",),
                "signature_delta": ("thinking",),
                "citations_delta": ("text",),
            }[delta["type"]]
            assert block["type"] in kinds, f"{delta['type']} inside a {block['type']} block"
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] += delta["signature"]
            elif delta["type"] == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
            else:
                buffers[open_index] += delta["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            block = message["content"][open_index]
            if block["type"] in ("tool_use", "server_tool_use"):
                block["input"] = json.loads(buffers[open_index])  # must parse
                assert isinstance(block["input"], dict)
            open_index = None
        elif name == "message_delta":
            assert open_index is None, "message_delta while a block is open"
            assert state == "blocks"
            assert "output_tokens" in data["usage"]
            message["stop_reason"] = data["delta"]["stop_reason"]
            message["stop_sequence"] = data["delta"].get("stop_sequence")
            message["usage"].update(data["usage"])
            state = "delta"
        elif name == "message_stop":
            assert state == "delta", "message_stop without message_delta"
            state = "stopped"
        else:
            raise AssertionError(f"unknown event {name}")
    assert state == "stopped", "stream ended without message_stop or error"
    return message
