"""clipgeo's measure stage against the plain numpy script a researcher would write, on the same files.

    python benchmarks/bench_measure.py --pairs 1000000                 # generate, import, measure, baseline
    python benchmarks/bench_measure.py --dump D --home H --run-id R    # reuse a generated, imported release
    python benchmarks/bench_measure.py --pairs 1000000 --busy 1        # beside one busy process

1. generates ``--pairs`` image–caption pairs in the LAION release layout (float16, L2-normalised,
   100,000-row parts: :func:`bench_scale.generate`) and imports them (``import_embeddings``), unless
   ``--dump``/``--home`` name ones made before (the import is not what is compared);
2. runs clipgeo's measure stage (``measure_run`` under ``threadpool_limits(blas_threads())``, as the
   Prefect task does) in a subprocess: every section;
3. runs, in another subprocess, the baseline: a plain numpy script over the same ``.npy`` parts
   (100,000-row chunks, float64 accumulators; rows renormalised in float64) computing the figures
   both produce: the modality gap, both covariance spectra (λ₁, both effective ranks), the exact mean
   cosine within each modality and across unpaired pairs, recall@1 both ways on one 5,000-pair
   gallery (clipgeo's first sub-gallery: the 5,000 images with the smallest ``blake2b("0:" + id)``
   keys, so the two can be compared);
4. prints for each: wall seconds, CPU seconds and utilisation (CPU / wall, 2.0 = both cores),
   peak RSS, the load average before it; clipgeo's per-section seconds; the time clipgeo spent on
   the shared figures (its sections ``retrieval`` + ``modality_gap`` (which holds the one moment
   pass) + ``spectra`` + ``cosines``) over the baseline's; and the largest relative difference
   of each shared figure. Nothing is asserted (``tests/test_bench_measure.py`` runs a tiny one).

``--repeat-moments K`` (with ``--home``/``--run-id``) instead runs K moment passes in one process and
prints the resident set after each: what the allocator keeps must not grow with the rows scanned.

The last line: ``pairs=N measure_s=… shared_s=… numpy_s=… ratio=… peak_rss_gb=… (clipgeo's) numpy_rss_gb=… load=…``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stages  # noqa: E402
SHARED_SECTIONS = ("retrieval", "modality_gap", "spectra", "cosines")
GALLERY = 5000


def _peak_rss_gb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20
    return float("nan")


def _load() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------------------ the baseline


def numpy_baseline(dump: Path, gallery: int = GALLERY, seed: int = 0) -> dict:
    """The plain numpy script (module doc, step 3). Returns its figures."""
    import hashlib

    import pyarrow.parquet as pq

    parts = sorted((dump / "img_emb").glob("img_emb_*.npy"), key=lambda p: int(p.stem.split("_")[-1]))
    keys = [pq.read_table(dump / "metadata" / f"metadata_{p.stem.split('_')[-1]}.parquet", columns=["key"])
            .column("key").to_pylist() for p in parts]
    # the gallery: the `gallery` images with the smallest blake2b(f"{seed}:{id}") keys (clipgeo's first sub-gallery)
    flat = [k for ks in keys for k in ks]
    h = np.fromiter((int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "big")
                     for k in flat), dtype=np.uint64, count=len(flat))
    chosen = np.sort(np.argpartition(h, gallery - 1)[:gallery]) if len(flat) > gallery else np.arange(len(flat))
    sums = {m: [0, None, None, 0.0] for m in ("img", "txt")}   # n, Σu, Σuuᵀ, Σ‖u‖²
    gal = {"img": [], "txt": []}
    paired = 0.0
    start = 0
    for p in parts:
        i = p.stem.split("_")[-1]
        blocks = {"img": np.load(p), "txt": np.load(dump / "text_emb" / f"text_emb_{i}.npy")}
        n = blocks["img"].shape[0]
        for lo in range(0, n, 100_000):
            rows = chosen[(chosen >= start + lo) & (chosen < start + lo + 100_000)] - start - lo
            units = {}
            for m, x in blocks.items():
                u = x[lo:lo + 100_000].astype(np.float64)
                u /= np.linalg.norm(u, axis=1, keepdims=True)
                s = sums[m]
                s[0] += u.shape[0]
                s[1] = u.sum(0) if s[1] is None else s[1] + u.sum(0)
                s[2] = u.T @ u if s[2] is None else s[2] + u.T @ u
                s[3] += float(np.einsum("ij,ij->", u, u))
                gal[m].append(u[rows])
                units[m] = u
            paired += float(np.einsum("ij,ij->", units["img"], units["txt"]))
            del units
        start += n
    out: dict = {}
    for m in ("img", "txt"):
        n, s1, g, q = sums[m]
        mu = s1 / n
        lam = np.clip(np.linalg.eigvalsh(g / n - np.outer(mu, mu))[::-1], 0, None)
        p = lam[lam > 0] / lam.sum()
        ps = np.sqrt(lam[lam > 0]) / np.sqrt(lam[lam > 0]).sum()
        out[f"{m}_lambda_1"] = float(lam[0])
        out[f"{m}_effective_rank_lambda"] = float(np.exp(-(p * np.log(p)).sum()))
        out[f"{m}_effective_rank_sigma"] = float(np.exp(-(ps * np.log(ps)).sum()))
        out[f"{m}_mean_cos"] = float((s1 @ s1 - q) / (n * (n - 1)))
    ni, nt = sums["img"][0], sums["txt"][0]
    out["gap"] = float(np.linalg.norm(sums["img"][1] / ni - sums["txt"][1] / nt))
    out["mean_unpaired_cos"] = float((sums["img"][1] @ sums["txt"][1] - paired) / (ni * nt - ni))
    gi, gt = np.concatenate(gal["img"]), np.concatenate(gal["txt"])
    s = gt @ gi.T                                       # captions x images, float64
    own = np.diag(s)
    out["t2i_r1"] = float(np.mean((s > own[:, None]).sum(1) < 1))
    out["i2t_r1"] = float(np.mean((s.T > own[:, None]).sum(1) < 1))
    return out


# ------------------------------------------------------------------------------ stages


def stage_main(args: argparse.Namespace) -> None:
    """One stage in this process; prints one JSON line."""
    t0, c0, load = time.perf_counter(), time.process_time(), _load()
    out: dict = {"stage": args.stage, "load": load}
    if args.stage == "import":
        from bench_scale import generate

        from clipgeo.core.config import DataHome
        from clipgeo.stages.imports import import_embeddings

        dump = Path(args.dump)
        if not (dump / "img_emb").exists():
            generate(dump, args.pairs, args.dim, part_rows=args.part_rows, normalized=True)
        out["run_id"] = import_embeddings(DataHome.resolve(args.home).ensure(), dump, name="bench")
    elif args.stage == "measure":
        from threadpoolctl import threadpool_limits

        from clipgeo.core.config import DataHome, blas_threads
        from clipgeo.stages.measure import measure_run

        out["blas_threads"] = blas_threads()
        with threadpool_limits(out["blas_threads"]):
            secs = args.sections.split(",") if args.sections else None
            out["sections"] = measure_run(DataHome.resolve(args.home), args.run_id, sections=secs).sections
    elif args.stage == "numpy":
        out["figures"] = numpy_baseline(Path(args.dump), seed=0)
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - c0
    out["peak_rss_gb"] = _peak_rss_gb()
    print(json.dumps(out))


def repeat_moments(home: Path, run_id: str, k: int) -> None:
    """``k`` moment passes in this process (as the measure stage runs them), with the resident set
    after each and the peak: what the allocator keeps must not grow with the rows scanned."""
    from clipgeo.core.config import DataHome
    from clipgeo.streaming.partials import moment_partial
    from clipgeo.streaming.reader import LanceRun

    run = LanceRun.open(DataHome.resolve(home), run_id)
    n = run.count("image") + run.count("text")
    for i in range(k):
        t0 = time.perf_counter()
        moment_partial(run.uri)
        with open("/proc/self/status") as fh:
            rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 2 ** 20
        print(f"pass {i + 1}: {(i + 1) * n:,} rows scanned, {time.perf_counter() - t0:.1f} s, "
              f"resident after {rss:.2f} GiB, peak {_peak_rss_gb():.2f} GiB", flush=True)


def run_stage(stage: str, **kw) -> dict:
    return _stages.run_stage(__file__, stage, **kw)[0]


def clipgeo_figures(home: Path, run_id: str) -> tuple[dict, list[tuple[str, float, float]]]:
    """The shared figures as clipgeo stored them, and ``(section, seconds, cpu_seconds)`` rows."""
    import duckdb

    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        q = lambda sql, *a: con.execute(sql, list(a)).fetchall()  # noqa: E731
        out = {"gap": q("SELECT gap FROM modality_gap WHERE run_id = ?", run_id)[0][0],
               "mean_unpaired_cos": q("SELECT mean_unpaired_cos FROM modality_gap WHERE run_id = ?", run_id)[0][0]}
        for scope, m in (("image", "img"), ("text", "txt")):
            lam, erl, ers = q("SELECT lambda_1, effective_rank_lambda_entropy, effective_rank_sigma_entropy FROM "
                              "topo_spectra_summary WHERE run_id = ? AND scope = ?", run_id, scope)[0]
            out[f"{m}_lambda_1"], out[f"{m}_effective_rank_lambda"], out[f"{m}_effective_rank_sigma"] = lam, erl, ers
        for kind, m in (("image_image", "img"), ("text_text", "txt")):
            out[f"{m}_mean_cos"] = q("SELECT mean FROM topo_cosine_summary WHERE run_id = ? AND kind = ?", run_id, kind)[0][0]
        for direction, key in (("text_to_image", "t2i_r1"), ("image_to_text", "i2t_r1")):
            out[key] = q("SELECT recall_mean FROM retrieval_gallery WHERE run_id = ? AND direction = ? AND k = 1"
                         " AND definition IN ('sub_gallery', 'full_gallery')", run_id, direction)[0][0]
        # recall@1 over the queries of the baseline's gallery (clipgeo's first sub-gallery), from the stored ranks
        caps, imgs = _gallery(home, run_id)
        for direction, ids, key in (("text_to_image", caps, "t2i_r1_gallery0"), ("image_to_text", imgs, "i2t_r1_gallery0")):
            out[key] = q("SELECT avg(CASE WHEN rank < 1 THEN 1.0 ELSE 0.0 END) FROM retrieval_ranks WHERE run_id = ? "
                         "AND direction = ? AND query_id IN (SELECT unnest(?))", run_id, direction, ids)[0][0]
        secs = q("SELECT section, seconds, cpu_seconds FROM measure_sections WHERE run_id = ? ORDER BY seconds DESC", run_id)
    finally:
        con.close()
    return out, secs


def _gallery(home: Path, run_id: str) -> tuple[list[str], list[str]]:
    from clipgeo.core.config import DataHome
    from clipgeo.streaming.reader import LanceRun

    run = LanceRun.open(DataHome.resolve(home), run_id)
    rv, _ = run.sample(GALLERY, 0, normalized=True)
    return rv.sample_ids.tolist(), rv.image_ids.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--part-rows", type=int, default=100_000)
    ap.add_argument("--work", default=None, help="folder for a generated dump and data home (default: system temp)")
    ap.add_argument("--dump", default=None, help="an existing LAION-layout dump (skips generating)")
    ap.add_argument("--home", default=None, help="a data home the dump was imported into (with --run-id)")
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--busy", type=int, default=0, help="busy processes (`while 1: pass`) beside both runs")
    ap.add_argument("--sections", default=None, help="comma-separated measure sections (default: every one)")
    ap.add_argument("--repeat-moments", type=int, default=0, metavar="K",
                    help="instead: K moment passes over the imported run in one process, printing the resident set "
                         "after each and the peak (does memory grow with the rows scanned?)")
    ap.add_argument("--stage", choices=("import", "measure", "numpy"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        stage_main(args)
        return
    if args.repeat_moments:
        if not (args.home and args.run_id):
            ap.error("--repeat-moments needs --home and --run-id of an imported run")
        repeat_moments(Path(args.home), args.run_id, args.repeat_moments)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="clipgeo-bench-measure-"))
    dump = Path(args.dump) if args.dump else work / f"dump{args.pairs}"
    home = Path(args.home) if args.home else work / f"home{args.pairs}"
    run_id = args.run_id
    if run_id is None:
        imp = run_stage("import", home=home, dump=dump, pairs=args.pairs, dim=args.dim, part_rows=args.part_rows)
        run_id = imp["run_id"]
        print(f"import: {imp['wall_s']:.1f} s (not compared)", flush=True)
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.busy)]
    try:
        time.sleep(1.0 if busy else 0.0)
        cg = run_stage("measure", home=home, run_id=run_id, sections=args.sections)
        npb = run_stage("numpy", dump=dump)
    finally:
        for p in busy:
            p.kill()
    figs, secs = clipgeo_figures(home, run_id)
    shared = sum(s for name, s, _ in secs if name in SHARED_SECTIONS)
    for name, s, cpu in secs:
        print(f"  section {name:22s} {s:8.2f} s   CPU {cpu if cpu is not None else float('nan'):8.2f} s", flush=True)
    for label, r in (("clipgeo measure", cg), ("numpy baseline", npb)):
        print(f"{label:16s} wall {r['wall_s']:8.1f} s   CPU {r['cpu_s']:8.1f} s   utilisation {r['cpu_s'] / r['wall_s']:4.2f}"
              f"   peak RSS {r['peak_rss_gb']:5.2f} GiB   load before {r['load']:.2f}", flush=True)
    print(f"clipgeo BLAS threads at start: {cg.get('blas_threads')}; busy processes beside: {args.busy}")
    print(f"shared figures: clipgeo {shared:.1f} s (sections {', '.join(SHARED_SECTIONS)}) vs numpy {npb['wall_s']:.1f} s:"
          f" ratio {shared / npb['wall_s']:.2f}; whole measure stage {cg['wall_s']:.1f} s")
    base = npb["figures"]
    worst = 0.0
    for k in sorted(k for k in base if k in figs and isinstance(base[k], float)):
        a, b = figs[k], base[k]
        rel = abs(a - b) / max(abs(b), 1e-300) if a is not None else float("nan")
        worst = max(worst, rel) if k not in ("t2i_r1", "i2t_r1") else worst
        print(f"  {k:28s} clipgeo {a!s:>24}   numpy {b!r:>24}   rel diff {rel:.1e}")
    print(f"  recall@1 on the baseline's gallery from clipgeo's stored ranks: T→I {figs.get('t2i_r1_gallery0')!r} "
          f"(numpy {base['t2i_r1']!r}), I→T {figs.get('i2t_r1_gallery0')!r} (numpy {base['i2t_r1']!r}); "
          "t2i_r1 / i2t_r1 above: clipgeo's mean over its sub-galleries")
    print(f"pairs={args.pairs} measure_s={cg['wall_s']:.1f} shared_s={shared:.1f} numpy_s={npb['wall_s']:.1f} "
          f"ratio={shared / npb['wall_s']:.2f} peak_rss_gb={cg['peak_rss_gb']:.2f} numpy_rss_gb={npb['peak_rss_gb']:.2f} "
          f"max_rel_diff={worst:.1e} load={cg['load']:.2f}")


if __name__ == "__main__":
    main()
