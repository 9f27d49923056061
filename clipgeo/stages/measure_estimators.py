"""Measurement sections for the estimators the literature compares (issue 25): the relative
modality gap and L2I (``gap_estimators``), intrinsic dimension by TwoNN and the Levina–Bickel
MLE, globally and per HDBSCAN cluster, beside the spectrum-based local dimension of Fig. 15
(``intrinsic_dim``, ``intrinsic_dim_correlation``), and bootstrap intervals of the headline
figures (``bootstrap_ci``). Tables: ``sql/schema/013_reference_values.sql``.

All three run on the run's hash sample ``d.rv`` (every vector for runs of at most
``SAMPLE_IMAGES`` images), which ``measure_samples`` records per section.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from clipgeo.core.arrays import normalize_rows
from clipgeo.core.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_ci, bootstrap_cis
from clipgeo.core.config import usable_cores
from clipgeo.core.stats import effective_rank_lambda_entropy, effective_rank_sigma_entropy
from clipgeo.geometry.gap_estimators import l2i, relative_modality_gap
from clipgeo.stages.measure_topology import run_ranks, umap_pairs
from clipgeo.stages.sections import RunData, Section, Skip
from clipgeo.topology.intrinsic_dim import MLE_K, knn_distances, library_dimension, mle_levina_bickel, twonn

#: Pairs (image, first caption) the global intrinsic dimension is estimated on.
ID_PAIRS = 2500
#: A cluster needs this many points for a per-cluster estimate (MLE: k + 1 at the least).
ID_MIN_POINTS = 2 * MLE_K
#: Images (with their captions) the effective-rank bootstrap resamples, and its resample count: a d x d
#: weighted scatter of the rows a resample drew (one syrk) and an eigendecomposition per resample
#: (d = 768, 1,000 images with one caption each: about 0.1 CPU-s per resample).
BOOT_SPECTRUM_IMAGES = 1000
BOOT_SPECTRUM_RESAMPLES = 100


def _gap_estimators(d: RunData) -> dict:
    """RMG and L2I on the sample, the two side by side on two lanes (each a float64 pass over
    the pairs in numpy, which releases the GIL; one lane on a 1-core machine)."""
    from clipgeo.streaming.threads import Lanes

    with Lanes(2) as lanes:
        r, l2 = lanes.map(lambda f: f(d.rv.images, d.rv.texts, d.idx), [relative_modality_gap, l2i])
    return {"gap_estimators": [{
        "run_id": d.run_id, "rmg": r["rmg"], "l2i": l2,
        "rmg_matching_distance": r["matching_distance"], "rmg_image_distance": r["image_distance"],
        "rmg_text_distance": r["text_distance"], "image_mean_pairwise_cos": r["image_mean_pairwise_cos"],
        "text_mean_pairwise_cos": r["text_mean_pairwise_cos"], "n_images": int(r["n_images"]),
        "n_texts": int(r["n_texts"])}]}


def _id_rows(x: np.ndarray, *, scope: str, cluster: int, modality: str, library: bool) -> list[dict]:
    rows = []
    # one exact kNN (k = MLE_K) serves both estimators: TwoNN reads its first two columns
    knn = knn_distances(x, MLE_K) if x.shape[0] >= ID_MIN_POINTS else None
    for name, fn in (("twonn", twonn), ("mle", mle_levina_bickel)):
        base = {"scope": scope, "cluster": cluster, "modality": modality, "estimator": name,
                "k": 2 if name == "twonn" else MLE_K, "n_points": int(x.shape[0])}
        if x.shape[0] < ID_MIN_POINTS:
            rows.append({**base, "dimension": None, "library_dimension": None, "library": None, "status": "too_few",
                         "message": f"{x.shape[0]} points; an estimate needs at least {ID_MIN_POINTS}"})
            continue
        got = fn(x, knn=knn)
        lib = library_dimension(x, name) if library else None
        rows.append({**base, "dimension": got["dimension"], "n_points": int(got["n_points"]),
                     "library_dimension": lib, "library": "scikit-dimension 0.5.0" if library else None,
                     "status": "ok", "message": (f"{int(got['n_dropped'])} duplicate points dropped"
                                                 if got["n_dropped"] else None)})
    return rows


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None, int]:
    from scipy import stats

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None, None, int(ok.sum())
    return float(stats.pearsonr(a[ok], b[ok])[0]), float(stats.spearmanr(a[ok], b[ok])[0]), int(ok.sum())


def _intrinsic_dim(d: RunData) -> dict:
    import sklearn

    # scikit-learn's kNN (ours and scikit-dimension's) computes distances in row chunks of up to
    # `working_memory` MiB (1,024 by default: the stage's peak at 1M pairs); smaller chunks give
    # the same neighbours
    with sklearn.config_context(working_memory=128):
        im, tx, _, _ = umap_pairs(d)
        n = min(ID_PAIRS, im.shape[0])
        rows = []
        for modality, x in (("image", im[:n]), ("text", tx[:n]), ("joint", np.concatenate([im[:n], tx[:n]]))):
            rows += _id_rows(np.asarray(x, dtype=np.float64), scope="global", cluster=-1, modality=modality, library=True)
        corr_rows = []
        assignment = d.cache.get("cluster_assignment")
        if assignment is not None:
            clusters, per_cluster = assignment
            dims: dict[int, dict[str, float]] = {}
            for c in sorted(set(clusters["cluster"].to_list()) - {-1}):
                sub = clusters.filter(pl.col("cluster") == c)
                parts = [im[sub.filter(pl.col("modality") == "image")["item_index"].to_numpy()],
                         tx[sub.filter(pl.col("modality") == "text")["item_index"].to_numpy()]]
                got = _id_rows(np.concatenate(parts).astype(np.float64), scope="cluster", cluster=int(c),
                               modality="joint", library=False)
                rows += got
                dims[int(c)] = {r["estimator"]: (r["dimension"] if r["dimension"] is not None else np.nan) for r in got}
            pc = per_cluster.filter(pl.col("cluster") >= 0) if "cluster" in per_cluster.columns else per_cluster
            ids = pc["cluster"].to_numpy()
            top1 = pc["top1"].to_numpy().astype(np.float64)
            for name, values in (("spectrum_auc", pc["auc_joint"].to_numpy().astype(np.float64)),
                                 ("twonn", np.array([dims.get(int(i), {}).get("twonn", np.nan) for i in ids], dtype=float)),
                                 ("mle", np.array([dims.get(int(i), {}).get("mle", np.nan) for i in ids], dtype=float))):
                r, rho, used = _corr(values, top1)
                corr_rows.append({"run_id": d.run_id, "local_dimension": name, "modality": "joint", "n_clusters_used": used,
                                  "pearson_r": r, "spearman_rho": rho,
                                  "message": None if r is not None else f"{used} clusters with a value: too few to correlate"})
        return {"intrinsic_dim": [{"run_id": d.run_id, **r} for r in rows], "intrinsic_dim_correlation": corr_rows}


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of columns: a, b (N, B) per resample with weights w (B, N) -> (B,); NaN for a
    resample in which a or b is constant (r undefined: the interval then leaves it out)."""
    wt = w.T
    s = wt.sum(axis=0)
    ma, mb = (wt * a).sum(axis=0) / s, (wt * b).sum(axis=0) / s
    da, db = a - ma, b - mb
    cov = (wt * da * db).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt((wt * da * da).sum(axis=0) * (wt * db * db).sum(axis=0))


