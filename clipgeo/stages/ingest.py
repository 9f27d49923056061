"""Source stage: read an image–caption source and register it in the catalog."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from clipgeo.core.config import DataHome
from clipgeo.sources.base import Reject, Sample, SourceRead, settle_drops
from clipgeo.sources.coco import read_coco, read_coco_captions
from clipgeo.sources.shapes import ShapesSpec, generate_shapes, shapes_split
from clipgeo.store import catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: str
    source: str
    split: str | None
    n_images: int
    n_samples: int
    n_rejects: int = 0


def register_dataset(
    home: DataHome,
    *,
    dataset_id: str,
    source: str,
    split: str | None,
    location: str,
    params: dict,
    samples: Sequence[Sample],
    rejects: Sequence[Reject] = (),
    protocol: str | None = None,
) -> DatasetInfo:
    """Write a dataset row, its samples and its dataset-level rejects, replacing any earlier
    version, in one transaction.

    ``rejects`` are the bad inputs found reading the source and checking its images, one row
    each (``run_id`` NULL); their ``n_images`` / ``n_captions`` are settled here when the
    caller has not (:func:`~clipgeo.sources.base.settle_drops`). Per-run rejects (stage
    ``embed``) are left alone.
    """
    rejects = settle_drops(samples, rejects)
    if not samples:
        reasons = sorted({r.reason for r in rejects})[:5]
        raise ValueError(
            f"dataset {dataset_id} ({location}) has no usable samples"
            + (f": {len(rejects)} rejected ({'; '.join(reasons)})" if rejects else "")
        )
    rows = pa.table(
        {
            "dataset_id": [dataset_id] * len(samples),
            "sample_id": [s.sample_id for s in samples],
            "image_id": [s.image_id for s in samples],
            "image_ref": [s.image_ref for s in samples],
            "caption": [s.caption for s in samples],
        }
    )
    n_images = len({s.image_id for s in samples})
    with catalog.session(home) as con, catalog.transaction(con):
        catalog.delete_insert(
            con,
            "datasets",
            {"dataset_id": dataset_id},
            [
                {
                    "dataset_id": dataset_id,
                    "source": source,
                    "split": split,
                    "location": location,
                    "params": json.dumps(params, sort_keys=True, default=str),
                    "n_images": n_images,
                    "n_samples": len(samples),
                    "n_rejects": len(rejects),
                    "protocol": protocol,
                }
            ],
        )
        catalog.delete_insert(con, "samples", {"dataset_id": dataset_id}, rows)
        catalog.execute(con, "DELETE FROM rejects WHERE dataset_id = ? AND run_id IS NULL", [dataset_id])
        catalog.insert_rejects(con, [
            {"dataset_id": dataset_id, "item_ref": r.item_ref, "stage": r.stage, "reason": r.reason,
             "sample_id": r.sample_id, "image_id": r.image_id, "n_images": r.n_images, "n_captions": r.n_captions,
             "detail": r.detail}
            for r in rejects
        ])
    return DatasetInfo(dataset_id, source, split, n_images, len(samples), len(rejects))


def _digest(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:8]


#: Images checked at once while ingesting (Pillow decodes outside the GIL).
CHECK_WORKERS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def drop_bad_images(read: SourceRead, *, workers: int = CHECK_WORKERS, chunk: int = 4096) -> SourceRead:
    """Open every distinct image of ``read`` once (fully decoded, as the embed stage will) and
    move the samples of an image that cannot be used into the rejects.

    A bad image file is **one** reject (``item_ref`` = its image ref, stage ``read`` or
    ``decode`` and the reason from :func:`clipgeo.sources.images.load_image`, ``sample_id``
    None, ``image_id`` its first image id), whose ``n_images`` / ``n_captions`` say how many
    image ids and captions it takes with it; its captions get no rows of their own. The
    rejects come back settled (:func:`~clipgeo.sources.base.settle_drops`). Sample order is kept.
    """
    from clipgeo.sources.images import ImageRejected, load_image

    def verdict(ref: str) -> tuple[str, str] | None:
        try:
            load_image(ref)
        except ImageRejected as exc:
            return exc.stage, exc.reason
        except Exception as exc:  # noqa: BLE001 - bad input never stops the ingest
            return "decode", f"corrupt image: {type(exc).__name__}"
        return None

    refs = list(dict.fromkeys(s.image_ref for s in read.samples))
    bad: dict[str, tuple[str, str]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(refs), chunk):
            part = refs[start:start + chunk]
            bad.update((ref, v) for ref, v in zip(part, pool.map(verdict, part)) if v is not None)
    if not bad:
        return SourceRead(list(read.samples), settle_drops(read.samples, read.rejects))
    kept: list[Sample] = []
    lost: dict[str, list[Sample]] = {}
    for s in read.samples:
        (lost.setdefault(s.image_ref, []) if s.image_ref in bad else kept).append(s)
    image_rejects = []
    for ref, samples in lost.items():
        ids = list(dict.fromkeys(s.image_id for s in samples))
        stage, reason = bad[ref]
        image_rejects.append(Reject(ref, stage, reason, None, ids[0],  # type: ignore[arg-type]
                                    n_images=len(ids), n_captions=len(samples)))
    covered = {s.image_id for samples in lost.values() for s in samples}
    log.info("%d of %d images refused (%d captions with them)", len(lost), len(refs),
             sum(len(v) for v in lost.values()))
    return SourceRead(kept, settle_drops(kept, [*read.rejects, *image_rejects], covered=covered))


def register_read(home: DataHome, read: SourceRead, *, dataset_id: str, source: str, split: str | None,
                  location: str, params: dict, check_images: bool = True, protocol: str | None = None) -> DatasetInfo:
    """Register what a source reader returned (samples and rejects), after checking its images
    (:func:`drop_bad_images`) unless ``check_images`` is false."""
    if check_images:
        read = drop_bad_images(read)
    return register_dataset(home, dataset_id=dataset_id, source=source, split=split, location=location,
                            params=params, samples=read.samples, rejects=read.rejects, protocol=protocol)


def ingest_shapes(home: DataHome, spec: ShapesSpec, *, progress: bool = True) -> dict[str, DatasetInfo]:
    """Generate (or reuse) the ``shapes`` dataset and register its train and val splits."""
    folder = generate_shapes(home.datasets, spec, progress=progress)
    out = {}
    for split in ("train", "val"):
        ann, image_dir = shapes_split(folder, split)
        samples = read_coco_captions(ann, image_dir)
        out[split] = register_dataset(
            home,
            dataset_id=f"{spec.dataset_id()}:{split}",
            source="shapes",
            split=split,
            location=str(ann),
            params=asdict(spec),
            samples=samples,
        )
    return out


def ingest_coco(
    home: DataHome,
    annotations: Path,
    image_dir: Path,
    *,
    name: str | None = None,
    karpathy_split_file: Path | None = None,
    split: str | None = None,
    limit_images: int | None = None,
    check_images: bool = True,
    protocol: str | None = None,
) -> DatasetInfo:
    """Register an MS-COCO captions file (``captions_{split}{year}.json``) and its image folder,
    optionally restricted to a Karpathy split (``split`` = train / val / test / restval).

    ``protocol`` (:mod:`clipgeo.sources.protocols`): select a paper's exact subset instead —
    ``liang-gap`` (the first 5,000 images by id, each with its first caption in file order) or
    ``karpathy-5k`` (the Karpathy test split with all captions; needs ``karpathy_split_file``).

    Every image is opened once here (:func:`drop_bad_images`; ``check_images=False`` skips it,
    leaving bad files to each run's embedding), so a bad file is one dataset-level reject."""
    from clipgeo.sources import protocols

    protocols.check_protocol_inputs(protocol, karpathy_split_file=karpathy_split_file, split=split,
                                    limit_images=limit_images)
    if protocol == "karpathy-5k":
        split = "test"
    annotations, image_dir = Path(annotations).resolve(), Path(image_dir).resolve()
    read = read_coco(annotations, image_dir, karpathy_split_file=karpathy_split_file, split=split,
                     limit_images=limit_images)
    if protocol == "liang-gap":
        read = protocols.select_first_captions(read, annotations, n_images=protocols.get_protocol(protocol).n_images)
    split_name = split or annotations.stem.removeprefix("captions_") or None
    key = (annotations, image_dir, karpathy_split_file, split, limit_images) + ((protocol,) if protocol else ())
    return register_read(
        home, read,
        dataset_id=f"{name or 'coco'}-{_digest(*key)}:{split_name}",
        source="coco", split=split_name, location=str(annotations), check_images=check_images, protocol=protocol,
        params={"annotations": str(annotations), "image_dir": str(image_dir), "limit_images": limit_images,
                "karpathy_split_file": str(karpathy_split_file) if karpathy_split_file else None, "split": split,
                **({"protocol": protocol} if protocol else {})},
    )


def ingest_folder(home: DataHome, image_root: Path, captions_file: Path, *, name: str | None = None,
                  check_images: bool = True) -> DatasetInfo:
    """Register an image folder with a captions file (csv, jsonl or parquet)."""
    from clipgeo.sources.folder import read_folder

    image_root, captions_file = Path(image_root).resolve(), Path(captions_file).resolve()
    read = read_folder(image_root, captions_file)
    return register_read(
        home, read, dataset_id=f"{name or 'folder'}-{_digest(image_root, captions_file)}", source="folder", split=None,
        check_images=check_images,
        location=str(captions_file), params={"image_root": str(image_root), "captions_file": str(captions_file)},
    )


def ingest_webdataset(home: DataHome, urls: str, *, name: str | None = None, check_images: bool = True) -> DatasetInfo:
    """Register webdataset shards as img2dataset writes them (brace patterns allowed)."""
    from clipgeo.sources.webdataset import read_webdataset

    read = read_webdataset(urls)
    return register_read(home, read, dataset_id=f"{name or 'wds'}-{_digest(urls)}", source="webdataset", split=None,
                         location=urls, params={"urls": urls}, check_images=check_images)


def load_samples(home: DataHome, dataset_id: str) -> list[Sample]:
    """The samples of a registered dataset, ordered by sample_id."""
    with catalog.session(home, read_only=False) as con:
        rows = catalog.execute(con, 
            "SELECT sample_id, image_id, image_ref, caption FROM samples WHERE dataset_id = ? ORDER BY sample_id",
            [dataset_id],
        )
    if not rows:
        raise KeyError(f"dataset {dataset_id!r} is not in the catalog: ingest it first (see `clipgeo runs`)")
    return [Sample(*r) for r in rows]
