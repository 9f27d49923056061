"""Opening images safely: plain files and tar members, any common mode, bad files refused.

An ``image_ref`` (see :class:`~clipgeo.sources.base.Sample`) is either

* a plain path (``/data/coco/val2017/000000000139.jpg``), or
* a tar member ``tar://<absolute path of the .tar>#<member name>``
  (``tar:///data/shards/00003.tar#000030012.jpg``), as written by the webdataset source.
  The tar path may itself be an fsspec URL (``tar://s3://bucket/shards/00003.tar#...``); that
  works when ``fsspec`` and the backend (``s3fs``, ``gcsfs``, ...) are installed, and is not
  tested here.

:func:`load_image` turns a ref into an RGB :class:`PIL.Image.Image` or raises
:class:`ImageRejected` whose ``reason`` is short and stable enough to count by:

=====================================  ========  =============================================
reason                                 stage     when
=====================================  ========  =============================================
``missing file``                       read      the file (or the tar holding it) does not exist
``missing tar member``                 read      the tar has no such member
``zero-byte file``                     read      the file / member is empty
``unreadable file: <why>``             read      an OS error (permission, a folder, ...)
``not an image (cannot identify)``     decode    Pillow recognises no image format
``truncated image``                    decode    the data ends early (never padded silently)
``decompression bomb: N pixels >       decode    the header claims more than ``max_pixels``
limit M``                                        pixels (refused before any pixel is decoded)
``corrupt image: <why>``               decode    any other decoder error
``unsupported image mode <mode>``      decode    a mode that cannot be converted to RGB
=====================================  ========  =============================================

What loads, and how it is converted (after EXIF orientation is applied with
:func:`PIL.ImageOps.exif_transpose`, so a phone picture stored sideways comes out upright):

* ``RGB`` as is; ``L``, ``1``, ``CMYK``, ``YCbCr``, ``HSV`` by :meth:`Image.convert`;
* 16/32-bit greyscale (``I;16*``, ``I``) scaled to 8 bits (``>> 8`` for 16-bit data, not
  clipped), float (``F``) scaled from its [0, 1] or [min, max] range;
* palette (``P``) and anything with alpha or a transparency key (``LA``, ``PA``, ``RGBA``,
  ``La``, ``RGBa``, ``P``/``L``/``RGB`` with ``transparency``) composited on white.

Tar members are read by offset: the first access to a tar scans its headers once (not its
data) and caches ``{member name: (offset, size)}`` per tar (keyed by path, size and mtime);
later members cost one ``open`` + ``seek`` + ``read``. Compressed tars (``.tar.gz``) have no
usable offsets and fall back to :mod:`tarfile` extraction per member (slow; prefer plain
``.tar`` shards, which is what img2dataset writes).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import tarfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import numpy as np

from clipgeo.sources.base import Reject, SourceRead

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageRejected",
    "TAR_SCHEME",
    "check_image",
    "decode_image",
    "load_image",
    "parse_ref",
    "prime_tar_index",
    "read_image_bytes",
    "tar_index",
    "tar_ref",
    "to_rgb",
]

#: Default refusal limit: 100 megapixels (a 10000 x 10000 image). Pillow's own guard warns
#: at 89 MP and refuses at 179 MP; below that, this limit is the one that applies.
DEFAULT_MAX_PIXELS = 100_000_000
TAR_SCHEME = "tar://"


class ImageRejected(ValueError):
    """An image that cannot be used; ``reason`` is short and machine-friendly.

    Attributes:
        reason: e.g. ``"missing file"``, ``"truncated image"`` (the table in the module doc).
        stage: ``"read"`` (the bytes could not be had) or ``"decode"`` (they are not a
            usable image).
        ref: The image ref, when known.
    """

    def __init__(self, reason: str, *, stage: str = "decode", ref: str | None = None) -> None:
        super().__init__(f"{reason}: {ref}" if ref else reason)
        self.reason = reason
        self.stage = stage
        self.ref = ref


# --------------------------------------------------------------------------- refs


def tar_ref(tar_path: str, member: str) -> str:
    """``tar://<tar_path>#<member>`` (local tar paths are made absolute)."""
    if "://" not in tar_path:
        tar_path = os.path.abspath(tar_path)
    return f"{TAR_SCHEME}{tar_path}#{member}"


def parse_ref(ref: str) -> tuple[str | None, str]:
    """``(tar path, member name)`` for a tar ref, ``(None, path)`` for a plain path.

    The tar path ends at the first ``.tar#`` (or ``.tar.gz#`` / ``.tgz#``), so member names
    may contain ``#``.
    """
    if not ref.startswith(TAR_SCHEME):
        return None, ref
    body = ref[len(TAR_SCHEME):]
    m = re.search(r"\.(?:tar|tar\.gz|tgz|tar\.bz2|tar\.xz)#", body)
    if m is None:
        idx = body.find("#")
        if idx < 0:
            raise ImageRejected("malformed tar ref (no '#member')", stage="read", ref=ref)
        return body[:idx], body[idx + 1:]
    return body[: m.end() - 1], body[m.end():]


