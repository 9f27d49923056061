"""Tests for clipgeo.embedding.embed: raw, order-preserving, batch-invariant embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from clipgeo.embedding.embed import embed_images, embed_texts
from clipgeo.models.loader import LoadedModel, load_model

TINY = "clipgeo-tiny-vit"

try:
    from clipgeo.sources.base import Sample
except ImportError:  # pragma: no cover

    @dataclass(frozen=True, slots=True)
    class Sample:  # type: ignore[no-redef]
        sample_id: str
        image_id: str
        image_ref: str
        caption: str


COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220)}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """(path, caption) for 9 PNGs of varied size and mode (RGB, RGBA, L)."""
    root = tmp_path_factory.mktemp("imgs")
    out = []
    for i in range(9):
        color = list(COLORS)[i % 3]
        shape = ("circle", "square", "circle")[i // 3]
        px = (32, 48, 64)[i % 3]
        im = Image.new("RGB", (px, px + 8 * (i % 2)), (240, 240, 240))
        d = ImageDraw.Draw(im)
        box = [px * 0.25, px * 0.25, px * 0.75, px * 0.75]
        (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLORS[color])
        if i == 4:
            im = im.convert("RGBA")
        elif i == 5:
            im = im.convert("L")
        path = root / f"{i}.png"
        im.save(path)
        out.append((str(path), f"a {color} {shape}"))
    return out


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    torch.manual_seed(0)
    return load_model(TINY, device="cpu")


def _reference_images(lm: LoadedModel, paths: list[str]) -> np.ndarray:
    x = torch.stack([lm.preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return lm.model.encode_image(x, normalize=False).numpy()


@pytest.mark.parametrize("decode", ["pil", "tensor"])
def test_embed_images_equals_encode_image(lm, images, decode):
    paths = [p for p, _ in images]
    got = embed_images(lm, paths, batch_size=len(paths), progress=False, decode=decode)
    assert got.dtype == np.float32 and got.shape == (9, lm.embed_dim)
    ref = _reference_images(lm, paths)
    if decode == "pil":  # the reference path: open_clip's transform itself
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    else:  # batched tensor resize: pixels within one level of 255 of Pillow's (test_embed_fast.py)
        np.testing.assert_allclose(got, ref, rtol=0, atol=5e-3)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.99999


def test_embed_images_batch_size_invariant_and_ordered(lm, images):
    paths = [p for p, _ in images]
    b1 = embed_images(lm, paths, batch_size=1, progress=False)
    b7 = embed_images(lm, paths, batch_size=7, progress=False)
    np.testing.assert_allclose(b1, b7, rtol=1e-4, atol=1e-5)
    rev = embed_images(lm, paths[::-1], batch_size=4, progress=False)
    np.testing.assert_allclose(rev, b7[::-1], rtol=1e-4, atol=1e-5)
    # distinct images, distinct vectors
    assert np.abs(b7[0] - b7[1]).max() > 1e-4


def test_embeddings_are_raw_not_unit_norm(lm, images):
    img = embed_images(lm, [p for p, _ in images], progress=False)
    txt = embed_texts(lm, [c for _, c in images], progress=False)
    for arr in (img, txt):
        norms = np.linalg.norm(arr, axis=1)
        assert not np.allclose(norms, 1.0, atol=1e-3)


def test_embed_texts_equals_encode_text_and_batch_invariant(lm, images):
    caps = [c for _, c in images] + ["word " * 60]  # one longer than the context
    got = embed_texts(lm, caps, batch_size=1024, progress=False)
    with torch.no_grad():
        ref = lm.model.encode_text(lm.tokenizer(caps), normalize=False).numpy()
    assert got.dtype == np.float32 and got.shape == (10, lm.embed_dim)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed_texts(lm, caps, batch_size=3, progress=False), got, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embed_texts(lm, caps[::-1], batch_size=4, progress=False), got[::-1], rtol=1e-4, atol=1e-5)


def test_empty_inputs(lm):
    for arr in (embed_images(lm, [], progress=False), embed_texts(lm, [], progress=False)):
        assert arr.shape == (0, lm.embed_dim) and arr.dtype == np.float32


def test_bad_inputs(lm, tmp_path):
    with pytest.raises(ValueError, match="nothing.png"):  # unusable images are named
        embed_images(lm, [str(tmp_path / "nothing.png")], progress=False)
    with pytest.raises(TypeError):
        embed_texts(lm, "a single string", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        embed_images(lm, ["x"], batch_size=0, progress=False)


@pytest.mark.parametrize("decode", ["pil", "tensor"])
def test_embed_images_with_worker_processes(lm, images, decode):
    paths = [p for p, _ in images]
    got = embed_images(lm, paths, batch_size=4, num_workers=2, progress=False, decode=decode)
    alone = embed_images(lm, paths, batch_size=4, num_workers=0, progress=False, decode=decode)
    np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)


def test_embed_texts_with_worker_processes(lm):
    caps = [f"a {c} {s} number {k}" for k in range(7) for c in COLORS for s in ("circle", "square")]
    got = embed_texts(lm, caps, batch_size=8, num_workers=2, progress=False)
    np.testing.assert_allclose(got, embed_texts(lm, caps, batch_size=8, num_workers=0, progress=False),
                               rtol=1e-5, atol=1e-6)


def test_progress_bar_runs(lm, images, capsys):
    embed_images(lm, [p for p, _ in images][:2], progress=True)
    embed_texts(lm, ["a red circle"], progress=True)
    err = capsys.readouterr().err
    assert "embed images" in err and "embed texts" in err


def test_saved_and_reloaded_tiny_checkpoint(images, tmp_path):
    """A ~5-step trained checkpoint reloads through load_model and embeds identically."""
    import open_clip

    from clipgeo.models.train import TrainSpec, train_tiny

    samples = [Sample(f"{i}", f"img{i}", str(Path(p).resolve()), c) for i, (p, c) in enumerate(images)]
    spec = TrainSpec(steps=5, batch_size=8, warmup_steps=1)
    r = train_tiny(samples, spec, tmp_path, "embed-test", progress=False, num_threads=2)
    lm2 = load_model(TINY, str(r.checkpoint), device="cpu")
    assert lm2.checkpoint_sha256 == r.sha256 and lm2.logit_scale == pytest.approx(r.meta["logit_scale"])
    paths = [p for p, _ in images]
    got = embed_images(lm2, paths, progress=False, decode="pil")
    txt = embed_texts(lm2, [c for _, c in images], progress=False)
    # the same weights straight through open_clip give the same numbers
    model, _, pre = open_clip.create_model_and_transforms(TINY, pretrained=str(r.checkpoint))
    model.eval()
    x = torch.stack([pre(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        ref_i = model.encode_image(x).numpy()
        ref_t = model.encode_text(open_clip.get_tokenizer(TINY)([c for _, c in images])).numpy()
    np.testing.assert_allclose(got, ref_i, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(txt, ref_t, rtol=1e-5, atol=1e-6)
    # training changed the weights: embeddings differ from a fresh random model's
    torch.manual_seed(123)
    fresh = load_model(TINY, device="cpu")
    assert not np.allclose(embed_images(fresh, paths, progress=False), got, atol=1e-3)
