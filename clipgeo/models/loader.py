"""The single entry point for loading any CLIP-like model: tiny clipgeo models or user ones.

``load_model(model_name, pretrained)`` wraps ``open_clip.create_model_and_transforms`` and
``open_clip.get_tokenizer`` (after registering clipgeo's own configs), so a model trained by
:func:`clipgeo.models.train.train_tiny`, an open_clip architecture with a local checkpoint,
and an open_clip pretrained tag all go through the same code and the same preprocessing.

``pretrained`` may be:

* ``None`` – random initialisation (useful for tests / baselines);
* a path to a local checkpoint file (``.pt``, ``.pth``, ``.bin``, ``.safetensors``, ...) –
  loaded by open_clip; its sha256 is recorded in ``LoadedModel.checkpoint_sha256``;
* an open_clip pretrained tag such as ``"openai"`` or ``"laion2b_s34b_b79k"`` (see
  ``open_clip.list_pretrained_tags_by_model(model_name)``) – passed through unchanged: on a
  machine with network access open_clip downloads (and caches) the weights from their
  hosting (usually the Hugging Face hub); offline this fails with open_clip's own error
  unless the weights are already in its cache.

``model_name`` may also use open_clip's ``hf-hub:org/repo`` or ``local-dir:/path`` schemas,
in which case ``pretrained`` is ignored by open_clip.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["LoadedModel", "load_model", "default_device", "read_clipgeo_meta"]

log = logging.getLogger(__name__)

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz", ".npy")


@dataclass
class LoadedModel:
    """A model ready for inference plus everything needed to feed it.

    Attributes:
        model: the open_clip model, in eval mode, on ``device``.
        preprocess: the validation image transform (PIL image -> ``(3, H, W)`` tensor).
        tokenizer: callable ``list[str] -> LongTensor (n, context_length)``.
        model_name: the open_clip architecture name.
        pretrained: the checkpoint path (absolute) or pretrained tag, or None.
        device: torch device string the model lives on.
        embed_dim: dimension of the joint embedding space.
        logit_scale: the inverse temperature of the model's similarity
            (``exp(logit_scale)`` for CLIP-style models; the fixed ``inv_tau`` for clipgeo
            InfoLOOB checkpoints, taken from their metadata).
        checkpoint_sha256: sha256 of the local checkpoint file, else None.
        meta: clipgeo training metadata when the checkpoint is a clipgeo one, else ``{}``.
    """

    model: Any
    preprocess: Callable[..., Any]
    tokenizer: Callable[..., Any]
    model_name: str
    pretrained: str | None
    device: str
    embed_dim: int
    logit_scale: float
    checkpoint_sha256: str | None
    meta: dict[str, Any] | None = None


def default_device() -> str:
    """``"cuda"`` if ``torch.cuda.is_available()`` else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or (os.altsep is not None and os.altsep in value)
        or value.startswith((".", "~"))
        or value.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


