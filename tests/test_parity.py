"""Parity: every stored metric of a run built by the pipeline's own stages equals an independent
implementation that is not clipgeo's code (CLIP_benchmark, scikit-learn, numpy straight from the
papers' definitions).

One module-scoped run: a small ``shapes`` dataset (667 val images × 3 captions = 2,001 captions,
so the conformity check runs at N ≥ 2,000), one tiny model trained a few steps, its val and
train splits embedded (the train split is the reference run), measured by
:func:`clipgeo.stages.measure.measure_run` with every section. Each test reads the stored tables
from DuckDB and the stored vectors from LanceDB and recomputes the numbers.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from clipgeo.store import catalog, vectors

N_VAL = 667
N_TRAIN = 200


def _q(home, sql, params=None) -> pl.DataFrame:
    with catalog.session(home, read_only=True) as con:
        return catalog.query(con, sql, params)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from clipgeo.core.config import DataHome
    from clipgeo.models.train import TrainSpec, train_tiny
    from clipgeo.sources.shapes import ShapesSpec
    from clipgeo.stages.embedding import ModelRef, embed_run
    from clipgeo.stages.ingest import ingest_shapes, load_samples
    from clipgeo.stages.measure import measure_run

    home = DataHome.resolve(tmp_path_factory.mktemp("parity") / "home").ensure()
    splits = ingest_shapes(home, ShapesSpec(n_train=N_TRAIN, n_val=N_VAL, seed=5), progress=False)
    res = train_tiny(load_samples(home, splits["train"].dataset_id), TrainSpec(steps=3, batch_size=32, seed=5),
                     home.checkpoints, splits["train"].dataset_id, progress=False)
    ref = ModelRef("clipgeo-tiny-vit", str(res.checkpoint))
    plan = embed_run(home, ref, splits["val"].dataset_id, device="cpu", progress=False)
    ref_plan = embed_run(home, ref, splits["train"].dataset_id, device="cpu", progress=False)
    result = measure_run(home, plan.run_id, seed=0)
    assert set(result.sections.values()) <= {"ok", "skipped"}, result.sections
    assert result.sections["nearest_reference"] == "ok"
    rv = vectors.read_run(home, plan.run_id)
    ref_rv = vectors.read_run(home, ref_plan.run_id)
    return home, plan.run_id, rv, ref_rv, result


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True))


# ----------------------------------------------------------------------------- retrieval


def test_recall_equals_clip_benchmark_except_counted_ties(run):
    """recall@1/5/10 both ways against ``clip_benchmark.metrics.zeroshot_retrieval.recall_at_k``
    on float64 scores: equal per query wherever a query has no exact tie; tied queries lie
    between the pessimistic and optimistic hits, and their count is the stored one."""
    import torch
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as cb_recall_at_k

    home, run_id, rv, _, _ = run
    idx = rv.text_image_index
    img, txt = _unit(rv.images), _unit(rv.texts)
    scores = torch.from_numpy(txt @ img.T)  # (n_texts, n_images), float64
    pos = torch.zeros(scores.shape, dtype=torch.bool)
    pos[torch.arange(len(idx)), torch.from_numpy(idx)] = True
    ranks = _q(home, "SELECT direction, query_id, rank, ties FROM retrieval_ranks WHERE run_id = ?", [run_id])
    stored = _q(home, "SELECT direction, k, recall, recall_pessimistic, n_tied_queries, n_queries FROM retrieval"
                      " WHERE run_id = ?", [run_id])
    order = {"text_to_image": rv.sample_ids, "image_to_text": rv.image_ids}
    # independent strict ranks and ties (numpy, float64): the stored per-query values
    s = scores.numpy()
    own = s[np.arange(len(idx)), idx]
    t2i_rank = (s > own[:, None]).sum(1)
    t2i_ties = (s == own[:, None]).sum(1) - 1
    best = np.full(img.shape[0], -np.inf)
    np.maximum.at(best, idx, own)
    other = ~pos.numpy()
    i2t_rank = ((s > best[None, :]) & other).sum(0)
    i2t_ties = ((s == best[None, :]) & other).sum(0)
    mine = {"text_to_image": (t2i_rank, t2i_ties), "image_to_text": (i2t_rank, i2t_ties)}
    n_tied_total = 0
    for direction, (r_ref, t_ref) in mine.items():
        got = ranks.filter(pl.col("direction") == direction)
        pos_of = {q: i for i, q in enumerate(order[direction].tolist())}
        rows = np.array([pos_of[q] for q in got["query_id"].to_list()])
        r_got = np.empty(len(rows), dtype=np.int64)
        t_got = np.empty(len(rows), dtype=np.int64)
        r_got[rows], t_got[rows] = got["rank"].to_numpy(), got["ties"].to_numpy()
        np.testing.assert_array_equal(r_got, r_ref)
        np.testing.assert_array_equal(t_got, t_ref)
        n_tied_total += int((t_ref > 0).sum())
        for k in (1, 5, 10):
            if direction == "text_to_image":
                hit = (cb_recall_at_k(scores, pos, k) > 0).numpy()
            else:
                hit = (cb_recall_at_k(scores.T, pos.T, k) > 0).numpy()
            tied = t_ref > 0
            optimistic, pessimistic = r_ref < k, r_ref + t_ref < k
            np.testing.assert_array_equal(hit[~tied], optimistic[~tied])
            assert np.all(pessimistic[tied] <= hit[tied]) and np.all(hit[tied] <= optimistic[tied])
            row = stored.filter((pl.col("direction") == direction) & (pl.col("k") == k)).row(0, named=True)
            assert row["recall"] == pytest.approx(optimistic.mean(), abs=1e-15)
            assert row["recall_pessimistic"] == pytest.approx(pessimistic.mean(), abs=1e-15)
            assert row["recall_pessimistic"] <= hit.mean() <= row["recall"]
            assert row["n_tied_queries"] == int(tied.sum())
            assert row["n_queries"] == len(r_ref)
    # identical captions under different images exist in shapes: the tie path is exercised
    assert n_tied_total > 0


# ----------------------------------------------------------------------------- gap, conformity


def test_gap_equals_liang_formula(run):
    home, run_id, rv, _, _ = run
    liang = np.linalg.norm(_unit(rv.images).mean(0) - _unit(rv.texts).mean(0))
    raw = np.linalg.norm(rv.images.astype(np.float64).mean(0) - rv.texts.astype(np.float64).mean(0))
    g = _q(home, "SELECT gap, gap_raw FROM modality_gap WHERE run_id = ?", [run_id]).row(0, named=True)
    c = _q(home, "SELECT modality_gap, modality_gap_raw FROM geo_cross WHERE run_id = ?", [run_id]).row(0, named=True)
    assert g["gap"] == pytest.approx(liang, rel=1e-12) and c["modality_gap"] == pytest.approx(liang, rel=1e-12)
    assert g["gap_raw"] == pytest.approx(raw, rel=1e-10) and c["modality_gap_raw"] == pytest.approx(raw, rel=1e-10)


def _per_sample(home, run_id, modality, ids):
    ps = _q(home, "SELECT * FROM geo_per_sample WHERE run_id = ? AND modality = ?", [run_id, modality])
    pos_of = {q: i for i, q in enumerate(ids.tolist())}
    order = np.argsort([pos_of[q] for q in ps["item_id"].to_list()])
    return ps[order]


def test_conformity_equals_quadratic_definition_and_declip_formula(run):
    """``C(v_j) = (1/(N−1)) Σ_{k≠j} cos(v_j, v_k)`` by the O(N²) sum at N ≥ 2,000 (≤ 1e-12), and
    the DE-CLIP notebook's form ``C = (N ||m̂|| cos(v, m̂) − 1)/(N − 1)`` with m̂ the mean of the
    unit vectors: the stored fit against the unit mean has r = 1 and those coefficients."""
    home, run_id, rv, _, _ = run
    assert rv.texts.shape[0] >= 2000
    geo = _q(home, "SELECT * FROM geo_modality WHERE run_id = ?", [run_id])
    for modality, x, ids in (("text", rv.texts, rv.sample_ids), ("image", rv.images, rv.image_ids)):
        u = _unit(x)
        n = u.shape[0]
        gram = u @ u.T
        brute = (gram.sum(1) - np.diag(gram)) / (n - 1)
        ps = _per_sample(home, run_id, modality, ids)
        np.testing.assert_allclose(ps["conformity"].to_numpy(), brute, rtol=0, atol=1e-12)
        m_hat = u.mean(0)
        cos_unit = u @ (m_hat / np.linalg.norm(m_hat))
        declip = (n * np.linalg.norm(m_hat) * cos_unit - 1) / (n - 1)
        np.testing.assert_allclose(ps["conformity"].to_numpy(), declip, rtol=0, atol=1e-12)
        mu = x.astype(np.float64).mean(0)
        np.testing.assert_allclose(ps["cos_to_raw_mean"].to_numpy(), u @ (mu / np.linalg.norm(mu)), atol=1e-12)
        np.testing.assert_allclose(ps["cos_to_unit_mean"].to_numpy(), cos_unit, atol=1e-12)
        row = geo.filter(pl.col("modality") == modality).row(0, named=True)
        assert row["conformity_fit_unit_mean_pearson_r"] == pytest.approx(1.0, abs=1e-12)
        assert row["conformity_fit_unit_mean_a"] == pytest.approx(n * np.linalg.norm(m_hat) / (n - 1), rel=1e-9)
        assert row["conformity_fit_unit_mean_b"] == pytest.approx(-1 / (n - 1), abs=1e-12)
        # the raw-mean fit: scipy's linregress, independently
        from scipy import stats

        lr = stats.linregress(u @ (mu / np.linalg.norm(mu)), brute)
        assert row["conformity_fit_raw_mean_a"] == pytest.approx(lr.slope, rel=1e-9)
        assert row["conformity_fit_raw_mean_pearson_r"] == pytest.approx(lr.rvalue, abs=1e-12)


# ----------------------------------------------------------------------------- Double-Ellipsoid


def test_shell_spectrum_and_effective_ranks_of_raw_vectors(run):
    """P2 (distance from the mean, and the norm beside it) and P3 from numpy's eigvalsh of the
    population covariance of the raw vectors; both effective-rank formulas."""
    home, run_id, rv, _, _ = run
    geo = _q(home, "SELECT * FROM geo_modality WHERE run_id = ?", [run_id])
    eig = _q(home, "SELECT modality, axis, eigenvalue FROM geo_eigenvalues WHERE run_id = ? ORDER BY modality, axis",
             [run_id])
    for modality, x in (("image", rv.images), ("text", rv.texts)):
        x = x.astype(np.float64)
        row = geo.filter(pl.col("modality") == modality).row(0, named=True)
        dist = np.linalg.norm(x - x.mean(0), axis=1)
        assert row["dist_to_mean_mean"] == pytest.approx(dist.mean(), rel=1e-12)
        assert row["dist_to_mean_std_over_mean"] == pytest.approx(dist.std() / dist.mean(), rel=1e-9)
        assert row["dist_to_mean_q50"] == pytest.approx(np.median(dist), rel=1e-12)
        length = np.linalg.norm(x, axis=1)
        assert row["length_std_over_mean"] == pytest.approx(length.std() / length.mean(), rel=1e-9)
        lam = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))[::-1], 0, None)
        got = eig.filter(pl.col("modality") == modality)["eigenvalue"].to_numpy()
        np.testing.assert_allclose(got, lam, rtol=1e-9, atol=1e-12 * lam[0])
        p = lam / lam.sum()
        q = np.sqrt(lam) / np.sqrt(lam).sum()
        assert row["ellipsoid_effective_rank_lambda_entropy"] == pytest.approx(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))), rel=1e-9)
        assert row["ellipsoid_effective_rank_sigma_entropy"] == pytest.approx(np.exp(-np.sum(q[q > 0] * np.log(q[q > 0]))), rel=1e-9)
        assert row["ellipsoid_anisotropy"] == pytest.approx(np.sqrt(lam[0]) / np.median(np.sqrt(lam)), rel=1e-9)
        assert row["covariance_status"] == "ok"


# ----------------------------------------------------------------------------- separability


def test_svm_separability_equals_plain_sklearn(run):
    """Table I / Fig. 2: the same protocol written with scikit-learn directly — first caption of
    each image, a 30 % paired hold-out drawn with ``default_rng(0).permutation``, StandardScaler
    (after PCA(2) for ``pca2``) and LinearSVC(C=1) fitted on the training part."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import accuracy_score, precision_score, recall_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    home, run_id, rv, _, _ = run
    pi, pt, _ = rv.first_pairs()
    sep = _q(home, "SELECT * FROM separability WHERE run_id = ?", [run_id])
    for kind, (a, b) in (("normalized", (_unit(rv.images).astype(np.float32), _unit(rv.texts).astype(np.float32))),
                         ("raw", (rv.images, rv.texts))):
        img, txt = a[pi], b[pt]
        n = img.shape[0]
        perm = np.random.default_rng(0).permutation(n)
        k = int(round(0.3 * n))
        test, train = np.sort(perm[:k]), np.sort(perm[k:])
        X_tr = np.concatenate([img[train], txt[train]]).astype(np.float64)
        y_tr = np.r_[np.ones(len(train)), np.zeros(len(train))]
        X_te = np.concatenate([img[test], txt[test]]).astype(np.float64)
        y_te = np.r_[np.ones(len(test)), np.zeros(len(test))]
        for features, pre in (("full", []), ("pca2", [PCA(2, svd_solver="covariance_eigh")])):
            clf = make_pipeline(*pre, StandardScaler(), LinearSVC(C=1.0, random_state=0, max_iter=10_000))
            pred = clf.fit(X_tr, y_tr).predict(X_te)
            row = sep.filter((pl.col("vectors") == kind) & (pl.col("features") == features)).row(0, named=True)
            tol = 1.0 / len(y_te) + 1e-12  # float32 normalisation may flip at most a boundary point
            assert row["accuracy"] == pytest.approx(accuracy_score(y_te, pred), abs=tol)
            assert row["precision"] == pytest.approx(precision_score(y_te, pred, zero_division=0), abs=2 * tol)
            assert row["recall"] == pytest.approx(recall_score(y_te, pred, zero_division=0), abs=2 * tol)
            assert row["n_test"] == len(y_te) and row["n_train"] == len(y_tr)


