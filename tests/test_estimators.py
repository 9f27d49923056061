"""The estimators of issue 25 against independent implementations and known answers: RMG and
L2I as lmb-freiburg/two-effects-one-trigger computes them (dense matrices, plain numpy here),
TwoNN and the Levina–Bickel MLE against scikit-dimension and against the known dimension, and
the bootstrap's coverage over repeated draws."""

from __future__ import annotations

import numpy as np
import pytest

from clipgeo.core.bootstrap import bootstrap_ci, bootstrap_weights
from clipgeo.geometry.gap_estimators import l2i, mean_pairwise_cos, relative_modality_gap
from clipgeo.topology.intrinsic_dim import library_dimension, mle_levina_bickel, twonn


def _coco_like(rng, n_img=60, d=32):
    caps = rng.integers(5, 8, size=n_img)
    idx = np.repeat(np.arange(n_img), caps)
    img = rng.normal(size=(n_img, d)) + 2.0
    txt = img[idx] * 0.3 + rng.normal(size=(idx.size, d)) - 1.0
    return img, txt, idx


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_rmg_and_l2i_equal_the_two_effects_one_trigger_definitions():
    rng = np.random.default_rng(0)
    img, txt, idx = _coco_like(rng)
    i, t = _unit(img), _unit(txt)
    # compute_rmg (COCO branch), dense, as in analysis/gap_precompute.py
    per_text = i[idx]
    match = 1 - ((per_text * t).sum(1).mean() + 1) / 2
    iti = i @ i.T
    np.fill_diagonal(iti, 0)
    sim_i = 1 - (iti.sum() / (iti.size - iti.shape[0]) + 1) / 2
    ttt = t @ t.T
    np.fill_diagonal(ttt, 0)
    sim_t = 1 - (ttt.sum() / (ttt.size - ttt.shape[0]) + 1) / 2
    expected = match / (match + (sim_i + sim_t) / 2)
    got = relative_modality_gap(img, txt, idx)
    assert got["rmg"] == pytest.approx(expected, rel=1e-12)
    assert got["image_mean_pairwise_cos"] == pytest.approx(iti.sum() / (iti.size - iti.shape[0]), rel=1e-12)
    # compute_l2i (COCO branch)
    assert l2i(img, txt, idx) == pytest.approx(np.linalg.norm(per_text - t, axis=1).mean(), rel=1e-12)
    assert mean_pairwise_cos(txt) == pytest.approx(ttt.sum() / (ttt.size - ttt.shape[0]), rel=1e-12)


def test_the_within_modality_mean_cosine_has_one_definition():
    """The cosine distributions' exact within-modality mean (from the modality's sums, as a
    streamed run gives them) is the gap estimators' (:func:`mean_cos_from_unit_sum`)."""
    from clipgeo.geometry.gap_estimators import mean_cos_from_unit_sum
    from clipgeo.topology import cosines

    img, txt, idx = _coco_like(np.random.default_rng(1))
    sums = cosines.cosine_sums(img, txt, idx)
    moments = cosines.cosine_moments(*sums)
    for kind, x, m in (("image_image", img, sums[0]), ("text_text", txt, sums[1])):
        assert moments[kind][0] == mean_cos_from_unit_sum(m.s, m.n, m.q2)
        assert moments[kind][0] == pytest.approx(mean_pairwise_cos(x), rel=1e-12)


def _subspace(rng, n, d, dim):
    """Gaussian points on a random dim-dimensional linear subspace of R^d."""
    q, _ = np.linalg.qr(rng.normal(size=(d, dim)))
    return rng.normal(size=(n, dim)) @ q.T


def _sphere(rng, n, d, dim):
    """Uniform points on the unit dim-sphere S^dim (a curved dim-manifold) in R^d."""
    z = rng.normal(size=(n, dim + 1))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.normal(size=(d, dim + 1)))
    return z @ q.T


def _swiss_roll(rng, n, d):
    u = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n)
    v = rng.uniform(0, 10, n)
    x = np.c_[u * np.cos(u), v, u * np.sin(u)]
    q, _ = np.linalg.qr(rng.normal(size=(d, 3)))
    return x @ q.T


