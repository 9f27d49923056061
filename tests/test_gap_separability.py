"""Modality gap and linear separability against data with a planted answer."""

from __future__ import annotations

import numpy as np
import pytest

from clipgeo.geometry.gap import modality_gap
from clipgeo.geometry.separability import (
    evaluate_classifier,
    fit_modality_classifier,
    linear_separability,
    modality_labels,
    modality_split,
    pca_project,
)


def _random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _cap_cloud(n: int, d: int, sign: float, theta: float, rng: np.random.Generator):
    """n unit vectors at angle theta from sign * e_0, in antithetic pairs (u, −u) orthogonal to
    e_0, so their mean is exactly sign * cos(theta) * e_0. Radii r are shared within a pair."""
    half = n // 2
    u = rng.standard_normal((half, d))
    u[:, 0] = 0
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    u = np.vstack([u, -u])
    unit = sign * np.cos(theta) * np.eye(1, d) + np.sin(theta) * u
    r = np.tile(rng.uniform(1.0, 3.0, half), 2)[:, None]
    return unit, r


# ---------------------------------------------------------------------------- modality gap


def test_planted_gap_is_recovered():
    rng = np.random.default_rng(0)
    d, theta = 32, 1.1
    ui, ri = _cap_cloud(2000, d, +1, theta, rng)
    ut, rt = _cap_cloud(3000, d, -1, theta, rng)
    q = _random_rotation(d, rng)  # the offset direction is a random unit vector, not e_0
    img, txt = (ui * ri) @ q, (ut * rt) @ q
    g = modality_gap(img, txt)
    # mean x̂_I = cos θ v, mean x̂_T = −cos θ v  ->  gap = 2 cos θ exactly
    assert g["gap"] == pytest.approx(2 * np.cos(theta), abs=1e-10)
    # raw means: cos θ · mean(r) · (±v)
    assert g["gap_raw"] == pytest.approx(np.cos(theta) * (ri.mean() + rt.mean()), abs=1e-10)
    assert g["mean_cross_cos"] == pytest.approx(-np.cos(theta) ** 2, abs=1e-10)
    assert g["n_img"] == 2000 and g["n_txt"] == 3000
    assert "paired_distance" not in g


def test_identical_distributions_have_no_gap():
    rng = np.random.default_rng(1)
    d, n_i, n_t = 64, 4000, 6000
    mu = 3.0 * rng.standard_normal(d)
    img = mu + rng.standard_normal((n_i, d))
    txt = mu + rng.standard_normal((n_t, d))
    g = modality_gap(img, txt)
    # E||m̂_I − m̂_T||² = tr Cov(x̂) (1/n_i + 1/n_t) <= 1/n_i + 1/n_t; 3 of those s.d. is generous
    s = np.sqrt(1 / n_i + 1 / n_t)
    assert g["gap"] < 3 * s
    # raw: tr Cov(x) = d
    assert g["gap_raw"] < 3 * np.sqrt(d) * s


def test_paired_distance_and_cosines():
    rng = np.random.default_rng(2)
    n, d, phi = 500, 24, 0.6
    x = rng.standard_normal((n, d))
    xh = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.standard_normal((n, d))
    w -= (w * xh).sum(1, keepdims=True) * xh  # w ⟂ x̂
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    y = (np.cos(phi) * xh + np.sin(phi) * w) * rng.uniform(0.5, 2, (n, 1))
    g = modality_gap(x, y, paired=True)
    assert g["mean_paired_cos"] == pytest.approx(np.cos(phi), abs=1e-12)
    assert g["paired_distance"] == pytest.approx(np.sqrt(2 - 2 * np.cos(phi)), abs=1e-12)
    # unpaired mean cosine: exact identity vs brute force over all i != j
    yh = y / np.linalg.norm(y, axis=1, keepdims=True)
    c = xh @ yh.T
    brute = (c.sum() - np.trace(c)) / (n * (n - 1))
    assert g["mean_unpaired_cos"] == pytest.approx(brute, abs=1e-12)
    assert g["n_pairs"] == n


