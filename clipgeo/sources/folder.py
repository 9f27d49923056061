"""Folder source: an image folder plus a captions file (csv / tsv / jsonl / json / parquet).

Each row names one image (a path relative to ``image_root``; absolute paths are used as
given) and one or more captions::

    image,caption                       {"file_name": "cats/1.jpg", "captions": ["a cat", "a kitten"]}
    cats/1.jpg,a cat                    {"file_name": "dogs/7.png", "captions": ["a dog"]}
    cats/1.jpg,a kitten
    dogs/7.png,a dog

Either the caption column repeats over rows (one caption per row), or it holds a list of
captions (jsonl / json / parquet list column; in csv / tsv a ``captions`` cell may hold a JSON
list such as ``["a cat", "a kitten"]``). Both can be mixed.

Columns are detected by name unless given: image column from ``image``, ``file_name``,
``filename``, ``path``, ``image_path``, ``file``; caption column from ``caption``, ``text``,
``captions``, ``sentences``; sample-id column (optional) ``sample_id``.

Identifiers (stable: they depend only on the file's content and row order):

* ``image_id`` = the image path as written, normalised to forward slashes without ``./``
  (e.g. ``"cats/1.jpg"``);
* ``sample_id`` = the row's ``sample_id`` column when there is one, else
  ``f"{image_id}#{k}"`` where ``k`` counts that image's captions in file order from 0 (a
  list cell contributes its items in order). Unique by construction; duplicates in a
  ``sample_id`` column keep the first and reject the rest.
* ``image_ref`` = absolute, normalised path ``image_root/<path>`` (not opened here: image
  problems are found when the image is loaded, see :mod:`clipgeo.sources.images`).

Rows are read one by one so that one bad row is one reject (``item_ref`` = ``<file>:<line>``
for csv / tsv / jsonl, ``<file>:<row>`` for json / parquet, rows counted from 1): an invalid
UTF-8 or empty caption (stage ``caption``), a malformed JSON line, a row without an image path
or caption cell (stage ``read``), a duplicate sample id (``read``).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clipgeo.sources.base import Reject, Sample, SourceError, SourceRead, check_caption, dedupe_samples, snippet

__all__ = ["CAPTION_COLUMNS", "IMAGE_COLUMNS", "read_folder"]

IMAGE_COLUMNS: tuple[str, ...] = ("image", "file_name", "filename", "path", "image_path", "file")
CAPTION_COLUMNS: tuple[str, ...] = ("caption", "text", "captions", "sentences")
ID_COLUMNS: tuple[str, ...] = ("sample_id",)
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
            ".parquet": "parquet", ".pq": "parquet"}

_Row = tuple[str, dict[str, Any] | None, str | None]  # (item_ref, row or None, reason if unreadable)


def _pick(columns: list[str], given: str | None, candidates: tuple[str, ...], what: str,
          path: Path, *, required: bool = True) -> str | None:
    if given is not None:
        if given not in columns:
            raise SourceError(f"{path}: no {what} column {given!r}; its columns are {columns}")
        return given
    lower = {c.lower(): c for c in columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    if required:
        raise SourceError(
            f"{path}: cannot find the {what} column among {columns}: name it one of "
            f"{list(candidates)} or pass {what}_column="
        )
    return None


def _rows_csv(path: Path, delimiter: str) -> tuple[list[str], Iterator[_Row]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    # surrogateescape keeps invalid bytes as lone surrogates, which check_caption refuses.
    fh = path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(fh, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        fh.close()
        raise SourceError(f"{path}: empty file (expected a header row)") from None
    except csv.Error as exc:
        fh.close()
        raise SourceError(f"{path}: not a readable {delimiter!r}-separated file: {exc}") from None
    header = [h.strip() for h in header]

    def rows() -> Iterator[_Row]:
        with fh:
            while True:
                line = reader.line_num + 1
                try:
                    rec = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield f"{path}:{line}", None, f"malformed row: {exc}"
                    continue
                if not rec or all(not c.strip() for c in rec):
                    continue  # blank line
                if len(rec) != len(header):
                    yield f"{path}:{line}", None, f"row has {len(rec)} fields, header has {len(header)}"
                    continue
                yield f"{path}:{line}", dict(zip(header, rec)), None

    return header, rows()


def _rows_jsonl(path: Path) -> tuple[list[str], Iterator[_Row]]:
    # Columns are those of the first valid object (rows may add more; missing ones are rejects).
    first: dict[str, Any] | None = None
    with path.open("rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                first = obj
                break
    if first is None:
        raise SourceError(f"{path}: no JSON object on any line: not a JSON-lines captions file")

    def rows() -> Iterator[_Row]:
        with path.open("rb") as fh:
            for line, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                ref = f"{path}:{line}"
                # invalid bytes become lone surrogates: check_caption refuses such a caption and
                # the row's other fields (sample id, image path) stay usable for the record
                text = raw.decode("utf-8", errors="surrogateescape")
                if line == 1:
                    text = text.removeprefix("\ufeff")
                try:
                    obj = json.loads(text)
                except ValueError as exc:
                    yield ref, None, f"malformed JSON line: {exc}"
                    continue
                if not isinstance(obj, dict):
                    yield ref, None, f"line is a JSON {type(obj).__name__}, not an object"
                    continue
                yield ref, obj, None

    return list(first), rows()


def _rows_json(path: Path) -> tuple[list[str], Iterator[_Row]]:
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not valid UTF-8 JSON: {exc}") from None
    if isinstance(data, dict):  # {"annotations": [...]} / {"images": [...]} style wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list) or not any(isinstance(r, dict) for r in data):
        raise SourceError(f"{path}: expected a JSON list of objects (one per image or caption)")
    cols: list[str] = list(next(r for r in data if isinstance(r, dict)))

    def rows() -> Iterator[_Row]:
        for i, obj in enumerate(data, start=1):
            ref = f"{path}:{i}"
            if not isinstance(obj, dict):
                yield ref, None, f"row is a JSON {type(obj).__name__}, not an object"
            else:
                yield ref, obj, None

    return cols, rows()


def _rows_parquet(path: Path, wanted: list[str] | None = None) -> tuple[list[str], Iterator[_Row]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
        raise SourceError(f"{path}: not a readable parquet file: {exc}") from None
    cols = list(pf.schema_arrow.names)

    def rows(columns: list[str]) -> Iterator[_Row]:
        i = 0
        for batch in pf.iter_batches(batch_size=65536, columns=columns):
            for rec in batch.to_pylist():
                i += 1
                yield f"{path}:{i}", rec, None

    return cols, rows  # type: ignore[return-value]  # called with the chosen columns below


def _norm_image_path(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    value = value.strip().replace("\\", "/")
    while value.startswith("./"):
        value = value[2:]
    return value or None


def _captions_of(value: Any, *, parse_json_list: bool) -> list[Any] | None:
    """The captions in a cell: a list / tuple / numpy array of them, or one caption."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return list(value.tolist())
    if parse_json_list and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
    if isinstance(value, dict) and "raw" in value:  # Karpathy-style {"raw": ...}
        return [value["raw"]]
    return [value]


