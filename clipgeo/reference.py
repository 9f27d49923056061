"""Published values beside a run's own: the shipped reference data and the comparison.

The data is ``sql/reference/reference_values.csv``, one published number a row, with the model
(open_clip architecture, pretrained tag, weight file sha256 where the source names one), the
dataset, split and protocol (:mod:`clipgeo.sources.protocols`), the sample (images, captions,
caption choice) and the source (repository, file, commit, where in the file). It is loaded into
the catalog table ``reference_values`` (``sql/schema/013_reference_values.sql``) by
:func:`clipgeo.store.catalog.load_reference_values`, which every writable session calls after migrating: the file's
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


from clipgeo.core.config import SQL_DIR

__all__ = ["REFERENCE_FILE", "read_reference_file"]

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
