"""UMAP layouts of the joint embedding (Topological Perspectives, Figs. 4, 5, 7, 16, 17) and paired lines (Figs. 6, 8).

**Layout.** The first ``N`` pairs ``(x_i, t_i)`` are stacked as ``[x̂_1 … x̂_N; t̂_1 … t̂_N]``
(L2-normalised) and embedded with UMAP (``metric='cosine'``, ``output_metric='haversine'`` by
default, fixed ``random_state``). The k-nearest-neighbour graph is computed *exactly* here
(blocked cosine, :func:`clipgeo.topology.mixing.knn_cosine`) and handed to UMAP as
``precomputed_knn``, which skips pynndescent (its approximate search and its numba compilation).

**Sphere coordinates.** UMAP's haversine layout optimiser (``umap.distances.haversine_grad``)
treats the first output coordinate as the *polar angle* θ (colatitude: it uses
``cos(θ + π/2) = −sin θ``) and the second as the longitude φ, and neither is wrapped into range.
The point on the unit sphere is therefore::

    x = sin θ cos φ,   y = sin θ sin φ,   z = cos θ

(the conversion in UMAP's own documentation), whose great-circle distances are exactly the
distances the optimiser minimised (checked in the tests). ``lat = arcsin z`` and
``lon = atan2(y, x)`` are reported wrapped into ``[−π/2, π/2] × (−π, π]`` (radians).

**Planar projection (``x2d, y2d``).** Equirectangular, in degrees, after rotating the sphere so
that the mean direction of all points lies at ``(lat, lon) = (0, 0)`` (the rotation that takes
the normalised mean of ``(x, y, z)`` to ``(1, 0, 0)`` along the great circle between them; the
identity when the mean is ~0). This keeps the bulk of the points away from the seam at ±180° and
from the poles, where the projection distorts most: ``x2d = lon'``, ``y2d = lat'`` (degrees).
For ``output_metric='euclidean'`` the layout is already planar: ``x2d, y2d`` are UMAP's
coordinates and the sphere columns are null.

**Engine.** ``engine='umap'`` runs ``umap.UMAP`` unchanged (with the exact kNN above).
``engine='numba'`` (the default; haversine only) runs the same algorithm with two pieces
computed here: the fuzzy graph (:func:`fuzzy_graph`, a serial copy of umap's
``smooth_knn_dist`` + ``compute_membership_strengths`` + fuzzy union, equal to umap's to float32
rounding — tested) and the SGD (:func:`_haversine_sgd`: umap's generic-metric epoch loop with
``move_other``, negative sampling with umap's Tausworthe generator, the linear learning-rate
decay and the ±4 gradient clip, specialised to the haversine distance). The spectral
initialisation, the curve parameters ``(a, b)`` and the epochs-per-sample schedule come from
umap itself (:func:`umap.umap_.simplicial_set_embedding` run for zero epochs, so the initial
layout is umap's). Why: umap's own path compiles ``smooth_knn_dist`` (parallel) and re-jits its
generic epoch function on *every* fit, allocates a gradient array per distance and evaluates
about ten trigonometric functions per distance; here all kernels are compiled once and cached on
disk by numba, every point's half-angle sines and cosines are cached and advanced with a Taylor
rotation when it moves, so a distance and its gradient cost an ``arcsin`` and two square roots.
The distance and gradient equal ``umap.distances.haversine_grad``'s to ~1e-15 (tested). The
random stream of the negative samples differs from umap's, so layouts are not bit-identical to
``engine='umap'``, only equivalent (tested on structure); the speed ratio is printed by
``benchmarks/bench_topology.py`` (about 2× warm on 5,000 pairs, and no ~20 s compilation in a
new process).

**Paired lines.** Planar coordinates of both members of each pair of a sample, on the top-2
principal components of the joint normalised vectors (or of a layout's ``x2d, y2d``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence

import numba
import numpy as np
import polars as pl

from clipgeo.core.arrays import check_index, check_modalities, first_caption_pairs, normalize_rows
from clipgeo.geometry.separability import pca_project
from clipgeo.topology.mixing import knn_cosine, knn_euclidean, layout_coords, mixing_share

__all__ = [
    "LAYOUT_COLUMNS",
    "MIN_UMAP_POINTS",
    "first_pairs",
    "haversine_dist_grad",
    "paired_lines",
    "sphere_coordinates",
    "umap_grid",
    "umap_layout",
]

log = logging.getLogger(__name__)

#: Smallest number of points (2 × pairs) a layout accepts: UMAP's spectral initialisation and
#: its neighbour graph are meaningless below this.
MIN_UMAP_POINTS = 10

LAYOUT_COLUMNS = ("modality", "item_index", "row_index", "lat", "lon", "x", "y", "z", "x2d", "y2d")


# ----------------------------------------------------------------------------- input


def first_pairs(
    img: np.ndarray,
    txt: np.ndarray,
    n_pairs: int,
    txt_image_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n_pairs`` (image, caption) pairs: ``(img_rows, txt_rows, img_idx, txt_idx)``.

    Row-aligned input (``txt_image_index=None``, equal lengths): pair i = (img[i], txt[i]).
    With ``txt_image_index`` (caption -> image row): pair i = (image i, its first caption), for
    the first ``n_pairs`` images that have a caption (:func:`clipgeo.core.arrays.first_caption_pairs`).
    ``n_pairs`` is capped at what exists.
    """
    img, txt = check_modalities(img, txt, min_rows=1)
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if txt_image_index is None:
        if img.shape[0] != txt.shape[0]:
            raise ValueError(
                "txt_image_index is required when img and txt have different lengths "
                f"({img.shape[0]} images, {txt.shape[0]} captions)"
            )
        n = min(n_pairs, img.shape[0])
        rows = np.arange(n, dtype=np.int64)
        return img[:n], txt[:n], rows, rows.copy()
    idx = check_index(txt_image_index, txt.shape[0], img.shape[0])
    img_rows, txt_rows = first_caption_pairs(idx, img.shape[0])
    img_rows, txt_rows = img_rows[:n_pairs], txt_rows[:n_pairs]
    return img[img_rows], txt[txt_rows], img_rows, txt_rows


