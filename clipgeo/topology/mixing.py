"""How mixed the two modalities are among each point's nearest neighbours (the number behind Figs. 4, 5, 7).

For the points ``P = {x̂_1 … x̂_{n_I}} ∪ {t̂_1 … t̂_{n_T}}`` with modality labels ``m(p)`` and
``N_k(p)`` the ``k`` nearest *other* points of ``p``::

    share(p) = #{q ∈ N_k(p) : m(q) ≠ m(p)} / k

* original space: cosine similarity on the L2-normalised vectors, exact (blocked: a
  ``query_block × gallery_block`` tile of scores at a time, never N × N);
* 2-D layout: great-circle distance on the UMAP sphere (computed as the chord distance between
  the ``(x, y, z)`` points, which orders neighbours identically), or Euclidean distance in the
  plane for a planar layout; exact, with a k-d tree.

Reference values: with modalities far apart every neighbour has the point's own modality and
``share = 0``. With the two modalities drawn from one distribution the neighbours' labels are
exchangeable, so ``E[share(p)] = n_other / (N − 1)`` (``n_other`` = size of the other modality,
``N = n_I + n_T``): 0.5 for ``n_I = n_T`` large. The summary reports these expected values and the
*mixing ratio* ``mean share / expected share`` (≈ 0 separated, ≈ 1 mixed as well as chance).
Ties among equally distant neighbours are broken arbitrarily.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.spatial import cKDTree

from clipgeo.core.arrays import check_matrix, check_modalities, normalize_rows, row_blocks

__all__ = [
    "knn_cosine",
    "knn_euclidean",
    "mixing_share",
    "modality_mixing",
]


def knn_cosine(
    x: np.ndarray,
    k: int,
    *,
    queries: np.ndarray | None = None,
    exclude_self: bool = True,
    query_block: int = 1024,
    gallery_block: int = 16384,
    dtype: type = np.float32,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine similarity, blocked.

    ``x`` is the gallery (``n × d``); ``queries`` default to ``x`` itself, in which case
    ``exclude_self`` drops each point from its own list. Both sides are L2-normalised (unless
    ``normalize=False``: the rows are then taken as already normalised). Scores ``q̂ · x̂`` are
    computed in ``dtype`` tile by tile (``query_block × gallery_block``), keeping a running top-k.

    Returns ``(indices (n_q, k) int64, cosines (n_q, k) float64)``, sorted by decreasing cosine.
    """
    x = check_matrix(x, "x", min_rows=1)
    same = queries is None
    q = x if same else check_matrix(queries, "queries", min_rows=1)
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"mismatched dimensions: queries d={q.shape[1]}, gallery d={x.shape[1]}")
    n = x.shape[0]
    avail = n - 1 if (same and exclude_self) else n
    if not 1 <= k <= avail:
        raise ValueError(f"k must be in [1, {avail}] for a gallery of {n} points, got {k}")
    xn = normalize_rows(x, "x", dtype) if normalize else np.asarray(x, dtype=dtype)
    qn = xn if same else (normalize_rows(q, "queries", dtype) if normalize else np.asarray(q, dtype=dtype))
    nq = qn.shape[0]
    out_i = np.empty((nq, k), dtype=np.int64)
    out_s = np.empty((nq, k), dtype=np.float64)
    for qs in row_blocks(nq, query_block):
        m = qs.stop - qs.start
        best_s = np.full((m, k), -np.inf, dtype=np.float64)
        best_i = np.full((m, k), -1, dtype=np.int64)
        for gs in row_blocks(n, gallery_block):
            s = qn[qs] @ xn[gs].T  # in dtype; only the selected scores are widened
            if same and exclude_self:
                lo, hi = max(qs.start, gs.start), min(qs.stop, gs.stop)
                if lo < hi:
                    r = np.arange(lo, hi)
                    s[r - qs.start, r - gs.start] = -np.inf
            kk = min(k, s.shape[1])
            if kk < s.shape[1]:
                np.negative(s, out=s)
                part = np.argpartition(s, kk - 1, axis=1)[:, :kk]
                np.negative(s, out=s)
            else:
                part = np.broadcast_to(np.arange(s.shape[1]), (m, s.shape[1]))
            picked = np.take_along_axis(s, part, axis=1).astype(np.float64)
            cand_s = np.concatenate([best_s, picked], axis=1)
            cand_i = np.concatenate([best_i, part + gs.start], axis=1)
            top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(cand_s, top, axis=1)
            best_i = np.take_along_axis(cand_i, top, axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        out_s[qs] = np.take_along_axis(best_s, order, axis=1)
        out_i[qs] = np.take_along_axis(best_i, order, axis=1)
    return out_i, out_s


def knn_euclidean(coords: np.ndarray, k: int) -> np.ndarray:
    """Exact k nearest *other* points by Euclidean distance (k-d tree); ``(n, k)`` int64 indices.

    For points on the unit sphere given as ``(x, y, z)`` the chord distance is a monotone function
    of the great-circle distance, so these are also the great-circle neighbours.
    """
    c = check_matrix(coords, "coords", min_rows=2)
    n = c.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} points, got {k}")
    _, nb = cKDTree(c).query(c, k=k + 1)
    nb = np.asarray(nb, dtype=np.int64).reshape(n, k + 1)
    own = nb == np.arange(n)[:, None]
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):  # drop self (not always in column 0 when points coincide)
        row = nb[i][~own[i]]
        out[i] = row[:k]
    return out


