"""Core types shared by every image–caption source."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "REJECT_STAGES",
    "Reject",
    "Sample",
    "SourceError",
    "SourceRead",
    "check_caption",
    "dedupe_samples",
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
    """One input item that a source or stage refused, with the reason.

    Attributes:
        item_ref: What was refused: an image ref, ``<file>:<line>`` of a captions file, a
            tar member ref, an ``.npy`` / parquet path (whole part) or ``<npy path>#<row>``.
        stage: One of :data:`REJECT_STAGES`.
        reason: Short, machine-friendly reason (e.g. ``"empty caption"``,
            ``"duplicate sample id"``, ``"truncated image"``).
        sample_id: The sample refused, when the item maps to one sample.
    """

    item_ref: str
    stage: Literal["read", "decode", "caption", "vectors"]
    reason: str
    sample_id: str | None = None


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


def dedupe_samples(samples: Iterable[Sample], rejects: list[Reject]) -> list[Sample]:
    """Keep the first sample of each ``sample_id``; append a reject for every later one."""
    seen: set[str] = set()
    out: list[Sample] = []
    for s in samples:
        if s.sample_id in seen:
            rejects.append(Reject(s.image_ref, "read", "duplicate sample id", s.sample_id))
            continue
        seen.add(s.sample_id)
        out.append(s)
    return out
