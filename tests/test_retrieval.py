"""Retrieval ranks and recall@k against hand-computed answers and simple references."""

from __future__ import annotations

import numpy as np
import pytest

from clipgeo.retrieval import (
    image_to_text_ranks,
    recall_at_k,
    retrieval_metrics,
    retrieval_ranks,
    text_to_image_ranks,
)

# Cosine table: caption c (rows) x image i (columns), captions' images G.
# Images are basis vectors e_0..e_3; caption c = Σ_i COS[c, i] e_i + sqrt(1 − Σ COS²) e_{4+c}, so
# cos(caption c, image i) is COS[c, i] / ‖t_c‖ (‖t_c‖ ≈ 1): equal entries of one row are *exact*
# ties. Caption 6 is an exact copy of caption 0's vector under another image (identical texts),
# which makes an exact tie across captions.
COS = np.array(
    [
        [0.9, 0.1, 0.2, 0.0],  # image 0: own 0.9 is the best           -> rank 0
        [0.8, 0.3, 0.3, 0.1],  # image 1: 0.8 above, image 2 tied at 0.3 -> rank 1, 1 tie
        [0.1, 0.2, 0.35, 0.7],  # image 2: 0.7 above                    -> rank 1
        [0.4, 0.4, 0.4, 0.4],  # image 3: four-way tie                  -> rank 0, 3 ties
        [0.1, 0.7, 0.2, 0.05],  # image 0: 0.7 and 0.2 above            -> rank 2
        [0.0, 0.5, 0.0, 0.0],  # image 1: best                          -> rank 0
        [0.9, 0.1, 0.2, 0.0],  # image 2 (copy of caption 0): 0.9 above -> rank 1
    ]
)
G = np.array([0, 1, 2, 3, 0, 1, 2])
T2I = np.array([0, 1, 1, 0, 2, 0, 1])
T2I_TIES = np.array([0, 1, 0, 3, 0, 0, 0])
# image 0: best own 0.9 (caption 0); caption 6 (image 2) is the same vector: a tie -> 0, 1 tie
# image 1: best own 0.5 (caption 5); caption 4 scores 0.7                       -> 1
# image 2: best own 0.35 (caption 2); caption 3 scores 0.4                      -> 1
# image 3: own 0.4; caption 2 scores 0.7                                        -> 1
I2T = np.array([0, 1, 1, 1])
I2T_TIES = np.array([1, 0, 0, 0])


