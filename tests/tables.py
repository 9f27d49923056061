"""Comparing two frames of one catalog table column by column (floats to a relative tolerance)."""

from __future__ import annotations

import numpy as np
import polars as pl


def assert_columns_close(a: pl.DataFrame, b: pl.DataFrame, table: str, rel: float = 1e-9,
                         skip=lambda col: False) -> None:
    """Floats within ``rel`` (values that are rounding noise around 0, like an angle of 1e-15 degrees
    between identical subspaces, at ``rel`` of the column's scale, at least 1); other columns equal.
    Columns for which ``skip(col)`` is true are not compared."""
    for col in a.columns:
        if skip(col):
            continue
        x, y = a[col], b[col]
        if x.dtype.is_float():
            xa, ya = x.to_numpy(), y.to_numpy()
            scale = max(float(np.nanmax(np.abs(xa))) if np.isfinite(xa).any() else 1.0, 1.0)
            np.testing.assert_allclose(ya, xa, rtol=rel, atol=rel * scale, err_msg=f"{table}.{col}")
        else:
            assert x.to_list() == y.to_list(), f"{table}.{col}"
