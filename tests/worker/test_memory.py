import subprocess
import sys

# Linux + glibc, as every slimpipe machine: the probe reads /proc and relies on mallopt.
PROBE = """
import sys
import numpy as np
from worker.memory import blocks_of_their_own, keep_freed_memory

def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

if sys.argv[1] != "default":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
if sys.argv[1] == "own":
    with blocks_of_their_own():
        block = np.ones(16 << 20, dtype=np.float32)
else:
    if sys.argv[1] == "after-own":
        with blocks_of_their_own():
            pass
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


def test_a_block_made_in_blocks_of_their_own_goes_back_to_the_system_when_freed():
    """Rank 0 of a distributed run builds the model so: the stages' weights it sends and frees leave no
    resident hole in the kept heap. Blocks made after the context are kept again."""
    assert _released_bytes("own") > 60e6
    assert _released_bytes("after-own") < 1e6
