"""Imported embeddings in the clip-retrieval / LAION release layout (no model needed).

::

    <root>/img_emb/img_emb_{i}.npy          (n_i, d) float16 or float32, one row per image
    <root>/text_emb/text_emb_{i}.npy        (n_i, d) same dtype family, row-aligned with img_emb
    <root>/metadata/metadata_{i}.parquet    n_i rows, optional: caption, key / url, ...

``{i}`` may be zero-padded (``img_emb_0000.npy``); parts are matched by the integer value and
read in increasing order. Row ``r`` of part ``i`` is one image–caption pair.

Ids and captions (from the part's metadata when the ``metadata/`` folder exists):

* ``image_id`` = ``key`` column, else ``url``, else ``image_path``, else ``f"{i}:{r}"``;
* ``sample_id`` = ``key`` when there is a ``key`` column, else ``f"{i}:{r}"`` (URLs are not
  unique in LAION: the same URL appears with different captions);
* ``caption`` = ``caption`` / ``text`` / ``TEXT`` column, else None (captions are metadata
  here: the vectors are what is imported, so an empty caption is *not* a reject);
* ``url`` = ``url`` / ``URL`` column, else None.

Streaming: :func:`iter_embedding_chunks` validates each part from the ``.npy`` headers
(``np.load(mmap_mode="r")``, which reads no data) and the parquet footer, then reads
``chunk_rows`` rows at a time with positioned reads into a fresh buffer and converts them to
float32. Memory is bounded by the chunk size, whatever the file size: memory-mapped slices
would also work, but every page touched stays in the process's resident set (file-backed RSS)
until the kernel drops it, so a long import would look like it holds the whole file. The
metadata is read with ``ParquetFile.iter_batches`` over the needed columns only.

Rejects (the import carries on):

* whole part, stage ``read``: an unreadable ``.npy`` / parquet, a metadata row count that
  disagrees with the ``.npy`` (``"metadata_3.parquet has 99 rows, img_emb_3.npy has 100"``),
  a missing ``metadata_{i}.parquet`` when other parts have one;
* whole part, stage ``vectors``: missing ``text_emb_{i}.npy``, img / text row counts or
  dimensions that differ, a dimension different from the first part's, a non-float dtype;
* per row, stage ``vectors``: a NaN / inf in the image or text vector
  (``"non-finite image vector"``, ``"non-finite text vector"``, ``"non-finite image and text
  vectors"``), an all-zero vector (``"zero image vector"`` ...);
* per row, stage ``read``: a duplicate sample id (the first is kept).

Part rejects come as a chunk with zero rows and only ``rejects``. A root without an
``img_emb/`` folder of ``img_emb_*.npy`` files, or without ``text_emb/``, raises
:class:`~clipgeo.sources.base.SourceError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipgeo.sources.base import Reject, Sample, SourceError

__all__ = [
    "EmbeddingChunk",
    "EmbeddingPart",
    "detect_normalized",
    "embedding_parts",
    "iter_embedding_chunks",
    "source_dtype",
]

KEY_COLUMNS = ("key",)
IMAGE_ID_COLUMNS = ("key", "url", "URL", "image_path")
CAPTION_COLUMNS = ("caption", "text", "TEXT")
URL_COLUMNS = ("url", "URL")


@dataclass
class EmbeddingChunk:
    """Up to ``chunk_rows`` row-aligned image–caption vector pairs of one part.

    ``img[k]`` and ``txt[k]`` belong to ``image_ids[k]`` / ``sample_ids[k]``; ``rows[k]`` is
    the row in the part's files. Refused rows are absent and listed in ``rejects``.
    """

    part: int
    rows: np.ndarray             # (n,) int64, row index within the part
    image_ids: list[str]
    sample_ids: list[str]
    captions: list[str | None] | None
    urls: list[str | None] | None
    img: np.ndarray              # (n, d) float32
    txt: np.ndarray              # (n, d) float32
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def samples(self) -> list[Sample]:
        """As :class:`Sample` rows (``image_ref`` = URL or ``""``, caption ``""`` if unknown)."""
        caps = self.captions or [None] * len(self)
        urls = self.urls or [None] * len(self)
        return [Sample(s, i, u or "", c or "") for s, i, u, c in zip(self.sample_ids, self.image_ids, urls, caps)]


@dataclass(frozen=True)
class EmbeddingPart:
    """The files of part ``index`` (any may be None when absent)."""

    index: int
    img: Path
    txt: Path | None
    metadata: Path | None


def _by_index(folder: Path, prefix: str, suffix: str) -> dict[int, Path]:
    pat = re.compile(rf"^{re.escape(prefix)}_(\d+){re.escape(suffix)}$")
    out: dict[int, Path] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = pat.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return out


def embedding_parts(root: Path) -> tuple[list[EmbeddingPart], bool]:
    """The parts under ``root`` in order, and whether a ``metadata/`` folder exists.

    Raises:
        SourceError: no ``img_emb/img_emb_*.npy`` or no ``text_emb/`` folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"embeddings folder not found: {root}")
    imgs = _by_index(root / "img_emb", "img_emb", ".npy")
    if not imgs:
        raise SourceError(
            f"{root}: no img_emb/img_emb_<i>.npy files: not a clip-retrieval / LAION embeddings "
            "folder (expected img_emb/, text_emb/ and optionally metadata/)"
        )
    if not (root / "text_emb").is_dir():
        raise SourceError(f"{root}: no text_emb/ folder; image–caption pairs need text_emb/text_emb_<i>.npy")
    txts = _by_index(root / "text_emb", "text_emb", ".npy")
    has_meta = (root / "metadata").is_dir()
    metas = _by_index(root / "metadata", "metadata", ".parquet")
    parts = [EmbeddingPart(i, imgs[i], txts.get(i), metas.get(i)) for i in sorted(imgs)]
    return parts, has_meta


