"""Timings of the topological suite (clipgeo.topology), with ratios measured in the same run.

    .venv/bin/python benchmarks/bench_topology.py                    # 5,000 pairs + 100,000 pairs
    .venv/bin/python benchmarks/bench_topology.py --large 0          # 5,000 pairs only
    .venv/bin/python benchmarks/bench_topology.py --compare-stock    # + stock umap haversine fit

What it prints:

1. The suite without the UMAP grid on ``--pairs`` pairs (default 5,000) at d = 512, stage by
   stage, three ways, each in its own worker process:
   * ``cold``: a new process with an empty numba cache directory (``NUMBA_CACHE_DIR``), so every
     numba kernel of clipgeo.topology is compiled (the first run after a fresh checkout);
   * ``warm``: the same suite again in that process (everything compiled);
   * ``new process``: a second process re-using the on-disk numba cache (every later run).
   The difference cold − warm per stage is where compilation and first imports go.
2. With ``--compare-stock``: the same UMAP haversine layout with ``engine="umap"`` (stock
   umap-learn SGD, which re-jits its epoch function on every fit) next to ``engine="numba"``,
   both warm, in one process: the speed ratio.
``--blas-threads 1`` caps BLAS/OpenMP threads: on a 2-core machine shared with other jobs the
default two OpenBLAS threads (numpy's and scipy's copies each, plus OpenMP) can make small dense
linear algebra (512 × 512 eigendecompositions, Gram products) tens of times slower.

3. With ``--large N`` (default 100,000): spectra (streamed), separability (full d and top-2 PCs),
   exact retrieval (blocked; never an N × N score matrix) and sampled cosine distributions on N
   pairs at d = 512, each with its time and the peak memory traced by ``tracemalloc`` (numpy
   allocations included) and the process's peak resident set size.

The data are synthetic and CLIP-like (``make_pairs``: shared semantic clusters, a modality gap,
an anisotropic spectrum, modality-pure clusters in the layout). "cold" includes numba
compiling the caches of umap/pynndescent themselves, as after a fresh install. No assertion on
times: this is a report, not a test; on a shared machine compare columns of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np


def make_pairs(n: int, d: int = 512, seed: int = 0, n_clusters: int = 40):
    """CLIP-like synthetic pairs (float32). Per axis k a spread ``(1 + k)^-1/2``; a semantic part
    shared by an image and its caption (one of ``n_clusters`` centres + within-cluster spread);
    an offset per modality (norm 1.65, cos 0.2 between the two: the modality gap); independent
    noise per modality. Normalised cosines: paired ~0.5, image-image ~0.4, text-text ~0.35;
    exact top-1 retrieval ~0.4 at 2,000 pairs; the haversine UMAP shows ~75 modality-pure
    clusters at 2,000 pairs (as the paper's CLIP)."""
    rng = np.random.default_rng(seed)
    scale = (1.0 + np.arange(d)) ** -0.5
    centres = rng.standard_normal((n_clusters, d)) * scale * 0.6
    lab = rng.integers(0, n_clusters, n)
    mu_i = rng.standard_normal(d)
    mu_i /= np.linalg.norm(mu_i)
    ortho = rng.standard_normal(d)
    ortho -= (ortho @ mu_i) * mu_i
    ortho /= np.linalg.norm(ortho)
    mu_t = 0.2 * mu_i + np.sqrt(1 - 0.2**2) * ortho
    sem = centres[lab] + rng.standard_normal((n, d)) * scale * 0.35
    img = (1.65 * mu_i + sem + 0.45 * rng.standard_normal((n, d)) * scale).astype(np.float32)
    txt = (1.65 * mu_t + sem + 0.55 * rng.standard_normal((n, d)) * scale).astype(np.float32)
    return img, txt


# --------------------------------------------------------------------------- the 5k suite


def run_suite(img, txt, ref, eval_img, eval_txt, tmpdir: str) -> tuple[dict[str, float], dict]:
    """One pass of the suite; returns per-stage seconds and a few headline numbers."""
    from clipgeo.topology import (
        cluster_local_dimension,
        cluster_points,
        cosine_distributions,
        lancedb_nearest_reference,
        modality_mixing,
        nearest_reference,
        paired_lines,
        reference_table,
        separability_matrix,
    )
    from clipgeo import spectra, umap_layout

    t: dict[str, float] = {}
    out: dict = {}

    def stage(name, fn):
        t0 = time.perf_counter()
        res = fn()
        t[name] = time.perf_counter() - t0
        return res

    stage("import clipgeo.topology (+umap, hdbscan, lancedb)",
          lambda: (__import__("umap"), __import__("hdbscan"), __import__("lancedb")))
    _, cs = stage("cosine distributions (exact, 4 kinds)", lambda: cosine_distributions(img, txt))
    out["paired_cos_mean"] = float(cs["mean"][0])
    stage("nearest reference, numpy exact", lambda: nearest_reference(img, ref))
    tbl = stage("nearest reference, LanceDB table create",
                lambda: reference_table(os.path.join(tmpdir, "db"), "ref", ref))
    _, info = stage("nearest reference, LanceDB exact search",
                    lambda: lancedb_nearest_reference(tbl, img[:1000], method="exact"))
    lay = stage("UMAP haversine layout (incl. exact kNN)", lambda: umap_layout(img, txt, n_pairs=len(img)))
    _, mix = stage("mixing share (original kNN + layout kNN)", lambda: modality_mixing(img, txt, lay))
    out["mixing_original"] = mix["mean_share_original"]
    out["mixing_layout"] = mix["mean_share_layout"]
    stage("paired lines (PCA plane)", lambda: paired_lines(img, txt, 500, n_fit=len(img)))
    _, sp = stage("spectra (image, text, joint)", lambda: spectra(img, txt))
    out["collapse_joint"] = float(sp["collapse_index"][2])
    out["erank_joint"] = float(sp["effective_rank_lambda_entropy"][2])
    cl = stage("HDBSCAN on sphere xyz", lambda: cluster_points(lay))
    summ, _, corr = stage("cluster local dimension + retrieval ranks + correlation",
                          lambda: cluster_local_dimension(img, txt, cl))
    out["n_clusters"] = int(corr["n_clusters"][0])
    out["spearman"] = float(corr["spearman_rho"][0])
    m = stage("separability matrix (2 sets, raw/normalised, full/PCA-2)",
              lambda: separability_matrix({"A": (img, txt)}, {"A": (img, txt), "B": (eval_img, eval_txt)}))
    out["separability_AA_raw_full"] = float(m["accuracy"][0])
    return t, out


def worker(args) -> None:
    img, txt = make_pairs(args.pairs, seed=0)
    ref, _ = make_pairs(args.pairs, seed=1)
    eimg, etxt = make_pairs(max(args.pairs // 2, 10), seed=2)
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            stages, out = run_suite(img, txt, ref, eimg, etxt, tmp)
            stages["TOTAL"] = time.perf_counter() - t0
        runs.append({"stages": stages, "out": out})
    if args.compare_stock:
        from clipgeo import umap_layout

        cmp = {}
        for engine in ("numba", "umap"):
            t0 = time.perf_counter()
            umap_layout(img, txt, n_pairs=len(img), engine=engine)
            cmp[engine] = time.perf_counter() - t0
        runs.append({"stock": cmp})
    print("JSON:" + json.dumps(runs))


def spawn(args, cache_dir: str, repeat: int, compare_stock: bool = False) -> list:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.blas_threads)
    cmd = [sys.executable, __file__, "--_worker", "--pairs", str(args.pairs), "--repeat", str(repeat)]
    if compare_stock:
        cmd.append("--compare-stock")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("JSON:")]
    if res.returncode != 0 or not line:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(f"worker failed ({res.returncode})")
    return json.loads(line[0][5:])


# --------------------------------------------------------------------------- large


def large(n: int) -> None:
    from clipgeo.geometry.separability import linear_separability
    from clipgeo.retrieval import retrieval_metrics
    from clipgeo import spectra
    from clipgeo.topology import cosine_distributions

    print(f"\n== {n:,} pairs at d = 512 (float32 inputs: {2 * n * 512 * 4 / 2**20:.0f} MiB) ==")
    t0 = time.perf_counter()
    img, txt = make_pairs(n, seed=3)
    print(f"  data generation: {time.perf_counter() - t0:.1f} s")
    rows = []

    def measure(name, fn):
        tracemalloc.start()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
        rows.append((name, dt, peak / 2**20, rss))
        print(f"  {name:<58} {dt:8.1f} s  peak traced {peak / 2**20:8.0f} MiB  max RSS {rss:7.0f} MiB",
              flush=True)
        return res

    _, sp = measure("spectra (streamed d x d scatter; image, text, joint)", lambda: spectra(img, txt))
    print(f"    collapse index (joint) {sp['collapse_index'][2]:.0f}, λ-entropy effective rank {sp['effective_rank_lambda_entropy'][2]:.1f}")
    _, cs = measure("cosine distributions (1M sampled pairs per kind)", lambda: cosine_distributions(img, txt))
    sep = measure("linear separability, all 512 dims (LinearSVC)", lambda: linear_separability(img, txt))
    sep2 = measure("linear separability, top-2 PCs", lambda: linear_separability(img, txt, pca_components=2))
    print(f"    accuracy full {sep['accuracy']:.4f}, PCA-2 {sep2['accuracy']:.4f}")
    ret = measure("exact retrieval, both directions (blocked ranks)", lambda: retrieval_metrics(img, txt))
    print(f"    t2i R@1 {ret['text_to_image_recall@1']:.3f}, i2t R@1 {ret['image_to_text_recall@1']:.3f}")
    total = sum(r[1] for r in rows)
    print(f"  total {total:.1f} s; largest traced peak {max(r[2] for r in rows):.0f} MiB "
          f"(inputs alone: {2 * n * 512 * 4 / 2**20:.0f} MiB); an N x N float32 score matrix "
          f"would be {n * n * 4 / 2**30:.0f} GiB")


# --------------------------------------------------------------------------- main


def suite_report(args) -> None:
    print(f"== suite without the UMAP grid: {args.pairs:,} pairs at d = 512 ==")
    with tempfile.TemporaryDirectory() as cache:
        first = spawn(args, cache, repeat=2)
        again = spawn(args, cache, repeat=1, compare_stock=args.compare_stock)
    cold, warm, newp = first[0]["stages"], first[1]["stages"], again[0]["stages"]
    print(f"  {'stage':<58} {'cold':>8} {'warm':>8} {'new proc':>9}")
    for k in cold:
        print(f"  {k:<58} {cold[k]:8.2f} {warm[k]:8.2f} {newp[k]:9.2f}")
    print(f"  ratio cold / warm total: {cold['TOTAL'] / warm['TOTAL']:.2f}; "
          f"new process (disk cache) / warm: {newp['TOTAL'] / warm['TOTAL']:.2f}")
    print(f"  headline: {json.dumps(first[1]['out'])}")
    if args.compare_stock:
        st = again[1]["stock"]
        print(f"  UMAP haversine layout, warm: engine=numba {st['numba']:.1f} s, stock umap "
              f"{st['umap']:.1f} s, ratio stock / numba = {st['umap'] / st['numba']:.2f}")
    print(f"  load average after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5000, help="pairs for parts 1-2 (0 skips them)")
    ap.add_argument("--large", type=int, default=100_000, help="pairs for part 3 (0 skips it)")
    ap.add_argument("--compare-stock", action="store_true")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="cap BLAS/OpenMP threads (workers and part 3); 0 leaves the defaults")
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        worker(args)
        return

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, "
          f"BLAS threads: {args.blas_threads or 'default'}")
    if args.pairs:
        suite_report(args)
    if args.large:
        if args.blas_threads:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(args.blas_threads):
                large(args.large)
        else:
            large(args.large)


if __name__ == "__main__":
    main()
