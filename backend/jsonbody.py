"""JSON request bodies parsed strictly: NaN/Infinity, integers past 64 bits and NUL bytes get a 422 naming the field.

Python's `json` accepts `NaN` and any integer, PostgreSQL refuses NaN and NUL in JSON, SQLite stops at
64 bits: without this, valid-looking JSON turned into 5xx deep inside a query. Every router uses
`StrictJSONRoute`; metric ingest, which parses its own bytes with pydantic, is bounded by its schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from slimpipe.jsonsafe import json_problems


def _fields(path: tuple[str, ...]) -> str:
    parts = list(path)
    if len(parts) > 1 and parts[0] in ("spec", "sweep"):
        parts = parts[1:]
    return ".".join(parts) or "body"


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                data = json.loads(body)  # NaN/Infinity parse here and are refused below, by field
            except json.JSONDecodeError:
                raise  # FastAPI turns it into a 422 with the position
            except (ValueError, RecursionError) as exc:  # bad UTF-8, nesting too deep for the parser
                reason = "nests too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise HTTPException(422, detail=[{"field": "body", "message": f"is not valid JSON: {reason}"}]) from None
            problems = json_problems(data)
            if problems:
                raise HTTPException(422, detail=[{"field": _fields(path), "message": m} for path, m in problems[:20]])
            self._json = data
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose request parses JSON with `StrictJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
