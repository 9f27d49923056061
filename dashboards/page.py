"""Offline HTML pages holding several Vega-Lite charts.

The Vega, Vega-Lite and Vega-Embed scripts are inlined once per page (from
``vl-convert``'s bundle), so a report opens from disk with no network. Chart specs go in
``<script type="application/json">`` blocks with ``<``, ``>`` and ``&`` escaped as
unicode escapes, and every caption or table cell from the data is HTML-escaped: text
from a dataset is shown as text and never runs.
"""

from __future__ import annotations

import functools
import html
import json
from dataclasses import dataclass, field
from typing import Any

import altair as alt


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """The Vega + Vega-Lite + Vega-Embed JavaScript bundle, safe to put in a <script> tag."""
    import vl_convert as vlc

    return vlc.javascript_bundle().replace("</script", "<\\/script")


def _json_for_script(obj: Any) -> str:
    s = json.dumps(obj, sort_keys=True, default=str)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass
class Section:
    title: str
    caption: str
    chart: alt.TopLevelMixin | None = None
    table: list[dict] | None = None
    missing: str | None = None  # why this section has no content


@dataclass
class Page:
    title: str
    provenance: list[tuple[str, str]]
    sections: list[Section] = field(default_factory=list)
    note: str = ""

    def add(self, section: Section) -> None:
        self.sections.append(section)

    def chart_specs(self) -> list[tuple[str, dict]]:
        """(section title, Vega-Lite spec) of every chart, for PNG/SVG export."""
        return [(s.title, s.chart.to_dict()) for s in self.sections if s.chart is not None]

    def render(self) -> str:
        e = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            "<style>",
            _CSS,
            "</style>",
            _ERROR_TRAP_JS,
            f"<script>{vega_bundle()}</script>",
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
            '<table class="prov">'
            + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in self.provenance)
            + "</table>",
        ]
        if self.note:
            parts.append(f'<p class="note">{e(self.note)}</p>')
        specs = []
        for i, s in enumerate(self.sections):
            parts.append(f'<section id="s{i}"><h2>{e(s.title)}</h2>')
            if s.missing:
                parts.append(f'<p class="missing">Not available: {e(s.missing)}</p>')
            if s.chart is not None:
                parts.append(f'<div class="chart" id="chart{i}"></div>')
                specs.append((f"chart{i}", s.chart.to_dict()))
            if s.table:
                parts.append(_table_html(s.table))
            parts.append(f'<p class="caption">{e(s.caption)}</p></section>')
        parts.append('<pre id="clipgeo-status" hidden></pre>')
        parts.append(f'<script type="application/json" id="specs">{_json_for_script(specs)}</script>')
        parts.append(_EMBED_JS)
        parts.append("</body></html>")
        return "\n".join(parts)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _table_html(rows: list[dict]) -> str:
    e = html.escape
    cols = list(rows[0])
    head = "".join(f"<th>{e(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{e(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table.prov th { text-align: left; padding-right: 1em; color: #555; font-weight: normal; }
table.data { border-collapse: collapse; margin: .5em 0; }
table.data th, table.data td { border: 1px solid #ccc; padding: 3px 8px; font-size: .9em; text-align: right; }
table.data th { background: #f4f4f4; }
.caption { color: #444; font-size: .9em; max-width: 70em; }
.missing { color: #a33; }
.note { background: #fff7e0; padding: .5em; }
.chart-error { color: #a33; white-space: pre-wrap; }
"""

_ERROR_TRAP_JS = """<script>
window.clipgeoErrors = [];
window.addEventListener("error", function (e) { window.clipgeoErrors.push("error: " + e.message); });
(function () {
  var original = console.error;
  console.error = function () {
    window.clipgeoErrors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
</script>"""

# Renders every chart, then writes a machine-readable status (charts rendered, errors seen)
# into #clipgeo-status, which the browser test reads.
_EMBED_JS = """<script>
(function () {
  var specs = JSON.parse(document.getElementById("specs").textContent);
  var status = { total: specs.length, rendered: 0, chartErrors: [] };
  var jobs = specs.map(function (item) {
    var id = item[0], spec = item[1];
    return vegaEmbed("#" + id, spec, { renderer: "svg", actions: { export: true, source: false, compiled: false, editor: false } })
      .then(function () { status.rendered += 1; })
      .catch(function (err) {
        status.chartErrors.push(id + ": " + err);
        var el = document.getElementById(id);
        el.className = "chart-error"; el.textContent = "chart failed to render: " + err;
      });
  });
  Promise.all(jobs).then(function () {
    status.withGraphics = specs.filter(function (item) {
      return document.querySelector("#" + item[0] + " svg, #" + item[0] + " canvas") !== null;
    }).length;
    status.jsErrors = window.clipgeoErrors;
    document.getElementById("clipgeo-status").textContent = JSON.stringify(status);
  });
})();
</script>"""
