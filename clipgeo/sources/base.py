"""Core types shared by every image–caption source."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "REJECT_STAGES",
    "Reject",
    "Sample",
    "SourceError",
    "SourceRead",
    "check_caption",
    "dedupe_samples",
    "settle_drops",
    "snippet",
]

#: The stages a reject can come from: ``read`` (file / member / row could not be read or
#: is structurally wrong), ``decode`` (the image bytes are not a usable image), ``caption``
#: (caption empty or not valid UTF-8) and ``vectors`` (imported vectors unusable).
REJECT_STAGES: tuple[str, ...] = ("read", "decode", "caption", "vectors")


@dataclass(frozen=True, slots=True)
class Sample:
    """One image–caption pair.

    Attributes:
        sample_id: Unique per caption (for COCO: ``str(annotation id)``).
        image_id: Identifier of the image; several samples share one image
            (for COCO: ``str(image id)``).
        image_ref: Where the image is: an absolute path of an image file, or a tar member
            ``tar://<absolute path of the .tar>#<member name>`` (see
            :mod:`clipgeo.sources.images`, which opens both). Imported embeddings have no
            image; their ``image_ref`` is the image URL from the metadata, or ``""``.
        caption: The caption text, stripped of surrounding whitespace.
    """

    sample_id: str
    image_id: str
    image_ref: str
    caption: str


class SourceError(ValueError):
    """Bad input to a data source.

    The message names the offending file and/or field and says what to do about it.
    """


@dataclass(frozen=True, slots=True)
class Reject:
    """One input item that a source or stage refused, with the reason: one bad input, one reject.

    Attributes:
        item_ref: What was refused: an image ref, ``<file>:<line>`` of a captions file, a
            tar member ref, an ``.npy`` / parquet path (whole part) or ``<npy path>#<row>``.
        stage: One of :data:`REJECT_STAGES`.
        reason: Short, machine-friendly reason (e.g. ``"empty caption"``,
            ``"duplicate sample id"``, ``"truncated image"``).
        sample_id: The sample refused, when the item maps to one sample.
        image_id: The image the item belongs to, when known (the refused image itself, or
            the image of a refused caption).
        n_images: Images this reject takes out of the dataset: 1 for a refused image file or
            image entry; for a caption, 1 when it was the last caption its image had. ``None``
            until :func:`settle_drops` decides it from ``image_id``.
        n_captions: Captions this reject takes out of the dataset: 1 for a refused caption,
            the image's caption count for a refused image (its captions are *not* separate
            rejects). ``None`` means 1 when ``sample_id`` is set, else 0.
        detail: A short excerpt of the refused caption, when there is text to show
            (:func:`snippet`); the reports list it as an example.
    """

    item_ref: str
    stage: Literal["read", "decode", "caption", "vectors"]
    reason: str
    sample_id: str | None = None
    image_id: str | None = None
    n_images: int | None = None
    n_captions: int | None = None
    detail: str | None = None


@dataclass(slots=True)
class SourceRead:
    """What a source read: the usable samples (in source order) and the refused items."""

    samples: list[Sample] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """``{"samples": n, "images": n_distinct_image_ids, "rejects": n}``."""
        return {
            "samples": len(self.samples),
            "images": len({s.image_id for s in self.samples}),
            "rejects": len(self.rejects),
        }


def check_caption(raw: str | bytes | None) -> tuple[str | None, str | None]:
    """The shared caption check of every source: ``(caption, None)`` or ``(None, reason)``.

    * ``bytes`` are decoded as strict UTF-8 (a leading BOM is dropped); invalid UTF-8 is
      refused with the reason ``"caption not valid UTF-8 (byte 0x.. at offset n)"`` rather
      than silently replaced, so no caption is ever stored altered.
    * ``str`` holding lone surrogates (from ``surrogateescape`` decoding of bad bytes, or
      ``"\\ud800"`` escapes in JSON) cannot be stored as UTF-8: refused the same way (the
      offset then counts characters; surrogate-escaped bytes are reported as the byte).
    * Surrounding whitespace is stripped (as the COCO reader always did); an empty or
      whitespace-only caption is refused with ``"empty caption"``.
    * Long captions are kept whole (the tokenizer truncates to its context length).
    * ``None`` (no caption at all) is refused with ``"no caption"``.
    """
    if raw is None:
        return None, "no caption"
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"caption not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
    elif isinstance(raw, str):
        text = raw
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            ch = ord(text[exc.start])
            if 0xDC80 <= ch <= 0xDCFF:  # a byte kept by errors="surrogateescape"
                return None, f"caption not valid UTF-8 (byte 0x{ch - 0xDC00:02x} at offset {exc.start})"
            return None, f"caption not valid UTF-8 (lone surrogate at offset {exc.start})"
    else:
        return None, f"caption is not text ({type(raw).__name__})"
    text = text.strip()
    if not text:
        return None, "empty caption"
    return text, None


_SURROGATE = re.compile("[\ud800-\udfff]")


def snippet(raw: str | bytes | None, limit: int = 60) -> str | None:
    """At most ``limit`` characters of a caption, whitespace collapsed, ``…`` when cut; bytes
    and lone surrogates that are not UTF-8 shown as U+FFFD. None when nothing is left."""
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        text = bytes(raw).decode("utf-8", "replace")
    elif isinstance(raw, str):
        text = _SURROGATE.sub("\ufffd", raw)
    else:
        return None
    text = " ".join(text.split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dedupe_samples(samples: Iterable[Sample], rejects: list[Reject]) -> list[Sample]:
    """Keep the first sample of each ``sample_id``; append a reject for every later one."""
    seen: set[str] = set()
    out: list[Sample] = []
    for s in samples:
        if s.sample_id in seen:
            rejects.append(Reject(s.image_ref, "read", "duplicate sample id", s.sample_id, s.image_id,
                                  detail=snippet(s.caption)))
            continue
        seen.add(s.sample_id)
        out.append(s)
    return out


def settle_drops(samples: Iterable[Sample], rejects: Iterable[Reject], *,
                 covered: Iterable[str] = ()) -> list[Reject]:
    """Fill in ``n_images`` / ``n_captions`` of every reject, so that summing them over the
    rejects gives the images and captions the dataset lost, each counted once.

    * ``n_captions`` left ``None`` becomes 1 when the reject names a sample, else 0.
    * ``n_images`` left ``None`` becomes 1 on the *first* reject of an ``image_id`` that has no
      kept sample (its captions were all refused) and is not in ``covered`` (image ids whose
      loss an image-level reject already counts, e.g. a missing file); else 0.
    Explicit values are kept. Order is kept.
    """
    kept = {s.image_id for s in samples}
    done = set(covered)
    out = []
    for r in rejects:
        n_img, n_cap = r.n_images, r.n_captions
        if n_cap is None:
            n_cap = 0 if r.sample_id is None else 1
        if n_img is None:
            n_img = 0
            if r.image_id is not None and r.image_id not in kept and r.image_id not in done:
                n_img = 1
                done.add(r.image_id)
        out.append(replace(r, n_images=n_img, n_captions=n_cap))
    return out