def test_paired_with_several_captions_per_image():
    rng = np.random.default_rng(3)
    n_img, d = 40, 8
    img = rng.standard_normal((n_img, d)) + 2.0
    idx = rng.integers(0, n_img, 150)
    txt = img[idx] + rng.standard_normal((150, d))
    g = modality_gap(img, txt, txt_image_index=idx)
    ih = img / np.linalg.norm(img, axis=1, keepdims=True)
    th = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    c = th @ ih.T
    pos = np.zeros_like(c, dtype=bool)
    pos[np.arange(150), idx] = True
    assert g["mean_paired_cos"] == pytest.approx(c[pos].mean(), abs=1e-12)
    assert g["mean_unpaired_cos"] == pytest.approx(c[~pos].mean(), abs=1e-12)
    assert g["paired_distance"] == pytest.approx(np.linalg.norm(ih[idx] - th, axis=1).mean(), abs=1e-12)
    assert g["gap"] == pytest.approx(np.linalg.norm(ih.mean(0) - th.mean(0)), abs=1e-12)


def test_gap_does_not_modify_input():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((10, 4)), rng.standard_normal((10, 4))
    x0, y0 = x.copy(), y.copy()
    modality_gap(x, y, paired=True)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)


def test_gap_bad_inputs():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((10, 4)), rng.standard_normal((12, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = x.copy()
        bad[3, 2] = np.nan
        modality_gap(bad, y)
    with pytest.raises(ValueError, match="txt: 1 row"):
        bad = y.copy()
        bad[0, 0] = -np.inf
        modality_gap(x, bad)
    with pytest.raises(ValueError, match="mismatched dimensions"):
        modality_gap(x, y[:, :3])
    with pytest.raises(ValueError, match="at least 2 vectors"):
        modality_gap(x[:1], y)
    with pytest.raises(ValueError, match="same number of rows"):
        modality_gap(x, y, paired=True)
    with pytest.raises(ValueError, match="zero vector"):
        bad = x.copy()
        bad[1] = 0
        modality_gap(bad, y)


# ------------------------------------------------------------------------- separability


def _acc_tol(n_test: int) -> float:
    # Labels independent of X and a balanced test set: any fixed classifier has expected
    # accuracy exactly 0.5 and s.d. <= sqrt(0.25 / n_test); allow 4 s.d.
    return 4 * np.sqrt(0.25 / n_test)


def test_far_apart_clouds_are_perfectly_separable():
    rng = np.random.default_rng(10)
    d, n = 16, 500
    img = rng.standard_normal((n, d)) + 5 * np.eye(1, d)
    txt = rng.standard_normal((n, d)) - 5 * np.eye(1, d)
    r = linear_separability(img, txt)
    assert r["accuracy"] == 1.0 and r["precision"] == 1.0 and r["recall"] == 1.0
    assert r["paired_split"] == 1.0
    assert r["n_test"] == 2 * 150 and r["n_train"] == 2 * 350
    assert r["n_features"] == d


def test_same_distribution_is_chance():
    rng = np.random.default_rng(11)
    d, n = 16, 2000
    img = rng.standard_normal((n, d))
    txt = rng.standard_normal((n, d))
    r = linear_separability(img, txt, paired=False)
    assert r["paired_split"] == 0.0
    assert abs(r["accuracy"] - 0.5) < _acc_tol(int(r["n_test"]))


def _pca_case(separation_in_top_pcs: bool, rng: np.random.Generator):
    d, n = 20, 1500
    img = rng.standard_normal((n, d))
    txt = rng.standard_normal((n, d))
    if separation_in_top_pcs:
        # ±4 along e_0: variance 1 + 16 makes e_0 the first principal axis
        img[:, 0] += 4.0
        txt[:, 0] -= 4.0
    else:
        # shared high variance on e_0..e_2 (s.d. 10, identical for both modalities) and the
        # modality signal on e_19 with tiny variance: ±0.5 offset, noise s.d. 0.05
        img[:, :3] *= 10
        txt[:, :3] *= 10
        img[:, 19] = 0.5 + 0.05 * rng.standard_normal(n)
        txt[:, 19] = -0.5 + 0.05 * rng.standard_normal(n)
    return img, txt


def test_pca2_separation_in_top_components():
    img, txt = _pca_case(True, np.random.default_rng(12))
    r2 = linear_separability(img, txt, pca_components=2)
    assert r2["n_features"] == 2
    assert r2["accuracy"] > 0.999  # overlap of N(±4, 1): Φ(−4) ≈ 3e-5 per point


def test_pca2_misses_low_variance_separation():
    img, txt = _pca_case(False, np.random.default_rng(13))
    full = linear_separability(img, txt)
    r2 = linear_separability(img, txt, pca_components=2)
    assert full["accuracy"] == 1.0  # 10 s.d. margin on e_19
    assert abs(r2["accuracy"] - 0.5) < _acc_tol(int(r2["n_test"]))


def test_paired_split_keeps_pairs_together():
    s = modality_split(100, 100, test_fraction=0.3, paired=True, seed=7)
    assert np.array_equal(s["img_test"], s["txt_test"]) and np.array_equal(s["img_train"], s["txt_train"])
    assert s["img_test"].size == 30 and np.intersect1d(s["img_train"], s["img_test"]).size == 0
    u = modality_split(50, 250, test_fraction=0.2, paired=False, seed=7)
    assert u["img_test"].size == 10 and u["txt_test"].size == 50
    assert np.union1d(u["txt_train"], u["txt_test"]).size == 250
    with pytest.raises(ValueError, match="equal lengths"):
        modality_split(50, 60, paired=True)
    with pytest.raises(ValueError, match="test_fraction"):
        modality_split(50, 60, test_fraction=1.5)


def test_fit_and_evaluate_across_datasets():
    rng = np.random.default_rng(14)
    d = 8
    shift = 3 * np.eye(1, d)
    X, y = modality_labels(rng.standard_normal((300, d)) + shift, rng.standard_normal((200, d)) - shift)
    assert X.shape == (500, d) and y[:300].all() and not y[300:].any()
    clf = fit_modality_classifier(X, y, pca_components=3)
    # a second "dataset" from the same two clouds, seen by the classifier only at evaluation
    X2, y2 = modality_labels(rng.standard_normal((100, d)) + shift, rng.standard_normal((100, d)) - shift)
    m = evaluate_classifier(clf, X2, y2)
    assert m["n"] == 200 and m["accuracy"] > 0.99
    # all predicted "text" on an all-image set: precision 0/0 -> 0, recall 0
    m0 = evaluate_classifier(clf, rng.standard_normal((5, d)) - shift, np.ones(5, dtype=int))
    assert m0 == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "n": 5.0}
    with pytest.raises(ValueError, match="both labels"):
        fit_modality_classifier(X[:300], y[:300])
    with pytest.raises(ValueError, match="labels must be"):
        fit_modality_classifier(X, y + 1)
    with pytest.raises(ValueError, match="pca_components"):
        fit_modality_classifier(X, y, pca_components=d + 1)


def test_pca_project_matches_svd():
    rng = np.random.default_rng(15)
    d = 6
    F = rng.standard_normal((400, d)) * np.array([5, 3, 1, 1, 1, 1]) @ _random_rotation(d, rng)
    X = rng.standard_normal((30, d))
    Z = pca_project(X, 2, fit_on=F)
    _, _, vt = np.linalg.svd(F - F.mean(0), full_matrices=False)
    ref = (X - F.mean(0)) @ vt[:2].T
    assert Z.shape == (30, 2)
    assert np.allclose(np.abs(Z), np.abs(ref), atol=1e-8)  # equal up to the sign of each axis
    assert pca_project(F).shape == (400, 2)
    with pytest.raises(ValueError, match="mismatched dimensions"):
        pca_project(X[:, :5], 2, fit_on=F)


def test_separability_bad_inputs():
    rng = np.random.default_rng(16)
    x, y = rng.standard_normal((20, 4)), rng.standard_normal((20, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = x.copy()
        bad[0, 0] = np.nan
        linear_separability(bad, y)
    with pytest.raises(ValueError, match="mismatched dimensions"):
        linear_separability(x, y[:, :2])
    with pytest.raises(ValueError, match="at least 2 vectors"):
        linear_separability(x, y[:1])
    with pytest.raises(ValueError, match="equal lengths"):
        linear_separability(x, y[:10], paired=True)
