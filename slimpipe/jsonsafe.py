"""Values every store keeps the same: finite floats, 64-bit integers, no NUL bytes, bounded nesting.

PostgreSQL's JSON refuses NaN and NUL, SQLite's integers stop at 64 bits, and both fail with a
server error rather than a message, so free-form input is checked here before it reaches either.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Union

from pydantic import Field, GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue
from typing_extensions import TypeAliasType

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_DEPTH = 32


def json_problems(value: Any, path: tuple[str, ...] = (), depth: int = 0) -> list[tuple[tuple[str, ...], str]]:
    """(path, message) for each value that a database could not store as given; empty when all is well."""
    if depth > MAX_DEPTH:
        return [(path, f"nests deeper than {MAX_DEPTH} levels; flatten it")]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [] if INT64_MIN <= value <= INT64_MAX else [(path, "is beyond 64 bits; give an integer within ±2**63")]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path, "must be a finite number, not NaN or Infinity")]
    if isinstance(value, str):
        return [(path, "contains a NUL byte (\\u0000); remove it")] if "\x00" in value else []
    problems: list[tuple[tuple[str, ...], str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                problems.append(((*path, str(key).replace("\x00", "\\u0000")), "key contains a NUL byte; remove it"))
            problems += json_problems(item, (*path, str(key)), depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problems += json_problems(item, (*path, str(index)), depth + 1)
    return problems


def json_safe(value: Any) -> Any:
    """A pydantic after-validator: `value` unchanged, or a `ValueError` naming the first bad place."""
    problems = json_problems(value)
    if problems:
        path, message = problems[0]
        raise ValueError(f"{'.'.join(path) + ' ' if path else ''}{message}")
    return value


#: A pattern for text that PostgreSQL can store: no NUL byte.
NUL_FREE = r"^[^\x00]*$"

# What `json_problems` accepts, as types (for JSON schemas only: validating stays with `json_safe`).
_KEYS = Field(json_schema_extra={"propertyNames": {"pattern": NUL_FREE}})
# (mypy does not follow a recursive TypeAliasType assigned at runtime; pydantic does.)
SafeJson = TypeAliasType(  # type: ignore[misc]
    "SafeJson",
    Union[  # noqa: UP007
        None, bool, Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)], float, Annotated[str, Field(pattern=NUL_FREE)],
        list["SafeJson"], Annotated[dict[str, "SafeJson"], _KEYS],  # type: ignore[misc]
    ],
)
_SAFE_MAPPING = TypeAdapter(Annotated[dict[str, SafeJson], _KEYS])
_SAFE_LIST = TypeAdapter(list[SafeJson])


class DocumentedAsSafeJson:
    """Pydantic annotation for a free-form mapping or list: its JSON schema says what `json_problems` accepts.

    Validation stays with `json_safe` (it names the bad place); the schema tells clients and fuzzers that
    keys and strings carry no NUL byte and integers fit in 64 bits (nesting depth is not expressible).
    """

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        if core.get("type") != "list":
            return handler(_SAFE_MAPPING.core_schema)
        schema = handler(_SAFE_LIST.core_schema)
        if core.get("max_length") is not None:
            schema["maxItems"] = core["max_length"]
        return schema
