"""Cross-site and rebinding defences for a service that may run without a token, and a log that keeps no token.

Without SLIMPIPE_API_TOKEN anyone who can reach the port may use the API, so two browser tricks must
not reach it: a page elsewhere posting a "simple" cross-site request (form or `text/plain`, no
preflight), and a hostile DNS name re-pointed at 127.0.0.1 (DNS rebinding). A state-changing request
must therefore carry a JSON body or the `X-Slimpipe-Request` header (both need a CORS preflight this
service never grants), and the Host header must be one the server was configured for.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from slimpipe import names

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*")


def is_json(content_type: bytes | None) -> bool:
    media = (content_type or b"").split(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class CrossSiteGuard:
    """Pure ASGI middleware: without a token, refuse state-changing requests a foreign page could forge."""

    def __init__(self, app: Any, enabled: bool):
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.enabled or scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if is_json(headers.get(b"content-type")) or names.CSRF_HEADER.lower().encode() in headers:
            await self.app(scope, receive, send)
            return
        message = (
            f"cross-site request refused: send a JSON body (Content-Type: application/json) or the "
            f"{names.CSRF_HEADER} header with {scope['method']} requests"
        )
        body = json.dumps({"detail": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def host_name(header: bytes) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower case."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostGuard:
    """Pure ASGI middleware: a Host header not in `allowed` (a rebound DNS name) gets 421 and nothing else."""

    def __init__(self, app: Any, allowed: list[str]):
        self.app = app
        self.allowed = {h.lower() for h in allowed}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        host = host_name(dict(scope.get("headers") or []).get(b"host", b""))
        if host in self.allowed:
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"detail": f"Host {host!r} is not served here; add it to SLIMPIPE_ALLOWED_HOSTS to allow it"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 421,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RedactToken(logging.Filter):
    """Blank `?token=…` in access-log lines (uvicorn logs the full path with its query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = TOKEN_IN_QUERY.sub(r"\1[redacted]", record.msg)
        return True


def redact_access_log() -> None:
    """Install `RedactToken` on uvicorn's access logger once."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactToken) for f in access.filters):
        access.addFilter(RedactToken())