def is_url(path: str) -> bool:
    """Whether ``path`` names a remote object (``s3://``, ``https://``, ...) read through fsspec.

    Parameters
    ----------
    path : str
        A local path, a ``file://`` URL or a remote URL.

    Returns
    -------
    bool
        True for a URL with a scheme other than ``file``.

    Examples
    --------
    >>> is_url("s3://bucket/shard-000.tar"), is_url("file:///data/shard.tar"), is_url("shard.tar")
    (True, False, False)
    """
    return "://" in path and not path.startswith("file://")


def open_binary(path: str) -> IO[bytes]:
    """Open ``path`` for reading bytes: a remote URL through fsspec (:func:`is_url`), a local
    path or ``file://`` URL with :func:`open`.

    Parameters
    ----------
    path : str
        What to open.

    Returns
    -------
    file object
        Opened in binary mode; the caller closes it.
    """
    if is_url(path):
        import fsspec  # optional: only for object-store shards

        return fsspec.open(path, "rb").open()
    return open(path.removeprefix("file://"), "rb")


# --------------------------------------------------------------------------- tar index

_TarIndex = dict[str, tuple[int, int]]
_index_lock = threading.Lock()
_index_cache: OrderedDict[tuple, _TarIndex | None] = OrderedDict()
_INDEX_CACHE_SIZE = 256  # tars; an index of 10,000 members is ~1 MB


def _index_key(tar_path: str) -> tuple:
    if is_url(tar_path):
        return (tar_path,)
    st = os.stat(tar_path)
    return (os.path.abspath(tar_path), st.st_size, st.st_mtime_ns)


def _scan_tar(tar_path: str) -> _TarIndex | None:
    """``{name: (offset of data, size)}`` of the regular members; None for a compressed tar."""
    with open_binary(tar_path) as fh:
        try:
            tf = tarfile.open(fileobj=fh, mode="r:")
        except tarfile.ReadError:
            fh.seek(0)
            tarfile.open(fileobj=fh, mode="r:*").close()  # compressed, or raises ReadError
            return None
        index: _TarIndex = {}
        with tf:
            for m in tf:
                if m.isfile():
                    index[m.name] = (m.offset_data, m.size)
        return index


def prime_tar_index(tar_path: str, index: _TarIndex | None) -> None:
    """Store an index built elsewhere (the webdataset reader scans each shard once anyway)."""
    key = _index_key(tar_path)
    with _index_lock:
        _index_cache[key] = index
        _index_cache.move_to_end(key)
        while len(_index_cache) > _INDEX_CACHE_SIZE:
            _index_cache.popitem(last=False)


def tar_index(tar_path: str) -> _TarIndex | None:
    """The cached member index of a tar (scanning it on first use); None if compressed."""
    key = _index_key(tar_path)
    with _index_lock:
        if key in _index_cache:
            _index_cache.move_to_end(key)
            return _index_cache[key]
    index = _scan_tar(tar_path)
    prime_tar_index(tar_path, index)
    return index


def _read_member(tar_path: str, member: str, ref: str) -> bytes:
    try:
        index = tar_index(tar_path)
    except FileNotFoundError:
        raise ImageRejected("missing file", stage="read", ref=ref) from None
    except tarfile.TarError as exc:
        raise ImageRejected(f"unreadable tar: {exc}", stage="read", ref=ref) from None
    except OSError as exc:
        raise ImageRejected(f"unreadable file: {exc.strerror or exc}", stage="read", ref=ref) from None
    if index is None:  # compressed: no offsets
        with open_binary(tar_path) as fh, tarfile.open(fileobj=fh, mode="r:*") as tf:
            try:
                f = tf.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise ImageRejected("missing tar member", stage="read", ref=ref)
            return f.read()
    if member not in index:
        raise ImageRejected("missing tar member", stage="read", ref=ref)
    offset, size = index[member]
    if size == 0:
        return b""
    with open_binary(tar_path) as fh:
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:
        raise ImageRejected("truncated image", ref=ref)  # the tar itself ends early
    return data


# --------------------------------------------------------------------------- reading


def read_image_bytes(ref: str) -> bytes:
    """The raw bytes of an image ref (plain path or tar member).

    Raises:
        ImageRejected: ``missing file``, ``missing tar member``, ``zero-byte file`` or
            ``unreadable file: ...`` (stage ``read``).
    """
    tar_path, name = parse_ref(ref)
    if tar_path is not None:
        data = _read_member(tar_path, name, ref)
    else:
        try:
            with open_binary(name) as fh:
                data = fh.read()
        except FileNotFoundError:
            raise ImageRejected("missing file", stage="read", ref=ref) from None
        except IsADirectoryError:
            raise ImageRejected("unreadable file: is a directory", stage="read", ref=ref) from None
        except OSError as exc:
            raise ImageRejected(f"unreadable file: {exc.strerror or exc}", stage="read", ref=ref) from None
    if not data:
        raise ImageRejected("zero-byte file", stage="read", ref=ref)
    return data


