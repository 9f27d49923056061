"""Measuring runs of millions of vectors: streamed aggregates, mergeable partials, retrieval galleries.

* :func:`moment_partial` / :func:`merge_partials`: per fragment range, the float64 moments of
  each modality's raw and normalised vectors (:class:`clipgeo.geometry.ellipsoid.MomentAccumulator`:
  count, mean, centred scatter, ``Σ‖x‖``, ``Σ x̂``), merged exactly (Chan et al.'s pairwise
  update). One pass reads both modalities in lockstep (reader threads decode while BLAS
  accumulates, the thread count adapted per block) and, over a row-aligned table, also sums the
  paired cosines; every moment-based section (gap, spectra, ellipsoid, conformity, exact cosine
  moments: :func:`cosine_moments_from_moments`) reads its result. A normalised-only run is
  measured on ``x̂``: its raw and normalised moments are one accumulator. Partials are independent, so they can run anywhere (Dask workers, see
  ``flows/measure_dist.py``); :func:`gap_from_moments` and :func:`spectra_from_moments` turn the
  merged moments into the ``modality_gap`` and ``topo_spectra`` rows.
* :func:`per_sample_partial` / :func:`read_per_sample`: the per-sample pass (radius, Mahalanobis
  radius, conformity, cosines to the means, length: the fused kernels of :mod:`clipgeo.streaming.kernels`)
  over a row range, given the merged moments, written batch by batch to a Parquet part with the
  rows' ids; the parts become ``geo_per_sample`` inside DuckDB (``INSERT … FROM read_parquet``)
  and their statistic columns are read back, row-aligned, for the suite's summaries. No string
  id of the run is held in memory; parts can be written by Dask workers.
* :func:`streamed_gap`: the modality gap of every vector, streamed; its paired statistics come
  from a lockstep scan of image and caption rows when the table stores pairs row-aligned (an
  imported release: one caption per image, in the same order), else from the hash sample, and
  ``n_pairs`` says over how many pairs they are.
* :func:`run_retrieval`: retrieval ranks under a stated definition (full gallery, or disjoint
  hash-drawn sub-galleries), never an N×N matrix.
* :func:`blocked_query_ranks`: exact ranks and ties of a query sample against the full gallery,
  streamed in gallery blocks (block scores in fp16/fp32, torch on CUDA or numpy, re-scored in
  float64 within the rounding band: the ranks of float64 cosines).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import polars as pl

from clipgeo.core.arrays import first_caption_pairs, normalize_rows
from clipgeo.geometry.ellipsoid import (PER_SAMPLE_FIELDS, MomentAccumulator, PerSample,
                                        per_sample_plan, whitening_projection)
from clipgeo.retrieval import retrieval_ranks, rounding_band
from clipgeo.store import vectors
from clipgeo.streaming.reader import LanceRun, SampleInfo

__all__ = [
    "blocked_query_ranks",
    "gallery_summary",
    "gap_from_moments",
    "merge_partials",
    "moment_partial",
    "per_sample_partial",
    "PerSampleFiles",
    "per_sample_plans",
    "read_per_sample",
    "run_retrieval",
    "spectra_from_moments",
    "streamed_gap",
]

KS = (1, 5, 10)
#: Rows per batch of the lockstep paired scan (:func:`aligned_pairs`): two modalities at once.
PAIRED_BATCH_ROWS = 4096


# ----------------------------------------------------------------------------- moments


class PairedSums:
    """Sums over the pairs of a row-aligned table (caption row k describes image row k), from the
    moment pass: ``n`` pairs, ``cos_sum = Σ_k û_k·t̂_k``, ``cos_sq_sum = Σ_k (û_k·t̂_k)²`` and
    ``dist_sum = Σ_k ‖û_k − t̂_k‖``. Mergeable (disjoint pairs add)."""

    __slots__ = ("n", "cos_sum", "cos_sq_sum", "dist_sum")

    def __init__(self, n: int = 0, cos_sum: float = 0.0, cos_sq_sum: float = 0.0, dist_sum: float = 0.0) -> None:
        self.n, self.cos_sum, self.cos_sq_sum, self.dist_sum = int(n), float(cos_sum), float(cos_sq_sum), float(dist_sum)

    def add(self, cos: np.ndarray) -> None:
        self.n += int(cos.size)
        self.cos_sum += float(cos.sum())
        self.cos_sq_sum += float(cos @ cos)
        self.dist_sum += float(np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, None)).sum())

    def merge(self, other: "PairedSums") -> "PairedSums":
        self.n += other.n
        self.cos_sum += other.cos_sum
        self.cos_sq_sum += other.cos_sq_sum
        self.dist_sum += other.dist_sum
        return self

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)


def stored_norms_are_unit(run: LanceRun, tol: float = 1e-2) -> bool:
    """Whether every stored vector of the table has ``|‖x‖ − 1| ≤ tol`` (its ``norm`` column; the
    tolerance of :func:`clipgeo.sources.embeddings.detect_normalized`, which marks an import
    normalised): a run that only has normalised vectors."""
    import pyarrow.compute as pc

    if run.format != 2:
        return False
    for b in run.batches(None, ["norm"]):
        mm = pc.min_max(b.column("norm"))
        if abs(mm["min"].as_py() - 1) > tol or abs(mm["max"].as_py() - 1) > tol:
            return False
    return True


#: Rows per block of the streamed passes' arithmetic (several Lance batches are copied into one
#: block). A single-threaded ``d × d`` scatter product runs at the same rate from 4,096 rows up
#: (``syrk``, d = 768); with one block per modality on each of two lanes, 8,192-row blocks made
#: the 1M × 768 moment pass 1 s faster than 16,384 and its peak 0.3 GB lower (0.91 GB). A block
#: of 768-d float64 rows is 50 MB; a pass holds three per modality.
BLOCK_ROWS = 8192
#: Blocks of a modality in flight: one the consumer works on, one queued, one being decoded.
_RING = 3


class _BlockFiller:
    """Copies the ``vector`` column of a scan's record batches into caller-given blocks of the
    stored dtype (float16 stays float16: the kernels decode it), splitting a batch across blocks
    when it straddles one; ``key`` (a column name or None) is sliced alongside."""

    def __init__(self, batches: Iterator, key: str | None) -> None:
        self._it, self.key = iter(batches), key
        self._cur = None
        self._off = 0

    def fill(self, buf: np.ndarray):
        """Fill ``buf`` from the scan: ``(rows filled, key array or None)``; 0 rows at the end."""
        import pyarrow as pa

        n, keys = 0, []
        while n < buf.shape[0]:
            if self._cur is None or self._off >= self._cur.num_rows:
                self._cur, self._off = next(self._it, None), 0
                if self._cur is None:
                    break
                continue
            b, take = self._cur, min(buf.shape[0] - n, self._cur.num_rows - self._off)
            flat = b.column("vector").slice(self._off, take).flatten().to_numpy(zero_copy_only=False)
            np.copyto(buf[n:n + take], flat.reshape(take, buf.shape[1]), casting="unsafe")
            if self.key is not None:
                keys.append(b.column(self.key).slice(self._off, take))
            self._off += take
            n += take
        return n, ((pa.concat_arrays(keys) if keys else None) if self.key is not None else None)


def _unit_block(src: np.ndarray, x: np.ndarray, n: int, modality: str, row: int, uri: str, shift: np.ndarray,
                raw_out: np.ndarray | None, raw_shift: np.ndarray, partner: np.ndarray | None,
                partner_shift: np.ndarray) -> dict:
    """Run the fused kernel (:mod:`clipgeo.streaming.kernels`) over ``n`` rows of ``src`` into ``x``;
    a zero or non-finite row raises ``ValueError`` naming the modality and the row."""
    from clipgeo.streaming import kernels

    d = x.shape[1]
    empty = np.empty((0, d))
    out = {"lengths": np.empty(n), "ulen": np.empty(n), "usum": np.zeros(d), "xsum": np.zeros(d),
           "pdot": np.empty(n if partner is not None else 0)}
    args = (shift, empty if raw_out is None else raw_out, raw_shift, empty if partner is None else partner,
            partner_shift, out["lengths"], out["ulen"], out["usum"], out["xsum"], out["pdot"])
    if src.dtype == np.float16:
        bad = kernels.unit_block_f16(src.view(np.uint16), kernels.F16_TABLE, x, n, *args)
    else:
        np.copyto(x[:n], src[:n], casting="unsafe")
        bad = kernels.unit_block(x, n, *args)
    if bad >= 0:
        raise _bad_row(modality, row + bad, uri, src[bad])
    return out


def _bad_row(modality: str, row: int, uri: str, values: np.ndarray) -> ValueError:
    """The error of a streamed pass for a stored row that has no direction (zero, NaN or inf)."""
    what = "a zero vector" if np.all(np.asarray(values, dtype=np.float64) == 0) else "NaN or infinite values"
    return ValueError(f"{modality} row {row} of {uri} is {what}: it has no direction; "
                      "re-import the run (import rejects such rows)")


def _moment_blocks(run: LanceRun, fragment_ids, normalized_only: bool, pair: bool, block_rows: int):
    """The producer of :func:`moment_partial` (runs in its reader thread): per step, one block of
    each modality still scanning, copied from Lance and passed once through the fused kernel
    (decode, check, normalise, sums, paired cosines, centring: :mod:`clipgeo.streaming.kernels`).
    Yields ``({modality: (rows, [(accumulator key, centred, mean, shift, lengths, unit_sum)])},
    paired cosines or None)``; the paired cosines are those of a block whose caption keys
    (``image_id``) equal its image keys (``item_id``) row by row, and pairing stops (None for
    the rest) at the first block where they do not. Blocks live in a ring of :data:`_RING`
    buffers per modality (safe with a prefetch depth of 1: the consumer has finished a block
    before its buffer is written again)."""
    keys = {"image": "item_id", "text": "image_id"} if pair else {"image": None, "text": None}
    fillers = {m: _BlockFiller(run.batches(m, ["vector"] + ([keys[m]] if keys[m] else []), fragment_ids), keys[m])
               for m in ("image", "text")}
    rows, d = max(int(block_rows), run.batch_rows), run.dim
    src = {m: np.empty((rows, d), dtype=run.dtype) for m in fillers}
    ring = [{m: np.empty((rows, d)) for m in fillers} for _ in range(_RING)]
    rring = None if normalized_only else [{m: np.empty((rows, d)) for m in fillers} for _ in range(_RING)]
    zero = np.zeros(d)
    shifts: dict[str, np.ndarray] = {}   # per accumulator: the first block's mean, which later blocks are centred on
    seen = {"image": 0, "text": 0}
    live = ["image", "text"]
    step = 0
    while live:
        out: dict = {}
        got: dict = {}
        for m in list(live):
            n, key = fillers[m].fill(src[m])
            if n == 0:
                live.remove(m)
            else:
                got[m] = (n, key)
        pair_now = pair and len(got) == 2 and got["image"][0] == got["text"][0]
        if pair_now:
            import pyarrow.compute as pc

            pair_now = bool(pc.all(pc.equal(got["image"][1], got["text"][1])).as_py())
        if pair and got and not pair_now:
            pair = False
        cos = None
        image_unit = None   # this step's centred unit image block: the captions' partner rows
        for m, (n, _) in got.items():
            x = ring[step % _RING][m]
            raw = None if normalized_only else rring[step % _RING][m]
            partner = image_unit if (pair_now and m == "text") else None
            ushift, rshift = shifts.get(f"unit_{m}", zero), shifts.get(f"raw_{m}", zero)
            r = _unit_block(src[m], x, n, m, seen[m], run.uri, ushift, raw, rshift, partner,
                            shifts.get("unit_image", zero))
            work = []
            u = x[:n]
            for key, c, total, shift in ((f"raw_{m}", None if raw is None else raw[:n], r["xsum"], rshift),
                                         (f"unit_{m}", u, r["usum"], ushift)):
                if c is None:
                    continue
                mean = total / n
                if key not in shifts:   # the first block: centre it exactly on its own mean
                    c -= mean
                    shifts[key] = shift = mean
                work.append((key, c, mean, shift, r["lengths"] if key.startswith("raw") else r["ulen"], r["usum"]))
            out[m] = (n, work)
            if m == "image":
                image_unit = u
            if partner is not None:
                cos = r["pdot"]
            seen[m] += n
        step += 1
        if got:
            yield out, cos


def moment_partial(uri: str, fragment_ids: Sequence[int] | None = None, *, batch_rows: int | None = None,
                   normalized_only: bool | None = None, block_rows: int = BLOCK_ROWS) -> dict:
    """Moments of the rows of ``fragment_ids`` (all when None) of the table at ``uri``, in **one**
    pass over both modalities: ``{"raw_image", "raw_text", "unit_image", "unit_text"}``
    accumulators (:class:`clipgeo.geometry.ellipsoid.MomentAccumulator`; ``unit_*``: of the
    normalised vectors ``x̂ = x/‖x‖``), and over a whole row-aligned table (an imported release:
    caption row k describes image row k) also ``"paired"`` (:class:`PairedSums`).

    ``normalized_only`` (None: :func:`stored_norms_are_unit`): the run only has normalised
    vectors, and every section measures ``x̂`` (the stored values renormalised in float64), so
    ``raw_m`` **is** ``unit_m`` (the same accumulator: one scatter accumulation per modality,
    not two). Otherwise the raw and the normalised scatters are both accumulated from the same
    decoded block.

    One reader thread (:func:`clipgeo.streaming.threads.prefetch`) scans both modalities in
    lockstep and, per block of ``block_rows`` rows, decodes (float16 → float64 straight into a
    reused buffer), checks, normalises, sums the paired cosines and centres the block on its
    mean, all in place. The scatter products ``CᵀC`` (BLAS ``syrk``) and their merges (Chan et
    al.) run on two :class:`clipgeo.streaming.threads.Lanes`, each product on one BLAS thread on
    a 2-core machine: the products of a step (raw and normalised, image and caption block) are
    spread over the lanes while the reader decodes the next step. Each accumulator receives
    its blocks in scan order, so the result is the one of a single thread. A zero vector or a
    NaN/inf raises ``ValueError`` naming the modality and row (import rejects both, so a stored
    run holds neither). Memory: 3 blocks per modality (6 when raw and normalised differ), 50 MB
    each at 8,192 × 768. Takes and returns only small objects (O(d²)): a Dask task."""
    from clipgeo.streaming.threads import Lanes, prefetch

    run = LanceRun(uri) if batch_rows is None else LanceRun(uri, batch_rows=batch_rows)
    if normalized_only is None:
        normalized_only = stored_norms_are_unit(run)
    out: dict = {}
    for m in ("image", "text"):
        out[f"raw_{m}"] = MomentAccumulator(m, run.dim)
        out[f"unit_{m}"] = out[f"raw_{m}"] if normalized_only else MomentAccumulator(m, run.dim)
    pair = fragment_ids is None
    paired = PairedSums()
    rows = {"image": 0, "text": 0}

    def accumulate(item) -> None:   # one accumulator's product of one step
        key, c, mean, shift, lengths, usum = item
        out[key].add_centred(c, mean, lengths, usum, shift=shift)

    blocks = prefetch(_moment_blocks(run, fragment_ids, normalized_only, pair, block_rows), depth=1)
    with Lanes(2) as lanes:
        try:
            for step, cos in blocks:
                # Lanes.map returns once both modalities' products are done, before the next step is
                # taken from the queue: the reader then writes step s + 2 into the buffer of step s − 1
                # (_RING = 3 a modality), never into one a lane still reads.
                # every accumulator's product of the step is one item (2 to 4), spread over the lanes,
                # so a step with only captions (more captions than images) still fills both
                lanes.map(accumulate, [item for _, work in step.values() for item in work])
                for m, (n, _) in step.items():
                    rows[m] += n
                if cos is not None:
                    paired.add(cos)
        finally:
            blocks.close()
        out["threads"] = lanes.summary()
    if pair and paired.n == rows["image"] == rows["text"]:
        out["paired"] = paired
    return out


def unit_is_raw(moms: dict) -> bool:
    """True when the moments are of a normalised-only run (``raw_*`` is ``unit_*``: :func:`moment_partial`)."""
    return moms["raw_image"] is moms["unit_image"]


def merge_partials(parts: Sequence[dict]) -> dict:
    """Fold partials (over disjoint rows) into one, in the given order (exact up to float64 rounding).
    Keeps a normalised-only run's ``raw_* is unit_*``; ``paired`` sums survive only when every
    part has them."""
    if not parts:
        raise ValueError("no partials to merge")
    alias = unit_is_raw(parts[0])
    out: dict = {}
    for m in ("image", "text"):
        v = parts[0][f"raw_{m}"]
        out[f"raw_{m}"] = MomentAccumulator(v.name, v.d)
        out[f"unit_{m}"] = out[f"raw_{m}"] if alias else MomentAccumulator(v.name, v.d)
    for p in parts:
        if unit_is_raw(p) != alias:
            raise ValueError("partials disagree on whether the run only has normalised vectors")
        for m in ("image", "text"):
            out[f"raw_{m}"].merge(p[f"raw_{m}"])
            if not alias:
                out[f"unit_{m}"].merge(p[f"unit_{m}"])
    if all("paired" in p for p in parts):
        out["paired"] = PairedSums()
        for p in parts:
            out["paired"].merge(p["paired"])
    return out


def gap_from_moments(moms: dict[str, MomentAccumulator]) -> dict[str, float]:
    """``gap = ‖mean x̂_I − mean x̂_T‖``, ``gap_raw = ‖μ_I − μ_T‖``, ``mean_cross_cos = m̂_I·m̂_T``
    (the definitions of :func:`clipgeo.geometry.gap.modality_gap`) from merged moments."""
    ri, rt = moms["raw_image"].finalize(), moms["raw_text"].finalize()
    m_i, m_t = ri.unit_sum / ri.n, rt.unit_sum / rt.n
    return {"gap": float(np.linalg.norm(m_i - m_t)), "gap_raw": float(np.linalg.norm(ri.mean - rt.mean)),
            "mean_cross_cos": float(m_i @ m_t), "n_img": float(ri.n), "n_txt": float(rt.n)}


def spectra_from_moments(moms: dict[str, MomentAccumulator]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``topo_spectra`` / ``topo_spectra_summary`` frames (as :func:`clipgeo.topology.spectra.spectra`:
    covariance eigenvalues λ, collapse on λ) from the merged moments of the normalised vectors;
    the joint scope is the exact merge of the two modalities' scatter accumulators."""
    from clipgeo.topology.spectra import spectra_from_scatter

    return spectra_from_scatter(moms["unit_image"].scatter_accumulator, moms["unit_text"].scatter_accumulator)


