"""The ``clipgeo dataset embeddings`` path at scale: import, measure, report of a LAION-layout dump.

    python benchmarks/bench_scale.py --pairs 100000 --dim 768
    python benchmarks/bench_scale.py --pairs 2000 --dim 64 --sections modality_gap,spectra

What it does:

1. generates ``--pairs`` image–caption vector pairs in the clip-retrieval / LAION release layout
   (``img_emb/img_emb_{i}.npy``, ``text_emb/text_emb_{i}.npy``, ``metadata/metadata_{i}.parquet``,
   float16, ``--part-rows`` rows per part) **with structure**: both modalities are drawn from a
   shared ``--rank``-dimensional latent with geometrically decaying variances, mapped into R^d by
   a different random matrix per modality (anisotropic, tilted clouds), offset by a different
   mean per modality (``‖μ_I − μ_T‖`` ≈ 1.5 × the cloud's radius: a modality gap), and paired: the
   caption's latent is ``ρ·z + √(1−ρ²)·z'`` of its image's latent ``z`` (``--rho`` 0.8), plus a
   little isotropic noise. ``--normalized`` L2-normalises both before storing (LAION releases do);
2. runs the stages of ``clipgeo dataset embeddings`` — the library functions its Prefect tasks
   call (``import_embeddings``, ``measure_run``, ``write_reports``), without Prefect's server
   start-up — each in its own subprocess, so each stage's peak RSS (``ru_maxrss``) is its own;
3. prints per-stage wall time and peak RSS, the per-section times of ``measure_sections``, the
   bytes per vector of the run's Lance table, and ends with the line
   ``pairs=<N> dim=<D> wall_s=<t> peak_rss_gb=<m> bytes_per_vector=<b>`` (wall = import +
   measure + report; peak = the largest stage peak).

``--cli`` runs the real ``clipgeo dataset embeddings`` command instead (one process, Prefect
included) and reports its wall time and peak RSS. Nothing is asserted: a report.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCEDB_LOG", "error")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def generate(root: Path, pairs: int, dim: int, *, part_rows: int = 100_000, rank: int = 32, rho: float = 0.8,
             noise: float = 0.05, normalized: bool = False, seed: int = 0) -> None:
    """Write a structured LAION-layout dump of ``pairs`` pairs under ``root`` (see the module doc)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rank = min(rank, dim)
    scales = 0.85 ** np.arange(rank)                     # anisotropy: latent std decays geometrically
    w_img = rng.standard_normal((rank, dim)) / np.sqrt(rank)
    # the text map is a perturbation of the image map: paired vectors are correlated across modalities
    w_txt = 0.8 * w_img + 0.6 * rng.standard_normal((rank, dim)) / np.sqrt(rank)
    radius = float(np.sqrt((scales ** 2).sum() * dim / rank))
    mu_img = rng.standard_normal(dim)
    mu_img *= 1.5 * radius / np.linalg.norm(mu_img)
    mu_txt = rng.standard_normal(dim)
    mu_txt *= 1.5 * radius / np.linalg.norm(mu_txt)
    for part, start in enumerate(range(0, pairs, part_rows)):
        n = min(part_rows, pairs - start)
        z = rng.standard_normal((n, rank)) * scales
        zt = rho * z + np.sqrt(1 - rho ** 2) * rng.standard_normal((n, rank)) * scales
        img = (mu_img + z @ w_img).astype(np.float32)
        img += noise * radius / np.sqrt(dim) * rng.standard_normal((n, dim), dtype=np.float32)
        txt = (mu_txt + zt @ w_txt).astype(np.float32)
        txt += noise * radius / np.sqrt(dim) * rng.standard_normal((n, dim), dtype=np.float32)
        if normalized:
            img /= np.linalg.norm(img, axis=1, keepdims=True)
            txt /= np.linalg.norm(txt, axis=1, keepdims=True)
        np.save(root / "img_emb" / f"img_emb_{part}.npy", img.astype(np.float16))
        np.save(root / "text_emb" / f"text_emb_{part}.npy", txt.astype(np.float16))
        keys = [f"{start + r:09d}" for r in range(n)]
        pq.write_table(pa.table({"key": keys, "caption": [f"caption {k}" for k in keys],
                                 "url": [f"https://example.org/{k}.jpg" for k in keys]}),
                       root / "metadata" / f"metadata_{part}.parquet")


