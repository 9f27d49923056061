"""LanceDB vector store: one Lance table per run, each vector stored once, in its source precision.

Layout of table ``vectors_<run_id>`` (one row per image and one per caption), format 2:

====================  =====================================================
``run_id``            the run (repeated, so unions across runs keep it)
``modality``          ``image`` or ``text``
``item_id``           image_id for images, sample_id (caption id) for texts
``image_id``          the image the row belongs to (its own id for images)
``vector``            raw vector, ``FixedSizeList<float16 | float32>[d]`` (before normalisation),
                      in the precision it came in: a float16 release stays float16, a model's
                      output is float32
``norm``              ``‖vector‖`` (float32, computed in float64 from the stored values)
====================  =====================================================

The normalised form ``vector / norm`` is derived on read (:func:`read_run`, with
:func:`clipgeo.core.arrays.normalize_rows`). Measured on 100,000 float16 vectors at d = 768
(``benchmarks/bench_scale.py --storage``): this layout takes 1,540 B/vector and 0.96 CPU s for a
normalised scan; a stored float16 normalised column would take 3,072 B/vector and 0.47 s; the
old float32 ``vector`` + ``vector_norm`` 6,144 B/vector and 1.17 s. Deriving costs about 5 µs per
vector per scan, a few percent of the moment pass that follows it, for half the bytes.

Format 1 tables (a float32 ``vector`` plus a float32 ``vector_norm`` column, written before
this format) stay readable everywhere; :func:`migrate_run` / :func:`migrate_home` rewrite them in format 2 (float32 values
that are exact float16 values, as an imported float16 release gave, are stored as float16).

A whole run is written in one Lance commit (``mode="overwrite"``), so a crash leaves
either the previous version or the complete new one, never half a run.

This module reads and writes the tables with ``lance`` (the format library LanceDB keeps its
local tables in) at the paths a LanceDB connection uses, ``<home>/lance/<table>.lance``
(:func:`dataset_path`): ``lancedb.connect(home.lance)`` lists and opens them as its own tables
(:func:`connect`, what ``clipgeo sql`` uses). Importing ``lancedb`` costs about 1 s (its REST
namespace client) and its ``create_table`` 0.3-0.8 s more than ``lance.write_dataset`` for a
28,000 x 1,024 float16 run, which a notebook's ``clipgeo.measure`` paid on every call. Query it from
DuckDB with ``ds = table.to_lance()`` then ``duckdb.sql("select ... from ds")``; DuckDB cannot
read float16 arrays, so for a float16 run use :func:`sql_source` (what ``clipgeo sql`` does),
which hands DuckDB the rows with ``vector`` cast to float32.
"""

from __future__ import annotations

import os

os.environ.setdefault("LANCEDB_LOG", "error")  # lance warns on every new dataset otherwise
os.environ.setdefault("LANCE_LOG", "error")    # the same warnings, from lance itself

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from clipgeo.core.arrays import first_caption_pairs, normalize_rows, row_norms64
from clipgeo.core.config import DataHome

if TYPE_CHECKING:
    import lance
    import lancedb


def table_name(run_id: str) -> str:
    """The LanceDB table holding a run's vectors."""
    return f"vectors_{run_id}"


def dataset_path(home: DataHome, run_id: str) -> Path:
    """Where a run's table lives: ``<home>/lance/vectors_<run_id>.lance`` (a LanceDB table's path)."""
    return home.lance / f"{table_name(run_id)}.lance"


def open_dataset(home: DataHome, run_id: str) -> "lance.LanceDataset | None":
    """A run's table as a Lance dataset (its latest version), None when it has none.

    Parameters
    ----------
    home : DataHome
        The data home.
    run_id : str
        The run.

    Returns
    -------
    lance.LanceDataset or None
        The table, or None when the run has no vectors table.

    Examples
    --------
    >>> import shutil, tempfile
    >>> home = DataHome.resolve(tempfile.mkdtemp())
    >>> open_dataset(home, "r1") is None
    True
    >>> write_run(home, "r1", image_ids=["a"], images=np.ones((1, 2)), sample_ids=["a0"],
    ...           text_image_ids=["a"], texts=np.ones((1, 2)))
    2
    >>> open_dataset(home, "r1").count_rows()
    2
    >>> shutil.rmtree(home.root)
    """
    import lance

    path = dataset_path(home, run_id)
    return lance.dataset(str(path)) if _committed(path) else None


