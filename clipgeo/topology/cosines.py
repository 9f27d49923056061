"""Distributions of cosine similarities within and across modalities (Topological Perspectives, Fig. 3).

On L2-normalised vectors ``x̂ = x/||x||`` (``cos(a, b) = â·b̂``), with ``g(c)`` the image of caption
``c`` (``txt_image_index``; row i ↔ row i when omitted), four populations of pairs:

* ``paired_image_text``:   ``cos(t_c, x_{g(c)})`` for every caption ``c`` (always exact, O(n·d));
* ``unpaired_image_text``: ``cos(t_c, x_i)`` for all ``(c, i)`` with ``i ≠ g(c)``;
* ``image_image``:         ``cos(x_i, x_j)`` for all ``i < j``;
* ``text_text``:           ``cos(t_c, t_c')`` for all ``c < c'`` (captions of the same image
  included).

A population of at most ``max_exact_pairs`` pairs is enumerated *exactly*, block by block
(a ``block × block`` tile of scores at a time, never the N × N matrix). A larger one is
estimated from ``n_sample`` pairs drawn uniformly *with replacement* from the population with
``numpy.random.default_rng(seed)`` (for ``image_image``: ``i`` uniform, ``j`` uniform among the
other ``n − 1``; for ``unpaired_image_text``: ``c`` uniform, ``i`` uniform among the ``n_img − 1``
images other than ``g(c)``), so the same inputs and seed give the same rows.

**Exact mean and standard deviation from sums** (whatever is sampled). With ``S = Σ_i x̂_i``,
``G = Σ_i x̂_i x̂_iᵀ`` (d × d) and ``q_p = Σ_i ‖x̂_i‖^p`` of one modality (n rows),

* ``Σ_{i≠j} x̂_i·x̂_j = ‖S‖² − q_2`` and ``Σ_{i≠j} (x̂_i·x̂_j)² = ‖G‖_F² − q_4``, so over the
  ``n(n − 1)`` ordered (equivalently the ``n(n−1)/2`` unordered) pairs
  ``mean = (‖S‖² − q_2) / (n(n − 1))`` and ``E[c²] = (‖G‖_F² − q_4) / (n(n − 1))``;
* across modalities, with the paired terms ``P_1 = Σ_c t̂_c·x̂_{g(c)}``, ``P_2 = Σ_c (t̂_c·x̂_{g(c)})²``:
  ``Σ_{c, i≠g(c)} t̂_c·x̂_i = S_T·S_I − P_1`` and ``Σ (t̂_c·x̂_i)² = ⟨G_T, G_I⟩_F − P_2`` over
  ``n_T n_I − n_T`` pairs;

``std = √(E[c²] − mean²)`` (population). :func:`cosine_moments` computes them; on arrays
:func:`cosine_distributions` uses them for every population (``moments_exact`` in the summary),
and the measure stage passes the sums of *every* vector of a streamed run (its moment pass), so the
mean and std are over the whole run while the histogram and quantiles come from the sample.
``sampled`` says only whether the histogram, quantiles, min and max are from sampled pairs.

Every cosine is binned into a fine histogram of ``bins · 200`` equal bins over ``[−1, 1]``
(values are clipped into the range; 1.0 falls in the last bin). The reported histogram merges
them into ``bins`` bins; mean and (population) standard deviation are exact sums over the
enumerated or sampled pairs; the quantile ``q`` is read off the fine histogram (linear
interpolation inside the bin where the cumulative count reaches ``q·n``), so it is within one
fine bin width ``2 / (bins · 200)`` (1e-4 for 100 bins) of the inverse empirical CDF
``min{x : F(x) ≥ q}`` (numpy's ``method="inverted_cdf"``).
"""

from __future__ import annotations

import numba
import numpy as np
import polars as pl

from clipgeo.core.arrays import check_modalities, normalize_rows, resolve_index, row_blocks
from clipgeo.geometry.gap_estimators import mean_cos_from_unit_sum

__all__ = ["COSINE_KINDS", "QUANTILES", "CosineSums", "cosine_distributions", "cosine_moments", "cosine_sums",
           "paired_cosine_sums"]

COSINE_KINDS = ("paired_image_text", "unpaired_image_text", "image_image", "text_text")
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_REFINE = 200


