"""Topological measurements (clipgeo.topology) against data whose answer is known."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest

from clipgeo.geometry.separability import linear_separability
from clipgeo.topology.clusters import (
    cluster_local_dimension,
    cluster_points,
    hdbscan_labels,
    local_dimension_auc,
)
from clipgeo.topology.cosines import COSINE_KINDS, cosine_distributions
from clipgeo.topology.mixing import knn_cosine, knn_euclidean, mixing_share, modality_mixing
from clipgeo.topology.nearest import (
    build_reference_index,
    lancedb_nearest_reference,
    nearest_reference,
    reference_table,
)
from clipgeo.topology.separability_matrix import separability_matrix
from clipgeo.core.stats import effective_rank
from clipgeo.topology.spectra import (
    collapse_point,
    covariance_spectrum,
    largest_log_drop,
    normalized_scatter,
    spectra,
)
from clipgeo.topology.umap_layout import (
    first_pairs,
    fuzzy_graph,
    haversine_dist_grad,
    paired_lines,
    sphere_coordinates,
    umap_grid,
    umap_layout,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _orthonormal(d: int, r: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    return q.T  # (r, d), orthonormal rows


def _two_blobs(n: int, d: int, sep: float, rng: np.random.Generator):
    """Paired data: images around +sep·e0, captions around −sep·e0 (sep=0: one distribution)."""
    img = rng.standard_normal((n, d))
    txt = rng.standard_normal((n, d))
    img[:, 0] += sep
    txt[:, 0] -= sep
    return img, txt


# ------------------------------------------------------------------------------------ spectra


def test_planted_rank_collapses_at_that_rank():
    rng = np.random.default_rng(0)
    n, d, r_img, r_txt = 3000, 64, 20, 12
    img = rng.standard_normal((n, r_img)) @ _orthonormal(d, r_img, rng) + 1e-9 * rng.standard_normal((n, d))
    txt = rng.standard_normal((n, r_txt)) @ _orthonormal(d, r_txt, rng)
    curve, summ = spectra(img, txt)
    s = {row["scope"]: row for row in summ.iter_rows(named=True)}
    # normalising keeps each set inside its r-dimensional subspace, so the covariance of the
    # normalised vectors has rank r: λ_{r+1}/λ_1 is at the noise/precision floor (≪ 1e-3)
    assert s["image"]["collapse_index"] == r_img
    assert s["text"]["collapse_index"] == r_txt
    assert s["image"]["largest_drop_index"] == r_img
    assert s["image"]["largest_drop_decades"] > 3
    # joint: centred by the joint mean, the union spans the sum of the two subspaces
    assert s["joint"]["collapse_index"] == r_img + r_txt
    assert s["image"]["n"] == n and s["joint"]["n"] == 2 * n and s["image"]["d"] == d
    assert s["image"]["rank_limited_by_n"] == 0.0
    assert curve.filter(pl.col("scope") == "image").height == d
    # nearly isotropic inside the subspace: both effective ranks close to r, the λ form lower
    lam_er, sig_er = s["image"]["effective_rank_lambda_entropy"], s["image"]["effective_rank_sigma_entropy"]
    assert r_img * 0.7 < lam_er < sig_er <= r_img
    img_curve = curve.filter(pl.col("scope") == "image")
    np.testing.assert_allclose(img_curve["sigma"].to_numpy() ** 2, n * img_curve["eigenvalue"].to_numpy(), rtol=1e-12)


def test_full_rank_spectrum_has_no_collapse_and_rank_limit_is_flagged():
    rng = np.random.default_rng(1)
    lam = covariance_spectrum(rng.standard_normal((2000, 32)))
    assert collapse_point(lam) == 32
    curve, summ = spectra(rng.standard_normal((10, 32)), rng.standard_normal((10, 32)))
    img_row = summ.row(0, named=True)
    # N <= d: the collapse is forced by the sample size; no number, a reason
    assert img_row["rank_limited_by_n"] == 1.0 and img_row["status"] == "rank_limited"
    assert img_row["collapse_index"] is None and img_row["effective_rank_lambda_entropy"] is None
    assert "10 vectors <= d = 32" in img_row["message"]
    assert curve.filter(pl.col("scope") == "image")["eigenvalue"].to_numpy()[9:].max() < 1e-15


def test_effective_rank_and_collapse_definitions():
    assert effective_rank(np.array([2.0, 2.0, 2.0, 0.0, 0.0])) == pytest.approx(3.0)
    assert effective_rank(np.array([5.0, 0.0])) == pytest.approx(1.0)
    assert collapse_point(np.array([1.0, 0.5, 2e-3, 5e-4, 1e-9])) == 3
    assert collapse_point(np.array([1.0, 0.5, 2e-3, 5e-4]), threshold=1e-2) == 2
    assert largest_log_drop(np.array([1.0, 0.9, 1e-5, 1e-6]))[0] == 2
    with pytest.raises(ValueError, match="non-negative"):
        effective_rank(np.array([1.0, -1.0]))


def test_streaming_scatter_matches_numpy_eigvalsh():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1500, 24)) + 3.0  # off-centre: no cancellation
    chunks = [x[:100], x[100:1100], x[1100:]]
    acc = normalized_scatter(chunks, "x", block=256)
    xn = _unit(x)
    direct = np.linalg.eigvalsh(np.cov(xn, rowvar=False, bias=True))[::-1]
    np.testing.assert_allclose(acc.eigenvalues(), direct, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(acc.mean, xn.mean(axis=0), atol=1e-12)
    # merged accumulators equal the accumulator of the concatenation
    y = rng.standard_normal((700, 24)) - 1.0
    merged = acc.merged(normalized_scatter(y))
    both = np.concatenate([xn, _unit(y)])
    np.testing.assert_allclose(merged.eigenvalues(), np.linalg.eigvalsh(np.cov(both, rowvar=False, bias=True))[::-1],
                               rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match=r"x: row 1103 is a zero vector"):
        bad = x.copy()
        bad[1103] = 0
        normalized_scatter([bad[:1100], bad[1100:]], "x")


# ------------------------------------------------------------------------------------ cosines


def _brute_cosines(img, txt, idx):
    ci = _unit(img) @ _unit(img).T
    ct = _unit(txt) @ _unit(txt).T
    cx = _unit(txt) @ _unit(img).T
    own = np.zeros_like(cx, dtype=bool)
    own[np.arange(len(idx)), idx] = True
    return {
        "paired_image_text": cx[own],
        "unpaired_image_text": cx[~own],
        "image_image": ci[np.triu_indices(len(img), 1)],
        "text_text": ct[np.triu_indices(len(txt), 1)],
    }


def test_cosine_distributions_exact_match_brute_force():
    rng = np.random.default_rng(3)
    img = rng.standard_normal((60, 16)) + 1.0
    idx = np.repeat(np.arange(60), 3)
    txt = img[idx] + rng.standard_normal((180, 16))
    hist, summ = cosine_distributions(img, txt, idx, bins=50, block=17, dtype=np.float64)
    ref = _brute_cosines(img, txt, idx)
    edges = np.linspace(-1, 1, 51)
    for kind in COSINE_KINDS:
        row = summ.filter(pl.col("kind") == kind).row(0, named=True)
        vals = ref[kind]
        assert row["n_pairs"] == row["population"] == vals.size
        assert not row["sampled"]
        assert row["mean"] == pytest.approx(vals.mean(), abs=1e-12)
        assert row["std"] == pytest.approx(vals.std(), abs=1e-9)
        assert row["min"] == pytest.approx(vals.min(), abs=1e-12)
        for q in (0.05, 0.5, 0.95):
            # quantiles: the inverse empirical CDF to within one fine bin (2 / (50 * 200))
            exact_q = np.quantile(vals, q, method="inverted_cdf")
            assert abs(row[f"q{round(q * 100):02d}"] - exact_q) <= 2 / (50 * 200) + 1e-12
        h = hist.filter(pl.col("kind") == kind)
        np.testing.assert_array_equal(h["count"].to_numpy(), np.histogram(vals, edges)[0])
        assert float(np.sum(h["density"].to_numpy() * np.diff(edges))) == pytest.approx(1.0)
    assert summ.filter(pl.col("kind") == "unpaired_image_text")["population"][0] == 180 * 60 - 180


def test_cosine_distributions_known_values_and_sampling():
    d = 32
    basis = np.eye(d)
    _, summ = cosine_distributions(basis, basis)  # orthonormal images, captions identical
    s = {r["kind"]: r for r in summ.iter_rows(named=True)}
    assert s["paired_image_text"]["mean"] == pytest.approx(1.0)
    assert s["image_image"]["mean"] == pytest.approx(0.0, abs=1e-7)
    assert s["image_image"]["std"] == pytest.approx(0.0, abs=1e-7)

    rng = np.random.default_rng(4)
    img, txt = _two_blobs(400, 16, 2.0, rng)
    _, exact = cosine_distributions(img, txt)
    _, samp = cosine_distributions(img, txt, max_exact_pairs=1000, n_sample=40_000, seed=7)
    _, samp2 = cosine_distributions(img, txt, max_exact_pairs=1000, n_sample=40_000, seed=7)
    assert samp.equals(samp2)  # fixed seed: reproducible
    for kind in ("unpaired_image_text", "image_image", "text_text"):
        e = exact.filter(pl.col("kind") == kind).row(0, named=True)
        s_ = samp.filter(pl.col("kind") == kind).row(0, named=True)
        assert s_["sampled"] and s_["n_pairs"] == 40_000
        # sample mean within 5 standard errors of the population mean
        assert abs(s_["mean"] - e["mean"]) < 5 * e["std"] / np.sqrt(40_000)


def test_cosine_distributions_bad_input():
    with pytest.raises(ValueError, match="txt_image_index is required"):
        cosine_distributions(np.ones((3, 4)), np.ones((5, 4)))
    bad = np.ones((3, 4))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cosine_distributions(bad, np.ones((3, 4)))


# ------------------------------------------------------------------------------------ mixing


def test_knn_cosine_matches_brute_force_across_blocks():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((97, 12))
    idx, cos = knn_cosine(x, 5, query_block=7, gallery_block=13, dtype=np.float64)
    s = _unit(x) @ _unit(x).T
    np.fill_diagonal(s, -np.inf)
    ref = np.argsort(-s, axis=1)[:, :5]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(cos, np.take_along_axis(s, ref, axis=1), atol=1e-12)


def test_mixing_share_separated_modalities_is_zero():
    rng = np.random.default_rng(6)
    img, txt = _two_blobs(300, 16, 30.0, rng)
    coords = np.concatenate([rng.normal(-50, 1, (300, 2)), rng.normal(50, 1, (300, 2))])
    pts, summ = modality_mixing(img, txt, coords, k=10)
    assert summ["mean_share_original"] == 0.0
    assert summ["mean_share_layout"] == 0.0
    assert summ["mixing_ratio_original"] == 0.0
    assert pts.columns == ["modality", "item_index", "share_original", "share_layout"]
    assert pts.height == 600


def test_mixing_share_identical_distributions_is_one_half():
    # With one distribution the labels are exchangeable: E[share] = n/(2n − 1) ≈ 0.5005.
    # Tolerance: even if the k labels of a list were perfectly correlated, the per-modality
    # mean is an average of n = 1000 lists, σ ≤ sqrt(p(1 − p)/n) ≈ 0.016; 0.05 > 3σ.
    rng = np.random.default_rng(7)
    img, txt = _two_blobs(1000, 16, 0.0, rng)
    _, summ = modality_mixing(img, txt, k=15)
    assert summ["expected_share_image"] == pytest.approx(1000 / 1999)
    assert summ["mean_share_original_image"] == pytest.approx(0.5, abs=0.05)
    assert summ["mean_share_original_text"] == pytest.approx(0.5, abs=0.05)
    assert summ["mixing_ratio_original"] == pytest.approx(1.0, abs=0.1)


def test_mixing_share_and_knn_euclidean_helpers():
    labels = np.array([0, 0, 1, 1])
    nb = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
    np.testing.assert_allclose(mixing_share(nb, labels), [0.5, 0.5, 0.5, 0.5])
    pts = np.array([[0.0, 0], [0, 0], [5, 5], [5, 6]])  # two coincident points
    nn = knn_euclidean(pts, 1)
    assert nn[0, 0] == 1 and nn[1, 0] == 0 and nn[2, 0] == 3


# ------------------------------------------------------------------------------------ UMAP


def test_haversine_gradient_and_sphere_convention():
    import umap.distances as ud

    rng = np.random.default_rng(8)
    for _ in range(20):
        x, y = rng.uniform(-4, 14, 2), rng.uniform(-4, 14, 2)
        d_ref, g_ref = ud.haversine_grad(x, y)
        d, g = haversine_dist_grad(x, y)
        assert d == pytest.approx(d_ref, abs=1e-12)
        np.testing.assert_allclose(g, g_ref, atol=1e-9)
        # the optimiser's distance is the great-circle distance of the colatitude conversion
        sx = sphere_coordinates(np.array([x[0]]), np.array([x[1]]))
        sy = sphere_coordinates(np.array([y[0]]), np.array([y[1]]))
        px = np.array([sx["x"][0], sx["y"][0], sx["z"][0]])
        py = np.array([sy["x"][0], sy["y"][0], sy["z"][0]])
        assert np.arccos(np.clip(px @ py, -1, 1)) == pytest.approx(d, abs=1e-7)


def test_sphere_coordinates_are_consistent():
    rng = np.random.default_rng(9)
    c = sphere_coordinates(rng.uniform(-20, 20, 500), rng.uniform(-20, 20, 500))
    xyz = np.stack([c["x"], c["y"], c["z"]], axis=1)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.cos(c["lat"]) * np.cos(c["lon"]), c["x"], atol=1e-12)
    np.testing.assert_allclose(np.sin(c["lat"]), c["z"], atol=1e-12)
    assert np.all(np.abs(c["x2d"]) <= 180) and np.all(np.abs(c["y2d"]) <= 90)
    # points clustered around one direction land at the centre of the projection
    cc = sphere_coordinates(np.full(50, 2.0) + rng.normal(0, 0.05, 50), np.full(50, 1.0))
    assert np.abs(cc["x2d"]).max() < 10 and np.abs(cc["y2d"]).max() < 10


def test_umap_layout_haversine_small_fit():
    rng = np.random.default_rng(10)
    img, txt = _two_blobs(150, 32, 8.0, rng)  # 300 points, modalities far apart
    lay = umap_layout(img, txt, n_pairs=150, seed=0)
    assert lay.columns == ["modality", "item_index", "row_index", "lat", "lon", "x", "y", "z", "x2d", "y2d"]
    assert lay.height == 300
    xyz = lay.select(["x", "y", "z"]).to_numpy()
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, atol=1e-9)
    assert lay.filter(pl.col("modality") == "text")["item_index"].to_list() == list(range(150))
    _, summ = modality_mixing(img, txt, lay, k=10)
    assert summ["mean_share_original"] == 0.0
    assert summ["mean_share_layout"] < 0.05  # the layout keeps the two modalities apart
    again = umap_layout(img, txt, n_pairs=150, seed=0)
    assert again.equals(lay)  # fixed seed: reproducible


def test_umap_too_few_points_is_a_clear_error():
    rng = np.random.default_rng(11)
    img, txt = _two_blobs(4, 8, 1.0, rng)
    with pytest.raises(ValueError, match="too few points for UMAP"):
        umap_layout(img, txt, n_pairs=4)
    img, txt = _two_blobs(20, 8, 1.0, rng)
    with pytest.raises(ValueError, match="more points than n_neighbors=50"):
        umap_layout(img, txt, n_neighbors=50)


def test_umap_grid_runs_and_skips_impossible_cells(caplog):
    rng = np.random.default_rng(12)
    img, txt = _two_blobs(60, 16, 6.0, rng)
    with caplog.at_level(logging.WARNING):
        layouts, cells = umap_grid(img, txt, n_neighbors_grid=(10, 500), min_dist_grid=(0.1,),
                                   n_pairs=60, n_epochs=50)
    assert cells["status"].to_list()[0] == "ok"
    assert cells["status"].to_list()[1].startswith("skipped: too few points")
    assert layouts.height == 120 and set(layouts["n_neighbors"].unique()) == {10}
    assert cells["mean_share_layout_image"][0] < 0.1
    assert "skipping n_neighbors=500" in caplog.text


def test_first_pairs_with_caption_index():
    img = np.arange(12.0).reshape(4, 3) + 1
    idx = np.array([2, 0, 0, 3, 2])  # image 1 has no caption
    txt = np.arange(15.0).reshape(5, 3) + 1
    im, tx, ir, tr = first_pairs(img, txt, 10, idx)
    np.testing.assert_array_equal(ir, [0, 2, 3])
    np.testing.assert_array_equal(tr, [1, 0, 3])
    np.testing.assert_array_equal(tx, txt[[1, 0, 3]])


def test_paired_lines_on_principal_plane():
    rng = np.random.default_rng(13)
    img, txt = _two_blobs(200, 16, 4.0, rng)
    rows = paired_lines(img, txt, n_lines=50, n_fit=200)
    assert rows.height == 50 and rows["pair_id"].n_unique() == 50
    pid = rows["pair_id"].to_numpy()
    np.testing.assert_allclose(rows["cosine"].to_numpy(), np.sum(_unit(img[pid]) * _unit(txt[pid]), axis=1))
    # modalities split along e0: on the first PC the two ends of every line have opposite signs
    assert np.all(np.sign(rows["image_x"].to_numpy()) != np.sign(rows["text_x"].to_numpy()))


# ------------------------------------------------------------------------------------ clusters


def _sphere_blobs(k: int, per: int, spread: float, rng: np.random.Generator):
    centres = _unit(rng.standard_normal((k, 3)))
    while np.min(np.linalg.norm(centres[:, None] - centres[None], axis=2) + 9 * np.eye(k)) < 0.8:
        centres = _unit(rng.standard_normal((k, 3)))
    pts = np.concatenate([_unit(c + spread * rng.standard_normal((per, 3))) for c in centres])
    return pts, np.repeat(np.arange(k), per)


@pytest.mark.parametrize("backend", ["hdbscan", "sklearn"])
def test_planted_clusters_are_found(backend):
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(14)
    pts, truth = _sphere_blobs(5, 120, 0.05, rng)
    labels = hdbscan_labels(pts, min_cluster_size=20, backend=backend)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert len(set(labels) - {-1}) == 5


def test_cluster_points_on_a_layout_frame():
    rng = np.random.default_rng(15)
    pts, truth = _sphere_blobs(3, 100, 0.05, rng)
    lay = pl.DataFrame({
        "modality": ["image"] * 150 + ["text"] * 150,
        "item_index": np.concatenate([np.arange(150), np.arange(150)]),
        "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2],
    })
    cl = cluster_points(lay, min_cluster_size=20)
    assert cl.columns == ["modality", "item_index", "cluster"]
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, cl["cluster"].to_numpy()) > 0.95


def _local_dimension_world(ranks, per=60, d=64, noise=0.05, seed=16):
    """Clusters of pairs far apart; cluster c's images spread in ranks[c] dimensions (fixed
    per-dimension spread), each caption = its image + isotropic noise of the same size
    everywhere. More spread dimensions -> more distinct images -> fewer retrieval confusions,
    and a flatter cluster spectrum."""
    rng = np.random.default_rng(seed)
    img, txt, labels = [], [], []
    for c, r in enumerate(ranks):
        centre = 20.0 * _unit(rng.standard_normal((1, d)))[0]
        x = centre + 0.25 * rng.standard_normal((per, r)) @ _orthonormal(d, r, rng)
        img.append(x)
        txt.append(x + noise * rng.standard_normal((per, d)))
        labels.append(np.full(per, c))
    lab = np.concatenate(labels)
    return np.concatenate(img), np.concatenate(txt), lab


def test_local_dimension_correlates_with_per_cluster_accuracy():
    ranks = [1, 2, 3, 4, 6, 8, 12, 20]
    img, txt, lab = _local_dimension_world(ranks)
    summary, spec, corr = cluster_local_dimension(img, txt, (lab, lab), seed=0)
    assert summary.height == len(ranks)
    assert summary["status"].to_list() == ["ok"] * len(ranks)  # 120 members > d = 64
    auc = summary["auc_joint"].to_numpy()
    top1 = summary["top1"].to_numpy()
    from scipy.stats import spearmanr

    # planted: the local dimension grows with the rank (up to subsample noise among the lowest
    # ranks, whose AUCs differ by less than that noise) and so does the retrieval accuracy
    assert spearmanr(ranks, auc).statistic > 0.9
    assert auc[-1] - auc[0] > 1.0
    assert top1[0] < 0.9 and top1[-1] == 1.0
    c = corr.row(0, named=True)
    assert c["n_clusters"] == c["n_clusters_used"] == len(ranks)
    # measured 0.93 / 0.78 here (0.86-0.93 / 0.79-0.80 over seeds 16-18)
    assert c["spearman_rho"] > 0.8 and c["pearson_r"] > 0.6
    assert c["message"] == "ok"
    assert set(spec["scope"].unique()) == {"image", "text", "joint"}


def test_local_dimension_auc_orders_isotropic_above_low_rank():
    rng = np.random.default_rng(17)
    iso = _unit(rng.standard_normal((200, 32)) + 10 * np.eye(32)[0])
    low = _unit(rng.standard_normal((200, 2)) @ _orthonormal(32, 2, rng) + 10 * np.eye(32)[0]
                + 1e-3 * rng.standard_normal((200, 32)))
    a_iso, e_iso = local_dimension_auc(iso, 50, rng=np.random.default_rng(0))
    a_low, e_low = local_dimension_auc(low, 50, rng=np.random.default_rng(0))
    assert a_iso > a_low and e_iso > e_low
    with pytest.raises(ValueError, match="sample_size"):
        local_dimension_auc(iso[:10], 50)


def test_clusters_bad_input_gives_messages_not_crashes(caplog):
    rng = np.random.default_rng(18)
    img, txt = _two_blobs(40, 32, 3.0, rng)
    noise = np.full(40, -1)
    with caplog.at_level(logging.WARNING):
        summary, spec, corr = cluster_local_dimension(img, txt, (noise, noise))
    assert summary.height == 0 and spec.height == 0
    assert corr["message"][0].startswith("no clusters: all 80 points are noise")
    assert "noise" in caplog.text

    # cluster 0 holds only images, cluster 1 only captions, cluster 2 has 4 members
    li = np.array([0] * 20 + [2] * 2 + [-1] * 18)
    lt = np.array([1] * 20 + [2] * 2 + [-1] * 18)
    summary, _, corr = cluster_local_dimension(img, txt, (li, lt), min_points=10)
    rows = {r["cluster"]: r for r in summary.iter_rows(named=True)}
    assert "single_modality" in rows[0]["status"] and rows[0]["auc_text"] is None
    assert rows[0]["top1_t2i"] is None and rows[0]["top1_i2t"] is not None
    assert "too_small" in rows[2]["status"] and rows[2]["auc_joint"] is None
    # 20 members in d = 32: fewer points than dimensions, yet measured (on subsamples of m = 20, the
    # same size as every other cluster's), so not excluded
    assert rows[0]["auc_joint"] is not None and rows[0]["sample_size"] == 20 and "rank" not in rows[0]["status"]
    assert corr["n_clusters_used"][0] == 2
    assert "needs at least 5" in corr["message"][0]


# ------------------------------------------------------------------------------------ nearest


def test_nearest_reference_exact_matches_brute_force():
    rng = np.random.default_rng(19)
    ref = rng.standard_normal((500, 24))
    q = rng.standard_normal((130, 24))
    rows = nearest_reference(q, ref, query_block=32, gallery_block=100)
    s = _unit(q) @ _unit(ref).T
    np.testing.assert_array_equal(rows["nearest_index"].to_numpy(), s.argmax(axis=1))
    np.testing.assert_allclose(rows["max_cos"].to_numpy(), s.max(axis=1), atol=1e-5)


def test_lancedb_nearest_reference_exact_and_index(tmp_path):
    rng = np.random.default_rng(20)
    centres = rng.standard_normal((20, 32)) * 3
    ref = centres[rng.integers(0, 20, 4000)] + rng.standard_normal((4000, 32))
    q = centres[rng.integers(0, 20, 300)] + rng.standard_normal((300, 32))
    exact = nearest_reference(q, ref)

    table = reference_table(tmp_path / "db", "ref", ref, block=1500)
    assert table.count_rows() == 4000
    rows, info = lancedb_nearest_reference(tmp_path / "db", q, table_name="ref", method="exact")
    np.testing.assert_array_equal(rows["nearest_id"].to_numpy(), exact["nearest_index"].to_numpy())
    np.testing.assert_allclose(rows["max_cos"].to_numpy(), exact["max_cos"].to_numpy(), atol=1e-5)
    assert info["index_used"] == 0.0 and info["recall_at_1"] == 1.0

    built = build_reference_index(table, num_partitions=16)
    assert built["num_sub_vectors"] == 4.0  # largest divisor of 32 that is <= 32 / 8
    rows, info = lancedb_nearest_reference(table, q, method="index", nprobes=16,
                                           refine_factor=50, recall_sample=200)
    assert rows["method"].unique().to_list() == ["index"]
    assert info["index_used"] == 1.0 and info["recall_sample"] == 200
    # all partitions probed and an exact re-rank of the 50 best PQ candidates: the index finds
    # nearly every exact answer (0.945 here: 4 sub-vectors of 8 dims are a coarse code)
    assert info["recall_at_1"] >= 0.9
    assert info["mean_cos_gap"] >= -1e-6


# ------------------------------------------------------------------------------------ separability


def test_separability_matrix_train_eval_cells():
    rng = np.random.default_rng(21)
    a = _two_blobs(300, 16, 3.0, rng)   # separable
    b = _two_blobs(200, 16, 3.0, rng)   # separable the same way: transfers
    c = _two_blobs(300, 16, 0.0, rng)   # one distribution: chance
    m = separability_matrix({"A": a, "C": c}, {"A": a, "B": b, "C": c})
    assert m.height == 2 * 3 * 2 * 2  # train x eval x normalized x (full, pca2)
    cell = lambda t, e, norm, pca: m.filter(  # noqa: E731
        (pl.col("train_set") == t) & (pl.col("eval_set") == e)
        & (pl.col("normalized") == norm) & (pl.col("pca") == pca)
    ).row(0, named=True)
    assert cell("A", "A", False, False)["accuracy"] > 0.95
    assert cell("A", "B", False, False)["accuracy"] > 0.95
    assert cell("A", "B", True, True)["accuracy"] > 0.95
    assert cell("C", "C", False, False)["accuracy"] < 0.65
    assert cell("A", "A", False, False)["same_set"] and not cell("A", "B", False, False)["same_set"]
    # the diagonal is linear_separability's held-out score (same split and seed)
    ref = linear_separability(*a, seed=0)
    assert cell("A", "A", False, False)["accuracy"] == ref["accuracy"]
    assert cell("A", "A", False, True)["n_features"] == 2
    with pytest.raises(ValueError, match="same dimension"):
        separability_matrix({"A": a, "D": (np.ones((5, 3)), np.ones((5, 3)))})


# ------------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_fuzzy_graph_matches_umap():
    """Our fuzzy simplicial set equals umap's for the same neighbours (compiles umap's kernels)."""
    from umap.umap_ import fuzzy_simplicial_set

    from clipgeo.topology.umap_layout import _umap_knn

    rng = np.random.default_rng(22)
    x = _unit(rng.standard_normal((400, 16))).astype(np.float32)
    ind, dist = _umap_knn(x, 15)
    ours = fuzzy_graph(ind, dist, 15).tocsr()
    ref, _, _ = fuzzy_simplicial_set(x, 15, np.random.RandomState(0), "cosine",
                                     knn_indices=ind, knn_dists=dist)
    assert ours.nnz == ref.nnz
    assert abs(ours - ref.tocsr()).max() < 1e-5  # float32 rounding of sigma (umap: parallel loop)


@pytest.mark.slow
def test_stock_umap_engines_agree_on_structure():
    """The stock umap haversine path and the euclidean output give the same qualitative answer."""
    rng = np.random.default_rng(23)
    img, txt = _two_blobs(150, 32, 8.0, rng)
    for kw in ({"engine": "umap"}, {"output_metric": "euclidean"}):
        lay = umap_layout(img, txt, n_pairs=150, **kw)
        _, summ = modality_mixing(img, txt, lay, k=10)
        assert summ["mean_share_layout"] < 0.05
    eu = umap_layout(img, txt, n_pairs=150, output_metric="euclidean")
    assert eu["x"].null_count() == 300 and eu["x2d"].null_count() == 0


def test_cluster_spectra_are_covariance_eigenvalues_of_equal_size_subsamples():
    """Fig. 14's rows: per cluster, the covariance eigenvalues λ (not σ) of R subsamples of the
    stated common size m, checked against numpy from the formula on the same draws; σ beside
    them is √(m λ); AUC = ½ · mean_k of the stored log10 λ_k/λ_1 curve."""
    ranks = [2, 5, 9]
    img, txt, lab = _local_dimension_world(ranks, per=30, d=16)  # 60 joint members > d = 16
    lab_t = lab.copy()
    lab_t[:10] = -1  # cluster 0: 20 images + 30 captions = 50 joint members, the smallest
    summary, spec, _ = cluster_local_dimension(img, txt, (lab, lab_t), seed=3, n_repeats=4)
    m = 17  # smallest cluster (50 members) capped at d + 1
    assert summary["sample_size"].to_list() == [m, m, m]
    joint = spec.filter(pl.col("scope") == "joint")
    assert joint["sample_size"].unique().to_list() == [m] and joint["n_subsamples"].unique().to_list() == [4]
    assert joint.group_by("cluster").len()["len"].to_list() == [m - 1] * 3  # K = m - 1 values each

    # cluster 1, joint scope: the same draws as the code (rng seeded [seed, cluster, scope index])
    v = np.concatenate([_unit(img[lab == 1]), _unit(txt[lab_t == 1])])
    rng = np.random.default_rng([3, 1, 2])
    lam = []
    for _ in range(4):
        sub = v[rng.choice(len(v), size=m, replace=False)]
        c = sub - sub.mean(axis=0)
        lam.append(np.sort(np.linalg.eigvalsh(c.T @ c / m))[::-1][: m - 1])  # population covariance, d x d
    lam = np.array(lam)
    row = joint.filter(pl.col("cluster") == 1).sort("index")
    np.testing.assert_allclose(row["eigenvalue"].to_numpy(), lam.mean(axis=0), rtol=1e-7, atol=1e-9 * lam.max())
    want = np.log10(np.maximum(lam / lam[:, :1], 1e-16)).mean(axis=0)
    big = want > -8  # relative eigenvalues above 1e-8 (below: rounding, Gram vs scatter matrix)
    assert big.sum() >= 10
    got = row["log10_eigenvalue_rel"].to_numpy()
    np.testing.assert_allclose(got[big], want[big], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(row["log10_sigma_rel"].to_numpy(), got / 2, rtol=1e-12)
    np.testing.assert_allclose(row["sigma"].to_numpy()[big], np.sqrt(np.clip(m * lam, 0, None)).mean(axis=0)[big], rtol=1e-6)
    auc = summary.filter(pl.col("cluster") == 1)["auc_joint"][0]
    assert auc == pytest.approx(got.mean() / 2, abs=1e-12)
    assert auc == pytest.approx(want.mean() / 2, abs=0.1)  # (the sub-1e-8 values: rounding either way)
    sv = np.linalg.svd(sub - sub.mean(axis=0), compute_uv=False)[: m - 1]  # σ of the last draw, from the SVD
    keep = lam[-1] > 1e-8 * lam[-1, 0]
    np.testing.assert_allclose(sv[keep], np.sqrt(m * lam[-1][keep]), rtol=1e-6)


def test_small_clusters_in_64_dimensions_all_get_a_local_dimension():
    """As on the default run (64-d embeddings, clusters of a few dozen points, fewer than d):
    every cluster is measured on subsamples of the same size, so all are in Fig. 15 and the
    correlation is computed over all of them (before: 1 of 57, the rest 'rank_limited')."""
    ranks = [1, 2, 3, 4, 6, 8, 12, 20]
    img, txt, lab = _local_dimension_world(ranks, per=15, d=64)  # 30 joint members per cluster < d = 64
    summary, spec, corr = cluster_local_dimension(img, txt, (lab, lab), seed=0)
    assert summary["auc_joint"].null_count() == 0 and summary["status"].to_list() == ["ok"] * len(ranks)
    assert summary["sample_size"].unique().to_list() == [30]
    c = corr.row(0, named=True)
    assert c["n_clusters_used"] == len(ranks) and c["message"] == "ok"
    assert np.isfinite(c["pearson_r"]) and np.isfinite(c["spearman_rho"])