def _committed(path: Path) -> bool:
    """Whether a Lance dataset has been committed at ``path`` (it has a version)."""
    return (path / "_versions").is_dir()


def require_dataset(home: DataHome, run_id: str) -> "lance.LanceDataset":
    """:func:`open_dataset`, raising ``KeyError`` (naming the run and the folder) when the run
    has no vectors table."""
    ds = open_dataset(home, run_id)
    if ds is None:
        raise KeyError(f"run {run_id} has no vectors in {home.lance} (table {table_name(run_id)}); embed it first")
    return ds


def table_names(db: "lancedb.DBConnection", page: int = 1000) -> list[str]:
    """Every table of a LanceDB folder (``db.table_names()`` returns only a first page of 10)."""
    names: list[str] = []
    token = None
    while True:
        batch = list(db.table_names(page_token=token, limit=page))
        names += batch
        if len(batch) < page:
            return names
        token = batch[-1]


def has_table(db: "lancedb.DBConnection", name: str) -> bool:
    return name in table_names(db)


def connect(home: DataHome) -> "lancedb.DBConnection":
    """A LanceDB connection to the home's vectors (every run's table, as LanceDB sees it)."""
    import lancedb

    home.lance.mkdir(parents=True, exist_ok=True)
    return lancedb.connect(str(home.lance))


#: Version of the table layout written by this module (see the module docstring).
FORMAT = 2
#: Precisions a ``vector`` column may have.
STORED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def _fixed_list(mat: np.ndarray, dtype: np.dtype | type = np.float32) -> pa.FixedSizeListArray:
    mat = np.ascontiguousarray(mat, dtype=dtype)
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), mat.shape[1])


def storage_dtype(*mats: np.ndarray) -> np.dtype:
    """float16 when every input is float16 (kept as it came), else float32."""
    return np.dtype(np.float16) if mats and all(np.asarray(m).dtype == np.float16 for m in mats) else np.dtype(np.float32)


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

    def head(self, n_images: int) -> "RunVectors":
        """The first ``n_images`` images with all their captions (in this order; for a hash sample,
        whose images are in key order, the hash sample of ``n_images``).

        >>> rv = RunVectors("r", np.array(["a", "b"]), np.eye(2, dtype=np.float32), np.array(["s1", "s2", "s3"]),
        ...                 np.array(["a", "b", "a"]), np.ones((3, 2), dtype=np.float32))
        >>> h = rv.head(1)
        >>> h.image_ids.tolist(), h.sample_ids.tolist()
        (['a'], ['s1', 's3'])
        """
        k = max(0, min(int(n_images), len(self.image_ids)))
        rows = np.flatnonzero((self.text_image_index >= 0) & (self.text_image_index < k))
        return RunVectors(self.run_id, self.image_ids[:k], self.images[:k], self.sample_ids[rows],
                          self.text_image_ids[rows], self.texts[rows], self.normalized_only)

    def first_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One (image, caption) pair per image: its first caption in ``sample_ids`` order
        (:func:`clipgeo.core.arrays.first_caption_pairs`).

        Returns ``(image_rows, text_rows, image_ids)`` of the images that have a caption.
        """
        img_rows, txt_rows = first_caption_pairs(self.text_image_index, len(self.image_ids))
        return img_rows, txt_rows, self.image_ids[img_rows]


def schema(dim: int, dtype: np.dtype | type = np.float32) -> pa.Schema:
    """Arrow schema (format 2) of a run's vectors table for dimension ``dim`` and precision ``dtype``."""
    dt = np.dtype(dtype)
    if dt not in STORED_DTYPES:
        raise ValueError(f"vectors are stored as float16 or float32, not {dt}")
    vec = pa.list_(pa.from_numpy_dtype(dt), dim)
    return pa.schema([("run_id", pa.string()), ("modality", pa.string()), ("item_id", pa.string()),
                      ("image_id", pa.string()), ("vector", vec), ("norm", pa.float32())],
                     metadata={"clipgeo.vectors_format": str(FORMAT)})


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
                   text_image_ids: Sequence[str], texts: np.ndarray,
                   dtype: np.dtype | type | None = None) -> list[pa.RecordBatch]:
    """The rows of some images and captions of a run, as record batches of :func:`schema`.

    ``dtype``: the stored precision (float16 or float32); by default float16 when both inputs
    are float16 and float32 otherwise (:func:`storage_dtype`). All batches of one table must
    share it: a writer whose parts may differ passes it explicitly.
    """
    _check(run_id, image_ids, images, sample_ids, text_image_ids, texts)
    dt = storage_dtype(images, texts) if dtype is None else np.dtype(dtype)
    out = []
    for modality, items, owners, mat in (("image", image_ids, image_ids, images), ("text", sample_ids, text_image_ids, texts)):
        n = mat.shape[0]
        if n == 0:
            continue
        stored = np.ascontiguousarray(mat, dtype=dt)
        if dt == np.float16 and not np.isfinite(stored).all():
            raise ValueError(f"run {run_id}: {modality} vectors overflow float16; store them as float32")
        norms = row_norms64(stored)
        out.append(pa.RecordBatch.from_arrays(
            [pa.array([run_id] * n), pa.array([modality] * n), pa.array([str(x) for x in items]),
             pa.array([str(x) for x in owners]), _fixed_list(stored, dt), pa.array(norms.astype(np.float32))],
            schema=schema(mat.shape[1], dt),
        ))
    return out


