"""The library face for arrays: any model's image and text vectors into a data home
(:func:`import_arrays`) and the whole suite on them (:func:`measure`), with the same tables, the
same headline and the same HTML page as the pipeline.

:func:`measure` is :func:`import_arrays` into a data home (a temporary one unless ``home`` is
given) followed by :func:`clipgeo.stages.freshness.measure_if_stale`, the one rule every path
measures by, and a read of the run's rows back from the catalog: the numbers are the pipeline's
own, not a second implementation of them.

Inputs (:func:`as_vectors`): numpy arrays, torch tensors (any device; bfloat16 becomes float32,
other dtypes are kept), Arrow / Polars fixed-size-list (or equal-length list) columns. float16
stays float16 in the store and is read in chunks into the float64 accumulators; float64 is
stored as float32 (the store keeps float16 or float32).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ON_DEMAND_SECTIONS", "Measurement", "MeasuredTables", "as_vectors", "default_sections",
           "import_arrays", "measure"]

#: Sections :func:`measure` leaves out by default, measured when one of their tables is first read
#: from ``Measurement.tables`` (or by :meth:`Measurement.compute`), on the stored run. Measured
#: on a notebook-sized run (7,000 images x 3 captions, d = 1024, 2 cores): the sampled pca,
#: origin_shift and cosines cost about 4 CPU s together, bootstrap ~20 s, the UMAP layout and its
#: clusters ~10 s, intrinsic dimension ~7 s, against about 7 s for all the default sections.
ON_DEMAND_SECTIONS = ("pca", "origin_shift", "cosines", "umap", "clusters", "intrinsic_dim", "bootstrap", "umap_grid")
#: What a section reads from sections measured in the same call (the UMAP layout, the cluster
#: assignment, the retrieval ranks): they are measured with it, so its rows equal a full run's.
SECTION_NEEDS = {
    "clusters": ("retrieval", "umap"),
    "intrinsic_dim": ("retrieval", "umap", "clusters"),
    "bootstrap": ("retrieval",),
    "umap_grid": ("umap",),
}

#: |‖v‖ − 1| at most this for every row: the vectors count as already L2-normalised.
NORMALIZED_TOL = 1e-2
#: Rows checked, hashed and written at a time (bounded memory for memory-mapped inputs).
CHUNK_ROWS = 65536


def _from_torch(x: Any) -> np.ndarray:
    t = x.detach()
    if str(t.dtype) == "torch.bfloat16":   # numpy has no bfloat16
        t = t.float()
    return t.cpu().numpy()


def _from_arrow(x: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    if isinstance(x, pa.ChunkedArray):
        x = x.combine_chunks() if x.num_chunks != 1 else x.chunk(0)
    if pa.types.is_fixed_size_list(x.type):
        width = x.type.list_size
    elif pa.types.is_list(x.type) or pa.types.is_large_list(x.type):
        lengths = np.asarray(x.value_lengths().fill_null(-1))
        if lengths.size and (lengths.min() != lengths.max()):
            bad = int(np.flatnonzero(lengths != lengths[0])[0])
            raise ValueError(f"{name}: list column rows differ in length (row 0 has {lengths[0]}, row {bad} has "
                             f"{lengths[bad]}); every vector needs the same dimension")
        width = int(lengths[0]) if lengths.size else 0
    else:
        raise ValueError(f"{name}: an Arrow column of type {x.type} is not a column of vectors "
                         "(expected a fixed-size list of floats)")
    if x.null_count:
        raise ValueError(f"{name}: {x.null_count} row(s) are null (first: row {int(np.flatnonzero(np.asarray(x.is_null()))[0])})")
    values = x.flatten()
    if values.null_count:
        raise ValueError(f"{name}: the vectors hold {values.null_count} null value(s)")
    return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(len(x), width)


def as_vectors(x: Any, name: str, *, min_rows: int = 2) -> np.ndarray:
    """One modality's vectors as a 2-D float array, checked row by row.

    Parameters
    ----------
    x : array-like
        ``(n, d)`` numpy array, torch tensor (any device and dtype), Arrow array / chunked array
        or Polars Series of fixed-size (or equal-length) lists of floats.
    name : str
        The argument's name, used in every error.
    min_rows : int
        Fewest rows accepted.

    Returns
    -------
    numpy.ndarray
        ``(n, d)``, float16 or float32 or float64 as given (integers become float32).

    Raises
    ------
    ValueError
        Naming ``name``: not 2-D, no rows or columns, not numeric, NaN or infinite values, an
        all-zero row (each with the first offending row).

    Examples
    --------
    >>> import numpy as np
    >>> as_vectors(np.eye(3, dtype=np.float16), "images").dtype
    dtype('float16')
    >>> as_vectors(np.array([[1.0, 0.0], [0.0, 0.0]]), "texts")
    Traceback (most recent call last):
    ...
    ValueError: texts: 1 row(s) are all zeros (first: row 1); a zero vector has no direction
    """
    mod = type(x).__module__
    if mod.startswith("torch"):
        arr = _from_torch(x)
    elif mod.startswith("pyarrow"):
        arr = _from_arrow(x, name)
    elif mod.startswith("polars"):
        import polars as pl

        if isinstance(x, pl.DataFrame):
            raise ValueError(f"{name}: pass one column of vectors (a Series), not a DataFrame of {x.width} columns")
        arr = _from_arrow(x.to_arrow(), name)
    else:
        arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (n, d), got shape {arr.shape}")
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float32)
    if arr.dtype.kind != "f":
        raise ValueError(f"{name}: expected numeric vectors, got dtype {arr.dtype}")
    n, d = arr.shape
    if d < 1:
        raise ValueError(f"{name}: vectors have dimension 0")
    if n < min_rows:
        raise ValueError(f"{name}: at least {min_rows} vectors are needed, got {n}")
    from clipgeo.core.arrays import check_finite, row_norms64

    check_finite(arr, name)               # block by block: a memory-mapped file stays on disk
    zero = np.flatnonzero(row_norms64(arr) == 0)
    if zero.size:
        raise ValueError(f"{name}: {zero.size} row(s) are all zeros (first: row {int(zero[0])}); a zero vector has "
                         "no direction")
    return arr


def _ids(given: Sequence[Any] | None, n: int, prefix: str, name: str) -> list[str]:
    if given is None:
        return [f"{prefix}{k}" for k in range(n)]
    ids = [str(v) for v in given]
    if len(ids) != n:
        raise ValueError(f"{name}: {len(ids)} ids for {n} vectors")
    if len(set(ids)) != n:
        seen: set[str] = set()
        dup = next(v for v in ids if v in seen or seen.add(v))
        raise ValueError(f"{name}: ids must be unique; {dup!r} appears more than once")
    return ids


def _text_image(text_image: Any, n_txt: int, n_img: int) -> np.ndarray:
    from clipgeo.core.arrays import resolve_index

    if text_image is not None and type(text_image).__module__.startswith("torch"):
        text_image = _from_torch(text_image)
    return resolve_index(None if text_image is None else np.asarray(text_image), n_txt, n_img, name="text_image")


def _digest(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype, p.shape)).encode())
            for start in range(0, len(p), CHUNK_ROWS):
                h.update(np.ascontiguousarray(p[start:start + CHUNK_ROWS]).data)
        else:
            h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _is_normalized(*mats: np.ndarray) -> bool:
    from clipgeo.core.arrays import row_norms, row_blocks

    for m in mats:
        for sl in row_blocks(m.shape[0], CHUNK_ROWS):
            if np.abs(row_norms(m[sl].astype(np.float64)) - 1.0).max() > NORMALIZED_TOL:
                return False
    return True


def import_arrays(home: Any, images: Any, texts: Any, text_image: Any = None, *,
                  captions: Sequence[str] | None = None, image_ids: Sequence[Any] | None = None,
                  sample_ids: Sequence[Any] | None = None, image_refs: Sequence[str] | None = None,
                  model: str = "arrays", pretrained: str | None = None, checkpoint_sha256: str | None = None,
                  logit_scale: float | None = None, objective: str | None = None, dataset: str = "arrays", split: str | None = None,
                  normalized: bool | None = None) -> str:
    """Store image and text vectors of any model as a run of a data home; returns its run id.

    The run is like any other: the flows, ``clipgeo sql``, the reports and the deployments see
    it; it is ``embedded`` (not yet measured). The same arrays with the same identity give the
    same run id, and importing them again leaves the stored run (and its measurement) as it is.

    Parameters
    ----------
    home : DataHome, str or Path
        The data home (created when missing).
    images : array-like, shape (n_images, d)
        Image vectors (see :func:`as_vectors` for the accepted types).
    texts : array-like, shape (n_texts, d)
        Text (caption) vectors.
    text_image : array-like of int, shape (n_texts,), optional
        ``text_image[j]`` = the image row of caption ``j``; omitted: row-aligned pairs
        (``n_texts == n_images``, caption ``j`` belongs to image ``j``).
    captions : sequence of str, optional
        Each text row's caption (stored in ``samples``; shown in the reports).
    image_ids, sample_ids : sequence, optional
        Unique ids of the image rows / text rows (default ``i0, i1, …`` / ``t0, t1, …``).
    image_refs : sequence of str, optional
        Where each image is (path or URL), for the reports.
    model, pretrained, checkpoint_sha256 : str, optional
        The model's identity as you state it (e.g. ``"ViT-B-32"``, ``"openai"``); recorded in
        ``models``. ``logit_scale``: the scale its loss used, when known (origin-shift InfoNCE);
        ``objective``: its training objective (``infonce``, ``infoloob``, …), when known.
    dataset, split : str, optional
        The data's name and split, recorded in ``datasets`` (the id adds a content hash).
    normalized : bool, optional
        Whether the vectors are already L2-normalised (raw-vector measurements are then skipped
        with their reason); default: detected (every row's norm within 1e-2 of 1).

    Returns
    -------
    str
        The run id.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> rng = np.random.default_rng(0)
    >>> img, txt = rng.normal(size=(50, 16)), rng.normal(size=(100, 16))
    >>> home = tempfile.mkdtemp()
    >>> run = import_arrays(home, img, txt, text_image=np.repeat(np.arange(50), 2), model="my-model")
    >>> run == import_arrays(home, img, txt, text_image=np.repeat(np.arange(50), 2), model="my-model")
    True
    >>> import shutil; shutil.rmtree(home)
    """
    import pyarrow as pa

    import clipgeo
    from clipgeo.core.arrays import row_blocks
    from clipgeo.core.config import DataHome
    from clipgeo.store import catalog, vectors

    img = as_vectors(images, "images")
    txt = as_vectors(texts, "texts")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"images and texts differ in dimension: images have d={img.shape[1]}, texts d={txt.shape[1]}")
    idx = _text_image(text_image, txt.shape[0], img.shape[0])
    i_ids = _ids(image_ids, img.shape[0], "i", "image_ids")
    s_ids = _ids(sample_ids, txt.shape[0], "t", "sample_ids")
    caps = [""] * txt.shape[0] if captions is None else [str(c) for c in captions]
    if len(caps) != txt.shape[0]:
        raise ValueError(f"captions: {len(caps)} captions for {txt.shape[0]} text vectors")
    refs = [""] * img.shape[0] if image_refs is None else [str(r) for r in image_refs]
    if len(refs) != img.shape[0]:
        raise ValueError(f"image_refs: {len(refs)} refs for {img.shape[0]} image vectors")
    if normalized is None:
        normalized = _is_normalized(img, txt)
    h = DataHome.resolve(home).ensure()
    content = _digest(img, txt, idx, i_ids, s_ids, caps, refs)
    dataset_id = f"{dataset}-{content[:8]}" + (f":{split}" if split else "")
    model_id = f"{model}@{checkpoint_sha256[:12] if checkpoint_sha256 else pretrained or 'arrays'}"
    run_id = "r" + hashlib.sha1(f"{model_id}|{dataset_id}|arrays|{content}".encode()).hexdigest()[:12]
    with catalog.session(h) as con:
        found = catalog.execute(con, "SELECT status FROM runs WHERE run_id = ?", [run_id])
    if found and found[0][0] in ("embedded", "measured") and vectors.count_rows(h, run_id) == {
            "image": img.shape[0], "text": txt.shape[0]}:
        return run_id       # the same content under the same identity: already stored
    t0 = time.perf_counter()
    owners = [i_ids[k] for k in idx]
    dtype = np.float16 if img.dtype == txt.dtype == np.float16 else np.float32
    none = np.zeros((0, img.shape[1]), dtype)

    def batches():     # images, then captions, CHUNK_ROWS at a time, one Lance commit
        for sl in row_blocks(img.shape[0], CHUNK_ROWS):
            yield from vectors.record_batches(run_id, image_ids=i_ids[sl], images=img[sl], sample_ids=[],
                                              text_image_ids=[], texts=none, dtype=dtype)
        for sl in row_blocks(txt.shape[0], CHUNK_ROWS):
            yield from vectors.record_batches(run_id, image_ids=[], images=none, sample_ids=s_ids[sl],
                                              text_image_ids=owners[sl], texts=txt[sl], dtype=dtype)

    vectors.write_run_batches(h, run_id, img.shape[1], batches())
    samples = pa.table({"dataset_id": [dataset_id] * len(s_ids), "sample_id": s_ids, "image_id": owners,
                        "image_ref": [refs[k] for k in idx], "caption": caps})
    import json

    with catalog.session(h) as con, catalog.transaction(con):
        catalog.delete_insert(con, "datasets", {"dataset_id": dataset_id}, [{
            "dataset_id": dataset_id, "source": "arrays", "split": split, "location": None,
            "params": json.dumps({"content_sha1": content, "normalized": bool(normalized)}),
            "n_images": img.shape[0], "n_samples": txt.shape[0], "n_rejects": 0,
        }])
        catalog.delete_insert(con, "samples", {"dataset_id": dataset_id}, samples)
        catalog.delete_insert(con, "models", {"model_id": model_id}, [{
            "model_id": model_id, "model_name": model, "pretrained": pretrained, "checkpoint_sha256": checkpoint_sha256,
            "logit_scale": logit_scale, "objective": objective, "embed_dim": img.shape[1],
        }])
        catalog.delete_insert(con, "runs", {"run_id": run_id}, [{
            "run_id": run_id, "model_id": model_id, "dataset_id": dataset_id,
            "label": f"{model}{'/' + pretrained if pretrained else ''} on {dataset}{':' + split if split else ''} (arrays)",
            "status": "embedded", "vectors_table": vectors.table_name(run_id), "vectors_normalized": bool(normalized),
            "n_images": img.shape[0], "n_texts": txt.shape[0], "embed_seconds": time.perf_counter() - t0,
            "device": "import", "code_version": clipgeo.__version__,
        }])
    return run_id


def default_sections() -> list[str]:
    """The sections :func:`measure` runs when ``sections`` is not given: every section of the
    measure stage except :data:`ON_DEMAND_SECTIONS`, in the order they run.

    Returns
    -------
    list of str
        Section names (as in ``measure_sections``).

    Examples
    --------
    >>> default_sections()
    ['retrieval', 'separability', 'modality_gap', 'double_ellipsoid', 'spectra', 'nearest_reference',
     'separability_matrix', 'gap_estimators']
    """
    from clipgeo.stages.measure import all_sections

    return [s.name for s in all_sections() if s.name not in ON_DEMAND_SECTIONS]


def _with_needs(names: Sequence[str]) -> list[str]:
    """``names`` and what they read from sections measured in the same call (:data:`SECTION_NEEDS`)."""
    out: list[str] = []
    for n in names:
        for m in (*SECTION_NEEDS.get(n, ()), n):
            if m not in out:
                out.append(m)
    return out


class MeasuredTables(Mapping):
    """Catalog table → the run's rows (a :class:`polars.DataFrame` with the table's columns).

    Every table of every section is a key. A table whose section has not been measured for the
    run yet (one of :data:`ON_DEMAND_SECTIONS` under :func:`measure`'s default) is measured when
    first read, stored in the run's data home and kept: ``m.tables["bootstrap_ci"]`` computes the
    bootstrap intervals once. :meth:`computed` lists what is held without measuring anything.
    """

    def __init__(self, owner: "Measurement", rows: dict, table_section: dict[str, str]) -> None:
        self._owner = weakref.ref(owner)   # the owner holds this mapping (no reference cycle)
        self._rows = dict(rows)
        self._section = table_section   # table -> the section that fills it

    def __getitem__(self, table: str) -> Any:
        if table not in self._rows:
            sec = self._section.get(table)
            if sec is None:
                raise KeyError(f"{table!r} is not a table of a measurement; tables: {sorted(self)}")
            owner = self._owner()
            if owner is None:
                raise KeyError(f"{table!r}: its measurement is gone (the Measurement was deleted)")
            owner.compute(sec)
        return self._rows[table]

    def __iter__(self):
        return iter(sorted(set(self._rows) | set(self._section)))

    def __len__(self) -> int:
        return len(set(self._rows) | set(self._section))

    def computed(self) -> list[str]:
        """The tables held now (measured, and read from the catalog), sorted."""
        return sorted(self._rows)

    def _update(self, rows: dict) -> None:
        self._rows.update(rows)

    def __repr__(self) -> str:
        pending = sorted(set(self._section) - set(self._rows))
        return f"MeasuredTables(computed={self.computed()}, on_demand={pending})"


@dataclass
class Measurement:
    """The measured tables of one run, its headline and its report page.

    Attributes
    ----------
    run_id : str
        The run in ``home``.
    home : DataHome
        The data home holding it (a temporary one, removed with this object, unless given).
    tables : MeasuredTables
        Catalog table name → that run's rows, with exactly the table's columns; a table of a
        section not measured yet is measured when first read (:class:`MeasuredTables`).
    headline : polars.DataFrame
        One row: ``v_headline`` for the run (the one definition of the headline figures). Figures
        of sections not measured yet (clusters, mixing) are null until they are.
    sections : dict of str to str
        Section → ``ok`` / ``skipped`` / ``failed`` (the reason is in ``tables["measure_sections"]``),
        for the sections measured so far.
    reused : str or None
        Why the stored measurement was reused, when it was.

    Examples
    --------
    >>> import numpy as np, clipgeo
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(size=(40, 8)) + 2.0
    >>> m = clipgeo.measure(img, img - 4.0, sections=["modality_gap"])
    >>> m
    Measurement(run_id='r...', tables=['measure_samples', 'measure_sections', 'modality_gap'],
                sections={'modality_gap': 'ok'})
    >>> m.tables["modality_gap"].height, m.headline.height
    (1, 1)
    >>> "spectra" in m.not_run
    True
    >>> m.tables["topo_spectra_summary"].height > 0     # measured now, on first read
    True
    >>> m.sections
    {'modality_gap': 'ok', 'spectra': 'ok'}
    """

    run_id: str
    home: Any
    tables: Any
    headline: Any
    sections: dict = field(default_factory=dict)
    reused: str | None = None
    umap_grid: bool = False

    @property
    def not_run(self) -> list[str]:
        """Sections not measured for this run yet (each measured when one of its tables is read)."""
        from clipgeo.stages.measure import all_sections

        return [s.name for s in all_sections() if s.name not in self.sections]

    def compute(self, *sections: str, umap_grid: bool | None = None) -> "Measurement":
        """Measure these sections of the run now (and what they read: :data:`SECTION_NEEDS`),
        store them in the data home, and refresh :attr:`tables`, :attr:`sections` and
        :attr:`headline`. No names: every section not measured yet (:attr:`not_run`) that a
        full run measures (``umap_grid`` only when the measurement was asked for it).

        Parameters
        ----------
        *sections : str
            Section names (``measure_sections``); e.g. ``m.compute("bootstrap")``.
        umap_grid : bool, optional
            Fit the UMAP hyperparameter grid in section ``umap_grid`` (default: as
            :func:`measure` was asked; without it the section is ``skipped``, as in the pipeline).

        Returns
        -------
        Measurement
            This object, updated.
        """
        from clipgeo.stages.freshness import measure_if_stale

        grid = self.umap_grid if umap_grid is None else bool(umap_grid)
        names = list(sections) or [s for s in self.not_run if s != "umap_grid" or grid]
        if not names:
            return self
        todo = _with_needs(names)
        measure_if_stale(self.home, self.run_id, sections=todo, umap_grid=grid)
        self.umap_grid = grid
        tables = run_tables(self.home, self.run_id, todo)
        self.tables._update(tables)
        self.sections = _statuses(tables["measure_sections"])
        self.headline = _headline(self.home, self.run_id)
        return self

    def report(self, path: str | Path | None = None) -> Path:
        """Write the run's HTML page (the pipeline's own, offline) and return its path. Sections
        not measured yet say so on the page, with how to measure them.

        Parameters
        ----------
        path : str or Path, optional
            Where to copy the page (default: ``reports/run-<run_id>.html`` in the data home).

        Returns
        -------
        Path
            The page.
        """
        from dashboards.build import write_reports

        page = next(p for p in write_reports(self.home, [self.run_id]) if p.name == f"run-{self.run_id}.html")
        if path is None:
            return page
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, out)
        return out

    def _repr_html_(self) -> str:
        cols = [c for c in self.headline.columns if not c.endswith("_message")]
        head = "".join(f"<th>{c}</th>" for c in cols)
        row = self.headline.row(0, named=True) if self.headline.height else {}
        cells = "".join(f"<td>{_fmt(row.get(c))}</td>" for c in cols)
        later = [s for s in self.not_run if s in ON_DEMAND_SECTIONS]
        note = (f"<p>Not run yet: {', '.join(later)} &mdash; <code>m.compute()</code> (or reading one of "
                f"their tables, e.g. <code>m.tables[\"bootstrap_ci\"]</code>) measures them.</p>" if later else "")
        return (f"<div><b>clipgeo measurement</b> of run <code>{self.run_id}</code> "
                f"({', '.join(f'{k}: {v}' for k, v in self.sections.items())})"
                f"<table><tr>{head}</tr><tr>{cells}</tr></table>{note}</div>")

    def __repr__(self) -> str:
        held = self.tables.computed() if isinstance(self.tables, MeasuredTables) else sorted(self.tables)
        return f"Measurement(run_id={self.run_id!r}, tables={held}, sections={self.sections})"


def _statuses(measure_sections: Any) -> dict:
    """Section → status, in the order the stage lists its sections."""
    from clipgeo.stages.measure import all_sections

    order = {s.name: k for k, s in enumerate(all_sections())}
    ms = measure_sections
    return dict(sorted(zip(ms["section"].to_list(), ms["status"].to_list()), key=lambda kv: order.get(kv[0], -1)))


def _headline(home: Any, run_id: str) -> Any:
    from clipgeo.core.config import DataHome
    from clipgeo.store import catalog

    with catalog.session(DataHome.resolve(home), read_only=True) as con:
        return catalog.query(con, "SELECT * FROM v_headline WHERE run_id = ?", [run_id])


def _fmt(v: Any) -> str:
    import html

    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape("" if v is None else str(v))


def run_tables(home: Any, run_id: str, sections: Sequence[str] | None = None) -> dict:
    """Every catalog table the measurement fills (or only those of ``sections``), that run's rows.

    Parameters
    ----------
    home : DataHome, str or Path
        The data home.
    run_id : str
        A measured run.
    sections : sequence of str, optional
        Only the tables of these sections (plus ``measure_sections`` and ``measure_samples``).

    Returns
    -------
    dict of str to polars.DataFrame
        Table name → that run's rows (every column of the catalog table, ``run_id`` first).

    Examples
    --------
    >>> import numpy as np, shutil, tempfile
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(size=(40, 8))
    >>> home = tempfile.mkdtemp()
    >>> m = measure(img, img + 1.0, sections=["modality_gap"], home=home)
    >>> tables = run_tables(home, m.run_id, ["modality_gap"])
    >>> sorted(tables)
    ['measure_samples', 'measure_sections', 'modality_gap']
    >>> tables["modality_gap"]["run_id"].to_list() == [m.run_id]
    True
    >>> shutil.rmtree(home)
    """
    from clipgeo.core.config import DataHome
    from clipgeo.stages.measure import all_sections
    from clipgeo.store import catalog

    names: list[str] = []
    for sec in all_sections():
        if sections is None or sec.name in sections:
            names += [t for t in sec.tables if t not in names]
    names += ["measure_sections", "measure_samples"]
    with catalog.session(DataHome.resolve(home), read_only=True) as con:
        return {t: catalog.query(con, f"SELECT * FROM {t} WHERE run_id = ?", [run_id]) for t in names}


def measure(images: Any, texts: Any, text_image: Any = None, *, captions: Sequence[str] | None = None,
            sections: Sequence[str] | str | None = None, home: Any = None, force: bool = False,
            umap_grid: bool = False, **identity: Any) -> Measurement:
    """Measure image and text vectors of any model: the suite's default sections now, the costly
    ones when first read.

    The arrays become a run of ``home`` (:func:`import_arrays`; a temporary data home, removed
    with the result, when None), which is measured under the one rule
    (:func:`clipgeo.stages.freshness.measure_if_stale`) and read back from the catalog.

    **The default** (``sections=None``) is :func:`default_sections`: ``retrieval``,
    ``separability``, ``modality_gap``, ``double_ellipsoid``, ``spectra``, ``nearest_reference``,
    ``separability_matrix`` (both skipped without a reference run) and ``gap_estimators``: the
    headline's retrieval, gap, separability, spectra and conformity figures and every streamed
    table (retrieval, modality gap, double ellipsoid, spectra). :data:`ON_DEMAND_SECTIONS`
    (``pca``, ``origin_shift``, ``cosines``, ``umap``, ``clusters``, ``intrinsic_dim``,
    ``bootstrap``, ``umap_grid``) are left out: they are measured, stored and kept when one of
    their tables is first read
    (``m.tables["bootstrap_ci"]``), or by ``m.compute("bootstrap")`` / ``m.compute()`` (all of
    them); ``sections="all"`` measures everything at once, like the pipeline. ``m.not_run`` and
    the report page name the sections not measured yet.

    Parameters
    ----------
    images : array-like, shape (n_images, d)
        Image vectors: numpy, torch (any device, dtype), Arrow / Polars vector columns.
    texts : array-like, shape (n_texts, d)
        Text vectors.
    text_image : array-like of int, shape (n_texts,), optional
        The image row of each caption; omitted: row-aligned pairs.
    captions : sequence of str, optional
        Each caption's text.
    sections : sequence of str or "all", optional
        The sections to measure now (names as in ``measure_sections``); default
        :func:`default_sections`; ``"all"``: every section.
    home : DataHome, str or Path, optional
        Keep the run in this data home (then ``clipgeo sql`` and ``clipgeo report`` see it).
    force : bool
        Measure again even when ``home`` holds a current measurement of the same arrays.
    umap_grid : bool
        Also fit the UMAP hyperparameter grid (with ``sections="all"``, or when read).
    **identity
        Passed to :func:`import_arrays`: ``model``, ``pretrained``, ``checkpoint_sha256``,
        ``logit_scale``, ``objective``, ``dataset``, ``split``, ``image_ids``, ``sample_ids``, ``image_refs``,
        ``normalized``.

    Returns
    -------
    Measurement
        ``.tables`` (catalog table → that run's rows; on-demand tables measured when read),
        ``.headline`` (one ``v_headline`` row), ``.report(path)`` (the HTML page); shows its
        headline in a notebook.

    Examples
    --------
    >>> import numpy as np, clipgeo
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(size=(60, 8)) + 2.0
    >>> txt = img + rng.normal(scale=0.3, size=img.shape) - 4.0
    >>> m = clipgeo.measure(img, txt, sections=["retrieval", "modality_gap"])
    >>> m.sections
    {'retrieval': 'ok', 'modality_gap': 'ok'}
    >>> round(m.headline["gap"][0], 3) == round(m.tables["modality_gap"]["gap"][0], 3)
    True
    """
    from clipgeo.core.config import DataHome
    from clipgeo.stages.freshness import measure_if_stale
    from clipgeo.stages.measure import all_sections
    from clipgeo.store import catalog

    if isinstance(sections, str):
        if sections != "all":
            raise ValueError(f"sections: {sections!r} is not a list of section names or 'all'")
        sections = None
    elif sections is None:
        sections = default_sections()
    tmp = None
    if home is None:
        tmp = tempfile.mkdtemp(prefix="clipgeo-measure-")
        home = tmp
    h = DataHome.resolve(home)
    try:
        # a temporary home is this call's alone: its catalog stays open throughout (catalog.pinned)
        with catalog.pinned(h) if tmp else contextlib.nullcontext():
            run_id = import_arrays(h, images, texts, text_image, captions=captions, **identity)
            res, why = measure_if_stale(h, run_id, force=force, umap_grid=umap_grid, sections=sections)
            tables = run_tables(h, run_id)
            headline = _headline(h, run_id)
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    statuses = _statuses(tables["measure_sections"])
    owner = {t: sec.name for sec in all_sections() for t in sec.tables}
    held = {t: rows for t, rows in tables.items() if t not in owner or owner[t] in statuses}
    out = Measurement(run_id, h, None, headline, statuses, None if res is not None else why, umap_grid)
    out.tables = MeasuredTables(out, held, owner)
    if tmp:
        weakref.finalize(out, shutil.rmtree, tmp, True)
    return out
