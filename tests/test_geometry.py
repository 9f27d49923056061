"""Double-Ellipsoid suite, conformity and origin shift against data with a known answer.

Fixture: :func:`sample_ellipsoid_shell` draws ``x = c + R diag(σ) √d u`` with u uniform on the
sphere, so the covariance is exactly ``R diag(σ²) Rᵀ`` in expectation, the principal axes are the
columns of R, and every point has Mahalanobis radius √d. Tolerances come from the sampling error
at N = 20,000: the mean is off by about ``sqrt(tr Σ / N) ≈ 0.04``, eigenvalues by about
``λ sqrt(2/N) ≈ 1 %``, and a principal axis by about ``σ_k σ_{k+1} / ((λ_k − λ_{k+1}) √N)``
radians (≈ 0.5° with the eigen-gaps chosen below).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import polars.selectors as cs
import pytest
from scipy.linalg import subspace_angles

from clipgeo.geometry.conformity import (
    conformity,
    conformity_brute_force,
    conformity_divergence,
    conformity_fit,
    cosine_to,
    extreme_samples,
)
from clipgeo.geometry.ellipsoid import (
    MomentAccumulator,
    double_ellipsoid_suite,
    moments,
    per_sample_statistics,
    principal_axis_angle,
    sample_ellipsoid_shell,
    shell_summary,
    ellipsoid_shape_summary,
    subspace_comparison,
    tilt_table,
)
from clipgeo.geometry.gap import modality_gap
from clipgeo.geometry.separability import linear_separability
from clipgeo.geometry.shift import (
    alignment,
    best_alpha,
    info_nce_loss,
    origin_shift,
    shift_normalize,
    uniformity,
)
from clipgeo.retrieval import retrieval_metrics

D = 16
N = 20_000
SIG_I = 4.0 * 0.7 ** np.arange(D)  # eigenvalue ratio 0.49 between neighbouring axes
SIG_T = 3.0 * 0.72 ** np.arange(D)
TILT_DEG = 30.0


def _rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _givens(d: int, i: int, j: int, deg: float) -> np.ndarray:
    g = np.eye(d)
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    g[i, i], g[j, j], g[i, j], g[j, i] = c, c, -s, s
    return g


def _centres() -> tuple[np.ndarray, np.ndarray]:
    # ||μ_I|| = 6, ||μ_T|| = 5, cos(μ_I, μ_T) = 0.3, in a random orientation
    q = _rotation(D, 99)
    a = q[:, 0]
    b = 0.3 * q[:, 0] + np.sqrt(1 - 0.09) * q[:, 1]
    return 6.0 * a, 5.0 * b


R_I = _givens(D, 0, 1, TILT_DEG)  # axes 0 and 1 tilted by 30° in the (e0, e1) plane
R_T = _rotation(D, 7)  # fully random orientation
MU_I, MU_T = _centres()


@pytest.fixture(scope="module")
def shells():
    img = sample_ellipsoid_shell(N, MU_I, SIG_I, R_I, seed=1)
    txt = sample_ellipsoid_shell(N, MU_T, SIG_T, R_T, seed=2)
    return img, txt


@pytest.fixture(scope="module")
def suite(shells):
    return double_ellipsoid_suite(*shells, fixed_k=3)


def _row(result, modality: str) -> dict:
    return result.modality.filter(pl.col("modality") == modality).to_dicts()[0]


# ------------------------------------------------------------------------ P2–P5 on shells


def test_suite_recovers_centres_p5(suite):
    img, txt = _row(suite, "image"), _row(suite, "text")
    assert img["offcentre_mean_norm"] == pytest.approx(6.0, abs=0.1)
    assert txt["offcentre_mean_norm"] == pytest.approx(5.0, abs=0.1)
    assert suite.cross["cos_between_means"] == pytest.approx(0.3, abs=0.02)
    # ||μ|| / largest semi-axis = 6 / 4 and 5 / 3
    assert img["offcentre_mean_norm_over_max_semi_axis"] == pytest.approx(6 / 4, rel=0.03)
    assert txt["offcentre_mean_norm_over_max_semi_axis"] == pytest.approx(5 / 3, rel=0.03)
    assert 0 < img["offcentre_mean_norm_over_mean_length"] < 1


def test_suite_gap_equals_modality_gap(suite, shells):
    g = modality_gap(*shells)
    assert suite.cross["modality_gap"] == pytest.approx(g["gap"], abs=1e-12)
    assert suite.cross["modality_gap_raw"] == pytest.approx(g["gap_raw"], abs=1e-10)


def test_suite_recovers_axis_lengths_p3(suite):
    ev = suite.eigenvalues
    for name, sig in (("image", SIG_I), ("text", SIG_T)):
        semi = ev.filter(pl.col("modality") == name).sort("axis")["semi_axis"].to_numpy()
        np.testing.assert_allclose(semi[:8], sig[:8], rtol=0.03)
        row = _row(suite, name)
        assert row["ellipsoid_semi_axis_max"] == pytest.approx(sig[0], rel=0.02)
        assert row["ellipsoid_anisotropy"] == pytest.approx(sig[0] / np.median(sig), rel=0.05)
        p = sig**2 / np.sum(sig**2)
        assert row["ellipsoid_effective_rank_lambda_entropy"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=0.03)
        assert row["ellipsoid_k90"] == np.searchsorted(np.cumsum(p), 0.9) + 1
        # a perfect ellipsoid shell: constant Mahalanobis radius (√d), spread Euclidean radius
        assert row["mahalanobis_radius_cv"] < 0.01
        assert row["euclidean_radius_cv"] > 0.1
        assert row["mahalanobis_rank"] == D


def test_thin_shell_p2():
    # isotropic shell of radius √d·σ with radial factor ρ ~ U(0.8, 1.2):
    # ||x − μ|| = √d σ ρ, so std/mean = 0.2/√3, q0 ≈ 0.8 √d σ, q50 ≈ √d σ, q100 ≈ 1.2 √d σ,
    # and nothing lies within half the median radius of the mean.
    sig, w = 1.5, 0.2
    r0 = np.sqrt(D) * sig
    img = sample_ellipsoid_shell(N, MU_I, np.full(D, sig), R_T, thickness=w, seed=12)
    txt = sample_ellipsoid_shell(N, MU_T, np.full(D, sig), thickness=w, seed=13)
    res = double_ellipsoid_suite(img, txt)
    for name in ("image", "text"):
        row = _row(res, name)
        assert row["dist_to_mean_frac_near_mean"] == 0.0
        assert row["dist_to_mean_std_over_mean"] == pytest.approx(w / np.sqrt(3), rel=0.03)
        assert row["dist_to_mean_mean"] == pytest.approx(r0, rel=0.01)  # E ρ = 1; μ estimated to ~0.03
        assert row["dist_to_mean_q50"] == pytest.approx(r0, rel=0.01)
        assert row["dist_to_mean_q0"] == pytest.approx((1 - w) * r0, rel=0.01)
        assert row["dist_to_mean_q100"] == pytest.approx((1 + w) * r0, rel=0.01)
        assert row["dist_to_mean_q25"] == pytest.approx((1 - w / 2) * r0, rel=0.01)
    h = res.histograms.filter((pl.col("kind") == "radius") & (pl.col("modality") == "image"))
    assert h["count"].sum() == N and h["lo"][0] == 0.0
    assert h.filter(pl.col("hi") < 0.79 * r0)["count"].sum() == 0  # empty near the mean


def test_anisotropic_shell_summary_is_consistent(suite, shells):
    img, _ = shells
    r = np.linalg.norm(img - img.mean(0), axis=1)
    row = _row(suite, "image")
    assert row["dist_to_mean_mean"] == pytest.approx(r.mean(), rel=1e-12)
    assert row["dist_to_mean_std_over_mean"] == pytest.approx(r.std() / r.mean(), rel=1e-10)
    assert row["dist_to_mean_q5"] == pytest.approx(np.quantile(r, 0.05), rel=1e-10)
    assert row["dist_to_mean_frac_near_mean"] == pytest.approx(np.mean(r < 0.5 * np.median(r)))


def test_suite_recovers_tilt_p4(suite, shells):
    tilt = suite.tilt
    img_t = tilt.filter(pl.col("modality") == "image").sort("axis")["max_abs_coord"].to_numpy()
    assert img_t[:2] == pytest.approx([np.cos(np.radians(TILT_DEG))] * 2, abs=0.02)
    assert np.all(img_t[2:6] > 0.99)  # untouched axes stay coordinate-aligned
    txt_t = tilt.filter(pl.col("modality") == "text").sort("axis")["max_abs_coord"].to_numpy()
    np.testing.assert_allclose(txt_t[:3], np.abs(R_T[:, :3]).max(axis=0), atol=0.03)
    true_angle = np.degrees(np.arccos(abs(R_I[:, 0] @ R_T[:, 0])))
    assert suite.cross["first_axis_angle_deg"] == pytest.approx(true_angle, abs=2.0)


def test_suite_principal_angles_p1(suite):
    sub = suite.subspaces.filter(pl.col("setting") == "fixed").to_dicts()[0]
    assert sub["k"] == 3
    true = np.sort(np.degrees(subspace_angles(R_I[:, :3], R_T[:, :3])))
    got = suite.principal_angles.filter(pl.col("setting") == "fixed")["angle_deg"].to_numpy()
    np.testing.assert_allclose(got, true, atol=2.0)
    # share of text variance inside the image top-3 subspace: tr(U_Iᵀ Σ_T U_I) / tr Σ_T
    cov_t = R_T @ np.diag(SIG_T**2) @ R_T.T
    share = np.trace(R_I[:, :3].T @ cov_t @ R_I[:, :3]) / np.sum(SIG_T**2)
    assert sub["share_text_in_image"] == pytest.approx(share, abs=0.02)
    assert set(suite.subspaces["setting"]) == {"k90", "k99", "fixed"}


@pytest.mark.parametrize("d", [12, 48])
def test_subspace_settings_with_k_over_half_d_match_scipy(d):
    """k90 / k99 above d / 2 take their angles from the complements (and the shares from
    tr Σ − the complement's part): every setting's angles and shares equal scipy's
    ``subspace_angles`` and numpy's traces on the top-k eigenvectors."""
    rng = np.random.default_rng(d)
    sig = 1.0 + 0.05 * rng.random(d)                       # near-isotropic: k90, k99 > d/2
    x = rng.normal(size=(4000, d)) * sig
    y = (rng.normal(size=(4000, d)) * sig) @ np.linalg.qr(rng.normal(size=(d, d)))[0] * 0.3 + x * 0.7
    mi, mt = moments(x, "image"), moments(y, "text")
    summ, angles = subspace_comparison(mi, mt, fixed_k=d - 1)
    assert (summ["k"] > d // 2).all()
    for row in summ.to_dicts():
        k = row["k"]
        ua, ub = mi.eigenvectors[:, :k], mt.eigenvectors[:, :k]
        want = np.sort(np.degrees(subspace_angles(ua, ub)))
        got = angles.filter(pl.col("setting") == row["setting"])["angle_deg"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
        assert row["share_text_in_image"] == pytest.approx(np.trace(ua.T @ mt.cov @ ua) / np.trace(mt.cov), abs=1e-12)
        assert row["share_image_in_text"] == pytest.approx(np.trace(ub.T @ mi.cov @ ub) / np.trace(mi.cov), abs=1e-12)
    whole, whole_angles = subspace_comparison(mi, mt, fixed_k=d)      # k = d: one space, every angle 0
    assert whole.filter(pl.col("setting") == "fixed")["max_angle_deg"][0] == 0.0
    assert whole.filter(pl.col("setting") == "fixed")["share_text_in_image"][0] == pytest.approx(1.0, abs=1e-12)


def test_separate_and_shared_subspaces_p1():
    sig = np.r_[2.0 * 0.8 ** np.arange(8), np.zeros(8)]
    img = sample_ellipsoid_shell(3000, 3 * np.eye(1, D)[0], sig, seed=3)
    txt = sample_ellipsoid_shell(3000, 3 * np.eye(1, D)[0], sig[np.r_[8:16, 0:8]], seed=4)  # e8..e15
    same = sample_ellipsoid_shell(3000, np.zeros(D), sig, _givens(D, 0, 3, 40), seed=5)  # span(e0..e7)
    mi, mt, ms = moments(img, "image"), moments(txt, "text"), moments(same, "same")
    sep, _ = subspace_comparison(mi, mt, fixed_k=8)
    fixed = sep.filter(pl.col("setting") == "fixed").to_dicts()[0]
    assert fixed["min_angle_deg"] == pytest.approx(90.0, abs=1e-6)
    assert fixed["share_text_in_image"] == pytest.approx(0.0, abs=1e-12)
    shared, _ = subspace_comparison(mi, ms, fixed_k=8)
    fixed = shared.filter(pl.col("setting") == "fixed").to_dicts()[0]
    assert fixed["max_angle_deg"] == pytest.approx(0.0, abs=1e-4)
    assert fixed["share_same_in_image"] == pytest.approx(1.0, abs=1e-9)
    # separate subspaces alone do not make the modalities linearly separable (two shells
    # through a common centre cannot be split by a hyperplane); offset centres do
    moved = txt + 20.0 * np.eye(1, D, 8)[0]  # text x_8 >= 20 − √8·2 > 0 = image x_8
    assert linear_separability(img, moved)["accuracy"] == 1.0
    # a rank-8 shell: the pseudo-inverse keeps 8 directions, Mahalanobis radius is √8
    ps = per_sample_statistics(img, mi)
    assert ps.rank == 8
    assert ps.mahalanobis.mean() == pytest.approx(np.sqrt(8), rel=0.01)
    assert ps.mahalanobis.std() / ps.mahalanobis.mean() < 0.02  # covariance estimated from 3000


def test_shell_thickness_and_filled_distribution():
    thick = sample_ellipsoid_shell(N, np.zeros(D), SIG_I, thickness=0.2, seed=6)
    mom = moments(thick)
    ps = per_sample_statistics(thick, mom)
    cv = ps.mahalanobis.std() / ps.mahalanobis.mean()
    assert cv == pytest.approx(0.2 / np.sqrt(3), rel=0.05)  # ρ ~ U(0.8, 1.2)
    # a filled 2-D Gaussian (not a shell): P(r < median/2) = 1 − 2^(−1/4) ≈ 0.159
    g = np.random.default_rng(7).standard_normal((N, 2))
    s = shell_summary(np.linalg.norm(g - g.mean(0), axis=1))
    assert s["frac_near_mean"] == pytest.approx(1 - 2 ** -0.25, abs=0.01)
    assert set(s) >= {"mean", "std", "std_over_mean", "q0", "q1", "q5", "q50", "q99", "q100"}


def test_spectrum_and_tilt_helpers_exact():
    # a covariance given exactly: eigenvalues 9, 4, 1 on a tilted basis
    rot = _givens(3, 0, 1, 45.0)
    x = np.array([[3, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1]], float)
    x = (x * np.sqrt(3)) @ rot.T  # population covariance = diag(9, 4, 1) rotated
    mom = moments(x)
    np.testing.assert_allclose(mom.eigenvalues, [9, 4, 1], atol=1e-12)
    s = ellipsoid_shape_summary(mom)
    assert s["anisotropy"] == pytest.approx(3 / 2)
    assert s["total_variance"] == pytest.approx(14)
    t = tilt_table(mom, 3)["max_abs_coord"].to_numpy()
    np.testing.assert_allclose(t, [np.sqrt(0.5), np.sqrt(0.5), 1.0], atol=1e-12)
    other = moments(x @ _givens(3, 0, 1, 20.0).T)
    assert principal_axis_angle(mom, other) == pytest.approx(20.0, abs=1e-9)


# ---------------------------------------------------------------------------- streaming


def test_moments_streaming_equals_full(shells):
    img, _ = shells
    full = moments(img)
    chunks = [img[i : i + 777] for i in range(0, N, 777)]
    from_list = moments(chunks)
    from_callable = moments(lambda: iter(chunks))
    acc_a = MomentAccumulator().update_from(img[:5000])
    acc_b = MomentAccumulator().update_from(img[5000:])
    merged = acc_a.merge(acc_b).finalize()
    ref_cov = np.cov(img, rowvar=False, bias=True)
    for m in (full, from_list, from_callable, merged):
        assert m.n == N
        np.testing.assert_allclose(m.mean, img.mean(0), atol=1e-12)
        np.testing.assert_allclose(m.cov, ref_cov, atol=1e-10)


def test_moments_numerically_stable_far_from_origin():
    rng = np.random.default_rng(8)
    x = 1e6 + rng.standard_normal((10_000, 4)) * np.array([1e-2, 1, 2, 3])
    m = moments([x[i : i + 1000] for i in range(0, 10_000, 1000)])
    np.testing.assert_allclose(m.cov, np.cov(x - x.mean(0), rowvar=False, bias=True), rtol=1e-6, atol=1e-12)


def test_suite_on_chunks_equals_suite_on_arrays(shells):
    img, txt = shells[0][:3000], shells[1][:2000]
    a = double_ellipsoid_suite(img, txt)
    b = double_ellipsoid_suite(lambda: (img[i : i + 500] for i in range(0, 3000, 500)), [txt[:1234], txt[1234:]])
    num_a = a.modality.select(cs.numeric()).to_numpy()
    num_b = b.modality.select(cs.numeric()).to_numpy()
    np.testing.assert_allclose(num_a, num_b, rtol=1e-9, atol=1e-12)  # chunking only reorders sums
    np.testing.assert_allclose(a.per_sample["conformity"].to_numpy(), b.per_sample["conformity"].to_numpy(), atol=1e-12)


def test_normalized_inputs_are_flagged(shells):
    img, txt = shells
    u_i = img[:500] / np.linalg.norm(img[:500], axis=1, keepdims=True)
    u_t = txt[:500] / np.linalg.norm(txt[:500], axis=1, keepdims=True)
    r = double_ellipsoid_suite(u_i, u_t)
    assert r.modality["inputs_normalized"].to_list() == [True, True]
    assert _row(double_ellipsoid_suite(img[:500], u_t), "image")["inputs_normalized"] is False


# ---------------------------------------------------------------------------- conformity


def test_conformity_equals_brute_force():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((300, 8)) * np.arange(1, 9) + 2.0
    fast = conformity(x)
    np.testing.assert_allclose(fast, conformity_brute_force(x), atol=1e-12)
    # definition spelled out for one vector
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert fast[17] == pytest.approx(np.mean(np.delete(u @ u[17], 17)), abs=1e-12)
    # chunked sources give the same values
    np.testing.assert_allclose(conformity([x[:123], x[123:]]), fast, atol=1e-12)


def test_conformity_exactly_affine_in_cos_to_normalised_mean():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((500, 6)) + np.array([3, 0, 0, 0, 0, 1.0])
    n = x.shape[0]
    m_hat = (x / np.linalg.norm(x, axis=1, keepdims=True)).mean(0)
    fit = conformity_fit(conformity(x), cosine_to(x, m_hat))
    # C = (N ||m̂|| cos(x, m̂) − 1) / (N − 1)
    assert fit["a"] == pytest.approx(n * np.linalg.norm(m_hat) / (n - 1), rel=1e-10)
    assert fit["b"] == pytest.approx(-1 / (n - 1), abs=1e-10)
    assert fit["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    assert fit["spearman_rho"] == pytest.approx(1.0, abs=1e-12)


def test_conformity_in_suite_matches_definition(suite, shells):
    got = suite.per_sample.filter(pl.col("modality") == "text")["conformity"].to_numpy()
    np.testing.assert_allclose(got[:1000], conformity(shells[1])[:1000], atol=1e-12)
    assert _row(suite, "image")["conformity_fit_raw_mean_pearson_r"] > 0.9  # the paper's observation
    # against the mean of the unit vectors the relation is exact (DE-CLIP notebook)
    for m in ("image", "text"):
        assert _row(suite, m)["conformity_fit_unit_mean_pearson_r"] == pytest.approx(1.0, abs=1e-12)


def test_conformity_divergence_and_extremes():
    a = np.linspace(0, 1, 1000)
    same = conformity_divergence(a, a.copy())
    assert same["js_divergence"] == pytest.approx(0, abs=1e-12) and same["ks_statistic"] == 0
    apart = conformity_divergence(a, a + 5)
    assert apart["js_divergence"] == pytest.approx(1.0) and apart["ks_statistic"] == 1.0
    assert apart["wasserstein"] == pytest.approx(5.0) and apart["mean_difference"] == pytest.approx(-5.0)
    ex = extreme_samples(np.array([0.1, 0.9, 0.5, -0.2, 0.3]), k=2)
    assert ex.filter(pl.col("kind") == "most")["row"].to_list() == [1, 2]
    assert ex.filter(pl.col("kind") == "least")["row"].to_list() == [3, 0]


# -------------------------------------------------------------------------------- shift


def _paired_data(seed=11, n_img=300, per=3, d=12):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n_img, d)) + 2.0 * np.eye(1, d)[0]
    idx = np.repeat(np.arange(n_img), per)
    txt = 0.8 * img[idx] + rng.standard_normal((n_img * per, d)) - 1.5 * np.eye(1, d, 1)[0]
    return img, txt, idx


def test_alignment_uniformity_infonce_known_values():
    n, phi = 50, 0.7
    e = np.eye(n)  # orthonormal set
    y = np.cos(phi) * e + np.sin(phi) * np.roll(e, 1, axis=1)  # rows at angle φ, unit norm
    assert alignment(e, y) == pytest.approx(2 - 2 * np.cos(phi), abs=1e-12)
    # all pairwise squared distances of an orthonormal set are 2: log mean exp(−2 · 2) = −4
    assert uniformity(e, n_vectors=None) == pytest.approx(-4.0, abs=1e-12)
    s = 10.0  # x = y orthonormal: L_ii = s, L_ij = 0  ->  loss = log(e^s + N − 1) − s
    assert info_nce_loss(e, e, s) == pytest.approx(np.log(np.exp(s) + n - 1) - s, abs=1e-12)


def test_infonce_matches_dense_reference():
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((70, 5)), rng.standard_normal((70, 5))
    xh = x / np.linalg.norm(x, axis=1, keepdims=True)
    yh = y / np.linalg.norm(y, axis=1, keepdims=True)
    L = 30.0 * xh @ yh.T
    ls = lambda m, ax: np.log(np.exp(m).sum(axis=ax))  # noqa: E731
    ref = 0.5 * (np.mean(ls(L, 1) - np.diag(L)) + np.mean(ls(L, 0) - np.diag(L)))
    assert info_nce_loss(x, y, 30.0, block=16) == pytest.approx(ref, abs=1e-12)


def test_shift_at_zero_equals_unshifted_metrics():
    img, txt, idx = _paired_data()
    tab = origin_shift(img, txt, idx, logit_scale=50.0, alphas=[0.0], max_images=None, n_uniformity_vectors=100)
    row = tab.to_dicts()[0]
    assert row["alignment"] == pytest.approx(alignment(img[idx], txt), abs=1e-12)
    assert row["uniformity_image"] == pytest.approx(uniformity(img, n_vectors=100), abs=1e-12)
    assert row["uniformity_text"] == pytest.approx(uniformity(txt, n_vectors=100), abs=1e-12)
    first = np.array([np.flatnonzero(idx == i)[0] for i in range(img.shape[0])])
    assert row["infonce"] == pytest.approx(info_nce_loss(img, txt[first], 50.0), abs=1e-10)
    m = retrieval_metrics(img, txt, idx, ks=(1,))
    assert row["text_to_image_top1"] == m["text_to_image_recall@1"]
    assert row["image_to_text_top1"] == m["image_to_text_recall@1"]
    assert row["n_pairs"] == idx.size and row["n_images_subsample"] == img.shape[0]
    assert row["uniformity_exact"] is False


def test_shift_nonzero_alpha_equals_direct_computation():
    img, txt, idx = _paired_data(n_img=80, per=2)
    mu_i, mu_t = img.mean(0), txt.mean(0)
    tab = origin_shift(img, txt, idx, logit_scale=20.0, alphas=[-0.5, 0.0, 1.0, 1.5], max_images=60, n_uniformity_vectors=None)
    for row in tab.to_dicts():
        a = row["alpha"]
        xs, ys = shift_normalize(img, mu_i, a), shift_normalize(txt, mu_t, a)
        assert row["alignment"] == pytest.approx(alignment(xs[idx], ys), abs=1e-10)
        assert row["uniformity_image"] == pytest.approx(uniformity(xs, n_vectors=None), abs=1e-10)
        assert row["uniformity_text"] == pytest.approx(uniformity(ys, n_vectors=None), abs=1e-10)
    assert tab["uniformity_exact"].all() and tab["n_images_subsample"][0] == 60
    assert tab["n_texts_subsample"][0] == 120
    # centring (α = 1) spreads each modality over the sphere: more uniform than α = 0
    u = dict(zip(tab["alpha"], tab["uniformity"], strict=True))
    assert u[1.0] < u[0.0]
    assert best_alpha(tab, "uniformity") in {1.0, 1.5}
    assert best_alpha(tab, "text_to_image_top1") in set(tab["alpha"])


def test_shift_bad_inputs():
    img, txt, idx = _paired_data(n_img=20, per=2)
    with pytest.raises(ValueError, match="txt_image_index is required"):
        origin_shift(img, txt, logit_scale=10.0)
    with pytest.raises(ValueError, match="logit_scale"):
        origin_shift(img, txt, idx, logit_scale=-1.0)
    with pytest.raises(ValueError, match="mismatched dimensions"):
        origin_shift(img, txt[:, :5], idx, logit_scale=10.0)
    with pytest.raises(ValueError, match="origin"):
        origin_shift(np.ones((4, 3)) + np.eye(4, 3) * [1, 0, 0], np.ones((4, 3)) + 0.1 * np.eye(4, 3), logit_scale=10.0, alphas=[1.0], mu_img=np.array([2.0, 1, 1]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = txt.copy()
        bad[5, 0] = np.nan
        origin_shift(img, bad, idx, logit_scale=10.0)
    with pytest.raises(ValueError, match="positive finite"):
        info_nce_loss(img, img, float("inf"))


# ---------------------------------------------------------------------------- bad input


def test_suite_bad_inputs(shells):
    img, txt = shells[0][:100], shells[1][:100]
    bad = img.copy()
    bad[42, 3] = np.nan
    with pytest.raises(ValueError, match=r"image: 1 row\(s\) contain NaN or infinite values \(first: row 42\)"):
        double_ellipsoid_suite(bad, txt)
    second = img[50:].copy()
    second[7, 1] = np.inf
    with pytest.raises(ValueError, match="first: row 57"):  # rows counted across chunks
        double_ellipsoid_suite([img[:50], second], txt)
    with pytest.raises(ValueError, match="mismatched dimensions"):
        double_ellipsoid_suite(img, txt[:, :8])
    with pytest.raises(ValueError, match="mismatched dimensions"):
        double_ellipsoid_suite([img], [txt[:, :8]])
    with pytest.raises(ValueError, match="at least 2 vectors"):
        double_ellipsoid_suite(img[:1], txt)
    with pytest.raises(ValueError, match="at least 2 vectors"):
        double_ellipsoid_suite([img], [txt[:1]])
    with pytest.raises(ValueError, match="zero vector"):
        z = img.copy()
        z[7] = 0
        double_ellipsoid_suite(z, txt)
    with pytest.raises(ValueError, match="bare iterator"):
        double_ellipsoid_suite(iter([img]), txt)
    with pytest.raises(ValueError, match="zero vector"):
        conformity(np.vstack([img, np.zeros((1, D))]))
    with pytest.raises(ValueError, match="at least 2 vectors"):
        conformity(img[:1])


def test_uniformity_subset_estimate_is_close_to_exact():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1500, 8)) + 0.7
    exact = uniformity(x, n_vectors=None)
    est = uniformity(x, n_vectors=400, seed=3)  # 79,800 pairs of 400 random rows
    assert est == pytest.approx(exact, abs=0.05)
    assert est != exact


# ---------------------------------------------------------------------------- small samples


def test_small_samples_show_no_number_and_say_why():
    """13 vectors at d = 64 (a singular covariance): no anisotropy, effective rank or Mahalanobis
    spread, and the reason is stored; 4 vectors: no conformity fit either."""
    rng = np.random.default_rng(11)
    img, txt = rng.standard_normal((13, 64)) + 1, rng.standard_normal((4, 64)) - 1
    res = double_ellipsoid_suite(img, txt)
    im, tx = _row(res, "image"), _row(res, "text")
    assert im["covariance_status"] == "rank_limited" and "13 image vectors <= d = 64" in im["covariance_message"]
    for col in ("ellipsoid_anisotropy", "ellipsoid_effective_rank_lambda_entropy",
                "ellipsoid_effective_rank_sigma_entropy", "ellipsoid_semi_axis_median", "mahalanobis_radius_cv"):
        assert im[col] is None, col
    assert im["conformity_fit_raw_mean_pearson_r"] is not None  # 13 points: a fit is reported
    assert tx["conformity_fit_raw_mean_pearson_r"] is None and "needs at least 5" in tx["conformity_fit_message"]
    big = double_ellipsoid_suite(rng.standard_normal((200, 8)), rng.standard_normal((200, 8)))
    assert _row(big, "image")["covariance_status"] == "ok" and _row(big, "image")["ellipsoid_anisotropy"] > 1


# ---------------------------------------------------------------------------- shared primitives


def test_scatter_accumulator_add_merge_finalize_against_numpy():
    from clipgeo.core.stats import ScatterAccumulator

    rng = np.random.default_rng(12)
    x = rng.standard_normal((3000, 12)) * np.arange(1, 13) + 50.0  # far off-centre
    parts = [x[:1], x[1:900], x[900:2000], x[2000:]]
    accs = [ScatterAccumulator().add(p) for p in parts]
    total = accs[0].merged(accs[1]).merge(accs[2].merged(accs[3]))
    ref = np.cov(x, rowvar=False, bias=True)
    assert total.n == 3000 and total.d == 12
    np.testing.assert_allclose(total.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(total.covariance(), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(total.covariance(ddof=1), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(total.eigenvalues(), np.linalg.eigvalsh(ref)[::-1], rtol=1e-10)
    assert accs[0].n == 1  # merged() leaves its inputs alone
    res = total.finalize()
    assert res.n == 3000 and np.allclose(res.covariance, ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(res.eigenvalues, total.eigenvalues())
    import pickle

    again = pickle.loads(pickle.dumps(total))
    np.testing.assert_array_equal(again.scatter, total.scatter)
    with pytest.raises(ValueError, match="dimension 3, expected 12"):
        total.add(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        ScatterAccumulator().add(np.array([[1.0, np.nan]]))


def test_centred_eigenvalues_both_routes_equal_the_accumulator():
    from clipgeo.core.stats import ScatterAccumulator, centred_eigenvalues

    rng = np.random.default_rng(13)
    for n, d in ((7, 20), (40, 20)):  # Gram route (n <= d) and scatter route
        v = rng.standard_normal((n, d))
        k = min(n - 1, d)
        np.testing.assert_allclose(centred_eigenvalues(v), ScatterAccumulator().add(v).eigenvalues()[:k],
                                   rtol=1e-10, atol=1e-13)


def test_effective_rank_forms_and_l2_policy():
    from clipgeo.core.stats import effective_rank_lambda_entropy, effective_rank_sigma_entropy, l2_normalize

    lam = np.array([4.0, 1.0, 0.0])
    p = lam[:2] / 5
    assert effective_rank_lambda_entropy(lam) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-14)
    q = np.array([2.0, 1.0]) / 3
    assert effective_rank_sigma_entropy(lam) == pytest.approx(np.exp(-np.sum(q * np.log(q))), rel=1e-14)
    assert effective_rank_lambda_entropy(np.ones(5)) == pytest.approx(5) == effective_rank_sigma_entropy(np.ones(5))
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="x: row 1 is a zero vector"):
        l2_normalize(x, "x")
    np.testing.assert_allclose(l2_normalize(x[:1]), [[0.6, 0.8]], rtol=1e-15)


def test_lean_rank_and_ecdf_statistics_equal_scipy():
    """The O(n)-memory Spearman, KS and Wasserstein used at 10M points against scipy's own."""
    import scipy.stats as st

    from clipgeo.geometry.conformity import average_ranks, ecdf_distances, spearman_rho

    rng = np.random.default_rng(11)
    for na, nb in ((2, 2), (5, 3), (1000, 700), (50_000, 61_000)):
        for ties in (False, True):
            a, b = rng.normal(size=na), rng.normal(0.3, 1.2, size=nb)
            if ties:
                a, b = np.round(a, 1), np.round(b, 1)
            ks, w1 = ecdf_distances(a, b, block=97)
            assert ks == pytest.approx(st.ks_2samp(a, b).statistic, abs=1e-15)
            assert w1 == pytest.approx(st.wasserstein_distance(a, b), rel=1e-12)
            np.testing.assert_array_equal(average_ranks(a), st.rankdata(a))
            np.testing.assert_array_equal(average_ranks(a, block=7), st.rankdata(a))   # ties across blocks
            y = a[: min(na, 1000)] + rng.normal(size=min(na, 1000))
            x = a[: min(na, 1000)]
            if ties:
                y = np.round(y, 0)
            assert spearman_rho(x, y) == pytest.approx(st.spearmanr(x, y).statistic, abs=1e-12)
