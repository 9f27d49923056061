"""clipgeo.core.memory: the allocator setting streamed stages use, and its switches (each case in a
fresh interpreter: the setting is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = """
from clipgeo.core.memory import bound_heap, release_memory, rss_mb
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


def test_opening_a_run_for_streaming_bounds_the_heap(tmp_path):
    """LanceRun (what measurement and the Dask partials stream through) sets the threshold; importing does not."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    code = f"""
import lance, numpy as np, pyarrow as pa
from clipgeo.core import memory
from clipgeo.streaming.reader import LanceRun
vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 4)
lance.write_dataset(pa.table({{"vector": vec, "modality": ["image", "text"]}}), {str(tmp_path / "t.lance")!r})
print(memory._BOUND)
LanceRun({str(tmp_path / "t.lance")!r})
print(memory._BOUND)
"""
    clean = {k: v for k, v in os.environ.items() if k not in ("CLIPGEO_MMAP_THRESHOLD", "MALLOC_MMAP_THRESHOLD_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "4194304"]