def disk_write_mb_s(folder: Path, mb: int = 512) -> float:
    """Sequential write speed of ``folder``'s disk: ``mb`` MiB in 8 MiB writes, then fsync."""
    path = folder / "ddtest.bin"
    block = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as fh:
        for _ in range(mb // 8):
            fh.write(block)
        os.fsync(fh.fileno())
    dt = time.perf_counter() - t0
    path.unlink()
    return mb / dt


def storage_alternatives(dump: Path, folder: Path, rows: int = 100_000) -> list[tuple[str, float, float]]:
    """Bytes per vector and the time of one normalised streamed scan, for three layouts of the
    first ``rows`` image vectors of the dump: (a) float16 ``vector`` + float32 ``norm`` (what is
    stored), normalised on read; (b) float32 ``vector`` + float32 ``vector_norm`` (the old layout),
    normalised column read; (c) float16 ``vector`` + float16 ``vector_norm``, normalised column read."""
    import lance
    import pyarrow as pa

    x = np.load(dump / "img_emb" / "img_emb_0.npy")[:rows]
    d = x.shape[1]
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    xn = (x.astype(np.float64) / norms[:, None])
    fl = lambda m, t: pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(m, t).reshape(-1)), d)  # noqa: E731
    layouts = {
        "f16 vector + norm, normalised on read": (pa.table({"vector": fl(x, np.float16), "norm": norms.astype(np.float32)}), "derive"),
        "f32 vector + f32 vector_norm (old)": (pa.table({"vector": fl(x, np.float32), "vector_norm": fl(xn, np.float32)}), "vector_norm"),
        "f16 vector + f16 vector_norm": (pa.table({"vector": fl(x, np.float16), "vector_norm": fl(xn, np.float16)}), "vector_norm"),
    }
    out = []
    for name, (tbl, mode) in layouts.items():
        uri = folder / f"alt_{len(out)}.lance"
        ds = lance.write_dataset(tbl, str(uri), mode="overwrite")
        size = sum(p.stat().st_size for p in uri.rglob("*") if p.is_file())
        t0 = time.process_time()  # CPU seconds: the machine may be shared
        total = 0.0
        cols = ["vector", "norm"] if mode == "derive" else ["vector_norm"]
        for b in ds.to_batches(columns=cols, batch_size=16384):
            m = b.column(cols[0]).flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float32)
            if mode == "derive":
                m = m * (1.0 / b.column("norm").to_numpy()).astype(np.float32)[:, None]
            total += float(m[:, 0].sum())
        out.append((name, size / rows, time.process_time() - t0))
        shutil.rmtree(uri, ignore_errors=True)
    return out


