"""The whole pipeline under Prefect's test harness, on a small ``shapes``."""

from __future__ import annotations

import pytest

from clipgeo.store import catalog, vectors

SMALL = dict(n_train=160, n_val=48, captions_per_image=3, train_steps=8, seed=1)


@pytest.fixture(scope="module")
def pipeline_runs(prefect_harness, tmp_path_factory):
    from flows.pipeline import pipeline

    from clipgeo.core.config import DataHome

    home = DataHome.resolve(tmp_path_factory.mktemp("flow") / "home")
    first = pipeline(home=str(home.root), **SMALL)
    ckpts = {p: p.stat().st_mtime_ns for p in home.checkpoints.glob("*.pt")}
    ckpts["stage_state"] = _states(home)
    second = pipeline(home=str(home.root), **SMALL)
    return home, first, second, ckpts


def _states(home):
    with catalog.session(home, read_only=True) as con:
        return catalog.execute(con, "SELECT unit, state, updated_at FROM stage_state ORDER BY unit")


def _count(home, sql, params=None):
    with catalog.session(home, read_only=True) as con:
        return catalog.execute(con, sql, params)[0][0]


def test_pipeline_fills_every_table(pipeline_runs):
    home, first, _, _ = pipeline_runs
    run_ids = [r["run_id"] for r in first["runs"]]
    assert len(run_ids) == 2
    n_img, n_txt = SMALL["n_val"], SMALL["n_val"] * SMALL["captions_per_image"]
    assert _count(home, "SELECT count(*) FROM datasets") == 2
    assert _count(home, "SELECT count(*) FROM samples") == (SMALL["n_train"] + SMALL["n_val"]) * 3
    assert _count(home, "SELECT count(*) FROM models") == 2
    assert _count(home, "SELECT count(*) FROM runs") == 4  # val (measured) + train (reference) per model
    for run_id in run_ids:
        p = [run_id]
        assert _count(home, "SELECT status FROM runs WHERE run_id = ?", p) == "measured"
        assert vectors.count_rows(home, run_id) == {"image": n_img, "text": n_txt}
        assert _count(home, "SELECT count(*) FROM retrieval_ranks WHERE run_id = ?", p) == n_img + n_txt
        assert _count(home, "SELECT count(*) FROM retrieval WHERE run_id = ?", p) == 6  # 2 directions x k in 1,5,10
        assert _count(home, "SELECT count(*) FROM modality_gap WHERE run_id = ?", p) == 1
        assert _count(home, "SELECT count(*) FROM separability WHERE run_id = ?", p) == 4  # raw/normalized x full/pca2
        assert _count(home, "SELECT count(*) FROM pca_points WHERE run_id = ?", p) == n_img + n_txt
        assert _count(home, "SELECT count(*) FROM v_headline WHERE run_id = ? AND t2i_r1 IS NOT NULL", p) == 1
        assert _count(home, "SELECT count(*) FROM measure_sections WHERE run_id = ? AND status = 'failed'", p) == 0
        assert _count(home, "SELECT count(*) FROM geo_modality WHERE run_id = ? AND vectors = 'raw'", p) == 2
        assert _count(home, "SELECT count(*) FROM geo_per_sample WHERE run_id = ?", p) == n_img + n_txt
        assert _count(home, "SELECT count(*) FROM geo_origin_shift WHERE run_id = ?", p) == 9
        assert _count(home, "SELECT count(*) FROM geo_eigenvalues WHERE run_id = ?", p) == 2 * 64  # d = 64 per modality
        assert _count(home, "SELECT count(*) FROM v_conformity_extremes WHERE run_id = ? AND modality = 'text'", p) == 20
        assert _count(home, "SELECT count(*) FROM topo_umap WHERE run_id = ?", p) == 2 * n_img
        assert _count(home, "SELECT count(*) FROM topo_nearest_reference WHERE run_id = ?", p) == n_img + n_txt
        assert _count(home, "SELECT count(*) FROM topo_nearest_reference_info WHERE run_id = ? AND recall_at_1 = 1", p) == 2
        assert _count(home, "SELECT count(*) FROM topo_separability_matrix WHERE run_id = ? AND NOT same_set", p) > 0
        assert _count(home, "SELECT count(*) FROM topo_spectra_summary WHERE run_id = ?", p) == 3
        assert _count(home, "SELECT status FROM measure_sections WHERE run_id = ? AND section = 'umap_grid'", p) == "skipped"
        # recall@k from the SQL transform agrees with the ranks
        r5 = _count(home, "SELECT recall FROM retrieval WHERE run_id = ? AND direction = 'text_to_image' AND k = 5", p)
        direct = _count(home, "SELECT avg((rank < 5)::DOUBLE) FROM retrieval_ranks WHERE run_id = ? AND direction = 'text_to_image'", p)
        assert r5 == pytest.approx(direct)
    objectives = {r["objective"] for r in first["runs"]}
    assert objectives == {"infonce", "infoloob"}


def test_pipeline_writes_reports(pipeline_runs):
    home, first, _, _ = pipeline_runs
    reports = first["reports"]
    assert len(reports) == 4  # one per run + comparison + the index page
    from pathlib import Path

    assert Path(reports[-1]).name == "index.html"
    index = Path(reports[-1]).read_text()
    assert all(f'href="{Path(r).name}"' in index for r in reports[:-1])
    for r in reports[:-1]:
        text = Path(r).read_text()
        assert "vegaEmbed" in text and "cdn.jsdelivr" not in text
        assert "clipgeo-tiny-vit" in text  # provenance: which model
        assert "shapes-" in text  # which dataset


def test_second_run_reuses_training_and_embeddings_without_duplicates(pipeline_runs):
    home, first, second, ckpts = pipeline_runs
    states = ckpts.pop("stage_state")
    assert {p: p.stat().st_mtime_ns for p in home.checkpoints.glob("*.pt")} == ckpts  # not retrained
    assert len(states) == 2 and _states(home) == states  # not re-measured
    assert [r["run_id"] for r in first["runs"]] == [r["run_id"] for r in second["runs"]]
    assert first["table_rows"] == second["table_rows"]  # exact counts, nothing duplicated
    assert _count(home, "SELECT count(*) FROM runs") == 4
    assert second["seconds"] < first["seconds"]
