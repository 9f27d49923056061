"""CLIP-like models: tiny open_clip configs, CLIP/CLOOB losses, a CPU trainer and the loader.

``register_configs()`` makes the JSON model configs in ``clipgeo/models/configs/`` (e.g.
``clipgeo-tiny-vit``) known to ``open_clip`` so that ``open_clip.create_model_and_transforms``
and ``open_clip.get_tokenizer`` accept their names like any built-in architecture.

Heavy imports (torch, open_clip) are deferred until a function that needs them is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = [
    "CONFIGS_DIR",
    "TINY_MODEL_NAMES",
    "register_configs",
    # re-exported lazily:
    "LoadedModel",
    "load_model",
    "default_device",
    "TrainSpec",
    "TrainResult",
    "train_tiny",
]

#: Directory holding clipgeo's open_clip model configs (``<name>.json``).
CONFIGS_DIR: Path = Path(__file__).resolve().parent / "configs"

#: Names of the model configs shipped with clipgeo (the JSON file stems).
TINY_MODEL_NAMES: tuple[str, ...] = tuple(sorted(p.stem for p in CONFIGS_DIR.glob("*.json")))

_registered = False


def register_configs() -> list[str]:
    """Register clipgeo's model configs with open_clip (idempotent).

    Calls ``open_clip.add_model_config(CONFIGS_DIR)`` once per process; later calls are
    no-ops unless a config has gone missing from open_clip's registry.

    Returns:
        The clipgeo model names now known to open_clip.
    """
    global _registered
    import open_clip

    known = set(open_clip.list_models())
    if not _registered or not set(TINY_MODEL_NAMES) <= known:
        open_clip.add_model_config(CONFIGS_DIR)
        _registered = True
    return list(TINY_MODEL_NAMES)


_LAZY = {
    "LoadedModel": "clipgeo.models.loader",
    "load_model": "clipgeo.models.loader",
    "default_device": "clipgeo.models.loader",
    "TrainSpec": "clipgeo.models.train",
    "TrainResult": "clipgeo.models.train",
    "train_tiny": "clipgeo.models.train",
}

if TYPE_CHECKING:  # pragma: no cover
    from clipgeo.models.loader import LoadedModel, default_device, load_model
    from clipgeo.models.train import TrainResult, TrainSpec, train_tiny


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
