"""Starting a run's stage processes on this host, the rendezvous they meet at, and ending them.

Rank 0 (the process that drives the run) opens a c10d `TCPStore` on a free port, as
`torch.distributed.run` does, and starts ranks 1..n-1 as fresh interpreters (`python -m worker.stage`),
each with its thread budget in the environment before torch starts its pools. A watcher thread notices
a stage that dies, records which one and how, and ends the others; every stage also gets SIGKILL from
the kernel if rank 0 dies (PR_SET_PDEATHSIG), so no stage process outlives the run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: How long rank 0 waits for every stage to reach the rendezvous (import torch, build the model).
READY_TIMEOUT_S = float(os.environ.get("SLIMPIPE_STAGE_READY_TIMEOUT_S", "120"))
#: How long a send/recv/collective may block before gloo gives up (a hung peer, a dead host).
COLLECTIVE_TIMEOUT_S = float(os.environ.get("SLIMPIPE_COLLECTIVE_TIMEOUT_S", "600"))
#: How long rank 0 waits for the stages placed on other workers' queues to join.
PLACEMENT_TIMEOUT_S = float(os.environ.get("SLIMPIPE_PLACEMENT_TIMEOUT_S", "120"))
#: The address other hosts reach this one's rendezvous store at (default: this host's name resolved).
STAGE_HOST_ENV = "SLIMPIPE_STAGE_HOST"
READY_KEY = "slimpipe/ready/{rank}"


class StageFailed(RuntimeError):
    """A stage process died or could not join; the message names the stage."""


def thread_env(threads: int | None) -> dict[str, str]:
    """Thread budget of a stage process, set before its torch, OpenMP and numba start their pools."""
    if threads is None:
        return {}
    value = str(threads)
    return {"OMP_NUM_THREADS": value, "MKL_NUM_THREADS": value, "NUMBA_NUM_THREADS": value}


def advertised_host() -> str:
    import socket

    return os.environ.get(STAGE_HOST_ENV) or socket.gethostbyname(socket.gethostname())


def open_store(host: str = "127.0.0.1", port: int = 0) -> Any:
    """The rendezvous store, served by rank 0 (port 0: a free port; read it back from `.port`)."""
    import torch.distributed as dist

    return dist.TCPStore(host, port, is_master=True, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def join_store(host: str, port: int) -> Any:
    import torch.distributed as dist

    return dist.TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=READY_TIMEOUT_S))


def init_group(store: Any, rank: int, world: int) -> Any:
    """The default gloo group (payloads) and a second gloo group for rank 0's commands and gathers.

    torch wraps sys.excepthook at every init to prefix "[rankN]: " to tracebacks, and never unwraps it: a
    stage process keeps the prefix (a stage's traceback says whose it is); rank 0, which may run one
    distributed run after another in one process, gets its hook back."""
    import torch.distributed as dist

    hook = sys.excepthook
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    if rank == 0:
        sys.excepthook = hook
    return dist.new_group(backend="gloo")


def wait_ready(store: Any, ranks: Sequence[int], timeout_s: float, failure: Callable[[], str | None],
               late: Callable[[int], str]) -> None:
    """Block until `ranks` have set their ready keys; StageFailed with `failure()` or `late(rank)` otherwise."""
    deadline = time.monotonic() + timeout_s
    for rank in ranks:
        while not store.check([READY_KEY.format(rank=rank)]):
            if (reason := failure()) is not None:
                raise StageFailed(f"before joining the run, {reason}")
            if time.monotonic() > deadline:
                raise StageFailed(late(rank))
            time.sleep(0.05)


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


#: The line a Python traceback ends with, as torch.distributed's excepthook prints it ("[rank2]: ValueError: ...").
_EXCEPTION_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?([A-Za-z_][\w.]*(?:Error|Exception|Failed|Exit)\b.*)$")


def _relay(pipe: Any, tail: deque[str]) -> None:
    """Copy a stage's stderr to this process's, line by line, keeping its last lines for a failure message."""
    out = getattr(sys.stderr, "buffer", None)
    for line in iter(pipe.readline, b""):
        tail.append(line.decode(errors="replace").rstrip())
        with contextlib.suppress(OSError, ValueError):  # our stderr closed: the stage's lines still count
            if out is not None:
                out.write(line)
                out.flush()
            else:
                sys.stderr.write(line.decode(errors="replace"))
    pipe.close()


def last_exception(lines: Sequence[str]) -> str | None:
    """The exception a stage died of, from the last non-empty line of its stderr (None if that is not one)."""
    last = next((line for line in reversed(lines) if line.strip()), "")
    found = _EXCEPTION_LINE.match(last.strip())
    return found.group(1)[:500] if found else None


class LocalStages:
    """Ranks `ranks` of a run as child processes of this one."""

    def __init__(self, spec_data: dict[str, Any], ranks: Sequence[int], world: int, *, host: str, port: int,
                 threads: int | None, workdir: Path, out_dir: Path | None = None):
        self.failure: str | None = None
        self.abort = threading.Event()
        self._closing = False
        workdir.mkdir(parents=True, exist_ok=True)
        spec_path = workdir / "stage-spec.json"
        spec_path.write_text(json.dumps(spec_data))
        env = {**os.environ, **thread_env(threads)}
        if host.startswith("127."):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._tails: dict[int, deque[str]] = {}
        self._relays: dict[int, threading.Thread] = {}
        for rank in ranks:
            argv = [sys.executable, "-m", "worker.stage", str(spec_path), str(rank), str(world), host, str(port)]
            if out_dir is not None:
                argv.append(str(out_dir))
            proc = self.procs[rank] = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
            self._tails[rank] = deque(maxlen=20)
            self._relays[rank] = threading.Thread(target=_relay, args=(proc.stderr, self._tails[rank]),
                                                  name=f"slimpipe-stage-{rank}-stderr", daemon=True)
            self._relays[rank].start()
        self._watcher = threading.Thread(target=self._watch, name="slimpipe-stage-watcher", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._closing:
            for rank, proc in self.procs.items():
                code = proc.poll()
                if code is not None and code != 0 and not self._closing and self.failure is None:
                    self._relays[rank].join(timeout=1.0)  # its last lines, once the pipe closes
                    reason = last_exception(self._tails[rank]) if code > 0 else None
                    self.failure = f"stage {rank} (pid {proc.pid}) {describe_exit(code)}" + (f": {reason}" if reason else "")
                    self.abort.set()
                    self._end_all(grace_s=1.0)
                    return
            time.sleep(0.05)

    def wait_ready(self, store: Any, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every local stage reached the rendezvous; raise naming the one that could not."""
        wait_ready(store, list(self.procs), timeout_s, lambda: self.failure,
                   lambda rank: f"stage {rank} did not reach the rendezvous within {timeout_s:.0f} s")

    def raise_failure(self, exc: BaseException) -> None:
        """Re-raise a transport error as the stage death behind it, when a stage died (the watcher polls every
        50 ms, then reads the dead stage's last lines for up to 1 s)."""
        deadline = time.monotonic() + 2.0
        while self.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.failure is not None:
            raise StageFailed(self.failure) from exc
        raise exc

    def _end_all(self, grace_s: float) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def wait(self, stop: Callable[[], bool], poll_s: float = 0.5) -> None:
        """Block until every stage process ended (or `stop()` says to give up)."""
        while any(p.poll() is None for p in self.procs.values()) and not stop():
            time.sleep(poll_s)

    def close(self, grace_s: float = 5.0) -> None:
        """Wait up to `grace_s` for the stages to finish on their own, then end them."""
        self._closing = True
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        self._end_all(grace_s=1.0)


def stage_main(argv: Sequence[str], build: Callable[..., Any]) -> int:
    """Entry of a stage process: `SPEC_JSON RANK WORLD HOST PORT [OUT_DIR]` (see worker.stage)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with rank 0
    spec_path, rank, world, host, port = argv[0], int(argv[1]), int(argv[2]), argv[3], int(argv[4])
    out_dir = Path(argv[5]) if len(argv) > 5 else None
    store = join_store(host, port)
    program = build(json.loads(Path(spec_path).read_text()), rank, world)
    store.set(READY_KEY.format(rank=rank), "1")
    control = init_group(store, rank, world)
    program.control = control
    program.receive_weights()
    program.serve(out_dir)
    import torch.distributed as dist

    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing left to tear down; interpreter shutdown with torch loaded takes seconds on a busy host
