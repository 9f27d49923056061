"""CLOOB checkpoints (the ml-jku/cloob training format) mapped onto open_clip models.

ml-jku/cloob saves ``{"epoch", "name", "state_dict", "optimizer", "model_config_file"}``:
``state_dict`` comes from a DistributedDataParallel model, so every key is prefixed
``module.``; its parameter names are OpenAI CLIP's (``visual.*``, ``transformer.*``,
``token_embedding``, ``positional_embedding``, ``ln_final``, ``text_projection``,
``logit_scale``), the same as open_clip's CLIP class; models trained with Hopfield layers
carry an extra ``logit_scale_hopfield`` (the Hopfield β, stored as a log) that the
encoders do not use. The model config is named by ``model_config_file`` (``RN50.json``,
...) and may be embedded as ``model_config``.

:func:`is_cloob_checkpoint` recognises such a file; :func:`cloob_state_dict` returns the
open_clip-ready state dict and what was set aside; :func:`write_cloob_checkpoint` writes
a checkpoint in exactly that format (used by the tests, from clipgeo's tiny models).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PREFIX = "module."
EXTRA_KEYS = ("logit_scale_hopfield",)


def _load(path: str | Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None


def is_cloob_checkpoint(obj_or_path: Any) -> bool:
    """A dict with a ``state_dict`` whose keys all start with ``module.`` and a model config
    reference (``model_config_file`` or ``model_config``), as ml-jku/cloob writes them."""
    obj = _load(obj_or_path) if isinstance(obj_or_path, (str, Path)) else obj_or_path
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        return False
    sd = obj["state_dict"]
    has_config = "model_config_file" in obj or "model_config" in obj
    return bool(sd) and has_config and all(isinstance(k, str) and k.startswith(PREFIX) for k in sd)


def cloob_state_dict(obj_or_path: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict for the open_clip model, metadata set aside: config name/dict, epoch,
    ``hopfield_beta`` = exp(logit_scale_hopfield) when present, ``logit_scale`` multiplier)."""
    obj = _load(obj_or_path) if isinstance(obj_or_path, (str, Path)) else obj_or_path
    if not is_cloob_checkpoint(obj):
        raise ValueError(f"{obj_or_path if isinstance(obj_or_path, (str, Path)) else 'object'} is not a CLOOB checkpoint")
    sd = {k[len(PREFIX):]: v for k, v in obj["state_dict"].items()}
    meta: dict[str, Any] = {"format": "cloob", "model_config_file": obj.get("model_config_file"),
                            "epoch": obj.get("epoch"), "name": obj.get("name")}
    if isinstance(obj.get("model_config"), dict):
        meta["model_config"] = obj["model_config"]
    for key in EXTRA_KEYS:
        if key in sd:
            meta["hopfield_beta"] = float(math.exp(float(sd.pop(key))))
    if "logit_scale" in sd:
        meta["logit_scale"] = float(math.exp(float(sd["logit_scale"])))
    return sd, meta


def write_cloob_checkpoint(model: Any, path: str | Path, *, model_config_file: str, model_config: dict | None = None,
                           hopfield_beta: float | None = None, epoch: int = 1, name: str = "clipgeo-export") -> Path:
    """Save ``model`` the way ml-jku/cloob's trainer does (DDP ``module.`` keys, config name)."""
    import torch

    sd = {PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    if hopfield_beta is not None:
        sd[PREFIX + "logit_scale_hopfield"] = torch.tensor(math.log(hopfield_beta))
    obj: dict[str, Any] = {"epoch": epoch, "name": name, "state_dict": sd, "model_config_file": model_config_file}
    if model_config is not None:
        obj["model_config"] = model_config
    path = Path(path)
    torch.save(obj, path)
    return path