def _constructed(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n_img, n_txt = COS.shape[1], COS.shape[0]
    d = n_img + n_txt
    img = np.eye(n_img, d)
    txt = np.zeros((n_txt, d))
    txt[:, :n_img] = COS
    txt[np.arange(n_txt), n_img + np.arange(n_txt)] = np.sqrt(np.clip(1 - (COS**2).sum(1), 0, None))
    txt[6] = txt[0]
    return img, txt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_known_ranks_and_ties_with_multiple_captions(dtype):
    img, txt = _constructed()
    rr = retrieval_ranks(img, txt, G, dtype=dtype, query_block=3, gallery_block=2)
    assert np.array_equal(rr.t2i, T2I) and np.array_equal(rr.t2i_ties, T2I_TIES)
    assert np.array_equal(rr.i2t, I2T) and np.array_equal(rr.i2t_ties, I2T_TIES)
    assert np.array_equal(text_to_image_ranks(img, txt, G, dtype=dtype), T2I)
    assert np.array_equal(image_to_text_ranks(img, txt, G, dtype=dtype), I2T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_wrong_item_ahead_by_1e6_is_a_miss(dtype):
    """The correct image scores 1e-6 below a wrong one: strict rank 1, recall@1 = 0 (the old
    1e-5 tolerance called this a hit). Same for image -> text with a wrong caption."""
    c = 0.6
    img = np.eye(3, 4)
    # caption 0 (image 0): cos to image 1 is larger by exactly 1e-6 / ‖t‖
    t0 = np.array([c, c + 1e-6, 0.1, np.sqrt(1 - c**2 - (c + 1e-6) ** 2 - 0.01)])
    t1 = np.array([0.0, 0.9, 0.0, np.sqrt(1 - 0.81)])
    t2 = np.array([0.0, 0.0, 0.5, np.sqrt(1 - 0.25)])
    txt = np.stack([t0, t1, t2])
    rr = retrieval_ranks(img, txt, dtype=dtype)
    assert rr.t2i.tolist() == [1, 0, 0] and not rr.t2i_ties.any()
    assert recall_at_k(rr.t2i, (1,))["recall@1"] == pytest.approx(2 / 3)
    # image -> text: image 0's own caption scores 0.6; give caption 2 (image 2) 0.6 + 1e-6
    t2b = np.array([c + 1e-6, 0.0, 0.5, np.sqrt(1 - (c + 1e-6) ** 2 - 0.25)])
    t0b = np.array([c, 0.0, 0.0, np.sqrt(1 - c**2)])
    rr = retrieval_ranks(img, np.stack([t0b, t1, t2b]), dtype=dtype)
    assert rr.i2t.tolist() == [1, 0, 0] and not rr.i2t_ties.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_near_ties_are_decided_exactly_in_float32(dtype):
    """Margins of 1e-7 .. 1e-5 (below float32's block rounding at d = 256): the ranks equal a
    float64 brute-force count of strictly higher cosines, whatever the scoring dtype."""
    rng = np.random.default_rng(7)
    n, d = 60, 256
    img = rng.standard_normal((n, d))
    txt = img + 0.05 * rng.standard_normal((n, d))
    imgn = img / np.linalg.norm(img, axis=1, keepdims=True)
    # move caption q so that image (q + 1) % n beats its own image by a tiny margin
    for q in range(0, n, 2):
        other = (q + 1) % n
        tn = txt[q] / np.linalg.norm(txt[q])
        diff = imgn[other] - imgn[q]
        margin = 10.0 ** rng.uniform(-7, -5)
        # t' = t + a·diff with a chosen so that t'·(other − own) = margin·‖t'‖ (approximately)
        a = (margin - tn @ diff) / (diff @ diff)
        txt[q] = tn + a * diff
    s = (txt / np.linalg.norm(txt, axis=1, keepdims=True)) @ imgn.T
    own = s[np.arange(n), np.arange(n)]
    ref = (s > own[:, None]).sum(axis=1)
    assert (ref >= 1).sum() >= n // 2  # the planted near-misses are there
    rr = retrieval_ranks(img.astype(dtype), txt.astype(dtype) if dtype == np.float64 else txt, dtype=dtype,
                         query_block=16, gallery_block=7)
    assert np.array_equal(rr.t2i, ref)


def test_known_recall_values():
    img, txt = _constructed()
    m = retrieval_metrics(img, txt, G, ks=(1, 2, 5))
    assert m["text_to_image_recall@1"] == pytest.approx(3 / 7)
    assert m["text_to_image_recall_pessimistic@1"] == pytest.approx(2 / 7)  # caption 3's ties
    assert m["text_to_image_recall@2"] == pytest.approx(6 / 7)
    assert m["text_to_image_recall_pessimistic@2"] == pytest.approx(4 / 7)  # captions 1 and 3 drop
    assert m["text_to_image_recall@5"] == 1.0
    assert m["image_to_text_recall@1"] == pytest.approx(1 / 4)
    assert m["image_to_text_recall_pessimistic@1"] == 0.0
    assert m["image_to_text_recall@2"] == 1.0
    assert m["text_to_image_mean_rank"] == pytest.approx(T2I.mean())
    assert m["image_to_text_mean_rank"] == pytest.approx(I2T.mean())
    assert m["text_to_image_n_tied_queries"] == 2 and m["image_to_text_n_tied_queries"] == 1
    assert m["n_images"] == 4 and m["n_texts"] == 7


def test_recall_at_k_plain():
    assert recall_at_k(np.array([0, 1, 4, 9, 10]), ks=(1, 5, 10)) == {
        "recall@1": 0.2,
        "recall@5": 0.6,
        "recall@10": 0.8,
    }
    with pytest.raises(ValueError, match="positive integer"):
        recall_at_k(np.array([0, 1]), ks=(0,))
    with pytest.raises(ValueError, match="non-negative"):
        recall_at_k(np.array([-1, 1]))


def test_perfect_retrieval_identity_pairs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 16))
    t2i, i2t = retrieval_ranks(x, 2.0 * x)  # same directions, identity pairing by default
    assert not t2i.any() and not i2t.any()


