"""Procedurally generated image–caption dataset of coloured shapes (the offline default).

Every image shows one or two *groups* of identical shapes (1–3 objects each; same
shape, colour and size within a group) on a plain, gradient or noisy achromatic
background. Two-group images put the groups in a spatial relation (above, below, on
the left of, on the right of) that holds strictly: every object of one group lies in
one half of the image and every object of the other group in the other half.
Captions are compositional English, e.g. ``"two small red circles above a blue
square"``; each image gets several differently phrased captions that are all true.

The output is an MS-COCO-captions-format folder, readable with
:func:`clipgeo.sources.coco.read_coco_captions` via :func:`shapes_split`::

    <root>/<dataset_id>/
        DONE                           # spec JSON, written last
        annotations/captions_train.json
        annotations/captions_val.json
        train/000001.png ...
        val/004001.png ...

Besides the COCO keys, each annotation file has ``clipgeo_attributes``: one record
per image with the structured scene (see :func:`generate_shapes`).

Generation is deterministic: the same spec gives byte-identical JSON and PNG files
(for a given Pillow/zlib build). Each image is drawn from its own random stream
``numpy.random.default_rng([seed, split, index])``, so image ``i`` of a split does
not depend on how many images the split has.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from clipgeo.sources.base import SourceError

__all__ = [
    "BACKGROUND_COLOURS",
    "BACKGROUND_KINDS",
    "COLOURS",
    "COLOUR_WORDS",
    "COUNT_WORDS",
    "GENERATOR_VERSION",
    "RELATIONS",
    "SHAPES",
    "SHAPE_WORDS",
    "SIZES",
    "SIZE_WORDS",
    "ShapesSpec",
    "generate_shapes",
    "shapes_split",
]

#: Bumped whenever the drawing or captioning changes; part of the dataset id.
GENERATOR_VERSION = 1

#: Shape colours (chromatic only) and their base RGB values.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 80, 235),
    "yellow": (245, 215, 20),
    "orange": (250, 130, 20),
    "purple": (140, 45, 195),
    "pink": (250, 120, 190),
    "cyan": (30, 205, 225),
}
#: Background colours are achromatic, so they never collide with shape colours.
BACKGROUND_COLOURS: dict[str, int] = {"white": 242, "grey": 128, "black": 22}
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "gradient", "noise")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
#: Object side as a fraction of the image side. Objects are capped at 0.95 of their
#: grid cell (a third of the image), so "large" is about 0.32 in practice.
SIZES: dict[str, float] = {"small": 0.22, "large": 0.34}
#: Relation of group 0 (subject) to group 1 (object).
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
INVERSE_RELATION: dict[str, str] = {
    "above": "below", "below": "above", "left of": "right of", "right of": "left of",
}

#: Words that captions may use for each attribute value (singular, plural).
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("disc", "discs")),
    "square": (("square", "squares"),),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"),),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "diamond": (("diamond", "diamonds"),),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLOURS}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "white": ("white",), "grey": ("grey", "gray"), "black": ("black",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
COUNT_WORDS: dict[int, tuple[str, ...]] = {1: ("a", "one"), 2: ("two",), 3: ("three",)}
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "left of": ("on the left of", "to the left of", "left of"),
    "right of": ("on the right of", "to the right of", "right of"),
}
#: 3×3 grid cell (row, col) -> position name, and the phrases for it.
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "centre", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left corner", "at the top left"),
    "top": ("at the top", "at the top of the image"),
    "top right": ("in the top right corner", "at the top right"),
    "left": ("on the left", "on the left side"),
    "centre": ("in the centre", "in the middle"),
    "right": ("on the right", "on the right side"),
    "bottom left": ("in the bottom left corner", "at the bottom left"),
    "bottom": ("at the bottom", "at the bottom of the image"),
    "bottom right": ("in the bottom right corner", "at the bottom right"),
}

_SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
_SUPERSAMPLE = 2  # draw at 2x, downscale with a box filter (anti-aliasing)
_DONE = "DONE"


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of a generated shapes dataset; equal specs give identical files.

    Attributes:
        n_train: Number of training images.
        n_val: Number of validation images.
        captions_per_image: Distinct captions written for each image.
        image_size: Side of the square PNG images, in pixels.
        seed: Seed of the random streams.
    """

    n_train: int = 4000
    n_val: int = 1000
    captions_per_image: int = 3
    image_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("n_train", 0), ("n_val", 0), ("captions_per_image", 1), ("image_size", 16)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SourceError(f"ShapesSpec.{name} must be an integer >= {low}, got {value!r}.")
        if self.n_train + self.n_val < 1:
            raise SourceError("ShapesSpec needs at least one image: set n_train or n_val >= 1.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SourceError(f"ShapesSpec.seed must be a non-negative integer, got {self.seed!r}.")

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict, with the generator version and dataset id."""
        return {**asdict(self), "generator_version": GENERATOR_VERSION, "dataset_id": self.dataset_id()}

    def dataset_id(self) -> str:
        """Stable folder name, ``"shapes-"`` + a short hash of the params and generator version."""
        payload = json.dumps({**asdict(self), "generator_version": GENERATOR_VERSION}, sort_keys=True)
        return "shapes-" + hashlib.sha256(payload.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- scenes


def _pick(rng: np.random.Generator, options: tuple[Any, ...] | list[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _place_in_cells(
    rng: np.random.Generator,
    cells: list[tuple[float, float, float, float]],
    side: float,
) -> list[tuple[float, float, float]]:
    """Centre one object of side ``side`` (capped to fit) in each cell (x0, y0, w, h), jittered."""
    placed = []
    for x0, y0, w, h in cells:
        s = min(side, 0.95 * min(w, h))
        cx = x0 + s / 2 + rng.uniform(0.0, w - s)
        cy = y0 + s / 2 + rng.uniform(0.0, h - s)
        placed.append((cx, cy, s))
    return placed


def _sample_scene(rng: np.random.Generator, size: int) -> dict[str, Any]:
    """Draw a random scene: groups, object positions (pixels), background, relation."""
    n_groups = 1 if rng.random() < 0.4 else 2
    groups: list[dict[str, Any]] = []
    while len(groups) < n_groups:
        g = {
            "shape": _pick(rng, SHAPES),
            "colour": _pick(rng, tuple(COLOURS)),
            "size": _pick(rng, tuple(SIZES)),
            "count": int(rng.integers(1, 4)),
        }
        # Groups must differ in shape or colour so each is identifiable by its words.
        if any((g["shape"], g["colour"]) == (o["shape"], o["colour"]) for o in groups):
            continue
        groups.append(g)

    S = float(size)
    third = S / 3
    relation = None
    position = None
    objects: list[dict[str, Any]] = []
    if n_groups == 1:
        g = groups[0]
        cells_rc = sorted(POSITIONS)
        order = rng.permutation(len(cells_rc))[: g["count"]]
        chosen = [cells_rc[int(i)] for i in order]
        cells = [(c * third, r * third, third, third) for r, c in chosen]
        if g["count"] == 1:
            position = POSITIONS[chosen[0]]
        for cx, cy, s in _place_in_cells(rng, cells, SIZES[g["size"]] * S):
            objects.append({"group": 0, "cx": cx, "cy": cy, "side": s})
    else:
        relation = _pick(rng, RELATIONS)
        vertical = relation in ("above", "below")
        first_half = 0 if relation in ("above", "left of") else 1  # half holding group 0
        for gi, g in enumerate(groups):
            half = first_half if gi == 0 else 1 - first_half
            slots = rng.permutation(3)[: g["count"]]
            if vertical:  # halves are rows; three column slots per half
                cells = [(int(k) * third, half * S / 2, third, S / 2) for k in sorted(slots)]
            else:  # halves are columns; three row slots per half
                cells = [(half * S / 2, int(k) * third, S / 2, third) for k in sorted(slots)]
            for cx, cy, s in _place_in_cells(rng, cells, SIZES[g["size"]] * S):
                objects.append({"group": gi, "cx": cx, "cy": cy, "side": s})

    background = {"kind": _pick(rng, BACKGROUND_KINDS), "colour": _pick(rng, tuple(BACKGROUND_COLOURS))}
    return {
        "groups": groups,
        "objects": objects,
        "background": background,
        "relation": relation,
        "position": position,
    }


# --------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, bg: dict[str, str], size: int) -> np.ndarray:
    """Achromatic background as a (size, size) uint8 luminance array."""
    base = float(BACKGROUND_COLOURS[bg["colour"]])
    kind = bg["kind"]
    if kind == "plain":
        return np.full((size, size), base, dtype=np.uint8)
    if kind == "gradient":
        span = 70.0
        lo = min(max(base - span / 2, 0.0), 255.0 - span)
        direction = int(rng.integers(4))  # horizontal, vertical, two diagonals
        t = np.linspace(0.0, 1.0, size)
        if direction == 0:
            ramp = np.broadcast_to(t[None, :], (size, size))
        elif direction == 1:
            ramp = np.broadcast_to(t[:, None], (size, size))
        elif direction == 2:
            ramp = (t[None, :] + t[:, None]) / 2
        else:
            ramp = (t[None, :] + t[::-1, None]) / 2
        if rng.random() < 0.5:
            ramp = 1.0 - ramp
        return np.round(lo + span * ramp).astype(np.uint8)
    # noise: per-pixel grey noise around the base level
    noise = rng.normal(0.0, 18.0, size=(size, size))
    return np.clip(np.round(base + noise), 0, 255).astype(np.uint8)


def _polygon(kind: str, cx: float, cy: float, s: float) -> list[tuple[float, float]]:
    r = s / 2
    if kind == "square":
        q = r * 0.9
        return [(cx - q, cy - q), (cx + q, cy - q), (cx + q, cy + q), (cx - q, cy + q)]
    if kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.85), (cx - r, cy + r * 0.85)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if kind == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + 0.1 * r + rad * math.sin(a)))
        return pts
    if kind == "cross":
        t = r * 0.36
        return [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
            (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
            (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
        ]
    raise AssertionError(kind)


def _render(rng: np.random.Generator, scene: dict[str, Any], size: int) -> Image.Image:
    """Render a scene to an RGB image of ``size``×``size`` pixels."""
    lum = _background(rng, scene["background"], size)
    canvas = Image.fromarray(np.repeat(lum[:, :, None], 3, axis=2), "RGB")
    big = size * _SUPERSAMPLE
    canvas = canvas.resize((big, big), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    f = float(_SUPERSAMPLE)
    for obj in scene["objects"]:
        g = scene["groups"][obj["group"]]
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(v) for v in np.clip(np.array(COLOURS[g["colour"]]) + jitter, 0, 255))
        cx, cy, s = obj["cx"] * f, obj["cy"] * f, obj["side"] * f
        if g["shape"] == "circle":
            r = s / 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(_polygon(g["shape"], cx, cy, s), fill=fill)
    return canvas.resize((size, size), Image.Resampling.BOX)


# --------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(rng: np.random.Generator, g: dict[str, Any], with_size: bool) -> str:
    singular, plural = _pick(rng, SHAPE_WORDS[g["shape"]])
    words = []
    if with_size:
        words.append(_pick(rng, SIZE_WORDS[g["size"]]))
    words.append(_pick(rng, COLOUR_WORDS[g["colour"]]))
    words.append(singular if g["count"] == 1 else plural)
    count = _pick(rng, COUNT_WORDS[g["count"]])
    if count == "a":
        count = _article(words[0])
    return " ".join([count, *words])


def _background_phrase(rng: np.random.Generator, bg: dict[str, str]) -> str:
    colour = _pick(rng, BACKGROUND_WORDS[bg["colour"]])
    if bg["kind"] == "plain":
        return f"{colour} background"
    if bg["kind"] == "gradient":
        return f"{colour} gradient background"
    return f"{_pick(rng, ('noisy', 'grainy'))} {colour} background"


def _caption(rng: np.random.Generator, scene: dict[str, Any], template: int) -> str:
    """Fill one caption template with randomly chosen (true) wording."""
    groups = scene["groups"]
    with_size = rng.random() < 0.75
    nps = [_noun_phrase(rng, g, with_size) for g in groups]
    bg = _background_phrase(rng, scene["background"])
    on_bg = f"{_pick(rng, ('on', 'against'))} {_article(bg)} {bg}"
    lead = _pick(rng, ("an image of", "a picture of", "a drawing of"))
    if len(groups) == 1:
        np0 = nps[0]
        be = "is" if groups[0]["count"] == 1 else "are"
        where = _pick(rng, POSITION_WORDS[scene["position"]]) if scene["position"] else None
        options = [
            np0,
            f"{np0} {on_bg}",
            f"there {be} {np0} {on_bg}",
            f"{lead} {np0}",
            f"{_article(bg)} {bg} with {np0}",
            f"{np0} {where}" if where else f"{lead} {np0} {on_bg}",
            f"{np0} {where} {on_bg}" if where else f"there {be} {np0}",
        ]
    else:
        rel = scene["relation"]
        a_rel_b = f"{nps[0]} {_pick(rng, RELATION_WORDS[rel])} {nps[1]}"
        b_rel_a = f"{nps[1]} {_pick(rng, RELATION_WORDS[INVERSE_RELATION[rel]])} {nps[0]}"
        be = "is" if groups[0]["count"] == 1 else "are"
        options = [
            a_rel_b,
            b_rel_a,
            f"{a_rel_b} {on_bg}",
            f"{b_rel_a} {on_bg}",
            f"there {be} {a_rel_b}",
            f"{lead} {b_rel_a}",
            f"{nps[1]} and {nps[0]} {on_bg}" if rng.random() < 0.5 else f"{nps[0]} and {nps[1]}",
        ]
    return options[template % len(options)]


def _captions(rng: np.random.Generator, scene: dict[str, Any], k: int) -> list[str]:
    """``k`` captions, from distinct templates first, distinct strings where possible."""
    n_templates = 7
    out: list[str] = []
    seen: set[str] = set()
    order = [int(t) for t in rng.permutation(n_templates)]
    attempts = 0
    while len(out) < k:
        template = order[attempts % n_templates]
        text = _caption(rng, scene, template)
        attempts += 1
        if text not in seen or attempts > 20 * k + n_templates:
            seen.add(text)
            out.append(text)
    return out


# --------------------------------------------------------------------------- writing


def _make_split(
    folder: Path,
    split: str,
    spec: ShapesSpec,
    first_image_id: int,
    first_ann_id: int,
    n: int,
    bar: Any,
) -> dict[str, Any]:
    image_dir = folder / split
    image_dir.mkdir(parents=True, exist_ok=True)
    size = spec.image_size
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    attrs: list[dict[str, Any]] = []
    ann_id = first_ann_id
    for index in range(n):
        rng = np.random.default_rng([spec.seed, _SPLIT_CODES[split], index])
        scene = _sample_scene(rng, size)
        image = _render(rng, scene, size)
        captions = _captions(rng, scene, spec.captions_per_image)
        image_id = first_image_id + index
        file_name = f"{image_id:06d}.png"
        image.save(image_dir / file_name, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size, "license": 1})
        for text in captions:
            anns.append({"id": ann_id, "image_id": image_id, "caption": text})
            ann_id += 1
        groups = scene["groups"]
        attrs.append({
            "image_id": image_id,
            "objects": [
                {
                    "shape": groups[o["group"]]["shape"],
                    "colour": groups[o["group"]]["colour"],
                    "size": groups[o["group"]]["size"],
                    "x": round(o["cx"] / size, 4),
                    "y": round(o["cy"] / size, 4),
                    "group": o["group"],
                }
                for o in scene["objects"]
            ],
            "background": dict(scene["background"]),
            "relation": (
                None if scene["relation"] is None
                else {"subject_group": 0, "predicate": scene["relation"], "object_group": 1}
            ),
            "position": scene["position"],
        })
        if bar is not None:
            bar.update(1)
    return {
        "info": {
            "description": f"clipgeo procedural shapes dataset, {split} split",
            "version": str(GENERATOR_VERSION),
            "contributor": "clipgeo.sources.shapes",
            "dataset_id": spec.dataset_id(),
            "split": split,
            "spec": asdict(spec),
        },
        "licenses": [{
            "id": 1,
            "name": "CC0 1.0 (procedurally generated)",
            "url": "https://creativecommons.org/publicdomain/zero/1.0/",
        }],
        "images": images,
        "annotations": anns,
        "clipgeo_attributes": attrs,
    }


def _check_done(folder: Path, spec: ShapesSpec) -> bool:
    """True if ``folder`` is a complete dataset for ``spec``; raise if it belongs to another."""
    if not folder.exists():
        return False
    done = folder / _DONE
    if not done.is_file():
        raise SourceError(
            f"{folder} exists but has no {_DONE} marker, so it is not a complete shapes "
            "dataset. Delete the folder and generate again."
        )
    try:
        recorded = json.loads(done.read_text())
    except (OSError, ValueError) as exc:
        raise SourceError(f"{done} is unreadable ({exc}). Delete {folder} and generate again.") from exc
    if recorded != spec.to_json():
        raise SourceError(
            f"{done} records a different spec ({recorded}) than requested ({spec.to_json()}). "
            f"Delete {folder} and generate again."
        )
    return True


def generate_shapes(root: Path, spec: ShapesSpec = ShapesSpec(), progress: bool = True) -> Path:
    """Generate the shapes dataset under ``root / spec.dataset_id()`` and return that folder.

    The folder is in MS-COCO captions format: ``annotations/captions_{train,val}.json``
    (keys ``info``, ``licenses``, ``images`` [{id, file_name, width, height, license}],
    ``annotations`` [{id, image_id, caption}]) and PNG images under ``train/`` and
    ``val/``. Image and annotation ids are unique across both splits (train first).
    The extra top-level key ``clipgeo_attributes`` holds one record per image::

        {"image_id": int,
         "objects": [{"shape", "colour", "size", "x", "y", "group"}],  # x, y: centre in [0, 1]
         "background": {"kind": "plain"|"gradient"|"noise", "colour": "white"|"grey"|"black"},
         "relation": {"subject_group": 0, "predicate": "above"|"below"|"left of"|"right of",
                      "object_group": 1} | None,
         "position": "top left"|...|"centre"|... | None}   # for a single object only

    Idempotent and crash-safe: the dataset is built in a temporary folder next to the
    target and renamed into place once complete, with a ``DONE`` file holding the spec
    JSON. If the target already has a matching ``DONE``, it is returned at once.

    Args:
        root: Parent folder (created if missing).
        spec: Dataset parameters.
        progress: Show a tqdm progress bar.

    Returns:
        The dataset folder, ``root / spec.dataset_id()``.

    Raises:
        SourceError: The target exists but is incomplete or was made from another spec.
    """
    root = Path(root)
    target = root / spec.dataset_id()
    if _check_done(target, spec):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    bar = None
    try:
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=spec.n_train + spec.n_val, desc=f"shapes {target.name}", unit="img")
        (tmp / "annotations").mkdir()
        ann_id = 1
        for split, first_image_id, n in (
            ("train", 1, spec.n_train),
            ("val", spec.n_train + 1, spec.n_val),
        ):
            data = _make_split(tmp, split, spec, first_image_id, ann_id, n, bar)
            ann_id += len(data["annotations"])
            with (tmp / "annotations" / f"captions_{split}.json").open("w", encoding="utf-8") as fh:
                json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
        (tmp / _DONE).write_text(json.dumps(spec.to_json(), sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first: use its result if it is complete.
            if not _check_done(target, spec):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return target


def shapes_split(root_folder: Path, split: Literal["train", "val"]) -> tuple[Path, Path]:
    """Return ``(annotations json, image folder)`` of one split of a generated dataset.

    Args:
        root_folder: The folder returned by :func:`generate_shapes`.
        split: ``"train"`` or ``"val"``.

    Raises:
        SourceError: ``split`` is not ``"train"`` or ``"val"``.
    """
    if split not in _SPLIT_CODES:
        raise SourceError(f"split must be 'train' or 'val', got {split!r}.")
    root_folder = Path(root_folder)
    return root_folder / "annotations" / f"captions_{split}.json", root_folder / split