def cosine_moments_from_moments(moms: dict) -> dict[str, tuple[float, float, int]]:
    """Exact ``(mean, std, population)`` of the cosine populations of *every* vector of the run
    (:func:`clipgeo.topology.cosines.cosine_moments`) from its merged moments: the normalised
    scatters give ``S`` and ``G``; the unpaired and paired image–text kinds need the paired sums
    of a row-aligned table (``moms["paired"]``) and are left out without them."""
    from clipgeo.topology.cosines import cosine_moments

    p = moms.get("paired")
    return cosine_moments(*cosine_sums_from_moments(moms), None if p is None else (p.cos_sum, p.cos_sq_sum, p.n))


def cosine_sums_from_moments(moms: dict) -> tuple:
    """The :class:`clipgeo.topology.cosines.CosineSums` (image, text) of every vector of the run,
    from its merged moments (the normalised scatters: ``S = n μ``, ``G = M2 + n μ μᵀ``)."""
    from clipgeo.topology.cosines import CosineSums

    sums = []
    for m in ("image", "text"):
        acc = moms[f"unit_{m}"]
        sc = acc.scatter_accumulator
        sums.append(CosineSums.from_scatter(sc.n, sc.mean, sc.scatter, acc.length_sq_sum))
    return sums[0], sums[1]


