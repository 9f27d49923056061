"""Topological measurements of a joint embedding space ("Topological Perspectives on Optimal
Multimodal Embedding Spaces": Tables I–II, Figs. 1–8 and 10–17).

Pure functions over numpy arrays; each returns named floats or Polars frames whose rows a caller
writes as DuckDB tables. Definitions are in each module's docstring:

* :mod:`.cosines` — cosine distributions (Fig. 3)
* :mod:`.nearest` — nearest reference sample, exact and LanceDB (Fig. 1)
* :mod:`.umap_layout` — UMAP layouts, the hyperparameter grid, paired lines (Figs. 4–8, 16–17)
* :mod:`.mixing` — share of other-modality neighbours, original space and layout
* :mod:`.spectra` — singular-value spectra, collapse point, effective rank (Figs. 10–12)
* :mod:`.clusters` — HDBSCAN clusters, local dimension, per-cluster top-1 and their
  correlation (Figs. 13–15)
* :mod:`.separability_matrix` — train × eval separability across datasets (Table I, Fig. 2)

Names are imported lazily (module ``__getattr__``), and heavy dependencies (umap, numba,
hdbscan, lancedb) inside the functions that need them, so importing this package stays cheap.
"""

import importlib
from typing import Any

#: public name -> module (imported when the name is first used: umap, numba, hdbscan stay unloaded).
#: ``spectra`` and ``umap_layout`` are not here: they are also the names of their modules, which
#: an import of the module binds on this package; use ``clipgeo.spectra`` / ``clipgeo.umap_layout``.
_LAZY = {
    "build_reference_index": "clipgeo.topology.nearest",
    "cluster_local_dimension": "clipgeo.topology.clusters",
    "cluster_points": "clipgeo.topology.clusters",
    "collapse_point": "clipgeo.topology.spectra",
    "cosine_distributions": "clipgeo.topology.cosines",
    "covariance_spectrum": "clipgeo.topology.spectra",
    "effective_rank": "clipgeo.topology.spectra",
    "first_pairs": "clipgeo.topology.umap_layout",
    "hdbscan_labels": "clipgeo.topology.clusters",
    "knn_cosine": "clipgeo.topology.mixing",
    "knn_euclidean": "clipgeo.topology.mixing",
    "lancedb_nearest_reference": "clipgeo.topology.nearest",
    "local_dimension_auc": "clipgeo.topology.clusters",
    "mixing_share": "clipgeo.topology.mixing",
    "modality_mixing": "clipgeo.topology.mixing",
    "nearest_reference": "clipgeo.topology.nearest",
    "paired_lines": "clipgeo.topology.umap_layout",
    "reference_table": "clipgeo.topology.nearest",
    "separability_matrix": "clipgeo.topology.separability_matrix",
    "umap_grid": "clipgeo.topology.umap_layout",
}

__all__ = [
    "build_reference_index",
    "cluster_local_dimension",
    "cluster_points",
    "collapse_point",
    "cosine_distributions",
    "effective_rank",
    "first_pairs",
    "hdbscan_labels",
    "knn_cosine",
    "knn_euclidean",
    "lancedb_nearest_reference",
    "local_dimension_auc",
    "mixing_share",
    "modality_mixing",
    "nearest_reference",
    "paired_lines",
    "reference_table",
    "separability_matrix",
    "covariance_spectrum",
    "umap_grid",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
