"""The locked environment is consistent: ``pip check`` finds no missing or conflicting
requirement (clip-benchmark's and torch's setuptools included), and the lock pins every one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pip_check_is_clean():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_lock_pins_what_the_test_extras_need():
    lock = {line.split("==")[0].lower(): line.split("==")[1] for line in (REPO / "requirements.lock").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    for name in ("clip-benchmark", "pycocoevalcap", "transformers", "webdataset", "setuptools"):
        assert name in lock, name
    major, minor = (int(x) for x in lock["setuptools"].split(".")[:2])
    assert (major, minor) >= (77, 0)  # torch 2.14 requires setuptools >= 77.0.3
