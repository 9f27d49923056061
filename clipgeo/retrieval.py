"""Exact cross-modal retrieval: ranks and recall@k on L2-normalised vectors.

Scores are cosine similarities ``s(t, i) = t̂ · î`` (both sides L2-normalised inside these
functions, so raw vectors may be passed). Retrieval is exhaustive (no approximate index). The
score matrix is never materialised: captions are processed in blocks of ``query_block`` rows
against images in blocks of ``gallery_block`` columns, so memory is bounded by one
``query_block x gallery_block`` block whatever the number of vectors.

Conventions (those of CLIP_benchmark, ``clip_benchmark/metrics/zeroshot_retrieval.py``):

* text -> image: a caption's query is a hit at k when *its own image* is among the k
  best-scoring images.
* image -> text: an image's query is a hit at k when *any* of its captions is among the k
  best-scoring captions.

CLIP_benchmark calls the first ``image_retrieval_recall@k`` and the second
``text_retrieval_recall@k``; here they are ``text_to_image_recall@k`` and
``image_to_text_recall@k``.

Ties: a competitor counts against a query only when it scores *strictly* higher than the
correct item by more than ``tie_tol`` (default ``1e-5`` when scoring in float32,
``1e-12`` in float64: the rounding of a blocked matrix product), so ties are resolved in
favour of the correct item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipgeo.geometry._checks import (
    resolve_index,
    check_modalities,
    normalize_rows,
    row_blocks,
)

__all__ = [
    "image_to_text_ranks",
    "recall_at_k",
    "retrieval_metrics",
    "retrieval_ranks",
    "text_to_image_ranks",
]

DEFAULT_QUERY_BLOCK = 1024
DEFAULT_GALLERY_BLOCK = 8192


def _default_tol(dtype: np.dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


def retrieval_ranks(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    *,
    dtype: type = np.float32,
    tie_tol: float | None = None,
    query_block: int = DEFAULT_QUERY_BLOCK,
    gallery_block: int = DEFAULT_GALLERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Both directions' 0-based ranks in one blocked pass over the caption x image scores.

    With ``s(c, i) = t̂_c · î_i``, ``g(c)`` the image of caption ``c`` (``txt_image_index``),
    ``σ_c = s(c, g(c))`` and ``β_i = max_{c: g(c)=i} σ_c``:

    * ``t2i[c] = #{ i : s(c, i) > σ_c + tol }``  (number of images strictly above its own image)
    * ``i2t[i] = #{ c : g(c) != i, s(c, i) > β_i + tol }``  (captions of *other* images strictly
      above the image's best own caption)

    so ``rank < k`` ⇔ hit@k in the CLIP_benchmark sense. ``txt_image_index=None`` means row i of
    ``txt`` describes row i of ``img`` (equal lengths required). Scores are computed in
    ``dtype`` (float32 by default; pass ``np.float64`` for maximal precision).

    Returns ``(t2i_ranks (n_txt,), i2t_ranks (n_img,))`` as int64 arrays.
    Raises ``ValueError`` for NaN/inf or zero vectors, mismatched dimensions, fewer than 2
    vectors in a modality, an out-of-range index, or an image with no caption.
    """
    return _ranks(img, txt, txt_image_index, True, dtype, tie_tol, query_block, gallery_block)


def _ranks(img, txt, txt_image_index, want_i2t, dtype, tie_tol, query_block, gallery_block):
    img, txt = check_modalities(img, txt)
    n_img, n_txt = img.shape[0], txt.shape[0]
    idx = resolve_index(txt_image_index, n_txt, n_img)
    counts = np.bincount(idx, minlength=n_img)
    if want_i2t and np.any(counts == 0):
        missing = np.flatnonzero(counts == 0)
        raise ValueError(
            f"{missing.size} image(s) have no caption in txt_image_index "
            f"(first: image row {int(missing[0])}); image->text ranks are undefined for them"
        )
    tol = _default_tol(dtype) if tie_tol is None else float(tie_tol)

    imgn = normalize_rows(img, "img", dtype)
    txtn = normalize_rows(txt, "txt", dtype)

    # Correct-pair scores, row-wise in float64 (O(n_txt * d)).
    correct = np.empty(n_txt, dtype=np.float64)
    for sl in row_blocks(n_txt):
        correct[sl] = np.einsum(
            "ij,ij->i", txtn[sl].astype(np.float64), imgn[idx[sl]].astype(np.float64)
        )
    best = np.full(n_img, np.inf)  # images without captions (t2i only): never counted
    if want_i2t:
        best[:] = -np.inf
        np.maximum.at(best, idx, correct)

    thr_t = (correct + tol).astype(dtype)
    thr_i = (best + tol).astype(dtype)
    t2i = np.zeros(n_txt, dtype=np.int64)
    i2t = np.zeros(n_img, dtype=np.int64)
    for qs in row_blocks(n_txt, query_block):
        q = txtn[qs]
        q_idx = idx[qs]
        for gs in row_blocks(n_img, gallery_block):
            scores = q @ imgn[gs].T  # (nq, ng), bounded block
            t2i[qs] += np.count_nonzero(scores > thr_t[qs, None], axis=1)
            if not want_i2t:
                continue
            above = scores > thr_i[None, gs]
            own = (q_idx >= gs.start) & (q_idx < gs.stop)
            if own.any():  # a caption never counts against its own image
                above[np.flatnonzero(own), q_idx[own] - gs.start] = False
            i2t[gs] += np.count_nonzero(above, axis=0)
    return t2i, i2t


