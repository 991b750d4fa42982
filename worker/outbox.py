"""Items on their way to the database, each stored exactly once though a write may break off unanswered."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    """Items waiting to be written, sent in keyed batches.

    A write that raises may still have been stored (the connection broke after the commit, before its
    answer). So a batch keeps its items and its key until a write of it returns, and is sent again as it
    was: the store keeps the key with the rows (`backend.crud.keyed_write`) and answers a key it has seen
    without storing twice. Items added meanwhile wait for the next batch.
    """

    def __init__(self) -> None:
        self.items: list[T] = []
        self.sent = 0  # items written so far, all batches
        self._batch: tuple[str, int] | None = None  # the key and size of the batch being sent

    def __len__(self) -> int:
        return len(self.items)

    def add(self, items: Iterable[T]) -> None:
        self.items.extend(items)

    def send(self, write: Callable[[list[T], str], object]) -> int:
        """`write(batch, key)` until nothing waits; how many items left the outbox. When `write` raises,
        its batch stays, under its key, and the exception propagates."""
        sent = 0
        while self.items:
            if self._batch is None:
                self._batch = (uuid.uuid4().hex, len(self.items))
            key, size = self._batch
            write(self.items[:size], key)
            del self.items[:size]
            self._batch = None
            sent += size
            self.sent += size
        return sent
