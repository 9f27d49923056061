"""Prefect flows that orchestrate clipgeo's stages. Tasks are thin wrappers over ``clipgeo``.

Importing this package sets safe defaults for running Prefect on a small, offline machine
(each only when the user has not set it): a longer start-up timeout for the ephemeral API
server, and no analytics (there is no network to send them to); and no tqdm progress bars
when stderr is not a terminal (carriage-return fragments in logs; flows publish Prefect
progress artifacts instead). OpenMP threads sleep instead of spinning while they wait
(``OMP_WAIT_POLICY=PASSIVE``, read when torch loads): spinning threads beside another busy
process made 2-thread training several times slower than 1 thread on 2 cores; passive ones
do not (benchmarks/bench_threads.py).
"""

import os
import sys

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if not (getattr(sys.stderr, "isatty", None) and sys.stderr.isatty()):
    os.environ.setdefault("TQDM_DISABLE", "1")
