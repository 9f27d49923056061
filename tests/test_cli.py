"""The CLI is generated from the flows: every flow parameter is an option of the same name,
every ``clipgeo`` line of the README parses, bad input fails in one line before any flow or
Prefect server starts, and commands that run no flow import no Prefect."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"run", "ablation", "dataset", "embed", "analyse", "report", "sql", "runs", "serve"}


def readme_command_lines() -> list[str]:
    """Every ``clipgeo`` command line of the README: in code blocks (with ``\\`` continuations)
    and in inline code spans that give arguments."""
    text = (REPO / "README.md").read_text()
    found: list[str] = []
    for block in re.findall(r"```[A-Za-z]*\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            if "bin/clipgeo " in line or line.strip().startswith("clipgeo "):
                found.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        words = span.split()
        if len(words) > 2 and words[0].endswith("clipgeo") and words[1] in COMMANDS and "SOURCE PATH" not in span:
            found.append(span)
    return found


def _argv(line: str) -> list[str]:
    tokens = shlex.split(line, comments=True)
    start = next(i for i, t in enumerate(tokens) if t.endswith("clipgeo"))
    return tokens[start + 1:]


def test_readme_has_command_lines_for_every_flow_command():
    used = {_argv(line)[0] for line in readme_command_lines()}
    assert {"run", "dataset", "sql", "runs", "report", "serve"} <= used, used


@pytest.mark.parametrize("line", readme_command_lines())
def test_every_readme_command_line_parses(line):
    from flows.cli import parse

    argv = _argv(line)
    if "--help" in argv:
        pytest.skip("help")
    command, bound = parse(argv)
    assert command.__name__ and bound is not None


def _value_for(annotation, default):
    """A command-line value for a parameter of this type (not its default)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _value_for(inner[0], None)
    if origin is list:
        item = args[0] if args else str
        return _value_for(item, None)
    if origin is typing.Literal:
        return [str(a) for a in args if a != default][0]
    if annotation in (int, float):
        return str((default or 0) + 3)
    return "some-value"


def test_every_flow_parameter_is_an_option_of_the_same_name():
    from flows.cli import parse
    from flows.commands import FLOW_COMMANDS

    for cmd, (_, flow) in FLOW_COMMANDS.items():
        hints = typing.get_type_hints(flow.fn)
        params = inspect.signature(flow.fn).parameters
        required = [p for p in params.values() if p.default is inspect.Parameter.empty]
        positional = [_value_for(hints[p.name], None) for p in required]
        for p in params.values():
            if p.default is inspect.Parameter.empty:
                continue
            opt = "--" + p.name.replace("_", "-")
            if hints[p.name] is bool:
                argv = [cmd, *positional, opt if not p.default else "--no-" + p.name.replace("_", "-")]
                expected = not p.default
            else:
                value = _value_for(hints[p.name], p.default)
                argv = [cmd, *positional, opt, value]
                expected = None
            _, bound = parse(argv)
            assert p.name in bound.arguments, (cmd, p.name, argv)
            got = bound.arguments[p.name]
            if expected is not None:
                assert got is expected, (cmd, p.name, got)
            else:
                assert str(value) in (str(got) if not isinstance(got, list) else [str(g) for g in got]), (cmd, p.name, got)


def test_one_list_of_objectives():
    from flows import checks
    from flows.pipeline import ABLATION, Objective

    assert tuple(typing.get_args(Objective)) == checks.OBJECTIVES == tuple(ABLATION)