def read_folder(
    image_root: Path,
    captions_file: Path,
    *,
    image_column: str | None = None,
    caption_column: str | None = None,
    id_column: str | None = None,
) -> SourceRead:
    """Read a folder of images described by a captions file.

    Args:
        image_root: Folder the image paths are relative to.
        captions_file: ``.csv``, ``.tsv``, ``.jsonl`` / ``.ndjson``, ``.json`` (a list of
            objects) or ``.parquet``.
        image_column, caption_column, id_column: Column names; detected when None (see the
            module doc).

    Returns:
        :class:`SourceRead` with samples in file order (ids as in the module doc) and one
        reject per refused row or caption.

    Raises:
        SourceError: ``image_root`` is not a folder, ``captions_file`` is missing, has an
            unknown extension, is unreadable in its format, or lacks an image or caption
            column.
    """
    image_root, captions_file = Path(image_root), Path(captions_file)
    if not image_root.is_dir():
        raise SourceError(f"image folder not found: {image_root} (for {captions_file})")
    if not captions_file.is_file():
        raise SourceError(f"captions file not found: {captions_file}")
    fmt = _FORMATS.get(captions_file.suffix.lower())
    if fmt is None:
        raise SourceError(
            f"{captions_file}: unknown captions file type {captions_file.suffix!r}; use one of "
            f"{sorted(_FORMATS)}"
        )
    if fmt in ("csv", "tsv"):
        columns, rows = _rows_csv(captions_file, "," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        columns, rows = _rows_jsonl(captions_file)
    elif fmt == "json":
        columns, rows = _rows_json(captions_file)
    else:
        columns, rows_fn = _rows_parquet(captions_file)
        rows = None  # type: ignore[assignment]

    img_col = _pick(columns, image_column, IMAGE_COLUMNS, "image", captions_file)
    cap_col = _pick(columns, caption_column, CAPTION_COLUMNS, "caption", captions_file)
    id_col = _pick(columns, id_column, ID_COLUMNS, "id", captions_file, required=False)
    if rows is None:
        rows = rows_fn([c for c in (img_col, cap_col, id_col) if c])  # type: ignore[operator]
    parse_json_list = fmt in ("csv", "tsv") and cap_col.lower() in ("captions", "sentences")

    root = os.path.abspath(image_root)
    out = SourceRead()
    samples: list[Sample] = []
    n_caps: dict[str, int] = {}
    try:
        for item_ref, row, reason in rows:
            if row is None:
                out.rejects.append(Reject(item_ref, "caption" if "UTF-8" in (reason or "") else "read",
                                          reason or "unreadable row"))
                continue
            image_id = _norm_image_path(row.get(img_col))
            if image_id is None:
                out.rejects.append(Reject(item_ref, "read", f"no image path in column {img_col!r}", n_captions=1))
                continue
            try:
                image_id.encode("utf-8")
            except UnicodeEncodeError:
                out.rejects.append(Reject(item_ref, "read", "image path not valid UTF-8", n_captions=1))
                continue
            ref = os.path.normpath(os.path.join(root, image_id))
            given_id = row.get(id_col) if id_col else None
            caps = _captions_of(row.get(cap_col), parse_json_list=parse_json_list)
            if caps is None:
                out.rejects.append(Reject(item_ref, "caption", "no caption",
                                          None if given_id is None else str(given_id), image_id, n_captions=0))
                continue
            for j, raw in enumerate(caps):
                k = n_caps.get(image_id, 0)
                n_caps[image_id] = k + 1
                if given_id is not None and str(given_id).strip():
                    sid = str(given_id).strip() if len(caps) == 1 else f"{str(given_id).strip()}#{j}"
                else:
                    sid = f"{image_id}#{k}"
                caption, why = check_caption(raw)
                if why:
                    out.rejects.append(Reject(item_ref, "caption", why, sid, image_id, detail=snippet(raw)))
                    continue
                samples.append(Sample(sid, image_id, ref, caption))
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a parquet file that breaks mid-way
        raise SourceError(f"{captions_file}: reading failed after {len(samples)} samples: {exc}") from exc
    out.samples = dedupe_samples(samples, out.rejects)
    return out
