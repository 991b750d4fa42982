"""Run one training in a child process and turn however it ends into an `Outcome`.

The child (`python -m worker.child RUN_ID OUTCOME_PATH`) trains, writes its metrics to SQL
itself and, if it gets that far, leaves a JSON outcome file. Everything else — a crash, a
kill -9, the OOM killer, a hang after cancel — is read here from the exit status, so the
run always gets a final state and a reason.
"""

from __future__ import annotations

import collections
import contextlib
import json
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
from typing import Any

from slimpipe import names

#: Lines of the child's output kept to explain a death without a Python traceback.
OUTPUT_TAIL_LINES = 40


@dataclass(frozen=True)
class Outcome:
    status: str  # one of names.FINAL_STATES
    error: str | None = None
    traceback: str | None = None
    summary: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {"status": self.status, "error": self.error, "traceback": self.traceback, "summary": self.summary}
        )

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)
        if data.get("status") not in names.FINAL_STATES:
            raise ValueError(f"outcome status {data.get('status')!r} is not a final state")
        return cls(data["status"], data.get("error"), data.get("traceback"), data.get("summary"))


@dataclass
class Hooks:
    """What the supervisor needs from the outside world; all called from the supervising thread."""

    #: Liveness: the run's worker is alive (called every `heartbeat_s`).
    beat: Callable[[], None] = lambda: None
    #: True once someone asked to cancel the run.
    cancel_requested: Callable[[], bool] = lambda: False
    #: Lines the child wrote to stdout/stderr (warnings, tracebacks, fatal errors), in batches.
    output: Callable[[list[str]], None] = lambda lines: None
    #: The child is running with this pid.
    started: Callable[[int], None] = lambda pid: None
    #: Set when the worker itself is shutting down: stop the child and give up the run.
    shutdown: threading.Event = field(default_factory=threading.Event)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the worker dies, even by kill -9 (Linux)."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Supervisor:
    """Start the training child for `run_id`, watch it, and return its `Outcome`."""

    def __init__(
        self,
        run_id: int,
        hooks: Hooks | None = None,
        *,
        poll_s: float = 0.2,
        heartbeat_s: float = 5.0,
        cancel_grace_s: float = 30.0,
        stop_grace_s: float = 5.0,
        output_flush_s: float = 1.0,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.run_id = run_id
        self.hooks = hooks or Hooks()
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.cancel_grace_s = cancel_grace_s
        self.stop_grace_s = stop_grace_s
        self.output_flush_s = output_flush_s
        self.command = command or [sys.executable, "-m", "worker.child"]
        self.env = env
        self.pid: int | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._pending: list[str] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ output forwarding

    def _read_output(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self._tail.append(line)
                self._pending.append(line)
        stream.close()

    def _flush_output(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        if lines:
            self.hooks.output(lines)

    # ------------------------------------------------------------------ the watch loop

    def run(self) -> Outcome:
        with tempfile.TemporaryDirectory(prefix=f"slimpipe-run-{self.run_id}-") as tmp:
            outcome_path = Path(tmp) / "outcome.json"
            proc = subprocess.Popen(
                [*self.command, str(self.run_id), str(outcome_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                env=self.env,
            )
            self.pid = proc.pid
            reader = threading.Thread(target=self._read_output, args=(proc.stdout,), daemon=True)
            reader.start()
            try:
                self.hooks.started(proc.pid)
                stopped_because = self._watch(proc)
            except BaseException:
                self._stop(proc)  # never leave an unsupervised child behind
                raise
            reader.join(timeout=5)
            self._flush_output()
            return self._outcome(proc.returncode, outcome_path, stopped_because)

    def _watch(self, proc: subprocess.Popen[bytes]) -> str | None:
        """Wait for the child; kill it when a cancel overstays its grace or the worker stops."""
        last_beat = last_flush = time.monotonic()
        cancel_seen: float | None = None
        while True:
            try:
                proc.wait(timeout=self.poll_s)
                return None
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if self.hooks.shutdown.is_set():
                self._stop(proc)
                return "shutdown"
            if now - last_beat >= self.heartbeat_s:
                self.hooks.beat()
                last_beat = now
            if now - last_flush >= self.output_flush_s:
                self._flush_output()
                last_flush = now
            # The child stops itself within one step; this is for a child stuck inside one.
            if cancel_seen is None and self.hooks.cancel_requested():
                cancel_seen = now
            if cancel_seen is not None and now - cancel_seen > self.cancel_grace_s:
                self._stop(proc)
                return "cancel"

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the child's process group, then SIGKILL it after `stop_grace_s`."""
        for sig, wait_s in ((signal.SIGTERM, self.stop_grace_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def _outcome(self, returncode: int, outcome_path: Path, stopped_because: str | None) -> Outcome:
        if stopped_because == "cancel":
            return Outcome(
                names.CANCELLED,
                f"cancelled; the training process did not stop within {self.cancel_grace_s:g} s and was killed",
            )
        if stopped_because == "shutdown":
            return Outcome(names.FAILED, "worker shut down while the run was running; retry it")
        if outcome_path.exists():
            try:
                return Outcome.from_json(outcome_path.read_text())
            except (ValueError, KeyError) as exc:
                return Outcome(names.FAILED, f"training process left an unreadable outcome: {exc}", self._tail_text())
        if returncode < 0:
            name = _signal_name(-returncode)
            reason = f"training process was killed by {name}"
            if -returncode == signal.SIGKILL:
                reason += " (the out-of-memory killer, or kill -9)"
            elif -returncode == signal.SIGSEGV:
                reason += " (a crash in native code)"
            return Outcome(names.FAILED, reason, self._tail_text())
        return Outcome(
            names.FAILED, f"training process exited with code {returncode} before reporting a result", self._tail_text()
        )

    def _tail_text(self) -> str | None:
        with self._lock:
            return "\n".join(self._tail) or None
