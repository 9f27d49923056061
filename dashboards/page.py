"""Offline HTML pages holding several Vega-Lite charts.

The Vega, Vega-Lite and Vega-Embed scripts are inlined once per page (from
``vl-convert``'s bundle), so a report opens from disk with no network. Chart specs go in
``<script type="application/json">`` blocks with ``<``, ``>`` and ``&`` escaped as
unicode escapes, and every caption or table cell from the data is HTML-escaped: text
from a dataset is shown as text and never runs. Control characters (NUL, ESC, DEL, C1...; a
hostile caption file can hold them) are never written raw: each becomes U+FFFD (�) in the
page's text and in the charts' data (:func:`clean_text`, applied to the whole page but the
inlined Vega bundle, and to every string of the JSON data).
"""

from __future__ import annotations

import functools
import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

import altair as alt


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """The Vega + Vega-Lite + Vega-Embed JavaScript bundle, safe to put in a <script> tag."""
    import vl_convert as vlc

    return vlc.javascript_bundle().replace("</script", "<\\/script")


#: C0 controls but tab, newline and carriage return; DEL; the C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(s: str) -> str:
    """``s`` with every control character (C0 but tab/newline/CR, DEL, C1) replaced by U+FFFD.

    Examples
    --------
    >>> clean_text("a\\x00b\\x1b[31mc\\td")
    'a\ufffdb\ufffd[31mc\\td'
    """
    return _CONTROL.sub("\ufffd", s)


def _clean_obj(obj: Any) -> Any:
    """``obj`` with :func:`clean_text` applied to every string in it (keys and values)."""
    if isinstance(obj, str):
        return clean_text(obj)
    if isinstance(obj, dict):
        return {_clean_obj(k): _clean_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_obj(v) for v in obj]
    return obj


def _json_for_script(obj: Any) -> str:
    s = json.dumps(_clean_obj(obj), sort_keys=True, default=str)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


STATUS_OK = "ok"
CELL_CHARS = 160  # longer table cells are cut, with the full text on hover (title attribute)


@dataclass
class Section:
    title: str
    caption: str
    chart: alt.TopLevelMixin | None = None
    table: list[dict] | None = None
    missing: str | None = None  # why this section has no content
    status: str = STATUS_OK  # ok | skipped | failed | not measured | empty (shown in the table of contents)
    views: tuple[str, ...] = ()  # the SQL views the chart and table read
    query: str = ""  # the `clipgeo sql` command that returns the plotted rows
    html_block: str = ""  # pre-rendered, already escaped HTML (the headline block)


@dataclass
class Page:
    title: str
    provenance: list[tuple[str, str]]
    sections: list[Section] = field(default_factory=list)
    note: str = ""
    meta: dict[str, str] = field(default_factory=dict)  # <meta name="clipgeo-KEY"> (the index reads them)
    toc: bool = True
    intro: str = ""  # pre-rendered, already escaped HTML shown before the first section

    def add(self, section: Section) -> None:
        self.sections.append(section)

    def chart_specs(self) -> list[tuple[str, dict]]:
        """(section title, Vega-Lite spec) of every chart, for PNG/SVG export."""
        return [(s.title, s.chart.to_dict()) for s in self.sections if s.chart is not None]

    def render(self) -> str:
        e = html.escape
        specs: list[tuple[str, dict, list[str]]] = []
        datasets: dict[str, dict] = {}
        body: list[str] = []
        for i, s in enumerate(self.sections):
            body.append(f'<section id="s{i}"><h2>{e(s.title)}</h2>')
            if s.missing:
                body.append(f'<p class="missing">Not available: {e(s.missing)}</p>')
            if s.html_block:
                body.append(s.html_block)
            if s.chart is not None:
                body.append(f'<div class="chart" id="chart{i}"></div>')
                spec = s.chart.to_dict()
                names = []
                for name, rows in (spec.pop("datasets", None) or {}).items():
                    datasets.setdefault(name, _columnar(rows))  # same rows, same name: stored once per page
                    names.append(name)
                specs.append((f"chart{i}", spec, names))
            if s.table:
                body.append(table_html(s.table))
            cap = f'<p class="caption">{e(s.caption)}'
            if s.query:
                cap += f'<br><span class="query">Rows: <code>{e(s.query)}</code></span>'
            body.append(cap + "</p></section>")
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            *(f'<meta name="clipgeo-{e(k)}" content="{e(v)}">' for k, v in self.meta.items()),
            f"<title>{e(self.title)}</title>",
            "<style>",
            _CSS,
            "</style>",
            _ERROR_TRAP_JS,
        ]
        bundle = f"<script>{vega_bundle()}</script>" if specs else None
        if bundle:
            parts.append(bundle)
        parts += [
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
            '<div class="table-wrap"><table class="prov">'
            + "".join(f"<tr><th>{e(k)}</th><td>{_cell(v, 600)}</td></tr>" for k, v in self.provenance)
            + "</table></div>",
        ]
        if self.note:
            parts.append(f'<p class="note">{e(self.note)}</p>')
        if self.intro:
            parts.append(self.intro)
        if self.toc and self.sections:
            parts.append(self._toc())
        parts += body
        parts.append('<pre id="clipgeo-status" hidden></pre>')
        parts.append(f'<script type="application/json" id="datasets">{_json_for_script(datasets)}</script>')
        parts.append(f'<script type="application/json" id="specs">{_json_for_script(specs)}</script>')
        parts.append(_EMBED_JS if specs else _NO_CHARTS_JS)
        parts.append("</body></html>")
        # the bundle is the only part not built from data (and is left byte for byte)
        return "\n".join(p if p is bundle else clean_text(p) for p in parts)

    def _toc(self) -> str:
        e = html.escape
        items = []
        for i, s in enumerate(self.sections):
            cls = "ok" if s.status == STATUS_OK else ("failed" if s.status.startswith("failed") else "skipped")
            why = f' title="{e(s.missing)}"' if s.missing else ""
            items.append(f'<li><a href="#s{i}">{e(s.title)}</a> <span class="st st-{cls}"{why}>{e(s.status)}</span></li>')
        return '<nav class="toc" id="toc"><h2>Contents</h2><ol>' + "".join(items) + "</ol></nav>"


