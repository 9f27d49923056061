"""Measurement sections of "The Double-Ellipsoid Geometry of CLIP" (tables ``geo_*``,
``sql/schema/005_geometry.sql``), computed on raw vectors; on runs that only have
normalised vectors they are computed on those and labelled ``vectors = 'normalized'``."""

from __future__ import annotations

import numpy as np
import polars as pl

from clipgeo.geometry.ellipsoid import double_ellipsoid_suite
from clipgeo.geometry.shift import origin_shift
from clipgeo.stages.sections import RunData, Section

# CLIP's maximum logit scale, used when a run's model has none recorded (imported vectors).
FALLBACK_LOGIT_SCALE = 100.0


def _kind(d: RunData) -> str:
    return "normalized" if d.normalized_only else "raw"


def _suite(d: RunData) -> dict:
    run, kind = d.run_id, _kind(d)
    if d.stream is not None:  # every vector, streamed from Lance
        from clipgeo.streaming.partials import PerSampleFiles
        from clipgeo.store.catalog import ParquetRows

        moms = d.moments()  # pass 1 shared with the gap and spectra sections (and mergeable across workers)
        mi, mt = moms["raw_image"].finalize(), moms["raw_text"].finalize()
        parts, plans = d.per_sample_parts()  # pass 2, batch by batch into Parquet parts (or done on workers)
        # read field by field when the summaries ask (8-16 B a vector at a time, not 48)
        ps = (PerSampleFiles(parts, "image", mi.n, plans["image"].rank),
              PerSampleFiles(parts, "text", mt.n, plans["text"].rank))
        res = double_ellipsoid_suite(d.stream.chunks("image"), d.stream.chunks("text"), keep_per_sample=False,
                                     moments_in=(mi, mt), per_sample_in=ps)
        del ps
        per = ParquetRows(tuple(parts), {"run_id": run})   # moved into DuckDB from the files
    else:
        res = double_ellipsoid_suite(d.rv.images, d.rv.texts, keep_per_sample=True)
        img_ids, txt_ids = d.rv.image_ids, d.rv.sample_ids
        mods = res.per_sample["modality"].to_numpy()
        rows = res.per_sample["row"].to_numpy()
        item = np.empty(len(rows), dtype=object)
        is_img = mods == "image"
        item[is_img] = img_ids[rows[is_img]]
        item[~is_img] = txt_ids[rows[~is_img]]
        per = res.per_sample.with_columns(pl.Series("item_id", item.astype(str)), pl.lit(run).alias("run_id")).drop("row")
    tag = lambda df: df.with_columns(pl.lit(run).alias("run_id"))  # noqa: E731
    return {
        "geo_modality": tag(res.modality).with_columns(pl.lit(kind).alias("vectors")),
        "geo_cross": [{"run_id": run, "vectors": kind, **res.cross}],
        "geo_subspaces": tag(res.subspaces),
        "geo_principal_angles": tag(res.principal_angles),
        "geo_eigenvalues": tag(res.eigenvalues),
        "geo_tilt": tag(res.tilt),
        "geo_histograms": tag(res.histograms),
        "geo_per_sample": per,
    }


def _shift(d: RunData) -> dict:
    scale = float(d.logit_scale) if d.logit_scale else FALLBACK_LOGIT_SCALE
    mus = {}
    if d.stream is not None and d.sample is not None and not d.sample.complete:
        # on the sample, but shifted by the means of every vector (streamed)
        moms = d.moments()
        mus = {"mu_img": moms["raw_image"].finalize().mean, "mu_txt": moms["raw_text"].finalize().mean}
    df = origin_shift(d.rv.images, d.rv.texts, d.idx, logit_scale=scale, seed=d.seed, **mus)
    return {"geo_origin_shift": df.with_columns(pl.lit(d.run_id).alias("run_id"), pl.lit(_kind(d)).alias("vectors"))}


SECTIONS = [
    Section("double_ellipsoid", ("geo_modality", "geo_cross", "geo_subspaces", "geo_principal_angles", "geo_eigenvalues",
                                 "geo_tilt", "geo_histograms", "geo_per_sample"), _suite),
    Section("origin_shift", ("geo_origin_shift",), _shift),
]
