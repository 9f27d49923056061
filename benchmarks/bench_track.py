"""What a trajectory costs: per checkpoint, one embedding of the evaluation set and one light
measurement (the sections of a trajectory point), beside a full measurement of the same run.

    .venv/bin/python benchmarks/bench_track.py                       # 1,000 val images, 4 points (steps 0..60)
    .venv/bin/python benchmarks/bench_track.py --n-val 300 --steps 40 --save-every 10

It builds a fresh data home (``shapes``: ``--n-train`` train / ``--n-val`` val images), trains
one tiny InfoNCE model for ``--steps`` steps keeping its weights every ``--save-every`` steps
(:func:`clipgeo.models.train.train_tiny`), then for each checkpoint, in this process and
without Prefect: embeds the val split (:func:`clipgeo.stages.embedding.embed_run`) and
measures :data:`clipgeo.stages.track.LIGHT_SECTIONS`; finally measures the last checkpoint's run
with every section (the full suite the first and last points get). It prints one row per point
(embed s, light measure s) and the full measurement's time, and the ratio full / light from this
run. No assertion on times (a shared machine): compare the columns of one run only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--save-every", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the data home (default: removed at the end)")
    a = ap.parse_args()

    from clipgeo.core.config import DataHome, torch_threads
    from clipgeo.models.train import TrainSpec, intermediate_dir, train_tiny
    from clipgeo.sources.shapes import ShapesSpec
    from clipgeo.stages.embedding import ModelRef, embed_run
    from clipgeo.stages.ingest import ingest_shapes, load_samples
    from clipgeo.stages.measure import measure_run
    from clipgeo.stages.track import LIGHT_SECTIONS
    from clipgeo.tracking import find_checkpoints

    home = DataHome.resolve(tempfile.mkdtemp(prefix="bench-track-")).ensure()
    splits = ingest_shapes(home, ShapesSpec(n_train=a.n_train, n_val=a.n_val), progress=False)
    tr, val = splits["train"].dataset_id, splits["val"].dataset_id
    t0 = time.perf_counter()
    res = train_tiny(load_samples(home, tr), TrainSpec(steps=a.steps), home.checkpoints, tr, progress=False,
                     num_threads=torch_threads(), save_every=a.save_every)
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} cores; data home {home.root}")
    print(f"trained {a.steps} steps in {time.perf_counter() - t0:.1f} s, checkpoints every {a.save_every} steps")
    print(f"{'checkpoint':<18} {'embed s':>8} {'light measure s':>16}")
    light, embeds, last = [], [], None
    for ckpt in find_checkpoints(intermediate_dir(res.checkpoint)):
        t = time.perf_counter()
        plan = embed_run(home, ModelRef("clipgeo-tiny-vit", str(ckpt)), val, progress=False)
        e = time.perf_counter() - t
        t = time.perf_counter()
        measure_run(home, plan.run_id, sections=list(LIGHT_SECTIONS))
        m = time.perf_counter() - t
        embeds.append(e)
        light.append(m)
        last = plan.run_id
        print(f"{ckpt.name:<18} {e:>8.2f} {m:>16.2f}")
    t = time.perf_counter()
    measure_run(home, last)
    full = time.perf_counter() - t
    n = len(light)
    print(f"per point (mean of {n}): embed {sum(embeds) / n:.2f} s + light measure {sum(light) / n:.2f} s")
    print(f"full measurement of the last point: {full:.2f} s = {full / (sum(light) / n):.1f}x a light one")
    print(f"load at the end: {os.getloadavg()[0]:.2f}")
    if not a.keep:
        import shutil

        shutil.rmtree(home.root, ignore_errors=True)


if __name__ == "__main__":
    main()
