"""What a measurement section is: its name, the tables it fills, the function that fills them
(:class:`Section`), and how it says it does not apply (:class:`Skip`).

The section modules (:mod:`clipgeo.stages.measure_geometry`, :mod:`clipgeo.stages.measure_topology`)
import these from here and :mod:`clipgeo.stages.measure` imports the section modules, so the
imports run one way: ``measure -> measure_geometry / measure_topology -> sections``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from clipgeo.stages.measure import RunData

__all__ = ["Rows", "Section", "Skip"]


class Skip(Exception):
    """Raised by a section that does not apply to a run; the message says why."""


Rows = Any  # polars DataFrame, pyarrow Table or a list of dicts


@dataclass(frozen=True)
class Section:
    name: str
    tables: tuple[str, ...]
    fn: Callable[[RunData], Mapping[str, Rows]]