def dask_compare(home, run_id: str, parts: int = 8, workers: int = 2) -> dict:
    """The distributed passes of measuring on a ``workers``-process Dask LocalCluster vs in this
    process: the streamed moment pass (per range of Lance rows, merged) and the per-sample pass
    (per range, into Parquet parts, given the merged moments). Wall seconds of each and the
    largest relative difference of the results (gap values, every spectrum value, every
    per-sample statistic)."""
    import tempfile

    from distributed import Client, LocalCluster

    from clipgeo.geometry.ellipsoid import PER_SAMPLE_FIELDS
    from clipgeo.streaming.partials import (gap_from_moments, merge_partials, moment_partial, per_sample_partial,
                               per_sample_plans, read_per_sample, spectra_from_moments)
    from clipgeo.streaming.reader import LanceRun

    run = LanceRun.open(home, run_id)
    ranges = run.row_slices(parts)
    scratch = Path(tempfile.mkdtemp(prefix="dask-", dir=home.root))
    t0 = time.perf_counter()
    single = moment_partial(run.uri)
    single_s = time.perf_counter() - t0
    plans = per_sample_plans(single)
    t0 = time.perf_counter()
    per_sample_partial(run.uri, plans, str(scratch / "single.parquet"))
    single_ps = time.perf_counter() - t0
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(lambda: None)  # workers up before timing
        t0 = time.perf_counter()
        futs = [client.submit(moment_partial, run.uri, grp, pure=False) for grp in ranges]
        merged = merge_partials(client.gather(futs))
        dask_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        paths = [str(scratch / f"part-{i:05d}.parquet") for i in range(len(ranges))]
        futs = [client.submit(per_sample_partial, run.uri, plans, path, grp, pure=False)
                for path, grp in zip(paths, ranges)]
        client.gather(futs)
        dask_ps = time.perf_counter() - t0
    a, b = gap_from_moments(single), gap_from_moments(merged)
    rel = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-300) for k in a)
    sa, sb = spectra_from_moments(single)[0]["sigma"].to_numpy(), spectra_from_moments(merged)[0]["sigma"].to_numpy()
    rel_s = float(np.max(np.abs(sa - sb) / np.maximum(np.abs(sa), 1e-300 + 1e-12 * np.abs(sa).max())))
    rel_p = 0.0
    for m in ("image", "text"):
        n, rank = plans[m].n, plans[m].rank
        x, y = read_per_sample([str(scratch / "single.parquet")], m, n, rank), read_per_sample(paths, m, n, rank)
        for f in PER_SAMPLE_FIELDS:
            u, v = getattr(x, f), getattr(y, f)
            rel_p = max(rel_p, float(np.max(np.abs(u - v) / np.maximum(np.abs(u), 1e-12 * np.abs(u).max()))))
    shutil.rmtree(scratch, ignore_errors=True)
    return {"parts": len(ranges), "workers": workers, "single_s": single_s, "dask_s": dask_s,
            "dask_over_single": dask_s / single_s, "max_rel_diff_gap": rel, "max_rel_diff_spectra": rel_s,
            "single_per_sample_s": single_ps, "dask_per_sample_s": dask_ps, "max_rel_diff_per_sample": rel_p}


