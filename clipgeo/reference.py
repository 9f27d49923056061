"""Published values beside a run's own: the shipped reference data and the comparison.

The data is ``sql/reference/reference_values.csv``, one published number a row, with the model
(open_clip architecture, pretrained tag, weight file sha256 where the source names one), the
dataset, split and protocol (:mod:`clipgeo.sources.protocols`), the sample (images, captions,
caption choice) and the source (repository, file, commit, where in the file). It is loaded into
the catalog table ``reference_values`` (``sql/schema/013_reference_values.sql``) by
:func:`load_reference_values`, which every writable session calls after migrating: the file's
sha256 is compared with the one recorded in ``reference_data`` and the table is replaced when
they differ, so an updated data file updates existing data homes and an unchanged one costs one
query.

The comparison is the view ``v_reference_comparison`` (``sql/views/80_v_reference_comparison.sql``):
one row per run × reference, ``matched`` only when model, weights, dataset, split, protocol and
sample all agree; ``differs`` lists each condition that does not, in words.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import duckdb

from clipgeo.core.config import SQL_DIR

__all__ = ["REFERENCE_FILE", "read_reference_file", "load_reference_values", "record_run_protocol",
           "comparison_rows"]

#: The shipped reference data.
REFERENCE_FILE = SQL_DIR / "reference" / "reference_values.csv"

_INT_COLUMNS = ("sample_images", "sample_texts")
_REQUIRED = ("reference_id", "metric", "value", "model_name", "dataset", "split", "protocol",
             "source_repo", "source_file")


def read_reference_file(path: Path = REFERENCE_FILE) -> tuple[str, list[dict[str, Any]]]:
    """The rows of a reference data file and the file's sha256 (its version).

    Parameters
    ----------
    path : Path
        A CSV with the columns of ``reference_values`` (less ``data_version``).

    Returns
    -------
    tuple of (str, list of dict)
        ``(sha256 hex of the file's bytes, rows)``; empty cells are None, counts are ints and
        ``value`` a float.

    Raises
    ------
    ValueError
        A row lacks a required column or has a value that is not a number (the message names
        the file, the row and the column).

    Examples
    --------
    >>> version, rows = read_reference_file()
    >>> len(version), rows[0]["metric"]
    (64, 'modality_gap.gap')
    """
    raw = Path(path).read_bytes()
    version = hashlib.sha256(raw).hexdigest()
    rows = []
    for i, rec in enumerate(csv.DictReader(io.StringIO(raw.decode("utf-8"))), start=2):
        row: dict[str, Any] = {k: (v.strip() if v and v.strip() else None) for k, v in rec.items()}
        for col in _REQUIRED:
            if row.get(col) is None:
                raise ValueError(f"{path} line {i}: column {col!r} is empty; every reference needs it")
        try:
            row["value"] = float(row["value"])
            for col in _INT_COLUMNS:
                row[col] = int(row[col]) if row.get(col) is not None else None
        except ValueError as exc:
            raise ValueError(f"{path} line {i}: {exc}; value and sample counts must be numbers") from exc
        row["data_version"] = version
        rows.append(row)
    return version, rows


def load_reference_values(con: duckdb.DuckDBPyConnection, path: Path = REFERENCE_FILE) -> bool:
    """Bring ``reference_values`` in step with the shipped file; True when it was (re)loaded.

    Idempotent: when ``reference_data`` already records the file's sha256, nothing is written.
    Otherwise every row is replaced in one transaction. A catalog older than migration 013 (no
    ``reference_values`` table) is left alone.
    """
    from clipgeo.store import catalog

    have = catalog.execute(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'reference_data'")
    if not have[0][0] or not Path(path).is_file():
        return False
    name = Path(path).name
    version = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    found = catalog.execute(con, "SELECT sha256 FROM reference_data WHERE name = ?", [name])
    if found and found[0][0] == version:
        return False
    version, rows = read_reference_file(path)
    with catalog.transaction(con):
        catalog.execute(con, "DELETE FROM reference_values")
        catalog.insert(con, "reference_values", rows)
        catalog.execute(con, "DELETE FROM reference_data WHERE name = ?", [name])
        catalog.execute(con, "INSERT INTO reference_data (name, sha256, n_rows) VALUES (?, ?, ?)",
                        [name, version, len(rows)])
    return True


def record_run_protocol(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Copy the protocol of the run's dataset onto the run (``runs.protocol``)."""
    from clipgeo.store import catalog

    catalog.execute(con, "UPDATE runs SET protocol = (SELECT d.protocol FROM datasets d"
                         " WHERE d.dataset_id = runs.dataset_id) WHERE run_id = ?", [run_id])


def comparison_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """What the reproduction block shows for one run.

    Returns
    -------
    dict
        ``applies`` (bool: some reference is of the run's architecture), ``rows`` (the
        ``v_reference_comparison`` rows of those references, matched first), ``model_name`` and
        ``architectures`` (those the references cover), for the sentence "no reference applies".
    """
    from clipgeo.store import catalog

    frame = catalog.query(con, "SELECT * FROM v_reference_comparison WHERE run_id = ? AND same_architecture"
                               " ORDER BY matched DESC, metric, reference_id", [run_id])
    model = catalog.execute(con, "SELECT m.model_name FROM runs r LEFT JOIN models m USING (model_id)"
                                 " WHERE r.run_id = ?", [run_id])
    archs = [a for (a,) in catalog.execute(con, "SELECT DISTINCT model_name FROM reference_values ORDER BY 1")]
    return {"applies": frame.height > 0, "rows": frame.to_dicts(), "model_name": model[0][0] if model else None,
            "architectures": archs}
