"""Request guards of the labeling app: body size, Host header, duplicate JSON keys, and the
security headers every answer carries (see docs/security.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from alignkit.feedback.store import FeedbackError

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def error_response(status: int, field: str, message: str,
                   headers: dict | None = None) -> JSONResponse:
    """Every refusal's shape: ``{"error": {"field", "message"}}``, with the security headers."""
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status,
                        headers={**SECURITY_HEADERS, **(headers or {})})


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, before parsing.

    Checks Content-Length first, and also counts the bytes of bodies sent without one
    (chunked), buffering at most ``max_bytes``.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        if length is not None or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        response = error_response(413, "body", f"request body over {self.max_bytes} bytes — "
                                  "send one ranking per request")
        await response(scope, receive, send)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise FeedbackError(f"key '{k}' appears twice in one JSON object — send each key "
                                "once", field=k)
        seen[k] = v
    return seen


async def strict_json(request: Request) -> None:
    """Refuse a body whose JSON repeats a key: parsers keep the last one silently, so a
    ranking could say two things and the duplicate check would only see one."""
    body = await request.body()
    try:
        json.loads(body, object_pairs_hook=_no_duplicate_keys)
    except FeedbackError:
        raise
    except (ValueError, RecursionError):
        return  # not JSON at all: FastAPI's own validation answers with a 422


def _host_name(host: str) -> str:
    """The host part of a Host header: 'a:8000' -> 'a', '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheck:
    """ASGI middleware: 400 unless the Host header names a host this app serves.

    A page on evil.example can make a browser resolve its name to 127.0.0.1 (DNS
    rebinding) and then read the API as same-origin; it cannot make the browser send
    ``Host: 127.0.0.1``. ``"*"`` in ``allowed`` turns the check off.
    """

    def __init__(self, app: Any, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = {_host_name(h) for h in allowed}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_name(raw) not in self.allowed:
                response = error_response(
                    400, "host", f"host '{raw[:80]}' is not served here — open the app by "
                    "the address `alignkit label serve` printed (or add it with --allowed-host)")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
