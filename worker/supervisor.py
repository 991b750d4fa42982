"""Run one training in a child process and turn however it ends into an `Outcome`.

The child (`worker.child`) trains, writes its metrics to SQL itself and, if it gets that far,
leaves a JSON outcome file. Everything else — a crash, a kill -9, the OOM killer, a hang
after cancel — is read here from the exit status, so the run always gets a final state and a
reason. Children fork from a forkserver that has already imported torch and the engine, so a
run starts in milliseconds instead of seconds; `subprocess_launcher` starts a fresh interpreter.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slimpipe import names
from worker.outbox import Outbox

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "stopped because its worker shut down (e.g. Ctrl-C of slimpipe serve); retry it to run it again"
#: Lines of the child's output kept to explain a death without a Python traceback.
OUTPUT_TAIL_LINES = 40
#: Imported once by the forkserver, inherited by every training child.
#: (torch._dynamo: the optimizers import it lazily, seconds per run otherwise.)
PRELOAD = ["worker.child", "backend.crud", "worker.train", "sklearn.datasets", "torch._dynamo"]


@dataclass(frozen=True)
class Outcome:
    status: str  # one of names.FINAL_STATES
    error: str | None = None
    traceback: str | None = None
    summary: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)
        if data.get("status") not in names.FINAL_STATES:
            raise ValueError(f"outcome status {data.get('status')!r} is not a final state")
        return cls(data["status"], data.get("error"), data.get("traceback"), data.get("summary"))


@dataclass
class Hooks:
    """What the supervisor needs; `beat` runs on a thread of its own, the others on the caller's."""

    #: Liveness: the run's worker is alive (called every `heartbeat_s`).
    beat: Callable[[], None] = lambda: None
    #: True once someone asked to cancel the run.
    cancel_requested: Callable[[], bool] = lambda: False
    #: Lines the child wrote to stdout/stderr (warnings, tracebacks, fatal errors), in batches, each with its
    #: write key. When it raises, the same batch comes again under the same key (it may have been stored)
    #: before newer lines; `Supervisor.unsent_output` holds what is left at the end.
    output: Callable[[list[str], str], None] = lambda lines, key: None
    #: The child is running with this pid.
    started: Callable[[int], None] = lambda pid: None
    #: Set when the worker itself is shutting down: ask the child to stop, then end the run cancelled.
    shutdown: threading.Event = field(default_factory=threading.Event)
    #: The worker is shutting down: ask the child to stop at its next step, as a cancel does.
    request_stop: Callable[[], None] = lambda: None


# --------------------------------------------------------------------------- launching


class Child(Protocol):
    pid: int

    def wait(self, timeout: float) -> int | None:
        """The exit code (negative: killed by that signal), or None if still running after `timeout`."""
        ...


class _Subprocess:
    def __init__(self, popen: subprocess.Popen[bytes]):
        self.popen, self.pid = popen, popen.pid

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


class _Forked:
    def __init__(self, process: Any):
        self.process, self.pid = process, process.pid

    def wait(self, timeout: float) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode


Launcher = Callable[[int, Path, Path], Child]  # (run_id, outcome_path, output_path) -> a started child


