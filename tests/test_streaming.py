"""Streaming from Lance: streamed and in-memory computations agree on the same vectors; samples
are deterministic and stated; retrieval galleries are what they say; storage keeps precision."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from clipgeo.core.arrays import normalize_rows
from clipgeo.geometry.ellipsoid import double_ellipsoid_suite
from clipgeo.geometry.gap import modality_gap
from clipgeo.streaming.partials import (
    blocked_query_ranks,
    query_sample_ranks,
    gallery_summary,
    gap_from_moments,
    merge_partials,
    moment_partial,
    run_retrieval,
    spectra_from_moments,
    streamed_gap,
)
from clipgeo.stages import measure
from clipgeo.store import catalog, vectors
from clipgeo.streaming.reader import LanceRun, fragment_ranges, hash_keys
from clipgeo.topology.spectra import spectra


def _pairs(n=300, d=12, seed=0, captions=1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    img = (rng.normal(size=(n, d)) * np.linspace(2, 0.2, d) + 1.0).astype(dtype)
    txt = (np.repeat(img.astype(np.float64), captions, axis=0) * 0.7 - 0.8
           + 0.3 * rng.normal(size=(n * captions, d))).astype(dtype)
    image_ids = [f"img{i:05d}" for i in range(n)]
    sample_ids = [f"cap{i:05d}_{c}" for i in range(n) for c in range(captions)]
    owners = [image_ids[i] for i in range(n) for _ in range(captions)]
    return img, txt, image_ids, sample_ids, owners


def _write(home, run_id, img, txt, image_ids, sample_ids, owners, *, chunk=None, shuffle_seed=None):
    """Write a run in chunks of ``chunk`` images (with their captions), optionally in a shuffled order."""
    order = np.arange(len(image_ids))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(order)
    chunk = chunk or len(order)
    owners_arr = np.asarray(owners)
    pos = {iid: i for i, iid in enumerate(image_ids)}
    batches = []
    for s in range(0, len(order), chunk):
        rows = order[s:s + chunk]
        want = {image_ids[r] for r in rows}
        t_rows = np.array([k for k, o in enumerate(owners_arr) if o in want], dtype=np.int64)
        t_rows = t_rows[np.argsort([pos[owners[k]] for k in t_rows], kind="stable")] if shuffle_seed is None else t_rows
        batches += vectors.record_batches(run_id, image_ids=[image_ids[r] for r in rows], images=img[rows],
                                          sample_ids=[sample_ids[k] for k in t_rows],
                                          text_image_ids=[owners[k] for k in t_rows], texts=txt[t_rows])
    vectors.write_run_batches(home, run_id, img.shape[1], batches)
    return LanceRun.open(home, run_id, batch_rows=64)


def test_streamed_gap_equals_in_memory_on_aligned_and_multi_caption_runs(home):
    img, txt, ii, ss, oo = _pairs(300, 12)
    run = _write(home, "ral", img, txt, ii, ss, oo, chunk=70)
    g = streamed_gap(run)
    ref = modality_gap(img, txt, paired=True)
    assert g["pairs_from"] == "all"
    for k in ("gap", "gap_raw", "mean_cross_cos", "paired_distance", "mean_paired_cos", "mean_unpaired_cos"):
        assert g[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k
    # several captions per image: the caption rows no longer line up with image rows; the paired
    # values then come from the (complete) sample, the unpaired one is not claimed
    img2, txt2, ii2, ss2, oo2 = _pairs(120, 8, seed=1, captions=3)
    run2 = _write(home, "rmc", img2, txt2, ii2, ss2, oo2, chunk=50)
    rv, info = run2.sample(1000)
    g2 = streamed_gap(run2, rv)
    ref2 = modality_gap(img2, txt2, txt_image_index=np.repeat(np.arange(120), 3))
    # ... the sample is the whole run here, so its pairs are every pair and the unpaired mean is exact
    assert g2["pairs_from"] == "all"
    for k in ("gap", "gap_raw", "paired_distance", "mean_paired_cos", "mean_unpaired_cos"):
        assert g2[k] == pytest.approx(ref2[k], rel=1e-9), k
    # a partial sample: its paired values, and no unpaired mean claimed
    part, _ = run2.sample(40)
    g3 = streamed_gap(run2, part)
    assert g3["pairs_from"] == "sample" and g3["mean_unpaired_cos"] is None and g3["n_pairs"] == 120


def test_streamed_double_ellipsoid_and_spectra_equal_in_memory(home):
    img, txt, ii, ss, oo = _pairs(257, 10, seed=2)
    run = _write(home, "rde", img, txt, ii, ss, oo, chunk=40)
    s = double_ellipsoid_suite(run.chunks("image"), run.chunks("text"))
    m = double_ellipsoid_suite(img.astype(np.float64), txt.astype(np.float64))
    for col in ("shell_mean", "ellipsoid_effective_rank", "conformity_mean", "offcentre_norm_mean"):
        if col in m.modality.columns:
            np.testing.assert_allclose(s.modality[col].to_numpy(), m.modality[col].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(s.per_sample["conformity"].to_numpy(), m.per_sample["conformity"].to_numpy(), rtol=1e-9)
    for k, v in m.cross.items():
        assert s.cross[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    # spectra: streamed chunks, and the merged per-fragment moments, against in-memory numpy
    cs, ss_ = spectra(run.chunks("image"), run.chunks("text"))
    cm, sm = spectra(img, txt)
    np.testing.assert_allclose(cs["sigma"].to_numpy(), cm["sigma"].to_numpy(), rtol=1e-9, atol=1e-12)
    xn = img / np.linalg.norm(img.astype(np.float64), axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(np.cov(xn.T, bias=True) * len(xn))[::-1]
    np.testing.assert_allclose(cs.filter(pl.col("scope") == "image")["sigma"].to_numpy() ** 2, np.clip(lam, 0, None),
                               rtol=1e-6, atol=1e-9)


def test_fragment_partials_merge_exactly(home):
    img, txt, ii, ss, oo = _pairs(400, 9, seed=3)
    vectors.write_run_batches(home, "rfr", 9, vectors.record_batches(
        "rfr", image_ids=ii, images=img, sample_ids=ss, text_image_ids=oo, texts=txt))
    uri = LanceRun.open(home, "rfr").uri
    import lance

    # rewrite with small files so the table has several fragments
    ds = lance.dataset(uri)
    lance.write_dataset(ds.to_table(), uri, mode="overwrite", max_rows_per_file=150)
    run = LanceRun(uri)
    frags = run.fragment_ids()
    assert len(frags) >= 4
    whole = moment_partial(uri)
    merged = merge_partials([moment_partial(uri, grp) for grp in fragment_ranges(frags, 3)])
    a, b = gap_from_moments(whole), gap_from_moments(merged)
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-12), k
    ca, _ = spectra_from_moments(whole)
    cb, _ = spectra_from_moments(merged)
    np.testing.assert_allclose(cb["sigma"].to_numpy(), ca["sigma"].to_numpy(), rtol=1e-9, atol=1e-12)
    ref = modality_gap(img, txt, paired=True)
    assert b["gap"] == pytest.approx(ref["gap"], rel=1e-9)


def test_hash_sample_is_deterministic_order_free_and_nested(home):
    img, txt, ii, ss, oo = _pairs(200, 6, seed=4, captions=2)
    a = _write(home, "rsa", img, txt, ii, ss, oo, chunk=64)
    b = _write(home, "rsb", img, txt, ii, ss, oo, chunk=33, shuffle_seed=7)
    rva, info = a.sample(50, seed=0)
    rvb, _ = b.sample(50, seed=0)
    assert rva.image_ids.tolist() == rvb.image_ids.tolist()          # independent of write order / chunking
    np.testing.assert_array_equal(rva.images, rvb.images)
    keys = hash_keys(ii, 0)
    assert rva.image_ids.tolist() == [ii[k] for k in np.argsort(keys)[:50]]  # the 50 smallest keys, in key order
    assert set(rva.text_image_ids.tolist()) == set(rva.image_ids.tolist()) and rva.texts.shape[0] == 100
    small, _ = a.sample(20, seed=0)
    assert small.image_ids.tolist() == rva.image_ids[:20].tolist()   # nested
    assert a.sample(50, seed=1)[0].image_ids.tolist() != rva.image_ids.tolist()
    assert not info.complete and info.population_images == 200
    # not "the first n by id": a contiguous id range would be img00000..img00049
    assert sorted(rva.image_ids.tolist()) != ii[:50]


def test_sub_gallery_ranks_are_exact_within_each_gallery(home):
    img, txt, ii, ss, oo = _pairs(230, 8, seed=5, captions=2)
    run = _write(home, "rgal", img, txt, ii, ss, oo, chunk=100)
    rv, info = run.sample(30, seed=0)
    ranks, meta = run_retrieval(run, rv, sample=info, seed=0, full_gallery_max=100, sub_gallery_images=50, draws=3)
    assert meta["definition"] == "sub_gallery" and meta["n_galleries"] == 3 and meta["gallery_images"] == 50
    pool, _ = run.sample(150, seed=0)
    for g in range(3):
        gi = pool.image_ids[g * 50:(g + 1) * 50]
        im = pool.images[g * 50:(g + 1) * 50].astype(np.float64)
        sel = np.isin(pool.text_image_ids, gi)
        tx = pool.texts[sel].astype(np.float64)
        owner = np.searchsorted(gi, pool.text_image_ids[sel], sorter=np.argsort(gi))
        owner = np.argsort(gi)[owner]
        im /= np.linalg.norm(im, axis=1, keepdims=True)
        tx /= np.linalg.norm(tx, axis=1, keepdims=True)
        s = tx @ im.T                                             # brute force, from the definition
        own = s[np.arange(len(tx)), owner]
        t2i = (s > own[:, None] + 1e-5).sum(1)
        got = ranks.filter((pl.col("gallery") == g) & (pl.col("direction") == "text_to_image"))
        assert dict(zip(got["query_id"], got["rank"])) == dict(zip(pool.sample_ids[sel].tolist(), t2i.tolist()))
    summ = gallery_summary(ranks, meta)
    r1 = summ.filter((pl.col("direction") == "text_to_image") & (pl.col("k") == 1))
    per = [float((ranks.filter((pl.col("gallery") == g) & (pl.col("direction") == "text_to_image"))["rank"] < 1).mean())
           for g in range(3)]
    assert r1["recall_mean"][0] == pytest.approx(np.mean(per)) and r1["recall_std"][0] == pytest.approx(np.std(per))
    # at most full_gallery_max images: one exact full gallery
    ranks_f, meta_f = run_retrieval(run, rv, sample=info, seed=0, full_gallery_max=1000)
    assert meta_f["definition"] == "full_gallery" and ranks_f.height == 230 + 460


def test_blocked_query_ranks_match_brute_force():
    rng = np.random.default_rng(6)
    gal = rng.normal(size=(500, 16))
    gal /= np.linalg.norm(gal, axis=1, keepdims=True)
    qi = rng.choice(500, 40, replace=False)
    q = gal[qi] + 0.5 * rng.normal(size=(40, 16))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    blocks = [(gal[s:s + 128], (qi[:, None] == np.arange(s, min(s + 128, 500))[None, :])) for s in range(0, 500, 128)]
    got = blocked_query_ranks(q, gal[qi], blocks)
    s = q @ gal.T
    want = (s > s[np.arange(40), qi][:, None]).sum(1)
    np.testing.assert_array_equal(got, want)


def test_query_sample_ranks_against_the_full_gallery(home):
    img, txt, ii, ss, oo = _pairs(150, 8, seed=11, captions=2)
    run = _write(home, "rqs", img, txt, ii, ss, oo, chunk=40)
    rv, _ = run.sample(150, seed=0)
    ranks, info = query_sample_ranks(run, rv, 25)
    assert info["definition"] == "query_sample" and info["gallery_images"] == 150 and info["gallery_texts"] == 300
    im = img.astype(np.float64) / np.linalg.norm(img.astype(np.float64), axis=1, keepdims=True)
    tx = txt.astype(np.float64) / np.linalg.norm(txt.astype(np.float64), axis=1, keepdims=True)
    owner = np.repeat(np.arange(150), 2)
    s = tx @ im.T                                                   # brute force, every caption x image
    t2i = {ss[c]: int((s[c] > s[c, owner[c]]).sum()) for c in range(300)}
    best = np.array([s[owner == i, i].max() for i in range(150)])
    i2t = {ii[i]: int(((s[:, i] > best[i]) & (owner != i)).sum()) for i in range(150)}
    got_t = ranks.filter(pl.col("direction") == "text_to_image")
    got_i = ranks.filter(pl.col("direction") == "image_to_text")
    assert got_i.height == 25 and got_t.height == 25
    assert all(t2i[q] == r for q, r in zip(got_t["query_id"], got_t["rank"]))
    assert all(i2t[q] == r for q, r in zip(got_i["query_id"], got_i["rank"]))
    assert got_i["query_id"].to_list() == rv.image_ids[:25].tolist()   # the hash sample's head


def test_float16_release_is_stored_once_in_float16(home):
    img, txt, ii, ss, oo = _pairs(50, 8, seed=8, dtype=np.float16)
    run = _write(home, "rf16", img, txt, ii, ss, oo)
    assert run.dtype == np.float16 and run.format == 2
    tbl = vectors.connect(home).open_table("vectors_rf16").to_lance()
    assert "vector_norm" not in tbl.schema.names and tbl.schema.field("vector").type.value_type == pa.float16()
    rv = vectors.read_run(home, "rf16")
    np.testing.assert_array_equal(rv.images, img.astype(np.float32))   # exactly the float16 values
    rvn = vectors.read_run(home, "rf16", normalized=True)
    ref = img.astype(np.float64) / np.linalg.norm(img.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(rvn.images, ref, rtol=1e-6)
    # DuckDB reads no float16: clipgeo sql sees the vectors cast to float32
    from clipgeo.store.query import read_only_query

    with catalog.session(home):
        pass
    df = read_only_query(home, "SELECT count(*) AS n, avg(array_cosine_similarity(vector::FLOAT[8], vector::FLOAT[8])) AS c"
                               " FROM vectors_rf16")
    assert df["n"][0] == 100 and df["c"][0] == pytest.approx(1.0, rel=1e-5)


def test_format1_tables_stay_readable_and_migrate(home):
    img, txt, ii, ss, oo = _pairs(40, 6, seed=9, dtype=np.float16)
    img32, txt32 = img.astype(np.float32), txt.astype(np.float32)
    vec = pa.list_(pa.float32(), 6)
    old = pa.schema([("run_id", pa.string()), ("modality", pa.string()), ("item_id", pa.string()),
                     ("image_id", pa.string()), ("vector", vec), ("vector_norm", vec)])
    fl = lambda m: pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), 6)  # noqa: E731
    t = pa.table([pa.array(["rold"] * 80), pa.array(["image"] * 40 + ["text"] * 40), pa.array(ii + ss),
                  pa.array(ii + oo), fl(np.concatenate([img32, txt32])),
                  fl(normalize_rows(np.concatenate([img32, txt32]), dtype=np.float32))], schema=old)
    vectors.connect(home).create_table("vectors_rold", data=t)
    before = vectors.read_run(home, "rold", normalized=True)
    s_old = LanceRun.open(home, "rold")
    assert s_old.format == 1
    g_old = streamed_gap(s_old)
    from clipgeo.store import locks
    from flows.cli import main

    with locks.claim(home, "run-rold"):      # a flow holds the run: migrating it waits, then gives up
        with pytest.raises(locks.LockTimeout):
            vectors.migrate_home(home, wait_seconds=0.5)
    assert LanceRun.open(home, "rold").format == 1
    with catalog.session(home):
        pass
    assert main(["migrate", "--home", str(home.root)]) in (0, None)   # the command: catalog, then every table
    after_run = LanceRun.open(home, "rold")
    assert after_run.format == 2 and after_run.dtype == np.float16   # exact float16 values: stored as float16
    after = vectors.read_run(home, "rold", normalized=True)
    np.testing.assert_allclose(after.images, before.images, rtol=1e-6)
    np.testing.assert_array_equal(vectors.read_run(home, "rold").texts, txt32)
    assert streamed_gap(after_run)["gap"] == pytest.approx(g_old["gap"], rel=1e-9)
    assert vectors.migrate_home(home) == []                           # idempotent


def test_measure_states_samples_and_gallery(home):
    img, txt, ii, ss, oo = _pairs(120, 8, seed=10)
    _write(home, "rms", img, txt, ii, ss, oo, chunk=50)
    with catalog.session(home) as con:
        catalog.insert(con, "runs", [dict(run_id="rms", model_id="m", dataset_id="d", label="t", status="embedded",
                                          n_images=120, n_texts=120, vectors_normalized=False)])
    res = measure.measure_run(home, "rms", sections=["retrieval", "modality_gap", "separability", "spectra"],
                              sample_images=40, full_gallery_max=60, sub_gallery_images=30, query_sample=10)
    assert set(res.sections.values()) == {"ok"}, res.sections
    with catalog.session(home, read_only=True) as con:
        rows = {r[0]: r[1:] for r in catalog.execute(
            con, "SELECT section, method, n_images, population_images, statement FROM measure_samples")}
        assert rows["separability"][:3] == ("hash_sample", 40, 120) and "40 of 120 images" in rows["separability"][3]
        assert rows["spectra"][0] == "streamed" and rows["modality_gap"][0] == "streamed"
        assert "sub-galleries: 4 disjoint galleries of 30 images" in rows["retrieval"][3]
        n_cand = catalog.execute(con, "SELECT DISTINCT n_candidates FROM retrieval WHERE direction = 'text_to_image'")
        assert n_cand == [(30,)]
        gal = catalog.execute(con, "SELECT definition, n_galleries, n_queries FROM retrieval_gallery"
                                   " WHERE direction = 'text_to_image' AND k = 1")
        assert sorted(gal) == [("query_sample", 1, 10), ("sub_gallery", 4, 120)]
        n_train = catalog.execute(con, "SELECT max(n_train + n_test) FROM separability")[0][0]
        assert n_train == 80   # 40 pairs per modality: the sample, not the run


def test_row_slices_split_one_fragment_and_merge_exactly(home):
    from clipgeo.streaming.reader import row_slices

    assert row_slices([(0, 10), (3, 5)], 3) == [[(0, 0, 5)], [(0, 5, 5)], [(3, 0, 5)]]
    assert row_slices([(0, 7)], 2) == [[(0, 0, 4)], [(0, 4, 3)]]
    img, txt, ii, ss, oo = _pairs(300, 7, seed=12)
    run = _write(home, "rsl", img, txt, ii, ss, oo, chunk=64)
    assert len(run.fragment_ids()) == 1
    pieces = run.row_slices(5)
    assert len(pieces) == 5
    seen = np.concatenate([np.concatenate(list(run.arrays("image", fragment_ids=p))) for p in pieces])
    np.testing.assert_array_equal(seen, np.concatenate(list(run.arrays("image"))))
    whole = gap_from_moments(moment_partial(run.uri))
    merged = gap_from_moments(merge_partials([moment_partial(run.uri, p) for p in pieces]))
    for k in whole:
        assert merged[k] == pytest.approx(whole[k], rel=1e-12), k


def test_per_sample_rows_stream_through_parquet_parts_and_equal_in_memory(home):
    """geo_per_sample is written from Parquet parts (per row range, with ids), never as one frame;
    its values equal the in-memory suite's on the same vectors; the scratch folder is removed, and
    a crashed measurement's leftover folder (its process gone) is cleaned by the next one."""
    import subprocess

    from clipgeo.geometry.ellipsoid import double_ellipsoid_suite, moments, per_sample_plan
    from clipgeo.streaming.partials import PerSampleFiles, per_sample_partial, read_per_sample

    img, txt, ii, ss, oo = _pairs(150, 6, seed=21, captions=2)
    run = _write(home, "rpp", img, txt, ii, ss, oo, chunk=40)
    with catalog.session(home) as con:
        catalog.insert(con, "runs", [dict(run_id="rpp", model_id="m", dataset_id="d", label="t", status="embedded",
                                          n_images=150, n_texts=300, vectors_normalized=False)])
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = home.root / "tmp" / f"measure-rpp-{dead.pid}-deadbeef"
    stale.mkdir(parents=True)
    (stale / "per_sample-00000.parquet").write_bytes(b"half-written")
    res = measure.measure_run(home, "rpp", sections=["double_ellipsoid"])
    assert res.sections == {"double_ellipsoid": "ok"} and res.rows["geo_per_sample"] == 450
    assert list((home.root / "tmp").iterdir()) == []          # the stale folder and this run's parts are gone

    ref = double_ellipsoid_suite(img.astype(np.float64), txt.astype(np.float64), keep_per_sample=True)
    mem = ref.per_sample.with_columns(
        pl.Series("item_id", [ii[r] if m == "image" else ss[r] for m, r in zip(ref.per_sample["modality"],
                                                                               ref.per_sample["row"])]))
    with catalog.session(home, read_only=True) as con:
        got = catalog.query(con, "SELECT * FROM geo_per_sample WHERE run_id = 'rpp'")
    joined = mem.join(got, on=["modality", "item_id"], suffix="_db")
    assert joined.height == 450
    for col in ("radius", "mahalanobis", "conformity", "cos_to_raw_mean", "cos_to_unit_mean", "length"):
        np.testing.assert_allclose(joined[f"{col}_db"].to_numpy(), joined[col].to_numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=col)

    # three row ranges written apart and read back equal one pass over the whole table
    mi, mt = moments(run.chunks("image"), "image"), moments(run.chunks("text"), "text")
    plans = {"image": per_sample_plan(mi), "text": per_sample_plan(mt)}
    paths = []
    for k, piece in enumerate(run.row_slices(3)):
        paths.append(str(home.root / f"part{k}.parquet"))
        per_sample_partial(run.uri, plans, paths[-1], piece, batch_rows=32)
    whole = str(home.root / "whole.parquet")
    per_sample_partial(run.uri, plans, whole)
    for modality, mom in (("image", mi), ("text", mt)):
        a = read_per_sample(paths, modality, mom.n, plans[modality].rank)
        b = read_per_sample([whole], modality, mom.n, plans[modality].rank)
        np.testing.assert_array_equal(a.conformity, b.conformity)
        np.testing.assert_array_equal(a.radius, b.radius)
    with pytest.raises(ValueError, match="moments counted"):
        read_per_sample(paths[:2], "image", mi.n, 1)

    # the summaries from lazily read parts (one field at a time, as measure_run reads them)
    # equal the in-memory suite's on the same vectors
    lazy = tuple(PerSampleFiles(paths, m, mom.n, plans[m].rank) for m, mom in (("image", mi), ("text", mt)))
    assert lazy[0].n == 150 and lazy[1].n == 300
    np.testing.assert_array_equal(lazy[1].conformity, read_per_sample(paths, "text", mt.n, 1).conformity)
    with pytest.raises(AttributeError, match="no per-sample field"):
        lazy[0].field("nonsense")
    streamed = double_ellipsoid_suite(run.chunks("image"), run.chunks("text"), keep_per_sample=False,
                                      moments_in=(mi, mt), per_sample_in=lazy)
    from polars.testing import assert_frame_equal

    assert_frame_equal(streamed.modality, ref.modality, check_exact=False, rtol=1e-9, atol=1e-12)
    assert_frame_equal(streamed.histograms, ref.histograms, check_exact=False, rtol=1e-9, atol=1e-12)
    assert streamed.cross == pytest.approx(ref.cross, rel=1e-9, abs=1e-12)


