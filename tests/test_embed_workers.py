"""DataLoader workers are never forked from a process that has loaded LanceDB (its thread pools
make fork unsafe): they start from a fork server (or, on the CPU fast path, are one decode
thread of this process), and embedding after LanceDB is open prints no fork warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PIPELINES_GROUP

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys, warnings
warnings.simplefilter("default")  # show every warning, as a user's terminal would
import numpy as np, lancedb, pyarrow as pa
from PIL import Image
db = lancedb.connect(sys.argv[1] + "/db")  # LanceDB loaded and its runtime busy before the workers exist
t = db.create_table("t", pa.table({"x": np.arange(1000)}))
assert t.count_rows() == 1000 and len(t.search().limit(5).to_list()) == 5
paths = []
for i in range(12):
    p = f"{sys.argv[1]}/{i}.png"
    Image.new("RGB", (40 + i, 32), (20 * i, 100, 200 - 10 * i)).save(p)
    paths.append(p)
from clipgeo.embedding.embed import embed_images, embed_texts
from clipgeo.models.loader import load_model
lm = load_model("clipgeo-tiny-vit", device="cpu")
for decode in ("pil", "tensor"):
    a = embed_images(lm, paths, batch_size=4, num_workers=2, progress=False, decode=decode)
    b = embed_images(lm, paths, batch_size=4, num_workers=0, progress=False, decode=decode)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
from clipgeo.embedding.image_path import embed_image_refs_fast  # the tensor path in worker processes too
c, _, _ = embed_image_refs_fast(lm, paths, batch_size=4, num_workers=2, progress=False, worker_threads=False)
np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-6)
caps = [f"caption number {i}" for i in range(40)]
np.testing.assert_allclose(embed_texts(lm, caps, batch_size=8, num_workers=2, progress=False),
                           embed_texts(lm, caps, batch_size=8, num_workers=0, progress=False), rtol=1e-5, atol=1e-6)
from clipgeo.embedding.workers import worker_context
print("start method:", worker_context().get_start_method())
"""


def _run(tmp_path, env_extra):
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_extra}
    env.pop("LANCEDB_LOG", None)
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


def test_workers_start_without_fork_after_lancedb_is_loaded(tmp_path):
    out = _run(tmp_path, {})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "start method: forkserver" in out.stdout
    text = (out.stdout + out.stderr).lower()
    assert "fork support is experimental" not in text and "not fork-safe" not in text, out.stderr[-3000:]


@pytest.mark.slow
def test_the_fork_warning_is_what_forking_would_print(tmp_path):
    """The check above can fail: with workers forked, the same script prints LanceDB's warnings."""
    out = _run(tmp_path, {"CLIPGEO_WORKER_START": "fork"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fork" in (out.stdout + out.stderr).lower()


def test_start_method_setting_is_checked(monkeypatch):
    from clipgeo.embedding import workers

    monkeypatch.setenv("CLIPGEO_WORKER_START", "threads")
    with pytest.raises(ValueError, match="CLIPGEO_WORKER_START='threads'"):
        workers.start_method()
    monkeypatch.delenv("CLIPGEO_WORKER_START")
    assert workers.worker_context().get_start_method() == "forkserver"


@pytest.mark.slow
@PIPELINES_GROUP
def test_a_pipeline_run_prints_no_fork_or_random_init_warning(pipelines_at_once):
    """The main job, small, with decode workers and its reports: the whole output of each command
    (the user's terminal; LanceDB's log as by default) holds no fork warning and no "initialized
    randomly" notice for the tiny models it trains on purpose. The commands are the session's
    three main jobs on one home (conftest.pipelines_at_once; test_operations checks their concurrency)."""
    res = pipelines_at_once
    for rc, text in zip(res.returncodes, res.outs):
        assert rc == 0, text[-3000:]
    text = "\n".join(res.outs)
    assert "embedded 40 images + 120 captions" in text   # the embed stage ran (with --num-workers 1)
    assert "model trained in" in text and "report    : " in text   # so did the training and the reports
    low = text.lower()
    assert "fork" not in low, [line for line in text.splitlines() if "fork" in line.lower()][:3]
    assert "initialized randomly" not in low, [line for line in text.splitlines() if "randomly" in line][:3]
