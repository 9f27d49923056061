"""Every chart and table of the reports reads one named view: the views compile on an empty
catalog and on measured runs, the rows a caption's `clipgeo sql` command returns are exactly
the rows its chart plots, and a report built from a read-only copy of the data home is the same."""

from __future__ import annotations

import math
import re
import shutil
import stat

import duckdb
import pytest

from clipgeo.core.config import SQL_DIR, DataHome
from clipgeo.stages.measure import measure_run
from clipgeo.store import catalog
from tests.test_measure_sections import _register_run


def _views(con) -> list[str]:
    return [v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]


def test_every_view_compiles_on_an_empty_catalog():
    from dashboards.build import DATASET_VIEWS, RUN_VIEWS

    con = duckdb.connect()
    catalog.migrate(con)
    views = _views(con)
    declared = {m for f in (SQL_DIR / "views").glob("*.sql") for m in re.findall(r"CREATE OR REPLACE VIEW (\w+)", f.read_text())}
    assert set(views) == declared
    for v in views:
        assert con.execute(f"SELECT * FROM {v}").fetchall() == [], v  # binds and runs on empty tables
    used = {v for v, _ in RUN_VIEWS.values()} | {v for v, _ in DATASET_VIEWS.values()}
    assert used <= set(views), used - set(views)
    assert con.execute("SELECT report_point_budget()").fetchone()[0] == 3000


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    home = DataHome.resolve(tmp_path_factory.mktemp("views") / "home").ensure()
    a = _register_run(home, "vA", n=50, seed=1)
    b = _register_run(home, "vB", n=50, seed=2)
    with catalog.session(home) as con:
        rows = [{"dataset_id": "d", "sample_id": f"s{i:03d}_{c}", "image_id": f"i{i:03d}",
                 "image_ref": str(home.datasets / f"{i}.png"), "caption": ("long " * 300 if i == 3 else f"caption {i}")}
                for i in range(50) for c in range(2)]
        catalog.insert(con, "samples", rows)
    for r in (a, b):
        measure_run(home, r)
    return home, [a, b]


def test_every_view_runs_on_measured_runs(measured):
    home, ids = measured
    with catalog.session(home, read_only=True) as con:
        for v in _views(con):
            catalog.query(con, f"SELECT * FROM {v}")  # no binder or runtime error
        for v in ("v_report_retrieval", "v_report_recall_curve", "v_report_points", "v_report_conformity_fit",
                  "v_report_paired_lines", "v_report_spectra", "v_headline", "v_report_sections"):
            n = catalog.execute(con, f"SELECT count(DISTINCT run_id) FROM {v} WHERE list_contains(?, run_id)", [ids])[0][0]
            assert n == 2, v
        # every row carries its run's label
        assert catalog.execute(con, "SELECT count(*) FROM v_report_points WHERE label IS NULL")[0][0] == 0
        # recall curve from the ranks, checked against the stored recall@{1,5,10} of the SQL transform
        diff = catalog.execute(con, "SELECT max(abs(c.recall - r.recall)) FROM v_report_recall_curve c JOIN retrieval r "
                                    "USING (run_id, direction, k)")[0][0]
        assert diff < 1e-12
        # captions in chart data are shortened; the conformity-fit end points lie on the stored line
        assert catalog.execute(con, "SELECT max(length(caption)) FROM v_report_points")[0][0] <= 300
        a, b, x, y = catalog.execute(con, "SELECT a, b, x, y FROM v_report_conformity_fit LIMIT 1")[0]
        assert math.isclose(a * x + b, y, rel_tol=1e-9, abs_tol=1e-12)


def test_scatter_sample_is_deterministic_and_within_budget(measured):
    home, ids = measured
    with catalog.session(home, read_only=True) as con:
        catalog.execute(con, "CREATE OR REPLACE TEMP MACRO report_point_budget() AS 7")
        rows = catalog.execute(con, "SELECT run_id, modality, count(*), max(n_total) FROM v_report_points GROUP BY ALL")
        assert rows and all(n == 7 and total > 7 for _, _, n, total in rows)
        first = catalog.execute(con, "SELECT item_id FROM v_report_points WHERE run_id = ? ORDER BY ALL", [ids[0]])
        expect = catalog.execute(
            con, "SELECT item_id FROM (SELECT item_id, modality, row_number() OVER (PARTITION BY modality ORDER BY hash(item_id),"
                 " item_id) AS k FROM geo_per_sample WHERE run_id = ?) WHERE k <= 7 ORDER BY ALL", [ids[0]])
        assert first == expect


def _rows_equal(chart_rows: list[dict], sql_rows: list[dict]) -> bool:
    def norm(v):
        if isinstance(v, float):
            return round(v, 9) if math.isfinite(v) else None
        if isinstance(v, (list, tuple)):
            return tuple(norm(x) for x in v)
        return v if v is None or isinstance(v, (int, bool)) else str(v)

    def key(rows):
        return sorted((tuple(sorted((k, norm(v)) for k, v in r.items())) for r in rows), key=repr)

    return key(chart_rows) == key(sql_rows)


