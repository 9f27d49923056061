"""The origin-shift experiment (Double-Ellipsoid paper): is the off-origin placement useful?

Each modality is shifted by a multiple of its own raw mean and re-normalised,

    x ↦ (x − α μ_I) / ||x − α μ_I||,    y ↦ (y − α μ_T) / ||y − α μ_T||,

(α = 0 is the model as trained, α = 1 centres each modality at the origin) and for each α in a
grid we measure, on the shifted unit vectors:

* alignment (Wang & Isola 2020, α=2 exponent): ``E_pairs ||x̂_i − ŷ_i||²`` — exact, over every
  (image, caption) pair;
* uniformity (Wang & Isola, t = 2): ``log E_{i≠j} exp(−t ||x̂_i − x̂_j||²)`` per modality — exact
  over all pairs when a modality has at most ``n_uniformity_vectors`` vectors, else over all
  pairs of that many vectors drawn with a fixed seed (the same vectors for every α);
* the symmetric InfoNCE loss at the model's logit scale, on a subsample of images (each with
  its first caption) taken as one batch;
* top-1 retrieval both ways (:mod:`clipgeo.retrieval`) on the same image subsample with all of
  their captions.

Alignment and uniformity for *all* α come from one pass: ``(x − αμ_I)·(y − αμ_T)`` and the
norms expand into a few per-pair dot products (``x·y``, ``x·μ_I``, ``x·μ_T``, ...), so the
cost is O(N·d) whatever the grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from clipgeo.core.arrays import check_matrix, check_modalities, normalize_rows, resolve_index, row_blocks
from clipgeo.retrieval import retrieval_ranks

__all__ = [
    "DEFAULT_ALPHAS",
    "alignment",
    "best_alpha",
    "info_nce_loss",
    "origin_shift",
    "uniformity_rows",
    "shift_normalize",
    "uniformity",
]

DEFAULT_ALPHAS: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


def logsumexp(a: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """``log Σ exp(a)`` along ``axis``, stabilised by the maximum (lean numpy version)."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out.item() if axis is None else np.squeeze(out, axis=axis)


def shift_normalize(x: np.ndarray, mu: np.ndarray, alpha: float, name: str = "x") -> np.ndarray:
    """``(x − α μ) / ||x − α μ||`` row-wise, float64. A row that lands on the origin raises ValueError."""
    x = check_matrix(x, name, min_rows=1)
    mu = np.asarray(mu, dtype=np.float64)
    if mu.shape != (x.shape[1],):
        raise ValueError(f"{name}: mean has shape {mu.shape}, expected ({x.shape[1]},)")
    return normalize_rows(x - alpha * mu, f"{name} shifted by alpha={alpha}")


def alignment(x: np.ndarray, y: np.ndarray) -> float:
    """Wang & Isola alignment ``mean_i ||x̂_i − ŷ_i||²`` over row-aligned pairs (normalised inside)."""
    x, y = check_modalities(x, y, paired=True, min_rows=1)
    return float(np.mean(np.sum((normalize_rows(x, "x") - normalize_rows(y, "y")) ** 2, axis=1)))


