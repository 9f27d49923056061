"""Intrinsic dimension by nearest-neighbour estimators: TwoNN and the Levina–Bickel MLE.

Both are computed here from Euclidean k-nearest-neighbour distances (scikit-learn's exact
``NearestNeighbors``) and cross-checked against **scikit-dimension** (``skdim``, chosen over
dadapy because it provides both estimators with one scikit-learn API, while dadapy has TwoNN
but no Levina–Bickel MLE); :func:`library_dimension` runs skdim's own estimator on the same
points, with the same settings.

* **TwoNN** (Facco, d'Errico, Rodriguez & Laio, Sci. Rep. 7, 2017): for each point the ratio
  ``μ_i = r_2,i / r_1,i`` of its second to first neighbour distance follows
  ``F(μ) = 1 − μ^(−d)``. Sort the μ, discard the largest fraction ``discard`` (0.1, the paper's
  heuristic and skdim's default), set ``F_emp(μ_(j)) = j / N`` and fit the slope through the
  origin of ``−log(1 − F_emp)`` against ``log μ``: ``d = Σ x_j y_j / Σ x_j²``.
* **Levina–Bickel MLE** (NIPS 2004), with MacKay & Ghahramani's pooling: per point, over its
  ``k`` nearest neighbours at distances ``T_1 ≤ … ≤ T_k``,
  ``m̂_k(x_i) = (k − 1) / Σ_{j=1}^{k−1} log(T_k / T_j)``; globally the harmonic mean
  ``m̂ = (mean_i 1 / m̂_k(x_i))^(−1)`` (skdim's ``MLE`` with ``comb='mle'``, k = 20).

Points at distance 0 from their nearest neighbour (duplicates) make the ratios undefined and
are dropped (skdim drops them too), the count being returned.
"""

from __future__ import annotations

import numpy as np

__all__ = ["twonn", "mle_levina_bickel", "knn_distances", "library_dimension", "MLE_K", "TWONN_DISCARD"]

#: Neighbours of the Levina–Bickel MLE (skdim's default ``n_neighbors``).
MLE_K = 20
#: Fraction of the largest ratios TwoNN discards (Facco et al.; skdim's default).
TWONN_DISCARD = 0.1


