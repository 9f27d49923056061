"""The one-screen summary printed at the end of the main job (and published as a Prefect
artifact): where things are, row counts, and the headline figures of each run, read from the
view ``v_headline`` (their one definition, also read by the reports and `clipgeo sql`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from clipgeo.core.config import DataHome
from clipgeo.store import catalog

TABLES = ("datasets", "samples", "models", "runs", "rejects", "retrieval_ranks", "retrieval",
          "modality_gap", "separability", "pca_points")
HEADLINE_VIEW = "v_headline"


@dataclass
class Summary:
    home: str
    catalog: str
    lance: str
    reports: list[str]
    seconds: float
    table_rows: dict[str, int] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)


def collect_summary(home: DataHome, run_ids: list[str], reports: list[str], *, seconds: float) -> Summary:
    with catalog.session(home) as con:
        rows = {t: catalog.execute(con, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}
        runs = catalog.query(
            con,
            "SELECT run_id, label, objective, n_images, n_texts, t2i_r1, t2i_r5, i2t_r1, i2t_r5, t2i_r1_chance, gap,"
            " separability_accuracy, separability_pca2_accuracy, t2i_r1_pessimistic, i2t_r1_pessimistic,"
            f" t2i_n_tied_queries, i2t_n_tied_queries FROM {HEADLINE_VIEW}"
            " WHERE list_contains(?, run_id) ORDER BY label",
            [run_ids],
        ).to_dicts()
    return Summary(str(home.root), str(home.catalog), str(home.lance), reports, seconds, rows, runs)


def _f(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:5.1f}%" if pct else f"{x:.3f}"


def _ties(r: dict) -> str:
    """'T→I R@1 27.1% with exact ties counted against (12 tied queries)'; '' without ties."""
    out = []
    for d, name in (("t2i", "T→I"), ("i2t", "I→T")):
        n, p = r.get(f"{d}_n_tied_queries"), r.get(f"{d}_r1_pessimistic")
        if n and p is not None:
            out.append(f"{name} R@1 {_f(p, True).strip()} with exact ties counted against ({n} tied queries)")
    return "; ".join(out)


def _run_table(runs: list[dict]) -> list[str]:
    """The per-run lines: each column as wide as its widest value (header included), two spaces
    between columns, so a 1,000,000-image run and a long model label stay readable."""
    header = ("run", "model", "imgs", "caps", "T→I R@1", "I→T R@1", "gap", "sep")
    right = (False, False, True, True, True, True, True, True)
    rows = [(r["run_id"], r["label"].split(" on ")[0], f"{r['n_images'] or 0:,}", f"{r['n_texts'] or 0:,}",
             _f(r["t2i_r1"], True).strip(), _f(r["i2t_r1"], True).strip(), _f(r["gap"]),
             _f(r["separability_accuracy"], True).strip()) for r in runs]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells) -> str:
        return "  " + "  ".join(str(c).rjust(w) if rj else str(c).ljust(w)
                                for c, w, rj in zip(cells, widths, right)).rstrip()

    out = [line(header)]
    for r, cells in zip(runs, rows):
        out.append(line(cells))
        if _ties(r):
            out.append(f"  {'':<{widths[0]}}  {_ties(r)}")
    return out


def format_summary(s: Summary) -> str:
    lines = [
        "",
        "=" * 78,
        f"clipgeo: done in {s.seconds:.0f} s",
        f"  data home : {s.home}",
        f"  catalog   : {s.catalog}   (query: clipgeo sql \"select * from v_headline\")",
        f"  vectors   : {s.lance}",
    ]
    for r in s.reports:
        lines.append(f"  report    : {r}")
    lines.append("  rows      : " + ", ".join(f"{t} {n}" for t, n in s.table_rows.items()))
    lines.append("")
    lines += _run_table(s.runs)
    if s.runs:
        ch = s.runs[0].get("t2i_r1_chance")
        lines.append(f"  dataset: {s.runs[0]['label'].split(' on ', 1)[-1]}  (R@1 = recall@1; chance"
                     f" {f'{ch:.2%}' if ch is not None else '= 1/imgs'})")
    lines.append("=" * 78)
    return "\n".join(lines)


def summary_markdown(s: Summary) -> str:
    out = [f"# clipgeo run summary\n\nData home `{s.home}`; finished in {s.seconds:.0f} s. Figures from the view "
           f"`{HEADLINE_VIEW}` (`clipgeo sql \"select * from {HEADLINE_VIEW}\"`).\n"]
    out.append("| run | model on dataset | images | captions | T→I R@1 | T→I R@5 | I→T R@1 | gap | separability |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in s.runs:
        out.append(
            f"| `{r['run_id']}` | {r['label']} | {r['n_images']} | {r['n_texts']} | {_f(r['t2i_r1'], True)} |"
            f" {_f(r['t2i_r5'], True)} | {_f(r['i2t_r1'], True)} | {_f(r['gap'])} | {_f(r['separability_accuracy'], True)} |"
        )
    tied = [f"- `{r['run_id']}`: {_ties(r)}" for r in s.runs if _ties(r)]
    if tied:
        out.append("\nExact ties (R@1 above counts them in favour):\n" + "\n".join(tied))
    out.append("\nReports:\n" + "\n".join(f"- `{p}`" for p in s.reports))
    return "\n".join(out)
