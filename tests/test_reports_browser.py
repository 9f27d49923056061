"""Reports open from disk in a real headless browser with no network: every chart renders,
no JavaScript error is logged, and markup from the data shows as text and runs nothing."""

from __future__ import annotations

import re

import numpy as np
import pytest

from clipgeo.stages.measure import measure_run
from clipgeo.store import catalog
from tests.browser import render
from tests.test_measure_sections import _register_run

EVIL_LABEL = "model <script>document.body.setAttribute('data-pwned','label')</script>"
EVIL_CAPTION = "<img src=x onerror=\"document.body.setAttribute('data-pwned','caption')\"> a caption"
LONG_CAPTION = "a very long caption " + "word " * 2000  # 10,000+ characters
CONTROL_CAPTION = "a NUL\x00 here, an escape \x1b[31m there and a DEL\x7f"  # a hostile COCO file's caption
CONTROL_LABEL = "test rB\x00\x1b"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    from clipgeo.core.config import DataHome
    from dashboards.build import write_reports

    home = DataHome.resolve(tmp_path_factory.mktemp("reports") / "home").ensure()
    outside = home.root.parent / "elsewhere"  # a folder of the test's temporary tree outside the data home
    outside.mkdir()
    (outside / "broken.png").write_bytes(b"not a png")
    a = _register_run(home, "rA", n=80, seed=1)
    b = _register_run(home, "rB", n=80, seed=2, normalized=True)
    with catalog.session(home) as con:
        catalog.execute(con, "UPDATE runs SET label = ? WHERE run_id = 'rA'", [EVIL_LABEL])
        catalog.execute(con, "UPDATE runs SET label = ? WHERE run_id = 'rB'", [CONTROL_LABEL])
        rows = [{"dataset_id": "d", "sample_id": f"s{i:03d}_{c}", "image_id": f"i{i:03d}",
                 "image_ref": str(home.datasets / f"{i}.png") if i % 2 else str(outside / f"{i}.png"),
                 "caption": EVIL_CAPTION if c == 0 else (LONG_CAPTION if i % 3 == 0 else
                                                      CONTROL_CAPTION if i % 3 == 1 else f"caption {i}")}
                for i in range(80) for c in range(2)]
        catalog.insert(con, "samples", rows)
        catalog.insert(con, "models", [dict(model_id="m", model_name="tiny", pretrained=str(home.checkpoints / "m.pt"))])
        catalog.insert(con, "datasets", [dict(dataset_id="d", source="coco", split="hostile", location=str(outside),
                                              n_images=80, n_samples=160)])
        catalog.insert(con, "rejects", [  # as the ingest writer stores them (010): each row says what it dropped
            dict(dataset_id="d", item_ref=str(outside / "broken.png"), stage="read", reason="undecodable image", sample_id=None,
                 image_id="i900", n_images=1, n_captions=0),
            dict(dataset_id="d", item_ref=str(outside / "gone.png"), stage="read", reason="missing file", sample_id=None,
                 image_id="i901", n_images=1, n_captions=0),
            dict(dataset_id="d", item_ref="s999_0", stage="read", reason="empty caption", sample_id="s999_0",
                 image_id="i001", n_images=0, n_captions=1),
        ])
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
    assert [p.name for p in paths] == ["run-rA.html", "run-rB.html", "compare-" + paths[2].name[8:], "index.html",
                                       "run-rC.html", "index.html"]
    for p in paths[:5]:
        html = p.read_text()
        assert "http://" not in html.split("<script>")[0] and 'src="http' not in html  # nothing fetched from a network
        assert html.count("vegaEmbed=") <= 1 or html.count("<script>") >= 1
        status, dom = render(p)
        assert status["jsErrors"] == [], (p.name, status["jsErrors"][:3])
        assert status["chartErrors"] == [], (p.name, status["chartErrors"][:3])
        assert status["total"] > 0 or p.name == "index.html"
        assert status["rendered"] == status["total"] == status["withGraphics"], (p.name, status)
        assert status["pageWidth"] <= status["windowWidth"] == 1400, (p.name, status)  # no horizontal overflow


