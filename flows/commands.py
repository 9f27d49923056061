"""The flows as CLI commands: each command's parameters are its flow's parameters.

:func:`as_command` gives a function with the flow's own signature (same names, types,
defaults and docstring, so the CLI, the Prefect UI and ``prefect deployment run`` take the
same parameters), which checks the inputs (:mod:`flows.checks`) before any Prefect server
starts, then runs the flow. A parameter added to a flow appears in its command without any
change here. Imported only when a flow command runs (``flows.cli`` loads it lazily).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flows  # noqa: F401  (Prefect environment defaults)
from flows import checks, serverlife
from flows.analyse import analyse_flow
from flows.dataset import dataset_pipeline
from flows.embed import embed_flow, task_runner_for
from flows.pipeline import ablation, pipeline
from flows.signature import EMBED_OPTIONS, command_signature
from flows.track import check_track, track_flow


def as_command(fl: Any, check: Callable[..., Any], *, extra: dict[str, tuple[Any, Any, str]] | None = None,
               call: Callable[..., Any] | None = None, positional: tuple[str, ...] = ()) -> Callable[..., Any]:
    """A CLI function for flow ``fl``: its signature and docstring, plus ``extra`` keyword-only
    CLI options ``{name: (type, default, help)}``; ``check(**arguments)`` runs first.
    ``positional``: optional parameters that may also be given positionally."""
    fn = fl.fn
    full, doc = command_signature(fn, extra, positional)

    def command(*args: Any, **kwargs: Any) -> Any:
        bound = full.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        check(**arguments)
        serverlife.guard_temporary_server()
        if call is not None:
            return call(**arguments)
        return fl(**arguments)

    command.__signature__ = full  # type: ignore[attr-defined]
    command.__doc__ = doc
    command.__name__ = fn.__name__
    command.__module__ = fn.__module__
    return command


def _embed(cluster_address: str | None = None, **kw: Any) -> str:
    run_id = embed_flow.with_options(task_runner=task_runner_for(cluster_address))(**kw)
    print(run_id)
    return run_id


def _analyse(**kw: Any) -> list[str]:
    ids = analyse_flow(**kw)
    print("\n".join(ids))
    return ids


run = as_command(pipeline, checks.check_pipeline)
ablation_command = as_command(ablation, checks.check_pipeline)
dataset = as_command(dataset_pipeline, checks.check_dataset)
analyse = as_command(analyse_flow, checks.check_home_only, call=_analyse)
embed = as_command(embed_flow, checks.check_embed, call=_embed, extra=EMBED_OPTIONS)

track = as_command(track_flow, check_track, positional=("checkpoint_dir",))

#: CLI name -> (module attribute, flow): the commands that run a flow.
FLOW_COMMANDS: dict[str, tuple[str, Any]] = {
    "run": ("run", pipeline),
    "ablation": ("ablation_command", ablation),
    "dataset": ("dataset", dataset_pipeline),
    "embed": ("embed", embed_flow),
    "analyse": ("analyse", analyse_flow),
    "track": ("track", track_flow),
}
