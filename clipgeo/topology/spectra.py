"""Covariance spectra of the normalised embeddings (Topological Perspectives, Figs. 10–12).

The paper (its section on dimensional collapse, after Jing et al.) plots the singular values of
the **covariance matrix** of the normalised vectors, i.e. its eigenvalues λ. For one set of
vectors ``x_1 … x_n`` (rows, dimension ``d``)::

    x̂_i = x_i / ||x_i||,    μ̂ = mean_i x̂_i,    Σ = (1/n) Σ_i (x̂_i − μ̂)(x̂_i − μ̂)ᵀ
    λ_1 ≥ λ_2 ≥ … ≥ λ_d ≥ 0   the eigenvalues of Σ (= its singular values: Σ is PSD)

``σ_k = √(n λ_k)`` are the singular values of the centred data matrix; they are kept under their
own name (``sigma``), but every summary here is on λ. The scatter comes from
:class:`clipgeo.core.stats.ScatterAccumulator` (streaming, mergeable): the joint spectrum of
``[img; txt]`` (centred by the joint mean) is the merge of the two modalities' accumulators.

Precision: eigenvalues carry an absolute error of about ``ε·λ_1`` (ε = 2.2e-16), so relative
values ``λ_k/λ_1`` below about 1e-15 are noise; they are floored at 1e-16 for logs.

**Collapse point** (the "dimension where the spectrum near zeros out"; Fig. 10):
``collapse_index = #{k : λ_k ≥ τ λ_1}`` with ``τ = 1e-3`` by default, applied to λ — the
0-based index of the first eigenvalue more than three decades below the leading one (``= d``
when none is: *no collapse*). It is scale-free, monotone and stable, whereas an "index of the
largest drop of log λ" always returns *some* index even for a smooth spectrum (reported too, as
``largest_drop_index`` with the drop in decades of λ, to locate a cliff). With a planted rank r
plus isotropic noise of relative variance ≪ τ, ``collapse_index = r``.

**Small samples.** When ``n ≤ d`` the covariance has rank at most ``n − 1 < d``: the collapse
is forced by the sample size, not the model. Then ``status = 'rank_limited'``, ``message`` says
so, and ``collapse_index``, ``largest_drop_*`` and both effective ranks are NULL; the
eigenvalues themselves are still stored.

**Effective rank** (Roy & Vetterli, 2007), in both common forms, each under its own name
(:mod:`clipgeo.core.stats`): ``effective_rank_lambda_entropy`` (``p_k = λ_k/Σλ``) and
``effective_rank_sigma_entropy`` (``p_k = σ_k/Σσ``, ``σ ∝ √λ``); they differ by about 2×.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from clipgeo.core.arrays import DEFAULT_BLOCK_ROWS, iter_chunks, normalize_rows
from clipgeo.core.stats import (  # noqa: F401  (effective_rank re-exported)
    ScatterAccumulator,
    effective_rank,
    effective_rank_lambda_entropy,
    effective_rank_sigma_entropy,
)

__all__ = [
    "DEFAULT_COLLAPSE_THRESHOLD",
    "collapse_point",
    "covariance_spectrum",
    "effective_rank",
    "largest_log_drop",
    "normalized_scatter",
    "spectra",
    "spectrum_collapse_summary",
]

#: Relative threshold τ of the collapse point, applied to λ: λ_k < τ·λ_1 counts as collapsed.
DEFAULT_COLLAPSE_THRESHOLD = 1e-3
#: Relative eigenvalues below this are treated as zero in logs (the precision floor).
_REL_FLOOR = 1e-16


def normalized_scatter(source, name: str = "x", *, block: int = DEFAULT_BLOCK_ROWS) -> ScatterAccumulator:
    """One streaming pass: a :class:`~clipgeo.core.stats.ScatterAccumulator` of the L2-normalised
    rows of ``source`` (anything :func:`clipgeo.core.arrays.iter_chunks` accepts; a zero row
    raises ``ValueError``). Memory: ``O(block·d + d²)``."""
    acc = ScatterAccumulator(name=name)
    for offset, chunk in iter_chunks(source, name, block=block):
        acc.add(normalize_rows(chunk, name, row_offset=offset), validate=False)
    if acc.n == 0:
        raise ValueError(f"{name}: no vectors")
    return acc


def covariance_spectrum(x, name: str = "x") -> np.ndarray:
    """λ (descending, length d): eigenvalues of the covariance of the L2-normalised rows of ``x``.

    ``Σ = (1/n) Σ_i (x̂_i − μ̂)(x̂_i − μ̂)ᵀ`` with ``x̂_i = x_i / ||x_i||`` (module doc).

    Parameters
    ----------
    x : array-like of shape (n, d), or a chunk source
        Raw vectors of one set (any float dtype; normalised and accumulated in float64).
    name : str
        The set's name, used in errors.

    Returns
    -------
    numpy.ndarray of shape (d,), float64
        ``λ_1 ≥ … ≥ λ_d ≥ 0``.

    Examples
    --------
    Unit vectors ``±e1, ±e2`` in 3-D have mean 0 and covariance ``diag(½, ½, 0)``:

    >>> import numpy as np
    >>> x = np.array([[1.0, 0, 0], [-2.0, 0, 0], [0, 3.0, 0], [0, -1.0, 0]])
    >>> covariance_spectrum(x).round(6)
    array([0.5, 0.5, 0. ])
    """
    return normalized_scatter(x, name).eigenvalues()


def _check_lambda(lam: np.ndarray) -> np.ndarray:
    s = np.asarray(lam, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"eigenvalues: expected a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("eigenvalues: must be finite and non-negative")
    return np.sort(s)[::-1]


def collapse_point(eigenvalues: np.ndarray, threshold: float = DEFAULT_COLLAPSE_THRESHOLD) -> int:
    """``#{k : λ_k ≥ threshold·λ_1}``: the 0-based index of the first collapsed eigenvalue
    (``len(λ)`` when none is below ``threshold·λ_1``; 0 when all are zero).

    Parameters
    ----------
    eigenvalues : array-like of shape (d,)
        A spectrum λ (finite, non-negative; any order: it is sorted here).
    threshold : float
        τ in (0, 1): ``λ_k < τ·λ_1`` counts as collapsed (default 1e-3, three decades).

    Returns
    -------
    int
        The collapse index, in ``[0, d]``.

    Examples
    --------
    >>> collapse_point([1.0, 0.5, 1e-4, 1e-6])    # the third value is four decades down
    2
    >>> collapse_point([1.0, 0.5, 0.1])           # no collapse: d
    3
    """
    s = _check_lambda(eigenvalues)
    if not (0 < threshold < 1):
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if s[0] == 0:
        return 0
    return int(np.count_nonzero(s >= threshold * s[0]))


def largest_log_drop(eigenvalues: np.ndarray) -> tuple[int, float]:
    """``(k, decades)``: the 0-based index of the first value after the largest drop
    ``log10 λ_{k−1} − log10 λ_k`` (relative values floored at 1e-16), and that drop in decades."""
    s = _check_lambda(eigenvalues)
    if s.size < 2 or s[0] == 0:
        return s.size, 0.0
    logs = np.log10(np.maximum(s / s[0], _REL_FLOOR))
    drops = logs[:-1] - logs[1:]
    k = int(np.argmax(drops))
    return k + 1, float(drops[k])


def spectrum_collapse_summary(eigenvalues: np.ndarray, n: int, *,
                     threshold: float = DEFAULT_COLLAPSE_THRESHOLD) -> dict[str, object]:
    """Named values of one covariance spectrum λ over ``n`` vectors: ``n, d, lambda_1, sigma_1
    (= √(n λ_1)), collapse_index, collapse_threshold, largest_drop_index, largest_drop_decades,
    effective_rank_lambda_entropy, effective_rank_sigma_entropy, rank_limited_by_n, status,
    message``. With ``n ≤ d`` (rank-limited) the derived numbers are None and ``message`` says why."""
    s = _check_lambda(eigenvalues)
    d = s.size
    out: dict[str, object] = {
        "n": float(n), "d": float(d), "lambda_1": float(s[0]), "sigma_1": float(np.sqrt(n * s[0])),
        "collapse_threshold": float(threshold), "rank_limited_by_n": 1.0 if n <= d else 0.0,
    }
    if n <= d:
        out.update(collapse_index=None, largest_drop_index=None, largest_drop_decades=None,
                   effective_rank_lambda_entropy=None, effective_rank_sigma_entropy=None,
                   status="rank_limited",
                   message=f"{n} vectors <= d = {d}: the covariance has rank at most {n - 1}, so the "
                           "collapse would be forced by the sample size; no collapse index or effective rank")
        return out
    k_drop, dec = largest_log_drop(s)
    out.update(
        collapse_index=float(collapse_point(s, threshold)),
        largest_drop_index=float(k_drop),
        largest_drop_decades=dec,
        effective_rank_lambda_entropy=effective_rank_lambda_entropy(s),
        effective_rank_sigma_entropy=effective_rank_sigma_entropy(s),
        status="ok",
        message="",
    )
    return out


def spectra(
    img,
    txt,
    *,
    threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
    block: int = DEFAULT_BLOCK_ROWS,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-modality and joint covariance spectra of the normalised vectors (Figs. 10, 11, 12).

    ``img`` and ``txt`` are arrays or chunk sources (see :func:`normalized_scatter`); they need
    not be paired. ``joint`` is ``[x̂_img; x̂_txt]`` centred by its own mean (merged exactly from
    the per-modality accumulators). Returns ``(curve, summary)``:

    * ``curve``: one row per eigenvalue — ``scope`` (image / text / joint), ``index`` (0-based),
      ``eigenvalue`` (λ_k), ``eigenvalue_rel`` (λ_k/λ_1), ``log10_eigenvalue_rel`` (floored at
      1e-16), and ``sigma`` = √(n λ_k), ``sigma_rel``, ``log10_sigma_rel`` (floored at 1e-8);
    * ``summary``: one row per scope — ``scope`` plus the keys of :func:`spectrum_collapse_summary`.

    Parameters
    ----------
    img : array-like of shape (n_img, d), or a chunk source
        Raw image vectors (any float dtype; normalised and accumulated in float64).
    txt : array-like of shape (n_txt, d), or a chunk source
        Raw text vectors, same ``d``.
    threshold : float
        τ of the collapse point (:func:`collapse_point`).
    block : int
        Rows per block of the streaming pass.

    Returns
    -------
    curve : polars.DataFrame
        ``3 · d`` rows (image, text, joint), float64 values, int64 ``index``.
    summary : polars.DataFrame
        3 rows; the numbers as float64 (None where rank-limited), ``status`` / ``message`` str.

    Examples
    --------
    A planted rank: images confined to a 2-D subspace of a 6-D space collapse at index 2; the
    isotropic texts, and the joint set, do not collapse:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = np.zeros((100, 6))
    >>> img[:, :2] = rng.normal(size=(100, 2))
    >>> txt = rng.normal(size=(100, 6))
    >>> curve, summary = spectra(img, txt)
    >>> summary.select("scope", "collapse_index", "status").rows()
    [('image', 2.0, 'ok'), ('text', 6.0, 'ok'), ('joint', 6.0, 'ok')]
    >>> curve.height
    18
    """
    mi = normalized_scatter(img, "img", block=block)
    mt = normalized_scatter(txt, "txt", block=block)
    return spectra_from_scatter(mi, mt, threshold=threshold)