# ----------------------------------------------------------------------------- spectra


def test_topological_spectrum_is_covariance_eigvalsh_and_collapse_on_lambda(run):
    home, run_id, rv, _, _ = run
    curve = _q(home, "SELECT scope, index, eigenvalue, sigma FROM topo_spectra WHERE run_id = ? ORDER BY scope, index",
               [run_id])
    summ = _q(home, "SELECT * FROM topo_spectra_summary WHERE run_id = ?", [run_id])
    ui, ut = _unit(rv.images), _unit(rv.texts)
    for scope, u in (("image", ui), ("text", ut), ("joint", np.concatenate([ui, ut]))):
        lam = np.clip(np.linalg.eigvalsh(np.cov(u, rowvar=False, bias=True))[::-1], 0, None)
        got = curve.filter(pl.col("scope") == scope)
        np.testing.assert_allclose(got["eigenvalue"].to_numpy(), lam, rtol=1e-8, atol=1e-14 * lam[0])
        np.testing.assert_allclose(got["sigma"].to_numpy() ** 2, u.shape[0] * got["eigenvalue"].to_numpy(),
                                   rtol=1e-12)
        row = summ.filter(pl.col("scope") == scope).row(0, named=True)
        assert row["lambda_1"] == pytest.approx(lam[0], rel=1e-10)
        assert row["collapse_index"] == int(np.sum(lam >= 1e-3 * lam[0]))
        p = lam / lam.sum()
        q = np.sqrt(lam) / np.sqrt(lam).sum()
        assert row["effective_rank_lambda_entropy"] == pytest.approx(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))), rel=1e-8)
        assert row["effective_rank_sigma_entropy"] == pytest.approx(np.exp(-np.sum(q[q > 0] * np.log(q[q > 0]))), rel=1e-8)


