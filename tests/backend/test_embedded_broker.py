"""The embedded broker never shows a reader a message that is still being written."""

from __future__ import annotations

import os
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from backend import embedded_broker


def channel(tmp_path, transport):
    folder = tmp_path / "queue"
    folder.mkdir(exist_ok=True)
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(tmp_path)}
    conn = Connection(transport=transport, transport_options=options)
    return conn, conn.default_channel


def test_kombus_own_transport_shows_a_half_written_message(tmp_path, monkeypatch):
    # The defect this module exists for: the file is visible (empty) before its bytes are written.
    conn, ch = channel(tmp_path, filesystem.Transport)
    seen: list[bytes] = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            seen.extend(p.read_bytes() for p in (tmp_path / "queue").glob("*.cpu.msg"))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(filesystem, "open", lambda *a, **k: Spy(real_open(*a, **k)), raising=False)
    ch._put("cpu", {"body": "x"})
    conn.release()
    assert seen == [b""]  # a poller here would parse an empty file and its worker would die


def test_a_message_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    conn, ch = channel(tmp_path, embedded_broker.Transport)
    real_replace = os.replace
    before_rename: list[str] = []

    def replace(src, dst):
        with pytest.raises(Empty):
            ch._get("cpu")  # being written: no reader can take it
        before_rename.append(os.path.basename(src))
        return real_replace(src, dst)

    monkeypatch.setattr(embedded_broker.os, "replace", replace)
    ch._put("cpu", {"body": "x", "n": list(range(1000))})
    assert len(before_rename) == 1 and before_rename[0].startswith(".")
    assert ch._get("cpu") == {"body": "x", "n": list(range(1000))}
    with pytest.raises(Empty):
        ch._get("cpu")
    assert [p.name for p in (tmp_path / "queue").iterdir()] == []
    conn.release()


def test_register_points_filesystem_urls_at_the_atomic_transport(tmp_path):
    embedded_broker.register()
    folder = str(tmp_path)
    with Connection("filesystem://", transport_options={"data_folder_in": folder, "data_folder_out": folder,
                                                        "control_folder": folder}) as conn:
        assert isinstance(conn.transport, embedded_broker.Transport)


def test_messages_are_taken_in_the_order_they_were_sent_across_clock_digits(tmp_path, monkeypatch):
    # kombu's names: a new message sorted first once the millisecond clock gained a digit.
    assert sorted([f"{999_999}_a.cpu.msg", f"{1_000_000}_b.cpu.msg"])[0].startswith("1000000")
    names = [embedded_broker.message_name("cpu", t) for t in (999_999, 1_000_000, 10**18, 10**19)]
    assert sorted(names) == names

    conn, ch = channel(tmp_path, embedded_broker.Transport)
    clock = iter([999_999_999, 1_000_000_000, 9_999_999_999_999, 10**19])
    monkeypatch.setattr(embedded_broker, "time_ns", lambda: next(clock))
    for n in range(4):
        ch._put("cpu", {"n": n})
    assert [ch._get("cpu")["n"] for _ in range(4)] == [0, 1, 2, 3]
    conn.release()
