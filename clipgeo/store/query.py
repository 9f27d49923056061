"""Ad-hoc, read-only SQL over the catalog and the vectors."""

from __future__ import annotations

import duckdb
import polars as pl

from clipgeo.config import DataHome
from clipgeo.store import catalog, vectors


def read_only_query(home: DataHome, sql: str) -> pl.DataFrame:
    """Run ``sql`` on a read-only connection to the home's catalog.

    Each run's LanceDB table is visible under its own name (``vectors_<run_id>``), read in
    place through Lance (projection and filters pushed down), e.g.::

        SELECT modality, count(*) FROM vectors_r0123abcd GROUP BY modality
    """
    with catalog.session(home, read_only=True) as con:
        db = vectors.connect(home)
        for name in vectors.table_names(db):
            if name.startswith("vectors_") and name in sql:
                con.register(name, vectors.sql_source(db.open_table(name)))
        try:
            return catalog.query(con, sql)
        except duckdb.Error as exc:
            raise ValueError(f"query failed: {exc}") from exc
