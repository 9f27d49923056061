"""Image embedding throughput: the fast path against a PIL DataLoader baseline, same files, one process.

It writes its own COCO-like JPEGs (mostly 640x480, about 100 KB; a pool of distinct images
hard-linked up to ``--n`` files, or packed into webdataset-style tars with ``--tar``), then:

* **baseline**: a ``DataLoader`` whose workers open each file with Pillow and apply
  open_clip's preprocess; fp32 weights, bf16 autocast on CUDA (what clip-retrieval does);
* **fast**: :func:`clipgeo.embedding.embed.embed_image_refs` (``decode="tensor"``): bytes read in
  workers, batched ``decode_jpeg`` (nvjpeg on CUDA, libjpeg-turbo in the workers on CPU),
  batched resize / crop / normalise, fp16 weights on CUDA, the next batch prepared while
  the current one encodes; then the vectors committed to a LanceDB table (``vectors.write_run``),
  which counts in the fast figure (the baseline writes nothing);
* the minimum per-sample cosine between the two (random weights: preprocessing equality is
  what is compared), the fast path's profile line (bound stage), captions/s through
  :func:`clipgeo.embedding.embed.embed_texts`, and on CUDA the model alone and the GPU utilisation;
* on CPU, when the fast path decoded on one thread of this process (one decode worker, or a
  small job: :func:`clipgeo.embedding.workers.decode_in_thread`), the same call as it ran before
  issue 33, in worker processes from a fork server that this call starts cold (the server
  imports torch, torchvision and open_clip first), and both as ratios to this run's baseline:
  the line ``fast path before / after issue 33 ...`` just above the last one;
* the worker processes started with ``fork`` (before issue 24) and by the fork server (since),
  the server then warm.

The last line is ``fast_img_s=<x> baseline_img_s=<y> ratio=<r> min_cos=<c>`` (fast: the default call).

    python benchmarks/bench_embed.py                                   # CPU, small (< 2 min)
    python benchmarks/bench_embed.py --device cuda --model ViT-B-16    # the GPU figure

No weights are downloaded: the model is open_clip's architecture with random weights.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = [(640, 480)] * 6 + [(480, 640), (640, 427), (500, 375), (427, 640)]
WORDS = ("a man woman child dog cat bus train plate pizza table street red blue green small large two "
         "sitting standing riding holding next to on the of with in front near white black").split()


def synth_jpeg(seed: int, quality: int = 90, noise: float = 7.0) -> bytes:
    """A photo-like JPEG: smooth colour regions, mid-frequency structure and sensor noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = SIZES[seed % len(SIZES)]
    low = Image.fromarray(rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    mid = Image.fromarray(rng.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    arr = np.asarray(low, dtype=np.float32) * 0.7 + np.asarray(mid, dtype=np.float32) * 0.3
    arr += rng.normal(0.0, noise, arr.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_files(root: Path, n: int, pool: int, tar: bool, procs: int) -> list[str]:
    """``n`` image refs over ``pool`` distinct JPEGs (kept between runs under ``root``)."""
    from clipgeo.sources.images import tar_ref

    pool = max(1, min(pool, n))
    src = root / f"pool{pool}"
    src.mkdir(parents=True, exist_ok=True)
    missing = [k for k in range(pool) if not (src / f"{k:06d}.jpg").exists()]
    if missing:
        with ProcessPoolExecutor(max_workers=max(1, procs)) as ex:
            for k, data in zip(missing, ex.map(synth_jpeg, missing, chunksize=8)):
                tmp = src / f".{k:06d}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, src / f"{k:06d}.jpg")
    if tar:
        out = root / f"tars-{pool}-{n}"
        refs = []
        if not (out / "done").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            for s in range(0, n, 1000):
                with tarfile.open(out / f"{s // 1000:05d}.tar", "w") as tf:
                    for k in range(s, min(s + 1000, n)):  # regular members (tf.add would link repeats)
                        data = (src / f"{k % pool:06d}.jpg").read_bytes()
                        info = tarfile.TarInfo(f"{k:08d}.jpg")
                        info.size = len(data)
                        tf.addfile(info, io.BytesIO(data))
            (out / "done").write_text("ok")
        for s in range(0, n, 1000):
            refs += [tar_ref(str(out / f"{s // 1000:05d}.tar"), f"{k:08d}.jpg") for k in range(s, min(s + 1000, n))]
        return refs
    out = root / f"files-{pool}-{n}"
    out.mkdir(parents=True, exist_ok=True)
    refs = []
    for k in range(n):
        p = out / f"{k:08d}.jpg"
        if not p.exists():
            try:
                os.link(src / f"{k % pool:06d}.jpg", p)
            except OSError:
                shutil.copyfile(src / f"{k % pool:06d}.jpg", p)
        refs.append(str(p))
    return refs


class _PilFiles:
    """The baseline's dataset: ``Image.open(path).convert("RGB")`` then open_clip's preprocess."""

    def __init__(self, refs, preprocess):
        self.refs, self.preprocess = refs, preprocess

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        from PIL import Image

        from clipgeo.sources.images import read_image_bytes

        return self.preprocess(Image.open(io.BytesIO(read_image_bytes(self.refs[i]))).convert("RGB"))


def run_baseline(model, preprocess, refs, device, batch_size, workers) -> tuple[np.ndarray, float]:
    import torch
    from torch.utils.data import DataLoader

    cuda = device.startswith("cuda")
    loader = DataLoader(_PilFiles(refs, preprocess), batch_size=batch_size, num_workers=workers, pin_memory=cuda,
                        prefetch_factor=4 if workers else None)
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        for x in loader:
            out.append(model.encode_image(x.to(device, non_blocking=True), normalize=False).float())
        vecs = torch.cat(out).cpu().numpy()
    return vecs, time.perf_counter() - t0


class GpuUtil(threading.Thread):
    """Mean GPU utilisation from ``nvidia-smi`` sampled every 200 ms (None without it)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.proc = None

    def run(self):
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for line in self.proc.stdout:
                try:
                    self.samples.append(float(line.split(",")[0]))
                except ValueError:
                    pass
        except OSError:
            pass

    def stop(self) -> float | None:
        if self.proc is not None:
            self.proc.terminate()
        self.join(timeout=5)
        return float(np.mean(self.samples)) if self.samples else None


def model_only(model, device, batch_size, size, dtype, seconds: float) -> float:
    import torch

    x = torch.randn(batch_size, 3, *size, device=device, dtype=dtype)
    with torch.inference_mode():
        model.encode_image(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.encode_image(x)
            n += batch_size
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="open_clip architecture (default: clipgeo-tiny-vit on CPU, "
                    "ViT-B-16 on CUDA); random weights")
    ap.add_argument("--n", type=int, default=None, help="images (default 256 on CPU, 20000 on CUDA)")
    ap.add_argument("--pool", type=int, default=None, help="distinct JPEGs behind the n files (default min(n, 64 "
                    "on CPU / 1024 on CUDA))")
    ap.add_argument("--batch-size", type=int, default=None, help="default 64 on CPU, 512 on CUDA")
    ap.add_argument("--workers", type=int, default=None, help="decode workers for both paths (default: the machine's)")
    ap.add_argument("--precision", default="auto", help="fast path weights: auto (fp16 on CUDA), fp32, fp16, bf16")
    ap.add_argument("--captions", type=int, default=None, help="captions for captions/s (default 2000 CPU, 200000 CUDA)")
    ap.add_argument("--tar", action="store_true", help="read the JPEGs from webdataset-style tars")
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "clipgeo-bench-jpegs"))
    ap.add_argument("--no-lance", action="store_true", help="do not commit the fast path's vectors to LanceDB")
    ap.add_argument("--quick", action="store_true", help="skip the model-only measurement and the warm-up")
    ap.add_argument("--no-start-compare", action="store_true", help="skip the worker start-method comparison "
                    "(fork vs fork server)")
    a = ap.parse_args(argv)

    import torch

    from clipgeo.embedding.embed import embed_image_refs, embed_texts
    from clipgeo.embedding.image_path import EmbedProfile
    from clipgeo.embedding.precision import prepare_model, resolve_precision
    from clipgeo.embedding.workers import default_num_workers
    from clipgeo.models.loader import load_model
    from clipgeo.embedding.preprocess import spec_from_transform

    logging.getLogger("root").setLevel(logging.ERROR)  # open_clip's "no pretrained weights" notice
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("--device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    model_name = a.model or ("ViT-B-16" if cuda else "clipgeo-tiny-vit")
    n = a.n or (20000 if cuda else 256)
    bs = a.batch_size or (512 if cuda else 64)
    workers = default_num_workers() if a.workers is None else a.workers
    n_caps = a.captions if a.captions is not None else (200000 if cuda else 2000)
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    gpu = torch.cuda.get_device_name(0) if cuda else None
    print(f"machine: {cores} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
          + (f", GPU {gpu}" if gpu else "") + f"; torch {torch.__version__}")

    t0 = time.perf_counter()
    refs = make_files(Path(a.data), n, a.pool or min(n, 1024 if cuda else 64), a.tar, procs=max(cores - 1, 1))
    sizes = [os.path.getsize(r) for r in refs[:200]] if not a.tar else [100_000]
    print(f"data: {n} JPEGs ({'tar members' if a.tar else 'files'}), mean {np.mean(sizes) / 1e3:.0f} KB, "
          f"ready in {time.perf_counter() - t0:.1f} s")

    torch.manual_seed(0)
    lm = load_model(model_name, None, device=a.device)
    base_model = lm.model  # fp32 weights
    fast_lm = prepare_model(dataclasses.replace(lm, model=copy.deepcopy(lm.model)), a.precision)
    spec = spec_from_transform(lm.preprocess)
    precision = resolve_precision(a.precision, a.device)
    print(f"model: {model_name} (random weights), input {spec.output_size if spec else '?'}, batch {bs}, "
          f"{workers} workers; baseline fp32{' + bf16 autocast' if cuda else ''}, fast {precision}")

    if not a.quick:  # warm both paths (cuDNN / nvjpeg / allocator) on one batch
        warm = refs[: min(bs, n)]
        run_baseline(base_model, lm.preprocess, warm, a.device, bs, 0)
        embed_image_refs(fast_lm, warm, batch_size=bs, num_workers=0, decode="tensor", progress=False)
        if cuda:
            torch.cuda.synchronize()

    base_vecs, base_s = run_baseline(base_model, lm.preprocess, refs, a.device, bs, workers)
    print(f"baseline: {n / base_s:.1f} img/s ({base_s:.2f} s; PIL in {workers} workers, open_clip preprocess)")

    from clipgeo.embedding.image_path import embed_image_refs_fast
    from clipgeo.embedding.workers import fork_server_started

    util = GpuUtil() if cuda else None
    if util:
        util.start()
    prof = EmbedProfile()
    try:
        fast_vecs, fast_s, embed_s = run_fast(
            lambda sink: embed_image_refs(fast_lm, refs, batch_size=bs, num_workers=workers, decode="tensor",
                                          progress=False, profile=prof, sink=sink), n, fast_lm.embed_dim,
            not a.no_lance)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    gpu_util = util.stop() if util else None
    print(f"fast: {n / fast_s:.1f} img/s end to end ({fast_s:.2f} s: embed {embed_s:.2f} s, then LanceDB commit "
          f"{fast_s - embed_s:.2f} s more, written while embedding); embed alone {n / embed_s:.1f} img/s"
          + (f"; GPU utilisation {gpu_util:.0f}%" if gpu_util is not None else ""))
    print(prof.line())

    before_line = None
    if not cuda and workers and prof.worker_threads:
        # Issue 33, the same call as it ran before: worker processes from the fork server. The
        # "now" call above started nothing, so unless something else in this process did, the
        # server starts cold here, as it did in the first call of every process before.
        cold = not fork_server_started()
        prof_b = EmbedProfile()
        try:
            _, before_s, _ = run_fast(
                lambda sink: embed_image_refs_fast(fast_lm, refs, batch_size=bs, num_workers=workers, progress=False,
                                                   profile=prof_b, sink=sink, worker_threads=False), n,
                fast_lm.embed_dim, not a.no_lance)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        base = n / base_s
        server = "started cold by the call" if cold else "already running"
        before_line = (f"fast path before / after issue 33 (this run, baseline {base:.1f} img/s): before "
                       f"{n / before_s:.1f} img/s = {n / before_s / base:.2f} x baseline ({workers} worker "
                       f"process{'es' if workers > 1 else ''}, fork server {server}: {prof_b.start:.2f} s before "
                       f"the first batch); now {n / fast_s:.1f} img/s = {n / fast_s / base:.2f} x baseline "
                       f"(1 decode thread, nothing started)")

    cos = (fast_vecs * base_vecs).sum(1) / (np.linalg.norm(fast_vecs, axis=1) * np.linalg.norm(base_vecs, axis=1))
    print(f"cosine fast vs baseline: min {cos.min():.6f}, mean {cos.mean():.6f}")

    if not a.quick and spec is not None:
        out = spec.output_size
        dtype = next(fast_lm.model.parameters()).dtype
        secs = 5.0 if cuda else 2.0
        print(f"model only: {model_only(fast_lm.model, a.device, bs, out, dtype, secs):.1f} img/s ({precision}, "
              f"batch {bs})")

    if workers and not a.no_start_compare:
        print(start_method_line(fast_lm, refs, bs, workers, n_caps))

    if n_caps:
        rng = np.random.default_rng(0)
        caps = [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 16)))) for _ in range(n_caps)]
        tb = 1024 if cuda else 256
        embed_texts(fast_lm, caps[:tb], batch_size=tb, num_workers=0, progress=False)  # warm
        t3 = time.perf_counter()
        embed_texts(fast_lm, caps, batch_size=tb, num_workers=workers, progress=False)
        if cuda:
            torch.cuda.synchronize()
        print(f"captions: {n_caps / (time.perf_counter() - t3):.1f} captions/s ({n_caps} captions, batch {tb}, "
              f"tokenised in {workers} workers)")

    if before_line:
        print(before_line)
    ratio = (n / fast_s) / (n / base_s)
    print(f"fast_img_s={n / fast_s:.1f} baseline_img_s={n / base_s:.1f} ratio={ratio:.2f} min_cos={cos.min():.6f}")
    return 0


def run_fast(call, n: int, dim: int, lance: bool) -> tuple[np.ndarray, float, float]:
    """``call(sink)`` (one fast-path embed of the ``n`` refs) with its ``dim``-wide vectors
    streamed into a LanceDB table of a fresh data home while it embeds (``lance``).
    Returns the vectors, the seconds to the committed table and the seconds of the embed alone;
    raises RuntimeError when an image was rejected or the table is short."""
    from clipgeo.core.config import DataHome
    from clipgeo.embedding.image_path import BackgroundStream
    from clipgeo.store import vectors

    with tempfile.TemporaryDirectory(prefix="clipgeo-bench-lance-") as tmp:
        home = DataHome.resolve(tmp)
        vectors.connect(home)
        stream = None
        t1 = time.perf_counter()
        if lance:
            empty = np.zeros((0, dim), dtype=np.float32)

            def lance_batches(items):  # (indices, rows) -> record batches of the run's table
                for idx, rows in items:
                    yield from vectors.record_batches("rbench", image_ids=[f"{k:08d}" for k in idx], images=rows,
                                                      sample_ids=[], text_image_ids=[], texts=empty)

            stream = BackgroundStream(lambda items: vectors.write_run_batches(home, "rbench", dim,
                                                                              lance_batches(items)))
        vecs, ok, fails = call(None if stream is None else (lambda i, r: stream.put((i, r))))
        t2 = time.perf_counter()
        written = stream.close() if stream is not None else 0
        total = time.perf_counter() - t1
        if stream is not None and (written != n or vectors.count_rows(home, "rbench").get("image") != n):
            raise RuntimeError(f"LanceDB table has {written} rows, expected {n}")
    if fails or not ok.all():
        raise RuntimeError(f"fast path rejected {len(fails)} images: {fails[:3]}")
    return vecs, total, t2 - t1


def start_method_line(lm, refs, bs: int, workers: int, n_caps: int) -> str:
    """Worker processes before and after issue 24 in this run: images/s and captions/s with the
    workers forked from this process (``fork``, before) and started by the fork server (since;
    the server already running), alternating twice to even out load. ``CLIPGEO_WORKER_START``
    being set makes the image path use worker processes (not its decode thread)."""
    from clipgeo.embedding.embed import embed_image_refs, embed_texts

    rng = np.random.default_rng(1)
    caps = [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 16)))) for _ in range(min(n_caps or 1000, 4000))]
    best: dict[str, list[float]] = {}
    saved = os.environ.get("CLIPGEO_WORKER_START")
    try:
        for method in ("fork", "forkserver", "fork", "forkserver"):
            os.environ["CLIPGEO_WORKER_START"] = method
            t = time.perf_counter()
            embed_image_refs(lm, refs, batch_size=bs, num_workers=workers, decode="tensor", progress=False)
            ti = time.perf_counter() - t
            t = time.perf_counter()
            embed_texts(lm, caps, batch_size=256, num_workers=workers, progress=False)
            tc = time.perf_counter() - t
            old = best.get(method, [0.0, 0.0])
            best[method] = [max(old[0], len(refs) / ti), max(old[1], len(caps) / tc)]
    finally:
        if saved is None:
            os.environ.pop("CLIPGEO_WORKER_START", None)
        else:
            os.environ["CLIPGEO_WORKER_START"] = saved
    (fi, fc), (si, sc) = best["fork"], best["forkserver"]
    return (f"worker processes ({workers} workers, best of 2 each): fork (before issue 24) {fi:.1f} img/s, "
            f"{fc:.1f} captions/s; forkserver, server running (since) {si:.1f} img/s, {sc:.1f} captions/s; ratio "
            f"since/before {si / fi:.2f} (images), {sc / fc:.2f} (captions)")


if __name__ == "__main__":
    sys.exit(main())
