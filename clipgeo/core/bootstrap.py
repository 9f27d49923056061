"""Bootstrap percentile intervals, vectorised over resamples by multinomial weights.

A resample of ``n`` units drawn with replacement is the vector of counts ``w ~ Multinomial(n,
1/n)``; a statistic written as a function of such weights (``stat(W)`` for a ``(B, n)`` weight
matrix, one value per row) is evaluated for all ``B`` resamples at once, e.g. a weighted mean
``W @ x / n`` is one matrix product. The ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of the
``B`` values are the percentile interval (Efron & Tibshirani 1993, ch. 13); the *basic* interval
``[2θ̂ − q_hi, 2θ̂ − q_lo]`` (Davison & Hinkley 1997, eq. 5.6) is for statistics that resampling
itself biases, e.g. an effective rank (duplicated points lower it). The draws are fixed
by ``seed`` (numpy's PCG64), so an interval is reproducible and its resample count and seed are
stated with it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["DEFAULT_RESAMPLES", "DEFAULT_LEVEL", "bootstrap_weights", "percentile_interval", "bootstrap_ci",
           "bootstrap_cis"]

DEFAULT_RESAMPLES = 200
DEFAULT_LEVEL = 0.95


def bootstrap_weights(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Counts of each of ``n`` units in ``n_resamples`` resamples: an ``(B, n)`` float array, rows sum to n.

    Examples
    --------
    >>> w = bootstrap_weights(5, 3, seed=1)
    >>> w.shape, w.sum(axis=1).tolist()
    ((3, 5), [5.0, 5.0, 5.0])
    """
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need n >= 1 units and n_resamples >= 1, got n={n}, n_resamples={n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap replicates (NaN replicates ignored).

    Examples
    --------
    >>> [round(v, 6) for v in percentile_interval(np.arange(101.0), 0.9)]
    [5.0, 95.0]
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_cis(stat: Callable[[np.ndarray], np.ndarray], n: int, names: list[str], *,
                  n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL,
                  method: str = "percentile", chunk: int = 50) -> dict[str, dict[str, float]]:
    """:func:`bootstrap_ci` for several statistics computed together: ``stat(W)`` returns a
    ``(b, len(names))`` array (one column per name), so shared work (e.g. one eigendecomposition
    per resample for two effective ranks) is done once. Returns ``{name: interval dict}``.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(3.0, 1.0, size=400)
    >>> def both(w):
    ...     m = w @ x / w.sum(axis=1)
    ...     return np.c_[m, 2 * m]
    >>> r = bootstrap_cis(both, x.size, ["mean", "twice"])
    >>> round(r["twice"]["ci_low"] / r["mean"]["ci_low"], 6)
    2.0
    """
    if method not in ("percentile", "basic"):
        raise ValueError(f"method must be 'percentile' or 'basic', got {method!r}")
    w = bootstrap_weights(n, n_resamples, seed)
    est = np.asarray(stat(np.ones((1, n))), dtype=np.float64).reshape(1, len(names))[0]
    reps = np.concatenate([np.asarray(stat(w[i:i + chunk]), dtype=np.float64).reshape(-1, len(names))
                           for i in range(0, n_resamples, chunk)])
    out = {}
    for j, name in enumerate(names):
        lo, hi = percentile_interval(reps[:, j], level)
        if method == "basic":
            lo, hi = 2 * est[j] - hi, 2 * est[j] - lo
        out[name] = {"estimate": float(est[j]), "ci_low": lo, "ci_high": hi, "level": level,
                     "n_resamples": n_resamples, "seed": seed, "n_units": n, "method": method}
    return out


def bootstrap_ci(stat: Callable[[np.ndarray], np.ndarray], n: int, *, n_resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0, level: float = DEFAULT_LEVEL, method: str = "percentile",
                 chunk: int = 50) -> dict[str, float]:
    """Percentile (or basic) bootstrap interval of ``stat`` over ``n`` units.

    Parameters
    ----------
    stat : callable
        ``stat(W)`` for a ``(b, n)`` matrix of resample counts returns ``b`` values; ``stat(ones)``
        is the estimate on the data itself.
    n : int
        Units resampled (e.g. images, each with its captions).
    n_resamples, seed, level :
        Resample count ``B``, the seed of the draws, the interval's coverage.
    method : str
        ``percentile`` or ``basic`` (see the module docstring).

    Returns
    -------
    dict
        ``estimate``, ``ci_low``, ``ci_high``, ``level``, ``n_resamples``, ``seed``, ``n_units``, ``method``.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(3.0, 1.0, size=400)
    >>> r = bootstrap_ci(lambda w: w @ x / w.sum(axis=1), x.size, seed=0)
    >>> r["ci_low"] < 3.0 < r["ci_high"]
    True
    """
    return bootstrap_cis(stat, n, ["x"], n_resamples=n_resamples, seed=seed, level=level, method=method,
                         chunk=chunk)["x"]