def uniformity_rows(n: int, n_vectors: int | None, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Rows used for uniformity: ``(rows, exact)``.

    All ``n`` rows (``exact=True``) when ``n <= n_vectors`` or ``n_vectors is None``; otherwise
    ``n_vectors`` distinct rows drawn uniformly without replacement with ``seed``. Uniformity
    then averages over *all* pairs ``i < j`` of those rows (a U-statistic on a random subset:
    unbiased for the mean over all pairs of the modality).
    """
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 vectors, got {n}")
    if n_vectors is None or n <= n_vectors:
        return np.arange(n, dtype=np.int64), True
    if n_vectors < 2:
        raise ValueError(f"n_vectors must be at least 2, got {n_vectors}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=n_vectors, replace=False)), False


def _upper_mean_exp(cos: np.ndarray, t: float) -> float:
    """``log mean_{i<j} exp(−t (2 − 2 cos_ij))`` over the strict upper triangle of ``cos``."""
    iu = np.triu_indices(cos.shape[0], 1)
    vals = -t * (2.0 - 2.0 * cos[iu])
    return float(logsumexp(vals) - np.log(vals.size))


def uniformity(x: np.ndarray, *, t: float = 2.0, n_vectors: int | None = 1000, seed: int = 0) -> float:
    """Wang & Isola uniformity ``log mean_{i<j} exp(−t ||x̂_i − x̂_j||²)`` (normalised inside).

    For unit vectors ``||x̂_i − x̂_j||² = 2 − 2 x̂_i·x̂_j``. Exact over all pairs when there are at
    most ``n_vectors`` rows (or ``n_vectors=None``), else over all pairs of ``n_vectors`` rows
    drawn with ``seed`` (:func:`uniformity_rows`; 1000 rows = 499,500 pairs).
    """
    x = check_matrix(x, "x")
    rows, _ = uniformity_rows(x.shape[0], n_vectors, seed)
    u = normalize_rows(x[rows], "x")
    return _upper_mean_exp(u @ u.T, t)


def info_nce_loss(x: np.ndarray, y: np.ndarray, logit_scale: float, *, block: int = 1024) -> float:
    """Symmetric InfoNCE (CLIP) loss of row-aligned pairs taken as one batch.

    With ``L_ij = s · x̂_i · ŷ_j`` (``s = logit_scale``, the *multiplier*, i.e. ``exp`` of
    open_clip's learnable ``logit_scale`` parameter, about 100 for trained CLIP):
    ``loss = ½ [ mean_i (logsumexp_j L_ij − L_ii) + mean_j (logsumexp_i L_ij − L_jj) ]``.
    Computed in row blocks (no N×N matrix); the column log-sum-exp is merged across blocks.
    """
    x, y = check_modalities(x, y, paired=True)
    if not np.isfinite(logit_scale) or logit_scale <= 0:
        raise ValueError(f"logit_scale must be a positive finite multiplier, got {logit_scale}")
    xh, yh = normalize_rows(x, "x"), normalize_rows(y, "y")
    diag = logit_scale * np.einsum("ij,ij->i", xh, yh)
    row_lse = np.empty(x.shape[0])
    col_lse = np.full(x.shape[0], -np.inf)
    for sl in row_blocks(x.shape[0], block):
        logits = logit_scale * (xh[sl] @ yh.T)
        row_lse[sl] = logsumexp(logits, axis=1)
        col_lse = np.logaddexp(col_lse, logsumexp(logits, axis=0))
    return float(0.5 * (np.mean(row_lse - diag) + np.mean(col_lse - diag)))


def _block_mean(x: np.ndarray) -> np.ndarray:
    s = np.zeros(x.shape[1])
    for sl in row_blocks(x.shape[0]):
        s += np.asarray(x[sl], dtype=np.float64).sum(axis=0)
    return s / x.shape[0]


def _shifted_cos(dot, cross, alpha, k, a_stats, b_stats, what):
    """``cos(a − αμ_a, b − αμ_b)`` from per-pair scalars.

    ``dot = a·b``, ``cross = a·μ_b + b·μ_a``, ``k = μ_a·μ_b``, ``a_stats = (||a||², a·μ_a, ||μ_a||²)``
    (same for b): numerator ``dot − α·cross + α²·k``, squared norms ``||a||² − 2α a·μ_a + α²||μ_a||²``.
    """
    na, sa, ma = a_stats
    nb, sb, mb = b_stats
    num = dot - alpha * cross + alpha * alpha * k
    da = na - 2 * alpha * sa + alpha * alpha * ma
    db = nb - 2 * alpha * sb + alpha * alpha * mb
    if np.any(da <= 1e-24 * na) or np.any(db <= 1e-24 * nb):
        raise ValueError(f"{what}: a vector lands on the origin when shifted by alpha={alpha}")
    return num / np.sqrt(da * db)


def origin_shift(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    *,
    logit_scale: float,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    mu_img: np.ndarray | None = None,
    mu_txt: np.ndarray | None = None,
    max_images: int | None = 1000,
    n_uniformity_vectors: int | None = 1000,
    t: float = 2.0,
    seed: int = 0,
    retrieval_dtype: type = np.float32,
) -> pl.DataFrame:
    """The origin-shift experiment: one row per α (definitions in the module docstring).

    ``img (n_img, d)`` and ``txt (n_txt, d)`` are *raw* vectors (arrays or ``np.memmap``: read in
    blocks); ``txt_image_index[c]`` is the image row of caption c (``None``: row-aligned pairs).
    ``mu_img``/``mu_txt`` default to the modality means of the raw vectors. ``logit_scale`` is
    the model's logit multiplier (``model.logit_scale.exp()``).

    Subsampling (stated in every row): InfoNCE and retrieval use ``min(max_images, n_img)``
    images drawn with ``seed`` (``None``: all) — InfoNCE on (image, its first caption) pairs as
    one batch, retrieval against all of those images' captions. Recall@1 depends on the gallery
    size, so compare rows with equal ``n_images_subsample``; 1000 images is the COCO-1k /
    Flickr30k test size. Alignment is exact over all pairs; uniformity as in :func:`uniformity`
    with ``n_vectors = n_uniformity_vectors``.

    Columns: ``alpha, alignment, uniformity_image, uniformity_text, uniformity`` (mean of the
    two), ``infonce, text_to_image_top1, image_to_text_top1, n_pairs, n_images_subsample,
    n_texts_subsample, n_uniformity_vectors_image, n_uniformity_vectors_text, uniformity_exact,
    logit_scale``.

    Parameters
    ----------
    img : array-like, shape (n_img, d)
        Raw image vectors (any float dtype; arrays or ``np.memmap``).
    txt : array-like, shape (n_txt, d)
        Raw text vectors.
    txt_image_index : array-like of int, shape (n_txt,), optional
        The image row of each caption; ``None``: row-aligned pairs.
    logit_scale : float
        The model's logit multiplier (about 100 for trained CLIP).
    alphas : sequence of float
        The shifts α (0: as trained, 1: each modality centred).
    mu_img, mu_txt : array-like of shape (d,), optional
        The means to shift by (default: the raw modality means).
    max_images : int or None
        Images in the InfoNCE / retrieval subsample (``None``: all).
    n_uniformity_vectors : int or None
        Vectors per modality for uniformity (``None``: all pairs, exact).
    t : float
        Uniformity temperature.
    seed : int
        Seed of both subsamples.
    retrieval_dtype : numpy dtype
        Block-score dtype of the retrieval (the ranks are exact whatever it is).

    Returns
    -------
    polars.DataFrame
        One row per α with the columns above (float64 measures, int64 counts).

    Examples
    --------
    One content ``z`` placed at two offsets ``±3 e1``: as trained (α = 0) the pairs are far apart;
    centring each modality (α = 1) makes every pair coincide, so alignment drops to 0 and
    text-to-image top-1 becomes 1:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(40, 8))
    >>> img, txt = z + 3.0 * np.eye(8)[0], z - 3.0 * np.eye(8)[0]
    >>> table = origin_shift(img, txt, logit_scale=100.0, alphas=(0.0, 1.0))
    >>> [round(a, 4) for a in table["alignment"]]
    [2.1839, 0.0]
    >>> table["text_to_image_top1"].to_list()[1], table["n_pairs"].to_list()
    (1.0, [40, 40])
    >>> abs(table["alignment"][0] - alignment(img, txt)) < 1e-12   # α = 0 is the plain alignment
    True
    """
    img, txt = check_modalities(img, txt)
    n_img, n_txt, d = img.shape[0], txt.shape[0], img.shape[1]
    idx = resolve_index(txt_image_index, n_txt, n_img)
    if not np.isfinite(logit_scale) or logit_scale <= 0:
        raise ValueError(f"logit_scale must be a positive finite multiplier, got {logit_scale}")
    alphas = [float(a) for a in alphas]
    if not alphas or not np.all(np.isfinite(alphas)):
        raise ValueError(f"alphas must be a non-empty list of finite numbers, got {alphas}")
    mu_i = _block_mean(img) if mu_img is None else np.asarray(mu_img, dtype=np.float64)
    mu_t = _block_mean(txt) if mu_txt is None else np.asarray(mu_txt, dtype=np.float64)
    for nm, mu in (("mu_img", mu_i), ("mu_txt", mu_t)):
        if mu.shape != (d,) or not np.all(np.isfinite(mu)):
            raise ValueError(f"{nm} must be a finite vector of shape ({d},), got shape {mu.shape}")
    mii, mtt, mit = float(mu_i @ mu_i), float(mu_t @ mu_t), float(mu_i @ mu_t)

    # ---- alignment: per-pair scalars over all (image g(c), caption c) pairs, one pass.
    P = n_txt
    dot = np.empty(P)
    nx, ny = np.empty(P), np.empty(P)
    x_mi, x_mt, y_mi, y_mt = (np.empty(P) for _ in range(4))
    for sl in row_blocks(P):
        xb = np.asarray(img[idx[sl]], dtype=np.float64)
        yb = np.asarray(txt[sl], dtype=np.float64)
        dot[sl] = np.einsum("ij,ij->i", xb, yb)
        nx[sl], ny[sl] = np.einsum("ij,ij->i", xb, xb), np.einsum("ij,ij->i", yb, yb)
        x_mi[sl], x_mt[sl] = xb @ mu_i, xb @ mu_t
        y_mi[sl], y_mt[sl] = yb @ mu_i, yb @ mu_t
    if np.any(nx == 0) or np.any(ny == 0):
        raise ValueError("a zero vector cannot be normalised")

    # ---- uniformity: Gram matrix and per-vector scalars on a fixed set of rows per modality.
    unif_stats = {}
    for name, x, mu, mm in (("image", img, mu_i, mii), ("text", txt, mu_t, mtt)):
        rows_u, exact = uniformity_rows(x.shape[0], n_uniformity_vectors, seed)
        xu = np.asarray(x[rows_u], dtype=np.float64)
        iu = np.triu_indices(rows_u.size, 1)
        sq, dm = np.einsum("ij,ij->i", xu, xu), xu @ mu
        g = (xu @ xu.T)[iu]
        unif_stats[name] = (g, sq[iu[0]], sq[iu[1]], dm[iu[0]], dm[iu[1]], mm, exact, rows_u.size)

    # ---- subsample for InfoNCE and retrieval.
    rng = np.random.default_rng(seed)
    if max_images is None or max_images >= n_img:
        sub = np.arange(n_img)
    else:
        if max_images < 2:
            raise ValueError(f"max_images must be at least 2, got {max_images}")
        sub = np.sort(rng.choice(n_img, size=max_images, replace=False))
    remap = np.full(n_img, -1, dtype=np.int64)
    remap[sub] = np.arange(sub.size)
    cap_rows = np.flatnonzero(remap[idx] >= 0)
    cap_img = remap[idx[cap_rows]]
    first_cap = np.full(sub.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_cap, cap_img, cap_rows)  # lowest caption row per subsampled image
    has_cap = first_cap < n_txt
    if not has_cap.all():
        raise ValueError(
            f"{int((~has_cap).sum())} image(s) have no caption in txt_image_index; "
            "the shift's InfoNCE and image->text retrieval are undefined for them"
        )
    img_sub = np.asarray(img[sub], dtype=np.float64)
    txt_sub = np.asarray(txt[cap_rows], dtype=np.float64)
    txt_first = np.asarray(txt[first_cap], dtype=np.float64)

    rows = []
    for a in alphas:
        cos_pair = _shifted_cos(dot, x_mt + y_mi, a, mit, (nx, x_mi, mii), (ny, y_mt, mtt), "pairs")
        row = {"alpha": a, "alignment": float(np.mean(2.0 - 2.0 * cos_pair))}
        for name, (g, ai, aj, mi, mj, mm, _exact, _m) in unif_stats.items():
            c = _shifted_cos(g, mi + mj, a, mm, (ai, mi, mm), (aj, mj, mm), name)
            vals = -t * (2.0 - 2.0 * c)
            row[f"uniformity_{name}"] = float(logsumexp(vals) - np.log(vals.size))
        row["uniformity"] = 0.5 * (row["uniformity_image"] + row["uniformity_text"])
        xs = normalize_rows(img_sub - a * mu_i, f"img shifted by alpha={a}")
        row["infonce"] = info_nce_loss(xs, normalize_rows(txt_first - a * mu_t, f"txt shifted by alpha={a}"), logit_scale)
        t2i, i2t = retrieval_ranks(
            xs, normalize_rows(txt_sub - a * mu_t, f"txt shifted by alpha={a}"), cap_img, dtype=retrieval_dtype
        )
        row["text_to_image_top1"] = float(np.mean(t2i == 0))
        row["image_to_text_top1"] = float(np.mean(i2t == 0))
        rows.append(row)

    table = pl.DataFrame(rows)
    return table.with_columns(
        pl.lit(P, dtype=pl.Int64).alias("n_pairs"),
        pl.lit(int(sub.size), dtype=pl.Int64).alias("n_images_subsample"),
        pl.lit(int(cap_rows.size), dtype=pl.Int64).alias("n_texts_subsample"),
        pl.lit(int(unif_stats["image"][7]), dtype=pl.Int64).alias("n_uniformity_vectors_image"),
        pl.lit(int(unif_stats["text"][7]), dtype=pl.Int64).alias("n_uniformity_vectors_text"),
        pl.lit(bool(unif_stats["image"][6] and unif_stats["text"][6])).alias("uniformity_exact"),
        pl.lit(float(logit_scale)).alias("logit_scale"),
    )


def best_alpha(table: pl.DataFrame, metric: str = "infonce", *, minimize: bool | None = None) -> float:
    """The α with the best ``metric`` in an :func:`origin_shift` table (lower is better for
    ``infonce``, ``alignment`` and ``uniformity*``; higher for the ``*_top1`` columns)."""
    if metric not in table.columns:
        raise ValueError(f"unknown metric {metric!r}; columns: {table.columns}")
    if minimize is None:
        minimize = not metric.endswith("top1")
    vals = table[metric].to_numpy()
    k = int(np.argmin(vals) if minimize else np.argmax(vals))
    return float(table["alpha"][k])
