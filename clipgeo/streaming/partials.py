"""Measuring runs of millions of vectors: streamed aggregates, mergeable partials, retrieval galleries.

* :func:`moment_partial` / :func:`merge_partials`: per fragment range, the float64 moments of
  each modality's raw and normalised vectors (:class:`clipgeo.geometry.ellipsoid.MomentAccumulator`:
  count, mean, centred scatter, ``Σ‖x‖``, ``Σ x̂``), merged exactly (Chan et al.'s pairwise
  update). Partials are independent, so they can run anywhere (Dask workers, see
  ``flows/measure_dist.py``); :func:`gap_from_moments` and :func:`spectra_from_moments` turn the
  merged moments into the ``modality_gap`` and ``topo_spectra`` rows.
* :func:`per_sample_partial` / :func:`read_per_sample`: the per-sample pass (radius, Mahalanobis
  radius, conformity, cosines to the means, length: :func:`clipgeo.geometry.ellipsoid.per_sample_chunk`)
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
* :func:`blocked_query_ranks`: exact ranks of a query sample against the full gallery, streamed
  in gallery blocks (torch on CUDA in fp16/fp32 when asked, numpy otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import polars as pl

from clipgeo.geometry.ellipsoid import (PER_SAMPLE_FIELDS, MomentAccumulator, PerSample, per_sample_chunk,
                                        per_sample_plan)
from clipgeo.retrieval import retrieval_ranks
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


def moment_partial(uri: str, fragment_ids: Sequence[int] | None = None, *, batch_rows: int | None = None
                   ) -> dict[str, MomentAccumulator]:
    """Moments of the rows of ``fragment_ids`` (all when None) of the table at ``uri``:
    ``{"raw_image", "raw_text", "unit_image", "unit_text"}`` accumulators (``unit_*``: of the
    normalised vectors ``x/‖x‖``). Takes and returns only small objects (O(d²)): a Dask task."""
    run = LanceRun(uri) if batch_rows is None else LanceRun(uri, batch_rows=batch_rows)
    out: dict[str, MomentAccumulator] = {}
    for modality in ("image", "text"):
        raw = MomentAccumulator(modality, run.dim)
        unit = MomentAccumulator(modality, run.dim)
        for x in run.arrays(modality, dtype=np.float64, fragment_ids=fragment_ids):
            raw.update(x)
            unit.update(x / np.sqrt(np.einsum("ij,ij->i", x, x))[:, None])
        out[f"raw_{modality}"] = raw
        out[f"unit_{modality}"] = unit
    return out


def merge_partials(parts: Sequence[dict[str, MomentAccumulator]]) -> dict[str, MomentAccumulator]:
    """Fold partials (over disjoint rows) into one, in the given order (exact up to float64 rounding)."""
    if not parts:
        raise ValueError("no partials to merge")
    out = {k: MomentAccumulator(v.name, v.d) for k, v in parts[0].items()}
    for p in parts:
        for k, acc in p.items():
            out[k].merge(acc)
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


# ------------------------------------------------------------------------- per-sample pass


def per_sample_plans(moms: dict[str, MomentAccumulator]) -> dict:
    """``{"image": PerSamplePlan, "text": PerSamplePlan}`` from a run's merged moments
    (:func:`clipgeo.geometry.ellipsoid.per_sample_plan` of each modality's raw moments)."""
    return {m: per_sample_plan(moms[f"raw_{m}"].finalize()) for m in ("image", "text")}


def _stats_path(part: str, modality: str, field: str) -> str:
    return f"{part}.{modality}.{field}.f64"


def per_sample_partial(uri: str, plans: dict, out_path: str, fragment_ids: Sequence | None = None, *,
                       batch_rows: int | None = None) -> dict[str, int]:
    """The per-sample pass over the rows of ``fragment_ids`` (all when None) of the table at ``uri``.

    Writes the Parquet file ``out_path`` (columns ``modality, item_id`` and
    :data:`clipgeo.geometry.ellipsoid.PER_SAMPLE_FIELDS`, image rows then caption rows, each in
    scan order: what DuckDB loads) and, beside it, each statistic of each modality as raw
    float64 (``<out_path>.<modality>.<field>.f64``: what :func:`read_per_sample` reads back into
    preallocated arrays, without Arrow's read buffers). ``plans``: ``{"image": PerSamplePlan,
    "text": PerSamplePlan}`` from the *merged* moments of the whole run
    (:func:`clipgeo.geometry.ellipsoid.per_sample_plan`). Returns rows per modality. Memory: one
    batch. Files appear whole or not at all (written under a temporary name, then renamed)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    run = LanceRun(uri) if batch_rows is None else LanceRun(uri, batch_rows=batch_rows)
    schema = pa.schema([("modality", pa.string()), ("item_id", pa.string())]
                       + [(f, pa.float64()) for f in PER_SAMPLE_FIELDS])
    counts = {"image": 0, "text": 0}
    raw = {(m, f): _stats_path(out_path, m, f) for m in counts for f in PER_SAMPLE_FIELDS}
    handles = {k: open(v + ".partial", "wb") for k, v in raw.items()}
    try:
        with pq.ParquetWriter(f"{out_path}.partial", schema) as writer:
            for modality in ("image", "text"):
                plan = plans[modality]
                for x, item, _owner in run.arrays(modality, dtype=np.float64, fragment_ids=fragment_ids, with_ids=True):
                    stats = per_sample_chunk(x, plan, offset=counts[modality])
                    cols = [pa.array([modality] * x.shape[0], pa.string()), pa.array(item, pa.string())]
                    writer.write_batch(pa.RecordBatch.from_arrays(
                        cols + [pa.array(stats[f]) for f in PER_SAMPLE_FIELDS], schema=schema))
                    for f in PER_SAMPLE_FIELDS:
                        np.ascontiguousarray(stats[f], dtype=np.float64).tofile(handles[(modality, f)])
                    counts[modality] += x.shape[0]
    finally:
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
    cos_sum = dist_sum = 0.0
    n_pairs = 0
    try:
        # two lockstep scans of float64 blocks: smaller batches than the one-modality passes, so the
        # pair of buffers stays ~100 MB at d = 768 (16,384-row batches made this the measure peak)
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
        a = vectors.normalize_chunk(sample.images[sample.text_image_index], dtype=np.float64)
        b = vectors.normalize_chunk(sample.texts, dtype=np.float64)
        cos = np.einsum("ij,ij->i", a, b)
        cos_sum, n_pairs = float(cos.sum()), cos.size
        dist_sum = float(np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, None)).sum())
        out["pairs_from"] = "sample"
    if n_pairs == 0:
        return out
    mean_paired = cos_sum / n_pairs
    out["paired_distance"] = dist_sum / n_pairs
    out["mean_paired_cos"] = mean_paired
    if out["pairs_from"] == "all":
        total = n_i * n_t * out["mean_cross_cos"]
        n_un = n_i * n_t - n_pairs
        out["mean_unpaired_cos"] = float((total - cos_sum) / n_un) if n_un > 0 else float("nan")
    else:  # the sample's pairs against the whole run's mean cosine: not an identity, leave it out
        out["mean_unpaired_cos"] = None
    out["n_pairs"] = float(n_pairs)
    return out


# ---------------------------------------------------------------------------- retrieval


def run_retrieval(run: LanceRun | None, rv: vectors.RunVectors, *, sample: SampleInfo | None, seed: int = 0,
                  full_gallery_max: int = 50_000, sub_gallery_images: int = 5_000, draws: int = 10,
                  normalized_only: bool = False) -> tuple[pl.DataFrame, dict]:
    """Per-query ranks (``direction, query_id, rank, gallery``) and the definition used.

    * ``full_gallery`` (at most ``full_gallery_max`` images): every caption against every image
      and every image against every caption (:func:`clipgeo.retrieval.retrieval_ranks`).
    * ``sub_gallery`` (more images): the images in hash-key order (:mod:`clipgeo.streaming.reader`) cut into
      ``min(draws, N // sub_gallery_images)`` disjoint galleries of ``sub_gallery_images`` images
      each, with all their captions; every query is ranked within its own gallery (CLIP_benchmark's
      5k COCO test is the reference size). Each gallery is a uniform random subset; recall is
      reported per gallery and as mean ± std over them (:func:`gallery_summary`).

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
        pool = rv if rv.images.shape[0] >= need else run.sample(need, seed, normalized=normalized_only)[0]
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
    frames = []
    for gv, g in galleries:
        rr = retrieval_ranks(gv.images, gv.texts, gv.text_image_index)  # strict ranks + exact-tie counts
        frames += [pl.DataFrame({"direction": "text_to_image", "query_id": gv.sample_ids.tolist(),
                                 "rank": rr.t2i.astype(np.int32), "ties": rr.t2i_ties.astype(np.int32), "gallery": g}),
                   pl.DataFrame({"direction": "image_to_text", "query_id": gv.image_ids.tolist(),
                                 "rank": rr.i2t.astype(np.int32), "ties": rr.i2t_ties.astype(np.int32), "gallery": g})]
    info = {"definition": definition, "statement": statement, "n_galleries": len(galleries),
            "gallery_images": max(gv.images.shape[0] for gv, _ in galleries),
            "gallery_texts": max(gv.texts.shape[0] for gv, _ in galleries)}
    return pl.concat(frames), info


def gallery_summary(ranks: pl.DataFrame, info: dict, ks: Sequence[int] = KS) -> pl.DataFrame:
    """``retrieval_gallery`` rows: recall@k per gallery, then mean / std / min / max over galleries."""
    per = (ranks.join(pl.DataFrame({"k": list(ks)}), how="cross")
           .group_by("direction", "k", "gallery")
           .agg((pl.col("rank") < pl.col("k")).mean().alias("recall"), pl.len().alias("n")))
    return (per.group_by("direction", "k").agg(
                pl.col("recall").mean().alias("recall_mean"), pl.col("recall").std(ddof=0).alias("recall_std"),
                pl.col("recall").min().alias("recall_min"), pl.col("recall").max().alias("recall_max"),
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
    imgn = vectors.normalize_chunk(rv.images[:q], dtype=np.float64)
    first_cap = np.array([np.flatnonzero(idx == i)[0] for i in range(q)], dtype=np.int64)
    capn = vectors.normalize_chunk(rv.texts[first_cap], dtype=np.float64)
    allcap = vectors.normalize_chunk(rv.texts, dtype=np.float64)
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

    t2i = blocked_query_ranks(capn, imgn, gallery("image", img_ids), device=device, dtype=dtype)
    i2t = blocked_query_ranks(imgn, allcap[best_cap], gallery("text", img_ids), device=device, dtype=dtype)
    ranks = pl.concat([
        pl.DataFrame({"direction": "text_to_image", "query_id": rv.sample_ids[first_cap].tolist(), "rank": t2i.astype(np.int32),
                      "gallery": 0}),
        pl.DataFrame({"direction": "image_to_text", "query_id": img_ids.tolist(), "rank": i2t.astype(np.int32), "gallery": 0}),
    ])
    n_img, n_txt = run.count("image"), run.count("text")
    info = {"definition": "query_sample", "n_galleries": 1, "gallery_images": n_img, "gallery_texts": n_txt,
            "statement": (f"query sample: {q:,} images (smallest blake2b(seed:image_id) keys) and the first caption of each, "
                          f"ranked exactly against the full gallery of {n_img:,} images / {n_txt:,} captions "
                          f"(streamed, {device} {dtype if device.startswith('cuda') else 'float64'} scores)")}
    return ranks, info


def blocked_query_ranks(queries: np.ndarray, correct: np.ndarray, gallery_blocks, *, device: str = "cpu",
                        dtype: str = "float32") -> np.ndarray:
    """Exact ranks of a query sample against a full gallery given in blocks.

    ``queries (q, d)`` and ``correct (q, d)`` (the correct item of each query) are normalised;
    ``gallery_blocks`` yields ``(block (g, d) normalised, is_correct (q, g) bool or None)``.
    ``rank_q = #{gallery items j : s(q, j) > s(q, correct_q)}`` with every correct item excluded
    (strictly higher, no tolerance: the caller passes the exact correct score's precision).
    Scores are computed on ``device`` (``"cuda"``: torch, blocked fp16 or fp32 matmul) or with
    numpy; memory is ``q × g`` per block, never ``q × N``.
    """
    q = np.asarray(queries, dtype=np.float32)
    own = np.einsum("ij,ij->i", q.astype(np.float64), np.asarray(correct, dtype=np.float64))
    ranks = np.zeros(q.shape[0], dtype=np.int64)
    if device.startswith("cuda"):
        import torch

        tdt = torch.float16 if dtype == "float16" else torch.float32
        tq = torch.from_numpy(q).to(device=device, dtype=tdt)
        # the own score in the scoring precision, so an item scoring exactly as the correct one is not "higher"
        thr = (tq.float() * torch.from_numpy(np.asarray(correct, np.float32)).to(device).to(tdt).float()).sum(1)
        for block, is_correct in gallery_blocks:
            tb = torch.from_numpy(np.asarray(block, np.float32)).to(device=device, dtype=tdt)
            s = (tq @ tb.T).float()
            above = s > thr[:, None]
            if is_correct is not None:
                above &= ~torch.from_numpy(is_correct).to(device)
            ranks += above.sum(1).cpu().numpy()
        return ranks
    for block, is_correct in gallery_blocks:
        s = q.astype(np.float64) @ np.asarray(block, dtype=np.float64).T
        above = s > own[:, None]
        if is_correct is not None:
            above &= ~is_correct
        ranks += above.sum(1)
    return ranks
