"""The triton kernels compile for an H100/H200 (sm_90) here, with Triton's own compiler and ptxas: the
interpreter tests run the kernels' Python, this what only the real compiler checks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[3]


def test_every_kernel_configuration_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the compiler, not the interpreter
    done = subprocess.run([sys.executable, "-m", "benchmarks.triton_sass", "--compile-only"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(lines) >= 28 and all(line.startswith("ok ") for line in lines), done.stdout
    assert any(line.startswith("ok encode block64 b11") for line in lines)