def _open_npy(path: Path) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """(shape, dtype, data offset, fortran order) from the header, reading no data."""
    mm = np.load(path, mmap_mode="r", allow_pickle=False)
    try:
        return tuple(mm.shape), mm.dtype, int(getattr(mm, "offset", 0)), bool(
            mm.flags.f_contiguous and not mm.flags.c_contiguous)
    finally:
        del mm


def _read_rows(path: Path, dtype: np.dtype, offset: int, fortran: bool, d: int, start: int, stop: int,
               keep_float16: bool = False) -> np.ndarray:
    """Rows ``[start, stop)`` as float32 (native float16 with ``keep_float16`` when stored as
    float16), read with positioned reads (no mapping kept)."""
    n = stop - start
    out_dt = np.float16 if (keep_float16 and dtype.kind == "f" and dtype.itemsize == 2) else np.float32
    if fortran:  # rare: slice the memmap (column-major rows are not contiguous on disk)
        mm = np.load(path, mmap_mode="r")
        try:
            return np.asarray(mm[start:stop], dtype=out_dt)
        finally:
            del mm
    buf = np.empty((n, d), dtype=dtype)
    view = memoryview(buf).cast("B")
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset + start * d * dtype.itemsize)
        got = 0
        while got < view.nbytes:
            k = fh.readinto(view[got:])
            if not k:
                raise OSError(f"{path} ends early (row {start + got // (d * dtype.itemsize)})")
            got += k
    if buf.dtype == out_dt and buf.dtype.isnative:
        return buf
    return buf.astype(out_dt)


def _pick(names: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)


