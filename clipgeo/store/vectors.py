"""LanceDB vector store: one Lance table per run, raw and L2-normalised float32 vectors.

Layout of table ``vectors_<run_id>`` (one row per image and one per caption):

====================  =====================================================
``run_id``            the run (repeated, so unions across runs keep it)
``modality``          ``image`` or ``text``
``item_id``           image_id for images, sample_id (caption id) for texts
``image_id``          the image the row belongs to (its own id for images)
``vector``            raw vector, ``FixedSizeList<float32>[d]`` (before normalisation)
``vector_norm``       ``vector / ‖vector‖``
====================  =====================================================

A whole run is written in one Lance commit (``mode="overwrite"``), so a crash leaves
either the previous version or the complete new one, never half a run. Query it from
DuckDB with ``ds = table.to_lance()`` then ``duckdb.sql("select ... from ds")``.
"""

from __future__ import annotations

import os

os.environ.setdefault("LANCEDB_LOG", "error")  # lance warns on every new dataset otherwise

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import lancedb
import numpy as np
import pyarrow as pa

from clipgeo.config import DataHome


def table_name(run_id: str) -> str:
    """The LanceDB table holding a run's vectors."""
    return f"vectors_{run_id}"


def table_names(db: lancedb.DBConnection, page: int = 1000) -> list[str]:
    """Every table of a LanceDB folder (``db.table_names()`` returns only a first page of 10)."""
    names: list[str] = []
    token = None
    while True:
        batch = list(db.table_names(page_token=token, limit=page))
        names += batch
        if len(batch) < page:
            return names
        token = batch[-1]


def has_table(db: lancedb.DBConnection, name: str) -> bool:
    return name in table_names(db)


def connect(home: DataHome) -> lancedb.DBConnection:
    home.lance.mkdir(parents=True, exist_ok=True)
    return lancedb.connect(str(home.lance))


def _fixed_list(mat: np.ndarray) -> pa.FixedSizeListArray:
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), mat.shape[1])


def l2_normalize(mat: np.ndarray) -> np.ndarray:
    """``x / ‖x‖`` row-wise as float32: :func:`clipgeo.stats.l2_normalize` (a zero row raises
    ``ValueError``; sources reject zero vectors before they are stored)."""
    from clipgeo.stats import l2_normalize as _l2

    return _l2(mat, "vectors", np.float32)


@dataclass(frozen=True)
class RunVectors:
    """A run's vectors in a fixed order: images by ``image_ids``, captions by ``sample_ids``."""

    run_id: str
    image_ids: np.ndarray        # (n_img,) str
    images: np.ndarray           # (n_img, d) float32 raw
    sample_ids: np.ndarray       # (n_txt,) str
    text_image_ids: np.ndarray   # (n_txt,) str, the image of each caption
    texts: np.ndarray            # (n_txt, d) float32 raw
    normalized_only: bool = False

    @property
    def text_image_index(self) -> np.ndarray:
        """Row in ``images`` of each caption's image (-1 when the image has no vector)."""
        pos = {iid: i for i, iid in enumerate(self.image_ids.tolist())}
        return np.array([pos.get(i, -1) for i in self.text_image_ids.tolist()], dtype=np.int64)

    def first_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One (image, caption) pair per image: its first caption in ``sample_ids`` order.

        Returns ``(image_rows, text_rows, image_ids)`` of the images that have a caption.
        """
        idx = self.text_image_index
        seen: dict[int, int] = {}
        for t, i in enumerate(idx.tolist()):
            if i >= 0 and i not in seen:
                seen[i] = t
        img_rows = np.array(sorted(seen), dtype=np.int64)
        txt_rows = np.array([seen[i] for i in img_rows.tolist()], dtype=np.int64)
        return img_rows, txt_rows, self.image_ids[img_rows]


def schema(dim: int) -> pa.Schema:
    """Arrow schema of a run's vectors table for dimension ``dim``."""
    vec = pa.list_(pa.float32(), dim)
    return pa.schema([("run_id", pa.string()), ("modality", pa.string()), ("item_id", pa.string()),
                      ("image_id", pa.string()), ("vector", vec), ("vector_norm", vec)])


