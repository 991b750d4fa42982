"""Moving encoded payloads between stage processes with torch.distributed point-to-point.

Each direction of each boundary is one FIFO channel between two ranks. A message is a size (one int64)
then the payload as a uint8 tensor: payload sizes vary from step to step, and gloo, like the wire,
moves exactly the tensor it is given — a fixed-capacity buffer would put the whole capacity on the
link every time. The sending side (`Outbox`) is a thread: the stage hands a payload over and computes
on while it crosses, optionally through an `EmulatedLink`. The receiving side (`Inbox`) is a thread
that receives the messages the stage has announced, ahead of the stage asking for them.

A micro-batch's carry can be several tensors (a transformer's hidden states and attention mask):
`pack`/`unpack` frame a list of self-describing payloads, or None for a tensor without a gradient,
as one message.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from worker.pipeline.link import EmulatedLink

_NONE = 0xFFFFFFFF
#: Bytes of the size message that precedes every payload (counted in the emulated link's time).
SIZE_BYTES = 8


class TransportError(RuntimeError):
    """A peer went away or a message could not be moved."""


def pack(items: Sequence[bytes | None]) -> bytes:
    lengths = [_NONE if item is None else len(item) for item in items]
    return struct.pack(f"<H{len(items)}I", len(items), *lengths) + b"".join(i for i in items if i is not None)


def unpack(message: memoryview | bytes) -> list[memoryview | None]:
    view = memoryview(message).cast("B")
    if len(view) < 2:
        raise TransportError("message shorter than its frame header")
    (count,) = struct.unpack_from("<H", view, 0)
    offset = 2 + 4 * count
    if len(view) < offset:
        raise TransportError(f"message frames {count} payloads but is only {len(view)} bytes")
    items: list[memoryview | None] = []
    for length in struct.unpack_from(f"<{count}I", view, 2):
        if length == _NONE:
            items.append(None)
            continue
        if offset + length > len(view):
            raise TransportError("message is truncated: a framed payload runs past its end")
        items.append(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise TransportError(f"message has {len(view) - offset} stray bytes after its payloads")
    return items


def _as_tensor(message: bytes) -> torch.Tensor:
    with warnings.catch_warnings():  # gloo only reads the buffer; no copy of an immutable bytes object
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(message, dtype=torch.uint8) if message else torch.empty(0, dtype=torch.uint8)


class Outbox:
    """Sends messages to `peer` in order, on a thread of its own, through an optional emulated link."""

    def __init__(self, peer: int, *, link: EmulatedLink | None = None, group: Any = None, name: str = "outbox"):
        self.peer, self.link, self.group = peer, link, group
        self.send_s = 0.0  # time the thread spent getting messages across (link emulation + transport)
        self._queue: queue.Queue[tuple[bytes, float] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"slimpipe-{name}", daemon=True)
        self._thread.start()

    def put(self, message: bytes) -> None:
        self.check()
        self._queue.put((message, time.perf_counter()))

    def check(self) -> None:
        if self._error is not None:
            raise TransportError(f"sending to stage {self.peer} failed: {self._error}") from self._error

    def flush(self) -> None:
        """Block until every message handed over so far has been sent."""
        self._queue.join()
        self.check()

    def close(self, wait: bool = True) -> None:
        self._queue.put(None)
        if wait:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is not None:
                    continue  # drain: the stage raises at its next put/flush
                message, handed_at = item
                t0 = time.perf_counter()
                if self.link is not None:
                    delay = self.link.arrival(len(message) + SIZE_BYTES, handed_at) - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                dist.send(torch.tensor([len(message)], dtype=torch.int64), self.peer, group=self.group)
                if message:
                    dist.send(_as_tensor(message), self.peer, group=self.group)
                self.send_s += time.perf_counter() - t0
            except BaseException as exc:  # noqa: BLE001 - reported to the stage thread
                self._error = exc
            finally:
                self._queue.task_done()


class Inbox:
    """Receives the messages a stage announced with `expect`, ahead of `take`."""

    def __init__(self, peer: int, *, group: Any = None, name: str = "inbox", abort: threading.Event | None = None):
        self.peer, self.group = peer, group
        self.abort = abort or threading.Event()
        self.wait_s = 0.0  # time the stage spent blocked in `take`
        self._requests: queue.Queue[int | None] = queue.Queue()
        self._messages: queue.Queue[memoryview | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"slimpipe-{name}", daemon=True)
        self._thread.start()

    def expect(self, count: int) -> None:
        if count:
            self._requests.put(count)

    def take(self) -> memoryview:
        t0 = time.perf_counter()
        try:
            while True:
                try:
                    item = self._messages.get(timeout=0.5)
                    break
                except queue.Empty:
                    if self.abort.is_set():
                        raise TransportError(f"stopped while waiting for stage {self.peer}") from None
        finally:
            self.wait_s += time.perf_counter() - t0
        if isinstance(item, BaseException):
            raise TransportError(f"receiving from stage {self.peer} failed: {item}") from item
        return item

    def close(self) -> None:
        self._requests.put(None)

    def _loop(self) -> None:
        size = torch.empty(1, dtype=torch.int64)
        while True:
            count = self._requests.get()
            if count is None:
                return
            for _ in range(count):
                try:
                    dist.recv(size, self.peer, group=self.group)
                    buffer = torch.empty(int(size), dtype=torch.uint8)
                    if len(buffer):
                        dist.recv(buffer, self.peer, group=self.group)
                    self._messages.put(memoryview(buffer.numpy()))  # type: ignore[arg-type]
                except BaseException as exc:  # noqa: BLE001 - handed to the stage thread
                    self._messages.put(exc)
                    return