class _Accumulator:
    """Streaming fine histogram + exact sums of cosine values."""

    def __init__(self, bins: int):
        self.bins = bins
        self.fine = bins * _REFINE
        self.counts = np.zeros(self.fine, dtype=np.int64)
        self.n = 0
        self.s1 = 0.0
        self.s2 = 0.0
        self.lo = np.inf
        self.hi = -np.inf

    def add(self, v: np.ndarray) -> None:
        """Bin the values (clipped into [−1, 1]) and add them to the sums: one pass of
        :func:`_bin_values` over them, in float64, whatever their float dtype."""
        v = np.ascontiguousarray(v).ravel()
        if v.size == 0:
            return
        if v.dtype not in (np.float32, np.float64):
            v = v.astype(np.float64)
        s1, s2, lo, hi = _bin_values(v, self.counts, self.fine / 2.0)
        self.n += v.size
        self.s1 += s1
        self.s2 += s2
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, hi)

    def quantile(self, q: float) -> float:
        cum = np.cumsum(self.counts)
        target = q * self.n
        k = int(np.searchsorted(cum, target, side="left"))
        k = min(k, self.fine - 1)
        before = cum[k - 1] if k > 0 else 0
        inside = self.counts[k]
        frac = (target - before) / inside if inside > 0 else 0.0
        width = 2.0 / self.fine
        return float(np.clip(-1.0 + (k + frac) * width, self.lo, self.hi))

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        edges = np.linspace(-1.0, 1.0, self.bins + 1)
        return edges, self.counts.reshape(self.bins, _REFINE).sum(axis=1)

    def summary(self) -> dict[str, float]:
        if self.n == 0:
            out = {"mean": np.nan, "std": np.nan, "min": np.nan, "max": np.nan}
            out.update({_qname(q): np.nan for q in QUANTILES})
            return out
        mean = self.s1 / self.n
        var = max(self.s2 / self.n - mean * mean, 0.0)
        out = {"mean": mean, "std": float(np.sqrt(var)), "min": self.lo, "max": self.hi}
        out.update({_qname(q): self.quantile(q) for q in QUANTILES})
        return out


@numba.njit(nogil=True, cache=True)
def _bin_values(v, counts, half):  # pragma: no cover - numba
    """``x = clip(float64(v_i), −1, 1)`` into fine bin ``min(⌊(x + 1)·half⌋, len(counts) − 1)``;
    returns ``(Σ x, Σ x², min x, max x)``: what numpy's clip / bincount / sum / dot / min / max
    made of the values in six passes, in one (the sums in row order, not pairwise)."""
    last = counts.shape[0] - 1
    s1 = 0.0
    s2 = 0.0
    lo = np.inf
    hi = -np.inf
    for i in range(v.shape[0]):
        x = np.float64(v[i])
        x = min(max(x, -1.0), 1.0)
        k = min(np.int64((x + 1.0) * half), last)
        counts[k] += 1
        s1 += x
        s2 += x * x
        lo = min(lo, x)
        hi = max(hi, x)
    return s1, s2, lo, hi


class CosineSums:
    """One modality's sums for :func:`cosine_moments`: ``n``, ``S = Σ x̂``, ``G = Σ x̂ x̂ᵀ``,
    ``q2 = Σ ‖x̂‖²`` and ``q4 = Σ ‖x̂‖⁴`` (``q4 = q2`` up to rounding for unit rows)."""

    def __init__(self, n: int, s: np.ndarray, g: np.ndarray, q2: float, q4: float | None = None) -> None:
        self.n, self.s, self.g, self.q2 = int(n), np.asarray(s, np.float64), np.asarray(g, np.float64), float(q2)
        self.q4 = self.q2 if q4 is None else float(q4)

    @classmethod
    def of(cls, rows: np.ndarray, block: int = 8192) -> "CosineSums":
        """The sums of ``x̂ = x/‖x‖`` over the rows ``x`` (normalised here, block by block, in float64)."""
        d = rows.shape[1]
        s, g, q2, q4 = np.zeros(d), np.zeros((d, d)), 0.0, 0.0
        for sl in row_blocks(rows.shape[0], block):
            u = normalize_rows(rows[sl], "vectors")
            s += u.sum(axis=0)
            g += u.T @ u
            sq = np.einsum("ij,ij->i", u, u)
            q2 += float(sq.sum())
            q4 += float(sq @ sq)
        return cls(rows.shape[0], s, g, q2, q4)

    @classmethod
    def from_scatter(cls, n: int, mean: np.ndarray, scatter: np.ndarray, q2: float) -> "CosineSums":
        """From streamed moments of the unit vectors: ``G = M2 + n μ μᵀ``, ``S = n μ``."""
        mean = np.asarray(mean, np.float64)
        return cls(n, n * mean, np.asarray(scatter, np.float64) + n * np.outer(mean, mean), q2)


