"""The fast image path: bytes read in DataLoader workers, JPEGs decoded in batches, batched
tensor preprocessing, the model in its inference precision, stages overlapped.

What runs where (the device is the only difference between the two):

=====================  ==========================================  ==========================================
stage                  ``device="cpu"``                            ``device="cuda"``
=====================  ==========================================  ==========================================
read bytes             workers (:func:`read_image_bytes`)          workers
route                  workers: a header probe (Pillow, no pixels) workers
                       sends baseline/progressive 8-bit RGB/grey
                       JPEGs to the batched decoder, everything
                       else to Pillow (the reference decoder)
decode JPEG            workers, ``decode_jpeg(list)`` (libjpeg-    main process, ``decode_jpeg(list,
                       turbo, bit-identical to Pillow's)           device="cuda")`` (nvjpeg), on a side stream
decode other formats   workers, Pillow (PNG, CMYK, 16-bit, ...)    workers, Pillow; pinned, copied non-blocking
resize/crop/normalise  workers, :func:`preprocess_uint8`           GPU, :func:`preprocess_uint8`
encode                 main, float32                               main, fp16 weights (SDPA attention)
=====================  ==========================================  ==========================================

On CUDA a producer thread decodes and preprocesses batch k+1 on its own stream while the
main thread encodes batch k; results come back through pinned buffers with non-blocking
copies, synchronised one batch later.

On CPU "workers" are one decode thread of this process instead of worker processes when
:func:`clipgeo.embedding.workers.decode_in_thread` says so (one worker, or a small job while
the fork server is not running): the same read / probe / decode / preprocess functions, run one
batch ahead of the encode, with nothing started or forked (issue 33: the fork server's start
cost more than a small call's whole work).

Rejects hold exactly as on the reference path: a read error is the reader's; a JPEG whose
probe fails, that does not end with an EOI marker (truncated), or that the batched decoder
refuses is decoded again alone by :func:`clipgeo.sources.images.decode_image`, which either
loads it (as the reference would) or rejects it with the reference's stage and reason. The
rest of the batch is kept.

:class:`EmbedProfile` times every stage and names the bound one (``profile.line()``).
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from clipgeo.embedding.precision import model_dtype
from clipgeo.embedding.preprocess import PreprocessSpec, apply_orientation, preprocess_uint8, spec_from_transform
from clipgeo.embedding.workers import decode_in_thread, resolve_num_workers, worker_context

if TYPE_CHECKING:  # pragma: no cover
    from clipgeo.models.loader import LoadedModel

__all__ = [
    "BackgroundStream",
    "EmbedProfile",
    "embed_image_refs_fast",
    "preprocess_refs",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- profile


@dataclass
class EmbedProfile:
    """Seconds spent per stage of one or more embed calls (summed), and the bound stage.

    ``read``, ``probe``, ``decode_worker`` and ``preprocess_worker`` are worker-seconds
    (summed over workers); ``input_wait`` is the main loop waiting for its next batch,
    ``decode_device`` / ``preprocess_device`` the producer's work on the device,
    ``encode`` the model, ``wall`` the whole call; ``start`` the main loop starting its
    workers (with worker processes: a fork server started cold imports torch, torchvision
    and open_clip first); ``worker_threads`` whether the CPU workers were one decode thread
    of this process; ``texts`` / ``text_seconds`` the captions of the same shards (filled by
    the embed stage).
    """

    images: int = 0
    rejects: int = 0
    fallback: int = 0
    workers: int = 0
    worker_threads: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    wall: float = 0.0
    start: float = 0.0
    read: float = 0.0
    probe: float = 0.0
    decode_worker: float = 0.0
    preprocess_worker: float = 0.0
    input_wait: float = 0.0
    producer_wait: float = 0.0
    decode_device: float = 0.0
    preprocess_device: float = 0.0
    encode: float = 0.0
    texts: int = 0
    text_seconds: float = 0.0

    def add(self, other: EmbedProfile) -> EmbedProfile:
        for k in ("images", "rejects", "fallback", "wall", "start", "read", "probe", "decode_worker",
                  "preprocess_worker", "input_wait", "producer_wait", "decode_device", "preprocess_device", "encode",
                  "texts", "text_seconds"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.workers = max(self.workers, other.workers)
        self.worker_threads = self.worker_threads or other.worker_threads
        self.device, self.precision = other.device, other.precision
        return self

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall if self.wall > 0 else 0.0

    def bound(self) -> str:
        """The stage that limits throughput.

        In one process without a device stage (``num_workers=0`` on CPU) the stages run one
        after the other and the larger one is the bound. Otherwise the main loop either
        waits for input or encodes. When it waited for more than 15%
        of the wall time the input side is the bound: the workers (read + decode + resize on
        CPU; read + Pillow fallback on CUDA) when the producer also mostly waited for them
        or there is no device stage, else the device decode / preprocess. Otherwise the
        model is the bound.
        """
        if self.wall <= 0:
            return "none"
        device_work = self.decode_device + self.preprocess_device
        if self.workers == 0 and device_work == 0:  # one process, one stage after the other
            if self.encode >= self.input_wait:
                return "encode (model)"
            return "read + decode + preprocess (in-process, num_workers=0)"
        if self.input_wait <= 0.15 * self.wall:
            return "encode (model)"
        if device_work > 0 and device_work >= self.producer_wait:
            return "device decode + preprocess"
        return f"workers: read + decode + preprocess ({self._workers_text()})"

    def _workers_text(self) -> str:
        if self.worker_threads:
            return f"{self.workers} decode thread{'s' if self.workers != 1 else ''}"
        return f"{self.workers} workers"

    def line(self) -> str:
        w = max(self.workers, 1)
        parts = [
            f"embed profile: {self.images} images in {self.wall:.2f} s ({self.images_per_second:.1f} img/s)",
            f"{self.device} {self.precision}, {self._workers_text()}"
            + (f" (started in {self.start:.2f} s)" if self.workers and not self.worker_threads else ""),
            f"rejects {self.rejects}, Pillow fallback {self.fallback}",
            f"worker-s read {self.read:.2f} probe {self.probe:.2f} decode {self.decode_worker:.2f} "
            f"preprocess {self.preprocess_worker:.2f} (/{w} workers = {(self.read + self.probe + self.decode_worker + self.preprocess_worker) / w:.2f} s)",
            f"main: input wait {self.input_wait:.2f} s, device decode {self.decode_device:.2f} s, "
            f"device preprocess {self.preprocess_device:.2f} s, encode {self.encode:.2f} s",
            f"bound: {self.bound()}",
        ]
        if self.texts:
            parts.append(f"captions: {self.texts} in {self.text_seconds:.2f} s "
                         f"({self.texts / max(self.text_seconds, 1e-9):.1f}/s)")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbedProfile:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# --------------------------------------------------------------------------- worker side

_JPEG = 0
_PIXELS = 1
_REJECT = 2


def probe_jpeg(data: bytes, max_pixels: int) -> int | None:
    """EXIF orientation of a JPEG the batched decoder may take, else None (-> Pillow).

    Taken: starts with SOI and ends with EOI (a truncated file does not), Pillow reads its
    header as an 8-bit ``RGB`` or ``L`` JPEG within ``max_pixels``, and its orientation is
    an int. The orientation is Pillow's own ``getexif()`` (EXIF, else XMP), as the
    reference's ``exif_transpose`` reads it.
    """
    from PIL import Image

    if len(data) < 4 or data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_PIL_MODULES)  # Pillow's only (decode threads)
            im = Image.open(io.BytesIO(data))
            if im.format != "JPEG" or im.mode not in ("RGB", "L") or getattr(im, "bits", 8) != 8:
                return None
            w, h = im.size
            if w * h > max_pixels or w < 1 or h < 1:
                return None
            orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - anything odd: the reference decoder decides
        return None
    return orientation if isinstance(orientation, int) else None


def _pil_pixels(data: bytes, max_pixels: int, ref: str) -> Any:
    """The reference decoder's upright RGB image as a uint8 (3, H, W) tensor (or ImageRejected)."""
    import torch

    from clipgeo.sources.images import decode_image

    im = decode_image(data, max_pixels=max_pixels, ref=ref)
    return torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


