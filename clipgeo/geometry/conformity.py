"""Conformity (Double-Ellipsoid paper): how "common" a vector is within its modality.

For a modality with N vectors ``v_1..v_N`` and ``x̂ = v / ||v||``:

    C(v_j) = mean_{k != j} cos(v_j, v_k) = (x̂_j · s − 1) / (N − 1),   s = Σ_k x̂_k

The right-hand side is exact (``x̂_j · s = Σ_k cos(v_j, v_k)`` and the k = j term is 1), so all
N values cost O(N·d) instead of the O(N²·d) of the definition: one pass accumulates ``s``, a
second computes ``x̂_j · s`` chunk by chunk. The paper observes ``C(v_j)`` is close to an affine
function of ``cos(v_j, μ)``, the cosine to the modality mean (it is *exactly* affine in the
cosine to the mean of the normalised vectors ``m̂ = s / N``: ``C = (N ||m̂|| cos(v_j, m̂) − 1)/(N − 1)``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from clipgeo.core.arrays import (
    ChunkSource,
    check_matrix,
    iter_chunks,
    nonzero_row_norms,
    normalize_rows,
    row_blocks,
)

__all__ = [
    "conformity",
    "conformity_brute_force",
    "conformity_divergence",
    "conformity_fit",
    "conformity_from_unit_sum",
    "conformity_summary",
    "cosine_to",
    "extreme_samples",
    "unit_sum",
]

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def unit_sum(source: ChunkSource, name: str = "x") -> tuple[np.ndarray, int]:
    """``(s, N)`` with ``s = Σ_k x̂_k`` accumulated in float64 over the chunks of ``source``."""
    s = None
    n = 0
    for off, chunk in iter_chunks(source, name):
        part = (1.0 / nonzero_row_norms(chunk, name, row_offset=off)) @ chunk  # Σ_rows x / ||x|| as one gemv
        s = part if s is None else s + part
        n += chunk.shape[0]
    if s is None or n < 2:
        raise ValueError(f"{name}: a modality needs at least 2 vectors, got {n}")
    return s, n


def conformity_from_unit_sum(chunk: np.ndarray, s: np.ndarray, n: int, *, name: str = "x", offset: int = 0) -> np.ndarray:
    """``C(v_j) = (x̂_j · s − 1) / (N − 1)`` for the rows of ``chunk``, given ``s = Σ_k x̂_k`` over
    the whole modality of ``n`` vectors (the chunk's rows must be among them)."""
    x = np.asarray(chunk, dtype=np.float64)
    return conformity_from_dots(x @ s, nonzero_row_norms(x, name, row_offset=offset), n)


def conformity_from_dots(dot_s: np.ndarray, norms: np.ndarray, n: int) -> np.ndarray:
    """``C(v_j) = (x_j · s / ‖x_j‖ − 1) / (N − 1)`` from the rows' dot products with ``s = Σ_k x̂_k``
    and their norms (the streamed per-sample pass computes both in one kernel).

    >>> conformity_from_dots(np.array([2.0]), np.array([1.0]), 3).tolist()
    [0.5]
    """
    return (np.asarray(dot_s, dtype=np.float64) / norms - 1.0) / (n - 1)


def conformity(source: ChunkSource, name: str = "x") -> np.ndarray:
    """Exact conformity of every vector in ``source`` in O(N·d) (two passes over the chunks).

    ``C(v_j) = mean_{k≠j} cos(v_j, v_k) = (x̂_j · s − 1)/(N − 1)`` with ``s = Σ_k x̂_k``.
    ``source`` is an array or a chunk source (see :data:`clipgeo.core.arrays.ChunkSource`).
    Raises ``ValueError`` on NaN/inf or zero vectors and on fewer than 2 vectors.

    Parameters
    ----------
    source : array-like of shape (N, d), or a chunk source
        One modality's raw vectors (any float dtype; normalised here, in float64).
    name : str
        The modality's name, used in errors.

    Returns
    -------
    numpy.ndarray of shape (N,), float64
        ``C(v_j)`` for every row, in row order; each in ``[−1, 1]``.

    Examples
    --------
    Two vectors along ``e1`` (cosine 1 to each other) and one along ``e2`` (cosine 0 to both):
    ``C = (1 + 0)/2`` for the first two and ``(0 + 0)/2`` for the third.

    >>> import numpy as np
    >>> conformity(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]))
    array([0.5, 0.5, 0. ])
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 4))
    >>> bool(np.allclose(conformity(x), conformity_brute_force(x), atol=1e-12))   # the O(N²) definition
    True
    """
    s, n = unit_sum(source, name)
    out = np.empty(n)
    for off, chunk in iter_chunks(source, name, d=s.shape[0]):
        out[off : off + chunk.shape[0]] = conformity_from_unit_sum(chunk, s, n, name=name, offset=off)
    return out


def conformity_brute_force(x: np.ndarray, *, block: int = 1024) -> np.ndarray:
    """The O(N²·d) definition, ``C(v_j) = (1/(N−1)) Σ_{k≠j} cos(v_j, v_k)``, block by block.

    A reference for tests and benchmarks; use :func:`conformity` for real data.
    """
    x = check_matrix(x, "x")
    u = normalize_rows(x, "x")
    n = u.shape[0]
    out = np.empty(n)
    for sl in row_blocks(n, block):
        cos = u[sl] @ u.T  # (block, N)
        cos[np.arange(cos.shape[0]), np.arange(sl.start, sl.stop)] = 0.0  # drop k = j
        out[sl] = cos.sum(axis=1) / (n - 1)
    return out


def cosine_to(source: ChunkSource, v: np.ndarray, name: str = "x") -> np.ndarray:
    """``cos(x_j, v)`` for every row of ``source`` (e.g. ``v = μ_m``, the modality mean)."""
    v = np.asarray(v, dtype=np.float64)
    nv = np.linalg.norm(v)
    if v.ndim != 1 or nv == 0 or not np.isfinite(nv):
        raise ValueError("cosine_to: v must be a finite, non-zero 1-D vector")
    parts = []
    for off, chunk in iter_chunks(source, name, d=v.shape[0]):
        parts.append(normalize_rows(chunk, name, row_offset=off) @ (v / nv))
    return np.concatenate(parts) if parts else np.empty(0)


def average_ranks(x: np.ndarray, *, block: int = 1 << 20) -> np.ndarray:
    """Ranks 1..n of ``x`` with ties given their average rank (``scipy.stats.rankdata``'s
    default), in little extra memory: one argsort (int64), the ranks, a flag byte per value;
    the rest ``block`` values at a time."""
    n = x.size
    order = np.argsort(x, kind="stable")
    ranks = np.empty(n, dtype=np.float64)
    new = np.ones(n, dtype=bool)       # new[i]: the i-th smallest differs from the one before it
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        ranks[order[lo:hi]] = np.arange(lo + 1, hi + 1, dtype=np.float64)
        v = x[order[max(lo - 1, 0):hi]]
        if lo > 0:
            new[lo:hi] = v[1:] != v[:-1]
        elif hi > 1:
            new[1:hi] = v[1:] != v[:-1]
    if not new.all():   # ties: each group gets the mean of its positions
        starts = np.flatnonzero(new)
        del new
        ends = np.append(starts[1:], n)
        avg = (starts + 1 + ends) / 2.0                       # mean of positions start+1 .. end
        ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ: the Pearson correlation of :func:`average_ranks` of ``x`` and ``y`` (as
    ``scipy.stats.spearmanr``, which copies both arrays several times; this keeps a 10M-point
    fit in a few hundred MB)."""
    rx = average_ranks(np.asarray(x, dtype=np.float64))
    rx -= rx.mean()
    ry = average_ranks(np.asarray(y, dtype=np.float64))
    ry -= ry.mean()
    den = float(np.sqrt((rx @ rx) * (ry @ ry)))
    return float(rx @ ry) / den if den > 0 else float("nan")


def conformity_fit(conf: np.ndarray, cos: np.ndarray) -> dict[str, float]:
    """Least-squares fit ``C ≈ a·cos + b`` and the correlations between ``C`` and ``cos``.

    ``a = cov(cos, C)/var(cos)``, ``b = mean(C) − a·mean(cos)``, ``pearson_r``, ``spearman_rho``
    (rank correlation), ``rmse`` of the fit, ``n``.

    Parameters
    ----------
    conf : array-like of shape (n,)
        Conformity values ``C`` (e.g. :func:`conformity`).
    cos : array-like of shape (n,)
        The matching cosines (e.g. :func:`cosine_to` the modality mean).

    Returns
    -------
    dict of str to float
        ``a, b, pearson_r, spearman_rho, rmse, n``; ``a``, ``r`` and ``ρ`` are NaN when ``cos``
        (or ``C``) is constant.

    Examples
    --------
    An exactly affine relation ``C = 2·cos + 1`` is recovered with r = ρ = 1 and no residual:

    >>> import numpy as np
    >>> cos = np.array([0.1, 0.2, 0.4, 0.8])
    >>> fit = conformity_fit(2 * cos + 1, cos)
    >>> {k: round(v, 6) for k, v in fit.items()}
    {'a': 2.0, 'b': 1.0, 'pearson_r': 1.0, 'spearman_rho': 1.0, 'rmse': 0.0, 'n': 4.0}
    """
    c = np.asarray(conf, dtype=np.float64)
    z = np.asarray(cos, dtype=np.float64)
    if c.ndim != 1 or c.shape != z.shape or c.size < 2:
        raise ValueError(f"conformity_fit: need two 1-D arrays of equal length >= 2, got {c.shape} and {z.shape}")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(z))):
        raise ValueError("conformity_fit: NaN or infinite values")
    zc, cc = z - z.mean(), c - c.mean()
    var_z = float(zc @ zc)
    a = float(zc @ cc) / var_z if var_z > 0 else float("nan")
    b = float(c.mean() - a * z.mean())
    denom = np.sqrt(var_z * float(cc @ cc))
    r = float(zc @ cc / denom) if denom > 0 else float("nan")
    del zc, cc   # before the ranks: at 10M points each copy is 80 MB
    rho = spearman_rho(z, c) if denom > 0 else float("nan")
    rmse = float(np.sqrt(np.mean((c - (a * z + b)) ** 2)))
    return {"a": a, "b": b, "pearson_r": r, "spearman_rho": rho, "rmse": rmse, "n": float(c.size)}


def conformity_summary(conf: np.ndarray, quantiles: tuple[float, ...] = QUANTILES) -> dict[str, float]:
    """Distribution of conformity values: ``mean``, ``std``, and ``q0 … q100`` (percent names)."""
    c = np.asarray(conf, dtype=np.float64)
    out = {"mean": float(c.mean()), "std": float(c.std())}
    for q, v in zip(quantiles, np.quantile(c, quantiles), strict=True):
        out[f"q{_pct(q)}"] = float(v)
    return out


def _pct(q: float) -> str:
    p = 100 * q
    return str(int(p)) if float(p).is_integer() else f"{p:g}".replace(".", "_")


def ecdf_distances(a: np.ndarray, b: np.ndarray, *, block: int = 1 << 20) -> tuple[float, float]:
    """``(sup_t |F_a(t) − F_b(t)|, ∫ |F_a − F_b| dt)`` of the two empirical CDFs: the two-sample
    Kolmogorov–Smirnov statistic (``scipy.stats.ks_2samp``) and the 1-Wasserstein distance
    (``scipy.stats.wasserstein_distance``). Both CDFs are constant between consecutive pooled
    values ``u_k``, so ``W₁ = Σ_k (u_{k+1} − u_k)·|F_a(u_k) − F_b(u_k)|`` and the sup is a max over
    the ``u_k``; evaluated ``block`` values at a time, so the memory is the sorted copies
    (O(n) float64 each), not scipy's several pooled arrays."""
    sa = np.sort(np.asarray(a, dtype=np.float64))
    sb = np.sort(np.asarray(b, dtype=np.float64))
    u = np.concatenate([sa, sb])
    u.sort()
    ks = 0.0
    w1 = 0.0
    n = u.size
    for lo in range(0, n - 1, block):
        hi = min(lo + block, n - 1)
        v = u[lo:hi]
        diff = np.abs(np.searchsorted(sa, v, side="right") / sa.size - np.searchsorted(sb, v, side="right") / sb.size)
        ks = max(ks, float(diff.max()))
        w1 += float(diff @ (u[lo + 1:hi + 1] - v))
    return ks, w1


def conformity_divergence(conf_img: np.ndarray, conf_txt: np.ndarray, *, bins: int = 100) -> dict[str, float]:
    """How different the image and text conformity distributions are.

    * ``js_divergence``: Jensen–Shannon divergence (base 2, in [0, 1]) between the two
      histograms on ``bins`` common bins spanning the pooled range,
      ``JS = ½ KL(P‖M) + ½ KL(Q‖M)``, ``M = (P + Q)/2``;
    * ``ks_statistic``: two-sample Kolmogorov–Smirnov ``sup_t |F_I(t) − F_T(t)|``;
    * ``wasserstein``: 1-Wasserstein (earth mover's) distance ``∫ |F_I − F_T| dt``;
    * ``mean_difference``: ``mean C_I − mean C_T``.
    """
    a = np.asarray(conf_img, dtype=np.float64)
    b = np.asarray(conf_txt, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size < 2 or b.size < 2:
        raise ValueError("conformity_divergence: need two 1-D arrays with at least 2 values each")
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    if hi <= lo:
        hi = lo + 1e-12
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(a, edges)[0] / a.size
    q = np.histogram(b, edges)[0] / b.size
    m = 0.5 * (p + q)

    def _kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return {
        "js_divergence": 0.5 * _kl(p) + 0.5 * _kl(q),
        **dict(zip(("ks_statistic", "wasserstein"), ecdf_distances(a, b), strict=True)),
        "mean_difference": float(a.mean() - b.mean()),
    }


def extreme_samples(conf: np.ndarray, k: int = 10) -> pl.DataFrame:
    """The ``k`` most and ``k`` least conforming rows: columns ``kind`` ("most"/"least"),
    ``rank`` (0 = most extreme), ``row`` (index into the modality), ``conformity``.
    Join ``row`` to the sample ids / captions in the catalog."""
    c = np.asarray(conf, dtype=np.float64)
    k = int(min(k, c.size))
    if k == 0:
        most = least = np.empty(0, dtype=np.int64)
    else:   # the order of a stable argsort (ties: most by row descending, least ascending) without sorting all rows
        hi = np.flatnonzero(c >= np.partition(c, c.size - k)[c.size - k])
        most = hi[np.lexsort((-hi, -c[hi]))][:k]
        lo = np.flatnonzero(c <= np.partition(c, k - 1)[k - 1])
        least = lo[np.lexsort((lo, c[lo]))][:k]
    return pl.DataFrame(
        {
            "kind": ["most"] * k + ["least"] * k,
            "rank": list(range(k)) * 2,
            "row": np.concatenate([most, least]).astype(np.int64),
            "conformity": np.concatenate([c[most], c[least]]),
        }
    )
