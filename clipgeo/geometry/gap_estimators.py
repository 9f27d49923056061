"""Modality-gap estimators of Schrodi et al., "Two Effects, One Trigger" (ICLR 2025), and the
exact within-modality mean cosines of Liang et al. (Fig. 2a).

Definitions as in lmb-freiburg/two-effects-one-trigger, ``analysis/gap_precompute.py``
(``compute_l2i``, ``compute_rmg``, COCO branch; commit ed38130), on L2-normalised vectors
``x̂``, with ``g(c)`` the image of caption ``c`` (P = number of captions):

* **L2I** = ``mean_c ‖x̂_I,g(c) − x̂_T,c‖`` — the mean paired distance, which clipgeo stores as
  ``modality_gap.paired_distance`` (:func:`clipgeo.geometry.gap.modality_gap`); :func:`l2i`
  returns that one definition.
* **RMG** (relative modality gap) = ``m / (m + (d_I + d_T) / 2)`` with
  ``m = (1 − mean_c x̂_I,g(c)·x̂_T,c) / 2`` (floored at 1e-3 as there),
  ``d_I = (1 − mean_{i≠j} x̂_I,i·x̂_I,j) / 2`` over the distinct images and
  ``d_T = (1 − mean_{c≠c'} x̂_T,c·x̂_T,c') / 2`` over all captions (captions of the same image
  included, as their code does: its exclusion mask is built but not applied).

The within-modality means are exact in O(N·d) from the sum of unit vectors ``s = Σ x̂``:
``mean_{i≠j} x̂_i·x̂_j = (‖s‖² − N) / (N (N − 1))``.
"""

from __future__ import annotations

import numpy as np

from clipgeo.core.arrays import check_index, check_modalities, nonzero_row_norms, row_blocks
from clipgeo.geometry.conformity import unit_sum

__all__ = ["mean_cos_from_unit_sum", "mean_pairwise_cos", "relative_modality_gap", "l2i"]


def mean_cos_from_unit_sum(s: np.ndarray, n: int, q2: float | None = None) -> float:
    """The within-modality mean cosine, from the modality's sum of unit vectors: the mean of
    ``x̂_i·x̂_j`` over the ``n (n − 1)`` ordered pairs ``i ≠ j`` is ``(‖s‖² − q2) / (n (n − 1))``.

    The one definition of that mean: :func:`mean_pairwise_cos` (from the rows) and
    :func:`clipgeo.topology.cosines.cosine_moments` (from sums, also streamed ones) return it.

    Parameters
    ----------
    s : ndarray, shape (d,)
        ``Σ_i x̂_i``, in float64.
    n : int
        Rows summed (>= 2).
    q2 : float, optional
        ``Σ_i ‖x̂_i‖²``, the diagonal terms of ``‖s‖²``: ``n`` for unit rows (the default); the
        sum of the rounded squares when ``s`` was summed from rounded unit rows.

    Returns
    -------
    float

    Examples
    --------
    >>> round(mean_cos_from_unit_sum(np.array([1.0, 1.0]), 2), 6)    # (1, 0) and (0, 1)
    0.0
    """
    if n < 2:
        raise ValueError(f"n: the mean over pairs needs at least 2 rows, got {n}")
    s = np.asarray(s, dtype=np.float64)
    return float((s @ s - (n if q2 is None else q2)) / (n * (n - 1)))


def mean_pairwise_cos(x: np.ndarray) -> float:
    """Mean cosine over the ordered pairs ``i ≠ j`` of the rows of ``x``, exactly, in O(N·d):
    ``(‖Σ x̂_i‖² − N) / (N (N − 1))`` (:func:`mean_cos_from_unit_sum`).

    Parameters
    ----------
    x : ndarray, shape (N >= 2, d)
        Vectors (raw or normalised; each row is normalised first).

    Returns
    -------
    float

    Examples
    --------
    >>> round(mean_pairwise_cos(np.array([[1.0, 0], [0, 2.0], [3.0, 3.0]])), 6)
    0.471405
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x: expected an (N >= 2, d) array, got shape {x.shape}")
    return mean_cos_from_unit_sum(*unit_sum(x))


def relative_modality_gap(img: np.ndarray, txt: np.ndarray, txt_image_index: np.ndarray | None = None
                          ) -> dict[str, float]:
    """RMG of Schrodi et al. and its parts (see the module docstring for the formula).

    Parameters
    ----------
    img : ndarray, shape (N_I, d)
        Image vectors (distinct images).
    txt : ndarray, shape (P, d)
        Caption vectors.
    txt_image_index : ndarray of int, shape (P,), optional
        Row of ``img`` of each caption; None: row-aligned pairs (``N_I == P``).

    Returns
    -------
    dict
        ``rmg``, ``matching_distance`` (m), ``image_distance`` (d_I), ``text_distance`` (d_T),
        ``mean_paired_cos``, ``image_mean_pairwise_cos``, ``text_mean_pairwise_cos``,
        ``n_images``, ``n_texts``.

    Examples
    --------
    >>> e = np.eye(4)
    >>> r = relative_modality_gap(e[:2], e[2:])     # orthogonal pairs, orthogonal within
    >>> round(r["rmg"], 6), r["matching_distance"], r["image_distance"]
    (0.5, 0.5, 0.5)
    """
    im, tx = check_modalities(img, txt, paired=txt_image_index is None)
    idx = (np.arange(tx.shape[0]) if txt_image_index is None
           else check_index(txt_image_index, tx.shape[0], im.shape[0]))
    cos_sum = 0.0
    for sl in row_blocks(tx.shape[0]):
        a = np.asarray(im[idx[sl]], dtype=np.float64)
        b = np.asarray(tx[sl], dtype=np.float64)
        cos_sum += float((np.einsum("ij,ij->i", a, b) / (nonzero_row_norms(a, "img") * nonzero_row_norms(b, "txt"))).sum())
    paired = cos_sum / tx.shape[0]
    ci, ct = mean_pairwise_cos(im), mean_pairwise_cos(tx)
    m = 1.0 - (paired + 1.0) / 2.0
    m = m if m > 0 else 1e-3
    di, dt = 1.0 - (ci + 1.0) / 2.0, 1.0 - (ct + 1.0) / 2.0
    return {"rmg": m / (m + (di + dt) / 2.0), "matching_distance": m, "image_distance": di, "text_distance": dt,
            "mean_paired_cos": paired, "image_mean_pairwise_cos": ci, "text_mean_pairwise_cos": ct,
            "n_images": float(im.shape[0]), "n_texts": float(tx.shape[0])}


def l2i(img: np.ndarray, txt: np.ndarray, txt_image_index: np.ndarray | None = None) -> float:
    """L2I of Schrodi et al.: ``mean_c ‖x̂_I,g(c) − x̂_T,c‖`` — clipgeo's ``paired_distance``.

    Examples
    --------
    >>> e = np.eye(4)
    >>> round(l2i(e[:2], e[2:]), 6)          # orthogonal unit vectors: sqrt(2)
    1.414214
    """
    from clipgeo.geometry.gap import modality_gap

    return modality_gap(img, txt, paired=txt_image_index is None, txt_image_index=txt_image_index)["paired_distance"]
