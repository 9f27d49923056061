"""Issue 27: the one streamed moment pass (raw = normalised for normalised-only runs), exact cosine
moments from the modality sums, BLAS lanes and the reader thread, one recall
definition for galleries, exact blocked query ranks, and the summary table at 1M rows. Oracles:
brute-force numpy from the definitions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clipgeo.stages import measure
from clipgeo.store import catalog, vectors
from clipgeo.streaming.partials import blocked_query_ranks, gallery_summary, merge_partials, moment_partial, unit_is_raw
from clipgeo.streaming.reader import LanceRun, fragment_ranges
from clipgeo.streaming.threads import Lanes, prefetch
from clipgeo.topology.cosines import cosine_distributions, cosine_moments, cosine_sums

ROOT = Path(__file__).resolve().parents[1]


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(img, txt, idx):
    """mean and std of every cosine population, enumerated in float64 from the definitions."""
    u, t = _unit(img), _unit(txt)
    out = {}
    for kind, a in (("image_image", u), ("text_text", t)):
        c = a @ a.T
        v = c[np.triu_indices(a.shape[0], 1)]
        out[kind] = (v.mean(), v.std())
    c = t @ u.T
    mask = np.ones(c.shape, bool)
    mask[np.arange(t.shape[0]), idx] = False
    out["unpaired_image_text"] = (c[mask].mean(), c[mask].std())
    p = c[np.arange(t.shape[0]), idx]
    out["paired_image_text"] = (p.mean(), p.std())
    return out


def _data(n=80, d=12, captions=1, seed=0, normalized=False, dtype=np.float32):
    rng = np.random.default_rng(seed)
    img = (rng.normal(size=(n, d)) * np.linspace(2, 0.3, d) + 0.8).astype(dtype)
    txt = (np.repeat(img.astype(np.float64), captions, 0) * 0.6 - 0.5 + 0.4 * rng.normal(size=(n * captions, d))).astype(dtype)
    if normalized:
        img, txt = (_unit(img).astype(dtype), _unit(txt).astype(dtype))
    return img, txt, np.repeat(np.arange(n), captions)


@pytest.mark.parametrize("captions", [1, 3])
def test_cosine_moments_equal_brute_force(captions):
    img, txt, idx = _data(70, 9, captions=captions, seed=captions)
    got = cosine_moments(*cosine_sums(img, txt, idx))
    want = _brute(img, txt, idx)
    for kind, (m, s) in want.items():
        assert got[kind][0] == pytest.approx(m, abs=1e-12, rel=1e-12), kind
        assert got[kind][1] == pytest.approx(s, abs=1e-12, rel=1e-12), kind
    # the distributions' summary carries them, sampled or not, and says so
    _, summ = cosine_distributions(img, txt, idx, max_exact_pairs=100, n_sample=500)
    for row in summ.iter_rows(named=True):
        assert row["moments_exact"] and row["mean"] == pytest.approx(want[row["kind"]][0], abs=1e-12)
        assert row["std"] == pytest.approx(want[row["kind"]][1], abs=1e-12)
    assert summ.filter(pl.col("kind") == "image_image")["sampled"][0]   # its histogram is from sampled pairs


def _register(home, run_id, img, txt, idx, normalized):
    n = img.shape[0]
    image_ids = [f"i{i:04d}" for i in range(n)]
    caps = [f"s{c:05d}" for c in range(txt.shape[0])]
    vectors.write_run(home, run_id, image_ids=image_ids, images=img, sample_ids=caps,
                      text_image_ids=[image_ids[i] for i in idx], texts=txt)
    with catalog.session(home) as con:
        catalog.insert(con, "runs", [dict(run_id=run_id, model_id="m", dataset_id="d", label=f"test {run_id}",
                                          status="embedded", n_images=n, n_texts=txt.shape[0],
                                          vectors_normalized=normalized)])


@pytest.mark.parametrize("normalized", [False, True])
def test_streamed_cosines_and_unpaired_gap_are_exact_over_the_whole_run(home, normalized):
    img, txt, idx = _data(90, 10, seed=5, normalized=normalized)
    _register(home, "rc", img, txt, idx, normalized)
    measure.measure_run(home, "rc", sections=["modality_gap", "cosines", "spectra"], sample_images=30)
    want = _brute(img, txt, idx)
    with catalog.session(home, read_only=True) as con:
        rows = catalog.query(con, "SELECT * FROM topo_cosine_summary WHERE run_id = 'rc'").to_dicts()
        gap = catalog.query(con, "SELECT * FROM modality_gap WHERE run_id = 'rc'").to_dicts()[0]
    assert {r["kind"] for r in rows} == set(want)
    for r in rows:   # the sample has 30 of 90 images; mean and std are over every pair of the run
        assert r["moments_exact"] and r["mean"] == pytest.approx(want[r["kind"]][0], abs=1e-12), r["kind"]
        assert r["std"] == pytest.approx(want[r["kind"]][1], abs=1e-12), r["kind"]
    assert rows[0]["moments_population"] in (90 * 89 // 2, 90 * 89, 90 * 90 - 90, 90)
    assert gap["mean_unpaired_cos"] == pytest.approx(want["unpaired_image_text"][0], abs=1e-12)
    assert gap["mean_paired_cos"] == pytest.approx(want["paired_image_text"][0], abs=1e-12)


def test_one_pass_moments_alias_for_normalised_runs_and_match_oracles(home):
    for normalized, run_id in ((False, "rr"), (True, "rn")):
        img, txt, idx = _data(120, 8, seed=7, normalized=normalized, dtype=np.float16)
        _register(home, run_id, img, txt, idx, normalized)
        run = LanceRun.open(home, run_id, batch_rows=32)
        moms = moment_partial(run.uri, batch_rows=32)
        assert unit_is_raw(moms) is normalized and "paired" in moms and moms["paired"].n == 120
        for m, x in (("image", img), ("text", txt)):
            u = _unit(x)
            lam = np.linalg.eigvalsh(np.cov(u.T, bias=True))[::-1]
            got = moms[f"unit_{m}"].finalize().eigenvalues
            np.testing.assert_allclose(got, lam, rtol=1e-9, atol=1e-15 * lam[0])
            raw = np.asarray(x, np.float64) if not normalized else u   # a normalised-only run is measured on x̂
            lam_r = np.linalg.eigvalsh(np.cov(raw.T, bias=True))[::-1]
            np.testing.assert_allclose(moms[f"raw_{m}"].finalize().eigenvalues, lam_r, rtol=1e-9, atol=1e-15 * lam_r[0])
        # the auto-detection agrees with the catalog flag; partials over fragments merge to the same
        assert unit_is_raw(moment_partial(run.uri)) is normalized
        merged = merge_partials([moment_partial(run.uri, grp) for grp in fragment_ranges(run.fragment_ids(), 2)])
        assert unit_is_raw(merged) is normalized
        np.testing.assert_allclose(merged["unit_image"].finalize().eigenvalues,
                                   moms["unit_image"].finalize().eigenvalues, rtol=1e-9, atol=1e-18)


def test_moment_pass_names_a_zero_row(home):
    import lance
    import pyarrow as pa

    img, txt, idx = _data(20, 4, seed=1)
    _register(home, "rz", img, txt, idx, False)
    uri = LanceRun.open(home, "rz").uri
    tbl = lance.dataset(uri).to_table()
    vec = tbl.column("vector").combine_chunks()
    flat = vec.flatten().to_numpy(zero_copy_only=False).copy()
    flat[3 * 4:4 * 4] = 0.0                      # image row 3: a zero vector (import would have rejected it)
    tbl = tbl.set_column(tbl.schema.get_field_index("vector"), "vector",
                         pa.FixedSizeListArray.from_arrays(pa.array(flat, vec.type.value_type), 4))
    lance.write_dataset(tbl, uri, mode="overwrite")
    with pytest.raises(ValueError, match="image row 3 .* zero vector"):
        moment_partial(uri)


def test_lanes_split_the_blas_threads_and_restore_them(monkeypatch):
    from threadpoolctl import threadpool_info

    def blas_counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    for var in ("CLIPGEO_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    before = blas_counts()
    monkeypatch.setenv("CLIPGEO_THREADS", "4")
    with Lanes(2) as lanes:
        assert lanes.per_lane == 2 and lanes.summary() == "2 lanes x 2 BLAS threads"
        assert set(blas_counts()) == {2}
        assert lanes.map(lambda k: k * k, range(7)) == [k * k for k in range(7)]   # in order
        done = []

        def slow_then_record(k):
            if k == 0:
                raise ZeroDivisionError("item 0 failed")
            time.sleep(0.2)
            done.append(k)
        with pytest.raises(ZeroDivisionError):
            lanes.map(slow_then_record, [0, 1])
        assert done == [1]          # the error is raised only once every item has finished
    assert blas_counts() == before
    monkeypatch.setenv("CLIPGEO_THREADS", "1")             # one thread allowed: one lane
    with Lanes(2) as lanes:
        assert (lanes.lanes, lanes.per_lane) == (1, 1) and set(blas_counts()) == {1}
        assert lanes.map(lambda k: -k, range(3)) == [0, -1, -2]
    assert blas_counts() == before


def test_trmm_without_the_gil_equals_scipys_wrapper():
    """The per-sample pass's Mahalanobis product, called through ctypes (GIL released), is scipy's
    ``strmm``/``dtrmm`` to the bit, and ‖Rᵀc‖² is cᵀΣ⁻¹c (numpy from the definition)."""
    from scipy.linalg.blas import dtrmm, strmm

    from clipgeo.geometry.ellipsoid import _trmm_nogil

    rng = np.random.default_rng(3)
    d = 24
    a = rng.normal(size=(200, d))
    cov = np.cov(a, rowvar=False, bias=True)
    r64 = np.asfortranarray(np.linalg.cholesky(np.linalg.inv(cov)))
    c = rng.normal(size=(57, d))
    for dt, wrapper in ((np.float32, strmm), (np.float64, dtrmm)):
        tri, cc = np.asfortranarray(r64.astype(dt)), np.ascontiguousarray(c.astype(dt))
        want = wrapper(1.0, tri, cc.T, side=0, lower=1, trans_a=1).T
        got = cc.copy()
        _trmm_nogil(tri, got)
        assert np.array_equal(got, want)
    got = c.copy()
    _trmm_nogil(r64, got)
    maha = np.einsum("ij,jk,ik->i", c, np.linalg.inv(cov), c)
    assert np.allclose((got ** 2).sum(axis=1), maha, rtol=1e-10)
    with pytest.raises(ValueError, match="triangular factor"):
        _trmm_nogil(r64, np.zeros((3, d + 1)))


def test_prefetch_keeps_order_raises_and_stops():
    assert list(prefetch(iter(range(20)), depth=2)) == list(range(20))

    def boom():
        yield 1
        raise RuntimeError("reader failed")

    with pytest.raises(RuntimeError, match="reader failed"):
        list(prefetch(boom()))
    gen = prefetch(iter(range(10 ** 6)), depth=1)
    assert next(gen) == 0
    gen.close()                                   # the producer thread stops


def test_gallery_summary_uses_the_one_recall_definition():
    from clipgeo.retrieval import recall_at_k

    rng = np.random.default_rng(3)
    ranks = pl.DataFrame({"direction": ["text_to_image"] * 40, "query_id": [str(i) for i in range(40)],
                          "rank": rng.integers(0, 4, 40).astype(np.int32), "ties": rng.integers(0, 2, 40).astype(np.int32),
                          "gallery": np.repeat([0, 1], 20)})
    got = gallery_summary(ranks, {"definition": "sub_gallery", "gallery_images": 20, "gallery_texts": 20, "statement": "s"})
    for k in (1, 5):
        row = got.filter(pl.col("k") == k).to_dicts()[0]
        per = [recall_at_k(ranks.filter(pl.col("gallery") == g)["rank"].to_numpy(), (k,),
                           ranks.filter(pl.col("gallery") == g)["ties"].to_numpy()) for g in (0, 1)]
        assert row["recall_mean"] == pytest.approx(np.mean([p[f"recall@{k}"] for p in per]))
        assert row["recall_pessimistic_mean"] == pytest.approx(np.mean([p[f"recall_pessimistic@{k}"] for p in per]))
    assert got["n_tied_queries"][0] == int((ranks["ties"] > 0).sum())


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_blocked_query_ranks_are_exact_with_ties(dtype):
    rng = np.random.default_rng(8)
    gal = _unit(rng.normal(size=(400, 24)))
    gal[50:60] = gal[0]                           # exact duplicates: ties for the queries whose correct item is 0
    qi = np.r_[0, rng.choice(np.arange(60, 400), 29, replace=False)]
    q = _unit(gal[qi] + 0.05 * rng.normal(size=(30, 24)))   # close to their items: many near-ties in fp16
    blocks = [(gal[s:s + 64], qi[:, None] == np.arange(s, min(s + 64, 400))[None, :]) for s in range(0, 400, 64)]
    ranks, ties = blocked_query_ranks(q, gal[qi], blocks, dtype=dtype, with_ties=True)
    own = np.einsum("ij,ij->i", _unit(q), _unit(gal[qi]))
    s = np.stack([np.einsum("ij,ij->i", _unit(q), np.broadcast_to(_unit(gal)[j], q.shape)) for j in range(400)], 1)
    s[np.arange(30), qi] = -np.inf
    np.testing.assert_array_equal(ranks, (s > own[:, None]).sum(1))
    np.testing.assert_array_equal(ties, (s == own[:, None]).sum(1))
    assert ties[0] == 10


def test_summary_table_columns_fit_a_million_rows_and_long_labels():
    from flows.summary import Summary, format_summary

    label = "imported embeddings laion-1m-with-a-long-name (normalised)"
    r = dict(run_id="ree83da4280da", label=f"{label} on bench-1", n_images=1_000_000, n_texts=1_000_000,
             t2i_r1=0.271, i2t_r1=0.3, gap=0.8123, separability_accuracy=1.0, t2i_r1_chance=1e-6)
    text = format_summary(Summary("h", "c", "l", [], 1.0, {}, [r]))
    line = next(x for x in text.splitlines() if x.strip().startswith("ree83da4280da"))
    assert label in line and "1,000,000  1,000,000" in line and "10000001000000" not in text


def test_bench_measure_tiny(tmp_path):
    """The benchmark end to end on a tiny release (no timing asserted): both sides agree."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_measure.py"), "--pairs", "600", "--dim", "16",
                          "--work", str(tmp_path), "--sections", "retrieval,modality_gap,spectra,cosines"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("pairs=600 ") and "ratio=" in last and "peak_rss_gb=" in last
    worst = float(last.split("max_rel_diff=")[1].split()[0])
    assert worst < 1e-9, out.stdout
    # --repeat-moments: passes over the imported run, the resident set after each
    import duckdb

    home = tmp_path / "home600"
    with duckdb.connect(str(home / "catalog.duckdb"), read_only=True) as con:
        run_id = con.execute("SELECT run_id FROM runs").fetchall()[0][0]
    rep = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_measure.py"), "--home", str(home),
                          "--run-id", run_id, "--repeat-moments", "2"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert rep.returncode == 0, rep.stderr[-3000:]
    lines = [x for x in rep.stdout.splitlines() if x.startswith("pass ")]
    assert [x.split(":")[0] for x in lines] == ["pass 1", "pass 2"] and "1,200 rows scanned" in lines[0], rep.stdout