def cosine_sums(img: np.ndarray, txt: np.ndarray, txt_image_index: np.ndarray
                ) -> tuple[CosineSums, CosineSums, tuple[float, float, int]]:
    """:class:`CosineSums` of both modalities and the paired terms ``(P_1, P_2, n_pairs)``, in
    float64 from the rows ``img`` / ``txt`` (normalised here; caption ``c`` describes image
    ``txt_image_index[c]``). Rows must be non-zero (the callers validated them)."""
    return CosineSums.of(img), CosineSums.of(txt), paired_cosine_sums(img, txt, txt_image_index)


def paired_cosine_sums(img: np.ndarray, txt: np.ndarray, txt_image_index: np.ndarray) -> tuple[float, float, int]:
    """The paired terms ``(P_1, P_2, n_pairs)`` of :func:`cosine_moments`: ``P_1 = Σ_c t̂_c·x̂_{g(c)}``,
    ``P_2 = Σ_c (t̂_c·x̂_{g(c)})²`` over every caption ``c``, in float64 (rows normalised here)."""
    p1 = p2 = 0.0
    for sl in row_blocks(txt.shape[0], 8192):
        c = np.einsum("ij,ij->i", normalize_rows(txt[sl], "txt"), normalize_rows(img[txt_image_index[sl]], "img"))
        p1 += float(c.sum())
        p2 += float(c @ c)
    return p1, p2, int(txt.shape[0])


