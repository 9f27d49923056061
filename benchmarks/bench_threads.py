"""Training and measuring speed with 1 vs 2 torch/BLAS threads, alone and beside busy CPU processes.

    python benchmarks/bench_threads.py [--steps 30] [--busy 0 1] [--threads 1 2]

For each (busy processes, threads) pair it trains a tiny model from scratch for ``--steps``
steps (batch 128, shapes 64 px) and reports seconds per step (median of the steps after the
first 3), then times a BLAS-bound measuring kernel (Gram matrix + eigen-decomposition of a
4096 x 512 float32 matrix) with the same thread count. ``busy`` processes are
``python -c 'while 1: pass'`` started beside it and killed after. The 1-minute load average
before each cell is printed, so a shared machine's other load is visible.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train_seconds_per_step(home, dataset_id, threads: int, steps: int) -> float:
    import torch

    from clipgeo.models import train as tr
    from clipgeo.stages.ingest import load_samples

    times: list[float] = []
    real_step = torch.optim.AdamW.step

    def timed(self, *a, **k):  # the optimiser step marks the end of one training step
        out = real_step(self, *a, **k)
        times.append(time.perf_counter())
        return out

    torch.optim.AdamW.step = timed
    try:
        with tempfile.TemporaryDirectory() as out:
            tr.train_tiny(load_samples(home, dataset_id), tr.TrainSpec(steps=steps, seed=len(times)), Path(out),
                          dataset_id, progress=False, num_threads=threads)
    finally:
        torch.optim.AdamW.step = real_step
    gaps = sorted(b - a for a, b in zip(times[3:], times[4:]))
    return gaps[len(gaps) // 2]


def measure_seconds(threads: int, reps: int = 3) -> float:
    import numpy as np
    from threadpoolctl import threadpool_limits

    x = np.random.default_rng(0).standard_normal((4096, 512)).astype(np.float32)
    best = float("inf")
    with threadpool_limits(threads):
        for _ in range(reps):
            t0 = time.perf_counter()
            g = x @ x.T
            np.linalg.eigvalsh(np.cov(x, rowvar=False).astype(np.float64))
            best = min(best, time.perf_counter() - t0)
            del g
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    from clipgeo.core.config import DataHome
    from clipgeo.sources.shapes import ShapesSpec
    from clipgeo.stages.ingest import ingest_shapes

    home = DataHome.resolve(tempfile.mkdtemp(prefix="bench-threads-")).ensure()
    ds = ingest_shapes(home, ShapesSpec(n_train=512, n_val=8, seed=1), progress=False)["train"].dataset_id
    print(f"cores usable: {len(os.sched_getaffinity(0))}")
    print(f"{'busy':>4} {'threads':>7} {'load1':>6} {'train s/step':>13} {'measure s':>10}")
    for busy in a.busy:
        hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(busy)]
        try:
            time.sleep(1.0)
            for th in a.threads:
                load = os.getloadavg()[0]
                s = train_seconds_per_step(home, ds, th, a.steps)
                m = measure_seconds(th)
                print(f"{busy:>4} {th:>7} {load:>6.2f} {s:>13.3f} {m:>10.3f}", flush=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()


if __name__ == "__main__":
    main()
