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

from clipgeo.sources.base import Reject, Sample, SourceError, SourceRead, check_caption, dedupe_samples, snippet

__all__ = ["read_coco", "read_coco_captions"]

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
        of surrounding whitespace. Empty captions, captions that cannot be stored as
        UTF-8 (lone surrogates), duplicate annotation ids, annotations whose image
        is not listed, repeated image ids (the first entry is kept, whichever file the
        others name) and images without any caption are skipped, with one warning per kind
        logged through :mod:`logging`. Use
        :func:`read_coco` to get the skipped items as :class:`Reject` records.

    Raises:
        SourceError: The file is missing, is not valid JSON, lacks a required key or
            holds a malformed entry, ``image_dir`` is not a folder, or
            ``limit_images`` is negative. (A repeated image id is not an error: it is
            rejected, see :func:`read_coco`.)
    """
    read = _read_coco(Path(annotations), Path(image_dir), limit_images=limit_images, split=None)
    n_empty = n_bad = n_duplicate = n_orphan = n_dup_image = n_no_caption = 0
    for r in read.rejects:
        if r.reason == "empty caption":
            n_empty += 1
        elif r.reason == "duplicate sample id":
            n_duplicate += 1
        elif r.reason == _ORPHAN:
            n_orphan += 1
        elif r.reason in (_DUP_IMAGE, _DUP_IMAGE_OTHER_FILE):
            n_dup_image += 1
        elif r.reason == _NO_CAPTION:
            n_no_caption += 1
        else:
            n_bad += 1
    if n_empty:
        logger.warning("%s: skipped %d empty caption(s)", annotations, n_empty)
    if n_bad:
        logger.warning("%s: skipped %d caption(s) that are not valid UTF-8", annotations, n_bad)
    if n_duplicate:
        logger.warning("%s: skipped %d annotation(s) with a duplicate id", annotations, n_duplicate)
    if n_orphan:
        logger.warning(
            "%s: skipped %d annotation(s) whose image_id is not in 'images'", annotations, n_orphan
        )
    if n_dup_image:
        logger.warning("%s: skipped %d repeated image entr(ies) (the first of each id is kept)",
                       annotations, n_dup_image)
    if n_no_caption:
        logger.warning("%s: skipped %d image(s) without any caption", annotations, n_no_caption)
    return read.samples


def read_coco(
    annotations: Path,
    image_dir: Path,
    *,
    karpathy_split_file: Path | None = None,
    split: str | None = None,
    limit_images: int | None = None,
) -> SourceRead:
    """Like :func:`read_coco_captions`, with the refused annotations and an optional Karpathy split.

    Args:
        annotations, image_dir, limit_images: as in :func:`read_coco_captions`
            (``limit_images`` applies after the split filter).
        karpathy_split_file: ``dataset_coco.json`` of Karpathy's splits. With it, only the
            images of ``split`` are kept: an image is in the split when its COCO id is a
            ``cocoid`` of the split, or its file base name a ``filename`` of it. (The
            Karpathy test/val splits are val2014 images: pair ``split="test"`` with
            ``captions_val2014.json`` + ``val2014/``.)
        split: ``"train"``, ``"val"``, ``"test"``, ``"restval"`` or a ``+``-joined
            combination (``"train+restval"``). Required with ``karpathy_split_file``.

    Returns:
        :class:`SourceRead` whose samples are exactly what :func:`read_coco_captions` would
        return for the kept images, and whose rejects are, one per bad input (in this order):

        * ``("read", "duplicate image id")`` / ``("read", "duplicate image id, different
          file")``: a later entry of an image id already listed (the first is kept with all
          the id's captions); ``item_ref`` is ``<annotations>#images[i]``, one image entry lost;
        * per annotation (``item_ref`` ``<annotations>#annotations[i]``, one caption lost):
          ``("read", "duplicate sample id")`` (a repeated annotation id: the first is kept),
          ``("caption", "empty caption")``, ``("caption", "caption not valid UTF-8 ...")``,
          ``("read", "image_id not in images")``;
        * ``("read", "image has no caption")``: an image entry no annotation names.

        An image whose captions were all refused is lost with them, without a reject of its
        own: the first of its captions' rejects gets ``n_images`` 1 from
        :func:`~clipgeo.sources.base.settle_drops` (which the ingest stage applies).

    Raises:
        SourceError: as :func:`read_coco_captions`; also for a missing / malformed split
            file, an unknown split, or ``split`` without ``karpathy_split_file`` (and vice versa).
    """
    if (karpathy_split_file is None) != (split is None):
        raise SourceError(
            "karpathy_split_file and split go together: pass both (e.g. dataset_coco.json and "
            f"split='test') or neither; got karpathy_split_file={karpathy_split_file!r}, split={split!r}"
        )
    keep = None
    if karpathy_split_file is not None:
        from clipgeo.sources.karpathy import karpathy_split_ids

        keep = karpathy_split_ids(Path(karpathy_split_file), split)
    return _read_coco(Path(annotations), Path(image_dir), limit_images=limit_images, split=keep)


_ORPHAN = "image_id not in images"
_DUP_IMAGE = "duplicate image id"
_DUP_IMAGE_OTHER_FILE = "duplicate image id, different file"
_NO_CAPTION = "image has no caption"


def _read_coco(annotations: Path, image_dir: Path, *, limit_images: int | None, split) -> SourceRead:
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

    # image id -> resolved path of the image file; image id -> where it is listed first
    file_of: dict[int | str, str] = {}
    entry_of: dict[int | str, str] = {}
    in_split: set[int | str] = set()
    # a repeated image id is a reject whichever file it names: the first entry is kept
    # (its captions go with it), every later one is refused and counted as one image entry
    image_dups: list[tuple[int | str, Reject]] = []
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
        if previous is not None:
            reason = _DUP_IMAGE if previous == ref else _DUP_IMAGE_OTHER_FILE
            image_dups.append((image_id, Reject(f"{annotations}#{where}", "read", reason, None, str(image_id),
                                                n_images=1, n_captions=0)))
            continue
        file_of[image_id] = ref
        entry_of[image_id] = where
        if split is not None and (image_id, file_name) in split:
            in_split.add(image_id)
    if split is not None and not in_split:
        raise SourceError(
            f"{annotations}: none of its {len(file_of)} images is in the Karpathy split "
            f"{split.split!r} ({len(split)} images). Pair the split with the right captions file "
            "(the Karpathy val/test images are in captions_val2014.json)."
        )
    rejects: list[Reject] = [r for image_id, r in image_dups if split is None or image_id in in_split]

    # image id -> [(annotation id, caption)]
    captions: dict[int | str, list[tuple[int | str, str]]] = {}
    annotated: set[int | str] = set()
    seen_ann_ids: set[int | str] = set()
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
        if split is not None and image_id not in in_split:
            continue
        ref = f"{annotations}#{where}"
        known = image_id in file_of
        annotated.add(image_id)
        if ann_id in seen_ann_ids:
            rejects.append(Reject(ref, "read", "duplicate sample id", str(ann_id),
                                  str(image_id) if known else None, detail=snippet(caption)))
            continue
        seen_ann_ids.add(ann_id)
        raw, (caption, reason) = caption, check_caption(caption)
        if reason:
            rejects.append(Reject(ref, "caption", reason, str(ann_id), str(image_id) if known else None,
                                  detail=snippet(raw)))
            continue
        if not known:
            rejects.append(Reject(ref, "read", _ORPHAN, str(ann_id), n_images=0, detail=snippet(caption)))
            continue
        captions.setdefault(image_id, []).append((ann_id, caption))
    # an image listed without any caption cannot take part: one reject for the image entry
    for image_id in sorted(set(file_of) - annotated, key=_id_sort_key):
        if split is None or image_id in in_split:
            rejects.append(Reject(f"{annotations}#{entry_of[image_id]}", "read", _NO_CAPTION, None,
                                  str(image_id), n_images=1, n_captions=0))

    image_ids = sorted(captions, key=_id_sort_key)
    if limit_images is not None and len(image_ids) > limit_images:
        image_ids = image_ids[:limit_images]
        # images after the last one taken are out of scope, not lost: their rejects go too
        last = _id_sort_key(image_ids[-1]) if image_ids else None
        beyond = {str(i) for i in file_of if last is None or _id_sort_key(i) > last}
        rejects = [r for r in rejects if r.image_id is None or r.image_id not in beyond]

    samples: list[Sample] = []
    for image_id in image_ids:
        ref = file_of[image_id]
        for ann_id, caption in sorted(captions[image_id], key=lambda t: _id_sort_key(t[0])):
            samples.append(
                Sample(sample_id=str(ann_id), image_id=str(image_id), image_ref=ref, caption=caption)
            )
    # int 3 and str "3" are different COCO ids but the same sample_id string: keep the first.
    samples = dedupe_samples(samples, rejects)
    return SourceRead(samples, rejects)