# ----------------------------------------------------------------------------- mixing, clusters, nearest


def test_mixing_share_equals_brute_force_knn(run):
    """share(p) = fraction of the k = 15 nearest other points of the other modality, from a full
    cosine matrix (original space) and from scipy's distance matrix on the stored sphere
    coordinates (layout)."""
    from scipy.spatial.distance import cdist

    from clipgeo.stages.measure_topology import MIXING_K

    home, run_id, rv, _, result = run
    if result.sections.get("umap") != "ok":
        pytest.fail(f"umap section did not run: {result.sections}")
    pi, pt, _ = rv.first_pairs()
    pts = _q(home, "SELECT modality, item_index, share_original, share_layout FROM topo_mixing WHERE run_id = ?"
                   " ORDER BY modality, item_index", [run_id])
    lay = _q(home, "SELECT modality, item_index, x, y, z FROM topo_umap WHERE run_id = ? ORDER BY modality, item_index",
             [run_id])
    n = len(pi)
    assert lay.height == 2 * n
    u = np.concatenate([_unit(rv.images[pi]), _unit(rv.texts[pt])])
    labels = np.r_[np.zeros(n), np.ones(n)]
    cos = u @ u.T
    np.fill_diagonal(cos, -np.inf)
    nb = np.argsort(-cos, axis=1, kind="stable")[:, :MIXING_K]
    share = (labels[nb] != labels[:, None]).mean(1)
    # the table orders image rows then text rows by item_index (= pair index)
    np.testing.assert_allclose(pts["share_original"].to_numpy(), share, atol=1e-12)
    xyz = lay.select("x", "y", "z").to_numpy()
    dist = cdist(xyz, xyz)
    np.fill_diagonal(dist, np.inf)
    nb = np.argsort(dist, axis=1, kind="stable")[:, :MIXING_K]
    np.testing.assert_allclose(pts["share_layout"].to_numpy(), (labels[nb] != labels[:, None]).mean(1), atol=1e-12)


