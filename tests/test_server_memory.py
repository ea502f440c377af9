"""The server gives freed large buffers back to the system (glibc's malloc would keep them in
its heap): the same allocation pattern as the S3 writer's part buffers, in a fresh process."""

from __future__ import annotations

import subprocess
import sys

import pytest

PATTERN = """
import sys
from haul.cli.serve import return_large_buffers

def resident_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

if sys.argv[1] == "tuned":
    return_large_buffers()
before = resident_mib()
kept = []
for _ in range(20):
    parts = [bytearray(8 << 20) for _ in range(8)]  # parts in flight
    kept.append(bytearray(64 << 10))  # a small block that outlives them, above them in the heap
    del parts
print(resident_mib() - before)
"""


def retained_mib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_part_buffers_go_back_to_the_system() -> None:
    assert retained_mib("plain") > 32  # what the heap keeps by default: the case is real
    assert retained_mib("tuned") < 8  # 1.25 MiB of small blocks kept, and the buffers gone
