"""Flow commands that check their arguments before Prefect, torch or open_clip is imported.

A flow command's options are its flow's parameters (:func:`flows.commands.as_command`), but
the flow modules import Prefect, LanceDB and the stages at their top: seconds of CPU on a small
machine before a mistyped folder or model name could be refused. Here each flow function's
*signature and docstring* are read from its module's source (:func:`light_function`: the
module's own typing aliases and literal defaults, its decorators and body left out), the CLI
parses against that, runs the command's check (:mod:`flows.checks`), and only then imports
the real command and runs it with the same arguments. Where a signature cannot be read this
way (a default computed from another module, say) the real command is used directly: never a
different signature, only a slower refusal. ``tests/test_cli.py`` holds both in step.
"""

from __future__ import annotations

import __future__
import ast
import functools
import importlib.util
import typing
from collections.abc import Callable
from typing import Any

from flows import checks
from flows.signature import EMBED_OPTIONS, command_signature

#: CLI name -> (flow module, flow function, check, extra CLI options, attribute in flows.commands).
FLOWS: dict[str, tuple[str, str, Callable[..., Any], dict[str, tuple[Any, Any, str]], str]] = {
    "run": ("flows.pipeline", "pipeline", checks.check_pipeline, {}, "run"),
    "ablation": ("flows.pipeline", "ablation", checks.check_pipeline, {}, "ablation_command"),
    "dataset": ("flows.dataset", "dataset_pipeline", checks.check_dataset, {}, "dataset"),
    "embed": ("flows.embed", "embed_flow", checks.check_embed, EMBED_OPTIONS, "embed"),
    "analyse": ("flows.analyse", "analyse_flow", checks.check_home_only, {}, "analyse"),
}

_SAFE_IMPORTS = ("typing", "collections.abc", "pathlib")
_FLAGS = __future__.annotations.compiler_flag


@functools.lru_cache(maxsize=None)
def _light_namespace(module: str) -> dict[str, Any]:
    """What of ``module`` can be defined without importing anything heavy: its imports from
    typing / collections.abc / pathlib and from other ``flows`` modules (read the same way),
    its top-level assignments, and its functions with decorators and bodies left out. Each
    statement that fails (a name from elsewhere) is skipped."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"no source for {module}")
    tree = ast.parse(open(spec.origin, encoding="utf-8").read(), spec.origin)
    ns: dict[str, Any] = {"__name__": f"{module}.__light__"}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "__future__":
                continue
            if node.module.startswith("flows.") and importlib.util.find_spec(node.module) is not None:
                other = _light_namespace(node.module)
                for a in node.names:
                    if a.name in other:
                        ns[a.asname or a.name] = other[a.name]
                continue
            if node.module not in _SAFE_IMPORTS:
                continue
        elif isinstance(node, ast.Import):
            if not all(a.name in _SAFE_IMPORTS for a in node.names):
                continue
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            body: list[ast.stmt] = [ast.Expr(ast.Constant(doc))] if doc is not None else []
            node.body, node.decorator_list = body + [ast.Pass()], []
        elif not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        mod = ast.fix_missing_locations(ast.Module(body=[node], type_ignores=[]))
        try:
            exec(compile(mod, spec.origin, "exec", flags=_FLAGS, dont_inherit=True), ns)  # noqa: S102 (our own source)
        except Exception:  # noqa: BLE001  (a statement needing what was left out)
            continue
    return ns


def light_function(module: str, name: str) -> Callable[..., Any]:
    """Flow function ``name`` of ``module`` as a plain function with the same signature and
    docstring, read from the source without importing the module (see the module doc).
    Raises ``LookupError`` when its definition or a name in its annotations is not readable."""
    fn = _light_namespace(module).get(name)
    if not callable(fn):
        raise LookupError(f"{module}.{name}: its definition needs names from outside the flows")
    typing.get_type_hints(fn)  # every annotation resolves
    return fn


def _real(cli_name: str) -> Callable[..., Any]:
    from flows import commands

    return getattr(commands, FLOWS[cli_name][4])


def light_command(cli_name: str) -> Callable[..., Any]:
    """The CLI function of flow command ``cli_name``: checks first, then the real command; the
    real command itself where the flow's signature cannot be read from its source."""
    module, fname, check, extra, _ = FLOWS[cli_name]
    try:
        full, doc = command_signature(light_function(module, fname), extra)
    except Exception:  # noqa: BLE001
        return _real(cli_name)

    def command(*args: Any, **kwargs: Any) -> Any:
        bound = full.bind(*args, **kwargs)
        bound.apply_defaults()
        check(**bound.arguments)
        return _real(cli_name)(**bound.arguments)

    command.__signature__ = full  # type: ignore[attr-defined]
    command.__doc__ = doc
    command.__name__ = fname
    command.__module__ = module
    command.checks_first = True  # type: ignore[attr-defined]  (the tests tell it from the fallback)
    return command


@functools.lru_cache(maxsize=None)
def _command(name: str) -> Callable[..., Any]:
    return light_command(name)


def __getattr__(attr: str) -> Any:  # flows.cli loads ``flows.precheck:<name>`` only when that command runs
    if attr in FLOWS:
        return _command(attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
