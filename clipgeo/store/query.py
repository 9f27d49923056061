"""Ad-hoc SQL over the catalog and the vectors, in a sandbox.

:func:`sandbox` opens the home's catalog read-only in a DuckDB session that can read the
catalog and the run vectors it was given, and nothing else:

- ``enable_external_access = false``: no file access at all (``read_csv``/``read_text``/
  ``glob`` of any path, ``COPY ... TO``, ``EXPORT DATABASE``, ``ATTACH`` of another database,
  new or existing), no ``INSTALL``/``LOAD`` of extensions, no replacement scans of Python
  variables;
- extension auto-install/auto-load and community extensions off;
- the catalog itself attached ``read_only`` (no ``INSERT``/``UPDATE``/``DELETE``/DDL on it);
- memory and threads capped, then ``lock_configuration = true``, so no statement can turn
  any of this back off (``SET``/``RESET`` fail).

Each run's LanceDB table that the query names (``vectors_<run_id>``) is registered before
the session is handed out, as a Lance dataset read in place through Arrow (projection and
filters pushed down). Results are fetched in Arrow record batches (:func:`stream`), so a
huge result is never held whole in memory; :func:`read_only_query` caps the rows.

Columns with the same name (legal SQL: ``SELECT 1 AS a, 2 AS a``) are renamed as DuckDB itself
renames them in a subquery or ``.pl()``: the second ``a`` becomes ``a_1``, the next ``a_2``
(:func:`unique_names`). A statement runs under a time limit (``timeout`` seconds, default
:data:`DEFAULT_TIMEOUT_S`): past it, DuckDB's own interrupt cancels it and :class:`QueryTimeout`
says so; the session is read-only, so nothing is left half-done.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import duckdb
import polars as pl
import pyarrow as pa

from clipgeo.core.config import DataHome
from clipgeo.store import catalog

DEFAULT_MAX_ROWS = 1000
BATCH_ROWS = 8192
DEFAULT_TIMEOUT_S = 300.0  # 5 minutes per statement

SANDBOX_CONFIG: dict[str, str | bool] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "memory_limit": "2GB",
    "threads": 2,
    "lock_configuration": True,
}


class QueryRefused(ValueError):
    """The sandbox refused a statement (a file, another database, an extension, a setting,
    or a write to the read-only catalog)."""


class QueryFailed(ValueError):
    """The query itself is wrong (syntax, unknown table or column, ...)."""


class QueryTimeout(QueryFailed):
    """The statement ran past its time limit and was cancelled."""


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique the way DuckDB does it: a repeated name gets ``_1``, ``_2``, …
    (skipping any suffix already taken).

    Examples
    --------
    >>> unique_names(["a", "a", "b", "a", "a_1"])
    ['a', 'a_1', 'b', 'a_2', 'a_1_1']
    """
    seen: set[str] = set()
    out = []
    for name in names:
        new, k = name, 0
        while new in seen:
            k += 1
            new = f"{name}_{k}"
        seen.add(new)
        out.append(new)
    return out


def _renamed(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    return batch if batch.schema.names == names else pa.RecordBatch.from_arrays(batch.columns, names=names)


@contextlib.contextmanager
def _time_limit(con: duckdb.DuckDBPyConnection, timeout: float | None) -> Iterator[threading.Event]:
    """Interrupt ``con`` once ``timeout`` seconds have passed (None or 0: no limit); the event
    says whether it fired."""
    fired = threading.Event()
    if not timeout:
        yield fired
        return

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def _timeout_error(timeout: float) -> QueryTimeout:
    return QueryTimeout(f"statement cancelled: it ran past the time limit of {timeout:g} s "
                        "(pass --timeout SECONDS for a longer one, 0 for none)")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400]


def _classify(exc: duckdb.Error) -> ValueError:
    msg = _one_line(exc)
    low = msg.lower()
    if isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in low or "external" in low and "disabled" in low:
        return QueryRefused(f"refused: clipgeo sql cannot read or write files, attach other databases or load "
                            f"extensions ({msg})")
    if "configuration has been locked" in low:
        return QueryRefused(f"refused: the sandbox's settings are locked ({msg})")
    if "read-only" in low or "read only" in low:
        return QueryRefused(f"refused: the catalog is read-only here ({msg})")
    return QueryFailed(f"query failed: {msg}")


