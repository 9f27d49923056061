"""Image–caption data sources: the procedural shapes dataset and an MS-COCO captions reader."""

from clipgeo.sources.base import Sample, SourceError
from clipgeo.sources.coco import read_coco_captions
from clipgeo.sources.shapes import ShapesSpec, generate_shapes, shapes_split

__all__ = [
    "Sample",
    "ShapesSpec",
    "SourceError",
    "generate_shapes",
    "read_coco_captions",
    "shapes_split",
]
