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

Ranks are strict, with no tolerance: a query's rank is the number of gallery items scoring
**strictly higher** than its correct item, and the number of items scoring **exactly equal** is
stored beside it as ``ties`` (exact ties arise from identical captions or images: identical
vectors under different ids). So for each query and k:

* hit@k, optimistic (ties resolved in favour of the correct item; the stored ``recall``):
  ``rank < k``;
* hit@k, pessimistic (ties resolved against it; ``recall_pessimistic``): ``rank + ties < k``;

and any tie-breaking rule (CLIP_benchmark's ``torch.topk``, say) lies between the two. Queries
with ``ties = 0`` have the same hit under every rule.

Exactness without a float64 score matrix: scores are computed block by block in ``dtype``
(float32 by default), and every gallery item whose score lies within the rounding band
``δ = 4 (d + 2) u`` of the correct score (``u`` the unit roundoff of ``dtype``; the worst-case
error of a ``d``-term dot product of unit vectors plus their normalisation, twice) is re-scored
in float64 from the raw vectors as ``(a·b) / (‖a‖ ‖b‖)``, the same formula that gives the
correct item's score. Items outside the band are decided by the block score; items inside by
the float64 comparison (``>``: counts in the rank; ``==``: a tie). The result equals ranking by
exact float64 cosines, whatever ``dtype`` is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from clipgeo.core.arrays import (
    check_modalities,
    nonzero_row_norms,
    normalize_rows,
    resolve_index,
    row_blocks,
)

__all__ = [
    "RetrievalRanks",
    "image_to_text_ranks",
    "recall_at_k",
    "retrieval_metrics",
    "retrieval_ranks",
    "text_to_image_ranks",
]

DEFAULT_QUERY_BLOCK = 1024
DEFAULT_GALLERY_BLOCK = 8192


def rounding_band(dtype, d: int) -> float:
    """Rounding band of a ``dtype`` cosine between unit vectors of dimension ``d``: scores
    closer than this to the correct item's are re-scored in float64 before ranking.

    Parameters
    ----------
    dtype : numpy dtype
        The floating type the cosines are computed in.
    d : int
        The vectors' dimension.

    Returns
    -------
    float
        ``4 (d + 2) u / 2``, with ``u`` the dtype's machine epsilon.

    Examples
    --------
    >>> rounding_band(np.float32, 510) == 4 * 512 * float(np.finfo(np.float32).eps) / 2
    True
    """
    return 4.0 * (d + 2) * float(np.finfo(dtype).eps) / 2.0


class RetrievalRanks(tuple):
    """``(t2i, i2t)`` strict ranks (a tuple, so ``t2i, i2t = retrieval_ranks(...)`` works) with
    the exact-tie counts as attributes ``t2i_ties`` and ``i2t_ties``."""

    t2i_ties: np.ndarray
    i2t_ties: np.ndarray

    def __new__(cls, t2i, i2t, t2i_ties, i2t_ties):
        obj = super().__new__(cls, (t2i, i2t))
        obj.t2i_ties = t2i_ties
        obj.i2t_ties = i2t_ties
        return obj

    @property
    def t2i(self) -> np.ndarray:
        return self[0]

    @property
    def i2t(self) -> np.ndarray:
        return self[1]


def retrieval_ranks(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    *,
    dtype: type = np.float32,
    query_block: int = DEFAULT_QUERY_BLOCK,
    gallery_block: int = DEFAULT_GALLERY_BLOCK,
) -> RetrievalRanks:
    """Both directions' strict 0-based ranks and exact-tie counts in one blocked pass.

    With ``s(c, i) = t̂_c · î_i`` (exact cosine), ``g(c)`` the image of caption ``c``
    (``txt_image_index``), ``σ_c = s(c, g(c))`` and ``β_i = max_{c: g(c)=i} σ_c``:

    * ``t2i[c] = #{ i ≠ g(c) : s(c, i) > σ_c }``, ``t2i_ties[c] = #{ i ≠ g(c) : s(c, i) = σ_c }``
    * ``i2t[i] = #{ c : g(c) ≠ i, s(c, i) > β_i }``, ``i2t_ties[i] = #{ c : g(c) ≠ i, s(c, i) = β_i }``
      (captions of *other* images against the image's best own caption)

    so ``rank < k`` ⇔ optimistic hit@k and ``rank + ties < k`` ⇔ pessimistic hit@k, in the
    CLIP_benchmark sense (module doc). ``txt_image_index=None`` means row i of ``txt``
    describes row i of ``img`` (equal lengths required). ``dtype`` only sets the speed of the
    block scores; the ranks are those of exact float64 cosines (module doc).

    Returns a :class:`RetrievalRanks`: ``(t2i (n_txt,), i2t (n_img,))`` int64 arrays, with
    ``.t2i_ties`` and ``.i2t_ties``. Raises ``ValueError`` for NaN/inf or zero vectors,
    mismatched dimensions, fewer than 2 vectors in a modality, an out-of-range index, or an
    image with no caption.

    Parameters
    ----------
    img : array-like, shape (n_img, d)
        Image vectors (raw; normalised here), any float dtype.
    txt : array-like, shape (n_txt, d)
        Text vectors.
    txt_image_index : array-like of int, shape (n_txt,), optional
        ``g(c)``, the image row of each caption; every image needs at least one.
    dtype : numpy dtype
        Dtype of the block scores (float32 by default; the ranks are exact whatever it is).
    query_block, gallery_block : int
        Tile size: memory is one ``query_block × gallery_block`` block of scores.

    Returns
    -------
    RetrievalRanks
        ``(t2i, i2t)``: int64 arrays of shapes ``(n_txt,)`` and ``(n_img,)``; ``.t2i_ties``
        and ``.i2t_ties`` of the same shapes.

    Examples
    --------
    Each caption is its image scaled (identity retrieval): every rank is 0.

    >>> import numpy as np
    >>> retrieval_ranks(np.eye(3), 2.0 * np.eye(3))
    (array([0, 0, 0]), array([0, 0, 0]))

    Captions 0 and 1 swapped: each scores its neighbour's image 1 and its own 0 (rank 1), and
    ties with the third image (cosine 0 as well):

    >>> rr = retrieval_ranks(np.eye(3), np.eye(3)[[1, 0, 2]])
    >>> rr.t2i, rr.t2i_ties
    (array([1, 1, 0]), array([1, 1, 0]))
    """
    return _ranks(img, txt, txt_image_index, True, dtype, query_block, gallery_block)


def _pair_cos(txt, img, t_norm, i_norm, rows_t, rows_i) -> np.ndarray:
    """Exact float64 cosines of the pairs ``(txt[rows_t[j]], img[rows_i[j]])``: the one formula
    every compared score goes through (so identical vectors give identical scores)."""
    a = np.asarray(txt[rows_t], dtype=np.float64)
    b = np.asarray(img[rows_i], dtype=np.float64)
    return np.einsum("ij,ij->i", a, b) / (t_norm[rows_t] * i_norm[rows_i])


def _ranks(img, txt, txt_image_index, want_i2t, dtype, query_block, gallery_block):
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
    band = rounding_band(dtype, img.shape[1])

    imgn = normalize_rows(img, "img", dtype)
    txtn = normalize_rows(txt, "txt", dtype)
    i_norm = nonzero_row_norms(img, "img")
    t_norm = nonzero_row_norms(txt, "txt")

    # Correct-pair scores, exact (float64 from the raw rows).
    correct = np.empty(n_txt, dtype=np.float64)
    for sl in row_blocks(n_txt):
        rows = np.arange(sl.start, sl.stop)
        correct[sl] = _pair_cos(txt, img, t_norm, i_norm, rows, idx[sl])
    best = np.full(n_img, np.inf)  # images without captions (t2i only): never counted
    if want_i2t:
        best[:] = -np.inf
        np.maximum.at(best, idx, correct)

    hi_t, lo_t = (correct + band).astype(dtype), (correct - band).astype(dtype)
    hi_i, lo_i = (best + band).astype(dtype), (best - band).astype(dtype)
    t2i = np.zeros(n_txt, dtype=np.int64)
    i2t = np.zeros(n_img, dtype=np.int64)
    t2i_ties = np.zeros(n_txt, dtype=np.int64)
    i2t_ties = np.zeros(n_img, dtype=np.int64)
    cap = 1 << 16      # near-band candidates a block records before the kernel asks for room
    cand = np.empty((4, cap), dtype=np.int64)
    for qs in row_blocks(n_txt, query_block):
        q = txtn[qs]
        q_idx = idx[qs]
        for gs in row_blocks(n_img, gallery_block):
            scores = q @ imgn[gs].T  # (nq, ng), bounded block
            # one pass over the block (numba): the counts above the band, the in-band candidates
            while True:
                kept = t2i[qs].copy(), i2t[gs].copy()
                n_t, n_i = _count_block(scores, q_idx, gs.start, hi_t[qs], lo_t[qs], hi_i[gs], lo_i[gs], want_i2t,
                                        t2i[qs], i2t[gs], cand)
                if max(n_t, n_i) <= cand.shape[1]:
                    break
                t2i[qs], i2t[gs] = kept        # more candidates than room: undo this block, redo it with room
                cand = np.empty((4, max(n_t, n_i)), dtype=np.int64)
            if n_t:     # text -> image candidates, decided by the exact float64 cosine
                r, c = cand[0, :n_t], cand[1, :n_t]
                s64 = _pair_cos(txt, img, t_norm, i_norm, qs.start + r, gs.start + c)
                ref = correct[qs.start + r]
                np.add.at(t2i, qs.start + r[s64 > ref], 1)
                np.add.at(t2i_ties, qs.start + r[s64 == ref], 1)
            if n_i:
                r, c = cand[2, :n_i], cand[3, :n_i]
                s64 = _pair_cos(txt, img, t_norm, i_norm, qs.start + r, gs.start + c)
                ref = best[gs.start + c]
                np.add.at(i2t, gs.start + c[s64 > ref], 1)
                np.add.at(i2t_ties, gs.start + c[s64 == ref], 1)
    return RetrievalRanks(t2i, i2t, t2i_ties, i2t_ties)


@numba.njit(nogil=True, cache=True)
def _count_block(scores, q_idx, g0, hi_t, lo_t, hi_i, lo_i, want_i2t, t2i, i2t, cand):  # pragma: no cover - numba
    """One pass over a ``(nq, ng)`` block of scores (query rows; gallery columns from gallery item
    ``g0``), the query's own item (column ``q_idx[r] − g0``) left out: ``t2i[r] += #{c : s > hi_t[r]}``
    and ``i2t[c] += #{r : s > hi_i[c]}``; the entries inside ``[lo, hi]`` (the rounding band) are
    recorded as candidates ``cand[0:2]`` (text -> image: row, column) and ``cand[2:4]`` (image ->
    text) for the exact comparison. Returns both candidate counts; when one exceeds ``cand``'s
    width, only the first ``width`` were recorded (the caller undoes the counts and retries)."""
    nq, ng = scores.shape
    cap = cand.shape[1]
    n_t = 0
    n_i = 0
    for r in range(nq):
        own = q_idx[r] - g0
        h, lo = hi_t[r], lo_t[r]
        k = 0
        for c in range(ng):
            v = scores[r, c]
            if c == own:
                continue
            if v > h:
                k += 1
            elif v >= lo:
                if n_t < cap:
                    cand[0, n_t] = r
                    cand[1, n_t] = c
                n_t += 1
            if want_i2t:
                if v > hi_i[c]:
                    i2t[c] += 1
                elif v >= lo_i[c]:
                    if n_i < cap:
                        cand[2, n_i] = r
                        cand[3, n_i] = c
                    n_i += 1
        t2i[r] += k
    return n_t, n_i

def text_to_image_ranks(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    *,
    dtype: type = np.float32,
    query_block: int = DEFAULT_QUERY_BLOCK,
    gallery_block: int = DEFAULT_GALLERY_BLOCK,
) -> np.ndarray:
    """Per caption, the 0-based rank of its own image among all images.

    ``rank_c = #{ i : cos(t_c, x_i) > cos(t_c, x_{g(c)}) }`` — the number of images scoring
    strictly higher than the caption's own image ``g(c) = txt_image_index[c]`` (exact cosines,
    no tolerance). Exactly tied images do not count, so a caption whose image is tied for
    first place has rank 0 (the tie counts: :func:`retrieval_ranks`). Hit@k ⇔ ``rank < k``. Images without captions are allowed here
    (they act as distractors). See :func:`retrieval_ranks` for the options.
    """
    return _ranks(img, txt, txt_image_index, False, dtype, query_block, gallery_block)[0]


def image_to_text_ranks(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    **kwargs,
) -> np.ndarray:
    """Per image, the 0-based rank of its best-scoring own caption among all captions.

    ``rank_i = #{ c : g(c) != i, cos(x_i, t_c) > max_{c': g(c')=i} cos(x_i, t_c') }`` —
    captions of *other* images scoring strictly higher than the image's best own caption, so
    hit@k ⇔ ``rank < k`` ⇔ some caption of the image is in the top k (CLIP_benchmark). Exact
    ties do not count (they are counted apart by :func:`retrieval_ranks`). Images with no caption raise ``ValueError``.
    See :func:`retrieval_ranks` for options.
    """
    return retrieval_ranks(img, txt, txt_image_index, **kwargs)[1]


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10), ties: np.ndarray | None = None) -> dict[str, float]:
    """``recall@k = mean_q [rank_q < k]`` for each k, as ``{"recall@1": ..., ...}``.

    With ``ties`` (per-query exact-tie counts from :func:`retrieval_ranks`) also
    ``recall_pessimistic@k = mean_q [rank_q + ties_q < k]`` (ties resolved against the query).

    Parameters
    ----------
    ranks : array-like of int, shape (n_queries,)
        0-based strict ranks (e.g. ``retrieval_ranks(...).t2i``), non-negative.
    ks : sequence of int
        The cut-offs k (positive).
    ties : array-like of int, shape (n_queries,), optional
        Exact-tie counts per query (e.g. ``.t2i_ties``).

    Returns
    -------
    dict of str to float
        ``recall@k`` for each k (and ``recall_pessimistic@k`` with ``ties``), in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> recall_at_k(np.array([0, 1, 4, 12]), ks=(1, 5))
    {'recall@1': 0.25, 'recall@5': 0.75}
    >>> r = recall_at_k(np.array([0, 0, 3]), ks=(1,), ties=np.array([0, 1, 0]))
    >>> {k: round(v, 4) for k, v in r.items()}    # the second query's tie counts against it
    {'recall@1': 0.6667, 'recall_pessimistic@1': 0.3333}
    """
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks: expected a non-empty 1-D array, got shape {r.shape}")
    if r.dtype.kind not in "iu" or (r.size and r.min() < 0):
        raise ValueError("ranks: expected non-negative integer ranks")
    t = None
    if ties is not None:
        t = np.asarray(ties)
        if t.shape != r.shape or t.dtype.kind not in "iu" or (t.size and t.min() < 0):
            raise ValueError(f"ties: expected non-negative integers of shape {r.shape}")
    out: dict[str, float] = {}
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"ks: each k must be a positive integer, got {k}")
        out[f"recall@{int(k)}"] = float(np.mean(r < k))
        if t is not None:
            out[f"recall_pessimistic@{int(k)}"] = float(np.mean(r + t < k))
    return out


