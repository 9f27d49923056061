"""A command's temporary Prefect server dies with the command.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server (``uvicorn``) as a child
process, and stops it at normal interpreter exit (``atexit``). After ``kill -9`` of the
command, or a SIGTERM that skips ``atexit``, that child used to keep running, orphaned.

:func:`guard_temporary_server` (called by ``clipgeo`` before a flow starts) makes Prefect
start the server under a small guard, ``python -m flows.serverlife PID -- uvicorn ...``:

- the guard forwards SIGTERM/SIGINT to the server and exits with its code (so Prefect's own
  ``stop()`` and port-retry logic work unchanged);
- it polls its parent once a second, and when the command is gone (any way it died) it
  stops the server and exits;
- the server is started with ``PR_SET_PDEATHSIG`` (SIGTERM) so it also dies if the guard is
  killed.

It also turns SIGTERM/SIGHUP of the command into a normal exit, so ``atexit`` handlers run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

_PATCH_LOCK = threading.Lock()
_patched = False


def _die_with_parent() -> None:  # runs in the forked child, before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def guard_temporary_server() -> None:
    """Wrap Prefect's temporary-server launch in the guard (idempotent; no-op with an API URL)."""
    global _patched
    with _PATCH_LOCK:
        if _patched:
            return
        _patched = True
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if threading.current_thread() is threading.main_thread() and signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
        try:
            from prefect.server.api import server as prefect_server
        except ImportError:  # pragma: no cover - Prefect layout changed: leave Prefect as is
            return
        cls = getattr(prefect_server, "SubprocessASGIServer", None)
        original = getattr(cls, "_run_uvicorn_command", None)
        if original is None:  # pragma: no cover
            return

        def guarded(self):  # type: ignore[no-untyped-def]
            real_popen = subprocess.Popen

            def popen(args, *a, **kw):  # type: ignore[no-untyped-def]
                return real_popen([sys.executable, "-m", "flows.serverlife", str(os.getpid()), "--", *args], *a, **kw)

            prefect_server.subprocess.Popen = popen  # type: ignore[attr-defined,assignment]
            try:
                return original(self)
            finally:
                prefect_server.subprocess.Popen = real_popen  # type: ignore[attr-defined]

        cls._run_uvicorn_command = guarded


def main(argv: list[str]) -> int:
    """The guard: ``PARENT_PID -- COMMAND ...``."""
    parent = int(argv[0])
    cmd = argv[argv.index("--") + 1:]
    child = subprocess.Popen(cmd, preexec_fn=_die_with_parent)

    def forward(signum, frame):  # type: ignore[no-untyped-def]
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            return child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != parent:  # the command is gone: so goes its server
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
            return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