def test_exact_duplicates_are_counted_ties():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((10, 32))
    img = np.vstack([base, base])  # image j and j+10 identical
    txt = base + 0.01 * rng.standard_normal(base.shape)
    idx = np.arange(10) + 10  # caption j describes the *second* copy
    assert not text_to_image_ranks(img.astype(np.float32), txt.astype(np.float32), idx).any()
    # every image has an identical twin, every caption an identical copy under the twin
    rr = retrieval_ranks(img.astype(np.float32), np.vstack([txt, txt]).astype(np.float32),
                         np.concatenate([idx, idx - 10]))
    assert not rr.t2i.any() and (rr.t2i_ties == 1).all()
    assert not rr.i2t.any() and (rr.i2t_ties == 1).all()
    # images 0..9 have no caption: fine as distractors for text->image, an error for image->text
    with pytest.raises(ValueError, match="no caption"):
        image_to_text_ranks(img, txt, idx)


def test_a_block_with_more_band_candidates_than_room_is_redone_exactly():
    """400 identical images and 400 identical captions: every entry of the one 400 x 400 block
    lies in the rounding band (160,000 candidates per direction, over the kernel's 65,536 of
    room), so the block is undone and redone; every other item is an exact tie (numpy, float64)."""
    rng = np.random.default_rng(7)
    v = rng.standard_normal(16)
    img = np.tile(v, (400, 1)).astype(np.float32)
    txt = np.tile(v + 0.5 * rng.standard_normal(16), (400, 1)).astype(np.float32)
    rr = retrieval_ranks(img, txt, query_block=400, gallery_block=400)
    assert not rr.t2i.any() and not rr.i2t.any()
    assert (rr.t2i_ties == 399).all() and (rr.i2t_ties == 399).all()
    # a mixed case against the full float64 matrix: ranks and ties counted from it directly
    img = rng.standard_normal((300, 8)).round(1)
    img[150:] = img[:150]
    idx = np.repeat(np.arange(300), 2)
    txt = img[idx].copy()
    txt[::3] = txt[0]
    rr = retrieval_ranks(img, txt, idx, query_block=300, gallery_block=300)
    imgn = img / np.linalg.norm(img, axis=1, keepdims=True)
    txtn = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    s = np.einsum("ik,jk->ij", txtn, imgn)
    own = s[np.arange(600), idx]
    others = np.ones_like(s, dtype=bool)
    others[np.arange(600), idx] = False
    # ties at the float64 rounding level count as exact ties here; this data has none in between
    close = np.isclose(s, own[:, None], rtol=0, atol=1e-12) & others
    assert (rr.t2i == ((s > own[:, None] + 1e-12) & others).sum(axis=1)).all()
    assert (rr.t2i_ties == close.sum(axis=1)).all()