class _ImageBytes:
    """Map-style dataset for the workers: ``i -> (i, kind, payload, orientation, seconds)``.

    Reads bytes only (refs are strings, so it pickles for any start method), routes them
    (probe), and decodes with Pillow what the batched decoder will not take.
    """

    def __init__(self, refs: Sequence[str], max_pixels: int) -> None:
        self.refs = list(refs)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple:
        from clipgeo.sources.images import ImageRejected, read_image_bytes

        t0 = time.perf_counter()
        ref = self.refs[i]
        try:
            data = read_image_bytes(ref)
        except ImageRejected as e:
            return i, _REJECT, (e.stage, e.reason), 1, (time.perf_counter() - t0, 0.0, 0.0)
        t1 = time.perf_counter()
        orientation = probe_jpeg(data, self.max_pixels)
        t2 = time.perf_counter()
        if orientation is not None:
            return i, _JPEG, data, orientation, (t1 - t0, t2 - t1, 0.0)
        try:
            px = _pil_pixels(data, self.max_pixels, ref)
        except ImageRejected as e:
            return i, _REJECT, (e.stage, e.reason), 1, (t1 - t0, t2 - t1, time.perf_counter() - t2)
        return i, _PIXELS, px, 1, (t1 - t0, t2 - t1, time.perf_counter() - t2)