def mixing_share(neighbors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``share(p) = mean_{q ∈ neighbors[p]} [labels[q] ≠ labels[p]]`` for every row ``p``."""
    nb = np.asarray(neighbors)
    lab = np.asarray(labels)
    if nb.ndim != 2 or nb.shape[0] != lab.shape[0]:
        raise ValueError(f"neighbors: expected shape ({lab.shape[0]}, k), got {nb.shape}")
    return np.mean(lab[nb] != lab[:, None], axis=1)


def layout_coords(layout, n_img: int, n_txt: int) -> np.ndarray:
    """Coordinates of a layout's points ordered as [images 0..n_img−1; texts 0..n_txt−1].

    Parameters
    ----------
    layout : polars.DataFrame or array_like of shape (n_img + n_txt, k)
        A frame with ``modality`` (``image`` / ``text``) and ``item_index`` columns and either
        ``x, y, z`` (used when present and complete) or ``x2d, y2d`` (as
        :func:`clipgeo.topology.umap_layout.umap_layout` writes), each item exactly once; or
        the coordinates themselves, images then texts.
    n_img, n_txt : int
        Images and texts laid out.

    Returns
    -------
    numpy.ndarray of shape (n_img + n_txt, k), float64 (a frame) or as given (an array)

    Raises
    ------
    ValueError
        When columns are missing, an item is missing or repeated, or the row count is wrong.

    Examples
    --------
    >>> frame = pl.DataFrame({"modality": ["text", "image"], "item_index": [0, 0],
    ...                       "x2d": [3.0, 1.0], "y2d": [4.0, 2.0]})
    >>> layout_coords(frame, 1, 1).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    if isinstance(layout, pl.DataFrame):
        need = {"modality", "item_index"}
        if not need <= set(layout.columns):
            raise ValueError(f"layout: needs columns {sorted(need)}, has {layout.columns}")
        use_xyz = {"x", "y", "z"} <= set(layout.columns) and layout["x"].null_count() == 0
        cols = ["x", "y", "z"] if use_xyz else ["x2d", "y2d"]
        out = np.full((n_img + n_txt, len(cols)), np.nan)
        mod = layout["modality"].to_numpy()
        item = layout["item_index"].to_numpy().astype(np.int64)
        vals = layout.select(cols).to_numpy().astype(np.float64)
        for name, off, n in (("image", 0, n_img), ("text", n_img, n_txt)):
            sel = mod == name
            if sel.sum() != n or not np.array_equal(np.sort(item[sel]), np.arange(n)):
                raise ValueError(
                    f"layout: expected {name} items 0..{n - 1} exactly once, got {int(sel.sum())} rows"
                )
            out[off + item[sel]] = vals[sel]
        return out
    arr = check_matrix(layout, "layout", min_rows=2)
    if arr.shape[0] != n_img + n_txt:
        raise ValueError(
            f"layout: expected {n_img + n_txt} rows (images then texts), got {arr.shape[0]}"
        )
    return arr


def modality_mixing(
    img: np.ndarray,
    txt: np.ndarray,
    layout: pl.DataFrame | np.ndarray | None = None,
    *,
    k: int = 15,
    query_block: int = 1024,
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Share of other-modality points among each point's ``k`` nearest neighbours.

    ``img``/``txt``: the vectors that were laid out (e.g. the first N pairs). ``layout``: the
    rows of :func:`clipgeo.topology.umap_layout.umap_layout` for exactly these points (the sphere
    ``x, y, z`` are used when present, else ``x2d, y2d``), or an array of coordinates ordered
    images then texts; ``None`` skips the layout.

    Returns ``(points, summary)``. ``points``: ``modality, item_index, share_original`` and,
    with a layout, ``share_layout``. ``summary``: ``k, n_img, n_txt``, ``expected_share_image =
    n_txt/(N−1)``, ``expected_share_text = n_img/(N−1)``, and for each space ``s`` in
    (``original``, ``layout``): ``mean_share_<s>_image``, ``mean_share_<s>_text``,
    ``mean_share_<s>`` (over all points) and ``mixing_ratio_<s>`` (= mean over points of
    share / its expected value).

    Parameters
    ----------
    img : array-like, shape (n_img, d)
        Image vectors (raw; normalised here).
    txt : array-like, shape (n_txt, d)
        Text vectors.
    layout : polars.DataFrame or array of shape (n_img + n_txt, 2 or 3), optional
        The 2-D layout of the same points (see above).
    k : int
        Neighbours per point, in ``[1, n_img + n_txt − 1]``.
    query_block : int
        Query rows per block of the exact cosine kNN.

    Returns
    -------
    points : polars.DataFrame
        ``n_img + n_txt`` rows: ``modality`` str, ``item_index`` int64, ``share_*`` float64.
    summary : dict of str to float

    Examples
    --------
    Two tight clouds on opposite sides of the sphere: every neighbour has the point's own
    modality, so the shares and the mixing ratio are 0 (chance would be ``20/39``):

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = 0.1 * rng.normal(size=(20, 4)) + [1.0, 0.0, 0.0, 0.0]
    >>> txt = 0.1 * rng.normal(size=(20, 4)) - [1.0, 0.0, 0.0, 0.0]
    >>> points, summary = modality_mixing(img, txt, k=5)
    >>> summary["mean_share_original"], summary["mixing_ratio_original"]
    (0.0, 0.0)
    >>> round(summary["expected_share_image"], 4)
    0.5128
    >>> points.columns
    ['modality', 'item_index', 'share_original']
    """
    img, txt = check_modalities(img, txt, min_rows=1)
    n_img, n_txt = img.shape[0], txt.shape[0]
    N = n_img + n_txt
    if not 1 <= k <= N - 1:
        raise ValueError(f"k must be in [1, {N - 1}] for {N} points, got {k}")
    labels = np.concatenate([np.zeros(n_img, np.int8), np.ones(n_txt, np.int8)])
    joint = np.concatenate(
        [normalize_rows(img, "img", np.float32), normalize_rows(txt, "txt", np.float32)]
    )
    nb, _ = knn_cosine(joint, k, normalize=False, query_block=query_block)
    shares = {"original": mixing_share(nb, labels)}
    if layout is not None:
        coords = layout_coords(layout, n_img, n_txt)
        shares["layout"] = mixing_share(knn_euclidean(coords, k), labels)

    exp = np.where(labels == 0, n_txt / (N - 1), n_img / (N - 1))
    summary: dict[str, float] = {
        "k": float(k),
        "n_img": float(n_img),
        "n_txt": float(n_txt),
        "expected_share_image": n_txt / (N - 1),
        "expected_share_text": n_img / (N - 1),
    }
    cols = {
        "modality": np.where(labels == 0, "image", "text"),
        "item_index": np.concatenate([np.arange(n_img), np.arange(n_txt)]).astype(np.int64),
    }
    for space, sh in shares.items():
        cols[f"share_{space}"] = sh
        summary[f"mean_share_{space}_image"] = float(sh[:n_img].mean())
        summary[f"mean_share_{space}_text"] = float(sh[n_img:].mean())
        summary[f"mean_share_{space}"] = float(sh.mean())
        summary[f"mixing_ratio_{space}"] = float(np.mean(sh / exp)) if np.all(exp > 0) else float("nan")
    return pl.DataFrame(cols), summary