# ----------------------------------------------------------------------------- sphere


def sphere_coordinates(theta: np.ndarray, phi: np.ndarray) -> dict[str, np.ndarray]:
    """Unit-sphere point and wrapped lat/lon of UMAP haversine output ``(θ, φ)`` (module doc),
    plus the rotated equirectangular projection ``x2d, y2d`` in degrees."""
    theta = np.asarray(theta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    st = np.sin(theta)
    xyz = np.stack([st * np.cos(phi), st * np.sin(phi), np.cos(theta)], axis=1)
    lat = np.arcsin(np.clip(xyz[:, 2], -1.0, 1.0))
    lon = np.arctan2(xyz[:, 1], xyz[:, 0])
    rot = _rotation_to_x(xyz.mean(axis=0))
    r = xyz @ rot.T
    x2d = np.degrees(np.arctan2(r[:, 1], r[:, 0]))
    y2d = np.degrees(np.arcsin(np.clip(r[:, 2], -1.0, 1.0)))
    return {"lat": lat, "lon": lon, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
            "x2d": x2d, "y2d": y2d}


def _rotation_to_x(m: np.ndarray) -> np.ndarray:
    """Rotation matrix taking the direction of ``m`` to ``e_x`` (identity if ``|m| < 1e-9``)."""
    norm = np.linalg.norm(m)
    if norm < 1e-9:
        return np.eye(3)
    a = m / norm
    b = np.array([1.0, 0.0, 0.0])
    v = np.cross(a, b)
    s = np.linalg.norm(v)
    c = float(a @ b)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([-1.0, -1.0, 1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * ((1 - c) / s**2)


# ----------------------------------------------------------------------------- fast SGD


@numba.njit(fastmath=True, cache=True)
def _hav_from_cache(stx, ctx, spx, cpx, sty, cty, spy, cpy):
    """Distance and gradients (w.r.t. x and w.r.t. y) from half-angle sines/cosines."""
    sin_lat = stx * cty - ctx * sty  # sin((θx − θy)/2)
    cos_lat = ctx * cty + stx * sty
    sin_long = spx * cpy - cpx * spy  # sin((φx − φy)/2)
    cos_long = cpx * cpy + spx * spy
    sin_tx = 2.0 * stx * ctx
    sin_ty = 2.0 * sty * cty
    cos_tx = ctx * ctx - stx * stx
    cos_ty = cty * cty - sty * sty
    sl2 = sin_long * sin_long
    a1 = sin_tx * sin_ty * sl2 + sin_lat * sin_lat
    aa = min(max(abs(a1), 0.0), 1.0)
    d = 2.0 * math.asin(math.sqrt(aa))
    inv = 1.0 / (math.sqrt(abs(a1 - 1.0)) * math.sqrt(abs(a1)) + 1e-6)
    g0 = (sin_lat * cos_lat + cos_tx * sin_ty * sl2) * inv
    g1 = (sin_tx * sin_ty * sin_long * cos_long) * inv
    r0 = (-sin_lat * cos_lat + cos_ty * sin_tx * sl2) * inv
    return d, g0, g1, r0, -g1


@numba.njit(fastmath=True, cache=True)
def haversine_dist_grad(x, y):
    """``(d, grad_x)`` of UMAP's haversine layout distance for ``x = (θx, φx)``, ``y = (θy, φy)``:
    ``d = 2 arcsin sqrt(sin²((θx−θy)/2) + sin θx sin θy sin²((φx−φy)/2))`` and
    ``grad_x = ∂d/∂x`` with UMAP's ``+1e-6`` in the denominator (as ``haversine_grad``)."""
    d, g0, g1, _, _ = _hav_from_cache(
        math.sin(0.5 * x[0]), math.cos(0.5 * x[0]), math.sin(0.5 * x[1]), math.cos(0.5 * x[1]),
        math.sin(0.5 * y[0]), math.cos(0.5 * y[0]), math.sin(0.5 * y[1]), math.cos(0.5 * y[1]),
    )
    return d, np.array([g0, g1])


@numba.njit(fastmath=True, cache=True)
def _clip4(v):
    if v > 4.0:
        return 4.0
    if v < -4.0:
        return -4.0
    return v


@numba.njit(cache=True)
def _tau_rand_int(state):
    # umap.utils.tau_rand_int (Tausworthe generator), duplicated so this module's cache is standalone
    state[0] = (((state[0] & 4294967294) << 12) & 0xFFFFFFFF) ^ (
        (((state[0] << 13) & 0xFFFFFFFF) ^ state[0]) >> 19
    )
    state[1] = (((state[1] & 4294967288) << 4) & 0xFFFFFFFF) ^ (
        (((state[1] << 2) & 0xFFFFFFFF) ^ state[1]) >> 25
    )
    state[2] = (((state[2] & 4294967280) << 17) & 0xFFFFFFFF) ^ (
        (((state[2] << 3) & 0xFFFFFFFF) ^ state[2]) >> 11
    )
    v = state[0] ^ state[1] ^ state[2]
    # the int32 cast of umap's "i4(i8[:])" signature
    v = v & 0xFFFFFFFF
    if v >= 2147483648:
        v -= 4294967296
    return v


@numba.njit(fastmath=True, cache=True)
def _set_cache(emb, cache, i):
    cache[i, 0] = math.sin(0.5 * emb[i, 0])
    cache[i, 1] = math.cos(0.5 * emb[i, 0])
    cache[i, 2] = math.sin(0.5 * emb[i, 1])
    cache[i, 3] = math.cos(0.5 * emb[i, 1])


@numba.njit(fastmath=True, cache=True)
def _rotate(cache, i, col, h):
    """Advance the cached half-angle pair ``(sin a, cos a)`` in ``cache[i, col:col+2]`` to
    ``a + h`` with Taylor polynomials of sin h and cos h: to h^9 / h^8 when |h| < 0.25
    (truncation error < 1e-14), else to h^21 / h^20 (|h| ≤ 2 always: the SGD step is clipped to
    ±4·alpha with alpha ≤ 1, and halved; error < 4e-14). The pair's norm drifts by rounding only
    and is restored once per epoch (:func:`_renormalize`)."""
    h2 = h * h
    if abs(h) < 0.25:
        sh = h * (1.0 - h2 / 6.0 * (1.0 - h2 / 20.0 * (1.0 - h2 / 42.0 * (1.0 - h2 / 72.0))))
        ch = 1.0 - h2 / 2.0 * (1.0 - h2 / 12.0 * (1.0 - h2 / 30.0 * (1.0 - h2 / 56.0)))
    else:
        sh = h * (1.0 - h2 / 6.0 * (1.0 - h2 / 20.0 * (1.0 - h2 / 42.0 * (1.0 - h2 / 72.0 * (
            1.0 - h2 / 110.0 * (1.0 - h2 / 156.0 * (1.0 - h2 / 210.0 * (1.0 - h2 / 272.0 * (
                1.0 - h2 / 342.0 * (1.0 - h2 / 420.0))))))))))
        ch = 1.0 - h2 / 2.0 * (1.0 - h2 / 12.0 * (1.0 - h2 / 30.0 * (1.0 - h2 / 56.0 * (
            1.0 - h2 / 90.0 * (1.0 - h2 / 132.0 * (1.0 - h2 / 182.0 * (1.0 - h2 / 240.0 * (
                1.0 - h2 / 306.0 * (1.0 - h2 / 380.0)))))))))
    s = cache[i, col]
    c = cache[i, col + 1]
    cache[i, col] = s * ch + c * sh
    cache[i, col + 1] = c * ch - s * sh


@numba.njit(fastmath=True, cache=True)
def _renormalize(cache):
    for i in range(cache.shape[0]):
        for col in (0, 2):
            r = 1.0 / math.sqrt(cache[i, col] ** 2 + cache[i, col + 1] ** 2)
            cache[i, col] *= r
            cache[i, col + 1] *= r


@numba.njit(fastmath=True, cache=True)
def _move(emb, cache, i, d0, d1):
    emb[i, 0] += d0
    emb[i, 1] += d1
    _rotate(cache, i, 0, 0.5 * d0)
    _rotate(cache, i, 2, 0.5 * d1)


@numba.njit(fastmath=True, cache=True, nogil=True)
def _haversine_sgd(emb, head, tail, n_epochs, n_vertices, epochs_per_sample, a, b,
                   rng_state_per_sample, gamma, initial_alpha, negative_sample_rate):
    """UMAP's generic-metric SGD (``move_other=True``) specialised to the haversine output."""
    n_edges = epochs_per_sample.shape[0]
    epochs_per_negative_sample = epochs_per_sample / negative_sample_rate
    epoch_of_next_negative_sample = epochs_per_negative_sample.copy()
    epoch_of_next_sample = epochs_per_sample.copy()
    cache = np.empty((emb.shape[0], 4))
    for i in range(emb.shape[0]):
        _set_cache(emb, cache, i)
    alpha = initial_alpha
    for n in range(n_epochs):
        for i in range(n_edges):
            if epoch_of_next_sample[i] > n:
                continue
            j = head[i]
            k = tail[i]
            d, g0, g1, r0, r1 = _hav_from_cache(
                cache[j, 0], cache[j, 1], cache[j, 2], cache[j, 3],
                cache[k, 0], cache[k, 1], cache[k, 2], cache[k, 3],
            )
            if d > 0.0:
                w_l = 1.0 / (1.0 + a * d ** (2.0 * b))
            else:
                w_l = 1.0
            gc = 2.0 * b * (w_l - 1.0) / (d + 1e-6)
            _move(emb, cache, j, _clip4(gc * g0) * alpha, _clip4(gc * g1) * alpha)
            _move(emb, cache, k, _clip4(gc * r0) * alpha, _clip4(gc * r1) * alpha)
            epoch_of_next_sample[i] += epochs_per_sample[i]
            n_neg = int((n - epoch_of_next_negative_sample[i]) / epochs_per_negative_sample[i])
            for p in range(n_neg):
                k = _tau_rand_int(rng_state_per_sample[j]) % n_vertices
                d, g0, g1, r0, r1 = _hav_from_cache(
                    cache[j, 0], cache[j, 1], cache[j, 2], cache[j, 3],
                    cache[k, 0], cache[k, 1], cache[k, 2], cache[k, 3],
                )
                if d > 0.0:
                    w_l = 1.0 / (1.0 + a * d ** (2.0 * b))
                elif j == k:
                    continue
                else:
                    w_l = 1.0
                gc = gamma * 2.0 * b * w_l / (d + 1e-6)
                _move(emb, cache, j, _clip4(gc * g0) * alpha, _clip4(gc * g1) * alpha)
            epoch_of_next_negative_sample[i] += n_neg * epochs_per_negative_sample[i]
        _renormalize(cache)
        alpha = initial_alpha * (1.0 - float(n) / float(n_epochs))
    return emb


_FLOAT32_MAX = float(np.finfo(np.float32).max)


@numba.njit(
    locals={"psum": numba.types.float32, "lo": numba.types.float32,
            "mid": numba.types.float32, "hi": numba.types.float32},
    cache=True, nogil=True,
)
def _smooth_knn_dist(distances, k):
    """``umap.umap_.smooth_knn_dist`` (local_connectivity=1, bandwidth=1, 64 iterations),
    serial: per point ``rho`` (first non-zero neighbour distance) and the ``sigma`` with
    ``Σ_{j≥1} exp(−max(0, d_ij − rho_i)/sigma_i) = log2(k)`` (binary search, tolerance 1e-5,
    floored at 1e-3 × the mean neighbour distance)."""
    target = np.log2(k)
    n = distances.shape[0]
    rho = np.zeros(n, dtype=np.float32)
    result = np.zeros(n, dtype=np.float32)
    mean_distances = np.mean(distances)
    for i in range(n):
        lo = 0.0
        hi = _FLOAT32_MAX
        mid = 1.0
        ith = distances[i]
        nz = ith[ith > 0.0]
        if nz.shape[0] >= 1:
            rho[i] = nz[0]
        for it in range(64):
            psum = 0.0
            for j in range(1, distances.shape[1]):
                d = distances[i, j] - rho[i]
                if d > 0:
                    psum += np.exp(-(d / mid))
                else:
                    psum += 1.0
            if np.fabs(psum - target) < 1e-5:
                break
            if psum > target:
                hi = mid
                mid = (lo + hi) / 2.0
            else:
                lo = mid
                if hi >= _FLOAT32_MAX:
                    mid *= 2
                else:
                    mid = (lo + hi) / 2.0
        result[i] = mid
        if rho[i] > 0.0:
            m = np.mean(ith)
            if result[i] < 1e-3 * m:
                result[i] = 1e-3 * m
        else:
            if result[i] < 1e-3 * mean_distances:
                result[i] = 1e-3 * mean_distances
    return result, rho


@numba.njit(locals={"val": numba.types.float32}, cache=True, nogil=True)
def _membership(knn_indices, knn_dists, sigmas, rhos):
    """``umap.umap_.compute_membership_strengths`` (not bipartite): COO rows, cols, values."""
    n, k = knn_indices.shape
    rows = np.zeros(n * k, dtype=np.int32)
    cols = np.zeros(n * k, dtype=np.int32)
    vals = np.zeros(n * k, dtype=np.float32)
    for i in range(n):
        for j in range(k):
            if knn_indices[i, j] == -1:
                continue
            if knn_indices[i, j] == i:
                val = 0.0
            elif knn_dists[i, j] - rhos[i] <= 0.0 or sigmas[i] == 0.0:
                val = 1.0
            else:
                val = np.exp(-((knn_dists[i, j] - rhos[i]) / sigmas[i]))
            rows[i * k + j] = i
            cols[i * k + j] = knn_indices[i, j]
            vals[i * k + j] = val
    return rows, cols, vals


def fuzzy_graph(knn_indices: np.ndarray, knn_dists: np.ndarray, n_neighbors: int):
    """UMAP's fuzzy simplicial set (``umap.umap_.fuzzy_simplicial_set`` with precomputed
    neighbours, ``set_op_mix_ratio=1``, ``local_connectivity=1``, cosine's disconnection distance
    2): ``W + Wᵀ − W∘Wᵀ`` of the membership strengths ``w_ij = exp(−(d_ij − ρ_i)/σ_i)``.
    Returned as a scipy COO matrix (float32)."""
    import scipy.sparse

    ind = np.array(knn_indices, dtype=np.int64)
    dist = np.array(knn_dists, dtype=np.float32)
    far = dist >= 2.0  # umap's DISCONNECTION_DISTANCES["cosine"]
    ind[far] = -1
    dist[far] = np.inf
    n = ind.shape[0]
    sigmas, rhos = _smooth_knn_dist(dist, float(n_neighbors))
    rows, cols, vals = _membership(ind, dist, sigmas, rhos)
    w = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(n, n))
    w.eliminate_zeros()
    wt = w.transpose()
    g = (w + wt - w.multiply(wt)).tocoo()
    g.eliminate_zeros()
    return g


def _fast_haversine_fit(X, knn, n_neighbors, min_dist, seed, n_epochs):
    """UMAP (cosine input, haversine output) with the graph and the SGD computed here (module doc);
    the spectral initialisation and the curve parameters (a, b) come from umap itself."""
    from sklearn.utils import check_random_state
    from umap.umap_ import find_ab_params, make_epochs_per_sample, simplicial_set_embedding

    random_state = check_random_state(seed)
    a, b = find_ab_params(1.0, min_dist)
    graph = fuzzy_graph(knn[0][:, :n_neighbors], knn[1][:, :n_neighbors], n_neighbors)
    graph.sum_duplicates()
    default_epochs = 500 if graph.shape[0] <= 10000 else 200
    n_ep = default_epochs if n_epochs is None else int(n_epochs)
    thr = graph.data.max() / float(n_ep if n_ep > 10 else default_epochs)
    graph.data[graph.data < thr] = 0.0
    graph.eliminate_zeros()
    # Initial layout exactly as umap builds it (spectral + noise, scaled to [0, 10]): its own
    # simplicial_set_embedding run for zero epochs on the pruned graph.
    emb, _ = simplicial_set_embedding(
        X, graph.tocsr(), 2, 1.0, a, b, 1.0, 5, 0, "spectral", random_state, "cosine", {},
        False, {}, False, None, {}, False, False, False, tqdm_kwds={"disable": True},
    )
    emb = np.ascontiguousarray(emb, dtype=np.float64)
    epochs_per_sample = make_epochs_per_sample(graph.data, n_ep)
    rng_state = random_state.randint(np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1,
                                     3).astype(np.int64)
    rng_per = np.full((emb.shape[0], 3), rng_state, dtype=np.int64) + emb[:, 0].copy().view(
        np.int64
    ).reshape(-1, 1)
    _haversine_sgd(
        emb, graph.row.astype(np.int64), graph.col.astype(np.int64), n_ep, graph.shape[1],
        epochs_per_sample.astype(np.float64), float(a), float(b), rng_per, 1.0, 1.0, 5.0,
    )
    return emb


# ----------------------------------------------------------------------------- layouts


def _check_umap_size(n_points: int, n_neighbors: int) -> None:
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors}")
    if n_points < MIN_UMAP_POINTS or n_points <= n_neighbors:
        raise ValueError(
            f"too few points for UMAP: {n_points} points (2 x pairs); a layout needs at least "
            f"{MIN_UMAP_POINTS} points and more points than n_neighbors={n_neighbors}"
        )


def _joint(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [normalize_rows(img, "img", np.float32), normalize_rows(txt, "txt", np.float32)]
    )


def _umap_knn(X: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """UMAP's precomputed_knn convention: self first (distance 0), then the n_neighbors − 1
    nearest others by cosine distance ``1 − cos``."""
    idx, cos = knn_cosine(X, n_neighbors - 1, normalize=False)
    n = X.shape[0]
    ind = np.concatenate([np.arange(n, dtype=np.int64)[:, None], idx], axis=1)
    dist = np.concatenate([np.zeros((n, 1)), np.maximum(1.0 - cos, 0.0)], axis=1)
    return ind.astype(np.int32), dist.astype(np.float32)


def _fit_layout(X, knn, n_neighbors, min_dist, seed, output_metric, n_epochs, engine):
    if engine not in ("numba", "umap"):
        raise ValueError(f"engine must be 'numba' or 'umap', got {engine!r}")
    if engine == "numba" and output_metric == "haversine":
        return _fast_haversine_fit(X, knn, n_neighbors, min_dist, seed, n_epochs)
    import umap

    model = umap.UMAP(
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric="cosine",
        output_metric=output_metric,
        random_state=seed,
        n_epochs=n_epochs,
        n_jobs=1,
        precomputed_knn=(knn[0][:, :n_neighbors], knn[1][:, :n_neighbors]),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precomputed_knn.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*Graph is not fully connected.*")
        return np.asarray(model.fit_transform(X), dtype=np.float64)


def _layout_rows(emb, n, img_rows, txt_rows, output_metric) -> pl.DataFrame:
    cols: dict[str, object] = {
        "modality": ["image"] * n + ["text"] * n,
        "item_index": np.concatenate([np.arange(n), np.arange(n)]).astype(np.int64),
        "row_index": np.concatenate([img_rows, txt_rows]).astype(np.int64),
    }
    if output_metric == "haversine":
        cols.update(sphere_coordinates(emb[:, 0], emb[:, 1]))
    else:
        null = pl.Series([None] * (2 * n), dtype=pl.Float64)
        for c in ("lat", "lon", "x", "y", "z"):
            cols[c] = null
        cols["x2d"] = emb[:, 0]
        cols["y2d"] = emb[:, 1]
    return pl.DataFrame(cols).select(LAYOUT_COLUMNS)


def umap_layout(
    img: np.ndarray,
    txt: np.ndarray,
    n_pairs: int = 5000,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    output_metric: str = "haversine",
    *,
    txt_image_index: np.ndarray | None = None,
    n_epochs: int | None = None,
    engine: str = "numba",
) -> pl.DataFrame:
    """UMAP of the concatenated normalised vectors of the first ``n_pairs`` pairs (module doc).

    ``output_metric``: ``'haversine'`` (sphere, the paper's choice) or ``'euclidean'`` (plane,
    cheaper). ``n_epochs=None`` is UMAP's default (500 up to 10,000 points, else 200).

    Returns one row per point: ``modality`` (image / text), ``item_index`` (pair index
    0..N−1, the same for both members of a pair), ``row_index`` (row in ``img`` / ``txt``),
    ``lat, lon`` (radians, wrapped), ``x, y, z`` (unit sphere), ``x2d, y2d`` (rotated
    equirectangular projection, degrees; UMAP's plane for Euclidean output, where the sphere
    columns are null). Raises ``ValueError`` for too few points (fewer than
    ``MIN_UMAP_POINTS`` or not more than ``n_neighbors``) and for bad vectors.

    Parameters
    ----------
    img : array-like, shape (n_img, d)
        Image vectors (raw; normalised here).
    txt : array-like, shape (n_txt, d)
        Text vectors.
    n_pairs : int
        Pairs laid out (:func:`first_pairs`; capped at what exists).
    n_neighbors : int
        UMAP's neighbour count (the exact cosine kNN).
    min_dist : float
        UMAP's ``min_dist``.
    seed : int
        UMAP's ``random_state``.
    output_metric : str
        ``"haversine"`` or ``"euclidean"``.
    txt_image_index : array-like of int, shape (n_txt,), optional
        The image row of each caption; ``None``: row-aligned pairs.
    n_epochs : int, optional
        SGD epochs.
    engine : str
        ``"numba"`` (default; haversine only) or ``"umap"`` (module doc).

    Returns
    -------
    polars.DataFrame
        ``2 · N`` rows with :data:`LAYOUT_COLUMNS`: ``modality`` str, ``item_index`` /
        ``row_index`` int64, the coordinates float64.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img, txt = rng.normal(size=(30, 8)) + 2.0, rng.normal(size=(30, 8)) - 2.0
    >>> layout = umap_layout(img, txt, n_neighbors=5, n_epochs=50)
    >>> layout.shape, layout["modality"].value_counts(sort=True).rows()
    ((60, 10), [('image', 30), ('text', 30)])
    >>> bool(np.allclose(layout["x"] ** 2 + layout["y"] ** 2 + layout["z"] ** 2, 1.0))   # on the sphere
    True
    """
    if output_metric not in ("haversine", "euclidean"):
        raise ValueError(f"output_metric must be 'haversine' or 'euclidean', got {output_metric!r}")
    im, tx, img_rows, txt_rows = first_pairs(img, txt, n_pairs, txt_image_index)
    n = im.shape[0]
    _check_umap_size(2 * n, n_neighbors)
    X = _joint(im, tx)
    knn = _umap_knn(X, n_neighbors)
    emb = _fit_layout(X, knn, n_neighbors, min_dist, seed, output_metric, n_epochs, engine)
    return _layout_rows(emb, n, img_rows, txt_rows, output_metric)


def umap_grid(
    img: np.ndarray,
    txt: np.ndarray,
    n_neighbors_grid: Sequence[int] = (5, 15, 50, 200),
    min_dist_grid: Sequence[float] = (0.0, 0.1, 0.5, 0.99),
    *,
    n_pairs: int = 5000,
    seed: int = 0,
    output_metric: str = "haversine",
    txt_image_index: np.ndarray | None = None,
    n_epochs: int | None = None,
    engine: str = "numba",
    mixing_k: int = 15,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The hyperparameter grid of Figs. 16–17: one :func:`umap_layout` per
    ``(n_neighbors, min_dist)``, sharing one exact kNN computation (for the largest
    ``n_neighbors``).

    Returns ``(layouts, cells)``: ``layouts`` = the layout rows with ``n_neighbors, min_dist``
    prepended; ``cells`` = one row per grid cell: ``n_neighbors, min_dist, status`` ("ok" or the
    reason it was skipped), ``seconds``, ``mean_share_layout_image, mean_share_layout_text,
    mixing_ratio_layout`` (:func:`clipgeo.topology.mixing.modality_mixing` with ``mixing_k``
    on the layout). A cell with ``n_neighbors`` too large for the data is skipped with a
    logged warning, not an error.
    """
    if output_metric not in ("haversine", "euclidean"):
        raise ValueError(f"output_metric must be 'haversine' or 'euclidean', got {output_metric!r}")
    im, tx, img_rows, txt_rows = first_pairs(img, txt, n_pairs, txt_image_index)
    n = im.shape[0]
    X = _joint(im, tx)
    ok_nn = [k for k in n_neighbors_grid if 2 <= k < 2 * n]
    knn = _umap_knn(X, max(ok_nn)) if ok_nn and 2 * n >= MIN_UMAP_POINTS else None
    layouts = []
    cells = []
    for nn in n_neighbors_grid:
        for md in min_dist_grid:
            cell = {"n_neighbors": int(nn), "min_dist": float(md), "status": "ok", "seconds": None,
                    "mean_share_layout_image": None, "mean_share_layout_text": None,
                    "mixing_ratio_layout": None}
            try:
                _check_umap_size(2 * n, int(nn))
            except ValueError as err:
                log.warning("umap_grid: skipping n_neighbors=%s, min_dist=%s: %s", nn, md, err)
                cell["status"] = f"skipped: {err}"
                cells.append(cell)
                continue
            t0 = time.perf_counter()
            emb = _fit_layout(X, knn, int(nn), float(md), seed, output_metric, n_epochs, engine)
            cell["seconds"] = time.perf_counter() - t0
            rows = _layout_rows(emb, n, img_rows, txt_rows, output_metric)
            _, summ = _layout_mixing_only(rows, n, min(mixing_k, 2 * n - 1))
            cell.update(summ)
            layouts.append(
                rows.with_columns(pl.lit(int(nn)).alias("n_neighbors"), pl.lit(float(md)).alias("min_dist"))
                .select(["n_neighbors", "min_dist", *LAYOUT_COLUMNS])
            )
            cells.append(cell)
    cells_df = pl.DataFrame(
        cells,
        schema={"n_neighbors": pl.Int64, "min_dist": pl.Float64, "status": pl.Utf8,
                "seconds": pl.Float64, "mean_share_layout_image": pl.Float64,
                "mean_share_layout_text": pl.Float64, "mixing_ratio_layout": pl.Float64},
    )
    layouts_df = pl.concat(layouts) if layouts else pl.DataFrame()
    return layouts_df, cells_df


def _layout_mixing_only(rows: pl.DataFrame, n: int, k: int):
    coords = layout_coords(rows, n, n)
    labels = np.concatenate([np.zeros(n, np.int8), np.ones(n, np.int8)])
    sh = mixing_share(knn_euclidean(coords, k), labels)
    exp = n / (2 * n - 1)
    return sh, {
        "mean_share_layout_image": float(sh[:n].mean()),
        "mean_share_layout_text": float(sh[n:].mean()),
        "mixing_ratio_layout": float(sh.mean() / exp),
    }


# ----------------------------------------------------------------------------- paired lines


def paired_lines(
    img: np.ndarray,
    txt: np.ndarray,
    n_lines: int = 500,
    *,
    txt_image_index: np.ndarray | None = None,
    layout: pl.DataFrame | None = None,
    n_fit: int = 5000,
    seed: int = 0,
) -> pl.DataFrame:
    """Planar coordinates of both members of ``n_lines`` pairs (Figs. 6, 8), one row per pair.

    Pairs are those of :func:`first_pairs` (first ``n_fit``); ``n_lines`` of them are drawn
    without replacement with ``numpy.random.default_rng(seed)`` (all when fewer). Plane:

    * ``layout=None``: the top-2 principal components of the joint normalised vectors
      ``[x̂; t̂]`` of the ``n_fit`` pairs (:func:`clipgeo.geometry.separability.pca_project`);
    * a :func:`umap_layout` frame of the same pairs: its ``x2d, y2d``.

    Returns ``pair_id`` (pair index), ``image_x, image_y, text_x, text_y``, ``length`` (the
    line's length in the plane) and ``cosine`` (``x̂·t̂`` in the original space).

    Parameters
    ----------
    img : array-like, shape (n_img, d)
        Image vectors (raw; normalised here).
    txt : array-like, shape (n_txt, d)
        Text vectors.
    n_lines : int
        Pairs drawn for lines.
    txt_image_index : array-like of int, shape (n_txt,), optional
        The image row of each caption; ``None``: row-aligned pairs.
    layout : polars.DataFrame, optional
        A :func:`umap_layout` frame of the same ``n_fit`` pairs.
    n_fit : int
        Pairs the plane is fitted on.
    seed : int
        Seed of the draw.

    Returns
    -------
    polars.DataFrame
        ``min(n_lines, n_fit)`` rows: ``pair_id`` int64, the rest float64.

    Examples
    --------
    A caption that is its image scaled has the same direction: a line of length 0, cosine 1:

    >>> import numpy as np
    >>> img = np.random.default_rng(0).normal(size=(10, 4))
    >>> lines = paired_lines(img, 2.0 * img, n_lines=3)
    >>> lines["length"].round(6).to_list(), lines["cosine"].round(6).to_list()
    ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    """
    im, tx, _, _ = first_pairs(img, txt, n_fit, txt_image_index)
    n = im.shape[0]
    imn = normalize_rows(im, "img")
    txn = normalize_rows(tx, "txt")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(n_lines, n), replace=False))
    if layout is None:
        joint = np.concatenate([imn, txn])
        if joint.shape[0] < 3:
            raise ValueError("paired_lines: need at least 2 pairs for a PCA plane")
        z = pca_project(joint, 2)
        zi, zt = z[:n], z[n:]
    else:
        z = layout_coords(layout.select(["modality", "item_index", "x2d", "y2d"]), n, n)
        zi, zt = z[:n], z[n:]
    a, b = zi[pick], zt[pick]
    return pl.DataFrame(
        {
            "pair_id": pick.astype(np.int64),
            "image_x": a[:, 0],
            "image_y": a[:, 1],
            "text_x": b[:, 0],
            "text_y": b[:, 1],
            "length": np.linalg.norm(a - b, axis=1),
            "cosine": np.einsum("ij,ij->i", imn[pick], txn[pick]),
        }
    )
