"""Dependencies the routes share: the settings, a database session and the bearer-token check."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Query, Request, Response, status
from sqlalchemy.orm import Session

from backend.settings import Settings
from slimpipe import names


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]

#: Runs and experiments have 32-bit keys; metric points and log lines 64-bit ones (the event cursors).
MAX_ID = 2**31 - 1
MAX_CURSOR = 2**63 - 1
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="a run id")]
ExperimentId = Annotated[int, Path(ge=1, le=MAX_ID, description="an experiment id")]
Limit = Annotated[int, Query(ge=1, le=500, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]

#: A sender's key for one write (as in Stripe's and the IETF draft's `Idempotency-Key`): the same write sent
#: again under the same key, after an answer that never came, is answered as the first time and stored once.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=names.IDEMPOTENCY_HEADER,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="your key for this write (a UUID, say; 1-64 of A-Z a-z 0-9 . _ : -): sent again under the same "
        "key within a day, the write is answered as the first time, with `Idempotent-Replayed: true`, and "
        "stored once",
    ),
]
REPLAYED = "Idempotent-Replayed"


def replayed_header(status_code: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entry that documents `Idempotent-Replayed` on a keyed write's success."""
    header = {"description": "`true` when this answers a write made before under the same Idempotency-Key",
              "schema": {"type": "string", "enum": ["true"]}}
    return {status_code: {"headers": {REPLAYED: header}}}


def mark_replayed(response: Response, replayed: bool) -> None:
    if replayed:
        response.headers[REPLAYED] = "true"


def token_matches(expected: str | None, given: str | None) -> bool:
    """True without a configured token; otherwise a constant-time comparison."""
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


#: `Authorization: Bearer <token>`: one space, a token of visible characters, nothing around it (RFC 6750).
BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] ([A-Za-z0-9\-._~+/]+=*)")


def bearer_token(header: str | None) -> str | None:
    """The token of a well-formed bearer header, else None (wrong scheme, extra spaces, tabs, a second value)."""
    match = BEARER.fullmatch(header or "")
    return match.group(1) if match else None


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or wrong API token; send 'Authorization: Bearer <SLIMPIPE_API_TOKEN>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_token(request: Request, settings: SettingsDep) -> None:
    """`Authorization: Bearer <token>` when SLIMPIPE_API_TOKEN is set (a `?token=` is not looked at)."""
    if settings.api_token and not token_matches(settings.api_token, bearer_token(request.headers.get("authorization"))):
        raise _unauthorized()


def require_stream_token(request: Request, settings: SettingsDep) -> None:
    """The event stream alone also takes `?token=`: a browser's EventSource cannot send headers."""
    if not settings.api_token:
        return
    given = bearer_token(request.headers.get("authorization"))
    if given is None and "authorization" not in request.headers:
        given = request.query_params.get("token")
    if not token_matches(settings.api_token, given):
        raise _unauthorized()
