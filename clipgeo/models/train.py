"""Train tiny CLIP (InfoNCE) / CLOOB (InfoLOOB, optionally + Hopfield) models on CPU.

The trainer is deliberately small and deterministic: it builds an open_clip model from a
registered config (``clipgeo-tiny-vit`` by default) with random weights, preloads every
image once through the model's own validation preprocessing into one float tensor,
pre-tokenises every caption, and runs ``spec.steps`` AdamW steps with a linear-warmup +
cosine learning-rate schedule. Each step draws ``batch_size`` *distinct* images and one
random caption of each.

Objectives (see :mod:`clipgeo.models.losses`), on L2-normalised embeddings x (image) and
y (text) of the batch:

* ``infonce`` (CLIP): ``info_nce(x, y, min(exp(t), 100))`` with the model's learnable
  ``logit_scale = t``.
* ``infoloob`` (CLOOB's objective without retrieval): ``info_loob(x, y, inv_tau)``,
  ``inv_tau`` fixed (30).
* ``hopfield=True`` first replaces (x, y) by CLOOB's Hopfield-retrieved pairs
  ``(U_x, U_y), (V_x, V_y)`` (beta 8); with ``infoloob`` this is exactly CLOOB's loss
  (:func:`~clipgeo.models.losses.cloob_loss`), with ``infonce`` it is
  ``info_nce(U_x, U_y) + info_nce(V_x, V_y)`` (the paper's "InfoNCE + Hopfield" ablation).
  Retrieval starts after ``spec.hopfield_warmup_steps`` steps of the plain objective
  (default: the first 25% of the steps; ``hopfield_warmup_frac=0`` is the paper's recipe;
  see :class:`TrainSpec`).

The checkpoint is ``{"state_dict": ..., "clipgeo": meta}``, which
``open_clip.create_model_and_transforms(name, pretrained=<path>)`` loads as-is, plus a JSON
sidecar with the same meta and the file's sha256. Results are cached by
:meth:`TrainSpec.key`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from clipgeo.core.config import usable_cores

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from clipgeo.sources.base import Sample

__all__ = ["TRAINER_VERSION", "TrainSpec", "TrainResult", "train_tiny", "checkpoint_path", "intermediate_dir",
           "sha256_file"]

log = logging.getLogger(__name__)


class _DropRandomInitNotice(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded for model 'NAME'" (a training run starts
    from random weights on purpose: nothing for a user to act on)."""

    def __init__(self, model_name: str):
        super().__init__()
        self.text = f"No pretrained weights loaded for model '{model_name}'"

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.text)


@contextlib.contextmanager
def _random_init_expected(model_name: str):
    """While a model is built from random weights to be trained: no notice saying so."""
    f = _DropRandomInitNotice(model_name)
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)

#: Bump whenever a change to the trainer would change the weights it produces for the same
#: spec and data; it is part of every cache key.
TRAINER_VERSION = "2"

Objective = Literal["infonce", "infoloob"]


