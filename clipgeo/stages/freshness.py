"""When measuring a run re-runs: one rule, for every path that measures (the Prefect task, the
Dask flow, :func:`clipgeo.import_arrays` + :func:`clipgeo.measure` from a notebook).

Under the run's lock (``run-<run id>``, :func:`clipgeo.store.locks.claim`), a stored
measurement is reused when ``stage_state['measure:<run id>']`` equals what the measurement would
be made from now (:func:`measure_inputs`):

============================  ===============================================================
key                           meaning
============================  ===============================================================
``lance_version``             the version of the run's Lance table (new vectors: re-measure)
``reference_run``             the training-like run the reference sections use, and its
``reference_lance_version``   table's version
``analysis_version``          :data:`clipgeo.core.config.ANALYSIS_VERSION` (new definitions)
``umap_grid``                 the grid was fitted; a stored grid also serves a request without one
``sections``                  the sections measured (absent = all); a stored superset serves a
                              request for fewer
============================  ===============================================================

and the run's status is ``measured``. Otherwise (or with ``force``) the run is measured, after
its vectors table is rewritten in the current storage format when it is older
(:func:`clipgeo.store.vectors.migrate_run`), and the new state is written in the same lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from clipgeo.core.config import ANALYSIS_VERSION, DataHome, blas_threads
from clipgeo.store import catalog, locks

log = logging.getLogger(__name__)

__all__ = ["measure_if_stale", "measure_inputs", "measure_state", "stale_reason"]


def measure_inputs(home: DataHome, run_id: str, umap_grid: bool = False, reference_run_id: str | None = None,
                   sections: Sequence[str] | None = None) -> dict[str, Any]:
    """What a run's measurement would be made from now (compared with the stored state).

    Parameters
    ----------
    home : DataHome
        The data home.
    run_id : str
        The run.
    umap_grid : bool
        Whether the UMAP hyperparameter grid is asked for.
    reference_run_id : str, optional
        The training-like run; found by :func:`clipgeo.stages.measure.find_reference_run` when None.
    sections : sequence of str, optional
        The sections asked for (None: all).

    Returns
    -------
    dict
        The keys of the table in this module's docstring (``sections`` only when given).
    """
    from clipgeo.stages.measure import find_reference_run
    from clipgeo.store import vectors

    ref = reference_run_id or find_reference_run(home, run_id)
    out = {"lance_version": vectors.table_version(home, run_id), "reference_run": ref,
           "reference_lance_version": vectors.table_version(home, ref) if ref else None,
           "umap_grid": bool(umap_grid), "analysis_version": ANALYSIS_VERSION}
    if sections is not None:
        out["sections"] = sorted(set(sections))
    return out


def measure_state(home: DataHome, run_id: str) -> tuple[str | None, dict | None]:
    """The run's status in the catalog and the inputs its stored measurement was made from."""
    with catalog.session(home) as con:
        found = catalog.execute(con, "SELECT status FROM runs WHERE run_id = ?", [run_id])
        return (found[0][0] if found else None), catalog.stage_state(con, f"measure:{run_id}")


_OPTIONS = ("umap_grid", "sections")


def stale_reason(status: str | None, state: dict | None, inputs: dict) -> str | None:
    """Why the stored measurement cannot serve ``inputs`` (None when it can).

    Parameters
    ----------
    status : str or None
        The run's status (``measured`` when a measurement is stored).
    state : dict or None
        The stored ``stage_state`` of the run's measurement.
    inputs : dict
        :func:`measure_inputs` now.

    Returns
    -------
    str or None
        A sentence naming the first difference, or None.

    Examples
    --------
    >>> now = {"lance_version": 3, "analysis_version": "5", "umap_grid": False}
    >>> stale_reason("measured", dict(now), now) is None
    True
    >>> stale_reason("measured", {**now, "lance_version": 2}, now)
    'lance_version was 2, is 3'
    >>> stale_reason("measured", {**now, "sections": ["retrieval"]}, {**now, "sections": ["modality_gap"]})
    "sections ['modality_gap'] were not measured"
    """
    if status != "measured":
        return f"the run is {status or 'not in the catalog'}, not measured"
    if state is None:
        return "no stored measurement state"
    changed = _changed(state, inputs)
    if changed:
        return f"{changed} was {state.get(changed)!r}, is {inputs.get(changed)!r}"
    if inputs.get("umap_grid") and not state.get("umap_grid"):
        return "the UMAP grid was not fitted"
    if "sections" in state:     # a measurement of only some sections serves only those
        missing = sorted(set(inputs.get("sections") or ["<all>"]) - set(state["sections"]))
        if missing:
            return "all sections were not measured" if missing == ["<all>"] else f"sections {missing} were not measured"
    return None