def _clipgeo(tmp_path, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _no_server_started(tmp_path) -> bool:
    return not (tmp_path / "prefect-home" / "prefect.db").exists()


@pytest.mark.parametrize("case", ["unknown-model", "home-is-a-file", "missing-captions", "unknown-dataset",
                                  "bad-int", "bad-objective"])
def test_bad_arguments_fail_in_one_line_before_any_flow(tmp_path, case):
    home = tmp_path / "home"
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    args, expect = {
        "unknown-model": (["embed", "NoSuchModel-B99", "shapes:val", "--home", str(home)], "NoSuchModel-B99"),
        "home-is-a-file": (["run", "--home", str(a_file)], "is a file"),
        "missing-captions": (["dataset", "coco", str(tmp_path / "captions.json"), "--image-dir", str(tmp_path),
                              "--models", "ViT-B-16", "--home", str(home)], "captions.json"),
        "unknown-dataset": (["embed", "clipgeo-tiny-vit", "nope:val", "--home", str(home)], "nope:val"),
        "bad-int": (["run", "--train-steps", "many", "--home", str(home)], "--train-steps"),
        "bad-objective": (["run", "--objectives", "infomax", "--home", str(home)], "infomax"),
    }[case]
    out = _clipgeo(tmp_path, *args)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], out.stderr[-2000:]
    assert not (home / "catalog.duckdb").exists()  # no catalog rows (no catalog at all)
    assert _no_server_started(tmp_path)


def test_commands_without_a_flow_import_no_prefect(tmp_path):
    from clipgeo.core.config import DataHome
    from clipgeo.store import catalog

    home = DataHome.resolve(tmp_path / "home")
    with catalog.session(home):
        pass
    code = (
        "import sys\n"
        "from flows.cli import main\n"
        f"assert main(['sql', 'select 42 as answer', '--home', {str(home.root)!r}]) == 0\n"
        f"assert main(['runs', '--home', {str(home.root)!r}]) == 0\n"
        f"assert main(['migrate', '--home', {str(home.root)!r}]) == 0\n"
        "assert main(['--help']) == 0\n"
        "print('prefect imported:', 'prefect' in sys.modules, 'torch imported:', 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "42" in out.stdout
    assert "prefect imported: False torch imported: False" in out.stdout
    assert _no_server_started(tmp_path)


def test_the_blas_probe_is_skipped_only_when_nothing_else_runs(monkeypatch, tmp_path):
    from clipgeo.core import config

    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 5 100\nprocs_running 1\nprocs_blocked 0\n")
    assert config.nothing_else_runs(samples=3, gap=0.0, stat=str(stat))
    stat.write_text("cpu  10 0 5 100\nprocs_running 2\nprocs_blocked 0\n")   # one other runnable thread
    assert not config.nothing_else_runs(samples=3, gap=0.0, stat=str(stat))
    stat.write_text("cpu  10 0 5 100\n")                                      # no such line: not known idle
    assert not config.nothing_else_runs(samples=1, gap=0.0, stat=str(stat))

    probes = []
    real_limits = __import__("threadpoolctl").threadpool_limits
    monkeypatch.setattr("threadpoolctl.threadpool_limits", lambda n, **kw: probes.append(n) or real_limits(n, **kw))
    monkeypatch.setattr(config, "usable_cores", lambda: 3)
    monkeypatch.setattr(config, "_PROBED", {})
    monkeypatch.setattr(config, "nothing_else_runs", lambda: True)
    assert config.measured_blas_threads() == 3 and probes == []     # idle: every core, no probe
    monkeypatch.setattr(config, "_PROBED", {})
    monkeypatch.setattr(config, "nothing_else_runs", lambda: False)
    assert 1 <= config.measured_blas_threads(rows=256, d=32, reps=1) <= 3 and probes == [1, 2, 3]   # busy: timed


def test_thread_defaults(monkeypatch):
    from clipgeo.core import config

    for var in ("CLIPGEO_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(config, "usable_cores", lambda: 2)
    # BLAS: the count a probe measured fastest now (issue 27), here pretended to be 2 (an idle machine)
    monkeypatch.setattr(config, "measured_blas_threads", lambda: 2)
    assert (config.torch_threads(), config.blas_threads()) == (1, 2)  # spinning OpenMP: leave a core free
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert (config.torch_threads(), config.blas_threads()) == (2, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert (config.torch_threads(), config.blas_threads()) == (1, 1)
    monkeypatch.setenv("CLIPGEO_THREADS", "3")
    assert (config.torch_threads(), config.blas_threads()) == (3, 3)
    monkeypatch.setenv("CLIPGEO_THREADS", "0")
    with pytest.raises(ValueError, match="CLIPGEO_THREADS='0'"):
        config.torch_threads()