def _meta_chunks(path: Path, columns: list[str], chunk_rows: int) -> Iterator[dict[str, list]]:
    """The metadata columns in pieces of exactly ``chunk_rows`` rows (the last may be shorter)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not columns:
        return
    pf = pq.ParquetFile(path)

    def as_lists(t: pa.Table) -> dict[str, list]:
        out = {}
        for c in columns:
            col = t.column(c)
            try:  # ints, large strings, valid-UTF-8 binary -> str (None stays None)
                out[c] = col.cast(pa.string()).to_pylist()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                out[c] = [_str_or_none(v) for v in col.to_pylist()]
        return out

    pending: list = []
    n_pending = 0
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
        pending.append(batch)
        n_pending += batch.num_rows
        while n_pending >= chunk_rows:
            t = pa.Table.from_batches(pending)
            head, tail = t.slice(0, chunk_rows), t.slice(chunk_rows)
            yield as_lists(head)
            pending, n_pending = tail.to_batches(), tail.num_rows
    if n_pending:
        yield as_lists(pa.Table.from_batches(pending))


def _ids(values: list[str | None], part: int, rows: list[int]) -> list[str]:
    """``values`` with empty / missing entries replaced by ``f"{part}:{row}"``."""
    if None not in values and "" not in values:
        return values  # type: ignore[return-value]
    return [v if v else f"{part}:{r}" for v, r in zip(values, rows)]


def _str_or_none(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return str(v)


def source_dtype(root: Path) -> np.dtype:
    """float16 when every ``img_emb`` / ``text_emb`` part is stored as float16 (read from the
    ``.npy`` headers only), else float32: the precision an import keeps."""
    parts, _ = embedding_parts(Path(root))
    for part in parts:
        for f in (part.img, part.txt):
            if f is None:
                continue
            try:
                dt = _open_npy(f)[1]
            except Exception:  # noqa: BLE001 - unreadable parts are rejected by the reader
                continue
            if not (dt.kind == "f" and dt.itemsize == 2):
                return np.dtype(np.float32)
    return np.dtype(np.float16)


def iter_embedding_chunks(root: Path, *, chunk_rows: int = 65536, dedupe: bool = True,
                          keep_float16: bool = False) -> Iterator[EmbeddingChunk]:
    """Stream the pairs of a release folder in chunks of at most ``chunk_rows`` rows.

    Chunks never span two parts. Vectors come as float32 whatever the stored dtype (with
    ``keep_float16``, a float16 file's rows stay float16: no precision is added that the
    release did not have, and half the memory); memory
    use is about ``chunk_rows * d * (4 + 4 + itemsize)`` bytes per modality pair plus the
    chunk's metadata, independent of the file sizes. See the module doc for ids and rejects.

    Raises:
        SourceError: the root is not a release folder (see :func:`embedding_parts`).
    """
    if chunk_rows <= 0:
        raise SourceError(f"chunk_rows must be positive, got {chunk_rows}")
    import pyarrow.parquet as pq

    parts, has_meta = embedding_parts(Path(root))
    dim: int | None = None
    seen = SeenIds()
    for part in parts:
        i = part.index
        img_name = part.img.name

        def part_reject(stage: str, reason: str, ref: Path = part.img, i: int = i,
                        d0: int = dim or 0) -> EmbeddingChunk:
            empty = np.empty((0, d0), np.float32)
            return EmbeddingChunk(i, np.empty(0, np.int64), [], [], None, None, empty, empty.copy(),
                                  [Reject(str(ref), stage, reason)])  # type: ignore[arg-type]

        # ---- validate the part from headers / footers only
        try:
            ishape, idt, ioff, ifort = _open_npy(part.img)
        except Exception as exc:  # noqa: BLE001 - numpy raises ValueError / OSError / EOFError
            yield part_reject("read", f"unreadable {img_name}: {exc}")
            continue
        if part.txt is None:
            yield part_reject("vectors", f"text_emb_{i}.npy missing")
            continue
        try:
            tshape, tdt, toff, tfort = _open_npy(part.txt)
        except Exception as exc:  # noqa: BLE001
            yield part_reject("read", f"unreadable {part.txt.name}: {exc}", part.txt)
            continue
        if len(ishape) != 2 or len(tshape) != 2:
            yield part_reject("vectors", f"{img_name} / {part.txt.name} are not 2-D (shapes {ishape}, {tshape})")
            continue
        if idt.kind != "f" or tdt.kind != "f":
            yield part_reject("vectors", f"not float vectors ({idt}, {tdt})")
            continue
        n, d = ishape
        if tshape[0] != n:
            yield part_reject("vectors", f"{img_name} has {n} rows, {part.txt.name} has {tshape[0]}")
            continue
        if tshape[1] != d:
            yield part_reject("vectors", f"{img_name} has dimension {d}, {part.txt.name} has {tshape[1]}")
            continue
        if dim is not None and d != dim:
            yield part_reject("vectors", f"dimension {d} differs from {dim} of the first part")
            continue
        meta_cols: list[str] = []
        key_col = id_col = cap_col = url_col = None
        if part.metadata is not None:
            try:
                pf = pq.ParquetFile(part.metadata)
                names = list(pf.schema_arrow.names)
                m_rows = pf.metadata.num_rows
            except Exception as exc:  # noqa: BLE001
                yield part_reject("read", f"unreadable {part.metadata.name}: {exc}", part.metadata)
                continue
            if m_rows != n:
                yield part_reject("read", f"{part.metadata.name} has {m_rows} rows, {img_name} has {n}",
                                  part.metadata)
                continue
            key_col, id_col = _pick(names, KEY_COLUMNS), _pick(names, IMAGE_ID_COLUMNS)
            cap_col, url_col = _pick(names, CAPTION_COLUMNS), _pick(names, URL_COLUMNS)
            meta_cols = list(dict.fromkeys(c for c in (key_col, id_col, cap_col, url_col) if c))
        elif has_meta:
            yield part_reject("read", f"metadata_{i}.parquet missing (other parts have metadata)")
            continue
        dim = d

        # ---- stream the rows
        meta_iter = _meta_chunks(part.metadata, meta_cols, chunk_rows) if part.metadata is not None else iter(())
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            rows = np.arange(start, stop, dtype=np.int64)
            try:
                img = _read_rows(part.img, idt, ioff, ifort, d, start, stop, keep_float16)
                txt = _read_rows(part.txt, tdt, toff, tfort, d, start, stop, keep_float16)
                meta = next(meta_iter) if meta_cols else {}
            except Exception as exc:  # noqa: BLE001 - a file that ends early / breaks mid-way
                yield part_reject("read", f"reading rows {start}..{n - 1} failed: {exc}")
                break
            m = stop - start
            row_list = rows.tolist()
            row_ids = [f"{i}:{r}" for r in row_list]
            image_ids = _ids(meta[id_col], i, row_list) if id_col else row_ids
            sample_ids = _ids(meta[key_col], i, row_list) if key_col else row_ids
            captions = meta[cap_col] if cap_col else None
            urls = meta[url_col] if url_col else None

            keep = np.ones(m, dtype=bool)
            rejects: list[Reject] = []
            i_fin, t_fin = np.isfinite(img).all(axis=1), np.isfinite(txt).all(axis=1)
            i_zero, t_zero = ~img.any(axis=1), ~txt.any(axis=1)
            for k in np.flatnonzero(~(i_fin & t_fin) | i_zero | t_zero).tolist():
                if not i_fin[k] or not t_fin[k]:
                    what = ("image and text vectors" if not (i_fin[k] or t_fin[k])
                            else "image vector" if not i_fin[k] else "text vector")
                    reason = f"non-finite {what}"
                else:
                    reason = "zero " + ("image and text vectors" if i_zero[k] and t_zero[k]
                                        else "image vector" if i_zero[k] else "text vector")
                keep[k] = False
                rejects.append(Reject(f"{part.img}#{start + k}", "vectors", reason, sample_ids[k]))
            if dedupe:
                cand = np.flatnonzero(keep)
                first = seen.first_seen(sample_ids, cand)
                for k in cand[~first].tolist():
                    keep[k] = False
                    rejects.append(Reject(f"{part.img}#{start + k}", "read", "duplicate sample id", sample_ids[k]))
            if not keep.all():
                idx = np.flatnonzero(keep)
                sel = idx.tolist()
                img, txt, rows = img[idx], txt[idx], rows[idx]
                image_ids = [image_ids[k] for k in sel]
                sample_ids = [sample_ids[k] for k in sel]
                captions = [captions[k] for k in sel] if captions is not None else None
                urls = [urls[k] for k in sel] if urls is not None else None
            yield EmbeddingChunk(i, rows, image_ids, sample_ids, captions, urls, img, txt, rejects)


class SeenIds:
    """The sample ids met so far, in 8 bytes each: 64-bit keys (``polars`` ``hash`` of the id, a
    fixed seed) in a few sorted blocks merged as they grow (log-structured), so a 10M-row
    release costs 80 MB instead of a Python set of 10M strings (about 1 GB). Two different ids
    share a key with probability about ``n² / 2⁶⁵`` (3e-6 at 10M): the later one would then be
    reported as a duplicate (a ``rejects`` row, never silently)."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    @staticmethod
    def keys(ids: list[str]) -> np.ndarray:
        import polars as pl

        return pl.Series(ids, dtype=pl.Utf8).hash(seed=0x636C6970).to_numpy().astype(np.uint64, copy=False)

    def first_seen(self, ids: list[str], rows: np.ndarray) -> np.ndarray:
        """For ``ids[rows]`` in order: True where the id was not seen before (earlier in ``rows``
        included); those are recorded as seen."""
        if rows.size == 0:
            return np.zeros(0, dtype=bool)
        keys = self.keys([ids[k] for k in rows.tolist()])
        fresh = np.zeros(keys.size, dtype=bool)
        fresh[np.unique(keys, return_index=True)[1]] = True       # the first of equal keys in this chunk
        for blk in self.blocks:
            pos = np.minimum(np.searchsorted(blk, keys), blk.size - 1)
            fresh &= blk[pos] != keys
        self.blocks.append(np.sort(keys[fresh]))
        while len(self.blocks) > 1 and self.blocks[-1].size * 2 >= self.blocks[-2].size:
            top = self.blocks.pop()
            self.blocks[-1] = np.sort(np.concatenate([self.blocks[-1], top]))
        return fresh

    def __len__(self) -> int:
        return sum(b.size for b in self.blocks)


