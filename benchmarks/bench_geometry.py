"""Timings of the geometry metrics, with ratios measured in the same run.

    .venv/bin/python benchmarks/bench_geometry.py                 # 5,000 images + 25,000 captions, d = 512
    .venv/bin/python benchmarks/bench_geometry.py --large 1000000 # + streamed 1M x 512 per modality

What it prints:

1. conformity: the exact O(N·d) identity against the O(N²·d) definition, timed on the same
   data at ``--brute-n`` vectors and extrapolated quadratically to N (ratio = extrapolated
   brute-force time / measured fast time; the two results are checked to agree);
2. each stage of the suite on 5,000 images + 25,000 captions (5 per image) at d = 512 and the
   total;
3. with ``--large N``: the Double-Ellipsoid suite on N x 512 per modality streamed in chunks
   from a generator (never held in memory whole), its time split into data generation and
   measurement, and the peak memory traced by ``tracemalloc`` (numpy allocations included).

No assertion on times: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from clipgeo.geometry.conformity import conformity, conformity_brute_force
from clipgeo.geometry.ellipsoid import double_ellipsoid_suite, sample_ellipsoid_shell
from clipgeo.geometry.gap import modality_gap
from clipgeo.geometry.separability import linear_separability
from clipgeo.geometry.shift import origin_shift
from clipgeo.retrieval import retrieval_metrics


def _rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def make_data(n_img: int, per: int, d: int, seed: int = 0):
    """Two tilted, off-centre ellipsoid shells; each caption = its image's offset + text noise."""
    rng = np.random.default_rng(seed)
    sig = 0.6 * (1 + np.arange(d)) ** -0.6
    mu_i = rng.standard_normal(d)
    mu_i *= 3.0 / np.linalg.norm(mu_i)
    mu_t = rng.standard_normal(d)
    mu_t *= 2.5 / np.linalg.norm(mu_t)
    img = sample_ellipsoid_shell(n_img, mu_i, sig, _rotation(d, seed + 1), thickness=0.1, seed=seed + 2)
    idx = np.repeat(np.arange(n_img), per)
    noise = sample_ellipsoid_shell(n_img * per, np.zeros(d), 0.7 * sig, _rotation(d, seed + 3), seed=seed + 4)
    txt = mu_t + 0.8 * (img[idx] - mu_i) + noise
    return img.astype(np.float32), txt.astype(np.float32), idx


REPEATS = 2