def _check(x: np.ndarray, need: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x: expected an (N, d) array, got shape {x.shape}")
    if x.shape[0] < need:
        raise ValueError(f"x: {x.shape[0]} points; this estimator needs at least {need}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x: contains NaN or inf")
    return x


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """Distances to the k nearest other points, ascending, shape (N, k)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x)
    dist, ind = nn.kneighbors(x)
    # drop each point itself (column of its own index; duplicates may come first)
    own = ind == np.arange(x.shape[0])[:, None]
    first_own = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(x.shape[0]), first_own] = False
    keep[:, k] &= own.any(axis=1)  # when the point itself was not listed, drop the last column
    return dist[keep].reshape(x.shape[0], k)


def knn_distances(x: np.ndarray, k: int = MLE_K) -> np.ndarray:
    """Euclidean distances from each point to its ``k`` nearest other points, ascending: what
    both estimators read (exact, scikit-learn's brute-force ``NearestNeighbors``), computed once
    for both.

    Parameters
    ----------
    x : ndarray, shape (N > k, D)
    k : int
        Neighbours per point.

    Returns
    -------
    ndarray, shape (N, k)

    Examples
    --------
    >>> knn_distances(np.array([[0.0], [1.0], [3.0]]), 2).tolist()
    [[1.0, 3.0], [1.0, 2.0], [2.0, 3.0]]
    """
    x = _check(x, k + 1)
    return _knn(x, k)


def _given_knn(knn: np.ndarray, n: int, k: int) -> np.ndarray:
    t = np.asarray(knn, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != n or t.shape[1] < k:
        raise ValueError(f"knn: expected distances of shape ({n}, >= {k}), got {t.shape}")
    return t[:, :k]


def twonn(x: np.ndarray, *, discard: float = TWONN_DISCARD, knn: np.ndarray | None = None) -> dict[str, float]:
    """TwoNN intrinsic dimension (formula in the module docstring).

    Parameters
    ----------
    x : ndarray, shape (N >= 3, D)
    discard : float
        Fraction of the largest ratios μ left out of the fit.
    knn : ndarray, shape (N, k >= 2), optional
        The points' distances to their nearest other points, ascending (:func:`knn_distances`),
        when already computed (e.g. for :func:`mle_levina_bickel` on the same points): its
        first two columns are used.

    Returns
    -------
    dict
        ``dimension``, ``n_points`` (used), ``n_dropped`` (duplicates).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.uniform(size=(2000, 3)) @ rng.normal(size=(3, 64))   # a 3-d subspace of R^64
    >>> round(twonn(z)["dimension"])
    3
    """
    x = _check(x, 3)
    d = _given_knn(knn, x.shape[0], 2) if knn is not None else _knn(x, 2)
    ok = d[:, 0] > 0
    mu = np.sort(d[ok, 1] / d[ok, 0])
    n = mu.size
    keep = int(n * (1 - discard))
    if keep < 2:
        raise ValueError(f"x: {n} usable points leave fewer than 2 ratios after discarding {discard:.0%}")
    xs = np.log(mu[:keep])
    ys = -np.log(1.0 - np.arange(1, keep + 1) / n)
    return {"dimension": float(xs @ ys / (xs @ xs)), "n_points": float(n), "n_dropped": float((~ok).sum())}


def mle_levina_bickel(x: np.ndarray, *, k: int = MLE_K, knn: np.ndarray | None = None) -> dict[str, float]:
    """Levina–Bickel MLE of the intrinsic dimension, pooled by the harmonic mean (module docstring).

    Parameters
    ----------
    x : ndarray, shape (N > k, D)
    k : int
        Neighbours per point (>= 3).
    knn : ndarray, shape (N, >= k), optional
        The points' distances to their nearest other points, ascending (:func:`knn_distances`),
        when already computed: its first ``k`` columns are used.

    Returns
    -------
    dict
        ``dimension``, ``n_points`` (used), ``n_dropped`` (points with a zero neighbour
        distance), ``k``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 128))   # a 4-d subspace of R^128
    >>> round(mle_levina_bickel(z)["dimension"])
    4
    """
    if k < 3:
        raise ValueError(f"k must be at least 3, got {k}")
    x = _check(x, k + 1)
    t = _given_knn(knn, x.shape[0], k) if knn is not None else _knn(x, k)
    ok = t[:, 0] > 0
    t = t[ok]
    logs = np.log(t[:, -1:] / t[:, :-1]).sum(axis=1)
    inv = logs / (k - 1)               # 1 / m̂_k(x_i)
    return {"dimension": float(1.0 / inv.mean()), "n_points": float(t.shape[0]),
            "n_dropped": float((~ok).sum()), "k": float(k)}


def library_dimension(x: np.ndarray, estimator: str, *, k: int = MLE_K, discard: float = TWONN_DISCARD) -> float:
    """The same estimate by scikit-dimension (``skdim.id.TwoNN`` / ``skdim.id.MLE``), for comparison.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.uniform(size=(1000, 2)) @ rng.normal(size=(2, 64))
    >>> abs(library_dimension(z, "twonn") - twonn(z)["dimension"]) < 1e-6
    True
    """
    import warnings

    import skdim

    x = _check(x, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if estimator == "twonn":
            return float(skdim.id.TwoNN(discard_fraction=discard).fit(x).dimension_)
        if estimator == "mle":
            return float(skdim.id.MLE().fit(x, n_neighbors=k, comb="mle").dimension_)
    raise ValueError(f"estimator must be 'twonn' or 'mle', got {estimator!r}")