def _own_model_config(model_name: str) -> dict[str, Any] | None:
    """The parsed JSON of a config shipped in ``clipgeo/models/configs``, else None."""
    path = Path(__file__).resolve().parent / "configs" / f"{model_name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a training run (together with the data).

    Attributes:
        model_name: a model config registered with open_clip (default: clipgeo's tiny ViT).
        objective: ``"infonce"`` (CLIP) or ``"infoloob"`` (CLOOB's leave-one-out bound).
        hopfield: apply CLOOB's Hopfield retrieval (batch as stored patterns) before the loss.
        steps: optimiser steps.
        batch_size: distinct images per step (capped at the number of images).
        lr: peak AdamW learning rate.
        seed: seeds model init, batch sampling and caption choice.
        warmup_steps: linear warm-up length, then cosine decay to 0.
        weight_decay: AdamW weight decay on matrices (not on biases, norms, embeddings of
            positions, or the logit scale).
        inv_tau: fixed inverse temperature for ``infoloob`` (CLOOB: 30).
        hopfield_beta: Hopfield inverse temperature (CLOOB: 8).
        hopfield_warmup_frac: with ``hopfield``, train the first
            ``round(hopfield_warmup_frac * steps)`` steps (:attr:`hopfield_warmup_steps`) on the
            plain objective (no retrieval) before switching to the retrieved pairs. A
            deviation from the CLOOB paper (which retrieves from step 0): at random init the
            tiny towers' embeddings are nearly parallel (image-image cosine ~0.9, image-text
            ~0.05), so beta=8 retrieval returns almost the batch mean for every sample and
            CLOOB's loss stays at its collapsed value (~2 log(N-1)) for the whole 400-step
            budget (held-out text->image top-1 at chance). 0 reproduces the paper exactly.
        max_logit_scale: clamp on ``exp(logit_scale)`` for ``infonce`` (CLIP: 100).
    """

    model_name: str = "clipgeo-tiny-vit"
    objective: Objective = "infonce"
    hopfield: bool = False
    steps: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    warmup_steps: int = 40
    weight_decay: float = 0.1
    inv_tau: float = 30.0
    hopfield_beta: float = 8.0
    hopfield_warmup_frac: float = 0.25
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.objective not in ("infonce", "infoloob"):
            raise ValueError(f"objective must be 'infonce' or 'infoloob', got {self.objective!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (contrastive), got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.hopfield_warmup_frac < 1.0:
            raise ValueError(f"hopfield_warmup_frac must be in [0, 1), got {self.hopfield_warmup_frac}")

    def key(self, dataset_id: str) -> str:
        """Stable 12-hex-digit hash of this spec, ``dataset_id``, :data:`TRAINER_VERSION` and,
        for clipgeo's own model configs, the config's content (so editing an architecture
        never reuses a checkpoint of the old shape). Cheap: imports neither torch nor open_clip."""
        payload = json.dumps(
            {
                "spec": asdict(self),
                "dataset_id": dataset_id,
                "trainer_version": TRAINER_VERSION,
                "model_config": _own_model_config(self.model_name),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]

    @property
    def hopfield_warmup_steps(self) -> int:
        """Steps trained without Hopfield retrieval when ``hopfield`` (0 otherwise)."""
        return int(round(self.hopfield_warmup_frac * self.steps)) if self.hopfield else 0

    @property
    def tag(self) -> str:
        """``"<objective>"`` or ``"<objective>-hopfield"``."""
        return f"{self.objective}{'-hopfield' if self.hopfield else ''}"


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_tiny` (fresh or cached).

    Attributes:
        checkpoint: path of the ``.pt`` file (sidecar: ``checkpoint.with_suffix(".json")``).
        sha256: hex sha256 of the checkpoint file.
        final_loss: training loss averaged over the last (up to) 20 steps.
        steps: optimiser steps taken.
        seconds: wall-clock time of the run that produced the checkpoint (model creation,
            image preloading and the optimiser steps).
        cached: True when the checkpoint was found and no training happened.
        meta: the sidecar's content.
    """

    checkpoint: Path
    sha256: str
    final_loss: float
    steps: int
    seconds: float
    cached: bool
    meta: dict = field(default_factory=dict)


def checkpoint_path(spec: TrainSpec, out_dir: Path, dataset_id: str) -> Path:
    """``out_dir / f"{model_name}-{objective}[-hopfield]-{key}.pt"``."""
    return Path(out_dir) / f"{spec.model_name}-{spec.tag}-{spec.key(dataset_id)}.pt"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _atomic_write_bytes_via(path: Path, writer: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_cached(ckpt: Path, sidecar: Path) -> TrainResult | None:
    if not (ckpt.is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable sidecar %s (%s); retraining", sidecar, e)
        return None
    digest = sha256_file(ckpt)
    if meta.get("sha256") != digest:
        log.warning("checkpoint %s does not match the sha256 in %s; retraining", ckpt, sidecar)
        return None
    log.info("using cached checkpoint %s", ckpt)
    return TrainResult(
        checkpoint=ckpt,
        sha256=digest,
        final_loss=float(meta["final_loss"]),
        steps=int(meta["steps"]),
        seconds=float(meta["seconds"]),
        cached=True,
        meta=meta,
    )


def intermediate_dir(ckpt: Path) -> Path:
    """The folder of a checkpoint's intermediate checkpoints (``save_every``): ``<stem>/`` beside it."""
    return Path(ckpt).with_suffix("")


def _step_file(ckpt: Path, step: int) -> Path:
    return intermediate_dir(ckpt) / f"step_{step:06d}.pt"


def _expected_steps(steps: int, save_every: int) -> list[int]:
    return [*range(0, steps, save_every), steps] if save_every else []


def _has_intermediates(ckpt: Path, steps: int, save_every: int) -> bool:
    return all(_step_file(ckpt, s).is_file() and _step_file(ckpt, s).with_suffix(".json").is_file()
               for s in _expected_steps(steps, save_every))


def _write_sidecar(path: Path, meta: dict) -> None:
    _atomic_write_bytes_via(path, lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n"))


def _base_meta(spec: TrainSpec, dataset_id: str, n_img: int, n_caps: int, bs: int, threads: int, device: str,
               torch: Any, open_clip: Any) -> dict[str, Any]:
    return {
        "trainer_version": TRAINER_VERSION,
        "key": spec.key(dataset_id),
        "dataset_id": dataset_id,
        "spec": asdict(spec),
        "model_name": spec.model_name,
        "objective": spec.objective,
        "hopfield": spec.hopfield,
        "hopfield_beta": spec.hopfield_beta if spec.hopfield else None,
        "hopfield_warmup_steps": spec.hopfield_warmup_steps if spec.hopfield else None,
        "steps": spec.steps,
        "n_images": n_img,
        "n_captions": n_caps,
        "batch_size_effective": bs,
        "num_threads": threads,
        "device": device,
        "torch_version": str(torch.__version__),
        "open_clip_version": str(open_clip.__version__),
    }


def _save_intermediate(model: Any, full_embedding: Any, used_ids: Any, spec: TrainSpec, ckpt: Path, step: int,
                       history: list[float], base_meta: dict) -> None:
    """The weights after ``step`` steps as a checkpoint the embed stage loads like the final one
    (full token embedding, and for ``infoloob`` the fixed scale in ``logit_scale``); the model
    itself is not touched, so training goes on exactly as without saving."""
    import torch

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if full_embedding is not None:
        full = full_embedding.weight.detach().cpu().clone()
        full[used_ids.cpu()] = state.pop("token_embedding.weight")
        state["token_embedding.weight"] = full
    if spec.objective == "infonce":
        scale = float(model.logit_scale.detach().exp().clamp(max=spec.max_logit_scale))
    else:
        scale = float(spec.inv_tau)
        state["logit_scale"] = torch.full_like(state["logit_scale"], math.log(spec.inv_tau))
    recent = history[-20:]
    meta = {**base_meta, "logit_scale": scale,
            "logit_scale_kind": "learned_logit_scale" if spec.objective == "infonce" else "fixed_inv_tau",
            "step": step, "final": False, "loss": sum(recent) / len(recent) if recent else None}
    path = _step_file(ckpt, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes_via(path, lambda p: torch.save({"state_dict": state, "clipgeo": meta}, p))
    _write_sidecar(path.with_suffix(".json"), {**meta, "checkpoint": path.name, "sha256": sha256_file(path)})


def _link_final(ckpt: Path, full_meta: dict, steps: int) -> None:
    """The final checkpoint as the last step of its intermediate folder (a hard link: the
    same bytes, so the same sha256 and the same run as the final checkpoint's)."""
    dest = _step_file(ckpt, steps)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(ckpt, tmp)
    except OSError:  # another file system: a copy
        import shutil

        shutil.copyfile(ckpt, tmp)
    os.replace(tmp, dest)
    _write_sidecar(dest.with_suffix(".json"), {**full_meta, "checkpoint": dest.name})


def _group_samples(samples: Sequence[Sample]) -> tuple[list[str], list[str], list[list[str]]]:
    """Image ids (first-seen order), their paths, and their captions."""
    order: dict[str, int] = {}
    refs: list[str] = []
    caps: list[list[str]] = []
    for s in samples:
        i = order.get(s.image_id)
        if i is None:
            i = order[s.image_id] = len(refs)
            refs.append(s.image_ref)
            caps.append([])
        elif refs[i] != s.image_ref:
            raise ValueError(
                f"image_id {s.image_id!r} has two image_refs: {refs[i]!r} and {s.image_ref!r}"
            )
        caps[i].append(s.caption)
    return list(order), refs, caps


def _preload_images(refs: Sequence[str], preprocess: Any, progress: bool) -> torch.Tensor:
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    out: list[torch.Tensor] = []
    for ref in tqdm(refs, desc="preload images", disable=not progress, leave=False):
        try:
            with Image.open(ref) as im:
                out.append(preprocess(im.convert("RGB")))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"training image not found: {ref}") from e
    return torch.stack(out)


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:  # step = number of optimiser steps already taken
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (
            p.ndim < 2
            or "bn" in name
            or "ln" in name
            or "bias" in name
            or "logit_scale" in name
            or "embedding" in name
            or "class_embedding" in name
        )
        (no_decay if exclude else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


class _CompactEmbedding:
    """Factory for a drop-in token embedding that trains only the rows the data uses.

    The text tower's token embedding has ``vocab_size`` (49408) rows but a caption corpus
    touches a few hundred. Rows never looked up get zero gradient and (embeddings being
    excluded from weight decay) a zero AdamW update, so training a compact copy of the used
    rows and scattering it back afterwards gives the same weights as training the full
    matrix -- while skipping the optimiser arithmetic on ~6M untouched parameters per step.
    Token ids reaching the rest of the model (e.g. EOT ``argmax`` pooling) are unchanged.
    """

    @staticmethod
    def swap_in(model: torch.nn.Module, used_ids: torch.Tensor) -> torch.nn.Module | None:
        import torch
        import torch.nn.functional as F

        full = getattr(model, "token_embedding", None)
        if not isinstance(full, torch.nn.Embedding) or full.padding_idx is not None:
            return None

        class Compact(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.weight = torch.nn.Parameter(full.weight.detach()[used_ids].clone())
                lut = torch.zeros(full.num_embeddings, dtype=torch.long, device=full.weight.device)
                lut[used_ids] = torch.arange(len(used_ids), device=full.weight.device)
                self.register_buffer("lut", lut, persistent=False)

            def forward(self, ids: torch.Tensor) -> torch.Tensor:
                return F.embedding(self.lut[ids], self.weight)

        model.token_embedding = Compact()
        return full

    @staticmethod
    def swap_out(model: torch.nn.Module, full: torch.nn.Module, used_ids: torch.Tensor) -> None:
        import torch

        with torch.no_grad():
            full.weight[used_ids] = model.token_embedding.weight.detach()
        model.token_embedding = full


def _loss_fn(spec: TrainSpec):
    from clipgeo.models import losses

    def fn(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, step: int) -> torch.Tensor:
        hopfield = spec.hopfield and step >= spec.hopfield_warmup_steps
        if spec.objective == "infonce":
            if hopfield:
                u_x, u_y, v_x, v_y = losses.cloob_hopfield_embeddings(img, txt, spec.hopfield_beta)
                return losses.info_nce(u_x, u_y, scale) + losses.info_nce(v_x, v_y, scale)
            return losses.info_nce(img, txt, scale)
        if hopfield:
            return losses.cloob_loss(img, txt, spec.inv_tau, spec.hopfield_beta)
        return losses.info_loob(img, txt, spec.inv_tau)

    return fn


def train_tiny(
    samples: Sequence[Sample],
    spec: TrainSpec,
    out_dir: Path,
    dataset_id: str,
    *,
    progress: bool = True,
    num_threads: int | None = None,
    device: str = "cpu",
    save_every: int = 0,
) -> TrainResult:
    """Train (or fetch from cache) one model on image–caption pairs.

    Args:
        samples: image–caption pairs (:class:`clipgeo.sources.base.Sample`); samples sharing
            ``image_id`` are captions of one image. At least 2 distinct images.
        spec: what to train (see :class:`TrainSpec`).
        out_dir: directory for the checkpoint and its ``.json`` sidecar (created if needed).
        dataset_id: identifies ``samples``; part of the cache key (same id must mean same data).
        progress: show a tqdm bar with the running loss.
        num_threads: torch intra-op threads while training (default: all usable cores);
            the previous setting is restored afterwards.
        device: where to train (default CPU; results are only bit-reproducible per device).
        save_every: also save the weights at step 0 and every ``save_every`` steps into the
            folder :func:`intermediate_dir` (``step_<N>.pt`` + sidecar each, written atomically;
            the final checkpoint is linked there as the last step), for ``clipgeo track``.
            0 (or ``>= spec.steps``): none. Not part of the cache key (the final weights do not depend on it); a
            cached checkpoint without the intermediates asked for is retrained.

    Returns:
        :class:`TrainResult`; ``cached=True`` when ``out_dir`` already held the checkpoint and
        sidecar for ``spec.key(dataset_id)`` (with a matching sha256), in which case nothing
        was trained.
    """
    import open_clip
    import torch
    from tqdm.auto import tqdm

    from clipgeo.models import register_configs

    out_dir = Path(out_dir)
    ckpt = checkpoint_path(spec, out_dir, dataset_id)
    sidecar = ckpt.with_suffix(".json")
    if save_every < 0:
        raise ValueError(f"save_every must be >= 0 (0: no intermediate checkpoints), got {save_every}")
    if save_every >= spec.steps:
        save_every = 0   # no step inside the training to keep
    cached = _load_cached(ckpt, sidecar)
    if cached is not None and _has_intermediates(ckpt, spec.steps, save_every):
        return cached
    if cached is not None:
        log.info("checkpoint %s is stored without its intermediate checkpoints every %d steps: retraining", ckpt,
                 save_every)

    _, refs, caps = _group_samples(samples)
    if len(refs) < 2:
        raise ValueError(f"need at least 2 distinct images to train contrastively, got {len(refs)}")
    register_configs()
    if spec.model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown model config {spec.model_name!r}; see open_clip.list_models() "
            f"(clipgeo adds its own from {Path(__file__).parent / 'configs'})"
        )

    prev_threads = torch.get_num_threads()
    threads = num_threads or usable_cores()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        torch.manual_seed(spec.seed)
        with _random_init_expected(spec.model_name):
            model, _, preprocess = open_clip.create_model_and_transforms(spec.model_name, pretrained=None)
        model = model.to(device)
        model.train()
        tokenizer = open_clip.get_tokenizer(spec.model_name)

        images = _preload_images(refs, preprocess, progress).to(device)
        flat_caps = [c for cs in caps for c in cs]
        tokens = tokenizer(flat_caps).to(device)
        counts = torch.tensor([len(cs) for cs in caps], dtype=torch.long)
        offsets = torch.cumsum(counts, 0) - counts
        n_img = len(refs)
        bs = min(spec.batch_size, n_img)

        used_ids = torch.unique(tokens)
        full_embedding = _CompactEmbedding.swap_in(model, used_ids)

        opt = torch.optim.AdamW(_param_groups(model, spec.weight_decay), lr=spec.lr, betas=(0.9, 0.98), eps=1e-6)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(spec.warmup_steps, spec.steps))
        gen = torch.Generator().manual_seed(spec.seed)
        loss_fn = _loss_fn(spec)
        max_log_scale = math.log(spec.max_logit_scale)
        fixed_scale = torch.tensor(spec.inv_tau, device=device)

        history: list[float] = []
        base_meta = _base_meta(spec, dataset_id, n_img, len(flat_caps), bs, threads, device, torch, open_clip)

        def save_step(step: int) -> None:
            _save_intermediate(model, full_embedding, used_ids, spec, ckpt, step, history, base_meta)

        if save_every:
            save_step(0)
        bar = tqdm(range(spec.steps), desc=f"train {spec.model_name} {spec.tag}", disable=not progress)
        for _ in bar:
            idx = torch.randperm(n_img, generator=gen)[:bs]
            pick = offsets[idx] + (torch.rand(bs, generator=gen) * counts[idx]).long()
            x = images[idx.to(device)]
            t = tokens[pick.to(device)]
            img = model.encode_image(x, normalize=True)
            txt = model.encode_text(t, normalize=True)
            scale = model.logit_scale.exp().clamp(max=spec.max_logit_scale) if spec.objective == "infonce" else fixed_scale
            loss = loss_fn(img, txt, scale, len(history))
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss {loss.item()} at step {len(history) + 1} of {spec.model_name} "
                    f"{spec.tag}; lower spec.lr (now {spec.lr})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, max_log_scale)
            history.append(float(loss.detach()))
            if log.isEnabledFor(logging.DEBUG) and (len(history) % max(1, spec.steps // 10) == 0):
                log.debug(
                    "step %d/%d loss %.4f (mean of last 20 %.4f) lr %.2e scale %.2f, %.1fs",
                    len(history), spec.steps, history[-1], sum(history[-20:]) / len(history[-20:]),
                    sched.get_last_lr()[0], float(scale), time.perf_counter() - t0,
                )
            if progress:
                bar.set_postfix(loss=f"{sum(history[-20:]) / len(history[-20:]):.4f}")
            if save_every and len(history) % save_every == 0 and len(history) < spec.steps:
                save_step(len(history))
        bar.close()
        if full_embedding is not None:
            _CompactEmbedding.swap_out(model, full_embedding, used_ids)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(prev_threads)

    final_loss = float(sum(history[-20:]) / len(history[-20:]))
    model.eval()
    if spec.objective == "infonce":
        scale_used = float(model.logit_scale.detach().exp().clamp(max=spec.max_logit_scale))
        scale_kind = "learned_logit_scale"
    else:
        # Store the fixed inverse temperature in the checkpoint too, so that
        # model.logit_scale.exp() is the scale the model was trained with.
        with torch.no_grad():
            model.logit_scale.fill_(math.log(spec.inv_tau))
        scale_used = float(spec.inv_tau)
        scale_kind = "fixed_inv_tau"
    log.info(
        "trained %s %s: %d steps in %.1fs, final loss (mean of last %d) %.4f, scale %.2f",
        spec.model_name, spec.tag, spec.steps, seconds, min(20, len(history)), final_loss, scale_used,
    )

    meta: dict[str, Any] = {
        **base_meta,
        "logit_scale": scale_used,
        "logit_scale_kind": scale_kind,
        "final_loss": final_loss,
        "first_loss": history[0],
        "step": spec.steps,
        "final": True,
        "seconds": round(seconds, 3),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_write_bytes_via(ckpt, lambda p: torch.save({"state_dict": state, "clipgeo": meta}, p))
    digest = sha256_file(ckpt)
    full_meta = {**meta, "checkpoint": ckpt.name, "sha256": digest, "save_every": save_every}
    _atomic_write_bytes_via(
        sidecar, lambda p: p.write_text(json.dumps(full_meta, indent=2, sort_keys=True) + "\n")
    )
    if save_every:
        _link_final(ckpt, full_meta, spec.steps)
    return TrainResult(
        checkpoint=ckpt,
        sha256=digest,
        final_loss=final_loss,
        steps=spec.steps,
        seconds=seconds,
        cached=False,
        meta=full_meta,
    )