def _check(run_id: str, image_ids: Sequence[str], images: np.ndarray, sample_ids: Sequence[str],
           text_image_ids: Sequence[str], texts: np.ndarray) -> None:
    if images.shape[0] != len(image_ids) or texts.shape[0] != len(sample_ids) or len(sample_ids) != len(text_image_ids):
        raise ValueError(
            f"run {run_id}: ids and vectors disagree: {len(image_ids)} image ids for {images.shape[0]} image vectors, "
            f"{len(sample_ids)} sample ids / {len(text_image_ids)} caption image ids for {texts.shape[0]} text vectors"
        )
    if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
        raise ValueError(f"run {run_id}: image vectors {images.shape} and text vectors {texts.shape} differ in dimension")
    for name, mat in (("image", images), ("text", texts)):
        if not np.isfinite(mat).all():
            raise ValueError(f"run {run_id}: {name} vectors contain NaN or infinite values; the model output is broken")


def record_batches(run_id: str, *, image_ids: Sequence[str], images: np.ndarray, sample_ids: Sequence[str],
                   text_image_ids: Sequence[str], texts: np.ndarray) -> list[pa.RecordBatch]:
    """The rows of some images and captions of a run, as record batches of :func:`schema`."""
    _check(run_id, image_ids, images, sample_ids, text_image_ids, texts)
    out = []
    for modality, items, owners, mat in (("image", image_ids, image_ids, images), ("text", sample_ids, text_image_ids, texts)):
        n = mat.shape[0]
        if n == 0:
            continue
        out.append(pa.RecordBatch.from_arrays(
            [pa.array([run_id] * n), pa.array([modality] * n), pa.array([str(x) for x in items]),
             pa.array([str(x) for x in owners]), _fixed_list(mat), _fixed_list(l2_normalize(mat))],
            schema=schema(mat.shape[1]),
        ))
    return out


def write_run_batches(home: DataHome, run_id: str, dim: int, batches: Iterable[pa.RecordBatch]) -> int:
    """Replace a run's table with the streamed ``batches`` in one Lance commit. Returns rows written."""
    counter = [0]

    def counted() -> Iterator[pa.RecordBatch]:
        for b in batches:
            counter[0] += b.num_rows
            yield b

    reader = pa.RecordBatchReader.from_batches(schema(dim), counted())
    connect(home).create_table(table_name(run_id), data=reader, mode="overwrite")
    return counter[0]


def write_run(home: DataHome, run_id: str, *, image_ids: Sequence[str], images: np.ndarray, sample_ids: Sequence[str],
              text_image_ids: Sequence[str], texts: np.ndarray) -> int:
    """Write (replace) all vectors of a run in one commit. Returns the row count."""
    batches = record_batches(run_id, image_ids=image_ids, images=images, sample_ids=sample_ids,
                             text_image_ids=text_image_ids, texts=texts)
    return write_run_batches(home, run_id, images.shape[1], batches)


def count_rows(home: DataHome, run_id: str) -> dict[str, int]:
    """Rows per modality of a run's table ({} when the table does not exist)."""
    db = connect(home)
    name = table_name(run_id)
    if not has_table(db, name):
        return {}
    t = db.open_table(name)
    counts = {m: t.count_rows(f"modality = '{m}'") for m in ("image", "text")}
    return {m: n for m, n in counts.items() if n}


def table_version(home: DataHome, run_id: str) -> int | None:
    """The Lance version of a run's table (changes with every commit), None if absent."""
    db = connect(home)
    name = table_name(run_id)
    return db.open_table(name).version if has_table(db, name) else None


def _matrix(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    d = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float32, copy=False)


def read_run(home: DataHome, run_id: str, *, normalized: bool = False) -> RunVectors:
    """Read a run's vectors (raw by default), images ordered by image_id, captions by sample_id."""
    db = connect(home)
    name = table_name(run_id)
    if not has_table(db, name):
        raise KeyError(f"run {run_id} has no vectors in {home.lance} (table {name}); embed it first")
    col = "vector_norm" if normalized else "vector"
    t = db.open_table(name).to_arrow().select(["modality", "item_id", "image_id", col])
    mods = np.array(t.column("modality").to_pylist())
    item = np.array(t.column("item_id").to_pylist())
    img_of = np.array(t.column("image_id").to_pylist())
    mat = _matrix(t.column(col))
    ii = np.where(mods == "image")[0]
    tt = np.where(mods == "text")[0]
    ii = ii[np.argsort(item[ii], kind="stable")]
    tt = tt[np.argsort(item[tt], kind="stable")]
    return RunVectors(
        run_id=run_id,
        image_ids=item[ii],
        images=mat[ii],
        sample_ids=item[tt],
        text_image_ids=img_of[tt],
        texts=mat[tt],
        normalized_only=normalized,
    )


def drop_run(home: DataHome, run_id: str) -> None:
    db = connect(home)
    if has_table(db, table_name(run_id)):
        db.drop_table(table_name(run_id))
