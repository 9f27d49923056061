"""Checks of a flow's inputs, made before anything runs: before a Prefect server starts (the
CLI calls them first) and again as the flow's first step (for runs started from the UI).

Each failure is a :class:`BadInput` whose message is one line that names the input and says
what to do. Nothing here writes to the data home. No Prefect import, and no torch or open_clip
before the cheap checks (folders, files, model names, tokenizers) have passed: a model name is
checked against open_clip's config files as ``open_clip.list_models()`` reads them
(:func:`model_configs`); only a pretrained *tag* needs open_clip itself.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from clipgeo.core.config import DataHome


class BadInput(ValueError):
    """An argument that cannot work (unknown model, missing file, unusable home, ...)."""


OBJECTIVES = ("infonce", "infoloob", "infonce+hopfield", "infoloob+hopfield")


def usable_home(home: str | os.PathLike[str] | None) -> DataHome:
    """The data home, if it is (or can become) a writable folder."""
    h = DataHome.resolve(home)
    if h.root.exists() and not h.root.is_dir():
        raise BadInput(f"data home {h.root} is a file, not a folder: pass --home DIR (or set CLIPGEO_HOME) "
                       "to a folder, new or existing")
    parent = h.root
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"data home {h.root}: cannot create or write in {parent}; choose a writable folder with --home")
    for sub in (h.catalog, h.lance, h.checkpoints, h.datasets, h.reports):
        if sub.exists() and sub.is_dir() != (sub != h.catalog):
            raise BadInput(f"data home {h.root}: {sub} is not what clipgeo expects there; use another --home")
    return h


def _path_like(value: str) -> bool:
    return "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"))


@functools.lru_cache(maxsize=1)
def model_configs() -> dict[str, dict]:
    """Every architecture open_clip knows once clipgeo's configs are registered, ``{name: config}``,
    read from the JSON files as ``open_clip.list_models()`` reads them (a file with
    ``embed_dim``, ``vision_cfg`` and ``text_cfg``; name = file stem), without importing open_clip
    (and so torch)."""
    from clipgeo.models import CONFIGS_DIR

    spec = importlib.util.find_spec("open_clip")
    dirs = [Path(spec.submodule_search_locations[0]) / "model_configs"] if spec and spec.submodule_search_locations else []
    out: dict[str, dict] = {}
    for d in [*dirs, CONFIGS_DIR]:
        for f in sorted(d.glob("*.json")):
            try:
                cfg = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict) and all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
                out[f.stem] = cfg
    return out


def hf_hub_cache() -> Path:
    """The local Hugging Face hub cache, as huggingface_hub finds it: ``$HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _tokenizer_cached(repo: str) -> bool:
    snaps = hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"
    return any((s / f).is_file() for s in snaps.glob("*") for f in ("tokenizer_config.json", "tokenizer.json"))


def check_tokenizer(model_name: str, config: dict) -> None:
    """A model whose tokenizer comes from the Hugging Face hub (``text_cfg.hf_tokenizer_name``,
    e.g. the SigLIP models) needs the ``transformers`` package and that tokenizer's files in the
    local cache (nothing is downloaded at run time): say what is missing and how to provide it."""
    repo = (config.get("text_cfg") or {}).get("hf_tokenizer_name")
    if not repo:
        return
    missing = []
    if importlib.util.find_spec("transformers") is None:
        missing.append("the transformers package (pip install transformers)")
    if not _tokenizer_cached(repo):
        missing.append(f"its files in the local Hugging Face cache {hf_hub_cache()}")
    if missing:
        raise BadInput(
            f"model {model_name}: its tokenizer is the Hugging Face tokenizer {repo}, which needs "
            + " and ".join(missing) + f"; on a machine with network run once python -c \"from transformers import "
            f"AutoTokenizer; AutoTokenizer.from_pretrained('{repo}')\" (or copy that cache here), then run with "
            "HF_HUB_OFFLINE=1 (README: models with a Hugging Face tokenizer)")


def check_model(model_name: str, pretrained: str | None = None) -> None:
    """``model_name`` is an open_clip (or clipgeo) architecture whose tokenizer is available
    offline; ``pretrained`` an existing checkpoint file or a pretrained tag open_clip knows for it."""
    if not model_name:
        raise BadInput("empty model name: pass NAME or NAME=PRETRAINED (e.g. ViT-B-16=laion400m_e32)")
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return
    if pretrained and _path_like(pretrained):
        p = Path(pretrained).expanduser()
        if not p.is_file():
            raise BadInput(f"model {model_name}: checkpoint {p} does not exist; pass an existing file or an open_clip "
                           "pretrained tag")
    known = model_configs()
    if model_name not in known:
        close = [m for m in known if m.lower().startswith(model_name.lower()[:5])][:5]
        raise BadInput(f"unknown model {model_name!r}: not an open_clip architecture"
                       + (f" (close: {', '.join(close)})" if close else "")
                       + "; see python -c 'import open_clip; print(open_clip.list_models())'")
    check_tokenizer(model_name, known[model_name])
    if pretrained and not _path_like(pretrained):
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise BadInput(f"model {model_name}: unknown pretrained tag {pretrained!r}"
                           + (f" (known: {', '.join(tags)})" if tags else " (it has no pretrained weights)")
                           + "; or pass a checkpoint path")


