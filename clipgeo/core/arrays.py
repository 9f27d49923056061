"""Shared input validation and chunking helpers for the metric functions.

Every metric in :mod:`clipgeo` accepts plain numpy arrays of shape ``(n, d)`` (one row per
vector). The helpers here turn bad input into a :class:`ValueError` whose message names the
problem and the argument (``"img: 3 row(s) contain NaN or infinite values (first: row 7)"``)
instead of letting a NaN flow silently into a table.

Nothing here copies a large array: finiteness is checked block by block, so a
1,000,000 x 512 float32 modality never needs a second full-size temporary.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Rows per block when a function walks a large array (bounded temporaries: a block of
#: 4096 x 512 float64 values is 16 MiB).
DEFAULT_BLOCK_ROWS = 4096


def row_blocks(n: int, block: int = DEFAULT_BLOCK_ROWS) -> Iterator[slice]:
    """Yield ``slice(start, stop)`` objects covering ``range(n)`` in blocks of ``block`` rows."""
    if block < 1:
        raise ValueError(f"block size must be >= 1, got {block}")
    for start in range(0, n, block):
        yield slice(start, min(start + block, n))


def check_matrix(
    x: np.ndarray,
    name: str,
    *,
    min_rows: int = 2,
    block: int = DEFAULT_BLOCK_ROWS,
) -> np.ndarray:
    """Validate one modality's vectors and return them as a 2-D floating array (no copy if possible).

    Raises ``ValueError`` naming ``name`` when ``x`` is not 2-D, has no columns, is not
    numeric, has fewer than ``min_rows`` rows, or contains NaN or infinite values.
    Integer input is converted to float64; floating input is returned as is.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (n, d), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu" and arr.dtype != np.bool_:
        raise ValueError(f"{name}: expected numeric vectors, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    n, d = arr.shape
    if d < 1:
        raise ValueError(f"{name}: vectors have dimension 0")
    if n < min_rows:
        raise ValueError(
            f"{name}: a modality needs at least {min_rows} vectors, got {n}"
        )
    check_finite(arr, name, block=block)
    return arr


def check_finite(x: np.ndarray, name: str, *, row_offset: int = 0, block: int = DEFAULT_BLOCK_ROWS) -> None:
    """Raise ``ValueError`` if any entry of the 2-D array ``x`` is NaN or infinite (block-wise)."""
    bad_rows = 0
    first = -1
    for sl in row_blocks(x.shape[0], block):
        finite = np.isfinite(x[sl]).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            if first < 0:
                first = sl.start + int(bad[0])
            bad_rows += bad.size
    if bad_rows:
        raise ValueError(
            f"{name}: {bad_rows} row(s) contain NaN or infinite values "
            f"(first: row {first + row_offset})"
        )


def check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str = "img", name_b: str = "txt") -> int:
    """Raise ``ValueError`` unless both modalities have the same vector dimension; return it."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"mismatched dimensions between modalities: {name_a} has d={a.shape[1]}, "
            f"{name_b} has d={b.shape[1]}"
        )
    return int(a.shape[1])


def check_modalities(
    img: np.ndarray,
    txt: np.ndarray,
    *,
    paired: bool = False,
    min_rows: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (image, text) pair of arrays: each via :func:`check_matrix`, equal ``d``,
    and, when ``paired`` (row i of ``img`` matches row i of ``txt``), equal lengths."""
    img = check_matrix(img, "img", min_rows=min_rows)
    txt = check_matrix(txt, "txt", min_rows=min_rows)
    check_same_dim(img, txt)
    if paired and img.shape[0] != txt.shape[0]:
        raise ValueError(
            f"paired arrays must have the same number of rows: img has {img.shape[0]}, "
            f"txt has {txt.shape[0]}"
        )
    return img, txt


