"""Source stage: read an image–caption source and register it in the catalog."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from clipgeo.config import DataHome
from clipgeo.sources.base import Reject, Sample, SourceRead
from clipgeo.sources.coco import read_coco, read_coco_captions
from clipgeo.sources.shapes import ShapesSpec, generate_shapes, shapes_split
from clipgeo.store import catalog


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
) -> DatasetInfo:
    """Write a dataset row, its samples and its source-level rejects, replacing any earlier
    version, in one transaction."""
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
                }
            ],
        )
        catalog.delete_insert(con, "samples", {"dataset_id": dataset_id}, rows)
        catalog.execute(con, "DELETE FROM rejects WHERE dataset_id = ? AND run_id IS NULL", [dataset_id])
        catalog.insert(con, "rejects", [
            {"dataset_id": dataset_id, "item_ref": r.item_ref, "stage": r.stage, "reason": r.reason, "sample_id": r.sample_id}
            for r in rejects
        ])
    return DatasetInfo(dataset_id, source, split, n_images, len(samples), len(rejects))


def _digest(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:8]


def register_read(home: DataHome, read: SourceRead, *, dataset_id: str, source: str, split: str | None,
                  location: str, params: dict) -> DatasetInfo:
    """Register what a source reader returned (samples and rejects)."""
    return register_dataset(home, dataset_id=dataset_id, source=source, split=split, location=location,
                            params=params, samples=read.samples, rejects=read.rejects)


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
) -> DatasetInfo:
    """Register an MS-COCO captions file (``captions_{split}{year}.json``) and its image folder,
    optionally restricted to a Karpathy split (``split`` = train / val / test / restval)."""
    annotations, image_dir = Path(annotations).resolve(), Path(image_dir).resolve()
    read = read_coco(annotations, image_dir, karpathy_split_file=karpathy_split_file, split=split,
                     limit_images=limit_images)
    split_name = split or annotations.stem.removeprefix("captions_") or None
    return register_read(
        home, read,
        dataset_id=f"{name or 'coco'}-{_digest(annotations, image_dir, karpathy_split_file, split, limit_images)}:{split_name}",
        source="coco", split=split_name, location=str(annotations),
        params={"annotations": str(annotations), "image_dir": str(image_dir), "limit_images": limit_images,
                "karpathy_split_file": str(karpathy_split_file) if karpathy_split_file else None, "split": split},
    )


def ingest_folder(home: DataHome, image_root: Path, captions_file: Path, *, name: str | None = None) -> DatasetInfo:
    """Register an image folder with a captions file (csv, jsonl or parquet)."""
    from clipgeo.sources.folder import read_folder

    image_root, captions_file = Path(image_root).resolve(), Path(captions_file).resolve()
    read = read_folder(image_root, captions_file)
    return register_read(
        home, read, dataset_id=f"{name or 'folder'}-{_digest(image_root, captions_file)}", source="folder", split=None,
        location=str(captions_file), params={"image_root": str(image_root), "captions_file": str(captions_file)},
    )


def ingest_webdataset(home: DataHome, urls: str, *, name: str | None = None) -> DatasetInfo:
    """Register webdataset shards as img2dataset writes them (brace patterns allowed)."""
    from clipgeo.sources.webdataset import read_webdataset

    read = read_webdataset(urls)
    return register_read(home, read, dataset_id=f"{name or 'wds'}-{_digest(urls)}", source="webdataset", split=None,
                         location=urls, params={"urls": urls})


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
