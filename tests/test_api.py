"""The library face: ``import clipgeo`` is light, ``clipgeo.measure`` on any model's arrays gives
the pipeline's own tables, headline and page, every input type gives the same result, and bad
input gets one clear error naming the argument."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import clipgeo
from clipgeo.api import ON_DEMAND_SECTIONS
from clipgeo.store import catalog, vectors
from tests.tables import assert_columns_close

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numba", "lancedb", "prefect", "umap", "hdbscan", "open_clip", "duckdb", "sklearn")
STREAMED = ["retrieval", "modality_gap", "double_ellipsoid", "spectra"]


def test_import_clipgeo_loads_nothing_heavy():
    code = ("import sys, clipgeo; import clipgeo.topology, clipgeo.geometry; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"import clipgeo loaded {out.stdout.strip()}"


def test_public_names_resolve_and_are_documented():
    for name in clipgeo.__all__:
        if name == "__version__":
            continue
        obj = getattr(clipgeo, name)
        assert callable(obj), name
        doc = obj.__doc__ or ""
        assert doc.strip(), f"clipgeo.{name} has no docstring"
    for name in ("measure", "import_arrays", "measure_if_stale", "as_vectors"):   # numpydoc sections
        doc = getattr(clipgeo, name).__doc__
        assert "Parameters\n" in doc and "Returns\n" in doc and "Examples\n" in doc, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        clipgeo.nope  # noqa: B018


# ---- the pipeline's run and the same arrays through clipgeo.measure --------------------------------

@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """A tiny model embedded the shapes val split through the embed stage, measured like the pipeline."""
    from clipgeo.stages.embedding import ModelRef, embed_run
    from clipgeo.stages.freshness import measure_if_stale
    from tests.conftest import make_prepared_home

    home, dataset_id, ckpt = make_prepared_home(tmp_path_factory.mktemp("api") / "home", n_val=60, steps=3)
    plan = embed_run(home, ModelRef("clipgeo-tiny-vit", ckpt), dataset_id, progress=False)
    res, _ = measure_if_stale(home, plan.run_id)
    assert res is not None
    return home, plan.run_id


def _keys(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if not df[c].dtype.is_float() and df[c].dtype != pl.List]


def _assert_same_table(a: pl.DataFrame, b: pl.DataFrame, table: str, rel: float = 1e-12) -> None:
    assert a.columns == b.columns, table
    assert a.height == b.height, (table, a.height, b.height)
    keys = [c for c in _keys(a) if c not in ("run_id", "message") and not c.endswith("dataset_id")]
    a, b = a.drop("run_id").sort(keys, nulls_last=True), b.drop("run_id").sort(keys, nulls_last=True)
    # the data's identity has a dataset id of its own
    assert_columns_close(a, b, table, rel, skip=lambda col: col.endswith("dataset_id"))


def _stored_order(home, run_id):
    """The run's vectors in the order its Lance table stores them (the order the streamed sums
    run in: the same order gives the same floating-point sums)."""
    t = vectors.connect(home).open_table(vectors.table_name(run_id)).to_lance().to_table()
    mods = np.array(t.column("modality").to_pylist())
    mat = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    item, owner = np.array(t.column("item_id").to_pylist()), np.array(t.column("image_id").to_pylist())
    im, tx = mods == "image", mods == "text"
    row_of = {i: k for k, i in enumerate(item[im])}
    return vectors.RunVectors(run_id=run_id, image_ids=item[im], images=mat[im], sample_ids=item[tx],
                              text_image_ids=owner[tx], texts=mat[tx], normalized_only=False), \
        np.array([row_of[o] for o in owner[tx]])


@pytest.fixture(scope="module")
def from_arrays(pipeline_run, tmp_path_factory):
    home, run_id = pipeline_run
    rv, text_image = _stored_order(home, run_id)
    with catalog.session(home, read_only=True) as con:
        (scale, objective), = catalog.execute(con, "SELECT m.logit_scale, m.objective FROM runs r JOIN models m "
                                                   "USING (model_id) WHERE run_id = ?", [run_id])
        caps = dict(catalog.execute(con, "SELECT sample_id, caption FROM samples s JOIN runs r USING (dataset_id) "
                                         "WHERE run_id = ?", [run_id]))
    m = clipgeo.measure(rv.images, rv.texts, text_image=text_image, captions=[caps[s] for s in rv.sample_ids],
                        image_ids=rv.image_ids, sample_ids=rv.sample_ids, logit_scale=scale, objective=objective,
                        model="clipgeo-tiny-vit",
                        home=tmp_path_factory.mktemp("arrays") / "home")
    return m


def test_measure_on_a_pipeline_runs_arrays_gives_its_catalog_rows(pipeline_run, from_arrays):
    home, run_id = pipeline_run
    m = from_arrays
    stored = clipgeo.run_tables(home, run_id)
    assert sorted(m.tables) == sorted(stored)
    # the default measured all but the costly sections; reading their tables below measures them
    assert set(m.not_run) == set(ON_DEMAND_SECTIONS)
    assert {"retrieval", "double_ellipsoid"} <= {s for s, st in m.sections.items() if st == "ok"}
    filled = 0
    for table, rows in stored.items():   # measure_sections and measure_samples come last
        when = [c for c in ("seconds", "cpu_seconds", "measured_at") if c in rows.columns]   # when and how long
        _assert_same_table(rows.drop(when), m.tables[table].drop(when), table)
        filled += rows.height > 0
    assert filled >= 25
    assert m.not_run == [] and m.sections == {s: st for s, st in zip(stored["measure_sections"]["section"],
                                                                     stored["measure_sections"]["status"])}
    assert {"umap", "clusters", "bootstrap", "intrinsic_dim"} <= {s for s, st in m.sections.items() if st == "ok"}
    with catalog.session(home, read_only=True) as con:
        head = catalog.query(con, "SELECT * FROM v_headline WHERE run_id = ?", [run_id])
    assert m.headline.columns == head.columns and m.headline.height == 1
    drop = ["run_id", "label", "dataset_id"]
    _assert_same_table(head.drop(drop[1:]), m.headline.drop(drop[1:]), "v_headline")
    assert "<table>" in m._repr_html_() and run_id not in m._repr_html_()


def test_measure_report_renders_the_pipelines_charts(pipeline_run, from_arrays, tmp_path):
    from dashboards.build import write_reports
    from tests.browser import render

    home, run_id = pipeline_run
    theirs = next(p for p in write_reports(home, [run_id]) if p.name.startswith("run-"))
    ours = from_arrays.compute().report(tmp_path / "mine.html")   # every section, as the pipeline's
    s_theirs, dom_theirs = render(theirs)
    s_ours, dom_ours = render(ours)
    assert s_ours["jsErrors"] == [] and s_ours["chartErrors"] == []
    assert s_ours["total"] == s_theirs["total"] > 10
    assert s_ours["rendered"] == s_ours["total"] == s_ours["withGraphics"]
    sections = lambda dom: re.findall(r'<section[^>]* id="([^"]+)"', dom)  # noqa: E731
    assert sections(dom_ours) == sections(dom_theirs)


# ---- input types, float16, bad input -----------------------------------------------------------------

@pytest.fixture(scope="module")
def f16():
    rng = np.random.default_rng(5)
    img = (rng.normal(size=(80, 12)) + 1.5).astype(np.float16)
    txt = (img.astype(np.float32) + rng.normal(scale=0.4, size=img.shape) - 1.0).astype(np.float16)
    return img, txt


def _streamed(m) -> dict:
    return {t: m.tables[t] for t in ("modality_gap", "topo_spectra", "geo_modality", "retrieval_ranks", "geo_per_sample")}


def test_torch_float16_and_polars_inputs_give_the_same_result(f16, tmp_path):
    import pyarrow as pa
    import torch

    img, txt = f16
    base = clipgeo.measure(img, txt, sections=STREAMED, home=tmp_path / "np")
    assert vectors.count_rows(base.home, base.run_id) == {"image": 80, "text": 80}
    stored = vectors.connect(base.home).open_table(vectors.table_name(base.run_id)).schema.field("vector").type
    assert stored.value_type == pa.float16()      # float16 stays float16 in the store
    variants = {
        "torch": (torch.from_numpy(img), torch.from_numpy(txt)),
        "polars": (pl.Series("img", img.astype(np.float32)).cast(pl.Array(pl.Float32, 12)),
                   pl.Series("txt", txt.astype(np.float32)).cast(pl.Array(pl.Float32, 12))),
        "arrow": (pa.FixedSizeListArray.from_arrays(pa.array(img.ravel()), 12),
                  pa.chunked_array([pa.FixedSizeListArray.from_arrays(pa.array(txt.ravel().astype(np.float32)), 12)])),
    }
    for name, (a, b) in variants.items():
        m = clipgeo.measure(a, b, sections=STREAMED, home=tmp_path / name)
        for table, rows in _streamed(base).items():
            _assert_same_table(rows, m.tables[table], f"{name}:{table}", rel=1e-9)
    # the same arrays again in the same home: reused, not measured twice
    again = clipgeo.measure(img, txt, sections=STREAMED, home=tmp_path / "np")
    assert again.run_id == base.run_id and again.reused


def test_temporary_home_is_removed_with_the_result(f16):
    import gc

    m = clipgeo.measure(*f16, sections=["modality_gap"])
    root = m.home.root
    assert root.exists() and m.tables["modality_gap"].height == 1
    del m
    gc.collect()
    assert not root.exists()


@pytest.mark.parametrize("bad, match", [
    (dict(images=np.ones((5,))), r"images: expected a 2-D array of shape \(n, d\), got shape \(5,\)"),
    (dict(texts=np.ones((10, 3))), r"images and texts differ in dimension: images have d=4, texts d=3"),
    (dict(images=np.where(np.arange(40).reshape(10, 4) == 9, np.nan, 1.0)),
     r"images: 1 row\(s\) contain NaN or infinite values \(first: row 2\)"),
    (dict(texts=np.vstack([np.ones((7, 4)), np.zeros((3, 4))])), r"texts: 3 row\(s\) are all zeros \(first: row 7\)"),
    (dict(text_image=np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10])),
     r"text_image: entries must be image rows in \[0, 10\), got range \[0, 10\]"),
    (dict(text_image=np.arange(9)), r"text_image: has 9 entries but there are 10 captions"),
    (dict(texts=np.ones((12, 4))), r"text_image is required when img and txt have different lengths"),
    (dict(images=np.array([["a"] * 4] * 10)), r"images: expected numeric vectors, got dtype <U1"),
    (dict(captions=["x"] * 3), r"captions: 3 captions for 10 text vectors"),
    (dict(image_ids=["a"] * 10), r"image_ids: ids must be unique; 'a' appears more than once"),
])
def test_bad_input_gets_one_clear_error_naming_the_argument(bad, match, tmp_path):
    rng = np.random.default_rng(0)
    kw = dict(images=rng.normal(size=(10, 4)) + 1, texts=rng.normal(size=(10, 4)) + 1, text_image=None)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        clipgeo.import_arrays(tmp_path / "h", kw.pop("images"), kw.pop("texts"), kw.pop("text_image"), **kw)


def test_imported_arrays_are_a_run_like_any_other(f16, tmp_path):
    """``clipgeo sql`` and ``clipgeo report`` see it; the stated model identity is recorded."""
    img, txt = f16
    run = clipgeo.import_arrays(tmp_path / "h", img, txt, model="ViT-B-32", pretrained="openai", dataset="mine",
                                split="val")
    out = subprocess.run([sys.executable, "-m", "flows.cli", "sql", "--home", str(tmp_path / "h"), "--format", "json",
                          "SELECT r.status, m.model_name, m.pretrained, d.split FROM runs r JOIN models m USING "
                          "(model_id) JOIN datasets d USING (dataset_id) WHERE run_id = '%s'" % run],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows == [{"status": "embedded", "model_name": "ViT-B-32", "pretrained": "openai", "split": "val"}]


def test_readme_from_python_section_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's From Python section has no python block"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def test_cli_import_of_npy_and_parquet_files(f16, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    img, txt = f16
    np.save(tmp_path / "img.npy", img)
    pq.write_table(pa.table({"id": list(range(160)), "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(np.repeat(txt, 2, axis=0).ravel().astype(np.float32)), 12)}), tmp_path / "txt.parquet")
    np.save(tmp_path / "idx.npy", np.repeat(np.arange(80), 2))
    (tmp_path / "caps.txt").write_text("\n".join(f"caption {j}" for j in range(160)), encoding="utf-8")
    cmd = [sys.executable, "-m", "flows.cli", "import", str(tmp_path / "img.npy"), str(tmp_path / "txt.parquet"),
           "--text-image", str(tmp_path / "idx.npy"), "--captions", str(tmp_path / "caps.txt"), "--model", "SigLIP-x",
           "--home", str(tmp_path / "h")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    run = out.stdout.strip().splitlines()[-1]
    assert vectors.count_rows(clipgeo.DataHome.resolve(tmp_path / "h"), run) == {"image": 80, "text": 160}
    bad = subprocess.run(cmd[:5] + [str(tmp_path / "missing.npy"), "--home", str(tmp_path / "h")],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "texts: no file" in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def test_the_prefect_task_reuses_a_library_measurement_and_force_redoes_it(f16, tmp_path, prefect_harness):
    from flows.tasks import measure as measure_task

    home = clipgeo.DataHome.resolve(tmp_path / "h")
    run = clipgeo.import_arrays(home, f16[0][:40], f16[1][:40])
    res, _ = clipgeo.measure_if_stale(home, run)          # the notebook's path, every section

    def stamp():
        with catalog.session(home, read_only=True) as con:
            return catalog.execute(con, "SELECT max(measured_at) FROM measure_sections WHERE run_id = ?", [run])[0][0]

    first = stamp()
    assert res is not None and first is not None
    assert measure_task(str(home.root), run) == run        # the pipeline's path: reused
    assert stamp() == first
    assert measure_task(str(home.root), run, force=True) == run
    assert stamp() > first


def test_the_default_leaves_the_costly_sections_for_later_and_says_so(f16, tmp_path):
    """clipgeo.measure's default: every section but the on-demand ones; the page names those as
    not measured, with how to measure them; reading one of their tables measures that section
    (and what it reads) and nothing else; a second read is the stored rows."""
    m = clipgeo.measure(*f16, home=tmp_path / "home")
    assert set(m.sections) == set(clipgeo.default_sections())
    assert not set(m.sections) & set(ON_DEMAND_SECTIONS)
    assert m.not_run == ["pca", "origin_shift", "cosines", "umap", "clusters", "umap_grid", "intrinsic_dim", "bootstrap"]
    page = m.report(tmp_path / "page.html").read_text()
    assert "has not been measured for this run" in page and 'm.compute(&quot;umap&quot;)' in page
    assert 'm.compute(&quot;bootstrap&quot;)' in page    # the status table lists every section not measured
    assert "Not run yet: pca, origin_shift, cosines, umap, clusters, umap_grid, intrinsic_dim, bootstrap" in m._repr_html_()
    ci = m.tables["bootstrap_ci"]
    assert ci.height > 0 and m.sections["bootstrap"] == "ok" and "umap" not in m.sections
    assert m.tables["bootstrap_ci"] is ci
    again = clipgeo.run_tables(m.home, m.run_id, ["bootstrap"])["bootstrap_ci"]
    assert again.drop("run_id").equals(ci.drop("run_id"))
    with pytest.raises(KeyError, match="not a table of a measurement"):
        m.tables["no_such_table"]
    with pytest.raises(ValueError, match="'some'"):
        clipgeo.measure(*f16, sections="some")