def spectra_from_scatter(mi: ScatterAccumulator, mt: ScatterAccumulator, *,
                         threshold: float = DEFAULT_COLLAPSE_THRESHOLD) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`spectra`'s ``(curve, summary)`` from the scatter accumulators of each modality's
    normalised vectors (streamed or merged from partials elsewhere); ``joint`` is their exact merge."""
    if mi.d != mt.d:
        raise ValueError(f"mismatched dimensions between modalities: img has d={mi.d}, txt has d={mt.d}")
    curves = []
    rows = []
    for scope, acc in (("image", mi), ("text", mt), ("joint", mi.merged(mt))):
        lam = acc.eigenvalues()
        rel = lam / lam[0] if lam[0] > 0 else np.zeros_like(lam)
        sig = np.sqrt(acc.n * lam)
        srel = np.sqrt(rel)
        curves.append(
            pl.DataFrame(
                {
                    "scope": [scope] * lam.size,
                    "index": np.arange(lam.size, dtype=np.int64),
                    "eigenvalue": lam,
                    "eigenvalue_rel": rel,
                    "log10_eigenvalue_rel": np.log10(np.maximum(rel, _REL_FLOOR)),
                    "sigma": sig,
                    "sigma_rel": srel,
                    "log10_sigma_rel": np.log10(np.maximum(srel, 1e-8)),
                }
            )
        )
        rows.append({"scope": scope, **spectrum_collapse_summary(lam, acc.n, threshold=threshold)})
    schema = {"scope": pl.Utf8, "n": pl.Float64, "d": pl.Float64, "lambda_1": pl.Float64, "sigma_1": pl.Float64,
              "collapse_threshold": pl.Float64, "rank_limited_by_n": pl.Float64, "collapse_index": pl.Float64,
              "largest_drop_index": pl.Float64, "largest_drop_decades": pl.Float64,
              "effective_rank_lambda_entropy": pl.Float64, "effective_rank_sigma_entropy": pl.Float64,
              "status": pl.Utf8, "message": pl.Utf8}
    return pl.concat(curves), pl.DataFrame(rows, schema=schema)