def test_vega_scripts_are_inlined_once_per_page(reports):
    _, paths = reports
    for p in paths:
        html = p.read_text()
        assert html.count("window.vegaEmbed=") == (0 if p.name == "index.html" else 1), p.name


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
    assert [p.name for p in again] == [p.name for p in paths]
    strip = lambda t: re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "", t)  # noqa: E731  (generation time)
    for p in again[:-1]:
        if p.name != "index.html":  # the first index was written before rC's page existed
            assert strip(p.read_text()) == strip(before[p.name]), p.name
    assert strip(again[-1].read_text()) == strip(before["index.html"])


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


def test_index_lists_datasets_runs_and_comparisons_with_links(reports):
    home, paths = reports
    index = home.reports / "index.html"
    status, dom = render(index)
    assert status["jsErrors"] == [] and status["pageWidth"] <= status["windowWidth"]
    for name in ("run-rA.html", "run-rB.html", "run-rC.html", next(p.name for p in paths if p.name.startswith("compare-"))):
        assert f'href="{name}"' in dom, name
    runs = dom.split('id="runs-table"')[1].split("</table>")[0]
    assert runs.count("<tr>") == 4  # header + three runs
    assert "chance 1.25%" in runs  # recall beside chance (80 images)
    assert "ok" in runs and "not measured" not in runs.split("test rC")[0]
    datasets = dom.split('id="datasets-table"')[1].split("</table>")[0]
    assert "<td>d</td>" in datasets and "<td>2</td>" in datasets  # two images dropped


def test_contents_link_every_section_with_its_status(reports):
    import re

    home, _ = reports
    for name, expect in (("run-rA.html", "ok"), ("run-rC.html", "not measured")):
        html = (home.reports / name).read_text()
        toc = html.split('<nav class="toc"')[1].split("</nav>")[0]
        targets = re.findall(r'href="#(s\d+)"', toc)
        assert len(targets) >= 20 and all(f'<section id="{t}">' in html for t in targets)
        assert f'class="st st-' in toc and f">{expect}</span>" in toc
        first = html.split("<section", 1)[1][:2000]
        assert "What this run shows" in first and "chance" in first  # headline numbers open the page
    rc = (home.reports / "run-rC.html").read_text()
    assert "section &#x27;double_ellipsoid&#x27; has not been measured" in rc.split("</nav>")[0]  # reason on hover


def test_rejects_section_counts_each_bad_input_with_examples(reports):
    home, _ = reports
    status, dom = render(home.reports / "run-rA.html")
    sec = dom.split("<h2>Rejected inputs — d</h2>")[1].split("</section>")[0]
    assert "undecodable image" in sec and "missing file" in sec and "empty caption" in sec
    assert "broken.png (id i900)" in sec and str(home.root.parent) not in sec  # an example: file name and id, no folder
    head = dom.split('<table class="prov">')[1].split("</table>")[0]
    assert "dropped 2 images and 1 captions" in head


def test_long_captions_are_cut_with_the_full_text_on_hover(reports):
    import html as html_mod
    import re

    home, _ = reports
    status, dom = render(home.reports / "run-rA.html")
    cells = re.findall(r"<td>(.*?)</td>", dom, re.S)
    visible = [re.sub(r"<[^>]+>", "", c) for c in cells]
    assert max(len(html_mod.unescape(v)) for v in visible) <= 200
    titles = re.findall(r'<span class="cut" title="([^"]*)"', dom)
    assert any(len(html_mod.unescape(t)) > 10_000 for t in titles)  # the whole caption, on hover
    assert dom.count(LONG_CAPTION[:5000]) == len([t for t in titles if LONG_CAPTION[:5000] in t])  # in full only on hover