def _pages(home, ids, *, full_paths=True):
    from dashboards.build import Paths, _load, compare_page, run_page

    paths = Paths(home.root, full=full_paths)
    with catalog.session(home, read_only=True) as con:
        data = _load(con, ids, paths)
    return [run_page(data, r, paths) for r in ids] + [compare_page(data, ids)]


def test_every_charts_data_is_the_rows_its_caption_query_returns(measured):
    home, ids = measured
    checked = 0
    with catalog.session(home, read_only=True) as con:
        for page in _pages(home, ids):
            for sec in page.sections:
                if sec.chart is None:
                    continue
                assert sec.query.startswith('clipgeo sql "select * from ') and sec.views, sec.title
                assert sec.views[0] in sec.query and sec.views[0] in " ".join([sec.caption, sec.query])
                sql = sec.query[len("clipgeo sql ") :].strip('"')
                expected = [catalog.query(con, sql).to_dicts()]
                where = sql.split(" where ", 1)[1]
                expected += [catalog.query(con, f"select * from {v} where {where}").to_dicts() for v in sec.views[1:]]
                datasets = list((sec.chart.to_dict().get("datasets") or {}).values())
                assert datasets, sec.title
                for rows in datasets:  # each dataset a chart holds is one of its views' rows, unchanged
                    assert any(_rows_equal(rows, e) for e in expected), (page.title, sec.title)
                assert _rows_equal(datasets[0], expected[0]) or any(_rows_equal(d, expected[0]) for d in datasets)
                checked += 1
    assert checked >= 30  # two run pages and a comparison


def test_named_datasets_are_stored_once_per_page(measured):
    import json

    home, ids = measured
    page = _pages(home, ids)[0]
    html = page.render()
    packed = json.loads(re.search(r'<script type="application/json" id="datasets">(.*?)</script>', html, re.S).group(1))
    specs = json.loads(re.search(r'<script type="application/json" id="specs">(.*?)</script>', html, re.S).group(1))
    used = [n for _, _, names in specs for n in names]
    assert len(used) > len(packed)  # the conformity plot, the UMAP pair and the cluster map share v_report_points
    assert set(used) == set(packed)
    for _, spec, _ in specs:
        assert "datasets" not in spec
    # the packed columns decode to the chart's rows (floats to 6 significant digits)
    original = {n: rows for s in page.sections if s.chart is not None for n, rows in s.chart.to_dict()["datasets"].items()}
    for name, p in packed.items():
        cols = {c: (v if isinstance(v, list) else [v["dict"][i] for i in v["codes"]]) for c, v in p["values"].items()}
        decoded = [{c: cols[c][i] for c in p["columns"]} for i in range(p["n"])]
        assert len(decoded) == len(original[name])
        for a, b in zip(decoded, original[name]):
            assert a.keys() == b.keys()
            for k in a:
                if isinstance(b[k], float) and b[k] == b[k]:
                    assert math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-12), (name, k)
                elif not isinstance(b[k], float):
                    assert a[k] == b[k] or str(a[k]) == str(b[k]), (name, k)


def test_report_from_a_read_only_copy_of_the_data_home_is_the_same(measured, tmp_path):
    from dashboards.build import write_reports

    home, ids = measured
    # full paths: the copy's catalog still names the original's files, which a shareable
    # path would show as outside the (copied) home
    first = {p.name: p.read_text() for p in write_reports(home, ids, full_paths=True)}
    copy = DataHome.resolve(tmp_path / "copy")
    shutil.copytree(home.root, copy.root, ignore=shutil.ignore_patterns("reports"))
    for p in [copy.catalog, *copy.lance.rglob("*")]:
        if p.is_file():
            p.chmod(stat.S_IRUSR | stat.S_IRGRP)
    try:
        again = {p.name: p.read_text() for p in write_reports(copy, ids, full_paths=True)}
    finally:
        for p in [copy.catalog, *copy.lance.rglob("*")]:
            if p.is_file():
                p.chmod(stat.S_IRUSR | stat.S_IWUSR)
    strip = lambda t: re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "", t)  # noqa: E731  (generation time)
    assert set(again) == set(first)
    for name in first:
        assert strip(again[name]) == strip(first[name]), name


def test_reports_use_this_codes_views_on_a_catalog_migrated_by_older_code(measured):
    from dashboards.build import write_reports

    home, ids = measured
    con = duckdb.connect(str(home.catalog))  # as if written by a version without these views
    con.execute("DROP VIEW v_report_conformity_fit")
    con.execute("DROP VIEW v_report_run_index")
    con.close()
    paths = write_reports(home, ids[:1])  # read-only: the current views are used as temporary views
    assert "v_report_conformity_fit" in paths[0].read_text() and paths[-1].name == "index.html"
    with catalog.session(home) as con:  # the next writable session stores them again
        assert "v_report_run_index" in _views(con)
