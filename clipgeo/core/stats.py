"""The shared numerical primitives every metric uses: one of each.

* :class:`ScatterAccumulator` — streaming, mergeable count / mean / centred scatter
  ``M2 = Σ_i (x_i − μ)(x_i − μ)ᵀ`` in float64 (add a batch, merge two, finalize). Every
  covariance in clipgeo (the Double-Ellipsoid moments, the topological spectra) comes from it.
* :func:`centred_eigenvalues` — the eigenvalues of a *small* set's covariance through the
  smaller of its Gram and scatter matrices (the per-cluster spectra); equal to
  ``ScatterAccumulator(...).eigenvalues()`` on the same rows.
* :func:`l2_normalize` — ``x / ‖x‖`` row-wise with **one zero-row policy**: a row of zero norm has
  no direction, so it raises ``ValueError`` naming the row (sources reject zero vectors at
  ingest, so a stored run never holds one). It is :func:`clipgeo.core.arrays.normalize_rows`
  (the one implementation, on the ground floor), re-exported here under this name.
* :func:`effective_rank` — Roy & Vetterli's ``exp(H(p))``, ``p = v / Σ v``, with the two named
  forms used in the tables: :func:`effective_rank_lambda_entropy` (``p ∝ λ``, eigenvalues of the
  covariance) and :func:`effective_rank_sigma_entropy` (``p ∝ σ = √λ``, singular values of the
  centred data). They differ by about 2× on the same data, so no table calls either of them
  plain "effective rank".

Conventions: covariance = population covariance ``M2 / N`` (divisor N), eigenvalues descending
and clipped at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipgeo.core.arrays import DEFAULT_BLOCK_ROWS, check_finite, iter_chunks, normalize_rows

__all__ = [
    "ScatterAccumulator",
    "ScatterResult",
    "centred_eigenvalues",
    "effective_rank",
    "effective_rank_lambda_entropy",
    "effective_rank_sigma_entropy",
    "l2_normalize",
]


# ------------------------------------------------------------------------------ normalisation

#: ``x / ‖x‖`` row-wise: the ground floor's :func:`clipgeo.core.arrays.normalize_rows` (one
#: implementation; this name is kept for the callers that know it from here).
l2_normalize = normalize_rows


# ------------------------------------------------------------------------------ scatter


@dataclass(frozen=True)
class ScatterResult:
    """What :meth:`ScatterAccumulator.finalize` returns: count, mean, scatter ``M2``, covariance
    ``M2 / (n − ddof)`` and its eigenvalues λ (descending, clipped at 0)."""

    n: int
    mean: np.ndarray
    scatter: np.ndarray
    covariance: np.ndarray
    eigenvalues: np.ndarray


class ScatterAccumulator:
    """Streaming, mergeable float64 count ``n``, mean ``μ`` and centred scatter ``M2``.

    ``M2 = Σ_i (x_i − μ)(x_i − μ)ᵀ``; covariance ``Σ = M2 / n`` (population). Batches are
    merged with Chan et al.'s pairwise update, which never forms ``Σ x xᵀ − n μ μᵀ`` (no
    cancellation)::

        δ = μ_b − μ_a,  n = n_a + n_b,  μ = μ_a + δ n_b / n,
        M2 = M2_a + M2_b + δ δᵀ n_a n_b / n

    so the result does not depend on how the rows were split (up to rounding):

    >>> acc = ScatterAccumulator()
    >>> for chunk in chunks: acc.add(chunk)              # doctest: +SKIP
    >>> total = acc_shard_0.merge(acc_shard_1)           # doctest: +SKIP
    >>> res = total.finalize()   # n, mean, scatter, covariance, eigenvalues  # doctest: +SKIP

    Instances are small (``O(d²)``) and picklable, so shards (Dask / Ray workers) can build
    their own and the driver merges them. :meth:`merge` folds ``other`` into ``self`` and
    returns ``self``; :meth:`merged` returns a new accumulator and leaves both inputs alone.
    """

    __slots__ = ("name", "d", "n", "_mean", "_m2")

    def __init__(self, d: int | None = None, name: str = "x") -> None:
        self.name = name
        self.d = d
        self.n = 0
        self._mean = None if d is None else np.zeros(d)
        self._m2 = None if d is None else np.zeros((d, d))

    # -- building
    def _init(self, d: int) -> None:
        if d < 1:
            raise ValueError(f"{self.name}: vectors have dimension 0")
        self.d = d
        self._mean = np.zeros(d)
        self._m2 = np.zeros((d, d))

    def add(self, batch, *, validate: bool = True) -> "ScatterAccumulator":
        """Add the rows of one 2-D batch (converted to float64; NaN/inf raise ``ValueError``).
        The scatter is ``CᵀC``, which numpy computes with BLAS ``syrk``, half a general product."""
        b = np.asarray(batch)
        if b.ndim != 2:
            raise ValueError(f"{self.name}: batch must be 2-D, got shape {b.shape}")
        if b.shape[0] == 0:
            return self
        if self.d is not None and b.shape[1] != self.d:
            raise ValueError(f"{self.name}: batch has dimension {b.shape[1]}, expected {self.d}")
        b = np.asarray(b, dtype=np.float64)
        if validate:
            check_finite(b, self.name, row_offset=self.n)
        if self._mean is None:
            self._init(b.shape[1])
        mb = b.mean(axis=0)
        c = b - mb
        self._fold(b.shape[0], mb, c.T @ c)
        return self

    def add_centred(self, centred: np.ndarray, mean: np.ndarray, shift: np.ndarray | None = None
                    ) -> "ScatterAccumulator":
        """Add a batch given as its rows minus a shift, ``centred = x − shift``, with the batch's
        mean (float64; the streamed pass computes both in its reader thread), so only
        ``centredᵀ centred`` (BLAS ``syrk``) and the merge run here. ``shift`` defaults to the
        batch mean; another shift ``r`` (close to it: the first block's mean) gives the scatter
        about the mean as ``CᵀC − n (mean − r)(mean − r)ᵀ``, whose correction is tiny when
        ``r ≈ mean``. The same result as :meth:`add` of ``x`` (up to rounding).

        >>> x = np.array([[1.0, 2.0], [3.0, 5.0], [2.0, 2.0]])
        >>> a = ScatterAccumulator().add_centred(x - x.mean(axis=0), x.mean(axis=0))
        >>> b = ScatterAccumulator().add_centred(x - 1.5, x.mean(axis=0), shift=np.full(2, 1.5))
        >>> bool(np.allclose(a.scatter, ScatterAccumulator().add(x).scatter) and np.allclose(b.scatter, a.scatter))
        True
        """
        c = np.asarray(centred, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] == 0:
            raise ValueError(f"{self.name}: centred batch must be 2-D with rows, got shape {c.shape}")
        if self._mean is None:
            self._init(c.shape[1])
        elif c.shape[1] != self.d:
            raise ValueError(f"{self.name}: batch has dimension {c.shape[1]}, expected {self.d}")
        mb = np.asarray(mean, dtype=np.float64)
        m2 = c.T @ c
        if shift is not None:
            delta = mb - np.asarray(shift, dtype=np.float64)
            m2 -= np.outer(delta, delta) * c.shape[0]
        self._fold(c.shape[0], mb, m2)
        return self

    def add_source(self, source, *, block: int = DEFAULT_BLOCK_ROWS) -> "ScatterAccumulator":
        """Add every chunk of ``source`` (anything :func:`clipgeo.core.arrays.iter_chunks` reads)."""
        for _, chunk in iter_chunks(source, self.name, d=self.d, block=block):
            self.add(chunk, validate=False)  # iter_chunks validated and converted it
        return self

    @classmethod
    def of(cls, x, name: str = "x") -> "ScatterAccumulator":
        """An accumulator over all rows of ``x`` (an array or a chunk source)."""
        return cls(name=name).add_source(x)

    def _fold(self, nb: int, mb: np.ndarray, m2b: np.ndarray) -> None:
        n = self.n + nb
        delta = mb - self._mean
        self._m2 += m2b + np.outer(delta, delta) * (self.n * nb / n)
        self._mean += delta * (nb / n)
        self.n = n

    def merge(self, other: "ScatterAccumulator") -> "ScatterAccumulator":
        """Fold ``other`` (disjoint rows, same d) into this accumulator; returns ``self``."""
        if other.n == 0:
            return self
        if self._mean is None:
            self._init(int(other.d))
        elif other.d != self.d:
            raise ValueError(f"{self.name}: cannot merge dimension {other.d} into {self.d}")
        self._fold(other.n, other._mean, other._m2)
        return self

    def merged(self, other: "ScatterAccumulator") -> "ScatterAccumulator":
        """A new accumulator over the union of both (neither input changes)."""
        return self.copy().merge(other)

    def copy(self) -> "ScatterAccumulator":
        out = ScatterAccumulator(name=self.name)
        out.d, out.n = self.d, self.n
        out._mean = None if self._mean is None else self._mean.copy()
        out._m2 = None if self._m2 is None else self._m2.copy()
        return out

    # -- results
    def _need(self, k: int = 1) -> None:
        if self.n < k:
            raise ValueError(f"{self.name}: needs at least {k} vector(s), got {self.n}")

    @property
    def mean(self) -> np.ndarray:
        """``μ = (1/n) Σ x_i``."""
        self._need()
        return self._mean.copy()

    @property
    def scatter(self) -> np.ndarray:
        """``M2 = Σ (x_i − μ)(x_i − μ)ᵀ``, symmetrised."""
        self._need()
        return 0.5 * (self._m2 + self._m2.T)

    def covariance(self, ddof: int = 0) -> np.ndarray:
        """``M2 / (n − ddof)`` (population covariance for the default ``ddof = 0``)."""
        self._need(ddof + 1)
        return self.scatter / (self.n - ddof)

    def eigh(self, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Eigenpairs of the covariance: ``λ`` descending, clipped at 0; ``V[:, k]`` the k-th
        principal axis, each with its largest-magnitude coordinate positive."""
        evals, evecs = np.linalg.eigh(self.covariance(ddof))
        evals, evecs = np.clip(evals[::-1], 0.0, None), evecs[:, ::-1]
        pivot = np.argmax(np.abs(evecs), axis=0)
        return evals, evecs * np.sign(evecs[pivot, np.arange(evecs.shape[1])])

    def eigenvalues(self, ddof: int = 0) -> np.ndarray:
        """``λ_1 ≥ … ≥ λ_d ≥ 0``: eigenvalues of the covariance (length d)."""
        return np.clip(np.linalg.eigvalsh(self.covariance(ddof))[::-1], 0.0, None)

    def singular_values(self) -> np.ndarray:
        """``σ_k = √(n λ_k)``: the singular values of the centred data matrix (length d)."""
        return np.sqrt(self.n * self.eigenvalues())

    def finalize(self, ddof: int = 0) -> "ScatterResult":
        """The finished statistics as an immutable :class:`ScatterResult` (``n, mean, scatter,
        covariance, eigenvalues``); the accumulator stays usable (more batches may follow)."""
        return ScatterResult(self.n, self.mean, self.scatter, self.covariance(ddof), self.eigenvalues(ddof))

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"ScatterAccumulator(name={self.name!r}, n={self.n}, d={self.d})"

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)


