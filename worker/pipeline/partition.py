"""Stage partitions: the pure code lives in `slimpipe.partition` so the API validates with the same messages."""

from slimpipe.partition import (
    PartitionError,
    PathPart,
    balance_by_size,
    balanced_stages,
    parse_path,
    resolve,
    resolve_path,
)

__all__ = [
    "PartitionError",
    "PathPart",
    "balance_by_size",
    "balanced_stages",
    "parse_path",
    "resolve",
    "resolve_path",
]
