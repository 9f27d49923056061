"""Batched tensor preprocessing that reproduces open_clip's validation transform.

open_clip's ``preprocess`` (what :func:`clipgeo.models.loader.load_model` returns) is a
``torchvision`` ``Compose`` applied to one PIL image at a time::

    Resize(size, bicubic)            # shortest side -> size, long side = int(size * long / short)
    CenterCrop(size)                 # top = round((H - size) / 2), zero padding if smaller
    MaybeConvertMode(), ToTensor()   # uint8 HWC -> float CHW in [0, 1]
    Normalize(mean, std)             # (x - mean) / std

(``ResizeKeepRatio`` + ``CenterCropOrPad`` for ``resize_mode="longest"`` or non-square sizes,
one ``Resize((h, w))`` for ``"squash"``). :func:`spec_from_transform` reads those parameters
from the transform object itself, so the fast path uses exactly the size, interpolation,
mean and std of the model in use; a transform it does not recognise gives ``None`` and the
caller keeps the PIL reference path.

:func:`preprocess_uint8` applies the same steps to decoded ``uint8`` ``(3, H, W)`` tensors
on any device, batching images of equal size into one ``interpolate`` call:

* resize, antialiased bicubic (or bilinear) as Pillow does it: on CPU with torch's uint8
  kernels (ported from Pillow's fixed-point resampler); elsewhere with
  ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` in float32 in
  Pillow's order: a horizontal pass, **rounded and clamped to 0..255** as Pillow's 8-bit
  intermediate is, then a vertical pass, rounded and clamped again;
* centre crop (or pad with the transform's fill) with torchvision's offsets;
* ``(x / 255 - mean) / std`` in float32, then cast to the model's dtype.

Pillow resamples in fixed point (22 fractional bits). The float path, with Pillow's pass
order and rounding, differs from it by at most one level of 255 on a few pixels (a single
float pass differed by up to 23 levels where bicubic overshoot is clipped in between); the
uint8 kernels by at most 2 levels (where images are enlarged; 1 when reduced), at 2-3x the float path's
speed on CPU. ``tests/test_embed_fast.py`` states and checks the bounds.

EXIF orientation: the reference :func:`clipgeo.sources.images.decode_image` applies
:func:`PIL.ImageOps.exif_transpose`; :func:`apply_orientation` is the same transposition on
a tensor (orientation values 2-8 as Pillow maps them; anything else leaves the image as is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PreprocessSpec", "apply_orientation", "preprocess_uint8", "resize_output_size", "spec_from_transform"]


@dataclass(frozen=True)
class PreprocessSpec:
    """The validation transform of an open_clip model, as numbers.

    Attributes:
        resize: ``"shorter"`` (torchvision ``Resize(int)``: shorter side to ``resize_size[0]``,
            longer side ``int(s * long / short)``, capped by ``max_size``), ``"exact"``
            (``Resize((h, w))``) or ``"keep_ratio"`` (open_clip's ``ResizeKeepRatio``).
        resize_size: ``(s,)`` for ``"shorter"``, ``(h, w)`` otherwise.
        max_size: torchvision's ``max_size`` for ``"shorter"``.
        longest: ``ResizeKeepRatio``'s mix of longest (1) and shortest (0) edge ratio.
        interpolation: ``"bicubic"`` or ``"bilinear"``.
        crop: ``(h, w)`` of the centre crop, or None when the transform has none.
        fill: padding value (0..255) when the image is smaller than the crop.
        mean, std: per-channel normalisation.
    """

    resize: str
    resize_size: tuple[int, ...]
    max_size: int | None
    longest: float
    interpolation: str
    crop: tuple[int, int] | None
    fill: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def output_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of every output when fixed by a crop or an exact resize, else None."""
        if self.crop is not None:
            return self.crop
        if self.resize == "exact":
            return (self.resize_size[0], self.resize_size[1])
        return None


def _three(v: Any) -> tuple[float, float, float]:
    vals = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3)]
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3:
        raise ValueError(f"expected 3 channel values, got {v!r}")
    return (vals[0], vals[1], vals[2])


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def spec_from_transform(transform: Any) -> PreprocessSpec | None:
    """Read an open_clip validation ``Compose`` into a :class:`PreprocessSpec`, or None.

    None means "not a transform the tensor path reproduces" (training augmentations, an
    unknown step, nearest-neighbour interpolation, antialiasing off...): the caller then
    uses ``transform`` itself on PIL images.
    """
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

    steps = getattr(transform, "transforms", None)
    if steps is None:
        return None
    resize = None
    crop: tuple[int, int] | None = None
    fill = 0
    mean = std = None
    interp_names = {InterpolationMode.BICUBIC: "bicubic", InterpolationMode.BILINEAR: "bilinear"}
    for step in steps:
        name = type(step).__name__
        if isinstance(step, T.Resize):
            if resize is not None or crop is not None or step.antialias is False:
                return None
            if step.interpolation not in interp_names:
                return None
            size = step.size
            if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1):
                s = size if isinstance(size, int) else int(size[0])
                resize = ("shorter", (int(s),), step.max_size, 0.0, interp_names[step.interpolation])
            else:
                resize = ("exact", _pair(size), None, 0.0, interp_names[step.interpolation])
        elif name == "ResizeKeepRatio":
            if resize is not None or crop is not None or step.interpolation not in interp_names:
                return None
            if getattr(step, "random_scale_prob", 0) or getattr(step, "random_aspect_prob", 0):
                return None
            resize = ("keep_ratio", _pair(step.size), None, float(step.longest), interp_names[step.interpolation])
        elif isinstance(step, T.CenterCrop):
            if crop is not None:
                return None
            crop, fill = _pair(step.size), 0
        elif name == "CenterCropOrPad":
            if crop is not None:
                return None
            f = step.fill
            if not isinstance(f, (int, float)):
                return None
            crop, fill = _pair(step.size), int(f)
        elif isinstance(step, T.Normalize):
            if mean is not None or getattr(step, "inplace", False) not in (False, True):
                return None
            mean, std = _three(step.mean), _three(step.std)
        elif name in ("MaybeConvertMode", "MaybeToTensor", "ToTensor") or getattr(step, "__name__", "") == "_convert_to_rgb":
            continue
        else:
            return None
    if resize is None or mean is None or std is None:
        return None
    kind, rsize, max_size, longest, interp = resize
    return PreprocessSpec(kind, rsize, max_size, longest, interp, crop, fill, mean, std)


