"""WebDataset shards as img2dataset writes them: tar files of ``<key>.<ext>`` members.

Per sample key (e.g. ``000000012``; the key is the member path up to the first ``.`` of its
base name, the webdataset convention) a shard holds::

    000000012.jpg    (or .png / .webp / .jpeg / .bmp / .tif / .tiff / .gif)  the image
    000000012.txt    the caption (UTF-8)
    000000012.json   metadata: {"key": "000000012", "caption": ..., "url": ..., "status": ...}

The caption comes from ``.txt``; when there is none, from the ``caption`` field of ``.json``.

Ids: ``image_id`` = ``sample_id`` = the key (one caption per image in this layout);
``image_ref`` = ``tar://<absolute tar path>#<key>.<ext>`` (opened by
:func:`clipgeo.sources.images.load_image`, which reuses the member offsets found while
reading the shard, so no shard is re-scanned per image).

Shard lists: ``urls`` is one pattern, several separated by ``::`` (as webdataset does), or a
list of them. Patterns use bash-style brace expansion (:func:`expand_braces`):
``shards/{00000..00009}.tar``, ``{train,val}/{000..003}.tar``.

Object stores: ``s3://bucket/shards/{00000..00099}.tar``, ``gs://...``, ``https://...`` go
through exactly the same code path via :mod:`fsspec` (the shard is opened with
``fsspec.open(url, "rb")`` and read member by member; image refs become
``tar://s3://bucket/shards/00003.tar#000030012.jpg``) when ``fsspec`` and the backend
(``s3fs``, ``gcsfs``, ``aiohttp``) are installed. Only local paths are tested here.

Rejects (run carries on): a key without an image member (stage ``read``, ``no image
member``), without a caption (``caption``, ``no caption``), with an empty or invalid UTF-8
``.txt`` (``caption``), a key seen before (``read``, ``duplicate sample id``), and a shard that
ends early after some members (``read``, ``tar truncated after N members``; the members read
so far are kept).

Raises :class:`~clipgeo.sources.base.SourceError`, naming the shard, for a shard that does
not exist or is wholly unreadable (not a tar, empty), and for a pattern matching nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

from clipgeo.sources.base import Reject, Sample, SourceError, SourceRead, check_caption, dedupe_samples, snippet
from clipgeo.sources.images import is_url, open_binary, prime_tar_index, tar_ref

__all__ = ["IMAGE_EXTENSIONS", "expand_braces", "expand_urls", "read_webdataset"]

#: Image member extensions, in order of preference when a key has several.
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")


def _matching_brace(s: str, start: int) -> int:
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion, left to right.

    ``{a,b}`` alternatives (nestable), ``{0..9}`` / ``{00000..00123}`` integer ranges
    (zero-padded to the width of the bounds when a bound has a leading zero), and
    ``{0..10..2}`` steps. A brace group that is neither (``{x}``, an unmatched ``{``) is
    kept literally.

    >>> expand_braces("s/{000..002}.tar")
    ['s/000.tar', 's/001.tar', 's/002.tar']
    >>> expand_braces("{a,b{1,2}}-x")
    ['a-x', 'b1-x', 'b2-x']
    """
    start = pattern.find("{")
    while start >= 0:
        end = _matching_brace(pattern, start)
        if end < 0:
            return [pattern]
        body = pattern[start + 1:end]
        m = _RANGE.match(body)
        alts: list[str] | None = None
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            step = abs(int(m.group(3) or 1)) or 1
            ga, gb = m.group(1).lstrip("-"), m.group(2).lstrip("-")
            width = max(len(m.group(1)), len(m.group(2))) if (
                (len(ga) > 1 and ga.startswith("0")) or (len(gb) > 1 and gb.startswith("0"))) else 0
            rng = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
            alts = [str(v).zfill(width) if v >= 0 else "-" + str(-v).zfill(width - 1) for v in rng]
        elif "," in body and len(_split_top(body)) > 1:
            alts = [x for alt in _split_top(body) for x in expand_braces(alt)]
        if alts is not None:
            prefix, rest = pattern[:start], expand_braces(pattern[end + 1:])
            return [prefix + a + r for a, r in itertools.product(alts, rest)]
        start = pattern.find("{", end + 1)  # literal group: look further right
    return [pattern]


def expand_urls(urls: str | Iterable[str]) -> list[str]:
    """Every shard named by ``urls`` (patterns, ``::``-joined patterns, or a list), in order."""
    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    out: list[str] = []
    for item in items:
        for part in str(item).split("::"):
            if part.strip():
                out.extend(expand_braces(part.strip()))
    return out