def timed(label: str, fn, results: dict, repeats: int | None = None):
    """Run ``fn`` ``repeats`` times (default :data:`REPEATS`); record and print the fastest wall
    time, with the CPU time (all threads of this process) of that run beside it: on a shared
    machine the CPU time is the steadier figure (wall = CPU / cores when nothing else runs)."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats or REPEATS):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    results[label] = best
    print(f"  {label:<62s} {best:8.3f} s wall {best_cpu:8.3f} s cpu")
    return out


def bench_conformity(d: int, n_fast: int, n_brute: int) -> None:
    print(f"\n[1] conformity, d = {d}")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((n_fast, d)) + 0.5).astype(np.float32)
    xb = x[:n_brute]
    t_brute = t_fast_small = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        brute = conformity_brute_force(xb)
        t_brute = min(t_brute, time.perf_counter() - t0)
        t0 = time.perf_counter()
        fast_small = conformity(xb)
        t_fast_small = min(t_fast_small, time.perf_counter() - t0)
    err = float(np.max(np.abs(brute - fast_small)))
    reps = 5
    t_fast = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        conformity(x)
        t_fast = min(t_fast, time.perf_counter() - t0)
    t_extrap = t_brute * (n_fast / n_brute) ** 2
    print(f"  brute force O(N²d), N = {n_brute:>9,d}: {t_brute:8.3f} s")
    print(f"  exact identity O(Nd), N = {n_brute:>7,d}: {t_fast_small:8.4f} s   ratio {t_brute / t_fast_small:10.0f}x   max |diff| {err:.1e}")
    print(f"  exact identity O(Nd), N = {n_fast:>7,d}: {t_fast:8.4f} s (best of {reps})")
    print(f"  brute force extrapolated to N = {n_fast:,d}: {t_extrap:8.1f} s   ratio {t_extrap / t_fast:10.0f}x")


def bench_suite(n_img: int, per: int, d: int) -> None:
    print(f"\n[2] suite on {n_img:,d} images + {n_img * per:,d} captions, d = {d} (float32 input)")
    img, txt, idx = make_data(n_img, per, d)
    r: dict[str, float] = {}
    res = timed("double_ellipsoid_suite (P1 angles, P2-P5, conformity)", lambda: double_ellipsoid_suite(img, txt), r)
    gap = timed("modality_gap (raw, normalised, paired via index)", lambda: modality_gap(img, txt, txt_image_index=idx), r)
    ret = timed("retrieval_metrics, exact, both directions, full 5k x 25k", lambda: retrieval_metrics(img, txt, idx), r)
    sh = timed(
        "origin_shift, 9 alphas, retrieval/InfoNCE on 1,000 images",
        lambda: origin_shift(img, txt, idx, logit_scale=100.0),
        r,
    )
    timed(
        "origin_shift, 9 alphas, retrieval/InfoNCE on all 5,000 images",
        lambda: origin_shift(img, txt, idx, logit_scale=100.0, max_images=None),
        r,
        repeats=1,
    )
    sep2 = timed(
        "linear_separability, top-2 PCs (30k x 512 -> 2)",
        lambda: linear_separability(img, txt, pca_components=2),
        r,
        repeats=1,
    )
    core = r["double_ellipsoid_suite (P1 angles, P2-P5, conformity)"] + r["modality_gap (raw, normalised, paired via index)"]
    default_total = core + r["origin_shift, 9 alphas, retrieval/InfoNCE on 1,000 images"]
    print(f"  {'TOTAL suite + gap + shift (1,000-image subsample)':<62s} {default_total:8.3f} s wall")
    sep = timed("linear_separability, full d = 512 (LinearSVC, C = 1)", lambda: linear_separability(img, txt), r, repeats=1)
    print(
        f"  ratios: shift(5,000)/shift(1,000) = "
        f"{r['origin_shift, 9 alphas, retrieval/InfoNCE on all 5,000 images'] / r['origin_shift, 9 alphas, retrieval/InfoNCE on 1,000 images']:.1f}x, "
        f"separability(512)/suite = {r['linear_separability, full d = 512 (LinearSVC, C = 1)'] / r['double_ellipsoid_suite (P1 angles, P2-P5, conformity)']:.1f}x"
    )
    row = res.modality.select(
        "modality", "dist_to_mean_std_over_mean", "offcentre_mean_norm_over_mean_length", "conformity_fit_raw_mean_pearson_r"
    )
    print("  sanity:", row.to_dicts())
    print(
        f"  sanity: gap {gap['gap']:.3f}, t2i R@1 {ret['text_to_image_recall@1']:.3f}, "
        f"separability acc {sep['accuracy']:.3f} (pca2 {sep2['accuracy']:.3f}), "
        f"shift best-InfoNCE alpha {float(sh.sort('infonce')['alpha'][0])}"
    )


def _brute_time(d: int, n: int) -> float:
    x = (np.random.default_rng(1).standard_normal((n, d)) + 0.5).astype(np.float32)
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        conformity_brute_force(x)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_large(n: int, d: int, chunk: int) -> float:
    print(f"\n[3] streamed suite, {n:,d} x {d} per modality, chunks of {chunk:,d} rows (float32)")
    sig = 0.6 * (1 + np.arange(d)) ** -0.6
    pool_size = 8  # chunks are cycled from a small pre-generated pool: reading cost is not timed

    def source(mu, rot, seed):
        pool = [
            sample_ellipsoid_shell(chunk, mu, sig, rot, thickness=0.1, seed=seed * 1000 + k).astype(np.float32)
            for k in range(pool_size)
        ]

        def gen():
            for k, start in enumerate(range(0, n, chunk)):
                yield pool[k % pool_size][: min(chunk, n - start)]

        return gen, pool

    src_i, pool_i = source(np.full(d, 0.1), _rotation(d, 11), 1)
    src_t, pool_t = source(np.full(d, -0.08), _rotation(d, 12), 2)
    pool_mib = 2 * pool_size * chunk * d * 4 / 2**20
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    t0, c0 = time.perf_counter(), time.process_time()
    res = double_ellipsoid_suite(src_i, src_t, keep_per_sample=False)
    t_suite, c_suite = time.perf_counter() - t0, time.process_time() - c0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t0, c0 = time.perf_counter(), time.process_time()
    conformity(src_i, "image")
    t_conf, c_conf = time.perf_counter() - t0, time.process_time() - c0
    print(f"  double_ellipsoid_suite, both modalities (2 passes each): {t_suite:8.1f} s wall {c_suite:8.1f} s cpu")
    print(
        f"  peak traced memory during the suite: {(peak - base) / 2**20:,.0f} MiB above the {pool_mib:,.0f} MiB chunk pool "
        f"(one modality in float32 would be {n * d * 4 / 2**20:,.0f} MiB)"
    )
    print("  sanity:", res.modality.select("modality", "n", "dist_to_mean_std_over_mean", "mahalanobis_radius_cv").to_dicts())
    print(f"  conformity alone, one modality, streamed (2 passes):   {t_conf:8.1f} s wall {c_conf:8.1f} s cpu")
    return t_conf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--per-image", type=int, default=5)
    ap.add_argument("--brute-n", type=int, default=4000)
    ap.add_argument("--large", type=int, default=0, help="rows per modality for the streamed run (0: skip)")
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=0, help="BLAS threads (0: library default)")
    args = ap.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    load = os.getloadavg()
    print(
        f"clipgeo geometry benchmark: {os.cpu_count()} CPU(s) visible, numpy {np.__version__}, "
        f"BLAS threads {args.threads or 'default'}, load average at start {load[0]:.2f} "
        f"(other processes on a shared machine slow every figure; best of {REPEATS} runs where cheap)"
    )
    bench_conformity(args.d, args.images * args.per_image, args.brute_n)
    bench_suite(args.images, args.per_image, args.d)
    if args.large:
        t_conf = bench_large(args.large, args.d, args.chunk)
        t_brute = _brute_time(args.d, args.brute_n)
        t_extrap = t_brute * (args.large / args.brute_n) ** 2
        print(
            f"  brute force extrapolated to N = {args.large:,d}: {t_extrap / 3600:8.1f} h   "
            f"ratio {t_extrap / t_conf:10.0f}x"
        )


if __name__ == "__main__":
    main()