def test_no_local_path_in_the_pages_unless_asked(reports):
    from dashboards.build import write_reports

    home, paths = reports
    tmp_root = str(home.root.parent)
    for p in home.reports.glob("*.html"):
        assert tmp_root not in p.read_text(), p.name
    html = (home.reports / "run-rA.html").read_text()
    assert "checkpoints/m.pt" in html  # inside the data home: relative
    try:
        full = write_reports(home, ["rA"], full_paths=True)
        assert str(home.checkpoints / "m.pt") in full[0].read_text()
    finally:
        write_reports(home, ["rA"])


def test_page_sizes_within_targets(reports):
    home, paths = reports
    for p in paths:
        size = p.stat().st_size
        assert size <= (3 if p.name.startswith("compare-") else 2) * 1024 * 1024, (p.name, size)


def test_small_sample_report_shows_reasons_and_real_counts(tmp_path):
    """13 images at d = 64 (N <= d): the report renders, prints the stored reason where a figure is
    NULL (never "nan" or "None"), and its captions state the real counts (13 pairs, not 500)."""
    import html as html_mod
    import re

    from clipgeo.core.config import DataHome
    from dashboards.build import write_reports

    home = DataHome.resolve(tmp_path / "home").ensure()
    r = _register_run(home, "rS", n=13, d=64, seed=1)
    measure_run(home, r)
    page = write_reports(home, [r])[0]
    html = page.read_text()
    visible = html_mod.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>", "", html, flags=re.S)))
    assert not re.search(r"\b(nan|None|NaN)\b", visible), re.search(r".{80}\b(nan|None|NaN)\b.{20}", visible)
    assert "13 image vectors <= d = 64: the covariance has rank at most 12" in visible  # P3 caption: the reason
    head = html_mod.unescape(re.sub(r"<[^>]+>", " ", html.split('id="headline"')[1].split("</table>")[0]))
    assert "joint effective rank (λ-entropy, Roy & Vetterli) n/a (39 vectors <= d = 64" in " ".join(head.split())
    assert "13 image–caption pairs of test rS in the top-2 principal components" in visible
    assert "500 image–caption pairs" not in visible
    assert "26 queries, 13 candidates" in visible
    status, _ = render(page)
    assert status["jsErrors"] == [] and status["chartErrors"] == [], status
    assert status["rendered"] == status["total"] == status["withGraphics"], status


def test_exact_ties_show_the_optimistic_and_pessimistic_recall(tmp_path):
    """Two images with the same vector: each of their captions ties with the other image, so the
    headline and the retrieval caption give recall@1 with ties in favour and against."""
    from clipgeo.core.config import DataHome
    from clipgeo.store import vectors
    from dashboards.build import write_reports

    home = DataHome.resolve(tmp_path / "home").ensure()
    rng = np.random.default_rng(0)
    n, d = 20, 8
    img = rng.normal(size=(n, d)).astype(np.float32)
    img[1] = img[0]  # exact tie
    txt = (img[np.repeat(np.arange(n), 2)] + 0.01 * rng.normal(size=(2 * n, d))).astype(np.float32)
    ids = [f"i{i:03d}" for i in range(n)]
    vectors.write_run(home, "rT", image_ids=ids, images=img, sample_ids=[f"s{i:03d}_{c}" for i in range(n) for c in range(2)],
                      text_image_ids=[ids[i] for i in range(n) for _ in range(2)], texts=txt)
    with catalog.session(home) as con:
        catalog.insert(con, "runs", [dict(run_id="rT", model_id="m", dataset_id="d", label="test rT", status="embedded",
                                          n_images=n, n_texts=2 * n, vectors_normalized=False)])
    measure_run(home, "rT", sections=["retrieval"])
    with catalog.session(home, read_only=True) as con:
        opt, pes, tied = catalog.execute(con, "SELECT t2i_r1, t2i_r1_pessimistic, t2i_n_tied_queries FROM v_headline")[0]
    assert tied == 4 and pes == pytest.approx(opt - 4 / 40)  # the 4 captions of the two twin images
    html = write_reports(home, ["rT"])[0].read_text()
    head = html.split('id="headline"')[1].split("</table>")[0]
    assert f"{opt:.2%} – {pes:.2%} (4 queries with exact ties: ties in favour – against)" in head
    assert f"4 queries with exact ties: {pes:.2%} if ties count against" in html
    index = (home.reports / "index.html").read_text()
    assert f"{opt:.2%} – {pes:.2%}" in index.split('id="runs-table"')[1]