def read_clipgeo_meta(checkpoint: str | Path) -> dict[str, Any]:
    """clipgeo training metadata for a checkpoint, or ``{}`` if it is not a clipgeo one.

    Prefers the JSON sidecar (``<checkpoint>.json``); falls back to the ``"clipgeo"`` entry
    stored inside the checkpoint (read memory-mapped, so large foreign checkpoints cost
    little).
    """
    path = Path(checkpoint)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            if isinstance(meta, dict) and "logit_scale" in meta:
                return meta
        except (OSError, json.JSONDecodeError) as e:
            log.warning("ignoring unreadable sidecar %s: %s", sidecar, e)
    if path.suffix.lower() in (".safetensors", ".npz", ".npy"):
        return {}
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, or not weights-only loadable: not ours
        return {}
    meta = obj.get("clipgeo") if isinstance(obj, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def _embed_dim(model_name: str, model: Any) -> int:
    import open_clip

    try:
        cfg = open_clip.get_model_config(model_name)
    except Exception:  # e.g. hf-hub config fetch failing
        cfg = None
    if cfg and "embed_dim" in cfg:
        return int(cfg["embed_dim"])
    out = getattr(getattr(model, "visual", None), "output_dim", None)
    if out is not None:
        return int(out)
    proj = getattr(model, "text_projection", None)
    if proj is not None:
        return int(proj.shape[-1] if hasattr(proj, "shape") else proj.out_features)
    raise ValueError(f"cannot determine the embedding dimension of {model_name!r}")


def load_model(model_name: str, pretrained: str | None = None, device: str | None = None) -> LoadedModel:
    """Load any open_clip-compatible model (tiny clipgeo, user checkpoint or pretrained tag).

    Args:
        model_name: open_clip architecture name (``open_clip.list_models()``, which includes
            clipgeo's ``clipgeo-tiny-vit``), or an ``hf-hub:`` / ``local-dir:`` identifier.
        pretrained: None (random init), a local checkpoint path, or an open_clip pretrained
            tag (downloaded by open_clip when the machine has network access).
        device: torch device; default :func:`default_device`.

    Returns:
        :class:`LoadedModel` with the model in eval mode.

    Raises:
        ValueError: unknown model name or unknown pretrained tag (the message says how to
            list valid values).
        FileNotFoundError: ``pretrained`` looks like a path but no file exists there.
    """
    import open_clip

    from clipgeo.models import register_configs
    from clipgeo.models.train import sha256_file

    register_configs()
    device = device or default_device()
    has_schema = model_name.startswith(("hf-hub:", "local-dir:"))
    if not has_schema and model_name.replace("/", "-") not in open_clip.list_models():
        raise ValueError(
            f"unknown model name {model_name!r}. Valid names are listed by "
            f"`python -c \"import open_clip; print(open_clip.list_models())\"` "
            f"(clipgeo adds {list(register_configs())}); open_clip's 'hf-hub:org/repo' and "
            f"'local-dir:/path' forms are also accepted."
        )

    sha: str | None = None
    meta: dict[str, Any] = {}
    if pretrained is not None and not has_schema:
        pretrained = os.fspath(pretrained)
        expanded = Path(pretrained).expanduser()
        if expanded.is_file():
            pretrained = str(expanded.resolve())
            sha = sha256_file(Path(pretrained))
            meta = read_clipgeo_meta(pretrained)
        elif expanded.exists():
            raise FileNotFoundError(f"checkpoint path is not a file: {expanded}")
        elif _looks_like_path(pretrained):
            raise FileNotFoundError(f"checkpoint file not found: {expanded}")
        elif not open_clip.get_pretrained_cfg(model_name, pretrained):
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise ValueError(
                f"{pretrained!r} is neither an existing checkpoint file nor a pretrained tag of "
                f"{model_name!r}; known tags: {tags or 'none'} "
                f"(open_clip.list_pretrained_tags_by_model({model_name!r}))"
            )

    from clipgeo.models.cloob import cloob_state_dict, is_cloob_checkpoint

    if sha is not None and not meta and is_cloob_checkpoint(pretrained):
        # ml-jku/cloob format: DDP-prefixed keys plus an extra Hopfield scale; map onto the
        # open_clip architecture of the same name (strict: every tensor must fit).
        sd, cloob_meta = cloob_state_dict(pretrained)
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None, device="cpu")
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"CLOOB checkpoint {pretrained} (config {cloob_meta.get('model_config_file')}) does not fit open_clip "
                f"model {model_name!r}: {str(exc)[:500]}"
            ) from exc
        model.to(device)
        meta = cloob_meta
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device
        )
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)

    if meta.get("logit_scale") is not None:
        logit_scale = float(meta["logit_scale"])
    else:
        logit_scale = float(model.logit_scale.detach().exp().item())

    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        model_name=model_name,
        pretrained=pretrained,
        device=str(device),
        embed_dim=_embed_dim(model_name, model),
        logit_scale=logit_scale,
        checkpoint_sha256=sha,
        meta=meta,
    )
