"""Tests for clipgeo.models: configs, losses (known answers), trainer, loader."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from clipgeo.models import TINY_MODEL_NAMES, register_configs
from clipgeo.models.losses import (
    CLOOB_HOPFIELD_BETA,
    CLOOB_INV_TAU,
    cloob_hopfield_embeddings,
    cloob_loss,
    hopfield_retrieval,
    info_loob,
    info_nce,
)

TINY = "clipgeo-tiny-vit"

try:  # the real contract; a structurally identical stand-in keeps these tests independent
    from clipgeo.sources.base import Sample
except ImportError:  # pragma: no cover

    @dataclass(frozen=True, slots=True)
    class Sample:  # type: ignore[no-redef]
        sample_id: str
        image_id: str
        image_ref: str
        caption: str


# ----------------------------------------------------------------------------- fixtures

COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30)}


def make_shapes(root: Path, n: int = 8) -> list[Sample]:
    """n small PNGs (coloured circles / squares), two captions each."""
    root.mkdir(parents=True, exist_ok=True)
    out: list[Sample] = []
    names = list(COLORS)
    for i in range(n):
        color, shape = names[i % len(names)], ("circle", "square")[(i // len(names)) % 2]
        px = (32, 48)[i % 2]
        im = Image.new("RGB", (px, px), (245, 245, 245))
        d = ImageDraw.Draw(im)
        box = [px * 0.2, px * 0.2, px * 0.8, px * 0.8]
        (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLORS[color])
        path = root / f"img{i}.png"
        im.save(path)
        for k, cap in enumerate([f"a {color} {shape}", f"a picture of a {color} {shape}"]):
            out.append(Sample(f"{i}-{k}", f"img{i}", str(path.resolve()), cap))
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return make_shapes(tmp_path_factory.mktemp("shapes"))


def fast_spec(**kw):
    from clipgeo.models.train import TrainSpec

    base = dict(steps=3, batch_size=4, warmup_steps=1, lr=1e-3)
    base.update(kw)
    return TrainSpec(**base)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """One tiny InfoNCE run shared by several tests."""
    from clipgeo.models.train import train_tiny

    out = tmp_path_factory.mktemp("ckpt")
    return train_tiny(shapes, fast_spec(), out, "shapes-v1", progress=False, num_threads=2)


# ----------------------------------------------------------------------------- configs


def test_register_configs_is_idempotent_and_offline():
    import open_clip

    assert TINY in TINY_MODEL_NAMES
    names1 = register_configs()
    n_models = len(open_clip.list_models())
    names2 = register_configs()
    assert names1 == names2 and TINY in open_clip.list_models()
    assert len(open_clip.list_models()) == n_models


def test_tiny_config_builds_and_tokenizer_honours_context_length():
    import open_clip

    register_configs()
    cfg = json.loads((Path(__file__).parents[1] / "clipgeo/models/configs" / f"{TINY}.json").read_text())
    assert cfg["embed_dim"] == 64 and cfg["text_cfg"]["context_length"] == 32
    assert cfg["vision_cfg"]["image_size"] == 32 and cfg["vision_cfg"]["patch_size"] == 4
    model, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=None)
    tok = open_clip.get_tokenizer(TINY)
    ids = tok(["a red circle", "word " * 100])
    assert ids.shape == (2, 32)
    assert ids[1, -1] == tok.eot_token_id  # long captions are truncated, EOT kept
    # standard open_clip preprocessing (OpenAI mean/std) at the model's resolution
    assert tuple(model.visual.preprocess_cfg["mean"]) == open_clip.OPENAI_DATASET_MEAN
    x = preprocess(Image.new("RGB", (50, 70), (10, 20, 30)))
    assert x.shape == (3, 32, 32)
    with torch.no_grad():
        assert model.encode_image(x[None]).shape == (1, 64)
        assert model.encode_text(ids).shape == (2, 64)


# ----------------------------------------------------------------------------- losses


def _aligned_orthogonal(n: int = 4, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    e = torch.eye(d, dtype=torch.float64)[:n]  # float64: the closed forms are checked to 1e-5, beyond float32
    return e.clone(), e.clone()


def test_info_nce_perfectly_aligned_goes_to_zero():
    img, txt = _aligned_orthogonal(4)
    for s in (1.0, 10.0, 30.0):
        expected = math.log(1 + 3 * math.exp(-s))  # both directions identical
        assert info_nce(img, txt, s).item() == pytest.approx(expected, rel=1e-5)
    assert info_nce(img, txt, 100.0).item() < 1e-30
    assert info_nce(img, txt, 1.0) > info_nce(img, txt, 10.0) > info_nce(img, txt, 30.0) >= 0


def test_info_nce_matches_cross_entropy_definition():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(5, 7, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 7, generator=g), dim=-1)
    s = 12.5 * img @ txt.T
    by_hand = 0.0
    for i in range(5):
        by_hand += -(s[i, i] - torch.logsumexp(s[i], 0)) / 10  # rows
        by_hand += -(s[i, i] - torch.logsumexp(s[:, i], 0)) / 10  # columns
    assert info_nce(img, txt, 12.5).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_info_loob_aligned_is_negative_and_decreases_with_scale():
    img, txt = _aligned_orthogonal(4)
    for s in (1.0, 30.0, 100.0):
        # denominator has only the N-1 negatives, each exp(0) = 1:  L = -s + log(N-1)
        assert info_loob(img, txt, s).item() == pytest.approx(-s + math.log(3), rel=1e-5)
    assert info_loob(img, txt, CLOOB_INV_TAU).item() < -25  # can be (very) negative


def test_info_loob_excludes_positive_2x2_by_hand():
    # img/txt vectors at angles: cos similarities chosen by hand
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=-1)
    tau_inv = 2.0
    c = 1 / math.sqrt(2)
    s = [[tau_inv * c, 0.0], [tau_inv * c, tau_inv * 1.0]]  # s[i][j] = inv_tau * img_i . txt_j
    # N = 2: the only negative of row i is j != i, so  -log(exp(s_ii)/exp(s_ij)) = s_ij - s_ii
    i2t = ((s[0][1] - s[0][0]) + (s[1][0] - s[1][1])) / 2
    t2i = ((s[1][0] - s[0][0]) + (s[0][1] - s[1][1])) / 2
    assert info_loob(img, txt, tau_inv, direction="img2txt").item() == pytest.approx(i2t, abs=1e-6)
    assert info_loob(img, txt, tau_inv, direction="txt2img").item() == pytest.approx(t2i, abs=1e-6)
    assert info_loob(img, txt, tau_inv).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)


def test_info_loob_3x3_by_hand_differs_from_infonce():
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    txt = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    s = (5.0 * img @ txt.T).tolist()
    rows = [-(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(3) if j != i))) for i in range(3)]
    cols = [-(s[i][i] - math.log(sum(math.exp(s[j][i]) for j in range(3) if j != i))) for i in range(3)]
    expected = (sum(rows) / 3 + sum(cols) / 3) / 2
    assert info_loob(img, txt, 5.0).item() == pytest.approx(expected, rel=1e-5)
    # InfoNCE keeps the positive in the denominator, so it is strictly larger
    assert info_nce(img, txt, 5.0).item() > info_loob(img, txt, 5.0).item()


def test_info_loob_needs_two_pairs_and_valid_direction():
    img, txt = _aligned_orthogonal(1)
    with pytest.raises(ValueError, match="at least 2"):
        info_loob(img, txt)
    img, txt = _aligned_orthogonal(3)
    with pytest.raises(ValueError, match="direction"):
        info_loob(img, txt, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        info_loob(img, txt[:2])


def test_hopfield_retrieval_large_beta_returns_nearest_pattern():
    g = torch.Generator().manual_seed(0)
    stored = F.normalize(torch.randn(6, 5, generator=g), dim=-1)
    state = F.normalize(stored[[2, 4, 0]] + 0.2 * torch.randn(3, 5, generator=g), dim=-1)
    nearest = (state @ stored.T).argmax(1)
    out = hopfield_retrieval(state, stored, beta=1e4)
    assert torch.allclose(out, stored[nearest], atol=1e-5)
    # small beta: (re-normalised) mean of the stored patterns, for every state
    mean_dir = F.normalize(stored.mean(0), dim=0)
    assert torch.allclose(hopfield_retrieval(state, stored, beta=0.0), mean_dir.expand(3, -1), atol=1e-6)
    assert torch.allclose(out.norm(dim=1), torch.ones(3))


def test_cloob_hopfield_pairing_and_loss():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(5, 6, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 6, generator=g), dim=-1)
    u_x, u_y, v_x, v_y = cloob_hopfield_embeddings(img, txt, beta=1e4)
    # huge beta: retrieval returns the nearest *stored* pattern
    assert torch.allclose(u_x, img, atol=1e-5)  # image from stored images: itself
    assert torch.allclose(v_y, txt, atol=1e-5)  # text from stored texts: itself
    assert torch.allclose(u_y, img[(txt @ img.T).argmax(1)], atol=1e-5)  # text from stored images
    assert torch.allclose(v_x, txt[(img @ txt.T).argmax(1)], atol=1e-5)  # image from stored texts
    # default beta and the paper's pairing: one direction per retrieved pair
    u_x, u_y, v_x, v_y = cloob_hopfield_embeddings(img, txt, CLOOB_HOPFIELD_BETA)
    expected = info_loob(u_x, u_y, CLOOB_INV_TAU, direction="img2txt") + info_loob(
        v_x, v_y, CLOOB_INV_TAU, direction="txt2img"
    )
    assert cloob_loss(img, txt).item() == pytest.approx(expected.item(), rel=1e-6)


def test_losses_are_differentiable():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(4, 6, generator=g, requires_grad=True)
    txt = torch.randn(4, 6, generator=g, requires_grad=True)
    x, y = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    total = info_nce(x, y, 10.0) + info_loob(x, y) + cloob_loss(x, y)
    total.backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- training


def test_spec_key_is_stable_and_sensitive():
    from clipgeo.models.train import TRAINER_VERSION, TrainSpec

    a, b = TrainSpec(), TrainSpec()
    assert a.key("ds") == b.key("ds") and len(a.key("ds")) == 12
    int(a.key("ds"), 16)
    assert a.key("ds") != a.key("other")
    assert a.key("ds") != TrainSpec(steps=401).key("ds")
    assert a.key("ds") != TrainSpec(objective="infoloob").key("ds")
    assert a.key("ds") != TrainSpec(hopfield=True).key("ds")
    assert TRAINER_VERSION
    with pytest.raises(ValueError):
        TrainSpec(objective="nce")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TrainSpec(hopfield_warmup_frac=1.0)


def test_spec_key_follows_the_architecture(monkeypatch):
    from clipgeo.models import train

    before = train.TrainSpec().key("ds")
    monkeypatch.setattr(train, "_own_model_config", lambda name: {"embed_dim": 999})
    assert train.TrainSpec().key("ds") != before


def test_hopfield_warmup_steps():
    from clipgeo.models.train import TrainSpec

    assert TrainSpec(hopfield=True).hopfield_warmup_steps == 100  # 25% of 400
    assert TrainSpec(hopfield=True, steps=20).hopfield_warmup_steps == 5
    assert TrainSpec(hopfield=True, hopfield_warmup_frac=0.0).hopfield_warmup_steps == 0  # the paper's recipe
    assert TrainSpec(hopfield=False).hopfield_warmup_steps == 0


def test_train_tiny_writes_loadable_checkpoint(trained, shapes):
    import open_clip

    from clipgeo.models.train import sha256_file

    r = trained
    assert not r.cached and r.steps == 3 and math.isfinite(r.final_loss)
    assert r.checkpoint.name == f"{TINY}-infonce-{fast_spec().key('shapes-v1')}.pt"
    assert r.sha256 == sha256_file(r.checkpoint)
    side = json.loads(r.checkpoint.with_suffix(".json").read_text())
    assert side["sha256"] == r.sha256 and side["dataset_id"] == "shapes-v1"
    assert side["objective"] == "infonce" and side["logit_scale_kind"] == "learned_logit_scale"
    assert side["spec"]["steps"] == 3 and side["n_images"] == 8 and side["n_captions"] == 16
    assert side["final_loss"] == pytest.approx(r.final_loss)
    # loads as-is through open_clip's own pretrained= path
    register_configs()
    model, _, _ = open_clip.create_model_and_transforms(TINY, pretrained=str(r.checkpoint))
    ckpt = torch.load(r.checkpoint, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"state_dict", "clipgeo"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    assert model.logit_scale.exp().item() == pytest.approx(side["logit_scale"], rel=1e-6)
    assert not list(r.checkpoint.parent.glob(".*tmp*"))  # atomic writes leave nothing behind


def test_train_tiny_cache_hit_and_determinism(trained, shapes, tmp_path):
    from clipgeo.models.train import train_tiny

    again = train_tiny(shapes, fast_spec(), trained.checkpoint.parent, "shapes-v1", progress=False)
    assert again.cached and again.checkpoint == trained.checkpoint and again.sha256 == trained.sha256
    assert again.final_loss == pytest.approx(trained.final_loss)
    # same seed in another directory: identical weights
    fresh = train_tiny(shapes, fast_spec(), tmp_path, "shapes-v1", progress=False, num_threads=2)
    assert not fresh.cached
    sd1 = torch.load(trained.checkpoint, weights_only=True)["state_dict"]
    sd2 = torch.load(fresh.checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_train_tiny_changes_only_used_token_rows(trained, shapes):
    """The compact-embedding shortcut must leave unused vocabulary rows at their init."""
    import open_clip

    register_configs()
    torch.manual_seed(fast_spec().seed)
    init, _, _ = open_clip.create_model_and_transforms(TINY, pretrained=None)
    sd = torch.load(trained.checkpoint, weights_only=True)["state_dict"]
    used = torch.unique(open_clip.get_tokenizer(TINY)([s.caption for s in shapes]))
    unused = torch.ones(init.token_embedding.weight.shape[0], dtype=torch.bool)
    unused[used] = False
    w0, w1 = init.token_embedding.weight.detach(), sd["token_embedding.weight"]
    assert torch.equal(w0[unused], w1[unused])
    assert not torch.equal(w0[used], w1[used])


def test_compact_embedding_matches_full_adamw():
    """Training the compact copy == training the full embedding with AdamW (no decay)."""
    from clipgeo.models.train import _CompactEmbedding

    torch.manual_seed(0)

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = torch.nn.Embedding(50, 4)

        def forward(self, ids):
            return (self.token_embedding(ids) ** 2).sum()

    ids = torch.tensor([[3, 7, 7, 49], [0, 3, 12, 49]])
    full, compact = Toy(), Toy()
    compact.load_state_dict(full.state_dict())
    used = torch.unique(ids)
    orig = _CompactEmbedding.swap_in(compact, used)
    assert orig is not None
    opts = [torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.0) for m in (full, compact)]
    for _ in range(3):
        for m, o in zip((full, compact), opts):
            o.zero_grad()
            m(ids).backward()
            o.step()
    _CompactEmbedding.swap_out(compact, orig, used)
    assert torch.allclose(full.token_embedding.weight, compact.token_embedding.weight, atol=1e-7)


@pytest.mark.parametrize("objective,hopfield", [("infoloob", False), ("infoloob", True), ("infonce", True)])
def test_train_tiny_other_objectives(shapes, tmp_path, objective, hopfield):
    from clipgeo.models.loader import load_model
    from clipgeo.models.train import train_tiny

    spec = fast_spec(objective=objective, hopfield=hopfield, steps=2, hopfield_warmup_frac=0.5)
    r = train_tiny(shapes, spec, tmp_path, "shapes-v1", progress=False, num_threads=2)
    suffix = "-hopfield" if hopfield else ""
    assert r.checkpoint.name.startswith(f"{TINY}-{objective}{suffix}-")
    assert math.isfinite(r.final_loss)
    lm = load_model(TINY, str(r.checkpoint), device="cpu")
    if objective == "infoloob":
        assert r.meta["logit_scale"] == 30.0 and r.meta["logit_scale_kind"] == "fixed_inv_tau"
        assert lm.logit_scale == 30.0
        # the checkpoint itself also carries the scale it was trained with
        assert lm.model.logit_scale.exp().item() == pytest.approx(30.0, rel=1e-5)
    if hopfield:
        assert r.meta["hopfield_beta"] == 8.0


def test_train_tiny_rejects_bad_input(tmp_path, shapes):
    from clipgeo.models.train import train_tiny

    with pytest.raises(ValueError, match="at least 2 distinct images"):
        train_tiny(shapes[:2], fast_spec(), tmp_path, "one-image", progress=False)
    with pytest.raises(ValueError, match="unknown model config"):
        train_tiny(shapes, fast_spec(model_name="no-such-model"), tmp_path, "x", progress=False)
    missing = [Sample("a", "a", str(tmp_path / "missing.png"), "x"), *shapes[:4]]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        train_tiny(missing, fast_spec(), tmp_path, "missing", progress=False)


# ----------------------------------------------------------------------------- loader


def test_load_model_random_init():
    from clipgeo.models.loader import default_device, load_model

    lm = load_model(TINY, device="cpu")
    assert lm.embed_dim == 64 and lm.device == "cpu" and lm.pretrained is None
    assert lm.checkpoint_sha256 is None and not lm.model.training
    assert lm.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
    assert lm.tokenizer(["a red circle"]).shape == (1, 32)
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_load_model_checkpoint_records_sha_and_meta(trained):
    from clipgeo.models.loader import load_model

    lm = load_model(TINY, str(trained.checkpoint), device="cpu")
    assert lm.checkpoint_sha256 == trained.sha256
    assert lm.pretrained == str(trained.checkpoint.resolve())
    assert lm.logit_scale == pytest.approx(trained.meta["logit_scale"])
    assert lm.meta and lm.meta["key"] == trained.meta["key"]


def test_load_model_meta_from_checkpoint_without_sidecar(trained, tmp_path):
    import shutil

    from clipgeo.models.loader import load_model

    copy = tmp_path / "renamed.pt"
    shutil.copy(trained.checkpoint, copy)
    lm = load_model(TINY, str(copy), device="cpu")
    assert lm.meta["objective"] == "infonce"
    assert lm.logit_scale == pytest.approx(trained.meta["logit_scale"])


def test_load_model_errors(tmp_path):
    from clipgeo.models.loader import load_model

    with pytest.raises(ValueError, match=r"list_models\(\)"):
        load_model("definitely-not-a-model", device="cpu")
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(TINY, str(missing), device="cpu")
    with pytest.raises(ValueError, match="neither an existing checkpoint file nor a pretrained tag"):
        load_model(TINY, "laion2b_s34b_b79k", device="cpu")


def test_loss_switches_to_hopfield_after_warmup():
    from clipgeo.models.train import TrainSpec, _loss_fn

    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    fn = _loss_fn(TrainSpec(objective="infoloob", hopfield=True, steps=10, hopfield_warmup_frac=0.3))
    scale = torch.tensor(30.0)
    assert fn(img, txt, scale, 2).item() == pytest.approx(info_loob(img, txt, 30.0).item(), rel=1e-6)
    assert fn(img, txt, scale, 3).item() == pytest.approx(cloob_loss(img, txt, 30.0, 8.0).item(), rel=1e-6)
    nce = _loss_fn(TrainSpec(objective="infonce"))
    assert nce(img, txt, torch.tensor(12.0), 0).item() == pytest.approx(info_nce(img, txt, 12.0).item(), rel=1e-6)
