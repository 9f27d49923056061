"""The ``clipgeo`` command, generated from the flows' signatures (cyclopts, as Prefect's own CLI).

    clipgeo run       [--home DIR] [--n-train N] [--train-steps N] [--objectives infonce ...] ...   (clipgeo-pipeline)
    clipgeo ablation  ...                                                                           (clipgeo-ablation)
    clipgeo dataset   SOURCE PATH [--image-dir DIR] [--models NAME=PRETRAINED ...] ...             (clipgeo-dataset)
    clipgeo embed     MODEL_NAME DATASET_ID [--pretrained TAG|PATH] [--shard-images N] ...          (clipgeo-embed)
    clipgeo analyse   [--run-ids ID ...] [--stale-only] [--force] [--umap-grid]                     (clipgeo-analyse)
    clipgeo track     [CHECKPOINT_DIR --arch NAME --dataset ID] [--full NAME ...] [--settle-seconds S] (clipgeo-track)
    clipgeo report    [--run-ids ID ...] [--export svg|png]
    clipgeo sql       "SELECT * FROM v_compare" [--format table|csv|json] [--max-rows N] [--timeout S]
    clipgeo runs
    clipgeo import    IMAGES.npy TEXTS.npy [--text-image IDX.npy] [--captions FILE] [--model NAME] ...
    clipgeo migrate   [--home DIR]
    clipgeo serve     [--home DIR] [--limit N]

A flow command's options are its flow's parameters, under the same names as in the Prefect UI
(``train_steps`` is ``--train-steps``, a list is given by repeating the option or listing
values after it), with the help text of the flow's docstring: a parameter added to a flow is an
option at once. Inputs are checked before any flow starts (one line on error, exit code 2).

``sql``, ``runs``, ``report``, ``import`` and ``migrate`` run no flow: they import no Prefect and start no server.
``sql`` runs in a sandbox (:mod:`clipgeo.store.query`): read-only, no files, no other
databases, no extensions, settings locked; every run's vectors table is queryable under its
own name (``vectors_<run_id>``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Annotated, Literal

from cyclopts import App, Parameter

import flows  # noqa: F401  (environment defaults: no Prefect import)

app = App(
    name="clipgeo",
    help="Measure the geometry of CLIP-like embedding spaces.",
    default_parameter=Parameter(consume_multiple=True, negative_iterable=()),
    version_flags=(),
    result_action="return_value",
)

# Flow commands are loaded only when run (or their own --help is asked for): `clipgeo sql`
# and `clipgeo --help` never import Prefect, torch or open_clip; a flow command checks its
# arguments before it imports them (flows.precheck).
app.command("flows.precheck:run", name="run",
            help="The main pipeline (clipgeo-pipeline): shapes + tiny models, embed, measure, report.")
app.command("flows.precheck:ablation", name="ablation",
            help="The paper's ablation (clipgeo-ablation): {InfoNCE, InfoLOOB} x {without, with Hopfield}.")
app.command("flows.precheck:dataset", name="dataset",
            help="Your data (clipgeo-dataset): ingest a source, embed with each model, measure, report.")
app.command("flows.precheck:embed", name="embed",
            help="Embed one registered dataset with one model (clipgeo-embed); prints the run id.")
app.command("flows.precheck:analyse", name="analyse",
            help="Measure stored runs (clipgeo-analyse); prints the run ids.")
app.command("flows.commands:track", name="track",
            help="Measure each new checkpoint of a training (clipgeo-track), or of every registered one.")
app.command("flows.serve:main", name="serve",
            help="Serve every deployment to the Prefect server at PREFECT_API_URL.")


#: Between the items of a list (or fixed-size array) in a CSV cell; a list inside a list is ``[a, b]``.
CSV_LIST_SEPARATOR = "; "


def _csv_cell(expr, dtype):
    """``expr`` (of polars ``dtype``) as text a CSV cell holds, for what CSV cannot write: a list or
    array as its items joined by :data:`CSV_LIST_SEPARATOR` (a null list: an empty cell; an empty
    list: ``""``; a null item: nothing between two separators), a struct as JSON, a map as its
    ``{"key": .., "value": ..}`` entries, binary as hex."""
    import polars as pl

    if isinstance(dtype, (pl.List, pl.Array, pl.Map)):
        items, inner = _as_list(expr, dtype)
        return items.list.eval(_csv_item(pl.element(), inner)).list.join(CSV_LIST_SEPARATOR)
    if isinstance(dtype, pl.Struct):
        return pl.when(expr.is_not_null()).then(expr.struct.json_encode())
    if dtype == pl.Binary:
        return expr.bin.encode("hex")
    return expr


def _as_list(expr, dtype):
    """A list, fixed-size array or map column as ``(list expression, item dtype)``; a map's items
    are its ``{key, value}`` entries."""
    import polars as pl

    if isinstance(dtype, pl.Map):
        return expr.map.entries(), pl.Struct({"key": dtype.key, "value": dtype.value})
    return (expr.arr.to_list() if isinstance(dtype, pl.Array) else expr), dtype.inner


def _csv_item(expr, dtype):
    """One item of a list in a CSV cell: a list inside it as ``[a, b]``, anything else as its text."""
    import polars as pl

    if isinstance(dtype, (pl.List, pl.Array, pl.Map)):
        items, inner = _as_list(expr, dtype)
        text = pl.concat_str(pl.lit("["), items.list.eval(_csv_item(pl.element(), inner)).list.join(", "), pl.lit("]"))
    elif isinstance(dtype, pl.Struct) or dtype == pl.Binary:
        text = _csv_cell(expr, dtype)
    else:
        text = expr.cast(pl.String)
    return text.fill_null("")


def _csv(df, *, header: bool = True) -> str:
    """``df`` as CSV, nested and binary columns written as text (:func:`_csv_cell`)."""
    import polars as pl

    flat = df.with_columns(_csv_cell(pl.col(c), t).alias(c) for c, t in df.schema.items()
                           if t.is_nested() or t == pl.Binary)
    return flat.write_csv(include_header=header)


def _print_table(table, more: bool, max_rows: int, fmt: str) -> None:
    import polars as pl

    df = pl.from_arrow(table)
    if fmt == "csv":
        sys.stdout.write(_csv(df))
    elif fmt == "json":
        sys.stdout.write(json.dumps(df.to_dicts(), default=str, indent=1) + "\n")
    else:
        with pl.Config(tbl_rows=max(len(df), 1), tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            print(df)
    if more:
        print(f"clipgeo sql: {len(df)} rows shown, more were left out; pass --max-rows N (0: all)", file=sys.stderr)


@app.command
def sql(query: str, *, home: str | None = None, format: Literal["table", "csv", "json"] = "table",  # noqa: A002
        max_rows: int = 1000, timeout: float = 300.0) -> None:
    """Run a read-only SQL query on the catalog and the vectors, in a sandbox.

    Columns of the same name come back as DuckDB names them (a, a_1, ...).

    Args:
        query: the SQL; each run's vectors are the table ``vectors_<run_id>``.
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        format: output format; csv writes a list as its items joined by "; ", a struct as JSON,
            a blob as hex.
        max_rows: rows fetched at most (0: all, streamed in batches for csv and json).
        timeout: seconds the statement may run, fetching included (default 300 = 5 minutes;
            0: no limit); past it the statement is cancelled and one line says so.
    """
    from clipgeo.store import query as q

    h = _home(home)
    if timeout < 0:
        from flows.checks import BadInput

        raise BadInput(f"--timeout must be >= 0 seconds (0: no limit), got {timeout:g}")
    if max_rows == 0 and format in ("csv", "json"):
        _stream(h, query, format, timeout)
        return
    table, more = q.fetch(h, query, max_rows=max_rows or None, timeout=timeout or None)
    _print_table(table, more, max_rows, format)


def _stream(h, query: str, fmt: str, timeout: float = 300.0) -> None:
    import polars as pl

    from clipgeo.store import query as q

    first = True
    for batch in q.stream(h, query, timeout=timeout or None):
        df = pl.from_arrow(batch)
        if fmt == "csv":
            sys.stdout.write(_csv(df, header=first))
        else:
            for row in df.to_dicts():
                sys.stdout.write(json.dumps(row, default=str) + "\n")
        first = False


def _home(home: str | None):
    from flows.checks import usable_home

    return usable_home(home)


@app.command
def runs(*, home: str | None = None) -> None:
    """List runs with their status and provenance.

    Args:
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
    """
    sql("SELECT run_id, status, label, n_images, n_texts, device, analysis_version, updated_at, error"
        " FROM v_runs ORDER BY updated_at", home=home, max_rows=0)


@app.command
def report(run_ids: Annotated[list[str] | None, Parameter(consume_multiple=True)] = None, *, home: str | None = None,
           export: Literal["svg", "png"] | None = None, full_paths: bool = False) -> None:
    """(Re)write the HTML reports from the catalog alone (what the clipgeo-report flow does).

    Args:
        run_ids: runs to report (default: every measured run).
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        export: also write each chart as an image file.
        full_paths: keep local paths as stored (default: shareable, relative to the data home,
            else file name + content hash).
    """
    from clipgeo.store import catalog
    from dashboards.build import write_reports

    h = _home(home)
    if not run_ids:
        with catalog.session(h, read_only=True) as con:
            run_ids = [r for (r,) in catalog.execute(con, "SELECT run_id FROM runs WHERE status = 'measured' ORDER BY label")]
    for p in write_reports(h, run_ids, export=export, full_paths=full_paths):
        print(p)


@app.command
def migrate(*, home: str | None = None) -> None:
    """Bring a data home up to this version: the catalog's schema, and every vectors table
    still in storage format 1 rewritten in format 2 (each vector once, in its source
    precision, with its norm; each table under its run's lock). Measuring a run migrates
    its table too; this does them all at once. Prints one line per migrated run.

    Args:
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
    """
    from clipgeo.store import catalog, vectors

    h = _home(home)
    if not h.catalog.exists():
        from flows.checks import BadInput

        raise BadInput(f"no catalog at {h.catalog}: nothing to migrate (pass --home DIR of an existing data home)")
    with catalog.session(h) as con:   # a writable session applies the pending schema migrations
        version = catalog.execute(con, "SELECT max(version) FROM schema_migrations")[0][0]
    print(f"catalog: schema version {version}")
    for run_id in vectors.migrate_home(h):
        print(f"run {run_id}: vectors table rewritten in storage format 2")


def _read_vectors(path: str, column: str | None, what: str):
    """A ``.npy`` file (memory-mapped) or a Parquet column of fixed-size lists."""
    from pathlib import Path

    import numpy as np

    p = Path(path)
    if not p.is_file():
        from flows.checks import BadInput

        raise BadInput(f"{what}: no file {p}")
    if p.suffix == ".npy":
        return np.load(p, mmap_mode="r")
    if p.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        names = pq.read_schema(p).names
        col = column or next((c for c in ("vector", "embedding", "emb") if c in names), names[0])
        if col not in names:
            raise ValueError(f"{what}: {p} has no column {col!r} (columns: {', '.join(names)})")
        return pq.read_table(p, columns=[col]).column(col)
    raise ValueError(f"{what}: {p} is neither .npy nor .parquet")


@app.command(name="import")
def import_arrays(images: str, texts: str, *, text_image: str | None = None, captions: str | None = None,
                  column: str | None = None, model: str = "arrays", pretrained: str | None = None,
                  dataset: str = "arrays", split: str | None = None, normalized: bool | None = None,
                  home: str | None = None) -> None:
    """Store precomputed vectors of any model as a run (clipgeo.import_arrays); prints the run id.

    Measure it next with ``clipgeo analyse --run-ids RUN`` (or ``clipgeo.measure_if_stale``).

    Args:
        images: image vectors, ``.npy`` (n_images, d) or a Parquet file with a vector column.
        texts: text vectors, ``.npy`` (n_texts, d) or Parquet.
        text_image: ``.npy`` of integers, the image row of each caption (default: rows are pairs).
        captions: a text file with one caption per line, or a Parquet file with a ``caption`` column.
        column: the Parquet vector column (default: ``vector``, ``embedding``, ``emb`` or the first).
        model: the model's name as you want it recorded (e.g. ViT-B-32).
        pretrained: its pretrained tag or checkpoint.
        dataset: the data's name.
        split: the data's split.
        normalized: the vectors are L2-normalised (default: detected).
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
    """
    from pathlib import Path

    import numpy as np

    from clipgeo.api import import_arrays as _import

    img = _read_vectors(images, column, "images")
    txt = _read_vectors(texts, column, "texts")
    idx = np.load(text_image) if text_image else None
    caps = None
    if captions:
        cp = Path(captions)
        if cp.suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            caps = pq.read_table(cp, columns=["caption"]).column("caption").to_pylist()
        else:
            caps = cp.read_text(encoding="utf-8").splitlines()
    run_id = _import(_home(home), img, txt, idx, captions=caps, model=model, pretrained=pretrained, dataset=dataset,
                     split=split, normalized=normalized)
    print(run_id)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def parse(argv: Sequence[str]):
    """Parse a command line without running it: (command function, bound arguments)."""
    command, bound, _ = app.parse_args(list(argv), exit_on_error=False, print_error=False)
    return command, bound


def main(argv: Sequence[str] | None = None) -> int:
    from cyclopts import CycloptsError

    from clipgeo.store.catalog import CatalogError
    from flows.checks import BadInput

    argv = list(sys.argv[1:] if argv is None else argv)
    name = next((a for a in argv if not a.startswith("-")), "")
    try:
        app(argv, exit_on_error=False, print_error=False)
    except CycloptsError as exc:
        print(f"clipgeo: {_one_line(exc)} (see clipgeo {name} --help)".replace("  ", " "), file=sys.stderr)
        return 2
    except (BadInput, CatalogError, ValueError, KeyError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"clipgeo {name}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clipgeo {name}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:  # a flow failed: Prefect has logged its traceback above
        print(f"clipgeo {name}: failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