def detect_normalized(root: Path, sample_rows: int = 10000, *, tol: float = 1e-2) -> bool:
    """Whether the stored vectors are already unit-norm (true of LAION / clip-retrieval output).

    Checks up to ``sample_rows`` rows spread evenly over all readable parts, image and text
    vectors both: True when every finite, sampled row has ``|‖v‖ - 1| <= tol``. Rows with
    NaN / inf are ignored (they are rejected on import); False when nothing could be sampled.
    """
    parts, _ = embedding_parts(Path(root))
    shapes = []
    for part in parts:
        try:
            ishape, *_ = _open_npy(part.img)
            tshape = _open_npy(part.txt)[0] if part.txt is not None else None
        except Exception:  # noqa: BLE001 - unreadable parts are rejected on import anyway
            continue
        if tshape is not None and len(ishape) == 2 and ishape == tshape and ishape[0] > 0:
            shapes.append((part, ishape[0]))
    total = sum(n for _, n in shapes)
    if total == 0:
        return False
    want = max(1, min(sample_rows, total))
    picks = np.unique(np.linspace(0, total - 1, want).round().astype(np.int64))
    lo = 0
    norms = []
    for part, n in shapes:
        local = picks[(picks >= lo) & (picks < lo + n)] - lo
        lo += n
        if local.size == 0:
            continue
        for path in (part.img, part.txt):
            mm = np.load(path, mmap_mode="r")
            try:
                v = np.asarray(mm[local], dtype=np.float64)
            finally:
                del mm
            v = v[np.isfinite(v).all(axis=1)]
            norms.append(np.linalg.norm(v, axis=1))
    allnorms = np.concatenate(norms) if norms else np.empty(0)
    if allnorms.size == 0:
        return False
    return bool(np.all(np.abs(allnorms - 1.0) <= tol))