def _peak_rss_gb() -> float:
    """This process's peak resident set (``VmHWM``). Not ``ru_maxrss``: on Linux that survives
    ``exec`` (a stage started by a parent that had just generated a large dump would report the
    parent's peak)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2 ** 20   # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def _trace_memory(step_mb: int = 100) -> None:
    """Print, to stderr, where the main thread is each time the process's RSS passes a new
    ``step_mb`` high-water mark (a sampling thread, every 50 ms): which code holds the peak."""
    import threading
    import traceback

    main_id = threading.main_thread().ident

    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024

    def loop() -> None:
        top = 0.0
        while True:
            mb = rss_mb()
            if mb >= top + step_mb:
                top = mb
                frame = sys._current_frames().get(main_id)
                where = " < ".join(f"{f.name}:{f.lineno}" for f in reversed(traceback.extract_stack(frame)[-5:]))
                print(f"rss {mb:8.0f} MB at {where}", file=sys.stderr, flush=True)
            time.sleep(0.05)

    threading.Thread(target=loop, daemon=True).start()


def stage_main(args: argparse.Namespace) -> None:
    """One stage in this process; prints one JSON line (the parent reads the last line)."""
    from clipgeo.core.config import DataHome

    if os.environ.get("CLIPGEO_TRACE_MEMORY"):
        _trace_memory()
    home = DataHome.resolve(args.home).ensure()
    t0 = time.perf_counter()
    c0 = time.process_time()
    out: dict = {"stage": args.stage}
    if args.stage == "import":
        from clipgeo.stages.imports import import_embeddings

        out["run_id"] = import_embeddings(home, Path(args.dump), name="bench")
    elif args.stage == "measure":
        from clipgeo.stages.measure import measure_run

        secs = args.sections.split(",") if args.sections else None
        kw = {k: getattr(args, k) for k in ("sample_images", "full_gallery_max", "sub_gallery_images")
              if getattr(args, k, None) is not None}
        res = measure_run(home, args.run_id, sections=secs, **kw)
        out["sections"] = res.sections
    elif args.stage == "dask":
        out.update(dask_compare(home, args.run_id, args.parts))
    elif args.stage == "report":
        from dashboards.build import write_reports

        out["paths"] = [str(p) for p in write_reports(home, [args.run_id])]
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - c0  # this process's CPU seconds (all threads): load-independent
    out["peak_rss_gb"] = _peak_rss_gb()
    print(json.dumps(out))


def _run_stage(stage: str, home: Path, **kw: str) -> dict:
    out, stderr = _stages.run_stage(__file__, stage, home=home, **kw)
    trace = [line for line in stderr.splitlines() if line.startswith("rss ")]
    if trace:   # CLIPGEO_TRACE_MEMORY=1: where the stage reached its peak
        out["peak_at"] = trace[-1]
    out["rss_after_sections"] = [line for line in stderr.splitlines() if line.startswith("section ") and " rss " in line]
    return out


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _section_times(home: Path, run_id: str) -> list[tuple[str, str, float]]:
    import duckdb

    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        cols = [r[0] for r in con.execute("DESCRIBE measure_sections").fetchall()]
        cpu = "cpu_seconds" if "cpu_seconds" in cols else "NULL"
        return con.execute(f"SELECT section, status, seconds, {cpu} FROM measure_sections WHERE run_id = ?"
                           " ORDER BY seconds DESC", [run_id]).fetchall()
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--part-rows", type=int, default=100_000)
    ap.add_argument("--normalized", action="store_true", help="store L2-normalised vectors (as LAION releases do)")
    ap.add_argument("--sections", default=None, help="comma-separated measure sections (default: all)")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--sample-images", type=int, default=None, help="measure_run's sample size (default: its own)")
    ap.add_argument("--full-gallery-max", type=int, default=None, help="measure_run's full-gallery limit")
    ap.add_argument("--sub-gallery-images", type=int, default=None, help="measure_run's sub-gallery size")
    ap.add_argument("--cli", action="store_true", help="run `clipgeo dataset embeddings` in one process instead")
    ap.add_argument("--tmp", default=None, help="folder for the dump and the data home (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the dump and data home")
    ap.add_argument("--drop-dump", action="store_true",
                    help="delete the dump's vector files once imported (frees ~31 GB at 10M x 768 before measuring; "
                         "the import itself still needs the dump and the table, ~62 GB)")
    ap.add_argument("--storage", action="store_true", help="also compare storage layouts (bytes, normalised scan time)")
    # internal: one stage in a subprocess
    ap.add_argument("--dask", action="store_true", help="also time the streamed moment pass on a 2-worker Dask LocalCluster")
    ap.add_argument("--parts", type=int, default=8, help="row ranges for --dask")
    ap.add_argument("--stage", choices=("import", "measure", "report", "dask"), help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        stage_main(args)
        return

    work = Path(tempfile.mkdtemp(prefix="clipgeo-scale-", dir=args.tmp))
    dump, home = work / "dump", work / "home"
    try:
        t0 = time.perf_counter()
        generate(dump, args.pairs, args.dim, part_rows=args.part_rows, normalized=args.normalized)
        dump_bytes = _dir_bytes(dump / "img_emb") + _dir_bytes(dump / "text_emb")
        print(f"generate: {time.perf_counter() - t0:.1f} s, {dump_bytes / 2**20:.1f} MiB of float16 vectors", flush=True)
        stages: list[dict] = []
        if args.cli:
            cmd = [sys.executable, "-m", "flows.cli", "dataset", "embeddings", str(dump), "--home", str(home)]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
            t1 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                raise SystemExit("clipgeo dataset embeddings failed")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20
            stages.append({"stage": "cli", "wall_s": time.perf_counter() - t1, "peak_rss_gb": peak})
            import duckdb

            con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
            run_id = con.execute("SELECT run_id FROM runs").fetchone()[0]
            con.close()
        else:
            imp = _run_stage("import", home, dump=str(dump))
            run_id = imp["run_id"]
            stages.append(imp)
            if args.drop_dump and not args.storage:
                for sub in ("img_emb", "text_emb"):
                    shutil.rmtree(dump / sub)
                print("dropped the dump's vector files after the import (--drop-dump)", flush=True)
            stages.append(_run_stage("measure", home, run_id=run_id, sections=args.sections,
                                     sample_images=args.sample_images, full_gallery_max=args.full_gallery_max,
                                     sub_gallery_images=args.sub_gallery_images))
            if not args.no_report:
                stages.append(_run_stage("report", home, run_id=run_id))
        if args.dask:
            dk = _run_stage("dask", home, run_id=run_id, parts=args.parts)
            print(f"dask: moment pass over {dk['parts']} row ranges, {dk['workers']} workers {dk['dask_s']:.1f} s "
                  f"vs one process {dk['single_s']:.1f} s (ratio {dk['dask_over_single']:.2f}); max relative difference "
                  f"gap {dk['max_rel_diff_gap']:.1e}, spectra {dk['max_rel_diff_spectra']:.1e}", flush=True)
            print(f"dask: per-sample pass {dk['dask_per_sample_s']:.1f} s vs one process {dk['single_per_sample_s']:.1f} s "
                  f"(ratio {dk['dask_per_sample_s'] / dk['single_per_sample_s']:.2f}); max relative difference "
                  f"{dk['max_rel_diff_per_sample']:.1e}", flush=True)
        for s in stages:
            cpu = f"   CPU {s['cpu_s']:9.1f} s" if "cpu_s" in s else ""
            print(f"stage {s['stage']:8s} wall {s['wall_s']:9.1f} s{cpu}   peak RSS {s['peak_rss_gb']:6.2f} GiB", flush=True)
            if s.get("peak_at"):
                print(f"  {s['stage']} peak: {s['peak_at']}", flush=True)
            for line in s.get("rss_after_sections", []):
                print(f"  {s['stage']} {line}", flush=True)
        for name, status, secs, cpu in _section_times(home, run_id):
            cpu_s = f"   CPU {cpu:9.2f} s" if cpu is not None else ""
            print(f"  section {name:22s} {status:8s} {secs:9.2f} s{cpu_s}")
        mb_s = disk_write_mb_s(work)
        imp_s = next((s["wall_s"] for s in stages if s["stage"] == "import"), None)
        lance_bytes = _dir_bytes(home / "lance" / f"vectors_{run_id}.lance")
        if imp_s:
            print(f"import: {lance_bytes / 2**20 / imp_s:.0f} MiB/s written to Lance ({2 * args.pairs / imp_s:,.0f} vectors/s); "
                  f"disk sequential write (fsync'd) {mb_s:.0f} MiB/s, measured now")
        if args.storage:
            for name, bpv_, secs in storage_alternatives(dump, work, min(args.pairs, args.part_rows)):
                print(f"  layout {name:40s} {bpv_:8.0f} B/vector   normalised scan {secs:6.2f} CPU s")
        n_vectors = 2 * args.pairs
        bpv = lance_bytes / n_vectors
        print(f"lance table: {lance_bytes / 2**20:.1f} MiB for {n_vectors} vectors; "
              f"float16 source: {dump_bytes / n_vectors:.0f} B/vector")
        wall = sum(s["wall_s"] for s in stages)
        peak = max(s["peak_rss_gb"] for s in stages)
        print(f"pairs={args.pairs} dim={args.dim} wall_s={wall:.1f} peak_rss_gb={peak:.2f} bytes_per_vector={bpv:.0f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
