"""worker.outbox: a batch whose write raised goes again as it was, under its key, before anything newer."""

from __future__ import annotations

import pytest

from worker.outbox import Outbox


def test_a_batch_whose_write_raised_goes_again_as_it_was_and_newer_items_follow_under_their_own_key():
    box: Outbox[int] = Outbox()
    writes: list[tuple[list[int], str]] = []
    fail = [True]

    def write(batch: list[int], key: str) -> None:
        writes.append((batch, key))
        if fail[0]:
            raise ConnectionError("no answer")

    assert box.send(write) == 0 and writes == []  # nothing waits: nothing is written
    box.add([1, 2, 3])
    with pytest.raises(ConnectionError):
        box.send(write)
    box.add([4])
    with pytest.raises(ConnectionError):
        box.send(write)
    assert len(box) == 4 and writes[0] == writes[1]  # the same three items, the same key
    fail[0] = False
    assert box.send(write) == 4 and len(box) == 0 and box.sent == 4
    (first, key), _, (again, again_key), (rest, rest_key) = writes
    assert (first, again, rest) == ([1, 2, 3], [1, 2, 3], [4])
    assert again_key == key != rest_key and len(key) == 32