def retrieval_metrics(
    img: np.ndarray,
    txt: np.ndarray,
    txt_image_index: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    **kwargs,
) -> dict[str, float]:
    """Both retrieval directions as one flat dict of named floats.

    Keys, for each direction ``text_to_image`` / ``image_to_text`` and each k:
    ``<dir>_recall@k`` (strict rank < k: exact ties resolved in favour of the query) and
    ``<dir>_recall_pessimistic@k`` (rank + ties < k); ``<dir>_mean_rank`` (0-based),
    ``<dir>_n_tied_queries`` (queries with at least one exact tie), ``n_images``, ``n_texts``.
    Definitions in :func:`retrieval_ranks`; extra keyword arguments go to it.

    Parameters
    ----------
    img : array-like, shape (n_img, d)
        Image vectors (raw; normalised here).
    txt : array-like, shape (n_txt, d)
        Text vectors.
    txt_image_index : array-like of int, shape (n_txt,), optional
        The image row of each caption; ``None``: row-aligned pairs.
    ks : sequence of int
        The cut-offs k.
    **kwargs
        ``dtype``, ``query_block``, ``gallery_block`` of :func:`retrieval_ranks`.

    Returns
    -------
    dict of str to float
        The keys above (counts as floats).

    Examples
    --------
    Identity retrieval (each caption equal to its image, orthogonal to the others) gives recall 1:

    >>> import numpy as np
    >>> m = retrieval_metrics(np.eye(4), np.eye(4), ks=(1, 5))
    >>> m["text_to_image_recall@1"], m["image_to_text_recall@1"], m["text_to_image_mean_rank"]
    (1.0, 1.0, 0.0)
    >>> m["n_images"], m["n_texts"]
    (4.0, 4.0)
    """
    rr = retrieval_ranks(img, txt, txt_image_index, **kwargs)
    out: dict[str, float] = {}
    for name, ranks, ties in (("text_to_image", rr.t2i, rr.t2i_ties), ("image_to_text", rr.i2t, rr.i2t_ties)):
        for key, val in recall_at_k(ranks, ks, ties).items():
            out[f"{name}_{key}"] = val
        out[f"{name}_mean_rank"] = float(ranks.mean())
        out[f"{name}_n_tied_queries"] = float(np.count_nonzero(ties))
    out["n_images"] = float(rr.i2t.size)
    out["n_texts"] = float(rr.t2i.size)
    return out