@dataclass
class _Batch:
    """What a worker hands over: packed JPEG bytes (device decode) or a preprocessed batch
    (decoded in the worker), Pillow-decoded pixels, rejects, and the worker's seconds."""

    jpeg_idx: list[int]
    jpeg_bytes: Any  # uint8 1-D tensor, all JPEGs back to back (one shared-memory block)
    jpeg_offsets: list[int]
    jpeg_orient: list[int]
    jpeg_refs: list[str]
    px_idx: list[int]
    px: Any  # uint8 1-D tensor of the Pillow-decoded images, back to back
    px_shapes: list[tuple[int, int, int]]
    x_idx: list[int]
    x: Any  # preprocessed (n, 3, h, w) when decoded in the worker, else None
    rejects: list[tuple[int, str, str]]
    fallback: int
    seconds: tuple[float, float, float, float]  # read, probe, decode, preprocess

    def pin_memory(self) -> _Batch:
        pin = (lambda t: t.pin_memory() if t is not None and t.numel() else t)
        return replace(self, px=pin(self.px), x=pin(self.x))

    def jpegs(self) -> list[Any]:
        o = self.jpeg_offsets
        return [self.jpeg_bytes[o[k]: o[k + 1]] for k in range(len(self.jpeg_idx))]

    def pixels(self) -> list[Any]:
        out, pos = [], 0
        for s in self.px_shapes:
            n = s[0] * s[1] * s[2]
            out.append(self.px[pos: pos + n].view(s))
            pos += n
        return out


def _pack(tensors: list[Any]) -> tuple[Any, list[int]]:
    import torch

    offsets = [0]
    for t in tensors:
        offsets.append(offsets[-1] + t.numel())
    flat = torch.empty(offsets[-1], dtype=torch.uint8)
    for t, a, b in zip(tensors, offsets, offsets[1:]):
        flat[a:b] = t.reshape(-1)
    return flat, offsets


_PIL_MODULES = r"PIL(\.|$)"
_TORCHVISION_MODULES = r"torchvision(\.|$)"


def _decoder_filters() -> None:
    warnings.filterwarnings("error", category=UserWarning, module=_TORCHVISION_MODULES)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=_TORCHVISION_MODULES)