@pytest.mark.parametrize("name, make, dim", [
    ("linear 5 in 64", lambda r: _subspace(r, 2000, 64, 5), 5),
    ("linear 8 in 768", lambda r: _subspace(r, 2000, 768, 8), 8),
    ("sphere S^3 in 256", lambda r: _sphere(r, 2000, 256, 3), 3),
    ("swiss roll (2) in 128", lambda r: _swiss_roll(r, 2000, 128), 2),
])
def test_twonn_and_mle_agree_with_scikit_dimension_and_the_known_dimension(name, make, dim):
    x = make(np.random.default_rng(7))
    for est, fn in (("twonn", twonn), ("mle", mle_levina_bickel)):
        ours = fn(x)["dimension"]
        lib = library_dimension(x, est)
        assert ours == pytest.approx(lib, rel=1e-9), (name, est)
        # Facco et al. (2017, Fig. 2) and Levina & Bickel (2004, Fig. 1) show estimates within about 10-15%
        # of the true dimension at N = 2000 for d <= 10 (both underestimate as d grows)
        assert abs(lib - dim) <= 0.15 * dim, (name, est, lib)


def test_one_neighbour_search_serves_both_estimators():
    """The measure stage computes the k = 20 distances once (``knn_distances``) and hands them to
    both estimators: the same dimensions as each estimator's own search, and both still agree with
    scikit-dimension, whose own search is independent."""
    from clipgeo.topology.intrinsic_dim import MLE_K, knn_distances

    x = _sphere(np.random.default_rng(11), 1500, 64, 4)
    knn = knn_distances(x, MLE_K)
    assert knn.shape == (1500, MLE_K) and np.all(np.diff(knn, axis=1) >= 0)
    for est, fn in (("twonn", twonn), ("mle", mle_levina_bickel)):
        shared = fn(x, knn=knn)
        assert shared == fn(x)
        assert shared["dimension"] == pytest.approx(library_dimension(x, est), rel=1e-9)
    with pytest.raises(ValueError, match="knn: expected distances of shape"):
        mle_levina_bickel(x, knn=knn[:, :5])


def test_estimators_refuse_too_few_points():
    with pytest.raises(ValueError, match="at least 21"):
        mle_levina_bickel(np.random.default_rng(0).normal(size=(10, 4)))


def test_bootstrap_weights_are_resamples():
    w = bootstrap_weights(7, 400, seed=3)
    assert w.shape == (400, 7) and np.all(w.sum(axis=1) == 7) and np.all(w >= 0)
    assert np.allclose(w.mean(axis=0), 1.0, atol=0.2)
    assert np.array_equal(w, bootstrap_weights(7, 400, seed=3))


def _coverage(draw, truth, stat, n, reps, seed, b=300, method="percentile"):
    hits = 0
    rng = np.random.default_rng(seed)
    for r in range(reps):
        data = draw(rng)
        ci = bootstrap_ci(lambda w: stat(w, data), n, n_resamples=b, seed=r, method=method)
        hits += ci["ci_low"] <= truth <= ci["ci_high"]
    return hits / reps


def test_bootstrap_interval_covers_a_mean_at_about_its_nominal_rate():
    n = 80
    cov = _coverage(lambda rng: rng.exponential(2.0, size=n), 2.0, lambda w, x: w @ x / w.sum(axis=1), n, 300, 11)
    assert 0.90 <= cov <= 0.98, cov        # nominal 0.95; 300 draws: sd 0.013 (the percentile interval runs a little low on skewed data)


def test_bootstrap_interval_of_the_gap_covers_the_true_gap():
    d, n = 8, 150
    mu_i, mu_t = np.zeros(d), np.zeros(d)
    mu_i[0], mu_t[1] = 3.0, 3.0

    def draw(rng):
        return _unit(rng.normal(size=(n, d)) + mu_i), _unit(rng.normal(size=(n, d)) + mu_t)

    big = np.random.default_rng(99)
    zi = _unit(big.normal(size=(400_000, d)) + mu_i).mean(0)
    zt = _unit(big.normal(size=(400_000, d)) + mu_t).mean(0)
    truth = float(np.linalg.norm(zi - zt))      # population gap (Monte Carlo, error ~1e-3)

    def gap(w, data):
        i, t = data
        return np.linalg.norm((w @ i - w @ t) / w.sum(axis=1, keepdims=True), axis=1)
    cov = _coverage(draw, truth, gap, n, 200, 5, b=200)
    assert 0.89 <= cov <= 0.99, cov        # nominal 0.95; 200 draws: sd 0.015