def _reference(img, txt, idx, k):
    """CLIP_benchmark-style: full score matrix, top-k by argsort, hit if the positive is inside."""
    imgn = img / np.linalg.norm(img, axis=1, keepdims=True)
    txtn = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    s = txtn @ imgn.T  # (n_txt, n_img)
    pos = np.zeros_like(s, dtype=bool)
    pos[np.arange(len(idx)), idx] = True
    top_t2i = np.argsort(-s, axis=1)[:, :k]
    t2i_hit = np.take_along_axis(pos, top_t2i, axis=1).any(axis=1)
    top_i2t = np.argsort(-s.T, axis=1)[:, :k]
    i2t_hit = np.take_along_axis(pos.T, top_i2t, axis=1).any(axis=1)
    return t2i_hit.mean(), i2t_hit.mean()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_matches_full_matrix_reference(dtype):
    rng = np.random.default_rng(3)
    n_img, per = 37, 3
    img = rng.standard_normal((n_img, 8))
    idx = np.repeat(np.arange(n_img), per)
    rng.shuffle(idx)
    txt = img[idx] + 1.2 * rng.standard_normal((idx.size, 8))
    # odd block sizes so that query and gallery blocks split everywhere
    m = retrieval_metrics(img, txt, idx, ks=(1, 5, 10), dtype=dtype, query_block=7, gallery_block=5)
    for k in (1, 5, 10):
        ref_t2i, ref_i2t = _reference(img, txt, idx, k)
        assert m[f"text_to_image_recall@{k}"] == pytest.approx(ref_t2i)
        assert m[f"image_to_text_recall@{k}"] == pytest.approx(ref_i2t)
    assert 0 < m["text_to_image_recall@1"] < 1  # non-trivial case


def test_random_vectors_recall_is_chance():
    # Independent Gaussian vectors: each caption's own image is uniformly placed among n_img,
    # so E[recall@k] = k / n_img and E[rank] = (n_img − 1) / 2. Tolerances are 5 binomial /
    # sample-mean standard deviations over the 2000 queries (seeded, so deterministic).
    rng = np.random.default_rng(4)
    n_img, per, d = 400, 5, 64
    img = rng.standard_normal((n_img, d))
    txt = rng.standard_normal((n_img * per, d))
    idx = np.repeat(np.arange(n_img), per)
    m = retrieval_metrics(img, txt, idx, ks=(1, 5, 10))
    n_q = n_img * per
    for k in (1, 5, 10):
        p = k / n_img
        assert abs(m[f"text_to_image_recall@{k}"] - p) < 5 * np.sqrt(p * (1 - p) / n_q)
    sd_rank = n_img / np.sqrt(12) / np.sqrt(n_q)
    assert abs(m["text_to_image_mean_rank"] - (n_img - 1) / 2) < 5 * sd_rank
    # image -> text: best of 5 own captions among 1995 others: E[rank] = 1995 / 6;
    # sd of one rank = 1995 * sqrt(5 / (36 * 7)), over 400 images.
    n_other = n_img * per - per
    sd = n_other * np.sqrt(per / ((per + 1) ** 2 * (per + 2))) / np.sqrt(n_img)
    assert abs(m["image_to_text_mean_rank"] - n_other / (per + 1)) < 5 * sd
    p = 1 / n_img  # i2t recall@1 = 5 own among 2000 captions
    assert abs(m["image_to_text_recall@1"] - per / n_q) < 5 * np.sqrt(p / n_img)


def test_bad_inputs():
    img, txt = _constructed()
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = txt.copy()
        bad[2, 1] = np.nan
        retrieval_ranks(img, bad, G)
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = img.copy()
        bad[0, 0] = np.inf
        retrieval_ranks(bad, txt, G)
    with pytest.raises(ValueError, match="mismatched dimensions"):
        retrieval_ranks(img[:, :5], txt, G)
    with pytest.raises(ValueError, match="at least 2 vectors"):
        retrieval_ranks(img[:1], txt, np.zeros(7, dtype=int))
    with pytest.raises(ValueError, match="no caption"):
        retrieval_ranks(img, txt, np.array([0, 1, 2, 2, 0, 1, 2]))
    with pytest.raises(ValueError, match="txt_image_index"):
        retrieval_ranks(img, txt, np.array([0, 1, 2, 3, 0, 4, 2]))
    with pytest.raises(ValueError, match="txt_image_index"):
        retrieval_ranks(img, txt, G[:6])
    with pytest.raises(ValueError, match="txt_image_index is required"):
        retrieval_ranks(img, txt)
    with pytest.raises(ValueError, match="zero vector"):
        bad = txt.copy()
        bad[3] = 0
        retrieval_ranks(img, bad, G)