def write_run_batches(home: DataHome, run_id: str, dim: int, batches: Iterable[pa.RecordBatch]) -> int:
    """Replace a run's table with the streamed ``batches`` (from :func:`record_batches`, all of one
    precision) in one Lance commit. Returns rows written."""
    counter = [0]
    it = iter(batches)
    first = next(it, None)
    sch = first.schema if first is not None else schema(dim)
    if sch.field("vector").type.list_size != dim:
        raise ValueError(f"run {run_id}: batches have dimension {sch.field('vector').type.list_size}, expected {dim}")

    def counted() -> Iterator[pa.RecordBatch]:
        for b in ([first] if first is not None else []):
            counter[0] += b.num_rows
            yield b
        for b in it:
            if not b.schema.equals(sch):
                raise ValueError(f"run {run_id}: a batch's schema {b.schema} differs from the first batch's {sch} "
                                 "(mixed precisions: pass dtype= to record_batches)")
            counter[0] += b.num_rows
            yield b

    import lance

    reader = pa.RecordBatchReader.from_batches(sch, counted())
    path = dataset_path(home, run_id)
    home.lance.mkdir(parents=True, exist_ok=True)
    # "create" on a new path: "overwrite" there makes lance warn that no dataset exists yet
    lance.write_dataset(reader, str(path), mode="overwrite" if _committed(path) else "create")
    return counter[0]


def write_run(home: DataHome, run_id: str, *, image_ids: Sequence[str], images: np.ndarray, sample_ids: Sequence[str],
              text_image_ids: Sequence[str], texts: np.ndarray) -> int:
    """Write (replace) all vectors of a run in one commit. Returns the row count."""
    batches = record_batches(run_id, image_ids=image_ids, images=images, sample_ids=sample_ids,
                             text_image_ids=text_image_ids, texts=texts)
    return write_run_batches(home, run_id, images.shape[1], batches)


def count_rows(home: DataHome, run_id: str) -> dict[str, int]:
    """Rows per modality of a run's table ({} when the table does not exist)."""
    t = open_dataset(home, run_id)
    if t is None:
        return {}
    counts = {m: t.count_rows(filter=f"modality = '{m}'") for m in ("image", "text")}
    return {m: n for m, n in counts.items() if n}


def table_version(home: DataHome, run_id: str) -> int | None:
    """The Lance version of a run's table (changes with every commit), None if absent."""
    ds = open_dataset(home, run_id)
    return ds.version if ds is not None else None