# ---- issue 24: control characters, tooltip images, the comparison headline table ----------------

RAW_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 but tab/LF/CR, DEL, C1


def test_no_page_holds_a_raw_control_character(reports):
    """A caption and a run label holding NUL/ESC/DEL: written as U+FFFD (text) or \\u escapes
    (JSON), never raw, on every page; the pages still render in Chromium and show the label."""
    home, paths = reports
    pages = sorted(home.reports.glob("*.html"))
    assert len(pages) >= 5
    for p in pages:
        text = p.read_bytes().decode("utf-8")
        m = RAW_CONTROL.search(text)
        assert m is None, (p.name, text[max(0, m.start() - 60):m.start() + 20])
    rb = (home.reports / "run-rB.html").read_text()
    assert "test rB\ufffd\ufffd" in rb  # the label, its NUL and ESC replaced
    assert "a NUL\\ufffd here" in (home.reports / "run-rA.html").read_text()  # the caption, in the JSON data
    status, dom = render(home.reports / "run-rB.html")
    assert status["jsErrors"] == [] and status["chartErrors"] == [], status
    assert status["rendered"] == status["total"] == status["withGraphics"]
    assert "test rB\ufffd\ufffd" in dom and RAW_CONTROL.search(dom) is None


# Hovers every mark of every chart (pointer events dispatched on the SVG elements, which is what
# Vega listens to) and records each tooltip's images, then writes them where the test reads them.
_HOVER_JS = """<script>
(function wait() {
  if (!document.getElementById("clipgeo-status").textContent) { return setTimeout(wait, 500); }
  var srcs = [], shown = 0, marks = document.querySelectorAll(".chart svg .role-mark > *");
  marks.forEach(function (el) {
    var r = el.getBoundingClientRect();
    ["pointermove", "mousemove"].forEach(function (kind) {
      el.dispatchEvent(new MouseEvent(kind, {bubbles: true, clientX: r.x + r.width / 2, clientY: r.y + r.height / 2}));
    });
    var tip = document.getElementById("vg-tooltip-element");
    if (tip && tip.innerHTML) {
      shown += 1;
      tip.querySelectorAll("img").forEach(function (img) { srcs.push(img.getAttribute("src")); });
    }
  });
  var out = document.createElement("pre"); out.id = "hover-result";
  out.textContent = JSON.stringify({marks: marks.length, shown: shown, srcs: srcs});
  document.body.appendChild(out);
})();
</script>"""


def _hover_all(page, tmp_path):
    import json

    probe = tmp_path / page.name
    head, tail = page.read_text().rsplit("</body></html>", 1)  # the page's own end (the bundle holds the string too)
    probe.write_text(head + _HOVER_JS + "</body></html>" + tail)
    _, dom = render(probe, budget_ms=40000)  # (polling every 500 ms: shorter polls starved the page's rendering)
    m = re.search(r'<pre id="hover-result">(.*?)</pre>', dom, re.S)
    assert m, "the hover script did not finish"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_tooltips_of_text_points_have_no_image(reports, tmp_path):
    """Hovering every point of the run page: tooltips show, images only where there is one (an
    image point inside the data home), never an <img> whose source is null."""
    home, _ = reports
    got = _hover_all(home.reports / "run-rA.html", tmp_path)
    assert got["marks"] > 100 and got["shown"] > 100, got | {"srcs": got["srcs"][:3]}
    assert got["srcs"], "no thumbnail at all: image points inside the home should have one"
    bad = [s for s in got["srcs"] if s is None or s.rstrip("/").endswith("null") or s.rstrip("/") == tmp_path.as_uri()]
    assert not bad, bad[:5]
    # (the page resolves a thumbnail against its own address: ../datasets/1.png from the probe's folder)
    assert all(s.startswith(tmp_path.parent.as_uri() + "/datasets/") for s in got["srcs"]), got["srcs"][:5]


