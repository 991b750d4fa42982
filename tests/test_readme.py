"""The README's tour, verbatim, in a fresh copy of the repository against the service it starts.

Every ```sh and ```python block runs as written, in order, from the copy's root. Only the `make`
lines are left to the test: it lends the copy this interpreter's environment as `.venv` (what
`make run` would build) and starts the service with `make run`'s own command on a free port. The
digits example is shortened to a few steps in the copy so the tour takes seconds per run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.fixtures_servers import free_port

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)
# What the test does itself instead: the environment and the running service.
MAKE_LINES = {"make run", "make test"}


def tour_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer((ROOT / "README.md").read_text())]


def shell_commands(block: str) -> tuple[list[str], list[str]]:
    """(commands to run, make lines left to the test); comments and blank lines dropped."""
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    lines = [line for line in lines if line]
    return [line for line in lines if not line.startswith("make ")], [
        line for line in lines if line.startswith("make ")
    ]


def fresh_copy(dest: Path) -> Path:
    """The files a clone would have: tracked and not-ignored ones, no .venv, no var/."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))  # this environment stands in for what `make run` builds
    example = dest / "examples" / "digits_cnn_topk.yaml"
    spec = yaml.safe_load(example.read_text())
    spec["train"] = {**spec["train"], "max_steps": 6, "eval_every": 3}
    spec["train"].pop("epochs", None)
    spec["optim"]["warmup_steps"] = 2
    example.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the service exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the service did not get ready:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(600)
def test_readme_tour_runs_verbatim_in_a_fresh_copy(tmp_path: Path) -> None:
    if not (Path(sys.prefix) / "bin" / "slimpipe").exists():
        pytest.skip("the slimpipe command is not installed in this environment (make venv)")
    clone = fresh_copy(tmp_path / "slimpipe")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMPIPE_")}
    env |= {"PYTHONPATH": str(clone), "SLIMPIPE_PORT": str(port), "SLIMPIPE_URL": url, "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        # `make run`'s recipe after the environment step: .venv/bin/slimpipe serve (port from SLIMPIPE_PORT).
        service = subprocess.Popen(
            [".venv/bin/slimpipe", "serve"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    outputs: list[str] = []
    made: list[str] = []
    try:
        wait_ready(url, service, log)
        for language, block in tour_blocks():
            if language == "python":
                commands = [[".venv/bin/python", "-c", block]]
            else:
                lines, make = shell_commands(block)
                made += make
                commands = [["bash", "-euo", "pipefail", "-c", line] for line in lines]
            for command in commands:
                done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, f"{command[-1]!r} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
                outputs.append(done.stdout)
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()

    assert set(made) == MAKE_LINES  # nothing else was skipped
    # 1. the local run wrote its files; 3. the script's sweep and the shell's sweep ran on the service.
    summary = json.loads((clone / "var" / "digits" / "summary.json").read_text())
    assert summary["steps"] == 6
    printed = next(o for o in outputs if "'baseline_run_id'" in o)
    assert printed.count("'run_id'") == 2
    runs_table = outputs[-1].splitlines()
    assert [line.split()[2] for line in runs_table[2:]] == ["succeeded"]
    assert "8-bit" in runs_table[2]  # the forward column of the run the shell submitted
