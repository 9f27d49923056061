"""Reports open from disk in a real headless browser with no network: every chart renders,
no JavaScript error is logged, and markup from the data shows as text and runs nothing."""

from __future__ import annotations

import numpy as np
import pytest

from clipgeo.stages.measure import measure_run
from clipgeo.store import catalog
from tests.browser import render
from tests.test_measure_sections import _register_run

EVIL_LABEL = "model <script>document.body.setAttribute('data-pwned','label')</script>"
EVIL_CAPTION = "<img src=x onerror=\"document.body.setAttribute('data-pwned','caption')\"> a caption"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    from clipgeo.config import DataHome
    from dashboards.build import write_reports

    home = DataHome.resolve(tmp_path_factory.mktemp("reports") / "home").ensure()
    a = _register_run(home, "rA", n=80, seed=1)
    b = _register_run(home, "rB", n=80, seed=2, normalized=True)
    with catalog.session(home) as con:
        catalog.execute(con, "UPDATE runs SET label = ? WHERE run_id = 'rA'", [EVIL_LABEL])
        rows = [{"dataset_id": "d", "sample_id": f"s{i:03d}_{c}", "image_id": f"i{i:03d}", "image_ref": f"/img/{i}.png",
                 "caption": EVIL_CAPTION if c == 0 else f"caption {i}"} for i in range(80) for c in range(2)]
        catalog.insert(con, "samples", rows)
    for r in (a, b):
        measure_run(home, r)
    paths = write_reports(home, [a, b])
    # a partial run: measured, then its geometry tables emptied as after a failed section
    c = _register_run(home, "rC", n=40, seed=3)
    measure_run(home, c, sections=["retrieval", "modality_gap"])
    paths += write_reports(home, [c])
    return home, paths


def test_every_report_renders_offline_without_errors(reports):
    _, paths = reports
    assert len(paths) == 4  # rA, rB, compare, rC
    for p in paths:
        html = p.read_text()
        assert "http://" not in html.split("<script>")[0] and 'src="http' not in html  # nothing fetched from a network
        assert html.count("vegaEmbed=") <= 1 or html.count("<script>") >= 1
        status, dom = render(p)
        assert status["jsErrors"] == [], (p.name, status["jsErrors"][:3])
        assert status["chartErrors"] == [], (p.name, status["chartErrors"][:3])
        assert status["total"] > 0
        assert status["rendered"] == status["total"] == status["withGraphics"], (p.name, status)


def test_vega_scripts_are_inlined_once_per_page(reports):
    _, paths = reports
    for p in paths:
        html = p.read_text()
        assert html.count("window.vegaEmbed=") == 1, p.name


def test_markup_from_the_data_shows_as_text_and_runs_nothing(reports):
    _, paths = reports
    run_a = next(p for p in paths if p.name == "run-rA.html")
    status, dom = render(run_a)
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]  # the body attribute was never set
    assert "&lt;script&gt;document.body.setAttribute" in dom  # the label, shown as text
    assert "&lt;img src=x onerror=" in dom  # the caption, shown as text in the extremes table
    assert status["jsErrors"] == []


def test_partial_run_report_names_the_missing_sections(reports):
    _, paths = reports
    html = next(p for p in paths if p.name == "run-rC.html").read_text()
    assert "Not available: section &#x27;double_ellipsoid&#x27; has not been measured" in html
    status, _ = render(next(p for p in paths if p.name == "run-rC.html"))
    assert status["rendered"] == status["total"]


def test_reports_regenerate_identically_from_the_database(reports):
    import re

    from dashboards.build import write_reports

    home, paths = reports
    before = {p.name: p.read_text() for p in paths}
    for p in home.reports.iterdir():
        p.unlink()
    again = write_reports(home, ["rA", "rB"]) + write_reports(home, ["rC"])
    strip = lambda t: re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "", t)  # noqa: E731  (generation time)
    for p in again:
        assert strip(p.read_text()) == strip(before[p.name]), p.name


def test_charts_export_as_svg(reports, tmp_path):
    from dashboards.build import write_reports

    home, _ = reports
    write_reports(home, ["rC"], export="svg")
    files = sorted((home.reports / "run-rC").glob("*.svg"))
    assert files and all(f.read_text().lstrip().startswith("<svg") for f in files)


def test_charts_accept_more_rows_than_altairs_default_guard():
    import polars as pl

    from dashboards import charts

    n = 6000  # e.g. two runs x 3,000 sampled points
    df = pl.DataFrame({"label": ["a"] * n, "modality": ["image", "text"] * (n // 2), "item_id": [str(i) for i in range(n)],
                       "pc1": [float(i) for i in range(n)], "pc2": [0.0] * n})
    spec = charts.pca_scatter(df, column="label").to_dict()  # raised MaxRowsError above 5,000 rows before
    assert sum(len(rows) for rows in spec["datasets"].values()) == n
