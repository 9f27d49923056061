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

Heavy dependencies (umap, hdbscan, lancedb) are imported lazily inside the functions that need
them, so importing this package stays cheap.
"""

from clipgeo.topology.clusters import (
    cluster_local_dimension,
    cluster_points,
    hdbscan_labels,
    local_dimension_auc,
    subsample_eigenvalues,
)
from clipgeo.topology.cosines import cosine_distributions
from clipgeo.topology.mixing import knn_cosine, knn_euclidean, mixing_share, modality_mixing
from clipgeo.topology.nearest import (
    build_reference_index,
    lancedb_nearest_reference,
    nearest_reference,
    reference_table,
)
from clipgeo.topology.separability_matrix import separability_matrix
from clipgeo.topology.spectra import (
    collapse_point,
    effective_rank,
    covariance_spectrum,
    spectra,
)
from clipgeo.topology.umap_layout import first_pairs, paired_lines, umap_grid, umap_layout

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
    "subsample_eigenvalues",
    "separability_matrix",
    "covariance_spectrum",
    "spectra",
    "umap_grid",
    "umap_layout",
]
