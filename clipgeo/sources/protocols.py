"""Measurement protocols of the literature: which subset of a source a figure is measured on.

A protocol fixes the images, their order, the captions per image and the definition a paper's
number used, so a run under it can be set beside that number (:mod:`clipgeo.reference`). It is
chosen when a COCO source is ingested (``clipgeo dataset coco ... --protocol NAME``), stored on
the dataset (``datasets.protocol``, part of its id) and copied onto each run (``runs.protocol``).

``liang-gap``
    Liang et al., "Mind the Gap" (NeurIPS 2022), Weixin-Liang/Modality-Gap: ``torchvision``'s
    ``CocoCaptions`` over ``captions_val2017.json``: images in ascending image id (its
    ``sorted(coco.imgs.keys())``), the first 5,000 (all of val2017), and for each the *first*
    caption in the order the annotation file lists them (pycocotools' ``imgToAnns`` keeps file
    order; ``target_transform`` takes ``caption_list[0]``). Gap =
    ``‖mean x̂_I − mean x̂_T‖`` over those 5,000 pairs. Captions clipgeo refuses (empty, invalid
    UTF-8) cannot be chosen: the next one in file order is taken, and the dataset's rejects say so.
``karpathy-5k``
    The COCO 5k test split of Karpathy & Fei-Fei (``dataset_coco.json``, ``split = test``) with
    *all* captions of each image, as CLIP_benchmark's ``mscoco_captions`` retrieval (the
    convention of open_clip's ``docs/openclip_retrieval_results.csv``; its
    ``clip_benchmark/datasets/builder.py`` reads ``coco_test_karpathy.json`` of
    mehdidc/retrieval_annotations with torchvision's ``CocoCaptions``, whose caption count this
    code has not seen, so the references state none): text→image is a hit
    when the caption's own image is in the top k; image→text when any caption of the image is.
    That is clipgeo's retrieval definition (:mod:`clipgeo.retrieval`) on the full gallery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clipgeo.sources.base import SourceError, SourceRead

__all__ = ["Protocol", "PROTOCOLS", "protocol_names", "get_protocol", "select_first_captions"]


@dataclass(frozen=True)
class Protocol:
    """One protocol: what it selects and how the figure is defined (for tables and reports)."""

    name: str
    dataset: str            # the source it applies to
    split: str              # the split name a reference states (val2017, karpathy-test)
    n_images: int           # images it selects
    captions: str           # first | all
    image_order: str
    definition: str
    source: str             # repository and file the protocol is taken from


PROTOCOLS: dict[str, Protocol] = {
    "liang-gap": Protocol(
        name="liang-gap", dataset="coco", split="val2017", n_images=5000, captions="first",
        image_order="ascending COCO image id (torchvision CocoCaptions), the first 5,000",
        definition="gap = ||mean x_I/|x_I| - mean x_T/|x_T| || over the 5,000 (image, first caption) pairs",
        source="Weixin-Liang/Modality-Gap Figure_2_Cone_Effect/*/coco-extract.ipynb (CocoCaptions, caption_list[0])"),
    "karpathy-5k": Protocol(
        name="karpathy-5k", dataset="coco", split="karpathy-test", n_images=5000, captions="all",
        image_order="ascending COCO image id",
        definition="recall@k on the full 5k gallery; t2i hit: own image in top k; i2t hit: any own caption in top k",
        source="mlfoundations/open_clip docs/openclip_retrieval_results.csv (CLIP_benchmark mscoco_captions)"),
}


def protocol_names() -> tuple[str, ...]:
    """The known protocols' names.

    Examples
    --------
    >>> protocol_names()
    ('liang-gap', 'karpathy-5k')
    """
    return tuple(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; SourceError (naming the known ones) otherwise.

    Examples
    --------
    >>> get_protocol("liang-gap").n_images
    5000
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise SourceError(f"unknown protocol {name!r}: use one of {', '.join(PROTOCOLS)}") from None


def _annotation_order(annotations: Path) -> dict[str, int]:
    """sample_id (str(annotation id)) -> its position in the file's ``annotations`` list (first wins)."""
    with Path(annotations).open("rb") as fh:
        data = json.load(fh)
    order: dict[str, int] = {}
    for i, ann in enumerate(data.get("annotations") or []):
        if isinstance(ann, dict) and "id" in ann:
            order.setdefault(str(ann["id"]), i)
    return order


def select_first_captions(read: SourceRead, annotations: Path, *, n_images: int) -> SourceRead:
    """Keep the first ``n_images`` images of ``read`` (its order: ascending image id) and, of
    each, the one caption listed first in ``annotations`` (file order, as pycocotools).

    Parameters
    ----------
    read : SourceRead
        What :func:`clipgeo.sources.coco.read_coco` returned for ``annotations``.
    annotations : Path
        The captions file ``read`` came from.
    n_images : int
        Images to keep.

    Returns
    -------
    SourceRead
        One sample per kept image, in image order; rejects of images beyond the kept ones are
        dropped (out of scope, not lost). Captions not chosen are neither samples nor rejects.

    Examples
    --------
    >>> from clipgeo.sources.base import Sample
    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "captions.json"
    >>> _ = p.write_text(json.dumps({"images": [], "annotations": [{"id": 9}, {"id": 2}]}))
    >>> r = SourceRead([Sample("2", "1", "a.jpg", "later"), Sample("9", "1", "a.jpg", "first")], [])
    >>> [s.caption for s in select_first_captions(r, p, n_images=5000).samples]
    ['first']
    """
    order = _annotation_order(annotations)
    first: dict[str, object] = {}
    images: list[str] = []
    for s in read.samples:
        if s.image_id not in first:
            images.append(s.image_id)
            first[s.image_id] = s
        elif order.get(s.sample_id, 1 << 62) < order.get(first[s.image_id].sample_id, 1 << 62):  # type: ignore[attr-defined]
            first[s.image_id] = s
    keep = set(images[:n_images])
    samples = [first[i] for i in images[:n_images]]
    rejects = [r for r in read.rejects if r.image_id is None or r.image_id in keep]
    return SourceRead(samples, rejects)  # type: ignore[arg-type]


def check_protocol_inputs(name: str | None, *, karpathy_split_file: object, split: str | None,
                          limit_images: int | None) -> None:
    """SourceError when a protocol is asked for with inputs that would select another subset."""
    if name is None:
        return
    get_protocol(name)
    if limit_images is not None:
        raise SourceError(f"protocol {name} fixes the images it measures: drop limit_images ({limit_images})")
    if name == "liang-gap" and (karpathy_split_file or split):
        raise SourceError("protocol liang-gap reads captions_val2017.json whole (no Karpathy split): "
                          "drop karpathy_split_file / split")
    if name == "karpathy-5k":
        if not karpathy_split_file:
            raise SourceError("protocol karpathy-5k needs the Karpathy split file: pass karpathy_split_file "
                              "(dataset_coco.json) with captions_val2014.json and val2014/")
        if split not in (None, "test"):
            raise SourceError(f"protocol karpathy-5k is the Karpathy test split: drop split={split!r} (or pass 'test')")
