"""Image–caption data sources: the procedural shapes dataset, MS-COCO captions (with Karpathy
splits), image folders with a captions file, webdataset shards and imported embeddings.

Every reader of image–caption pairs returns a :class:`SourceRead` (samples + rejects);
imported embeddings stream :class:`~clipgeo.sources.embeddings.EmbeddingChunk` objects.
Images are opened with :func:`~clipgeo.sources.images.load_image`.
"""

from clipgeo.sources.base import Reject, Sample, SourceError, SourceRead, check_caption
from clipgeo.sources.coco import read_coco, read_coco_captions
from clipgeo.sources.embeddings import EmbeddingChunk, detect_normalized, iter_embedding_chunks
from clipgeo.sources.folder import read_folder
from clipgeo.sources.images import ImageRejected, check_image, load_image, read_image_bytes
from clipgeo.sources.karpathy import read_karpathy
from clipgeo.sources.shapes import ShapesSpec, generate_shapes, shapes_split
from clipgeo.sources.webdataset import expand_braces, read_webdataset

__all__ = [
    "EmbeddingChunk",
    "ImageRejected",
    "Reject",
    "Sample",
    "ShapesSpec",
    "SourceError",
    "SourceRead",
    "check_caption",
    "check_image",
    "detect_normalized",
    "expand_braces",
    "generate_shapes",
    "iter_embedding_chunks",
    "load_image",
    "read_coco",
    "read_coco_captions",
    "read_folder",
    "read_image_bytes",
    "read_karpathy",
    "read_webdataset",
    "shapes_split",
]
