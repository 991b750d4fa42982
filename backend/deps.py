"""Dependencies the routes share: the settings, a database session and the bearer-token check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from backend.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]


def token_matches(expected: str | None, given: str | None) -> bool:
    """True without a configured token; otherwise a constant-time comparison."""
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def require_token(request: Request, settings: SettingsDep) -> None:
    """`Authorization: Bearer <token>` when SLIMPIPE_API_TOKEN is set; `?token=` too, for EventSource."""
    if not settings.api_token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        given = request.query_params.get("token", "")
    if not token_matches(settings.api_token, given.strip() or None):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API token; send 'Authorization: Bearer <SLIMPIPE_API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
