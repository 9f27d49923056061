"""Reading a run's vectors from Lance in bounded memory: batches, fragment ranges, stated samples.

A run's table (:mod:`clipgeo.store.vectors`) can hold millions of rows; nothing here reads it
whole. :class:`LanceRun` gives

* :meth:`LanceRun.chunks`: a *chunk source* (a callable returning a fresh iterator of ``(n, d)``
  arrays, see :data:`clipgeo.core.arrays.ChunkSource`) over one modality's raw or normalised
  vectors, read ``batch_rows`` rows at a time with ``to_batches(columns=…, filter=…)``; optionally
  restricted to some fragments (the unit of distributed work, :func:`fragment_ranges`);
* :meth:`LanceRun.sample`: a **stated, deterministic sample** of pairs held in memory (below).

**Sample.** Every image gets the key ``blake2b(f"{seed}:{image_id}")`` (first 8 bytes, big
endian); the sample is the ``n`` images with the smallest keys, *ordered by key*, with all their
captions (by sample_id). The key depends only on the seed and the id: the sample is the same
whatever the order rows were written or the number of fragments, a run's first ``n`` of the
key order are a uniform random subset (unlike "the first n by id", which in a LAION dump are one
shard), and a larger sample contains a smaller one. :func:`sample_statement` words it for
tables and reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from clipgeo.core.arrays import normalize_rows
from clipgeo.core.memory import bound_heap
from clipgeo.store import vectors

__all__ = ["LanceRun", "SampleInfo", "fragment_ranges", "hash_keys", "row_slices", "sample_statement"]

#: Most rows per batch read from Lance (the streamed passes copy batches into their own blocks of
#: ``BLOCK_ROWS``, so the batch size sets only Lance's buffers).
BATCH_ROWS = 8192
#: Bytes of vectors per batch: the batch size is the largest power of two of rows (256 to
#: :data:`BATCH_ROWS`) whose vectors fit, 2,048 rows at d = 768 in float16. Lance's decode buffers
#: then stay under the allocator's 4 MiB mmap threshold (:func:`clipgeo.core.memory.bound_heap`)
#: and are reused from the heap instead of being mapped, page-faulted and unmapped for every
#: batch. Measured on a 1M x 768 run (both modalities' vectors scanned): 3.8 s wall / 6.7 CPU s
#: (5.6 of it in the kernel, page faults) with 8,192-row batches, 0.7 s / 1.2 CPU s with 2,048,
#: at the same peak RSS (0.34 GB).
BATCH_BYTES = 3 << 20


def batch_rows_for(dim: int, itemsize: int) -> int:
    """Rows per Lance batch for vectors of ``dim`` values of ``itemsize`` bytes (:data:`BATCH_BYTES`).

    >>> batch_rows_for(768, 2), batch_rows_for(768, 4), batch_rows_for(64, 2)
    (2048, 1024, 8192)
    """
    rows = max(1, BATCH_BYTES // max(1, dim * itemsize))
    return int(min(BATCH_ROWS, max(256, 1 << (rows.bit_length() - 1))))


def hash_keys(ids: Sequence[str], seed: int = 0) -> np.ndarray:
    """``uint64`` key per id: the first 8 bytes (big endian) of ``blake2b(f"{seed}:{id}")``."""
    pre = f"{seed}:".encode()
    out = np.empty(len(ids), dtype=np.uint64)
    for i, s in enumerate(ids):
        out[i] = int.from_bytes(hashlib.blake2b(pre + str(s).encode(), digest_size=8).digest(), "big")
    return out


@dataclass(frozen=True)
class SampleInfo:
    """What a sample is: ``n_images`` of ``population_images`` images (and their captions)."""

    n_images: int
    n_texts: int
    population_images: int
    population_texts: int
    seed: int
    method: str = "hash"

    @property
    def complete(self) -> bool:
        return self.n_images == self.population_images and self.n_texts == self.population_texts


def sample_statement(info: SampleInfo, n_pairs: int | None = None) -> str:
    """A sentence saying what a sampled section ran on (``n_pairs``: it used that many pairs of the sample)."""
    if n_pairs is not None and n_pairs < info.n_images:
        return (f"{n_pairs:,} pairs: the {n_pairs:,} of {info.population_images:,} images with the smallest "
                f"blake2b(seed={info.seed}:image_id) key, each with its first caption (deterministic hash sample)")
    if info.complete:
        return f"all {info.population_images:,} images and {info.population_texts:,} captions"
    return (f"{info.n_images:,} of {info.population_images:,} images (those with the smallest "
            f"blake2b(seed={info.seed}:image_id) key) with all {info.n_texts:,} of their captions "
            f"(of {info.population_texts:,}; deterministic hash sample)")


def row_slices(fragment_rows: Sequence[tuple[int, int]], parts: int) -> list[list[tuple[int, int, int]]]:
    """Cut a table's rows into ``parts`` contiguous, near-equal pieces of *physical* rows (so a
    table of one big fragment still splits): each piece a list of ``(fragment_id, offset, limit)``
    slices, in table order. ``fragment_rows``: ``(fragment_id, n_rows)`` per fragment, in order."""
    total = sum(n for _, n in fragment_rows)
    parts = max(1, min(parts, total))
    bounds = np.linspace(0, total, parts + 1).round().astype(np.int64)
    out: list[list[tuple[int, int, int]]] = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        piece, start = [], 0
        for fid, n in fragment_rows:
            a, b = max(lo, start), min(hi, start + n)
            if b > a:
                piece.append((int(fid), int(a - start), int(b - a)))
            start += n
        if piece:
            out.append(piece)
    return out


def fragment_ranges(fragment_ids: Sequence[int], parts: int) -> list[list[int]]:
    """Split fragment ids into at most ``parts`` contiguous, non-empty groups (in order)."""
    ids = list(fragment_ids)
    parts = max(1, min(parts, len(ids)))
    bounds = np.linspace(0, len(ids), parts + 1).round().astype(int)
    return [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class LanceRun:
    """A run's vectors table, read in batches. Open with :meth:`open` (a data home and run id)
    or from the table's URI (what a Dask worker gets: a path or an object-store URI)."""

    def __init__(self, uri: str, run_id: str | None = None, *, batch_rows: int | None = None) -> None:
        import lance

        bound_heap()   # Lance's freed decode buffers go back to the system (clipgeo.core.memory)
        self.uri = str(uri)
        self.ds = lance.dataset(self.uri)
        self.run_id = run_id
        field = self.ds.schema.field("vector")
        self.dim: int = field.type.list_size
        self.dtype = np.dtype(field.type.value_type.to_pandas_dtype())
        self.batch_rows = int(batch_rows) if batch_rows is not None else batch_rows_for(self.dim, self.dtype.itemsize)
        self.format = vectors.table_format(self.ds)

    @classmethod
    def open(cls, home, run_id: str, **kw) -> "LanceRun":
        return cls(vectors.require_dataset(home, run_id).uri, run_id, **kw)

    @property
    def version(self) -> int:
        return self.ds.version

    def fragment_ids(self) -> list[int]:
        return [f.fragment_id for f in self.ds.get_fragments()]

    def row_slices(self, parts: int) -> list[list[tuple[int, int, int]]]:
        """:func:`row_slices` of this table: ``parts`` pieces of ``(fragment_id, offset, limit)``."""
        return row_slices([(f.fragment_id, f.count_rows()) for f in self.ds.get_fragments()], parts)

    def count(self, modality: str) -> int:
        return self.ds.count_rows(filter=f"modality = '{modality}'")

    def _fragments(self, fragment_ids: Sequence[int] | None):
        if fragment_ids is None:
            return None
        wanted = set(fragment_ids)
        return [f for f in self.ds.get_fragments() if f.fragment_id in wanted]

    def batches(self, modality: str | None, columns: Sequence[str], fragment_ids: Sequence | None = None
                ) -> Iterator[pa.RecordBatch]:
        """Record batches of ``columns`` for one modality (all rows when None), in scan order.

        ``fragment_ids``: only these fragments (ints), or only these physical row slices
        (``(fragment_id, offset, limit)`` triples, see :meth:`row_slices`)."""
        if fragment_ids is not None and any(isinstance(f, (tuple, list)) for f in fragment_ids):
            yield from self._slice_batches(modality, columns, fragment_ids)
            return
        # bounded read-ahead: Lance's default (16 batches x 4 fragments) would hold ~64 batches in flight
        kw = {"columns": list(columns), "batch_size": self.batch_rows, "batch_readahead": 2, "fragment_readahead": 1}
        if modality is not None:
            kw["filter"] = f"modality = '{modality}'"
        frags = self._fragments(fragment_ids)
        if frags is not None:
            kw["fragments"] = frags  # only the scanner honours it (to_batches drops it silently, pylance 14)
        for b in self.ds.scanner(**kw).to_batches():
            if b.num_rows:
                yield b

    def _slice_batches(self, modality: str | None, columns: Sequence[str], slices: Sequence
                       ) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc

        frags = {f.fragment_id: f for f in self.ds.get_fragments()}
        cols = list(columns) + (["modality"] if modality is not None and "modality" not in columns else [])
        for fid, offset, limit in slices:
            sc = frags[int(fid)].scanner(columns=cols, offset=int(offset), limit=int(limit),
                                         batch_size=self.batch_rows, batch_readahead=2)
            for b in sc.to_batches():
                if modality is not None:
                    b = b.filter(pc.equal(b.column("modality"), modality))
                    if "modality" not in columns:
                        b = b.select(list(columns))
                if b.num_rows:
                    yield b

    def _vector_cols(self, normalized: bool) -> list[str]:
        if self.format == 1:
            return ["vector_norm" if normalized else "vector"]
        return ["vector", "norm"] if normalized else ["vector"]

    def arrays(self, modality: str, *, normalized: bool = False, dtype: type = np.float32,
               fragment_ids: Sequence[int] | None = None, with_ids: bool = False
               ) -> Iterator[np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(n, d)`` arrays of ``dtype`` per batch (``normalized``: ``x/‖x‖``, derived on read);
        with ``with_ids`` also the batch's item_id and image_id arrays."""
        cols = self._vector_cols(normalized) + (["item_id", "image_id"] if with_ids else [])
        for b in self.batches(modality, cols, fragment_ids):
            mat = vectors.vector_matrix(b.column(cols[0]), np.float64 if dtype == np.float64 else np.float32)
            if normalized and self.format == 2:
                # the stored float32 norm serves float32 output; float64 output gets float64 norms
                norms = b.column("norm").to_numpy() if dtype != np.float64 else None
                mat = normalize_rows(mat, "vectors", dtype, norms=norms)
            else:
                mat = mat.astype(dtype, copy=False)
            if with_ids:
                yield mat, np.asarray(b.column("item_id").to_pylist()), np.asarray(b.column("image_id").to_pylist())
            else:
                yield mat

    def chunks(self, modality: str, *, normalized: bool = False, dtype: type = np.float32,
               fragment_ids: Sequence[int] | None = None) -> Callable[[], Iterator[np.ndarray]]:
        """A chunk source (callable, one fresh scan per call) for the streaming metrics."""
        return lambda: self.arrays(modality, normalized=normalized, dtype=dtype, fragment_ids=fragment_ids)

    def _id_batches(self, columns: Sequence[str]) -> Iterator[tuple[int, pa.RecordBatch]]:
        """``(offset, batch)`` over every row (unfiltered, table order) for the id ``columns``;
        ``offset`` is the batch's first row position, as :meth:`lance.LanceDataset.take` counts."""
        off = 0
        for b in self.ds.scanner(columns=list(columns), batch_size=4 * self.batch_rows,
                                 batch_readahead=2, fragment_readahead=1).to_batches():
            yield off, b
            off += b.num_rows

    def sample(self, n_images: int, seed: int = 0, *, normalized: bool = False
               ) -> tuple[vectors.RunVectors, SampleInfo]:
        """The hash sample (module doc) of ``n_images`` images with all their captions, in memory.

        Images are ordered by key (so "the first k" of them are the hash sample of k), captions
        by (their image's key, sample_id). Vectors are float32 (raw, or normalised when asked).
        Memory O(``n_images`` + their captions): two streamed scans of the id columns (the
        first keeps the running ``n_images`` smallest keys, the second picks the captions of
        the chosen images), then one ``take`` of the chosen rows' vectors.
        """
        import pyarrow.compute as pc

        n_want = max(0, n_images)
        keys = np.empty(0, np.uint64)
        pos = np.empty(0, np.int64)
        ids = np.empty(0, dtype=object)
        n_img = n_txt = 0
        for off, b in self._id_batches(["modality", "item_id"]):
            is_img = pc.equal(b.column("modality"), "image").to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(is_img)
            n_img += rows.size
            n_txt += b.num_rows - rows.size
            if rows.size == 0 or n_want == 0:
                continue
            b_ids = b.column("item_id").take(pa.array(rows)).to_pylist()
            keys = np.concatenate([keys, hash_keys(b_ids, seed)])
            pos = np.concatenate([pos, rows + off])
            ids = np.concatenate([ids, np.asarray(b_ids, dtype=object)])
            if keys.size > 2 * n_want:   # keep the candidates up to the n-th key (ties included)
                kth = np.partition(keys, n_want - 1)[n_want - 1]
                keep = keys <= kth
                keys, pos, ids = keys[keep], pos[keep], ids[keep]
        ids = ids.astype(str) if ids.size else np.empty(0, dtype=str)
        order = np.lexsort((ids, keys))[:n_want]   # by key, ties by id
        chosen_pos, chosen_ids = pos[order], ids[order]
        del keys, pos, ids
        rank = {iid: r for r, iid in enumerate(chosen_ids.tolist())}
        value_set = pa.array(chosen_ids.tolist(), pa.string())
        cap_pos_l: list[np.ndarray] = []
        cap_items_l: list = []
        cap_owner_l: list = []
        if rank:
            for off, b in self._id_batches(["modality", "item_id", "image_id"]):
                hit = pc.and_(pc.equal(b.column("modality"), "text"),
                              pc.is_in(b.column("image_id"), value_set=value_set)).to_numpy(zero_copy_only=False)
                rows = np.flatnonzero(hit)
                if rows.size:
                    sel = pa.array(rows)
                    cap_pos_l.append(rows + off)
                    cap_items_l += b.column("item_id").take(sel).to_pylist()
                    cap_owner_l += b.column("image_id").take(sel).to_pylist()
        cap_pos = np.concatenate(cap_pos_l) if cap_pos_l else np.empty(0, np.int64)
        cap_items = np.asarray(cap_items_l, dtype=object).astype(str) if cap_items_l else np.empty(0, dtype=str)
        cap_owner = np.asarray(cap_owner_l, dtype=object).astype(str) if cap_owner_l else np.empty(0, dtype=str)
        cap_rank = np.fromiter((rank[o] for o in cap_owner.tolist()), dtype=np.int64, count=cap_pos.size)
        cap_order = np.lexsort((cap_items, cap_rank))
        cap_pos, cap_items, cap_owner = cap_pos[cap_order], cap_items[cap_order], cap_owner[cap_order]
        cols = self._vector_cols(normalized)

        def take(pos: np.ndarray) -> np.ndarray:
            if pos.size == 0:
                return np.empty((0, self.dim), np.float32)
            srt = np.argsort(pos, kind="stable")
            in_order = bool((srt == np.arange(srt.size)).all())   # e.g. a whole run in table order
            tb = self.ds.take(pos if in_order else pos[srt], columns=cols)
            mat = vectors.vector_matrix(tb.column(cols[0]))
            if normalized and self.format == 2:
                mat = normalize_rows(mat, "vectors", np.float32, norms=tb.column("norm").to_numpy())
            if in_order:     # the rows as they came (a copy when they are Arrow's read-only buffer)
                return mat if mat.flags.writeable else mat.copy()
            out = np.empty_like(mat)
            out[srt] = mat
            return out

        rv = vectors.RunVectors(
            run_id=self.run_id or "",
            image_ids=chosen_ids,
            images=take(chosen_pos),
            sample_ids=cap_items,
            text_image_ids=cap_owner,
            texts=take(cap_pos),
            normalized_only=normalized,
        )
        info = SampleInfo(int(chosen_pos.size), int(cap_pos.size), n_img, n_txt, seed)
        return rv, info