def test_estimator_sections_store_what_the_library_functions_compute(home):
    from clipgeo.stages import measure
    from clipgeo.store import catalog, vectors
    from tests.test_measure_sections import _register_run

    run_id = _register_run(home, n=120, d=16, seed=4)
    res = measure.measure_run(home, run_id, sections=["retrieval", "modality_gap", "spectra", "gap_estimators",
                                                       "intrinsic_dim", "bootstrap"])
    assert {s: res.sections[s] for s in ("gap_estimators", "intrinsic_dim", "bootstrap")} == dict.fromkeys(
        ("gap_estimators", "intrinsic_dim", "bootstrap"), "ok")
    rv = vectors.read_run(home, run_id)
    expected = relative_modality_gap(rv.images, rv.texts, rv.text_image_index)
    with catalog.session(home, read_only=True) as con:
        rmg, l2, n_t = catalog.execute(con, "SELECT rmg, l2i, n_texts FROM gap_estimators")[0]
        gap, paired = catalog.execute(con, "SELECT gap, paired_distance FROM modality_gap")[0]
        boot = dict(catalog.execute(con, "SELECT metric, estimate FROM bootstrap_ci"))
        lo, hi, b, seed = catalog.execute(con, "SELECT ci_low, ci_high, n_resamples, seed FROM bootstrap_ci"
                                               " WHERE metric = 'modality_gap.gap'")[0]
        er = catalog.execute(con, "SELECT effective_rank_lambda_entropy FROM topo_spectra_summary WHERE scope = 'joint'")[0][0]
        dims = catalog.execute(con, "SELECT dimension, library_dimension FROM intrinsic_dim WHERE scope = 'global'"
                                    " AND status = 'ok'")
    assert rmg == pytest.approx(expected["rmg"]) and n_t == 240
    assert l2 == pytest.approx(paired)                            # L2I is the stored paired distance
    assert boot["modality_gap.gap"] == pytest.approx(gap) and lo <= gap <= hi and (b, seed) == (200, 0)
    assert boot["spectra.joint.effective_rank_lambda_entropy"] == pytest.approx(er, rel=1e-6)
    assert dims and all(a == pytest.approx(b_, rel=1e-9) for a, b_ in dims)


def test_basic_interval_of_the_effective_ranks_covers_the_population_value():
    """Resampling lowers an effective rank (duplicated points), so the percentile interval sits below
    the truth (measured here: 71% / 29% coverage for the λ / σ forms); the basic interval, which the
    bootstrap section uses for both ranks, covers at about its nominal rate."""
    from clipgeo.core.bootstrap import bootstrap_cis
    from clipgeo.core.stats import effective_rank_lambda_entropy, effective_rank_sigma_entropy

    d, n, reps = 16, 300, 100
    lam = 1.0 / np.arange(1, d + 1)                    # population covariance spectrum
    truth = np.array([effective_rank_lambda_entropy(lam), effective_rank_sigma_entropy(lam)])
    rng = np.random.default_rng(0)
    hits = np.zeros(2)
    for r in range(reps):
        x = rng.normal(size=(n, d)) * np.sqrt(lam)

        def stat(w, x=x):
            out = []
            for row in w:
                mu = row @ x / row.sum()
                ev = np.clip(np.linalg.eigvalsh((x.T * row) @ x / row.sum() - np.outer(mu, mu)), 0, None)
                out.append((effective_rank_lambda_entropy(ev), effective_rank_sigma_entropy(ev)))
            return np.array(out)
        got = bootstrap_cis(stat, n, ["l", "s"], n_resamples=100, seed=r, method="basic")
        hits += [got[k]["ci_low"] <= t <= got[k]["ci_high"] for k, t in zip(("l", "s"), truth)]
    cov = hits / reps
    assert np.all((cov >= 0.85) & (cov <= 0.99)), cov     # nominal 0.95 (measured 0.91 / 0.91); 100 draws: sd 0.02