def test_per_cluster_top1_comes_from_the_stored_ranks(run):
    home, run_id, _, _, result = run
    if result.sections.get("clusters") != "ok":
        pytest.skip(f"clusters section: {result.sections.get('clusters')}")
    mine = _q(home, """
        SELECT m.cluster, avg((r.rank = 0)::DOUBLE) AS top1,
               avg((r.rank = 0)::DOUBLE) FILTER (WHERE m.modality = 'image') AS top1_i2t,
               avg((r.rank = 0)::DOUBLE) FILTER (WHERE m.modality = 'text') AS top1_t2i
        FROM topo_cluster_members m JOIN retrieval_ranks r
          ON r.run_id = m.run_id AND r.query_id = m.item_id
         AND r.direction = CASE WHEN m.modality = 'text' THEN 'text_to_image' ELSE 'image_to_text' END
        WHERE m.run_id = ? AND m.cluster >= 0 GROUP BY m.cluster ORDER BY m.cluster""", [run_id])
    stored = _q(home, "SELECT cluster, top1, top1_i2t, top1_t2i FROM topo_clusters WHERE run_id = ? ORDER BY cluster",
                [run_id])
    assert stored.height == mine.height
    for col in ("top1", "top1_i2t", "top1_t2i"):
        np.testing.assert_allclose(stored[col].to_numpy().astype(float), mine[col].to_numpy().astype(float),
                                   atol=1e-12)


