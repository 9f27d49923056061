"""Running one stage of a benchmark script in its own process (so that each peak RSS is its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_stage(script: str, stage: str, **kw) -> tuple[dict, str]:
    """``python SCRIPT --stage STAGE --key value ...`` (None values left out); returns the JSON of
    its last stdout line and its stderr. Exits with the child's output when it fails."""
    cmd = [sys.executable, script, "--stage", stage]
    for k, v in kw.items():
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"stage {stage} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr
