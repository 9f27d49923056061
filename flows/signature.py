"""The CLI signature of a flow command, shared by the real commands (:mod:`flows.commands`,
which import the flows) and the light ones that check their arguments first
(:mod:`flows.precheck`, which import none). Both import it from here, and ``precheck`` reaches
``commands`` only when a command runs, so the imports run one way:
``precheck -> commands -> signature``. It imports nothing heavy.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

#: The options ``clipgeo embed`` adds to the flow's parameters: ``{name: (type, default, help)}``.
EMBED_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "cluster_address": (str | None, None, "a Dask scheduler address (tcp://host:8786) to run the shards on "
                                          "(default: this process)"),
}


def command_signature(fn: Callable[..., Any], extra: dict[str, tuple[Any, Any, str]] | None = None,
                      positional: tuple[str, ...] = ()) -> tuple[inspect.Signature, str]:
    """The CLI signature and help of flow function ``fn``: its parameters with resolved type
    hints, required ones (and the optional ones named in ``positional``) positional-or-keyword
    and the others keyword-only, plus ``extra`` keyword-only options ``{name: (type, default,
    help)}``; the docstring with their help added."""
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    params = [p.replace(annotation=hints.get(p.name, p.annotation),
                        kind=p.kind if p.default is inspect.Parameter.empty or p.name in positional
                        else inspect.Parameter.KEYWORD_ONLY)
              for p in sig.parameters.values()]
    doc = inspect.getdoc(fn) or ""
    for name, (typ, default, help_) in (extra or {}).items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=typ))
        doc += f"\n    {name}: {help_}" if "Args:" in doc else f"\n\nArgs:\n    {name}: {help_}"
    return sig.replace(parameters=params, return_annotation=inspect.Signature.empty), doc
