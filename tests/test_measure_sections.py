"""Measurement sections: a failing or inapplicable section is recorded, the others land,
and the report says what is missing and why."""

from __future__ import annotations

import numpy as np
import pytest

from clipgeo.core.arrays import normalize_rows
from clipgeo.stages import measure
from clipgeo.store import catalog, vectors


def _register_run(home, run_id="rS", n=60, d=16, normalized=False, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, d)).astype(np.float32) + 1.5
    txt = (img[np.repeat(np.arange(n), 2)] - 3 + 0.3 * rng.normal(size=(2 * n, d))).astype(np.float32)
    if normalized:
        img, txt = normalize_rows(img, dtype=np.float32), normalize_rows(txt, dtype=np.float32)
    image_ids = [f"i{i:03d}" for i in range(n)]
    vectors.write_run(home, run_id, image_ids=image_ids, images=img,
                      sample_ids=[f"s{i:03d}_{c}" for i in range(n) for c in range(2)],
                      text_image_ids=[image_ids[i] for i in range(n) for _ in range(2)], texts=txt)
    with catalog.session(home) as con:
        catalog.insert(con, "runs", [dict(run_id=run_id, model_id="m", dataset_id="d", label=f"test {run_id}",
                                          status="embedded", n_images=n, n_texts=2 * n, vectors_normalized=normalized)])
    return run_id


def test_a_failing_section_is_recorded_and_the_rest_lands(home, monkeypatch):
    run_id = _register_run(home)
    measure.measure_run(home, run_id)  # first a full measurement: the gap table has a row
    broken = measure.Section("modality_gap", ("modality_gap",), lambda d: 1 / 0)
    monkeypatch.setattr(measure, "CORE_SECTIONS", [broken if s.name == "modality_gap" else s for s in measure.CORE_SECTIONS])
    res = measure.measure_run(home, run_id)
    assert res.sections["modality_gap"] == "failed" and res.sections["retrieval"] == "ok"
    with catalog.session(home, read_only=True) as con:
        status, msg = catalog.execute(con, "SELECT status, message FROM measure_sections WHERE section = 'modality_gap'")[0]
        assert status == "failed" and "ZeroDivisionError" in msg
        assert catalog.execute(con, "SELECT count(*) FROM modality_gap")[0][0] == 0  # no stale row
        assert catalog.execute(con, "SELECT count(*) FROM retrieval")[0][0] == 6
    from dashboards.build import write_reports

    html = write_reports(home, [run_id])[0].read_text()
    assert "ZeroDivisionError" in html and "failed" in html


def test_raw_only_metrics_are_marked_on_normalised_runs(home):
    run_id = _register_run(home, "rN", normalized=True)
    res = measure.measure_run(home, run_id)
    assert "failed" not in res.sections.values(), res.sections
    assert res.sections["double_ellipsoid"] == "ok" and res.sections["origin_shift"] == "ok"
    with catalog.session(home, read_only=True) as con:
        assert catalog.execute(con, "SELECT DISTINCT vectors FROM geo_modality")[0][0] == "normalized"
        assert catalog.execute(con, "SELECT bool_and(inputs_normalized) FROM geo_modality")[0][0] is True
        assert catalog.execute(con, "SELECT gap_raw FROM modality_gap")[0][0] is None
        assert catalog.execute(con, "SELECT count(*) FROM separability WHERE vectors = 'raw'")[0][0] == 0


def test_unknown_section_names_are_refused(home):
    run_id = _register_run(home)
    with pytest.raises(ValueError, match="unknown sections"):
        measure.measure_run(home, run_id, sections=["nope"])


def test_the_run_order_moves_what_does_not_read_the_layout_before_its_wait():
    """Every section runs once; gap_estimators and bootstrap run just before umap (whose section
    waits for the background layout) and keep their own order; the separability fits run before
    the moment pass (modality_gap); without umap the order is all_sections'."""
    secs = measure.all_sections()
    names = [s.name for s in measure.run_order(secs)]
    assert sorted(names) == sorted(s.name for s in secs)
    at = names.index("umap")
    assert names[at - 2:at] == ["gap_estimators", "bootstrap"]
    assert names.index("separability") < names.index("modality_gap")
    no_umap = [s for s in secs if s.name != "umap"]
    assert measure.run_order(no_umap) == no_umap
