"""The Double-Ellipsoid geometry of CLIP (Levi & Gilboa, ICML 2025), on raw vectors.

Notation, per modality m ∈ {image, text}: raw vectors ``x_1..x_N ∈ R^d``, mean ``μ_m``,
population covariance ``Σ_m = (1/N) Σ_i (x_i − μ_m)(x_i − μ_m)ᵀ`` with eigenpairs
``λ_1 ≥ … ≥ λ_d ≥ 0``, ``v_1..v_d`` (unit columns; each sign chosen so that its largest-magnitude
coordinate is positive).

* **P1 separate subspaces** (:func:`subspace_comparison`): principal angles between the image and
  text top-k principal subspaces ``span(v_1..v_k)``; the share of one modality's variance inside
  the other's subspace, ``tr(U_Iᵀ Σ_T U_I) / tr(Σ_T)``. (Linear separability: see
  :mod:`clipgeo.geometry.separability`.)
* **P2 thin shell** (:func:`shell_summary`): the distribution of the distance from the mean
  ``r_i = ||x_i − μ_m||`` (not the norm ``||x_i||``; stored as ``dist_to_mean_*``).
* **P3 ellipsoid** (:func:`ellipsoid_shape_summary`): semi-axes ``√λ_k``, anisotropy
  ``√λ_1 / median_k √λ_k``, effective rank ``exp(−Σ_k p_k ln p_k)`` with ``p_k = λ_k / Σλ``
  (``effective_rank_lambda_entropy``; the σ form beside it); the
  spread (std/mean) of Mahalanobis radii ``||Λ^{-1/2} Vᵀ (x_i − μ_m)||`` next to that of the
  Euclidean radii (a perfect ellipsoid shell has constant Mahalanobis radius).
* **P4 tilt** (:func:`tilt_table`, :func:`principal_axis_angle`): ``max_j |v_k[j]|`` per principal
  axis (1 = aligned with a coordinate axis, ``1/√d`` = fully tilted); the angle between the
  modalities' first principal axes, ``arccos |v_1^I · v_1^T|`` (axes are unsigned).
* **P5 off-centre** (:func:`off_centre`): ``||μ_m||``, ``||μ_m|| / mean_i ||x_i||``,
  ``||μ_m|| / √λ_1``, ``cos(μ_I, μ_T)``.

Streaming: every statistic comes from two passes over chunks of rows. Pass 1
(:class:`MomentAccumulator`) accumulates, in float64, the count, mean and centred scatter
``Σ (x − μ)(x − μ)ᵀ`` (the shared :class:`clipgeo.core.stats.ScatterAccumulator`), ``Σ ||x||`` and
``Σ x̂``. Pass 2 (:func:`per_sample_statistics`)
computes per-vector radii, Mahalanobis radii, conformity and ``cos(x, μ)``. Memory is
``O(d² + block·d)`` plus O(N) per-sample scalars; no N×N matrix is ever formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
from scipy.linalg import svdvals

from clipgeo.core.arrays import ChunkSource, check_finite, iter_chunks, nonzero_row_norms, normalize_rows, row_norms
from clipgeo.core.stats import (
    ScatterAccumulator,
    effective_rank_lambda_entropy,
    effective_rank_sigma_entropy,
)
from clipgeo.geometry.conformity import (
    QUANTILES,
    conformity_divergence,
    conformity_fit,
    conformity_from_unit_sum,
    conformity_summary,
    extreme_samples,
)

__all__ = [
    "DoubleEllipsoidResult",
    "MomentAccumulator",
    "Moments",
    "PerSample",
    "cos_between_means",
    "double_ellipsoid_suite",
    "eigen_table",
    "histogram_table",
    "moments",
    "off_centre",
    "per_sample_statistics",
    "per_sample_plan",
    "per_sample_chunk",
    "PerSamplePlan",
    "PER_SAMPLE_FIELDS",
    "principal_axis_angle",
    "sample_ellipsoid_shell",
    "shell_summary",
    "ellipsoid_shape_summary",
    "subspace_comparison",
    "tilt_table",
]

#: A vector set counts as already L2-normalised when every norm is within this of 1.
NORMALIZED_TOL = 1e-3


# --------------------------------------------------------------------------- pass 1: moments


@dataclass(frozen=True)
class Moments:
    """First and second moments of one modality (output of :class:`MomentAccumulator`).

    ``cov`` is the population covariance (divisor N). ``eigenvalues`` are descending and clipped
    at 0; ``eigenvectors[:, k]`` is the k-th principal axis with its largest-magnitude
    coordinate positive. ``unit_sum = Σ x̂`` (for conformity), ``mean_length = mean ||x||``.
    """

    name: str
    n: int
    d: int
    mean: np.ndarray
    cov: np.ndarray
    mean_length: float
    min_length: float
    max_length: float
    unit_sum: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    length_std: float = float("nan")

    @property
    def semi_axes(self) -> np.ndarray:
        """``√λ_k``, descending."""
        return np.sqrt(self.eigenvalues)

    @property
    def is_normalized(self) -> bool:
        """True when every input vector already had unit norm (e.g. imported normalised
        embeddings): raw-vector analyses are then *not* what the model produced before
        normalisation, and tables should say so."""
        return bool(abs(self.min_length - 1) <= NORMALIZED_TOL and abs(self.max_length - 1) <= NORMALIZED_TOL)


class MomentAccumulator:
    """Streaming float64 moments of one modality: feed chunks, then :meth:`finalize`.

    >>> acc = MomentAccumulator("image")
    >>> for chunk in chunks: acc.update(chunk)        # doctest: +SKIP
    >>> mom = acc.finalize()                          # doctest: +SKIP

    The count, mean and centred scatter come from the shared
    :class:`clipgeo.core.stats.ScatterAccumulator` (Chan et al.'s merge); beside it this keeps
    ``Σ||x||``, ``min/max ||x||`` and ``Σ x̂``. Accumulators of disjoint parts can be
    :meth:`merge`-d (e.g. one per shard).
    """

    def __init__(self, name: str = "x", d: int | None = None) -> None:
        self.name = name
        self._scatter = ScatterAccumulator(d, name)
        self._unit_sum: np.ndarray | None = None if d is None else np.zeros(d)
        self._length_sum = 0.0
        self._length_sq_sum = 0.0
        self._min_length = np.inf
        self._max_length = 0.0

    @property
    def n(self) -> int:
        return self._scatter.n

    @property
    def d(self) -> int | None:
        return self._scatter.d

    @property
    def length_sq_sum(self) -> float:
        """``Σ ‖x‖²`` of the rows added so far."""
        return self._length_sq_sum

    @property
    def scatter_accumulator(self) -> ScatterAccumulator:
        """The shared count / mean / centred-scatter accumulator inside (read it, don't feed it)."""
        return self._scatter

    def update(self, chunk: np.ndarray) -> "MomentAccumulator":
        """Add the rows of one 2-D chunk (validated: finite, non-zero rows, matching d)."""
        b = np.asarray(chunk)
        if b.ndim != 2:
            raise ValueError(f"{self.name}: chunk must be 2-D, got shape {b.shape}")
        if b.shape[0] == 0:
            return self
        if self.d is not None and b.shape[1] != self.d:
            raise ValueError(f"{self.name}: chunk has dimension {b.shape[1]}, expected {self.d}")
        b = np.asarray(b, dtype=np.float64)
        check_finite(b, self.name, row_offset=self.n)
        return self._add(b)

    def _add(self, b: np.ndarray) -> "MomentAccumulator":
        """Add a validated float64 chunk."""
        unit = normalize_rows(b, self.name, row_offset=self.n)  # zero rows raise here
        lengths = row_norms(b)
        if self._unit_sum is None:
            self._unit_sum = np.zeros(b.shape[1])
        self._scatter.add(b, validate=False)
        self._unit_sum += unit.sum(axis=0)
        self._length_sum += float(lengths.sum())
        self._length_sq_sum += float(lengths @ lengths)
        self._min_length = min(self._min_length, float(lengths.min()))
        self._max_length = max(self._max_length, float(lengths.max()))
        return self

    def add_centred(self, centred: np.ndarray, mean: np.ndarray, lengths: np.ndarray,
                    unit_sum: np.ndarray, shift: np.ndarray | None = None) -> "MomentAccumulator":
        """Add a float64 chunk given as ``centred = x − shift`` (default shift: its own mean), with its
        row norms ``lengths = ‖x_i‖`` (all finite and > 0: the caller checked) and
        ``unit_sum = Σ_i x_i/‖x_i‖``: what the streamed pass's reader thread computes, so only the
        scatter product runs here (:meth:`clipgeo.core.stats.ScatterAccumulator.add_centred`).
        The same sums as :meth:`update` of ``x``."""
        if self._unit_sum is None:
            self._unit_sum = np.zeros(centred.shape[1])
        self._scatter.add_centred(centred, mean, shift)
        self._unit_sum += unit_sum
        self._length_sum += float(lengths.sum())
        self._length_sq_sum += float(lengths @ lengths)
        self._min_length = min(self._min_length, float(lengths.min()))
        self._max_length = max(self._max_length, float(lengths.max()))
        return self

    def update_from(self, source: ChunkSource) -> "MomentAccumulator":
        """Add every chunk of ``source`` (an array or a chunk source)."""
        for _, chunk in iter_chunks(source, self.name, d=self.d):
            self._add(chunk)  # iter_chunks already validated and converted it
        return self

    def merge(self, other: "MomentAccumulator") -> "MomentAccumulator":
        """Fold another accumulator (over disjoint rows of the same modality) into this one."""
        if other.n == 0:
            return self
        self._scatter.merge(other._scatter)
        self._unit_sum = other._unit_sum.copy() if self._unit_sum is None else self._unit_sum + other._unit_sum
        self._length_sum += other._length_sum
        self._length_sq_sum += other._length_sq_sum
        self._min_length = min(self._min_length, other._min_length)
        self._max_length = max(self._max_length, other._max_length)
        return self

    def finalize(self) -> Moments:
        """Mean, covariance (divisor N) and its eigen-decomposition. Needs at least 2 vectors.
        Computed once per state (the measure stage's sections each ask for it) and handed out as
        copies."""
        if self.n < 2:
            raise ValueError(f"{self.name}: a modality needs at least 2 vectors, got {self.n}")
        cached = getattr(self, "_final", None)
        if cached is not None and cached.n == self.n:   # every change adds rows: n names the state
            return replace(cached, mean=cached.mean.copy(), cov=cached.cov.copy(), unit_sum=cached.unit_sum.copy(),
                           eigenvalues=cached.eigenvalues.copy(), eigenvectors=cached.eigenvectors.copy())
        evals, evecs = self._scatter.eigh()
        mean_length = self._length_sum / self.n
        self._final = Moments(
            name=self.name,
            n=self.n,
            d=int(self.d),
            mean=self._scatter.mean,
            cov=self._scatter.covariance(),
            mean_length=mean_length,
            min_length=self._min_length,
            max_length=self._max_length,
            unit_sum=self._unit_sum.copy(),
            eigenvalues=evals,
            eigenvectors=evecs,
            length_std=float(np.sqrt(max(self._length_sq_sum / self.n - mean_length**2, 0.0))),
        )
        return self.finalize()   # a copy: callers may change the arrays they get


def moments(source: ChunkSource, name: str = "x") -> Moments:
    """One pass over ``source`` with a :class:`MomentAccumulator`; returns its :class:`Moments`."""
    return MomentAccumulator(name).update_from(source).finalize()


# ----------------------------------------------------------------------- pass 2: per sample


@dataclass(frozen=True)
class PerSample:
    """Per-vector statistics of one modality, row-aligned with its input.

    ``radius = ||x − μ||`` (the distance from the mean: the P2 "shell" variable);
    ``mahalanobis = ||Λ_+^{-1/2} V_+ᵀ (x − μ)||`` over the ``rank`` eigen-directions with
    ``λ_k > rtol · λ_1`` (a pseudo-inverse); ``conformity`` = ``(x̂ · Σ x̂ − 1)/(N − 1)``;
    ``cos_to_raw_mean = cos(x, μ)`` (μ the mean of the raw vectors); ``cos_to_unit_mean =
    cos(x, m̂)`` (m̂ = mean of the unit vectors x̂, where ``C = (N ||m̂|| cos(x, m̂) − 1)/(N − 1)``
    holds exactly); ``length = ||x||``.
    """

    radius: np.ndarray
    mahalanobis: np.ndarray
    conformity: np.ndarray
    cos_to_raw_mean: np.ndarray
    cos_to_unit_mean: np.ndarray
    length: np.ndarray
    rank: int

    @property
    def n(self) -> int:
        """Rows (vectors)."""
        return int(self.radius.shape[0])


PER_SAMPLE_FIELDS = ("radius", "mahalanobis", "conformity", "cos_to_raw_mean", "cos_to_unit_mean", "length")


@dataclass(frozen=True)
class PerSamplePlan:
    """What pass 2 needs from a modality's moments (:func:`per_sample_plan`): the whitening map of
    the ``rank`` kept eigen-directions, the unit mean directions, ``Σ x̂`` and ``N``."""

    name: str
    mean: np.ndarray
    whiten: np.ndarray
    mu_hat: np.ndarray
    m_hat: np.ndarray
    unit_sum: np.ndarray
    n: int
    rank: int
    #: Lower-triangular ``R`` with ``R Rᵀ = Σ⁻¹`` (projection dtype, Fortran order) when every
    #: direction is kept: ``‖Rᵀ c‖ = ‖Λ^{-1/2} Vᵀ c‖`` at half the product's cost (BLAS ``trmm``).
    tri: np.ndarray | None = None


def whitening_projection(c: np.ndarray, plan: PerSamplePlan) -> np.ndarray:
    """Rows ``z_i`` with ``‖z_i‖² = c_iᵀ Σ⁺ c_i`` (the squared Mahalanobis radius) for centred rows
    ``c`` in the plan's projection dtype, C order: ``Rᵀ c_i`` by BLAS ``trmm`` when the plan has
    the triangular factor (``c`` is then overwritten: it is the caller's scratch), else
    ``c Λ^{-1/2} V`` (the kept directions). Both release the GIL, so two threads can run two
    blocks' products at once (:class:`clipgeo.streaming.threads.Lanes`)."""
    if plan.tri is None:
        return c @ plan.whiten
    c = np.ascontiguousarray(c, dtype=plan.tri.dtype)   # the caller's scratch as it is (no copy)
    _trmm_nogil(np.asfortranarray(plan.tri), c)
    return c


_TRMM: dict = {}


def _trmm_nogil(tri: np.ndarray, c: np.ndarray) -> None:
    """``c_i ← Rᵀ c_i`` for every row of the C-ordered ``c`` (``R = tri``: lower triangular,
    Fortran order), in place: BLAS ``?trmm`` (side L, lower, transposed) on ``cᵀ`` seen as a
    Fortran ``d × n`` matrix, called through ctypes on the routine scipy's own wrapper
    (``scipy.linalg.blas.strmm``) calls, so the GIL is released for the product, which the
    wrapper does not do."""
    import ctypes

    kind = "strmm" if tri.dtype == np.float32 else "dtrmm"
    fn = _TRMM.get(kind)
    if fn is None:
        from scipy.linalg import cython_blas

        cap = cython_blas.__pyx_capi__[kind]
        api = ctypes.pythonapi
        api.PyCapsule_GetName.restype = ctypes.c_char_p
        api.PyCapsule_GetName.argtypes = [ctypes.py_object]
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        ptr = api.PyCapsule_GetPointer(cap, api.PyCapsule_GetName(cap))
        real = ctypes.c_float if kind == "strmm" else ctypes.c_double
        ch, i32 = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)
        fn = _TRMM[kind] = (ctypes.CFUNCTYPE(None, ch, ch, ch, ch, i32, i32, ctypes.POINTER(real), ctypes.c_void_p,
                                             i32, ctypes.c_void_p, i32)(ptr), real)
    call, real = fn
    n, d = c.shape
    if n == 0:
        return
    if tri.shape != (d, d):
        raise ValueError(f"triangular factor of shape {tri.shape} for rows of dimension {d}")
    m_, n_, ld = ctypes.c_int(d), ctypes.c_int(n), ctypes.c_int(d)
    alpha = real(1.0)
    call(b"L", b"L", b"T", b"N", ctypes.byref(m_), ctypes.byref(n_), ctypes.byref(alpha), tri.ctypes.data,
         ctypes.byref(ld), c.ctypes.data, ctypes.byref(ld))


def per_sample_plan(mom: Moments, *, rtol: float = 1e-10, projection_dtype: type = np.float32) -> PerSamplePlan:
    """The per-sample pass's constants from a modality's (merged) moments; small (O(d²)), picklable."""
    keep = mom.eigenvalues > rtol * max(mom.eigenvalues[0], np.finfo(float).tiny)
    # Fortran order: OpenBLAS's two-thread sgemm of (rows × d) @ (d × rank) runs ~1.6x faster with it
    whiten = np.asfortranarray((mom.eigenvectors[:, keep] / np.sqrt(mom.eigenvalues[keep])).astype(projection_dtype))
    mu_norm = np.linalg.norm(mom.mean)
    mu_hat = mom.mean / mu_norm if mu_norm > 0 else np.full(mom.d, np.nan)
    s_norm = np.linalg.norm(mom.unit_sum)
    m_hat = mom.unit_sum / s_norm if s_norm > 0 else np.full(mom.d, np.nan)
    tri = None
    if keep.all():
        prec = (mom.eigenvectors / mom.eigenvalues) @ mom.eigenvectors.T     # Σ⁻¹
        try:
            tri = np.asfortranarray(np.linalg.cholesky(0.5 * (prec + prec.T)).astype(projection_dtype))
        except np.linalg.LinAlgError:   # not numerically positive definite: the eigen-directions serve
            tri = None
    return PerSamplePlan(mom.name, mom.mean, whiten, mu_hat, m_hat, mom.unit_sum, mom.n, int(keep.sum()), tri)


def per_sample_chunk(x: np.ndarray, plan: PerSamplePlan, *, offset: int = 0) -> dict[str, np.ndarray]:
    """:class:`PerSample`'s statistics of the rows ``x`` (float64, rows of the modality ``plan``
    was made from; ``offset`` only names rows in errors): ``{field: (n,) array}``."""
    c = x - plan.mean
    length = nonzero_row_norms(x, plan.name, row_offset=offset)
    proj = whitening_projection(np.array(c, dtype=plan.whiten.dtype, order="C"), plan)
    return {
        "radius": row_norms(c),
        "mahalanobis": np.sqrt(np.einsum("ij,ij->i", proj, proj, dtype=np.float64)),
        "conformity": conformity_from_unit_sum(x, plan.unit_sum, plan.n, name=plan.name, offset=offset),
        "cos_to_raw_mean": (x @ plan.mu_hat) / length,
        "cos_to_unit_mean": (x @ plan.m_hat) / length,
        "length": length,
    }


def per_sample_statistics(
    source: ChunkSource,
    mom: Moments,
    *,
    rtol: float = 1e-10,
    projection_dtype: type = np.float32,
) -> PerSample:
    """Second pass over ``source`` (the same rows that produced ``mom``). See :class:`PerSample`.

    Everything is computed in float64 except the whitening product ``(x − μ) Λ^{-1/2} V`` for
    the Mahalanobis radius, done in ``projection_dtype`` (float32 by default: it is the one
    O(N·d²) product of this pass and float32 halves it; the radii keep a relative error around
    1e-6). Pass ``np.float64`` for full precision. Row ranges of one modality can run apart
    (:func:`per_sample_chunk` with one :func:`per_sample_plan`) and be concatenated.
    """
    plan = per_sample_plan(mom, rtol=rtol, projection_dtype=projection_dtype)
    out = {k: np.empty(mom.n) for k in PER_SAMPLE_FIELDS}
    seen = 0
    for off, x in iter_chunks(source, mom.name, d=mom.d):
        if off + x.shape[0] > mom.n:
            raise ValueError(f"{mom.name}: more rows in the second pass than the {mom.n} in the moments")
        sl = slice(off, off + x.shape[0])
        for k, v in per_sample_chunk(x, plan, offset=off).items():
            out[k][sl] = v
        seen = sl.stop
    if seen != mom.n:
        raise ValueError(f"{mom.name}: the second pass read {seen} rows, the moments counted {mom.n}")
    return PerSample(rank=plan.rank, **out)


# ------------------------------------------------------------------------------ summaries


def _pct(q: float) -> str:
    p = 100 * q
    return str(int(p)) if float(p).is_integer() else f"{p:g}".replace(".", "_")


def shell_summary(
    radius: np.ndarray,
    *,
    quantiles: Sequence[float] = QUANTILES,
    near_fraction: float = 0.5,
) -> dict[str, float]:
    """P2: distribution of ``r_i = ||x_i − μ_m||``.

    ``mean``, ``std``, ``std_over_mean`` (a thin shell has a small value), quantiles ``q0 …
    q100`` (keys in percent), and ``frac_near_mean = mean_i [r_i < near_fraction · median r]``
    (≈ 0 for a shell; ``1 − 2^{-1/4} ≈ 0.159`` for a 2-D Gaussian at ``near_fraction = 0.5``).
    """
    r = np.asarray(radius, dtype=np.float64)
    if r.ndim != 1 or r.size < 2:
        raise ValueError(f"shell_summary: need a 1-D array of at least 2 radii, got shape {r.shape}")
    mean, std = float(r.mean()), float(r.std())
    qs = np.quantile(r, quantiles)
    out = {"mean": mean, "std": std, "std_over_mean": std / mean if mean > 0 else float("nan")}
    out.update({f"q{_pct(q)}": float(v) for q, v in zip(quantiles, qs, strict=True)})
    out["frac_near_mean"] = float(np.mean(r < near_fraction * np.median(r)))
    return out


def ellipsoid_shape_summary(mom: Moments, levels: Sequence[float] = (0.9, 0.99)) -> dict[str, float | None]:
    """P3: ``total_variance = Σλ``, ``semi_axis_max = √λ_1``, ``semi_axis_median`` (median of
    ``√λ_k``), ``anisotropy = √λ_1 / median √λ_k``, ``effective_rank_lambda_entropy =
    exp(−Σ p_k ln p_k)`` with ``p_k = λ_k/Σλ`` and ``effective_rank_sigma_entropy`` (the same
    with ``p_k ∝ √λ_k``), and ``k90``/``k99``: the fewest axes whose variance share reaches
    90 / 99 %.

    With ``N ≤ d`` the covariance has rank at most ``N − 1 < d``: its smallest eigenvalues are
    zeros of the sample, not of the model, so ``semi_axis_median``, ``anisotropy`` and both
    effective ranks are None (see :func:`covariance_status`).
    """
    lam = mom.eigenvalues
    total = float(lam.sum())
    semi = np.sqrt(lam)
    out: dict[str, float | None] = {"total_variance": total, "semi_axis_max": float(semi[0])}
    if mom.n <= mom.d:
        out.update(semi_axis_median=None, anisotropy=None, effective_rank_lambda_entropy=None,
                   effective_rank_sigma_entropy=None)
    else:
        med = float(np.median(semi))
        out.update(
            semi_axis_median=med,
            anisotropy=float(semi[0] / med) if med > 0 else None,
            effective_rank_lambda_entropy=effective_rank_lambda_entropy(lam),
            effective_rank_sigma_entropy=effective_rank_sigma_entropy(lam),
        )
    for level in levels:
        out[f"k{_pct(level)}"] = float(_k_for_level(lam, level))
    return out


def covariance_status(mom: Moments) -> tuple[str, str]:
    """``("ok", "")``, or ``("rank_limited", why)`` when ``N ≤ d`` (singular covariance)."""
    if mom.n <= mom.d:
        return "rank_limited", (
            f"{mom.n} {mom.name} vectors <= d = {mom.d}: the covariance has rank at most {mom.n - 1}; "
            "anisotropy, effective ranks and Mahalanobis radii are not reported")
    return "ok", ""


#: Fewest points over which a correlation or fit is reported.
MIN_FIT_POINTS = 5


def _k_for_level(lam: np.ndarray, level: float) -> int:
    total = lam.sum()
    if total <= 0:
        return 1
    cum = np.cumsum(lam) / total
    return int(min(np.searchsorted(cum, level - 1e-12) + 1, lam.size))


def _cv(v: np.ndarray) -> float:
    m = float(np.mean(v))
    return float(np.std(v) / m) if m > 0 else float("nan")


def eigen_table(moms: Sequence[Moments]) -> pl.DataFrame:
    """P3 rows for plotting: ``modality, axis (0-based), eigenvalue, semi_axis = √λ,
    explained_fraction = λ/Σλ, cumulative_fraction`` — all d eigenvalues per modality."""
    frames = []
    for m in moms:
        lam = m.eigenvalues
        total = lam.sum() if lam.sum() > 0 else 1.0
        frames.append(
            pl.DataFrame(
                {
                    "modality": [m.name] * m.d,
                    "axis": np.arange(m.d, dtype=np.int64),
                    "eigenvalue": lam,
                    "semi_axis": np.sqrt(lam),
                    "explained_fraction": lam / total,
                    "cumulative_fraction": np.cumsum(lam) / total,
                }
            )
        )
    return pl.concat(frames)


def tilt_table(mom: Moments, n_axes: int = 10) -> pl.DataFrame:
    """P4 rows: for the top ``n_axes`` principal axes, ``max_abs_coord = max_j |v_k[j]|``
    (1 = axis-aligned, ``1/√d`` = fully tilted), the coordinate where it occurs, and ``λ_k``."""
    k = int(min(n_axes, mom.d))
    v = np.abs(mom.eigenvectors[:, :k])
    return pl.DataFrame(
        {
            "modality": [mom.name] * k,
            "axis": np.arange(k, dtype=np.int64),
            "eigenvalue": mom.eigenvalues[:k],
            "max_abs_coord": v.max(axis=0),
            "argmax_coord": v.argmax(axis=0).astype(np.int64),
        }
    )


def principal_axis_angle(a: Moments, b: Moments, axis: int = 0) -> float:
    """P4: angle in degrees between principal axis ``axis`` of two modalities,
    ``arccos |v^a · v^b|`` ∈ [0, 90] (axes have no sign)."""
    _same_d(a, b)
    c = abs(float(a.eigenvectors[:, axis] @ b.eigenvectors[:, axis]))
    return float(np.degrees(np.arccos(min(c, 1.0))))


def _same_d(a: Moments, b: Moments) -> None:
    if a.d != b.d:
        raise ValueError(f"mismatched dimensions between modalities: {a.name} has d={a.d}, {b.name} has d={b.d}")


def principal_angles(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Principal angles (radians, descending) between the spans of two orthonormal bases.

    Björck–Golub with Knyazev–Argentati's sine branch, like ``scipy.linalg.subspace_angles``
    but without its two ``orth`` SVDs (the bases here are eigenvectors, already orthonormal).
    With ``Q_a`` the wider basis, the cosines are ``σ = svdvals(Q_aᵀ Q_b)`` (descending) and the
    sines ``τ = svdvals(Q_b − Q_a Q_aᵀ Q_b)`` (ascending: the same angles); the ``i``-th smallest
    angle is ``arcsin(τ_i)`` where ``σ_i² ≥ ½`` (at most 45°, where the arccosine loses half
    its digits) and ``arccos(σ_i)`` elsewhere.

    Parameters
    ----------
    qa, qb : numpy.ndarray, shape (d, ka) and (d, kb)
        Orthonormal columns.

    Returns
    -------
    numpy.ndarray
        ``min(ka, kb)`` angles in radians, in descending order (as scipy returns them).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.linalg import subspace_angles
    >>> q = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 4)))[0]
    >>> np.round(principal_angles(q[:, :2], q[:, 1:3]), 12)   # one shared direction, one orthogonal pair
    array([1.57079633, 0.        ])
    >>> qa, qb = q[:, :2], np.linalg.qr(q[:, :2] + 0.1 * q[:, 2:])[0]
    >>> bool(np.allclose(principal_angles(qa, qb), subspace_angles(qa, qb), atol=1e-10))
    True
    """
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    cross = qa.T @ qb
    sigma = np.clip(svdvals(cross), -1.0, 1.0)          # cosines, descending = angles ascending
    angles = np.arccos(sigma)
    small = sigma ** 2 >= 0.5
    if small.any():
        sines = np.clip(np.sort(svdvals(qb - qa @ cross)), -1.0, 1.0)   # ascending = angles ascending
        angles[small] = np.arcsin(sines[: sigma.size][small])
    return angles[::-1]


def _quadratic_trace(cov: np.ndarray, u: np.ndarray) -> float:
    """``tr(Uᵀ Σ U)`` as ``Σ_ij (Σ U)_ij U_ij`` (one product, not two)."""
    return float(np.einsum("ij,ij->", cov @ u, u))


def subspace_comparison(
    a: Moments,
    b: Moments,
    *,
    fixed_k: int = 10,
    levels: Sequence[float] = (0.9, 0.99),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """P1: principal angles between the top-k principal subspaces of two modalities.

    Settings: ``k{level}`` for each variance level (k = the larger of the two modalities' k, so
    both subspaces hold at least that share of their variance) and ``fixed`` (``fixed_k``, at
    most d). With orthonormal bases ``U_a, U_b`` (top-k eigenvectors), the principal angles are
    ``θ_i = arccos σ_i(U_aᵀ U_b)`` (computed as ``scipy.linalg.subspace_angles`` does, on the
    eigenvectors, which are orthonormal already: :func:`principal_angles`). When ``2k > d`` and
    the eigenbases are complete, the angles come from the complements ``U_a⊥, U_b⊥`` (the other
    ``d − k`` eigenvectors): for two subspaces of one dimension ``k`` the nonzero principal angles
    are those of their orthogonal complements, and the other ``2k − d`` are 0 (the CS
    decomposition), so the SVDs are of ``(d − k)``-column matrices instead of ``k``-column ones
    (at d = 1024, k = 875 and 1,008: the five SVDs took 0.9 s); likewise ``tr(U_aᵀ Σ_b U_a) = tr Σ_b −
    tr(U_a⊥ᵀ Σ_b U_a⊥)``.

    Returns ``(summary, angles)``: ``summary`` has one row per setting with ``k``,
    ``mean/min/median/max_angle_deg`` and ``share_b_in_a = tr(U_aᵀ Σ_b U_a)/tr Σ_b`` (and
    ``share_a_in_b``); ``angles`` has one row per (setting, index) with ``angle_deg`` ascending.
    """
    _same_d(a, b)
    settings: list[tuple[str, int]] = []
    for level in levels:
        k = max(_k_for_level(a.eigenvalues, level), _k_for_level(b.eigenvalues, level))
        settings.append((f"k{_pct(level)}", k))
    settings.append(("fixed", int(min(max(fixed_k, 1), a.d))))
    rows, angle_rows = [], []
    tr_a, tr_b = float(np.trace(a.cov)), float(np.trace(b.cov))
    full = a.eigenvectors.shape == (a.d, a.d) and b.eigenvectors.shape == (b.d, b.d)
    for name, k in settings:
        if full and 2 * k > a.d:    # the complements are the smaller bases: same nonzero angles
            comp = principal_angles(a.eigenvectors[:, k:], b.eigenvectors[:, k:]) if k < a.d else np.empty(0)
            ang = np.sort(np.degrees(np.concatenate([comp, np.zeros(2 * k - a.d)])))
            share_b = tr_b - _quadratic_trace(b.cov, a.eigenvectors[:, k:])
            share_a = tr_a - _quadratic_trace(a.cov, b.eigenvectors[:, k:])
        else:
            ua, ub = a.eigenvectors[:, :k], b.eigenvectors[:, :k]
            ang = np.sort(np.degrees(principal_angles(ua, ub)))
            share_b, share_a = _quadratic_trace(b.cov, ua), _quadratic_trace(a.cov, ub)
        rows.append(
            {
                "setting": name,
                "k": k,
                "mean_angle_deg": float(ang.mean()),
                "min_angle_deg": float(ang.min()),
                "median_angle_deg": float(np.median(ang)),
                "max_angle_deg": float(ang.max()),
                f"share_{b.name}_in_{a.name}": float(share_b / tr_b) if tr_b > 0 else float("nan"),
                f"share_{a.name}_in_{b.name}": float(share_a / tr_a) if tr_a > 0 else float("nan"),
            }
        )
        angle_rows.append(
            pl.DataFrame({"setting": [name] * k, "k": [k] * k, "index": np.arange(k, dtype=np.int64), "angle_deg": ang})
        )
    return pl.DataFrame(rows), pl.concat(angle_rows)


def off_centre(mom: Moments) -> dict[str, float]:
    """P5 for one modality: ``mean_norm = ||μ||``, ``mean_length = mean ||x||``,
    ``mean_norm_over_mean_length = ||μ|| / mean ||x||``, ``mean_norm_over_max_semi_axis = ||μ|| / √λ_1``."""
    mu = float(np.linalg.norm(mom.mean))
    top = float(np.sqrt(mom.eigenvalues[0]))
    return {
        "mean_norm": mu,
        "mean_length": mom.mean_length,
        "mean_norm_over_mean_length": mu / mom.mean_length,
        "mean_norm_over_max_semi_axis": mu / top if top > 0 else float("inf"),
    }


def cos_between_means(a: Moments, b: Moments) -> float:
    """P5: ``cos(μ_a, μ_b)``."""
    _same_d(a, b)
    na, nb = np.linalg.norm(a.mean), np.linalg.norm(b.mean)
    return float(a.mean @ b.mean / (na * nb)) if na > 0 and nb > 0 else float("nan")


def histogram_table(values: dict[str, np.ndarray], *, kind: str, bins: int = 50, lower: float | None = None) -> pl.DataFrame:
    """Histogram rows on common edges for all modalities: ``kind, modality, bin, lo, hi, count,
    density`` (density = count / (n · width)). Edges span ``[lower or pooled min, pooled max]``."""
    lo = min(float(np.min(v)) for v in values.values()) if lower is None else float(lower)
    hi = max(float(np.max(v)) for v in values.values())
    if hi <= lo:
        hi = lo + 1e-12
    edges = np.linspace(lo, hi, bins + 1)
    frames = []
    for name, v in values.items():
        counts = np.histogram(v, edges)[0]
        frames.append(
            pl.DataFrame(
                {
                    "kind": [kind] * bins,
                    "modality": [name] * bins,
                    "bin": np.arange(bins, dtype=np.int64),
                    "lo": edges[:-1],
                    "hi": edges[1:],
                    "count": counts.astype(np.int64),
                    "density": counts / (len(v) * np.diff(edges)),
                }
            )
        )
    return pl.concat(frames)


# ---------------------------------------------------------------------------------- suite


@dataclass
class DoubleEllipsoidResult:
    """Everything the suite measured, as row-friendly tables.

    * ``modality``: one row per modality — n, d, ``inputs_normalized``, ``covariance_status`` /
      ``covariance_message`` (``rank_limited`` when N ≤ d), ``dist_to_mean_*`` (P2: the
      distribution of ``||x − μ||``), ``length_std`` / ``length_std_over_mean`` (of ``||x||``),
      ``ellipsoid_*`` and ``*_radius_cv`` (P3), ``tilt_*`` (P4), ``offcentre_*`` (P5),
      ``conformity_*`` (distribution) and the fits ``C ≈ a·cos + b`` against the cosine to the
      raw mean μ (``conformity_fit_raw_mean_*``, the paper's figure) and to the mean of the unit
      vectors m̂ (``conformity_fit_unit_mean_*``: exactly affine, r = 1); numbers that need a
      full-rank covariance or at least ``MIN_FIT_POINTS`` points are None, with the reason.
    * ``cross``: flat dict of cross-modal floats: ``first_axis_angle_deg`` (P4),
      ``cos_between_means`` (P5), ``modality_gap`` = ``||mean x̂_I − mean x̂_T||`` and
      ``modality_gap_raw`` = ``||μ_I − μ_T||`` (as :func:`clipgeo.geometry.gap.modality_gap`),
      ``conformity_js_divergence`` / ``_ks_statistic`` / ``_wasserstein`` / ``_mean_difference``.
    * ``subspaces`` / ``principal_angles`` (P1), ``eigenvalues`` (P3), ``tilt`` (P4),
      ``histograms`` (kinds ``radius``, ``mahalanobis``, ``conformity``), ``per_sample``
      (modality, row, radius, mahalanobis, conformity, cos_to_raw_mean, cos_to_unit_mean,
      length), ``extremes``
      (most / least conforming rows per modality).
    """

    modality: pl.DataFrame
    cross: dict[str, float]
    subspaces: pl.DataFrame
    principal_angles: pl.DataFrame
    eigenvalues: pl.DataFrame
    tilt: pl.DataFrame
    histograms: pl.DataFrame
    per_sample: pl.DataFrame | None
    extremes: pl.DataFrame
    moments: dict[str, Moments] = field(repr=False)


def double_ellipsoid_suite(
    img: ChunkSource,
    txt: ChunkSource,
    *,
    fixed_k: int = 10,
    n_tilt_axes: int = 10,
    bins: int = 50,
    n_extremes: int = 10,
    mahalanobis_rtol: float = 1e-10,
    keep_per_sample: bool = True,
    names: tuple[str, str] = ("image", "text"),
    moments_in: tuple[Moments, Moments] | None = None,
    per_sample_in: tuple[PerSample, PerSample] | None = None,
) -> DoubleEllipsoidResult:
    """Run P1–P5 and conformity on raw image and text vectors (two passes per modality).

    ``img`` / ``txt`` are arrays or chunk sources (see
    :data:`clipgeo.core.arrays.ChunkSource`; a callable is called once per pass). Each
    modality's rows must come back in the same order on both passes. Definitions are in the
    module docstring and the functions this calls. Linear separability (P1) and the modality
    gap are separate calls (:mod:`~clipgeo.geometry.separability`, :mod:`~clipgeo.geometry.gap`).

    ``moments_in``: the pass-1 moments of ``img`` and ``txt`` when already computed (e.g. merged
    from per-fragment partials on a cluster, :mod:`clipgeo.streaming.partials`): pass 1 is then skipped.
    ``per_sample_in``: the pass-2 statistics too (e.g. concatenated from per-range parts,
    :func:`clipgeo.streaming.partials.per_sample_partial`): pass 2 is then skipped and ``img``/``txt`` are not read.
    Anything with :class:`PerSample`'s attributes serves, e.g. :class:`clipgeo.streaming.partials.PerSampleFiles`,
    which reads each field from disk when asked: the summaries take one or two fields at a time.

    Raises ``ValueError`` on NaN/inf or zero vectors, mismatched dimensions between modalities,
    or fewer than 2 vectors in a modality.

    Parameters
    ----------
    img, txt : array-like of shape (n_img, d) and (n_txt, d), or chunk sources
        Raw image and text vectors (float16/32/64; need not be paired). Accumulated in float64.
    fixed_k : int
        The ``fixed`` setting of the principal-subspace comparison (P1): the top ``fixed_k``
        axes of each modality (at most d), beside the variance-level settings.
    n_tilt_axes : int
        Principal axes whose tilt is summarised (P4).
    bins : int
        Bins of the ``histograms`` table.
    n_extremes : int
        Most / least conforming rows kept per modality (``extremes``).
    mahalanobis_rtol : float
        The Mahalanobis radius uses the axes with ``λ_k > rtol · λ_1`` (a pseudo-inverse).
    keep_per_sample : bool
        Keep the ``per_sample`` table (one row per vector); ``False`` sets it to None.
    names : (str, str)
        The modalities' names in the tables and in errors.
    moments_in, per_sample_in : optional
        Precomputed pass-1 moments / pass-2 statistics of both modalities (see above).

    Returns
    -------
    DoubleEllipsoidResult
        ``modality`` (polars, one row per modality), ``cross`` (dict of float) and the tables
        listed in :class:`DoubleEllipsoidResult`.

    Examples
    --------
    Two clouds shifted to opposite sides of the origin along ``e1``: the means point opposite
    ways, and the gap is :func:`clipgeo.geometry.gap.modality_gap`'s:

    >>> import numpy as np
    >>> from clipgeo.geometry.gap import modality_gap
    >>> rng = np.random.default_rng(0)
    >>> e1 = np.eye(8)[0]
    >>> img = rng.normal(size=(200, 8)) + 3.0 * e1
    >>> txt = rng.normal(size=(200, 8)) - 3.0 * e1
    >>> res = double_ellipsoid_suite(img, txt, keep_per_sample=False)
    >>> res.modality.select("modality", "n", "d", "covariance_status").rows()
    [('image', 200, 8, 'ok'), ('text', 200, 8, 'ok')]
    >>> round(res.cross["cos_between_means"], 1)
    -1.0
    >>> abs(res.cross["modality_gap"] - modality_gap(img, txt)["gap"]) < 1e-12
    True
    """
    for src, nm in ((img, names[0]), (txt, names[1])):
        shape = getattr(src, "shape", None)
        if shape is not None and (len(shape) != 2 or shape[0] < 2):
            raise ValueError(
                f"{nm}: expected at least 2 vectors as a 2-D array (n, d), got shape {tuple(shape)}"
            )
    s_i, s_t = getattr(img, "shape", None), getattr(txt, "shape", None)
    if s_i is not None and s_t is not None and s_i[1] != s_t[1]:
        raise ValueError(f"mismatched dimensions between modalities: {names[0]} has d={s_i[1]}, {names[1]} has d={s_t[1]}")

    mom_i, mom_t = moments_in if moments_in is not None else (moments(img, names[0]), moments(txt, names[1]))
    _same_d(mom_i, mom_t)
    if per_sample_in is not None:
        ps_i, ps_t = per_sample_in
        for mom, ps in ((mom_i, ps_i), (mom_t, ps_t)):
            if ps.n != mom.n:
                raise ValueError(f"{mom.name}: {ps.n} per-sample rows given, the moments counted {mom.n}")
    else:
        ps_i = per_sample_statistics(img, mom_i, rtol=mahalanobis_rtol)
        ps_t = per_sample_statistics(txt, mom_t, rtol=mahalanobis_rtol)

    rows = []
    for mom, ps in ((mom_i, ps_i), (mom_t, ps_t)):
        row: dict[str, object] = {"modality": mom.name, "n": mom.n, "d": mom.d, "inputs_normalized": mom.is_normalized}
        status, why = covariance_status(mom)
        row["covariance_status"], row["covariance_message"] = status, why
        # each field is read once into a local and dropped after use: with lazily read
        # per-sample files (clipgeo.streaming.partials.PerSampleFiles) only one or two are in memory at a time
        radius = ps.radius
        row.update({f"dist_to_mean_{k}": v for k, v in shell_summary(radius).items()})
        row["euclidean_radius_cv"] = _cv(radius)
        del radius
        length = ps.length
        row["length_std"] = float(np.std(length))
        row["length_std_over_mean"] = _cv(length)
        del length
        row.update({f"ellipsoid_{k}": v for k, v in ellipsoid_shape_summary(mom).items()})
        row["mahalanobis_radius_cv"] = _cv(ps.mahalanobis) if status == "ok" else None
        row["mahalanobis_rank"] = ps.rank
        tilt = np.abs(mom.eigenvectors[:, : min(n_tilt_axes, mom.d)]).max(axis=0)
        row["tilt_axis1_max_abs_coord"] = float(tilt[0])
        row["tilt_mean_max_abs_coord"] = float(tilt.mean())
        row["tilt_fully_tilted_reference"] = float(1 / np.sqrt(mom.d))
        row.update({f"offcentre_{k}": v for k, v in off_centre(mom).items()})
        conf = ps.conformity
        row.update({f"conformity_{k}": v for k, v in conformity_summary(conf).items()})
        row["conformity_fit_n"] = mom.n
        row["conformity_fit_message"] = ""
        for which in ("raw_mean", "unit_mean"):
            cos = getattr(ps, f"cos_to_{which}")
            fit = dict.fromkeys(("a", "b", "pearson_r", "spearman_rho", "rmse"), None)
            if mom.n < MIN_FIT_POINTS:
                row["conformity_fit_message"] = (
                    f"{mom.n} {mom.name} vectors: a fit or correlation needs at least {MIN_FIT_POINTS}")
            elif not np.all(np.isfinite(cos)):  # the mean is 0: cos(x, mean) undefined
                row["conformity_fit_message"] += f"{which.replace('_', ' ')} is the zero vector; "
            else:
                fit = {k: (None if isinstance(v, float) and np.isnan(v) else v)
                       for k, v in conformity_fit(conf, cos).items() if k != "n"}
            row.update({f"conformity_fit_{which}_{k}": v for k, v in fit.items()})
            del cos
        del conf
        rows.append(row)

    cross = {
        "first_axis_angle_deg": principal_axis_angle(mom_i, mom_t),
        "cos_between_means": cos_between_means(mom_i, mom_t),
        # the same values as clipgeo.geometry.gap.modality_gap, from the streamed moments
        "modality_gap": float(np.linalg.norm(mom_i.unit_sum / mom_i.n - mom_t.unit_sum / mom_t.n)),
        "modality_gap_raw": float(np.linalg.norm(mom_i.mean - mom_t.mean)),
    }
    cross.update({f"conformity_{k}": v for k, v in conformity_divergence(ps_i.conformity, ps_t.conformity).items()})
    subspaces, angles = subspace_comparison(mom_i, mom_t, fixed_k=fixed_k)

    histos = pl.concat(
        [
            histogram_table({mom_i.name: ps_i.radius, mom_t.name: ps_t.radius}, kind="radius", bins=bins, lower=0.0),
            histogram_table({mom_i.name: ps_i.mahalanobis, mom_t.name: ps_t.mahalanobis}, kind="mahalanobis", bins=bins, lower=0.0),
            histogram_table({mom_i.name: ps_i.conformity, mom_t.name: ps_t.conformity}, kind="conformity", bins=bins),
        ]
    )
    per_sample = None
    if keep_per_sample:
        per_sample = pl.concat(
            [
                pl.DataFrame(
                    {
                        "modality": [mom.name] * mom.n,
                        "row": np.arange(mom.n, dtype=np.int64),
                        "radius": ps.radius,
                        "mahalanobis": ps.mahalanobis,
                        "conformity": ps.conformity,
                        "cos_to_raw_mean": ps.cos_to_raw_mean,
                        "cos_to_unit_mean": ps.cos_to_unit_mean,
                        "length": ps.length,
                    }
                )
                for mom, ps in ((mom_i, ps_i), (mom_t, ps_t))
            ]
        )
    extremes = pl.concat(
        [
            extreme_samples(ps.conformity, n_extremes).with_columns(pl.lit(mom.name).alias("modality")).select(
                "modality", "kind", "rank", "row", "conformity"
            )
            for mom, ps in ((mom_i, ps_i), (mom_t, ps_t))
        ]
    )
    return DoubleEllipsoidResult(
        modality=pl.DataFrame(rows),
        cross=cross,
        subspaces=subspaces,
        principal_angles=angles,
        eigenvalues=eigen_table([mom_i, mom_t]),
        tilt=pl.concat([tilt_table(mom_i, n_tilt_axes), tilt_table(mom_t, n_tilt_axes)]),
        histograms=histos,
        per_sample=per_sample,
        extremes=extremes,
        moments={mom_i.name: mom_i, mom_t.name: mom_t},
    )


# ------------------------------------------------------------------------ synthetic shells


def sample_ellipsoid_shell(
    n: int,
    centre: np.ndarray,
    semi_axes: np.ndarray,
    rotation: np.ndarray | None = None,
    *,
    thickness: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Draw ``n`` points on an ellipsoid shell with known geometry (a test/benchmark fixture).

    ``x = centre + R diag(σ) (√r · ρ · u)``, ``u`` uniform on the unit sphere of the ``r``
    coordinates where ``σ_k > 0`` (``r = d`` unless some semi-axes are 0),
    ``ρ ~ U(1 − thickness, 1 + thickness)``. Since ``E[r·uuᵀ] = I``, the covariance is
    ``R diag(σ²) Rᵀ · E[ρ²]`` (``E[ρ²] = 1 + thickness²/3``): the principal axes are the columns
    of ``R`` and the semi-axes ``√λ_k`` equal ``σ_k`` times ``√E[ρ²]``. Every point has
    Mahalanobis radius ``√r · ρ / √E[ρ²]``, so the Mahalanobis radius spread std/mean is
    ``thickness/√3`` (0 for a perfect shell).
    """
    centre = np.asarray(centre, dtype=np.float64)
    sigma = np.asarray(semi_axes, dtype=np.float64)
    d = centre.shape[0]
    if sigma.shape != (d,):
        raise ValueError(f"semi_axes must have shape ({d},), got {sigma.shape}")
    if not 0 <= thickness < 1:
        raise ValueError(f"thickness must be in [0, 1), got {thickness}")
    if np.any(sigma < 0) or not np.any(sigma > 0):
        raise ValueError("semi_axes must be >= 0 with at least one positive")
    rng = np.random.default_rng(seed)
    support = np.flatnonzero(sigma > 0)
    r = support.size
    u = rng.standard_normal((n, r))
    u = normalize_rows(u, "u")
    rho = rng.uniform(1 - thickness, 1 + thickness, (n, 1)) if thickness > 0 else 1.0
    z = np.zeros((n, d))
    z[:, support] = np.sqrt(r) * rho * u * sigma[support]
    if rotation is not None:
        z = z @ np.asarray(rotation, dtype=np.float64).T
    return centre + z