def parse_model(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=PRETRAINED`` -> (name, pretrained or None)."""
    name, _, pretrained = spec.partition("=")
    if not name.strip():
        raise BadInput(f"model {spec!r}: expected NAME or NAME=PRETRAINED (open_clip tag or checkpoint path)")
    return name.strip(), pretrained.strip() or None


def check_models(models: Iterable[str]) -> None:
    for spec in models:
        check_model(*parse_model(spec))


def check_objectives(objectives: Sequence[str]) -> None:
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise BadInput(f"objectives {bad}: each must be one of {', '.join(OBJECTIVES)}")


def check_positive(**values: int | None) -> None:
    for name, v in values.items():
        if v is not None and v < 1:
            raise BadInput(f"{name} must be >= 1, got {v}")


def check_pipeline(home: str | None = None, n_train: int = 1, n_val: int = 1, captions_per_image: int = 1,
                   image_size: int = 64, objectives: Sequence[str] = (), train_steps: int = 1,
                   models: Sequence[str] = (), **_: object) -> DataHome:
    """The main pipeline's inputs."""
    check_positive(n_train=n_train, n_val=n_val, captions_per_image=captions_per_image, train_steps=train_steps)
    if image_size < 8:
        raise BadInput(f"image_size must be >= 8 pixels, got {image_size}")
    check_objectives(objectives)
    h = usable_home(home)
    check_models(models)
    return h


def check_embed(model_name: str, dataset_id: str, pretrained: str | None = None, home: str | None = None,
                shard_images: int = 1, **_: object) -> DataHome:
    """The embed flow's inputs: the model, and a dataset registered in the home."""
    check_positive(shard_images=shard_images)
    h = usable_home(home)
    check_model(model_name, pretrained)
    if not h.catalog.exists():
        raise BadInput(f"dataset {dataset_id!r}: no catalog in {h.root}; register a dataset first "
                       "(clipgeo dataset ... or clipgeo run)")
    from clipgeo.store import catalog

    with catalog.session(h) as con:
        found = catalog.execute(con, "SELECT 1 FROM datasets WHERE dataset_id = ?", [dataset_id])
        known = [r for (r,) in catalog.execute(con, "SELECT dataset_id FROM datasets ORDER BY 1 LIMIT 8")]
    if not found:
        raise BadInput(f"dataset {dataset_id!r} is not registered in {h.root}"
                       + (f" (registered: {', '.join(known)})" if known else " (none is)")
                       + "; see clipgeo sql \"select dataset_id from datasets\"")
    return h


def check_dataset(source: str, path: str, image_dir: str | None = None, models: Sequence[str] = (),
                  karpathy_split_file: str | None = None, split: str | None = None, home: str | None = None,
                  limit_images: int | None = None, protocol: str | None = None, **_: object) -> DataHome:
    """The dataset flow's inputs: the source's files, the models, the home, the protocol."""
    check_positive(limit_images=limit_images)
    if protocol is not None:
        from clipgeo.sources.base import SourceError
        from clipgeo.sources.protocols import check_protocol_inputs

        if source != "coco":
            raise BadInput(f"protocol {protocol} selects a subset of an MS-COCO captions file: use source coco, "
                           f"not {source!r}")
        try:
            check_protocol_inputs(protocol, karpathy_split_file=karpathy_split_file, split=split,
                                  limit_images=limit_images)
        except SourceError as exc:
            raise BadInput(str(exc)) from None
    h = usable_home(home)
    p = Path(path).expanduser()
    if source == "embeddings":
        if not p.is_dir():
            raise BadInput(f"embeddings source {p}: no such folder (expected img_emb/, text_emb/, metadata/ inside)")
        return h
    if source == "webdataset":
        if "{" not in path and not any(Path(p.parent).glob(p.name)):
            raise BadInput(f"webdataset {path}: no such tar file; pass a tar path or a brace pattern like "
                           "/data/{00000..00099}.tar")
    elif source in ("coco", "folder"):
        if not p.is_file():
            raise BadInput(f"{source} captions file {p} does not exist; pass the "
                           + ("captions_*.json annotations file" if source == "coco" else "csv / jsonl / parquet captions file"))
        if not image_dir:
            raise BadInput(f"source {source!r} needs image_dir (--image-dir): the folder holding the images")
        if not Path(image_dir).expanduser().is_dir():
            raise BadInput(f"image folder {Path(image_dir).expanduser()} does not exist; pass --image-dir FOLDER")
        if karpathy_split_file and not Path(karpathy_split_file).expanduser().is_file():
            raise BadInput(f"Karpathy split file {karpathy_split_file} does not exist (dataset_coco.json)")
    else:
        raise BadInput(f"unknown source {source!r}: expected coco, folder, webdataset or embeddings")
    if not models:
        raise BadInput("no models given: pass --models NAME=PRETRAINED (e.g. ViT-B-16=laion400m_e32)")
    check_models(models)
    return h


def check_home_only(home: str | None = None, **_: object) -> DataHome:
    return usable_home(home)