def _split_name(name: str) -> tuple[str, str]:
    """``"a/b/000012.jpg"`` -> ``("a/b/000012", "jpg")`` (key up to the base name's first dot)."""
    d, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


def _read_shard(shard: str, out: SourceRead, samples: list[Sample]) -> None:
    local = not is_url(shard)
    if local and not os.path.isfile(shard):
        raise SourceError(f"webdataset shard not found: {shard}")
    tar_path = os.path.abspath(shard) if local else shard
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    payload: dict[tuple[str, str], bytes] = {}
    index: dict[str, tuple[int, int]] | None = {}
    n_read = 0
    try:
        fh = open_binary(tar_path)
    except OSError as exc:
        raise SourceError(f"webdataset shard {shard} cannot be opened: {exc}") from exc
    with fh:
        try:
            try:
                tf = tarfile.open(fileobj=fh, mode="r:")
            except tarfile.ReadError:
                fh.seek(0)
                tf = tarfile.open(fileobj=fh, mode="r:*")  # compressed: no member offsets
                index = None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SourceError(
                f"webdataset shard {shard} is not a readable tar file ({exc}). Pass img2dataset "
                "output shards (.tar) or fix the pattern."
            ) from None
        with tf:
            try:
                for m in tf:
                    if not m.isfile():
                        continue
                    n_read += 1
                    key, ext = _split_name(m.name)
                    members.setdefault(key, {})[ext] = m
                    if index is not None:
                        index[m.name] = (m.offset_data, m.size)
                    if ext in ("txt", "json"):
                        f = tf.extractfile(m)
                        data = f.read() if f is not None else b""
                        if len(data) != m.size:
                            raise tarfile.ReadError(f"member {m.name} ends early")
                        payload[(key, ext)] = data
            except (tarfile.TarError, OSError, EOFError) as exc:
                if n_read == 0:
                    raise SourceError(f"webdataset shard {shard} is not a readable tar file ({exc})") from None
                out.rejects.append(Reject(shard, "read", f"tar truncated after {n_read} members: {exc}"))
    if not members and n_read == 0:
        # tarfile accepts a file of zero blocks / a bare end marker as an empty archive
        raise SourceError(f"webdataset shard {shard} holds no files (empty or not a tar)")
    if local:
        prime_tar_index(tar_path, index)

    for key, exts in members.items():
        img_ext = next((e for e in IMAGE_EXTENSIONS if e in exts), None)
        if img_ext is None:
            out.rejects.append(Reject(tar_ref(tar_path, f"{key}.*"), "read", "no image member", key, n_images=0))
            continue
        ref = tar_ref(tar_path, exts[img_ext].name)
        raw: bytes | str | None = payload.get((key, "txt"))
        if raw is None and (key, "json") in payload:
            try:
                meta = json.loads(payload[(key, "json")])
            except ValueError:
                meta = None
            if isinstance(meta, dict) and meta.get("caption") is not None:
                raw = meta["caption"]
        caption, reason = check_caption(raw)
        if reason:
            out.rejects.append(Reject(ref, "caption", reason, key, key, detail=snippet(raw)))
            continue
        samples.append(Sample(key, key, ref, caption))


def read_webdataset(urls: str | list[str]) -> SourceRead:
    """Read img2dataset-style webdataset shards (see the module doc for layout and ids).

    Args:
        urls: a brace pattern (``"/data/shards/{00000..00009}.tar"``), several joined with
            ``::``, or a list of them. Local paths, or fsspec URLs (untested here).

    Returns:
        :class:`SourceRead`: samples in shard order, then member order.

    Raises:
        SourceError: no shard named, a shard missing, or a shard wholly unreadable.
    """
    shards = expand_urls(urls)
    if not shards:
        raise SourceError(f"no webdataset shard in {urls!r}")
    missing = [s for s in shards if not is_url(s) and not os.path.isfile(s)]
    if missing:  # fail before reading anything, naming them all (the first few)
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise SourceError(
            f"webdataset shard not found: {shown} ({len(missing)} of {len(shards)} shards from "
            f"{urls!r} missing)"
        )
    out = SourceRead()
    samples: list[Sample] = []
    for shard in shards:
        _read_shard(str(Path(shard)) if not is_url(shard) else shard, out, samples)
    out.samples = dedupe_samples(samples, out.rejects)
    return out