def text_to_image_ranks(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    *,
    dtype: type = np.float32,
    tie_tol: float | None = None,
    query_block: int = DEFAULT_QUERY_BLOCK,
    gallery_block: int = DEFAULT_GALLERY_BLOCK,
) -> np.ndarray:
    """Per caption, the 0-based rank of its own image among all images.

    ``rank_c = #{ i : cos(t_c, x_i) > cos(t_c, x_{g(c)}) + tol }`` — the number of images
    scoring strictly higher than the caption's own image ``g(c) = txt_image_index[c]``. Ties
    (within ``tie_tol``) count in favour of the correct image, so a caption whose image is tied
    for first place has rank 0. Hit@k ⇔ ``rank < k``. Images without captions are allowed here
    (they act as distractors). See :func:`retrieval_ranks` for the options.
    """
    return _ranks(img, txt, txt_image_index, False, dtype, tie_tol, query_block, gallery_block)[0]


def image_to_text_ranks(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    **kwargs,
) -> np.ndarray:
    """Per image, the 0-based rank of its best-scoring own caption among all captions.

    ``rank_i = #{ c : g(c) != i, cos(x_i, t_c) > max_{c': g(c')=i} cos(x_i, t_c') + tol }`` —
    captions of *other* images scoring strictly higher than the image's best own caption, so
    hit@k ⇔ ``rank < k`` ⇔ some caption of the image is in the top k (CLIP_benchmark). Ties
    count in favour of the correct captions. Images with no caption raise ``ValueError``.
    See :func:`retrieval_ranks` for options.
    """
    return retrieval_ranks(img, txt, txt_image_index, **kwargs)[1]


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``recall@k = mean_q [rank_q < k]`` for each k, as ``{"recall@1": ..., ...}``."""
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks: expected a non-empty 1-D array, got shape {r.shape}")
    if r.dtype.kind not in "iu" or (r.size and r.min() < 0):
        raise ValueError("ranks: expected non-negative integer ranks")
    out: dict[str, float] = {}
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"ks: each k must be a positive integer, got {k}")
        out[f"recall@{int(k)}"] = float(np.mean(r < k))
    return out


def retrieval_metrics(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    **kwargs,
) -> dict[str, float]:
    """Both retrieval directions as one flat dict of named floats.

    Keys: ``text_to_image_recall@k`` and ``image_to_text_recall@k`` for each k (definitions in
    :func:`text_to_image_ranks` / :func:`image_to_text_ranks`), ``text_to_image_mean_rank``,
    ``image_to_text_mean_rank`` (0-based), ``n_images``, ``n_texts``. One blocked pass computes
    both directions. Extra keyword arguments go to :func:`retrieval_ranks`.
    """
    t2i, i2t = retrieval_ranks(img, txt, txt_image_index, **kwargs)
    out: dict[str, float] = {}
    for key, val in recall_at_k(t2i, ks).items():
        out[f"text_to_image_{key}"] = val
    for key, val in recall_at_k(i2t, ks).items():
        out[f"image_to_text_{key}"] = val
    out["text_to_image_mean_rank"] = float(t2i.mean())
    out["image_to_text_mean_rank"] = float(i2t.mean())
    out["n_images"] = float(i2t.size)
    out["n_texts"] = float(t2i.size)
    return out
