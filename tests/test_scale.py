"""Scale: the benchmark runs at a small N, and the distributed measurement (per-fragment partials
on a 2-worker Dask LocalCluster) gives the single-process tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clipgeo.stages import measure
from tests.tables import assert_columns_close
from clipgeo.store import catalog, vectors

ROOT = Path(__file__).resolve().parents[1]

#: Tables filled from every vector (streamed), compared between single-process and Dask runs.
STREAMED_TABLES = {
    "modality_gap": ["run_id"],
    "topo_spectra": ["scope", "index"],
    "topo_spectra_summary": ["scope"],
    "geo_modality": ["modality"],
    "geo_cross": ["run_id"],
    "geo_eigenvalues": None,
    "geo_subspaces": None,
    "geo_per_sample": ["modality", "item_id"],
    "retrieval_ranks": ["direction", "query_id"],
    "retrieval_gallery": ["direction", "k"],
}


def test_bench_scale_small_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--pairs", "600", "--dim", "16", "--part-rows", "250",
         "--sections", "retrieval,modality_gap,double_ellipsoid,spectra,separability", "--no-report",
         "--sample-images", "200", "--full-gallery-max", "300", "--sub-gallery-images", "100", "--tmp", str(tmp_path), "--dask", "--parts", "3"],
        capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    last = dict(kv.split("=") for kv in lines[-1].split())
    assert set(last) == {"pairs", "dim", "wall_s", "peak_rss_gb", "bytes_per_vector"}
    assert last["pairs"] == "600" and last["dim"] == "16"
    # float16 release: 16 x 2 bytes of vector + 4 of norm + ids; far below the old 2 x float32 copies (128 B)
    assert float(last["bytes_per_vector"]) < 16 * 2 * 4
    assert any(line.startswith("stage measure") for line in lines)
    assert any("section retrieval" in line and " ok " in line for line in lines)
    # the 2-worker LocalCluster passes agree with one process (moments merged; per-sample parts concatenated)
    dask = [line for line in lines if line.startswith("dask: ")]
    assert len(dask) == 2, lines
    import re

    diffs = [float(x) for x in re.findall(r"(?:spectra|gap|difference) ([0-9.e+-]+)", " ".join(dask))]
    assert diffs and max(diffs) <= 1e-9, dask


def _register(home, run_id, n=180, d=12, seed=0, rows_per_file=100):
    import lance

    rng = np.random.default_rng(seed)
    img = (rng.normal(size=(n, d)) * np.linspace(2, 0.3, d) + 1).astype(np.float16)
    txt = (img.astype(np.float32) * 0.6 - 1 + 0.4 * rng.normal(size=(n, d))).astype(np.float16)
    ids = [f"k{i:06d}" for i in range(n)]
    batches = []
    for s in range(0, n, 40):
        batches += vectors.record_batches(run_id, image_ids=ids[s:s + 40], images=img[s:s + 40],
                                          sample_ids=ids[s:s + 40], text_image_ids=ids[s:s + 40], texts=txt[s:s + 40])
    vectors.write_run_batches(home, run_id, d, batches)
    uri = vectors.connect(home).open_table(vectors.table_name(run_id)).to_lance().uri
    ds = lance.dataset(uri)
    lance.write_dataset(ds.to_table(), uri, mode="overwrite", max_rows_per_file=rows_per_file)  # several fragments
    with catalog.session(home) as con:
        catalog.insert(con, "runs", [dict(run_id=run_id, model_id="m", dataset_id="d", label="t", status="embedded",
                                          n_images=n, n_texts=n, vectors_normalized=False)])
    return run_id


def _snapshot(home, run_id) -> dict[str, pl.DataFrame]:
    out = {}
    with catalog.session(home, read_only=True) as con:
        for table, key in STREAMED_TABLES.items():
            df = catalog.query(con, f"SELECT * FROM {table} WHERE run_id = ?", [run_id])
            df = df.drop([c for c in ("measured_at", "updated_at") if c in df.columns])
            out[table] = df.sort(key or df.columns[:3])
    return out


def _assert_same(a: pl.DataFrame, b: pl.DataFrame, table: str, rel: float = 1e-9) -> None:
    assert a.shape == b.shape and a.columns == b.columns, table
    assert a.height > 0, table
    assert_columns_close(a, b, table, rel)


@pytest.mark.slow
def test_dask_local_cluster_equals_single_process(home, prefect_harness):
    from distributed import LocalCluster

    from clipgeo.stages.freshness import measure_if_stale
    from flows.measure_dist import measure_dist

    run_id = _register(home, "rdist")
    from clipgeo.streaming.reader import LanceRun

    assert len(LanceRun.open(home, run_id).fragment_ids()) >= 3   # ranges cross fragment boundaries
    sections = ["retrieval", "modality_gap", "double_ellipsoid", "spectra"]
    res, why = measure_if_stale(home, run_id, sections=sections)          # the single-process path
    assert res is not None and why.startswith("measured"), why
    single = _snapshot(home, run_id)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        reused = measure_dist(run_id, str(home.root), parts=3, cluster_address=cluster.scheduler_address,
                              sections=sections)
        assert reused["reused"] and reused["parts"] == 0, reused     # the same rule: not measured again
        out = measure_dist(run_id, str(home.root), parts=3, cluster_address=cluster.scheduler_address,
                           sections=sections, force=True)
    assert out["parts"] == 3 and set(out["sections"].values()) == {"ok"} and out["reused"] is None, out
    dist = _snapshot(home, run_id)
    # the Dask-measured run is reused by the single-process path, and force measures it there too
    assert measure_if_stale(home, run_id, sections=sections)[0] is None
    assert measure_if_stale(home, run_id, sections=sections, force=True)[0] is not None
    for table in STREAMED_TABLES:
        _assert_same(single[table], dist[table], table)

