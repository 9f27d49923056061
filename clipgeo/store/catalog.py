"""The DuckDB catalog: connection, migrations from ``sql/``, and row writers.

DuckDB allows one writing process per file. clipgeo never holds a connection longer
than one unit of work: :func:`session` opens the file, runs the work, commits and
closes, and retries with exponential backoff while another process holds the lock.
Two flows writing into one data home therefore take turns instead of failing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from clipgeo.core.config import SQL_DIR, DataHome

log = logging.getLogger(__name__)

LOCK_WAIT_SECONDS = 300.0

#: DuckDB's memory cap for the stages' sessions (``CLIPGEO_DUCKDB_MEMORY`` overrides, e.g. ``4GB``).
#: Above it, joins, sorts and aggregates spill to ``<catalog>.tmp`` in the data home instead of
#: growing the process: loading 20M per-sample rows or reporting on them stays inside it.
DEFAULT_DUCKDB_MEMORY = "1GB"


def duckdb_memory() -> str:
    return os.environ.get("CLIPGEO_DUCKDB_MEMORY") or DEFAULT_DUCKDB_MEMORY


class CatalogError(RuntimeError):
    """The catalog could not be opened or migrated."""


def execute(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple]:
    """Run one statement and fetch its result to the end (DuckDB 2 requires a finished
    result before the next relation on the same connection)."""
    try:
        return con.execute(sql, params if params is not None else []).fetchall()
    except duckdb.OutOfMemoryException as exc:
        raise CatalogError(f"{exc}\n(DuckDB's memory cap is {duckdb_memory()}: raise it with CLIPGEO_DUCKDB_MEMORY, "
                           "e.g. CLIPGEO_DUCKDB_MEMORY=4GB)") from exc


def _is_lock_error(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return "lock" in msg and ("conflicting" in msg or "could not set" in msg)


def _open(path: Path, read_only: bool, wait_seconds: float,
          config: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only,
                                  config={"memory_limit": duckdb_memory(), **dict(config or {})})
        except duckdb.Error as exc:  # IOException on a held lock
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                if _is_lock_error(exc):
                    raise CatalogError(
                        f"{path} stayed locked by another process for {wait_seconds:.0f} s; "
                        "is a flow stuck? (see `clipgeo runs`)"
                    ) from exc
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


#: Catalogs held open by :func:`pinned` in this process (path → the open connection).
_PINNED: dict[str, duckdb.DuckDBPyConnection] = {}


@contextlib.contextmanager
def pinned(home: DataHome) -> Iterator[None]:
    """Hold a catalog no other process uses open for the block: every :func:`session` of it
    inside is a cursor of one migrated connection instead of an open, a migration check and a
    close (about 30 ms each; ``clipgeo.measure`` on a temporary home opened ten).

    Only for a home private to this process (the file stays locked against others meanwhile).

    Parameters
    ----------
    home : DataHome
        The data home whose catalog to hold.

    Examples
    --------
    >>> import shutil, tempfile
    >>> home = DataHome.resolve(tempfile.mkdtemp())
    >>> with pinned(home):
    ...     with session(home) as a:
    ...         _ = a.execute("CREATE TABLE t AS SELECT 1 AS x")
    ...     with session(home, read_only=True) as b:
    ...         b.execute("SELECT x FROM t").fetchall()
    [(1,)]
    >>> shutil.rmtree(home.root)
    """
    key = str(home.catalog)
    if key in _PINNED:      # nested: the outer block holds it
        yield
        return
    with session(home) as con:      # opened and migrated as any writable session, closed at the end
        _PINNED[key] = con
        try:
            yield
        finally:
            _PINNED.pop(key, None)


@contextlib.contextmanager
def session(
    home: DataHome, *, read_only: bool = False, wait_seconds: float = LOCK_WAIT_SECONDS,
    config: Mapping[str, Any] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the home's catalog (migrated when writable).

    ``config``: DuckDB settings fixed when the database opens (see :mod:`clipgeo.store.query`).
    Inside :func:`pinned` (and without ``config``) a cursor of the held connection.
    """
    held = _PINNED.get(str(home.catalog)) if config is None else None
    if held is not None:
        cur = held.cursor()
        try:
            yield cur
        finally:
            cur.close()
        return
    if read_only and not home.catalog.exists():
        raise CatalogError(
            f"no catalog at {home.catalog}: run the pipeline first (`make run`) "
            "or point CLIPGEO_HOME at an existing data home"
        )
    if not read_only:
        home.ensure()
    con = _open(home.catalog, read_only, wait_seconds, config)
    try:
        if not read_only:
            migrate(con)
        yield con
    finally:
        con.close()


