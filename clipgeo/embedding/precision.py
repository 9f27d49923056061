"""The model's inference precision: resolving ``precision`` names, reading the weights' dtype,
converting a loaded model (weights, attention path, memory format) before embedding.
Heavy imports (torch) stay inside the functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from clipgeo.models.loader import LoadedModel

__all__ = ["PRECISIONS", "model_dtype", "prepare_model", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_precision(precision: str | None, device: str) -> str:
    """``auto`` -> ``fp16`` on CUDA, ``fp32`` elsewhere; otherwise the name, checked."""
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if p == "auto":
        return "fp16" if str(device).startswith("cuda") else "fp32"
    return p


def model_dtype(model: Any) -> Any:
    import torch

    for p in model.parameters():
        return p.dtype
    return torch.float32


def prepare_model(lm: LoadedModel, precision: str | None = "auto", *, channels_last: bool | None = None) -> LoadedModel:
    """Put ``lm.model`` (in place) into its inference precision and memory format.

    * weights in ``fp32`` / ``fp16`` / ``bf16`` (``auto``: fp16 on CUDA, fp32 on CPU); the
      inputs the embed functions build follow the weights' dtype;
    * attention: open_clip's ``nn.MultiheadAttention`` blocks take PyTorch's fused
      inference path, which calls ``scaled_dot_product_attention`` (flash / memory-efficient
      kernels on CUDA), under ``torch.inference_mode()`` as the embed functions run;
    * channels-last for image towers with more than one convolution (ResNet / ConvNeXt
      towers; a ViT has only its patch projection, where it does not help), on CUDA, or
      as ``channels_last`` says.

    Returns ``lm`` itself (its model converted).
    """
    import torch

    p = resolve_precision(precision, lm.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[p]
    if model_dtype(lm.model) != dtype:
        lm.model.to(dtype)
    visual = getattr(lm.model, "visual", None)
    if visual is not None:
        n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in visual.modules())
        use_cl = channels_last if channels_last is not None else (str(lm.device).startswith("cuda") and n_conv > 1)
        if use_cl:
            visual.to(memory_format=torch.channels_last)
    return lm