def subprocess_launcher(command: list[str] | None = None, env: dict[str, str] | None = None) -> Launcher:
    """A fresh interpreter per run: `command RUN_ID OUTCOME_PATH`, output into OUTPUT_PATH."""
    argv = command or [sys.executable, "-m", "worker.child"]

    def launch(run_id: int, outcome_path: Path, output_path: Path) -> Child:
        with output_path.open("ab") as output:
            popen = subprocess.Popen(
                [*argv, str(run_id), str(outcome_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        return _Subprocess(popen)

    return launch


_forkserver_lock = threading.Lock()


def forkserver_launcher(preload: list[str] | None = None) -> Launcher:
    """Fork each run from a forkserver that preloaded `preload` (torch, the engine, the crud calls)."""
    ctx = multiprocessing.get_context("forkserver")
    with _forkserver_lock:
        ctx.set_forkserver_preload(PRELOAD if preload is None else preload)

    def launch(run_id: int, outcome_path: Path, output_path: Path) -> Child:
        from worker.child import forked_main

        process = ctx.Process(
            target=forked_main,
            args=(run_id, str(outcome_path), str(output_path), os.getpid()),
            name=f"slimpipe-run-{run_id}",
        )
        process.start()
        return _Forked(process)

    return launch


def warm_forkserver(preload: list[str] | None = None) -> None:
    """Start the forkserver (and its imports) now, so the first run does not wait for them."""
    from multiprocessing import forkserver

    forkserver_launcher(preload)
    forkserver.ensure_running()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --------------------------------------------------------------------------- supervising


class Supervisor:
    """Start the training child for `run_id`, watch it, and return its `Outcome`."""

    def __init__(
        self,
        run_id: int,
        hooks: Hooks | None = None,
        *,
        launcher: Launcher | None = None,
        poll_s: float = 0.2,
        heartbeat_s: float = 5.0,
        cancel_grace_s: float = 30.0,
        stop_grace_s: float = 5.0,
        shutdown_grace_s: float = 20.0,
        output_flush_s: float = 1.0,
    ):
        self.run_id = run_id
        self.hooks = hooks or Hooks()
        self.launcher = launcher or forkserver_launcher()
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.cancel_grace_s = cancel_grace_s
        self.stop_grace_s = stop_grace_s
        self.shutdown_grace_s = shutdown_grace_s
        self.output_flush_s = output_flush_s
        self.pid: int | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._offset = 0
        self._partial = b""
        self.unsent_output: Outbox[str] = Outbox()  # lines `hooks.output` refused (the database was away)

    def run(self) -> Outcome:
        with tempfile.TemporaryDirectory(prefix=f"slimpipe-run-{self.run_id}-") as tmp:
            outcome_path, output_path = Path(tmp) / "outcome.json", Path(tmp) / "output.log"
            output_path.touch()
            done = threading.Event()
            beating = threading.Thread(target=self._beat, args=(done,), name="slimpipe-heartbeat", daemon=True)
            beating.start()
            try:
                child = self.launcher(self.run_id, outcome_path, output_path)  # may wait for the forkserver's imports
                self.pid = child.pid
                try:
                    self.hooks.started(child.pid)
                    returncode, stopped_because = self._watch(child, output_path)
                except BaseException:
                    self._stop(child)  # never leave an unsupervised child behind
                    raise
            finally:
                done.set()
                beating.join(timeout=5)
            self._forward_output(output_path, final=True)
            return self._outcome(returncode, outcome_path, stopped_because)

    def _beat(self, done: threading.Event) -> None:
        """Liveness on a thread of its own: a slow start or a busy loop never looks like a dead worker."""
        while not done.wait(self.heartbeat_s):
            self.hooks.beat()

    def _watch(self, child: Child, output_path: Path) -> tuple[int, str | None]:
        """Wait for the child; kill it when a cancel overstays its grace or the worker stops."""
        last_flush = time.monotonic()
        cancel_seen: float | None = None
        while True:
            returncode = child.wait(self.poll_s)
            if returncode is not None:
                return returncode, None
            now = time.monotonic()
            if self.hooks.shutdown.is_set():
                return self._stop_for_shutdown(child), "shutdown"
            if now - last_flush >= self.output_flush_s:
                self._forward_output(output_path)
                last_flush = now
            # The child stops itself within one step; this is for a child stuck inside one.
            if cancel_seen is None and self.hooks.cancel_requested():
                cancel_seen = now
            if cancel_seen is not None and now - cancel_seen > self.cancel_grace_s:
                return self._stop(child), "cancel"

    def _stop_for_shutdown(self, child: Child) -> int:
        """Ask the child to stop at its next step (it flushes its metrics and ends like a cancel); force it after
        `shutdown_grace_s`. Returns the exit code."""
        self.hooks.request_stop()
        returncode = child.wait(self.shutdown_grace_s)
        return returncode if returncode is not None else self._stop(child)

    def _stop(self, child: Child) -> int:
        """SIGTERM the child's process group, then SIGKILL it after `stop_grace_s`; returns the exit code."""
        for sig, wait_s in ((signal.SIGTERM, self.stop_grace_s), (signal.SIGKILL, 10.0)):
            for kill in (os.killpg, os.kill):  # the group once the child called setsid, else the child
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(child.pid, sig)
            returncode = child.wait(wait_s)
            if returncode is not None:
                return returncode
        return -signal.SIGKILL

    def _forward_output(self, output_path: Path, final: bool = False) -> None:
        with output_path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = b"" if final else chunks.pop()
        lines = [c.decode("utf-8", "replace") for c in chunks if c or final]
        lines = [line for line in lines if line]
        self._tail.extend(lines)
        self.unsent_output.add(lines)
        if self.unsent_output:
            try:
                self.unsent_output.send(self.hooks.output)
            except Exception as exc:  # kept for the next batch
                log.warning("run %s: %d output lines not stored yet: %s", self.run_id, len(self.unsent_output), exc)

    def _outcome(self, returncode: int, outcome_path: Path, stopped_because: str | None) -> Outcome:
        if stopped_because == "cancel":
            return Outcome(
                names.CANCELLED,
                f"cancelled; the training process did not stop within {self.cancel_grace_s:g} s and was killed",
            )
        if stopped_because == "shutdown":
            # A clean stop, not a failure: the metrics so far are kept and a retry starts it again.
            summary = None
            if outcome_path.exists():
                with contextlib.suppress(ValueError, KeyError):
                    summary = Outcome.from_json(outcome_path.read_text()).summary
            return Outcome(names.CANCELLED, SHUTDOWN_REASON, summary=summary)
        if outcome_path.exists():
            try:
                return Outcome.from_json(outcome_path.read_text())
            except (ValueError, KeyError) as exc:
                return Outcome(names.FAILED, f"training process left an unreadable outcome: {exc}", self._tail_text())
        if returncode < 0:
            reason = f"training process was killed by {_signal_name(-returncode)}"
            if -returncode == signal.SIGKILL:
                reason += " (the out-of-memory killer, or kill -9)"
            elif -returncode == signal.SIGSEGV:
                reason += " (a crash in native code)"
            return Outcome(names.FAILED, reason, self._tail_text())
        return Outcome(
            names.FAILED, f"training process exited with code {returncode} before reporting a result", self._tail_text()
        )

    def _tail_text(self) -> str | None:
        return "\n".join(self._tail) or None
