"""clipgeo: measure the geometry of CLIP-like embedding spaces.

The library is orchestration-free: pure, typed functions over arrays and tables.
Prefect flows that call it live in the top-level ``flows`` package.
"""

__version__ = "0.1.0"
