"""What ``import clipgeo`` costs, against baselines measured in the same run.

    .venv/bin/python benchmarks/bench_api.py            # 7 fresh interpreters per case
    .venv/bin/python benchmarks/bench_api.py --repeat 3

Each case is a fresh ``python -c`` process (median wall time of ``--repeat`` starts):

* ``python``: the interpreter alone (``pass``), the floor;
* ``numpy``: ``import numpy``, what any array library costs;
* ``clipgeo``: ``import clipgeo`` (the lazy public face);
* ``clipgeo + a name``: ``import clipgeo; clipgeo.modality_gap`` (the first measurement used);
* ``topology (eager)``: ``import clipgeo.topology.umap_layout`` — what the old eager
  ``clipgeo.topology`` package cost (numba loads at import).

It prints the seconds, the ratio to the interpreter alone, and the heavy modules each case left
in ``sys.modules``. No assertion: a report (the suite checks the modules, not the time).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    base = None
    print(f"{'case':<20} {'seconds':>8} {'x python':>9}  heavy modules loaded")
    for name, code in CASES.items():
        sec, loaded = run(code, args.repeat)
        base = base or sec
        print(f"{name:<20} {sec:8.3f} {sec / base:9.1f}  {loaded or '-'}")


if __name__ == "__main__":
    main()
