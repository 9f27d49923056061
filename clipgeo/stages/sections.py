"""What a measurement section is: its name, the tables it fills, the function that fills them
(:class:`Section`), what that function receives (:class:`RunData`), and how it says it does
not apply (:class:`Skip`).

The section modules (:mod:`clipgeo.stages.measure_geometry`, :mod:`clipgeo.stages.measure_topology`,
:mod:`clipgeo.stages.measure_estimators`) import these from here and :mod:`clipgeo.stages.measure`
imports the section modules, so the imports run one way:
``measure -> measure_estimators -> measure_topology -> sections`` (and ``measure_geometry -> sections``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipgeo.core.arrays import normalize_rows

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from clipgeo.store import vectors
    from clipgeo.streaming.reader import LanceRun, SampleInfo

__all__ = ["Rows", "RunData", "Section", "Skip"]


class Skip(Exception):
    """Raised by a section that does not apply to a run; the message says why."""


Rows = Any  # polars DataFrame, pyarrow Table or a list of dicts


@dataclass(frozen=True)
class Section:
    name: str
    tables: tuple[str, ...]
    fn: Callable[[RunData], Mapping[str, Rows]]


@dataclass
class RunData:
    """What every section receives: the run's streamed table, an in-memory sample, and the
    derived arrays they share.

    ``rv`` is the hash sample (all of the run when it has at most
    :data:`clipgeo.stages.measure.SAMPLE_IMAGES` images; its
    images are in hash-key order, so "the first n pairs" of it are the hash sample of n);
    ``sample`` says what it is. ``stream`` reads every vector in batches (None for a run given
    as arrays only).
    """

    run_id: str
    dataset_id: str
    rv: vectors.RunVectors
    normalized_only: bool
    logit_scale: float | None
    seed: int = 0
    reference: "RunData | None" = None   # the same model on the training-like dataset
    options: dict = field(default_factory=dict)  # e.g. umap_grid=True
    cache: dict = field(default_factory=dict)    # results one section hands to a later one
    stream: LanceRun | None = None
    sample: SampleInfo | None = None

    @cached_property
    def img_n(self) -> np.ndarray:
        return normalize_rows(self.rv.images, "images", np.float32)

    @cached_property
    def txt_n(self) -> np.ndarray:
        return normalize_rows(self.rv.texts, "texts", np.float32)

    @cached_property
    def idx(self) -> np.ndarray:
        return self.rv.text_image_index

    @cached_property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Each image with its first caption: row indices (image rows, text rows)."""
        pi, pt, _ = self.rv.first_pairs()
        return pi, pt

    def moments(self) -> dict:
        """Streamed moments of every vector (raw and normalised, per modality), computed once:
        :func:`clipgeo.streaming.partials.moment_partial`."""
        if "moments" not in self.cache and self.options.get("moments") is not None:
            self.cache["moments"] = self.options["moments"]   # merged from per-fragment partials
        if "moments" not in self.cache:
            from clipgeo.streaming.partials import moment_partial

            self.cache["moments"] = moment_partial(self.stream.uri, batch_rows=self.stream.batch_rows,
                                                   normalized_only=self.normalized_only)
        return self.cache["moments"]

    def per_sample_parts(self) -> tuple[list[str], dict]:
        """The per-sample pass over every vector, as Parquet parts in table order, and the plans
        (from the merged moments) they were made with: given in ``options["per_sample_parts"]``
        (written elsewhere, e.g. by Dask workers: ``flows/measure_dist.py``) or written now into
        ``options["work_dir"]`` (:func:`clipgeo.streaming.partials.per_sample_partial`), computed once."""
        if "per_sample" not in self.cache:
            from clipgeo.streaming.partials import per_sample_partial, per_sample_plans

            plans = per_sample_plans(self.moments())
            parts = self.options.get("per_sample_parts")
            if parts is None:
                out = Path(self.options["work_dir"]) / "per_sample-00000.parquet"
                per_sample_partial(self.stream.uri, plans, str(out), batch_rows=self.stream.batch_rows)
                parts = [str(out)]
            self.cache["per_sample"] = (list(parts), plans)
        return self.cache["per_sample"]

    def require_raw(self, what: str) -> None:
        if self.normalized_only:
            raise Skip(f"{what} needs raw (pre-normalisation) vectors; this run only has L2-normalised ones")
