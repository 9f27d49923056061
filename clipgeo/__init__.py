"""clipgeo: measure the geometry of CLIP-like embedding spaces.

One import for notebooks::

    import clipgeo
    m = clipgeo.measure(image_vectors, text_vectors)       # the whole suite on any model's arrays
    m.headline                                            # one row: the v_headline figures
    m.tables["modality_gap"]                              # any catalog table, that run's rows
    m.report("run.html")                                  # the pipeline's offline HTML page

    clipgeo.modality_gap(img, txt)                        # or one measurement at a time

The layers, bottom up (each imports only those below it): ``core`` (settings, array checks,
float64 accumulators, memory) → ``sources`` (datasets) and ``models`` (open_clip / CLOOB
loading, tiny trainer) → ``embedding`` (images and captions into raw vectors) → ``store``
(LanceDB vectors, DuckDB catalog) → ``geometry``, ``topology``, ``retrieval`` (the
measurements, pure functions over arrays) → ``streaming`` (the streamed pass over a stored run)
→ ``stages`` (what each pipeline stage does to a data home) → this face. Prefect flows
(``flows/``) and the reports (``dashboards/``) sit on top; nothing here imports Prefect.

Everything is imported lazily: ``import clipgeo`` loads no numba, torch, lancedb or Prefect;
each name loads its module when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    # the whole suite on arrays, and arrays into a data home
    "measure": ("clipgeo.api", "measure"),
    "Measurement": ("clipgeo.api", "Measurement"),
    "import_arrays": ("clipgeo.api", "import_arrays"),
    "as_vectors": ("clipgeo.api", "as_vectors"),
    "run_tables": ("clipgeo.api", "run_tables"),
    "default_sections": ("clipgeo.api", "default_sections"),
    "measure_if_stale": ("clipgeo.stages.freshness", "measure_if_stale"),
    "DataHome": ("clipgeo.core.config", "DataHome"),
    # the double-ellipsoid geometry (raw vectors) and the modality gap
    "modality_gap": ("clipgeo.geometry.gap", "modality_gap"),
    "double_ellipsoid": ("clipgeo.geometry.ellipsoid", "double_ellipsoid_suite"),
    "conformity": ("clipgeo.geometry.conformity", "conformity"),
    "conformity_fit": ("clipgeo.geometry.conformity", "conformity_fit"),
    "origin_shift": ("clipgeo.geometry.shift", "origin_shift"),
    "separability": ("clipgeo.geometry.separability", "linear_separability"),
    # topology of the joint space
    "spectra": ("clipgeo.topology.spectra", "spectra"),
    "covariance_spectrum": ("clipgeo.topology.spectra", "covariance_spectrum"),
    "collapse_point": ("clipgeo.topology.spectra", "collapse_point"),
    "effective_rank": ("clipgeo.core.stats", "effective_rank"),
    "cosine_distributions": ("clipgeo.topology.cosines", "cosine_distributions"),
    "modality_mixing": ("clipgeo.topology.mixing", "modality_mixing"),
    "nearest_reference": ("clipgeo.topology.nearest", "nearest_reference"),
    "umap_layout": ("clipgeo.topology.umap_layout", "umap_layout"),
    "paired_lines": ("clipgeo.topology.umap_layout", "paired_lines"),
    "clusters": ("clipgeo.topology.clusters", "cluster_points"),
    "cluster_local_dimension": ("clipgeo.topology.clusters", "cluster_local_dimension"),
    # cross-modal retrieval
    "retrieval_ranks": ("clipgeo.retrieval", "retrieval_ranks"),
    "retrieval_metrics": ("clipgeo.retrieval", "retrieval_metrics"),
    "recall_at_k": ("clipgeo.retrieval", "recall_at_k"),
    # ground floor
    "l2_normalize": ("clipgeo.core.stats", "l2_normalize"),
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # pragma: no cover
    from clipgeo.api import (Measurement, as_vectors, default_sections, import_arrays, measure,
                             run_tables)
    from clipgeo.core.config import DataHome
    from clipgeo.core.stats import effective_rank, l2_normalize
    from clipgeo.geometry.conformity import conformity, conformity_fit
    from clipgeo.geometry.ellipsoid import double_ellipsoid_suite as double_ellipsoid
    from clipgeo.geometry.gap import modality_gap
    from clipgeo.geometry.separability import linear_separability as separability
    from clipgeo.geometry.shift import origin_shift
    from clipgeo.retrieval import recall_at_k, retrieval_metrics, retrieval_ranks
    from clipgeo.stages.freshness import measure_if_stale
    from clipgeo.topology.clusters import cluster_local_dimension
    from clipgeo.topology.clusters import cluster_points as clusters
    from clipgeo.topology.cosines import cosine_distributions
    from clipgeo.topology.mixing import modality_mixing
    from clipgeo.topology.nearest import nearest_reference
    from clipgeo.topology.spectra import collapse_point, covariance_spectrum, spectra
    from clipgeo.topology.umap_layout import paired_lines, umap_layout


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'clipgeo' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value          # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
