"""CLOOB checkpoints in the ml-jku/cloob format, written from clipgeo's own tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipgeo.models.cloob import cloob_state_dict, is_cloob_checkpoint, write_cloob_checkpoint
from clipgeo.models.loader import load_model
from clipgeo.stages.embedding import ModelRef, embed_run
from clipgeo.store import catalog, vectors
from tests.conftest import make_prepared_home


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_prepared_home(tmp_path_factory.mktemp("cloob") / "home", n_train=48, n_val=16, steps=2)


def _export(ckpt: str, out, beta=8.0):
    from pathlib import Path

    import clipgeo.models

    lm = load_model("clipgeo-tiny-vit", ckpt, device="cpu")
    cfg = json.loads((Path(clipgeo.models.__file__).parent / "configs" / "clipgeo-tiny-vit.json").read_text())
    return write_cloob_checkpoint(lm.model, out, model_config_file="clipgeo-tiny-vit.json", model_config=cfg,
                                  hopfield_beta=beta), lm


def test_the_written_file_has_the_cloob_layout(tiny, tmp_path):
    _, _, ckpt = tiny
    path, _ = _export(ckpt, tmp_path / "cloob_tiny_epoch_1.pt")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert set(obj) >= {"epoch", "name", "state_dict", "model_config_file"}
    assert all(k.startswith("module.") for k in obj["state_dict"])
    assert "module.logit_scale_hopfield" in obj["state_dict"]
    assert is_cloob_checkpoint(path) and not is_cloob_checkpoint(ckpt)
    sd, meta = cloob_state_dict(path)
    assert "logit_scale_hopfield" not in sd and meta["hopfield_beta"] == pytest.approx(8.0)


def test_a_cloob_checkpoint_loads_into_the_open_clip_model_with_identical_outputs(tiny, tmp_path):
    _, _, ckpt = tiny
    path, original = _export(ckpt, tmp_path / "cloob.pt")
    lm = load_model("clipgeo-tiny-vit", str(path), device="cpu")
    assert lm.meta["format"] == "cloob" and lm.meta["hopfield_beta"] == pytest.approx(8.0)
    x = torch.randn(3, 3, 32, 32)
    tokens = lm.tokenizer(["a red circle", "two blue squares", "Ünïcödé"])
    with torch.inference_mode():
        np.testing.assert_allclose(lm.model.encode_image(x).numpy(), original.model.encode_image(x).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lm.model.encode_text(tokens).numpy(), original.model.encode_text(tokens).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_a_cloob_checkpoint_for_the_wrong_architecture_is_refused_clearly(tiny, tmp_path):
    _, _, ckpt = tiny
    path, _ = _export(ckpt, tmp_path / "cloob.pt")
    with pytest.raises(ValueError, match="does not fit open_clip model"):
        load_model("RN50", str(path), device="cpu")


def test_a_cloob_checkpoint_embeds_through_the_pipeline(tiny, tmp_path):
    home, dataset_id, ckpt = tiny
    path, _ = _export(ckpt, tmp_path / "cloob_tiny.pt")
    plan = embed_run(home, ModelRef("clipgeo-tiny-vit", str(path)), dataset_id, progress=False)
    assert vectors.count_rows(home, plan.run_id) == {"image": 16, "text": 48}
    with catalog.session(home, read_only=True) as con:
        label, hopfield = catalog.execute(
            con, "SELECT r.label, m.hopfield FROM runs r JOIN models m USING (model_id) WHERE run_id = ?", [plan.run_id])[0]
    assert "CLOOB checkpoint" in label and hopfield is True