def resize_output_size(spec: PreprocessSpec, h: int, w: int) -> tuple[int, int]:
    """``(h, w)`` after the spec's resize, computed as torchvision / open_clip compute it."""
    if spec.resize == "exact":
        return spec.resize_size[0], spec.resize_size[1]
    if spec.resize == "keep_ratio":
        th, tw = spec.resize_size
        rh, rw = h / th, w / tw
        ratio = max(rh, rw) * spec.longest + min(rh, rw) * (1.0 - spec.longest)
        return round(h / ratio), round(w / ratio)
    from torchvision.transforms.functional import _compute_resized_output_size

    nh, nw = _compute_resized_output_size((h, w), [spec.resize_size[0]], spec.max_size)
    return nh, nw


def apply_orientation(img: Any, orientation: int) -> Any:
    """Transpose a ``(..., H, W)`` tensor as :func:`PIL.ImageOps.exif_transpose` does for EXIF
    orientation 2-8 (2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise); other values return ``img`` unchanged."""
    import torch

    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-1, -2)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(img, -1, dims=(-2, -1))
    if orientation == 7:
        return img.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return torch.rot90(img, 1, dims=(-2, -1))
    return img


def _crop_or_pad(x: Any, crop: tuple[int, int], fill: int) -> Any:
    """torchvision ``center_crop`` (open_clip ``center_crop_or_pad``) on ``(n, 3, H, W)``."""
    import torch.nn.functional as F

    ch, cw = crop
    h, w = x.shape[-2:]
    if cw > w or ch > h:
        pad = [(cw - w) // 2 if cw > w else 0, (cw - w + 1) // 2 if cw > w else 0,
               (ch - h) // 2 if ch > h else 0, (ch - h + 1) // 2 if ch > h else 0]
        x = F.pad(x, pad, value=float(fill))
        h, w = x.shape[-2:]
        if (h, w) == (ch, cw):
            return x
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return x[..., top: top + ch, left: left + cw]


def _resize(x: Any, h: int, w: int, nh: int, nw: int, interpolation: str, method: str) -> Any:
    import torch
    import torch.nn.functional as F

    if method == "uint8":  # torch's fixed-point kernels ported from Pillow's, on uint8
        from torchvision.transforms.v2 import functional as F2

        mode = F2.InterpolationMode.BICUBIC if interpolation == "bicubic" else F2.InterpolationMode.BILINEAR
        return F2.resize(x, [nh, nw], interpolation=mode, antialias=True)
    x = x.to(torch.float32)
    # Pillow's order: horizontal pass, 8-bit intermediate, vertical pass (a pass is skipped
    # when its side keeps its length)
    if nw != w:
        x = F.interpolate(x, size=(h, nw), mode=interpolation, align_corners=False, antialias=True)
        x = x.round_().clamp_(0.0, 255.0)
    if nh != h:
        x = F.interpolate(x, size=(nh, nw), mode=interpolation, align_corners=False, antialias=True)
        x = x.round_().clamp_(0.0, 255.0)
    return x


def preprocess_uint8(images: Sequence[Any], spec: PreprocessSpec, *, dtype: Any = None, out: Any = None,
                     method: str = "auto") -> Any:
    """Resize, crop and normalise decoded images as one batch.

    Args:
        images: ``uint8`` tensors ``(3, H, W)`` (upright RGB), all on one device, any sizes.
        spec: from :func:`spec_from_transform`.
        dtype: output dtype (default float32); the normalisation runs in float32.
        out: optional preallocated ``(n, 3, h, w)`` output.
        method: ``"uint8"``: torch's uint8 antialiased kernels (CPU only; 2-3x faster there;
            within 2 levels of Pillow where enlarged, 1 where reduced), ``"float"``: two float32 passes in
            Pillow's order (any device; within 1 level), ``"auto"``: uint8 on CPU, else float.

    Returns:
        ``(n, 3, h, w)`` tensor on the images' device; for a spec without a fixed output size
        all images must come out the same size.
    """
    import torch

    if not images:
        raise ValueError("preprocess_uint8 needs at least one image")
    device = images[0].device
    dtype = dtype or torch.float32
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for k, im in enumerate(images):
        if im.dim() != 3 or im.shape[0] != 3 or im.dtype != torch.uint8:
            raise ValueError(f"image {k}: expected a uint8 (3, H, W) tensor, got {tuple(im.shape)} {im.dtype}")
        h, w = int(im.shape[1]), int(im.shape[2])
        groups.setdefault((h, w, *resize_output_size(spec, h, w)), []).append(k)
    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    if method == "auto":
        method = "uint8" if device.type == "cpu" else "float"
    if method not in ("uint8", "float"):
        raise ValueError(f"method {method!r}: expected auto, uint8 or float")
    for (h, w, nh, nw), ks in groups.items():
        x = torch.stack([images[k] for k in ks])
        if (nh, nw) != (h, w):  # torchvision returns an image of the requested size untouched
            x = _resize(x, h, w, nh, nw, spec.interpolation, method)
        if spec.crop is not None:
            x = _crop_or_pad(x, spec.crop, spec.fill)
        x = ((x.to(torch.float32) - mean) / std).to(dtype)
        if out is None:
            out = torch.empty((len(images), *x.shape[1:]), dtype=dtype, device=device)
        elif tuple(out.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(f"images come out {tuple(x.shape[1:])} and {tuple(out.shape[1:])}: the transform "
                             "has no fixed output size; batch them separately")
        out[torch.as_tensor(ks, device=device)] = x
    return out