def test_nearest_reference_ids_equal_brute_force_argmax(run):
    home, run_id, rv, ref_rv, _ = run
    got = _q(home, "SELECT modality, item_id, nearest_item_id, max_cos FROM topo_nearest_reference WHERE run_id = ?",
             [run_id])
    for modality, q, qids, r, rids in (("image", rv.images, rv.image_ids, ref_rv.images, ref_rv.image_ids),
                                       ("text", rv.texts, rv.sample_ids, ref_rv.texts, ref_rv.sample_ids)):
        cos = _unit(q) @ _unit(r).T
        best = cos.max(1)
        g = got.filter(pl.col("modality") == modality)
        pos_of = {k: i for i, k in enumerate(qids.tolist())}
        rows = np.array([pos_of[k] for k in g["item_id"].to_list()])
        np.testing.assert_allclose(g["max_cos"].to_numpy(), best[rows], atol=1e-5)  # float32 search
        rpos = {k: i for i, k in enumerate(rids.tolist())}
        picked = np.array([rpos[k] for k in g["nearest_item_id"].to_list()])
        # the id names a reference sample that attains the maximum (ties: any of them)
        np.testing.assert_allclose(cos[rows, picked], best[rows], atol=1e-5)


def test_cosine_summaries_offcentre_and_principal_angles(run):
    """Fig. 3 cosine populations (exact at this size), P5 off-centre and P1 principal angles
    against numpy / scipy from the definitions."""
    from scipy.linalg import subspace_angles

    home, run_id, rv, _, _ = run
    ui, ut = _unit(rv.images), _unit(rv.texts)
    idx = rv.text_image_index
    cx = ut @ ui.T
    own = np.zeros(cx.shape, dtype=bool)
    own[np.arange(len(idx)), idx] = True
    pops = {
        "paired_image_text": cx[own], "unpaired_image_text": cx[~own],
        "image_image": (ui @ ui.T)[np.triu_indices(len(ui), 1)], "text_text": (ut @ ut.T)[np.triu_indices(len(ut), 1)],
    }
    summ = _q(home, "SELECT * FROM topo_cosine_summary WHERE run_id = ?", [run_id])
    for kind, v in pops.items():
        row = summ.filter(pl.col("kind") == kind).row(0, named=True)
        assert not row["sampled"] and row["n_pairs"] == v.size
        assert row["mean"] == pytest.approx(v.mean(), abs=1e-6)  # float32 scores
        assert row["std"] == pytest.approx(v.std(), abs=1e-6)
        assert row["q50"] == pytest.approx(np.quantile(v, 0.5, method="inverted_cdf"), abs=2e-4)
    geo = _q(home, "SELECT * FROM geo_modality WHERE run_id = ?", [run_id])
    cross = _q(home, "SELECT * FROM geo_cross WHERE run_id = ?", [run_id]).row(0, named=True)
    mus = {}
    bases = {}
    for modality, x in (("image", rv.images), ("text", rv.texts)):
        x = x.astype(np.float64)
        mu = x.mean(0)
        mus[modality] = mu
        row = geo.filter(pl.col("modality") == modality).row(0, named=True)
        assert row["offcentre_mean_norm"] == pytest.approx(np.linalg.norm(mu), rel=1e-10)
        assert row["offcentre_mean_norm_over_mean_length"] == pytest.approx(
            np.linalg.norm(mu) / np.linalg.norm(x, axis=1).mean(), rel=1e-10)
        _, vecs = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
        bases[modality] = vecs[:, ::-1][:, :10]
    cos_mm = mus["image"] @ mus["text"] / (np.linalg.norm(mus["image"]) * np.linalg.norm(mus["text"]))
    assert cross["cos_between_means"] == pytest.approx(cos_mm, abs=1e-12)
    ang = _q(home, "SELECT angle_deg FROM geo_principal_angles WHERE run_id = ? AND setting = 'fixed' ORDER BY index",
             [run_id])["angle_deg"].to_numpy()
    np.testing.assert_allclose(ang, np.sort(np.degrees(subspace_angles(bases["image"], bases["text"]))), atol=1e-6)


