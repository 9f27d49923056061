"""Clusters of the layout, their local dimension and their retrieval accuracy (Topological Perspectives, Figs. 13–15).

**Clusters.** HDBSCAN (the ``hdbscan`` package, or scikit-learn's) on the unit-sphere points
``(x, y, z)`` of a haversine UMAP layout (:func:`clipgeo.topology.umap_layout.umap_layout`) with
the Euclidean (chord) metric — the chord ``2 sin(δ/2)`` is a monotone function of the
great-circle distance δ, so neighbour orders and the minimum spanning tree are those of the
sphere — or on ``(x2d, y2d)`` for a planar layout. Label −1 is noise. Default
``min_cluster_size = max(10, round(0.005 · n_points))`` (50 for 5,000 pairs).

**Local dimension.** For a cluster c and a scope (its image members, its text members, or both
— "joint"), let ``V`` be the L2-normalised member vectors. The *spectrum* is the singular values
``σ_1 ≥ … ≥ σ_K`` of ``V`` centred by its own mean (via the smaller Gram matrix,
:func:`centred_singular_values`; ``K = min(|V| − 1, d)`` can be non-zero; a
cluster with ``|V| ≤ d`` is *rank-limited* and says so). Raw spectra of clusters of different
sizes are not comparable (a smaller sample has fewer non-zero values and a different noise
profile), so the *area under the log singular-value curve* is computed on a common footing:

    AUC = mean over R subsamples of  (1/K_m) Σ_{k=1..K_m} log10(max(σ_k / σ_1, 1e-8))

where each subsample draws ``m`` members without replacement (``m`` = ``sample_size``, the
same for every cluster; ``K_m = min(m − 1, d)``), is centred by its own mean, and ``σ`` are its
singular values. Normalising σ by σ_1 removes the cluster's scale and averaging over the index
(i.e. the area with the index rescaled to [0, 1]) removes the count; the fixed ``m`` makes the
sampling bias identical for all clusters. AUC ≤ 0; it is 0 for a perfectly isotropic sample and
more negative the faster the spectrum decays, i.e. the *higher the AUC, the higher the local
dimension*. The effective rank (Roy & Vetterli, σ-entropy form ``p_k = σ_k/Σσ``) of the same
subsamples is reported too, as ``erank_sigma_entropy_*``. By
default ``m`` is the member count of the smallest cluster that has at least ``min_points``
members in that scope, capped at ``d + 1``; pass ``sample_size`` to fix it across runs.

**Per-cluster top-1.** With ``t2i_rank`` / ``i2t_rank`` the 0-based ranks of
:func:`clipgeo.retrieval.retrieval_ranks` (a caption's own image among all images; an image's
best own caption among all captions), a member image is a hit when ``i2t_rank = 0`` and a member
caption when ``t2i_rank = 0``: ``top1_i2t`` / ``top1_t2i`` are the hit rates of the cluster's
images / captions and ``top1`` that of all its members.

**Correlation.** Pearson and Spearman (scipy) between the chosen AUC and the chosen accuracy
across the clusters where both are defined, with their count. Fewer than
``MIN_CORRELATION_POINTS`` (5) such clusters, or a constant column, gives NaN and a message
instead of an exception: a correlation over a handful of points means nothing.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import polars as pl
from scipy import stats
from threadpoolctl import threadpool_limits

from clipgeo.core.arrays import check_modalities, normalize_rows
from clipgeo.retrieval import retrieval_ranks
from clipgeo.core.stats import centred_eigenvalues, effective_rank

__all__ = [
    "cluster_local_dimension",
    "centred_singular_values",
    "cluster_points",
    "default_min_cluster_size",
    "hdbscan_labels",
    "local_dimension_auc",
]

log = logging.getLogger(__name__)

SCOPES = ("image", "text", "joint")
#: Fewest clusters over which a correlation is reported (below it: NaN and a message).
MIN_CORRELATION_POINTS = 5
_REL_FLOOR = 1e-8


def default_min_cluster_size(n_points: int) -> int:
    """``max(10, round(0.005 · n_points))``."""
    return max(10, int(round(0.005 * n_points)))


def hdbscan_labels(
    coords: np.ndarray,
    *,
    min_cluster_size: int | None = None,
    min_samples: int | None = None,
    backend: str = "hdbscan",
) -> np.ndarray:
    """HDBSCAN labels (−1 = noise) of the rows of ``coords`` with the Euclidean metric.

    ``backend``: ``"hdbscan"`` (the hdbscan package) or ``"sklearn"``
    (``sklearn.cluster.HDBSCAN``); both use excess-of-mass cluster selection.
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 2:
        raise ValueError(f"coords: expected an (n >= 2, dim) array, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("coords: contains NaN or infinite values")
    mcs = default_min_cluster_size(c.shape[0]) if min_cluster_size is None else int(min_cluster_size)
    if mcs < 2:
        raise ValueError(f"min_cluster_size must be >= 2, got {mcs}")
    if c.shape[0] < mcs:
        log.warning("hdbscan: %d points < min_cluster_size=%d: everything is noise", c.shape[0], mcs)
        return np.full(c.shape[0], -1, dtype=np.int64)
    if backend == "hdbscan":
        import hdbscan

        model = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=min_samples, metric="euclidean")
    elif backend == "sklearn":
        from sklearn.cluster import HDBSCAN

        model = HDBSCAN(min_cluster_size=mcs, min_samples=min_samples, metric="euclidean", copy=True)
    else:
        raise ValueError(f"backend must be 'hdbscan' or 'sklearn', got {backend!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return np.asarray(model.fit_predict(c), dtype=np.int64)


def cluster_points(
    layout: pl.DataFrame,
    *,
    min_cluster_size: int | None = None,
    min_samples: int | None = None,
    backend: str = "hdbscan",
) -> pl.DataFrame:
    """HDBSCAN on a layout frame: its ``x, y, z`` when present (sphere), else ``x2d, y2d``.

    Returns the layout's ``modality, item_index, row_index`` with a ``cluster`` column
    (int64, −1 = noise). An all-noise result logs a warning.

    Parameters
    ----------
    layout : polars.DataFrame
        A :func:`clipgeo.topology.umap_layout.umap_layout` frame, or any frame with
        ``modality, item_index`` and ``x, y, z`` or ``x2d, y2d`` (float) columns.
    min_cluster_size : int, optional
        HDBSCAN's smallest cluster (default :func:`default_min_cluster_size`).
    min_samples : int, optional
        HDBSCAN's core-distance neighbour count (default: ``min_cluster_size``).
    backend : str
        ``"hdbscan"`` or ``"sklearn"`` (:func:`hdbscan_labels`).

    Returns
    -------
    polars.DataFrame
        One row per layout row: ``modality``, ``item_index`` (and ``row_index`` when present),
        ``cluster`` int64.

    Examples
    --------
    Two tight blobs five units apart in the plane are two clusters:

    >>> import numpy as np, polars as pl
    >>> rng = np.random.default_rng(0)
    >>> xy = np.concatenate([0.1 * rng.normal(size=(20, 2)), 0.1 * rng.normal(size=(20, 2)) + 5.0])
    >>> layout = pl.DataFrame({"modality": ["image"] * 20 + ["text"] * 20,
    ...                        "item_index": list(range(20)) * 2, "x2d": xy[:, 0], "y2d": xy[:, 1]})
    >>> c = cluster_points(layout, min_cluster_size=5)
    >>> c.group_by("modality").agg(pl.col("cluster").unique()).sort("modality").rows()
    [('image', [0]), ('text', [1])]
    """
    need = {"modality", "item_index"}
    if not need <= set(layout.columns):
        raise ValueError(f"layout: needs columns {sorted(need)}, has {layout.columns}")
    sphere = {"x", "y", "z"} <= set(layout.columns) and layout["x"].null_count() == 0
    cols = ["x", "y", "z"] if sphere else ["x2d", "y2d"]
    labels = hdbscan_labels(
        layout.select(cols).to_numpy(), min_cluster_size=min_cluster_size,
        min_samples=min_samples, backend=backend,
    )
    if np.all(labels < 0):
        log.warning("cluster_points: HDBSCAN found no cluster: all %d points are noise", labels.size)
    keep = [c for c in ("modality", "item_index", "row_index") if c in layout.columns]
    return layout.select(keep).with_columns(pl.Series("cluster", labels, dtype=pl.Int64))


def centred_singular_values(v: np.ndarray) -> np.ndarray:
    """Singular values (descending) of ``v`` centred by its mean, the ``min(n − 1, d)`` that can
    be non-zero: ``σ_k = √(n λ_k)`` with λ from :func:`clipgeo.core.stats.centred_eigenvalues` (the
    shared covariance primitive, through the smaller Gram matrix)."""
    v = np.asarray(v, dtype=np.float64)
    return np.sqrt(v.shape[0] * centred_eigenvalues(v))


def local_dimension_auc(
    v: np.ndarray,
    sample_size: int,
    *,
    n_repeats: int = 5,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """``(AUC, effective rank)`` of the normalised rows ``v`` on ``n_repeats`` subsamples of
    ``sample_size`` rows (definition in the module doc); one subsample when ``len(v) ==
    sample_size``. Raises ``ValueError`` when ``len(v) < sample_size`` or ``sample_size < 3``."""
    n, d = v.shape
    m = int(sample_size)
    if m < 3:
        raise ValueError(f"sample_size must be >= 3, got {m}")
    if n < m:
        raise ValueError(f"{n} vectors < sample_size={m}")
    rng = np.random.default_rng(0) if rng is None else rng
    reps = 1 if n == m else int(n_repeats)
    K = min(m - 1, d)
    aucs, eranks = [], []
    for _ in range(reps):
        sub = v if n == m else v[rng.choice(n, size=m, replace=False)]
        s = centred_singular_values(sub)[:K]
        if s[0] <= 0:
            aucs.append(np.log10(_REL_FLOOR))
            eranks.append(0.0)
            continue
        rel = np.maximum(s / s[0], _REL_FLOOR)
        aucs.append(float(np.mean(np.log10(rel))))
        eranks.append(effective_rank(s))  # σ-entropy form (p ∝ σ)
    return float(np.mean(aucs)), float(np.mean(eranks))


def _labels_from(points, n: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(points, pl.DataFrame):
        need = {"modality", "item_index", "cluster"}
        if not need <= set(points.columns):
            raise ValueError(f"clusters: needs columns {sorted(need)}, has {points.columns}")
        out = []
        for name in ("image", "text"):
            sub = points.filter(pl.col("modality") == name)
            lab = np.full(n, -1, dtype=np.int64)
            idx = sub["item_index"].to_numpy().astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"clusters: {name} item_index out of range [0, {n})")
            lab[idx] = sub["cluster"].to_numpy()
            out.append(lab)
        return out[0], out[1]
    li, lt = points
    li = np.asarray(li, dtype=np.int64)
    lt = np.asarray(lt, dtype=np.int64)
    if li.shape != (n,) or lt.shape != (n,):
        raise ValueError(f"clusters: expected two label arrays of shape ({n},), got {li.shape}, {lt.shape}")
    return li, lt


_SUMMARY_SCHEMA = {
    "cluster": pl.Int64, "n_points": pl.Int64, "n_images": pl.Int64, "n_texts": pl.Int64,
    "sample_size": pl.Int64,
    "auc_image": pl.Float64, "auc_text": pl.Float64, "auc_joint": pl.Float64,
    "erank_sigma_entropy_image": pl.Float64, "erank_sigma_entropy_text": pl.Float64,
    "erank_sigma_entropy_joint": pl.Float64,
    "top1_i2t": pl.Float64, "top1_t2i": pl.Float64, "top1": pl.Float64,
    "status": pl.Utf8, "message": pl.Utf8,
}
_SPECTRA_SCHEMA = {
    "cluster": pl.Int64, "scope": pl.Utf8, "index": pl.Int64, "index_frac": pl.Float64,
    "sigma": pl.Float64, "sigma_rel": pl.Float64, "log10_sigma_rel": pl.Float64,
}


def cluster_local_dimension(
    img: np.ndarray,
    txt: np.ndarray,
    clusters,
    *,
    t2i_ranks: np.ndarray | None = None,
    i2t_ranks: np.ndarray | None = None,
    sample_size: int | None = None,
    min_points: int = 10,
    n_repeats: int = 5,
    seed: int = 0,
    dimension_scope: str = "joint",
    accuracy: str = "top1",
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per-cluster spectra, local dimension and top-1 retrieval, and their correlation (Figs. 13–15).

    ``img``, ``txt``: the vectors of the laid-out pairs (row i of each is pair i, e.g. from
    :func:`clipgeo.topology.umap_layout.first_pairs`). ``clusters``: the frame of
    :func:`cluster_points` (``modality, item_index, cluster``) or a tuple ``(labels_img,
    labels_txt)`` of per-pair labels (−1 = noise). ``t2i_ranks`` / ``i2t_ranks``: per pair, the
    caption's / image's 0-based rank; by default :func:`clipgeo.retrieval.retrieval_ranks` over
    these pairs (gallery = all of them; pass ranks from the full dataset, indexed by the pairs'
    rows, to use the whole gallery). ``dimension_scope`` (image / text / joint) and ``accuracy``
    (top1 / top1_i2t / top1_t2i) choose the correlated columns.

    Returns ``(summary, spectra, correlation)``:

    * ``summary``: one row per cluster (noise excluded): ``cluster, n_points, n_images,
      n_texts, sample_size, auc_image, auc_text, auc_joint, erank_sigma_entropy_image,
      erank_sigma_entropy_text, erank_sigma_entropy_joint, top1_i2t, top1_t2i, top1, status,
      message`` (``erank_sigma_entropy_*``: Roy & Vetterli's effective rank with ``p ∝ σ``, the
      singular values of the subsamples). ``status`` is ``ok``, or a
      ``;``-joined list of ``single_modality`` (no image or no text member: that scope's columns
      are null), ``too_small`` (fewer than ``max(min_points, sample_size)`` members in the
      correlated scope: AUC null, excluded from the correlation), ``rank_limited`` (at most d
      members: the full spectrum has at most n − 1 non-zero values); ``message`` spells it out.
    * ``spectra``: the full (not subsampled) spectrum of every cluster and scope with at least
      2 members: ``cluster, scope, index, index_frac`` (index / (K − 1)), ``sigma, sigma_rel,
      log10_sigma_rel`` (floored at 1e-8) — the curves of Figs. 13–14.
    * ``correlation``: one row: ``dimension_scope, accuracy, n_clusters, n_clusters_used,
      n_noise_points, noise_fraction, sample_size, pearson_r, pearson_p, spearman_rho,
      spearman_p, message``.

    Bad input never raises once the arrays themselves are valid: all-noise labels give an empty
    summary and a correlation row saying so (and a logged warning).

    Parameters
    ----------
    img : array-like, shape (n, d)
        Image vectors of the laid-out pairs (raw; normalised here).
    txt : array-like, shape (n, d)
        Text vectors, row ``i`` the caption of image ``i``.
    clusters : polars.DataFrame or (array of shape (n,), array of shape (n,))
        The labels (see above), int.
    t2i_ranks, i2t_ranks : array-like of int, shape (n,), optional
        Per-pair 0-based retrieval ranks (default: computed over these pairs).
    sample_size : int, optional
        ``m``, the members per subsample (default: see the module doc).
    min_points : int
        Fewest members of a scope for its AUC.
    n_repeats : int
        ``R``, the subsamples averaged per cluster and scope.
    seed : int
        Seed of the subsamples.
    dimension_scope : str
        ``"image"``, ``"text"`` or ``"joint"``: whose AUC is correlated.
    accuracy : str
        ``"top1"``, ``"top1_i2t"`` or ``"top1_t2i"``: which accuracy is correlated.

    Returns
    -------
    summary, spectra, correlation : polars.DataFrame
        As above (float64 measures, int64 counts, str ``status`` / ``message``).

    Examples
    --------
    A cluster near a 2-D patch of an 8-D space has a lower local dimension (more negative AUC)
    than an isotropic one; two clusters are too few for a correlation, which says so:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> flat = np.zeros((20, 8))
    >>> flat[:, 0], flat[:, 1:3] = 1.0, 0.3 * rng.normal(size=(20, 2))
    >>> img = np.concatenate([flat, rng.normal(size=(20, 8))])
    >>> txt = img + 0.01 * rng.normal(size=img.shape)
    >>> labels = np.repeat([0, 1], 20)
    >>> summary, spectra, corr = cluster_local_dimension(img, txt, (labels, labels))
    >>> summary.select("cluster", "n_points", "status").rows()
    [(0, 40, 'ok'), (1, 40, 'ok')]
    >>> auc = summary["auc_joint"].to_list()
    >>> [round(a, 1) for a in auc], auc[0] < auc[1]
    ([-1.6, -0.7], True)
    >>> corr["message"][0]
    '2 cluster(s) with both auc_joint and top1 defined: a correlation needs at least 5'
    """
    img, txt = check_modalities(img, txt, paired=True, min_rows=1)
    if dimension_scope not in SCOPES:
        raise ValueError(f"dimension_scope must be one of {SCOPES}, got {dimension_scope!r}")
    if accuracy not in ("top1", "top1_i2t", "top1_t2i"):
        raise ValueError(f"accuracy must be top1, top1_i2t or top1_t2i, got {accuracy!r}")
    n, d = img.shape
    li, lt = _labels_from(clusters, n)
    if t2i_ranks is None or i2t_ranks is None:
        if n >= 2:
            t2i, i2t = retrieval_ranks(img, txt)
        else:
            t2i = i2t = np.zeros(n, dtype=np.int64)
    else:
        t2i = np.asarray(t2i_ranks)
        i2t = np.asarray(i2t_ranks)
        if t2i.shape != (n,) or i2t.shape != (n,):
            raise ValueError(f"ranks: expected two arrays of shape ({n},), got {t2i.shape}, {i2t.shape}")
    imn = normalize_rows(img, "img")
    txn = normalize_rows(txt, "txt")

    ids = np.unique(np.concatenate([li, lt]))
    ids = ids[ids >= 0]
    n_noise = int(np.sum(li < 0) + np.sum(lt < 0))

    members = {c: (np.flatnonzero(li == c), np.flatnonzero(lt == c)) for c in ids}

    def scope_vectors(c: int, scope: str) -> np.ndarray:
        ii, tt = members[c]
        if scope == "image":
            return imn[ii]
        if scope == "text":
            return txn[tt]
        return np.concatenate([imn[ii], txn[tt]])

    if sample_size is not None and sample_size < 3:
        raise ValueError(f"sample_size must be >= 3, got {sample_size}")
    # common subsample size per scope
    sizes: dict[str, int] = {}
    for scope in SCOPES:
        counts = [len(scope_vectors(c, scope)) for c in ids]
        eligible = [k for k in counts if k >= max(min_points, 3)]
        if sample_size is not None:
            sizes[scope] = int(sample_size)
        elif eligible:
            sizes[scope] = int(min(min(eligible), d + 1))
        else:
            sizes[scope] = 0

    rows = []
    spec_parts = []
    # many small (≤ (d+1)²) eigenproblems: BLAS threads only add overhead, and on a shared
    # 2-core machine spinning threads made this loop ~15x slower (bench_topology.py)
    with threadpool_limits(limits=1, user_api="blas"):
        for c in ids:
            ii, tt = members[c]
            row: dict[str, object] = {
                "cluster": int(c), "n_points": int(ii.size + tt.size), "n_images": int(ii.size),
                "n_texts": int(tt.size), "sample_size": sizes[dimension_scope] or None,
            }
            status: list[str] = []
            msgs: list[str] = []
            if ii.size == 0 or tt.size == 0:
                status.append("single_modality")
                msgs.append(f"no {'image' if ii.size == 0 else 'text'} members")
            for si, scope in enumerate(SCOPES):
                v = scope_vectors(c, scope)
                row[f"auc_{scope}"] = None
                row[f"erank_sigma_entropy_{scope}"] = None
                if v.shape[0] >= 2:
                    s = centred_singular_values(v)
                    rel = s / s[0] if s[0] > 0 else np.zeros_like(s)
                    K = s.size
                    spec_parts.append(pl.DataFrame({
                        "cluster": np.full(K, c, dtype=np.int64), "scope": [scope] * K,
                        "index": np.arange(K, dtype=np.int64),
                        "index_frac": np.arange(K) / max(K - 1, 1),
                        "sigma": s, "sigma_rel": rel,
                        "log10_sigma_rel": np.log10(np.maximum(rel, _REL_FLOOR)),
                    }, schema=_SPECTRA_SCHEMA))
                m = sizes[scope]
                if m >= 3 and v.shape[0] >= max(m, min_points):
                    rng = np.random.default_rng([seed, int(c), si])
                    auc, er = local_dimension_auc(v, m, n_repeats=n_repeats, rng=rng)
                    row[f"auc_{scope}"] = auc
                    row[f"erank_sigma_entropy_{scope}"] = er
                elif scope == dimension_scope:
                    status.append("too_small")
                    msgs.append(
                        f"{v.shape[0]} {scope} member(s) < max(min_points={min_points}, "
                        f"sample_size={m}): no comparable local dimension"
                    )
            n_dim = row["n_points"] if dimension_scope == "joint" else (
                ii.size if dimension_scope == "image" else tt.size)
            if 2 <= n_dim <= d:
                status.append("rank_limited")
                msgs.append(f"{n_dim} member(s) <= d={d}: at most {n_dim - 1} non-zero singular values")
            row["top1_i2t"] = float(np.mean(i2t[ii] == 0)) if ii.size else None
            row["top1_t2i"] = float(np.mean(t2i[tt] == 0)) if tt.size else None
            hits = np.sum(i2t[ii] == 0) + np.sum(t2i[tt] == 0)
            row["top1"] = float(hits / (ii.size + tt.size))
            row["status"] = ";".join(status) if status else "ok"
            row["message"] = "; ".join(msgs)
            rows.append(row)

    summary = pl.DataFrame(rows, schema=_SUMMARY_SCHEMA)
    spectra = pl.concat(spec_parts) if spec_parts else pl.DataFrame(schema=_SPECTRA_SCHEMA)
    corr = _correlation(summary, dimension_scope, accuracy, n_noise, 2 * n, sizes[dimension_scope])
    return summary, spectra, corr


def _correlation(summary: pl.DataFrame, scope: str, accuracy: str, n_noise: int, n_points: int,
                 sample_size: int) -> pl.DataFrame:
    row: dict[str, object] = {
        "dimension_scope": scope, "accuracy": accuracy, "n_clusters": summary.height,
        "n_clusters_used": 0, "n_noise_points": n_noise,
        "noise_fraction": n_noise / n_points if n_points else float("nan"),
        "sample_size": sample_size or None,
        "pearson_r": float("nan"), "pearson_p": float("nan"),
        "spearman_rho": float("nan"), "spearman_p": float("nan"), "message": "",
    }
    if summary.height == 0:
        row["message"] = f"no clusters: all {n_points} points are noise"
        log.warning("cluster_local_dimension: %s", row["message"])
        return pl.DataFrame([row])
    x = summary[f"auc_{scope}"].to_numpy().astype(np.float64)
    y = summary[accuracy].to_numpy().astype(np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    row["n_clusters_used"] = int(ok.sum())
    if ok.sum() < MIN_CORRELATION_POINTS:
        row["message"] = (
            f"{int(ok.sum())} cluster(s) with both auc_{scope} and {accuracy} defined: "
            f"a correlation needs at least {MIN_CORRELATION_POINTS}"
        )
    elif np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        which = f"auc_{scope}" if np.ptp(x[ok]) == 0 else accuracy
        row["message"] = f"{which} is constant across clusters: correlation undefined"
    else:
        pr = stats.pearsonr(x[ok], y[ok])
        sr = stats.spearmanr(x[ok], y[ok])
        row.update(pearson_r=float(pr.statistic), pearson_p=float(pr.pvalue),
                   spearman_rho=float(sr.statistic), spearman_p=float(sr.pvalue), message="ok")
    if row["message"] != "ok":
        log.warning("cluster_local_dimension: %s", row["message"])
    return pl.DataFrame([row])
