"""The embedded broker: kombu's filesystem transport with messages that appear whole.

kombu's `filesystem` transport creates a message file and then writes it; a worker polling the folder in
between moves the empty file away, fails to parse it ("Unrecoverable error: JSONDecodeError") and dies,
and the message is gone (seen in CI: a submit racing a worker's first poll). Here a message is written
under a name the readers skip (a leading dot: kombu's `_get` matches `<name>.<queue>.msg`,
`backend.reconcile` globs `*.msg`) and renamed into place, which is atomic on one filesystem.

kombu names a message by `round(monotonic() * 1000)` and readers take the first name in string order, so
once the clock gains a digit (1e6 ms: 17 minutes after boot, then 2.8 hours, 28 hours) a new message sorts
before every older one, and after a reboot the clock starts again below the messages left on disk: queued
runs then trained out of order (seen in the compression study). Names here start with the wall clock in
nanoseconds, zero-padded, so string order is the order messages were sent.

`register()` points the `filesystem://` URL scheme at this transport, for the API's producer and the
workers alike (`worker.celery_app.celery_config`).
"""

from __future__ import annotations

import os
import uuid
from time import time_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

ALIAS = "filesystem"


def message_name(queue: str, now_ns: int) -> str:
    """`<time>_<uuid>.<queue>.msg`: the shape kombu's reader matches, in send order as strings."""
    return f"{now_ns:020d}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # as kombu.filesystem
        name = message_name(queue, time_ns())
        final = os.path.join(self.data_folder_out, name)
        hidden = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(hidden, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(hidden, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    TRANSPORT_ALIASES[ALIAS] = f"{__name__}:Transport"
