"""Singular-value spectra of the centred, normalised embeddings (Topological Perspectives, Figs. 10–12).

For one set of vectors ``x_1 … x_n`` (rows, dimension ``d``) the spectrum is that of the centred
matrix of the *normalised* vectors::

    x̂_i = x_i / ||x_i||,    μ̂ = mean_i x̂_i,    X_c = [x̂_1 − μ̂; …; x̂_n − μ̂]   (n × d)
    σ_1 ≥ σ_2 ≥ … ≥ σ_d ≥ 0   the singular values of X_c

computed *streaming* from the d × d scatter matrix ``S = X_cᵀ X_c = Σ_i (x̂_i − μ̂)(x̂_i − μ̂)ᵀ``
(``σ_k = sqrt(λ_k(S))``), so 100,000 × 512 costs one pass of blocked ``512 × 512`` products and
never holds more than a block of rows. The scatter is accumulated around a shift (the first
block's mean) to avoid the cancellation of ``Σ x̂x̂ᵀ − n μ̂μ̂ᵀ``; per modality scatters merge
exactly into the joint one (Chan et al.'s pairwise update), so the joint spectrum of
``[img; txt]`` (centred by the joint mean) needs no second pass.

Precision: eigenvalues of ``S`` carry an absolute error of about ``ε·λ_1`` (ε = 2.2e-16), so
relative singular values ``σ_k/σ_1`` below about ``sqrt(ε) ≈ 1.5e-8`` are noise; the thresholds
below stay far above that floor.

**Collapse point** (the "dimension where the spectrum near zeros out"; Fig. 10):
``collapse_index = #{k : σ_k ≥ τ σ_1}`` with ``τ = 1e-3`` by default — the numerical rank at
relative tolerance τ, i.e. the 0-based index of the first singular value that fell more than three
decades below the leading one (``= d`` when none did: *no collapse*). Why this definition: it is
scale-free (``σ/σ_1``), it is the usual numerical-rank rule (numpy's ``matrix_rank`` uses the same
form with τ ≈ machine precision), and it is monotone and stable, whereas an "index of the largest
drop of log σ" always returns *some* index even for a smooth, uncollapsed spectrum (that index is
reported too, as ``largest_drop_index`` with the drop size in decades, to locate a cliff). With a
planted rank r plus isotropic noise ε ≪ τ, ``collapse_index = r``. When ``n − 1 < d`` the centred
matrix has rank at most ``n − 1`` and the collapse is forced by the sample size:
``rank_limited_by_n`` flags it.

**Effective rank** (Roy & Vetterli, 2007): ``p_k = σ_k / Σ_j σ_j``, ``H = −Σ_k p_k ln p_k``,
``erank = exp(H)`` ∈ [1, d]; it equals r for r equal non-zero singular values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from clipgeo.geometry._checks import DEFAULT_BLOCK_ROWS, iter_chunks

__all__ = [
    "DEFAULT_COLLAPSE_THRESHOLD",
    "ScatterMoments",
    "collapse_point",
    "effective_rank",
    "largest_log_drop",
    "scatter_moments",
    "singular_spectrum",
    "spectra",
    "spectrum_summary",
]

#: Relative threshold τ of the collapse point: σ_k < τ·σ_1 counts as collapsed.
DEFAULT_COLLAPSE_THRESHOLD = 1e-3
#: Relative singular values below this are treated as zero by ``largest_log_drop`` (the
#: precision floor of the scatter-matrix route, see the module docstring).
_REL_FLOOR = 1e-8


@dataclass
class ScatterMoments:
    """Count, mean and centred scatter ``S = Σ (x̂ − μ̂)(x̂ − μ̂)ᵀ`` of a set of normalised vectors."""

    n: int
    mean: np.ndarray  # (d,)
    scatter: np.ndarray  # (d, d), symmetric PSD

    def merge(self, other: ScatterMoments) -> ScatterMoments:
        """Moments of the union: ``S = S_a + S_b + (n_a n_b / n)(μ_a − μ_b)(μ_a − μ_b)ᵀ``."""
        if self.mean.shape != other.mean.shape:
            raise ValueError(
                f"mismatched dimensions: {self.mean.shape[0]} and {other.mean.shape[0]}"
            )
        n = self.n + other.n
        delta = self.mean - other.mean
        mean = (self.n * self.mean + other.n * other.mean) / n
        scatter = self.scatter + other.scatter + (self.n * other.n / n) * np.outer(delta, delta)
        return ScatterMoments(n, mean, scatter)

    def singular_values(self) -> np.ndarray:
        """``σ_k = sqrt(max(λ_k(S), 0))``, sorted descending (length d)."""
        lam = np.linalg.eigvalsh((self.scatter + self.scatter.T) / 2)[::-1]
        return np.sqrt(np.clip(lam, 0.0, None))


def scatter_moments(source, name: str = "x", *, normalize: bool = True,
                    block: int = DEFAULT_BLOCK_ROWS) -> ScatterMoments:
    """One streaming pass: count, mean and centred scatter of the (row-normalised) vectors.

    ``source`` is anything :func:`clipgeo.geometry._checks.iter_chunks` accepts (an array, a
    memmap, a list of chunks, or a callable returning fresh chunks). With ``normalize`` each row
    is divided by its L2 norm first (a zero row raises ``ValueError``). Memory: ``O(block·d + d²)``.
    """
    n = 0
    shift = None
    s1 = None
    s2 = None
    for offset, chunk in iter_chunks(source, name, block=block):
        if normalize:
            norms = np.linalg.norm(chunk, axis=1)
            if np.any(norms == 0):
                bad = offset + int(np.flatnonzero(norms == 0)[0])
                raise ValueError(f"{name}: row {bad} is a zero vector and cannot be L2-normalised")
            chunk = chunk / norms[:, None]
        if shift is None:
            shift = chunk.mean(axis=0)
            d = chunk.shape[1]
            s1 = np.zeros(d)
            s2 = np.zeros((d, d))
        c = chunk - shift
        s1 += c.sum(axis=0)
        s2 += c.T @ c
        n += chunk.shape[0]
    if n == 0:
        raise ValueError(f"{name}: no vectors")
    m = s1 / n
    scatter = s2 - n * np.outer(m, m)
    return ScatterMoments(n, shift + m, scatter)


def singular_spectrum(x, name: str = "x", *, normalize: bool = True) -> np.ndarray:
    """Singular values (descending, length d) of the centred, row-normalised vectors of ``x``."""
    return scatter_moments(x, name, normalize=normalize).singular_values()


def _check_sigma(sigma: np.ndarray) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"sigma: expected a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sigma: singular values must be finite and non-negative")
    return np.sort(s)[::-1]


def collapse_point(sigma: np.ndarray, threshold: float = DEFAULT_COLLAPSE_THRESHOLD) -> int:
    """``#{k : σ_k ≥ threshold·σ_1}``: the 0-based index of the first collapsed singular value
    (``len(sigma)`` when none is below ``threshold·σ_1``; 0 when all are zero)."""
    s = _check_sigma(sigma)
    if not (0 < threshold < 1):
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if s[0] == 0:
        return 0
    return int(np.count_nonzero(s >= threshold * s[0]))


def largest_log_drop(sigma: np.ndarray) -> tuple[int, float]:
    """``(k, decades)``: the 0-based index of the first value after the largest drop
    ``log10 σ_{k−1} − log10 σ_k`` (relative values floored at 1e-8), and that drop in decades."""
    s = _check_sigma(sigma)
    if s.size < 2 or s[0] == 0:
        return s.size, 0.0
    logs = np.log10(np.maximum(s / s[0], _REL_FLOOR))
    drops = logs[:-1] - logs[1:]
    k = int(np.argmax(drops))
    return k + 1, float(drops[k])


def effective_rank(sigma: np.ndarray) -> float:
    """Roy & Vetterli's effective rank ``exp(−Σ p_k ln p_k)`` with ``p_k = σ_k / Σσ`` (0·ln 0 = 0)."""
    s = _check_sigma(sigma)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def spectrum_summary(sigma: np.ndarray, n: int, *,
                     threshold: float = DEFAULT_COLLAPSE_THRESHOLD) -> dict[str, float]:
    """Named floats of one spectrum: ``n, d, sigma_1, collapse_index, collapse_threshold,
    largest_drop_index, largest_drop_decades, effective_rank, rank_limited_by_n`` (1.0 when
    ``n − 1 < d``: the centred matrix cannot have more than ``n − 1`` non-zero values)."""
    s = _check_sigma(sigma)
    k_drop, dec = largest_log_drop(s)
    return {
        "n": float(n),
        "d": float(s.size),
        "sigma_1": float(s[0]),
        "collapse_index": float(collapse_point(s, threshold)),
        "collapse_threshold": float(threshold),
        "largest_drop_index": float(k_drop),
        "largest_drop_decades": dec,
        "effective_rank": effective_rank(s),
        "rank_limited_by_n": 1.0 if n - 1 < s.size else 0.0,
    }