def schema_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    files = sorted((sql_dir / "schema").glob("[0-9][0-9][0-9]_*.sql"))
    if not files:
        raise CatalogError(f"no migrations found under {sql_dir / 'schema'}")
    return files


def migrate(con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the versioned DDL in ``sql/schema`` not yet applied, then (re)create views.

    Each migration runs in its own transaction and is recorded in ``schema_migrations``.
    Returns the names of the migrations applied now.
    """
    execute(con, 
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)"
    )
    done = {v for (v,) in execute(con, "SELECT version FROM schema_migrations")}
    applied = []
    for f in schema_files(sql_dir):
        version = int(f.name[:3])
        if version in done:
            continue
        execute(con, "BEGIN TRANSACTION")
        try:
            execute(con, f.read_text())
            execute(con, "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, f.name])
            execute(con, "COMMIT")
        except Exception as exc:
            execute(con, "ROLLBACK")
            raise CatalogError(f"migration {f} failed: {exc}") from exc
        applied.append(f.name)
    _views_in_step(con, sql_dir, force=bool(applied))  # keeps views in step with the code
    load_reference_values(con, sql_dir / "reference" / "reference_values.csv")  # versioned data: reloads on change
    return applied


def _views_in_step(con: duckdb.DuckDBPyConnection, sql_dir: Path, force: bool = False) -> bool:
    """(Re)create the views unless every view already carries this code's stamp (a comment holding
    the sha256 of ``sql/views``) or ``force``; True when they were re-created. Re-creating all of
    them took 0.2-0.3 s and every writable session migrates; a view replaced by other code (an
    older version's ``CREATE OR REPLACE VIEW`` drops the comment), dropped or added since is
    noticed, and all are made again."""
    files = sorted((sql_dir / "views").glob("*.sql"))
    stamp = "clipgeo-views:" + hashlib.sha256(
        b"".join(f.name.encode() + b"\0" + f.read_bytes() + b"\0" for f in files)).hexdigest()[:32]
    views = "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'"
    if not force:
        have = execute(con, views)
        if have and all(c == stamp for _, c in have) and _expected_views(files) <= {v for v, _ in have}:
            return False
    with transaction(con):
        create_views(con, sql_dir)
        for (name, _) in execute(con, views):
            execute(con, f"COMMENT ON VIEW \"{name}\" IS '{stamp}'")
    return True


def _expected_views(files: Sequence[Path]) -> set[str]:
    """The view names the files create (``CREATE [OR REPLACE] VIEW name``)."""
    pat = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)", re.I)
    return {m.group(1) for f in files for m in pat.finditer(f.read_text())}


def create_views(con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR) -> None:
    """(Re)create every view in ``sql/views``, in file-name order (prefix NN_ orders them)."""
    for f in sorted((sql_dir / "views").glob("*.sql")):
        execute(con, f.read_text())


def run_sql_file(
    con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any] | None = None, sql_dir: Path = SQL_DIR
) -> None:
    """Execute ``sql/<name>`` with named ``$params``."""
    path = sql_dir / name
    execute(con, path.read_text(), dict(params or {}))


@dataclass(frozen=True)
class ParquetRows:
    """Rows that live in Parquet files (e.g. millions of per-sample rows written batch by batch):
    :func:`insert` moves them inside DuckDB (``INSERT … SELECT … FROM read_parquet``), never
    through Python. ``constants``: columns with one value for every row (e.g. ``run_id``)."""

    paths: tuple[str, ...]
    constants: Mapping[str, Any] = field(default_factory=dict)


def _as_arrow(rows: pl.DataFrame | pa.Table | Sequence[Mapping[str, Any]]) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pl.DataFrame):
        return rows.to_arrow()
    return pa.Table.from_pylist([dict(r) for r in rows])


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: pl.DataFrame | pa.Table | Sequence[Mapping[str, Any]]) -> int:
    """Insert rows by column name (columns not given take their defaults)."""
    if isinstance(rows, ParquetRows):
        return _insert_parquet(con, table, rows)
    data = _as_arrow(rows)
    if data.num_rows == 0:
        return 0
    cols = ", ".join(f'"{c}"' for c in data.column_names)
    con.register("_clipgeo_rows", data)
    try:
        execute(con, f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _clipgeo_rows")
    finally:
        con.unregister("_clipgeo_rows")
    return data.num_rows


def _insert_parquet(con: duckdb.DuckDBPyConnection, table: str, rows: ParquetRows) -> int:
    if not rows.paths:
        return 0
    import pyarrow.parquet as pq

    names = [n for n in pq.read_schema(rows.paths[0]).names if n not in rows.constants]
    consts = list(rows.constants)
    cols = ", ".join(f'"{c}"' for c in consts + names)
    select = ", ".join([f"${i + 1}" for i in range(len(consts))] + [f'"{n}"' for n in names])
    files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in rows.paths)
    before = execute(con, f"SELECT count(*) FROM {table}")[0][0]
    execute(con, f"INSERT INTO {table} ({cols}) SELECT {select} FROM read_parquet([{files}])",
            list(rows.constants.values()))
    return execute(con, f"SELECT count(*) FROM {table}")[0][0] - before


#: What makes a reject row unique (``sql/schema/010_rejects_once.sql`` indexes it, NULL as '').
REJECT_KEY = ("dataset_id", "run_id", "item_ref", "stage", "reason", "sample_id", "image_id")


def insert_rejects(con: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert reject rows, the first of each :data:`REJECT_KEY` only: one bad input, one row.

    Runs inside the caller's transaction, which deletes the rows it replaces first.
    """
    seen: set[tuple] = set()
    out = []
    for r in rows:
        key = tuple(r.get(c) or "" for c in REJECT_KEY)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return insert(con, "rejects", out)


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK on any error: all of the block's writes or none."""
    execute(con, "BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        execute(con, "ROLLBACK")
        raise
    execute(con, "COMMIT")


def delete_insert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    where: Mapping[str, Any],
    rows: pl.DataFrame | pa.Table | Sequence[Mapping[str, Any]],
) -> int:
    """Delete the rows matching ``where`` (equality per column), insert ``rows``.

    Runs inside the caller's transaction; use :func:`replace_where` for a standalone one.
    """
    cond = " AND ".join(f'"{k}" = ?' for k in where)
    execute(con, f"DELETE FROM {table} WHERE {cond}", list(where.values()))
    return insert(con, table, rows)


def replace_where(
    con: duckdb.DuckDBPyConnection,
    table: str,
    where: Mapping[str, Any],
    rows: pl.DataFrame | pa.Table | Sequence[Mapping[str, Any]],
) -> int:
    """Replace the rows matching ``where`` by ``rows``, atomically."""
    with transaction(con):
        return delete_insert(con, table, where, rows)


def query(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
    """Run a query and return a Polars frame."""
    rel = con.sql(sql, params=params) if params else con.sql(sql)
    return pl.from_arrow(rel.to_arrow_table())  # type: ignore[return-value]


def update_run(con: duckdb.DuckDBPyConnection, run_id: str, **fields: Any) -> None:
    """Set columns of one run (and its ``updated_at``)."""
    sets = ", ".join(f'"{k}" = ?' for k in fields)
    execute(con, 
        f"UPDATE runs SET {sets}, updated_at = current_timestamp WHERE run_id = ?",
        [*fields.values(), run_id],
    )


def stage_state(con: duckdb.DuckDBPyConnection, unit: str) -> dict[str, Any] | None:
    """What ``unit`` (``'<stage>:<id>'``) last produced from, as recorded by :func:`set_stage_state`."""
    found = execute(con, "SELECT state FROM stage_state WHERE unit = ?", [unit])
    return json.loads(found[0][0]) if found else None


def set_stage_state(con: duckdb.DuckDBPyConnection, unit: str, state: Mapping[str, Any] | None) -> None:
    """Record (or with None, forget) what ``unit``'s stored result was made from."""
    with transaction(con):
        execute(con, "DELETE FROM stage_state WHERE unit = ?", [unit])
        if state is not None:
            execute(con, "INSERT INTO stage_state (unit, state) VALUES (?, ?)",
                    [unit, json.dumps(state, sort_keys=True, default=str)])


def load_reference_values(con: duckdb.DuckDBPyConnection, path: Path | None = None) -> bool:
    """Bring ``reference_values`` in step with the shipped file; True when it was (re)loaded.

    Idempotent: when ``reference_data`` already records the file's sha256, nothing is written.
    Otherwise every row is replaced in one transaction. A catalog older than migration 013 (no
    ``reference_values`` table) is left alone.
    """
    if path is None:
        from clipgeo.reference import REFERENCE_FILE as path
    have = execute(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'reference_data'")
    if not have[0][0] or not Path(path).is_file():
        return False
    name = Path(path).name
    version = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    found = execute(con, "SELECT sha256 FROM reference_data WHERE name = ?", [name])
    if found and found[0][0] == version:
        return False
    from clipgeo.reference import read_reference_file

    version, rows = read_reference_file(path)
    with transaction(con):
        execute(con, "DELETE FROM reference_values")
        insert(con, "reference_values", rows)
        execute(con, "DELETE FROM reference_data WHERE name = ?", [name])
        execute(con, "INSERT INTO reference_data (name, sha256, n_rows) VALUES (?, ?, ?)",
                        [name, version, len(rows)])
    return True
