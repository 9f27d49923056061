"""Core types shared by every image–caption source."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sample", "SourceError"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One image–caption pair.

    Attributes:
        sample_id: Unique per caption (for COCO: ``str(annotation id)``).
        image_id: Identifier of the image; several samples share one image
            (for COCO: ``str(image id)``).
        image_ref: Absolute path of the image file.
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