def test_migration_012_keeps_per_sample_rows_and_drops_the_index(tmp_path):
    import shutil

    import duckdb

    from clipgeo.core.config import SQL_DIR

    old = tmp_path / "sql"
    shutil.copytree(SQL_DIR, old)
    for f in (old / "schema").glob("01[2-9]_*.sql"):
        f.unlink()
    for f in (old / "views").glob("*.sql"):     # today's views need today's columns: the old catalog has none
        f.unlink()
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    catalog.migrate(con, old)
    catalog.execute(con, "INSERT INTO geo_per_sample (run_id, item_id, modality, radius, cos_to_raw_mean,"
                         " cos_to_unit_mean) VALUES ('r', 'a', 'image', 1.5, 0.25, 0.5)")
    assert catalog.execute(con, "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'geo_per_sample'"
                                " AND constraint_type = 'PRIMARY KEY'")[0][0] == 1
    assert "012_rows_at_scale.sql" in catalog.migrate(con)
    assert catalog.execute(con, "SELECT run_id, item_id, modality, radius, cos_to_raw_mean, cos_to_unit_mean"
                                " FROM geo_per_sample") == [("r", "a", "image", 1.5, 0.25, 0.5)]
    assert catalog.execute(con, "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'geo_per_sample'"
                                " AND constraint_type = 'PRIMARY KEY'")[0][0] == 0
    assert catalog.execute(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'run_summary'")[0][0] == 0
    con.close()


def test_seen_ids_finds_exactly_the_repeats_a_set_finds():
    from clipgeo.sources.embeddings import SeenIds

    rng = np.random.default_rng(3)
    seen, ref = SeenIds(), set()
    for _ in range(40):   # 40 chunks: blocks merge as they grow, repeats within and across chunks
        ids = [f"k{v}" for v in rng.integers(0, 3000, size=200)]
        rows = np.flatnonzero(rng.random(200) > 0.1)   # rows already rejected for other reasons are not ids "seen"
        got = seen.first_seen(ids, rows)
        want = []
        for k in rows.tolist():
            want.append(ids[k] not in ref)
            ref.add(ids[k])
        assert got.tolist() == want
    assert len(seen) == len(ref) and len(seen.blocks) <= 12