def _vector_tables(home: DataHome, sql: str) -> dict[str, object]:
    """The Lance datasets of the ``vectors_<run_id>`` tables that ``sql`` names."""
    named = {m.lower() for m in re.findall(r"vectors_[A-Za-z0-9_]+", sql)}
    if not named or not home.lance.exists():
        return {}
    from clipgeo.store import vectors

    db = vectors.connect(home)
    # float16 tables (DuckDB reads no float16) come as a float32 stream (vectors.sql_source)
    return {n: vectors.sql_source(db.open_table(n)) for n in vectors.table_names(db) if n.lower() in named}


@contextlib.contextmanager
def sandbox(home: DataHome, sql: str = "") -> Iterator[duckdb.DuckDBPyConnection]:
    """A locked, read-only session on the home's catalog with the vectors ``sql`` names."""
    datasets = _vector_tables(home, sql)
    with catalog.session(home, read_only=True, config=SANDBOX_CONFIG) as con:
        for name, ds in datasets.items():
            con.register(name, ds)
        yield con


def stream(home: DataHome, sql: str, *, batch_rows: int = BATCH_ROWS,
           timeout: float | None = DEFAULT_TIMEOUT_S) -> Iterator[pa.RecordBatch]:
    """Run ``sql`` in the :func:`sandbox` and yield its result in record batches (names made
    unique by :func:`unique_names`); the whole statement, fetching included, within ``timeout``
    seconds (None or 0: no limit).

    Raises :class:`QueryRefused` for what the sandbox forbids, :class:`QueryTimeout` past the
    limit, :class:`QueryFailed` otherwise.
    """
    with sandbox(home, sql) as con, _time_limit(con, timeout) as fired:
        try:
            rel = con.sql(sql)
            if rel is not None:
                reader = rel.to_arrow_reader(batch_rows)
                names = unique_names(reader.schema.names)
                for batch in reader:
                    yield _renamed(batch, names)
        except duckdb.Error as exc:
            raise (_timeout_error(timeout) if fired.is_set() else _classify(exc)) from None


def fetch(home: DataHome, sql: str, *, max_rows: int | None = DEFAULT_MAX_ROWS,
          batch_rows: int = BATCH_ROWS, timeout: float | None = DEFAULT_TIMEOUT_S) -> tuple[pa.Table, bool]:
    """Up to ``max_rows`` rows (None or 0: all) of ``sql``'s result, and whether rows were left out;
    column names made unique (:func:`unique_names`), the statement cancelled past ``timeout``
    seconds (:class:`QueryTimeout`; None or 0: no limit).

    Batches are fetched only until the cap is reached: the rest of the result is never computed.
    """
    with sandbox(home, sql) as con, _time_limit(con, timeout) as fired:
        try:
            rel = con.sql(sql)  # a statement that returns no rows runs here and gives None
            if rel is None:
                return pa.table({}), False
            reader = rel.to_arrow_reader(batch_rows)
            names = unique_names(reader.schema.names)
            out: list[pa.RecordBatch] = []
            n, more = 0, False
            for batch in reader:
                batch = _renamed(batch, names)
                if max_rows and n + batch.num_rows >= max_rows:
                    out.append(batch.slice(0, max_rows - n))
                    more = n + batch.num_rows > max_rows or next(iter(reader), None) is not None
                    break
                out.append(batch)
                n += batch.num_rows
            schema = pa.schema([f.with_name(nm) for f, nm in zip(reader.schema, names)], metadata=reader.schema.metadata)
            return pa.Table.from_batches(out, schema=schema), more
        except duckdb.Error as exc:
            raise (_timeout_error(timeout) if fired.is_set() else _classify(exc)) from None


def read_only_query(home: DataHome, sql: str, *, max_rows: int | None = None,
                    timeout: float | None = DEFAULT_TIMEOUT_S) -> pl.DataFrame:
    """Run ``sql`` in the sandbox and return (up to ``max_rows`` of) its rows as a frame.

    Each run's LanceDB table is visible under its own name (``vectors_<run_id>``), e.g.::

        SELECT modality, count(*) FROM vectors_r0123abcd GROUP BY modality
    """
    table, _ = fetch(home, sql, max_rows=max_rows, timeout=timeout)
    return pl.from_arrow(table)  # type: ignore[return-value]