_truncation_lock = threading.Lock()


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make sure Pillow refuses truncated data here even if someone enabled
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` globally (restored afterwards)."""
    from PIL import ImageFile

    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _truncation_lock:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _white_composite(im: PILImage.Image) -> PILImage.Image:
    from PIL import Image

    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def to_rgb(im: PILImage.Image) -> PILImage.Image:
    """Convert any Pillow mode to 8-bit RGB (see the module doc for the rules)."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    ):
        return _white_composite(im)
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if mode == "F":
            arr = arr.astype(np.float64)
            finite = np.isfinite(arr)
            lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 1.0)
            if lo >= 0.0 and hi <= 1.0:
                lo, hi = 0.0, 1.0
            scaled = np.nan_to_num((arr - lo) / ((hi - lo) or 1.0)) * 255.0
            out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        else:
            arr = arr.astype(np.int64)
            hi = int(arr.max()) if arr.size else 0
            lo = int(arr.min()) if arr.size else 0
            if mode.startswith("I;16") or (lo >= 0 and 255 < hi <= 65535):
                out = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)  # 16-bit data
            elif lo >= 0 and hi <= 255:
                out = arr.astype(np.uint8)  # 8-bit data stored as I
            else:
                out = ((arr - lo) * 255 // max(hi - lo, 1)).astype(np.uint8)
        return Image.fromarray(out, mode="L").convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageRejected(f"unsupported image mode {mode}") from exc


_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, ref: str | None = None) -> PILImage.Image:
    """Decode image bytes to RGB, refusing bombs before decoding and truncation after.

    Raises:
        ImageRejected: stage ``decode`` (``zero-byte file`` is stage ``read``).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageRejected("zero-byte file", stage="read", ref=ref)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb warnings (own limit below), EXIF / palette notes
            with _strict_truncation():
                im = Image.open(io.BytesIO(data))
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageRejected(f"decompression bomb: {w * h} pixels > limit {max_pixels}", ref=ref)
                im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to lose the image
                pass
            return to_rgb(im)
    except ImageRejected as exc:
        if exc.ref is None:
            exc.ref = ref
        raise
    except Image.DecompressionBombError as exc:
        m = _PIXELS_RE.search(str(exc))
        n = m.group(1) if m else "?"
        raise ImageRejected(f"decompression bomb: {n} pixels > limit {max_pixels}", ref=ref) from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image (cannot identify)", ref=ref) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
            struct.error, MemoryError) as exc:
        msg = str(exc)
        if "truncat" in msg.lower() or isinstance(exc, EOFError):
            raise ImageRejected("truncated image", ref=ref) from None
        short = msg.splitlines()[0][:120] if msg else ""
        raise ImageRejected(f"corrupt image: {type(exc).__name__}: {short}".rstrip(": "), ref=ref) from None


def load_image(ref: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> PILImage.Image:
    """Open an image ref (plain path or ``tar://...#member``) as an upright 8-bit RGB image.

    Args:
        ref: The sample's ``image_ref``.
        max_pixels: Refuse images whose header claims more pixels (default 100 MP). Pillow's
            own guard refuses above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (179 MP) regardless.

    Raises:
        ImageRejected: with ``reason`` and ``stage`` from the table in the module doc.
    """
    return decode_image(read_image_bytes(ref), max_pixels=max_pixels, ref=ref)


def check_image(ref: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, decode: bool = True) -> str | None:
    """The reason ``ref`` would be refused, or None if it loads.

    ``decode=True`` decodes every pixel (the only way to see truncation); ``decode=False``
    only reads the bytes and the header (size, format): fast, but misses truncated data.
    """
    try:
        if decode:
            load_image(ref, max_pixels=max_pixels)
        else:
            from PIL import Image, UnidentifiedImageError

            data = read_image_bytes(ref)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with Image.open(io.BytesIO(data)) as im:
                        w, h = im.size
            except Image.DecompressionBombError as exc:
                m = _PIXELS_RE.search(str(exc))
                return f"decompression bomb: {m.group(1) if m else '?'} pixels > limit {max_pixels}"
            except UnidentifiedImageError:
                return "not an image (cannot identify)"
            except Exception as exc:  # noqa: BLE001
                return "truncated image" if "truncat" in str(exc).lower() else f"corrupt image: {type(exc).__name__}"
            if w * h > max_pixels:
                return f"decompression bomb: {w * h} pixels > limit {max_pixels}"
    except ImageRejected as exc:
        return exc.reason
    return None


_READ_REASONS = ("missing file", "missing tar member", "zero-byte file", "unreadable file", "malformed tar ref")