def cosine_moments(img: CosineSums, txt: CosineSums, paired: tuple[float, float, int] | None
                   ) -> dict[str, tuple[float, float, int]]:
    """Exact ``(mean, std, population)`` of ``image_image``, ``text_text`` and (when the paired
    terms are given) ``unpaired_image_text`` and ``paired_image_text`` from the sums (module doc).

    >>> rng = np.random.default_rng(0)
    >>> u = rng.normal(size=(50, 4)); u /= np.linalg.norm(u, axis=1, keepdims=True)
    >>> t = rng.normal(size=(50, 4)); t /= np.linalg.norm(t, axis=1, keepdims=True)
    >>> m = cosine_moments(*cosine_sums(u, t, np.arange(50)))
    >>> c = u @ u.T; off = c[~np.eye(50, dtype=bool)]
    >>> bool(abs(m["image_image"][0] - off.mean()) < 1e-12 and abs(m["image_image"][1] - off.std()) < 1e-12)
    True
    """
    out: dict[str, tuple[float, float, int]] = {}
    nan = float("nan")

    def finish(mean: float, s2: float, pop: int) -> tuple[float, float, int]:
        if pop <= 0:
            return nan, nan, 0
        return float(mean), float(np.sqrt(max(s2 / pop - mean * mean, 0.0))), int(pop)

    for kind, m in (("image_image", img), ("text_text", txt)):
        pop = m.n * (m.n - 1)   # ordered pairs; the mean and std equal those over the unordered ones
        mean = mean_cos_from_unit_sum(m.s, m.n, m.q2) if pop > 0 else nan   # the one definition of it
        mean, std, _ = finish(mean, float(np.sum(m.g * m.g)) - m.q4, pop)
        out[kind] = (mean, std, pop // 2)
    if paired is not None:
        p1, p2, n_pairs = paired
        pop = txt.n * img.n - n_pairs
        out["unpaired_image_text"] = finish((float(txt.s @ img.s) - p1) / pop if pop > 0 else nan,
                                            float(np.sum(txt.g * img.g)) - p2, pop)
        out["paired_image_text"] = finish(p1 / n_pairs if n_pairs > 0 else nan, p2, n_pairs)
    return out


def _qname(q: float) -> str:
    return f"q{round(q * 100):02d}"


def _exact_cross(a: np.ndarray, b: np.ndarray, acc: _Accumulator, block: int,
                 own: np.ndarray | None = None) -> None:
    """All ``a_i · b_j``; with ``own`` (row i of a -> excluded column of b) those are skipped."""
    for qs in row_blocks(a.shape[0], block):
        for gs in row_blocks(b.shape[0], block):
            s = a[qs] @ b[gs].T
            if own is None:
                acc.add(s)
                continue
            o = own[qs]
            hit = (o >= gs.start) & (o < gs.stop)
            if not hit.any():
                acc.add(s)
                continue
            mask = np.ones(s.shape, dtype=bool)
            mask[np.flatnonzero(hit), o[hit] - gs.start] = False
            acc.add(s[mask])


def _exact_within(a: np.ndarray, acc: _Accumulator, block: int) -> None:
    """All ``a_i · a_j`` with ``i < j`` (upper triangles of the diagonal tiles)."""
    for qs in row_blocks(a.shape[0], block):
        for gs in row_blocks(a.shape[0], block):
            if gs.start < qs.start:
                continue
            s = a[qs] @ a[gs].T
            if gs.start == qs.start:
                iu = np.triu_indices(s.shape[0], k=1, m=s.shape[1])
                acc.add(s[iu])
            else:
                acc.add(s)


def _sampled(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray,
             acc: _Accumulator, block: int) -> None:
    """``a[ia[p]] · b[ib[p]]`` for the sampled pairs, accumulated in float64 by one kernel that
    reads the two rows in place (no gathered copies of them), ``block`` pairs at a time, the
    blocks spread over two :class:`~clipgeo.streaming.threads.Lanes` (the kernel releases the
    GIL); each pair's value is the kernel's whatever the lane, and they are binned in order."""
    from clipgeo.streaming.threads import Lanes

    out = np.empty(ia.shape[0])
    spans = list(row_blocks(ia.shape[0], block))
    with Lanes(2 if len(spans) > 1 else 1) as lanes:
        lanes.map(lambda sl: _pair_dots(a, b, ia[sl], ib[sl], out[sl]), spans)
    acc.add(out)


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _pair_dots(a, b, ia, ib, out):
    for p in range(ia.shape[0]):
        i, j = ia[p], ib[p]
        s = 0.0
        for k in range(a.shape[1]):
            s += np.float64(a[i, k]) * np.float64(b[j, k])
        out[p] = s


def cosine_distributions(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    *,
    bins: int = 100,
    max_exact_pairs: int = 50_000_000,
    n_sample: int = 1_000_000,
    seed: int = 0,
    block: int = 2048,
    dtype: type = np.float32,
    exact_moments: dict[str, tuple[float, float, int]] | None = None,
    sums: tuple[CosineSums, CosineSums] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Histograms and summaries of the four cosine populations (definitions in the module doc).

    Returns ``(histogram, summary)``:

    * ``histogram``: ``bins`` rows per kind — ``kind, bin_lo, bin_hi, count, density`` with
      ``density = count / (n_pairs · (bin_hi − bin_lo))`` (integrates to 1 over [−1, 1]);
    * ``summary``: one row per kind — ``kind, n_pairs`` (pairs measured), ``population`` (pairs
      in the population), ``sampled`` (True when estimated from ``n_sample`` random pairs),
      ``mean, std, min, max, q01, q05, q25, q50, q75, q95, q99``, ``moments_exact`` (mean and
      std are exact over ``moments_population`` pairs: :func:`cosine_moments`).

    ``exact_moments``: ``{kind: (mean, std, population)}`` over a larger set than the arrays
    given (the whole run, from its streamed sums); a kind it lacks gets the exact moments of the
    arrays given (:func:`cosine_sums`). ``sums``: the arrays' own :class:`CosineSums` (image,
    text) when already known (the measure stage's moment pass over a run the arrays are all of);
    then only the paired terms are computed here (:func:`paired_cosine_sums`), not two d × d products.

    Scores are computed in ``dtype`` (float32: cosine error ~1e-7, far below the bin width).
    A population with no pairs (a single image) gets zero counts and NaN summaries.
    Raises ``ValueError`` for NaN/inf or zero vectors, mismatched dimensions or a bad index.

    Parameters
    ----------
    img : array-like, shape (n_img, d)
        Image vectors (raw; normalised here).
    txt : array-like, shape (n_txt, d)
        Text vectors.
    txt_image_index : array-like of int, shape (n_txt,), optional
        ``g(c)``, the image row of each caption; ``None``: row-aligned pairs.
    bins : int
        Bins of the reported histogram over ``[−1, 1]``.
    max_exact_pairs : int
        Largest population enumerated exactly; larger ones are sampled.
    n_sample : int
        Pairs drawn (with replacement) from a sampled population.
    seed : int
        Seed of the sampling.
    block : int
        Rows per tile of the exact enumeration.
    dtype : numpy dtype
        Dtype of the block scores.

    Returns
    -------
    histogram : polars.DataFrame
        ``4 · bins`` rows; ``count`` int64, the rest float64.
    summary : polars.DataFrame
        4 rows, one per kind; ``n_pairs`` / ``population`` int64, ``sampled`` bool, the rest float64.

    Examples
    --------
    Orthogonal unit vectors, each caption equal to its image: paired cosines are 1, every other
    cosine is 0, and the populations are small enough to be enumerated exactly:

    >>> import numpy as np
    >>> hist, summary = cosine_distributions(np.eye(4), 3.0 * np.eye(4), bins=10)
    >>> summary.select("kind", "n_pairs", "sampled", "mean", "std").rows()
    [('paired_image_text', 4, False, 1.0, 0.0), ('unpaired_image_text', 12, False, 0.0, 0.0),
     ('image_image', 6, False, 0.0, 0.0), ('text_text', 6, False, 0.0, 0.0)]
    >>> hist.shape
    (40, 5)
    """
    img, txt = check_modalities(img, txt, min_rows=1)
    n_img, n_txt = img.shape[0], txt.shape[0]
    idx = resolve_index(txt_image_index, n_txt, n_img)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if n_sample < 1 or max_exact_pairs < 0:
        raise ValueError("n_sample must be >= 1 and max_exact_pairs >= 0")
    imgn = normalize_rows(img, "img", dtype)
    txtn = normalize_rows(txt, "txt", dtype)
    rng = np.random.default_rng(seed)

    accs: dict[str, _Accumulator] = {k: _Accumulator(bins) for k in COSINE_KINDS}
    population: dict[str, int] = {}
    sampled: dict[str, bool] = {}

    # paired: exact, row-wise in float64
    for sl in row_blocks(n_txt):
        accs["paired_image_text"].add(
            np.einsum("ij,ij->i", txtn[sl].astype(np.float64), imgn[idx[sl]].astype(np.float64))
        )
    population["paired_image_text"] = n_txt
    sampled["paired_image_text"] = False

    # unpaired image-text
    pop = n_txt * n_img - n_txt
    population["unpaired_image_text"] = pop
    sampled["unpaired_image_text"] = pop > max_exact_pairs
    if pop > 0:
        if pop <= max_exact_pairs:
            _exact_cross(txtn, imgn, accs["unpaired_image_text"], block, own=idx)
        else:
            c = rng.integers(0, n_txt, n_sample)
            i = rng.integers(0, n_img - 1, n_sample)
            i += i >= idx[c]
            _sampled(txtn, imgn, c, i, accs["unpaired_image_text"], block * 8)

    for kind, x in (("image_image", imgn), ("text_text", txtn)):
        n = x.shape[0]
        pop = n * (n - 1) // 2
        population[kind] = pop
        sampled[kind] = pop > max_exact_pairs
        if pop == 0:
            continue
        if pop <= max_exact_pairs:
            _exact_within(x, accs[kind], block)
        else:
            a = rng.integers(0, n, n_sample)
            b = rng.integers(0, n - 1, n_sample)
            b += b >= a
            _sampled(x, x, a, b, accs[kind], block * 8)

    moments = dict(exact_moments or {})
    if any(k not in moments for k in COSINE_KINDS):   # the arrays' own exact sums for the kinds not given
        own = (*sums, paired_cosine_sums(img, txt, idx)) if sums is not None else cosine_sums(img, txt, idx)
        moments = {**cosine_moments(*own), **moments}
    hist_parts = []
    rows = []
    for kind in COSINE_KINDS:
        acc = accs[kind]
        edges, counts = acc.histogram()
        width = np.diff(edges)
        dens = counts / (acc.n * width) if acc.n else np.zeros_like(width)
        hist_parts.append(
            pl.DataFrame(
                {
                    "kind": [kind] * bins,
                    "bin_lo": edges[:-1],
                    "bin_hi": edges[1:],
                    "count": counts.astype(np.int64),
                    "density": dens,
                }
            )
        )
        rows.append(
            {
                "kind": kind,
                "n_pairs": acc.n,
                "population": population[kind],
                "sampled": sampled[kind],
                **acc.summary(),
            }
        )
        if kind in moments and moments[kind][2] > 0:
            rows[-1].update(mean=moments[kind][0], std=moments[kind][1], moments_exact=True,
                            moments_population=moments[kind][2])
        else:
            rows[-1].update(moments_exact=not sampled[kind], moments_population=population[kind])
    return pl.concat(hist_parts), pl.DataFrame(rows)