# ------------------------------------------------------------------------- per-sample pass


def per_sample_plans(moms: dict[str, MomentAccumulator]) -> dict:
    """``{"image": PerSamplePlan, "text": PerSamplePlan}`` from a run's merged moments
    (:func:`clipgeo.geometry.ellipsoid.per_sample_plan` of each modality's raw moments)."""
    out: dict = {m: per_sample_plan(moms[f"raw_{m}"].finalize()) for m in ("image", "text")}
    out["normalized"] = unit_is_raw(moms)   # the pass then reads x̂ (the vectors the moments are of)
    return out


def _stats_path(part: str, modality: str, field: str) -> str:
    return f"{part}.{modality}.{field}.f64"


def _per_sample_reads(run: LanceRun, modality: str, fragment_ids, block_rows: int):
    """The producer of :func:`per_sample_partial` (its reader thread): per block of one modality,
    ``(rows, the rows in the stored dtype, item ids)``, copied from Lance into a ring of
    :data:`_RING` buffers (safe with a prefetch depth of 1: the consumer has finished a block
    before its buffer is written again)."""
    rows, d = max(int(block_rows), run.batch_rows), run.dim
    filler = _BlockFiller(run.batches(modality, ["vector", "item_id"], fragment_ids), "item_id")
    ring = [np.empty((rows, d), dtype=run.dtype) for _ in range(_RING)]
    step = 0
    while True:
        src = ring[step % _RING]
        n, item = filler.fill(src)
        if n == 0:
            return
        yield n, src, item
        step += 1


