"""How a server-streaming rpc reaches an HTTP caller.

- `Accept: text/event-stream`: Server-Sent Events. Each message is one event whose `id:`
  is the message's `sequence` (when it has one) and whose `data:` is the message's JSON;
  an idle stream gets a `: keepalive` comment line now and then, so proxies keep it open.
  A reconnecting EventSource sends `Last-Event-ID`; the gateway passes it as the request's
  `resume_after`, and the new stream starts from the current state, numbered on from it.
- Otherwise newline-delimited JSON, the way grpc-gateway streams: one `{"result": ...}`
  object a line.

An error after the stream started (the server cut it off, or it is shutting down) is the
last item: `{"error": <google.rpc.Status JSON>}` (SSE: an `event: error`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jackpot_grpc.gateway.http_errors import bad_request

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
LAST_EVENT_ID = "Last-Event-ID"
RESUME_FIELD = "resume_after"
KEEPALIVE = b": keepalive\n\n"


def wants_sse(headers: Mapping[str, str]) -> bool:
    return SSE in headers.get("Accept", "")


def resume_after(headers: Mapping[str, str]) -> int | None:
    """The Last-Event-ID a reconnecting EventSource sent, if any; 400 when not a sequence."""
    raw = headers.get(LAST_EVENT_ID)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise bad_request(
            f"invalid {LAST_EVENT_ID} {raw!r}: must be a sequence number this stream sent",
            [(LAST_EVENT_ID, "not a sequence number")],
        )
    return int(raw)


def event(data: str, sequence: int | None) -> bytes:
    lines = [] if sequence is None else [f"id: {sequence}"]
    lines.append(f"data: {data}")  # the JSON is one line: json.dumps never breaks lines
    return ("\n".join(lines) + "\n\n").encode()


def error_event(status: dict[str, Any]) -> bytes:
    return f"event: error\ndata: {json.dumps(status)}\n\n".encode()


def ndjson_line(key: str, value: Any) -> bytes:
    """`{"result": ...}` or `{"error": ...}` and a newline; `value` may be JSON text."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f'{{"{key}": {text}}}\n'.encode()