def check_index(index: np.ndarray, n_txt: int, n_img: int, name: str = "txt_image_index") -> np.ndarray:
    """Validate the caption -> image row index (1-D integers in ``[0, n_img)``, one per caption)."""
    idx = np.asarray(index)
    if idx.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {idx.shape}")
    if idx.shape[0] != n_txt:
        raise ValueError(f"{name}: has {idx.shape[0]} entries but there are {n_txt} captions")
    if idx.dtype.kind not in "iu":
        if idx.dtype.kind == "f" and np.all(np.isfinite(idx)) and np.all(idx == np.round(idx)):
            idx = idx.astype(np.int64)
        else:
            raise ValueError(f"{name}: expected integer image rows, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n_img):
        raise ValueError(
            f"{name}: entries must be image rows in [0, {n_img}), got range "
            f"[{int(idx.min())}, {int(idx.max())}]"
        )
    return idx


def resolve_index(index: np.ndarray | None, n_txt: int, n_img: int, name: str = "txt_image_index") -> np.ndarray:
    """:func:`check_index`, or the identity pairing (caption i belongs to image i) when
    ``index`` is None, which is only allowed when both modalities have the same length."""
    if index is not None:
        return check_index(index, n_txt, n_img, name)
    if n_img != n_txt:
        raise ValueError(
            f"{name} is required when img and txt have different lengths ({n_img} images, {n_txt} captions)"
        )
    return np.arange(n_txt, dtype=np.int64)


def first_caption_pairs(txt_image_index: np.ndarray, n_img: int) -> tuple[np.ndarray, np.ndarray]:
    """Each image with its first caption: the one definition of clipgeo's (image, caption) pairs.

    Image row ``i``'s first caption is the smallest caption row ``c`` with
    ``txt_image_index[c] == i`` (in a run's tables: captions ordered by ``sample_id``, so the
    caption with the smallest ``sample_id``, as the SQL views pick with ``arg_min(.., sample_id)``).
    Negative entries (a caption whose image has no vector) are ignored.

    Parameters
    ----------
    txt_image_index : array of shape (n_txt,), integer
        The image row of each caption, or a negative number for none.
    n_img : int
        Number of images; entries must be below it.

    Returns
    -------
    image_rows, caption_rows : numpy.ndarray of shape (n_pairs,), int64
        The images that have a caption, ascending, and the first caption of each.

    Examples
    --------
    >>> first_caption_pairs(np.array([1, 0, 1, -1, 0]), 3)
    (array([0, 1]), array([1, 0]))
    """
    idx = np.asarray(txt_image_index)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ValueError(f"txt_image_index: expected a 1-D array of integer image rows, got shape {idx.shape}, "
                         f"dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and idx.max() >= n_img:
        raise ValueError(f"txt_image_index: entries must be image rows below {n_img}, got {int(idx.max())}")
    rows = np.flatnonzero(idx >= 0)
    images, first = np.unique(idx[rows], return_index=True)   # return_index: the first occurrence of each
    return images.astype(np.int64), rows[first].astype(np.int64)


def row_norms(x: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, ``sqrt(Σ_j x_ij²)``, in ``x``'s own dtype (an einsum: no
    ``x*x`` temporary, and several times faster than ``np.linalg.norm(x, axis=1)``). For
    float16/float32 input whose norms must be exact use :func:`row_norms64`."""
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def row_norms64(x: np.ndarray, *, block: int = DEFAULT_BLOCK_ROWS) -> np.ndarray:
    """``‖x_i‖ = sqrt(Σ_j x_ij²)`` in float64 for any numeric 2-D ``x`` (float16 included).

    Each block of ``block`` rows is converted to float64 on its own, so a float16 array is
    never upcast whole (temporaries ``O(block · d)``).

    Parameters
    ----------
    x : array of shape (n, d)
        Vectors, one per row, any numeric dtype.
    block : int
        Rows converted to float64 at a time.

    Returns
    -------
    numpy.ndarray of shape (n,), float64

    Examples
    --------
    >>> row_norms64(np.array([[3, 4], [0, 1]], dtype=np.float16))
    array([5., 1.])
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array of shape (n, d), got shape {arr.shape}")
    out = np.empty(arr.shape[0], dtype=np.float64)
    for sl in row_blocks(arr.shape[0], block):
        out[sl] = row_norms(np.asarray(arr[sl], dtype=np.float64))
    return out


def check_nonzero_norms(norms: np.ndarray, name: str = "x", *, row_offset: int = 0) -> np.ndarray:
    """The one zero-row policy of clipgeo: raise ``ValueError`` naming ``name`` and the first row
    whose norm is 0 (its direction, hence every cosine involving it, is undefined; sources reject
    zero vectors at ingest, so a stored run never holds one). Returns ``norms`` unchanged.
    ``row_offset`` is added to the row number in the message (for chunks of a larger set)."""
    zero = norms == 0
    if np.any(zero):
        bad = row_offset + int(np.flatnonzero(zero)[0])
        raise ValueError(
            f"{name}: row {bad} is a zero vector and cannot be L2-normalised "
            "(reject it at the source: its direction is undefined)"
        )
    return norms


def nonzero_row_norms(x: np.ndarray, name: str = "x", *, row_offset: int = 0,
                      block: int = DEFAULT_BLOCK_ROWS) -> np.ndarray:
    """:func:`row_norms64` under the zero-row policy (:func:`check_nonzero_norms`): the norms a
    formula divides by when it needs ``x / ‖x‖`` only inside a product (``Σ_i x_i / ‖x_i‖`` as
    one gemv, ``(x · s) / ‖x‖``) rather than as an array (:func:`normalize_rows`)."""
    return check_nonzero_norms(row_norms64(x, block=block), name, row_offset=row_offset)


def normalize_rows(x: np.ndarray, name: str = "x", dtype: type = np.float64, *, norms: np.ndarray | None = None,
                   block: int = DEFAULT_BLOCK_ROWS, row_offset: int = 0) -> np.ndarray:
    """``x̂_i = x_i / ‖x_i‖`` row-wise: the one row normalisation of clipgeo.

    Norms and the division are float64 whatever the input and output dtypes (each value is the
    correctly rounded quotient, cast to ``dtype`` once); the work goes block by block, so a
    float16 or float32 input is never upcast whole and the float64 temporaries stay
    ``O(block · d)``. A row with ``‖x_i‖ = 0`` raises ``ValueError`` naming ``name`` and the row
    (:func:`check_nonzero_norms`).

    Parameters
    ----------
    x : array of shape (n, d)
        Vectors, one per row (float16, float32, float64 or integer).
    name : str
        What ``x`` is, for error messages.
    dtype : numpy dtype
        The dtype of the result (float64 by default; float32 or float16 to save memory).
    norms : array of shape (n,), optional
        The rows' norms when already known (e.g. the ``norm`` column stored with a run's
        vectors); computed in float64 otherwise.
    block : int
        Rows per block.
    row_offset : int
        Added to the row number in the zero-row error (``x`` is a chunk of a larger set).

    Returns
    -------
    numpy.ndarray of shape (n, d) and dtype ``dtype``
        The unit vectors (a new array).

    Examples
    --------
    >>> normalize_rows(np.array([[3.0, 4.0], [0.0, 2.0]]))
    array([[0.6, 0.8],
           [0. , 1. ]])
    >>> normalize_rows(np.array([[3, 4]], dtype=np.float16), dtype=np.float16).dtype
    dtype('float16')
    >>> normalize_rows(np.zeros((1, 2)), "img")
    Traceback (most recent call last):
    ...
    ValueError: img: row 0 is a zero vector and cannot be L2-normalised (reject it at the source: its direction is undefined)
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (n, d), got shape {arr.shape}")
    given = None
    if norms is not None:
        given = np.asarray(norms, dtype=np.float64)
        if given.shape != (arr.shape[0],):
            raise ValueError(f"{name}: norms has shape {given.shape}, expected ({arr.shape[0]},)")
    out = np.empty(arr.shape, dtype=dtype)
    for sl in row_blocks(arr.shape[0], block):
        blk = np.asarray(arr[sl], dtype=np.float64)
        nb = row_norms(blk) if given is None else given[sl]
        check_nonzero_norms(nb, name, row_offset=row_offset + sl.start)
        np.divide(blk, nb[:, None], out=out[sl], casting="same_kind")
    return out


def check_fraction(value: float, name: str) -> float:
    """Raise ``ValueError`` unless ``0 < value < 1``."""
    if not (0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return float(value)


# ------------------------------------------------------------------ chunked (streaming) input

#: What a streaming metric accepts for one modality:
#:  * a 2-D array-like with ``.shape`` and row slicing (``np.ndarray``, ``np.memmap``, an adapter
#:    over a Lance dataset ...): read block by block, never copied whole;
#:  * a list/tuple of 2-D chunks;
#:  * a zero-argument callable returning a fresh iterable of 2-D chunks (called once per pass,
#:    e.g. ``lambda: table_batches(run_id, "image")``), for data that does not fit in memory.
#: A bare iterator/generator is refused: multi-pass metrics would silently see it empty the
#: second time.
ChunkSource = object


def iter_chunks(
    source: ChunkSource,
    name: str,
    *,
    d: int | None = None,
    block: int = DEFAULT_BLOCK_ROWS,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row_offset, chunk)`` with each chunk validated and converted to float64.

    Each chunk must be 2-D with ``d`` columns (``d`` taken from the first chunk when not given)
    and finite; errors name ``name`` and the global row. Empty chunks are skipped and chunks
    longer than ``block`` rows are re-split, so temporaries stay ``O(block * d)``.
    """
    if callable(source) and not hasattr(source, "shape"):
        chunks = source()
    elif hasattr(source, "shape") and hasattr(source, "__getitem__"):
        shape = tuple(source.shape)
        if len(shape) != 2:
            raise ValueError(f"{name}: expected a 2-D array of shape (n, d), got shape {shape}")
        chunks = (source[sl] for sl in row_blocks(shape[0], block))
    elif isinstance(source, (list, tuple)):
        chunks = source
    else:
        raise ValueError(
            f"{name}: expected an array, a list of chunks, or a callable returning a fresh "
            f"iterable of chunks (a bare iterator can only be read once); got {type(source).__name__}"
        )
    offset = 0
    for chunk in chunks:
        arr = np.asarray(chunk)
        if arr.ndim != 2:
            raise ValueError(f"{name}: chunk at row {offset} is not 2-D (shape {arr.shape})")
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"{name}: expected numeric vectors, got dtype {arr.dtype}")
        if arr.shape[0] == 0:
            continue
        if d is None:
            d = arr.shape[1]
            if d < 1:
                raise ValueError(f"{name}: vectors have dimension 0")
        elif arr.shape[1] != d:
            raise ValueError(
                f"{name}: chunk at row {offset} has dimension {arr.shape[1]}, expected {d}"
            )
        for sl in row_blocks(arr.shape[0], block):  # re-split large chunks: bounded temporaries
            sub = np.asarray(arr[sl], dtype=np.float64)
            check_finite(sub, name, row_offset=offset, block=block)
            yield offset, sub
            offset += sub.shape[0]
