"""clipgeo.memory: the allocator setting streamed stages use, and its switches (each case in a
fresh interpreter: the setting is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = """
from clipgeo.memory import bound_heap, release_memory, rss_mb
first = bound_heap()
assert bound_heap() == first          # repeated calls change nothing
release_memory()
assert rss_mb() > 0
print(first)
"""


def _run(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("CLIPGEO_MMAP_THRESHOLD", "MALLOC_MMAP_THRESHOLD_")}
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env={**clean, **env}, timeout=120)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "4194304"),                                   # the default: 4 MiB
    ({"CLIPGEO_MMAP_THRESHOLD": "1048576"}, "1048576"),
    ({"CLIPGEO_MMAP_THRESHOLD": "0"}, "None"),         # leave the allocator alone
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "None"),     # glibc's own setting wins
])
def test_bound_heap_threshold_and_switches(env, expected):
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    proc = _run(**env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_bound_heap_names_a_bad_setting():
    proc = _run(CLIPGEO_MMAP_THRESHOLD="4MB")
    assert proc.returncode != 0
    assert "CLIPGEO_MMAP_THRESHOLD='4MB'" in proc.stderr and "number of bytes" in proc.stderr
