"""Karpathy splits (``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_flickr8k.json``).

The file Karpathy & Fei-Fei released with *Deep Visual-Semantic Alignments* assigns every
image to one split::

    {"dataset": "coco",
     "images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
                 "imgid": 0, "split": "test", "cocoid": 391895,
                 "sentids": [770337, ...],
                 "sentences": [{"raw": "A man with a red helmet ...", "tokens": [...],
                                "imgid": 0, "sentid": 770337}, ...]}, ...]}

``split`` is one of ``train``, ``val``, ``test``, ``restval`` (COCO only: the 30,504 val2014
images that the usual "train" split adds, often written ``train+restval``).

Two uses:

* :func:`karpathy_split_ids` picks the images of a split, to filter an MS-COCO captions file
  (:func:`clipgeo.sources.coco.read_coco` with ``karpathy_split_file=`` / ``split=``); the
  captions then come from the COCO annotations and keep their annotation ids.
* :func:`read_karpathy` reads the captions straight from the split file's ``sentences`` (how
  Flickr8k / Flickr30k are usually distributed): ``image_id`` = ``cocoid`` if present, else
  ``imgid``; ``sample_id`` = ``sentid``; ``image_ref`` = ``image_root/filepath/filename``
  (``filepath`` only when the entry has one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipgeo.sources.base import Reject, Sample, SourceError, SourceRead, check_caption, dedupe_samples

__all__ = ["KARPATHY_SPLITS", "KarpathySplit", "karpathy_split_ids", "parse_split", "read_karpathy"]

KARPATHY_SPLITS: tuple[str, ...] = ("train", "val", "test", "restval")


def parse_split(split: str) -> set[str]:
    """``"train+restval"`` -> ``{"train", "restval"}``; unknown names raise SourceError."""
    if not isinstance(split, str) or not split.strip():
        raise SourceError(f"split must be one of {KARPATHY_SPLITS} (or joined with '+'), got {split!r}")
    names = {p.strip() for p in split.split("+")}
    bad = names - set(KARPATHY_SPLITS)
    if bad:
        raise SourceError(
            f"unknown Karpathy split {sorted(bad)} in {split!r}: use {', '.join(KARPATHY_SPLITS)} "
            "or a '+'-joined combination such as 'train+restval'"
        )
    return names


def _load(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise SourceError(
            f"Karpathy split file not found: {path}. Pass dataset_coco.json (or dataset_flickr30k.json) "
            "from Karpathy's caption_datasets.zip."
        )
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"Karpathy split file {path} is not valid UTF-8 JSON: {exc}") from exc
    except OSError as exc:
        raise SourceError(f"cannot read Karpathy split file {path}: {exc}") from exc
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise SourceError(
            f"{path}: not a Karpathy split file (expected a JSON object whose 'images' is a list "
            "of {filename, split, sentences, ...})"
        )
    for i, im in enumerate(images):
        if not isinstance(im, dict) or "split" not in im or "filename" not in im:
            raise SourceError(f"{path}: images[{i}] needs the keys 'filename' and 'split'")
    return images


@dataclass(frozen=True)
class KarpathySplit:
    """The images of one (possibly '+'-joined) split: COCO ids and file base names."""

    split: str
    coco_ids: frozenset[int]
    filenames: frozenset[str]

    def __contains__(self, item: tuple[int | str, str]) -> bool:
        """``(image_id, file_name)`` of a COCO image entry is in the split."""
        image_id, file_name = item
        try:
            if int(image_id) in self.coco_ids:
                return True
        except (TypeError, ValueError):
            pass
        return os.path.basename(file_name) in self.filenames

    def __len__(self) -> int:
        return len(self.filenames)


def karpathy_split_ids(split_file: Path, split: str) -> KarpathySplit:
    """The images of ``split`` (e.g. ``"test"`` or ``"train+restval"``) in a Karpathy file."""
    names = parse_split(split)
    ids: set[int] = set()
    files: set[str] = set()
    for im in _load(Path(split_file)):
        if im["split"] in names:
            files.add(os.path.basename(str(im["filename"])))
            if "cocoid" in im:
                ids.add(int(im["cocoid"]))
    return KarpathySplit(split, frozenset(ids), frozenset(files))


def read_karpathy(split_file: Path, image_root: Path, *, split: str) -> SourceRead:
    """Samples of one split with the captions of the split file itself (``sentences[].raw``).

    Rejects: empty / invalid captions (stage ``caption``) and duplicate ``sentid`` (``read``).

    Raises:
        SourceError: the file is missing or not in the Karpathy format, ``image_root`` is not a
            folder, or ``split`` is unknown.
    """
    split_file, image_root = Path(split_file), Path(image_root)
    names = parse_split(split)
    if not image_root.is_dir():
        raise SourceError(f"image folder not found: {image_root} (for {split_file})")
    root = os.path.abspath(image_root)
    out = SourceRead()
    samples: list[Sample] = []
    for i, im in enumerate(_load(split_file)):
        if im["split"] not in names:
            continue
        image_id = str(im.get("cocoid", im.get("imgid", i)))
        parts = [root, str(im["filepath"])] if im.get("filepath") else [root]
        ref = os.path.normpath(os.path.join(*parts, str(im["filename"])))
        for k, sent in enumerate(im.get("sentences") or []):
            sid = str(sent.get("sentid", f"{image_id}#{k}")) if isinstance(sent, dict) else f"{image_id}#{k}"
            raw = sent.get("raw") if isinstance(sent, dict) else None
            caption, reason = check_caption(raw)
            if reason:
                out.rejects.append(Reject(f"{split_file}#images[{i}].sentences[{k}]", "caption", reason, sid))
                continue
            samples.append(Sample(sid, image_id, ref, caption))
    out.samples = dedupe_samples(samples, out.rejects)
    return out