def spectra(
    img,
    txt,
    *,
    threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
    block: int = DEFAULT_BLOCK_ROWS,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-modality and joint spectra of the centred normalised vectors (Figs. 10, 11, 12).

    ``img`` and ``txt`` are arrays or chunk sources (see :func:`scatter_moments`); they need not
    be paired. ``joint`` is ``[x̂_img; x̂_txt]`` centred by its own mean (merged exactly from the
    per-modality moments). Returns ``(curve, summary)``:

    * ``curve``: one row per singular value — ``scope`` (image / text / joint), ``index``
      (0-based), ``sigma``, ``sigma_rel`` (σ_k/σ_1), ``log10_sigma_rel`` (floored at 1e-8);
    * ``summary``: one row per scope — ``scope`` plus the keys of :func:`spectrum_summary`
      (``n, d, sigma_1, collapse_index, collapse_threshold, largest_drop_index,
      largest_drop_decades, effective_rank, rank_limited_by_n``).
    """
    mi = scatter_moments(img, "img", block=block)
    mt = scatter_moments(txt, "txt", block=block)
    if mi.mean.shape != mt.mean.shape:
        raise ValueError(
            f"mismatched dimensions between modalities: img has d={mi.mean.shape[0]}, "
            f"txt has d={mt.mean.shape[0]}"
        )
    curves = []
    rows = []
    for scope, mom in (("image", mi), ("text", mt), ("joint", mi.merge(mt))):
        s = mom.singular_values()
        rel = s / s[0] if s[0] > 0 else np.zeros_like(s)
        curves.append(
            pl.DataFrame(
                {
                    "scope": [scope] * s.size,
                    "index": np.arange(s.size, dtype=np.int64),
                    "sigma": s,
                    "sigma_rel": rel,
                    "log10_sigma_rel": np.log10(np.maximum(rel, _REL_FLOOR)),
                }
            )
        )
        rows.append({"scope": scope, **spectrum_summary(s, mom.n, threshold=threshold)})
    return pl.concat(curves), pl.DataFrame(rows)