def _changed(state: dict, inputs: dict) -> str | None:
    """The first input (other than the options) whose stored value differs, or None."""
    return next((k for k in sorted(set(state) | set(inputs)) if k not in _OPTIONS and state.get(k) != inputs.get(k)),
                None)


Runner = Callable[..., Any]


def measure_if_stale(home: DataHome | str | None, run_id: str, *, force: bool = False, umap_grid: bool = False,
                     reference_run_id: str | None = None, sections: Sequence[str] | None = None,
                     on_wait: Callable[[dict], None] | None = None, runner: Runner | None = None,
                     **measure_kw: Any) -> tuple[Any, str]:
    """Measure a run unless its stored measurement was made from the same inputs (the one rule).

    Parameters
    ----------
    home : DataHome, str or None
        The data home (:meth:`DataHome.resolve`).
    run_id : str
        An embedded (or measured) run.
    force : bool
        Measure even when the stored measurement is current.
    umap_grid : bool
        Also fit the UMAP hyperparameter grid.
    reference_run_id : str, optional
        The training-like run (default: found in the catalog).
    sections : sequence of str, optional
        Only these sections (default: all).
    on_wait : callable, optional
        Called with the holder's details when another process holds the run's lock.
    runner : callable, optional
        What measures: called as ``runner(home, run_id, umap_grid=..., reference_run_id=...,
        sections=..., **measure_kw)`` and returning a
        :class:`~clipgeo.stages.measure.MeasureResult`; default
        :func:`clipgeo.stages.measure.measure_run` (the Dask flow passes one that computes the
        streamed partials on its workers first).
    **measure_kw
        Passed to ``runner``.

    Returns
    -------
    result : MeasureResult or None
        None when the stored measurement was reused.
    why : str
        Why it was reused, or why it was measured.

    Examples
    --------
    >>> import numpy as np, tempfile, clipgeo
    >>> rng = np.random.default_rng(0)
    >>> home = tempfile.mkdtemp()
    >>> run = clipgeo.import_arrays(home, rng.normal(size=(40, 8)), rng.normal(size=(40, 8)), dataset="demo")
    >>> res, why = measure_if_stale(home, run, sections=["modality_gap"])
    >>> res.sections
    {'modality_gap': 'ok'}
    >>> measure_if_stale(home, run, sections=["modality_gap"])[0] is None
    True
    >>> import shutil; shutil.rmtree(home)
    """
    from threadpoolctl import threadpool_limits

    from clipgeo.store import vectors

    h = DataHome.resolve(home)
    if runner is None:
        from clipgeo.stages.measure import measure_run as runner
    with locks.claim(h, f"run-{run_id}", on_wait=on_wait):
        try:
            migrated = vectors.migrate_run(h, run_id)   # a format 1 table (before issue 13): stored once, in its precision
        except KeyError:                                # no vectors yet: the runner says what is missing
            migrated = False
        if migrated:
            log.info("run %s: vectors table rewritten in storage format 2 (each vector once, in its source "
                     "precision, with its norm)", run_id)
        inputs = measure_inputs(h, run_id, umap_grid, reference_run_id, sections)
        status, state = measure_state(h, run_id)
        why = "forced" if force else stale_reason(status, state, inputs)
        if why is None:
            return None, (f"run {run_id} was measured from Lance version {inputs['lance_version']} by analysis "
                          f"version {ANALYSIS_VERSION} with these options: not re-measured")
        with threadpool_limits(blas_threads()):
            result = runner(h, run_id, umap_grid=umap_grid, reference_run_id=reference_run_id, sections=sections,
                            **measure_kw)
        if sections is not None and status == "measured" and state is not None and _changed(state, inputs) is None:
            # the sections measured earlier from the same inputs still stand beside these
            if "sections" in state:
                inputs["sections"] = sorted(set(inputs["sections"]) | set(state["sections"]))
            else:
                del inputs["sections"]
        with catalog.session(h) as con:
            catalog.set_stage_state(con, f"measure:{run_id}", inputs)
    return result, f"measured ({why})"