def centred_eigenvalues(v: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the population covariance of the rows of ``v`` — the
    ``min(n − 1, d)`` that can be non-zero — from the eigenvalues of the smaller of the Gram
    matrix ``C Cᵀ`` (n × n) and the scatter ``Cᵀ C`` (d × d) of the centred rows ``C``, divided
    by n. Same values as ``ScatterAccumulator.of(v).eigenvalues()[:min(n − 1, d)]``, several
    times cheaper for small sets (many clusters). Values below ~1e-16·λ_1 are rounding noise."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"v: expected an (n >= 2, d) array, got shape {v.shape}")
    n, d = v.shape
    c = v - v.mean(axis=0)
    g = c @ c.T if n <= d else c.T @ c
    lam = np.linalg.eigvalsh(g)[::-1][: min(n - 1, d)] / n
    return np.clip(lam, 0.0, None)


# ------------------------------------------------------------------------------ effective rank


def effective_rank(values: np.ndarray) -> float:
    """Roy & Vetterli (2007): ``exp(−Σ_k p_k ln p_k)`` with ``p_k = v_k / Σ_j v_j`` (``0 ln 0 = 0``).

    ``values`` must be finite and non-negative; all zeros give 0. ``r`` equal positive values
    give exactly ``r``. Which spectrum is passed decides what is measured: use the named forms.

    Parameters
    ----------
    values : array-like of shape (k,)
        Non-negative values (eigenvalues λ, or singular values σ), any order.

    Returns
    -------
    float
        In ``[1, k]`` (0 for all zeros).

    Examples
    --------
    >>> import numpy as np
    >>> effective_rank(np.ones(4)), effective_rank([1.0, 1.0, 0.0, 0.0])
    (4.0, 2.0)
    >>> round(effective_rank([3.0, 1.0]), 4)      # exp(−¾ ln ¾ − ¼ ln ¼)
    1.7548
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"effective_rank: expected a non-empty 1-D array, got shape {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError("effective_rank: values must be finite and non-negative")
    total = v.sum()
    if total == 0:
        return 0.0
    p = v[v > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def effective_rank_lambda_entropy(eigenvalues: np.ndarray) -> float:
    """Effective rank on the covariance spectrum: ``p_k = λ_k / Σ λ`` (variance shares)."""
    return effective_rank(eigenvalues)


def effective_rank_sigma_entropy(eigenvalues: np.ndarray) -> float:
    """Effective rank on the singular values of the centred data: ``p_k = σ_k / Σ σ`` with
    ``σ_k ∝ √λ_k`` (Roy & Vetterli's original form). Takes the eigenvalues ``λ``."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return effective_rank(np.sqrt(np.clip(lam, 0.0, None)))