def vector_matrix(col: pa.ChunkedArray | pa.Array, dtype: type = np.float32) -> np.ndarray:
    """A FixedSizeList column (a vectors table's ``vector``) as an ``(n, d)`` array.

    Parameters
    ----------
    col : pyarrow.ChunkedArray or pyarrow.Array
        Fixed-size lists of ``d`` numbers.
    dtype : numpy dtype
        The result's dtype (float32 by default).

    Returns
    -------
    numpy.ndarray of shape (n, d)
        A view of the column's values when it is one chunk of ``dtype`` values, else a copy.

    Examples
    --------
    >>> col = pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(pa.float16(), 2))
    >>> vector_matrix(col).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    d = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(dtype, copy=False)


def table_format(tbl) -> int:
    """1 for the old layout (float32 ``vector`` + ``vector_norm``), 2 for :data:`FORMAT`."""
    names = tbl.schema.names
    return 1 if "vector_norm" in names else 2


def read_run(home: DataHome, run_id: str, *, normalized: bool = False) -> RunVectors:
    """Read a run's vectors (raw by default, as float32), images ordered by image_id, captions
    by sample_id. ``normalized``: ``vector / ‖vector‖``, derived here (format 1 tables: their
    stored ``vector_norm``). Holds the whole run in memory: for large runs use
    :class:`clipgeo.streaming.reader.LanceRun`, which reads in batches."""
    ds = require_dataset(home, run_id)
    fmt = table_format(ds)
    col = "vector_norm" if (normalized and fmt == 1) else "vector"
    cols = ["modality", "item_id", "image_id", col] + (["norm"] if fmt == 2 else [])
    t = ds.to_table(columns=cols)
    mods = np.array(t.column("modality").to_pylist())
    item = np.array(t.column("item_id").to_pylist())
    img_of = np.array(t.column("image_id").to_pylist())
    mat = vector_matrix(t.column(col))
    if normalized and fmt == 2:
        mat = normalize_rows(mat, "vectors", np.float32, norms=t.column("norm").to_numpy())
    del t
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


def sql_source(tbl):
    """What to register in DuckDB for a run's table: the Lance dataset itself (filters and
    projections pushed down), or, for a float16 table (DuckDB reads no float16), a stream of its
    rows with ``vector`` cast to float32 (read in full by each query)."""
    ds = tbl.to_lance() if hasattr(tbl, "to_lance") else tbl
    field_ = ds.schema.field("vector")
    if field_.type.value_type != pa.float16():
        return ds
    d = field_.type.list_size
    out_schema = ds.schema.set(ds.schema.get_field_index("vector"), pa.field("vector", pa.list_(pa.float32(), d)))

    def cast() -> Iterator[pa.RecordBatch]:
        for b in ds.to_batches():
            yield b.set_column(b.schema.get_field_index("vector"), "vector", b.column("vector").cast(pa.list_(pa.float32(), d)))

    return pa.RecordBatchReader.from_batches(out_schema, cast())


def _exact_in_float16(mat: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.array_equal(mat.astype(np.float16).astype(np.float32), mat))


def migrate_run(home: DataHome, run_id: str, *, batch_rows: int = 65536) -> bool:
    """Rewrite a format 1 table in format 2 (one ``vector`` column, ``norm``); True if it did.

    float32 vectors whose every value is exactly a float16 value (an imported float16 release)
    are stored as float16; the others stay float32. Streamed batch by batch from the table's
    current version, written in one commit; the old version's files are then removed.
    """
    ds = require_dataset(home, run_id)
    if table_format(ds) != 1:
        return False
    cols = ["modality", "item_id", "image_id", "vector"]
    exact16 = all(_exact_in_float16(vector_matrix(b.column("vector"))) for b in ds.to_batches(columns=["vector"], batch_size=batch_rows))
    dt = np.dtype(np.float16 if exact16 else np.float32)
    d = ds.schema.field("vector").type.list_size

    def batches() -> Iterator[pa.RecordBatch]:
        for b in ds.to_batches(columns=cols, batch_size=batch_rows):
            mat = vector_matrix(b.column("vector"))
            stored = mat.astype(dt)
            yield pa.RecordBatch.from_arrays(
                [pa.array([run_id] * b.num_rows), b.column("modality"), b.column("item_id"), b.column("image_id"),
                 _fixed_list(stored, dt), pa.array(row_norms64(stored).astype(np.float32))],
                schema=schema(d, dt))

    write_run_batches(home, run_id, d, batches())
    from datetime import timedelta

    require_dataset(home, run_id).cleanup_old_versions(older_than=timedelta(0))
    return True


def migrate_home(home: DataHome, *, wait_seconds: float | None = None) -> list[str]:
    """:func:`migrate_run` for every format 1 table of a data home; returns the migrated run ids.

    Each table is rewritten while holding its run's lock (``run-<run_id>``, the unit embedding
    and measuring claim, :mod:`clipgeo.store.locks`), so a flow never reads a table mid-rewrite.
    """
    from clipgeo.store import locks

    done = []
    for path in sorted(home.lance.glob("vectors_*.lance")) if home.lance.is_dir() else []:
        run_id = path.name[len("vectors_"):-len(".lance")]
        ds = open_dataset(home, run_id)
        if ds is not None and table_format(ds) == 1:
            kw = {} if wait_seconds is None else {"wait_seconds": wait_seconds}
            with locks.claim(home, f"run-{run_id}", **kw):
                if migrate_run(home, run_id):
                    done.append(run_id)
    return done
