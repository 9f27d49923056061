"""Reader for MS-COCO-captions-format annotation files.

Used both for real MS-COCO captions (``captions_train2017.json`` ...) and for the
procedurally generated shapes dataset, which is written in the same format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clipgeo.sources.base import Sample, SourceError

__all__ = ["read_coco_captions"]

logger = logging.getLogger(__name__)


def _id_sort_key(value: int | str) -> tuple[int, int, str]:
    """Order integer ids numerically and before string ids, which sort lexically."""
    if isinstance(value, int):
        return (0, value, "")
    return (1, 0, value)


def _load_json(path: Path) -> Any:
    if not path.exists():
        raise SourceError(
            f"annotation file not found: {path}. Pass the path of an existing "
            "MS-COCO captions file (e.g. annotations/captions_val2017.json)."
        )
    if not path.is_file():
        raise SourceError(
            f"annotation path is not a file: {path}. Pass the path of a captions_*.json "
            "file, not its folder."
        )
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"annotation file {path} is not valid JSON (line {exc.lineno}, column "
            f"{exc.colno}: {exc.msg}). Re-download or regenerate the file."
        ) from exc
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"annotation file {path} is not UTF-8 JSON ({exc}). Re-download or "
            "regenerate the file."
        ) from exc
    except OSError as exc:
        raise SourceError(f"cannot read annotation file {path}: {exc}") from exc


def _get(entry: Any, key: str, *, path: Path, where: str) -> Any:
    """Return ``entry[key]`` or raise a SourceError naming the file, the entry and the key."""
    if not isinstance(entry, Mapping):
        raise SourceError(
            f"{path}: {where} must be a JSON object, got {type(entry).__name__}. "
            "The file does not follow the MS-COCO captions format."
        )
    if key not in entry:
        raise SourceError(
            f"{path}: {where} is missing the key {key!r}. The file does not follow the "
            "MS-COCO captions format (images need 'id' and 'file_name'; annotations "
            "need 'id', 'image_id' and 'caption')."
        )
    return entry[key]


def _check_id(value: Any, *, path: Path, where: str) -> int | str:
    # bool is an int subclass; an id of true/false is certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SourceError(
            f"{path}: {where} must be an integer or a string, got {value!r}."
        )
    return value


def read_coco_captions(
    annotations: Path, image_dir: Path, *, limit_images: int | None = None
) -> list[Sample]:
    """Read an MS-COCO captions file into samples, one per caption.

    Args:
        annotations: Path of a ``captions_*.json`` file with the top-level keys
            ``images`` (``[{id, file_name, ...}]``) and ``annotations``
            (``[{id, image_id, caption}]``).
        image_dir: Folder that holds the images named by ``file_name``. Images are
            not opened here; ``image_ref`` is ``str((image_dir / file_name).resolve())``.
        limit_images: Keep only the first N images (in image-id order) that have
            at least one caption, with all of their captions. ``None`` keeps all.

    Returns:
        Samples ordered by image id, then annotation id. Several samples share one
        ``image_id``; ``sample_id`` is ``str(annotation id)``. Captions are stripped
        of surrounding whitespace. Empty captions, duplicate annotation ids and
        annotations whose image is not listed are skipped, with one warning per kind
        logged through :mod:`logging`. Images without any caption yield no sample.

    Raises:
        SourceError: The file is missing, is not valid JSON, lacks a required key or
            holds a malformed entry, ``image_dir`` is not a folder, or
            ``limit_images`` is negative.
    """
    annotations = Path(annotations)
    image_dir = Path(image_dir)
    if limit_images is not None and (
        isinstance(limit_images, bool) or not isinstance(limit_images, int) or limit_images < 0
    ):
        raise SourceError(
            f"limit_images must be None or a non-negative integer, got {limit_images!r}."
        )
    if not image_dir.is_dir():
        raise SourceError(
            f"image folder not found: {image_dir} (for {annotations}). Pass the folder "
            "that holds the images named by 'file_name' (e.g. val2017/)."
        )

    data = _load_json(annotations)
    if not isinstance(data, Mapping):
        raise SourceError(
            f"{annotations}: the top level must be a JSON object with the keys 'images' "
            f"and 'annotations', got {type(data).__name__}."
        )
    images = _get(data, "images", path=annotations, where="the top-level object")
    anns = _get(data, "annotations", path=annotations, where="the top-level object")
    for key, value in (("images", images), ("annotations", anns)):
        if not isinstance(value, list):
            raise SourceError(
                f"{annotations}: the top-level key {key!r} must be a list, got "
                f"{type(value).__name__}."
            )

    # image id -> resolved path of the image file
    file_of: dict[int | str, str] = {}
    for i, img in enumerate(images):
        where = f"images[{i}]"
        image_id = _check_id(_get(img, "id", path=annotations, where=where),
                             path=annotations, where=f"{where}['id']")
        file_name = _get(img, "file_name", path=annotations, where=where)
        if not isinstance(file_name, str) or not file_name.strip():
            raise SourceError(
                f"{annotations}: {where}['file_name'] must be a non-empty string, got "
                f"{file_name!r}."
            )
        ref = str((image_dir / file_name).resolve())
        previous = file_of.get(image_id)
        if previous is not None and previous != ref:
            raise SourceError(
                f"{annotations}: image id {image_id!r} is listed twice with different "
                f"file names ({previous} and {ref}). Fix the 'images' list."
            )
        file_of[image_id] = ref

    # image id -> [(annotation id, caption)]
    captions: dict[int | str, list[tuple[int | str, str]]] = {}
    seen_ann_ids: set[int | str] = set()
    n_empty = n_duplicate = n_orphan = 0
    for i, ann in enumerate(anns):
        where = f"annotations[{i}]"
        ann_id = _check_id(_get(ann, "id", path=annotations, where=where),
                           path=annotations, where=f"{where}['id']")
        image_id = _check_id(_get(ann, "image_id", path=annotations, where=where),
                             path=annotations, where=f"{where}['image_id']")
        caption = _get(ann, "caption", path=annotations, where=where)
        if not isinstance(caption, str):
            raise SourceError(
                f"{annotations}: {where}['caption'] must be a string, got {caption!r}."
            )
        if ann_id in seen_ann_ids:
            n_duplicate += 1
            continue
        seen_ann_ids.add(ann_id)
        caption = caption.strip()
        if not caption:
            n_empty += 1
            continue
        if image_id not in file_of:
            n_orphan += 1
            continue
        captions.setdefault(image_id, []).append((ann_id, caption))

    if n_empty:
        logger.warning("%s: skipped %d empty caption(s)", annotations, n_empty)
    if n_duplicate:
        logger.warning("%s: skipped %d annotation(s) with a duplicate id", annotations, n_duplicate)
    if n_orphan:
        logger.warning(
            "%s: skipped %d annotation(s) whose image_id is not in 'images'", annotations, n_orphan
        )

    image_ids = sorted(captions, key=_id_sort_key)
    if limit_images is not None:
        image_ids = image_ids[:limit_images]

    samples: list[Sample] = []
    for image_id in image_ids:
        ref = file_of[image_id]
        for ann_id, caption in sorted(captions[image_id], key=lambda t: _id_sort_key(t[0])):
            samples.append(
                Sample(sample_id=str(ann_id), image_id=str(image_id), image_ref=ref, caption=caption)
            )
    return samples
