"""Source stage: read an image–caption source and register it in the catalog."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from clipgeo.config import DataHome
from clipgeo.sources.base import Sample
from clipgeo.sources.coco import read_coco_captions
from clipgeo.sources.shapes import ShapesSpec, generate_shapes, shapes_split
from clipgeo.store import catalog


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: str
    source: str
    split: str | None
    n_images: int
    n_samples: int


def register_dataset(
    home: DataHome,
    *,
    dataset_id: str,
    source: str,
    split: str | None,
    location: str,
    params: dict,
    samples: Sequence[Sample],
) -> DatasetInfo:
    """Write a dataset row and its samples, replacing any earlier version, in one transaction."""
    if not samples:
        raise ValueError(f"dataset {dataset_id} ({location}) has no samples: nothing to embed")
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
                }
            ],
        )
        catalog.delete_insert(con, "samples", {"dataset_id": dataset_id}, rows)
    return DatasetInfo(dataset_id, source, split, n_images, len(samples))


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
    home: DataHome, annotations: Path, image_dir: Path, *, name: str | None = None, limit_images: int | None = None
) -> DatasetInfo:
    """Register an MS-COCO captions file (``captions_{split}{year}.json``) and its image folder."""
    annotations, image_dir = Path(annotations).resolve(), Path(image_dir).resolve()
    samples = read_coco_captions(annotations, image_dir, limit_images=limit_images)
    split = annotations.stem.removeprefix("captions_") or None
    digest = hashlib.sha1(f"{annotations}|{image_dir}|{limit_images}".encode()).hexdigest()[:8]
    dataset_id = f"{name or 'coco'}-{digest}:{split}"
    return register_dataset(
        home,
        dataset_id=dataset_id,
        source="coco",
        split=split,
        location=str(annotations),
        params={"annotations": str(annotations), "image_dir": str(image_dir), "limit_images": limit_images},
        samples=samples,
    )


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
