"""Open a report in headless Chromium with the network off and read what it rendered."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # network off: every host name fails to resolve and any proxied request goes nowhere
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise RuntimeError("chromium not found: `scripts/setup.sh --test` installs Debian's chromium package")
    return exe


def render(path: Path, *, budget_ms: int = 20000, screenshot: Path | None = None, width: int = 1400) -> tuple[dict, str]:
    """(status written by the page's script, the DOM after rendering in a window ``width`` px wide)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               f"--window-size={width},1000", "--hide-scrollbars", "--dump-dom", path.resolve().as_uri()]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
        if screenshot is not None:
            subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},4000",
                            f"--virtual-time-budget={budget_ms}", f"--screenshot={screenshot}", path.resolve().as_uri()],
                           capture_output=True, timeout=180)
    m = re.search(r'<pre id="clipgeo-status"[^>]*>(.*?)</pre>', dom, re.S)
    if not m or not m.group(1).strip():
        raise AssertionError(f"{path.name}: the page never wrote its status (scripts did not finish): {dom[:500]}")
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")), dom