def _conformity_stat(x: np.ndarray, unit_of_row: np.ndarray):
    """stat(W) for the conformity fit r of one modality: C_j = (x̂_j·s_w − 1)/(N_w − 1) against
    cos(x_j, μ_w) (μ_w the weighted raw mean), weighted Pearson over the rows."""
    x = np.asarray(x, dtype=np.float64)
    xh = normalize_rows(x, "x")

    def stat(w_units: np.ndarray) -> np.ndarray:
        w = w_units[:, unit_of_row]                 # (B, N) weight of each row
        nw = w.sum(axis=1)
        s = w @ xh                                  # (B, d)
        mu = (w @ x) / nw[:, None]
        conf = (xh @ s.T - 1.0) / (nw - 1.0)        # (N, B)
        cos = xh @ normalize_rows(mu, "mu").T       # cos(x_j, μ_w) = x̂_j · μ̂_w
        return _weighted_pearson(conf, cos, w)
    return stat


def _bootstrap(d: RunData) -> dict:
    n_img = d.rv.images.shape[0]
    idx = d.idx
    seed, b = d.seed, DEFAULT_RESAMPLES
    xi, xt = d.img_n.astype(np.float64), d.txt_n.astype(np.float64)
    unit = f"the {n_img:,} images of the run's sample, each with all its captions"
    rows = []

    def add(metric: str, stat, n_units: int, unit_text: str, extra: str = "", method: str = "percentile") -> None:
        r = bootstrap_ci(stat, n_units, n_resamples=b, seed=seed, level=DEFAULT_LEVEL, method=method)
        rows.append({"run_id": d.run_id, "metric": metric, **r, "unit": unit_text,
                     "statement": f"{DEFAULT_LEVEL:.0%} {method} interval, {b} resamples of {unit_text}, seed {seed}"
                                  + extra})

    def gap_stat(w: np.ndarray) -> np.ndarray:
        wt = w[:, idx]
        mi = (w @ xi) / w.sum(axis=1, keepdims=True)
        mt = (wt @ xt) / wt.sum(axis=1, keepdims=True)
        return np.linalg.norm(mi - mt, axis=1)
    add("modality_gap.gap", gap_stat, n_img, unit)

    t2i, i2t = run_ranks(d)
    hit_t, hit_i = (t2i < 1).astype(np.float64), (i2t < 1).astype(np.float64)
    add("retrieval.text_to_image.recall@1", lambda w: (w[:, idx] @ hit_t) / w[:, idx].sum(axis=1), n_img, unit,
        "; queries resampled, gallery fixed (ranks from the retrieval section)")
    add("retrieval.image_to_text.recall@1", lambda w: (w @ hit_i) / w.sum(axis=1), n_img, unit,
        "; queries resampled, gallery fixed (ranks from the retrieval section)")

    m = min(n_img, BOOT_SPECTRUM_IMAGES)
    keep_t = np.flatnonzero(idx < m)
    sx = np.concatenate([xi[:m], xt[keep_t]])          # float64 rows: the m images, then their captions
    sidx = idx[keep_t]

    def erank_one(row: np.ndarray) -> tuple[float, float]:
        w = np.concatenate([row, row[sidx]])           # each caption weighs what its image was drawn
        nz = np.flatnonzero(w)                         # about 63 % of the rows are drawn at all
        tot = w[nz].sum()
        mean = (w[nz] @ sx[nz]) / tot
        y = sx[nz] * np.sqrt(w[nz])[:, None]
        scatter = y.T @ y                              # Σ w xxᵀ as one BLAS syrk over the drawn rows
        cov = scatter / tot - np.outer(mean, mean)
        lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
        return effective_rank_lambda_entropy(lam), effective_rank_sigma_entropy(lam)

    def erank_stat(w: np.ndarray) -> np.ndarray:
        # one resample per worker thread, each on one BLAS thread (numpy releases the GIL in the
        # products and eigvalsh): both cores when they are free, in resample order whatever the timing
        with ThreadPoolExecutor(max_workers=max(1, min(len(w), usable_cores()))) as pool:
            return np.array(list(pool.map(erank_one, w)))
    sub_unit = unit if m == n_img else f"the first {m:,} images of the run's sample (hash order), each with all its captions"
    why = "; basic interval: resampling duplicates points, which lowers an effective rank"
    names = ["spectra.joint.effective_rank_lambda_entropy", "spectra.joint.effective_rank_sigma_entropy"]
    from threadpoolctl import threadpool_limits

    bs = BOOT_SPECTRUM_RESAMPLES
    with threadpool_limits(limits=1, user_api="blas"):   # many small products: threads only wait on each other
        got = bootstrap_cis(erank_stat, m, names, n_resamples=bs, seed=seed, level=DEFAULT_LEVEL, method="basic")
    for name, r in got.items():
        rows.append({"run_id": d.run_id, "metric": name, **r, "unit": sub_unit,
                     "statement": f"{DEFAULT_LEVEL:.0%} basic interval, {bs} resamples of {sub_unit}, seed {seed}" + why})

    if not d.normalized_only:
        add("conformity.image.fit_raw_mean_r", _conformity_stat(d.rv.images, np.arange(n_img)), n_img, unit)
        add("conformity.text.fit_raw_mean_r", _conformity_stat(d.rv.texts, idx), n_img, unit)
    return {"bootstrap_ci": rows}


SECTIONS = [
    Section("gap_estimators", ("gap_estimators",), _gap_estimators),
    Section("intrinsic_dim", ("intrinsic_dim", "intrinsic_dim_correlation"), _intrinsic_dim),
    Section("bootstrap", ("bootstrap_ci",), _bootstrap),
]

__all__ = ["SECTIONS", "Skip"]