class _PerSampleRows:
    """One modality's arithmetic of the per-sample pass over rows ``lo:hi`` of a block (a lane's
    half): the fused kernel (:func:`clipgeo.streaming.kernels.per_sample_block`: decode, ``x̂``,
    ``‖x‖``, the three dot products, ``‖x − μ‖``, ``c = x − μ`` in the whitening dtype) and the
    Mahalanobis radius ``‖Rᵀc‖`` (:func:`clipgeo.geometry.ellipsoid.whitening_projection`). The
    scratch rows (``x`` float64, ``c``) are the caller's block, each half writing its own rows."""

    def __init__(self, plan, normalized: bool, rows: int, d: int, dtype) -> None:
        self.plan, self.normalized = plan, normalized
        self.x = np.empty((rows, d))
        self.c = np.empty((rows, d), dtype=plan.whiten.dtype)
        self.vecs = np.ascontiguousarray(np.stack([plan.unit_sum, plan.mu_hat, plan.m_hat]), dtype=np.float64)
        self.mean = np.ascontiguousarray(plan.mean, dtype=np.float64)
        self.decode = np.dtype(dtype) == np.float16
        self.no_bits = np.empty((0, d), dtype=np.uint16)

    def run(self, src: np.ndarray, lo: int, hi: int, out: dict) -> int:
        """Fill ``out``'s rows ``lo:hi``; returns −1, or the block row of the first zero/non-finite row."""
        from clipgeo.streaming import kernels

        if hi <= lo:
            return -1
        x, c = self.x[lo:hi], self.c[lo:hi]
        if self.decode:
            bits = src[lo:hi].view(np.uint16)
        else:
            bits = self.no_bits
            np.copyto(x, src[lo:hi], casting="unsafe")
        bad = kernels.per_sample_block(bits, kernels.F16_TABLE, x, hi - lo, self.decode, self.normalized, self.mean,
                                       self.vecs, c, out["length"][lo:hi], out["radius"][lo:hi], out["dots"][lo:hi])
        if bad >= 0:
            return lo + bad
        proj = whitening_projection(c, self.plan)
        kernels.row_sq_norms(proj, hi - lo, out["mahalanobis"][lo:hi])
        return -1


