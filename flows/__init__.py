"""Prefect flows that orchestrate clipgeo's stages. Tasks are thin wrappers over ``clipgeo``.

Importing this package sets safe defaults for running Prefect on a small, offline machine
(each only when the user has not set it): a longer start-up timeout for the ephemeral API
server, and no analytics (there is no network to send them to); and no tqdm progress bars
when stderr is not a terminal (carriage-return fragments in logs; flows publish Prefect
progress artifacts instead).
"""

import os
import sys

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("LANCEDB_LOG", "error")
if not (getattr(sys.stderr, "isatty", None) and sys.stderr.isatty()):
    os.environ.setdefault("TQDM_DISABLE", "1")
