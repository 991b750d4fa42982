import subprocess
import sys

# Linux + glibc, as every slimpipe machine: the probe reads /proc and relies on mallopt.
PROBE = """
import sys
import numpy as np
from worker.memory import keep_freed_memory

def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
block = np.ones(16 << 20, dtype=np.float32)  # 64 MB, every page touched
before = resident()
del block
print(before - resident())
"""


def _released_bytes(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.strip())


def test_keep_freed_memory_keeps_a_freed_64mb_block_resident_for_reuse():
    assert _released_bytes("default") > 60e6  # glibc unmaps big blocks on free; the next one faults back in
    assert _released_bytes("keep") < 1e6