def per_sample_partial(uri: str, plans: dict, out_path: str, fragment_ids: Sequence | None = None, *,
                       batch_rows: int | None = None, block_rows: int = BLOCK_ROWS) -> dict[str, int]:
    """The per-sample pass over the rows of ``fragment_ids`` (all when None) of the table at ``uri``.

    Writes the Parquet file ``out_path`` (columns ``modality, item_id`` and
    :data:`clipgeo.geometry.ellipsoid.PER_SAMPLE_FIELDS`, image rows then caption rows, each in
    scan order: what DuckDB loads) and, beside it, each statistic of each modality as raw
    float64 (``<out_path>.<modality>.<field>.f64``: what :func:`read_per_sample` reads back into
    preallocated arrays, without Arrow's read buffers). ``plans``: ``{"image": PerSamplePlan,
    "text": PerSamplePlan}`` from the *merged* moments of the whole run
    (:func:`clipgeo.geometry.ellipsoid.per_sample_plan`). Returns rows per modality.

    A reader thread copies each block of ``block_rows`` rows out of Lance; the two halves of the
    block then run side by side on two :class:`clipgeo.streaming.threads.Lanes` (one BLAS thread
    each on a 2-core machine): the fused kernel (:func:`clipgeo.streaming.kernels.per_sample_block`:
    every statistic but the Mahalanobis radius, in one pass over the rows) and the whitening
    product ``Rᵀ(x − μ)`` (float32 by default) of the radius. No row's statistics depend on the
    split. Memory: three stored-dtype blocks, one float64 and one float32 block (13 + 50 + 25 MB
    at 8,192 × 768 float16). Files appear whole or not at all (written under a temporary name,
    then renamed)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    import scipy.linalg.cython_blas  # noqa: F401  scipy's BLAS (the trmm) loaded before Lanes sets its threads

    from clipgeo.geometry.conformity import conformity_from_dots
    from clipgeo.streaming.threads import Lanes, prefetch

    run = LanceRun(uri) if batch_rows is None else LanceRun(uri, batch_rows=batch_rows)
    schema = pa.schema([("modality", pa.string()), ("item_id", pa.string())]
                       + [(f, pa.float64()) for f in PER_SAMPLE_FIELDS])
    counts = {"image": 0, "text": 0}
    raw = {(m, f): _stats_path(out_path, m, f) for m in counts for f in PER_SAMPLE_FIELDS}
    handles = {k: open(v + ".partial", "wb") for k, v in raw.items()}
    normalized = bool(plans.get("normalized", False))
    lanes = Lanes(2)
    try:
        # uncompressed: a scratch part DuckDB loads once and the pass deletes (encoding it cost ~3 s at 2M rows)
        with pq.ParquetWriter(f"{out_path}.partial", schema, compression="none",
                              use_dictionary=["modality"]) as writer:
            for modality in ("image", "text"):
                plan = plans[modality]
                work = _PerSampleRows(plan, normalized, max(int(block_rows), run.batch_rows), run.dim, run.dtype)
                blocks = prefetch(_per_sample_reads(run, modality, fragment_ids, block_rows), depth=1)
                try:
                    for n, src, item in blocks:
                        out = {"length": np.empty(n), "radius": np.empty(n), "dots": np.empty((n, 3)),
                               "mahalanobis": np.empty(n)}
                        half = (n + 1) // 2
                        # the two halves of the block on the two lanes; both done before the next block
                        # is taken from the reader (its ring buffer is then free to be refilled)
                        bad = [b for b in lanes.map(lambda span: work.run(src, *span, out),  # noqa: B023
                                                    ((0, half), (half, n))) if b >= 0]
                        if bad:
                            raise _bad_row(modality, counts[modality] + bad[0], run.uri, src[bad[0]])
                        length, dots = out["length"], out["dots"]
                        stats = {"radius": out["radius"], "length": length,
                                 "mahalanobis": np.sqrt(out["mahalanobis"], out=out["mahalanobis"]),
                                 "conformity": conformity_from_dots(dots[:, 0], length, plan.n),
                                 "cos_to_raw_mean": dots[:, 1] / length, "cos_to_unit_mean": dots[:, 2] / length}
                        cols = [pa.repeat(pa.scalar(modality, pa.string()), n), item.cast(pa.string())]
                        writer.write_batch(pa.RecordBatch.from_arrays(
                            cols + [pa.array(stats[f]) for f in PER_SAMPLE_FIELDS], schema=schema))
                        for f in PER_SAMPLE_FIELDS:
                            stats[f].tofile(handles[(modality, f)])
                        counts[modality] += n
                finally:
                    blocks.close()
                    work = None   # this modality's scratch blocks go before the next one's are made
    finally:
        lanes.close()
        for fh in handles.values():
            fh.close()
    for path in raw.values():
        os.replace(path + ".partial", path)
    os.replace(f"{out_path}.partial", out_path)   # the Parquet part last: it marks the part complete
    pa.default_memory_pool().release_unused()
    return counts


class PerSampleFiles:
    """The statistics of one modality in per-sample parts (in the given order, which must be
    table order), ``n`` rows, read lazily: each field (``radius``, ``mahalanobis``, ``conformity``,
    ``cos_to_raw_mean``, ``cos_to_unit_mean``, ``length``: the attributes of
    :class:`clipgeo.geometry.ellipsoid.PerSample`) is read from the parts' raw float64 files
    into a fresh array every time it is asked for, and not kept. A consumer that uses one or two
    fields at a time (the double-ellipsoid summaries) then holds 8–16 bytes a row, not 48.

    Lengths are checked when it is built: every field file of a part must hold the same number
    of rows, and the parts together exactly ``n``.
    """

    def __init__(self, paths: Sequence[str], modality: str, n: int, rank: int) -> None:
        import os

        self.paths, self.modality, self.n, self.rank = tuple(paths), modality, int(n), int(rank)
        self._rows: list[int] = []
        for path in self.paths:
            sizes = {f: os.path.getsize(_stats_path(path, modality, f)) // 8 for f in PER_SAMPLE_FIELDS}
            m = sizes[PER_SAMPLE_FIELDS[0]]
            if any(v != m for v in sizes.values()):
                raise ValueError(f"{path}: the {modality} statistics files differ in length: {sizes}")
            self._rows.append(m)
            if sum(self._rows) > self.n:
                raise ValueError(f"{modality}: the per-sample parts hold more than the {n} rows the moments counted")
        if sum(self._rows) != self.n:
            raise ValueError(f"{modality}: the per-sample parts hold {sum(self._rows)} rows, the moments counted {n}")

    def field(self, name: str) -> np.ndarray:
        """One statistic of every row, as a new float64 array of ``n`` (read from the files)."""
        if name not in PER_SAMPLE_FIELDS:
            raise AttributeError(f"no per-sample field {name!r}; fields: {PER_SAMPLE_FIELDS}")
        out = np.empty(self.n)
        seen = 0
        for path, m in zip(self.paths, self._rows):
            with open(_stats_path(path, self.modality, name), "rb") as fh:
                got = fh.readinto(memoryview(out[seen:seen + m]).cast("B"))
            if got != 8 * m:
                raise ValueError(f"{path}: {self.modality} {name} changed while being read ({got} of {8 * m} bytes)")
            seen += m
        return out

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.field(name)

    def load(self):
        """Every field in memory at once: a :class:`clipgeo.geometry.ellipsoid.PerSample` (48 bytes a row)."""
        return PerSample(rank=self.rank, **{f: self.field(f) for f in PER_SAMPLE_FIELDS})


def read_per_sample(paths: Sequence[str], modality: str, n: int, rank: int):
    """The statistics of ``modality`` from per-sample parts (in the given order, which must be
    table order) as one :class:`clipgeo.geometry.ellipsoid.PerSample` of ``n`` rows, every field
    in memory (48 bytes a row; :class:`PerSampleFiles` reads one field at a time instead)."""
    return PerSampleFiles(paths, modality, n, rank).load()


# ------------------------------------------------------------------------- paired stream


class Misaligned(Exception):
    """The table's caption rows do not line up with its image rows."""