def test_compare_headline_table_has_human_names_one_row_per_run(reports):
    import html as html_mod

    from dashboards.build import headline_rows

    home, paths = reports
    page = next(p for p in paths if p.name.startswith("compare-"))
    _, dom = render(page)
    sec = dom.split("<h2>Headline figures</h2>")[1].split("</section>")[0]
    heads = [html_mod.unescape(h) for h in re.findall(r"<th>(.*?)</th>", sec.split("</thead>")[0])]
    names = [r[0] for r in headline_rows({}, None)]
    assert heads == ["run", "dataset", *names]
    assert not [h for h in heads if re.fullmatch(r"[a-z0-9_]+", h) and "_" in h]  # no raw column name
    body = sec.split("<tbody>")[1]
    assert body.count("<tr>") == 2  # two runs, one row each
    assert "chance 1.25%" in body  # recall beside its chance level (80 images)


def test_cluster_figures_draw_what_their_captions_count(reports):
    """Fig. 15: the caption's count of drawn clusters is the number of points in its chart, and
    its correlation over fewer than 5 of them is 'n/a (reason)'; Fig. 14 draws covariance
    eigenvalues (λ, as Figs. 10-12) of subsamples of the size its caption states."""
    import html as html_mod
    import json

    home, _ = reports
    status, dom = render(home.reports / "run-rA.html")
    secs = {m.group(1): m.group(0) for m in re.finditer(r'<section id="s\d+"><h2>(.*?)</h2>.*?</section>', dom, re.S)}
    f15 = secs["Fig. 15 — local dimension against per-cluster retrieval"]
    text = html_mod.unescape(re.sub(r"<[^>]+>", " ", f15.split('<p class="caption">')[1]))
    drawn, total = map(int, re.search(r"(\d+) of (\d+) clusters drawn", text).groups())
    points = len(re.findall(r'<path[^>]*role="graphics-symbol"', f15.split('<p class="caption">')[0]))
    assert drawn == points >= 1, (drawn, points)
    if drawn < 5:
        assert "Pearson r n/a (" in text and "needs at least 5" in text
    f14 = secs["Fig. 14 — per-cluster spectra"]
    cap14 = html_mod.unescape(re.sub(r"<[^>]+>", " ", f14.split('<p class="caption">')[1]))
    m = int(re.search(r"m = (\d+) members", cap14).group(1))
    assert "covariance eigenvalues λ_k/λ_1" in cap14
    # the chart's data: the view's rows, λ and the stated m
    from clipgeo.store import catalog as cat

    with cat.session(home, read_only=True) as con:
        rows = cat.query(con, "SELECT * FROM v_report_cluster_spectra WHERE run_id = 'rA'")
    assert rows.height and rows["sample_size"].unique().to_list() == [m]
    assert rows.group_by("cluster").len()["len"].unique().to_list() == [m - 1]
    specs = json.loads(html_mod.unescape(re.search(r'<script type="application/json" id="specs">(.*?)</script>',
                                                   (home.reports / "run-rA.html").read_text(), re.S).group(1)))
    f14_spec = next(s for _, s, _ in specs if "log10_eigenvalue_rel" in json.dumps(s) and "cluster" in json.dumps(s))
    assert f14_spec["encoding"]["y"]["field"] == "log10_eigenvalue_rel"
