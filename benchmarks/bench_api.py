"""What the library face costs a notebook user, against baselines measured in the same run.

    .venv/bin/python benchmarks/bench_api.py                 # both parts
    .venv/bin/python benchmarks/bench_api.py --part measure  # clipgeo.measure only
    .venv/bin/python benchmarks/bench_api.py --part import --repeat 3

**measure** (issue 33): ``clipgeo.measure(img, txt, text_image=idx)`` on float16 torch tensors of
``--images`` images x ``--captions`` captions each at ``--dim`` (default 7,000 x 3 at d = 1024), in
a fresh interpreter that has imported torch and made the tensors (what a notebook cell holds):

* ``first call``: the default sections (:func:`clipgeo.default_sections`), imports of clipgeo's
  stack included, wall seconds until the headline and every streamed table are back;
* ``second call``: the same shape, other values, in the same process (imports paid);
* ``on demand``: reading ``m.tables["bootstrap_ci"]``, then ``m.compute()`` (umap, clusters,
  intrinsic dimension), each timed;
* ``sections="all"``: the whole suite in one call (what the default used to be);
* ``numpy``: a plain numpy cell of the headline's gap, joint effective rank and exact
  recall@1 both ways (float32 scores, full matrix in blocks), for scale.

``--code DIR`` measures another checkout's clipgeo with the same call (the code before issue 33
has no on-demand sections: its first and second calls measure every section). It prints each
figure and its ratio to the numpy cell, the ten slowest sections of the first
call, and checks the numbers agree with numpy (gap, effective rank, recall@1). No assertion on
time: a report.

**import**: fresh ``python -c`` processes (median of ``--repeat``): the interpreter alone,
``import numpy``, ``import clipgeo``, ``import clipgeo; clipgeo.modality_gap``, and the eager
``clipgeo.topology.umap_layout`` import, with the heavy modules each left in ``sys.modules``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numba", "lancedb", "prefect", "umap", "hdbscan", "duckdb", "polars", "sklearn")
CASES = {
    "python": "pass",
    "numpy": "import numpy",
    "clipgeo": "import clipgeo",
    "clipgeo + a name": "import clipgeo; clipgeo.modality_gap",
    "topology (eager)": "import clipgeo.topology.umap_layout",
}


def run(code: str, repeat: int) -> tuple[float, str]:
    probe = f"{code}\nimport sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    times, loaded = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
        loaded = out.stdout.strip()
    return statistics.median(times), loaded


def import_part(repeat: int) -> None:
    base = None
    print(f"{'case':<20} {'seconds':>8} {'x python':>9}  heavy modules loaded")
    for name, code in CASES.items():
        sec, loaded = run(code, repeat)
        base = base or sec
        print(f"{name:<20} {sec:8.3f} {sec / base:9.1f}  {loaded or '-'}")


# ---- clipgeo.measure in a fresh interpreter ------------------------------------------------------

def _tensors(n: int, k: int, d: int, seed: int):
    """Paired float16 torch tensors: images and k captions each, sharing a latent per pair."""
    import torch

    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g)
    img = (base + 2.5 * torch.randn(n, d, generator=g) + 0.3).half()
    txt = (base.repeat_interleave(k, 0) + 3.0 * torch.randn(n * k, d, generator=g) - 0.3).half()
    return img, txt, torch.arange(n).repeat_interleave(k)


def _numpy_cell(img, txt, idx) -> dict:
    """The headline's gap, joint effective rank (entropy of the eigenvalue shares) and exact
    recall@1 both ways, as a numpy user writes them (float32 scores, blocks of captions)."""
    import numpy as np

    xi = img.astype(np.float64)
    xt = txt.astype(np.float64)
    xi /= np.linalg.norm(xi, axis=1, keepdims=True)
    xt /= np.linalg.norm(xt, axis=1, keepdims=True)
    gap = float(np.linalg.norm(xi.mean(0) - xt.mean(0)))
    joint = np.concatenate([xi, xt])
    ev = np.clip(np.linalg.eigvalsh(np.cov(joint, rowvar=False)), 0, None)
    p = ev / ev.sum()
    erank = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    a, b = xi.astype(np.float32), xt.astype(np.float32)
    scores = b @ a.T                                    # (captions, images), 4 bytes each
    cols = np.arange(len(b))
    own = scores[cols, idx]
    t_hit = (scores > own[:, None]).sum(1) == 0         # text -> image: no image above its own
    best = np.full(len(a), -np.inf)
    np.maximum.at(best, idx, own)                       # image -> text: its best own caption
    above = scores > best[None, :]
    above[cols, idx] = False                            # its own captions never count
    i_hit = above.sum(0) == 0
    return {"gap": gap, "joint_erank": erank, "t2i_r1": float(t_hit.mean()), "i2t_r1": float(i_hit.mean())}


def child(args) -> None:
    """The fresh interpreter: torch and the tensors first (the notebook's state), then clipgeo."""
    import numpy as np

    img, txt, idx = _tensors(args.images, args.captions, args.dim, 0)
    out: dict = {}
    t0 = time.perf_counter()
    import clipgeo

    m = clipgeo.measure(img, txt, text_image=idx)
    out["first call"] = time.perf_counter() - t0
    ms = m.tables["measure_sections"].sort("seconds", descending=True)
    out["sections"] = list(zip(ms["section"].to_list(), ms["status"].to_list(), ms["seconds"].to_list()))
    out["not_run"] = getattr(m, "not_run", [])   # code before issue 33 (--code): every section, no on-demand
    streamed = ("retrieval_ranks", "modality_gap", "geo_modality", "geo_per_sample", "topo_spectra")
    out["streamed rows"] = {t: m.tables[t].height for t in streamed}
    head = m.headline.row(0, named=True)
    out["clipgeo"] = {"gap": head["gap"], "joint_erank": head["joint_effective_rank_lambda_entropy"],
                      "t2i_r1": head["t2i_r1"], "i2t_r1": head["i2t_r1"]}
    on_demand = hasattr(m, "compute")
    if on_demand:
        t0 = time.perf_counter()
        m.tables["bootstrap_ci"]
        out["on demand: bootstrap_ci"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        m.compute()
        out["on demand: the rest (m.compute())"] = time.perf_counter() - t0
        out["after compute"] = m.sections
    img2, txt2, idx2 = _tensors(args.images, args.captions, args.dim, 1)
    t0 = time.perf_counter()
    clipgeo.measure(img2, txt2, text_image=idx2)
    out["second call"] = time.perf_counter() - t0
    if on_demand:
        t0 = time.perf_counter()
        clipgeo.measure(img2, txt2, text_image=idx2, sections="all", force=True)
        out['sections="all"'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["numpy values"] = _numpy_cell(img.numpy(), txt.numpy(), idx.numpy())
    out["numpy cell"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out, default=float))


def measure_part(args) -> None:
    cmd = [sys.executable, __file__, "--child", "--images", str(args.images), "--captions", str(args.captions),
           "--dim", str(args.dim)]
    load = os.getloadavg()
    print(f"clipgeo.measure on {args.images:,} images x {args.captions} captions, d = {args.dim}, float16 torch "
          f"tensors; {len(os.sched_getaffinity(0))} cores, load average {load[0]:.2f}")
    env = dict(os.environ)
    if args.code:   # measure another checkout's clipgeo (e.g. the code before issue 33) with this script
        env["PYTHONPATH"] = str(Path(args.code).resolve())
        print(f"clipgeo from {args.code}")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(proc.returncode or 1)
    r = json.loads(line[7:])
    base = r["numpy cell"]
    print(f"{'case':<38} {'seconds':>8} {'x numpy cell':>13}")
    for case in ("numpy cell", "first call", "second call", "on demand: bootstrap_ci",
                 "on demand: the rest (m.compute())", 'sections="all"'):
        if case in r:
            print(f"{case:<38} {r[case]:8.2f} {r[case] / base:13.2f}")
    print("slowest sections of the first call: "
          + ", ".join(f"{s} {sec:.2f} s" for s, st, sec in r["sections"][:10]))
    print(f"not run by the default (on demand): {', '.join(r['not_run'])}")
    print(f"streamed tables' rows: {r['streamed rows']}")
    worst = max(abs(r["clipgeo"][k] - r["numpy values"][k]) / max(abs(r["numpy values"][k]), 1e-300)
                for k in r["numpy values"])
    print(f"clipgeo vs numpy: {r['clipgeo']} vs {r['numpy values']} (largest relative difference {worst:.1e})")
    every = r.get('sections="all"', float("nan"))
    print(f"measure_first_s={r['first call']:.2f} measure_second_s={r['second call']:.2f} "
          f"numpy_cell_s={base:.2f} all_sections_s={every:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "measure", "import"), default="all")
    ap.add_argument("--repeat", type=int, default=7, help="fresh interpreters per import case")
    ap.add_argument("--images", type=int, default=7000)
    ap.add_argument("--captions", type=int, default=3, help="captions per image")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--code", default=None, help="a checkout whose clipgeo to measure (e.g. `git worktree add "
                    "../before e61de6d`: the code before issue 33, which measures every section at once)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.part in ("all", "measure"):
        measure_part(args)
    if args.part in ("all", "import"):
        import_part(args.repeat)


if __name__ == "__main__":
    main()