def aligned_pairs(run: LanceRun, *, block: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row-aligned (normalised image, normalised caption) float64 blocks over the whole run,
    scanning both modalities in lockstep; raises :class:`Misaligned` at the first caption whose
    image is not the image row at the same position (then nothing of the run can be paired this way)."""
    imgs = run.arrays("image", normalized=True, dtype=np.float64, with_ids=True)
    txts = run.arrays("text", normalized=True, dtype=np.float64, with_ids=True)
    buf_i: list = []
    buf_t: list = []
    n_i = n_t = 0
    done_i = done_t = False
    while True:
        while n_i < block and not done_i:
            nxt = next(imgs, None)
            if nxt is None:
                done_i = True
            else:
                buf_i.append((nxt[0], nxt[1]))
                n_i += nxt[0].shape[0]
        while n_t < block and not done_t:
            nxt = next(txts, None)
            if nxt is None:
                done_t = True
            else:
                buf_t.append((nxt[0], nxt[2]))   # a caption's image_id
                n_t += nxt[0].shape[0]
        m = min(n_i, n_t, block) if not (done_i and done_t) else min(n_i, n_t)
        if m == 0:
            if n_i or n_t:
                raise Misaligned(f"{n_i} image rows and {n_t} caption rows left over")
            return
        xi = np.concatenate([b[0] for b in buf_i])
        ii = np.concatenate([b[1] for b in buf_i])
        xt = np.concatenate([b[0] for b in buf_t])
        it = np.concatenate([b[1] for b in buf_t])
        if not np.array_equal(ii[:m], it[:m]):
            raise Misaligned("caption rows do not follow image rows")
        yield xi[:m], xt[:m]
        buf_i, buf_t = [(xi[m:], ii[m:])], [(xt[m:], it[m:])]
        n_i, n_t = n_i - m, n_t - m


def streamed_gap(run: LanceRun, sample: vectors.RunVectors | None = None,
                 moms: dict[str, MomentAccumulator] | None = None) -> dict[str, float]:
    """:func:`clipgeo.geometry.gap.modality_gap`'s values over every vector, streamed.

    ``gap``, ``gap_raw``, ``mean_cross_cos`` from the streamed moments. Paired values
    (``paired_distance``, ``mean_paired_cos``, ``mean_unpaired_cos``) over every pair when the
    table is row-aligned (:func:`aligned_pairs`); otherwise over the pairs of ``sample`` (each
    caption with its image, using the *full-run* mean cosine for the unpaired value), and
    ``n_pairs`` / ``pairs_from`` say which.
    """
    moms = moms if moms is not None else moment_partial(run.uri, batch_rows=run.batch_rows)
    out = gap_from_moments(moms)
    n_i, n_t = int(out["n_img"]), int(out["n_txt"])
    paired = moms.get("paired")
    if paired is not None:            # summed in the moment pass: the table is row-aligned
        cos_sum, dist_sum, n_pairs = paired.cos_sum, paired.dist_sum, paired.n
        out["pairs_from"] = "all"
    else:
        cos_sum = dist_sum = 0.0
        n_pairs = 0
        try:
            # moments merged from row ranges (Dask) have no paired sums: a lockstep scan of float64
            # blocks, smaller batches than the one-modality passes (~100 MB of buffers at d = 768)
            pair_rows = min(run.batch_rows, PAIRED_BATCH_ROWS)
            for a, b in aligned_pairs(LanceRun(run.uri, batch_rows=pair_rows), block=pair_rows):
                cos = np.einsum("ij,ij->i", a, b)
                cos_sum += float(cos.sum())
                dist_sum += float(np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, None)).sum())
                n_pairs += a.shape[0]
            out["pairs_from"] = "all"
        except Misaligned:
            if sample is None:
                return out
            a = normalize_rows(sample.images[sample.text_image_index], "images")
            b = normalize_rows(sample.texts, "texts")
            cos = np.einsum("ij,ij->i", a, b)
            cos_sum, n_pairs = float(cos.sum()), cos.size
            dist_sum = float(np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, None)).sum())
            # a sample that is the whole run holds every pair: its sums are the run's
            complete = sample.images.shape[0] == n_i and sample.texts.shape[0] == n_t
            out["pairs_from"] = "all" if complete else "sample"
    if n_pairs == 0:
        return out
    out["paired_distance"] = dist_sum / n_pairs
    out["mean_paired_cos"] = cos_sum / n_pairs
    if out["pairs_from"] == "all":
        # Σ over every (caption, image) of t̂·û is S_T·S_I (the modality sums); minus the paired terms
        # it is the sum over the unpaired ones (unpaired_cosine_mean)
        out["mean_unpaired_cos"] = unpaired_cosine_mean(moms["raw_image"].finalize().unit_sum,
                                                        moms["raw_text"].finalize().unit_sum, n_i, n_t,
                                                        cos_sum, n_pairs)
    else:  # the sample's pairs against the whole run's sums: not an identity, leave it out
        out["mean_unpaired_cos"] = None
    out["n_pairs"] = float(n_pairs)
    return out


def unpaired_cosine_mean(sum_img: np.ndarray, sum_txt: np.ndarray, n_img: int, n_txt: int,
                         paired_sum: float, n_pairs: int) -> float:
    """Mean cosine over the unpaired (caption, image) pairs, exactly, from the modality sums.

    With ``S_I = Σ_i û_i``, ``S_T = Σ_c t̂_c`` and ``P = Σ_c t̂_c·û_{g(c)}`` (the paired terms,
    one per caption): ``Σ_{c, i ≠ g(c)} t̂_c·û_i = S_T·S_I − P`` over ``n_T n_I − n_pairs`` pairs,
    so ``mean = (S_T·S_I − P) / (n_T n_I − n_pairs)`` (NaN when there is no unpaired pair).

    >>> u = np.eye(2); t = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> unpaired_cosine_mean(u.sum(0), t.sum(0), 2, 2, 2.0, 2)   # the two unpaired cosines are 0
    0.0
    """
    n_un = n_img * n_txt - n_pairs
    return float((float(np.dot(sum_txt, sum_img)) - paired_sum) / n_un) if n_un > 0 else float("nan")


# ---------------------------------------------------------------------------- retrieval


def run_retrieval(run: LanceRun | None, rv: vectors.RunVectors, *, sample: SampleInfo | None, seed: int = 0,
                  full_gallery_max: int = 50_000, sub_gallery_images: int = 5_000, draws: int = 10,
                  normalized_only: bool = False, pool: vectors.RunVectors | None = None
                  ) -> tuple[pl.DataFrame, dict]:
    """Per-query ranks (``direction, query_id, rank, gallery``) and the definition used.

    * ``full_gallery`` (at most ``full_gallery_max`` images): every caption against every image
      and every image against every caption (:func:`clipgeo.retrieval.retrieval_ranks`).
    * ``sub_gallery`` (more images): the images in hash-key order (:mod:`clipgeo.streaming.reader`) cut into
      ``min(draws, N // sub_gallery_images)`` disjoint galleries of ``sub_gallery_images`` images
      each, with all their captions; every query is ranked within its own gallery (CLIP_benchmark's
      5k COCO test is the reference size). Each gallery is a uniform random subset; recall is
      reported per gallery and as mean ± std over them (:func:`gallery_summary`). ``pool``: the
      hash sample of at least ``draws × sub_gallery_images`` images with this ``seed``, when the
      caller already drew it (the measure stage draws it with its sample); else it is drawn here.

    Memory: the largest of the full gallery (at most ``full_gallery_max`` images) and
    ``draws × sub_gallery_images`` images, with their captions; never an N×N score matrix
    (blocked products, :mod:`clipgeo.retrieval`).
    """
    n_img = sample.population_images if sample is not None else rv.images.shape[0]
    if n_img <= full_gallery_max:
        full = rv if (sample is None or sample.complete) else run.sample(n_img, seed, normalized=normalized_only)[0]
        if sample is not None and full.texts.shape[0] != sample.population_texts:
            raise RuntimeError(f"{sample.population_texts - full.texts.shape[0]} captions have no image vector in the run; "
                               "their queries cannot be ranked (re-embed or import the run again)")
        galleries = [(full, 0)]
        definition = "full_gallery"
        statement = f"full gallery: exact ranks against all {n_img:,} images / {full.texts.shape[0]:,} captions"
    else:
        k = max(1, min(draws, n_img // sub_gallery_images))
        need = k * sub_gallery_images
        if rv.images.shape[0] >= need:
            pool = rv
        elif pool is None or pool.images.shape[0] < need:
            pool = run.sample(need, seed, normalized=normalized_only)[0]
        idx = pool.text_image_index
        galleries = []
        for g in range(k):
            lo, hi = g * sub_gallery_images, (g + 1) * sub_gallery_images
            t_rows = np.flatnonzero((idx >= lo) & (idx < hi))
            galleries.append((vectors.RunVectors(pool.run_id, pool.image_ids[lo:hi], pool.images[lo:hi],
                                                 pool.sample_ids[t_rows], pool.text_image_ids[t_rows],
                                                 pool.texts[t_rows], pool.normalized_only), g))
        definition = "sub_gallery"
        statement = (f"sub-galleries: {k} disjoint galleries of {sub_gallery_images:,} images (with all their captions) "
                     f"drawn by blake2b(seed={seed}:image_id) key from {n_img:,} images; each query ranked exactly "
                     "within its own gallery; recall = mean over galleries")
    from clipgeo.streaming.threads import Lanes

    frames = []
    # galleries side by side on two lanes (numpy releases the GIL in the products and the masks);
    # each gallery's ranks are those of one call, whatever the lanes
    with Lanes(2 if len(galleries) > 1 else 1) as lanes:
        ranked = lanes.map(lambda gv_g: retrieval_ranks(gv_g[0].images, gv_g[0].texts, gv_g[0].text_image_index),
                           galleries)
        threads = lanes.summary()
    for (gv, g), rr in zip(galleries, ranked):   # rr: strict ranks + exact-tie counts
        frames += [pl.DataFrame({"direction": "text_to_image", "query_id": gv.sample_ids.tolist(),
                                 "rank": rr.t2i.astype(np.int32), "ties": rr.t2i_ties.astype(np.int32), "gallery": g}),
                   pl.DataFrame({"direction": "image_to_text", "query_id": gv.image_ids.tolist(),
                                 "rank": rr.i2t.astype(np.int32), "ties": rr.i2t_ties.astype(np.int32), "gallery": g})]
    info = {"definition": definition, "statement": statement, "n_galleries": len(galleries),
            "gallery_images": max(gv.images.shape[0] for gv, _ in galleries),
            "gallery_texts": max(gv.texts.shape[0] for gv, _ in galleries), "threads": threads}
    return pl.concat(frames), info


def gallery_summary(ranks: pl.DataFrame, info: dict, ks: Sequence[int] = KS) -> pl.DataFrame:
    """``retrieval_gallery`` rows: per gallery, recall@k and recall_pessimistic@k by the one
    definition, :func:`clipgeo.retrieval.recall_at_k` (``rank < k``; with the exact-tie counts,
    ``rank + ties < k``: what ``sql/transforms/retrieval_recall.sql`` also computes), then mean /
    std / min / max of recall@k over galleries, the mean of the pessimistic one and the queries
    with a tie. Ranks without a ``ties`` column count as tie-free."""
    from clipgeo.retrieval import recall_at_k

    rows = []
    has_ties = "ties" in ranks.columns
    for (direction, gallery), part in ranks.group_by("direction", "gallery", maintain_order=True):
        r = part["rank"].to_numpy().astype(np.int64)
        t = part["ties"].fill_null(0).to_numpy().astype(np.int64) if has_ties else np.zeros_like(r)
        rec = recall_at_k(r, ks, t)
        for k in ks:
            rows.append({"direction": direction, "gallery": gallery, "k": int(k), "recall": rec[f"recall@{int(k)}"],
                         "pess": rec[f"recall_pessimistic@{int(k)}"], "n": r.size, "tied": int(np.count_nonzero(t))})
    per = pl.DataFrame(rows)
    return (per.group_by("direction", "k").agg(
                pl.col("recall").mean().alias("recall_mean"), pl.col("recall").std(ddof=0).alias("recall_std"),
                pl.col("recall").min().alias("recall_min"), pl.col("recall").max().alias("recall_max"),
                pl.col("pess").mean().alias("recall_pessimistic_mean"), pl.col("tied").sum().alias("n_tied_queries"),
                pl.col("n").sum().alias("n_queries"), pl.len().alias("n_galleries"))
            .with_columns(pl.lit(info["definition"]).alias("definition"),
                          pl.lit(info["gallery_images"]).alias("gallery_images"),
                          pl.lit(info["gallery_texts"]).alias("gallery_texts"),
                          pl.lit(info["statement"]).alias("statement"),
                          pl.col("k").cast(pl.Int32), pl.col("n_galleries").cast(pl.Int32))
            .sort("direction", "k"))


def query_sample_ranks(run: LanceRun, rv: vectors.RunVectors, n_queries: int, *, device: str = "cpu",
                       dtype: str = "float32") -> tuple[pl.DataFrame, dict]:
    """Exact ranks of a query sample against the **full** gallery, the gallery streamed from Lance.

    Queries: the first ``n_queries`` images of the hash-ordered sample ``rv`` (image → text) and
    the first caption of each (text → image). Text → image: ``#{images j : s(c, j) > s(c, g(c))}``
    over every image of the run; image → text: ``#{captions c of other images : s(i, c) > max over
    i's captions}`` over every caption of the run. ``rv`` must hold all captions of its images
    (:meth:`LanceRun.sample` does). Cost ``O(n_queries × N × d)``; memory one gallery batch.
    """
    q = min(n_queries, rv.images.shape[0])
    img_ids = rv.image_ids[:q]
    idx = rv.text_image_index
    imgn = normalize_rows(rv.images[:q], "images")
    first_of = np.full(rv.images.shape[0], -1, dtype=np.int64)
    pair_img, pair_cap = first_caption_pairs(idx, rv.images.shape[0])
    first_of[pair_img] = pair_cap
    first_cap = first_of[:q]
    if (first_cap < 0).any():
        raise ValueError(f"query sample: image {img_ids[int(np.flatnonzero(first_cap < 0)[0])]} has no caption in the sample")
    capn = normalize_rows(rv.texts[first_cap], "texts")
    allcap = normalize_rows(rv.texts, "texts")
    # image -> text: the correct score is the best of the image's captions
    best_cap = np.empty(q, dtype=np.int64)
    for i in range(q):
        rows = np.flatnonzero(idx == i)
        best_cap[i] = rows[np.argmax(allcap[rows] @ imgn[i])]

    def gallery(modality: str, owner_of_query: np.ndarray):
        for mat, item, owner in run.arrays(modality, normalized=True, dtype=np.float32, with_ids=True):
            key = item if modality == "image" else owner
            mask = key[None, :] == owner_of_query[:, None]
            yield mat, mask

    t2i, t2i_ties = blocked_query_ranks(capn, imgn, gallery("image", img_ids), device=device, dtype=dtype,
                                        with_ties=True)
    i2t, i2t_ties = blocked_query_ranks(imgn, allcap[best_cap], gallery("text", img_ids), device=device, dtype=dtype,
                                        with_ties=True)
    ranks = pl.concat([
        pl.DataFrame({"direction": "text_to_image", "query_id": rv.sample_ids[first_cap].tolist(), "rank": t2i.astype(np.int32),
                      "ties": t2i_ties.astype(np.int32), "gallery": 0}),
        pl.DataFrame({"direction": "image_to_text", "query_id": img_ids.tolist(), "rank": i2t.astype(np.int32),
                      "ties": i2t_ties.astype(np.int32), "gallery": 0}),
    ])
    n_img, n_txt = run.count("image"), run.count("text")
    info = {"definition": "query_sample", "n_galleries": 1, "gallery_images": n_img, "gallery_texts": n_txt,
            "statement": (f"query sample: {q:,} images (smallest blake2b(seed:image_id) keys) and the first caption of each, "
                          f"ranked exactly against the full gallery of {n_img:,} images / {n_txt:,} captions "
                          f"(streamed; {device} {dtype} block scores, float64 re-scoring within the rounding band: "
                          "exact, ties counted)")}
    return ranks, info


def query_band(dtype: str, d: int) -> float:
    """Rounding band of a block score whose inputs are unit vectors rounded to ``dtype`` and whose
    products are summed in float32 (numpy on CPU; torch on CUDA with reduced-precision fp16
    reductions switched off, as :func:`blocked_query_ranks` does).

    ``float32``: :func:`clipgeo.retrieval.rounding_band` (``4 (d + 2) u₃₂ / 2``, the one used by
    :func:`clipgeo.retrieval.retrieval_ranks`). ``float16``: rounding both inputs moves a cosine
    of unit vectors by at most ``2 u₁₆ + u₁₆²`` (Cauchy–Schwarz), the float32 sum by
    ``(d + 2) u₃₂``, a float16 result by ``u₁₆``; twice their sum. (``u`` = unit roundoff.)
    """
    if dtype == "float16":
        u16, u32 = float(np.finfo(np.float16).eps) / 2, float(np.finfo(np.float32).eps) / 2
        return 2.0 * (3 * u16 + u16 * u16 + (d + 2) * u32)
    return rounding_band(np.float32, d)


def blocked_query_ranks(queries: np.ndarray, correct: np.ndarray, gallery_blocks, *, device: str = "cpu",
                        dtype: str = "float32", with_ties: bool = False):
    """Exact ranks (and exact-tie counts) of a query sample against a full gallery given in blocks.

    ``queries (q, d)`` and ``correct (q, d)`` (the correct item of each query);
    ``gallery_blocks`` yields ``(block (g, d), is_correct (q, g) bool or None)``. With every
    vector normalised in float64 (``x / ‖x‖``) and ``s(a, b)`` their float64 dot product
    (row-wise, the one formula for every compared score):
    ``rank_q = #{j not correct : s(q, j) > s(q, correct_q)}`` and ``ties_q = #{… = …}`` (strictly
    higher, no tolerance; the definition of :func:`clipgeo.retrieval.retrieval_ranks`).

    Exact without a float64 product of every pair: block scores are computed in ``dtype``
    (``float16`` / ``float32``; with torch on ``device="cuda"``, else numpy), and every item
    whose block score lies within :func:`query_band` of the correct score is re-scored in
    float64; items outside the band are decided by the block score. Memory ``q × g`` per block.
    Returns the ranks (int64), or ``(ranks, ties)`` with ``with_ties``.
    """
    q64, c64 = normalize_rows(queries, "queries"), normalize_rows(correct, "correct")
    own = np.einsum("ij,ij->i", q64, c64)
    band = query_band(dtype, q64.shape[1])
    ranks = np.zeros(q64.shape[0], dtype=np.int64)
    ties = np.zeros(q64.shape[0], dtype=np.int64)
    low_dt = np.float16 if dtype == "float16" else np.float32
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        tdt = torch.float16 if dtype == "float16" else torch.float32
        tq = torch.from_numpy(q64.astype(low_dt)).to(device=device, dtype=tdt)
        t_hi = torch.from_numpy(own + band).to(device)
        t_lo = torch.from_numpy(own - band).to(device)
        flag = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    else:
        qd = q64.astype(low_dt).astype(np.float32)
    try:
        for block, is_correct in gallery_blocks:
            b64 = normalize_rows(block, "gallery")
            if cuda:
                tb = torch.from_numpy(b64.astype(low_dt)).to(device=device, dtype=tdt)
                sc = (tq @ tb.T).double()
                above = sc > t_hi[:, None]
                near = (sc >= t_lo[:, None]) & ~above
                if is_correct is not None:
                    mask = torch.from_numpy(np.asarray(is_correct)).to(device)
                    above &= ~mask
                    near &= ~mask
                ranks += above.sum(1).cpu().numpy()
                r, c = (t.cpu().numpy() for t in torch.nonzero(near, as_tuple=True))
            else:
                sc = qd @ b64.astype(low_dt).astype(np.float32).T
                above = sc > (own + band)[:, None]
                near = (sc >= (own - band)[:, None]) & ~above
                if is_correct is not None:
                    above &= ~is_correct
                    near &= ~is_correct
                ranks += above.sum(1)
                r, c = np.nonzero(near)
            if r.size:
                s64 = np.einsum("ij,ij->i", q64[r], b64[c])
                ranks += np.bincount(r[s64 > own[r]], minlength=ranks.size)
                ties += np.bincount(r[s64 == own[r]], minlength=ranks.size)
    finally:
        if cuda:
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = flag
    return (ranks, ties) if with_ties else ranks