def _round(v: Any) -> Any:
    if isinstance(v, float) and v == v and v not in (float("inf"), float("-inf")):
        return float(f"{v:.6g}")
    return v


def _columnar(rows: list[dict]) -> dict:
    """Rows packed by column: each key once instead of once per row, and a column with repeated
    values (run id, label, modality, captions...) as a dictionary plus codes when that is
    smaller. The page's script
    rebuilds the same row objects."""
    cols: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    values: dict[str, Any] = {}
    for c in cols:
        col = [_round(r.get(c)) for r in rows]
        try:
            distinct = list(dict.fromkeys(col))
        except TypeError:  # unhashable (lists): kept as they are
            distinct = col
        values[c] = col
        if len(distinct) < len(col):
            code = {v: i for i, v in enumerate(distinct)}
            packed = {"dict": distinct, "codes": [code[v] for v in col]}
            if len(json.dumps(packed, default=str)) < len(json.dumps(col, default=str)):  # whichever is smaller
                values[c] = packed
    return {"columns": cols, "n": len(rows), "values": values}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.4g}"  # NaN: not a number to print
    if isinstance(v, (list, tuple)):
        return "; ".join(_fmt(x) for x in v)
    return "" if v is None else str(v)


def _cell(v: Any, limit: int = CELL_CHARS) -> str:
    """An escaped table cell; text longer than ``limit`` is cut, with the full text on hover."""
    text = _fmt(v)
    if len(text) > limit:
        return f'<span class="cut" title="{html.escape(text)}">{html.escape(text[: limit - 1])}…</span>'
    return html.escape(text)


def table_html(rows: list[dict]) -> str:
    e = html.escape
    cols = list(rows[0])
    head = "".join(f"<th>{e(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222;
       box-sizing: border-box; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table.prov th { text-align: left; padding-right: 1em; color: #555; font-weight: normal; }
table.data { border-collapse: collapse; margin: .5em 0; }
table.data th, table.data td { border: 1px solid #ccc; padding: 3px 8px; font-size: .9em; text-align: right; }
table.data th { background: #f4f4f4; }
.caption { color: #444; font-size: .9em; max-width: 70em; }
.missing { color: #a33; }
.note { background: #fff7e0; padding: .5em; }
.chart-error { color: #a33; white-space: pre-wrap; }
.chart { width: 100%; max-width: 100%; overflow-x: auto; }
.table-wrap { max-width: 100%; overflow-x: auto; }
table.data td { max-width: 40em; overflow-wrap: break-word; }
.cut { cursor: help; border-bottom: 1px dotted #999; }
.query code { font-size: .85em; background: #f4f4f4; padding: 0 .3em; overflow-wrap: anywhere; }
nav.toc { background: #fafafa; border: 1px solid #ddd; padding: .3em 1em; columns: 2; }
nav.toc h2 { margin-top: .3em; column-span: all; border: none; }
nav.toc li { break-inside: avoid; }
.st { font-size: .8em; padding: 0 .4em; border-radius: 3px; }
.st-ok { background: #e3f4e3; } .st-skipped { background: #fff3cd; } .st-failed { background: #f8d7da; }
table.headline td.ref { color: #666; }
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
  var packed = JSON.parse(document.getElementById("datasets").textContent);
  var rows = {};
  function dataset(name) {  // packed columns -> row objects, built once and shared by every chart using them
    if (!rows[name]) {
      var p = packed[name], out = new Array(p.n);
      for (var i = 0; i < p.n; i++) { out[i] = {}; }
      p.columns.forEach(function (c) {
        var v = p.values[c];
        if (Array.isArray(v)) { for (var i = 0; i < p.n; i++) { out[i][c] = v[i]; } }
        else { for (var j = 0; j < p.n; j++) { out[j][c] = v.dict[v.codes[j]]; } }
      });
      rows[name] = out;
    }
    return rows[name];
  }
  var status = { total: specs.length, rendered: 0, chartErrors: [] };
  var jobs = specs.map(function (item) {
    var id = item[0], spec = item[1];
    spec.datasets = {};
    item[2].forEach(function (name) { spec.datasets[name] = dataset(name); });
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
    status.pageWidth = document.documentElement.scrollWidth;  // wider than the window = horizontal overflow
    status.windowWidth = document.documentElement.clientWidth;
    document.getElementById("clipgeo-status").textContent = JSON.stringify(status);
  });
})();
</script>"""

_NO_CHARTS_JS = """<script>
document.getElementById("clipgeo-status").textContent = JSON.stringify(
  { total: 0, rendered: 0, withGraphics: 0, chartErrors: [], jsErrors: window.clipgeoErrors,
    pageWidth: document.documentElement.scrollWidth, windowWidth: document.documentElement.clientWidth });
</script>"""