def test_tiny_run_shows_no_number_where_none_is_meaningful(home):
    """13 images × 1 caption at d = 64 (the issue's case): no anisotropy, effective rank or
    collapse index, each with the reason stored; recall still exact."""
    from clipgeo.stages.measure import measure_run

    rng = np.random.default_rng(0)
    n, d = 13, 64
    img = (rng.standard_normal((n, d)) + 2).astype(np.float32)
    txt = (img + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    ids = [f"i{i:02d}" for i in range(n)]
    vectors.write_run(home, "tiny", image_ids=ids, images=img, sample_ids=[f"s{i:02d}" for i in range(n)],
                      text_image_ids=ids, texts=txt)
    with catalog.session(home) as con:
        catalog.insert(con, "runs", [dict(run_id="tiny", model_id="m", dataset_id="d", label="tiny",
                                          status="embedded", n_images=n, n_texts=n, vectors_normalized=False)])
    res = measure_run(home, "tiny", sections=["retrieval", "double_ellipsoid", "spectra"])
    assert set(res.sections.values()) == {"ok"}, res.sections
    geo = _q(home, "SELECT * FROM geo_modality WHERE run_id = 'tiny' AND modality = 'image'").row(0, named=True)
    assert geo["ellipsoid_anisotropy"] is None and geo["ellipsoid_effective_rank_lambda_entropy"] is None
    assert "13 image vectors <= d = 64" in geo["covariance_message"]
    spec = _q(home, "SELECT * FROM topo_spectra_summary WHERE run_id = 'tiny' AND scope = 'image'").row(0, named=True)
    assert spec["collapse_index"] is None and spec["status"] == "rank_limited" and "13 vectors" in spec["message"]
    rec = _q(home, "SELECT recall, n_queries, n_candidates FROM retrieval WHERE run_id = 'tiny'"
                   " AND direction = 'text_to_image' AND k = 1").row(0, named=True)
    s = _unit(txt) @ _unit(img).T
    assert rec["recall"] == pytest.approx(np.mean(s.argmax(1) == np.arange(n)))
    assert rec["n_queries"] == n and rec["n_candidates"] == n