def decode_jpegs(datas: list[Any], device: Any) -> list[Any]:
    """``decode_jpeg(list, mode=RGB, device=...)``; when the batch fails, each image alone,
    None for the ones the decoder refuses (they go to the reference decoder)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    try:
        with warnings.catch_warnings():
            # a decoder warning means "let Pillow decide"; torchvision 0.29's notice that its
            # decoders move to TorchCodec is no such warning. Both filters name torchvision's
            # modules (its decoder's warnings are raised from them), so while a decode thread
            # holds them the main thread's own warnings are handled as usual.
            _decoder_filters()
            out = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
        return list(out) if isinstance(out, (list, tuple)) else [out]
    except (RuntimeError, UserWarning, ValueError):
        pass
    single = []
    for d in datas:
        try:
            with warnings.catch_warnings():
                _decoder_filters()
                single.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
        except (RuntimeError, UserWarning, ValueError):
            single.append(None)
    return single


class _Collate:
    """Batches worker items; with ``spec`` (CPU) also decodes and preprocesses in the worker."""

    def __init__(self, refs: Sequence[str], max_pixels: int, spec: PreprocessSpec | None, dtype: Any,
                 method: str = "auto") -> None:
        self.refs = list(refs)
        self.max_pixels = max_pixels
        self.spec = spec
        self.dtype = dtype
        self.method = method

    def __call__(self, items: list[tuple]) -> _Batch:
        import torch

        from clipgeo.sources.images import ImageRejected

        read = probe = dec = pre = 0.0
        jpeg, px, rejects = [], [], []
        for i, kind, payload, orient, (r, p, d) in items:
            read, probe, dec = read + r, probe + p, dec + d
            if kind == _REJECT:
                rejects.append((i, payload[0], payload[1]))
            elif kind == _JPEG:
                jpeg.append((i, payload, orient))
            else:
                px.append((i, payload))
        fallback = len(px)
        if self.spec is None:  # the device decodes: ship bytes
            offsets = [0]
            for _, b, _ in jpeg:
                offsets.append(offsets[-1] + len(b))
            joined = bytearray(b"".join(b for _, b, _ in jpeg))
            flat = torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8)
            pflat, _ = _pack([t for _, t in px])
            return _Batch([i for i, _, _ in jpeg], flat, offsets, [o for _, _, o in jpeg],
                          [self.refs[i] for i, _, _ in jpeg], [i for i, _ in px], pflat,
                          [tuple(t.shape) for _, t in px], [], None, rejects, fallback, (read, probe, dec, pre))
        t0 = time.perf_counter()
        decoded = decode_jpegs([torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, b, _ in jpeg], "cpu")
        for (i, b, orient), img in zip(jpeg, decoded):
            if img is None:  # refused by the batched decoder: the reference decides
                fallback += 1
                try:
                    px.append((i, _pil_pixels(b, self.max_pixels, self.refs[i])))
                except ImageRejected as e:
                    rejects.append((i, e.stage, e.reason))
            else:
                px.append((i, apply_orientation(img, orient)))
        t1 = time.perf_counter()
        px.sort(key=lambda p: p[0])
        x = preprocess_uint8([t for _, t in px], self.spec, dtype=self.dtype, method=self.method) if px else None
        t2 = time.perf_counter()
        empty = torch.empty(0, dtype=torch.uint8)
        return _Batch([], empty, [0], [], [], [], empty, [], [i for i, _ in px], x, rejects, fallback,
                      (read, probe, dec + t1 - t0, pre + t2 - t1))


def _thread_batches(dataset: _ImageBytes, collate: _Collate, batch_size: int) -> Iterator[_Batch]:
    """What DataLoader workers hand over, made on one thread of this process: batch ``k`` is
    ``collate([dataset[i] for i in batch k])``, in order, two batches ahead of the consumer
    (:func:`clipgeo.streaming.threads.prefetch`; an error is raised in the consumer, a consumer
    that stops early stops the thread)."""
    from clipgeo.streaming.threads import prefetch

    n = len(dataset)
    return prefetch((collate([dataset[i] for i in range(s, min(s + batch_size, n))]) for s in range(0, n, batch_size)),
                    depth=2)


# --------------------------------------------------------------------------- main side


def _device_batch(b: _Batch, spec: PreprocessSpec, device: Any, dtype: Any, max_pixels: int,
                  prof: EmbedProfile, method: str = "auto") -> tuple[list[int], Any, list[tuple[int, str, str]]]:
    """Decode (nvjpeg) and preprocess one worker batch on ``device``; returns (idx, x, rejects)."""
    from clipgeo.sources.images import ImageRejected

    t0 = time.perf_counter()
    rejects = list(b.rejects)
    imgs: list[tuple[int, Any]] = []
    datas = b.jpegs()
    decoded = decode_jpegs(datas, device)
    for i, data, orient, ref, img in zip(b.jpeg_idx, datas, b.jpeg_orient, b.jpeg_refs, decoded):
        if img is None:
            prof.fallback += 1
            try:
                imgs.append((i, _pil_pixels(bytes(data.numpy()), max_pixels, ref).to(device, non_blocking=True)))
            except ImageRejected as e:
                rejects.append((i, e.stage, e.reason))
        else:
            imgs.append((i, apply_orientation(img, orient)))
    for i, t in zip(b.px_idx, b.pixels()):
        imgs.append((i, t.to(device, non_blocking=True)))
    t1 = time.perf_counter()
    imgs.sort(key=lambda p: p[0])
    x = preprocess_uint8([t for _, t in imgs], spec, dtype=dtype, method=method) if imgs else None
    t2 = time.perf_counter()
    prof.decode_device += t1 - t0
    prof.preprocess_device += t2 - t1
    return [i for i, _ in imgs], x, rejects


class _Producer(threading.Thread):
    """Decodes and preprocesses batches ``depth`` batches ahead, on a side stream on CUDA."""

    _DONE = object()

    def __init__(self, loader: Any, spec: PreprocessSpec, device: Any, dtype: Any, max_pixels: int,
                 prof: EmbedProfile, depth: int = 2) -> None:
        super().__init__(name="clipgeo-embed-producer", daemon=True)
        self.loader, self.spec, self.device, self.dtype = loader, spec, device, dtype
        self.max_pixels, self.prof = max_pixels, prof
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        import contextlib

        import torch

        try:
            cuda = self.device.type == "cuda"
            stream = torch.cuda.Stream(device=self.device) if cuda else None
            it = iter(self.loader)
            with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                while not self.stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        b = next(it)
                    except StopIteration:
                        break
                    self.prof.producer_wait += time.perf_counter() - t0
                    idx, x, rejects = _device_batch(b, self.spec, self.device, self.dtype, self.max_pixels, self.prof)
                    ev = None
                    if cuda:
                        ev = torch.cuda.Event()
                        ev.record(stream)
                    if not self._put((b, idx, x, rejects, ev)):
                        return
            self._put(self._DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._put(exc)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def embed_image_refs_fast(
    lm: LoadedModel,
    refs: Sequence[str],
    *,
    batch_size: int = 256,
    num_workers: int | None = None,
    max_pixels: int = 100_000_000,
    progress: bool = True,
    overlap: bool = True,
    spec: PreprocessSpec | None = None,
    profile: EmbedProfile | None = None,
    sink: Callable[[np.ndarray, np.ndarray], None] | None = None,
    device_decode: bool | None = None,
    worker_threads: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str, str]]]:
    """Raw image embeddings through the fast path; same contract as
    :func:`clipgeo.embedding.embed.embed_image_refs` (``(vectors, ok, failures)``, input order).

    Args:
        spec: the preprocessing to reproduce (default: read from ``lm.preprocess``; raises
            ``ValueError`` when it is not a transform the tensor path reproduces).
        num_workers: decode workers; None sizes them to the machine
            (:func:`resolve_num_workers`), 0 decodes in the main process.
        overlap: on CUDA, decode/preprocess the next batch on a side stream while the
            current one encodes.
        profile: filled with the stage timings of this call (also logged at INFO).
        sink: called with ``(indices, float32 rows)`` of each batch as soon as its vectors
            are on the host, in input order (e.g. :class:`BackgroundStream` feeding a
            LanceDB writer, so writes overlap the embedding).
        device_decode: decode and preprocess in the main process on ``lm.device`` (workers
            ship bytes) rather than in the workers; default: on CUDA only. On CPU it runs
            the CUDA path's logic without streams (tests cover it that way).
        worker_threads: with decoding in the workers (CPU) and at least one worker: True runs
            them as one decode thread of this process, False as worker processes from the fork
            server; None (default) asks :func:`clipgeo.embedding.workers.decode_in_thread`
            (one worker, or a small job while the fork server is not running: the thread).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = spec or spec_from_transform(lm.preprocess)
    if spec is None:
        raise ValueError(f"model {lm.model_name}: its preprocess ({lm.preprocess!r}) is not one the tensor path "
                         "reproduces; use decode='pil'")
    n = len(refs)
    ok = np.zeros(n, dtype=bool)
    prof = profile if profile is not None else EmbedProfile()
    dtype = model_dtype(lm.model)
    prof.device, prof.precision = str(lm.device), str(dtype).removeprefix("torch.")
    if n == 0:
        return np.zeros((0, lm.embed_dim), dtype=np.float32), ok, []
    t_start = time.perf_counter()
    cuda = str(lm.device).startswith("cuda")
    on_device = cuda if device_decode is None else bool(device_decode)
    n_batches = -(-n // batch_size)
    workers = resolve_num_workers(num_workers, n_batches)
    threaded = not on_device and workers > 0 and (decode_in_thread(n, workers) if worker_threads is None
                                                  else bool(worker_threads))
    prof.workers, prof.worker_threads = (1, True) if threaded else (workers, False)
    collate = _Collate(refs, max_pixels, None if on_device else spec, dtype)
    if threaded:
        loader: Any = None
    else:
        loader = DataLoader(
            _ImageBytes(refs, max_pixels),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=cuda,
            prefetch_factor=2 if workers else None,
            multiprocessing_context=worker_context() if workers else None,  # not fork (clipgeo.embedding.workers)
        )
    rows = np.zeros((n, lm.embed_dim), dtype=np.float32)
    failures: list[tuple[int, str, str]] = []
    bar = tqdm(total=n_batches, desc="embed images", unit="batch", disable=not progress)

    def account(b: _Batch) -> None:
        r, p, d, pp = b.seconds
        prof.read += r
        prof.probe += p
        prof.decode_worker += d
        prof.preprocess_worker += pp
        prof.fallback += b.fallback
        bar.update(1)

    it: Any = None
    try:
        with torch.inference_mode():
            if not on_device:
                t0 = time.perf_counter()
                it = _thread_batches(_ImageBytes(refs, max_pixels), collate, batch_size) if threaded else iter(loader)
                prof.start += time.perf_counter() - t0  # worker processes: their start (and the server's)
                while True:
                    t0 = time.perf_counter()
                    try:
                        b = next(it)
                    except StopIteration:
                        break
                    t1 = time.perf_counter()
                    prof.input_wait += t1 - t0
                    account(b)
                    failures += b.rejects
                    if b.x is not None:
                        y = lm.model.encode_image(b.x.to(lm.device), normalize=False).float().cpu().numpy()
                        rows[b.x_idx] = y
                        ok[b.x_idx] = True
                        if sink is not None:
                            sink(np.asarray(b.x_idx), y)
                    prof.encode += time.perf_counter() - t1
            else:
                _embed_cuda(lm, loader, spec, dtype, max_pixels, overlap, prof, rows, ok, failures, account, sink)
    finally:
        if threaded and it is not None:
            it.close()  # stops the decode thread when the loop ended early (an error)
        bar.close()
    failures.sort()
    prof.images += int(ok.sum())
    prof.rejects += len(failures)
    prof.wall += time.perf_counter() - t_start
    log.info("%s", prof.line())
    return np.ascontiguousarray(rows[ok]), ok, failures


def _embed_cuda(lm, loader, spec, dtype, max_pixels, overlap, prof, rows, ok, failures, account, sink) -> None:
    """The device-decode loop (CUDA; on CPU the same logic without streams, for tests)."""
    import torch

    device = torch.device(lm.device)
    cuda = device.type == "cuda"
    main = torch.cuda.current_stream(device) if cuda else None
    pending: list[tuple[list[int], Any, Any]] = []

    def finish(upto: int) -> None:
        while len(pending) > upto:
            idx, host, ev = pending.pop(0)
            if ev is not None:
                ev.synchronize()
            rows[idx] = host.numpy()
            ok[idx] = True
            if sink is not None:
                sink(np.asarray(idx), rows[idx])

    if overlap:
        producer = _Producer(loader, spec, device, dtype, max_pixels, prof)
        producer.start()
        source = iter(producer)
    else:
        producer = None

        def _inline():
            for b in loader:
                idx, x, rejects = _device_batch(b, spec, device, dtype, max_pixels, prof)
                yield b, idx, x, rejects, None

        source = _inline()
    try:
        while True:
            t0 = time.perf_counter()
            try:
                b, idx, x, rejects, ev = next(source)
            except StopIteration:
                break
            t1 = time.perf_counter()
            prof.input_wait += t1 - t0
            account(b)
            failures += rejects
            if x is None:
                continue
            if ev is not None:
                main.wait_event(ev)
                x.record_stream(main)
            y = lm.model.encode_image(x, normalize=False).float()
            done = None
            if cuda:
                host = torch.empty(tuple(y.shape), dtype=torch.float32, pin_memory=True)
                host.copy_(y, non_blocking=True)
                done = torch.cuda.Event()
                done.record(main)
            else:
                host = y
            pending.append((idx, host, done))
            finish(1)  # the previous batch's vectors are ready by now
            prof.encode += time.perf_counter() - t1
        t2 = time.perf_counter()
        finish(0)
        prof.encode += time.perf_counter() - t2
    finally:
        if producer is not None:
            producer.stop.set()
            producer.join(timeout=60)


def preprocess_refs(refs: Sequence[str], spec: PreprocessSpec, *, device: Any = "cpu", dtype: Any = None,
                    max_pixels: int = 100_000_000, method: str = "auto") -> tuple[Any, list[int], list[tuple[int, str, str]]]:
    """The fast path's model inputs for ``refs`` as one batch, in this process: ``(x, idx,
    rejects)`` with ``x`` ``(len(idx), 3, h, w)`` for the usable refs ``idx`` (None if none).

    The same worker and device functions :func:`embed_image_refs_fast` runs, without the
    DataLoader: for tests and benchmarks comparing inputs with the reference transform.
    """
    import torch

    dtype = dtype or torch.float32
    ds = _ImageBytes(refs, max_pixels)
    items = [ds[i] for i in range(len(ds))]
    if not str(device).startswith("cuda"):
        b = _Collate(refs, max_pixels, spec, dtype, method)(items)
        return b.x, b.x_idx, sorted(b.rejects)
    b = _Collate(refs, max_pixels, None, dtype)(items)
    idx, x, rejects = _device_batch(b, spec, torch.device(device), dtype, max_pixels, EmbedProfile(), method)
    return x, idx, sorted(rejects)


class BackgroundStream:
    """Feed items to a consumer running in its own thread: ``consume(iterator)`` sees every
    ``put`` item in order, its iterator ends at :meth:`close`, which returns what
    ``consume`` returned (or raises what it raised).

    For writes that take an iterator (``vectors.write_run_batches`` streams record batches
    into one Lance commit): the writer works while the producer embeds the next batch.
    """

    _END = object()

    def __init__(self, consume: Callable[[Iterator[Any]], Any], *, depth: int = 8) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(consume,), name="clipgeo-background-stream",
                                        daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[Any]:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            yield item

    def _run(self, consume: Callable[[Iterator[Any]], Any]) -> None:
        try:
            self._result = consume(self._items())
        except BaseException as exc:  # noqa: BLE001 - re-raised by close()
            self._error = exc
            while self._q.get() is not self._END:  # drain so that put() never blocks forever
                pass

    def put(self, item: Any) -> None:
        if self._error is not None:
            raise RuntimeError(f"background writer failed: {self._error}") from self._error
        self._q.put(item)

    def close(self) -> Any:
        self._q.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result
